"""Exec entry points: the caller's attempt (and failure) records and the new image's start record."""
import errno
import os
import shutil
import subprocess

import pytest

from tools import build, need_32_bit

PATH = "/usr/local/bin:/usr/bin:/bin"
ECHO = os.path.realpath(shutil.which("echo", path=PATH))
SH = "/bin/sh"

REPLACING = ["execve", "execv", "execvp", "execvpe", "execl", "execlp", "execle", "execveat",
             "fexecve"]
SPAWNING = ["posix_spawn", "posix_spawnp"]
P_VARIANTS = {"execvp", "execvpe", "execlp", "posix_spawnp"}


def env():
    return dict(os.environ, PATH=PATH)


def fixture_start(collector, prog):
    (start,) = collector.records_of("start", exe=prog)
    return start


@pytest.mark.parametrize("api", REPLACING + SPAWNING)
def test_each_exec_entry_point_yields_one_attempt_with_argv(collector, cc, api):
    prog = cc("exec_variants.c")
    target = "echo" if api in P_VARIANTS else ECHO
    args = ["echo", f"via-{api}", "two words"]
    cp, _ = collector.run([prog, api, target, *args], env=env())
    assert cp.returncode == 0, cp
    assert cp.stdout.startswith(f"via-{api} two words\n".encode())
    me = fixture_start(collector, prog)

    (attempt,) = collector.records_of("exec")
    assert attempt["api"] == api
    assert attempt["phase"] == "attempt" and attempt["res"] == 0
    assert attempt["path"] == ECHO  # the p-variants: as found on PATH
    assert attempt["argv"] == args
    assert attempt["pid"] == me["pid"]

    (started,) = collector.records_of("start", exe=ECHO)
    assert started["argv"] == args
    if api in SPAWNING:
        assert started["ppid"] == me["pid"] and started["pid"] != me["pid"]
    else:  # the same process, a new image
        assert started["pid"] == me["pid"] and started["ppid"] == me["ppid"] == os.getpid()


def test_execveat_and_fexecve_report_the_descriptor(collector, cc):
    prog = cc("exec_variants.c")
    for api in ("execveat", "fexecve"):
        collector.run([prog, api, ECHO, "echo", "x"], env=env())
        (attempt,) = collector.records_of("exec", api=api)
        assert attempt["fd"] >= 3  # the fixture opened the directory / the file itself
    collector.run([prog, "execve", ECHO, "echo", "x"], env=env())
    assert collector.records_of("exec", api="execve")[0]["fd"] == -1


@pytest.mark.parametrize("api", ["system", "popen"])
def test_shell_entry_points_yield_one_attempt_for_sh(collector, cc, api):
    prog = cc("exec_variants.c")
    cmd = f"echo via-{api}; exit 3"
    cp, _ = collector.run([prog, api, cmd], env=env())
    assert cp.returncode == 0, cp
    assert cp.stdout == f"via-{api}\nstatus=3\n".encode()
    me = fixture_start(collector, prog)

    (attempt,) = collector.records_of("exec")
    assert (attempt["api"], attempt["phase"], attempt["res"]) == (api, "attempt", 0)
    assert attempt["path"] == SH
    assert attempt["argv"] == ["sh", "-c", cmd]
    assert attempt["pid"] == me["pid"]

    (started,) = collector.records_of("start", exe=os.path.realpath(SH))
    assert started["argv"] == ["sh", "-c", cmd]
    assert started["ppid"] == me["pid"]


@pytest.mark.parametrize("api", [a for a in REPLACING + SPAWNING if a != "fexecve"])
def test_failed_exec_reports_enoent(collector, cc, api):
    prog = cc("exec_variants.c")
    target = "no-such-program-pl" if api in P_VARIANTS else "/usr/bin/no-such-program-pl"
    args = ["no-such-program-pl", "arg"]
    cp, _ = collector.run([prog, api, target, *args], env=env())
    assert cp.stdout == f"errno={errno.ENOENT}\n".encode()
    assert cp.returncode == 127
    me = fixture_start(collector, prog)

    attempt, failed = collector.records_of("exec")
    assert (attempt["phase"], attempt["res"]) == ("attempt", 0)
    assert (failed["phase"], failed["res"]) == ("failed", -errno.ENOENT)
    for r in (attempt, failed):
        assert r["api"] == api
        assert r["path"] == target  # not found on PATH: as given
        assert r["argv"] == args
        assert r["pid"] == me["pid"]
    assert attempt["seq"] < failed["seq"]
    assert collector.records_of("start") == [me]


def test_failed_fexecve_reports_eacces(collector, cc, tmp_path):
    prog = cc("exec_variants.c")
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    cp, _ = collector.run([prog, "fexecve", str(script), "x"], env=env())
    assert cp.stdout == f"errno={errno.EACCES}\n".encode()
    attempt, failed = collector.records_of("exec", api="fexecve")
    assert attempt["phase"] == "attempt"
    assert (failed["phase"], failed["res"]) == ("failed", -errno.EACCES)
    assert attempt["path"] == failed["path"] == str(script.resolve())
    assert attempt["argv"] == failed["argv"] == ["x"]


def test_grandchildren_are_reported(collector, cc):
    """sh forks and execs: the grandchild's attempt and start records arrive too."""
    prog = cc("exec_variants.c")
    cp, _ = collector.run([prog, "posix_spawn", SH, "sh", "-c", f"{ECHO} grandchild; true"],
                          env=env())
    assert cp.returncode == 0 and cp.stdout.startswith(b"grandchild\n")
    sh = collector.records_of("start", exe=os.path.realpath(SH))[0]
    (attempt,) = collector.records_of("exec", api="execve")
    assert attempt["path"] == ECHO and attempt["argv"] == [ECHO, "grandchild"]
    assert attempt["ppid"] == sh["pid"]
    (started,) = collector.records_of("start", exe=ECHO)
    assert started["pid"] == attempt["pid"] and started["argv"] == [ECHO, "grandchild"]


