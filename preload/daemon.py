"""The daemon: receives records on the channel, enriches them, writes the event log.

It runs beside the application (started by the supervisor, never instrumented itself). Everything
that arrives is untrusted: a bad record, a wrong protocol version or a peer outside our pid
namespace (another container, the host) is counted, logged, and the daemon goes on.

The listening socket usually belongs to the supervisor and is inherited: if this process dies,
connections not yet accepted wait in the backlog for the next daemon."""
import json
import os
import selectors
import signal
import socket
import struct
import time
from collections import Counter

import orjson

from preload import wire
from preload.events import Enricher, agent_event

_UCRED = struct.Struct("3i")
_BATCH = 256  # records read from one connection before looking at the others
_DRAIN_SECONDS = 3.0
_COALESCE_SECONDS = 0.002  # how long a quiet daemon lets records gather before reading them
_BUSY_ROUND = 64  # records in one round that mean the daemon is busy: read on without waiting


def _worth_saying(n):
    """The first few, then at powers of two: loud, but a flood cannot stall us on stderr."""
    return n <= 5 or n & (n - 1) == 0


def _logger():
    # imported on first use: loguru costs tens of milliseconds, and a quiet daemon never logs;
    # its format and level come from LOGURU_FORMAT/LOGURU_LEVEL, set by whoever started us
    from loguru import logger
    return logger


class EventLog:
    """Append-only JSONL; one write per batch. Shared by the daemon and the supervisor.
    orjson: the stdlib encoder alone would cap the daemon near 50,000 events a second."""

    def __init__(self, path):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._lines = []

    def add(self, event):
        self._lines.append(orjson.dumps(event))

    def flush(self):
        if self._lines:
            self._lines.append(b"")
            data = b"\n".join(self._lines)
            self._lines.clear()
            while data:  # a regular file takes it all; loop only for the rare short write
                data = data[os.write(self._fd, data):]

    def close(self):
        self.flush()
        os.close(self._fd)


class AlertStream(EventLog):
    """Alerts as JSON lines on a file descriptor we do not own (stderr: the container's log
    stream), written once per batch; a write that fails is counted, never retried."""

    def __init__(self, fd):
        self._fd = fd
        self._lines = []
        self.failed = 0

    def flush(self):
        try:
            super().flush()
        except OSError:
            self._lines.clear()
            self.failed += 1

    close = flush


class WebhookSink:
    """Alerts posted to a URL as Falco's http_output does; never blocks the daemon (a bounded
    queue and a thread of its own; what fails or does not fit is counted)."""

    def __init__(self, url):
        from preload.sinks.webhook import Webhook

        self.hook = Webhook(url)

    def add(self, alert):
        self.hook.post(alert)

    def flush(self):
        pass

    def close(self):
        self.hook.close(3.0)
        return {"webhook": self.hook.stats()}


