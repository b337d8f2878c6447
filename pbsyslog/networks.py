"""Networks that must never be added to the map: Postfix's mynetworks, a never list, special ranges.

Contract: ``parse_mynetworks(text, read_file)`` is pure apart from the
``read_file`` it is given: it reads Postfix's ``mynetworks`` syntax (CIDR
and bare addresses, ``[ipv6]/len``, ``/file/name`` lists with ``#``
comments, separated by whitespace and commas) into networks.  Entries it
cannot evaluate here (``type:table`` lookups other than ``cidr:``,
``!negations``, host names) are returned as warnings, never guessed: a
mynetworks client relays anyway, so leaving one out of this list only means
a login of theirs is recorded for nothing.  ``from_postconf()`` is the edge
that asks the local Postfix (``postconf -xh mynetworks``, which expands
``$parameter`` references).  ``NeverList`` answers, for one address,
whether it must never be authorised and why.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

POSTCONF = "postconf"


def parse_mynetworks(text: str, read_file: Callable[[str], str]) -> tuple[list[Network], list[str]]:
    """Networks named by a mynetworks value, and warnings for entries skipped."""
    networks: list[Network] = []
    warnings: list[str] = []
    for entry in text.replace(",", " ").split():
        if entry.startswith("/"):
            try:
                content = read_file(entry)
            except OSError as e:
                warnings.append(f"{entry}: cannot read ({e.strerror})")
                continue
            lines = (line.split("#", 1)[0] for line in content.splitlines())
            more, notes = parse_mynetworks(" ".join(lines), read_file)
            networks += more
            warnings += notes
        elif entry.startswith("cidr:"):
            try:
                content = read_file(entry[5:])
            except OSError as e:
                warnings.append(f"{entry}: cannot read ({e.strerror})")
                continue
            for line in content.splitlines():
                fields = line.split("#", 1)[0].split()
                if fields and not fields[0].startswith("!"):
                    network = _network(fields[0])
                    if network is None:
                        warnings.append(f"{entry}: skipped {fields[0]!r}")
                    else:
                        networks.append(network)
        else:
            network = _network(entry)
            if network is None:
                warnings.append(f"skipped mynetworks entry {entry!r} (only addresses, networks, "
                                "/file/name and cidr: tables are read)")
            else:
                networks.append(network)
    return networks, warnings


def _network(text: str) -> Network | None:
    """One address or CIDR as Postfix writes it ([v6]/len or [v6] allowed)."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        text = text[1:close] + text[close + 1:]
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None \
            and network.prefixlen >= 96:
        return ipaddress.ip_network(f"{network.network_address.ipv4_mapped}/{network.prefixlen - 96}")
    return network


def from_postconf() -> tuple[list[Network], list[str]]:
    """Ask the local Postfix for mynetworks (expanded); raise OSError when postconf fails."""
    path = shutil.which(POSTCONF) or shutil.which(POSTCONF, path="/usr/sbin:/sbin")
    if path is None:
        raise OSError("postconf not found")
    result = subprocess.run([path, "-xh", "mynetworks"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise OSError(f"postconf -xh mynetworks failed: {result.stderr.strip()}")

    def read(name: str) -> str:
        with open(name, encoding="utf-8", errors="replace") as f:
            return f.read()

    return parse_mynetworks(result.stdout, read)


class NeverList:
    """Decides whether an address may be authorised at all."""

    def __init__(
        self,
        mynetworks: Iterable[Network] = (),
        never: Iterable[Network] = (),
        authorise_loopback: bool = False,
        authorise_link_local: bool = False,
    ) -> None:
        self.mynetworks = tuple(mynetworks)
        self.never = tuple(never)
        self.authorise_loopback = authorise_loopback
        self.authorise_link_local = authorise_link_local

    def reason(self, ip: str) -> str | None:
        """Why ``ip`` must not be authorised, or None when it may be."""
        address = ipaddress.ip_address(ip)
        if address.is_unspecified or address.is_multicast:
            return "special"
        if isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address("255.255.255.255"):
            return "special"
        if address.is_loopback and not self.authorise_loopback:
            return "special"
        if address.is_link_local and not self.authorise_link_local:
            return "special"
        if any(address in n for n in self.never):
            return "never"
        if any(address in n for n in self.mynetworks):
            return "mynetworks"
        return None
