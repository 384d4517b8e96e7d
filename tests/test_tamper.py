"""Keeping the hook in: programs started with the hook taken out of their environment get it back
(and the exec is reported), each program gets the hook's build for its libc, set-id programs that
the loader runs without LD_PRELOAD are reported blind, and /etc/ld.so.preload brings in processes
that `preload run` did not start.

/etc/ld.so.preload is only ever changed inside a private mount namespace, on an overlay of /etc
whose writes land in a temporary directory: the host's file is never touched."""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

import preload
from agent import PRELOAD, events
from conftest import FIXTURES, Collector
from preload import supervisor, wire
from tools import need

APIS = ["execve", "execv", "execvp", "execvpe", "execl", "execlp", "execle", "execveat", "fexecve",
        "posix_spawn", "posix_spawnp", "system", "popen"]
# unhook HOW API TARGET ARG...: takes the hook out of its own environment, then starts TARGET
# through API as exec_variants does (HOW: unset, clear, socket, other = OTHER_PRELOAD instead);
# API vfork: from a vfork child, whose first exec (of a path that does not exist) fails
UNHOOK_C = r"""
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
int variants_main(int argc, char **argv);
int main(int argc, char **argv)
{
    const char *how = argv[1];
    if (!strcmp(how, "unset")) unsetenv("LD_PRELOAD");
    else if (!strcmp(how, "clear")) clearenv();
    else if (!strcmp(how, "socket")) unsetenv("PRELOAD_SOCKET");
    else if (!strcmp(how, "other")) setenv("LD_PRELOAD", getenv("OTHER_PRELOAD"), 1);
    if (!strcmp(argv[2], "vfork")) {
        int st;
        pid_t pid = vfork();
        if (pid == 0) {
            execv("/nonexistent/program", argv + 4);
            execv(argv[3], argv + 4);
            _exit(127);
        }
        return waitpid(pid, &st, 0) == pid && WIFEXITED(st) ? WEXITSTATUS(st) : 126;
    }
    argv[1] = argv[0];
    return variants_main(argc - 1, argv + 1);
}
"""
PRINTENV = shutil.which("printenv")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> path: unhook, and an empty shared object to preload beside the hook."""
    out = tmp_path_factory.mktemp("tamper-bin")
    (out / "unhook.c").write_text(UNHOOK_C)
    (out / "empty.c").write_text("int preload_test_empty;\n")
    subprocess.run(["gcc", "-std=gnu11", "-c", "-Dmain=variants_main", "-o", out / "variants.o",
                    os.path.join(FIXTURES, "exec_variants.c")], check=True)
    subprocess.run(["gcc", "-std=gnu11", "-Wall", "-o", out / "unhook", out / "unhook.c", out / "variants.o"],
                   check=True)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", out / "empty.so", out / "empty.c"], check=True)
    return {"unhook": str(out / "unhook"), "empty": str(out / "empty.so")}


def target_argv(api, program, *args):
    """exec_variants' TARGET and ARGs for running program with args through api."""
    if api in ("system", "popen"):
        return [" ".join([program, *args])]
    name = os.path.basename(program)
    return [name if api in ("execvp", "execvpe", "execlp", "posix_spawnp") else program, name, *args]


def removed(collector):
    return collector.records_of("call", api="hook_removed")


# ---- re-injection at exec ----

# system() and popen() run the shell inside libc, from the program's own environment, which the
# hook must not change: they are reported only (tests/test_pitfalls.py)
@pytest.mark.parametrize("api", [a for a in APIS if a not in ("system", "popen")])
def test_exec_without_the_hook_in_its_environment_is_reported_and_still_watched(collector, built, api):
    env = dict(os.environ, PATH=f"{os.path.dirname(PRINTENV)}:/usr/bin:/bin")
    cp, _ = collector.run([built["unhook"], "unset", api, *target_argv(api, PRINTENV, "LD_PRELOAD")], env=env)
    assert cp.returncode == 0, cp
    assert cp.stdout.splitlines()[0] == collector.libpreload.encode()  # the program got it back
    (rec,) = removed(collector)
    assert rec["strings"][0] == PRINTENV
    assert rec["strings"][1].endswith("printenv LD_PRELOAD")
    (started,) = collector.records_of("start", exe=os.path.realpath(PRINTENV))
    assert [os.path.basename(started["argv"][0]), *started["argv"][1:]] == ["printenv", "LD_PRELOAD"]


