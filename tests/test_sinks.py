"""preload.sinks: the webhook against a real local HTTP receiver that checks alerts as
Falcosidekick does, and the OCSF 1.1.0 mappings."""
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from preload.sinks import ocsf
from preload.sinks.webhook import Webhook

PRIORITIES = {"emergency", "alert", "critical", "error", "warning", "notice", "informational", "info", "debug"}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)\Z")


def falco_alert(n=0, **over):
    a = {"time": f"2026-11-27T05:40:{n % 60:02d}.123456789Z", "rule": "Terminal shell in container",
         "priority": "Warning",
         "output": f"05:40:{n % 60:02d}.123456789: Warning A shell was spawned (n={n} proc.name=sh)",
         "output_fields": {"proc.name": "sh", "proc.pid": 100 + n, "user.name": "root", "n": n},
         "source": "syscall", "tags": ["container", "shell", "mitre_execution"], "hostname": "web-1"}
    a.update(over)
    return a


def sidekick_problem(body):
    """Why Falcosidekick's / endpoint would answer 400 (FalcoPayload.Check), or None."""
    try:
        a = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(a, dict):
        return "not an object"
    if not isinstance(a.get("priority"), str) or a["priority"].lower() not in PRIORITIES:
        return "priority"
    if not isinstance(a.get("rule"), str) or not a["rule"]:
        return "rule"
    t = a.get("time")
    if not isinstance(t, str) or not RFC3339.match(t):
        return "time"
    if not isinstance(a.get("output_fields"), dict) or not a["output_fields"]:
        return "output_fields"
    return None