def test_start_record_describes_the_process(collector, tmp_path):
    cp, _ = collector.run(["/bin/sh", "-c", "exit 0", "name-$0"], cwd=tmp_path)
    (start,) = collector.records_of("start")
    assert start["exe"] == os.path.realpath("/bin/sh")
    assert start["cwd"] == str(tmp_path.resolve())
    assert start["argv"] == ["/bin/sh", "-c", "exit 0", "name-$0"]
    assert (start["uid"], start["euid"], start["gid"], start["egid"]) == (
        os.getuid(), os.geteuid(), os.getgid(), os.getegid())
    assert start["ppid"] == os.getpid()
    assert start["source"] == start["attach"] == "preload"


def test_streams_are_gapless(collector, cc):
    """Per process image: seq runs 1..n, one pid; an "end" record, when there is one, is last."""
    prog = cc("exec_variants.c")
    cp, recs = collector.run([prog, "system", f"cat /etc/hostname >/dev/null; {ECHO} a | cat"],
                             env=env())
    assert cp.returncode == 0, cp
    streams = {}
    for r in recs:
        streams.setdefault(r["stream"], []).append(r)
    assert len(streams) >= 5
    for rs in streams.values():
        rs.sort(key=lambda r: r["seq"])
        assert [r["seq"] for r in rs] == list(range(1, len(rs) + 1)), rs
        assert len({(r["pid"], r["ppid"]) for r in rs}) == 1, rs
        ends = [r for r in rs if r["kind"] == "end"]
        assert ends in ([], [rs[-1]]), rs


@pytest.mark.parametrize("how", ["exit", "_exit"])
def test_exiting_process_sends_counts_and_end(collector, tmp_path, how):
    """An image that exits says so (and sends what it aggregated), also through _exit(): dash
    (Debian's /bin/sh) and os._exit() in Python's forked workers end that way."""
    target = tmp_path / "read-thrice"
    target.write_text("x")
    code = (f"import os, sys\nfor _ in range(3): open({str(target)!r}).close()\n"
            f"{'sys.exit' if how == 'exit' else 'os._exit'}(0)\n")
    cp, _ = collector.run(["python3", "-c", code])
    assert cp.returncode == 0, cp
    (rec,) = collector.records_of("open", path=str(target))
    counted = sum(n for c in collector.records_of("counts", stream=rec["stream"])
                  for h, n in c["counts"] if h == rec["path_hash"])
    assert counted == 2
    (end,) = collector.records_of("end", stream=rec["stream"])
    assert end["failed_sends"] == 0


def test_long_argv_is_truncated_not_dropped(collector, cc):
    prog = cc("exec_variants.c")
    args = ["echo"] + [f"argument-{i:05d}" for i in range(3000)]  # ~45 KB of argv
    cp, _ = collector.run([prog, "execv", ECHO, *args], env=env())
    assert cp.returncode == 0 and cp.stdout.startswith(b"argument-00000 ")
    (attempt,) = collector.records_of("exec")
    (started,) = collector.records_of("start", exe=ECHO)
    for rec in (attempt, started):
        assert rec["truncated"] is True
        assert 100 < len(rec["argv"]) < len(args)
        assert rec["argv"][:-1] == args[:len(rec["argv"]) - 1]  # the last one may be cut short
        assert args[len(rec["argv"]) - 1].startswith(rec["argv"][-1])


def test_exec_reuses_the_inherited_channel_instead_of_connecting(collector):
    """A shell running commands: each new image adopts the connection it inherited."""
    cp, _ = collector.run(["sh", "-c", "cat /etc/hostname; ls / >/dev/null; true"])
    assert cp.returncode == 0
    assert len(collector.records_of("start")) >= 3
    assert collector.connections == 1


def test_a_foreign_fd_63_is_never_taken_for_the_channel(collector, tmp_path):
    """fd 63 handed down by the caller, but not a connection to our daemon: the hook connects anew
    and never writes into it."""
    other = tmp_path / "other"
    cp, _ = collector.run(["bash", "-c", f"exec 63>{other}; cat /etc/hostname"])
    assert cp.returncode == 0
    assert other.read_bytes() == b""
    assert collector.records_of("start", argv=["cat", "/etc/hostname"])


# prints to both streams, opens a file and exits with 3: what a 32-bit program does here, it does
# with or without the agent
PROGRAM_32 = r"""
#include <fcntl.h>
#include <stdio.h>
int main(void)
{
    printf("out %d\n", open("/etc/hostname", O_RDONLY) >= 0);
    fprintf(stderr, "err\n");
    return 3;
}
"""


@pytest.fixture
def program_32(tmp_path):
    need_32_bit()
    return build(tmp_path, "p32", PROGRAM_32, "-m32")


def test_32_bit_program_runs_as_without_the_hook_and_is_reported_blind(collector, program_32):
    """No build of the hook fits a 32-bit program: it must not get ours in LD_PRELOAD, whose
    loader would refuse it with a message on the program's stderr. It runs unobserved, and says so."""
    argv = ["sh", "-c", f"{program_32}; echo rc=$?"]
    hooked, _ = collector.run(argv)
    bare = subprocess.run(argv, capture_output=True)
    assert (hooked.returncode, hooked.stdout, hooked.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    assert bare.stderr == b"err\n"
    (blind,) = collector.records_of("blind")
    assert (blind["reason"], blind["path"]) == ("foreign", program_32)
    assert collector.records_of("start", exe=program_32) == []
