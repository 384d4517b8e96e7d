"""Running the real `preload` command in tests, and reading what it wrote."""
import json
import os
import subprocess
import sys
from pathlib import Path

# -P: not the source tree in the cwd, the installed package under test
PRELOAD = [sys.executable, "-P", "-m", "preload"]


def preload(*args, state_dir, check=False, timeout=60, **kwargs):
    """`preload ARGS` with its own state directory; returns the CompletedProcess (bytes)."""
    env = dict(kwargs.pop("env", None) or os.environ)
    env["PRELOAD_STATE_DIR"] = str(state_dir)
    return subprocess.run(PRELOAD + list(args), env=env, capture_output=True, timeout=timeout,
                          check=check, **kwargs)


def processes():
    """(pid, the fields of /proc/PID/stat after the command name: state ppid pgrp session …) for
    every process that is still there."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        yield int(entry.name), stat[stat.rindex(b")") + 2:].split()


def events(state_dir):
    path = Path(state_dir) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def of_type(evts, evt_type, **match):
    return [e for e in evts if e["evt.type"] == evt_type and all(e.get(k) == v for k, v in match.items())]


def starts(evts):
    """Process starts: pid -> event."""
    return {e["proc.pid"]: e for e in evts if e["evt.type"] == "execve" and e.get("evt.dir") == "<"
            and e.get("evt.res") == "SUCCESS"}
