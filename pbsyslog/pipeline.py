"""Pipeline: one frame -> syslog message -> pattern -> policy -> tracker.

Contract: pure; takes ``now`` as an argument and does no I/O.  Bad input is
counted and dropped, never raised: a frame that is not syslog, a line that
matches no pattern, a login for an address that may never relay.  The
caller (``service.py``) turns the returned additions into map writes.
"""

from __future__ import annotations

import ipaddress

import attrs

from pbsyslog.patterns import PatternTable
from pbsyslog.syslog import MalformedMessage, parse
from pbsyslog.tracker import Tracker


@attrs.define
class Counters:
    """What the pipeline has seen since start-up."""

    frames: int = 0
    malformed: int = 0
    logins: int = 0
    failures: int = 0
    refused: int = 0
    stale: int = 0
    full: int = 0
    wrong_host: int = 0
    # (pattern, event kind) -> lines matched
    matches: dict[tuple[str, str], int] = attrs.Factory(dict)


def may_relay(ip: str, authorise_loopback: bool) -> bool:
    """Say whether a login from ``ip`` may authorise relaying at all."""
    address = ipaddress.ip_address(ip)
    if address.is_unspecified or address.is_multicast:
        return False
    if address.is_loopback:
        return authorise_loopback
    return True


class Pipeline:
    """Feeds frames through parsing and matching into the tracker."""

    def __init__(
        self,
        table: PatternTable,
        tracker: Tracker,
        authorise_loopback: bool = False,
        max_tracked: int = 1_000_000,
    ) -> None:
        self.table = table
        self.tracker = tracker
        self.authorise_loopback = authorise_loopback
        self.max_tracked = max_tracked
        self.counters = Counters()

    def feed(
        self, frame: bytes, now: float, hostnames: frozenset[str] | None = None
    ) -> tuple[str, str, str] | None:
        """Handle one frame; return (ip, pattern, "added"|"extended") when it moved a deadline.

        ``hostnames``, when given, are the syslog HOSTNAMEs the listener
        accepts: a message from any other host is counted and dropped.
        """
        counters = self.counters
        counters.frames += 1
        try:
            message = parse(frame)
        except MalformedMessage:
            counters.malformed += 1
            return None
        if hostnames is not None and (message.hostname or "").lower() not in hostnames:
            counters.wrong_host += 1
            return None
        event = self.table.match(message)
        if event is None:
            return None
        key = (event.pattern, event.kind)
        counters.matches[key] = counters.matches.get(key, 0) + 1
        if event.kind != "login":
            if event.kind == "fail":
                counters.failures += 1
            return None
        counters.logins += 1
        if not may_relay(event.ip, self.authorise_loopback):
            counters.refused += 1
            return None
        # A sender's own timestamp may shorten an authorisation, never extend
        # it: a login delivered late (say from an rsyslog disk queue after an
        # outage) counts from when it happened, and one older than the grace
        # authorises nothing; a timestamp in the future counts as now.  Only
        # timestamps that carry a zone are used: an RFC 3164 stamp has none,
        # and guessing the sender's zone wrong would refuse every login.
        when = now
        stamp = message.timestamp
        if stamp is not None and stamp.tzinfo is not None:
            sent = stamp.timestamp()
            if sent < now:
                when = sent
                if sent + self.tracker.grace <= now:
                    counters.stale += 1
                    return None
        tracker = self.tracker
        if len(tracker) >= self.max_tracked and event.ip not in tracker:
            # Full: never evict a live authorisation to make room; the new
            # client is not authorised (counted; the service logs it loudly).
            counters.full += 1
            return None
        change = tracker.login(event.ip, when, event.pattern)
        if change is None:
            return None
        return event.ip, event.pattern, change
