"""Open entry points: path made absolute and normalised, flags, mode, result; aggregation."""
import errno
import os
import re
import subprocess

import pytest

WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
OPEN_APIS = ["open", "open64", "openat", "openat64", "creat", "creat64", "fopen", "fopen64",
             "freopen", "freopen64"]
STDIO = {"fopen", "fopen64", "freopen", "freopen64"}


def results(cp):
    """The fds (or -errno) the fixture saw, in order."""
    return [int(fd) if int(fd) >= 0 else -int(err)
            for fd, err in re.findall(rb"res=(-?\d+) errno=(\d+)", cp.stdout)]


def opens_of(collector, path, **match):
    return collector.records_of("open", path=str(path), **match)


@pytest.mark.parametrize("api,mode", [(a, m) for a in OPEN_APIS for m in "rw"
                                      if m == "w" or not a.startswith("creat")])
def test_each_open_variant_reports_path_flags_and_result(collector, cc, tmp_path, api, mode):
    target = tmp_path / "file.txt"
    target.write_text("content\n")
    cp, _ = collector.run([cc("open_variants.c"), api, str(target), mode], cwd=tmp_path)
    assert cp.returncode == 0, cp
    (res,) = results(cp)
    (rec,) = opens_of(collector, target)
    assert rec["api"] == api
    assert rec["res"] == res
    assert rec["flags"] == (WRITE if mode == "w" else os.O_RDONLY)
    if mode == "w":
        assert rec["mode"] == (0o666 if api in STDIO else 0o640)
        assert rec["repeatable"] is False
    else:
        assert rec["repeatable"] is True


@pytest.mark.parametrize("api", OPEN_APIS)
def test_failed_open_reports_errno(collector, cc, tmp_path, api):
    missing = tmp_path / "no-such-dir" / "file.txt"
    cp, _ = collector.run([cc("open_variants.c"), api, str(missing), "w"])
    assert results(cp) == [-errno.ENOENT]
    (rec,) = opens_of(collector, missing)
    assert rec["api"] == api and rec["res"] == -errno.ENOENT


@pytest.mark.parametrize("api", ["open", "openat", "creat", "fopen", "freopen"])
def test_relative_open_is_made_absolute(collector, cc, tmp_path, api):
    (tmp_path / "sub" / "sub").mkdir(parents=True)
    cp, _ = collector.run([cc("open_variants.c"), api, "./sub/..//sub/./rel.txt", "w"],
                          cwd=tmp_path / "sub")
    assert cp.returncode == 0, cp
    (rec,) = opens_of(collector, tmp_path.resolve() / "sub" / "sub" / "rel.txt")
    assert rec["api"] == api and rec["res"] == results(cp)[0]


def test_dotdot_after_symlink_names_the_file_really_opened(collector, cc, tmp_path):
    """link/.. is the link target's parent for the kernel, not the link's: a path made absolute
    lexically would name another file (and /x/link/../shadow could hide an /etc/shadow read)."""
    (tmp_path / "real" / "dir").mkdir(parents=True)
    (tmp_path / "real" / "secret").write_text("opened\n")
    (tmp_path / "decoy").mkdir()
    (tmp_path / "decoy" / "link").symlink_to(tmp_path / "real" / "dir")
    (tmp_path / "decoy" / "secret").write_text("not opened\n")
    cp, _ = collector.run([cc("open_variants.c"), "open", "decoy/link/../secret", "r"],
                          cwd=tmp_path)
    assert results(cp) == [3]
    (rec,) = collector.records_of("open", api="open", res=3)
    assert os.path.samefile(rec["path"], tmp_path / "real" / "secret"), rec["path"]


def test_relative_open_above_root_stays_at_root(collector, cc):
    collector.run([cc("open_variants.c"), "open", "../../../../etc/hostname", "r"], cwd="/usr/lib")
    assert len(opens_of(collector, "/etc/hostname", api="open")) == 1


@pytest.mark.parametrize("api", ["openat", "openat64"])
@pytest.mark.parametrize("rel,expected", [("x.txt", "d/x.txt"), ("../y.txt", "y.txt"),
                                          ("./e/../z.txt", "d/z.txt")])
def test_dirfd_open_resolves_against_directory(collector, cc, tmp_path, api, rel, expected):
    (tmp_path / "d" / "e").mkdir(parents=True)
    # run from elsewhere: the directory fd, not the cwd, must be the base
    cp, _ = collector.run([cc("open_variants.c"), "-d", str(tmp_path / "d"), api, rel, "w"],
                          cwd="/")
    assert cp.returncode == 0, cp
    (rec,) = opens_of(collector, tmp_path.resolve() / expected)
    assert rec["api"] == api and rec["res"] == results(cp)[0]


def test_dirfd_is_ignored_for_absolute_paths(collector, cc, tmp_path):
    (tmp_path / "d").mkdir()
    collector.run([cc("open_variants.c"), "-d", str(tmp_path / "d"), "openat",
                   str(tmp_path / "abs.txt"), "w"])
    assert len(opens_of(collector, tmp_path / "abs.txt", api="openat")) == 1


