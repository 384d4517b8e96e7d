"""preload.report on small hand-written logs that follow docs/events.md."""
import json

import pytest

from preload import report

O_READ = {"evt.arg.flags": "O_RDONLY", "evt.is_open_read": True, "evt.is_open_write": False}
O_WRITE = {"evt.arg.flags": "O_WRONLY|O_CREAT|O_TRUNC", "evt.arg.mode": "0644",
           "evt.is_open_read": False, "evt.is_open_write": True}


def image(pid, ppid, exe, cmdline, stream):
    """The proc.* fields of one process image, and its stream."""
    return {"proc.pid": pid, "proc.ppid": ppid, "proc.name": exe.rsplit("/", 1)[1],
            "proc.exepath": exe, "proc.cmdline": cmdline, "proc.cwd": "/", "user.uid": 0,
            "preload.stream": stream}


class Writer:
    """Builds a log: times advance by 1 ms per event, seq runs per stream (skip= makes a gap)."""

    def __init__(self, path):
        self.path, self.lines, self.seqs, self.ms = path, [], {}, 0

    def event(self, typ, proc, fields=(), skip=0):
        self.ms += 1
        ev = {"time": f"2026-11-27T05:40:00.{self.ms:03d}000000Z", "evt.type": typ,
              "evt.source": "preload", **proc, **dict(fields)}
        if "preload.stream" in proc and "preload.seq" not in proc:
            self.seqs[proc["preload.stream"]] = self.seqs.get(proc["preload.stream"], 0) + 1 + skip
            ev["preload.seq"] = self.seqs[proc["preload.stream"]]
        self.lines.append(json.dumps(ev))

    def start(self, proc, argv):
        self.event("execve", proc, {"evt.dir": "<", "evt.res": "SUCCESS", "preload.argv": argv,
                                    "preload.attach": "preload"})

    def attempt(self, proc, filename, argv, api="execve"):
        self.event("execve", proc, {"evt.dir": ">", "evt.arg.filename": filename,
                                    "preload.argv": argv, "preload.api": api})

    def open(self, proc, path, mode=O_READ, res="SUCCESS", fd=3, skip=0):
        self.event("openat", proc, {"preload.api": "open", "fd.name": path,
                                    "fd.directory": path.rsplit("/", 1)[0] or "/",
                                    "fd.filename": path.rsplit("/", 1)[1], "fd.typechar": "f",
                                    "fd.num": fd if res == "SUCCESS" else -1, "evt.res": res,
                                    **mode}, skip)

    def end(self, proc, failed_sends=0):
        self.event("preload.end", proc, {"preload.failed_sends": failed_sends,
                                         "preload.end_reason": "exit"})

    def daemon(self, state, **fields):
        self.event("preload.daemon", {"proc.pid": 9, "proc.exepath": "/usr/bin/python3"},
                   {"evt.source": "daemon", "preload.state": state, **fields})

    def write(self, extra_lines=()):
        self.path.write_text("\n".join([*self.lines, *extra_lines]) + "\n")
        return self.path


SH = image(4711, 4700, "/usr/bin/dash", "sh -c cat /etc/hostname; python3 -c ...", "a1")
CAT_FORK = image(4712, 4711, "/usr/bin/dash", SH["proc.cmdline"], "a2")
CAT = image(4712, 4711, "/usr/bin/cat", "cat /etc/hostname", "a3")
PY_FORK = image(4713, 4711, "/usr/bin/dash", SH["proc.cmdline"], "a4")
PY = image(4713, 4711, "/usr/bin/python3.11", "python3 -c ...", "a5")
LS = image(4714, 4713, "/usr/bin/ls", "ls /", "a6")
SH_ID = image(4715, 4713, "/usr/bin/dash", "sh -c id", "a7")
ID_FORK = image(4716, 4715, "/usr/bin/dash", "sh -c id", "a8")
ID = image(4716, 4715, "/usr/bin/id", "id", "a9")
PY_CHILD = image(4717, 4713, "/usr/bin/python3.11", "python3 -c ...", "b1")
BUSYBOX_FORK = image(4718, 4711, "/usr/bin/dash", SH["proc.cmdline"], "b2")


