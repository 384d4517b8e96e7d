"""Calls beyond exec, open and connect: files changed, privileges, code loaded without an exec,
namespaces and modules (also through syscall()), raw sockets, and a socket made stdin.

tests/fixtures/calls.c makes each call once to succeed and once to fail and prints what it got;
under the hook it must get exactly the same, and the records must say what happened."""
import errno
import os
import re
import socket
import subprocess

import pytest

from agent import events, preload
from preload.events import Enricher
from tools import plain

AT_FDCWD = -100
KEEP = 2**32 - 1  # (uid_t)-1: unchanged


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s
    s.close()


@pytest.fixture
def everything(collector, cc, tmp_path, listener):
    """`calls all` under the hook: (stdout lines, records, its directory, the listener's port)."""
    work = tmp_path / "hooked"
    work.mkdir()
    port = listener.getsockname()[1]
    cp, _ = collector.run([cc("calls.c"), "all", str(work), str(port)])
    assert cp.returncode == 0, cp
    return cp.stdout.decode().splitlines(), collector, work.resolve(), port


def calls(collector, api, **match):
    return collector.records_of("call", api=api, **match)


def one(collector, api, **match):
    (rec,) = calls(collector, api, **match)
    return rec


def test_results_and_errno_are_those_of_the_bare_program(everything, cc, tmp_path, listener):
    lines, _, _, port = everything
    work = tmp_path / "bare"
    work.mkdir()
    bare = plain([cc("calls.c"), "all", str(work), str(port)])
    assert bare.returncode == 0, bare
    assert bare.stdout.decode().splitlines() == lines
    assert len(lines) > 80


# -- files changed --------------------------------------------------------------------------

def test_file_changes_are_recorded_with_absolute_paths_and_results(everything):
    _, c, work, _ = everything
    d = f"{work}/d"
    assert [(r["res"], r["strings"]) for r in calls(c, "mkdir")] == [
        (0, [d]), (-errno.EEXIST, [d])]
    assert one(c, "mkdir", res=0)["args"][1] == 0o755
    assert one(c, "mkdirat")["strings"] == [f"{d}/sub"]
    # a symlink's target as written; the link itself absolute
    assert [(r["res"], r["strings"]) for r in calls(c, "symlink")] == [
        (0, ["/etc/shadow", f"{d}/shadow-link"]), (-errno.EEXIST, ["/etc/shadow", f"{d}/shadow-link"])]
    assert one(c, "symlinkat")["strings"] == ["/etc/passwd", f"{d}/passwd-link"]
    assert [(r["res"], r["strings"]) for r in calls(c, "link")] == [
        (0, [f"{work}/f", f"{d}/hard"]), (-errno.ENOENT, [f"{work}/missing", f"{d}/hard3"])]
    assert one(c, "linkat")["strings"] == [f"{work}/f", f"{d}/hard2"]
    assert one(c, "rename")["strings"] == [f"{d}/hard", f"{d}/renamed"]
    assert one(c, "renameat")["strings"] == [f"{d}/hard2", f"{d}/renamed2"]
    rec = one(c, "renameat2")
    assert (rec["res"], rec["args"][4], rec["strings"]) == (-errno.EEXIST, 1, [f"{d}/renamed", f"{d}/renamed2"])


def test_mode_owner_size_and_node_changes_are_recorded(everything):
    _, c, work, _ = everything
    f = f"{work}/f"
    assert [(r["res"], r["args"][1], r["strings"]) for r in calls(c, "chmod")] == [
        (0, 0o4755, [f]), (-errno.ENOENT, 0o644, [f"{work}/missing"])]
    assert one(c, "fchmod")["strings"] == [f]  # the file behind the fd
    rec = one(c, "fchmodat")
    assert (rec["args"][0], rec["args"][2], rec["strings"]) == (AT_FDCWD, 0o2755, [f])
    assert [(r["res"], r["args"][1:3], r["strings"]) for r in calls(c, "chown")] == [
        (0, (KEEP, KEEP), [f]), (-errno.ENOENT, (0, 0), [f"{work}/missing"])]
    assert one(c, "lchown")["strings"] == [f"{work}/d/shadow-link"]  # the link, not its target
    assert one(c, "fchown")["strings"] == [f]
    assert one(c, "fchownat")["strings"] == [f]
    assert [(r["res"], r["args"][1]) for r in calls(c, "truncate")] == [(0, 10), (-errno.ENOENT, 10)]
    rec = one(c, "mknod")
    assert (rec["res"], rec["args"][1], rec["strings"]) == (0, 0o10600, [f"{work}/fifo"])
    assert one(c, "mknodat")["strings"] == [f"{work}/fifo2"]
    assert one(c, "unlinkat")["strings"] == [f"{work}/d/sub"]


