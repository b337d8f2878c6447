"""Pipeline: the sender's timestamp may shorten an authorisation, never extend it."""

import datetime

from pbsyslog.patterns import load_table
from pbsyslog.pipeline import Pipeline, may_relay
from pbsyslog.tracker import Tracker

NOW = datetime.datetime(2026, 11, 29, 14, 0, 0, tzinfo=datetime.timezone.utc).timestamp()


def frame(stamp: str, ip: str = "192.0.2.7") -> bytes:
    """An RFC 5424 Dovecot login frame with the given timestamp (no session id: grace only, no open session)."""
    return (
        f"<22>1 {stamp} vm dovecot - - -  pop3-login: Login: user=<a>, method=PLAIN, "
        f"rip={ip}, lip=192.0.2.1, mpid=1"
    ).encode()


def pipeline() -> Pipeline:
    """A pipeline with a 30-minute grace."""
    return Pipeline(load_table("all"), Tracker(1800))


def test_late_line_counts_from_its_own_time() -> None:
    """A login stamped 10 minutes ago gets 20 minutes, not 30."""
    p = pipeline()
    assert p.feed(frame("2026-11-29T13:50:00+00:00"), NOW) == ("192.0.2.7", "dovecot-login", "added")
    assert p.tracker.deadline("192.0.2.7") == NOW - 600 + 1800


def test_line_older_than_grace_authorises_nothing() -> None:
    """A login stamped before the grace window is counted as stale and ignored."""
    p = pipeline()
    assert p.feed(frame("2026-11-29T13:29:59+00:00"), NOW) is None
    assert len(p.tracker) == 0 and p.counters.stale == 1


def test_future_timestamp_counts_as_now() -> None:
    """A login stamped an hour ahead gets exactly the grace from receipt."""
    p = pipeline()
    p.feed(frame("2026-11-29T15:00:00+00:00"), NOW)
    assert p.tracker.deadline("192.0.2.7") == NOW + 1800


def test_zoneless_rfc3164_stamp_is_not_used() -> None:
    """A traditional timestamp (no zone, no year) never shortens: receipt time rules."""
    p = pipeline()
    line = b"<22>Jan  1 00:00:00 vm dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=192.0.2.8, lip=192.0.2.1, mpid=1"
    p.feed(line, NOW)
    assert p.tracker.deadline("192.0.2.8") == NOW + 1800


def test_addresses_that_may_never_relay() -> None:
    """Unspecified and multicast never; loopback only with the setting; others yes."""
    assert not may_relay("0.0.0.0", True) and not may_relay("::", True)
    assert not may_relay("224.0.0.1", True) and not may_relay("ff02::1", True)
    assert not may_relay("127.0.0.1", False) and may_relay("127.0.0.1", True)
    assert not may_relay("::1", False) and may_relay("::1", True)
    assert may_relay("192.0.2.1", False) and may_relay("2001:db8::1", False)


def test_hostname_pinning() -> None:
    """With pinned hostnames, a login from another syslog HOSTNAME is counted and ignored."""
    p = pipeline()
    pinned = frozenset({"pop1.example.net"})
    line = b"<22>Nov 29 14:22:55 %s dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=192.0.2.9, lip=192.0.2.1, mpid=1, session=<x>"
    assert p.feed(line % b"evil.example.net", NOW, pinned) is None
    assert p.counters.wrong_host == 1 and len(p.tracker) == 0
    assert p.feed(line % b"POP1.example.net", NOW, pinned) is not None
