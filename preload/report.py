"""What happened in a container, from one or more event logs (docs/events.md).

load(paths) reads the logs once, line by line, into per-key counters; summarize(log) turns them into
a JSON-ready dict (the `preload report --format json` output); render_text(summary) formats that
dict for a terminal.

Summary keys (stable; scripts rely on them):

- `logs`: one entry per log file, in the order given: `path`, `events`, `bad_lines`, and its
  process tree. A pid means something only inside one log (every container has its own pid 1), so
  each log has its own tree:
  - `processes`: {"<pid>": {`pid`, `ppid`, `exe`, `cmdline`, `attach`, `images`, `children`}}.
    `images` lists, oldest first, every image the pid ran: {`time`, `exe`, `cmdline`, `attach`};
    `exe`, `cmdline` and `attach` repeat the latest. `attach` is `preload.attach` of its start
    event, or `none` when there was no start: an exec that no start followed (a static binary,
    say) adds an image with attach `none`; a pid without any image (a forked child that never
    exec'd) shows the proc.* fields of its first event (or, when those are empty, its nearest
    named ancestor's) and the attachment its events came from. `children`: pids (int), in order of
    appearance.
  - `roots`: pids (int) whose parent is not in the log, or the first of a parent loop.
- `events`: valid event lines in all logs. `bad_lines`: lines that were not a JSON object;
  `bad_line_examples`: "file:line" of the first few. `first`, `last`: earliest and latest `time`.
- `programs`:
  - `executed`: {exe: count of process starts}.
  - `failed`: [{`filename`, `error`, `count`}] exec failures (`error` is the errno name).
  - `unstarted`: [{`filename`, `count`}] exec attempts that neither failed nor were followed by a
    start, and that no `preload.blindspot` event explains (those are listed under
    `loss.blindspots` instead): the program ran without the agent, or its start record was lost.
- `files`: {path: {`opens`, `write`, `failures`}}: `opens` counts logged opens plus the repeats of
  `preload.repeats`, failed ones included; `write` is true when any open was for writing;
  `failures` is {errno name: count}.
- `network`:
  - `connections`: [{`type` (`connect` or `accept`), `exe`, `l4proto`, `client`, `server`,
    `result`, `count`}]. `client` is the client's address without its (ephemeral) port, `server` is
    address:port, or the socket path for unix sockets (then `client` is empty).
  - `listeners`: [{`exe`, `l4proto`, `address`, `result`, `bind`, `listen`}]: `bind` and `listen`
    count the calls on that address:port or unix path.
- `alerts`: [{`rule`, `priority`, `count`}], most severe first: from the alerts log beside each
  event log (`alerts.jsonl` beside `events.jsonl`).
- `activity`: [{`type`, `exe`, `detail`, `result`, `count`}]: the other watched calls (files
  removed, renamed, linked, created, re-moded, re-owned or truncated, privileges and capabilities
  changed, raw sockets, a socket made stdin/stdout, ptrace, memfd_create, libraries loaded, memory
  made executable, mounts, root changes, namespaces, kernel modules, io_uring, refused calls of
  another ABI). `detail` is the path(s) or the main arguments.
- `loss`:
  - `lost`: records missing from all streams; `streams`: number of streams seen.
  - `streams_with_loss`: [{`stream`, `pid`, `exe`, `lost`, `last_seq`}]. A stream's loss is its
    highest seq minus the number of distinct seqs seen.
  - `failed_sends`: sum of `preload.failed_sends` of `preload.end` events (records the channel
    refused; they are part of `lost` too).
  - `blindspots`: every `preload.blindspot` event: {`time`, `pid`, `filename`, `reason`, `binary`}.
  - `daemon_restarts`: [{`time`, `gap_seconds`}].
  - `tracer_restarts`: [{`time`, `previous_status`}]: its traced processes ended with it.
  - `daemon_stats`: the `preload.stats` of every daemon stop, numbers summed key by key.
"""
import bisect
import json
import os
import re
from collections import Counter

import orjson