def test_a_path_the_kernel_could_not_read_is_not_read(everything):
    _, c, work, _ = everything
    assert [(r["res"], r["strings"]) for r in calls(c, "unlink")][:3] == [
        (0, [f"{work}/fifo"]), (-errno.ENOENT, [f"{work}/missing"]), (-errno.EFAULT, [""])]


def test_remove_is_recorded_as_the_unlink_and_rmdir_it_makes(everything):
    """libc's remove() unlinks, then for a directory removes it, through no hook of ours: both are
    seen all the same."""
    _, c, work, _ = everything
    assert [(r["res"], r["strings"]) for r in calls(c, "unlink")][3:] == [
        (0, [f"{work}/fifo2"]), (-errno.EISDIR, [f"{work}/d"])]
    removed = calls(c, "rmdir")
    assert [(r["res"], r["strings"]) for r in removed[:1]] == [(-errno.ENOTEMPTY, [f"{work}/d"])]
    assert [r["res"] for r in removed[1:]] == [0] and removed[1]["strings"][0].startswith(f"{work}/empty")


# -- privileges -----------------------------------------------------------------------------

def test_user_and_group_changes_are_recorded(everything):
    _, c, _, _ = everything
    uid, gid = os.getuid(), os.getgid()
    assert [(r["res"], r["args"][0]) for r in calls(c, "setuid")] == [
        (0, uid), (-errno.EINVAL, KEEP), (-errno.EINVAL, KEEP)]  # the last through syscall()
    assert [(r["res"], r["args"][0]) for r in calls(c, "setgid")] == [(0, gid), (-errno.EINVAL, KEEP)]
    # seteuid is setresuid for the kernel (and for the tracer)
    assert [r["args"][:3] for r in calls(c, "setresuid")] == [(KEEP, os.geteuid(), KEEP), (KEEP,) * 3]
    assert [r["args"][:3] for r in calls(c, "setresgid")] == [(KEEP, os.getegid(), KEEP), (KEEP,) * 3]
    assert one(c, "setreuid")["args"][:2] == (KEEP, KEEP)
    assert one(c, "setregid")["args"][:2] == (KEEP, KEEP)
    assert [r["res"] for r in calls(c, "setgroups")] == [0, -errno.EINVAL]


def test_capset_records_the_sets_it_made(everything):
    _, c, _, _ = everything
    ok, bad = calls(c, "capset")
    effective = int(re.search(r"CapEff:\s*(\w+)", open("/proc/self/status").read()).group(1), 16)
    assert (ok["res"], ok["args"][1]) == (0, effective)
    assert bad["res"] == -errno.EINVAL and bad["args"][1:4] == (0, 0, 0)


# -- code -------------------------------------------------------------------------------------

def test_memfd_create_is_recorded_with_its_name(everything):
    _, c, _, _ = everything
    assert [(r["res"] >= 0 or r["res"], r["strings"]) for r in calls(c, "memfd_create")] == [
        (True, ["payload"]), (-errno.EINVAL, [""]), (True, ["code"]), (True, ["raw"])]


def test_executable_anonymous_memory_is_recorded_and_file_code_is_not(everything):
    _, c, _, _ = everything
    PROT_RW, PROT_RX, PROT_RWX = 3, 5, 7
    mapped, from_memfd = calls(c, "mmap")
    assert (mapped["res"], mapped["args"][1:5]) == (0, (4096, PROT_RWX, 0x22, -1))
    (code,) = [r for r in calls(c, "memfd_create") if r["strings"] == ["code"]]
    # a memfd's code, even mapped read-only: fileless execution
    assert (from_memfd["res"], from_memfd["args"][1:5]) == (0, (4096, PROT_RX, 0x02, code["res"]))
    (protected,) = calls(c, "mprotect")  # not the one of /bin/sh's own pages
    assert (protected["res"], protected["args"][1:3]) == (0, (4096, PROT_RX))
    events = Enricher().events(mapped)
    assert events[0]["evt.type"] == "preload.exec_memory"
    assert events[0]["evt.arg.prot"] == "PROT_READ|PROT_WRITE|PROT_EXEC"
    assert PROT_RW not in [r["args"][2] for r in calls(c, "mmap")]


