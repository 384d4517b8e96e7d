"""Classify executables: can the LD_PRELOAD hook see them, or do they need the ptrace tracer?

The hook only works for programs that the dynamic loader starts and that call libc: dynamic ELF
(glibc or musl, each with the hook built against it). Static and static-pie binaries have no
loader, and Go makes raw syscalls even when it is dynamically linked, so those need the tracer.
Scripts take the decision of their interpreter. This runs on every exec in the daemon, so it
reads only the ELF and program headers (and the section-name table), and caches the result per
file version.

Paths come from untrusted containers: classify() never raises for bad input.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shutil
import stat
import sysconfig
from dataclasses import dataclass

from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

KINDS = ("dynamic-glibc", "dynamic-musl", "dynamic-other", "static", "static-pie", "go", "script",
         "foreign", "not-elf", "missing", "not-executable")

# The kernel reads at most this much of a "#!" line (BINPRM_BUF_SIZE).
_SHEBANG_MAX = 256
# The kernel's own limit on nested interpreters (BINPRM_MAX_RECURSION); also stops #! loops.
_MAX_DEPTH = 4
_CACHE_MAX = 4096
_GO_SECTIONS = (".go.buildinfo", ".note.go.buildid")
_GO_MAGIC = b"\xff Go buildinf:"
# Go's debug/buildinfo looks for the magic in the first 64 KiB of the first data segment.
_GO_SEARCH = 64 * 1024
_MACHINES = {"EM_X86_64": "x86_64", "EM_386": "i386", "EM_AARCH64": "aarch64", "EM_ARM": "arm"}
# The machine the agent's native parts are built for, as the interpreter was (not the running
# kernel's personality, which `setarch` can change): no other machine's programs can be entered.
_OWN_MACHINE = (sysconfig.get_config_var("MULTIARCH") or os.uname().machine).split("-")[0]
# What preload puts into or around a program: the hook built against its libc, or the tracer.
HOOK_GLIBC, HOOK_MUSL, TRACER = "libpreload.so", "libpreload-musl.so", "preload-trace"


@dataclass(frozen=True)
class Target:
    path: str  # as given
    realpath: str  # resolved (os.path.realpath), or the path if missing
    kind: str  # one of KINDS
    attach: str  # "preload", "ptrace" or "none"
    reason: str  # one short human sentence explaining kind and attach
    interpreter: str | None = None  # PT_INTERP for dynamic ELF; the "#!" interpreter for scripts
    libc: str | None = None  # "glibc", "musl" or None
    machine: str | None = None  # e.g. "x86_64", "aarch64", "i386"
    script_target: "Target | None" = None  # for scripts: the classification of the interpreter
    agent: str | None = None  # HOOK_GLIBC, HOOK_MUSL or TRACER; None when nothing can watch it


@dataclass(frozen=True)
class _Shebang:
    """What a script's file content says; the interpreter itself is classified on every call."""
    interpreter: str
    argument: str


# (realpath, st_dev, st_ino, st_mtime_ns, st_size) -> Target or _Shebang, oldest first.
_cache: dict = {}


def classify(path: str) -> Target:
    """Classify the file that exec(path) would run."""
    return _classify(path, 0)


def to_dict(t: Target) -> dict:
    """JSON-ready form, with the nested script_target."""
    return dataclasses.asdict(t)


def format_text(targets: list[Target]) -> str:
    """One aligned line per target: path, kind, attach, agent ("-" for none), reason."""
    rows = [(t.path, t.kind, t.attach, t.agent or "-", t.reason) for t in targets]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4]
                     for row in rows)


