"""From decoded records to Falco-named events (docs/events.md), with a process table for the
parent and ancestor fields. Records are untrusted; nothing here trusts a value beyond its type."""
import errno
import mmap
import os
import socket
import time
from collections import OrderedDict

_OPEN_FLAGS = [(getattr(os, n), n) for n in (
    "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_DSYNC", "O_DIRECT",
    "O_DIRECTORY", "O_NOFOLLOW", "O_NOATIME", "O_CLOEXEC", "O_PATH") if getattr(os, n, 0)]
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_O_SYNC = getattr(os, "O_SYNC", 0)
_ACCMODE = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
_OPEN_TYPE = {"open": "open", "open64": "open", "__open_2": "open", "__open64_2": "open",
              "creat": "creat", "creat64": "creat"}  # everything else goes through openat
_L4 = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp", socket.SOCK_RAW: "raw"}
_FAMILY = {socket.AF_INET: ("4", "ipv4"), socket.AF_INET6: ("6", "ipv6"), socket.AF_UNIX: ("u", "unix")}
_CLIENT_IS_LOCAL = {"connect", "dup", "dup2", "dup3"}  # a socket made stdin/stdout: as a reverse shell's

# CALL records: api -> (evt.type, names of the raw arguments, names of the strings). Names are
# Falco's evt.arg.* ones; fs.path.* (Falco's uniform path fields) are added where there are paths.
_CALLS = {
    "socket": (("domain", "type", "proto"), ()),
    "setuid": (("uid",), ()), "setgid": (("gid",), ()),
    "setreuid": (("ruid", "euid"), ()), "setregid": (("rgid", "egid"), ()),
    "setresuid": (("ruid", "euid", "suid"), ()), "setresgid": (("rgid", "egid", "sgid"), ()),
    "setgroups": (("size",), ()), "setfsuid": (("uid",), ()), "setfsgid": (("gid",), ()),
    "ptrace": (("request", "pid", "addr", "data"), ()),
    "memfd_create": ((None, "flags"), ("name",)),
    "mount": ((None, None, None, "flags"), ("dev", "dir", "type")),
    "umount2": ((None, "flags"), ("name",)),
    "unshare": (("flags",), ()),
    "setns": (("fd", "nstype"), ("fd.name",)),
    "init_module": ((None, "length"), ("uargs",)),
    "finit_module": (("fd", None, "flags"), ("fd.name", "uargs")),
    "io_uring_setup": (("entries",), ()),
    "unlink": ((), ("path",)), "unlinkat": (("dirfd", None, "flags"), ("name",)), "rmdir": ((), ("path",)),
    "rename": ((), ("oldpath", "newpath")), "renameat": (("olddirfd", None, "newdirfd"), ("oldpath", "newpath")),
    "renameat2": (("olddirfd", None, "newdirfd", None, "flags"), ("oldpath", "newpath")),
    "chmod": ((None, "mode"), ("filename",)), "fchmod": (("fd", "mode"), ("fd.name",)),
    "fchmodat": (("dirfd", None, "mode"), ("filename",)),
    "link": ((), ("oldpath", "newpath")), "linkat": (("olddir", None, "newdir", None, "flags"), ("oldpath", "newpath")),
    "symlink": ((), ("target", "linkpath")), "symlinkat": ((None, "linkdirfd"), ("target", "linkpath")),
    "chown": ((None, "uid", "gid"), ("path",)), "lchown": ((None, "uid", "gid"), ("path",)),
    "fchown": (("fd", "uid", "gid"), ("fd.name",)),
    "fchownat": (("dirfd", None, "uid", "gid", "flags"), ("pathname",)),
    "truncate": ((None, "length"), ("path",)),
    "mkdir": ((None, "mode"), ("path",)), "mkdirat": (("dirfd", None, "mode"), ("path",)),
    "mknod": ((None, "mode", "dev"), ("path",)), "mknodat": (("dirfd", None, "mode", "dev"), ("path",)),
    "chroot": ((), ("path",)), "pivot_root": ((), ("new_root", "put_old")),
    "capset": ((None, "cap_effective", "cap_permitted", "cap_inheritable"), ()),
    "dlopen": (("flags",), ("name", "filename")),
    "mmap": (("addr", "length", "prot", "flags", "fd", "offset"), ()),
    "mprotect": (("addr", "length", "prot"), ()),
    "foreign_abi": (("nr", "arch"), ()),
    "hook_removed": ((), ("filename",)),
}
# CALL records that are the agent's own observations, not a system call of that name
_PRELOAD_CALLS = {"foreign_abi": "preload.foreign_syscall", "hook_removed": "preload.hook_removed",
                  "dlopen": "preload.dlopen", "mmap": "preload.exec_memory",
                  "mprotect": "preload.exec_memory"}
