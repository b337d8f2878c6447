"""Control socket: the administrator's ``pbsyslog list/add/del/flush/status`` while the service runs.

Contract: a UNIX socket next to the map (``<dbfile>.ctl``, mode 0600: root,
or whoever runs the service, only), one JSON request per line and one JSON
reply per line.  Requests: ``{"cmd": "list"}``, ``{"cmd": "add", "ip": IP,
"grace": SECONDS}``, ``{"cmd": "del", "ip": IP}``, ``{"cmd": "flush"}``,
``{"cmd": "status"}``.  Replies: ``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}``.  ``Admin`` carries the verbs out; every change goes
through the service (``grant``, ``revoke``), so its tracker, state journal
and map stay consistent.

How it fails: a request that is not JSON, names an unknown command or
carries a bad argument gets an error reply; a line longer than 64 KiB closes
that connection.  Nothing here can stop the service.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from pbsyslog.addresses import address_order
from pbsyslog.patterns import normalise_ip

if TYPE_CHECKING:
    from pbsyslog.service import PbsyslogService


class ControlProtocol(LineOnlyReceiver):
    """One administrator connection."""

    delimiter = b"\n"
    MAX_LENGTH = 65536

    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    def lineReceived(self, line: bytes) -> None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
            reply = {"ok": True, **self._admin.handle(request)}
        except (ValueError, KeyError, TypeError) as e:
            reply = {"ok": False, "error": str(e)}
        self.sendLine(json.dumps(reply).encode())

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()


class ControlFactory(Factory):
    """Builds ControlProtocols for the service's ``Admin``."""

    noisy = False

    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    def buildProtocol(self, addr: object) -> ControlProtocol:
        return ControlProtocol(self._admin)


class Admin:
    """The administrator's verbs on a running service: list, add, del, flush, status."""

    def __init__(self, service: PbsyslogService) -> None:
        self._service = service

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one request; raise ValueError (or KeyError, TypeError) for a bad one."""
        cmd = request.get("cmd")
        if cmd == "list":
            return {"entries": self.list()}
        if cmd == "add":
            grace = request.get("grace")
            if grace is not None and (isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace <= 0):
                raise ValueError("grace must be a positive number of seconds")
            return {"ip": self.add(str(request["ip"]), grace)}
        if cmd == "del":
            return {"removed": self.delete(str(request["ip"]))}
        if cmd == "flush":
            return {"removed": self.flush()}
        if cmd == "status":
            return self.status()
        raise ValueError(f"unknown command {cmd!r} (list, add, del, flush, status)")

    def list(self) -> list[dict[str, Any]]:
        """Every authorised IP with its pattern, seconds left and open sessions."""
        service = self._service
        tracker, now = service.tracker, service.reactor.seconds()
        return [
            {"ip": ip, "pattern": pattern, "seconds_left": round(deadline - now, 1),
             "open_sessions": tracker.open_sessions(ip, now)}
            for ip, (deadline, pattern) in sorted(tracker.entries().items(), key=lambda item: address_order(item[0]))
        ]

    def add(self, text: str, grace: float | None) -> str:
        """Authorise an IP by hand for ``grace`` seconds (default: the configured grace)."""
        service = self._service
        ip = _address(text)
        service.grant(ip, service.reactor.seconds() + (grace or service.config.grace), "manual")
        return ip

    def delete(self, text: str) -> bool:
        """Take an IP's authorisation away now."""
        return bool(self._service.revoke([_address(text)], "administrator"))

    def flush(self) -> int:
        """Take every authorisation away now."""
        service = self._service
        return len(service.revoke(sorted(service.tracker.ips()), "administrator"))

    def status(self) -> dict[str, Any]:
        """What the service is doing, for ``pbsyslog status``."""
        service = self._service
        now = service.reactor.seconds()
        p = service.pipeline.counters
        return {
            "uptime": round(now - (service.started_at or now), 1),
            "map": service.map_file,
            "authorised": len(service.tracker),
            "listeners": [
                {"listener": str(listener), "frames": c.frames, "untrusted": c.untrusted,
                 "too_big": c.oversize, "rate_limited": c.rate_limited}
                for listener, c in service.transport_counters
            ],
            "frames": p.frames, "parse_errors": p.malformed, "logins": p.logins, "failures": p.failures,
            "ignored": {**p.ignored, "stale": p.stale, "full": p.full, "wrong_host": p.wrong_host},
            "map_writes": service.map_commits, "map_errors": service.map_errors,
            "last_write": service.last_commit if service.last_commit > float("-inf") else None,
        }


def _address(text: str) -> str:
    ip = normalise_ip(text)
    if ip is None:
        raise ValueError(f"not an IP address: {text!r}")
    return ip
