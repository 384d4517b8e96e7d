"""Tracing never harms the application: static programs under the tracer (ptrace + seccomp) keep
their exit codes, output, signals, stops, children and execs, and the supervisor's PID-1 duties
hold under ptrace. Where the tracer is not there, the program still runs and is reported blind.

Every run has a timeout: a hang fails the test (and what it started is killed), it never blocks
the suite. No test asserts how long anything takes."""
import errno
import os
import platform
import signal
import subprocess
import time
from pathlib import Path

import pytest

import preload
from agent import PRELOAD, events, of_type, processes, starts
from preload.events import Enricher
from tools import build, need_32_bit

TRACER = os.path.join(os.path.dirname(preload.__file__), "preload-trace")
RUN_TIMEOUT = 60  # generous: only a hang gets anywhere near it
WAIT_TIMEOUT = 30  # for a condition the test waits for (a file, a stopped state)


# -- running things, and never leaving them behind ---------------------------------------------

def _session_members(sid):
    return [pid for pid, fields in processes() if int(fields[3]) == sid]


def _kill_session(sid):
    """SIGKILL to what a run started: its session (the supervisor's; the application's group is
    in it too). The daemon and the tracer have sessions of their own and leave when it dies."""
    for pid in _session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _popen(argv, env=None, **kwargs):
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            **kwargs)


def _finish(proc, timeout=RUN_TIMEOUT):
    """(returncode, stdout, stderr); a run that does not end in time is killed and fails."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} hung (killed after {timeout} s); stdout={out!r} stderr={err!r}")
    return proc.returncode, out, err


def agent_start(state, argv, attach=None, env=None):
    opts = ["--attach", attach] if attach else []
    env = dict(env or os.environ, PRELOAD_STATE_DIR=str(state))
    return _popen(PRELOAD + ["run", *opts, "--", *argv], env=env)


def agent_run(state, argv, attach=None, timeout=RUN_TIMEOUT):
    """`preload run [--attach A] -- ARGV`: (returncode, stdout, stderr)."""
    return _finish(agent_start(state, argv, attach), timeout)


def bare_run(argv, timeout=RUN_TIMEOUT, env=None):
    """ARGV without the agent: (returncode as the supervisor reports it, stdout, stderr)."""
    rc, out, err = _finish(_popen(argv, env=env), timeout)
    return (128 - rc if rc < 0 else rc), out, err


def _wait_for_file(path, proc):
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} ended before it was ready: {_finish(proc)}")
        if time.monotonic() > deadline:
            _kill_session(proc.pid)
            pytest.fail(f"{proc.args} never became ready: {_finish(proc)}")
        time.sleep(0.01)
    return [int(w) for w in path.read_text().split()]


def _stat(pid):
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rindex(b")") + 2:].split()


def _task_states(pid):
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_bytes()
        except OSError:
            continue
        states.append(chr(stat[stat.rindex(b")") + 2]))
    return states


# system call numbers, for telling where a process waits (/proc/PID/syscall)
SYSCALLS = {"x86_64": {"openat": 257, "wait4": 61}, "aarch64": {"openat": 56, "wait4": 260}}
NR = SYSCALLS.get(platform.machine(), {})


def _in_syscall(pid):
    """The number of the system call pid is blocked in, or None when it runs."""
    try:
        first = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(first) if first.lstrip("-").isdigit() else None


def _wait_until_supervising(proc):
    """Until the supervisor waits for its application (os.waitpid in its reaping loop): from
    then on it knows the application's pid, so a signal sent to it now is one it can forward.
    (Signals that come earlier are kept and forwarded then: tested on their own below.)"""
    if "wait4" not in NR:
        return
    deadline = time.monotonic() + WAIT_TIMEOUT
    while _in_syscall(proc.pid) != NR["wait4"]:
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill_session(proc.pid)
            pytest.fail(f"the supervisor never settled into waiting: {_finish(proc)}")
        time.sleep(0.01)


def _children(pid):
    return [child for child, fields in processes() if int(fields[1]) == pid]


def _tracer_of(supervisor_pid):
    for pid in _children(supervisor_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"preload-trace") and b"serve" in cmdline:
            return pid
    return None


def _helpers_of(state):
    """Live processes (no zombies) whose command line names this run's state directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if str(state).encode() in cmdline and _stat(entry.name)[0] != b"Z":
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def _traced_starts(evts, exe):
    """Start events of images of exe that the tracer reported."""
    exe = os.path.realpath(exe)
    return [e for e in of_type(evts, "execve", **{"evt.dir": "<", "evt.res": "SUCCESS"})
            if e["proc.exepath"] == exe and e["evt.source"] == "ptrace"
            and e["preload.attach"] == "ptrace"]


