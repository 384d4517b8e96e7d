"""The daemon treats the application side as untrusted and keeps running."""
import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from agent import PRELOAD, events, of_type
from preload import wire
from preload._native import ffi, lib

HOOK = os.path.join(os.path.dirname(wire.__file__), "libpreload.so")


class Daemon:
    """`preload daemon` on its own socket, as a user would start it by hand."""

    def __init__(self, state, wrap=()):
        self.state = Path(state)
        self.sock = self.state / "preload.sock"
        env = dict(os.environ, PRELOAD_STATE_DIR=str(self.state))
        self.proc = subprocess.Popen(list(wrap) + PRELOAD + ["daemon"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(str(self.sock))
        return s

    def hooked(self, *argv):
        env = dict(os.environ, LD_PRELOAD=HOOK, PRELOAD_SOCKET=str(self.sock))
        return subprocess.run(list(argv), env=env, capture_output=True, timeout=30)

    def stop(self):
        # the daemon itself: a wrapper such as unshare may not pass the signal on
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        for pid in [self.proc.pid] + [int(c) for c in children]:
            os.kill(pid, signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err.decode()


def record(kind=lib.PRELOAD_REC_END, version=lib.PRELOAD_WIRE_VERSION, pid=None, seq=1):
    """A well-formed END record built from the wire header's own layout."""
    hdr_size, body_size = ffi.sizeof("struct preload_hdr"), ffi.sizeof("struct preload_end")
    buf = ffi.new("char[]", hdr_size + body_size)
    h = ffi.cast("struct preload_hdr *", buf)
    h.magic, h.version, h.kind, h.size = lib.PRELOAD_WIRE_MAGIC, version, kind, hdr_size + body_size
    h.source, h.pid, h.ppid, h.seq, h.stream = lib.PRELOAD_SRC_HOOK, pid or os.getpid(), os.getppid(), seq, 7
    h.time_ns = time.time_ns()
    ffi.cast("struct preload_end *", buf + hdr_size).reason = lib.PRELOAD_END_EXIT
    return bytes(ffi.buffer(buf))


def _closed_by_peer(s):
    try:
        return s.recv(16) == b""
    except ConnectionResetError:  # closed with our record still unread
        return True


def test_daemon_logs_what_a_hooked_program_reports(tmp_path):
    d = Daemon(tmp_path)
    r = d.hooked("cat", "/etc/hostname")
    code, err = d.stop()
    assert (r.returncode, code) == (0, 0), err
    evts = events(tmp_path)
    assert of_type(evts, "execve", **{"proc.name": "cat", "evt.dir": "<"})
    assert of_type(evts, "openat", **{"fd.name": "/etc/hostname", "preload.api": "open"}) or \
        of_type(evts, "open", **{"fd.name": "/etc/hostname"})


def _mutations(valid, rng):
    """Random bytes, and real records with bytes flipped, cut short or padded."""
    n = rng.randrange(4)
    if n == 0:
        return rng.randbytes(rng.randrange(1, 20000))
    data = bytearray(valid)
    if n == 1:
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if n == 2:
        return bytes(data[:rng.randrange(1, len(data))])
    return bytes(data) + rng.randbytes(rng.randrange(1, 64))


def test_ten_thousand_garbage_frames_leave_the_daemon_alive(tmp_path):
    d = Daemon(tmp_path)
    # real records from a real program, to mutate
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    capture = tmp_path / "capture.sock"
    listener.bind(str(capture))
    listener.listen(8)
    subprocess.run(["sh", "-c", "cat /etc/hostname >/dev/null"], timeout=30,
                   env=dict(os.environ, LD_PRELOAD=HOOK, PRELOAD_SOCKET=str(capture)))
    samples = []
    listener.settimeout(1)
    try:
        while True:  # the shell's connection, inherited by cat, and any other
            conn, _ = listener.accept()
            conn.settimeout(1)
            try:
                while chunk := conn.recv(70000):
                    samples.append(chunk)
            except socket.timeout:
                pass
    except socket.timeout:
        pass
    assert len(samples) >= 4  # two starts, an exec attempt, an open
    rng = random.Random(1234)
    sent = 0
    for batch in range(20):
        s = d.connect()
        for _ in range(500):
            try:
                s.send(_mutations(rng.choice(samples), rng))
            except (ConnectionResetError, BrokenPipeError):  # refused: e.g. a wrong version field
                s.close()
                s = d.connect()
            sent += 1
        s.close()
    assert sent == 10_000
    # still serving: a real program's records arrive after the storm
    r = d.hooked("ls", "/")
    assert r.returncode == 0
    time.sleep(0.3)
    code, err = d.stop()
    assert code == 0, err
    assert "Traceback" not in err
    evts = events(tmp_path)
    assert of_type(evts, "execve", **{"proc.name": "ls", "evt.dir": "<"})
    stats = of_type(evts, "preload.daemon", **{"preload.state": "stop"})[-1]["preload.stats"]
    # many mutations are caught by validation; the others are well-formed records of some kind
    assert sum(stats["rejected"].values()) > 3000


def test_wrong_protocol_version_is_refused_loudly(tmp_path):
    d = Daemon(tmp_path)
    s = d.connect()
    s.send(record(version=lib.PRELOAD_WIRE_VERSION + 1))
    s.settimeout(10)
    assert _closed_by_peer(s)
    code, err = d.stop()
    assert code == 0
    assert "another protocol version" in err
    assert "Traceback" not in err
    stats = of_type(events(tmp_path), "preload.daemon", **{"preload.state": "stop"})[-1]["preload.stats"]
    assert stats["rejected"] == {"bad record: version": 1}


def test_peer_outside_the_pid_namespace_is_refused(tmp_path):
    # the daemon in a pid namespace of its own: we, outside it, have no pid there
    d = Daemon(tmp_path, wrap=["unshare", "--pid", "--fork", "--kill-child=SIGTERM"])
    s = d.connect()
    s.send(record())
    s.settimeout(10)
    assert _closed_by_peer(s)
    code, err = d.stop()
    assert "peer outside the container" in err
    evts = events(tmp_path)
    assert not of_type(evts, "preload.end")
    stats = of_type(evts, "preload.daemon", **{"preload.state": "stop"})[-1]["preload.stats"]
    assert stats["rejected"] == {"peer outside the container": 1}


def test_valid_record_from_a_peer_inside_is_logged(tmp_path):
    d = Daemon(tmp_path)
    s = d.connect()
    s.send(record(seq=3))
    s.close()
    time.sleep(0.2)
    d.stop()
    end = of_type(events(tmp_path), "preload.end")
    assert [(e["preload.seq"], e["preload.end_reason"], e["proc.pid"]) for e in end] == [(3, "exit", os.getpid())]


def test_spool_note_becomes_an_end_event(tmp_path):
    d = Daemon(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    (spool / "00000000000000ab").write_text("4242 1 00000000000000ab 17 3\n")
    (spool / "bad").write_text("not a note")
    code, err = d.stop()
    assert code == 0
    end = of_type(events(tmp_path), "preload.end", **{"preload.end_reason": "spool"})
    assert [(e["proc.pid"], e["preload.seq"], e["preload.failed_sends"], e["preload.stream"]) for e in end] == \
        [(4242, 17, 3, "00000000000000ab")]
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("garbage", [b"", b"\0" * 3, b"{}\n", json.dumps({"evt.type": "x"}).encode()])
def test_decoder_rejects_malformed_input_without_raising_anything_else(garbage):
    with pytest.raises(wire.WireError):
        wire.decode(garbage)
