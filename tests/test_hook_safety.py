"""The hook must never change what the program does: symbols, errno, fds, fork, vfork, no daemon."""
import errno
import glob
import os
import re
import socket
import subprocess
import threading

import pytest

from preload import wire
from tools import build, plain

HOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "csrc", "hook")
# the hook's own files, those it shares with the tracer, and the tracer's
HOOK_SOURCES = sorted(glob.glob(os.path.join(HOOK_DIR, "*.c")) + glob.glob(os.path.join(HOOK_DIR, "..", "*.c"))
                      + glob.glob(os.path.join(HOOK_DIR, "..", "trace", "*.c")))
TRUE = os.path.realpath("/bin/true")


def hook_functions():
    """Every function the C sources define with PL_EXPORT: the only symbols we may export."""
    names = set()
    for path in HOOK_SOURCES:
        with open(path) as f:
            names |= set(re.findall(r"^PL_EXPORT\s[^;{]*?\b(\w+)\s*\(", f.read(), re.M))
    return names


def nm(lib, which):
    out = subprocess.run(["nm", "-D", which, lib], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]


# ---- linking ----

def test_exports_are_exactly_the_hook_functions(libpreload):
    expected = hook_functions()
    assert {"execve", "posix_spawn", "open", "__open_2", "fopen", "connect", "accept4", "close",
            "dup2"} <= expected  # the parse of the sources works
    assert set(nm(libpreload, "--defined-only")) == expected


def test_imports_are_only_libc(libpreload):
    weak_ok = {"_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__",
               "__cxa_finalize"}
    undefined = nm(libpreload, "--undefined-only")
    assert undefined
    bad = [s for s in undefined if not re.fullmatch(r"\w+@GLIBC_[\d.]+", s) and s not in weak_ok]
    assert bad == []


def test_hook_sources_compile_without_warnings(tmp_path):
    assert HOOK_SOURCES
    for src in HOOK_SOURCES:
        cmd = ["gcc", "-c", "-O2", "-fPIC", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden",
               "-o", str(tmp_path / "x.o"), src]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"{src}:\n{r.stderr}"


@pytest.mark.parametrize("which", ["true", "fixture"])
def test_ld_bind_now_works(collector, cc, which):
    argv = [TRUE] if which == "true" else [cc("exec_variants.c"), "posix_spawn", TRUE, "true"]
    cp, _ = collector.run(argv, env=dict(os.environ, LD_BIND_NOW="1"))
    assert (cp.returncode, cp.stderr) == (0, b"")
    assert collector.records_of("start", exe=TRUE, argv=[argv[-1]])
    assert collector.records_of("end", reason="exit")


# ---- errno ----

def test_failed_open_leaves_errno_exactly_enoent(collector, cc, tmp_path):
    prog = cc("errno_probe.c")
    cp, _ = collector.run([prog, "fail", str(tmp_path)])
    lines = cp.stdout.decode().splitlines()
    assert len(lines) == 8
    assert all(line.endswith(f" errno={errno.ENOENT}") for line in lines), lines
    assert cp.stdout == plain([prog, "fail", str(tmp_path)]).stdout
    assert collector.records_of("open", res=-errno.ENOENT)  # the hook did see the calls


def test_errno_is_preserved_across_successful_hooked_calls(collector, cc, tmp_path):
    prog = cc("errno_probe.c")
    (tmp_path / "hooked").mkdir()
    (tmp_path / "plain").mkdir()
    hooked, _ = collector.run([prog, "keep", str(tmp_path / "hooked")])
    expected = plain([prog, "keep", str(tmp_path / "plain")])
    assert hooked.returncode == expected.returncode == 0
    assert hooked.stdout.decode().splitlines() == expected.stdout.decode().splitlines()
    assert len(collector.records_of("open")) >= 4 and collector.records_of("net", api="accept")


# ---- fork, vfork ----

def test_forking_while_threads_use_hooked_calls_never_deadlocks(collector, cc, tmp_path):
    nforks = 150
    cp, _ = collector.run([cc("fork_storm.c"), str(tmp_path), str(nforks), "3"], timeout=30)
    assert cp.returncode == 0, cp
    *pids, done = cp.stdout.decode().split()
    assert done == "done" and len(pids) == nforks
    (me,) = collector.records_of("start")
    missing = []
    for i, pid in enumerate(map(int, pids)):
        recs = collector.records_of("open", path=str(tmp_path / f"child-{i}"), pid=pid,
                                    ppid=me["pid"])
        ends = collector.records_of("end", pid=pid)
        if len(recs) != 1 or len(ends) != 1:
            missing.append((i, pid, recs, ends))
    assert missing == [], f"{len(missing)} children not (fully) reported"


