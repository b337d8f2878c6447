"""Control socket protocol: JSON lines in, JSON lines out, errors answered, not raised."""

import json
from pathlib import Path

from test_service import start
from twisted.internet.testing import StringTransport

from pbsyslog.control import Admin, ControlProtocol


def ask(proto: ControlProtocol, transport: StringTransport, line: bytes) -> dict:
    """Send one line; return the decoded reply."""
    transport.clear()
    proto.dataReceived(line + b"\n")
    return json.loads(transport.value())


def test_requests_and_errors(tmp_path: Path) -> None:
    """add/list/del work; junk, unknown commands, bad IPs and bad grace get error replies."""
    service, reactor = start(tmp_path)
    proto, transport = ControlProtocol(Admin(service)), StringTransport()
    proto.makeConnection(transport)
    assert ask(proto, transport, b'{"cmd": "add", "ip": "::ffff:192.0.2.5", "grace": 30}') == {"ok": True, "ip": "192.0.2.5"}
    assert ask(proto, transport, b'{"cmd": "list"}')["entries"] == [{"ip": "192.0.2.5", "pattern": "manual", "seconds_left": 30.0, "open_sessions": 0}]
    assert ask(proto, transport, b'{"cmd": "del", "ip": "192.0.2.5"}') == {"ok": True, "removed": True}
    assert ask(proto, transport, b"not json")["ok"] is False
    assert "unknown command" in ask(proto, transport, b'{"cmd": "reboot"}')["error"]
    assert "not an IP" in ask(proto, transport, b'{"cmd": "add", "ip": "x"}')["error"]
    assert "grace" in ask(proto, transport, b'{"cmd": "add", "ip": "192.0.2.6", "grace": -5}')["error"]
    assert not transport.disconnecting
    service.stopService()


def test_overlong_line_closes_connection(tmp_path: Path) -> None:
    """A request line over 64 KiB closes that connection only."""
    service, _ = start(tmp_path)
    proto, transport = ControlProtocol(Admin(service)), StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"x" * 70_000)
    assert transport.disconnecting
    service.stopService()


def test_list_is_in_address_order(tmp_path: Path) -> None:
    """The running service lists addresses numerically, IPv4 before IPv6 (10.77.0.2 before 10.77.0.10)."""
    service, reactor = start(tmp_path)
    proto, transport = ControlProtocol(Admin(service)), StringTransport()
    proto.makeConnection(transport)
    for ip in ("2001:db8::1", "10.77.0.10", "10.77.0.2"):
        assert ask(proto, transport, b'{"cmd": "add", "ip": "%s"}' % ip.encode())["ok"] is True
    listed = [e["ip"] for e in ask(proto, transport, b'{"cmd": "list"}')["entries"]]
    assert listed == ["10.77.0.2", "10.77.0.10", "2001:db8::1"]
    service.stopService()