OPENS = {"open", "openat", "creat"}
CONNECTS = {"connect": "connect", "accept": "accept", "accept4": "accept"}
LISTENS = {"bind", "listen"}
# CALL events (docs/events.md): what their detail column shows
ACTIVITY = {
    "unlink": ("fs.path.name",), "unlinkat": ("fs.path.name",), "rmdir": ("fs.path.name",),
    "chmod": ("fs.path.name", "evt.arg.mode"),
    "fchmod": ("fd.name", "evt.arg.mode"), "fchmodat": ("fs.path.name", "evt.arg.mode"),
    "rename": ("fs.path.source", "fs.path.target"), "renameat": ("fs.path.source", "fs.path.target"),
    "renameat2": ("fs.path.source", "fs.path.target"), "link": ("fs.path.source", "fs.path.target"),
    "linkat": ("fs.path.source", "fs.path.target"), "symlink": ("fs.path.source", "fs.path.target"),
    "symlinkat": ("fs.path.source", "fs.path.target"),
    "setuid": ("evt.arg.uid",), "setgid": ("evt.arg.gid",), "setreuid": ("evt.arg.ruid", "evt.arg.euid"),
    "setregid": ("evt.arg.rgid", "evt.arg.egid"),
    "setresuid": ("evt.arg.ruid", "evt.arg.euid", "evt.arg.suid"),
    "setresgid": ("evt.arg.rgid", "evt.arg.egid", "evt.arg.sgid"), "setgroups": ("evt.arg.size",),
    "setfsuid": ("evt.arg.uid",), "setfsgid": ("evt.arg.gid",),
    "socket": ("evt.arg.domain", "fd.l4proto"), "ptrace": ("evt.arg.request", "evt.arg.pid"),
    "memfd_create": ("evt.arg.name",), "mount": ("evt.arg.dev", "evt.arg.dir", "evt.arg.type"),
    "umount2": ("evt.arg.name",), "unshare": ("evt.arg.flags",), "setns": ("fd.name",),
    "init_module": ("evt.arg.uargs",), "finit_module": ("fd.name",), "io_uring_setup": ("evt.arg.entries",),
    "chown": ("fs.path.name", "evt.arg.uid", "evt.arg.gid"),
    "lchown": ("fs.path.name", "evt.arg.uid", "evt.arg.gid"),
    "fchown": ("fd.name", "evt.arg.uid", "evt.arg.gid"),
    "fchownat": ("fs.path.name", "evt.arg.uid", "evt.arg.gid"),
    "truncate": ("fs.path.name", "evt.arg.length"), "mkdir": ("fs.path.name",), "mkdirat": ("fs.path.name",),
    "mknod": ("fs.path.name", "evt.arg.mode"), "mknodat": ("fs.path.name", "evt.arg.mode"),
    "chroot": ("evt.arg.path",), "pivot_root": ("evt.arg.new_root", "evt.arg.put_old"),
    "capset": ("evt.arg.cap_effective",),
    "dup": ("fd.name",), "dup2": ("fd.name", "evt.rawres"), "dup3": ("fd.name", "evt.rawres"),
    "preload.dlopen": ("evt.arg.name", "evt.arg.filename"),
    "preload.exec_memory": ("preload.api", "evt.arg.prot"),
    "preload.foreign_syscall": ("evt.arg.nr",),
}
# Calls whose child is a new pid: the start that completes them comes from a child of the caller.
SPAWNS = {"posix_spawn", "posix_spawnp", "system", "popen"}
BAD_EXAMPLES = 5
TEXT_ROWS = 50


def _int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(v):
    return v if isinstance(v, str) else "" if v is None else str(v)


def _inherit_images(procs):
    """A forked child that never exec'd runs its parent's image: name it after the nearest
    ancestor that has a name (bounded walk: pids can loop)."""
    for p in procs.values():
        q, steps = p, 0
        while not p["exe"] and q["ppid"] in procs and steps < 64:
            q, steps = procs[q["ppid"]], steps + 1
            if q["exe"]:
                p["exe"], p["cmdline"] = q["exe"], q["cmdline"]


def _lenient(line):
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        return None


def _attach(ev):
    """What covered the process an event is about: said outright, or the event's source."""
    source = _str(ev.get("evt.source"))
    return _str(ev.get("preload.attach")) or (source if source in ("preload", "ptrace") else "none")


