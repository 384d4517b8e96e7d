"""What the field learned about LD_PRELOAD hooks, each as a program that would be harmed (or
unseen) if the hook got it wrong: other preloaded libraries, calls before our constructor, nested
hooked calls, signal handlers, valgrind, fork storms, the loader as the program, odd paths, fds
closed at start, children whose environment lost the hook.

The other pitfalls have their tests beside the feature they concern (test_hook_safety.py,
test_hook_exec.py, test_hook_files.py, test_musl.py, the tracer's tests)."""
import os
import re
import shutil
import struct
import subprocess

import pytest

from agent import events, of_type, preload, starts
from test_hook_safety import outcome
from tools import need, plain, unavailable

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
CAT = os.path.realpath(shutil.which("cat"))
TRUE = os.path.realpath("/bin/true")


def need_library(path, package):
    """A shared library the test preloads, or unavailable()."""
    if not os.path.isfile(path):
        unavailable(f"{path} is not installed (Debian package: {package})")
    return path


def shared_library(cc_output_dir, source):
    """tests/fixtures/SOURCE built as a shared object."""
    out = os.path.join(cc_output_dir, os.path.splitext(source)[0] + ".so")
    src = os.path.join(os.path.dirname(__file__), "fixtures", source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", out, src], check=True)
    return out


def preloading(monkeypatch, collector, *libraries):
    """The collector's runs get LD_PRELOAD set to these libraries, in this order."""
    monkeypatch.setattr(collector, "libpreload", " ".join(libraries))


# ---- another preloaded library (1, 2) ----

JEMALLOC_SCRIPT = ("cat /etc/os-release; ls /usr/share/common-licenses; python3 -c '"
                   "import subprocess; subprocess.run([\"true\"]); open(\"/etc/hostname\").read(); "
                   "print(\"libjemalloc\" in open(\"/proc/self/maps\").read())'")


@pytest.mark.parametrize("order", ["jemalloc-first", "hook-first"])
def test_jemalloc_preloaded_beside_the_hook_leaves_programs_unharmed_and_seen(collector, monkeypatch,
                                                                             order):
    """jemalloc replaces malloc and calls mmap itself; dlsym may call malloc: resolving a real
    function must not recurse into an allocator that is not set up yet."""
    jemalloc = need_library(JEMALLOC, "libjemalloc2")
    libs = [jemalloc, collector.libpreload][:: 1 if order == "jemalloc-first" else -1]
    argv = ["sh", "-c", JEMALLOC_SCRIPT]
    preloading(monkeypatch, collector, *libs)
    hooked, _ = collector.run(argv)
    expected = plain(argv, {"LD_PRELOAD": jemalloc})
    assert outcome(hooked) == outcome(expected)
    assert hooked.returncode == 0 and hooked.stdout.endswith(b"True\n")
    exes = {r["exe"] for r in collector.records_of("start")}
    assert {os.path.realpath("/bin/sh"), CAT, TRUE} <= exes
    assert collector.records_of("open", path=os.path.realpath("/etc/os-release"))
    assert collector.records_of("open", path="/etc/hostname")


@pytest.mark.parametrize("order", ["runs-before-our-constructor", "runs-after-our-constructor"])
def test_hooked_calls_from_another_preloaded_librarys_constructor_are_unharmed(
        collector, monkeypatch, tmp_path_factory, tmp_path, order):
    """Initialisers run in reverse preload order: a library listed after ours is initialised
    first, and its open, fopen and system() reach our hooks before our constructor ran."""
    early = shared_library(str(tmp_path_factory.mktemp("lib")), "early_calls.c")
    target = tmp_path / "read-early"
    target.write_text("early\n")
    libs = [collector.libpreload, early][:: 1 if order == "runs-before-our-constructor" else -1]
    preloading(monkeypatch, collector, *libs)
    hooked, _ = collector.run([CAT, str(target)], env=dict(os.environ, EARLY_FILE=str(target)))
    expected = plain([CAT, str(target)], {"LD_PRELOAD": early, "EARLY_FILE": str(target)})
    assert outcome(hooked) == outcome(expected)
    assert expected.stderr == b"early open=3 fopen=1 system=3 errno=2\n"
    (me,) = collector.records_of("start", exe=CAT)
    assert me["argv"] == [CAT, str(target)]
    # the shell system() started is watched, and the program's own read is recorded
    (sh,) = collector.records_of("start", argv=["sh", "-c", "exit 3"])
    assert sh["ppid"] == me["pid"]
    assert collector.records_of("open", path=str(target), pid=me["pid"])
    if order == "runs-after-our-constructor":
        assert len(collector.records_of("exec", api="system", pid=me["pid"])) == 1


# ---- one record per call of the program (3) ----

@pytest.mark.parametrize("api", ["fopen", "freopen", "creat"])
def test_libc_call_made_of_other_hooked_calls_is_recorded_once(collector, cc, tmp_path, api):
    """fopen, freopen and creat open the file inside libc: one record, the outer call's."""
    target = tmp_path / "once"
    cp, _ = collector.run([cc("open_variants.c"), api, str(target), "w"])
    assert cp.returncode == 0, cp
    assert [r["api"] for r in collector.records_of("open")
            if r["path"] == str(target)] == [api]


@pytest.mark.parametrize("api", ["system", "popen", "execlp", "posix_spawnp"])
def test_exec_entry_point_built_on_another_is_recorded_once(collector, cc, api):
    """system and popen spawn through posix_spawn, execlp through execvp, posix_spawnp searches
    PATH and spawns: one exec record in the caller, the outer call's."""
    argv = [cc("exec_variants.c"), api] + (["true"] if api in ("system", "popen") else ["true", "true"])
    cp, _ = collector.run(argv)
    assert cp.returncode == 0, cp
    (me,) = collector.records_of("start", exe=argv[0])
    assert [r["api"] for r in collector.records_of("exec", pid=me["pid"])] == [api]


# ---- signals (9) ----

def test_signal_handler_calling_open_write_close_at_high_rate_while_main_does_too(collector, cc,
                                                                                  tmp_path):
    """A handler interrupting the main thread inside a hook (in its send, its reconnect, its
    aggregation table) calls the same hooks: no deadlock, errno intact, every write done, and
    every record either delivered or counted as failed."""
    n = 3000
    cp, recs = collector.run([cc("sig_storm.c", ["-O2"]), str(tmp_path), str(n)], timeout=60)
    assert cp.returncode == 0, cp
    handled = int(re.fullmatch(rb"main=\d+ handler=(\d+)\n", cp.stdout).group(1))
    assert handled > 0
    (me,) = collector.records_of("start")
    mine = sorted((r for r in recs if r["stream"] == me["stream"]), key=lambda r: r["seq"])
    (end,) = [r for r in mine if r["kind"] == "end"]
    assert end is mine[-1]
    assert len(mine) + end["failed_sends"] == end["seq"]
    assert len({r["seq"] for r in mine}) == len(mine)  # no seq used twice
    writes = collector.records_of("open", path=str(tmp_path / "main"))
    assert 0 < len(writes) <= n  # every write is recorded, unless made inside a hook
    assert collector.records_of("open", path=str(tmp_path / "handler"))


# ---- fork and vfork (7, 8) ----

def test_fork_storm_with_32_threads_in_hooked_calls_never_deadlocks(collector, cc, tmp_path):
    nforks = 100
    cp, _ = collector.run([cc("fork_storm.c"), str(tmp_path), str(nforks), "32"], timeout=120)
    assert cp.returncode == 0, cp
    *pids, done = cp.stdout.decode().split()
    assert done == "done" and len(pids) == nforks
    children = collector.records_of("open", path=lambda p: p.startswith(str(tmp_path / "child-")))
    assert sorted(r["pid"] for r in children) == sorted(map(int, pids))


VALGRIND_ERRORS = 99


def valgrind(argv):
    return [need("valgrind", "valgrind"), "-q", "--trace-children=yes",
            f"--error-exitcode={VALGRIND_ERRORS}", "--track-fds=no", *argv]


@pytest.mark.parametrize("case", ["vfork-exec-loop", "vfork-closefds", "system", "fopen"])
def test_hook_has_no_memory_errors_under_valgrind(collector, cc, tmp_path, case):
    """memcheck sees every byte the hook reads, writes and sends (uninitialised padding in a
    record is an error too). vfork and exec under valgrind, children traced as well."""
    argv = {"vfork-exec-loop": [cc("vfork_exec.c"), "4", TRUE],
            "vfork-closefds": [cc("vfork_exec.c"), "4", TRUE, "closefds"],
            "system": [cc("exec_variants.c"), "system", "cat /etc/hostname >/dev/null; exit 3"],
            "fopen": [cc("open_variants.c"), "-n", "3", "fopen", str(tmp_path / "f"), "w"]}[case]
    cp, _ = collector.run(valgrind(argv), timeout=240)
    assert cp.returncode != VALGRIND_ERRORS and b"==" not in cp.stderr, cp.stderr.decode()
    assert cp.returncode == 0, cp
    assert collector.records_of("start", exe=argv[0])  # the hook was there, under valgrind


# ---- set-user-ID programs (13) ----

def as_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def test_set_user_id_program_ignores_the_hook_silently_and_runs_unharmed(collector, public_dir):
    """AT_SECURE: the loader skips LD_PRELOAD entries with a slash. It must do so without a word
    on the program's stderr and without changing what the program does."""
    if os.geteuid() != 0:
        unavailable("making a set-user-ID root program needs root")
    prog = os.path.join(public_dir, "id")
    shutil.copy(shutil.which("id"), prog)
    os.chmod(prog, 0o4755)
    hooked, _ = collector.run([prog], preexec_fn=as_nobody)
    expected = plain([prog], preexec_fn=as_nobody)
    assert outcome(hooked) == outcome(expected)
    assert b"euid=0" in expected.stdout and expected.stderr == b""


# ---- ways of starting a program (18, paths) ----

LOADER = "/lib64/ld-linux-x86-64.so.2"


def test_program_run_through_the_loader_is_reported_as_that_program(collector, tmp_path):
    """`ld-linux-x86-64.so.2 PROGRAM`: /proc/self/exe is the loader, yet the process is PROGRAM."""
    target = tmp_path / "via-loader"
    target.write_text("via the loader\n")
    argv = [LOADER, CAT, str(target)]
    hooked, _ = collector.run(argv)
    assert outcome(hooked) == outcome(plain(argv))
    assert hooked.stdout == b"via the loader\n"
    (start,) = collector.records_of("start")
    assert start["exe"] == CAT
    assert start["argv"] == [CAT, str(target)]
    assert collector.records_of("open", path=str(target), pid=start["pid"])


def test_program_and_files_with_spaces_in_their_paths_are_reported_whole(collector, cc, tmp_path):
    where = tmp_path / "a dir" / "with  spaces"
    where.mkdir(parents=True)
    prog = where / "open variants"
    shutil.copy(cc("open_variants.c"), prog)
    target = where / "a file .txt"
    cmd = f"'{prog}' open '{target}' w"
    argv = [cc("exec_variants.c"), "system", cmd]
    hooked, _ = collector.run(argv)
    assert hooked.returncode == 0 and hooked.stdout == b"res=3 errno=0\nstatus=0\n", hooked
    (exec_,) = collector.records_of("exec", api="system")
    assert exec_["argv"] == ["sh", "-c", cmd]
    (start,) = collector.records_of("start", exe=str(prog))
    assert start["argv"] == [str(prog), "open", str(target), "w"]
    (rec,) = collector.records_of("open", path=str(target))
    assert rec["pid"] == start["pid"] and rec["res"] == 3


# ---- fds closed at start (15) ----

def test_program_that_closes_every_fd_then_execs_has_its_child_seen_and_output_unchanged(
        collector, cc, tmp_path):
    target = tmp_path / "after-close-range"
    target.write_text("still here\n")
    argv = [cc("close_then_exec.c"), CAT, str(target)]
    hooked, _ = collector.run(argv)
    assert outcome(hooked) == outcome(plain(argv))
    assert hooked.stdout == b"still here\n"
    (closer,) = collector.records_of("start", exe=argv[0])
    (cat,) = collector.records_of("start", exe=CAT)
    assert cat["pid"] == closer["pid"]
    assert collector.records_of("exec", api="execv", path=CAT, pid=closer["pid"])
    assert collector.records_of("open", path=str(target), pid=cat["pid"])


# ---- children whose environment lost the hook (14) ----

@pytest.mark.parametrize("how", [["env", "-i"], ["env", "-u", "LD_PRELOAD"]],
                         ids=["env-i", "unset-ld-preload"])
def test_child_started_without_the_hook_in_its_environment_is_still_watched_and_reported(
        tmp_path, how):
    target = tmp_path / "read-by-the-child"
    target.write_text("child\n")
    argv = ["sh", "-c", f"{' '.join(how)} {CAT} {target}; echo done"]
    r = preload("run", "--no-alerts-stderr", "--", *argv, state_dir=tmp_path / "state")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"child\ndone\n", b"")
    evts = events(tmp_path / "state")
    started = [e for e in starts(evts).values() if e["proc.exepath"] == CAT]
    assert len(started) == 1, sorted(e["proc.exepath"] for e in starts(evts).values())
    assert [e for e in evts if e.get("fd.name") == str(target)
            and e["proc.pid"] == started[0]["proc.pid"]]
    removed = of_type(evts, "preload.hook_removed")
    assert [e["evt.arg.filename"] for e in removed] == [CAT]


