"""images/python/Dockerfile, built with podman and run as a managed container service runs it.

The image is built once per session from the repository root. Containers run as `podman run --rm`
does by default: the default seccomp profile and default capabilities, so no CAP_SYS_PTRACE, never
--privileged or --cap-add. Test programs are compiled on the host and mounted read-only at /probe;
the state directory (/var/lib/preload, the default for root) is a host directory, so the event log
outlives the container. The probes themselves check that the proof is honest: they are really
traced (TracerPid), and neither they nor their tracer hold CAP_SYS_PTRACE.
"""
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tools import need
from agent import events, of_type, starts

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "images" / "python" / "Dockerfile"
TAG = "localhost/preload-python:test"
# a stand-in for python:3.x-slim-bookworm that needs no registry; override to test another base
BASE = os.environ.get("PRELOAD_TEST_IMAGE_BASE", "localhost/python:3-bookworm")
LABEL = "preload.test-image=python"  # on the images the tests build, so that cleaning up spares others'
CAP_SYS_PTRACE = 19

STATIC_PROBE_C = r"""
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* prints the Name, Cap*, Seccomp and TracerPid lines of /proc/PID/status, each prefixed with WHO */
static long status(const char *who, const char *pid) {
    char path[64], line[256];
    long tracer = 0;
    snprintf(path, sizeof path, "/proc/%s/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) { printf("%s unreadable\n", who); return 0; }
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Name:", 5) || !strncmp(line, "Cap", 3) || !strncmp(line, "Seccomp:", 8)
            || !strncmp(line, "TracerPid:", 10))
            printf("%s %s", who, line);
        if (!strncmp(line, "TracerPid:", 10)) tracer = atol(line + 10);
    }
    fclose(f);
    return tracer;
}

/* static-probe FILE PORT CODE: writes FILE, connects to 127.0.0.1:PORT, exits with CODE
   (a negative CODE: kills itself with signal -CODE) */
int main(int argc, char **argv) {
    if (argc != 4) return 100;
    long tracer = status("self", "self");
    if (tracer > 0) {
        char pid[24];
        snprintf(pid, sizeof pid, "%ld", tracer);
        status("tracer", pid);
    }
    fflush(stdout);
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror(argv[1]); return 101; }
    if (write(fd, "static\n", 7) != 7) return 102;
    close(fd);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2])),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    connect(s, (struct sockaddr *)&a, sizeof a);  /* refused: nothing listens */
    close(s);
    int code = atoi(argv[3]);
    if (code < 0) raise(-code);
    return code;
}
"""

GO_PROBE = """package main

import (
	"net"
	"os"
	"strconv"
	"time"
)

// go-probe FILE PORT CODE: writes FILE, connects to 127.0.0.1:PORT, exits with CODE
func main() {
	if err := os.WriteFile(os.Args[1], []byte("go\\n"), 0644); err != nil {
		os.Exit(101)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+os.Args[2], 2*time.Second); err == nil {
		c.Close()
	}
	code, _ := strconv.Atoi(os.Args[3])
	os.Exit(code)
}
"""


