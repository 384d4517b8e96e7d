"""Shared fixtures: the hook library, fixture programs compiled at test time, and a collector.

The collector is a real listening SEQPACKET socket, like the daemon's: programs run with
LD_PRELOAD and PRELOAD_SOCKET set, and every record any of their processes sends is decoded.
"""
import os
import pathlib
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

import preload
from preload import wire
from preload.elf import classify
from tools import need

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# Many tests compare a program's stderr under the agent with a bare run's; the agent's alerts on
# stderr (on by default) would be counted as a difference. Tests of alerts turn it back on.
os.environ["PRELOAD_ALERTS_STDERR"] = "0"


@pytest.fixture(scope="session")
def libpreload():
    path = os.path.join(os.path.dirname(preload.__file__), "libpreload.so")
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: build it with `pip install -e .`")
    return path


@pytest.fixture(scope="session")
def cc(tmp_path_factory):
    """cc("prog.c", extra_flags=[...]) -> path of the compiled tests/fixtures/prog.c (cached)."""
    outdir = tmp_path_factory.mktemp("bin")
    built = {}

    def compile_fixture(source, extra_flags=()):
        key = (source, tuple(extra_flags))
        if key not in built:
            out = os.path.join(outdir, f"{os.path.splitext(source)[0]}-{len(built)}")
            cmd = ["gcc", "-std=gnu11", "-O0", "-g", "-Wall", *extra_flags,
                   "-o", out, os.path.join(FIXTURES, source), "-pthread"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                pytest.fail(f"compiling {source} failed:\n{' '.join(cmd)}\n{r.stderr}")
            built[key] = out
        return built[key]

    return compile_fixture


def matches(rec, kind, match):
    """match values are compared with ==, or called with the field's value when callable."""
    if rec["kind"] != kind:
        return False
    for k, v in match.items():
        if k not in rec or not (v(rec[k]) if callable(v) else rec[k] == v):
            return False
    return True


class Collector:
    GRACE = 0.05  # quiet time after everything closed, for late connections
    LINGER = 3.0  # at most this long after the program exits for connections still open

    def __init__(self, libpreload, directory):
        self.libpreload = libpreload
        self.path = os.path.join(directory, "pl.sock")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.srv.bind(self.path)
        self.srv.listen(128)
        self.srv.setblocking(False)
        self.records = []
        self.connections = 0  # accepted, over all runs

    def env(self, base=None):
        env = dict(os.environ if base is None else base)
        env.update(LD_PRELOAD=self.libpreload, PRELOAD_SOCKET=self.path)
        return env

    def run(self, argv, env=None, timeout=30, **popen_kwargs):
        """Runs argv under the hook; returns (CompletedProcess, decoded records of all processes).

        Output is captured unless stdout/stderr are given; subprocess.TimeoutExpired propagates."""
        popen_kwargs.setdefault("stdout", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
        if popen_kwargs.get("input") is None:
            popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        outcome = {}

        def target():
            try:
                outcome["cp"] = subprocess.run(argv, env=self.env(env), timeout=timeout,
                                               **popen_kwargs)
            except BaseException as e:  # re-raised in the test's thread
                outcome["error"] = e

        runner = threading.Thread(target=target, daemon=True)
        runner.start()
        raw, conns = [], []
        exited_at = quiet_since = None
        while True:
            running = runner.is_alive()
            ready, _, _ = select.select([self.srv] + conns, [], [], 0.02)
            for s in ready:
                if s is self.srv:
                    try:
                        conns.append(self.srv.accept()[0])
                        self.connections += 1
                    except BlockingIOError:
                        pass
                    continue
                data = s.recv(1 << 17)
                if data:
                    raw.append(data)
                else:
                    conns.remove(s)
                    s.close()
            if running:
                continue
            now = time.monotonic()
            exited_at = exited_at or now
            if ready or conns:
                quiet_since = None
                if now - exited_at < self.LINGER:
                    continue
                break  # a straggler keeps its connection open: stop waiting
            quiet_since = quiet_since or now
            if now - quiet_since >= self.GRACE:
                break
        for c in conns:
            c.close()
        runner.join()
        if "error" in outcome:
            raise outcome["error"]
        self.records = [wire.decode(d) for d in raw]
        return outcome["cp"], self.records

    def records_of(self, kind, records=None, **match):
        """Records of the last run (or of `records`) of this kind whose fields match."""
        return [r for r in (self.records if records is None else records)
                if matches(r, kind, match)]

    def close(self):
        self.srv.close()


def _collecting(hook, tmp_path):
    directory, scratch = str(tmp_path), None
    if len(directory) > 90:  # sun_path holds 108 bytes
        directory = scratch = tempfile.mkdtemp(prefix="pl-")
    c = Collector(hook, directory)
    yield c
    c.close()
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def collector(libpreload, tmp_path):
    yield from _collecting(libpreload, tmp_path)


@pytest.fixture(scope="session")
def musl_gcc():
    return need("musl-gcc", "musl-tools")


@pytest.fixture(scope="session")
def musl_hook(musl_gcc):
    path = os.path.join(os.path.dirname(preload.__file__), "libpreload-musl.so")
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: the build skips it only when musl-gcc is missing")
    return path


@pytest.fixture(scope="session")
def musl_cc(musl_gcc, tmp_path_factory):
    """musl_cc("prog.c") (a fixture) or musl_cc(name, source=TEXT) -> a dynamic musl program."""
    outdir = tmp_path_factory.mktemp("musl-bin")

    def compile_program(name, source=None):
        src = os.path.join(FIXTURES, name)
        if source is not None:
            src = str(outdir / name)
            with open(src, "w") as f:
                f.write(source)
        out = str(outdir / os.path.splitext(name)[0])
        if not os.path.exists(out):
            subprocess.run([musl_gcc, "-std=gnu11", "-O0", "-Wall", "-o", out, src], check=True)
        # musl-gcc can default to static linking: then the hook would never be loaded
        assert classify(out).kind == "dynamic-musl", classify(out).reason
        return out

    return compile_program


@pytest.fixture
def musl_collector(musl_hook, tmp_path):
    """The musl build's records, with the environment `preload run` gives the application."""
    yield from _collecting(musl_hook, tmp_path)


@pytest.fixture
def public_dir():
    """A directory under /tmp that every user can reach (a test's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="pl-public-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)