# ---- what the hook reads before an exec (elfkind.c) ----

def test_exec_of_an_executable_fifo_fails_with_eacces_instead_of_hanging(collector, cc, tmp_path):
    """Classifying the target must not open a FIFO for reading: that waits for a writer forever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.chmod(fifo, 0o755)
    argv = [cc("exec_variants.c"), "execv", str(fifo), "fifo"]
    hooked, _ = collector.run(argv, timeout=20)
    assert outcome(hooked) == outcome(plain(argv)) == (b"errno=13\n", b"", 127)
    (exec_,) = collector.records_of("exec", api="execv", phase="failed")
    assert exec_["path"] == str(fifo)


def crafted_elf(phoff=64, interp_offset=None):
    """A 64-bit ELF header with one PT_INTERP program header, or with e_phoff as given."""
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    eh = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, phoff, 0, 0, 64, 56, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 3, 4, interp_offset or 0, 0, 0, 16, 16, 1)
    return eh + ph + b"/lib/ld-musl.so\0"


@pytest.mark.parametrize("case", ["program-headers-at-the-end-of-the-address-space",
                                  "interpreter-at-the-end-of-the-address-space"])
def test_exec_of_an_elf_whose_offsets_wrap_around_fails_as_without_the_hook(collector, cc, tmp_path,
                                                                             case):
    """Offsets near 2**64 make `offset + length` wrap to a small number: the bounds checks must
    not then read far outside the header buffer."""
    wrap = 2**64 - 8
    data = (crafted_elf(phoff=wrap) if case.startswith("program") else crafted_elf(interp_offset=wrap))
    target = tmp_path / "crafted"
    target.write_bytes(data)
    target.chmod(0o755)
    argv = [cc("exec_variants.c"), "execv", str(target), "crafted"]
    hooked, _ = collector.run(argv)
    expected = plain(argv)
    assert outcome(hooked) == outcome(expected)
    assert expected.returncode == 127 and expected.stdout.startswith(b"errno=")
    assert collector.records_of("exec", api="execv", phase="failed")


# ---- small stacks (H3) ----

def test_hooked_calls_in_a_handler_on_an_8_kib_guarded_signal_stack_do_not_overflow_it(collector, cc,
                                                                                       tmp_path):
    """A failing unlink (its path read through the kernel), an open(O_CREAT) and fexecve, each in a
    signal handler on an 8 KiB alternate stack with a guard page below: an overflow would crash."""
    argv = [cc("altstack_guarded.c"), str(tmp_path)]
    hooked, _ = collector.run(argv)
    assert outcome(hooked) == outcome(plain(argv)) == (b"unlink=-1 open=ok child=0\n", b"", 0)
    assert collector.records_of("open", path=str(tmp_path / "made-in-handler"))
    assert collector.records_of("exec", api="fexecve", path=TRUE)
    assert collector.records_of("start", exe=TRUE)


# ---- the program's own environment (H4) ----

@pytest.mark.parametrize("api", ["system", "popen"])
def test_system_and_popen_leave_the_programs_environment_as_it_made_it(collector, cc, api):
    """A program that unset LD_PRELOAD keeps it unset, environ is not reallocated under threads
    that may read it, and the shell's start without the hook is reported."""
    argv = [cc("system_unhooked.c"), api, "exit 0"]
    hooked, _ = collector.run(argv)
    assert hooked.returncode == 0, hooked
    assert hooked.stdout == b"LD_PRELOAD=unset environ=same\n"
    (rec,) = collector.records_of("call", api="hook_removed")
    assert rec["strings"][:2] == ["/bin/sh", "sh -c exit 0"]
    assert [r["api"] for r in collector.records_of("exec")] == [api]