@pytest.mark.parametrize("how", ["clear", "socket"])
def test_exec_with_an_emptied_environment_or_no_socket_gets_the_hook_back(collector, built, how):
    cp, _ = collector.run([built["unhook"], how, "execve", PRINTENV, "printenv", "PRELOAD_SOCKET"])
    assert cp.returncode == 0, cp
    assert cp.stdout == collector.path.encode() + b"\n"
    assert removed(collector)
    assert collector.records_of("start", exe=os.path.realpath(PRINTENV))


def test_other_preloads_are_kept_after_the_hook(collector, built):
    env = dict(os.environ, OTHER_PRELOAD=built["empty"])
    cp, _ = collector.run([built["unhook"], "other", "execve", PRINTENV, "printenv", "LD_PRELOAD"], env=env)
    assert cp.stdout == f"{collector.libpreload} {built['empty']}\n".encode(), cp
    assert removed(collector)


def test_exec_that_keeps_the_hook_is_not_reported(collector, built):
    env = dict(os.environ, OTHER_PRELOAD=f"{built['empty']}:{collector.libpreload}")
    cp, _ = collector.run([built["unhook"], "other", "execve", PRINTENV, "printenv", "LD_PRELOAD"], env=env)
    assert cp.stdout == f"{built['empty']}:{collector.libpreload}\n".encode(), cp
    assert not removed(collector)
    assert collector.records_of("start", exe=os.path.realpath(PRINTENV))


def test_shell_that_strips_the_hook_cannot_start_an_unwatched_program(collector):
    cp, _ = collector.run(["sh", "-c", "env -i /bin/cat /etc/hostname; env -u LD_PRELOAD /bin/true"])
    assert cp.returncode == 0 and cp.stderr == b"", cp
    assert [r["strings"][1] for r in removed(collector)] == ["/bin/cat /etc/hostname", "/bin/true"]
    (cat,) = collector.records_of("start", exe=os.path.realpath("/bin/cat"))
    assert collector.records_of("open", pid=cat["pid"], path="/etc/hostname")
    assert collector.records_of("start", exe=os.path.realpath("/bin/true"))


@pytest.mark.parametrize("variables", [10, 3000], ids=["small", "huge"])
def test_vfork_child_without_the_hook_gets_it_back(collector, built, variables):
    """3000 variables: the rebuilt environment does not fit on the stack"""
    env = dict(os.environ, **{f"PRELOAD_TEST_{i}": "x" * 20 for i in range(variables)})
    cp, _ = collector.run([built["unhook"], "unset", "vfork", PRINTENV, "printenv", "LD_PRELOAD"], env=env)
    assert (cp.returncode, cp.stdout) == (0, collector.libpreload.encode() + b"\n"), cp
    assert [r["strings"][0] for r in removed(collector)] == ["/nonexistent/program", PRINTENV]
    (started,) = collector.records_of("start", exe=os.path.realpath(PRINTENV))
    (child,) = collector.records_of("exec", phase="failed")  # the same child, before that
    assert child["pid"] == started["pid"]


# ---- the hook's build for the target's libc ----

@pytest.fixture
def musl(musl_cc):
    """name -> a dynamic musl program: hello ARG prints ARG, run PROGRAM ARG... execs PROGRAM."""
    sources = {"hello": "#include <stdio.h>\nint main(int c, char **v) { puts(v[1]); return 0; }\n",
               "run": "#include <unistd.h>\nint main(int c, char **v) { execv(v[1], v + 1); return 127; }\n"}
    return {name: musl_cc(f"{name}.c", source=text) for name, text in sources.items()}


def test_musl_program_started_by_a_glibc_program_gets_the_musl_build(collector, musl, musl_hook):
    cp, _ = collector.run(["sh", "-c", f"{musl['hello']} hello; printenv LD_PRELOAD"])
    assert cp.stdout == f"hello\n{collector.libpreload}\n".encode(), cp
    (started,) = collector.records_of("start", exe=musl["hello"])
    assert started["argv"] == [musl["hello"], "hello"]  # musl gives constructors no argv: /proc's
    assert not removed(collector)


