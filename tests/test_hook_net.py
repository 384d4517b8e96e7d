"""Network calls: connect, bind, listen, accept, accept4 with both ends' addresses."""
import errno
import os
import re
import socket

import pytest

FAMILIES = {"inet": (socket.AF_INET, "127.0.0.1"), "inet6": (socket.AF_INET6, "::1")}


def printed(cp):
    return {k.decode(): int(v) for k, v in re.findall(rb"(\w+)=(-?\d+)", cp.stdout)}


@pytest.fixture
def listener(request):
    """A TCP listener of the test's own, on the loopback address of the family."""
    family, addr = FAMILIES[request.param]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((addr, 0))
    s.listen(8)
    yield request.param, s
    s.close()


@pytest.mark.parametrize("listener", sorted(FAMILIES), indirect=True)
def test_connect_reports_both_addresses(collector, cc, listener):
    name, srv = listener
    family, addr = FAMILIES[name]
    port = srv.getsockname()[1]
    cp, _ = collector.run([cc("net.c"), "connect", name, addr, str(port)])
    out = printed(cp)
    assert out["res"] == 0, cp
    peer = srv.accept()[1]  # queued by the kernel: the fixture's connection as the listener sees it
    (rec,) = collector.records_of("net", api="connect")
    assert rec["family"] == family
    assert (rec["fd"], rec["res"]) == (out["fd"], 0)
    assert (rec["socktype"], rec["protocol"]) == (socket.SOCK_STREAM, socket.IPPROTO_TCP)
    assert (rec["raddr"], rec["rport"]) == (addr, port)
    assert (rec["laddr"], rec["lport"]) == (peer[0], peer[1]) == (addr, out["local_port"])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_refused_connect_reports_errno_and_target(collector, cc, name):
    family, addr = FAMILIES[name]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))  # bound, never listening: connections are refused
        port = s.getsockname()[1]
        cp, _ = collector.run([cc("net.c"), "connect", name, addr, str(port)])
    assert printed(cp)["errno"] == errno.ECONNREFUSED
    (rec,) = collector.records_of("net", api="connect")
    assert rec["res"] == -errno.ECONNREFUSED
    assert (rec["family"], rec["raddr"], rec["rport"]) == (family, addr, port)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bind_and_listen_report_local_address(collector, cc, name):
    family, addr = FAMILIES[name]
    cp, _ = collector.run([cc("net.c"), "loop", name, addr])
    out = printed(cp)
    assert cp.returncode == 0, cp
    (bind,) = collector.records_of("net", api="bind")
    (listen,) = collector.records_of("net", api="listen")
    assert (bind["fd"], bind["res"], listen["fd"], listen["res"]) == (out["server_fd"], 0,
                                                                      out["server_fd"], 0)
    # bind was asked for port 0: the record says which port the kernel chose
    for rec in (bind, listen):
        assert (rec["family"], rec["laddr"], rec["lport"]) == (family, addr, out["listen_port"])
        assert rec["rport"] == 0


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_accept_reports_peer(collector, cc, name):
    family, addr = FAMILIES[name]
    cp, _ = collector.run([cc("net.c"), "loop", name, addr])
    out = printed(cp)
    assert cp.returncode == 0, cp
    (acc,) = collector.records_of("net", api="accept")
    (acc4,) = collector.records_of("net", api="accept4")
    for rec, fd, client in ((acc, "accept_fd", "client_port"), (acc4, "accept4_fd", "client2_port")):
        assert (rec["fd"], rec["res"]) == (out["server_fd"], out[fd])
        assert rec["family"] == family and rec["socktype"] == socket.SOCK_STREAM
        assert (rec["laddr"], rec["lport"]) == (addr, out["listen_port"])
        assert (rec["raddr"], rec["rport"]) == (addr, out[client])
    connects = collector.records_of("net", api="connect")
    assert [(c["fd"], c["lport"], c["rport"]) for c in connects] == [
        (out["client_fd"], out["client_port"], out["listen_port"]),
        (out["client2_fd"], out["client2_port"], out["listen_port"])]


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_unix_sockets_report_paths(collector, cc, tmp_path, kind):
    addr = str(tmp_path / "srv.sock") if kind == "path" else f"@pl-test-{os.getpid()}-{tmp_path.name}"
    cp, _ = collector.run([cc("net.c"), "loop", "unix", addr])
    out = printed(cp)
    assert cp.returncode == 0, cp
    recs = {api: collector.records_of("net", api=api) for api in
            ("bind", "listen", "connect", "accept", "accept4")}
    assert all(len(v) == (2 if k == "connect" else 1) for k, v in recs.items()), recs
    for rec in (recs["bind"][0], recs["listen"][0], recs["accept"][0], recs["accept4"][0]):
        assert rec["family"] == socket.AF_UNIX and rec["socktype"] == socket.SOCK_STREAM
        assert rec["lpath"] == addr  # the accepted socket's local end is the listener's name
        assert rec["rpath"] == ""    # clients were not bound
    for rec in recs["connect"]:
        assert (rec["family"], rec["res"]) == (socket.AF_UNIX, 0)
        assert (rec["lpath"], rec["rpath"]) == ("", addr)
    assert recs["accept"][0]["res"] == out["accept_fd"]
    assert recs["accept4"][0]["res"] == out["accept4_fd"]


def test_collector_channel_is_not_reported(collector, cc):
    """The hook's own connection to the daemon goes straight to the kernel, never through a hook."""
    collector.run([cc("net.c"), "connect", "unix", "/nonexistent/sock", "0"])
    recs = collector.records_of("net")
    assert [r["rpath"] for r in recs] == ["/nonexistent/sock"]
    assert recs[0]["res"] == -errno.ENOENT
