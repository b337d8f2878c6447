"""Control socket: the administrator's ``pbsyslog list/add/del/flush/status`` while the service runs.

Contract: a UNIX socket next to the map (``<dbfile>.ctl``, mode 0600: root,
or whoever runs the service, only), one JSON request per line and one JSON
reply per line.  Requests: ``{"cmd": "list"}``, ``{"cmd": "add", "ip": IP,
"grace": SECONDS}``, ``{"cmd": "del", "ip": IP}``, ``{"cmd": "flush"}``,
``{"cmd": "status"}``.  Replies: ``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}``.  Every change goes through the service, so its tracker,
state journal and map stay consistent.

How it fails: a request that is not JSON, names an unknown command or
carries a bad argument gets an error reply; a line longer than 64 KiB closes
that connection.  Nothing here can stop the service.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver


class ControlProtocol(LineOnlyReceiver):
    """One administrator connection."""

    delimiter = b"\n"
    MAX_LENGTH = 65536

    def __init__(self, service: Any) -> None:
        self._service = service

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
            reply = {"ok": True, **handle(self._service, request)}
        except (ValueError, KeyError, TypeError) as e:
            reply = {"ok": False, "error": str(e)}
        self.sendLine(json.dumps(reply).encode())

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()


class ControlFactory(Factory):
    """Builds ControlProtocols for the service."""

    noisy = False

    def __init__(self, service: Any) -> None:
        self._service = service

    def buildProtocol(self, addr: object) -> ControlProtocol:
        return ControlProtocol(self._service)


def handle(service: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request on the service; raise ValueError for a bad one."""
    cmd = request.get("cmd")
    if cmd == "list":
        return {"entries": service.admin_list()}
    if cmd == "add":
        grace = request.get("grace")
        if grace is not None and (isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace <= 0):
            raise ValueError("grace must be a positive number of seconds")
        return {"ip": service.admin_add(str(request["ip"]), grace)}
    if cmd == "del":
        return {"removed": service.admin_del(str(request["ip"]))}
    if cmd == "flush":
        return {"removed": service.admin_flush()}
    if cmd == "status":
        status: dict[str, Any] = service.status()
        return status
    raise ValueError(f"unknown command {cmd!r} (list, add, del, flush, status)")