def test_vfork_exec_loop_is_reported(collector, cc):
    n = 20
    prog = cc("vfork_exec.c")
    cp, _ = collector.run([prog, str(n), TRUE])
    assert (cp.returncode, cp.stderr) == (0, b"")
    (me,) = collector.records_of("start", exe=prog)
    for i in range(n):
        args = ["true", f"vfork-{i}"]
        (ok,) = collector.records_of("exec", path=TRUE, argv=args, phase="attempt")
        assert ok["pid"] != me["pid"] and ok["ppid"] == me["pid"]
        (started,) = collector.records_of("start", exe=TRUE, argv=args)
        assert (started["pid"], started["ppid"]) == (ok["pid"], me["pid"])
        failed = collector.records_of("exec", path="/nonexistent/true", argv=args)
        if i % 2:
            assert [(r["phase"], r["res"], r["pid"]) for r in failed] == [
                ("attempt", 0, ok["pid"]), ("failed", -errno.ENOENT, ok["pid"])]
        else:
            assert failed == []
    # the parent's own stream is intact: its seqs run 1..n without a gap and end it
    mine = [r for r in collector.records if r["stream"] == me["stream"]]
    assert [r["seq"] for r in mine] == list(range(1, len(mine) + 1))
    assert mine[-1]["kind"] == "end" and mine[-1]["failed_sends"] == 0
    assert cp.stdout == b"sockets=1\n"  # the channel, and nothing else at fd >= 63


def test_vfork_child_closing_fds_does_not_leak_the_parents_channel(collector, cc):
    """CPython's subprocess: vfork, close_range(3, ~0U) in the child, exec. The child's fd table is
    its own: its closes must not make the parent forget (and leak) its channel."""
    n = 10
    cp, _ = collector.run([cc("vfork_exec.c"), str(n), TRUE, "closefds"])
    assert cp.returncode == 0, cp
    assert len(collector.records_of("start", exe=TRUE)) == n
    assert len(collector.records_of("open", path=lambda p: p.startswith("/nonexistent/marker-"))) == n
    assert cp.stdout == b"sockets=1\n"


def test_python_subprocess_does_not_leak_descriptors(collector):
    code = ("import os, subprocess\n"
            "for _ in range(5):\n"
            "    subprocess.run(['true'])\n"
            "    open(os.devnull, 'w').close()\n"
            "print(len(os.listdir('/proc/self/fd')))\n")
    hooked, _ = collector.run(["python3", "-c", code])
    assert len(collector.records_of("start", argv=["true"])) == 5
    expected = int(plain(["python3", "-c", code]).stdout)
    assert int(hooked.stdout) == expected + 1  # the hook's channel, once


# ---- the hook's own fd ----

@pytest.mark.parametrize("how", ["close_range", "closefrom", "loop", "raw"])
def test_closing_all_fds_at_start_does_not_lose_later_opens(collector, cc, tmp_path, how):
    target = tmp_path / "after-close"
    cp, _ = collector.run([cc("close_all.c"), how, str(target)])
    assert (cp.returncode, cp.stdout) == (0, b"ok sockets=1\n")  # reconnected, once
    assert len(collector.records_of("open", path=str(target))) == 2
    assert collector.records_of("end", reason="exit")


def test_close_range_cloexec_does_not_leak_the_channel(collector, cc, tmp_path):
    """CLOSE_RANGE_CLOEXEC closes nothing: the channel is still ours and must stay the only one."""
    target = tmp_path / "after-cloexec"
    cp, _ = collector.run([cc("close_all.c"), "cloexec", str(target)])
    assert len(collector.records_of("open", path=str(target))) == 2
    assert (cp.returncode, cp.stdout) == (0, b"ok sockets=1\n")


