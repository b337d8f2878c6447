"""Socketmap: netstring decoding, answers, and connection handling."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from pbsyslog.outputs.socketmap import NetstringReader, SocketmapProtocol, answer, netstring

TABLE = {"192.0.2.7": "OK"}


def test_netstrings_split_anywhere() -> None:
    """Requests split at any byte, or pipelined in one read, decode the same."""
    stream = netstring(b"pbs 192.0.2.7") + netstring(b"pbs 2001:db8::1")
    for cut in range(len(stream) + 1):
        reader = NetstringReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == [b"pbs 192.0.2.7", b"pbs 2001:db8::1"]


@pytest.mark.parametrize("bad", [b"x:abc,", b"3:abcd", b"01:a,", b"99999999:", b"12345678901", b"-1:a,"])
def test_malformed_netstrings_raise(bad: bytes) -> None:
    """Bad lengths, missing commas and over-long requests are errors."""
    reader = NetstringReader(limit=10_000)
    assert reader.feed(bad) == []
    assert reader.error is not None
    assert reader.feed(netstring(b"pbs 192.0.2.7")) == []  # nothing more after an error


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=200))
def test_reader_never_raises(data: bytes, cut: int) -> None:
    """Arbitrary bytes, split anywhere, give payloads or an error state, never an exception."""
    reader = NetstringReader()
    payloads = reader.feed(data[:cut]) + reader.feed(data[cut:])
    assert all(isinstance(p, bytes) for p in payloads)


def test_answers() -> None:
    """Tracked IPs get OK with the value; others NOTFOUND; wrong map names and junk PERM."""
    assert answer(b"pbs 192.0.2.7", TABLE.get, None) == b"5:OK OK,"
    assert answer(b"pbs 192.0.2.8", TABLE.get, None) == b"9:NOTFOUND ,"
    assert NetstringReader().feed(answer(b"other 192.0.2.7", TABLE.get, frozenset({"pbs"})))[0].startswith(b"PERM ")
    assert NetstringReader().feed(answer(b"nospace", TABLE.get, None))[0].startswith(b"PERM ")


def test_malformed_request_closes_only_that_connection() -> None:
    """A connection sending garbage is closed after the answers to its good requests."""
    proto = SocketmapProtocol(TABLE.get, None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(netstring(b"pbs 192.0.2.7") + b"zz:")
    assert transport.value() == b"5:OK OK,"
    assert transport.disconnecting
