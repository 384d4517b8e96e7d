"""Decoding of the records that the hook sends (layout: csrc/preload_wire.h, through cffi).

Records come from the application side and are untrusted: preload_check() validates sizes, counts
and string termination in C before any field is read here. The field layouts are taken from the
cdef once, at import, as struct formats: reading a record is then one unpack per struct instead of
a cffi call per field (the daemon decodes tens of thousands of records a second)."""
import socket
import struct

from preload._native import ffi, lib

VERSION = lib.PRELOAD_WIRE_VERSION
MAX_RECORD = lib.PRELOAD_MAX_RECORD

_CODES = {"uint8_t": "B", "uint16_t": "H", "int32_t": "i", "uint32_t": "I", "uint64_t": "Q",
          "int64_t": "q"}


class _Layout:
    """A struct.Struct with the C struct's fields at the C struct's offsets; byte arrays come out
    as bytes, other arrays as tuples."""

    def __init__(self, ctype):
        fmt, self.fields, at = "=", [], 0  # native order, offsets spelled out as padding
        for name, field in ffi.typeof(ctype).fields:
            fmt += "x" * (field.offset - at)
            t = field.type
            if t.kind == "array" and t.item.cname == "uint8_t":
                fmt += f"{t.length}s"
                self.fields.append((name, 0))
            elif t.kind == "array":
                fmt += f"{t.length}{_CODES[t.item.cname]}"
                self.fields.append((name, t.length))
            else:
                fmt += _CODES[t.cname]
                self.fields.append((name, 0))
            at = field.offset + ffi.sizeof(t)
        fmt += "x" * (ffi.sizeof(ctype) - at)
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size
        self.flat = all(n == 0 for _, n in self.fields)
        self.names = [name for name, _ in self.fields]

    def unpack(self, buf, off=0):
        values = self.struct.unpack_from(buf, off)
        if self.flat:
            return dict(zip(self.names, values))
        out, i = {}, 0
        for name, n in self.fields:
            out[name] = values[i:i + n] if n else values[i]
            i += n or 1
        return out


def _names(prefix, rename=None):
    out = {}
    for name in dir(lib):
        if name.startswith(prefix) and not name.endswith("_MAX"):  # bounds, not names
            short = name[len(prefix):].lower()
            out[getattr(lib, name)] = (rename or {}).get(short, short)
    return out


ERRORS = _names("PRELOAD_ERR_")
KINDS = _names("PRELOAD_REC_")
SOURCES = {lib.PRELOAD_SRC_HOOK: "preload", lib.PRELOAD_SRC_PTRACE: "ptrace"}
APIS = _names("PRELOAD_API_", {"open_2": "__open_2", "open64_2": "__open64_2",
                                "openat_2": "__openat_2", "openat64_2": "__openat64_2"})
PHASES = {lib.PRELOAD_EXEC_ATTEMPT: "attempt", lib.PRELOAD_EXEC_FAILED: "failed"}
END_REASONS = {lib.PRELOAD_END_EXIT: "exit", lib.PRELOAD_END_SPOOL: "spool"}

_HDR = _Layout("struct preload_hdr")
_BODY = {kind: _Layout(f"struct preload_{kind}") for kind in KINDS.values()}
_COUNT = _Layout("struct preload_count").struct
_F_TRUNCATED = lib.PRELOAD_F_TRUNCATED
_F_HANDOFF = lib.PRELOAD_F_HANDOFF
BLIND_REASONS = _names("PRELOAD_BLIND_")


class WireError(ValueError):
    """A record that failed validation; .reason is a short word for counting."""

    def __init__(self, reason):
        super().__init__(f"invalid record: {reason}")
        self.reason = reason


def _strings(buf, off, n):
    # Linux paths are bytes; the log must stay valid UTF-8 for every consumer: bytes that are not
    # UTF-8 are shown as \xNN
    return [p.decode("utf-8", "backslashreplace") for p in buf[off:].split(b"\0", n)[:n]]


def _ip(family, raw):
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return None


def decode(buf):
    """One record (bytes) to a dict of plain values; raises WireError."""
    rc = lib.preload_check(buf, len(buf))
    if rc:
        raise WireError(ERRORS.get(rc, str(rc)))
    h = _HDR.unpack(buf)
    kind = KINDS[h["kind"]]
    layout = _BODY[kind]
    b = layout.unpack(buf, _HDR.size)
    at, nstr = _HDR.size + layout.size, h["nstr"]
    rec = {
        "kind": kind,
        "source": SOURCES.get(h["source"], "unknown"),
        "pid": h["pid"],
        "ppid": h["ppid"],
        "seq": h["seq"],
        "stream": f"{h['stream']:016x}",
        "time_ns": h["time_ns"],
        "truncated": bool(h["flags"] & _F_TRUNCATED),
    }
    if kind == "start":
        s = _strings(buf, at, nstr)
        rec.update(uid=b["uid"], euid=b["euid"], gid=b["gid"], egid=b["egid"],
                   attach=SOURCES.get(b["attach"], "unknown"), exe=s[0], cwd=s[1], argv=s[2:])
    elif kind == "exec":
        s = _strings(buf, at, nstr)
        rec.update(api=APIS.get(b["api"], "unknown"), phase=PHASES.get(b["phase"], "unknown"),
                   res=b["res"], fd=b["fd"], path=s[0], argv=s[1:], handoff=bool(h["flags"] & _F_HANDOFF))
    elif kind == "open":
        rec.update(api=APIS.get(b["api"], "unknown"), flags=b["flags"], mode=b["mode"], res=b["res"],
                   path_hash=f"{b['path_hash']:016x}", repeatable=bool(b["repeatable"]),
                   path=_strings(buf, at, 1)[0])
    elif kind == "net":
        s = _strings(buf, at, nstr)
        family = b["family"]
        rec.update(api=APIS.get(b["api"], "unknown"), family=family, fd=b["fd"], res=b["res"],
                   socktype=b["socktype"], protocol=b["protocol"],
                   laddr=_ip(family, b["laddr"]), lport=b["lport"],
                   raddr=_ip(family, b["raddr"]), rport=b["rport"], lpath=s[0], rpath=s[1])
    elif kind == "counts":
        rec["counts"] = [(f"{path_hash:016x}", count)
                         for path_hash, count in _COUNT.iter_unpack(buf[at:at + b["n"] * _COUNT.size])]
    elif kind == "end":
        rec.update(reason=END_REASONS.get(b["reason"], "unknown"), failed_sends=b["failed_sends"])
    elif kind == "call":
        rec.update(api=APIS.get(b["api"], "unknown"), res=b["res"], args=b["args"],
                   strings=_strings(buf, at, nstr))
    elif kind == "blind":
        rec.update(reason=BLIND_REASONS.get(b["reason"], "unknown"), err=b["err"],
                   path=_strings(buf, at, 1)[0])
    return rec