@pytest.fixture
def static(cc):
    """static("trace_x.c") -> path of the fixture linked statically."""
    return lambda source: cc(source, extra_flags=["-static"])


# -- exit codes and output ---------------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 42])
def test_traced_static_program_exit_code_and_output_are_those_of_the_bare_run(tmp_path, static, code):
    exe = static("trace_exit.c")
    argv = [exe, "exit", str(code)]
    bare = bare_run(argv)
    under = agent_run(tmp_path / "state", argv)
    assert under == bare == (code, f"out: exit {code}\n".encode(), f"err: exit {code}\n".encode())
    (start,) = _traced_starts(events(tmp_path / "state"), exe)  # it really was traced
    assert start["preload.argv"] == argv


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM],
                         ids=lambda s: signal.Signals(s).name)
def test_traced_static_program_killed_by_signal_exits_128_plus_signal(tmp_path, static, sig):
    exe = static("trace_exit.c")
    argv = [exe, "kill", str(int(sig))]
    bare = bare_run(argv)
    under = agent_run(tmp_path / "state", argv)
    assert under == bare
    assert under[0] == 128 + sig
    assert under[1:] == (f"out: kill {int(sig)}\n".encode(), f"err: kill {int(sig)}\n".encode())
    assert _traced_starts(events(tmp_path / "state"), exe)


# -- signals ---------------------------------------------------------------------------------

def _signal_scenario(proc, ready, sig, supervised):
    (pid,) = _wait_for_file(ready, proc)
    if supervised:
        _wait_until_supervising(proc)
    os.kill(proc.pid, sig)  # to the supervisor (forwarded), or to the bare program itself
    return pid, _finish(proc)


FORWARDED = [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGTERM]


@pytest.mark.parametrize("sig", FORWARDED, ids=lambda s: signal.Signals(s).name)
def test_signal_forwarded_by_supervisor_reaches_handler_of_traced_static_program(tmp_path, static, sig):
    exe = static("trace_signals.c")
    bare_ready = tmp_path / "bare-ready"
    _, bare = _signal_scenario(_popen([exe, str(bare_ready)]), bare_ready, sig, supervised=False)
    state = tmp_path / "state"
    proc = agent_start(state, [exe, str(tmp_path / "ready")])
    pid, under = _signal_scenario(proc, tmp_path / "ready", sig, supervised=True)
    assert under == bare == (3, f"got {signal.Signals(sig).name}\n".encode(), b"")
    (start,) = _traced_starts(events(state), exe)
    assert start["proc.pid"] == pid


