"""Programs linked against musl: the hook built with musl-gcc sees them as it sees glibc ones."""
import errno
import os
import re
import socket
import subprocess

import pytest

from agent import events, of_type, preload as preload_cmd
from preload.elf import classify
from test_hook_safety import hook_functions, nm
from tools import plain

# exec a program through one entry point (spawners wait for it and print its status)
EXEC_C = r"""
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    if (argc < 4) return 2;
    const char *api = argv[1], *target = argv[2];
    char **args = argv + 3;
    pid_t pid;
    int st = 0;
    if (!strcmp(api, "execve")) execve(target, args, environ);
    else if (!strcmp(api, "execvp")) execvp(target, args);
    else if (!strcmp(api, "execvpe")) execvpe(target, args, environ);
    else if (!strcmp(api, "posix_spawn") || !strcmp(api, "posix_spawnp")) {
        int err = (api[11] ? posix_spawnp : posix_spawn)(&pid, target, NULL, NULL, args, environ);
        if (err || waitpid(pid, &st, 0) < 0) return 126;
        printf("status=%d\n", st);
        return 0;
    }
    perror(api);
    return 127;
}
"""
EXEC_APIS = ["execve", "execvp", "execvpe", "posix_spawn", "posix_spawnp"]
OPEN_APIS = ["open", "openat", "creat", "fopen", "freopen"]  # musl's headers map the *64 names to these
# libgcc and crt files may reference these weakly; nothing calls them
WEAK_OK = {"_ITM_deregisterTMCloneTable", "_ITM_registerTMCloneTable", "__gmon_start__",
           "__cxa_finalize"}


def printed(cp):
    return {k.decode(): int(v) for k, v in re.findall(rb"(\w+)=(-?\d+)", cp.stdout)}


# ---- linking ----

def test_musl_hook_exports_only_hook_functions(musl_hook):
    exported = set(nm(musl_hook, "--defined-only"))
    assert {"open", "openat", "fopen", "execve", "execvp", "execvpe", "posix_spawn", "connect",
            "close"} <= exported
    assert exported <= hook_functions()


def test_musl_hook_imports_only_what_musl_libc_defines(musl_hook, musl_cc):
    libc = classify(musl_cc("open_variants.c")).interpreter  # musl's loader is its libc too
    undefined = set(nm(musl_hook, "--undefined-only"))
    assert undefined
    assert undefined - WEAK_OK <= set(nm(libc, "--defined-only"))
    needed = subprocess.run(["readelf", "-d", musl_hook], capture_output=True, text=True, check=True).stdout
    assert re.findall(r"\(NEEDED\).*\[(.*)\]", needed) == ["libc.so"]


# ---- behaviour ----

@pytest.mark.parametrize("api", OPEN_APIS)
def test_musl_program_open_is_recorded_with_an_absolute_path(musl_collector, musl_cc, tmp_path, api):
    (tmp_path / "file.txt").write_text("content\n")
    mode = "w" if api == "creat" else "r"
    cp, _ = musl_collector.run([musl_cc("open_variants.c"), api, "file.txt", mode], cwd=tmp_path)
    assert cp.returncode == 0, cp
    (rec,) = musl_collector.records_of("open", path=str(tmp_path / "file.txt"))
    assert rec["api"] == api
    assert rec["res"] == printed(cp)["res"] >= 0


def test_musl_program_failed_open_reports_errno(musl_collector, musl_cc, tmp_path):
    missing = tmp_path / "no-such-dir" / "file.txt"
    cp, _ = musl_collector.run([musl_cc("open_variants.c"), "open", str(missing), "r"])
    assert printed(cp) == {"res": -1, "errno": errno.ENOENT}
    (rec,) = musl_collector.records_of("open", path=str(missing))
    assert rec["res"] == -errno.ENOENT


def test_musl_program_sees_the_same_errno_and_output_as_plain(musl_collector, musl_cc, tmp_path):
    argv = [musl_cc("errno_probe.c"), "fail", str(tmp_path)]
    hooked, _ = musl_collector.run(argv)
    assert musl_collector.records_of("open", res=-errno.ENOENT)  # the hook was there
    assert b"open errno=2\n" in hooked.stdout
    bare = plain(argv)
    assert (hooked.stdout, hooked.stderr, hooked.returncode) == (bare.stdout, bare.stderr, bare.returncode)


def test_musl_program_connect_is_recorded_with_both_ends(musl_collector, musl_cc):
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        cp, _ = musl_collector.run([musl_cc("net.c"), "connect", "inet", "127.0.0.1", str(port)])
        out = printed(cp)
        assert out["res"] == 0, cp
    (rec,) = musl_collector.records_of("net", api="connect")
    assert (rec["fd"], rec["res"], rec["family"]) == (out["fd"], 0, socket.AF_INET)
    assert (rec["raddr"], rec["rport"]) == ("127.0.0.1", port)
    assert (rec["laddr"], rec["lport"]) == ("127.0.0.1", out["local_port"])