def _error(res):
    """The errno name of a failed call, None for a success (SUCCESS, or an fd/count)."""
    if res is None or res == "SUCCESS" or (_int(res) is not None and res >= 0):
        return None
    return _str(res)


class _Stream:
    """One process image's seq numbers, kept as the gaps below the highest seen: O(lost), not
    O(records), and a forged seq of 4 billion costs one gap, not a huge set."""

    __slots__ = ("pid", "exe", "top", "gaps")

    def __init__(self, pid, exe):
        self.pid, self.exe, self.top, self.gaps = pid, exe, 0, []

    def see(self, seq):
        if seq > self.top:
            if seq > self.top + 1:
                self.gaps.append((self.top + 1, seq - 1))
            self.top = seq
            return
        # a late record fills a hole; a duplicate (a log given twice) finds none
        i = bisect.bisect_right(self.gaps, (seq, float("inf"))) - 1
        if i >= 0 and self.gaps[i][0] <= seq <= self.gaps[i][1]:
            lo, hi = self.gaps[i]
            self.gaps[i:i + 1] = [g for g in ((lo, seq - 1), (seq + 1, hi)) if g[0] <= g[1]]

    def lost(self):
        return sum(hi - lo + 1 for lo, hi in self.gaps)


class _File:
    """What one log file adds to its own process tree."""

    def __init__(self, path):
        self.path = path
        self.events = self.bad_lines = 0
        self.seen = {}    # pid -> (ppid, exe, cmdline) of its first event
        # (time, line, kind, pid, ppid, exe or filename, cmdline, attach or api or error)
        self.execs = []
        self.blind = set()  # filenames of blindspot events

    def tree(self, log):
        procs = {pid: {"pid": pid, "ppid": ppid, "exe": exe, "cmdline": cmd, "attach": attach,
                       "images": [], "children": []}
                 for pid, (ppid, exe, cmd, attach) in self.seen.items()}
        pending = {}  # pid -> exec attempts not yet matched by a start or a failure
        # The attempt comes from the old image and the start from the new one, on different
        # connections: time, not log order, says which came first.
        for t, _, kind, pid, ppid, name, cmd, extra in sorted(self.execs, key=lambda e: e[:2]):
            if kind == "attempt":
                pending.setdefault(pid, []).append((name, cmd, extra, t))
            elif kind == "failed":
                log.exec_failed[name, extra] += 1
                _take(pending.get(pid), lambda a: a[0] == name)
            else:
                procs[pid]["images"].append({"time": t, "exe": name, "cmdline": cmd,
                                             "attach": extra or "none"})
                log.executed[name] += 1
                if not _take(pending.get(pid), lambda a: a[2] not in SPAWNS):
                    _take(pending.get(ppid), lambda a: a[2] in SPAWNS)
        for pid, attempts in pending.items():
            for name, cmd, api, t in attempts:
                if name not in self.blind:
                    log.unstarted[name] += 1
                if api not in SPAWNS:  # execve replaced the pid's image with one we cannot see
                    procs[pid]["images"].append({"time": t, "exe": name, "cmdline": cmd,
                                                 "attach": "none"})
        for p in procs.values():
            if p["images"]:
                p["images"].sort(key=lambda i: i["time"])
                p.update({k: p["images"][-1][k] for k in ("exe", "cmdline", "attach")})
        _inherit_images(procs)
        roots = []
        for pid, p in procs.items():
            if p["ppid"] in procs and p["ppid"] != pid:
                procs[p["ppid"]]["children"].append(pid)
            else:
                roots.append(pid)
        # A parent loop (pid reuse, forged pids) has no root: start it at its first-seen member.
        reached = set()
        for pid in roots:
            _reach(procs, pid, reached)
        for pid in procs:
            if pid not in reached:
                roots.append(pid)
                _reach(procs, pid, reached)
        return {"path": self.path, "events": self.events, "bad_lines": self.bad_lines,
                "processes": {str(pid): p for pid, p in procs.items()}, "roots": roots}


def _take(items, match):
    """Remove and return the first item that matches, or None."""
    for i, item in enumerate(items or ()):
        if match(item):
            return items.pop(i)
    return None


def _reach(procs, pid, reached):
    stack = [pid]
    while stack:
        p = stack.pop()
        if p not in reached:
            reached.add(p)
            stack.extend(procs[p]["children"])