def _stop_cont_scenario(proc, tmp_path, name, mode):
    """SIGSTOP then SIGCONT to the program, twice; only then may it finish (GO: a file it polls
    for, or a FIFO whose opening for writing it is blocked in)."""
    ready, go = tmp_path / f"{name}-ready", tmp_path / f"{name}-go"
    (pid,) = _wait_for_file(ready, proc)
    deadline = time.monotonic() + WAIT_TIMEOUT
    while mode == "block" and _in_syscall(pid) != NR["openat"]:
        if time.monotonic() > deadline:  # the stops below are to come while the open waits
            _kill_session(proc.pid)
            pytest.fail(f"never blocked in openat: {_finish(proc)}")
        time.sleep(0.01)
    for _ in range(2):
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not all(s in "tT" for s in _task_states(pid)):
            if time.monotonic() > deadline:
                _kill_session(proc.pid)
                pytest.fail(f"SIGSTOP did not stop the program: {_task_states(pid)}")
            time.sleep(0.01)
        assert proc.poll() is None, "the stop ended the run"
        os.kill(pid, signal.SIGCONT)
    if mode == "block":
        reader = os.open(go, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open through
        try:
            return pid, _finish(proc)
        finally:
            os.close(reader)
    go.touch()
    return pid, _finish(proc)


@pytest.mark.parametrize("mode", ["poll", "block"])
def test_stopped_and_continued_traced_program_carries_on_and_finishes(tmp_path, static, mode):
    if mode == "block" and "openat" not in NR:
        pytest.skip(f"openat's number on {platform.machine()} is not known here")
    exe = static("trace_stopcont.c")
    runs = {}
    for name in ("bare", "traced"):
        ready, go = tmp_path / f"{name}-ready", tmp_path / f"{name}-go"
        if mode == "block":
            os.mkfifo(go)
        argv = [exe, str(ready), str(go), mode]
        proc = _popen(argv) if name == "bare" else agent_start(tmp_path / "state", argv)
        runs[name] = _stop_cont_scenario(proc, tmp_path, name, mode)
    (_, bare), (pid, under) = runs["bare"], runs["traced"]
    assert under == bare == (0, b"finished\n", b"")
    evts = events(tmp_path / "state")
    (start,) = _traced_starts(evts, exe)
    assert start["proc.pid"] == pid
    if mode == "block":  # the interrupted, restarted open is one call, with its real result
        go = str(tmp_path / "traced-go")
        opens = [e for e in evts if e["evt.type"] in ("open", "openat") and e["fd.name"] == go]
        assert [(e["proc.pid"], e["evt.res"]) for e in opens] == [(pid, "SUCCESS")]


def test_forwarded_sigterm_without_handler_ends_traced_program_with_143(tmp_path, static):
    exe = static("trace_stopcont.c")
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = agent_start(tmp_path / "state", [exe, str(ready), str(go), "poll"])
    _wait_for_file(ready, proc)
    _wait_until_supervising(proc)
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc) == (128 + signal.SIGTERM, b"", b"")


# Injected into the supervisor's interpreter (sitecustomize): a pause right after Popen returns
# the application's process, before the supervisor records its pid: what a supervisor descheduled
# at that point does, as happens under load.
SLOW_START = """
import os, subprocess, time
_init = subprocess.Popen.__init__
def _init_then_pause(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    if "--handoff" in [str(a) for a in self.args]:  # the application, through the launcher
        time.sleep(float(os.environ["PRELOAD_TEST_START_PAUSE"]))
subprocess.Popen.__init__ = _init_then_pause
"""


def test_signal_arriving_while_supervisor_records_the_application_start_is_not_lost(tmp_path, static):
    exe = static("trace_signals.c")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_START)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, PRELOAD_TEST_START_PAUSE="2")
    proc = agent_start(tmp_path / "state", [exe, str(tmp_path / "ready")], env=env)
    _wait_for_file(tmp_path / "ready", proc)  # the program runs, its handlers are in place
    if "wait4" in NR and _in_syscall(proc.pid) == NR["wait4"]:
        _kill_session(proc.pid)
        _finish(proc)
        pytest.skip("the supervisor was past its start already: the window was missed")
    proc.send_signal(signal.SIGHUP)
    assert _finish(proc, timeout=10) == (3, b"got SIGHUP\n", b"")  # lost: it waits forever


def test_signal_storm_leaves_traced_calls_of_the_program_intact(tmp_path, static):
    exe = static("trace_sigstorm.c")
    runs = {}
    for name in ("bare", "traced"):
        ready, go = tmp_path / f"{name}-ready", tmp_path / f"{name}-go"
        argv = [exe, str(ready), str(go)]
        proc = _popen(argv) if name == "bare" else agent_start(tmp_path / "state", argv)
        _wait_for_file(ready, proc)
        if name == "traced":
            _wait_until_supervising(proc)
        for _ in range(200):  # to the supervisor, which forwards each one it gets
            proc.send_signal(signal.SIGUSR1)
        go.touch()
        runs[name] = _finish(proc)
    assert runs["traced"] == runs["bare"] == (0, b"bad=0\n", b"")
    assert _traced_starts(events(tmp_path / "state"), exe)


# -- children, execs -----------------------------------------------------------------------------

N_CHILDREN = 100