@pytest.mark.parametrize("api", EXEC_APIS)
def test_musl_program_exec_is_recorded_and_the_child_watched(musl_collector, musl_cc, tmp_path, api):
    prog = musl_cc("exec.c", source=EXEC_C)
    child = musl_cc("open_variants.c")
    target = os.path.basename(child) if api.endswith("p") or api == "execvpe" else child
    args = ["open_variants", "open", "/etc/hostname", "r"]
    env = dict(os.environ, PATH=os.path.dirname(child))
    cp, _ = musl_collector.run([prog, api, target, *args], env=env)
    assert cp.returncode == 0 and cp.stderr == b"", cp
    assert b"res=3 errno=0\n" in cp.stdout
    (me,) = musl_collector.records_of("start", exe=prog)
    assert me["argv"] == [prog, api, target, *args]
    (attempt,) = musl_collector.records_of("exec")
    assert (attempt["api"], attempt["path"], attempt["argv"]) == (api, child, args)
    assert attempt["pid"] == me["pid"]
    (started,) = musl_collector.records_of("start", exe=child)
    assert started["argv"] == args
    assert musl_collector.records_of("open", pid=started["pid"], path=os.path.realpath("/etc/hostname"))


def test_musl_program_forking_while_threads_use_hooked_calls_never_deadlocks(musl_collector, musl_cc,
                                                                              tmp_path):
    nforks = 100
    cp, _ = musl_collector.run([musl_cc("fork_storm.c"), str(tmp_path), str(nforks), "3"])
    assert cp.returncode == 0, cp
    *pids, done = cp.stdout.decode().split()
    assert done == "done" and len(pids) == nforks
    for i, pid in enumerate(map(int, pids)):
        assert len(musl_collector.records_of("open", path=str(tmp_path / f"child-{i}"), pid=pid)) == 1
        assert len(musl_collector.records_of("end", pid=pid)) == 1


def test_preload_run_watches_musl_programs_in_a_tree_with_glibc_ones(musl_cc, tmp_path):
    """glibc sh starts musl programs, one of which execs glibc cat: each gets its libc's hook."""
    opener, execer = musl_cc("open_variants.c"), musl_cc("exec.c", source=EXEC_C)
    (tmp_path / "file.txt").write_text("content\n")
    cat = os.path.realpath("/bin/cat")
    script = f"{opener} open file.txt r; {execer} execve {cat} cat file.txt"
    r = preload_cmd("run", "--", "sh", "-c", script, state_dir=tmp_path / "state", cwd=tmp_path)
    bare = plain(["sh", "-c", script], cwd=tmp_path)
    assert (r.returncode, r.stdout, r.stderr) == (0, bare.stdout, b"")
    evts = events(tmp_path / "state")
    # the exec replaces the musl execer by cat in the same process: one start each
    done = of_type(evts, "execve", **{"evt.dir": "<", "evt.res": "SUCCESS"})
    started = {e["proc.exepath"]: e for e in done}
    assert started[opener]["proc.cmdline"] == "open_variants open file.txt r"
    assert started[execer]["proc.cmdline"] == f"exec execve {cat} cat file.txt"
    assert started[cat]["proc.cmdline"] == "cat file.txt"
    assert all(started[p]["preload.attach"] == "preload" for p in (opener, execer, cat))
    path = str(tmp_path / "file.txt")
    for exe in (opener, cat):
        assert [e for e in evts if e.get("fd.name") == path and e["proc.exepath"] == exe
                and e["evt.type"] in ("open", "openat")], exe
    assert of_type(evts, "execve", **{"proc.exepath": execer, "evt.dir": ">"})


PROBE_C = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(void)
{
    /* programs look up what newer libcs have, and call it when found */
    void (*closefrom_)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "closefrom");
    if (closefrom_) closefrom_(100);
    puts("done");
    return 0;
}
"""


def test_musl_program_probing_for_a_function_musl_lacks_does_not_hang(musl_collector, musl_cc):
    cp, _ = musl_collector.run([musl_cc("probe.c", source=PROBE_C)], timeout=10)
    assert (cp.returncode, cp.stdout) == (0, b"done\n")


def test_musl_program_probing_its_fds_finds_the_same_ones_as_without_the_hook(musl_collector, musl_cc):
    argv = [musl_cc("fd_probe.c"), "/etc/hostname"]
    hooked, _ = musl_collector.run(argv)
    assert musl_collector.records_of("open", path=os.path.realpath("/etc/hostname"))
    assert (hooked.returncode, hooked.stdout) == (0, plain(argv).stdout)
