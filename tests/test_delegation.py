"""Postfix policy delegation: requests read within bounds, OK for the exact authorised address only."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from pbsyslog.outputs.delegation import MAX_ATTRIBUTES, MAX_LINE, PolicyFactory, PolicyReader, decide

AUTHORISED = {"2001:db8:1:2::5", "192.0.2.7"}


def request(client: str, kind: str = "smtpd_access_policy") -> bytes:
    """A request as smtpd sends it at RCPT (a few of its attributes)."""
    return (f"request={kind}\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address={client}\n"
            f"client_name=unknown\nsender=a@example.org\nrecipient=b@example.net\n\n").encode()


def reply(client: str, kind: str = "smtpd_access_policy") -> bytes:
    """What decide() answers for one such request."""
    (parsed,) = PolicyReader().feed(request(client, kind))
    return decide(parsed, AUTHORISED.__contains__)


def test_exact_address_only() -> None:
    """The authorised address gets OK; its IPv6 neighbours and parents, and other addresses, get DUNNO."""
    assert reply("2001:db8:1:2::5") == b"action=OK\n\n"
    assert reply("192.0.2.7") == b"action=OK\n\n"
    for other in ("2001:db8:1:2::5:1", "2001:db8:1:2::5:beef", "2001:db8:1:2::", "2001:db8:1:2::6", "192.0.2.70",
                  "192.0.2", "198.51.100.1"):
        assert reply(other) == b"action=DUNNO\n\n", other


def test_address_forms_are_normalised() -> None:
    """An IPv4-mapped or uncompressed form of an authorised address is that address."""
    assert reply("::ffff:192.0.2.7") == b"action=OK\n\n"
    assert reply("2001:0db8:0001:0002:0000:0000:0000:0005") == b"action=OK\n\n"


def test_unreadable_requests_grant_nothing() -> None:
    """Another request type, no or a bad client_address: DUNNO."""
    assert reply("192.0.2.7", kind="junk") == b"action=DUNNO\n\n"
    assert decide({"request": "smtpd_access_policy"}, AUTHORISED.__contains__) == b"action=DUNNO\n\n"
    assert reply("192.0.2.7 ") == b"action=DUNNO\n\n"
    assert reply("not-an-address") == b"action=DUNNO\n\n"


def test_reader_bounds() -> None:
    """An over-long line, too many attributes or a line without '=' stop the reader with a reason."""
    reader = PolicyReader()
    assert reader.feed(b"x" * (MAX_LINE + 1)) == [] and "longer" in (reader.error or "")
    reader = PolicyReader()
    assert reader.feed(b"".join(b"a%d=b\n" % i for i in range(MAX_ATTRIBUTES + 1))) == []
    assert "attributes" in (reader.error or "")
    reader = PolicyReader()
    assert reader.feed(request("192.0.2.7") + b"garbage\n") != [] and "name=value" in (reader.error or "")
    assert reader.feed(request("192.0.2.7")) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_any_split_gives_the_same_requests(cuts: list[int]) -> None:
    """Requests split at any points across reads come out the same."""
    stream = request("192.0.2.7") + request("2001:db8::1") + request("192.0.2.9")
    reader, out, at = PolicyReader(), [], 0
    for size in cuts:
        out += reader.feed(stream[at:at + size])
        at += size
    out += reader.feed(stream[at:])
    assert [r["client_address"] for r in out] == ["192.0.2.7", "2001:db8::1", "192.0.2.9"]


def test_protocol_answers_many_requests_and_closes_on_garbage() -> None:
    """One connection answers requests in order; bad bytes close that connection after the good answers."""
    factory = PolicyFactory(AUTHORISED.__contains__, lambda host: True, max_connections=2)
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert proto is not None
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(request("192.0.2.7") + request("192.0.2.8"))
    assert transport.value() == b"action=OK\n\naction=DUNNO\n\n" and not transport.disconnecting
    proto.dataReceived(b"no equals sign\n")
    assert transport.disconnecting


def test_factory_refuses_untrusted_peers_and_over_limit() -> None:
    """A peer outside the allow list, or one connection too many, gets no protocol."""
    factory = PolicyFactory(AUTHORISED.__contains__, lambda host: host == "127.0.0.1", max_connections=1)
    assert factory.buildProtocol(IPv4Address("TCP", "192.0.2.66", 1)) is None
    first = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert first is not None and factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2)) is None
    first.makeConnection(StringTransport())
    first.connectionLost(None)
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 3)) is not None
    assert factory.refused == 2
