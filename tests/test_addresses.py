"""The small shared pieces: address forms, the bounded memo, failure logging state, side-file names."""

from __future__ import annotations

import ipaddress

from pbsyslog.addresses import bracketed, unmapped, unmapped_network
from pbsyslog.journal import SideFiles
from pbsyslog.logs import Failing
from pbsyslog.memo import remember


def test_unmapped_address() -> None:
    """An IPv4-mapped IPv6 address is its IPv4 address; any other address stays itself."""
    assert unmapped(ipaddress.ip_address("::ffff:192.0.2.7")) == ipaddress.ip_address("192.0.2.7")
    assert unmapped(ipaddress.ip_address("2001:db8::7")) == ipaddress.ip_address("2001:db8::7")
    assert unmapped(ipaddress.ip_address("192.0.2.7")) == ipaddress.ip_address("192.0.2.7")


def test_unmapped_network() -> None:
    """An IPv4-mapped network of prefix 96 or more is the IPv4 network it covers; a shorter one stays."""
    assert unmapped_network(ipaddress.ip_network("::ffff:192.0.2.0/120")) == ipaddress.ip_network("192.0.2.0/24")
    assert unmapped_network(ipaddress.ip_network("::ffff:0:0/96")) == ipaddress.ip_network("0.0.0.0/0")
    assert unmapped_network(ipaddress.ip_network("::/64")) == ipaddress.ip_network("::/64")


def test_bracketed() -> None:
    """IPv6 hosts get brackets before a port; IPv4 hosts and names do not."""
    assert bracketed("::1") == "[::1]"
    assert bracketed("127.0.0.1") == "127.0.0.1"
    assert bracketed("localhost") == "localhost"


def test_memo_is_emptied_when_full_for_a_new_key_only() -> None:
    """A full memo keeps its keys for an old key and empties itself for a new one."""
    memo: dict[str, int] = {}
    for i in range(3):
        remember(memo, f"k{i}", i, 3)
    assert remember(memo, "k1", 10, 3) == 10 and memo == {"k0": 0, "k1": 10, "k2": 2}
    remember(memo, "new", 4, 3)
    assert memo == {"new": 4}


def test_failing_says_each_change_once() -> None:
    """A kind's failure is reported once until it works again, and its recovery once."""
    failing = Failing()
    assert failing.works("map") is False
    assert [failing.failed("map"), failing.failed("map"), failing.failed("tick")] == [True, False, True]
    assert [failing.works("map"), failing.works("map")] == [True, False]
    assert failing.failed("map") is True


def test_side_files() -> None:
    """The journal, lock and control socket sit beside the map's path."""
    files = SideFiles("/var/lib/pbsyslog/pop-before-smtp")
    assert (files.journal, files.lock, files.control) == (
        "/var/lib/pbsyslog/pop-before-smtp.state", "/var/lib/pbsyslog/pop-before-smtp.lock",
        "/var/lib/pbsyslog/pop-before-smtp.ctl")


def test_stands_for_others() -> None:
    """An IPv6 text with an inner '::' is the prefix of other addresses' texts; eight groups, a trailing '::' and IPv4 are not."""
    from pbsyslog.addresses import stands_for_others

    assert stands_for_others("2001:db8::5") and stands_for_others("2001:db8:1:2::5") and stands_for_others("::1")
    assert not stands_for_others("2001:db8:1:2:3:4:5:6")
    assert not stands_for_others("2001:db8::")
    assert not stands_for_others("192.0.2.5")
