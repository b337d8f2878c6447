"""Trust: which senders may speak to a listener at all.

Contract: pure.  A ``SenderFilter`` answers whether a peer address lies in
the listener's allow-list; IPv4-mapped IPv6 peers (``::ffff:a.b.c.d``, as a
dual-stack socket reports IPv4 senders) are checked as the IPv4 address they
are.  Anything that is not an address is refused.  Whoever gets past this
check can authorise relaying with one forged line, so the default is
loopback only and widening it takes an explicit setting.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pbsyslog.addresses import unmapped, unmapped_network
from pbsyslog.memo import remember

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = ("127.0.0.0/8", "::1/128")


def parse_network(text: str) -> Network:
    """Parse a CIDR (a bare address means a single host); raise ValueError if it is none."""
    return unmapped_network(ipaddress.ip_network(text, strict=False))


def is_loopback_only(network: Network) -> bool:
    """Say whether every address of ``network`` is a loopback address."""
    return network.network_address.is_loopback and network.broadcast_address.is_loopback


class SenderFilter:
    """The allow-list of one listener."""

    _CACHE_LIMIT = 4096

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(parse_network(n) for n in networks)
        self._cache: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        """Say whether a peer with address ``host`` may send to this listener."""
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = remember(self._cache, host, self._check(host), self._CACHE_LIMIT)
        return verdict

    def _check(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        address = unmapped(address)
        return any(address in network for network in self.networks)


class ListenerTrust:
    """One listener's trust settings (allow list, pinned hostnames), replaced in place on reload."""

    def __init__(self, allow: Iterable[str], hostnames: Iterable[str]) -> None:
        self.update(allow, hostnames)

    def update(self, allow: Iterable[str], hostnames: Iterable[str]) -> None:
        """Take the settings of the reloaded config."""
        self._filter = SenderFilter(allow)
        # The syslog HOSTNAMEs this listener accepts (lower case); None: any.
        self.hostnames: frozenset[str] | None = frozenset(hostnames) or None

    def allows(self, host: str) -> bool:
        """Say whether a peer with address ``host`` may send to this listener."""
        return self._filter.allows(host)