@pytest.mark.parametrize("how", ["close_dup2", "dup2", "dup3", "raw", "raw_socket"])
def test_fd_reused_by_the_application_never_receives_records(collector, cc, tmp_path, how):
    mine, other = tmp_path / "mine", tmp_path / "other"
    cp, _ = collector.run([cc("hijack.c"), how, str(mine), str(other)])
    assert cp.returncode == 0, cp
    out = dict(re.findall(r"(\w+)=(\d+)", cp.stdout.decode()))
    assert int(out["hookfd"]) >= 63
    assert mine.read_bytes() == b""
    assert out["leaked"] == "0"
    assert out["open"] == "1"  # the number is the application's now, and answers as such
    # and the hook reconnected: what happened after the takeover is reported
    assert len(collector.records_of("open", path=str(other))) == 3
    assert len(collector.records_of("net", api="connect", rport=1)) == 1
    assert collector.records_of("end", reason="exit")


@pytest.mark.parametrize("flags", [[], ["-D_FILE_OFFSET_BITS=64"], ["-DOLD_GLIBC"]],
                         ids=["fstat", "fstat64", "__fxstat64"])
def test_programs_probing_their_fds_find_the_same_ones_as_without_the_hook(collector, cc, flags):
    """fstat and fcntl over every fd number (CPython's fd_status.py, fd-leak checks) do not find
    the channel, though it is open: only /proc/self/fd still shows it."""
    if "-DOLD_GLIBC" in flags and os.uname().machine != "x86_64":
        pytest.skip("the glibc before 2.33 entry point is named with its x86_64 version")
    argv = [cc("fd_probe.c", flags), "/etc/hostname"]
    hooked, _ = collector.run(argv)
    assert collector.records_of("open", path=os.path.realpath("/etc/hostname"))  # the channel is open
    assert hooked.stdout == plain(argv).stdout
    assert hooked.returncode == 0


# ---- stacks ----

SMALL_STACK_CALLS = ["open", "fopen", "connect", "posix_spawnp", "popen", "system", "execvp"]


@pytest.mark.parametrize("call", SMALL_STACK_CALLS)
def test_hooks_fit_on_a_minimal_thread_stack(collector, cc, call):
    """A thread created with PTHREAD_STACK_MIN runs these calls fine without the hook."""
    prog = cc("small_stack.c")
    expected = plain([prog, call])
    assert (expected.returncode, expected.stdout) == (0, f"{call} ok\n".encode())
    hooked, _ = collector.run([prog, call])
    assert (hooked.returncode, hooked.stdout) == (0, f"{call} ok\n".encode())


@pytest.mark.parametrize("call", ["open", "execve"])
@pytest.mark.parametrize("warm", [False, True], ids=["first-call", "warm"])
def test_async_signal_safe_calls_work_on_a_sigstksz_alternate_stack(collector, cc, call, warm):
    """open and execve are async-signal-safe; handlers run on sigaltstack(SIGSTKSZ) stacks."""
    argv = [cc("sig_altstack.c"), call] + (["warm"] if warm else [])
    expected = plain(argv)
    assert expected.returncode == 0
    hooked, _ = collector.run(argv)
    assert (hooked.returncode, hooked.stdout) == (0, expected.stdout)
    if call == "execve":
        assert collector.records_of("start", argv=["true", "from-handler"])


# ---- the program's behaviour ----

COMMANDS = {
    "ls": (["ls", "-la", "/usr/share/common-licenses"], None),  # a directory nothing else changes
    "ls-missing": (["ls", "/nonexistent-pl"], None),
    "cat": (["cat", "/etc/os-release"], None),
    "sh": (["sh", "-c", "echo hi; echo err >&2; exit 3"], None),
    "python3": (["python3", "-c", "import os;print(os.getcwd())"], None),
    "sort": (["sort"], b"pear\napple\nfig\napple\n"),
    "grep": (["grep", "-n", "an", "-"], b"banana\ncherry\nmango\n"),
    "env": (["env"], None),
    "find": (["sh", "-c", 'find /usr/include -name "*.h" | head'], None),
}