def _classify(path: str, depth: int) -> Target:
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        return Target(path, path, "missing", "none", f"cannot stat it: {why}")
    realpath = os.path.realpath(path)
    if not stat.S_ISREG(st.st_mode):
        return Target(path, realpath, "not-executable", "none", "not a regular file")
    if not os.access(path, os.X_OK):
        return Target(path, realpath, "not-executable", "none", "no execute permission")
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the stat, open must not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return Target(path, realpath, "not-elf", "none", f"cannot read it: {exc.strerror}")
    with open(fd, "rb") as f:
        # The key comes from the open file, so the cached result matches the content read.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Target(path, realpath, "not-executable", "none", "not a regular file")
        key = (realpath, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        found = _cache.get(key)
        if found is None:
            found = _inspect(f, realpath)
            _cache[key] = found
            if len(_cache) > _CACHE_MAX:
                _cache.pop(next(iter(_cache)), None)  # tolerate a concurrent eviction
    if isinstance(found, _Shebang):
        return _script(path, realpath, found, depth)
    return dataclasses.replace(found, path=path)


def _inspect(f, realpath: str) -> Target | _Shebang:
    head = f.read(_SHEBANG_MAX)
    if head.startswith(b"#!"):
        # Like the kernel: the line ends at a newline or NUL, the interpreter at a space or tab,
        # and the rest is one argument.
        line = head[2:].split(b"\n", 1)[0].split(b"\0", 1)[0]
        interpreter, argument = re.fullmatch(rb"[ \t]*([^ \t]*)(.*)", line, re.S).groups()
        return _Shebang(os.fsdecode(interpreter), os.fsdecode(argument.strip(b" \t")))
    if not head.startswith(b"\x7fELF"):
        return Target(realpath, realpath, "not-elf", "none", "neither ELF nor #! script: exec "
                      "fails with ENOEXEC (a shell would run it with /bin/sh)")
    try:
        return _inspect_elf(f, realpath)
    except Exception as exc:  # elftools raises many exception types on malformed input
        return Target(realpath, realpath, "not-elf", "none", f"ELF that cannot be parsed: {exc}")


def _inspect_elf(f, realpath: str) -> Target:
    f.seek(0)
    elf = ELFFile(f)
    machine = _MACHINES.get(elf["e_machine"], str(elf["e_machine"]).removeprefix("EM_").lower())
    # Program headers only (a private but long-standing elftools method): iter_segments() would
    # build a DynamicSegment, which reads every section header; this keeps a cold call ~3x faster.
    segments = [elf._get_segment_header(i) for i in range(elf.num_segments())]
    types = [segment["p_type"] for segment in segments]
    interpreter = libc = None
    if "PT_INTERP" in types:
        interpreter = elf.get_segment(types.index("PT_INTERP")).get_interp_name()
        libc = _libc(elf, interpreter, types)

    def target(kind, attach, reason):
        agent = TRACER if attach == "ptrace" else HOOK_MUSL if libc == "musl" else HOOK_GLIBC
        return Target(realpath, realpath, kind, attach, reason, interpreter, libc, machine,
                      agent=agent)

    if (elf.elfclass, elf.little_endian, machine) != (64, True, _OWN_MACHINE):
        return target("foreign", "ptrace", f"{elf.elfclass}-bit {machine} ELF: its calls cannot be read "
                      f"(the agent is built for 64-bit {_OWN_MACHINE}); the tracer lets them through and "
                      "follows what it starts")
    if _is_go(elf, f, segments):
        linked = f"dynamic, interpreter {interpreter}" if interpreter else "static"
        return target("go", "ptrace", f"Go program ({linked}): makes raw syscalls, bypassing libc")
    if interpreter:
        kind = f"dynamic-{libc}" if libc else "dynamic-other"
        return target(kind, "preload", f"dynamic ELF, interpreter {interpreter}")
    # Classify by segments, not e_type alone: a static-pie is ET_DYN like a dynamic PIE.
    if "PT_DYNAMIC" in types and elf["e_type"] == "ET_DYN":
        return target("static-pie", "ptrace", "static-pie ELF: no interpreter loads the hook")
    return target("static", "ptrace", "static ELF: no interpreter loads the hook")


def _libc(elf: ELFFile, interpreter: str, types: list) -> str | None:
    # The interpreter name usually decides; DT_NEEDED is only read when it does not.
    def needed():
        if "PT_DYNAMIC" in types:
            dynamic = elf.get_segment(types.index("PT_DYNAMIC"))
            yield from (tag.needed for tag in dynamic.iter_tags("DT_NEEDED"))

    for name in itertools.chain([os.path.basename(interpreter)], needed()):
        if "ld-musl" in name or "libc.musl" in name:
            return "musl"
        if "ld-linux" in name or name == "libc.so.6":
            return "glibc"
    return None


def _is_go(elf: ELFFile, f, segments: list) -> bool:
    if elf.num_sections() and elf.get_shstrndx():
        # The section-name table holds every section name: one read instead of every header.
        names = elf.get_section(elf.get_shstrndx()).data()
        return any(name.encode() + b"\0" in names for name in _GO_SECTIONS)
    # No section headers (stripped away): look at the notes and at the start of the first
    # writable segment, where the Go linker puts the build info.
    for i, segment in enumerate(segments):
        if segment["p_type"] == "PT_NOTE":
            if any(note["n_name"] == "Go" for note in elf.get_segment(i).iter_notes()):
                return True
    for segment in segments:
        data = segment["p_flags"] & (P_FLAGS.PF_W | P_FLAGS.PF_X) == P_FLAGS.PF_W
        if segment["p_type"] == "PT_LOAD" and data:
            f.seek(segment["p_offset"])
            return _GO_MAGIC in f.read(min(segment["p_filesz"], _GO_SEARCH))
    return False


def _script(path: str, realpath: str, shebang: _Shebang, depth: int) -> Target:
    def target(attach, reason, script_target=None):
        return Target(path, realpath, "script", attach, reason, shebang.interpreter,
                      script_target=script_target, agent=script_target and script_target.agent)

    if not shebang.interpreter:
        return target("none", "#! line without an interpreter: exec fails with ENOEXEC")
    if depth >= _MAX_DEPTH:
        return target("none", f"more than {_MAX_DEPTH} levels of #! interpreters: exec fails")
    program, via = shebang.interpreter, ""
    if os.path.basename(program) == "env" and shebang.argument:
        # env runs its first operand; skip its options (e.g. -S) and NAME=value assignments.
        words = [w for w in shebang.argument.split() if not w.startswith("-") and "=" not in w]
        if words:
            via = f" via {program}"
            # The daemon's PATH stands in for the container's.
            program = words[0] if "/" in words[0] else shutil.which(words[0])
            if program is None:
                return target("none", f"{words[0]} not found on PATH for {shebang.interpreter}")
    interp = _classify(program, depth + 1)
    if interp.attach != "none":
        reason = f"script run by {program}{via} ({interp.kind})"
    elif interp.kind == "script":
        reason = interp.reason  # the innermost failure is the one worth reading
    else:
        reason = f"interpreter {program} cannot run: {interp.reason}"
    return target(interp.attach, reason, interp)
