"""Decoding of the records that the hook sends (layout: csrc/preload_wire.h, through cffi).

Records come from the application side and are untrusted: preload_check() validates sizes, counts
and string termination in C before any field is read here."""
import socket

from preload._native import ffi, lib

VERSION = lib.PRELOAD_WIRE_VERSION
MAX_RECORD = lib.PRELOAD_MAX_RECORD

_HDR = ffi.sizeof("struct preload_hdr")


def _names(prefix, rename=None):
    out = {}
    for name in dir(lib):
        if name.startswith(prefix):
            short = name[len(prefix):].lower()
            out[getattr(lib, name)] = (rename or {}).get(short, short)
    return out


ERRORS = _names("PRELOAD_ERR_")
KINDS = _names("PRELOAD_REC_")
KINDS.pop(lib.PRELOAD_REC_KIND_MAX, None)
KINDS[lib.PRELOAD_REC_END] = "end"
SOURCES = {lib.PRELOAD_SRC_HOOK: "preload", lib.PRELOAD_SRC_PTRACE: "ptrace"}
APIS = _names("PRELOAD_API_", {"open_2": "__open_2", "open64_2": "__open64_2",
                                "openat_2": "__openat_2", "openat64_2": "__openat64_2"})
PHASES = {lib.PRELOAD_EXEC_ATTEMPT: "attempt", lib.PRELOAD_EXEC_FAILED: "failed"}
END_REASONS = {lib.PRELOAD_END_EXIT: "exit", lib.PRELOAD_END_SPOOL: "spool"}


class WireError(ValueError):
    """A record that failed validation; .reason is a short word for counting."""

    def __init__(self, reason):
        super().__init__(f"invalid record: {reason}")
        self.reason = reason


def _strings(buf, off, n):
    # Linux paths are bytes; the log must stay valid UTF-8 for every consumer: bytes that are not
    # UTF-8 are shown as \xNN
    parts = bytes(buf[off:]).split(b"\0")
    return [p.decode("utf-8", "backslashreplace") for p in parts[:n]]


def _ip(family, raw):
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, bytes(raw[0:4]))
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, bytes(raw))
    return None


def decode(buf):
    """One record (bytes) to a dict of plain values; raises WireError."""
    rc = lib.preload_check(buf, len(buf))
    if rc:
        raise WireError(ERRORS.get(rc, str(rc)))
    c = ffi.from_buffer(buf)
    h = ffi.cast("struct preload_hdr *", c)
    kind = KINDS[h.kind]
    rec = {
        "kind": kind,
        "source": SOURCES.get(h.source, "unknown"),
        "pid": h.pid,
        "ppid": h.ppid,
        "seq": h.seq,
        "stream": f"{h.stream:016x}",
        "time_ns": h.time_ns,
        "truncated": bool(h.flags & lib.PRELOAD_F_TRUNCATED),
    }
    nstr = h.nstr
    body = c + _HDR
    if kind == "start":
        b = ffi.cast("struct preload_start *", body)
        s = _strings(buf, _HDR + ffi.sizeof(b[0]), nstr)
        rec.update(uid=b.uid, euid=b.euid, gid=b.gid, egid=b.egid,
                   attach=SOURCES.get(b.attach, "unknown"), exe=s[0], cwd=s[1], argv=s[2:])
    elif kind == "exec":
        b = ffi.cast("struct preload_exec *", body)
        s = _strings(buf, _HDR + ffi.sizeof(b[0]), nstr)
        rec.update(api=APIS.get(b.api, "unknown"), phase=PHASES.get(b.phase, "unknown"),
                   res=b.res, fd=b.fd, path=s[0], argv=s[1:])
    elif kind == "open":
        b = ffi.cast("struct preload_open *", body)
        s = _strings(buf, _HDR + ffi.sizeof(b[0]), nstr)
        rec.update(api=APIS.get(b.api, "unknown"), flags=b.flags, mode=b.mode, res=b.res,
                   path_hash=f"{b.path_hash:016x}", repeatable=bool(b.repeatable), path=s[0])
    elif kind == "net":
        b = ffi.cast("struct preload_net *", body)
        s = _strings(buf, _HDR + ffi.sizeof(b[0]), nstr)
        rec.update(api=APIS.get(b.api, "unknown"), family=b.family, fd=b.fd, res=b.res,
                   socktype=b.socktype, protocol=b.protocol,
                   laddr=_ip(b.family, b.laddr), lport=b.lport,
                   raddr=_ip(b.family, b.raddr), rport=b.rport, lpath=s[0], rpath=s[1])
    elif kind == "counts":
        b = ffi.cast("struct preload_counts *", body)
        entries = ffi.cast("struct preload_count *", body + ffi.sizeof(b[0]))
        rec["counts"] = [(f"{entries[i].path_hash:016x}", entries[i].count) for i in range(b.n)]
    elif kind == "end":
        b = ffi.cast("struct preload_end *", body)
        rec.update(reason=END_REASONS.get(b.reason, "unknown"), failed_sends=b.failed_sends)
    return rec
