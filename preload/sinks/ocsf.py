"""Alerts and events in OCSF 1.1.0 (https://schema.ocsf.io/1.1.0/), as plain functions.

``alert(a)``: a Falco-format alert (time rule priority output output_fields source tags
hostname) as a Detection Finding (2004, category Findings 2), activity Create.

``event(e, hostname=None)``: one of our events (docs/events.md) as
  - Process Activity (1007) Launch: ``execve``, the start of an image (proc.* is the new image,
    the actor its parent) and the exec attempt or failure (the actor is the caller, the process
    the program it asked for);
  - File System Activity (1001): ``open``/``openat``/``creat`` Open (14), ``unlink``/``unlinkat``
    Delete (4), ``rename``/``renameat``/``renameat2`` Rename (5, the new name is
    ``file_result``), ``link``/``linkat``/``symlink``/``symlinkat`` Create (1, the new name),
    ``chmod``/``fchmodat``/``fchmod`` Set Security (7: permission bits), ``mount`` Mount (12),
    ``umount2`` Unmount (13);
  - Network Activity (4001): ``connect``/``accept``/``accept4`` Open (1), Refuse (5) for
    ECONNREFUSED, Fail (4) for other errors; ``bind`` and ``listen`` as Other (99) with
    activity_name Bind/Listen, since OCSF 1.1 has no such activity (Listen, 7, came later). The
    local address of a bind or listen is the dst_endpoint (the responder), the only endpoint;
  - anything else: None.
Events are Informational (severity_id 1); status_id says whether the call succeeded, with the
errno name as status_code. Everything of the input that has no OCSF attribute is kept, under its
Falco name, in ``unmapped``; ``observables`` point at the hostnames, IPs, process, file and user
names of the result. Times are milliseconds since the epoch; the original RFC 3339 time (with its
nanoseconds) is ``metadata.original_time``. A missing or malformed time raises ValueError (ours
never are).
"""
import calendar
import errno
import functools
import os
import re
import socket
import uuid

from preload import __version__

VERSION = "1.1.0"
PRODUCT = {"name": "preload", "vendor_name": "preload", "version": __version__}

# Falco priority -> OCSF severity_id, as Falcosidekick maps them for OCSF (its Security Lake output)
_SEVERITY = {"debug": 1, "informational": 1, "info": 1, "notice": 2, "warning": 3, "error": 4,
             "critical": 5, "alert": 6, "emergency": 6}
_SEVERITY_NAMES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical",
                   6: "Fatal", 99: "Other"}
_UID_NAMESPACE = uuid.UUID("6f8c1c1e-5b0e-4d0e-9d6a-70726f6c6f61")  # ours: finding uids are uuid5 in it

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)\Z")

_FILE_TYPES = {0: "Unknown", 1: "Regular File", 2: "Folder", 7: "Symbolic Link"}
_AT_REMOVEDIR = 0x200
_PROTOCOL_NUM = {"tcp": 6, "udp": 17}
_DIRECTIONS = {0: "Unknown", 1: "Inbound", 2: "Outbound"}

# evt.type -> (activity_id, activity_name, fields naming the file, field naming the result)
_FILE_CALLS = {
    "open": (14, "Open", ("fd.name",), None), "openat": (14, "Open", ("fd.name",), None),
    "creat": (14, "Open", ("fd.name",), None),
    "unlink": (4, "Delete", ("fs.path.name", "evt.arg.path"), None),
    "unlinkat": (4, "Delete", ("fs.path.name", "evt.arg.name"), None),
    "rename": (5, "Rename", ("fs.path.source", "evt.arg.oldpath"), ("fs.path.target", "evt.arg.newpath")),
    "renameat": (5, "Rename", ("fs.path.source", "evt.arg.oldpath"), ("fs.path.target", "evt.arg.newpath")),
    "renameat2": (5, "Rename", ("fs.path.source", "evt.arg.oldpath"), ("fs.path.target", "evt.arg.newpath")),
    "link": (1, "Create", ("fs.path.target", "evt.arg.newpath"), None),
    "linkat": (1, "Create", ("fs.path.target", "evt.arg.newpath"), None),
    "symlink": (1, "Create", ("fs.path.target", "evt.arg.linkpath"), None),
    "symlinkat": (1, "Create", ("fs.path.target", "evt.arg.linkpath"), None),
    "chmod": (7, "Set Security", ("fs.path.name", "evt.arg.filename"), None),
    "fchmodat": (7, "Set Security", ("fs.path.name", "evt.arg.filename"), None),
    "fchmod": (7, "Set Security", ("fd.name",), None),
    "mount": (12, "Mount", ("evt.arg.dir",), None),
    "umount2": (13, "Unmount", ("evt.arg.name",), None),
}
_NET_CALLS = {"connect", "accept", "accept4", "bind", "listen"}