def test_hundred_forked_children_of_traced_program_are_all_followed(tmp_path, static):
    exe = static("trace_forks.c")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv = [exe, str(N_CHILDREN), "exit", str(out_dir)]
    state = tmp_path / "state"
    under = agent_run(state, argv)
    assert under == (0, f"children={N_CHILDREN} right={N_CHILDREN}\n".encode(), b"")

    evts = events(state)
    (parent,) = _traced_starts(evts, exe)
    creates = [e for e in evts if e["evt.type"] in ("open", "openat")
               and e["fd.name"].startswith(f"{out_dir}/child-")]
    # one each: child I created child-I
    expected = sorted(f"{out_dir}/child-{i}" for i in range(N_CHILDREN))
    assert sorted(e["fd.name"] for e in creates) == expected
    kids = {e["proc.pid"] for e in creates}
    assert len(kids) == N_CHILDREN and parent["proc.pid"] not in kids
    assert {e["proc.ppid"] for e in creates} == {parent["proc.pid"]}
    assert {e["evt.source"] for e in creates} == {"ptrace"}
    assert {e["evt.res"] for e in creates} == {"SUCCESS"}
    # every child's stream was closed: the tracer saw each of them end
    ended = {e["proc.pid"] for e in of_type(evts, "preload.end", **{"evt.source": "ptrace"})}
    assert kids <= ended


def test_hundred_children_execing_a_static_program_are_all_traced(tmp_path, static):
    exe, true = static("trace_forks.c"), static("trace_true.c")
    argv = [exe, str(N_CHILDREN), "exec", true]
    state = tmp_path / "state"
    under = agent_run(state, argv)
    assert under == (0, f"children={N_CHILDREN} right={N_CHILDREN}\n".encode(), b"")

    evts = events(state)
    (parent,) = _traced_starts(evts, exe)
    images = _traced_starts(evts, true)
    assert len(images) == N_CHILDREN
    assert len({e["proc.pid"] for e in images}) == N_CHILDREN
    assert {e["proc.ppid"] for e in images} == {parent["proc.pid"]}
    assert sorted(int(e["preload.argv"][1]) for e in images) == list(range(N_CHILDREN))
    attempts = [e for e in of_type(evts, "execve", **{"evt.dir": ">"})
                if e["evt.arg.filename"] == true]
    assert {e["proc.pid"] for e in attempts} == {e["proc.pid"] for e in images}
    assert {e["evt.source"] for e in attempts} == {"ptrace"}


@pytest.mark.parametrize("mode", ["join", "exit"], ids=["leader-waiting", "leader-exited"])
def test_exec_from_non_leader_thread_keeps_the_pid_and_the_new_image_is_traced(tmp_path, static, mode):
    exe, true = static("trace_thread_exec.c"), static("trace_true.c")
    state = tmp_path / "state"
    rc, out, err = agent_run(state, [exe, true, mode])
    assert (rc, err) == (0, b""), err
    lines = out.decode().splitlines()
    assert len(lines) == 2 and lines[0].startswith("leader pid=") and lines[1].startswith("image pid=")
    leader = int(lines[0].split("=")[1])
    assert int(lines[1].split("=")[1]) == leader  # exec from any thread: the process keeps its pid
    bare_rc, bare_out, bare_err = bare_run([exe, true, mode])
    assert (bare_rc, bare_err, len(bare_out.splitlines())) == (0, b"", 2)

    evts = events(state)
    (before,) = _traced_starts(evts, exe)
    (after,) = _traced_starts(evts, true)
    assert before["proc.pid"] == after["proc.pid"] == leader
    assert after["proc.ppid"] == before["proc.ppid"]
    assert after["preload.argv"] == ["trace_true", "0", "say-pid"]
    (attempt,) = [e for e in of_type(evts, "execve", **{"evt.dir": ">"})
                  if e["evt.arg.filename"] == true]
    assert attempt["proc.pid"] == leader and attempt["evt.source"] == "ptrace"


# -- another ABI ---------------------------------------------------------------------------------

@pytest.mark.skipif(platform.machine() != "x86_64", reason="int $0x80 is an x86-64 matter")
def test_int80_syscall_is_refused_with_enosys_under_tracer_and_recorded(tmp_path, static):
    exe = static("trace_int80.c")
    # without the agent the i386 getpid really runs: the differential below is the tracer's doing
    bare_rc, bare_out, _ = bare_run([exe])
    if bare_rc != 0 or bare_out.startswith(b"int80=-38 "):  # a kernel without IA32 emulation
        pytest.skip(f"this kernel runs no i386 calls: {bare_rc} {bare_out!r}")
    result, pid = (int(kv.split("=")[1]) for kv in bare_out.decode().split())
    assert result == pid

    state = tmp_path / "state"
    rc, out, err = agent_run(state, [exe])
    assert (rc, err) == (0, b"")
    result, pid = (int(kv.split("=")[1]) for kv in out.decode().split())
    assert result == -errno.ENOSYS
    (foreign,) = of_type(events(state), "preload.foreign_syscall")
    assert foreign["proc.pid"] == pid
    assert foreign["evt.source"] == "ptrace"
    assert foreign["evt.res"] == "ENOSYS"
    assert foreign["evt.arg.nr"] == 20  # getpid on i386
    assert foreign["evt.arg.arch"] == 0x40000003  # AUDIT_ARCH_I386
    assert foreign["proc.exepath"] == os.path.realpath(exe)


