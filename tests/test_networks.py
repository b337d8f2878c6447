"""Never-authorise rules: Postfix mynetworks syntax, never list, special ranges."""

import ipaddress

import pytest

from pbsyslog.networks import NeverList, from_postconf, parse_mynetworks

FILES = {
    "/etc/postfix/network_table": "# trusted\n192.0.2.0/28 198.51.100.7\n[2001:db8::]/32  # v6\n",
    "/etc/postfix/cidr_table": "203.0.113.0/24 OK\n!203.0.113.9 REJECT\n",
}


def read(name: str) -> str:
    """A fake file system for /file/name entries."""
    if name not in FILES:
        raise FileNotFoundError(2, "No such file or directory")
    return FILES[name]


def test_postfix_forms() -> None:
    """CIDR, bare addresses, [ipv6]/len, v4-mapped, /file/name lists and cidr: tables are read."""
    nets, warnings = parse_mynetworks(
        "127.0.0.0/8, [::ffff:127.0.0.0]/104 [::1]/128 10.1.2.3 /etc/postfix/network_table "
        "cidr:/etc/postfix/cidr_table", read)
    assert [str(n) for n in nets] == [
        "127.0.0.0/8", "127.0.0.0/8", "::1/128", "10.1.2.3/32", "192.0.2.0/28", "198.51.100.7/32",
        "2001:db8::/32", "203.0.113.0/24",
    ]
    assert warnings == []


def test_unreadable_entries_are_warned_not_guessed() -> None:
    """Lookup tables, host names, negations and missing files give warnings and no networks."""
    nets, warnings = parse_mynetworks("hash:/etc/postfix/x mail.example.net !192.0.2.1 /nonexistent", read)
    assert nets == [] and len(warnings) == 4


@pytest.mark.parametrize(
    ("ip", "reason"),
    [
        ("0.0.0.0", "special"), ("::", "special"), ("224.0.0.5", "special"), ("255.255.255.255", "special"),
        ("127.0.0.2", "special"), ("::1", "special"), ("169.254.1.1", "special"), ("fe80::1", "special"),
        ("192.0.2.5", "mynetworks"), ("198.51.100.99", "never"), ("203.0.113.1", None), ("2001:db8::1", None),
    ],
)
def test_reasons(ip: str, reason: str | None) -> None:
    """Each address gets the first reason that applies, or None when it may be authorised."""
    never = NeverList(
        mynetworks=[ipaddress.ip_network("192.0.2.0/24")],
        never=[ipaddress.ip_network("198.51.100.0/24")],
    )
    assert never.reason(ip) == reason


def test_explicit_allowances() -> None:
    """authorise_loopback and authorise_link_local lift only their own rule."""
    never = NeverList(authorise_loopback=True, authorise_link_local=True)
    assert never.reason("127.0.0.2") is None and never.reason("fe80::1") is None
    assert never.reason("0.0.0.0") == "special"


def test_real_postconf() -> None:
    """The machine's own postconf answers with networks this module can read."""
    nets, _ = from_postconf()
    assert all(isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network)) for n in nets)
    assert nets, "postconf -xh mynetworks gave no network at all"