# ---- the channel (H7, H1) ----

def test_static_program_started_without_a_tracer_does_not_inherit_the_channel(collector, cc):
    static = cc("high_sockets.c", ["-static"])
    argv = [cc("exec_variants.c"), "execv", static, "high_sockets"]
    hooked, _ = collector.run(argv)
    assert (hooked.returncode, hooked.stdout) == (0, b"sockets=0\n"), hooked
    assert collector.records_of("exec", api="execv", path=static)


def test_program_execd_after_a_failed_exec_of_a_static_one_inherits_the_channel_again(collector, cc,
                                                                                        tmp_path):
    """The channel is close-on-exec only while the exec is under way: when it fails, the next
    program execs with it, and sends over the same connection."""
    static = tmp_path / "not-executable"
    shutil.copy(cc("high_sockets.c", ["-static"]), static)
    static.chmod(0o644)
    hooked, _ = collector.run([cc("exec_twice.c"), str(static), TRUE])
    assert (hooked.returncode, hooked.stdout) == (0, b"errno=13\n"), hooked
    assert collector.records_of("start", exe=TRUE)
    assert collector.connections == 1


@pytest.mark.parametrize("how", ["dup2", "dup3", "close", "close_range"])
def test_channel_fd_taken_through_syscall_never_gets_records(collector, cc, tmp_path, how):
    """syscall(SYS_dup2 ...) and the like replace or close the channel's fd behind libc's
    wrappers: the records go to a new connection, never into what the program put there."""
    target = tmp_path / "after"
    hooked, _ = collector.run([cc("raw_fd_calls.c"), how, str(target)])
    assert (hooked.returncode, hooked.stdout) == (0, b"pipe=0\n"), hooked
    assert len(collector.records_of("open", path=str(target))) >= 1


def test_musl_program_calling_closefrom_that_its_libc_lacks_gets_its_fds_closed(musl_collector, musl_cc,
                                                                                 tmp_path):
    """musl has no closefrom: a program that finds the hook's and calls it must get what the name
    promises, not a silent no-op."""
    target = tmp_path / "kept-open"
    target.write_text("x")
    cp, _ = musl_collector.run([musl_cc("closefrom_probe.c"), str(target)])
    assert (cp.returncode, cp.stdout) == (0, b"closefrom=found\nfd=closed\n"), cp
