"""Rules in `preload run`: alerts in Falco's JSON format on stderr and in alerts.jsonl; rule files
checked before the application starts; `preload rules check` and `list`; alerts in the report."""
import json
import os

from agent import preload

SHADOW_RULE = """\
- macro: open_read
  condition: (evt.type in (open, openat, openat2) and evt.is_open_read=true and fd.num>=0)
- list: shadow_files
  items: [/etc/shadow, /etc/gshadow]
- rule: Shadow read
  desc: a read of the shadow files
  condition: open_read and fd.name in (shadow_files)
  output: shadow read (proc=%proc.name parent=%proc.pname user=%user.name file=%fd.name)
  priority: WARNING
  tags: [mitre_credential_access, T1003.008]
"""
BROKEN_RULE = """\
- rule: Broken
  desc: uses a field nobody has and an operator Falco does not know
  condition: evt.type = open and fd.name sameas /etc/shadow
  output: broken
  priority: WARNING
"""
FALCO_KEYS = {"time", "rule", "priority", "output", "output_fields", "source", "tags", "hostname"}


def _rules(tmp_path, text, name="rules.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _alerts(state):
    path = state / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_rule_match_is_a_falco_json_alert_on_stderr_and_in_the_alerts_log(tmp_path):
    rules = _rules(tmp_path, SHADOW_RULE)
    env = dict(os.environ, PRELOAD_ALERTS_STDERR="1")
    r = preload("run", "--rules", rules, "--", "sh", "-c", "cat /etc/shadow >/dev/null; cat /etc/hostname",
                state_dir=tmp_path / "state", env=env)
    assert r.returncode == 0
    logged = _alerts(tmp_path / "state")
    assert [a["rule"] for a in logged] == ["Shadow read"]
    a = logged[0]
    assert set(a) == FALCO_KEYS
    assert (a["priority"], a["source"], a["tags"]) == ("Warning", "syscall", ["mitre_credential_access", "T1003.008"])
    assert a["output_fields"] == {"proc.name": "cat", "proc.pname": "sh", "user.name": "root", "fd.name": "/etc/shadow"}
    assert a["output"].endswith("Warning shadow read (proc=cat parent=sh user=root file=/etc/shadow)")
    on_stderr = [json.loads(line) for line in r.stderr.splitlines() if line.startswith(b"{")]
    assert on_stderr == logged
    assert r.stdout == open("/etc/hostname", "rb").read()  # the application's own output is untouched


def test_no_alert_when_the_rule_does_not_match(tmp_path):
    rules = _rules(tmp_path, SHADOW_RULE)
    r = preload("run", "--rules", rules, "--", "cat", "/etc/hostname", state_dir=tmp_path / "state")
    assert r.returncode == 0
    assert _alerts(tmp_path / "state") == []


def test_alerts_stay_off_stderr_when_told(tmp_path):
    rules = _rules(tmp_path, SHADOW_RULE)
    r = preload("run", "--no-alerts-stderr", "--rules", rules, "--", "cat", "/etc/shadow",
                state_dir=tmp_path / "state", env=dict(os.environ, PRELOAD_ALERTS_STDERR="1"))
    assert r.returncode == 0 and r.stderr == b""
    assert len(_alerts(tmp_path / "state")) == 1


def test_broken_rules_file_stops_run_before_the_application_with_file_and_line(tmp_path):
    rules = _rules(tmp_path, BROKEN_RULE)
    marker = tmp_path / "ran"
    r = preload("run", "--rules", rules, "--", "touch", str(marker), state_dir=tmp_path / "state")
    assert r.returncode == 1
    assert f"{rules}:1: rule 'Broken':".encode() in r.stderr
    assert b"Traceback" not in r.stderr
    assert not marker.exists()


def test_broken_rules_file_is_skipped_when_told_and_the_good_rules_still_fire(tmp_path):
    good, bad = _rules(tmp_path, SHADOW_RULE), _rules(tmp_path, BROKEN_RULE, "bad.yaml")
    r = preload("run", "--skip-bad-rules", "--rules", good, "--rules", bad, "--", "cat", "/etc/shadow",
                state_dir=tmp_path / "state")
    assert r.returncode == 0
    assert [a["rule"] for a in _alerts(tmp_path / "state")] == ["Shadow read"]


def test_no_rules_means_no_alerts(tmp_path):
    r = preload("run", "--no-rules", "--", "cat", "/etc/shadow", state_dir=tmp_path / "state")
    assert r.returncode == 0
    assert _alerts(tmp_path / "state") == []


def test_rules_check_reports_problems_with_file_and_line_and_fails(tmp_path):
    bad = _rules(tmp_path, BROKEN_RULE)
    r = preload("rules", "check", bad, state_dir=tmp_path)
    assert r.returncode == 1
    assert r.stdout.startswith(f"{bad}:1: rule 'Broken': ".encode())
    assert b"Traceback" not in r.stdout + r.stderr


def test_rules_check_passes_a_good_file_and_says_what_loads(tmp_path):
    good = _rules(tmp_path, SHADOW_RULE)
    r = preload("rules", "check", good, state_dir=tmp_path)
    assert r.returncode == 0
    assert b"1 rules active, 0 skipped, 0 disabled, 0 problems" in r.stdout


def test_rules_check_lists_a_rule_on_a_field_we_cannot_provide_as_skipped(tmp_path):
    text = SHADOW_RULE + """\
- rule: Needs k8s
  desc: a field only Falco on a node has
  condition: evt.type = open and k8s.ns.name = default
  output: k8s
  priority: NOTICE
"""
    r = preload("rules", "check", _rules(tmp_path, text), state_dir=tmp_path)
    assert r.returncode == 0
    assert b"1 rules active, 1 skipped" in r.stdout
    assert b"skipped: Needs k8s" in r.stdout and b"k8s.ns.name" in r.stdout


def test_rules_list_shows_priority_tags_and_source_of_each_rule(tmp_path):
    good = _rules(tmp_path, SHADOW_RULE)
    r = preload("rules", "list", "--rules", good, "--format", "json", state_dir=tmp_path)
    assert r.returncode == 0
    assert json.loads(r.stdout) == [{"rule": "Shadow read", "priority": "WARNING",
                                     "tags": ["mitre_credential_access", "T1003.008"], "file": good,
                                     "line": 5, "state": "active"}]


def test_default_ruleset_is_in_effect_without_options(tmp_path):
    r = preload("rules", "list", "--format", "json", state_dir=tmp_path)
    assert r.returncode == 0
    rows = json.loads(r.stdout)
    assert rows and all(row["file"].endswith("default_rules.yaml") for row in rows)


def test_report_counts_alerts_by_rule_and_priority(tmp_path):
    rules = _rules(tmp_path, SHADOW_RULE)
    state = tmp_path / "state"
    assert preload("run", "--rules", rules, "--", "sh", "-c", "cat /etc/shadow; cat /etc/gshadow",
                   state_dir=state).returncode == 0
    r = preload("report", "--format", "json", state_dir=state)
    assert json.loads(r.stdout)["alerts"] == [{"rule": "Shadow read", "priority": "Warning", "count": 2}]
    text = preload("report", state_dir=state).stdout.decode()
    assert "Alerts (2)" in text and "Warning       Shadow read" in text


def _receiver():
    """A local HTTP receiver that keeps what it is posted."""
    import http.server
    import threading

    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((self.headers.get("Content-Type"), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def _stop_stats(state):
    from agent import events, of_type
    return of_type(events(state), "preload.daemon", **{"preload.state": "stop"})[-1]["preload.stats"]


def test_webhook_receives_each_alert_as_falco_posts_it(tmp_path):
    server, got = _receiver()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        r = preload("run", "--webhook", url, "--rules", _rules(tmp_path, SHADOW_RULE), "--",
                    "cat", "/etc/shadow", state_dir=tmp_path / "state")
    finally:
        server.shutdown()
    assert r.returncode == 0
    assert [(ctype, alert["rule"]) for ctype, alert in got] == [("application/json", "Shadow read")]
    assert got[0][1] == _alerts(tmp_path / "state")[0]
    assert _stop_stats(tmp_path / "state")["webhook"]["sent"] == 1


def test_dead_webhook_receiver_is_counted_and_harms_nothing(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    r = preload("run", "--webhook", f"http://127.0.0.1:{port}/", "--rules", _rules(tmp_path, SHADOW_RULE),
                "--", "cat", "/etc/shadow", state_dir=tmp_path / "state")
    assert (r.returncode, r.stdout) == (0, open("/etc/shadow", "rb").read())
    hook = _stop_stats(tmp_path / "state")["webhook"]
    assert hook["sent"] == 0 and hook["failed"] + hook["dropped"] == 1
    assert len(_alerts(tmp_path / "state")) == 1  # the log has it all the same


def test_bad_webhook_url_is_refused_before_the_application_starts(tmp_path):
    r = preload("run", "--webhook", "ftp://example/", "--", "true", state_dir=tmp_path / "state")
    assert r.returncode == 2
    assert b"--webhook" in r.stderr and b"Traceback" not in r.stderr