def container_log(path):
    """sh runs cat and python3; python3 spawns ls and `sh -c id`, forks a child that writes a log,
    opens, connects, listens, fails to exec `nosuch`, spawns a static binary; sh also execs a static
    busybox in a fork. python3 loses two records; the daemon restarts once."""
    w = Writer(path)
    w.daemon("start")
    w.start(SH, ["sh", "-c", "cat /etc/hostname; python3 -c ..."])
    w.attempt(CAT_FORK, "/usr/bin/cat", ["cat", "/etc/hostname"], api="execve")
    w.start(CAT, ["cat", "/etc/hostname"])
    w.open(CAT, "/etc/hostname")
    w.end(CAT)
    w.attempt(PY_FORK, "/usr/bin/python3", ["python3", "-c", "..."])
    w.start(PY, ["python3", "-c", "..."])
    w.open(PY, "/usr/lib/python3.11/os.py")
    w.event("preload.repeats", PY, {"fd.name": "/usr/lib/python3.11/os.py", "evt.count": 4,
                                    "evt.res": "SUCCESS"})
    w.open(PY, "/tmp/out.txt", O_WRITE)
    w.open(PY, "/etc/shadow", res="EACCES", skip=2)  # the two records before it were lost
    w.event("connect", PY, {"fd.num": 5, "fd.typechar": "4", "fd.type": "ipv4",
                            "fd.l4proto": "tcp", "fd.lip": "172.17.0.2", "fd.lport": 40312,
                            "fd.rip": "93.184.216.34", "fd.rport": 443,
                            "fd.cip": "172.17.0.2", "fd.cport": 40312,
                            "fd.sip": "93.184.216.34", "fd.sport": 443,
                            "fd.name": "172.17.0.2:40312->93.184.216.34:443",
                            "evt.res": "SUCCESS"})
    for call in ("bind", "listen"):
        w.event(call, PY, {"fd.num": 6, "fd.typechar": "4", "fd.type": "ipv4",
                           "fd.l4proto": "tcp", "fd.lip": "0.0.0.0", "fd.lport": 8080,
                           "evt.res": "SUCCESS"})
    w.attempt(PY, "/usr/bin/ls", ["ls", "/"], api="posix_spawnp")
    w.start(LS, ["ls", "/"])
    w.attempt(PY, "/bin/sh", ["sh", "-c", "id"], api="system")
    w.start(SH_ID, ["sh", "-c", "id"])
    w.attempt(ID_FORK, "/usr/bin/id", ["id"])
    w.start(ID, ["id"])
    w.open(PY_CHILD, "/tmp/child.log", O_WRITE)
    w.attempt(PY, "nosuch", ["nosuch"], api="execvp")
    w.event("execve", PY, {"evt.dir": "<", "evt.res": "ENOENT", "evt.arg.filename": "nosuch",
                           "preload.argv": ["nosuch"], "preload.api": "execvp"})
    w.attempt(PY, "/opt/probe", ["/opt/probe", "-q"], api="posix_spawn")
    w.event("preload.blindspot", PY, {"preload.reason": "statically linked: the hook cannot load",
                                      "evt.arg.filename": "/opt/probe",
                                      "preload.binary": "static"})
    w.daemon("restart", **{"preload.gap_seconds": 2.5})
    w.attempt(BUSYBOX_FORK, "/bin/busybox", ["busybox", "sh"])
    w.event("preload.blindspot", BUSYBOX_FORK, {"preload.reason": "statically linked",
                                                "evt.arg.filename": "/bin/busybox",
                                                "preload.binary": "static-pie"})
    w.end(PY, failed_sends=2)
    w.daemon("stop", **{"preload.stats": {"received": 40, "rejected": {"short": 1},
                                          "refused": 0}})
    return w


@pytest.fixture
def summary(tmp_path):
    return report.summarize(report.load([container_log(tmp_path / "events.jsonl").write()]))