def test_32_bit_program_started_by_a_traced_one_runs_and_is_reported_blind(tmp_path, static):
    """Its calls are all of the other ABI: refusing them, as a 64-bit program's int 0x80 is, would
    kill it. They go through, unseen, and the image is reported blind once."""
    need_32_bit()
    p32 = build(tmp_path, "p32", '#include <stdio.h>\nint main(void){for (int i = 0; i < 3; i++) '
                'printf("%d\\n", i); return 4;}\n', "-m32")
    argv = [static("exec_twice.c"), "/nonexistent", p32]
    bare = bare_run(argv)
    state = tmp_path / "state"
    assert agent_run(state, argv) == bare
    assert bare[0] == 4
    evts = events(state)
    assert [(b["evt.arg.filename"], b["preload.binary"]) for b in of_type(evts, "preload.blindspot")] == [
        (p32, "foreign")]
    assert of_type(evts, "preload.foreign_syscall") == []


def test_64_bit_child_made_by_clone_under_a_32_bit_parent_still_has_its_i386_calls_refused(tmp_path, static):
    """clone(CLONE_PARENT) gives the 32-bit program a child that runs 64-bit code, of which the tracer
    saw no fork event: the child is judged by its own program, not its parent's."""
    need_32_bit()
    run32 = build(tmp_path, "run32", '#include <sys/wait.h>\n#include <unistd.h>\nint main(int c, char **v)'
                  '{pid_t p = fork(); if (!p) { execv(v[1], v + 1); _exit(127); } while (wait(0) > 0) {} '
                  'return 0;}\n', "-m32")
    argv = [run32, static("trace_clone_int80.c")]
    rc, out, _ = bare_run(argv)
    assert (rc, out.startswith(b"int80=")) == (0, True) and out != b"int80=-38\n"
    state = tmp_path / "state"
    rc, out, err = agent_run(state, argv)
    assert (rc, out, err) == (0, b"int80=-38\n", b"")
    (foreign,) = of_type(events(state), "preload.foreign_syscall")
    assert foreign["evt.arg.nr"] == 20


# -- the tracer dies -------------------------------------------------------------------------------

def test_killing_the_tracer_ends_traced_programs_and_supervisor_exits_137(tmp_path, static):
    exe = static("trace_sleeper.c")
    state = tmp_path / "state"
    proc = agent_start(state, [exe, str(tmp_path / "ready")])
    app, child = _wait_for_file(tmp_path / "ready", proc)
    tracer = _tracer_of(proc.pid)
    assert tracer is not None, "no preload-trace serve among the supervisor's children"
    for pid in (app, child):  # both run under the tracer, with its filter on
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"TracerPid:\t{tracer}\n" in status
        assert "Seccomp:\t2\n" in status
    os.kill(tracer, signal.SIGKILL)
    rc, out, err = _finish(proc)
    assert rc == 128 + signal.SIGKILL, err
    assert out == b""
    # nothing that was traced runs on: the forked child ended too (gone, or a zombie of init's)
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        try:
            alive = _stat(child)[0] not in (b"Z", b"X")
        except (OSError, IndexError):
            alive = False
        if not alive:
            break
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the traced program's child outlived the tracer")
        time.sleep(0.01)
    # nor do the agent's helpers outlive the supervisor: the restarted tracer, the daemon
    deadline = time.monotonic() + WAIT_TIMEOUT
    while (left := _helpers_of(state)):
        if time.monotonic() > deadline:
            pytest.fail(f"helpers outlived the supervisor: {left}")
        time.sleep(0.01)


# -- no tracer: blind spots --------------------------------------------------------------------------