_PATH_FIELDS = {"path": "fs.path.name", "name": "fs.path.name", "filename": "fs.path.name",
                "pathname": "fs.path.name", "oldpath": "fs.path.source", "newpath": "fs.path.target",
                "target": "fs.path.source", "linkpath": "fs.path.target"}
_PATH_CALLS = {"unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2", "chmod", "fchmodat", "link",
               "linkat", "symlink", "symlinkat", "chown", "lchown", "fchownat", "truncate", "mkdir",
               "mkdirat", "mknod", "mknodat"}
_PROT = [(getattr(mmap, n), n) for n in ("PROT_READ", "PROT_WRITE", "PROT_EXEC")]
_MAP = [(getattr(mmap, n), n) for n in ("MAP_SHARED", "MAP_PRIVATE", "MAP_ANONYMOUS") if hasattr(mmap, n)]
_DUPS = {"dup", "dup2", "dup3"}
_PTRACE_REQUESTS = {0: "PTRACE_TRACEME", 16: "PTRACE_ATTACH", 17: "PTRACE_DETACH", 0x4206: "PTRACE_SEIZE",
                    4: "PTRACE_POKETEXT", 5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSR", 13: "PTRACE_SETREGS"}
_AF = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6", socket.AF_UNIX: "AF_UNIX",
       getattr(socket, "AF_PACKET", 17): "AF_PACKET", getattr(socket, "AF_NETLINK", 16): "AF_NETLINK"}
_BLIND_BINARY = {"no_variant": "dynamic, another libc", "secure": "set-id or file capabilities",
                 "foreign": "foreign"}
_BLIND_WHY = {"no_tracer": "the tracer could not be reached",
              "refused": "the tracer could not attach to it",
              "filter": "the seccomp filter could not be installed",
              "no_variant": "no build of the hook for its libc",
              "secure": "set-id or file capabilities: the loader ignores LD_PRELOAD",
              "foreign": "built for another machine or word size (a 32-bit program): its calls cannot be "
                         "read (under the tracer they go through, and what it starts is traced)"}


def res_name(res):
    """Falco's evt.res: SUCCESS, or the errno name."""
    if res >= 0:
        return "SUCCESS"
    return errno.errorcode.get(-res, f"E{-res}")


def _bits(value, names):
    return "|".join(n for bit, n in names if value & bit)


def open_flags(flags):
    if _O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE:
        names = ["O_TMPFILE"]
        flags &= ~_O_TMPFILE
    else:
        names = []
    names.insert(0, _ACCMODE.get(flags & os.O_ACCMODE, "O_RDONLY"))
    if _O_SYNC and flags & _O_SYNC == _O_SYNC:
        names.append("O_SYNC")
        flags &= ~_O_SYNC
    names += [n for bit, n in _OPEN_FLAGS if flags & bit]
    return "|".join(names)


class _Clock:
    """ns since the epoch to RFC 3339; strftime once per second, not per event."""

    def __init__(self):
        self._sec, self._text = None, ""

    def __call__(self, ns):
        sec, frac = divmod(int(ns), 1_000_000_000)
        if sec != self._sec:
            self._sec, self._text = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._text}.{frac:09d}Z"


rfc3339 = _Clock()


class Proc:
    __slots__ = ("pid", "ppid", "name", "exepath", "cmdline", "args", "cwd", "uid", "attach", "start_ns")

    def __init__(self, pid, ppid, exepath="", argv=(), cwd="", uid=None, attach="", start_ns=0):
        self.pid, self.ppid, self.exepath, self.cwd, self.uid, self.attach = pid, ppid, exepath, cwd, uid, attach
        self.start_ns = start_ns
        argv = list(argv)
        first = argv[0] if argv else exepath
        # Falco's proc.name is the program name without path; a login shell's "-sh" is "sh"
        self.name = os.path.basename(first).lstrip("-") or os.path.basename(exepath)
        self.args = " ".join(argv[1:])
        self.cmdline = f"{self.name} {self.args}" if self.args else self.name


