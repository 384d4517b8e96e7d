"""Static and Go programs under the tracer, built here: what they do shows up in the event log.

Every program runs twice, bare and under `preload run`, each in a fresh directory: its stdout and
exit code must not change, and the agent run's events must name its exec, its write, its connect
(and, with --trace-profile full only, its read-only opens), with the tracer as their source. Mixed
trees run both ways: a hooked shell starting a static program, a static program starting a dynamic
one (traced too, never hooked as well).
"""
import os
import socket
import subprocess
import sys
import threading

import pytest

from agent import events, of_type, preload
from preload import elf
from tools import need

OPENS = ("open", "openat", "creat")

# out-file port command args...: fork+exec the command, write out-file, connect to 127.0.0.1:port,
# read /etc/hostname; a blocking connect, so it returns 0
PROGRAM_C = r"""
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 4) return 2;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[3], argv + 3);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    printf("child exit %d\n", WEXITSTATUS(st));
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0640);
    if (fd < 0 || write(fd, "data\n", 5) != 5) return 10;
    close(fd);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    printf("connect %d\n", connect(s, (struct sockaddr *)&a, sizeof a));
    close(s);
    char line[256] = "";
    FILE *f = fopen("/etc/hostname", "r");
    if (!f || !fgets(line, sizeof line, f)) return 11;
    fclose(f);
    printf("hostname %s", line);
    return 3;
}
"""

# the same arguments and the same steps, in Go (os/exec, os.Open, os.WriteFile, net.Dial)
PROGRAM_GO = """package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
)

func main() {
	out, err := exec.Command(os.Args[3], os.Args[4:]...).Output()
	fmt.Printf("child %q %v\\n", out, err)
	if err := os.WriteFile(os.Args[1], []byte("go\\n"), 0640); err != nil {
		os.Exit(10)
	}
	c, err := net.Dial("tcp", "127.0.0.1:"+os.Args[2])
	fmt.Println("dial", err)
	if err == nil {
		c.Close()
	}
	f, err := os.Open("/etc/hostname")
	if err != nil {
		os.Exit(11)
	}
	buf := make([]byte, 256)
	n, _ := f.Read(buf)
	f.Close()
	fmt.Printf("hostname %s", buf[:n])
	os.Exit(6)
}
"""

# command args...: WRITERS goroutines, each locked to a thread of its own, write FILES files each
# while another goroutine runs the command
WRITERS, FILES = 8, 5
THREADS_GO = """package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

func main() {
	var wg sync.WaitGroup
	var mu sync.Mutex
	tids := map[int]bool{}
	result := make(chan string)
	go func() {
		out, err := exec.Command(os.Args[1], os.Args[2:]...).Output()
		result <- fmt.Sprintf("%q %v", out, err)
	}()
	for i := 0; i < {writers}; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runtime.LockOSThread()
			mu.Lock()
			tids[syscall.Gettid()] = true
			mu.Unlock()
			for j := 0; j < {files}; j++ {
				if os.WriteFile(fmt.Sprintf("w-%d-%d.txt", i, j), []byte("x"), 0600) != nil {
					os.Exit(12)
				}
			}
		}(i)
	}
	wg.Wait()
	fmt.Println("writers on", len(tids), "threads; exec", <-result)
	os.Exit(4)
}
""".replace("{writers}", str(WRITERS)).replace("{files}", str(FILES))

# command args...: WRITERS goroutines write files in a loop, each on a thread of its own; once each
# has written, a goroutine on yet another thread (not the leader: main holds that one) execs the
# command in place of the program
REPLACE_GO = """package main

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
)

func init() { runtime.LockOSThread() }

func main() {
	started := make(chan bool)
	for i := 0; i < {writers}; i++ {
		go func(i int) {
			runtime.LockOSThread()
			for j := 0; ; j++ {
				if os.WriteFile(fmt.Sprintf("r-%d-%d.txt", i, j%20), []byte("x"), 0600) != nil {
					os.Exit(12)
				}
				if j == 0 {
					started <- true
				}
			}
		}(i)
	}
	go func() {
		runtime.LockOSThread()
		for i := 0; i < {writers}; i++ {
			<-started
		}
		fmt.Println("exec from the leader thread:", syscall.Gettid() == os.Getpid())
		err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
		fmt.Println("exec failed:", err)
		os.Exit(13)
	}()
	select {}
}
""".replace("{writers}", str(WRITERS))