def test_dlopen_is_recorded_before_the_loader_runs(everything):
    _, c, _, _ = everything
    assert [r["strings"] for r in calls(c, "dlopen")] == [
        ["libm.so.6", ""], ["/nonexistent/libx.so", "/nonexistent/libx.so"]]


def test_a_library_loaded_from_a_memfd_is_fileless(collector, cc):
    libm = subprocess.run(["gcc", "-print-file-name=libm.so.6"], capture_output=True, text=True)
    path = os.path.realpath(libm.stdout.strip())
    cp, _ = collector.run([cc("calls.c"), "dlopen-memfd", path])
    assert cp.stdout.endswith(b"r=1 errno=0\n"), cp
    (rec,) = calls(collector, "dlopen")
    assert re.fullmatch(r"/proc/self/fd/\d+", rec["strings"][0])
    assert rec["strings"][1] == "/memfd:lib (deleted)"
    (event,) = Enricher().events(rec)
    assert event["evt.type"] == "preload.dlopen" and "fileless" in event["preload.reason"]


def test_a_jit_is_reported_a_few_times_not_for_every_page(collector, cc):
    cp, _ = collector.run([cc("calls.c"), "jit", "2000"])
    assert cp.stdout == b"jit 2000\n", cp
    assert len(calls(collector, "mprotect", res=0)) == 8


# -- debugging, namespaces, modules -----------------------------------------------------------

def test_ptrace_attach_and_detach_are_recorded_peeks_are_not(everything):
    _, c, _, _ = everything
    PTRACE_ATTACH, PTRACE_DETACH = 16, 17
    assert [(r["args"][0], r["res"]) for r in calls(c, "ptrace")] == [
        (PTRACE_ATTACH, 0), (PTRACE_DETACH, 0), (PTRACE_ATTACH, -errno.ESRCH)]


def test_namespace_mount_and_root_changes_are_recorded(everything):
    _, c, work, _ = everything
    nowhere = f"{work}/d/nowhere"
    assert [(r["args"][0], r["res"]) for r in calls(c, "unshare")] == [
        (0, 0), (-1, -errno.EINVAL), (0, 0)]
    uts = os.readlink("/proc/self/ns/uts")  # "uts:[inode]": the namespace joined, by name
    assert [(r["res"], r["strings"]) for r in calls(c, "setns")] == [(0, [uts]), (-errno.EBADF, [""])]
    # the open of /proc/self/ns/uts is the path opened: the link's text is no path to stand for it
    assert [r["path"] for r in c.records_of("open", path=lambda p: p.endswith("/ns/uts"))] == [
        "/proc/self/ns/uts"]
    rec = one(c, "mount")
    assert (rec["res"], rec["args"][3], rec["strings"]) == (-errno.ENOENT, 2, ["none", nowhere, "tmpfs"])
    assert [(r["args"][1], r["strings"]) for r in calls(c, "umount2")] == [
        (2, [nowhere]), (0, [nowhere]), (0, [nowhere])]  # umount2, umount, syscall()
    assert one(c, "chroot")["strings"] == [nowhere]


def test_calls_without_a_wrapper_are_seen_through_syscall(everything):
    lines, c, work, _ = everything
    results = {name: (int(r), int(e)) for name, r, e in
               re.findall(r"^syscall\(SYS_(\w+),.* r=(-?\d+) errno=(\d+)$", "\n".join(lines), re.M)}
    init = one(c, "init_module")
    assert (init["res"], init["args"][1], init["strings"]) == (-results["init_module"][1], 64, ["param=1"])
    fin = one(c, "finit_module")
    assert fin["res"] == -results["finit_module"][1] and fin["strings"] == [f"{work}/f", ""]
    pivot = one(c, "pivot_root")
    assert pivot["strings"] == [f"{work}/d/nowhere", f"{work}/d/old"]
    (ring,) = calls(c, "io_uring_setup")
    assert ring["args"][0] == 4
    assert not calls(c, "unknown")
    assert results["read"] == (-1, errno.EBADF)  # passed through, exactly


def test_io_uring_is_reported_as_a_blind_spot(everything):
    _, c, _, _ = everything
    (event,) = Enricher().events(one(c, "io_uring_setup"))
    assert event["evt.type"] == "io_uring_setup"
    assert "not seen" in event["preload.reason"]


# -- sockets ----------------------------------------------------------------------------------