class Receiver:
    """An HTTP server on 127.0.0.1 (ephemeral port) in a thread. mode: "ok" (200 to a valid
    alert, 400 otherwise, as Falcosidekick), "slow" (each request waits 5 s), "error" (500 to the
    first `errors` requests), "reject" (400 always), "hangup" (as "ok", but closes each
    connection after answering, without saying so)."""

    def __init__(self, mode="ok", errors=0, tls=None):
        self.mode, self.errors = mode, errors
        self.got, self.headers, self.rejected, self.requests = [], [], [], 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Falcosidekick

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.requests += 1
                    n = receiver.requests
                if receiver.mode == "slow":
                    receiver.release.wait(5)
                    return self.answer(200)
                if receiver.mode == "error" and n <= receiver.errors:
                    return self.answer(500)
                problem = sidekick_problem(body)
                if receiver.mode == "reject" or problem or self.headers.get("Content-Type") != "application/json":
                    with receiver.lock:
                        receiver.rejected.append(problem or "content-type")
                    return self.answer(400, b"Please send a valid request body\n")
                with receiver.lock:
                    receiver.got.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                self.answer(200)
                if receiver.mode == "hangup":  # close the kept-alive connection once idle
                    self.close_connection = True

            def answer(self, status, body=b""):
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (a test closing a sink)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(mode="ok", **kw):
        r = Receiver(mode, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def sinks():
    """Webhooks made through it are closed at the end, whatever the test did."""
    made = []

    def make(*args, **kw):
        w = Webhook(*args, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close(1)


def dead_url():
    """A port nobody listens on: connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def wait_for(cond, seconds=10):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def post_all(sink, alerts, seconds=60):
    """Post from another thread and count the returns: a post that blocks shows as missing ones
    (the generous bound is only there so that a blocking post fails the test instead of hanging)."""
    results = []
    t = threading.Thread(target=lambda: results.extend(sink.post(a) for a in alerts), daemon=True)
    t.start()
    t.join(seconds)
    return results


# the webhook


def test_alerts_arrive_as_falco_json(receiver, sinks):
    r = receiver()
    w = sinks(r.url)
    alerts = [falco_alert(i) for i in range(20)]
    assert all(w.post(a) for a in alerts)
    assert w.close(10)
    assert r.got == alerts  # in order, each exactly as given
    assert r.rejected == []
    assert w.stats() == {"sent": 20, "failed": 0, "dropped": 0, "retries": 0}
    h = r.headers[0]
    assert h["Content-Type"] == "application/json"
    assert h["User-Agent"].startswith("preload/")


def test_a_webhook_is_a_sink_and_takes_encoded_alerts(receiver, sinks):
    r = receiver()
    w = sinks(r.url)
    w(falco_alert(1))  # sinks are called with the alert
    w.post(json.dumps(falco_alert(2)).encode())
    assert w.close(10)
    assert r.got == [falco_alert(1), falco_alert(2)]


def test_an_alert_falcosidekick_refuses_is_failed_without_retries(receiver, sinks):
    r = receiver()
    w = sinks(r.url, backoff=0.01)
    w.post(falco_alert(1, output_fields={}))  # Falcosidekick's Check: no output_fields, 400
    w.post(falco_alert(2, priority="Loud"))
    w.post(falco_alert(3))
    assert w.close(10)
    assert r.rejected == ["output_fields", "priority"]
    assert w.stats() == {"sent": 1, "failed": 2, "dropped": 0, "retries": 0}


def test_server_errors_are_retried(receiver, sinks):
    r = receiver("error", errors=2)
    w = sinks(r.url, attempts=3, backoff=0.01)
    w.post(falco_alert(1))
    assert w.close(10)
    assert r.got == [falco_alert(1)]
    assert w.stats() == {"sent": 1, "failed": 0, "dropped": 0, "retries": 2}


def test_a_connection_the_receiver_closed_is_reopened_without_a_retry(receiver, sinks):
    r = receiver("hangup")
    w = sinks(r.url, attempts=1)
    for i in range(3):
        w.post(falco_alert(i))
        assert wait_for(lambda: len(r.got) == i + 1)
        time.sleep(0.05)  # the receiver's close reaches us while the connection is idle
    assert w.close(10)
    assert w.stats() == {"sent": 3, "failed": 0, "dropped": 0, "retries": 0}


def test_failed_sends_are_counted_after_their_retries(sinks):
    w = sinks(dead_url(), attempts=3, backoff=0.01)
    results = post_all(w, [falco_alert(i) for i in range(5)])
    assert results == [True] * 5  # queued: the receiver's fate is not the caller's
    assert wait_for(lambda: w.stats()["failed"] == 5)
    assert w.stats() == {"sent": 0, "failed": 5, "dropped": 0, "retries": 10}
    assert w.close(5)


def test_a_dead_receiver_does_not_block_post(sinks):
    w = sinks(dead_url(), queue_size=100, attempts=5, backoff=10)  # stuck in its first backoff
    results = post_all(w, [falco_alert(i) for i in range(1000)])
    assert len(results) == 1000
    accepted = results.count(True)
    assert 100 <= accepted <= 101  # the queue, and at most one taken by the sending thread
    assert w.stats()["dropped"] == results.count(False) == 1000 - accepted


def test_a_slow_receiver_does_not_block_post(receiver, sinks):
    r = receiver("slow")
    w = sinks(r.url)  # the defaults: 1000 queued, 2 s timeout
    results = post_all(w, [falco_alert(i) for i in range(2000)])
    assert len(results) == 2000  # every post returned while the receiver sat on the first one
    accepted = results.count(True)
    assert 1000 <= accepted <= 1001
    assert w.stats()["dropped"] == results.count(False) == 2000 - accepted
    assert w.stats()["sent"] == 0


def test_close_returns_within_its_timeout_and_accounts_for_every_alert(receiver, sinks):
    r = receiver("slow")
    w = sinks(r.url, timeout=30)  # a send that would hang far longer than close may take
    results = post_all(w, [falco_alert(i) for i in range(50)])
    assert wait_for(lambda: r.requests >= 1)  # the thread is inside a send
    start = time.monotonic()
    stopped = w.close(1.0)
    took = time.monotonic() - start
    assert stopped
    assert took < 1.5  # its timeout, and some scheduling slack
    s = w.stats()
    assert s["sent"] + s["failed"] + s["dropped"] == len(results) == 50
    assert s["failed"] == 1  # the send under way
    assert w.post(falco_alert(99)) is False  # closed
    assert w.stats()["dropped"] == s["dropped"] + 1


def test_close_on_an_idle_webhook_is_quick(receiver, sinks):
    r = receiver()
    w = sinks(r.url)
    start = time.monotonic()
    assert w.close(5)
    assert time.monotonic() - start < 1
    assert w.close(5)  # twice is fine


def test_close_drains_the_queue(receiver, sinks):
    r = receiver()
    w = sinks(r.url)
    for i in range(300):
        w.post(falco_alert(i))
    assert w.close(30)
    assert len(r.got) == 300
    assert w.stats()["sent"] == 300


@pytest.mark.parametrize("url, why", [
    ("", "non-empty"),
    ("localhost:2801", "must start with http:// or https://"),
    ("falcosidekick/", "must start with"),
    ("ftp://example.com/", "scheme"),
    ("http://", "no host"),
    ("http://:2801/", "no host"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://example.com:port/", "not a valid URL"),
    ("http://exa mple.com/", "whitespace"),
    ("http://example.com/\n", "whitespace"),
    (None, "non-empty string"),
])
def test_an_invalid_url_is_refused_with_a_clear_message(url, why):
    with pytest.raises(ValueError, match=why):
        Webhook(url)


def test_invalid_parameters_are_refused():
    for kw in ({"queue_size": 0}, {"attempts": 0}, {"timeout": 0}, {"timeout": float("inf")},
               {"backoff": -1}, {"headers": {"X-A": "b\r\nX-Injected: 1"}}, {"headers": {"": "x"}}):
        with pytest.raises(ValueError):
            Webhook("http://127.0.0.1:1/", **kw)


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(receiver, sinks):
    r = receiver()
    w = sinks(r.url.replace("http://", "http://falco:s%3Acret@"), headers={"X-Tenant": "blue"})
    assert "s%3Acret" not in repr(w) and "falco" not in w.url
    w.post(falco_alert(1))
    assert w.close(10)
    assert r.headers[0]["Authorization"] == "Basic ZmFsY286czpjcmV0"  # falco:s:cret
    assert r.headers[0]["X-Tenant"] == "blue"


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    proc = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                           "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {proc.stderr.decode()[-200:]}")
    return cert, key


def test_https(receiver, sinks, tls_cert):
    r = receiver(tls=tls_cert)
    w = sinks(r.url, ssl_context=ssl.create_default_context(cafile=tls_cert[0]))
    w.post(falco_alert(1))
    assert w.close(10)
    assert r.got == [falco_alert(1)]
    # the default context checks the certificate against the system's CAs: ours is not one
    w2 = sinks(r.url, attempts=1)
    w2.post(falco_alert(2))
    assert w2.close(10)
    assert w2.stats()["failed"] == 1
    assert r.got == [falco_alert(1)]


# OCSF


def check_base(o, class_uid, category_uid, activity_id):
    """The attributes OCSF 1.1.0 requires of every event."""
    assert o["class_uid"] == class_uid
    assert o["category_uid"] == category_uid
    assert o["activity_id"] == activity_id
    assert o["type_uid"] == class_uid * 100 + activity_id
    assert isinstance(o["time"], int)
    assert o["severity_id"] in (0, 1, 2, 3, 4, 5, 6, 99)
    assert o["metadata"]["version"] == "1.1.0"
    assert o["metadata"]["product"]["name"] == "preload"
    assert o["metadata"]["product"]["vendor_name"] == "preload"
    json.dumps(o)  # plain JSON values only
    for obs in o.get("observables", []):
        assert resolve(o, obs["name"]) == obs["value"]


def resolve(o, name):
    """An observable's name, followed into the event (arrays: their first element)."""
    for part in name.split("."):
        if isinstance(o, list):
            o = o[0]
        o = o[part]
    return o


def ms(t):
    return round(datetime.fromisoformat(t[:26] + "+00:00").timestamp() * 1000)


def test_epoch_ms():
    assert ocsf.epoch_ms("1970-01-01T00:00:01.999999999Z") == 1999
    assert ocsf.epoch_ms("2026-11-27T05:40:00.123456789Z") == ms("2026-11-27T05:40:00.123456")
    assert ocsf.epoch_ms("2026-11-27T07:40:00+02:00") == ocsf.epoch_ms("2026-11-27T05:40:00Z")
    for bad in ("", "yesterday", None, "2026-11-27 05:40"):
        with pytest.raises(ValueError):
            ocsf.epoch_ms(bad)


@pytest.mark.parametrize("priority, severity_id", [
    ("Emergency", 6), ("Alert", 6), ("Critical", 5), ("Error", 4), ("Warning", 3), ("Notice", 2),
    ("Informational", 1), ("Debug", 1), ("nonsense", 0)])
def test_alert_is_a_detection_finding(priority, severity_id):
    a = falco_alert(7, priority=priority)
    o = ocsf.alert(a)
    check_base(o, 2004, 2, 1)
    assert o["severity_id"] == severity_id
    assert o["time"] == ms(a["time"]) and o["metadata"]["original_time"] == a["time"]
    assert o["message"] == a["output"]
    fi = o["finding_info"]
    assert fi["title"] == a["rule"] and fi["analytic"]["name"] == a["rule"]
    assert fi["types"] == a["tags"]
    assert fi["uid"] and fi["uid"] == ocsf.alert(dict(a))["finding_info"]["uid"]  # stable
    assert fi["uid"] != ocsf.alert(falco_alert(8, priority=priority))["finding_info"]["uid"]
    assert o["device"]["hostname"] == "web-1"
    p = o["evidences"][0]["process"]
    assert (p["name"], p["pid"], p["user"]["name"]) == ("sh", 107, "root")
    assert o["unmapped"]["output_fields"] == a["output_fields"]
    assert o["unmapped"]["priority"] == priority
    assert {"name": "device.hostname", "type_id": 1, "type": "Hostname", "value": "web-1"} in o["observables"]


def test_alert_uses_falcosidekicks_uuid():
    o = ocsf.alert(falco_alert(1, uuid="3f8d7a8e-0000-4000-8000-000000000001"))
    assert o["finding_info"]["uid"] == "3f8d7a8e-0000-4000-8000-000000000001"


PROC = {"proc.pid": 20, "proc.ppid": 10, "proc.name": "curl", "proc.exepath": "/usr/bin/curl",
        "proc.cmdline": "curl http://x", "proc.args": "http://x", "proc.cwd": "/root", "proc.pname": "sh",
        "proc.pexepath": "/bin/sh", "proc.pcmdline": "sh -c curl http://x", "user.uid": 1000,
        "preload.stream": "ab12", "preload.seq": 3}


def ev(typ, **fields):
    e = {"time": "2026-11-27T05:40:00.250000000Z", "evt.type": typ, "evt.source": "preload", **PROC}
    e.update({k.replace("__", "."): v for k, v in fields.items()})
    return e


def check_actor(o):
    p = o["actor"]["process"]
    assert (p["pid"], p["name"], p["cmd_line"], p["file"]["path"]) == (20, "curl", "curl http://x", "/usr/bin/curl")
    assert p["user"]["uid"] == "1000"
    assert (p["parent_process"]["pid"], p["parent_process"]["name"]) == (10, "sh")


def check_event(o, e, class_uid, category_uid, activity_id):
    check_base(o, class_uid, category_uid, activity_id)
    assert o["time"] == ms(e["time"]) and o["metadata"]["original_time"] == e["time"]
    assert o["severity_id"] == 1
    assert o["metadata"]["event_code"] == e["evt.type"]
    assert o["metadata"]["uid"] == "ab12/3" and o["metadata"]["sequence"] == 3
    assert o["device"]["hostname"] == "box"
    assert o["unmapped"]["proc.cwd"] == "/root"  # what OCSF has no place for is kept


def test_process_start_is_a_launch_by_the_parent():
    e = ev("execve", evt__dir="<", evt__res="SUCCESS", preload__argv=["curl", "http://x"],
           preload__attach="preload")
    o = ocsf.event(e, hostname="box")
    check_event(o, e, 1007, 1, 1)
    p = o["process"]
    assert (p["pid"], p["name"], p["cmd_line"], p["file"]["path"]) == (20, "curl", "curl http://x", "/usr/bin/curl")
    assert p["parent_process"]["cmd_line"] == "sh -c curl http://x"
    assert o["actor"]["process"]["pid"] == 10 and o["actor"]["process"]["file"]["path"] == "/bin/sh"
    assert o["status_id"] == 1


def test_exec_attempt_and_failure():
    e = ev("execve", evt__dir=">", evt__arg__filename="/usr/bin/id", preload__argv=["id", "-u"],
           preload__api="execvp")
    o = ocsf.event(e, hostname="box")
    check_event(o, e, 1007, 1, 1)
    check_actor(o)
    p = o["process"]
    assert (p["pid"], p["name"], p["cmd_line"], p["file"]["path"]) == (20, "id", "id -u", "/usr/bin/id")
    assert p["parent_process"]["pid"] == 10  # exec keeps the pid: same parent
    assert o["status_id"] == 0  # not known yet

    e = ev("execve", evt__dir="<", evt__res="ENOENT", evt__arg__filename="/nope", preload__argv=["nope"],
           preload__api="posix_spawn")
    o = ocsf.event(e, hostname="box")
    check_event(o, e, 1007, 1, 1)
    assert (o["status_id"], o["status_code"]) == (2, "ENOENT")
    assert "pid" not in o["process"] and o["process"]["parent_process"]["pid"] == 20  # a child


@pytest.mark.parametrize("typ, fields, activity_id, path, result", [
    ("openat", {"fd.name": "/etc/shadow", "fd.directory": "/etc", "fd.filename": "shadow", "fd.num": 3,
                "evt.arg.flags": "O_RDONLY", "evt.res": "SUCCESS"}, 14, "/etc/shadow", None),
    ("creat", {"fd.name": "/tmp/x", "fd.directory": "/tmp", "fd.filename": "x", "fd.num": -1,
               "evt.arg.flags": "O_WRONLY|O_CREAT|O_TRUNC", "evt.res": "EACCES"}, 14, "/tmp/x", None),
    ("unlinkat", {"evt.arg.name": "/tmp/y", "fs.path.name": "/tmp/y", "evt.res": "SUCCESS"}, 4, "/tmp/y", None),
    ("rename", {"evt.arg.oldpath": "/tmp/a", "evt.arg.newpath": "/tmp/b", "fs.path.source": "/tmp/a",
                "fs.path.target": "/tmp/b", "evt.res": "SUCCESS"}, 5, "/tmp/a", "/tmp/b"),
    ("symlink", {"evt.arg.target": "/etc/passwd", "evt.arg.linkpath": "/tmp/l", "fs.path.source": "/etc/passwd",
                 "fs.path.target": "/tmp/l", "evt.res": "SUCCESS"}, 1, "/tmp/l", None),
    ("chmod", {"evt.arg.filename": "/tmp/s", "evt.arg.mode": 0o4755, "fs.path.name": "/tmp/s",
               "evt.res": "SUCCESS"}, 7, "/tmp/s", None),
    ("fchmod", {"fd.name": "/tmp/t", "evt.arg.mode": 0o644, "evt.res": "SUCCESS"}, 7, "/tmp/t", None),
    ("mount", {"evt.arg.dev": "proc", "evt.arg.dir": "/mnt", "evt.arg.type": "proc", "evt.arg.flags": 0,
               "evt.res": "EPERM"}, 12, "/mnt", None),
])
def test_file_calls_are_file_system_activity(typ, fields, activity_id, path, result):
    e = {**ev(typ), **fields}
    o = ocsf.event(e, hostname="box")
    check_event(o, e, 1001, 1, activity_id)
    check_actor(o)
    assert o["file"]["path"] == path and o["file"]["name"] == os.path.basename(path)
    assert o["file"]["type_id"] in (0, 1, 2, 7)
    if result:
        assert o["file_result"]["path"] == result
    res = fields["evt.res"]
    assert o["status_id"] == (1 if res == "SUCCESS" else 2)
    if res != "SUCCESS":
        assert o["status_code"] == res


def test_file_details():
    o = ocsf.event(ev("symlink", fs__path__target="/tmp/l", evt__res="SUCCESS"), hostname="box")
    assert o["file"]["type_id"] == 7
    o = ocsf.event(ev("unlinkat", fs__path__name="/tmp/d", evt__arg__flags=0x200, evt__res="SUCCESS"),
                   hostname="box")
    assert o["file"]["type_id"] == 2  # AT_REMOVEDIR
    o = ocsf.event(ev("openat", fd__name="/etc", evt__arg__flags="O_RDONLY|O_DIRECTORY", evt__res="SUCCESS"),
                   hostname="box")
    assert o["file"]["type_id"] == 2
    assert o["unmapped"]["evt.arg.flags"] == "O_RDONLY|O_DIRECTORY"


INET = {"fd.num": 3, "fd.typechar": "4", "fd.type": "ipv4", "fd.l4proto": "tcp"}


@pytest.mark.parametrize("typ, res, activity_id, direction_id", [
    ("connect", "SUCCESS", 1, 2), ("connect", "EINPROGRESS", 1, 2), ("connect", "ECONNREFUSED", 5, 2),
    ("connect", "ENETUNREACH", 4, 2), ("accept4", "SUCCESS", 1, 1)])
def test_connections_are_network_activity(typ, res, activity_id, direction_id):
    client, server = ("172.17.0.2", 40000), ("1.2.3.4", 443)
    local, remote = (client, server) if typ == "connect" else (server, client)
    e = ev(typ, evt__res=res, **{k.replace(".", "__"): v for k, v in INET.items()},
           fd__lip=local[0], fd__lport=local[1], fd__rip=remote[0], fd__rport=remote[1],
           fd__cip=client[0], fd__cport=client[1], fd__sip=server[0], fd__sport=server[1],
           fd__name=f"{client[0]}:{client[1]}->{server[0]}:{server[1]}")
    o = ocsf.event(e, hostname="box")
    check_event(o, e, 4001, 4, activity_id)
    check_actor(o)
    assert o["src_endpoint"] == {"ip": client[0], "port": client[1]}
    assert o["dst_endpoint"] == {"ip": server[0], "port": server[1]}
    c = o["connection_info"]
    assert (c["direction_id"], c["protocol_name"], c["protocol_num"]) == (direction_id, "tcp", 6)
    assert c["protocol_ver_id"] == 4
    assert o["metadata"]["profiles"] == ["host"]
    assert o["status_id"] == {"SUCCESS": 1, "EINPROGRESS": 0}.get(res, 2)


def test_bind_and_listen_are_other_activities_in_ocsf_1_1():
    for typ in ("bind", "listen"):
        e = ev(typ, evt__res="SUCCESS", fd__num=3, fd__typechar="6", fd__type="ipv6", fd__l4proto="tcp",
               fd__lip="::", fd__lport=8080, fd__sip="::", fd__sport=8080, fd__name=":::8080")
        o = ocsf.event(e, hostname="box")
        check_event(o, e, 4001, 4, 99)
        assert o["activity_name"] == typ.capitalize()
        assert o["dst_endpoint"] == {"ip": "::", "port": 8080} and "src_endpoint" not in o
        assert o["connection_info"]["protocol_ver_id"] == 6


def test_unix_socket_connect():
    e = ev("connect", evt__res="SUCCESS", fd__num=4, fd__typechar="u", fd__type="unix", fd__l4proto="",
           fd__name="/run/docker.sock")
    o = ocsf.event(e, hostname="box")
    check_event(o, e, 4001, 4, 1)
    assert o["dst_endpoint"] == {"name": "/run/docker.sock"}
    assert "protocol_name" not in o["connection_info"]


@pytest.mark.parametrize("typ", ["clone", "setuid", "socket", "ptrace", "memfd_create", "preload.repeats",
                                 "preload.end", "preload.blindspot", "preload.daemon", "nonsense"])
def test_other_events_are_not_mapped(typ):
    assert ocsf.event(ev(typ, evt__res="SUCCESS"), hostname="box") is None


def test_event_from_the_enricher():
    """The mapping takes what events.py makes, not only hand-written events."""
    from preload.events import Enricher
    rec = {"kind": "start", "time_ns": 1_795_758_000_250_000_000, "source": "preload", "pid": 4242,
           "ppid": 1, "exe": "/bin/true", "argv": ["true"], "cwd": "/", "uid": 0, "attach": "preload",
           "stream": "s", "seq": 1}
    (e,) = Enricher().events(rec)
    o = ocsf.event(e)
    check_base(o, 1007, 1, 1)
    assert o["process"]["pid"] == 4242 and o["process"]["file"]["path"] == "/bin/true"
    assert o["time"] == 1_795_758_000_250
    assert o["device"]["hostname"] == socket.gethostname()