class Log:
    """Counters gathered by load(): per key, never the events themselves."""

    def __init__(self, paths):
        self.paths = paths
        self.logs = []
        self.events = self.bad_lines = 0
        self.bad_examples = []
        self.first = self.last = None
        self.executed = Counter()
        self.exec_failed = Counter()   # (filename, error)
        self.unstarted = Counter()     # filename
        self.files = {}                # path -> [opens, write, Counter(errors)]
        self.connections = Counter()   # (type, exe, l4proto, client, server, result)
        self.listeners = {}            # (exe, l4proto, address, result) -> Counter(evt.type)
        self.streams = {}
        self.failed_sends = 0
        self.blindspots = []
        self.restarts = []
        self.tracer_restarts = []
        self.activity = Counter()      # (type, exe, detail, result)
        self.alerts = Counter()        # (rule, priority)
        self.daemon_stats = {}

    def _read(self, path):
        f = _File(path)
        with open(path, "rb") as lines:
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    ev = orjson.loads(line)
                except ValueError:  # orjson refuses lone surrogates (\udcff), which JSON allows
                    ev = _lenient(line)
                if isinstance(ev, dict):
                    f.events += 1
                    self._event(ev, f, n)
                    continue
                f.bad_lines += 1
                if len(self.bad_examples) < BAD_EXAMPLES:
                    self.bad_examples.append(f"{path}:{n}")
        self.events += f.events
        self.bad_lines += f.bad_lines
        self.logs.append(f.tree(self))

    def _read_alerts(self, path):
        with open(path, "rb") as lines:
            for line in lines:
                try:
                    a = orjson.loads(line)
                except ValueError:
                    a = None
                if isinstance(a, dict):
                    self.alerts[(_str(a.get("rule")), _str(a.get("priority")))] += 1

    def _event(self, ev, f, n):
        t = ev.get("time")
        if isinstance(t, str):
            self.first = t if self.first is None else min(self.first, t)
            self.last = t if self.last is None else max(self.last, t)
        typ = ev.get("evt.type")
        pid = _int(ev.get("proc.pid"))
        exe = _str(ev.get("proc.exepath"))
        stream, seq = ev.get("preload.stream"), _int(ev.get("preload.seq"))
        if isinstance(stream, str) and seq is not None and seq > 0:
            if stream not in self.streams:
                self.streams[stream] = _Stream(pid, exe)
            self.streams[stream].see(seq)
        if typ == "preload.daemon":  # the daemon's own life, not a process of the application
            self._daemon(ev)
            return
        if pid is not None and pid not in f.seen:
            f.seen[pid] = (_int(ev.get("proc.ppid")), exe, _str(ev.get("proc.cmdline")),
                           _attach(ev))
        if typ in OPENS or typ == "preload.repeats":
            entry = self.files.setdefault(_str(ev.get("fd.name")), [0, False, Counter()])
            count = 1 if typ in OPENS else max(_int(ev.get("evt.count")) or 0, 0)
            entry[0] += count
            # Falco prints booleans as true/false; accept the text form too
            entry[1] = entry[1] or ev.get("evt.is_open_write") in (True, "true")
            err = _error(ev.get("evt.res"))
            if err:
                entry[2][err] += count
        elif typ in CONNECTS:
            self.connections[_connection(ev, CONNECTS[typ], exe)] += 1
        elif typ in LISTENS:
            key = (exe, _str(ev.get("fd.l4proto")), _address(ev, "fd.lip", "fd.lport"),
                   _str(ev.get("evt.res")))
            self.listeners.setdefault(key, Counter())[typ] += 1
        elif typ == "execve":
            self._exec(ev, f, n, pid, exe)
        elif typ in ACTIVITY:
            detail = " ".join(_str(ev.get(k)) for k in ACTIVITY[typ] if ev.get(k) not in (None, ""))
            self.activity[(typ, exe, detail, _str(ev.get("evt.res")))] += 1
        elif typ == "preload.tracer":
            self.tracer_restarts.append({"time": _str(t), "previous_status": ev.get("preload.previous_status")})
        elif typ == "preload.end":
            self.failed_sends += max(_int(ev.get("preload.failed_sends")) or 0, 0)
        elif typ == "preload.blindspot":
            name = _str(ev.get("evt.arg.filename"))
            f.blind.add(name)
            self.blindspots.append({"time": _str(t), "pid": pid, "filename": name,
                                    "reason": _str(ev.get("preload.reason")),
                                    "binary": _str(ev.get("preload.binary"))})

    def _exec(self, ev, f, n, pid, exe):
        if pid is None:
            return
        t, ppid = _str(ev.get("time")), _int(ev.get("proc.ppid"))
        argv = ev.get("preload.argv")
        argv = " ".join(map(_str, argv)) if isinstance(argv, list) else ""
        name = _str(ev.get("evt.arg.filename"))
        if ev.get("evt.dir") == ">":
            f.execs.append((t, n, "attempt", pid, ppid, name, argv, _str(ev.get("preload.api"))))
        elif ev.get("evt.res") == "SUCCESS":
            cmd = _str(ev.get("proc.cmdline")) or argv
            f.execs.append((t, n, "start", pid, ppid, exe, cmd, _str(ev.get("preload.attach"))))
        else:
            f.execs.append((t, n, "failed", pid, ppid, name, argv, _str(ev.get("evt.res"))))

    def _daemon(self, ev):
        state = ev.get("preload.state")
        if state == "restart":
            self.restarts.append({"time": _str(ev.get("time")),
                                  "gap_seconds": ev.get("preload.gap_seconds")})
        elif state == "stop" and isinstance(ev.get("preload.stats"), dict):
            _add_stats(self.daemon_stats, ev["preload.stats"])