def epoch_ms(t):
    """RFC 3339 (any fraction, Z or an offset) -> milliseconds since the epoch."""
    m = _RFC3339.match(t) if isinstance(t, str) else None
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {t!r}")
    y, mo, d, h, mi, s = (int(x) for x in m.group(1, 2, 3, 4, 5, 6))
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    zone = m.group(8)
    if zone not in ("Z", "z"):
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        secs -= offset if zone[0] == "+" else -offset
    return secs * 1000 + int(((m.group(7) or "") + "000")[:3])


@functools.lru_cache(maxsize=1)
def _local_hostname():
    return socket.gethostname()


class _Reader:
    """Reads an event's fields and remembers which: the others become ``unmapped``."""

    def __init__(self, e):
        self.e, self.used = e, set()

    def __call__(self, key, default=None):
        self.used.add(key)
        v = self.e.get(key)
        return default if v is None else v

    def first(self, keys):
        """The first of ``keys`` with a value; the others name the same thing (all are used)."""
        found = None
        for k in keys:
            v = self(k)
            if found is None and v not in (None, ""):
                found = v
        return found

    def rest(self):
        return {k: v for k, v in self.e.items() if k not in self.used}


def _int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _file(path, type_id=0):
    path = path if isinstance(path, str) else ""
    f = {"name": os.path.basename(path.rstrip("/")) or path, "type_id": type_id,
         "type": _FILE_TYPES[type_id]}
    if path:
        f["path"] = path
        parent = os.path.dirname(path.rstrip("/"))
        if parent:
            f["parent_folder"] = parent
    return f


def _proc(pid, name, cmdline, exepath, uid=None, user=None, parent=None):
    p = {}
    if _int(pid) is not None:
        p["pid"] = pid
    if isinstance(name, str) and name:
        p["name"] = name
    if isinstance(cmdline, str):
        p["cmd_line"] = cmdline
    if isinstance(exepath, str) and exepath:
        p["file"] = _file(exepath, 1)
    u = {}
    if _int(uid) is not None:
        u["uid"] = str(uid)
    if isinstance(user, str) and user:
        u["name"] = user
    if u:
        p["user"] = u
    if parent:
        p["parent_process"] = parent
    return p


def _parent_of(r):
    """The parent process from proc.p* fields."""
    return _proc(r("proc.ppid"), r("proc.pname"), r("proc.pcmdline"), r("proc.pexepath"))


def _process_of(r):
    """The process from proc.* and user.* fields (events and alerts' output_fields alike)."""
    return _proc(r("proc.pid"), r("proc.name"), r("proc.cmdline"), r("proc.exepath"), r("user.uid"),
                 r("user.name"), _parent_of(r))


def _status(res):
    if not isinstance(res, str) or not res:
        return {"status_id": 0, "status": "Unknown"}
    if res == "SUCCESS":
        return {"status_id": 1, "status": "Success"}
    s = {"status_id": 2, "status": "Failure", "status_code": res}
    code = getattr(errno, res, None)
    if isinstance(code, int):
        s["status_detail"] = os.strerror(code)
    return s


def _classify(out, class_uid, class_name, category_uid, category_name, activity_id, activity_name):
    out.update({"class_uid": class_uid, "class_name": class_name,
                "category_uid": category_uid, "category_name": category_name,
                "activity_id": activity_id, "activity_name": activity_name,
                "type_uid": class_uid * 100 + activity_id, "type_name": f"{class_name}: {activity_name}"})
    return out


def _metadata(original_time, **more):
    m = {"version": VERSION, "product": dict(PRODUCT), "original_time": original_time}
    m.update({k: v for k, v in more.items() if v not in (None, "", [])})
    return m


def _device(hostname):
    d = {"type_id": 0, "type": "Unknown"}
    if isinstance(hostname, str) and hostname:
        d["hostname"] = hostname
    return d


# observables: where the result has a hostname, an IP, a process, file or user name
_OBSERVABLE_KEYS = {"hostname": (1, "Hostname"), "ip": (2, "IP Address")}
_OBSERVABLE_NAMES = {"process": (9, "Process Name"), "parent_process": (9, "Process Name"),
                     "file": (7, "File Name"), "file_result": (7, "File Name"), "user": (4, "User Name")}
_NOT_OBSERVED = {"metadata", "unmapped", "observables"}


