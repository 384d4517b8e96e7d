#!/usr/bin/env python3
"""preload benchmarks: what the agent costs the application, and what the daemon can take.

    python3 benchmarks/run.py [--quick] [--reps N] [--json FILE] [--only 1,2,3,4,6,7,8,9]

Figures (see benchmarks/README.md for what each one means and how it is measured):
  1 file-heavy   200,000 open+close of one read-only file
  2 exec-heavy   a dash loop running /bin/true 500 times
  3 start-up     `preload run -- /bin/true` minus `/bin/true`
  4 throughput   records/s the daemon takes on one core (flat out, and the highest paced rate
                 with zero loss)
  5 memory       the daemon's peak RSS (VmHWM) in the throughput runs
  6 exec static  a static program forking and exec'ing a static true 500 times (traced: ptrace)
  7 file static  200,000 read-only open+close in a static program, default and full trace profile
  8 Go HTTP      requests/s of a Go net/http server (traced) under a local load generator
  9 rules        figure 4's throughput per ruleset: none, the packaged one, 200 rules whose extra ones
                 are on other event types, 200 rules all on the load's type; and Alerter.check alone

It installs nothing: a missing peer tool (strace, snoopy, hyperfine, go) is named and its column is
skipped. It prints medians and ratios to the bare run; targets are printed next to the figures,
never asserted (the exit status is 0 whenever the benchmark itself ran).
"""
import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
C_SOURCES = HERE / "c"

OPENS = 200_000
OPEN_PATH = "/etc/hostname"
EXEC_LOOP = "i=0; while [ $i -lt 500 ]; do /bin/true; i=$((i+1)); done"
EXECS = 500
SNOOPY_CANDIDATES = ("/lib/x86_64-linux-gnu/libsnoopy.so", "/usr/lib/x86_64-linux-gnu/libsnoopy.so",
                     "/lib/aarch64-linux-gnu/libsnoopy.so", "/usr/lib/aarch64-linux-gnu/libsnoopy.so",
                     "/usr/lib64/libsnoopy.so", "/usr/lib/libsnoopy.so", "/usr/local/lib/libsnoopy.so")
AGENT_ENV = ("LD_PRELOAD", "PRELOAD_SOCKET", "PRELOAD_STATE_DIR")
TIMEOUT = 180

TARGETS = {  # printed beside the figures, never asserted
    "file_heavy": ("agent/bare", "<=", 1.15),
    "exec_heavy": ("agent/bare", "<=", 1.10),
    "startup": ("ms", "<=", 150.0),
    "throughput": ("records/s with zero loss", ">=", 50_000),
    "memory": ("MiB VmHWM", "<=", 60.0),
    "exec_static": ("preload run/bare, and below strace's ratio", "<=", 1.30),
    "file_static": ("preload run/bare", "<=", 1.20),
    # the full profile: no worse than strace's ratio, aim for half of it (relative: computed there)
    "http": ("requests/s, preload run/bare", ">=", 0.90),
}


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# small helpers


def say(*parts, **kw):
    print(*parts, **kw, flush=True)


def clean_env(**extra):
    """The driver's environment without any agent variables, plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in AGENT_ENV}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def median(xs):
    return statistics.median(xs) if xs else None


def tree_state():
    """The project's commit and the files changed beside it (benchmarks/ aside), or None."""
    root = HERE.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if not head:
        return None
    dirty = [line[3:] for line in status if not line[3:].startswith("benchmarks/")]
    return head + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")


def cpu_snapshot():
    """(monotonic s, CPU seconds the whole machine was busy, CPU seconds of this driver and its
    reaped descendants). Two of them give the CPU time others used meanwhile."""
    import resource

    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
    ours = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        ours += ru.ru_utime + ru.ru_stime
    return time.monotonic(), busy, ours


def foreign_share(before, after, ncpu):
    """Share of the machine's CPU time used by processes that are not ours between two snapshots."""
    wall = after[0] - before[0]
    if wall <= 0 or not ncpu:
        return None
    return max(0.0, ((after[1] - before[1]) - (after[2] - before[2])) / (wall * ncpu))


def pin(cpu):
    """preexec_fn pinning the child to one CPU (None: leave it alone)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_checked(argv, env, timeout=TIMEOUT, cwd=None):
    """Runs argv; returns its wall time in seconds. Output is discarded (stderr kept for errors).

    stderr goes to a file, not a pipe: a helper the command leaves running (a tracer that did not
    exit) would hold a pipe open, and reading it to its end would wait for that helper. The wait is
    a blocking waitpid (Popen.wait with a timeout polls, up to 50 ms late); a timer kills the
    command at the timeout."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            p.wait()
        except BaseException:  # interrupted: leave nothing running
            p.kill()
            p.wait()
            raise
        finally:
            timer.cancel()
        dt = time.perf_counter() - t0
        if dt >= timeout:
            raise BenchError(f"{shlex.join(argv)} did not finish within {timeout} s")
        if p.returncode != 0:
            err.seek(0)
            raise BenchError(f"{shlex.join(argv)} exited with {p.returncode}: "
                             f"{err.read().decode(errors='replace')[-800:]}")
    return dt


def fmt_s(x):
    if x is None:
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.3f} s"


def fmt_rate(x):
    return "-" if x is None else f"{x:,.0f}/s"


def verdict(key, value):
    what, op, target = TARGETS[key]
    if value is None:
        return "not measured"
    ok = value <= target if op == "<=" else value >= target
    return "met" if ok else "MISSED"


# ---------------------------------------------------------------------------------------------
# environment: the agent, the compiler, the peers