def _unavailable(message):
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _image_id(podman, ref):
    r = subprocess.run([podman, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True,
                       text=True)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture(scope="session")
def podman():
    return need("podman", "podman")


@pytest.fixture(scope="session")
def image(podman):
    """The image's tag, built once per session. The tag is reused, --layers=false leaves no
    intermediate images, and images this fixture built before that no longer carry the tag (a rebuild
    moved it, or two sessions raced) are removed: a label tells them from anyone else's."""
    if _image_id(podman, BASE) is None:
        _unavailable(f"base image {BASE} is not present (there is no registry to pull it from: "
                     f".ci/run sets it up, or name another with PRELOAD_TEST_IMAGE_BASE)")
    cmd = [podman, "build", "--layers=false", "--label", LABEL, "-f", str(DOCKERFILE), "--build-arg",
           f"BASE={BASE}", "-t", TAG, str(REPO)]
    started = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    if r.returncode:
        pytest.fail(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    stale = subprocess.run([podman, "images", "-q", "--no-trunc", "--filter", "dangling=true", "--filter",
                            f"label={LABEL}"], capture_output=True, text=True).stdout.split()
    for image_id in stale:
        subprocess.run([podman, "rmi", image_id], capture_output=True)  # in use: kept for next time
    print(f"\n{TAG} built from {BASE} in {seconds:.1f} s")
    return TAG


@pytest.fixture(scope="session")
def probes(tmp_path_factory):
    """Host directory with the test programs, mounted at /probe: static-probe, and go-probe when
    `go` is installed."""
    gcc = need("gcc", "gcc")
    out = tmp_path_factory.mktemp("probe")
    src = tmp_path_factory.mktemp("probe-src")
    (src / "static-probe.c").write_text(STATIC_PROBE_C)
    r = subprocess.run([gcc, "-static", "-O1", "-Wall", "-o", out / "static-probe", src / "static-probe.c"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.fail(f"compiling static-probe.c failed (libc6-dev has libc.a):\n{r.stderr}")
    go = shutil.which("go")
    if go:
        build = tmp_path_factory.mktemp("go")
        (build / "go-probe.go").write_text(GO_PROBE)
        env = dict(os.environ, HOME=str(build), GOCACHE=str(build / "cache"), GOPATH=str(build / "gopath"),
                   GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="", CGO_ENABLED="0")
        subprocess.run([go, "build", "-o", out / "go-probe", "go-probe.go"], cwd=build, env=env, check=True,
                       capture_output=True)
    return out


def run(podman, image, *argv, state, probes=None, entrypoint=None, timeout=180):
    """`podman run --rm` of the image with the state directory (and the probes) mounted; returns the
    CompletedProcess (text). A container left behind by a timeout is removed."""
    name = f"preload-test-{uuid.uuid4().hex[:12]}"
    state.mkdir(exist_ok=True)
    cmd = [podman, "run", "--rm", "--name", name, "-v", f"{state}:/var/lib/preload:z"]
    if probes is not None:
        cmd += ["-v", f"{probes}:/probe:ro,z"]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    cmd += [image, *argv]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run([podman, "rm", "-f", "-t", "0", name], capture_output=True)
        raise


def status_lines(stdout, who):
    """{"CapEff": "...", ...} from the probe's `WHO Field: value` lines."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith(who + " "):
            key, _, value = line[len(who) + 1:].partition(":")
            out[key] = value.strip()
    return out


def assert_unprivileged_and_traced(stdout):
    """The probe was ptraced, under a seccomp filter, and neither it nor its tracer could have had
    CAP_SYS_PTRACE: the bounding set of both lacks it."""
    me, tracer = status_lines(stdout, "self"), status_lines(stdout, "tracer")
    assert me, stdout
    assert int(me["TracerPid"]) > 0, "the probe was not ptraced"
    assert tracer.get("Name") == "preload-trace", f"traced by something else:\n{stdout}"
    for who, st in (("probe", me), ("tracer", tracer)):
        for field in ("CapEff", "CapPrm", "CapBnd"):
            assert not int(st[field], 16) >> CAP_SYS_PTRACE & 1, f"{who} {field} {st[field]} has CAP_SYS_PTRACE"
        assert st["Seccomp"] == "2", f"{who} runs without a seccomp filter: Seccomp {st['Seccomp']}"


def the_start(evts, exepath):
    found = [e for e in starts(evts).values() if e["proc.exepath"] == exepath]
    assert len(found) == 1, f"starts of {exepath}: {found}; all: {sorted(e['proc.exepath'] for e in starts(evts).values())}"
    return found[0]


def assert_traced_activity(evts, exepath, written, port):
    """The program's start, its write-open of `written` and its connect to `port`, all from the tracer."""
    start = the_start(evts, exepath)
    assert (start["evt.source"], start["preload.attach"]) == ("ptrace", "ptrace"), start
    pid = start["proc.pid"]
    opens = [e for e in evts if e["evt.type"] in ("open", "openat", "openat2", "creat")
             and e.get("fd.name") == written and e["proc.pid"] == pid]
    assert opens, f"no open of {written} by {exepath}"
    assert all(e["evt.source"] == "ptrace" and e["evt.is_open_write"] and e["evt.res"] == "SUCCESS"
               for e in opens), opens
    connects = of_type(evts, "connect", **{"proc.pid": pid, "fd.sip": "127.0.0.1", "fd.sport": port})
    assert connects, f"no connect to 127.0.0.1:{port} by {exepath}: {of_type(evts, 'connect')}"
    assert all(e["evt.source"] == "ptrace" for e in connects)
    assert not of_type(evts, "preload.blindspot"), "a traced program was reported as a blind spot"


def test_image_runs_its_command_under_preload(podman, image, tmp_path):
    r = run(podman, image, "sh", "-c", "exit 3", state=tmp_path / "state")
    assert r.returncode == 3, r.stderr
    sh = the_start(events(tmp_path / "state"), "/usr/bin/dash")
    assert (sh["evt.source"], sh["preload.attach"]) == ("preload", "preload")


def test_image_keeps_no_build_leftovers(podman, image, tmp_path):
    """No builder venv, wheels or sources, and no compiler the base did not have already."""
    script = "ls -d /build-venv /wheels /tmp/wheels /src 2>/dev/null; command -v gcc cc"
    r = run(podman, image, "-c", script + "; readlink /usr/local/bin/preload; command -v preload",
            state=tmp_path / "state", entrypoint="sh")
    assert r.returncode == 0, r.stderr
    base = run(podman, BASE, "-c", script, state=tmp_path / "state", entrypoint="sh")
    assert r.stdout.split() == base.stdout.split() + ["/opt/preload/bin/preload", "/usr/local/bin/preload"]


def test_static_program_is_traced_without_cap_sys_ptrace(podman, image, probes, tmp_path):
    r = run(podman, image, "/probe/static-probe", "/etc/preload-static-probe", "9", "7",
            state=tmp_path / "state", probes=probes)
    assert r.returncode == 7, r.stderr
    assert_unprivileged_and_traced(r.stdout)
    assert_traced_activity(events(tmp_path / "state"), "/probe/static-probe", "/etc/preload-static-probe", 9)


def test_static_program_killed_by_a_signal_gives_128_plus_n(podman, image, probes, tmp_path):
    r = run(podman, image, "/probe/static-probe", "/etc/preload-static-probe", "9", "-15",
            state=tmp_path / "state", probes=probes)
    assert r.returncode == 128 + 15, r.stderr
    assert_unprivileged_and_traced(r.stdout)


def test_mixed_tree_hooked_shell_traced_static_child_hooked_cat(podman, image, probes, tmp_path):
    r = run(podman, image, "sh", "-c",
            "/probe/static-probe /etc/preload-static-probe 9 0; cat /etc/shadow >/dev/null",
            state=tmp_path / "state", probes=probes)
    assert r.returncode == 0, r.stderr
    assert_unprivileged_and_traced(r.stdout)
    evts = events(tmp_path / "state")
    sh, cat = the_start(evts, "/usr/bin/dash"), the_start(evts, "/usr/bin/cat")
    static = the_start(evts, "/probe/static-probe")
    for hooked in (sh, cat):
        assert (hooked["evt.source"], hooked["preload.attach"]) == ("preload", "preload"), hooked
    assert static["proc.ppid"] == sh["proc.pid"] and cat["proc.ppid"] == sh["proc.pid"]
    assert_traced_activity(evts, "/probe/static-probe", "/etc/preload-static-probe", 9)
    shadow = [e for e in evts if e.get("fd.name") == "/etc/shadow" and e["proc.pid"] == cat["proc.pid"]]
    assert shadow and all(e["evt.source"] == "preload" for e in shadow), shadow

    # and the image's own report tells the two kinds of watching apart
    rep = run(podman, image, "report", state=tmp_path / "state", entrypoint="preload")
    assert rep.returncode == 0, rep.stderr
    tree = dict(m.groups() for m in re.finditer(r"^[\s│├└─]*\d+ (\S+) .*\[(\w+)\]\s*$", rep.stdout, re.M))
    assert tree == {"sh": "preload", "static-probe": "ptrace", "cat": "preload"}, rep.stdout
    assert "Blind spots: 0" in rep.stdout


def test_go_program_is_traced(podman, image, probes, tmp_path):
    if not (probes / "go-probe").exists():
        need("go", "golang-go")
    r = run(podman, image, "/probe/go-probe", "/etc/preload-go-probe", "9", "4",
            state=tmp_path / "state", probes=probes)
    assert r.returncode == 4, r.stderr
    assert_traced_activity(events(tmp_path / "state"), "/probe/go-probe", "/etc/preload-go-probe", 9)