def _add_stats(into, stats):
    """Sum stats into into, key by key; a key whose shape changed between daemons is skipped."""
    for k, v in stats.items():
        if isinstance(v, dict) and isinstance(into.get(k, {}), dict):
            _add_stats(into.setdefault(k, {}), v)
        elif isinstance(v, (int, float)) and isinstance(into.get(k, 0), (int, float)):
            into[k] = into.get(k, 0) + v


def _address(ev, ip, port):
    """ip:port, [ipv6]:port, or the path of a unix socket."""
    if ev.get("fd.typechar") == "u" or ev.get("fd.type") == "unix":
        return _str(ev.get("fd.name"))
    host = _str(ev.get(ip))
    return f"[{host}]:{_str(ev.get(port))}" if ":" in host else f"{host}:{_str(ev.get(port))}"


def _connection(ev, kind, exe):
    if ev.get("fd.typechar") == "u" or ev.get("fd.type") == "unix":
        client = ""
    else:  # the client port is ephemeral: keeping it would make every connection its own row
        client = _str(ev.get("fd.cip"))
    return (kind, exe, _str(ev.get("fd.l4proto")), client, _address(ev, "fd.sip", "fd.sport"),
            _str(ev.get("evt.res")))


def alerts_beside(events_path):
    """The alerts log written beside an event log (alerts.jsonl for events.jsonl, alerts.2.jsonl
    for events.2.jsonl), or None."""
    directory, name = os.path.split(os.fspath(events_path))
    if not name.startswith("events"):
        return None
    path = os.path.join(directory, "alerts" + name[len("events"):])
    return path if os.path.exists(path) else None


def ocsf_lines(paths):
    """The alerts, then the events, of the logs at paths as OCSF 1.1 JSON lines (bytes)."""
    from preload.sinks import ocsf

    for path in paths:
        alerts = alerts_beside(path)
        for name, convert in ((alerts, ocsf.alert), (os.fspath(path), ocsf.event)):
            if not name:
                continue
            with open(name, "rb") as lines:
                for line in lines:
                    try:
                        record = convert(orjson.loads(line))
                    except ValueError:  # not JSON, or no valid time: nothing to say in OCSF
                        continue
                    if record is not None:
                        yield orjson.dumps(record)


def load(paths):
    """Read the JSONL logs at paths (in order) into a Log, and the alerts logs beside them. Lines
    that are not a JSON object are counted, never fatal; a missing file raises FileNotFoundError."""
    log = Log([os.fspath(p) for p in paths])
    for path in log.paths:
        log._read(path)
        alerts = alerts_beside(path)
        if alerts:
            log._read_alerts(alerts)
    return log


_SEVERITY = ("Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug")


