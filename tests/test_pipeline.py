"""Pipeline: the sender's timestamp may shorten an authorisation, never extend it."""

import datetime
import pathlib

import pytest

from corpus_paths import CORPUS, REAL, WIRE
from pbsyslog.inputs.framing import StreamFramer
from pbsyslog.patterns import PatternTable, load_table
from pbsyslog.pipeline import Pipeline
from pbsyslog.policy import NeverList
from pbsyslog.syslog import parse
from pbsyslog.tracker import Tracker

NOW = datetime.datetime(2026, 11, 29, 14, 0, 0, tzinfo=datetime.UTC).timestamp()


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
    """A pipeline's default rules: unspecified and multicast never; loopback only with the setting; others yes."""

    def may_relay(ip: str, authorise_loopback: bool) -> bool:
        p = Pipeline(load_table(), Tracker(1800), authorise_loopback=authorise_loopback)
        return p.never.reason(ip) is None

    assert isinstance(Pipeline(load_table(), Tracker(1800)).never, NeverList)
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


def test_header_shortcut_changes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A generated log (every daemon) fed with and without the header shortcut gives the same counters, tracker and results."""
    import itertools
    import subprocess
    import sys

    genlog = pathlib.Path(__file__).resolve().parents[1] / "bench" / "genlog.py"
    log = tmp_path / "mail.log"
    subprocess.run(
        [sys.executable, str(genlog), "-n", "6000", "--daemon", "mixed", "--login-frac", "0.05",
         "--seed", "6", "--quiet", "-o", str(log)],
        check=True, stdout=subprocess.DEVNULL,
    )
    lines = [
        b"<22>Jan 15 00:00:00 mx1 postfix/smtpd[1]: connect from unknown[192.0.2.9]",
        b"<22>Jan 15 00:00:00 mx1 dovecot: lmtp(9): Connect from local",
        b"<22>Jan 15 00:00:00 mx1 dovecot: imap-login: Login: user=<a>, method=PLAIN, rip=192.0.2.10, "
        b"lip=192.0.2.2, mpid=7, session=<abc>",
        b"<22>Jan 15 00:00:01 mx1 dovecot: imap(a)<7><abc>: Logged out in=1 out=2",
        b"<999>Jan 15 00:00:00 mx1 dovecot: x", b"", b"Jan 15 00:00:00 mx1 ipop3d[3]: Login user=b host=x [192.0.2.11]",
    ]
    lines += [b"<22>" + line for line in log.read_bytes().splitlines()]

    class Everything:
        """A table that never drops a line on its header: the plain parse + classify path."""

        def __init__(self, table):
            self._table = table

        def ignores(self, frame):
            return False

        def __getattr__(self, name):
            return getattr(self._table, name)

    results = []
    for table in (load_table("all"), Everything(load_table("all"))):
        p = Pipeline(table, Tracker(grace=600))  # type: ignore[arg-type]
        fed = [p.feed(line, NOW + i) for i, line in zip(itertools.count(), lines)]
        results.append((fed, p.counters, p.tracker.entries(), p.tracker.open_count))
    assert results[0] == results[1]
    assert results[0][1].logins > 100 and results[0][1].failures > 10


# ---------------------------------------------------------- resent lines --
# rsyslog resends, after a reconnect, the frames it had sent into the broken
# connection (the shipped TCP snippet's template is RFC 5424, microsecond
# stamps): whatever was already handled arrives a second time, then the
# stream goes on.  Such a resend must never extend an authorisation.


def rsyslog_stream(source: str) -> list[bytes]:
    """The frames rsyslog forwards with RSYSLOG_SyslogProtocol23Format: the real TCP capture (Dovecot), or a corpus
    log's lines in that form (Courier, solid-pop3d, Perdition: the daemons whose sessions are keyed by address)."""
    if source == "dovecot":
        return StreamFramer().feed((WIRE / "tcp_octet-RSYSLOG_SyslogProtocol23Format.bin").read_bytes())
    log = REAL / "courier" / "mail.log" if source == "courier" else CORPUS / source / "mail.log"
    frames = []
    for text in log.read_text().splitlines():
        stamp, host, tag, msg = text.split(" ", 3)
        app, _, pid = tag.rstrip(":").rstrip("]").partition("[")
        frames.append(f"<22>1 {stamp} {host} {app} {pid or '-'} - -  {msg}".encode())
    return frames


