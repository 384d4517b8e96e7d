"""`preload run` as an entrypoint wrapper: exit codes, signals, orphans, a dying daemon."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import PRELOAD, events, of_type, preload, processes, starts
from tools import build, need_32_bit


def test_exit_code_of_application_is_returned(tmp_path):
    r = preload("run", "--", "sh", "-c", "exit 7", state_dir=tmp_path)
    assert r.returncode == 7


def test_application_killed_by_signal_exits_128_plus_signal(tmp_path):
    r = preload("run", "--", "sh", "-c", "kill -KILL $$", state_dir=tmp_path)
    assert r.returncode == 128 + signal.SIGKILL


def test_missing_command_exits_127_with_a_clear_message(tmp_path):
    r = preload("run", "--", "no-such-program-anywhere", state_dir=tmp_path)
    assert r.returncode == 127
    assert b"no-such-program-anywhere: command not found" in r.stderr
    assert b"Traceback" not in r.stderr


def test_non_executable_command_exits_126(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    r = preload("run", "--", str(script), state_dir=tmp_path / "state")
    assert r.returncode == 126
    assert b"permission denied" in r.stderr


def test_command_without_separator_runs_too(tmp_path):
    r = preload("run", "sh", "-c", "echo $0 $1", "a", "b", state_dir=tmp_path)
    assert (r.returncode, r.stdout) == (0, b"a b\n")


def _start(tmp_path, script):
    env = dict(os.environ, PRELOAD_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.Popen(PRELOAD + ["run", "--", "sh", "-c", script], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the application never started"
        time.sleep(0.02)
    return proc


def test_sigterm_to_wrapper_reaches_application_and_exits_143(tmp_path):
    proc = _start(tmp_path, "touch ready; exec sleep 30")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
                                 signal.SIGUSR2, signal.SIGTERM])
def test_forwarded_signal_is_handled_by_the_application(tmp_path, sig):
    name = signal.Signals(sig).name[3:]
    proc = _start(tmp_path, f"trap 'echo got {name}; exit 3' {name}; touch ready; "
                            "while :; do sleep 0.05; done")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (3, f"got {name}\n".encode()), err


def _zombies_of(pid):
    return [child for child, fields in processes() if int(fields[1]) == pid and fields[0] == b"Z"]


def test_orphans_of_the_application_are_reaped(tmp_path):
    # the orphan exits while the application still runs: it must not stay a zombie of the wrapper
    proc = _start(tmp_path, "sh -c 'sleep 0.2 &'; touch ready; sleep 1.5")
    time.sleep(1.0)
    zombies = _zombies_of(proc.pid)
    proc.communicate(timeout=30)
    assert zombies == []
    assert proc.returncode == 0


def _daemon_pid(supervisor_pid):
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            if ppid == supervisor_pid and b"preload.daemon" in cmdline:
                return int(entry.name)
    return None


def test_daemon_killed_mid_run_leaves_application_unharmed_and_every_record_accounted(tmp_path):
    # 400 writes, each always recorded; the daemon is killed half-way through
    app = ("import os, time\n"
           "open('ready', 'w').close()\n"
           "for i in range(400):\n"
           "    with open(f'out-{i}', 'w') as f: f.write('x')\n"
           "    time.sleep(0.005)\n"
           "print('done')\n")
    env = dict(os.environ, PRELOAD_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.Popen(PRELOAD + ["run", "--", sys.executable, "-c", app], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    time.sleep(0.8)
    daemon = _daemon_pid(proc.pid)
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out) == (0, b"done\n")
    assert b"restarting" in err

    evts = events(tmp_path / "state")
    assert of_type(evts, "preload.daemon", **{"preload.state": "restart"})
    app_pid = next(pid for pid, e in starts(evts).items() if e["proc.exepath"] == os.path.realpath(sys.executable))
    mine = [e for e in evts if e.get("proc.pid") == app_pid and e["evt.type"] != "preload.daemon"]
    stream = {e["preload.stream"] for e in mine}
    assert len(stream) == 1
    end = of_type(mine, "preload.end")
    assert len(end) == 1, "the last record of the stream reached the new daemon"
    seqs = {e["preload.seq"] for e in mine}
    # every record the application's image produced is either in the log or a counted gap
    lost = end[0]["preload.seq"] - len(seqs)
    writes = [e for e in mine if e["evt.type"] in ("open", "openat") and e.get("evt.is_open_write")
              and "out-" in e["fd.name"]]
    assert len(writes) + lost >= 400
    assert len(writes) > 200, "records after the restart were delivered"


def test_static_program_with_hook_only_is_reported_as_blind_spot(tmp_path):
    exe = build(tmp_path, "static", '#include <stdio.h>\nint main(void){puts("static"); return 5;}\n',
                "-static")
    r = preload("run", "--attach", "preload", "--", str(exe), state_dir=tmp_path / "state")
    assert (r.returncode, r.stdout) == (5, b"static\n")
    assert b"not observed" in r.stderr
    blind = of_type(events(tmp_path / "state"), "preload.blindspot")
    assert [b["evt.arg.filename"] for b in blind] == [str(exe)]
    assert blind[0]["preload.binary"] == "static"


@pytest.mark.parametrize("attach", ["auto", "preload"])
def test_32_bit_program_runs_as_without_the_agent_and_is_reported_as_blind_spot(tmp_path, attach):
    """The hook cannot enter it, nor can the tracer read its calls: it runs as it would without the
    agent (its loader has no hook to refuse on the program's stderr), under the tracer when there is
    one (which follows what it starts), and it is reported as not observed."""
    need_32_bit()
    exe = build(tmp_path, "p32", '#include <stdio.h>\nint main(void){puts("32"); fputs("err\\n", stderr); '
                'return 5;}\n', "-m32")
    r = preload("run", "--attach", attach, "--", str(exe), state_dir=tmp_path / "state")
    assert (r.returncode, r.stdout) == (5, b"32\n")
    ours = [line for line in r.stderr.splitlines() if line.startswith(b"preload: ")]
    assert [line for line in r.stderr.splitlines() if line not in ours] == [b"err"]
    assert len(ours) == (attach == "preload")  # the supervisor warns when no tracer is in use
    blind = of_type(events(tmp_path / "state"), "preload.blindspot")
    assert [(b["evt.arg.filename"], b["preload.binary"]) for b in blind] == [(str(exe), "foreign")]


def test_what_a_32_bit_program_started_by_a_hooked_shell_starts_is_still_watched(tmp_path):
    """The shell's hook hands the 32-bit program to the tracer: its own calls go unseen, but the
    64-bit cat it execs is traced."""
    need_32_bit()
    exe = build(tmp_path, "p32", '#include <unistd.h>\nint main(void)'
                '{execl("/bin/cat", "cat", "/etc/hostname", (char *)0); return 127;}\n', "-m32")
    argv = ["sh", "-c", f"{exe}; echo rc=$?"]
    r = preload("run", "--", *argv, state_dir=tmp_path / "state")
    bare = subprocess.run(argv, capture_output=True)
    assert (r.returncode, r.stdout, r.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    evts = events(tmp_path / "state")
    assert [b["evt.arg.filename"] for b in of_type(evts, "preload.blindspot")] == [str(exe)]
    (cat,) = [e for e in starts(evts).values() if e["proc.exepath"] == os.path.realpath("/bin/cat")]
    assert (cat["evt.source"], cat["proc.cmdline"]) == ("ptrace", "cat /etc/hostname")


def test_32_bit_program_started_by_a_hooked_shell_without_a_tracer_is_one_blind_spot(tmp_path):
    """The hook reports it, and the daemon, which describes what a hooked program starts, does not
    report it again."""
    need_32_bit()
    exe = build(tmp_path, "p32", "int main(void){return 0;}\n", "-m32")
    r = preload("run", "--attach", "preload", "--", "sh", "-c", f"{exe}; true", state_dir=tmp_path / "state")
    assert r.returncode == 0
    blind = of_type(events(tmp_path / "state"), "preload.blindspot")
    assert [(b["evt.arg.filename"], b["preload.binary"]) for b in blind] == [(exe, "foreign")]


def test_static_child_of_hooked_shell_with_hook_only_is_reported_as_blind_spot(tmp_path):
    exe = build(tmp_path, "static", "int main(void){return 0;}\n", "-static")
    r = preload("run", "--attach", "preload", "--", "sh", "-c", f"{exe}; true", state_dir=tmp_path / "state")
    assert r.returncode == 0
    blind = of_type(events(tmp_path / "state"), "preload.blindspot")
    assert [b["evt.arg.filename"] for b in blind] == [str(exe)]


COMMANDS = [
    ["sh", "-c", "echo out; echo err >&2; exit 4"],
    ["ls", "-la", "/usr/include/linux/netfilter"],
    ["cat", "/etc/os-release"],
    ["sh", "-c", "sort /etc/services | head -20"],
    ["grep", "-r", "PATH_MAX", "/usr/include/linux/limits.h"],
    [sys.executable, "-c", "import os, subprocess; print(os.getcwd()); subprocess.run(['id', '-u'])"],
    ["sh", "-c", "find /usr/include/linux -name 'if_*.h' | sort | head"],
    ["sh", "-c", "cat /no/such/file"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a)[:40])
def test_output_and_exit_code_identical_with_and_without_agent(tmp_path, argv):
    bare = subprocess.run(argv, capture_output=True, timeout=60)
    under = preload("run", "--", *argv, state_dir=tmp_path)
    assert (under.returncode, under.stdout, under.stderr) == (bare.returncode, bare.stdout, bare.stderr)


def test_spool_notes_left_after_a_run_go_to_that_runs_log(tmp_path):
    state = tmp_path / "state"
    assert preload("run", "--", "true", state_dir=state).returncode == 0
    # a process of that run outlived its daemon: its end record found nobody and was spooled
    (state / "spool" / "00000000000000cd").write_text("4343 1 00000000000000cd 9 1\n")
    assert preload("run", "--", "true", state_dir=state).returncode == 0
    previous = [json.loads(line) for line in (state / "events.1.jsonl").read_text().splitlines()]
    assert [(e["proc.pid"], e["preload.seq"]) for e in of_type(previous, "preload.end", **{"preload.end_reason": "spool"})] \
        == [(4343, 9)]
    assert not of_type(events(state), "preload.end", **{"preload.end_reason": "spool"})