def test_glibc_program_started_by_a_musl_program_gets_the_glibc_build(musl_collector, musl, libpreload):
    c = musl_collector
    cp, _ = c.run([musl["run"], PRINTENV, "LD_PRELOAD"])
    assert cp.stdout == f"{libpreload}\n".encode(), cp
    (started,) = c.records_of("start", exe=os.path.realpath(PRINTENV))
    assert started["argv"] == [PRINTENV, "LD_PRELOAD"]
    assert not c.records_of("call", api="hook_removed")


def test_musl_entrypoint_gets_the_musl_build(tmp_path, musl, musl_hook):
    cp = subprocess.run(PRELOAD + ["run", "--", musl["hello"], "hi"], capture_output=True, timeout=60,
                        env=dict(os.environ, PRELOAD_STATE_DIR=str(tmp_path / "state")))
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, b"hi\n", b""), cp
    (start,) = [e for e in events(tmp_path / "state") if e["evt.type"] == "execve" and e.get("evt.dir") == "<"]
    assert (start["proc.exepath"], start["proc.cmdline"]) == (musl["hello"], "hello hi")


def test_musl_program_without_a_musl_build_runs_unhooked_and_is_reported_blind(tmp_path, musl):
    lonely = tmp_path / "hook"
    lonely.mkdir()
    shutil.copy(os.path.join(os.path.dirname(preload.__file__), "libpreload.so"), lonely)
    c = Collector(str(lonely / "libpreload.so"), str(tmp_path))
    try:
        cp, _ = c.run(["sh", "-c", f"{musl['hello']} hello"])
        assert (cp.returncode, cp.stdout, cp.stderr) == (0, b"hello\n", b""), cp  # not broken by a glibc hook
        (blind,) = c.records_of("blind")
        assert (blind["reason"], blind["path"]) == ("no_variant", musl["hello"])
        assert not c.records_of("start", exe=musl["hello"])
    finally:
        c.close()


# ---- set-id programs ----

@pytest.mark.parametrize("owner, blind", [("nobody", True), ("root", False)])
def test_set_uid_program_that_raises_privileges_is_reported_blind(collector, tmp_path, owner, blind):
    program = tmp_path / "id"
    shutil.copy(shutil.which("id"), program)
    shutil.chown(program, user=owner)
    os.chmod(program, 0o4755)
    cp, _ = collector.run(["sh", "-c", f"{program} -u"])
    assert cp.stdout == (b"65534\n" if blind else b"0\n"), cp  # the kernel did raise them
    reports = collector.records_of("blind", path=str(program))
    assert [r["reason"] for r in reports] == (["secure"] if blind else [])
    assert bool(collector.records_of("start", exe=str(program))) is not blind


# ---- /etc/ld.so.preload ----

def in_container(tmp_path, script, env=None):
    """Runs script (sh -e) as root in mount and pid namespaces of its own, as a container's init
    would: /etc is an overlay whose writes land in tmp_path, /dev/shm a fresh tmpfs. The hook's
    build directory and the test tools stay visible. $PRELOAD is the preload command."""
    need("unshare", "util-linux")
    upper, work = tmp_path / "etc-upper", tmp_path / "etc-work"
    upper.mkdir()
    work.mkdir()
    prologue = textwrap.dedent(f"""\
        mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc
        mount -t tmpfs tmpfs /dev/shm
        PRELOAD="{' '.join(PRELOAD)}"
        """)
    before = os.path.exists(supervisor.LD_SO_PRELOAD)
    cp = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-ec", prologue + script],
                        env=dict(env or os.environ, PRELOAD_STATE_DIR=str(tmp_path / "state")),
                        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert os.path.exists(supervisor.LD_SO_PRELOAD) == before  # the host's file is untouched
    return cp


# start the application, wait for the link to its daemon, run $1 outside of it, let it end
WITH_APP = """
$PRELOAD run -- sh -c 'while [ ! -e done ]; do sleep 0.05; done' &
link=/dev/shm/preload-$(stat -L -c %i /proc/self/ns/pid).sock
while [ ! -L $link ]; do sleep 0.05; done
"""