def test_process_tree_links_children_started_by_fork_exec_spawn_and_system(summary):
    tree = summary["logs"][0]
    procs = tree["processes"]
    assert tree["roots"] == [4711]
    assert procs["4711"]["children"] == [4712, 4713, 4718]
    assert procs["4713"]["children"] == [4714, 4715, 4717]
    assert procs["4715"]["children"] == [4716]
    assert procs["4716"]["exe"] == "/usr/bin/id"
    assert procs["4716"]["attach"] == "preload"
    assert procs["4712"]["cmdline"] == "cat /etc/hostname"
    assert [i["exe"] for i in procs["4712"]["images"]] == ["/usr/bin/cat"]


def test_static_binary_run_by_execve_is_an_image_without_attachment(summary):
    busybox = summary["logs"][0]["processes"]["4718"]
    assert (busybox["exe"], busybox["cmdline"], busybox["attach"]) == \
        ("/bin/busybox", "busybox sh", "none")


def test_forked_child_that_never_execd_is_shown_from_its_own_events(summary):
    child = summary["logs"][0]["processes"]["4717"]
    assert child["ppid"] == 4713
    assert child["exe"] == "/usr/bin/python3.11"
    # it runs its parent's image, hook included: its events came from the hook
    assert (child["attach"], child["images"]) == ("preload", [])


