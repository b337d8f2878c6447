"""Never-authorise rules: Postfix mynetworks syntax, never list, special ranges."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbsyslog.policy import NeverList, parse_mynetworks

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


def reference_reason(never: NeverList, ip: str) -> str | None:
    """The rule as ipaddress states it (NeverList's first version): what the integer checks must agree with."""
    address = ipaddress.ip_address(ip)
    if address.is_unspecified or address.is_multicast:
        return "special"
    if isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address("255.255.255.255"):
        return "special"
    if address.is_loopback and not never.authorise_loopback:
        return "special"
    if address.is_link_local and not never.authorise_link_local:
        return "special"
    if any(address in n for n in never.never):
        return "never"
    if any(address in n for n in never.mynetworks):
        return "mynetworks"
    return None


# Addresses near the edges of the special ranges, as well as anywhere.
EDGES = [
    "0.0.0.0", "0.0.0.1", "126.255.255.255", "127.0.0.0", "127.255.255.255", "128.0.0.0",
    "169.253.255.255", "169.254.0.0", "169.254.255.255", "169.255.0.0", "223.255.255.255",
    "224.0.0.0", "239.255.255.255", "240.0.0.0", "255.255.255.254", "255.255.255.255",
    "::", "::1", "::2", "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::", "febf::1", "fec0::",
    "feff::1", "ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::7",
]


@settings(max_examples=300, deadline=None)
@given(
    ip=st.one_of(st.sampled_from(EDGES), st.ip_addresses().map(str)),
    networks=st.lists(st.ip_addresses().flatmap(
        lambda a: st.integers(0, a.max_prefixlen).map(lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))),
        max_size=4),
    split=st.integers(0, 4),
    loopback=st.booleans(),
    link_local=st.booleans(),
)
def test_integer_checks_agree_with_ipaddress(
    ip: str, networks: list, split: int, loopback: bool, link_local: bool
) -> None:
    """For any address and any never / mynetworks lists, reason() says what ipaddress's rules say."""
    ip = str(ipaddress.ip_address(ip))
    never = NeverList(mynetworks=networks[:split], never=networks[split:],
                      authorise_loopback=loopback, authorise_link_local=link_local)
    assert never.reason(ip) == reference_reason(never, ip)


def test_reason_refuses_what_is_no_address() -> None:
    """Not an address: ValueError, as before."""
    with pytest.raises(ValueError):
        NeverList().reason("192.0.2")


@pytest.mark.parametrize("ip", EDGES)
@pytest.mark.parametrize("loopback", [False, True])
@pytest.mark.parametrize("link_local", [False, True])
def test_edges_of_the_special_ranges(ip: str, loopback: bool, link_local: bool) -> None:
    """Every edge address, with and without the allowances, as ipaddress's rules say."""
    never = NeverList(authorise_loopback=loopback, authorise_link_local=link_local)
    assert never.reason(ip) == reference_reason(never, ip)