class ProcessTable:
    """pid → the latest process image seen; bounded, oldest forgotten first."""

    def __init__(self, limit=65536, proc_root="/proc"):
        self._procs = OrderedDict()
        self._limit = limit
        self._proc_root = proc_root

    def started(self, rec):
        p = Proc(rec["pid"], rec["ppid"], rec["exe"], rec["argv"], rec["cwd"], rec["uid"], rec["attach"],
                 rec["time_ns"])
        self._put(p)
        return p

    def known(self, pid):
        """The process if we have it, without asking /proc."""
        return self._procs.get(pid)

    def _put(self, p):
        self._procs[p.pid] = p
        self._procs.move_to_end(p.pid)
        if len(self._procs) > self._limit:
            self._procs.popitem(last=False)

    def get(self, pid, ppid=0):
        """The process; a pid we never saw start is a forked child (same image as its parent) or a
        process that started before the agent: ask /proc, else copy the parent."""
        p = self._procs.get(pid)
        if p is not None and (p.exepath or not ppid):
            return p
        # unknown, or known only as somebody's parent: the process's own record says who its
        # parent is (a subshell that exited before we could look it up in /proc)
        p = self._from_proc(pid) or self._from_parent(pid, ppid)
        self._put(p)
        return p

    def _from_parent(self, pid, ppid):
        parent = self._procs.get(ppid)
        if parent is None:
            return Proc(pid, ppid)
        q = Proc(pid, ppid, parent.exepath, (), parent.cwd, parent.uid, parent.attach)
        q.name, q.args, q.cmdline = parent.name, parent.args, parent.cmdline
        return q

    def _from_proc(self, pid):
        base = f"{self._proc_root}/{int(pid)}"
        try:
            with open(f"{base}/cmdline", "rb") as f:
                argv = [a.decode("utf-8", "backslashreplace") for a in f.read().split(b"\0") if a]
            with open(f"{base}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            exe = os.fsencode(os.readlink(f"{base}/exe")).decode("utf-8", "backslashreplace")
            cwd = os.fsencode(os.readlink(f"{base}/cwd")).decode("utf-8", "backslashreplace")
            uid = os.stat(base).st_uid
        except (OSError, ValueError, IndexError):
            return None
        return Proc(pid, ppid, exe, argv, cwd, uid, "")

    def ancestors(self, pid, limit=16):
        out, seen = [], {pid}
        p = self._procs.get(pid)
        while p is not None and len(out) < limit and p.ppid not in seen:
            seen.add(p.ppid)
            p = self._procs.get(p.ppid)
            if p is not None:
                out.append(p)
        return out


class Enricher:
    """Turns decoded records into event dicts; keeps what later records refer back to."""

    def __init__(self, table=None, classify=None, supervisor=None):
        self.procs = table or ProcessTable()
        self._described = set()  # pids the log already has a process event for
        self._supervisor = supervisor
        self._paths = OrderedDict()  # (stream, path_hash) -> (path, res) for repeat counts
        self._classify = classify  # path -> elf.Target, for exec targets the hook cannot enter

    def _common(self, rec, proc, evt_type):
        parent = self.procs.get(proc.ppid) if proc.ppid else None
        e = {
            "time": rfc3339(rec["time_ns"]),
            "evt.type": evt_type,
            "evt.source": rec["source"],
            "proc.pid": proc.pid,
            "proc.ppid": proc.ppid,
            "proc.name": proc.name,
            "proc.exepath": proc.exepath,
            "proc.cmdline": proc.cmdline,
            "proc.args": proc.args,
            "proc.cwd": proc.cwd,
            "proc.pname": parent.name if parent else "",
            "proc.pexepath": parent.exepath if parent else "",
            "proc.pcmdline": parent.cmdline if parent else "",
            "user.uid": proc.uid,
            "preload.stream": rec["stream"],
            "preload.seq": rec["seq"],
        }
        if rec.get("truncated"):
            e["preload.truncated"] = True
        return e

    def events(self, rec):
        """A list of events for one record (usually one)."""
        kind = rec["kind"]
        if kind == "start":
            out = self._forked_ancestors(rec)
            proc = self.procs.started(rec)
            self._described.add(proc.pid)
            e = self._common(rec, proc, "execve")
            e.update({"evt.dir": "<", "evt.res": "SUCCESS", "preload.argv": rec["argv"],
                      "preload.attach": rec["attach"]})
            out.append(e)
            return out
        proc = self.procs.get(rec["pid"], rec["ppid"])
        handler = getattr(self, "_" + kind)
        return handler(rec, proc)

    def _forked_ancestors(self, rec, limit=8):
        """Processes between this one and the last described ancestor that forked but never exec'd
        (a shell's subshell): no record of their own, so a clone event from /proc keeps the tree
        whole."""
        chain, pid = [], rec["ppid"]
        while pid > 1 and pid not in self._described and pid != self._supervisor and len(chain) < limit:
            p = self.procs.get(pid)
            if not p.exepath:
                break
            self._described.add(pid)
            chain.append(p)
            pid = p.ppid
        out = []
        for p in reversed(chain):
            e = self._common(rec, p, "clone")
            e.update({"evt.dir": "<", "evt.res": "SUCCESS", "evt.source": "daemon",
                      "preload.attach": "preload" if _maps_hook(p.pid) else "none",
                      "preload.stream": "", "preload.seq": 0})
            out.append(e)
        return out

    def _exec(self, rec, proc):
        e = self._common(rec, proc, "execve")
        failed = rec["phase"] == "failed"
        e.update({"evt.dir": "<" if failed else ">", "evt.arg.filename": rec["path"],
                  "preload.argv": rec["argv"], "preload.api": rec["api"]})
        if failed:
            e["evt.res"] = res_name(rec["res"])
            return [e]
        out = [e]
        if rec["source"] != "preload" or rec["handoff"]:  # the tracer has it
            return out
        target = self._classify(rec["path"]) if self._classify and rec["path"].startswith("/") else None
        # a program for the tracer that runs without one; not a 32-bit one: the hook reports those
        if target is not None and target.attach == "ptrace" and target.kind != "foreign":
            b = self._common(rec, proc, "preload.blindspot")
            b.update({"evt.arg.filename": rec["path"], "preload.binary": target.kind,
                      "preload.reason": f"{target.kind} program: libc hooks cannot see inside it "
                                        f"({target.reason})"})
            out.append(b)
        return out

    def _open(self, rec, proc):
        e = self._common(rec, proc, _OPEN_TYPE.get(rec["api"], "openat"))
        e["evt.dir"] = "<"  # every record but an exec attempt describes a call that has returned
        path, flags = rec["path"], rec["flags"]
        acc = flags & os.O_ACCMODE
        directory, _, filename = path.rpartition("/")
        e.update({
            "evt.res": res_name(rec["res"]),
            "fd.num": rec["res"] if rec["res"] >= 0 else -1,
            "fd.name": path,
            "fd.directory": directory or "/",
            "fd.filename": filename,
            "fd.typechar": "f",
            "evt.arg.flags": open_flags(flags),
            "evt.is_open_read": acc in (os.O_RDONLY, os.O_RDWR),
            "evt.is_open_write": acc in (os.O_WRONLY, os.O_RDWR),
            "preload.api": rec["api"],
        })
        if flags & os.O_CREAT or (_O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE):
            e["evt.arg.mode"] = rec["mode"]
        if rec["repeatable"]:
            self._paths[(rec["stream"], rec["path_hash"])] = (path, e["evt.res"])
            if len(self._paths) > 262144:
                self._paths.popitem(last=False)
        return [e]

    def _counts(self, rec, proc):
        out = []
        for path_hash, count in rec["counts"]:
            path, res = self._paths.get((rec["stream"], path_hash), (f"<unknown path {path_hash}>", ""))
            e = self._common(rec, proc, "preload.repeats")
            e.update({"fd.name": path, "evt.count": count, "evt.res": res})
            out.append(e)
        return out

    def _net(self, rec, proc):
        api = rec["api"]
        e = self._common(rec, proc, api)
        e["evt.dir"] = "<"
        typechar, ftype = _FAMILY.get(rec["family"], ("", ""))
        res = rec["res"]
        e.update({"evt.res": res_name(res), "fd.num": res if api.startswith("accept") and res >= 0 else rec["fd"],
                  "fd.typechar": typechar, "fd.type": ftype})
        if api in _DUPS:  # fd.* are the socket's; the new fd is the result
            e["evt.rawres"] = res
        if rec["family"] == socket.AF_UNIX:
            e["fd.l4proto"] = ""
            e["fd.name"] = rec["rpath"] or rec["lpath"]
            return [e]
        e["fd.l4proto"] = _L4.get(rec["socktype"], "")
        lip, lport, rip, rport = rec["laddr"], rec["lport"], rec["raddr"], rec["rport"]
        e.update({"fd.lip": lip, "fd.lport": lport})
        if api in ("bind", "listen"):
            e.update({"fd.sip": lip, "fd.sport": lport, "fd.name": f"{lip}:{lport}" if lip else ""})
            return [e]
        e.update({"fd.rip": rip, "fd.rport": rport})
        if api in _CLIENT_IS_LOCAL:
            cip, cport, sip, sport = lip, lport, rip, rport
        else:
            cip, cport, sip, sport = rip, rport, lip, lport
        e.update({"fd.cip": cip, "fd.cport": cport, "fd.sip": sip, "fd.sport": sport,
                  "fd.name": f"{cip}:{cport}->{sip}:{sport}"})
        return [e]

    def _call(self, rec, proc):
        api = rec["api"]
        arg_names, str_names = _CALLS.get(api, ((), ()))
        evt_type = _PRELOAD_CALLS.get(api, api)
        e = self._common(rec, proc, evt_type)
        e.update({"evt.dir": "<", "evt.res": res_name(rec["res"])})
        for name, value in zip(arg_names, rec["args"]):
            if name:
                e[f"evt.arg.{name}"] = value
        for name, value in zip(str_names, rec["strings"]):
            e[name if "." in name else f"evt.arg.{name}"] = value
            if api in _PATH_CALLS and name in _PATH_FIELDS:
                e[_PATH_FIELDS[name]] = value
        if api == "socket":
            domain, stype = rec["args"][0], rec["args"][1] & 0xF
            e.update({"evt.arg.domain": _AF.get(domain, str(domain)), "fd.num": rec["res"],
                      "fd.l4proto": _L4.get(stype, "")})
        elif api == "ptrace":
            e["evt.arg.request"] = _PTRACE_REQUESTS.get(rec["args"][0], str(rec["args"][0]))
        elif api == "hook_removed":
            e["preload.argv"] = " ".join(rec["strings"][1:])
            e["preload.reason"] = "exec with the hook taken out of LD_PRELOAD: put back"
        elif api == "dlopen":  # recorded before the loader runs: no result
            e["evt.dir"] = ">"
            del e["evt.res"]
            fileless = e.get("evt.arg.filename", "").startswith("/memfd:")
            e["preload.reason"] = ("a library loaded from memory (fileless)" if fileless
                                   else "a library loaded at run time")
        elif evt_type == "preload.exec_memory":
            e["preload.api"] = api
            e["evt.arg.prot"] = _bits(rec["args"][2], _PROT) or "PROT_NONE"
            if api == "mmap":
                e["evt.arg.flags"] = _bits(rec["args"][3], _MAP)
            e["preload.reason"] = ("memory made executable without a file behind it, or writable and "
                                   "executable at once: code generated at run time (a JIT), or injected "
                                   "(the first few of a process are reported)")
        elif api == "io_uring_setup":
            e["preload.reason"] = ("io_uring: the file and network operations submitted through it "
                                   "are not seen")
        elif api == "foreign_abi":
            e["preload.reason"] = "a system call of another ABI (int 0x80 or x32): refused with ENOSYS"
        return [e]

    def _blind(self, rec, proc):
        e = self._common(rec, proc, "preload.blindspot")
        why = _BLIND_WHY.get(rec["reason"], rec["reason"])
        err = f": {os.strerror(rec['err'])}" if rec["err"] > 0 else ""
        e.update({"evt.arg.filename": rec["path"],
                  "preload.binary": _BLIND_BINARY.get(rec["reason"], "static or Go"),
                  "preload.reason": f"runs unobserved: {why}{err}"})
        return [e]

    def _end(self, rec, proc):
        e = self._common(rec, proc, "preload.end")
        e.update({"preload.failed_sends": rec["failed_sends"], "preload.end_reason": rec["reason"]})
        return [e]


def _maps_hook(pid):
    try:
        with open(f"/proc/{int(pid)}/maps", "rb") as f:
            maps = f.read()
        return b"/libpreload.so" in maps or b"/libpreload-musl.so" in maps
    except OSError:
        return False


def agent_event(evt_type, **fields):
    """An event of the agent itself (daemon life, blind spots found by the supervisor)."""
    e = {"time": rfc3339(time.time_ns()), "evt.type": evt_type, "evt.source": "daemon"}
    e.update(fields)
    return e