def test_a_pid_that_execs_again_shows_its_latest_image_and_keeps_the_earlier(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    sh = image(50, 1, "/usr/bin/dash", "sh -c exec sleep 1", "s1")
    w.start(sh, ["sh", "-c", "exec sleep 1"])
    w.attempt(sh, "/usr/bin/sleep", ["sleep", "1"])
    w.start(image(50, 1, "/usr/bin/sleep", "sleep 1", "s2"), ["sleep", "1"])
    proc = report.summarize(report.load([w.write()]))["logs"][0]["processes"]["50"]
    assert proc["cmdline"] == "sleep 1"
    assert [i["exe"] for i in proc["images"]] == ["/usr/bin/dash", "/usr/bin/sleep"]


def test_exec_attempt_is_matched_by_time_not_log_order(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    parent = image(60, 1, "/usr/bin/dash", "sh", "p1")
    w.start(parent, ["sh"])
    w.attempt(parent, "/usr/bin/env", ["env"], api="posix_spawn")
    w.start(image(61, 60, "/usr/bin/env", "env", "p2"), ["env"])
    w.lines[-2], w.lines[-1] = w.lines[-1], w.lines[-2]  # the daemon wrote the start first
    programs = report.summarize(report.load([w.write()]))["programs"]
    assert programs["unstarted"] == []
    assert programs["executed"] == {"/usr/bin/dash": 1, "/usr/bin/env": 1}


def test_programs_count_starts_and_keep_failures_apart_from_blind_spots(summary):
    programs = summary["programs"]
    assert programs["executed"] == {"/usr/bin/dash": 2, "/usr/bin/cat": 1,
                                    "/usr/bin/id": 1, "/usr/bin/ls": 1,
                                    "/usr/bin/python3.11": 1}
    assert programs["failed"] == [{"filename": "nosuch", "error": "ENOENT", "count": 1}]
    assert programs["unstarted"] == []
    assert [(b["pid"], b["filename"], b["binary"]) for b in summary["loss"]["blindspots"]] == \
        [(4713, "/opt/probe", "static"), (4718, "/bin/busybox", "static-pie")]


def test_exec_attempt_with_no_start_and_no_blind_spot_is_unstarted(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    sh = image(70, 1, "/usr/bin/dash", "sh", "u1")
    w.start(sh, ["sh"])
    w.attempt(sh, "/usr/bin/env", ["env", "-i", "curl", "x"], api="posix_spawn")
    programs = report.summarize(report.load([w.write()]))["programs"]
    assert programs["unstarted"] == [{"filename": "/usr/bin/env", "count": 1}]
    assert programs["failed"] == []


def test_file_opens_add_repeats_and_flag_writes_and_failures(summary):
    files = summary["files"]
    assert files["/usr/lib/python3.11/os.py"] == {"opens": 5, "write": False, "failures": {}}
    assert files["/tmp/out.txt"] == {"opens": 1, "write": True, "failures": {}}
    assert files["/tmp/child.log"]["write"] is True
    assert files["/etc/shadow"] == {"opens": 1, "write": False, "failures": {"EACCES": 1}}
    assert list(files)[0] == "/usr/lib/python3.11/os.py"  # most opened first


def test_network_lists_connections_client_to_server_and_listeners(summary):
    net = summary["network"]
    assert net["connections"] == [{"type": "connect", "exe": "/usr/bin/python3.11",
                                   "l4proto": "tcp", "client": "172.17.0.2",
                                   "server": "93.184.216.34:443", "result": "SUCCESS",
                                   "count": 1}]
    assert net["listeners"] == [{"exe": "/usr/bin/python3.11", "l4proto": "tcp",
                                 "address": "0.0.0.0:8080", "result": "SUCCESS",
                                 "bind": 1, "listen": 1}]


def test_unix_socket_endpoints_are_their_paths(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    app = image(80, 1, "/usr/bin/app", "app", "n1")
    w.event("connect", app, {"fd.typechar": "u", "fd.type": "unix", "fd.l4proto": "",
                             "fd.name": "/run/docker.sock", "evt.res": "ECONNREFUSED"})
    conn = report.summarize(report.load([w.write()]))["network"]["connections"][0]
    assert (conn["client"], conn["server"], conn["result"]) == \
        ("", "/run/docker.sock", "ECONNREFUSED")


def test_lost_records_are_counted_from_seq_gaps(summary):
    loss = summary["loss"]
    assert loss["lost"] == 2
    assert loss["streams_with_loss"] == [{"stream": "a5", "pid": 4713,
                                          "exe": "/usr/bin/python3.11", "lost": 2,
                                          "last_seq": loss["streams_with_loss"][0]["last_seq"]}]
    assert loss["failed_sends"] == 2
    assert loss["streams"] == 11


def test_late_and_duplicate_records_are_not_loss(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    app = image(90, 1, "/usr/bin/app", "app", "d1")
    for seq in (1, 3, 2, 2, 5):
        w.event("openat", {**app, "preload.seq": seq}, {"fd.name": f"/tmp/{seq}", **O_READ})
    log = report.summarize(report.load([w.write()]))
    assert log["loss"]["lost"] == 1  # only seq 4 never came
    assert log["loss"]["streams_with_loss"][0]["last_seq"] == 5


def test_daemon_restarts_and_stop_stats_are_reported(summary):
    assert [r["gap_seconds"] for r in summary["loss"]["daemon_restarts"]] == [2.5]
    assert summary["loss"]["daemon_stats"] == {"received": 40, "rejected": {"short": 1},
                                               "refused": 0}


def test_bad_lines_are_counted_and_reading_goes_on(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    app = image(91, 1, "/usr/bin/app", "app", "g1")
    w.open(app, "/etc/passwd")
    w.lines += ['{"time": "2026-11-27T05:40:01', "[1, 2]", "\x00\x01 garbage"]
    w.open(app, "/etc/group")
    log = report.load([w.write()])
    assert log.bad_lines == 3
    assert log.bad_examples == [f"{w.path}:2", f"{w.path}:3", f"{w.path}:4"]
    summary = report.summarize(log)
    assert summary["events"] == 2
    assert set(summary["files"]) == {"/etc/passwd", "/etc/group"}
    assert f"bad lines: 3 (first at {w.path}:2" in report.render_text(summary)


def test_undecodable_bytes_make_a_bad_line_not_an_error(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"evt.type": "open\xff"}\n{}\n')
    assert report.load([path]).bad_lines == 1


def test_odd_values_and_parent_loops_do_not_stop_the_report(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    w.start(image(5, 6, "/usr/bin/a", "a", "l1"), ["a"])  # 5 and 6 claim each other as parent
    w.start(image(6, 5, "/usr/bin/b", "b", "l2"), ["b"])
    w.event("preload.repeats", image("7", None, "/usr/bin/c", "c", "l3"),
            {"fd.name": "/x", "evt.count": "many"})
    w.daemon("stop", **{"preload.stats": {"received": 1, "rejected": 2}})
    w.daemon("stop", **{"preload.stats": {"received": 1, "rejected": {"short": 1}}})
    summary = report.summarize(report.load([w.write()]))
    assert summary["logs"][0]["roots"] == [5]
    assert summary["files"]["/x"]["opens"] == 0
    assert summary["loss"]["daemon_stats"] == {"received": 2, "rejected": 2}
    assert "  5 a" in report.render_text(summary) and "  └─ 6 b" in report.render_text(summary)


def test_missing_log_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        report.load([tmp_path / "nope.jsonl"])


def test_two_logs_merge_their_counters_and_keep_their_own_trees(tmp_path):
    logs = []
    for name, host in (("web", "/usr/sbin/nginx"), ("db", "/usr/bin/postgres")):
        w = Writer(tmp_path / f"{name}.jsonl")
        pid1 = image(1, 0, host, host.rsplit("/", 1)[1], f"{name}-1")
        w.start(pid1, [host])
        w.open(pid1, "/etc/passwd")
        logs.append(w.write())
    # a rotated log continues a stream of the first: its seqs carry on, nothing is lost
    w = Writer(tmp_path / "web.1.jsonl")
    w.seqs["web-1"] = 2
    w.open(image(1, 0, "/usr/sbin/nginx", "nginx", "web-1"), "/etc/hosts")
    logs.append(w.write())
    summary = report.summarize(report.load(logs))
    assert [log["path"] for log in summary["logs"]] == [str(p) for p in logs]
    assert [log["processes"]["1"]["exe"] for log in summary["logs"][:2]] == \
        ["/usr/sbin/nginx", "/usr/bin/postgres"]
    assert summary["files"]["/etc/passwd"]["opens"] == 2
    assert summary["events"] == 5
    assert summary["loss"]["lost"] == 0
    text = report.render_text(summary)
    assert f"Process tree ({logs[1]})" in text


def test_summary_is_json_ready(summary):
    assert json.loads(json.dumps(summary)) == summary  # str keys, lists, no tuples or sets
    assert report.render_text(json.loads(json.dumps(summary))) == report.render_text(summary)


def test_text_shows_tree_loss_writes_and_connections(summary):
    text = report.render_text(summary)
    tree = text.split("Process tree\n")[1].split("\n\n")[0].splitlines()
    assert [line.split("  [")[0].rstrip() for line in tree] == [
        "  4711 sh -c cat /etc/hostname; python3 -c ...",
        "  ├─ 4712 cat /etc/hostname",
        "  ├─ 4713 python3 -c ...",
        "  │  ├─ 4714 ls /",
        "  │  ├─ 4715 sh -c id",
        "  │  │  └─ 4716 id",
        "  │  └─ 4717 python3 -c ...",
        "  └─ 4718 busybox sh",
    ]
    assert tree[0].endswith("[preload]") and tree[-1].endswith("[none]")
    assert "Records lost: 2 (in 1 of 11 streams)" in text
    written = text.split("  written:\n")[1].split("  read:")[0]
    assert "/tmp/out.txt" in written and "/etc/hostname" not in written
    assert "172.17.0.2 → 93.184.216.34:443" in text
    assert "0.0.0.0:8080" in text
    assert "Blind spots: 2" in text and "Daemon restarts: 1" in text


def test_text_says_records_lost_0_when_nothing_was_lost(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    w.start(image(1, 0, "/usr/bin/app", "app", "z1"), ["app"])
    text = report.render_text(report.summarize(report.load([w.write()])))
    assert "  Records lost: 0\n" in text


def test_text_caps_long_file_listings(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    app = image(1, 0, "/usr/bin/app", "app", "c1")
    for i in range(report.TEXT_ROWS + 7):
        w.open(app, f"/data/{i}")
    summary = report.summarize(report.load([w.write()]))
    assert len(summary["files"]) == report.TEXT_ROWS + 7
    assert "… and 7 more" in report.render_text(summary)


def test_text_escapes_control_characters_from_the_log(tmp_path):
    w = Writer(tmp_path / "events.jsonl")
    w.start(image(1, 0, "/usr/bin/app", "app \x1b[2J\udcff", "e1"), ["app"])
    text = report.render_text(report.summarize(report.load([w.write()])))
    assert "\x1b" not in text and "app \\x1b[2J\\udcff" in text