def _by_alert(item):
    (rule, priority), count = item
    rank = _SEVERITY.index(priority) if priority in _SEVERITY else len(_SEVERITY)
    return rank, -count, rule


def _by_count(item):
    return -item[1], item[0]


def summarize(log):
    """The JSON-ready summary of a Log; its keys are documented in the module docstring."""
    streams_with_loss = sorted(
        ({"stream": s, "pid": st.pid, "exe": st.exe, "lost": st.lost(), "last_seq": st.top}
         for s, st in log.streams.items() if st.gaps),
        key=lambda s: (-s["lost"], s["stream"]))
    return {
        "logs": log.logs,
        "events": log.events,
        "bad_lines": log.bad_lines,
        "bad_line_examples": log.bad_examples,
        "first": log.first,
        "last": log.last,
        "programs": {
            "executed": dict(sorted(log.executed.items(), key=_by_count)),
            "failed": [{"filename": name, "error": err, "count": c}
                       for (name, err), c in sorted(log.exec_failed.items(), key=_by_count)],
            "unstarted": [{"filename": name, "count": c}
                          for name, c in sorted(log.unstarted.items(), key=_by_count)],
        },
        "files": {path: {"opens": opens, "write": write, "failures": dict(errors)}
                  for path, (opens, write, errors) in
                  sorted(log.files.items(), key=lambda kv: (-kv[1][0], kv[0]))},
        "network": {
            "connections": [dict(zip(("type", "exe", "l4proto", "client", "server", "result"), k),
                                 count=c)
                            for k, c in sorted(log.connections.items(), key=_by_count)],
            "listeners": [dict(zip(("exe", "l4proto", "address", "result"), k),
                               bind=calls["bind"], listen=calls["listen"])
                          for k, calls in sorted(log.listeners.items())],
        },
        "alerts": [{"rule": rule, "priority": priority, "count": c}
                   for (rule, priority), c in sorted(log.alerts.items(), key=_by_alert)],
        "activity": [dict(zip(("type", "exe", "detail", "result"), k), count=c)
                     for k, c in sorted(log.activity.items(), key=_by_count)],
        "loss": {
            "lost": sum(s["lost"] for s in streams_with_loss),
            "streams": len(log.streams),
            "streams_with_loss": streams_with_loss,
            "failed_sends": log.failed_sends,
            "blindspots": log.blindspots,
            "daemon_restarts": log.restarts,
            "tracer_restarts": log.tracer_restarts,
            "daemon_stats": log.daemon_stats,
        },
    }


# Log content is written by the application: control characters in a path or a command line must
# not reach the terminal as escape sequences, nor lone surrogates (undecodable bytes) crash print.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _safe(line):
    return _UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100
                       else f"\\u{ord(m[0]):04x}", line)


def _capped(rows):
    shown = rows[:TEXT_ROWS]
    if len(rows) > TEXT_ROWS:
        shown.append(f"    … and {len(rows) - TEXT_ROWS} more")
    return shown


def _tree_lines(tree):
    procs, rows, done = tree["processes"], [], set()
    stack = [(pid, "", None) for pid in reversed(tree["roots"])]  # (pid, indent, last child?)
    while stack:
        pid, indent, last = stack.pop()
        if pid in done:  # a parent loop
            continue
        done.add(pid)
        p = procs[str(pid)]
        branch = "" if last is None else "└─ " if last else "├─ "
        left = f"{indent}{branch}{pid} {p['cmdline'] or p['exe']}"
        rows.append((left if len(left) <= 72 else left[:71] + "…", p["attach"]))
        inner = indent if last is None else indent + ("   " if last else "│  ")
        kids = p["children"]
        stack.extend((kid, inner, i == len(kids) - 1) for i, kid in reversed(list(enumerate(kids))))
    width = max((len(left) for left, _ in rows), default=0)
    return [f"  {left:<{width}}  [{attach}]" for left, attach in rows]


def _errors(failures):
    return "".join(f"  {err}×{n}" for err, n in failures.items())


