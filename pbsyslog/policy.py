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
import socket
import subprocess
from collections.abc import Callable, Iterable

from pbsyslog.addresses import unmapped_network
from pbsyslog.config import Config
from pbsyslog.inputs.senders import parse_network

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
    return unmapped_network(network)


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


def _as_int(ip: str) -> tuple[int, int]:
    """(4 or 6, the address as an integer); ValueError for anything but an address."""
    try:
        if ":" in ip:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
    except (OSError, TypeError):
        raise ValueError(f"not an IP address: {ip!r}") from None


def _masks(networks: Iterable[Network]) -> tuple[tuple[int, int, int], ...]:
    """Networks as (version, network as an integer, netmask as an integer)."""
    return tuple((n.version, int(n.network_address), int(n.netmask)) for n in networks)


def _ranges(*texts: str) -> tuple[tuple[int, int, int], ...]:
    return _masks(ipaddress.ip_network(t) for t in texts)


# The special ranges as ipaddress defines them (is_unspecified, is_multicast,
# is_loopback, is_link_local) plus the IPv4 broadcast address.
_SPECIAL = _ranges("0.0.0.0/32", "224.0.0.0/4", "255.255.255.255/32", "::/128", "ff00::/8")
_LOOPBACK = _ranges("127.0.0.0/8", "::1/128")
_LINK_LOCAL = _ranges("169.254.0.0/16", "fe80::/10")


def _within(version: int, address: int, networks: tuple[tuple[int, int, int], ...]) -> bool:
    for v, network, mask in networks:
        if v == version and address & mask == network:
            return True
    return False


class NeverList:
    """Decides whether an address may be authorised at all.

    Every login asks ``reason``: the networks are kept as integers and
    masks, so one answer costs a conversion and a few integer operations
    (``ipaddress`` objects were far slower on this per-login path).
    """

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
        special = _SPECIAL
        if not authorise_loopback:
            special += _LOOPBACK
        if not authorise_link_local:
            special += _LINK_LOCAL
        self._special = special
        self._never = _masks(self.never)
        self._mynetworks = _masks(self.mynetworks)

    def reason(self, ip: str) -> str | None:
        """Why ``ip`` must not be authorised, or None when it may be; ValueError if it is no address."""
        version, address = _as_int(ip)
        if _within(version, address, self._special):
            return "special"
        if _within(version, address, self._never):
            return "never"
        if _within(version, address, self._mynetworks):
            return "mynetworks"
        return None


def never_list(config: Config) -> tuple[NeverList, list[str], list[Network] | None]:
    """The never-authorise rules of ``config``: (rules, warnings, the networks postconf gave or None).

    With ``mynetworks = "postconf"`` the local Postfix is asked; when it
    cannot answer, the rules hold no mynetworks and a warning says why.
    """
    mynetworks: list[Network] = []
    warnings: list[str] = []
    from_postfix: list[Network] | None = None
    if config.mynetworks == "postconf":
        try:
            mynetworks, warnings = from_postconf()
        except OSError as e:
            warnings = [f"cannot read Postfix's mynetworks ({e}); set mynetworks in the config"]
        from_postfix = mynetworks
    elif config.mynetworks != "none":
        mynetworks = [parse_network(n) for n in config.mynetworks]
    never = NeverList(
        mynetworks=mynetworks,
        never=[parse_network(n) for n in config.never],
        authorise_loopback=config.authorise_loopback,
        authorise_link_local=config.authorise_link_local,
    )
    return never, warnings, from_postfix
