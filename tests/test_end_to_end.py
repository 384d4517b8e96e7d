"""What a user does: run a command under the agent, then read the report."""
import json
import os
import socket
import sys
import threading

from agent import events, of_type, preload

README_SCENARIO = ("cat /etc/hostname; python3 -c \"import os, subprocess; "
                   "subprocess.run(['ls', '/']); os.system('id')\"")


def _tree(summary):
    (log,) = summary["logs"]
    procs = {int(pid): p for pid, p in log["processes"].items()}
    return procs


def _names(procs, pid):
    return [os.path.basename(procs[c]["exe"]) for c in procs[pid]["children"]]


def test_readme_scenario_reports_the_tree_the_files_and_no_loss(tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    r = preload("run", "--", "sh", "-c", README_SCENARIO, state_dir=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert b"uid=" in r.stdout and r.stderr == b""

    rep = preload("report", "--format", "json", state_dir=tmp_path, env=env)
    assert rep.returncode == 0, rep.stderr
    summary = json.loads(rep.stdout)
    procs = _tree(summary)
    (root,) = [p for p in procs.values() if p["cmdline"].startswith("sh -c cat /etc/hostname")]
    assert root["attach"] == "preload"
    kids = _names(procs, root["pid"])
    assert "cat" in kids
    (py,) = [procs[c] for c in root["children"] if "python3" in os.path.basename(procs[c]["exe"])]
    grandkids = [procs[c] for c in py["children"]]
    assert any(p["cmdline"] == "ls /" for p in grandkids)
    (shell,) = [p for p in grandkids if p["cmdline"] == "sh -c id"]
    assert [procs[c]["cmdline"] for c in shell["children"]] == ["id"]
    assert summary["files"]["/etc/hostname"]["opens"] >= 1
    assert summary["loss"]["lost"] == 0
    assert summary["loss"]["blindspots"] == []

    text = preload("report", state_dir=tmp_path, env=env)
    assert text.returncode == 0
    out = text.stdout.decode()
    assert "Process tree" in out and "Records lost: 0" in out and "/etc/hostname" in out


def test_connection_and_listener_reach_the_report(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept()[0].close(), daemon=True).start()
    app = (f"import socket; s = socket.create_connection(('127.0.0.1', {port})); s.close(); "
           "l = socket.create_server(('127.0.0.1', 0)); print(l.getsockname()[1])")
    r = preload("run", "--", sys.executable, "-c", app, state_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    listen_port = int(r.stdout)
    evts = events(tmp_path)
    (conn,) = of_type(evts, "connect")
    assert (conn["fd.sip"], conn["fd.sport"], conn["fd.cip"], conn["fd.l4proto"]) == \
        ("127.0.0.1", port, "127.0.0.1", "tcp")
    assert conn["fd.name"] == f"127.0.0.1:{conn['fd.cport']}->127.0.0.1:{port}"
    summary = json.loads(preload("report", "--format", "json", state_dir=tmp_path).stdout)
    assert [(c["type"], c["server"]) for c in summary["network"]["connections"]] == \
        [("connect", f"127.0.0.1:{port}")]
    assert f"127.0.0.1:{listen_port}" in [listener["address"] for listener in summary["network"]["listeners"]]


def test_report_without_a_log_says_what_to_do(tmp_path):
    r = preload("report", state_dir=tmp_path / "empty")
    assert r.returncode == 1
    assert b"preload run" in r.stderr and b"Traceback" not in r.stderr


def test_inspect_tells_how_each_program_is_watched(tmp_path):
    r = preload("inspect", "/bin/sh", str(tmp_path / "missing"), state_dir=tmp_path)
    assert r.returncode == 1  # one path is missing
    out = r.stdout.decode()
    assert "dynamic-glibc" in out and "preload" in out and "missing" in out
    js = json.loads(preload("inspect", "--format", "json", "/bin/sh", state_dir=tmp_path).stdout)
    assert js[0]["attach"] == "preload"


def test_subshells_that_never_exec_keep_the_tree_whole(tmp_path):
    # $(...) forks a subshell that forks again for cat and never execs itself
    r = preload("run", "--", "bash", "-c", "x=$(cat /etc/hostname; true); echo \"$x\"", state_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(preload("report", "--format", "json", state_dir=tmp_path).stdout)
    (log,) = summary["logs"]
    procs = {int(pid): p for pid, p in log["processes"].items()}
    (root,) = log["roots"]
    assert procs[root]["exe"].endswith("bash")
    (cat,) = [p for p in procs.values() if p["cmdline"] == "cat /etc/hostname"]
    chain, pid = [], cat["ppid"]
    while pid in procs:
        chain.append(procs[pid]["exe"])
        pid = procs[pid]["ppid"]
    assert chain and all(exe.endswith("bash") for exe in chain)