FORTIFIED = {"open": "__open_2", "open64": "__open64_2", "openat": "__openat_2",
             "openat64": "__openat64_2"}


@pytest.fixture(scope="module")
def fortified(cc):
    prog = cc("open_fortified.c", extra_flags=["-O2", "-D_FORTIFY_SOURCE=2"])
    undefined = subprocess.run(["nm", "-u", prog], capture_output=True, text=True,
                               check=True).stdout
    for sym in FORTIFIED.values():
        assert re.search(rf"\b{sym}\b", undefined), f"{prog} does not call {sym}:\n{undefined}"
    return prog


@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_WRONLY | os.O_APPEND])
@pytest.mark.parametrize("call", sorted(FORTIFIED))
def test_fortified_open_2_is_seen(collector, fortified, tmp_path, call, flags):
    target = tmp_path / "f.txt"
    target.write_text("x")
    cp, _ = collector.run([fortified, call, "f.txt", str(flags)], cwd=tmp_path)
    assert cp.returncode == 0, cp
    (rec,) = opens_of(collector, tmp_path.resolve() / "f.txt")
    assert rec["api"] == FORTIFIED[call]
    assert rec["flags"] == flags
    assert rec["res"] == results(cp)[0]


@pytest.mark.parametrize("exists", [True, False], ids=["present", "missing"])
def test_repeated_reads_are_counted_not_sent(collector, cc, tmp_path, exists):
    target = tmp_path / "read-me"
    if exists:
        target.write_text("x")
    cp, _ = collector.run([cc("open_variants.c"), "-n", "5", "fopen", str(target), "r"])
    assert len(results(cp)) == 5
    (rec,) = opens_of(collector, target)
    assert rec["repeatable"] is True
    assert rec["res"] == (results(cp)[0] if exists else -errno.ENOENT)
    counted = sum(n for c in collector.records_of("counts") for h, n in c["counts"]
                  if h == rec["path_hash"])
    assert counted == 4


def test_writes_are_never_aggregated(collector, cc, tmp_path):
    target = tmp_path / "written"
    collector.run([cc("open_variants.c"), "-n", "5", "open", str(target), "w"])
    recs = opens_of(collector, target)
    assert len(recs) == 5
    assert all(r["repeatable"] is False and r["flags"] == WRITE for r in recs)


@pytest.mark.parametrize("path", ["/etc/shadow", "/proc/self/environ", "{tmp}/home/.ssh/id_rsa"])
def test_sensitive_path_is_reported_every_time(collector, cc, tmp_path, path):
    path = path.format(tmp=tmp_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cp, _ = collector.run([cc("open_variants.c"), "-n", "3", "open", path, "r"])
    (start,) = collector.records_of("start")
    # the record names the file the kernel opened: /proc/self is the process itself
    recs = opens_of(collector, path.replace("/proc/self/", f"/proc/{start['pid']}/"))
    assert [r["res"] for r in recs] == results(cp)  # all three, success or not
    assert len(recs) == 3
    assert not any(r["repeatable"] for r in recs)


def test_counts_are_flushed_before_exec(collector, tmp_path):
    target = tmp_path / "read-thrice"
    target.write_text("x")
    code = (f"for _ in range(3): open({str(target)!r}).close()\n"
            "import os; os.execv('/bin/true', ['true'])\n")
    cp, _ = collector.run(["python3", "-c", code])
    assert cp.returncode == 0, cp
    (rec,) = opens_of(collector, target)
    (attempt,) = collector.records_of("exec", argv=["true"], stream=rec["stream"])
    counts = [(c["seq"], n) for c in collector.records_of("counts", stream=rec["stream"])
              for h, n in c["counts"] if h == rec["path_hash"]]
    assert len(counts) == 1 and counts[0][1] == 2
    assert rec["seq"] < counts[0][0] < attempt["seq"]


def test_forked_child_aggregates_apart_from_its_parent(collector, tmp_path):
    target = tmp_path / "shared"
    target.write_text("x")
    code = (f"import os\np = {str(target)!r}\nopen(p).close()\n"
            "pid = os.fork()\n"
            "for _ in range(3): open(p).close()\n"
            "if pid: os.waitpid(pid, 0)\n")
    cp, _ = collector.run(["python3", "-c", code])
    assert cp.returncode == 0, cp
    parent, child = sorted(opens_of(collector, target), key=lambda r: r["ppid"] != os.getpid())
    assert child["ppid"] == parent["pid"] and child["stream"] != parent["stream"]
    assert parent["repeatable"] and child["repeatable"]

    def counted(rec):
        return sum(n for c in collector.records_of("counts", stream=rec["stream"])
                   for h, n in c["counts"] if h == rec["path_hash"])
    assert (counted(parent), counted(child)) == (3, 2)