class Daemon:
    def __init__(self, listener, log, spool_dir=None, classify=None, control=None, ruleset=None,
                 alert_sinks=()):
        self.listener = listener
        self.control = control
        self.listener.setblocking(False)
        self.log = log
        self.spool_dir = spool_dir
        # our parent is `preload run`: the root of the tree, not part of it
        self.enricher = Enricher(classify=classify, supervisor=os.getppid())
        self.alert_sinks = list(alert_sinks)
        self.alerter = None
        if ruleset is not None:
            from preload.alerts import Alerter
            self.alerter = Alerter(ruleset, self.enricher.procs, [s.add for s in self.alert_sinks])
        self.stats = Counter()
        self.rejected = Counter()
        self.stopping = False
        self._sel = selectors.DefaultSelector()
        self._sel.register(listener, selectors.EVENT_READ)
        if control is not None:  # end of file on it means: drain and stop
            self._sel.register(control, selectors.EVENT_READ)
        self._buf = bytearray(wire.MAX_RECORD + 1)
        self._quiet = True

    # -- untrusted input --------------------------------------------------------------------

    def _reject(self, reason, detail=""):
        n = self.rejected[reason] = self.rejected[reason] + 1
        if _worth_saying(n):
            _logger().warning("rejected {} (#{}){}", reason, n, detail)

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: the peer's records wait in the backlog
                _logger().error("accept failed: {}", e)
                return
            pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
            if pid == 0:  # the kernel shows 0 for a peer outside our pid namespace
                self._reject("peer outside the container", f" uid={uid}")
                conn.close()
                continue
            conn.setblocking(False)
            self.stats["connections"] += 1
            self._sel.register(conn, selectors.EVENT_READ, pid)

    def _read(self, key):
        conn = key.fileobj
        for _ in range(_BATCH):
            try:
                n = conn.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                n = 0
            if n == 0:
                self._close(conn)
                return
            if n > wire.MAX_RECORD:
                self._reject("oversized record", f" from pid {key.data}")
                continue
            if not self._record(bytes(self._buf[:n]), key):
                self._close(conn)
                return

    def _close(self, conn):
        self._sel.unregister(conn)
        conn.close()

    def _record(self, data, key):
        """Logs one record; False when its sender is to be refused altogether."""
        try:
            rec = wire.decode(data)
        except wire.WireError as e:
            if e.reason == "version":
                self._reject("bad record: version", f" from pid {key.data}: it speaks another protocol "
                             f"version (we speak {wire.VERSION}), refusing it; is a different preload "
                             "installed in this image?")
                return False
            self._reject(f"bad record: {e.reason}", f" from pid {key.data}")
            return True
        self.stats["records"] += 1
        try:
            for event in self.enricher.events(rec):
                self.log.add(event)
                if self.alerter is not None:
                    self.alerter.check(event)
        except Exception as e:  # a record we decoded but cannot describe must not stop the daemon
            self._reject("undescribable record", f" ({rec.get('kind')} from pid {key.data}: {e!r})")
        return True

    # -- life ---------------------------------------------------------------------------------

    def poll(self, timeout):
        """One round: returns the number of ready sources."""
        ready = self._sel.select(timeout)
        if ready and self._quiet and not self.stopping:
            # A trickle (a shell running commands: three records each) would wake us once per
            # record, and each wakeup costs the sender a cross-CPU interrupt. Let it pile up for
            # a moment; under load the rounds are full and we never wait.
            time.sleep(_COALESCE_SECONDS)
        before = self.stats["records"]
        for key, _ in ready:
            if key.fileobj is self.listener:
                self._accept()
            elif key.fileobj is self.control:
                if not os.read(self.control, 64):
                    self._sel.unregister(self.control)
                    self.stopping = True
            else:
                self._read(key)
        self._quiet = self.stats["records"] - before < _BUSY_ROUND
        self.log.flush()
        for sink in self.alert_sinks:
            sink.flush()
        return len(ready)

    def serve(self):
        while not self.stopping:
            try:
                self.poll(1.0)
            except Exception:  # a bug of ours must not end the agent: say it and go on
                n = self.stats["internal errors"] = self.stats["internal errors"] + 1
                if _worth_saying(n):
                    _logger().exception("internal error #{}", n)
        self.drain()

    def drain(self, seconds=_DRAIN_SECONDS):
        """Reads until the channel is quiet (or a bounded time passed: orphans may keep talking)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.poll(0):
            pass
        self.collect_spool()
        stats = {"records": self.stats["records"], "connections": self.stats["connections"],
                 "internal_errors": self.stats["internal errors"], "rejected": dict(self.rejected)}
        if self.alerter is not None:
            stats["alerts"] = self.alerter.count
        for sink in self.alert_sinks:  # the last alerts out, and what became of them
            stats.update(sink.close() or {})
        self.alert_sinks = []
        self.log.add(agent_event("preload.daemon", **{"preload.state": "stop", "preload.stats": stats}))
        self.log.flush()

    def collect_spool(self):
        """Ends of streams that could not reach a daemon, noted by the hook in the spool dir."""
        for rec in take_spool(self.spool_dir, lambda: self._reject("bad spool file")):
            for event in self.enricher.events(rec):
                self.log.add(event)

    def close(self):
        self.log.close()


def take_spool(spool_dir, bad=lambda: None):
    """Reads and removes the hook's spool notes: END records that found no daemon."""
    try:
        names = os.listdir(spool_dir) if spool_dir else []
    except OSError:
        return
    for name in names:
        path = os.path.join(spool_dir, name)
        try:
            with open(path, "rb") as f:
                pid, ppid, stream, seq, failed = f.read(256).split()
            rec = {"kind": "end", "source": "preload", "pid": int(pid), "ppid": int(ppid),
                   "stream": f"{int(stream, 16):016x}", "seq": int(seq), "time_ns": os.stat(path).st_mtime_ns,
                   "reason": "spool", "failed_sends": int(failed), "truncated": False}
        except (OSError, ValueError):
            bad()
            rec = None
        try:
            os.unlink(path)
        except OSError:
            pass
        if rec:
            yield rec


