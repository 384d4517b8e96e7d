#!/usr/bin/env python3
"""Where the daemon's time goes per record: the record path (decode, enrich, log, rules) on real
records, and optionally the whole serve loop on a live load.

    python3 benchmarks/profile_daemon.py [--records N] [--rules none|default|FILE ...] [--top N] [--live]

1. Captures N records of figure 4's load (c/loadgen.c under the hook, opens for write, plus its
   start and end) on a socket of our own, as raw wire bytes (not through a daemon).
2. Replays them through the daemon's own code, preload.daemon.Daemon._record (wire.decode,
   Enricher.events, EventLog.add, Alerter.check), with a log flush every 256 records as the
   daemon does once per round, the alerts to a file as `preload run` sends them:
   - timed without a profiler, the path built up stage by stage (decode; + enrich; + log; + rules);
   - then under cProfile, whose top functions are printed by own time and by cumulative time.
   cProfile's own cost per Python call inflates call-heavy code (the rules' closures) more than
   code that runs in C (orjson, struct): read its shares beside the stage timings.
3. --live: a Daemon in this process serving a real socket (select, recv_into, the record path,
   the flushes), pinned to the first CPU, the generator flat out on the second: its CPU time per
   record without a profiler, then the same under cProfile.

Not one of run.py's figures: a tool to find what to make faster (figures 4 and 9 measure the
daemon whole, in its own process).
"""
import argparse
import contextlib
import cProfile
import io
import os
import pstats
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def hook_path():
    import preload

    return Path(preload.__file__).parent / "libpreload.so"