def test_only_packet_and_raw_sockets_are_recorded(everything):
    _, c, _, _ = everything
    assert [r["args"][:2] for r in calls(c, "socket")] == [
        (socket.AF_PACKET, socket.SOCK_RAW), (socket.AF_INET, socket.SOCK_RAW)]


def test_a_socket_made_stdin_is_recorded_with_its_ends(everything):
    _, c, _, port = everything
    (connect,) = c.records_of("net", api="connect")
    dups = [r for r in c.records if r["kind"] == "net" and r["api"].startswith("dup")]
    assert [(r["api"], r["fd"], r["res"]) for r in dups] == [
        ("dup2", connect["fd"], 0), ("dup3", connect["fd"], 0), ("dup", connect["fd"], 0),
        ("dup3", connect["fd"], 0)]  # the last through syscall()
    for rec in dups:
        assert (rec["family"], rec["raddr"], rec["rport"]) == (socket.AF_INET, "127.0.0.1", port)
        assert (rec["laddr"], rec["lport"]) == (connect["laddr"], connect["lport"])
    (event,) = Enricher().events(dups[0])
    assert (event["evt.type"], event["evt.rawres"], event["fd.num"], event["fd.type"]) == (
        "dup2", 0, connect["fd"], "ipv4")
    assert event["fd.name"] == f"127.0.0.1:{connect['lport']}->127.0.0.1:{port}"


# -- the tracer reports the same calls of a static program ------------------------------------

def test_the_tracer_reports_the_new_calls_of_a_static_program_as_the_hook_does(cc, tmp_path, listener):
    static = cc("calls.c", extra_flags=["-static"])
    work = tmp_path / "work"
    work.mkdir()
    r = preload("run", "--", static, "all", str(work), str(listener.getsockname()[1]),
                state_dir=tmp_path / "state")
    assert r.returncode == 0, r.stderr
    traced = [e for e in events(tmp_path / "state") if e["evt.source"] == "ptrace"]
    w = str(work.resolve())

    def seen(evt_type, **fields):
        return [(e["evt.res"], e.get("fs.path.name", e.get("fd.name")))
                for e in traced if e["evt.type"] == evt_type
                and all(e.get(k.replace("__", ".")) == v for k, v in fields.items())]

    assert seen("chown") == [("SUCCESS", f"{w}/f"), ("ENOENT", f"{w}/missing")]
    assert seen("lchown") == [("SUCCESS", f"{w}/d/shadow-link")]
    assert seen("fchown") == seen("fchownat") == [("SUCCESS", f"{w}/f")]
    assert seen("truncate", evt__arg__length=10) == [("SUCCESS", f"{w}/f"), ("ENOENT", f"{w}/missing")]
    assert seen("mkdir", evt__arg__mode=0o755) == [("SUCCESS", f"{w}/d"), ("EEXIST", f"{w}/d")]
    assert seen("mkdirat") == [("SUCCESS", f"{w}/d/sub")]
    assert [res for res, _ in seen("rmdir")] == ["ENOTEMPTY", "SUCCESS"]
    # glibc's mknod is the mknodat call for the kernel
    assert seen("mknod") + seen("mknodat") == [("SUCCESS", f"{w}/fifo"), ("SUCCESS", f"{w}/fifo2")]
    assert [e["evt.arg.path"] for e in traced if e["evt.type"] == "chroot"] == [f"{w}/d/nowhere"]
    assert [e["evt.arg.new_root"] for e in traced if e["evt.type"] == "pivot_root"] == [f"{w}/d/nowhere"]
    effective = int(re.search(r"CapEff:\s*(\w+)", open("/proc/self/status").read()).group(1), 16)
    assert [(e["evt.res"], e["evt.arg.cap_effective"]) for e in traced if e["evt.type"] == "capset"] == [
        ("SUCCESS", effective), ("EINVAL", 0)]


def test_pointers_of_a_call_refused_before_reading_them_are_never_trusted(collector, cc):
    prog = cc("bad_pointers.c")
    bare = plain([prog])
    cp, _ = collector.run([prog])
    assert (cp.returncode, cp.stdout, cp.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    assert f"pivot_root -1 {errno.EPERM}" in cp.stdout.decode()
    rec = one(collector, "pivot_root")
    assert (rec["res"], rec["strings"]) == (-errno.EPERM, ["", ""])
    assert one(collector, "init_module")["strings"] == [""]  # EPERM, or ENOSYS without modules