def _observables(out):
    found, seen = [], set()

    def walk(obj, path, parent_key):
        for k, v in obj.items():
            if not path and k in _NOT_OBSERVED:
                continue
            name = f"{path}.{k}" if path else k
            if isinstance(v, dict):
                walk(v, name, k)
            elif isinstance(v, list):
                for item in v:
                    if isinstance(item, dict):
                        walk(item, name, k)
            elif isinstance(v, str) and v:
                kind = _OBSERVABLE_KEYS.get(k) or (_OBSERVABLE_NAMES.get(parent_key) if k == "name" else None)
                if kind and (name, v) not in seen:
                    seen.add((name, v))
                    found.append({"name": name, "type_id": kind[0], "type": kind[1], "value": v})

    walk(out, "", "")
    return found


def _finish(out, r):
    obs = _observables(out)
    if obs:
        out["observables"] = obs
    rest = r.rest()
    if rest:
        out["unmapped"] = rest
    return out


# alerts


def alert(a):
    """A Falco-format alert as an OCSF 1.1.0 Detection Finding (class 2004, activity Create)."""
    r = _Reader(a)
    t = r("time")
    ms = epoch_ms(t)
    rule = r("rule", "")
    rule = rule if isinstance(rule, str) else str(rule)
    output = r("output", "")
    tags = r("tags")
    tags = [str(x) for x in tags if x is not None] if isinstance(tags, list) else []
    hostname = r("hostname")
    priority = a.get("priority")  # kept in unmapped as well: Falco has more levels than OCSF
    severity_id = _SEVERITY.get(priority.lower(), 0) if isinstance(priority, str) else 0
    uid = a.get("uuid")  # Falcosidekick gives alerts one
    if isinstance(uid, str) and uid:
        r.used.add("uuid")
    else:  # the same alert maps to the same finding
        uid = str(uuid.uuid5(_UID_NAMESPACE, "\0".join([str(t), rule, str(hostname or ""), str(output)])))
    out = _classify({}, 2004, "Detection Finding", 2, "Findings", 1, "Create")
    out.update({
        "time": ms,
        "severity_id": severity_id, "severity": _SEVERITY_NAMES[severity_id],
        "status_id": 1, "status": "New",
        "message": output if isinstance(output, str) else str(output),
        "finding_info": {"title": rule, "uid": uid, "types": tags, "created_time": ms,
                         "analytic": {"name": rule, "type_id": 1, "type": "Rule"}},
        "metadata": _metadata(t),
    })
    if isinstance(hostname, str) and hostname:
        out["device"] = _device(hostname)
    fields = a.get("output_fields")
    if isinstance(fields, dict) and fields:
        evidence = _evidence(_Reader(fields))
        if evidence:
            out["evidences"] = [evidence]
    return _finish(out, r)


def _evidence(f):
    """What the alert's output_fields say about the process, file and connection."""
    ev = {}
    p = _process_of(f)
    if p:
        ev["process"] = p
    path = f.first(("fs.path.name", "fd.name"))
    if isinstance(path, str) and path.startswith("/") and f("fd.typechar") in (None, "f"):
        ev["file"] = _file(path)
    src = _endpoint(f("fd.cip"), f("fd.cport"))
    dst = _endpoint(f("fd.sip"), f("fd.sport"))
    if src:
        ev["src_endpoint"] = src
    if dst:
        ev["dst_endpoint"] = dst
    return ev


# events


def event(e, hostname=None):
    """One of our events as OCSF 1.1.0, or None for the types we do not map (see the module's doc).
    ``hostname`` is the device's (default: this machine's)."""
    typ = e.get("evt.type")
    if typ == "execve":
        make = _process_activity
    elif typ in _FILE_CALLS:
        make = _file_activity
    elif typ in _NET_CALLS:
        make = _network_activity
    else:
        return None
    r = _Reader(e)
    t = r("time")
    out = {"time": epoch_ms(t)}
    make(out, r, typ)
    stream, seq = r("preload.stream"), _int(r("preload.seq"))
    r.used.add("evt.type")
    out.update({"severity_id": 1, "severity": "Informational"})
    out.setdefault("status_id", 0)
    out["metadata"] = _metadata(t, event_code=typ, sequence=seq,
                                uid=f"{stream}/{seq}" if stream and seq is not None else None,
                                **out.pop("_metadata", {}))
    out["device"] = _device(hostname if hostname is not None else _local_hostname())
    return _finish(out, r)