def test_static_child_of_hooked_shell_without_tracer_runs_unchanged_and_is_blind_spot(tmp_path, static):
    exe = static("trace_exit.c")
    argv = ["sh", "-c", f'{exe} exit 5; echo "sh saw $?"']
    bare = bare_run(argv)
    state = tmp_path / "state"
    under = agent_run(state, argv, attach="preload")
    assert under == bare == (0, b"out: exit 5\nsh saw 5\n", b"err: exit 5\n")
    evts = events(state)
    (blind,) = of_type(evts, "preload.blindspot")
    assert blind["evt.arg.filename"] == exe
    assert blind["preload.binary"] == "static"
    assert not [e for e in starts(evts).values() if e["proc.exepath"] == os.path.realpath(exe)]


def test_launcher_without_tracer_runs_the_program_unchanged_and_reports_it_blind(collector, static):
    exe = static("trace_exit.c")
    bare = bare_run([exe, "exit", "42"])
    env = dict(os.environ, PRELOAD_TRACE="/nonexistent/preload-trace.sock")
    cp, records = collector.run([TRACER, "exec", exe, "static", "exit", "42"], env=env,
                                timeout=RUN_TIMEOUT)
    assert (cp.returncode, cp.stdout, cp.stderr) == bare == (42, b"out: exit 42\n", b"err: exit 42\n")
    (rec,) = records  # the launcher is static and so is the program: the BLIND record is all
    assert rec["kind"] == "blind" and rec["source"] == "ptrace"
    assert (rec["reason"], rec["err"], rec["path"]) == ("no_tracer", errno.ENOENT, exe)
    assert rec["ppid"] == os.getpid()
    (e,) = Enricher().events(rec)
    assert e["evt.type"] == "preload.blindspot" and e["evt.arg.filename"] == exe
    assert "could not be reached" in e["preload.reason"]


# -- static programs started by dynamic ones, the unusual ways ------------------------------------------

@pytest.mark.parametrize("flags", [[], ["--cloexec"]], ids=["memfd", "memfd-cloexec"])
def test_static_program_fexecve_from_memfd_is_traced_and_output_unchanged(tmp_path, cc, static, flags):
    launcher, exe = cc("trace_memfd_exec.c"), static("trace_exit.c")
    argv = [launcher, *flags, exe, "exit", "7"]
    bare = bare_run(argv)
    state = tmp_path / "state"
    under = agent_run(state, argv)
    assert under == bare == (7, b"out: exit 7\n", b"err: exit 7\n")
    evts = events(state)
    hooked = [e for e in of_type(evts, "execve", **{"evt.dir": "<"})
              if e["proc.exepath"] == os.path.realpath(launcher)]
    assert [e["preload.attach"] for e in hooked] == ["preload"]
    traced = [e for e in of_type(evts, "execve", **{"evt.dir": "<", "evt.source": "ptrace"})
              if e["proc.pid"] == hooked[0]["proc.pid"]]
    assert len(traced) == 1, [e for e in evts if e["evt.type"] == "execve"]
    assert traced[0]["proc.exepath"].startswith("/memfd:payload")
    assert traced[0]["preload.attach"] == "ptrace"
    assert traced[0]["preload.argv"] == ["from-memfd", "exit", "7"]


@pytest.mark.parametrize("linkage", ["dynamic", "static"], ids=["from-dynamic", "from-static"])
def test_static_program_started_by_posix_spawn_is_traced_and_output_unchanged(tmp_path, cc, static,
                                                                              linkage):
    # from a dynamic program the hook starts it through the launcher; from a static one the
    # tracer follows posix_spawn's clone (CLONE_VM|CLONE_VFORK) and the exec
    spawner = cc("trace_spawn.c") if linkage == "dynamic" else static("trace_spawn.c")
    exe = static("trace_exit.c")
    argv = [spawner, exe, "exit", "9"]
    bare = bare_run(argv)
    state = tmp_path / "state"
    under = agent_run(state, argv)
    assert under == bare == (9, b"out: exit 9\nspawned status=9\n", b"err: exit 9\n")
    evts = events(state)
    (parent,) = [e for e in starts(evts).values() if e["proc.exepath"] == os.path.realpath(spawner)]
    assert parent["preload.attach"] == ("preload" if linkage == "dynamic" else "ptrace")
    (child,) = _traced_starts(evts, exe)
    assert child["proc.ppid"] == parent["proc.pid"]
    assert child["preload.argv"] == ["spawned", "exit", "9"]