def outcome(cp):
    out = cp.stdout
    if cp.args[0] == "env":  # the hook's own variables are the one expected difference
        out = b"".join(line for line in out.splitlines(True)
                       if not line.startswith((b"LD_PRELOAD=", b"PRELOAD_")))
    return out, cp.stderr, cp.returncode


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_output_is_identical_with_and_without_hook(collector, name):
    argv, data = COMMANDS[name]
    hooked, _ = collector.run(argv, input=data)
    assert collector.records_of("start")  # the hook was there
    assert outcome(hooked) == outcome(plain(argv, input=data))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_programs_run_unharmed_without_daemon(libpreload, tmp_path, name):
    argv, data = COMMANDS[name]
    env = dict(os.environ, LD_PRELOAD=libpreload, PRELOAD_SOCKET=str(tmp_path / "none" / "sock"))
    hooked = subprocess.run(argv, env=env, input=data, capture_output=True, timeout=30,
                            **({} if data else {"stdin": subprocess.DEVNULL}))
    assert outcome(hooked) == outcome(plain(argv, input=data))


# ---- a daemon that misbehaves ----

@pytest.fixture
def bad_daemon(tmp_path):
    """A listening socket that hangs up on every connection ("hangup"), keeps them without ever
    reading ("stall"), or never accepts ("deaf"). Yields a function starting one of the modes."""
    path = str(tmp_path / "d.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(path)
    srv.listen(64)
    kept, threads, stop = [], [], threading.Event()

    def serve(mode):
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                c = srv.accept()[0]
            except socket.timeout:
                continue
            if mode == "hangup":
                c.close()
            else:
                kept.append(c)

    def start(mode):
        if mode != "deaf":
            threads.append(threading.Thread(target=serve, args=(mode,), daemon=True))
            threads[-1].start()
        return path, kept

    yield start
    stop.set()
    for t in threads:
        t.join()
    for c in kept:
        c.close()
    srv.close()


SCRIPT = "for i in 1 2 3 4 5; do echo $i > f$i; cat f$i; done; ls; exit 4"


@pytest.mark.parametrize("mode", ["hangup", "stall", "deaf"])
def test_misbehaving_daemon_does_not_harm_the_program(libpreload, bad_daemon, tmp_path, mode):
    path, _ = bad_daemon(mode)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env = dict(os.environ, LD_PRELOAD=libpreload, PRELOAD_SOCKET=path)
    hooked = subprocess.run(["sh", "-c", SCRIPT], env=env, cwd=tmp_path / "a",
                            capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    expected = plain(["sh", "-c", SCRIPT], cwd=tmp_path / "b")
    assert outcome(hooked) == outcome(expected)
    assert expected.returncode == 4


def test_stalled_daemon_never_blocks_and_losses_are_accounted(libpreload, cc, bad_daemon, tmp_path):
    """The daemon never reads: records the kernel will not queue are dropped and counted, never
    waited for; the end record, refused too, goes to the spool file instead. Every seq is either
    delivered or counted as failed."""
    path, kept = bad_daemon("stall")
    (tmp_path / "spool").mkdir()
    n = 30000  # more than the channel's send buffer holds
    env = dict(os.environ, LD_PRELOAD=libpreload, PRELOAD_SOCKET=path)
    cp = subprocess.run([cc("open_variants.c"), "-n", str(n), "open", str(tmp_path / "w"), "w"],
                        env=env, capture_output=True, timeout=30)
    assert cp.returncode == 0 and cp.stdout.count(b"res=") == n
    (conn,) = kept
    conn.setblocking(False)
    delivered = []
    try:
        while True:
            data = conn.recv(1 << 17)
            if not data:
                break
            delivered.append(wire.decode(data))
    except BlockingIOError:
        pass
    assert 0 < len(delivered) < n
    assert [r["seq"] for r in delivered] == list(range(1, len(delivered) + 1))
    (spooled,) = os.listdir(tmp_path / "spool")
    pid, ppid, stream, last_seq, failed = (tmp_path / "spool" / spooled).read_text().split()
    assert stream == spooled == delivered[0]["stream"]
    assert int(pid) == delivered[0]["pid"]
    assert int(last_seq) == n + 2  # start, n opens, end
    assert len(delivered) + int(failed) == int(last_seq)


def test_low_fd_limit_leaves_the_programs_fd_numbers_alone(collector, cc, tmp_path):
    """With RLIMIT_NOFILE below the channel's fd (63) the hook keeps no fd at all: the program's
    own opens get the numbers they get without it, and records still arrive, one connection each."""
    import resource

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (20, 20))

    argv = [cc("open_variants.c"), "-n", "3", "open", str(tmp_path / "f"), "w"]
    expected = plain(argv, preexec_fn=low_limit)
    hooked, _ = collector.run(argv, preexec_fn=low_limit)
    assert (hooked.returncode, hooked.stdout) == (expected.returncode, expected.stdout)
    assert b"res=3 " in expected.stdout
    assert len(collector.records_of("open", path=str(tmp_path / "f"))) == 3
    assert collector.records_of("end")


def test_writes_to_dev_null_are_counted_not_sent(collector, cc):
    cp, _ = collector.run([cc("open_variants.c"), "-n", "5", "open", "/dev/null", "w"])
    (rec,) = collector.records_of("open", path="/dev/null")
    counted = sum(n for c in collector.records_of("counts") for h, n in c["counts"] if h == rec["path_hash"])
    assert (rec["repeatable"], counted) == (True, 4)


# ---- fd 63 taken behind libc's back, vfork children ----

# dup2s its own pipe or socket onto the hook's fd with the raw system call (no hook sees it), leaves a
# stale errno that a socket could give, makes a hooked call that sends a record, then writes to fd 63
TAKE_63_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    int p[2], n;
    char got[16] = "";
    if (!strcmp(argv[1], "pipe") ? pipe(p) : socketpair(AF_UNIX, SOCK_STREAM, 0, p)) return 2;
    if (syscall(SYS_dup2, p[1], 63) != 63 || fcntl(p[0], F_SETFL, O_NONBLOCK)) return 3;
    errno = EPIPE;
    close(open(argv[2], O_RDONLY));
    if (write(63, "mine", 4) != 4) return 4;
    n = read(p[0], got, sizeof got);
    printf("%.*s\n", n > 0 ? n : 0, got);
    return 0;
}
"""

# vfork child: closes 3..255, opens /dev/null, execs /bin/true; the parent then opens argv[2] and
# counts its fds connected to the collector at argv[1]
VFORK_CLOSE_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    int st, sockets = 0;
    pid_t pid = vfork();
    if (pid == 0) {
        for (int fd = 3; fd < 256; fd++) close(fd);
        open("/dev/null", O_RDONLY);
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    if (waitpid(pid, &st, 0) != pid || st) return 2;
    close(open(argv[2], O_RDONLY));
    for (int fd = 0; fd < 1024; fd++) {
        struct sockaddr_un peer;
        socklen_t len = sizeof peer;
        if (getpeername(fd, (struct sockaddr *)&peer, &len) == 0 && peer.sun_family == AF_UNIX &&
            !strcmp(peer.sun_path, argv[1]))
            sockets++;
    }
    printf("child=%d sockets=%d\n", (int)pid, sockets);
    return 0;
}
"""


