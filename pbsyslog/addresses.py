"""Address forms: IPv4-mapped IPv6 unwrapped, hosts written with their brackets.

Contract: pure functions over ``ipaddress`` values and strings; no I/O.  A
daemon on a dual-stack socket writes an IPv4 client as ``::ffff:a.b.c.d``
and a listener sees such peers too: everywhere pbsyslog compares, stores or
matches an address, it is the IPv4 address (``unmapped``), and a network
written as ``::ffff:a.b.c.d/n`` (n >= 96) is the IPv4 network it covers.
"""

from __future__ import annotations

import ipaddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def unmapped(address: Address) -> Address:
    """``address``, or the IPv4 address an IPv4-mapped IPv6 one stands for."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def unmapped_network(network: Network) -> Network:
    """``network``, or the IPv4 network an IPv4-mapped IPv6 one (prefix of 96 or more) covers."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def address_order(ip: str) -> tuple[int, int, str]:
    """A sort key that orders address texts as addresses: IPv4 before IPv6, numerically (not as strings)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return (7, 0, ip)  # not an address (a hand-edited journal): last, as text
    return (address.version, int(address), ip)


def bracketed(host: str) -> str:
    """``host`` as it is written before ``:port``: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def stands_for_others(ip: str) -> bool:
    """Say whether Postfix would also match ``ip`` as a key for other clients (its parent-network lookups).

    ``check_client_access`` with an access map (hash, btree, lmdb, cdb, SQL)
    looks the client address up, then the text cut at its last ``.`` (IPv4)
    or ``:`` (IPv6), again and again.  An IPv6 key such as ``2001:db8::5`` is
    therefore also found for ``2001:db8::5:1``; a key of eight groups, or one
    ending in ``::``, is the prefix of no other address's text, and IPv4
    addresses of four octets never are.  ``ip`` is in canonical (compressed)
    form, as the tracker holds it.
    """
    return ":" in ip and "::" in ip and not ip.endswith("::")