def replay(table: PatternTable, frames: list[bytes]) -> Tracker:
    """Feed ``frames`` in order, each received a little after its own timestamp (never before an earlier one)."""
    p = Pipeline(table, Tracker(1800), authorise_loopback=True)
    now = 0.0
    for frame in frames:
        stamp = parse(frame).timestamp
        now = max(now, stamp.timestamp() + 0.5 if stamp is not None else now)
        p.feed(frame, now)
    return p.tracker


@pytest.mark.parametrize("source", ["courier", "dovecot", "perdition", "solid-pop3d"])
def test_rsyslog_resend_after_any_break_never_extends(source: str) -> None:
    """The stream broken after any frame, the last 1, 3 or 10 frames sent again, then the rest: every address ends
    with no later deadline and no more open sessions than without the resend (the same, for Dovecot's session ids)."""
    frames = rsyslog_stream(source)
    table = load_table(source)
    once = replay(table, frames)
    assert once.open_count < len(once)  # logouts closed sessions (else nothing is proven)
    for cut in range(1, len(frames)):
        for resent in (1, 3, 10):
            twice = replay(table, frames[:cut] + frames[max(0, cut - resent):])
            assert twice.ips() == once.ips(), (cut, resent)
            for ip in once.ips():
                assert twice.deadline(ip) <= once.deadline(ip), (cut, resent, ip)  # type: ignore[operator]
                assert twice.open_sessions(ip) <= once.open_sessions(ip), (cut, resent, ip)
            if source == "dovecot":
                assert twice.entries() == once.entries() and twice.all_sessions() == once.all_sessions()


def test_require_origin_takes_only_the_daemons_own_lines() -> None:
    """With origin rules, a Dovecot login authorises only with the origin of Dovecot's log process."""
    from pbsyslog.patterns import load_origins
    from pbsyslog.pipeline import Moved, Refused

    p = Pipeline(load_table(), Tracker(1800), origins=load_origins())
    line = (b'<22>1 2026-11-29T14:00:00+00:00 vm dovecot - - %s pop3-login: Login: user=<a>, method=PLAIN, '
            b'rip=%s, lip=192.0.2.1, mpid=1')
    dovecot = b'[pbsyslog@32473 uid="0" exe="\\/usr\\/lib\\/dovecot\\/log"]'
    logger = b'[pbsyslog@32473 uid="0" exe="\\/usr\\/bin\\/logger"]'
    nobody = b'[pbsyslog@32473 uid="65534" exe="\\/usr\\/lib\\/dovecot\\/log"]'
    assert p.feed(line % (dovecot, b"192.0.2.7"), NOW) == Moved("192.0.2.7", "dovecot-login", "added")
    for sd, ip in ((logger, b"192.0.2.8"), (nobody, b"192.0.2.9"), (b"-", b"192.0.2.10")):
        assert p.feed(line % (sd, ip), NOW) == Refused(ip.decode(), "origin"), sd
    assert p.counters.ignored["origin"] == 3 and p.tracker.ips() == {"192.0.2.7"}
    # A group without a rule authorises nothing when origins are required.
    courier = b"<22>1 2026-11-29T14:00:00+00:00 vm pop3d - - " + dovecot + b" LOGIN, user=a, ip=[192.0.2.11], port=[4]"
    assert p.feed(courier, NOW) == Refused("192.0.2.11", "origin")


def test_a_failed_login_cut_by_a_relay_authorises_nothing() -> None:
    """A perdition failure whose user name smuggles status="ok", cut at 1024 bytes right after it, is refused as too long."""
    from pbsyslog.pipeline import MAX_LOGIN_MESSAGE, Refused

    head = (b'<22>Nov 29 14:22:55 vm perdition.pop3[32478]: Auth: 6.6.6.66:38843->127.0.0.1:41303 '
            b'client-secure=plaintext authorisation_id=NONE authentication_id="')
    tail = b'" server="127.0.0.1:44011" protocol=POP3 server-secure=plaintext status="ok"'
    padding = b"x" * (1024 - len(head) - len(tail))
    cut = head + padding + tail  # what is left of the failure line after a relay's 1024-byte cut
    assert len(cut) == 1024 and len(cut) - cut.index(b"Auth:") > MAX_LOGIN_MESSAGE
    table = load_table()
    from pbsyslog.syslog import parse
    assert table.classify(parse(cut)).kind == "login"  # the table alone would take it for a login
    p = Pipeline(table, Tracker(1800))
    assert p.feed(cut, NOW) == Refused("6.6.6.66", "too long") and "6.6.6.66" not in p.tracker