def capture(tmp, n, files=4096):
    """n records of the load generator (+ its start and end) as raw bytes, in arrival order."""
    hook = hook_path()
    loadgen = tmp / "loadgen"
    subprocess.run([os.environ.get("CC", "cc"), "-O2", str(HERE / "c" / "loadgen.c"), "-o", str(loadgen)], check=True)
    sock_path = str(tmp / "capture.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(sock_path)
    listener.listen(16)
    records = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                records.append(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    (tmp / "files").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PRELOAD_SOCKET", "PRELOAD_STATE_DIR")}
    # paced at 100,000/s: this capture loop keeps up, so nothing is refused
    subprocess.run([str(loadgen), str(tmp / "files"), str(n), "100000", str(files)], check=True,
                   env=dict(env, LD_PRELOAD=str(hook), PRELOAD_SOCKET=sock_path), stdout=subprocess.DEVNULL)
    t.join(30)
    listener.close()
    return records


class _Key:  # what the selector gives Daemon._read: .data is the peer's pid
    data = 0


def make_daemon(tmp, rules):
    from preload import daemon

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # never used: we call _record
    log = daemon.EventLog(str(tmp / "events.jsonl"))
    ruleset, sinks = daemon._alerting(rules, str(tmp / "alerts.jsonl"), False)
    d = daemon.Daemon(listener, log, str(tmp / "spool"), classify=daemon._classify, ruleset=ruleset,
                      alert_sinks=sinks)
    return d


def replay(d, records):
    key = _Key()
    record, flush = d._record, d.log.flush
    for i in range(0, len(records), 256):
        for data in records[i:i + 256]:
            record(data, key)
        flush()
        for sink in d.alert_sinks:
            sink.flush()


def best_of(fn, reps=5):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def stages(tmp, records, rules):
    """The record path built up stage by stage, each pass over all records (µs per record, best
    and median of 5): decode; decode + enrich; + the log (Daemon._record without rules, a flush per
    256 records); + the rules (Daemon._record with them). A stage's cost is the difference: timed
    alone, with its input kept in memory and its output thrown away, a stage would run in another
    heap than the daemon's (orjson's output alone then costs ~5 µs a line here: new memory and its
    page faults) and the parts would not add up."""
    from preload import wire
    from preload.events import Enricher

    passes = {}

    def decode():
        for r in records:
            wire.decode(r)
    passes["wire.decode"] = best_of(decode)

    def enrich():
        e = Enricher()
        for r in records:
            e.events(wire.decode(r))
    passes["+ Enricher.events"] = best_of(enrich)

    def whole(with_rules):
        def run():
            d = make_daemon(tmp, with_rules)
            replay(d, records)
            d.log.close()
        return run
    passes["+ EventLog (= Daemon._record, no rules)"] = best_of(whole(False))
    if rules is not False:
        passes["+ Alerter.check (= Daemon._record)"] = best_of(whole(rules))
    return {k: (v[0] / len(records) * 1e6, v[1] / len(records) * 1e6) for k, v in passes.items()}


def live(tmp, n, rules, top, loadgen, hook):
    """The serve loop on a live flat-out load: CPU µs per record, then a profile."""
    from preload import daemon

    cpus = sorted(os.sched_getaffinity(0))
    old = os.sched_getaffinity(0)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PRELOAD_SOCKET", "PRELOAD_STATE_DIR")}

    def run(profile):
        sock_path = str(tmp / "live.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(sock_path)
        listener.listen(4096)
        log = daemon.EventLog(str(tmp / "live.jsonl"))
        ruleset, sinks = daemon._alerting(rules, str(tmp / "live-alerts.jsonl"), False)
        d = daemon.Daemon(listener, log, str(tmp / "spool"), classify=daemon._classify, ruleset=ruleset,
                          alert_sinks=sinks)
        if len(cpus) >= 2:
            os.sched_setaffinity(0, {cpus[0]})
        pin = (lambda: os.sched_setaffinity(0, {cpus[1]})) if len(cpus) >= 2 else None
        prof = cProfile.Profile() if profile else None
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c0, t0 = time.process_time(), time.perf_counter()
        if prof:
            prof.enable()
        gen = subprocess.Popen([str(loadgen), str(tmp / "files"), str(n), "0", "4096"], stdout=subprocess.DEVNULL,
                               env=dict(env, LD_PRELOAD=str(hook), PRELOAD_SOCKET=sock_path), preexec_fn=pin)
        try:
            while True:
                ready = d.poll(0.05)
                if gen.poll() is not None and not ready:
                    break
        finally:
            if prof:
                prof.disable()
            os.sched_setaffinity(0, old)
            gen.wait()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        recs = d.stats["records"]
        d.log.close()
        listener.close()
        return recs, cpu, wall, prof, faults

    recs, cpu, wall, _, faults = run(False)
    print(f"\nlive serve loop (a Daemon in this process on CPU {cpus[0]}, the generator flat out on the other): "
          f"{recs:,} records of {n + 2:,} taken in {wall:.2f} s ({recs / wall:,.0f}/s), "
          f"{cpu / recs * 1e6:.2f} µs of CPU and {faults / recs:.2f} minor page faults per record (the rest was "
          "refused by the full socket: counted by the hook)")
    recs, cpu, wall, prof, _ = run(True)
    print(f"under cProfile: {recs:,} records, {cpu / recs * 1e6:.2f} µs of CPU per record")
    print_profile(prof, top)


def print_profile(prof, top):
    for order in ("tottime", "cumulative"):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats(order).print_stats(top)
        text = s.getvalue()
        print(f"\ncProfile, by {order} (top {top}):")
        print(text[text.index("   ncalls"):] if "   ncalls" in text else text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000, help="opens to capture (default 100,000)")
    ap.add_argument("--rules", nargs="+", default=["default"],
                    help="none, or rule files as for preload run --rules (default: the packaged ruleset)")
    ap.add_argument("--top", type=int, default=25, help="functions to print per table")
    ap.add_argument("--live", action="store_true", help="also profile the serve loop on a live flat-out load")
    args = ap.parse_args()
    rules = False if args.rules == ["none"] else args.rules
    tmp = Path(tempfile.mkdtemp(prefix="preload-prof-"))
    try:
        records = capture(tmp, args.records)
        print(f"captured {len(records):,} records of the load generator (opens for write, its start and end); "
              f"rules: {'none' if rules is False else ' '.join(rules)}")
        per = stages(tmp, records, rules)
        print("the record path stage by stage, µs per record (best / median of 5 passes over all records; "
              "each pass adds a stage):")
        prev = 0.0
        for k, (best, med) in per.items():
            print(f"   {k:<42} {best:7.2f} / {med:7.2f}   (this stage {best - prev:5.2f})")
            prev = best
        print(f"   => at most {1e6 / prev:,.0f} records/s on one core for the record path alone, before select, "
              "recv_into and the rest of the serve loop")
        d = make_daemon(tmp, rules)
        prof = cProfile.Profile()
        prof.enable()
        replay(d, records)
        prof.disable()
        d.log.close()
        print_profile(prof, args.top)
        if args.live:
            live(tmp, args.records, rules, args.top, tmp / "loadgen", hook_path())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