def _process_activity(out, r, typ):
    _classify(out, 1007, "Process Activity", 1, "System Activity", 1, "Launch")
    target = r("evt.arg.filename")
    if r("evt.dir") == "<" and r("evt.res") == "SUCCESS" and target is None:
        # an image started: proc.* is the new image, its parent launched it
        proc = _process_of(r)
        out["process"] = proc
        parent = proc.get("parent_process")
        out["actor"] = {"process": dict(parent)} if parent else {}
        out.update(_status("SUCCESS"))
        return
    # an exec attempt (evt.dir >) or failure (<): proc.* is the caller, the target is what it runs
    caller = _process_of(r)
    argv = r("preload.argv")
    argv = [str(a) for a in argv] if isinstance(argv, list) else []
    api = r("preload.api")
    name = os.path.basename(argv[0]) if argv and argv[0] else os.path.basename(target or "")
    cmdline = " ".join([name] + argv[1:]) if name else None
    if api in ("posix_spawn", "posix_spawnp", "system", "popen"):
        parent, pid = caller, None  # a child of the caller, whose pid we do not know
    else:
        parent, pid = caller.get("parent_process"), caller.get("pid")  # the caller's pid, a new image
    out["process"] = _proc(pid, name, cmdline, target, parent=parent)
    if "user" in caller:  # exec keeps the real uid
        out["process"]["user"] = dict(caller["user"])
    out["actor"] = {"process": caller}
    out.update(_status(r("evt.res") if r("evt.dir") == "<" else None))


def _file_activity(out, r, typ):
    activity_id, activity_name, file_keys, result_keys = _FILE_CALLS[typ]
    _classify(out, 1001, "File System Activity", 1, "System Activity", activity_id, activity_name)
    path = r.first(file_keys)
    type_id = 0
    if typ in ("symlink", "symlinkat"):
        type_id = 7
    elif typ in ("mount", "umount2"):
        type_id = 2
    elif typ == "unlinkat" and _int(r("evt.arg.flags")) is not None and r("evt.arg.flags") & _AT_REMOVEDIR:
        type_id = 2
    elif typ in ("open", "openat", "creat") and "O_DIRECTORY" in str(r.e.get("evt.arg.flags", "")).split("|"):
        type_id = 2
    f = _file(path, type_id)
    if typ in ("open", "openat", "creat"):
        if isinstance(r("fd.filename"), str) and r("fd.filename"):
            f["name"] = r("fd.filename")
        if isinstance(r("fd.directory"), str) and r("fd.directory"):
            f["parent_folder"] = r("fd.directory")
    out["file"] = f
    if result_keys:
        result = r.first(result_keys)
        if result is not None:
            out["file_result"] = _file(result, type_id)
    out["actor"] = {"process": _process_of(r)}
    out.update(_status(r("evt.res")))


def _endpoint(ip, port, name=None):
    ep = {}
    if isinstance(ip, str) and ip:
        ep["ip"] = ip
    if _int(port) is not None and (ep or port):
        ep["port"] = port
    if isinstance(name, str) and name:
        ep["name"] = name
    return ep


def _network_activity(out, r, typ):
    res = r("evt.res")
    if typ in ("bind", "listen"):
        activity_id, activity_name, direction = 99, typ.capitalize(), 0
    elif res in (None, "SUCCESS", "EINPROGRESS"):  # a non-blocking connect is on its way
        activity_id, activity_name, direction = 1, "Open", 2 if typ == "connect" else 1
    elif res == "ECONNREFUSED":
        activity_id, activity_name, direction = 5, "Refuse", 2 if typ == "connect" else 1
    else:
        activity_id, activity_name, direction = 4, "Fail", 2 if typ == "connect" else 1
    _classify(out, 4001, "Network Activity", 4, "Network Activity", activity_id, activity_name)
    ftype = r("fd.type")
    if ftype == "unix" or r("fd.typechar") == "u":
        # a unix socket: its path (or @name) is the only address there is, the responder's
        dst, src = _endpoint(None, None, r("fd.name")), {}
    elif typ in ("bind", "listen"):
        dst, src = _endpoint(r("fd.lip"), r("fd.lport")), {}
        r("fd.sip"), r("fd.sport"), r("fd.name")  # the same address again
    else:
        src, dst = _endpoint(r("fd.cip"), r("fd.cport")), _endpoint(r("fd.sip"), r("fd.sport"))
        r("fd.lip"), r("fd.lport"), r("fd.rip"), r("fd.rport"), r("fd.name")  # the same, by side
    if src:
        out["src_endpoint"] = src
    if dst:
        out["dst_endpoint"] = dst
    conn = {"direction_id": direction, "direction": _DIRECTIONS[direction]}
    proto = r("fd.l4proto")
    if isinstance(proto, str) and proto:
        conn["protocol_name"] = proto
        if proto in _PROTOCOL_NUM:
            conn["protocol_num"] = _PROTOCOL_NUM[proto]
    if ftype in ("ipv4", "ipv6"):
        conn["protocol_ver_id"] = 4 if ftype == "ipv4" else 6
    out["connection_info"] = conn
    out["actor"] = {"process": _process_of(r)}
    out["_metadata"] = {"profiles": ["host"]}  # actor and device, in network classes, come with it
    status = _status(res)
    if res == "EINPROGRESS":
        status = {"status_id": 0, "status": "Unknown", "status_code": res}
    out.update(status)