@pytest.mark.parametrize("kind", ["pipe", "socket"])
def test_fd_63_taken_by_the_application_is_never_closed_by_the_hook(collector, tmp_path, kind):
    prog = build(tmp_path, "take63", TAKE_63_C)
    target = tmp_path / "opened"
    target.write_text("")
    cp, _ = collector.run([prog, kind, str(target)])
    assert (cp.returncode, cp.stdout) == (0, b"mine\n"), cp  # as without the hook
    assert plain([prog, kind, str(target)]).stdout == b"mine\n"
    assert len(collector.records_of("open", path=str(target))) == 1  # reconnected elsewhere


def test_vfork_child_that_closes_fds_and_opens_leaves_the_parent_one_channel(collector, tmp_path):
    prog = build(tmp_path, "vfork_close", VFORK_CLOSE_C)
    later = tmp_path / "later"
    later.write_text("")
    cp, _ = collector.run([prog, collector.path, str(later)])
    assert cp.returncode == 0, cp
    out = dict(re.findall(r"(\w+)=(\d+)", cp.stdout.decode()))
    assert out["sockets"] == "1"
    (me,) = collector.records_of("start", exe=prog)
    # the child's open is its own, and the parent's later records still arrive on its stream
    (null,) = collector.records_of("open", path="/dev/null")
    assert (null["pid"], null["ppid"]) == (int(out["child"]), me["pid"])
    (after,) = collector.records_of("open", path=str(later))
    assert (after["pid"], after["stream"]) == (me["pid"], me["stream"])
    mine = [r for r in collector.records if r["stream"] == me["stream"]]
    assert [r["seq"] for r in mine] == list(range(1, len(mine) + 1))
