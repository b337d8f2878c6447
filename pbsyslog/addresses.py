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


def bracketed(host: str) -> str:
    """``host`` as it is written before ``:port``: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host
