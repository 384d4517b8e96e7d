"""Real programs behave identically with and without the agent: same stdout, stderr and exit code.

Each program runs twice, bare and under `preload run`, each time in a fresh directory prepared
identically. Both runs use the same absolute path for it (the first run's directory is moved aside
before the second is made), with a fixed environment, so nothing has to be filtered out of the
output. Every agent run must also have left the program in the event log: a test cannot pass with
the agent silently off.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent import events, of_type, preload, starts
from preload import elf
from tools import need, unavailable

pytestmark = pytest.mark.transparency

BASE_ENV = {"PATH": os.environ["PATH"], "TZ": "UTC", "LC_ALL": "C", "LANG": "C"}


def run_both_ways(tmp_path, argv, files=(), env=None, timeout=60):
    """Runs argv bare, then under the agent, in fresh identical directories; compares the outcome.

    files: {relative path: text} written into the directory before each run, which is also the
    cwd and HOME. Returns (directory of the bare run, directory of the agent run, agent's events)."""
    work = tmp_path / "work"
    results = {}
    for mode in ("bare", "agent"):
        work.mkdir()
        for name, text in dict(files).items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        run_env = dict(BASE_ENV, HOME=str(work), **(env or {}))
        if mode == "bare":
            results[mode] = subprocess.run(argv, cwd=work, env=run_env, stdin=subprocess.DEVNULL,
                                           capture_output=True, timeout=timeout)
        else:
            # the program's own stderr is compared: the agent's alerts go to alerts.jsonl only
            results[mode] = preload("run", "--no-alerts-stderr", "--", *argv, state_dir=tmp_path / "state",
                                    cwd=work, env=run_env, stdin=subprocess.DEVNULL, timeout=timeout)
        work.rename(tmp_path / mode)
    bare, agent = ((r.returncode, r.stdout, r.stderr) for r in (results["bare"], results["agent"]))
    assert agent == bare
    return tmp_path / "bare", tmp_path / "agent", events(tmp_path / "state")


def assert_seen(evts, *programs):
    """Each program was started and watched: hooked, or traced when the hook cannot load into it."""
    started = {e["proc.exepath"]: e["preload.attach"] for e in starts(evts).values()}
    for program in programs:
        real = os.path.realpath(program)
        assert real in started, f"no execve of {real} in the event log: {sorted(started)}"
        assert started[real] == elf.classify(real).attach


def tree(root):
    """{relative path: (mode, mtime, content or link target)} of everything under root."""
    found = {}
    for path in sorted(Path(root).rglob("*")):
        st = path.lstat()
        data = (os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file()
                else None)
        found[str(path.relative_to(root))] = (st.st_mode, int(st.st_mtime), data)
    return found


GIT_ENV = {"GIT_AUTHOR_NAME": "Ann Author", "GIT_AUTHOR_EMAIL": "ann@example.com",
           "GIT_COMMITTER_NAME": "Carl Committer", "GIT_COMMITTER_EMAIL": "carl@example.com",
           "GIT_AUTHOR_DATE": "2024-01-02T03:04:05 +0000",
           "GIT_COMMITTER_DATE": "2024-01-02T03:04:05 +0000", "GIT_CONFIG_NOSYSTEM": "1"}

GIT_SCRIPT = """set -e
git init -b main repo
cd repo
git config user.name 'Una User'
git config user.email una@example.com
printf 'one\\ntwo\\n' > a.txt
mkdir -p src && echo 'print(1)' > src/main.py
git add .
git commit -m 'first commit'
echo three >> a.txt && rm src/main.py && echo new > b.txt
git add -A
git commit -m 'second commit'
echo untracked > c.txt && echo changed >> a.txt
git log --stat
git status
"""


def test_git_init_commit_log_is_identical_under_the_agent(tmp_path):
    git = need("git", "git")
    _, _, evts = run_both_ways(tmp_path, ["sh", "-c", GIT_SCRIPT], env=GIT_ENV)
    assert_seen(evts, git)


TAR_SCRIPT = """set -e
tar --create --file tree.tar --mtime='2024-01-02 03:04:05' --sort=name \
    --owner=0 --group=0 --numeric-owner tree
tar --list --verbose --file tree.tar
mkdir out
tar --extract --file tree.tar --directory out
diff -r tree out/tree && echo same
"""

TAR_FILES = {"tree/README": "read me\n", "tree/a/one.txt": "1\n" * 100,
             "tree/a/b/two.txt": "two\n", "tree/z.txt": ""}


def test_tar_create_list_extract_is_identical_under_the_agent(tmp_path):
    tar = need("tar", "tar")
    bare, agent, evts = run_both_ways(tmp_path, ["sh", "-c", TAR_SCRIPT], files=TAR_FILES)
    assert_seen(evts, tar)
    assert (agent / "tree.tar").read_bytes() == (bare / "tree.tar").read_bytes()
    assert tree(agent / "out") == tree(bare / "out")


C_PROJECT = {
    "greet.h": "int greet(const char *name);\n",
    "greet.c": '#include <stdio.h>\n#include "greet.h"\n'
               'int greet(const char *name) { int unused; printf("hello, %s\\n", name); return 3; }\n',
    "main.c": '#include <stdio.h>\n#include "greet.h"\n'
              'int main(int argc, char **argv) {\n'
              '    fprintf(stderr, "%d args\\n", argc);\n'
              '    return greet(argc > 1 ? argv[1] : "nobody");\n}\n',
    "Makefile": "CFLAGS = -O2 -Wall\n"
                "hello: main.o greet.o\n\t$(CC) $(CFLAGS) -o $@ $^\n"
                "%.o: %.c greet.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n",
}


def test_make_and_gcc_build_and_run_is_identical_under_the_agent(tmp_path):
    make = need("make", "make")
    gcc = need("gcc", "gcc")
    bare, agent, evts = run_both_ways(tmp_path, ["sh", "-c", "make CC=gcc && ./hello world"],
                                      files=C_PROJECT)
    assert_seen(evts, make, gcc)
    assert (agent / "hello").read_bytes() == (bare / "hello").read_bytes()


PERL = r"""
system("echo", "hi");
open(F, "<", "/etc/hostname") or die; print "hostname: ", <F>; close F;
open(G, "<", "no-such-file") or print "no-such-file: $!\n";
my $pid = fork;
if ($pid == 0) { exec("sh", "-c", "echo child; echo child-err >&2; exit 3") or die }
waitpid($pid, 0);
print "child status ", $? >> 8, "\n";
print STDERR "done\n";
exit 5;
"""


def test_perl_reading_forking_and_execing_is_identical_under_the_agent(tmp_path):
    perl = need("perl", "perl-base")
    _, _, evts = run_both_ways(tmp_path, ["perl", "-e", PERL])
    assert_seen(evts, perl)


NODE = """
const cp = require('child_process'), fs = require('fs');
process.stdout.write(cp.execSync('echo hi; echo err >&2', {stdio: ['ignore', 'pipe', 'inherit']}));
console.log('hostname:', fs.readFileSync('/etc/hostname', 'utf8').trim());
try { fs.readFileSync('no-such-file'); } catch (e) { console.error(e.code, e.message); }
process.exit(4);
"""


def test_node_exec_and_read_file_is_identical_under_the_agent(tmp_path):
    node = need("node", "nodejs")
    _, _, evts = run_both_ways(tmp_path, ["node", "-e", NODE])
    assert_seen(evts, node)


def test_java_version_is_identical_under_the_agent(tmp_path):
    java = need("java", "default-jre-headless")
    _, _, evts = run_both_ways(tmp_path, ["java", "-version"])
    assert_seen(evts, java)


def test_busybox_shell_pipeline_is_identical_under_the_agent(tmp_path):
    busybox = need("busybox", "busybox-static")
    # started from a shell, as in an image's scripts: a static program given to `preload run`
    # itself gets a one-line notice on stderr by design (test_supervisor covers that)
    _, _, evts = run_both_ways(tmp_path, ["sh", "-c", "busybox sh -c 'echo x | busybox tr x y; busybox ls /'"])
    assert_seen(evts, busybox)


# ---- CPython's own regression tests ----

# the modules that fork, exec, open, signal and thread; test_fcntl for the fd calls the hook answers
# about its own channel
REGRTESTS = ["test_subprocess", "test_os", "test_posix", "test_signal", "test_threading", "test_socket",
             "test_fcntl"]
# waits in accept() forever on virtual machines that have a vsock device but no peer on it
REGRTEST_IGNORED = "*ThreadedVSOCKSocketStreamTest*"
MODES = {"bare": None, "agent": {}, "agent-bind-now": {"LD_BIND_NOW": "1"}}


def regrtest_outcomes(tmp_path, mode, only=()):
    """{test id: passed|failed|skipped} of one run of the regression tests in this mode (only the
    test ids `only`, when given), and the agent's events (None bare). Each run has its own cwd,
    HOME and TMPDIR."""
    work = tmp_path / mode
    work.mkdir(parents=True)
    junit = work / "junit.xml"
    # short: the socket tests bind AF_UNIX sockets below TMPDIR (108 bytes at most)
    tmp = tempfile.mkdtemp(prefix="pl-rt-")
    env = dict(os.environ, HOME=str(work), TMPDIR=tmp)
    # --match before --ignore: regrtest reads the patterns in order, the first says whether the
    # others select or reject
    selection = [a for test_id in only for a in ("--match", test_id)] or ["--ignore", REGRTEST_IGNORED]
    # the interpreter under test is the one running pytest: in a virtualenv its stdlib (and so
    # its `test` package) is the base interpreter's
    argv = [sys.executable, "-m", "test", "-j2", "--timeout", "300", "--junit-xml", str(junit),
            *selection, *REGRTESTS]
    try:
        if MODES[mode] is None:
            subprocess.run(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=900)
            evts = None
        else:
            preload("run", "--no-alerts-stderr", "--", *argv, state_dir=work / "state", cwd=work,
                    env=dict(env, **MODES[mode]), stdin=subprocess.DEVNULL, timeout=900)
            evts = events(work / "state")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert junit.is_file(), f"{mode}: regrtest wrote no results"
    outcomes = {}
    for case in ET.parse(junit).iter("testcase"):
        kind = {c.tag for c in case} & {"failure", "error", "skipped"}
        outcomes[case.get("name")] = ("failed" if kind & {"failure", "error"} else
                                      "skipped" if kind else "passed")
    return outcomes, evts


def differences(runs):
    """Test ids whose outcome is not the same in every run."""
    ids = set().union(*runs)
    return {i for i in ids if len({run.get(i, "absent") for run in runs}) > 1}


def test_cpython_regression_tests_have_the_same_outcomes_under_the_agent(tmp_path):
    missing = subprocess.run([sys.executable, "-c", "import test.libregrtest, test.test_socket"],
                             capture_output=True)
    if missing.returncode:
        unavailable(f"{sys.executable} has no regression test package `test` (Debian package: "
                    f"libpython3.{sys.version_info.minor}-testsuite)")
    # the three runs side by side: the suites mostly wait (sockets, timeouts, children)
    with ThreadPoolExecutor(len(MODES)) as pool:
        runs = dict(zip(MODES, pool.map(lambda mode: regrtest_outcomes(tmp_path, mode), MODES)))
    outcomes = {mode: run[0] for mode, run in runs.items()}
    assert sum(o == "passed" for o in outcomes["bare"].values()) > 1000
    for mode in ("agent", "agent-bind-now"):
        evts = runs[mode][1]
        assert of_type(evts, "execve", **{"proc.exepath": os.path.realpath(sys.executable)}), \
            f"{mode}: the agent saw no interpreter start"
        assert len(starts(evts)) > 100  # the suites start many children: each one was watched
    # a difference counts when it repeats: those tests alone, once more in each mode (a test
    # needing free fds next to the channel's differs only when the run's fds happen to reach it)
    suspects = differences(list(outcomes.values()))
    if suspects:
        again = [regrtest_outcomes(tmp_path / "again", mode, sorted(suspects))[0] for mode in MODES]
        repeated = differences(again)
        assert repeated == set(), {i: [run.get(i) for run in again] for i in repeated}