def test_install_ld_so_preload_is_idempotent_and_keeps_other_entries(tmp_path, built):
    cp = in_container(tmp_path, f"""
        echo {built['empty']} > /etc/ld.so.preload
        $PRELOAD install --ld-so-preload
        $PRELOAD install --ld-so-preload
        cat /etc/ld.so.preload
        """)
    assert cp.returncode == 0, cp
    assert cp.stdout.splitlines() == [f"/etc/ld.so.preload now names {supervisor.HOOK}",
                                      f"/etc/ld.so.preload already named {supervisor.HOOK}",
                                      supervisor.HOOK, built["empty"]]


def test_install_ld_so_preload_says_why_it_cannot_write(tmp_path):
    cp = in_container(tmp_path, "mount -o remount,ro /etc\n$PRELOAD install --ld-so-preload")
    assert cp.returncode == 1
    assert "cannot write /etc/ld.so.preload: Read-only file system" in cp.stderr


def test_install_ld_so_preload_refuses_a_library_the_loader_will_not_take(tmp_path):
    # (a library built for a newer glibc than the image's gives the same kind of loader complaint)
    bogus = tmp_path / "libnot.so"
    bogus.write_text("not an ELF object\n")
    target = tmp_path / "ld.so.preload"
    with pytest.raises(supervisor.InstallError, match="loader does not load"):
        supervisor.install_ld_so_preload(path=str(target), hook=str(bogus))
    assert not target.exists()  # nothing was written


def test_install_ld_so_preload_needs_root():
    code = textwrap.dedent("""
        import os
        from click.testing import CliRunner
        from preload.cli import main
        import preload.supervisor  # the interpreter's own modules are not readable by nobody here
        os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
        result = CliRunner().invoke(main, ["install", "--ld-so-preload"])
        print(result.exit_code, result.stderr)
        """)
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.stdout.startswith("1 "), cp
    assert "can only be changed by root" in cp.stdout


def test_session_not_started_by_preload_run_reaches_the_daemon(tmp_path):
    cp = in_container(tmp_path, "$PRELOAD install --ld-so-preload\n" + WITH_APP + """
        env -i /bin/cat /etc/hostname
        touch done
        wait
        """)
    assert cp.returncode == 0, cp
    evts = events(tmp_path / "state")
    (cat,) = [e for e in evts if e["evt.type"] == "execve" and e.get("evt.dir") == "<" and e["proc.name"] == "cat"]
    assert cat["proc.pname"] == "sh" and cat["proc.pexepath"] != os.path.realpath(sys.executable)
    assert [e for e in evts if e["evt.type"] == "open" and e["proc.pid"] == cat["proc.pid"]
            and e["fd.name"] == "/etc/hostname"]
    # the supervisor and the daemon (Python) are hooked by the file too, but stay silent
    assert not [e for e in evts if e.get("proc.exepath") == os.path.realpath(sys.executable)]


def test_write_to_ld_so_preload_fires_the_tamper_rule(tmp_path):
    cp = in_container(tmp_path, "$PRELOAD install --ld-so-preload\n"
                                "$PRELOAD run -- sh -c ': >> /etc/ld.so.preload'")
    assert cp.returncode == 0, cp
    alerts = [json.loads(line) for line in (tmp_path / "state" / "alerts.jsonl").read_text().splitlines()]
    (alert,) = [a for a in alerts if a["rule"] == "Tamper with ld.so.preload"]
    assert alert["output_fields"]["fd.name"] == "/etc/ld.so.preload"


def test_hooked_program_without_a_daemon_stays_silent(tmp_path):
    cp = in_container(tmp_path, """
        $PRELOAD install --ld-so-preload
        grep -q libpreload /proc/self/maps && echo hooked
        cat /etc/hostname
        ls -A /dev/shm
        """)
    with open("/etc/hostname") as f:
        hostname = f.read()
    assert (cp.returncode, cp.stdout, cp.stderr) == (0, f"/etc/ld.so.preload now names {supervisor.HOOK}\n"
                                                        f"hooked\n{hostname}", ""), cp
    assert [p.name for p in (tmp_path / "etc-upper").iterdir()] == ["ld.so.preload"]


# ---- who may name the daemon ----