def render_text(summary):
    """The summary for a terminal."""
    s = summary
    out = ["preload report",
           f"  logs: {', '.join(log['path'] for log in s['logs'])}",
           f"  time: {s['first'] or '-'} → {s['last'] or '-'}",
           f"  events: {s['events']}",
           f"  bad lines: {s['bad_lines']}"
           + (f" (first at {', '.join(s['bad_line_examples'])})" if s["bad_lines"] else "")]

    out += ["", f"Alerts ({sum(a['count'] for a in s['alerts'])})"]
    out += _capped([f"  {a['count']:>7}  {a['priority']:<13} {a['rule']}" for a in s["alerts"]]) or ["  (none)"]

    for log in s["logs"]:
        out += ["", "Process tree" + (f" ({log['path']})" if len(s["logs"]) > 1 else "")]
        out += _tree_lines(log) or ["  (no processes)"]

    prog = s["programs"]
    out += ["", "Programs executed"]
    out += _capped([f"  {n:>7}  {exe}" for exe, n in prog["executed"].items()])
    if prog["failed"]:
        out += ["  failed:"] + _capped(
            [f"  {f['count']:>7}  {f['filename']}  {f['error']}" for f in prog["failed"]])
    if prog["unstarted"]:
        out += ["  attempted, no start seen (ran without the agent, or its start was lost):"]
        out += _capped([f"  {u['count']:>7}  {u['filename']}" for u in prog["unstarted"]])

    files = s["files"]
    writes = [(p, f) for p, f in files.items() if f["write"]]
    reads = [(p, f) for p, f in files.items() if not f["write"]]
    out += ["", f"Files opened ({len(files)} paths)"]
    if writes:
        out += ["  written:"] + _capped(
            [f"  {f['opens']:>7}  {p}{_errors(f['failures'])}" for p, f in writes])
    if reads:
        out += ["  read:"] + _capped(
            [f"  {f['opens']:>7}  {p}{_errors(f['failures'])}" for p, f in reads])

    net = s["network"]
    out += ["", "Network"]
    if net["connections"]:
        out += ["  connections:"] + _capped(
            [f"  {c['count']:>7}  {c['type']:<7} {c['exe']}  {c['l4proto'] or '-'}  "
             f"{c['client'] or '-'} → {c['server']}  {c['result']}" for c in net["connections"]])
    if net["listeners"]:
        out += ["  listeners:"] + _capped(
            [f"    {li['l4proto'] or '-'} {li['address']}  {li['exe']}  bind×{li['bind']} "
             f"listen×{li['listen']}  {li['result']}" for li in net["listeners"]])
    if not net["connections"] and not net["listeners"]:
        out.append("  (none)")

    if s["activity"]:
        out += ["", "Other activity"] + _capped(
            [f"  {a['count']:>7}  {a['type']:<13} {a['exe']}  {a['detail']}  {a['result']}"
             for a in s["activity"]])

    loss = s["loss"]
    out += ["", "Loss and blind spots",
            f"  Records lost: {loss['lost']}"
            + (f" (in {len(loss['streams_with_loss'])} of {loss['streams']} streams)"
               if loss["lost"] else "")]
    out += _capped([f"    pid {st['pid']}  {st['exe']}  lost {st['lost']} of {st['last_seq']}"
                    f"  (stream {st['stream']})" for st in loss["streams_with_loss"]])
    out.append(f"  Sends refused by the channel: {loss['failed_sends']}")
    out.append(f"  Blind spots: {len(loss['blindspots'])}")
    out += _capped([f"    pid {b['pid']}  {b['filename']}  {b['reason']}"
                    + (f" ({b['binary']})" if b["binary"] else "") for b in loss["blindspots"]])
    out.append(f"  Daemon restarts: {len(loss['daemon_restarts'])}")
    out += _capped([f"    {r['time']}  no daemon for {r['gap_seconds']} s"
                    for r in loss["daemon_restarts"]])
    if loss["tracer_restarts"]:
        out.append(f"  Tracer restarts: {len(loss['tracer_restarts'])} (its traced processes ended with it)")
    if loss["daemon_stats"]:
        out.append("  Daemon stats: " + _stats_text(loss["daemon_stats"]))
    return "\n".join(map(_safe, out)) + "\n"


def _stats_text(stats):
    return ", ".join(f"{k} ({_stats_text(v)})" if isinstance(v, dict) else f"{k} {v}"
                     for k, v in stats.items())