class Env:
    def __init__(self, tmp, quick, without=()):
        self.tmp = Path(tmp)
        self.quick = quick
        self.notes = []  # printed at the end, and in the JSON
        self.missing = {}  # peer -> why its column is skipped
        spec = importlib.util.find_spec("preload")
        if spec is None or not spec.submodule_search_locations:
            raise BenchError(f"the preload package is not importable by {sys.executable} "
                             "(pip install -e . in the project)")
        pkg = Path(next(iter(spec.submodule_search_locations)))
        self.hook = pkg / "libpreload.so"
        if not self.hook.is_file():
            raise BenchError(f"{self.hook} is missing: rebuild the package (pip install -e .)")
        sources = list((HERE.parent / "csrc").rglob("*.[ch]"))
        if sources and max(f.stat().st_mtime for f in sources) > self.hook.stat().st_mtime:
            self.notes.append(f"{self.hook} is older than csrc/: the hook measured may not be the source's "
                              "(pip install -e . rebuilds it)")
        self.tracer = pkg / "preload-trace"
        if not (self.tracer.is_file() and os.access(self.tracer, os.X_OK)):
            self.missing["tracer"] = f"{self.tracer} is missing (pip install -e . builds it): figures 6-8 are skipped"
            self.tracer = None
        else:
            traced = list((HERE.parent / "csrc").rglob("*.[ch]"))
            traced = [f for f in traced if "hook" not in f.parts]
            if traced and max(f.stat().st_mtime for f in traced) > self.tracer.stat().st_mtime:
                self.notes.append(f"{self.tracer} is older than csrc/: the tracer measured may not be the source's "
                                  "(pip install -e . rebuilds it)")
        script = Path(sys.executable).parent / "preload"
        if script.is_file() and os.access(script, os.X_OK):
            self.preload = [str(script)]
        else:
            self.preload = [sys.executable, "-m", "preload"]
        self.daemon_cmd = [sys.executable, "-m", "preload", "daemon"]
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        self.bins = {}
        self.strace = self._find_strace()
        self.snoopy = self._find_snoopy()
        self.go = self._find_go()
        self.hyperfine = shutil.which("hyperfine")
        if not self.hyperfine:
            self.missing["hyperfine"] = "not installed (apt-get install hyperfine): start-up is timed by our own loop"
        for peer in without:  # as if it were not installed (to compare, or to check the skips)
            if getattr(self, peer, None):
                setattr(self, peer, None)
                self.missing[peer] = "left out (--without)"
        self._check_ld_so_preload()
        if os.environ.get("LD_PRELOAD"):
            self.notes.append(f"the driver itself runs with LD_PRELOAD={os.environ['LD_PRELOAD']}; it is removed "
                              "from every measured command's environment")

    def _find_strace(self):
        path = shutil.which("strace")
        if not path:
            self.missing["strace"] = "not installed (apt-get install strace): strace columns skipped"
            return None
        try:
            subprocess.run([path, "-f", "--seccomp-bpf", "-e", "trace=execve", "-o", "/dev/null", "/bin/true"],
                           check=True, capture_output=True, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            err = getattr(e, "stderr", b"") or b""
            self.missing["strace"] = (f"{path} cannot trace here or lacks --seccomp-bpf (needs strace >= 5.3 and "
                                      f"ptrace permission): {err.decode(errors='replace').strip()[:200]}")
            return None
        return path

    def _find_go(self):
        for path in (shutil.which("go"), "/usr/lib/go/bin/go"):
            if path and os.access(path, os.X_OK):
                return path
        self.missing["go"] = "not installed (apt-get install golang-go): figure 8 (Go HTTP server) is skipped"
        return None

    def _find_snoopy(self):
        for c in SNOOPY_CANDIDATES:
            if os.path.isfile(c):
                return c
        try:
            out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
            for line in out.splitlines():
                if "libsnoopy.so" in line and "=>" in line:
                    return line.split("=>")[1].strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.missing["snoopy"] = "not installed (apt-get install snoopy): snoopy column skipped"
        return None

    def _check_ld_so_preload(self):
        try:
            content = Path("/etc/ld.so.preload").read_text().split()
        except OSError:
            return
        if content:
            self.notes.append(f"WARNING: /etc/ld.so.preload is not empty ({' '.join(content)}): every process, "
                              "'bare' ones included, carries it; the figures are skewed")

    def compile(self):
        if not self.cc:
            self.missing["cc"] = ("no C compiler (apt-get install gcc): figures 1, 4, 6, 7 and 8 and the "
                                  "empty-LD_PRELOAD column are skipped")
            return
        out = self.tmp / "bin"
        out.mkdir()
        jobs = {"openclose": ["-O2", str(C_SOURCES / "openclose.c")],
                "loadgen": ["-O2", str(C_SOURCES / "loadgen.c")],
                "empty.so": ["-O2", "-shared", "-fPIC", str(C_SOURCES / "empty.c")],
                "httpload": ["-O2", str(C_SOURCES / "httpload.c")]}
        for name, args in jobs.items():
            target = out / name
            p = subprocess.run([self.cc, *args, "-o", str(target)], capture_output=True, text=True)
            if p.returncode != 0:
                raise BenchError(f"compiling {name} failed:\n{p.stderr}")
            self.bins[name] = str(target)
        # the traced figures' programs: static, so that `preload run` has to trace them (no libc.a,
        # as without libc6-dev: those figures are skipped, not the whole benchmark)
        static = {"openclose-static": "openclose.c", "execloop-static": "execloop.c", "true-static": "true.c"}
        for name, src in static.items():
            target = out / name
            p = subprocess.run([self.cc, "-O2", "-static", str(C_SOURCES / src), "-o", str(target)],
                               capture_output=True, text=True)
            if p.returncode != 0:
                self.missing["cc -static"] = (f"cannot link statically ({p.stderr.strip()[-200:]}; apt-get install "
                                              "libc6-dev): figures 6 and 7 are skipped")
                break
            self.bins[name] = str(target)

    def build_go(self):
        """The Go HTTP server (go/httpserver.go, standard library only), CGO_ENABLED=0: a static Go
        program. Built into the temporary directory, with the user's Go build cache; never fetches
        anything (GOPROXY=off, GOTOOLCHAIN=local)."""
        target = self.tmp / "bin" / "httpserver"
        genv = clean_env(CGO_ENABLED="0", GOPROXY="off", GOTOOLCHAIN="local", GOFLAGS="-trimpath")
        t0 = time.monotonic()
        p = subprocess.run([self.go, "build", "-o", str(target), str(HERE / "go" / "httpserver.go")], env=genv,
                           cwd=self.tmp, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise BenchError(f"go build of go/httpserver.go failed:\n{p.stderr[-1500:]}")
        version = subprocess.run([self.go, "version"], capture_output=True, text=True).stdout.strip()
        self.bins["httpserver"] = str(target)
        return version, time.monotonic() - t0

    def hooked_env(self, sock, **extra):
        return clean_env(LD_PRELOAD=self.hook, PRELOAD_SOCKET=sock, **extra)

    def peers_line(self):
        parts = []
        if self.strace:
            v = subprocess.run([self.strace, "-V"], capture_output=True, text=True).stdout.split("\n")[0]
            parts.append(f"{v.strip()} ({self.strace})")
        if self.snoopy:
            parts.append(f"snoopy ({self.snoopy})")
        if self.hyperfine:
            v = subprocess.run([self.hyperfine, "--version"], capture_output=True, text=True).stdout.strip()
            parts.append(v)
        return ", ".join(parts) or "none"


# ---------------------------------------------------------------------------------------------
# the daemon, run on its own (for the steady-state and throughput figures)


def read_status(pid):
    """VmHWM/VmRSS in KiB, CPU seconds and minor page faults of a live process; {} if it is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:", "voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        out["minflt"] = int(fields[7])
    except (OSError, ValueError, IndexError):
        pass
    return out


class Daemon:
    """`python -m preload daemon` with its own state directory; stopped cleanly (SIGTERM, drain).

    config: None for that command (the CLI's daemon: the packaged ruleset, its alerts built but
    written nowhere); else a dict of the daemon's own keys (`rules`: False, None or files, ...),
    and it is started as `preload run` starts it: `python -P -m preload.daemon '<json config>'`,
    its alerts to STATE/alerts.jsonl and stderr (preload run's defaults)."""

    def __init__(self, env, state_dir, cpu=None, config=None):
        self.env = env
        self.config = config
        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        # as `preload run` lays it out (state.State.prepare): the hook spools the end of a stream
        # it could not send there; `preload daemon` alone does not create it
        (self.state / "spool").mkdir(exist_ok=True)
        os.chmod(self.state / "spool", 0o1777)
        self.sock = str(self.state / "preload.sock")
        self.events = self.state / "events.jsonl"
        self.cpu = cpu
        self.proc = None
        self.final = {}

    def command(self):
        """(argv, environment) that start this daemon."""
        if self.config is None:
            return self.env.daemon_cmd, clean_env(PRELOAD_STATE_DIR=self.state)
        config = {"socket_path": self.sock, "events_path": str(self.events), "spool_dir": str(self.state / "spool"),
                  "alerts_path": str(self.state / "alerts.jsonl"), "alerts_stderr": True, **self.config}
        from preload.supervisor import DAEMON_ENV  # the environment preload run gives its daemon
        return ([sys.executable, "-P", "-m", "preload.daemon", json.dumps(config)], clean_env(**DAEMON_ENV))

    def start(self, timeout=20):
        self.err = open(self.state / "daemon.stderr", "wb")
        argv, denv = self.command()
        self.proc = subprocess.Popen(argv, env=denv, stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err,
                                     preexec_fn=pin(self.cpu))
        deadline = time.monotonic() + timeout
        # ready = its start event is in the log: imports done, about to serve
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the daemon exited with {self.proc.returncode} at start: "
                                 f"{(self.state / 'daemon.stderr').read_text()[-800:]}")
            try:
                if b'"preload.state":"start"' in self.events.read_bytes():
                    return self
            except OSError:
                pass
            time.sleep(0.005)
        self.kill()
        raise BenchError("the daemon did not start within 20 s")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def status(self):
        return read_status(self.proc.pid)

    def stop(self, timeout=20):
        """SIGTERM, then a connection to wake its select() at once; waits for the drain."""
        self.final = self.status()
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(OSError):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.settimeout(1)
            s.connect(self.sock)
            s.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError("the daemon did not stop within 20 s of SIGTERM")
        self.err.close()
        return self.final


def analyse_log(path, pids=None):
    """Records and losses in an event log (docs/events.md, "Counting what was lost").

    pids: only streams of these processes. Returns records (events carrying a seq), failed (the
    hooks' preload.failed_sends), gaps (missing seq numbers), uncounted (gaps not explained by
    failed sends), the daemon's stop stats, and the event types."""
    streams = {}
    ended = 0
    failed = 0
    stop = None
    types = {}
    sources = {}  # records by evt.source: "preload" (the hook) or "ptrace" (the tracer)
    opens = {}  # opens seen per path: open records plus the counts of preload.repeats
    with open(path, "rb") as f:
        for line in f:
            e = json.loads(line)
            t = e.get("evt.type")
            if t == "preload.daemon" and e.get("preload.state") == "stop":
                stop = e.get("preload.stats")
            if "preload.stream" not in e or (pids is not None and e.get("proc.pid") not in pids):
                continue
            types[t] = types.get(t, 0) + 1
            src = e.get("evt.source")
            sources[src] = sources.get(src, 0) + 1
            if t in ("open", "openat", "openat2", "creat") or t == "preload.repeats":
                name = e.get("fd.name")
                opens[name] = opens.get(name, 0) + (e.get("evt.count", 0) if t == "preload.repeats" else 1)
            s = streams.setdefault(e["preload.stream"], [set(), 0])
            s[0].add(e["preload.seq"])
            s[1] = max(s[1], e["preload.seq"])
            if t == "preload.end":
                ended += 1
                failed += e.get("preload.failed_sends", 0)
                # a spooled end could not be sent itself: it is in failed_sends but reached the log
                if e.get("preload.end_reason") == "spool":
                    failed -= 1
    records = sum(len(s[0]) for s in streams.values())
    gaps = sum(s[1] - len(s[0]) for s in streams.values())
    return {"records": records, "streams": len(streams), "ended": ended, "failed": failed, "gaps": gaps,
            "uncounted": max(0, gaps - failed), "stop_stats": stop, "types": types, "sources": sources,
            "opens": opens}


def add_loss(total, a):
    for k in ("records", "streams", "ended", "failed", "gaps", "uncounted"):
        total[k] = total.get(k, 0) + a[k]
    for k in ("types", "sources", "opens"):
        d = total.setdefault(k, {})
        for name, n in a.get(k, {}).items():
            d[name] = d.get(name, 0) + n
    total["runs"] = total.get("runs", 0) + 1
    return total


def loss_text(a):
    return (f"{a.get('records', 0):,} records from {a.get('streams', 0):,} process images logged; "
            f"lost {a.get('gaps', 0)} (failed sends counted by the hook: {a.get('failed', 0)}, "
            f"uncounted: {a.get('uncounted', 0)})")


# ---------------------------------------------------------------------------------------------
# the comparison figures (1 and 2): columns measured round-robin


class Column:
    def __init__(self, key, label, argv, env, ref=None, warmup=True, after=None, max_reps=None):
        self.key, self.label, self.argv, self.env, self.ref = key, label, argv, env, ref
        self.warmup, self.after, self.max_reps = warmup, after, max_reps
        self.samples = []

    def run(self):
        dt = run_checked(self.argv, self.env)
        if self.after:
            self.after()
        return dt


def measure(columns, reps, title):
    for c in columns:
        if c.warmup:
            c.run()
    for r in range(reps):
        # rotate the order: no column always runs right after the same neighbour
        k = r % len(columns)
        for c in columns[k:] + columns[:k]:
            cap = min(c.max_reps or reps, reps)
            if (r * cap) // reps != ((r + 1) * cap) // reps:  # a capped column: spread over the rounds
                c.samples.append(c.run())
        say(f"  [{title}] repetition {r + 1}/{reps} done", file=sys.stderr)
    bare = median(columns[0].samples)
    out = {}
    for c in columns:
        m = median(c.samples)
        out[c.key] = {"label": c.label, "command": shlex.join(c.argv), "samples_s": c.samples, "median_s": m,
                      "ratio": m / bare if bare else None, "ref": c.ref}
    return out


def print_columns(result, target_key=None, agent_key=None, notes=None):
    """notes: column key -> text for the last column (targets read against other columns)."""
    w = max(len(v["label"]) for v in result.values()) + 2
    say(f"   {'column':<{w}} {'median':>10} {'ratio':>8}   {'min .. max':<21} reference / target")
    for key, v in result.items():
        s = v["samples_s"]
        spread = f"{fmt_s(min(s))} .. {fmt_s(max(s))}"
        extra = f"ref ~{v['ref']}" if v.get("ref") else ""
        if key == agent_key and target_key:
            _, op, t = TARGETS[target_key]
            extra = f"target {op} {t:.2f}x: {verdict(target_key, v['ratio'])}"
        if notes and key in notes:
            extra = notes[key]
        say(f"   {v['label']:<{w}} {fmt_s(v['median_s']):>10} {v['ratio']:>7.2f}x   {spread:<21} {extra}")


def preload_run_column(env, key, label, cmd, state):
    """`preload run -- cmd`, each repetition's log checked for loss afterwards."""
    loss = {}

    def after():
        add_loss(loss, analyse_log(Path(state) / "events.jsonl"))

    col = Column(key, label, env.preload + ["run", "--"] + cmd, clean_env(PRELOAD_STATE_DIR=state), after=after)
    return col, loss


def agent_columns(env, figure, prog, shown):
    """The columns every figure has: bare, the hook with a running daemon, and preload run."""
    daemon = Daemon(env, env.tmp / f"{figure}-daemon").start()
    run_col, run_loss = preload_run_column(env, "preload_run", f"agent, end to end: preload run -- {shown}",
                                           prog, env.tmp / f"{figure}-run")
    cols = [Column("bare", "bare", prog, clean_env()),
            Column("hook", "agent, steady state: hook + running daemon", prog, env.hooked_env(daemon.sock)),
            run_col]
    return daemon, cols, run_loss


def fig_file_heavy(env, reps):
    say(f"\n1. file-heavy: openclose, {OPENS:,} x open({OPEN_PATH}, O_RDONLY) + close, one process")
    prog = [env.bins["openclose"], OPEN_PATH, str(OPENS)]
    daemon, cols, run_loss = agent_columns(env, "fig1", prog, "prog")
    if env.strace:
        # 50x slower: fewer runs (spread over the rounds) keep the whole benchmark within minutes
        n = 1 if env.quick else 3
        runs = f"{min(n, reps)} run{'s' if min(n, reps) > 1 else ''}"
        cols.append(Column("strace_bpf", f"strace -f --seccomp-bpf -e trace=openat ({runs})",
                           [env.strace, "-f", "--seccomp-bpf", "-e", "trace=openat", "-o", "/dev/null"] + prog,
                           clean_env(), ref="65x", warmup=False, max_reps=n))
    return measured(cols, reps, "file-heavy", daemon, run_loss)


def measured(cols, reps, figure, daemon, run_loss):
    """Measures the columns with the agent's daemon running, stops it, prints the table and what
    the agent logged (steady state, and end to end through preload run)."""
    try:
        result = measure(cols, reps, figure)
    finally:
        daemon.stop()
    hook_loss = analyse_log(daemon.events)
    print_columns(result, figure.replace("-", "_"), "hook")
    say(f"   agent, steady state: {loss_text(hook_loss)}")
    say(f"   agent, end to end:   {loss_text(run_loss)}")
    return {"columns": result, "loss": {"hook": hook_loss, "preload_run": run_loss}}


@contextlib.contextmanager
def snoopy_logging(env, logfile):
    """Snoopy configured to log to logfile, for the commands run inside. Yields the environment
    to run them with (LD_PRELOAD=libsnoopy.so, per command; never /etc/ld.so.preload).

    Snoopy reads /etc/snoopy.ini; some builds honour SNOOPY_INI, Debian's 2.5 library does not.
    Then /etc/snoopy.ini is written for the duration of the figure and restored afterwards."""
    ini = env.tmp / "snoopy.ini"
    ini.write_text(f"[snoopy]\noutput = file:{logfile}\n")
    run_env = clean_env(LD_PRELOAD=env.snoopy, SNOOPY_INI=ini)
    subprocess.run(["/bin/sh", "-c", "/bin/true; /bin/true"], env=run_env, check=True, timeout=30)
    if Path(logfile).exists() and Path(logfile).stat().st_size:
        Path(logfile).unlink()
        yield run_env, "SNOOPY_INI"
        return
    etc = Path("/etc/snoopy.ini")
    try:
        saved = etc.read_bytes() if etc.exists() else None
        mode = etc.stat().st_mode & 0o7777 if etc.exists() else 0o644
        etc.write_text(f"[snoopy]\noutput = file:{logfile}\n")
    except OSError as e:
        raise BenchError(f"snoopy ignores SNOOPY_INI and /etc/snoopy.ini is not writable ({e.strerror}): "
                         "run as root or skip snoopy") from None
    try:
        yield run_env, "/etc/snoopy.ini (temporarily; restored afterwards)"
    finally:
        if saved is None:
            etc.unlink()
        else:
            etc.write_bytes(saved)
            os.chmod(etc, mode)


def fig_exec_heavy(env, reps):
    say(f"\n2. exec-heavy: sh -c '{EXEC_LOOP}'  (sh = {os.path.realpath('/bin/sh')})")
    prog = ["/bin/sh", "-c", EXEC_LOOP]
    daemon, cols, run_loss = agent_columns(env, "fig2", prog, "sh -c ...")
    if "empty.so" in env.bins:
        cols.append(Column("empty_preload", "empty .so in LD_PRELOAD (floor)", prog,
                           clean_env(LD_PRELOAD=env.bins["empty.so"]), ref="1.08x"))
    # the hook loaded but told of no daemon: what loading it costs before it reports anything
    cols.append(Column("hook_silent", "agent's library loaded, reporting nothing (no daemon)", prog,
                       clean_env(LD_PRELOAD=env.hook), ref="1.12x"))
    if env.strace:
        cols.append(Column("strace_bpf", "strace -f --seccomp-bpf -e trace=execve",
                           [env.strace, "-f", "--seccomp-bpf", "-e", "trace=execve", "-o", "/dev/null"] + prog,
                           clean_env(), ref="1.45x"))
        cols.append(Column("strace_all", "strace -f (all syscalls)",
                           [env.strace, "-f", "-o", "/dev/null"] + prog, clean_env(), ref="2.8x"))
    snoopy_log = env.tmp / "snoopy.log"
    snoopy_note = None
    with contextlib.ExitStack() as stack:
        if env.snoopy:
            try:
                snoopy_env, how = stack.enter_context(snoopy_logging(env, snoopy_log))
                cols.append(Column("snoopy", "snoopy, logging to a file", prog, snoopy_env, ref="1.26x"))
                snoopy_note = how
            except BenchError as e:
                env.missing["snoopy"] = str(e)
        out = measured(cols, reps, "exec-heavy", daemon, run_loss)
    if snoopy_note:
        lines = sum(1 for _ in open(snoopy_log, "rb")) if snoopy_log.exists() else 0
        runs = reps + 1  # with the warm-up
        say(f"   snoopy: configured via {snoopy_note}; it logged {lines:,} lines in {runs} runs "
            f"(expected {runs * EXECS:,}: one per /bin/true)")
        out["snoopy"] = {"configured_via": snoopy_note, "log_lines": lines, "runs": runs}
    return out


# ---------------------------------------------------------------------------------------------
# 3. start-up


def fig_startup(env, quick):
    say("\n3. start-up: `preload run -- /bin/true` minus `/bin/true` (wall time, median)")
    state = env.tmp / "fig3-run"
    run_cmd = env.preload + ["run", "--", "/bin/true"]
    runs, warmup = (10, 2) if quick else (25, 3)
    penv = clean_env(PRELOAD_STATE_DIR=state)
    if env.hyperfine:
        out = env.tmp / "hyperfine.json"
        subprocess.run([env.hyperfine, "-N", "--warmup", str(warmup), "--runs", str(runs), "--style", "none",
                        "--export-json", str(out), shlex.join(run_cmd), "/bin/true"],
                       env=penv, check=True, timeout=TIMEOUT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = json.loads(out.read_text())["results"]
        t_run, t_true = res[0]["times"], res[1]["times"]
        tool = f"hyperfine -N --warmup {warmup} --runs {runs}"
    else:
        for _ in range(warmup):
            run_checked(run_cmd, penv)
        t_run, t_true = [], []
        for _ in range(runs):
            t_run.append(run_checked(run_cmd, penv))
            t_true.append(run_checked(["/bin/true"], penv))
        tool = f"own loop (subprocess from Python; hyperfine missing), {runs} runs"
    m_run, m_true = median(t_run), median(t_true)
    startup_ms = (m_run - m_true) * 1000
    loss = analyse_log(state / "events.jsonl")
    say(f"   measured with {tool}")
    say(f"   preload run -- /bin/true   median {fmt_s(m_run):>9}   (min {fmt_s(min(t_run))}, max {fmt_s(max(t_run))})")
    say(f"   /bin/true                  median {fmt_s(m_true):>9}")
    say(f"   start-up                   {startup_ms:.1f} ms        target <= 150 ms: {verdict('startup', startup_ms)}")
    say(f"   last run's log: {loss_text(loss)}")
    return {"tool": tool, "preload_run_s": t_run, "true_s": t_true, "median_preload_run_s": m_run,
            "median_true_s": m_true, "startup_ms": startup_ms, "last_log": loss}


# ---------------------------------------------------------------------------------------------
# 4 and 5. daemon throughput and memory


class Throughput:
    """One trial = a fresh daemon pinned to one CPU, the load generator pinned to the other."""

    FILES = 4096  # distinct paths the generator opens for writing, round-robin

    def __init__(self, env, tag="fig4", config=None, files=None):
        """config: the daemon's (see Daemon); files: the generator's directory, shared (and
        removed) by the caller, else one of our own."""
        self.env = env
        self.tag = tag
        self.config = config
        self.n = 0
        self.pinned = len(env.cpus) >= 2
        self.cpu_daemon, self.cpu_gen = (env.cpus[0], env.cpus[1]) if self.pinned else (None, None)
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # tmpfs: the disk stays out of it
        self.own_files = files is None
        self.files = Path(tempfile.mkdtemp(prefix="preload-bench-", dir=base)) if files is None else Path(files)
        self.trials = []

    def cleanup(self):
        if self.own_files:
            shutil.rmtree(self.files, ignore_errors=True)

    def trial(self, count, rate, quiet=0.2):
        self.n += 1
        d = Daemon(self.env, self.env.tmp / f"{self.tag}-{self.n}", cpu=self.cpu_daemon, config=self.config).start()
        before = d.status()
        genenv = self.env.hooked_env(d.sock)
        argv = [self.env.bins["loadgen"], str(self.files), str(count), str(rate), str(self.FILES)]
        t0 = time.perf_counter()
        gen = subprocess.Popen(argv, env=genenv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=pin(self.cpu_gen))
        try:
            out, err = gen.communicate(timeout=TIMEOUT)
        except BaseException:  # interrupted: leave nothing running
            gen.kill()
            gen.wait()
            d.kill()
            raise
        t_gen = time.perf_counter()
        if gen.returncode != 0:
            d.stop()
            raise BenchError(f"loadgen exited with {gen.returncode}: {err.decode(errors='replace')[-500:]}")
        gen_s = float(out.split()[1])
        # the drain: the daemon is done when its log stops growing (it writes once per round)
        last_size, last_change = d.events.stat().st_size, t_gen
        while time.perf_counter() - last_change < quiet:
            time.sleep(0.002)
            size = d.events.stat().st_size
            if size != last_size:
                last_size, last_change = size, time.perf_counter()
        wall = last_change - t0
        final = d.stop()
        a = analyse_log(d.events, pids={gen.pid})
        cpu = final.get("cpu_s", 0) - before.get("cpu_s", 0)
        t = {"count": count, "paced_rate": rate, "ended": a["ended"], "generator_s": gen_s, "wall_s": wall,
             "drain_s": max(0.0, last_change - t_gen), "offered_rate": (count + 2) / gen_s,
             "records_logged": a["records"], "rate": a["records"] / wall, "failed": a["failed"],
             "gaps": a["gaps"], "uncounted": a["uncounted"], "daemon_cpu_s": cpu,
             "daemon_cpu_share": cpu / wall if wall else None,
             "daemon_vol_cs": final.get("voluntary_ctxt_switches", 0) - before.get("voluntary_ctxt_switches", 0),
             "daemon_invol_cs": (final.get("nonvoluntary_ctxt_switches", 0)
                                 - before.get("nonvoluntary_ctxt_switches", 0)),
             "vmhwm_kib": final.get("VmHWM"), "vmrss_kib": final.get("VmRSS"),
             "daemon_minflt": final.get("minflt", 0) - before.get("minflt", 0),
             "daemon_stats": a["stop_stats"], "alerts": (a["stop_stats"] or {}).get("alerts")}
        shutil.rmtree(d.state, ignore_errors=True)
        self.trials.append(t)
        return t


def trial_line(label, t):
    lost = t["gaps"]
    pct = 100 * lost / (t["count"] + 2)
    if not t["ended"]:
        label += " [no end record: tail loss unknown]"
    say(f"   {label:<22} {t['rate']:>8,.0f}/s logged  offered {t['offered_rate']:>7,.0f}/s  "
        f"lost {lost:>7,} ({pct:4.1f}%; counted {t['failed']:,}, uncounted {t['uncounted']})  "
        f"daemon CPU {100 * (t['daemon_cpu_share'] or 0):3.0f}%, ctx switches vol/invol "
        f"{t['daemon_vol_cs']:,}/{t['daemon_invol_cs']:,}, drain {t['drain_s'] * 1000:.0f} ms")


def lossless(t):
    """Every record numbered reached the log, and the stream's end is there to prove the tail."""
    return t["gaps"] == 0 and t["failed"] == 0 and t["ended"] == 1


def throughput_pinning(env, tp):
    """Pins the driver beside the generator; returns the affinity to restore (None: nothing pinned)."""
    if tp.pinned:  # the driver waits beside the generator, not on the daemon's CPU
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {tp.cpu_gen})
        return old
    env.notes.append("throughput: fewer than 2 CPUs available, nothing pinned; the daemon shares its CPU "
                     "with the generator, so the figure understates it")
    return None


def wmem_max_line():
    try:
        wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
    except (OSError, ValueError):
        wmem_max = None
    say(f"   net.core.wmem_max = {wmem_max} (caps the hook's 4 MiB send buffer: the slack before records are "
        "refused)")
    return wmem_max


def flat_out_size(quick):
    """(opens per flat-out trial, flat-out trials)."""
    return (100_000, 2) if quick else (200_000, 3)


def zero_loss_search(tp, flat_rate, quick, label="throughput"):
    """The highest paced rate with zero loss, by bisection below the flat-out rate, then confirmed
    (README, figure 4). Returns (the paced trials, the rate that held in every run or None)."""
    seconds = 1.5 if quick else 2.5
    steps = 4 if quick else 6
    lo, hi = 0.0, flat_rate * 1.05
    rate = 0.8 * flat_rate
    paced = []
    for _ in range(steps):
        rate = max(1000, round(rate / 500) * 500)
        t = tp.trial(int(rate * seconds), rate)
        ok = lossless(t)
        paced.append(t)
        say(f"  [{label}] paced {rate:,.0f}/s: " + ("no loss" if ok else f"lost {t['gaps']:,}"), file=sys.stderr)
        if ok:
            lo = max(lo, rate)
        else:
            hi = min(hi, rate)
        rate = (lo + hi) / 2 if lo else rate * 0.75
        if lo and hi - lo < max(1000, 0.03 * hi):
            break
    # confirm: the rate must hold in every run at it; else step down (to the next rate that
    # passed, or by 15 %) and confirm again, a few times at most
    confirms = 1 if quick else 2
    passing = {t["paced_rate"] for t in paced if lossless(t)}
    slowest = min(t["paced_rate"] for t in paced)
    candidate = max(passing) if passing else max(1000, round(slowest * 0.85 / 500) * 500)
    confirmed_rate = None
    for _ in range(4):
        paced += [tp.trial(int(candidate * seconds), candidate) for _ in range(confirms)]
        ok = all(lossless(t) for t in paced if t["paced_rate"] == candidate)
        say(f"  [{label}] confirm {candidate:,.0f}/s: {'no loss' if ok else 'LOSS'}", file=sys.stderr)
        if ok:
            confirmed_rate = candidate
            break
        lower = [r for r in passing if r < candidate]
        candidate = max(lower) if lower else max(1000, round(candidate * 0.85 / 500) * 500)
    return paced, confirmed_rate


def zero_loss_result(paced, confirmed_rate):
    """(median logged rate at the rate that held, its runs, whether it is a lower bound)."""
    at_best = [t for t in paced if t["paced_rate"] == confirmed_rate]
    if not at_best:
        return None, at_best, False
    offered = median([t["offered_rate"] for t in at_best])
    return median([t["rate"] for t in at_best]), at_best, offered < 0.95 * confirmed_rate


def fig_throughput(env, quick):
    say("\n4. daemon throughput: records/s on one core (load generator opening files for write, one record each; "
        "`preload daemon`: the packaged ruleset evaluated on every event)")
    tp = Throughput(env)
    wmem_max = wmem_max_line()
    if tp.pinned:
        say(f"   daemon pinned to CPU {tp.cpu_daemon}; load generator and this driver to CPU {tp.cpu_gen}")
    old_affinity = throughput_pinning(env, tp)
    try:
        flat_n, flat_reps = flat_out_size(quick)
        flat = []
        for i in range(flat_reps):
            t = tp.trial(flat_n, 0)
            flat.append(t)
            say(f"  [throughput] flat out {i + 1}/{flat_reps}: {t['rate']:,.0f}/s logged, "
                f"{t['failed']:,} failed sends", file=sys.stderr)
        flat_rate = median([t["rate"] for t in flat])
        seconds = 1.5 if quick else 2.5
        paced, confirmed_rate = zero_loss_search(tp, flat_rate, quick)
    finally:
        if old_affinity:
            os.sched_setaffinity(0, old_affinity)
        tp.cleanup()
    best, at_best, short = zero_loss_result(paced, confirmed_rate)
    for i, t in enumerate(flat):
        trial_line(f"flat out #{i + 1} ({t['count'] // 1000}k)", t)
    for t in sorted(paced, key=lambda t: -t["paced_rate"]):
        trial_line(f"paced {t['paced_rate']:,.0f}/s", t)
    flat_failed_pct = median([100 * t["failed"] / (t["count"] + 2) for t in flat])
    per_cpu_s = median([t["records_logged"] / t["daemon_cpu_s"] for t in flat if t["daemon_cpu_s"]])
    say(f"   flat out (median of {len(flat)}): {flat_rate:,.0f} records/s logged "
        f"({per_cpu_s:,.0f} per second of daemon CPU); {flat_failed_pct:.1f}% of the records counted as "
        f"failed sends; uncounted loss {sum(t['uncounted'] for t in flat)}")
    if best is None:
        # zero-loss is bounded by the capacity: below the target there, it is below the target
        v = "MISSED" if flat_rate < TARGETS["throughput"][2] else "not measured"
        say(f"   highest paced rate with zero loss: none held in every run   target >= 50,000/s: {v}")
    else:
        offered = median([t["offered_rate"] for t in at_best])
        say(f"   highest paced rate with zero loss: {best:,.0f} records/s (paced at {confirmed_rate:,.0f}/s, "
            f"lossless in all {len(at_best)} runs)   target >= 50,000/s: {verdict('throughput', best)}")
        if short:
            say(f"   (a lower bound: the generator offered only {offered:,.0f}/s of the {confirmed_rate:,.0f}/s asked; "
                "it was kept off its CPU)")
    hwm = max((t["vmhwm_kib"] or 0) for t in flat + paced) / 1024
    rss = max((t["vmrss_kib"] or 0) for t in flat) / 1024
    say(f"\n5. daemon memory: VmHWM {hwm:.1f} MiB (peak over the throughput runs; VmRSS at the end of the "
        f"flat-out runs {rss:.1f} MiB)   target <= 60 MiB: {verdict('memory', hwm)}")
    throughput = {"flat_out": flat, "paced": paced, "flat_out_rate": flat_rate,
                  "flat_out_failed_pct": flat_failed_pct, "flat_out_records_per_cpu_s": per_cpu_s,
                  "zero_loss_rate": best, "zero_loss_paced_at": confirmed_rate,
                  "zero_loss_lower_bound": bool(best is not None and short),
                  "pinned": tp.pinned, "paced_seconds": seconds, "distinct_files": tp.FILES,
                  "net_core_wmem_max": wmem_max}
    memory = {"vmhwm_mib": hwm, "vmrss_mib": rss}
    return throughput, memory


# ---------------------------------------------------------------------------------------------
# 9. daemon throughput with rules


RULES_TOTAL = 200  # the packaged ruleset plus generated rules, to this many rules in all
LOAD_TYPES = "open, openat, openat2"  # the generator's opens are `open` events (the hook's api)
OTHER_TYPES = "connect, unlink, ptrace"  # types the generator never produces
# four shapes of condition in turn, like the packaged rules': a type, then a path or process test
# that fails on the generator's events (so a rule on its type is evaluated, never fires); the
# last one tests both sides of an `or`
GENERATED_CONDITIONS = (
    "evt.type in ({types}) and fd.name startswith /srv/bench{i:03d}/ and not proc.name in (bench_trusted)",
    "evt.type in ({types}) and fd.directory = /srv/bench{i:03d} and user.uid != 0",
    "evt.type in ({types}) and proc.name = benchd{i:03d} and proc.pname in (sh, bash, dash)",
    "evt.type in ({types}) and (fd.filename = bench{i:03d}.conf or proc.cmdline contains \"--bench{i:03d}\")",
)


def write_generated_rules(path, n, types):
    """n Falco rules on the event types `types` (comma-separated), none of which the benchmark's
    events can fire."""
    lines = [f"# benchmarks/run.py, figure 9: {n} generated rules on evt.type in ({types})",
             "- list: bench_trusted", "  items: [benchd, benchctl]", ""]
    for i in range(n):
        cond = GENERATED_CONDITIONS[i % len(GENERATED_CONDITIONS)].format(types=types, i=i)
        lines += [f"- rule: Benchmark generated rule {i:03d}",
                  "  desc: generated by the benchmark (figure 9)",
                  f"  condition: {cond}",
                  f"  output: benchmark rule {i:03d} (file=%fd.name process=%proc.name command=%proc.cmdline)",
                  "  priority: WARNING",
                  "  tags: [benchmark]", ""]
    Path(path).write_text("\n".join(lines))
    return str(path)


def rules_variants(env):
    """The four rulesets of figure 9: (key, label, the daemon's `rules` value, loaded Ruleset)."""
    from preload import alerts

    packaged = alerts.load(None)
    extra = max(0, RULES_TOTAL - len(packaged.rules))
    d = env.tmp / "fig9-rules"
    d.mkdir(exist_ok=True)
    other = write_generated_rules(d / "other_types.yaml", extra, OTHER_TYPES)
    same = write_generated_rules(d / "load_type.yaml", extra, LOAD_TYPES)
    variants = [
        ("none", "(a) no rules", False),
        ("packaged", "(b) packaged ruleset", None),
        ("other_types", f"(c) packaged + {extra} on other types", ["default", other]),
        ("load_type", f"(d) packaged + {extra} on the load's type", ["default", same]),
    ]
    out = []
    for key, label, rules in variants:
        rs = None if rules is False else alerts.load(rules)
        if rs is not None and rs.problems:
            raise BenchError(f"figure 9, {label}: the ruleset has problems: {'; '.join(map(str, rs.problems[:3]))}")
        out.append({"key": key, "label": label, "rules": rules, "ruleset": rs,
                    "loaded": len(rs.rules) if rs else 0, "active": len(rs.active) if rs else 0,
                    "candidates": {t: len(rs.candidates({"evt.type": t})) if rs else 0
                                   for t in ("open", "execve")}})
    return out, extra


def rules_eval_cost(env, variants):
    """Alerter.check alone, in this process, per event in µs: events built by the daemon's own
    Enricher from record dicts shaped as wire.decode returns them."""
    import orjson
    from preload.alerts import Alerter
    from preload.events import Enricher

    enricher = Enricher()
    now = time.time_ns()
    sh, cat, gen = 3_000_001, 3_000_002, 3_000_003  # made up: known from their start records, never /proc

    def rec(kind, pid, ppid, seq, **body):
        return {"kind": kind, "source": "preload", "pid": pid, "ppid": ppid, "seq": seq,
                "stream": f"{pid:016x}", "time_ns": now, "truncated": False, **body}

    def start(pid, ppid, exe, argv, cwd="/"):
        return rec("start", pid, ppid, 1, uid=0, euid=0, gid=0, egid=0, attach="preload", exe=exe, cwd=cwd,
                   argv=argv)

    def opened(pid, ppid, path, flags):
        return rec("open", pid, ppid, 2, api="open", flags=flags, mode=0, res=3,
                   path_hash=f"{hash(path) & (2 ** 64 - 1):016x}", repeatable=not flags & os.O_ACCMODE, path=path)

    enricher.events(start(sh, 1, "/usr/bin/dash", ["sh", "-c", "cat /etc/hostname; loadgen"]))
    [execve] = enricher.events(start(cat, sh, "/usr/bin/cat", ["cat", "/etc/hostname"]))
    enricher.events(start(gen, sh, "/usr/local/bin/loadgen", ["loadgen", "/dev/shm/bench", "200000", "0", "4096"]))
    [read] = enricher.events(opened(cat, sh, "/etc/hostname", os.O_RDONLY | os.O_CLOEXEC))
    write_rec = opened(gen, sh, "/dev/shm/bench/f17", os.O_WRONLY | os.O_CLOEXEC)
    [write] = enricher.events(write_rec)
    events = [("process start (execve): sh -c starts /usr/bin/cat", execve),
              ("open for read: cat opens /etc/hostname", read),
              ("open for write: the generator's (O_WRONLY, /dev/shm)", write)]

    def per_call_us(fn, arg):
        n = 50
        while True:  # calibrate: about 50 ms a repetition
            t0 = time.perf_counter()
            for _ in range(n):
                fn(arg)
            dt = time.perf_counter() - t0
            if dt > 0.02:
                break
            n *= 4
        n = max(n, int(n * 0.05 / dt))
        samples = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(n):
                fn(arg)
            samples.append((time.perf_counter() - t0) / n * 1e6)
        return median(samples)

    table = []
    rulesets = [v for v in variants if v["ruleset"] is not None]
    for name, event in events:
        row = {"event": name, "evt.type": event["evt.type"], "check_us": {}, "candidates": {}, "alerts": {}}
        for v in rulesets:
            alerter = Alerter(v["ruleset"], enricher.procs)  # no sinks: the alerts are built, not written
            alerter.check(event)
            row["alerts"][v["key"]] = alerter.count
            row["candidates"][v["key"]] = len(v["ruleset"].candidates(event))
            row["check_us"][v["key"]] = per_call_us(alerter.check, event)
        table.append(row)
    # for scale: the rest of the daemon's work on the same record, in this process
    rest = {"enrich_us": per_call_us(enricher.events, write_rec), "log_line_us": per_call_us(orjson.dumps, write)}

    say("   evaluation alone: Alerter.check per event, in this process (median of 7 timed loops), µs; "
        "candidates = rules the evt.type index returns")
    w = max(len(r["event"]) for r in table) + 2
    say(f"   {'event':<{w}} " + "  ".join(f"{v['label'][:3] + ' ' + v['key']:>22}" for v in rulesets))
    for r in table:
        cells = []
        for v in rulesets:
            k = v["key"]
            fired = f", {r['alerts'][k]} alert" if r["alerts"][k] else ""
            cells.append(f"{r['check_us'][k]:7.2f} ({r['candidates'][k]:3d} cand{fired})".rjust(22))
        say(f"   {r['event']:<{w}} " + "  ".join(cells))
    say(f"   for scale, the same write open's other costs: Enricher.events {rest['enrich_us']:.2f} µs, "
        f"its log line (orjson.dumps) {rest['log_line_us']:.2f} µs (the daemon also decodes and reads it)")
    return {"events": table, "rest": rest}


def fig_rules_throughput(env, quick):
    say("\n9. daemon throughput with rules: figure 4's measurement with the daemon started as `preload run` starts "
        "it (python -P -m preload.daemon '<json config>'), per ruleset")
    variants, extra = rules_variants(env)
    for v in variants:
        c = v["candidates"]
        say(f"   {v['label']:<40} rules loaded {v['loaded']:>3}, active {v['active']:>3}; candidates per open "
            f"event {c['open']:>3}, per execve {c['execve']:>3}")
    say(f"   ((c) and (d): the packaged ruleset plus {extra} generated rules, to {RULES_TOTAL}; (c)'s on "
        f"evt.type in ({OTHER_TYPES}), which the generator never produces; (d)'s on evt.type in ({LOAD_TYPES}))")
    micro = rules_eval_cost(env, variants)

    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    files = tempfile.mkdtemp(prefix="preload-bench-", dir=base)
    tps = {v["key"]: Throughput(env, tag=f"fig9-{v['key']}", config={"rules": v["rules"]}, files=files)
           for v in variants}
    first = tps[variants[0]["key"]]
    wmem_max = wmem_max_line()
    if first.pinned:
        say(f"   daemon pinned to CPU {first.cpu_daemon}; load generator and this driver to CPU {first.cpu_gen}")
    old_affinity = throughput_pinning(env, first)
    flat = {v["key"]: [] for v in variants}
    paced, confirmed = {}, {}
    try:
        flat_n, flat_reps = flat_out_size(quick)
        for i in range(flat_reps):  # flat out round-robin over the rulesets: drifts hit them alike
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for v in order:
                t = tps[v["key"]].trial(flat_n, 0)
                flat[v["key"]].append(t)
                say(f"  [rules {v['key']}] flat out {i + 1}/{flat_reps}: {t['rate']:,.0f}/s logged, "
                    f"{t['failed']:,} failed sends", file=sys.stderr)
        for v in variants:
            k = v["key"]
            paced[k], confirmed[k] = zero_loss_search(tps[k], median([t["rate"] for t in flat[k]]), quick,
                                                      f"rules {k}")
    finally:
        if old_affinity:
            os.sched_setaffinity(0, old_affinity)
        shutil.rmtree(files, ignore_errors=True)

    rows = {}
    for v in variants:
        k = v["key"]
        best, at_best, short = zero_loss_result(paced[k], confirmed[k])
        cpu_us = median([1e6 * t["daemon_cpu_s"] / t["records_logged"] for t in flat[k] if t["records_logged"]])
        rows[k] = {"label": v["label"], "rules": v["rules"], "loaded": v["loaded"], "active": v["active"],
                   "candidates": v["candidates"], "flat_out": flat[k], "paced": paced[k],
                   "flat_out_rate": median([t["rate"] for t in flat[k]]),
                   "flat_out_failed_pct": median([100 * t["failed"] / (t["count"] + 2) for t in flat[k]]),
                   "flat_out_uncounted": sum(t["uncounted"] for t in flat[k]),
                   "daemon_cpu_us_per_record": cpu_us,
                   "daemon_minflt_per_record": median([t["daemon_minflt"] / t["records_logged"] for t in flat[k]
                                                       if t["records_logged"]]),
                   "zero_loss_rate": best,
                   "zero_loss_paced_at": confirmed[k], "zero_loss_runs": len(at_best),
                   "zero_loss_lower_bound": bool(best is not None and short),
                   "alerts_per_trial": max((t["alerts"] or 0) for t in flat[k] + paced[k]),
                   "vmhwm_mib": max((t["vmhwm_kib"] or 0) for t in flat[k] + paced[k]) / 1024}
    a = rows["none"]
    say(f"   {'ruleset':<40} {'cand/open':>9} {'flat out':>10} {'vs (a)':>7} {'CPU/record':>11} "
        f"{'zero loss':>11} {'vs (a)':>7}  target (b) >= 50,000/s")
    for v in variants:
        r = rows[v["key"]]
        z = r["zero_loss_rate"]
        zs = "none held" if z is None else f"{z:,.0f}/s" + ("*" if r["zero_loss_lower_bound"] else "")
        zr = "-" if z is None or not a["zero_loss_rate"] else f"{z / a['zero_loss_rate']:.2f}x"
        extra_txt = ""
        if v["key"] == "packaged":
            if z is None:
                extra_txt = "MISSED" if r["flat_out_rate"] < TARGETS["throughput"][2] else "not measured"
            else:
                extra_txt = verdict("throughput", z)
        say(f"   {r['label']:<40} {v['candidates']['open']:>9} {r['flat_out_rate']:>8,.0f}/s "
            f"{r['flat_out_rate'] / a['flat_out_rate']:>6.2f}x {r['daemon_cpu_us_per_record']:>8.2f} µs "
            f"{zs:>11} {zr:>7}  {extra_txt}")
    if any(rows[v["key"]]["zero_loss_lower_bound"] for v in variants):
        say("   * a lower bound: the generator offered less than 95% of the rate asked (it was kept off its CPU)")
    say("   CPU/record: the daemon's CPU time per record logged, flat out (median); ratios are to (a)")
    for v in variants:
        r = rows[v["key"]]
        held = (f"paced at {r['zero_loss_paced_at']:,.0f}/s, lossless in all {r['zero_loss_runs']} runs"
                if r["zero_loss_rate"] is not None else "no paced rate held in every run")
        tried = ", ".join(f"{t['paced_rate'] / 1000:.1f}k{'' if lossless(t) else ' (lost ' + format(t['gaps'], ',') + ')'}"
                          for t in r["paced"])
        say(f"   {v['label'][:3]} flat out {', '.join(format(t['rate'], ',.0f') for t in r['flat_out'])}/s "
            f"({r['flat_out_failed_pct']:.0f}% counted failed, uncounted {r['flat_out_uncounted']}); zero loss: "
            f"{held}; paced runs: {tried}; alerts per run {r['alerts_per_trial']}; VmHWM {r['vmhwm_mib']:.1f} MiB; "
            f"minor page faults per record (flat out) {r['daemon_minflt_per_record']:.2f}")
    b, c, d = rows["packaged"], rows["other_types"], rows["load_type"]

    def ratio(x, y, key):
        return f"{x[key] / y[key]:.2f}x" if x[key] and y[key] else "-"

    say(f"   rules' CPU per record (over (a)): (b) {b['daemon_cpu_us_per_record'] - a['daemon_cpu_us_per_record']:.2f} µs, "
        f"(c) {c['daemon_cpu_us_per_record'] - a['daemon_cpu_us_per_record']:.2f} µs, "
        f"(d) {d['daemon_cpu_us_per_record'] - a['daemon_cpu_us_per_record']:.2f} µs")
    say(f"   (c)/(b): flat out {ratio(c, b, 'flat_out_rate')}, zero loss {ratio(c, b, 'zero_loss_rate')} "
        f"(same candidates per open, {c['loaded']} rules loaded instead of {b['loaded']}); "
        f"(d)/(b): flat out {ratio(d, b, 'flat_out_rate')}, zero loss {ratio(d, b, 'zero_loss_rate')} "
        f"({d['candidates']['open']} candidates per open instead of {b['candidates']['open']})")
    return {"variants": rows, "eval_cost": micro, "generated_rules": extra, "rules_total": RULES_TOTAL,
            "net_core_wmem_max": wmem_max, "pinned": first.pinned}


# ---------------------------------------------------------------------------------------------
# 6, 7 and 8. the tracer: static and Go programs, which `preload run` traces with ptrace


# the calls the tracer's seccomp filter stops for (csrc/trace/calls.c), for strace's columns
TRACED_CALLS = ("execve,execveat,open,openat,openat2,creat,connect,bind,listen,accept,accept4,socket,setuid,setgid,"
                "setreuid,setregid,setresuid,setresgid,setgroups,setfsuid,setfsgid,ptrace,memfd_create,mount,umount2,"
                "unshare,setns,init_module,finit_module,io_uring_setup,unlink,unlinkat,rename,renameat,renameat2,chmod,"
                "fchmod,fchmodat,link,linkat,symlink,symlinkat")
STRACE_TRACED = "strace -f --seccomp-bpf -e trace=<the tracer's calls>"
HTTP_CONNS = 16


def strace_traced(env, prog):
    return [env.strace, "-f", "--seccomp-bpf", "-e", f"trace={TRACED_CALLS}", "-o", "/dev/null"] + prog


class Tracer:
    """`preload-trace serve` on its own beside a running Daemon: the tracer's steady state (what a
    traced program pays once its container is up). A measured run is what `preload run` execs
    for a static program, `preload-trace exec --handoff PROG ARGV...` with PRELOAD_TRACE and
    PRELOAD_SOCKET: the launcher has the tracer seize it, installs the seccomp filter and execs
    the program in its place."""

    def __init__(self, env, daemon, state_dir, profile="default"):
        self.env, self.daemon, self.profile = env, daemon, profile
        self.state = Path(state_dir)
        self.state.mkdir(parents=True, exist_ok=True)
        self.sock = self.state / "trace.sock"
        self.proc = None

    def start(self):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(str(self.sock))
        self.listener.listen(4096)
        r, self.control_w = os.pipe()
        fd = self.listener.fileno()
        self.err = open(self.state / "tracer.stderr", "wb")
        self.proc = subprocess.Popen([str(self.env.tracer), "serve", "--listen-fd", str(fd), "--control-fd", str(r),
                                      "--socket", self.daemon.sock, "--profile", self.profile],
                                     pass_fds=(fd, r), env=clean_env(), stdin=subprocess.DEVNULL, stdout=self.err,
                                     stderr=self.err, start_new_session=True)
        os.close(r)
        return self

    def argv(self, prog):
        return [str(self.env.tracer), "exec", "--handoff", prog[0], *prog]

    def run_env(self):
        return clean_env(PRELOAD_TRACE=self.sock, PRELOAD_SOCKET=self.daemon.sock)

    def stop(self, timeout=3):
        """End of file on its control pipe: it leaves once it traces nothing. Returns its CPU
        seconds and whether it left by itself."""
        final = read_status(self.proc.pid)
        os.close(self.control_w)
        left = True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            left = False
            self.proc.kill()
            self.proc.wait()
        self.listener.close()
        self.err.close()
        return {"cpu_s": final.get("cpu_s"), "left_by_itself": left, "exit_status": self.proc.returncode}


def leftover_tracers(state):
    """Pids of `preload-trace serve` processes of the `preload run` whose state directory is state
    that still run after it returned."""
    sock = os.fsencode(str(Path(state) / "preload.sock"))
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(args) > 2 and args[0].endswith(b"preload-trace") and args[1] == b"serve" and sock in args:
            found.append(int(d.name))
    return found


def end_leftovers(pids):
    """SIGKILL to tracers a `preload run` of ours left behind (by pid); waits until they are gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in pids):
        time.sleep(0.01)


def traced_run_column(env, key, label, prog, state, options=()):
    """`preload run [options] -- prog` for a program it traces: each run's log is checked, and a
    tracer left running after `preload run` returned is counted and ended."""
    loss, info = {}, {"leftover_tracer_runs": 0}

    def after():
        add_loss(loss, analyse_log(Path(state) / "events.jsonl"))
        pids = leftover_tracers(state)
        if pids:
            info["leftover_tracer_runs"] += 1
            end_leftovers(pids)

    col = Column(key, label, env.preload + ["run", *options, "--"] + prog, clean_env(PRELOAD_STATE_DIR=state),
                 after=after)
    return col, loss, info


def traced_text(a):
    src = a.get("sources", {})
    runs = a.get("runs", 0)
    return (f"{runs} runs: {a.get('records', 0):,} records ({src.get('ptrace', 0):,} from the tracer, "
            f"{src.get('preload', 0):,} from the hook); lost {a.get('gaps', 0)} (counted {a.get('failed', 0)}, "
            f"uncounted {a.get('uncounted', 0)})")


def leftover_text(info, col):
    n = info["leftover_tracer_runs"]
    runs = len(col["samples_s"]) + 1  # with the warm-up
    if not n:
        return None
    return (f"WARNING: after {n} of {runs} runs of `{col['label']}` its tracer was still running (the benchmark "
            "ended it); such a run waits 2 s for it before it returns (preload/supervisor.py, TRACER_STOP_SECONDS)")


def ratio_vs(v, target, strace):
    ok = v <= target and (strace is None or v < strace)
    return "met" if ok else "MISSED"


def measure_traced(env, tag, prog, cols, reps, label):
    """measure() of bare, the tracer's steady state (a daemon and `preload-trace serve` running for
    the whole figure, the program started by the launcher) and cols; returns (result, the steady
    state's log analysis, the tracer's stats)."""
    daemon = Daemon(env, env.tmp / f"{tag}-daemon").start()
    tracer = Tracer(env, daemon, env.tmp / f"{tag}-tracer").start()
    cols = [Column("bare", "bare", prog, clean_env()),
            Column("tracer", "agent, steady state: tracer + daemon running", tracer.argv(prog), tracer.run_env()),
            *cols]
    try:
        result = measure(cols, reps, label)
    finally:
        tstat = tracer.stop()
        daemon.stop()
    steady = analyse_log(daemon.events)
    steady["runs"] = reps + 1
    return result, steady, tstat


def fig_exec_static(env, reps):
    say(f"\n6. exec-heavy, static: execloop (-static) forks and execs a static true {EXECS} times, waiting for each")
    prog = [env.bins["execloop-static"], env.bins["true-static"], str(EXECS)]
    run_col, run_loss, run_info = traced_run_column(env, "preload_run", "agent, end to end: preload run -- prog",
                                                    prog, env.tmp / "fig6-run")
    cols = [run_col]
    if env.strace:
        cols.append(Column("strace_bpf", STRACE_TRACED, strace_traced(env, prog), clean_env()))
    result, steady, tstat = measure_traced(env, "fig6", prog, cols, reps, "exec-heavy static")
    target = TARGETS["exec_static"][2]
    strace = result["strace_bpf"]["ratio"] if "strace_bpf" in result else None
    below = f" and < strace's {strace:.2f}x" if strace else ""
    run_v, steady_v = (ratio_vs(result[k]["ratio"], target, strace) for k in ("preload_run", "tracer"))
    notes = {"preload_run": f"target <= {target:.2f}x{below}: {run_v}",
             "tracer": f"(same target, without the start-up: {steady_v})"}
    print_columns(result, notes=notes)
    expect = 1 + 2 * EXECS  # execloop's start, then per child its exec attempt and its new image's start
    for what, a in (("steady state", steady), ("end to end", run_loss)):
        say(f"   agent, {what}: {traced_text(a)}; execve records per run "
            f"{a.get('types', {}).get('execve', 0) / max(1, a.get('runs', 1)):,.0f} (expected {expect:,})")
    say(f"   tracer (steady state): {tstat['cpu_s'] or 0:.2f} s CPU over {reps + 1} runs"
        + ("" if tstat["left_by_itself"] else "; WARNING: it did not leave when told (ended by the benchmark)"))
    out = {"columns": result, "loss": {"tracer": steady, "preload_run": run_loss}, "tracer": tstat, **run_info}
    warn = leftover_text(run_info, result["preload_run"])
    if warn:
        say(f"   {warn}")
        env.notes.append("figure 6: " + warn)
    if not tstat["left_by_itself"]:
        env.notes.append("figure 6: the steady-state tracer did not leave when its control pipe closed")
    return out


def fig_file_static(env, reps):
    say(f"\n7. file-heavy, static: openclose (-static), {OPENS:,} x open({OPEN_PATH}, O_RDONLY) + close, one process")
    prog = [env.bins["openclose-static"], OPEN_PATH, str(OPENS)]
    run_col, run_loss, run_info = traced_run_column(env, "preload_run", "agent, end to end: preload run -- prog",
                                                    prog, env.tmp / "fig7-run")
    full_col, full_loss, full_info = traced_run_column(
        env, "preload_run_full", "agent, end to end: preload run --trace-profile full -- prog", prog,
        env.tmp / "fig7-run-full", options=("--trace-profile", "full"))
    cols = [run_col, full_col]
    if env.strace:
        n = 1 if env.quick else 5
        runs = f"{min(n, reps)} run{'s' if min(n, reps) > 1 else ''}"
        cols.append(Column("strace_bpf", f"{STRACE_TRACED} ({runs})", strace_traced(env, prog), clean_env(),
                           warmup=False, max_reps=n))
    result, steady, tstat = measure_traced(env, "fig7", prog, cols, reps, "file-heavy static")
    target = TARGETS["file_static"][2]
    strace = result["strace_bpf"]["ratio"] if "strace_bpf" in result else None
    full = result["preload_run_full"]["ratio"]
    run_v, steady_v = (verdict("file_static", result[k]["ratio"]) for k in ("preload_run", "tracer"))
    notes = {"preload_run": f"target <= {target:.2f}x: {run_v}",
             "tracer": f"(same target, without the start-up: {steady_v})"}
    if strace:
        ok, aim = ("met" if full <= bound else "MISSED" for bound in (strace, strace / 2))
        notes["preload_run_full"] = f"target <= strace's {strace:.2f}x: {ok}; aim <= half, {strace / 2:.2f}x: {aim}"
    else:
        notes["preload_run_full"] = "target: relative to strace (not measured)"
    print_columns(result, notes=notes)
    for what, a in (("steady state", steady), ("end to end", run_loss), ("end to end, full", full_loss)):
        seen = a.get("opens", {}).get(OPEN_PATH, 0) / max(1, a.get("runs", 1))
        say(f"   agent, {what}: {traced_text(a)}; opens of {OPEN_PATH} seen per run {seen:,.0f}")
    say(f"   (the default profile does not stop on read-only opens: 0 expected; the full profile sees each: "
        f"{OPENS:,}, one record and the repeats counted)")
    say(f"   tracer (steady state, default profile): {tstat['cpu_s'] or 0:.2f} s CPU over {reps + 1} runs"
        + ("" if tstat["left_by_itself"] else "; WARNING: it did not leave when told (ended by the benchmark)"))
    for info, key in ((run_info, "preload_run"), (full_info, "preload_run_full")):
        warn = leftover_text(info, result[key])
        if warn:
            say(f"   {warn}")
            env.notes.append("figure 7: " + warn)
    return {"columns": result, "loss": {"tracer": steady, "preload_run": run_loss, "preload_run_full": full_loss},
            "tracer": tstat, "leftover_tracer_runs": run_info["leftover_tracer_runs"],
            "leftover_tracer_runs_full": full_info["leftover_tracer_runs"]}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_of(exe):
    """Processes running the executable exe (a path of our temporary directory: ours alone)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(d / "exe") == exe:
                    found.append(int(d.name))
    return found


class HttpColumn:
    """One way of running the Go server (bare, under preload run, under strace). A run: start it
    on a free port, wait until it accepts, drive it with httpload in each mode, SIGTERM the server
    process itself (not a wrapper: strace would detach), and check that it exited 0 and answered
    at least every request counted."""

    def __init__(self, env, key, label, wrap, run_env, state=None):
        self.env, self.key, self.label, self.wrap, self.run_env, self.state = env, key, label, wrap, run_env, state
        self.samples = {}  # mode -> [requests/s]
        self.runs = []
        self.loss = {}
        self.leftover_tracer_runs = 0
        self.n = 0

    def run(self, modes, warmup, seconds, keep=True):
        self.n += 1
        server = os.path.realpath(self.env.bins["httpserver"])
        port = free_port()
        base = self.env.tmp / f"fig8-{self.key}-{self.n}"
        with open(f"{base}.out", "wb") as out, open(f"{base}.err", "wb") as err:
            proc = subprocess.Popen(self.wrap + [server, f"127.0.0.1:{port}"], env=self.run_env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise BenchError(f"{self.label}: the server exited with {proc.returncode} at start: "
                                     f"{Path(f'{base}.err').read_text(errors='replace')[-500:]}")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.label}: the server did not accept connections within 30 s")
                time.sleep(0.01)
            rates, counted = {}, 0
            for mode in modes:
                p = subprocess.run([self.env.bins["httpload"], str(port), str(HTTP_CONNS), str(warmup), str(seconds),
                                    mode], capture_output=True, text=True, timeout=seconds + warmup + 60)
                if p.returncode != 0:
                    raise BenchError(f"{self.label}: httpload {mode} failed ({p.returncode}): {p.stdout} {p.stderr}")
                done, errors, secs = p.stdout.split()
                rates[mode] = int(done) / float(secs)
                counted += int(done)
                if int(errors):
                    self.env.notes.append(f"figure 8, {self.label}, {mode}: {errors} failed requests")
            pids = pids_of(server)
            if not pids:
                raise BenchError(f"{self.label}: the server process is not found")
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                raise BenchError(f"{self.label}: the server did not exit within 30 s of SIGTERM") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = Path(f"{base}.out").read_text(errors="replace")
        served = int(text.split("served", 1)[1].split()[0]) if "served" in text else None
        if proc.returncode != 0 or served is None or served < counted:
            raise BenchError(f"{self.label}: the server ended with status {proc.returncode}, output {text[-200:]!r} "
                             f"(requests counted by the load generator: {counted}); stderr: "
                             f"{Path(f'{base}.err').read_text(errors='replace')[-500:]}")
        if self.state:
            add_loss(self.loss, analyse_log(Path(self.state) / "events.jsonl"))
            left = leftover_tracers(self.state)
            if left:
                self.leftover_tracer_runs += 1
                end_leftovers(left)
        if keep:
            for mode, r in rates.items():
                self.samples.setdefault(mode, []).append(r)
            self.runs.append({"rates": rates, "served": served})
        return rates


def fig_http(env, reps, quick):
    say(f"\n8. Go HTTP server (net/http, CGO_ENABLED=0: static, traced) on 127.0.0.1, driven by httpload with "
        f"{HTTP_CONNS} connections")
    version, build_s = env.build_go()
    warmup, seconds = (0.2, 1.0) if quick else (0.3, 2.0)
    say(f"   built with {version} ({build_s:.1f} s); each run: {warmup} s warm-up + {seconds} s counted per mode")
    modes = ("keepalive", "close")
    state = env.tmp / "fig8-run"
    cols = [HttpColumn(env, "bare", "bare", [], clean_env()),
            HttpColumn(env, "preload_run", "agent: preload run -- server", env.preload + ["run", "--"],
                       clean_env(PRELOAD_STATE_DIR=state), state=state)]
    if env.strace:
        cols.append(HttpColumn(env, "strace_bpf", STRACE_TRACED, strace_traced(env, []), clean_env()))
    for c in cols:  # one short untimed warm-up of each
        c.run(modes, 0.1, 0.3, keep=False)
    for r in range(reps):
        k = r % len(cols)
        for c in cols[k:] + cols[:k]:
            c.run(modes, warmup, seconds)
        say(f"  [http] repetition {r + 1}/{reps} done", file=sys.stderr)
    target = TARGETS["http"][2]
    result = {}
    for mode in modes:
        bare = median(cols[0].samples[mode])
        result[mode] = {c.key: {"label": c.label, "samples_rps": c.samples[mode], "median_rps": median(c.samples[mode]),
                                "ratio": median(c.samples[mode]) / bare} for c in cols}
    what = {"keepalive": "keep-alive (HTTP/1.1, the connections stay open)",
            "close": "a new connection per request (Connection: close: the server's accept4 on every request)"}
    w = max(len(c.label) for c in cols) + 2
    for mode in modes:
        say(f"   {what[mode]}")
        say(f"   {'column':<{w}} {'requests/s':>11} {'ratio':>7}   {'min .. max':<19} target")
        for c in cols:
            v = result[mode][c.key]
            s = v["samples_rps"]
            extra = ""
            if c.key == "preload_run":
                extra = f"target >= {target:.2f}x: {'met' if v['ratio'] >= target else 'MISSED'}"
            say(f"   {c.label:<{w}} {v['median_rps']:>11,.0f} {v['ratio']:>6.2f}x   "
                f"{min(s):>8,.0f} .. {max(s):<8,.0f} {extra}")
    run = cols[1]
    accepts = run.loss.get("types", {}).get("accept4", 0) + run.loss.get("types", {}).get("accept", 0)
    say(f"   agent: {traced_text(run.loss)}; accept records {accepts:,}")
    out = {"columns": result, "loss": {"preload_run": run.loss}, "runs": {c.key: c.runs for c in cols},
           "leftover_tracer_runs": run.leftover_tracer_runs, "connections": HTTP_CONNS, "seconds": seconds,
           "go": version}
    if run.leftover_tracer_runs:
        msg = (f"figure 8: after {run.leftover_tracer_runs} of {reps + 1} runs of preload run its tracer was "
               "still running (ended by the benchmark)")
        say(f"   WARNING: {msg}")
        env.notes.append(msg)
    return out


# ---------------------------------------------------------------------------------------------


def summary(res):
    rows = []
    for key, name in (("file_heavy", "1 file-heavy: agent / bare"), ("exec_heavy", "2 exec-heavy: agent / bare")):
        fig = res.get(key)
        if fig:
            c = fig["columns"]
            v = c["hook"]["ratio"]
            rows.append((name, f"{v:.2f}x", "<= %.2fx" % TARGETS[key][2], verdict(key, v),
                         f"preload run end to end: {c['preload_run']['ratio']:.2f}x"))
    if res.get("startup"):
        v = res["startup"]["startup_ms"]
        rows.append(("3 start-up", f"{v:.0f} ms", "<= 150 ms", verdict("startup", v), ""))
    if res.get("throughput"):
        t = res["throughput"]
        v = t["zero_loss_rate"]
        vv = verdict("throughput", v) if v is not None or t["flat_out_rate"] >= TARGETS["throughput"][2] else "MISSED"
        rows.append(("4 daemon throughput, zero loss", fmt_rate(v), ">= 50,000/s", vv,
                     ("(a lower bound) " if t.get("zero_loss_lower_bound") else "")
                     + f"flat out {t['flat_out_rate']:,.0f}/s, {t['flat_out_failed_pct']:.0f}% counted failed"))
        m = res["memory"]["vmhwm_mib"]
        rows.append(("5 daemon memory (VmHWM)", f"{m:.1f} MiB", "<= 60 MiB", verdict("memory", m), ""))
    fig = res.get("exec_static")
    if fig:
        c = fig["columns"]
        v, strace = c["preload_run"]["ratio"], c.get("strace_bpf", {}).get("ratio")
        rows.append(("6 exec-heavy static: preload run / bare", f"{v:.2f}x",
                     "<= 1.30x, < strace", ratio_vs(v, TARGETS["exec_static"][2], strace),
                     f"steady state {c['tracer']['ratio']:.2f}x" + (f", strace {strace:.2f}x" if strace else "")))
    fig = res.get("file_static")
    if fig:
        c = fig["columns"]
        v = c["preload_run"]["ratio"]
        rows.append(("7 file-heavy static: preload run / bare", f"{v:.2f}x", "<= 1.20x", verdict("file_static", v),
                     f"steady state {c['tracer']['ratio']:.2f}x"))
        full, strace = c["preload_run_full"]["ratio"], c.get("strace_bpf", {}).get("ratio")
        rows.append(("7 file-heavy static, --trace-profile full", f"{full:.2f}x", "<= strace",
                     ("met" if full <= strace else "MISSED") if strace else "not measured",
                     (f"strace {strace:.2f}x; aim <= {strace / 2:.2f}x: " + ("met" if full <= strace / 2 else "MISSED"))
                     if strace else ""))
    fig = res.get("http")
    if fig:
        for mode, name in (("keepalive", "8 Go HTTP, keep-alive: req/s ratio"), ("close", "8 Go HTTP, conn/request")):
            c = fig["columns"][mode]
            v = c["preload_run"]["ratio"]
            strace = c.get("strace_bpf", {}).get("ratio")
            rows.append((name, f"{v:.2f}x", ">= 0.90x", "met" if v >= TARGETS["http"][2] else "MISSED",
                         f"{c['preload_run']['median_rps']:,.0f} vs bare {c['bare']['median_rps']:,.0f}/s"
                         + (f"; strace {strace:.2f}x" if strace else "")))
    fig = res.get("rules_throughput")
    if fig:
        v = fig["variants"]
        b, a = v["packaged"], v["none"]
        z = b["zero_loss_rate"]
        vv = verdict("throughput", z) if z is not None or b["flat_out_rate"] >= TARGETS["throughput"][2] else "MISSED"
        also = f"flat out {b['flat_out_rate']:,.0f}/s"
        if a["zero_loss_rate"]:
            also += f"; no rules {a['zero_loss_rate']:,.0f}/s"
        for k, name in (("other_types", "200 rules, other types"), ("load_type", "200 rules on the load's type")):
            r = v[k]["zero_loss_rate"]
            also += f"; {name} " + ("none held" if r is None else f"{r:,.0f}/s")
        rows.append(("9 daemon throughput, packaged rules, zero loss", fmt_rate(z), ">= 50,000/s", vv, also))
    if not rows:
        return rows
    say("\nSummary (targets are printed, not asserted)")
    w = max(len(r[0]) for r in rows) + 2
    for r in rows:
        say(f"   {r[0]:<{w}} {r[1]:>12}   {r[2]:<12} {r[3]:<7} {r[4]}")
    return [dict(zip(("figure", "measured", "target", "verdict", "also"), r)) for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 repetitions and shorter throughput runs (about 1 min)")
    ap.add_argument("--reps", type=int, help="repetitions per column (default 7, or 3 with --quick)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample and figure as JSON")
    ap.add_argument("--only", default="1,2,3,4,6,7,8,9", help="figures to run, e.g. 2,3 (4 includes 5)")
    ap.add_argument("--without", default="", help="peers to leave out as if missing: strace,snoopy,hyperfine,go")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, binaries)")
    args = ap.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    only = {s.strip() for s in args.only.split(",")}
    # a SIGTERM must still run the finally blocks (snoopy's ini is restored, daemons stopped)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = tempfile.mkdtemp(prefix="preload-bench-")
    started = time.monotonic()
    res = {}
    try:
        without = [w.strip() for w in args.without.split(",") if w.strip()]
        unknown = set(without) - {"strace", "snoopy", "hyperfine", "go"}
        if unknown:
            ap.error(f"--without: unknown peer(s) {', '.join(sorted(unknown))}")
        env = Env(tmp, args.quick, without)
        env.compile()
        say(f"preload benchmarks: {platform.node()}, {len(env.cpus)} CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, {'quick, ' if args.quick else ''}{reps} repetitions per column "
            f"(median; ratios to bare)")
        tree = tree_state()
        say(f"agent: {shlex.join(env.preload)} (hook {env.hook})" + (f"; tree {tree}" if tree else ""))
        say(f"peers: {env.peers_line()}")
        for peer, why in env.missing.items():
            say(f"missing: {peer}: {why}")
        for n in env.notes:
            say(f"note: {n}")
        first_notes = len(env.notes)
        figures = []
        if "1" in only and "openclose" in env.bins:
            figures.append(("file_heavy", lambda: fig_file_heavy(env, reps)))
        if "2" in only:
            figures.append(("exec_heavy", lambda: fig_exec_heavy(env, reps)))
        if "3" in only:
            figures.append(("startup", lambda: fig_startup(env, args.quick)))
        if "4" in only and "loadgen" in env.bins:
            figures.append(("throughput", lambda: fig_throughput(env, args.quick)))
        traced = env.tracer is not None
        if "6" in only and traced and "execloop-static" in env.bins:
            figures.append(("exec_static", lambda: fig_exec_static(env, reps)))
        if "7" in only and traced and "openclose-static" in env.bins:
            figures.append(("file_static", lambda: fig_file_static(env, reps)))
        if "8" in only and traced and env.go and "httpload" in env.bins:
            figures.append(("http", lambda: fig_http(env, reps, args.quick)))
        if "9" in only and "loadgen" in env.bins:
            figures.append(("rules_throughput", lambda: fig_rules_throughput(env, args.quick)))
        for key, fig in figures:
            before = cpu_snapshot()
            out = fig()
            share = foreign_share(before, cpu_snapshot(), len(env.cpus))
            if key == "throughput":
                res["throughput"], res["memory"] = out
            else:
                res[key] = out
            res[key]["foreign_cpu_share"] = share
            if share is not None and share > 0.05:
                msg = (f"other processes used {100 * share:.0f}% of this machine's CPU time during the {key} "
                       "figure: its numbers are noisier and likely worse than on an idle machine")
                say(f"   WARNING: {msg}")
                env.notes.append(msg)
        res["summary"] = summary(res)
        for n in env.notes[first_notes:]:
            say(f"note: {n}")
        elapsed = time.monotonic() - started
        say(f"\n(benchmark took {elapsed:.0f} s)")
        res["meta"] = {"tree": tree, "host": platform.node(), "cpus": len(env.cpus), "kernel": platform.release(),
                       "python": sys.executable, "reps": reps, "quick": args.quick, "agent": env.preload,
                       "hook": str(env.hook), "peers": env.peers_line(), "missing": env.missing,
                       "notes": env.notes, "seconds": elapsed}
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=str))
            say(f"JSON written to {args.json}")
    except BenchError as e:
        say(f"benchmark error: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            say(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