C_BUILDS = {"gcc-static": ("gcc", "gcc", "-static"), "gcc-static-pie": ("gcc", "gcc", "-static-pie"),
            "musl-static": ("musl-gcc", "musl-tools", "-static")}


@pytest.fixture(scope="session")
def c_program(tmp_path_factory):
    """c_program(build) -> PROGRAM_C built as C_BUILDS[build] says (once per session)."""
    outdir = tmp_path_factory.mktemp("trace-c")
    source = outdir / "program.c"
    source.write_text(PROGRAM_C)
    built = {}

    def build(name):
        if name not in built:
            compiler, package, flag = C_BUILDS[name]
            exe = outdir / name
            subprocess.run([need(compiler, package), flag, "-O1", "-o", str(exe), str(source)], check=True)
            built[name] = str(exe)
        return built[name]

    return build


@pytest.fixture(scope="session")
def go_programs(tmp_path_factory):
    """{"program": PROGRAM_GO, "threads": THREADS_GO, "replace": REPLACE_GO} built with
    CGO_ENABLED=0, once per session."""
    go = need("go", "golang-go")
    build = tmp_path_factory.mktemp("trace-go")
    env = dict(os.environ, HOME=str(build), GOCACHE=str(build / "cache"), GOPATH=str(build / "gopath"),
               GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="", CGO_ENABLED="0")
    programs = {}
    for name, source in [("program", PROGRAM_GO), ("threads", THREADS_GO), ("replace", REPLACE_GO)]:
        (build / f"{name}.go").write_text(source)
        r = subprocess.run([go, "build", "-o", name, f"{name}.go"], cwd=build, env=env, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        programs[name] = str(build / name)
    return programs


@pytest.fixture
def program(request, c_program):
    """The C_BUILDS build of PROGRAM_C named by the test's parameter, or ("go") PROGRAM_GO; Go is
    only built (or skipped for) when asked for."""
    if request.param == "go":
        return request.getfixturevalue("go_programs")["program"]
    return c_program(request.param)


@pytest.fixture
def port():
    """A local TCP listener that greets each connection with a line and closes it."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:  # shut down: the test is over
                return
            with conn:
                try:
                    conn.sendall(b"hello\n")
                except OSError:
                    pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    yield srv.getsockname()[1]
    srv.shutdown(socket.SHUT_RDWR)
    srv.close()
    server.join()


def run_both_ways(tmp_path, argv, *options):
    """Runs argv bare, then under `preload run OPTIONS`, each in a fresh directory of its own; the
    exit code and stdout must be the same. Returns (agent's CompletedProcess, its cwd, its events)."""
    runs = {}
    for mode in ("bare", "agent"):
        cwd = tmp_path / mode
        cwd.mkdir()
        if mode == "bare":
            runs[mode] = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                                        timeout=60)
        else:
            runs[mode] = preload("run", *options, "--", *argv, state_dir=tmp_path / "state", cwd=cwd,
                                 stdin=subprocess.DEVNULL, timeout=60)
    bare, agent = runs["bare"], runs["agent"]
    assert (agent.returncode, agent.stdout) == (bare.returncode, bare.stdout), agent.stderr
    return agent, os.path.realpath(tmp_path / "agent"), events(tmp_path / "state")


def start_of(evts, exe, argv, attach="ptrace", ppid=None):
    """The one process start of exe with this argv; checked: attached as said and reported by that
    side, its cmdline, its parent."""
    starts = [e for e in of_type(evts, "execve", **{"evt.dir": "<", "evt.res": "SUCCESS"})
              if e["proc.exepath"] == os.path.realpath(exe)]
    found = [e for e in starts if e["preload.argv"] == list(argv)]
    assert len(found) == 1, f"{len(found)} starts of {exe} {argv} among {starts}"
    e = found[0]
    assert (e["preload.attach"], e["evt.source"]) == (attach, attach)
    assert e["proc.cmdline"] == " ".join([os.path.basename(argv[0]), *argv[1:]])
    if ppid is not None:
        assert e["proc.ppid"] == ppid
    return e


def exec_attempts(evts, pid):
    return [(e["evt.source"], e["evt.arg.filename"], e["preload.argv"])
            for e in of_type(evts, "execve", **{"evt.dir": ">", "proc.pid": pid})]


def opens_of(evts, pid, name):
    return [e for e in evts if e["evt.type"] in OPENS and e["proc.pid"] == pid and e["fd.name"] == name]


def assert_written(evts, pid, path):
    """One open for writing of path (absolute) by pid, from the tracer; returns it."""
    (w,) = opens_of(evts, pid, path)
    assert "O_WRONLY" in w["evt.arg.flags"].split("|")
    assert (w["evt.source"], w["evt.res"], w["evt.is_open_write"]) == ("ptrace", "SUCCESS", True)
    assert (w["fd.directory"], w["fd.filename"]) == os.path.split(path)
    return w


def assert_connected(evts, pid, port, res=("SUCCESS",)):
    (c,) = of_type(evts, "connect", **{"proc.pid": pid})
    assert (c["evt.source"], c["fd.l4proto"], c["fd.rip"], c["fd.rport"]) == ("ptrace", "tcp", "127.0.0.1", port)
    assert (c["fd.sip"], c["fd.sport"]) == ("127.0.0.1", port)
    assert c["evt.res"] in res


def check_program_run(evts, program, argv, cwd, port, child, ppid=None):
    """PROGRAM_C or PROGRAM_GO ran with argv (child: the command it was given) and was traced:
    returns (its pid, its child's pid)."""
    start = start_of(evts, program, argv, ppid=ppid)
    pid = start["proc.pid"]
    assert start["proc.cwd"] == cwd
    # the exec: attempted by the forked child, which then starts as the command, traced too
    kid = start_of(evts, child[0], child, ppid=pid)["proc.pid"]
    assert exec_attempts(evts, kid) == [("ptrace", child[0], child)]
    assert assert_written(evts, pid, os.path.join(cwd, "out.txt"))["evt.arg.mode"] == 0o640
    # Go's net.Dial connects a non-blocking socket: the call itself may return EINPROGRESS
    go = elf.classify(program).kind == "go"
    assert_connected(evts, pid, port, res=("SUCCESS", "EINPROGRESS") if go else ("SUCCESS",))
    return pid, kid


@pytest.mark.parametrize("program", list(C_BUILDS), indirect=True)
def test_static_c_program_exec_write_and_connect_are_reported(tmp_path, program, port):
    argv = [program, "out.txt", str(port), "/bin/echo", "child", "says", "hi"]
    r, cwd, evts = run_both_ways(tmp_path, argv)
    assert r.returncode == 3
    assert r.stdout.splitlines()[:3] == [b"child says hi", b"child exit 0", b"connect 0"]
    check_program_run(evts, program, argv, cwd, port, argv[3:])
    # the default profile does not stop for read-only opens
    assert not [e for e in evts if e.get("fd.name") == "/etc/hostname"]


def test_go_program_exec_write_and_connect_are_reported(tmp_path, go_programs, port):
    program = go_programs["program"]
    argv = [program, "out.txt", str(port), "/bin/echo", "child", "says", "hi"]
    r, cwd, evts = run_both_ways(tmp_path, argv)
    assert r.returncode == 6
    assert r.stdout.splitlines()[:2] == [b'child "child says hi\\n" <nil>', b"dial <nil>"]
    check_program_run(evts, program, argv, cwd, port, argv[3:])
    assert not [e for e in evts if e.get("fd.name") == "/etc/hostname"]


@pytest.mark.parametrize("program", [*C_BUILDS, "go"], indirect=True)
def test_full_trace_profile_reports_read_only_opens_of_traced_program(tmp_path, program, port):
    argv = [program, "out.txt", str(port), "/bin/echo", "hi"]
    _, cwd, evts = run_both_ways(tmp_path, argv, "--trace-profile", "full")
    pid, _ = check_program_run(evts, program, argv, cwd, port, argv[3:])
    (read,) = opens_of(evts, pid, "/etc/hostname")
    assert read["evt.arg.flags"].split("|")[0] == "O_RDONLY"
    assert (read["evt.source"], read["evt.res"], read["evt.is_open_read"], read["evt.is_open_write"]) == \
        ("ptrace", "SUCCESS", True, False)


def test_go_program_writing_from_many_threads_while_execing_has_every_write_and_the_exec_reported(
        tmp_path, go_programs):
    program = go_programs["threads"]
    argv = [program, "/bin/echo", "from", "a", "goroutine"]
    r, cwd, evts = run_both_ways(tmp_path, argv)
    assert (r.returncode, r.stdout.decode()) == (4, f'writers on {WRITERS} threads; exec "from a goroutine\\n" <nil>\n')
    pid = start_of(evts, program, argv)["proc.pid"]
    kid = start_of(evts, "/bin/echo", argv[1:], ppid=pid)["proc.pid"]
    assert exec_attempts(evts, kid) == [("ptrace", "/bin/echo", argv[1:])]
    # every write, each once, reported as the process's (not as the thread's) with the tracer as source
    written = sorted(e["fd.name"] for e in evts if e["evt.type"] in OPENS and e.get("evt.is_open_write"))
    assert written == sorted(os.path.join(cwd, f"w-{i}-{j}.txt") for i in range(WRITERS) for j in range(FILES))
    for i in range(WRITERS):
        for j in range(FILES):
            assert_written(evts, pid, os.path.join(cwd, f"w-{i}-{j}.txt"))


def test_go_program_exec_in_place_from_a_non_leader_thread_keeps_its_pid_while_others_write(
        tmp_path, go_programs):
    program = go_programs["replace"]
    argv = [program, "/bin/echo", "replaced"]
    r, cwd, evts = run_both_ways(tmp_path, argv)
    assert (r.returncode, r.stdout) == (0, b"exec from the leader thread: false\nreplaced\n")
    start = start_of(evts, program, argv)
    pid = start["proc.pid"]
    assert exec_attempts(evts, pid) == [("ptrace", "/bin/echo", argv[1:])]
    # the new image has the process's pid and parent, not the exec'ing thread's id
    assert start_of(evts, "/bin/echo", argv[1:], ppid=start["proc.ppid"])["proc.pid"] == pid
    # every writer's first write came before the exec; every write is the process's
    writes = [e for e in evts if e["evt.type"] in OPENS and e.get("evt.is_open_write")]
    assert {(e["proc.pid"], e["evt.source"], e["proc.exepath"]) for e in writes} == \
        {(pid, "ptrace", os.path.realpath(program))}
    assert {os.path.join(cwd, f"r-{i}-0.txt") for i in range(WRITERS)} <= {e["fd.name"] for e in writes}


def not_traced(evts, pid):
    """pid's events that did not come from the tracer."""
    return [(e["evt.type"], e["evt.source"]) for e in evts
            if e.get("proc.pid") == pid and e["evt.source"] != "ptrace"]


BUSYBOX_SCRIPT = "busybox cat /etc/hostname > copy.txt; busybox nc 127.0.0.1 {port}; exit 5"


@pytest.mark.parametrize("shell", [["busybox", "sh"], ["sh"]], ids=["busybox-sh", "hooked-sh"])
def test_busybox_applets_are_traced_started_directly_or_from_a_hooked_shell(tmp_path, port, shell):
    busybox = need("busybox", "busybox-static")
    argv = [*shell, "-c", BUSYBOX_SCRIPT.format(port=port)]
    r, cwd, evts = run_both_ways(tmp_path, argv)
    assert (r.returncode, r.stdout) == (5, b"hello\n")
    with open(os.path.join(cwd, "copy.txt"), "rb") as copy, open("/etc/hostname", "rb") as original:
        assert copy.read() == original.read()
    hooked = shell == ["sh"]
    sh = start_of(evts, "/bin/sh" if hooked else busybox, argv, attach="preload" if hooked else "ptrace")
    # the shell opens the redirection itself, then forks and execs busybox for each applet
    (w,) = opens_of(evts, sh["proc.pid"], os.path.join(cwd, "copy.txt"))
    assert (w["evt.source"], w["evt.res"], w["evt.is_open_write"]) == (sh["evt.source"], "SUCCESS", True)
    cat = start_of(evts, busybox, ["busybox", "cat", "/etc/hostname"], ppid=sh["proc.pid"])
    nc = start_of(evts, busybox, ["busybox", "nc", "127.0.0.1", str(port)], ppid=sh["proc.pid"])
    for applet in (cat, nc):
        # one exec attempt each, by the shell's fork: seen by the hook in dash (which hands the
        # program over to the tracer), by the tracer in busybox sh
        ((source, _, args),) = exec_attempts(evts, applet["proc.pid"])
        assert (source, args) == (sh["evt.source"], applet["preload.argv"])
        assert not_traced(evts, applet["proc.pid"]) == ([("execve", "preload")] if hooked else [])
    assert_connected(evts, nc["proc.pid"], port)


def test_static_program_started_by_hooked_shell_is_traced_as_the_shells_child(tmp_path, c_program, port):
    program = c_program("gcc-static")
    child = ["/bin/cat", "/etc/hostname"]
    argv = [program, "out.txt", str(port), *child]
    script = " ".join(argv) + '; echo "status $?"'
    r, cwd, evts = run_both_ways(tmp_path, ["sh", "-c", script])
    assert r.stdout.splitlines()[-1] == b"status 3"
    sh = start_of(evts, "/bin/sh", ["sh", "-c", script], attach="preload")
    pid, kid = check_program_run(evts, program, argv, cwd, port, child, ppid=sh["proc.pid"])
    # the hook saw the shell's fork exec it and handed it over: the exec is reported once, and
    # nothing of the static program or of its dynamic child comes from the hook
    assert exec_attempts(evts, pid) == [("preload", program, argv)]
    assert not_traced(evts, pid) == [("execve", "preload")]
    assert not_traced(evts, kid) == []


@pytest.mark.parametrize("program", ["gcc-static", "go"], indirect=True)
def test_dynamic_program_started_by_traced_program_is_traced_not_hooked(tmp_path, program, port):
    child = ["/bin/cat", "/etc/hostname"]
    argv = [program, "out.txt", str(port), *child]
    _, cwd, evts = run_both_ways(tmp_path, argv, "--trace-profile", "full")
    _, kid = check_program_run(evts, program, argv, cwd, port, child)
    assert [e["evt.source"] for e in opens_of(evts, kid, "/etc/hostname")] == ["ptrace"]
    assert [e for e in evts if e["evt.source"] == "preload"] == []


def test_dynamic_program_under_attach_ptrace_is_traced_with_its_children(tmp_path):
    script = ("import subprocess, sys\n"
              "with open('out.txt', 'w') as f: f.write('x')\n"
              "subprocess.run(['/bin/echo', 'child'])\n"
              "sys.exit(3)\n")
    argv = [sys.executable, "-c", script]
    r, cwd, evts = run_both_ways(tmp_path, argv, "--attach", "ptrace")
    assert (r.returncode, r.stdout) == (3, b"child\n")
    pid = start_of(evts, sys.executable, argv)["proc.pid"]
    assert_written(evts, pid, os.path.join(cwd, "out.txt"))
    start_of(evts, "/bin/echo", ["/bin/echo", "child"], ppid=pid)
    assert [e for e in evts if e["evt.source"] == "preload"] == []