def close_previous_run(spool_dir, previous_log):
    """Notes left by processes that outlived the previous run's daemon belong to its log."""
    recs = list(take_spool(spool_dir))
    if recs:
        log, enricher = EventLog(previous_log), Enricher()
        for rec in recs:
            for event in enricher.events(rec):
                log.add(event)
        log.close()


def _classify(path):
    from preload import elf  # on the first exec only: a run that execs nothing never pays for it

    return elf.classify(path)


def _restart_event(gap_seconds, previous_status):
    return agent_event("preload.daemon", **{"preload.state": "restart", "preload.gap_seconds": gap_seconds,
                                            "preload.previous_status": previous_status})


def _alerting(rules, alerts_path, alerts_stderr, webhook=None):
    """The ruleset and where its alerts go; (None, []) when rules are off. A rule file that went
    bad since `preload run` checked it is reported, and the rules that still load are used."""
    if rules is False:
        return None, []
    from preload import alerts

    ruleset = alerts.load(rules)
    for problem in ruleset.problems:
        _logger().error("rules: {}", problem)
    sinks = [EventLog(alerts_path)] if alerts_path else []
    if alerts_stderr:
        sinks.append(AlertStream(2))
    if webhook:
        sinks.append(WebhookSink(webhook))
    return ruleset, sinks


def main(listen_fd=None, socket_path=None, events_path="events.jsonl", spool_dir=None,
         restart_gap=None, previous_status=None, control_fd=None, rules=None, alerts_path=None,
         alerts_stderr=False, webhook=None):
    """Runs until SIGTERM/SIGINT or end of file on control_fd, then drains. The caller has
    configured logging."""
    stop_requested = []
    # first of all: a stop that arrives while we start up must still drain, not kill us
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop_requested.append(1))
    if listen_fd is not None:
        listener = socket.socket(fileno=listen_fd)
    else:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.path.exists(socket_path):
            os.unlink(socket_path)
        listener.bind(socket_path)
        os.chmod(socket_path, 0o666)  # processes that dropped privileges report too
        listener.listen(4096)
    log = EventLog(events_path)
    ruleset, sinks = _alerting(rules, alerts_path, alerts_stderr, webhook)
    daemon = Daemon(listener, log, spool_dir, classify=_classify, control=control_fd, ruleset=ruleset,
                    alert_sinks=sinks)

    def stop(signum, frame):
        daemon.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    daemon.stopping = bool(stop_requested)
    if restart_gap is not None:
        log.add(_restart_event(restart_gap, previous_status))
        _logger().warning("restarted after {:.3f}s without a daemon (previous exit status {})",
                       restart_gap, previous_status)
    else:
        log.add(agent_event("preload.daemon", **{"preload.state": "start"}))
    daemon.collect_spool()
    log.flush()
    daemon.serve()
    daemon.close()
    return 0


if __name__ == "__main__":  # how `preload run` starts us: no command-line framework to import
    import sys

    code = main(**json.loads(sys.argv[1]))
    sys.stderr.flush()
    os._exit(code)  # the log is closed; interpreter finalisation would only delay the wrapper
