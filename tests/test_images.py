"""images/: the Python base, the bundle and the examples, built with podman and run as a managed
container service runs them.

Every image is built once per session from the repository. Containers run as `podman run` does by
default: the default seccomp profile and default capabilities, so no CAP_SYS_PTRACE, never
--privileged or --cap-add. Test programs are compiled on the host and mounted read-only at /probe;
the state directory (/var/lib/preload, the default for root) is a host directory, so the event log
outlives the container. The probes themselves check that the proof is honest: they are really
traced (TracerPid), and neither they nor their tracer hold CAP_SYS_PTRACE.
"""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tools import need, unavailable
from agent import events, of_type, starts

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
TAG = "localhost/preload-python:test"
# stand-ins for python:3.x-slim-bookworm and debian:bookworm-slim that need no registry; override to
# test other bases
BASE = os.environ.get("PRELOAD_TEST_IMAGE_BASE", "localhost/python:3-bookworm")
DEBIAN = os.environ.get("PRELOAD_TEST_IMAGE_DEBIAN", "localhost/debian:bookworm")
LABEL = "preload.test-image"  # on the images the tests build, so that cleaning up spares others'
BUNDLE_MAX_MB = 60
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


def _image_id(podman, ref):
    r = subprocess.run([podman, "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True,
                       text=True)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture(scope="session")
def podman():
    return need("podman", "podman")


def build(podman, name, tag, dockerfile, context, **args):
    """Builds `tag` once per session. The tag is reused, --layers=false leaves no intermediate
    images, and images this built before that no longer carry the tag (a rebuild moved it, or two
    sessions raced) are removed: a label tells them from anyone else's."""
    cmd = [podman, "build", "--layers=false", "--label", f"{LABEL}={name}", "-f", str(dockerfile), "-t", tag]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd.append(str(context))
    started = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    if r.returncode:
        pytest.fail(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    stale = subprocess.run([podman, "images", "-q", "--no-trunc", "--filter", "dangling=true", "--filter",
                            f"label={LABEL}={name}"], capture_output=True, text=True).stdout.split()
    for image_id in stale:
        subprocess.run([podman, "rmi", image_id], capture_output=True)  # in use: kept for next time
    print(f"\n{tag} built in {seconds:.1f} s")
    return tag


def _base(podman, ref):
    if _image_id(podman, ref) is None:
        unavailable(f"base image {ref} is not present (there is no registry to pull it from: "
                     f".ci/run sets it up, or name another with PRELOAD_TEST_IMAGE_BASE/_DEBIAN)")
    return ref


@pytest.fixture(scope="session")
def image(podman):
    """images/python from the stand-in base."""
    return build(podman, "python", TAG, IMAGES / "python" / "Dockerfile", REPO, BASE=_base(podman, BASE))


@pytest.fixture(scope="session")
def bundle(podman, image):
    return build(podman, "bundle", "localhost/preload-bundle:test", IMAGES / "bundle" / "Dockerfile",
                 IMAGES / "bundle", PRELOAD_PYTHON=image)


@pytest.fixture(scope="session")
def python_web(podman, image):
    context = IMAGES / "examples" / "python-web"
    return build(podman, "python-web", "localhost/preload-python-web:test", context / "Dockerfile", context,
                 BASE=image)


@pytest.fixture(scope="session")
def python_web_non_root(podman, image):
    context = IMAGES / "examples" / "python-web"
    return build(podman, "python-web-app", "localhost/preload-python-web:test-app", context / "Dockerfile",
                 context, BASE=image, APP_USER="app")


@pytest.fixture(scope="session")
def go_scratch(podman, bundle, tmp_path_factory):
    """The example's context with the static server built on the host (no Go image without a
    registry)."""
    go = need("go", "golang-go")
    context = tmp_path_factory.mktemp("go-scratch")
    shutil.copytree(IMAGES / "examples" / "go-scratch", context, dirs_exist_ok=True)
    env = dict(os.environ, HOME=str(context), GOCACHE=str(context / ".cache"), GOPATH=str(context / ".gopath"),
               GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="", CGO_ENABLED="0")
    subprocess.run([go, "build", "-o", "server", "server.go"], cwd=context, env=env, check=True,
                   capture_output=True)
    for cache in (".cache", ".gopath"):
        shutil.rmtree(context / cache, ignore_errors=True)
    return build(podman, "go-scratch", "localhost/preload-go-scratch:test", context / "Dockerfile", context,
                 BUNDLE=bundle)


@pytest.fixture(scope="session")
def debian_job(podman, bundle):
    context = IMAGES / "examples" / "debian-job"
    return build(podman, "debian-job", "localhost/preload-debian-job:test", context / "Dockerfile", context,
                 BASE=_base(podman, DEBIAN), BUNDLE=bundle)


@pytest.fixture(scope="session")
def image_with_ld_so_preload(podman, image):
    return build(podman, "python-ld-so-preload", "localhost/preload-python:test-ld-so-preload",
                 IMAGES / "python" / "Dockerfile", REPO, BASE=BASE, LD_SO_PRELOAD=1)


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


def test_image_has_the_hook_for_glibc_and_for_musl_programs(podman, image, tmp_path):
    r = run(podman, image, "-c", "ls /opt/preload/lib/python3*/site-packages/preload/",
            state=tmp_path / "state", entrypoint="sh")
    assert r.returncode == 0, r.stderr
    assert {"libpreload.so", "libpreload-musl.so", "preload-trace"} <= set(r.stdout.split())


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


# -- the bundle and the examples ------------------------------------------------------------------

class Container:
    """A detached container of `image` with the state directory mounted and port 8080 published on
    the host's loopback; stop() stops it as `podman stop` does and returns its exit status."""

    def __init__(self, podman, image, *argv, state, options=()):
        self.podman = podman
        self.name = f"preload-test-{uuid.uuid4().hex[:12]}"
        state.mkdir(exist_ok=True)
        subprocess.run([podman, "run", "-d", "--name", self.name, "-v", f"{state}:/var/lib/preload:z",
                        "-p", "127.0.0.1::8080", *options, image, *argv], check=True, capture_output=True)
        self.stdout = self.stderr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run([self.podman, "rm", "-f", "-t", "0", self.name], capture_output=True)

    def get(self, path, timeout=60):
        """The response body to GET path; waits for the application to listen."""
        address = subprocess.run([self.podman, "port", self.name, "8080/tcp"], capture_output=True, text=True,
                                 check=True).stdout.split()[0]
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
                    return response.read().decode()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def exec(self, *argv):
        return subprocess.run([self.podman, "exec", self.name, *argv], capture_output=True, text=True, timeout=60)

    def stop(self):
        subprocess.run([self.podman, "stop", "-t", "30", self.name], check=True, capture_output=True, timeout=60)
        status = subprocess.run([self.podman, "wait", self.name], capture_output=True, text=True, check=True)
        logs = subprocess.run([self.podman, "logs", self.name], capture_output=True, text=True)
        self.stdout, self.stderr = logs.stdout, logs.stderr
        return int(status.stdout.strip())


def alerts(stderr):
    """The Falco JSON alerts among the container's stderr lines, by rule."""
    found = {}
    for line in stderr.splitlines():
        if line.startswith("{"):
            alert = json.loads(line)
            assert set(alert) >= {"time", "rule", "priority", "output", "output_fields", "source", "tags",
                                  "hostname"}, alert
            found.setdefault(alert["rule"], []).append(alert)
    return found


def found_rule(stderr, rule):
    """The first alert of `rule` on the container's stderr."""
    found = alerts(stderr)
    assert rule in found, f"no {rule!r} alert in:\n{stderr}"
    return found[rule][0]


def report(podman, image, state):
    """The image's own `preload report` of the state directory."""
    r = run(podman, image, "report", "--state-dir", "/var/lib/preload", state=state,
            entrypoint="/opt/preload/bin/preload")
    assert r.returncode == 0, r.stderr
    return r.stdout


def opened(evts, name, **match):
    return [e for e in evts if e["evt.type"] in ("open", "openat", "openat2", "creat") and e.get("fd.name") == name
            and all(e.get(k) == v for k, v in match.items())]


def test_bundle_runs_where_there_is_no_libc_and_stays_small(podman, bundle, tmp_path):
    """The bundle image is FROM scratch: its Python starts with its own loader and libraries."""
    r = run(podman, bundle, "inspect", "/opt/preload/bin/python3", state=tmp_path / "state")
    assert r.returncode == 0, r.stderr
    assert "interpreter /opt/preload/lib/ld-" in r.stdout, r.stdout
    size = int(subprocess.run([podman, "image", "inspect", "--format", "{{.Size}}", bundle], capture_output=True,
                              text=True, check=True).stdout)  # one layer: /opt/preload
    assert size < BUNDLE_MAX_MB * 10**6, f"the bundle is {size / 10**6:.1f} MB"


def test_python_web_app_actions_reach_the_log_and_stderr_alerts(podman, python_web, tmp_path):
    state = tmp_path / "state"
    with Container(podman, python_web, state=state) as c:
        assert c.get("/") == "hello\n"
        assert c.get("/run?cmd=cat%20/etc/shadow%20%3E/dev/null%3B%20touch%20/etc/app-drift").startswith("0\n")
        # the last action before SIGTERM
        assert c.get("/connect?port=9") == "Connection refused\n"
        assert c.stop() == 0, c.stderr
    evts = events(state)
    [app] = [e for e in starts(evts).values() if e["proc.cmdline"] == "python3 /app/app.py"]
    sh, cat, touch = (the_start(evts, exe) for exe in ("/usr/bin/dash", "/usr/bin/cat", "/usr/bin/touch"))
    assert sh["proc.ppid"] == app["proc.pid"] and cat["proc.ppid"] == touch["proc.ppid"] == sh["proc.pid"]
    assert opened(evts, "/etc/shadow", **{"proc.pid": cat["proc.pid"]})
    assert opened(evts, "/etc/app-drift", **{"proc.pid": touch["proc.pid"], "evt.is_open_write": True})
    assert of_type(evts, "connect", **{"proc.pid": app["proc.pid"], "fd.sip": "127.0.0.1", "fd.sport": 9})
    # what it did after SIGTERM, before it exited
    assert opened(evts, "/tmp/app-stopped", **{"proc.pid": app["proc.pid"], "evt.is_open_write": True})
    assert found_rule(c.stderr, "Read sensitive file untrusted")["output_fields"]["fd.name"] == "/etc/shadow"
    assert found_rule(c.stderr, "Write below etc")["output_fields"]["fd.name"] == "/etc/app-drift"
    assert "Records lost: 0" in report(podman, python_web, state)


def test_python_web_app_runs_as_the_images_non_root_user(podman, python_web_non_root, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with Container(podman, python_web_non_root, state=state,
                   options=["-e", "PRELOAD_STATE_DIR=/var/lib/preload"]) as c:
        assert c.get("/run?cmd=id%20-u") == "0\n10001\n"
        assert c.get("/connect?port=9") == "Connection refused\n"
        assert c.stop() == 0, c.stderr
    evts = events(state)
    sh, id_ = the_start(evts, "/usr/bin/dash"), the_start(evts, "/usr/bin/id")
    assert sh["user.uid"] == id_["user.uid"] == 10001
    assert (id_["evt.source"], id_["preload.attach"]) == ("preload", "preload")
    assert of_type(evts, "connect", **{"fd.sip": "127.0.0.1", "fd.sport": 9, "user.uid": 10001})
    assert "Records lost: 0" in report(podman, python_web_non_root, state)


def test_go_service_from_scratch_is_traced_and_dies_of_sigterm(podman, go_scratch, tmp_path):
    state = tmp_path / "state"
    with Container(podman, go_scratch, state=state) as c:
        assert c.get("/write?path=/etc/go-drift") == "written\n"
        assert "connection refused" in c.get("/connect?port=9")
        assert c.stop() == 128 + 15, c.stderr
    evts = events(state)
    assert_traced_activity(evts, "/app/server", "/etc/go-drift", 9)
    assert found_rule(c.stderr, "Write below etc")["output_fields"]["proc.exepath"] == "/app/server"
    assert "Records lost: 0" in report(podman, go_scratch, state)


def test_debian_job_mixes_hooked_and_traced_busybox_programs(podman, debian_job, tmp_path):
    state = tmp_path / "state"
    r = run(podman, debian_job, state=state)
    assert r.returncode == 3, r.stderr
    assert r.stdout.splitlines() == ["job: start", "job: nothing listens on port 9", "job: done"]
    evts = events(state)
    sh, cat = the_start(evts, "/usr/bin/dash"), the_start(evts, "/usr/bin/cat")
    assert (sh["preload.attach"], cat["preload.attach"]) == ("preload", "preload")
    busybox = [e for e in starts(evts).values() if e["proc.exepath"] == "/usr/bin/busybox"]
    assert busybox and all(e["preload.attach"] == "ptrace" for e in busybox), busybox
    pids = {e["proc.pid"] for e in busybox}
    assert any(e["proc.pid"] in pids and e["evt.source"] == "ptrace" for e in opened(evts, "/etc/job-drift"))
    assert any(e["proc.pid"] in pids for e in of_type(evts, "connect", **{"fd.sip": "127.0.0.1", "fd.sport": 9}))
    assert found_rule(r.stderr, "Read sensitive file untrusted")["output_fields"]["proc.name"] == "cat"
    assert found_rule(r.stderr, "Write below etc")["output_fields"]["proc.name"] == "busybox"
    assert "Records lost: 0" in report(podman, debian_job, state)


def test_bundle_libraries_never_reach_the_application(podman, debian_job, tmp_path):
    """The application gets the hook and nothing else of /opt/preload: no LD_LIBRARY_PATH, no
    library of the bundle's own in its memory."""
    r = run(podman, debian_job, "sh", "-c", "env; echo --; cat /proc/self/maps", state=tmp_path / "state")
    assert r.returncode == 0, r.stderr
    env, _, maps = r.stdout.partition("--\n")
    assert "LD_LIBRARY_PATH=" not in env
    ours = {line.split()[-1] for line in maps.splitlines() if "/opt/preload/" in line}
    assert len(ours) == 1 and ours.pop().endswith("/site-packages/preload/libpreload.so"), ours


def test_exec_session_is_watched_with_ld_so_preload(podman, image_with_ld_so_preload, tmp_path):
    """`podman exec` starts a process the entrypoint never saw; /etc/ld.so.preload gives it the hook."""
    state = tmp_path / "state"
    with Container(podman, image_with_ld_so_preload, "sleep", "600", state=state) as c:
        r = c.exec("cat", "/etc/shadow")
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        status = c.stop()
    assert status == 128 + 15, c.stderr
    evts = events(state)
    cat = the_start(evts, "/usr/bin/cat")
    assert opened(evts, "/etc/shadow", **{"proc.pid": cat["proc.pid"]})
    assert found_rule(c.stderr, "Read sensitive file untrusted")["output_fields"]["proc.name"] == "cat"