def listening(path):
    """A SEQPACKET socket listening at path that anyone may connect to; connections wait in its
    backlog, to be read after the run."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(str(path))
    os.chmod(path, 0o777)
    srv.listen(16)
    srv.setblocking(False)
    return srv


def received(srv):
    """Every record sent to srv so far."""
    records = []
    while True:
        try:
            conn = srv.accept()[0]
        except BlockingIOError:
            return records
        with conn:
            conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while data := conn.recv(1 << 17):
                    records.append(wire.decode(data))


def test_set_uid_program_ignores_its_callers_socket_and_spools_nothing(tmp_path, public_dir):
    need("setpriv", "util-linux")
    plain = os.path.realpath(shutil.which("id"))
    program = public_dir / "id"
    shutil.copy(plain, program)
    os.chmod(program, 0o4755)
    spool = public_dir / "spool"
    spool.mkdir()
    os.chmod(spool, 0o1777)
    srv = listening(public_dir / "pl.sock")
    as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups env"
    cp = in_container(tmp_path, f"""
        $PRELOAD install --ld-so-preload
        {as_nobody} PRELOAD_SOCKET={public_dir}/pl.sock {program} -u
        {as_nobody} PRELOAD_SOCKET={public_dir}/gone.sock {program} -u
        {as_nobody} PRELOAD_SOCKET={public_dir}/pl.sock {plain} -u
        """)
    assert cp.returncode == 0 and cp.stdout.endswith("0\n0\n65534\n"), cp
    starts = [r["exe"] for r in received(srv) if r["kind"] == "start"]
    assert starts == [plain]  # the caller's own programs do report there
    assert [p.stat().st_uid for p in spool.iterdir()] in ([], [65534])  # never a note as root


@pytest.mark.parametrize("planted", ["foreign link", "foreign daemon"])
def test_root_process_ignores_a_link_to_a_daemon_of_another_user(tmp_path, public_dir, planted):
    need("setpriv", "util-linux")
    srv = listening(public_dir / "pl.sock")
    if planted == "foreign link":
        os.chown(public_dir / "pl.sock", 65534, 65534)
        make_link = "setpriv --reuid=65534 --regid=65534 --clear-groups ln -s"
    else:  # a root-owned socket file and link, but a listener of another user
        pid = os.fork()
        if pid == 0:
            os.setresuid(65534, 65534, 65534)
            srv.listen(16)
            os._exit(0)
        os.waitpid(pid, 0)
        make_link = "ln -s"
    cp = in_container(tmp_path, f"""
        $PRELOAD install --ld-so-preload
        link=/dev/shm/preload-$(stat -L -c %i /proc/self/ns/pid).sock
        {make_link} {public_dir}/pl.sock $link
        env -i /bin/cat /etc/hostname
        """)
    assert cp.returncode == 0, cp
    assert received(srv) == []


def test_link_to_the_daemon_takes_the_place_of_what_root_finds_there(tmp_path):
    cp = in_container(tmp_path, f"""
        link=/dev/shm/preload-$(stat -L -c %i /proc/self/ns/pid).sock
        mkdir $link
        {sys.executable} -P -c 'from preload import state; print(state.link_daemon("/run/x.sock"))'
        readlink $link
        """, env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(preload.__file__))))
    assert cp.returncode == 0, cp
    link, target = cp.stdout.split()
    assert link.startswith("/dev/shm/preload-") and target == "/run/x.sock"


def test_link_to_the_daemon_leaves_another_users_link_alone(tmp_path):
    code = ("import os; from preload import state; os.setresuid(65534, 65534, 0)\n"
            "try: state.link_daemon('/run/x.sock')\nexcept state.StateError as e: print(e)")
    cp = in_container(tmp_path, f"""
        link=/dev/shm/preload-$(stat -L -c %i /proc/self/ns/pid).sock
        ln -s /run/root.sock $link
        {sys.executable} -P -c "{code}"
        readlink $link
        ls -A /dev/shm
        """, env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(preload.__file__))))
    assert cp.returncode == 0, cp
    warning, target, left = cp.stdout.splitlines()
    assert "will not be watched" in warning and target == "/run/root.sock"
    assert left == os.path.basename(left) and left.startswith("preload-")  # no temporary name left over
