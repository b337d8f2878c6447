# SPDX-License-Identifier: MIT
"""Seeded generator of a realistic mail server's ``/var/log/mail.log``.

Contract
--------
``python bench/genlog.py -n N [options] [-o FILE]`` writes exactly N syslog
file lines (no ``<PRI>``), ``TIMESTAMP HOST TAG[PID]: MSG``, to FILE or
stdout.  Exactly ``round(N * login_frac)`` of them, at seeded random line
numbers, are successful POP3/IMAP logins written as the chosen daemon writes
them (Dovecot, UW ipop3d/imapd, Courier, Cyrus, or a mix of the four), so
that pbsyslog's pattern table reads each as a login with the client address
the generator picked.  Every other line is noise: Postfix (smtpd sessions,
NOQUEUE rejects, SASL failures, cleanup, qmgr, smtp/lmtp/local delivery,
anvil, scache, pickup), amavis, and the POP3/IMAP daemons' own lines that are
not logins (logouts, failed logins, connections that never log in, TLS
errors, delivery).  Several conversations are in progress at once, so their
lines interleave as in a real log.

Addresses: login clients come from a pool of ``--ips`` IPv4 addresses
(``--ipv6-frac`` of the non-local logins from a smaller IPv6 pool,
``--mapped-frac`` of the IPv4 ones written as ``::ffff:a.b.c.d``,
``--local-frac`` of all logins from 127.0.0.1, as webmail does).  Every
address written, in logins and in noise, is public-looking: never in 0/8,
10/8, 100.64/10, 127/8 (except the server's own 127.0.0.1), 169.254/16,
172.16/12, 192.0.0/24, 192.0.2/24, 192.168/16, 198.18/15, 198.51.100/24,
203.0.113/24 or 224/3, nor in IPv6 documentation space; 203.0.113.0/24 in
particular is never written, so a reader may use it for its own marker
lines.  Courier writes every IPv4 client as ``::ffff:a.b.c.d`` (couriertcpd
on a dual-stack socket), and those logins are counted as mapped.

Time: all in UTC.  Line i is stamped ``start + span * i / N``, so stamps rise
monotonically over the span; ``--timestamp traditional`` writes ``Jan 15
00:00:01``, ``--timestamp rfc3339`` rsyslog's default on Debian 12,
``2026-01-15T00:00:01.123456+00:00``.

Determinism: the output depends only on the arguments.  The same arguments
give the same bytes on any machine and time zone (``random.Random`` streams
seeded from ``--seed``; no clock, no global random state, no locale).

Without ``--quiet`` a one-line JSON summary goes to stderr: lines,
login_lines, login_ipv4, login_ipv6, login_mapped, login_local, noise_lines.

Importable: ``generate(lines, seed=1, ...)`` yields the lines (without
newline), ``generate_records`` yields ``(line, login_address_or_None)``,
``main(argv)`` is the command.
"""

import argparse
import base64
import calendar
import dataclasses
import datetime
import ipaddress
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

DAEMONS = ("dovecot", "uw", "courier", "cyrus")
TIMESTAMPS = ("traditional", "rfc3339")
DEFAULT_START = float(calendar.timegm((2026, 1, 15, 0, 0, 0)))
MAX_IPS = 10_000_000  # the pool is held in memory, as ints
SUMMARY_KEYS = ("lines", "login_lines", "login_ipv4", "login_ipv6", "login_mapped", "login_local", "noise_lines")

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_GIVEN = (
    "anna", "bernd", "clara", "david", "elena", "felix", "greta", "henrik", "ida", "jan", "katja", "lukas",
    "marta", "noah", "olivia", "peter", "quinn", "rosa", "stefan", "theresa", "ulrich", "vanessa", "willem",
    "yusuf", "zora",
)
_FAMILY = ("berger", "costa", "dietz", "engel", "fuchs", "gross", "haas", "iversen", "jung", "klein", "lang", "moser")
_OUR_DOMAINS = ("example.org", "example.net", "example.com")
_THEIR_DOMAINS = (
    "gmail.com", "outlook.com", "yahoo.com", "gmx.de", "web.de", "posteo.de", "mailbox.org", "icloud.com",
    "t-online.de", "proton.me", "example.info", "example.biz",
)
_ISP_SUFFIXES = ("dsl.example.net", "cable.example.com", "fttx.example.org", "mobile.example.net", "pool.example.biz")
_SPAM_NAMES = (
    "admin", "test", "info", "root", "user", "sales", "postmaster", "webmaster", "guest", "office", "support",
)
_DNSBLS = (
    ("zen.spamhaus.org", "https://www.spamhaus.org/query/ip/{}"),
    ("bl.spamcop.net", "https://www.spamcop.net/bl.shtml?{}"),
    ("b.barracudacentral.org", "https://www.barracudacentral.org/lookups/lookup-reputation?ip={}"),
)
_TLS_ERRORS = (
    "SSL_accept() failed: error:0A000126:SSL routines::unexpected eof while reading",
    "SSL_accept() failed: error:0A00006C:SSL routines::bad key share",
    "SSL_accept() failed: error:0A000102:SSL routines::unsupported protocol",
)

# IPv4 blocks never written, by first octet: True (the whole /8) or (mask, network) pairs.
_V4_BLOCKED: list[bool | tuple[tuple[int, int], ...]] = [False] * 256
for _octet in (0, 10, 127, *range(224, 256)):
    _V4_BLOCKED[_octet] = True
for _cidr in ("100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
              "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24"):
    _net = ipaddress.IPv4Network(_cidr)
    _first = int(_net.network_address) >> 24
    _old = _V4_BLOCKED[_first]
    assert _old is not True
    _V4_BLOCKED[_first] = (*(_old or ()), (int(_net.netmask), int(_net.network_address)))
del _octet, _cidr, _net, _first, _old

# Global unicast IPv6 first groups with addresses in every region's allocations; none is documentation space.
_V6_FIRST_GROUPS: tuple[int, ...] = (
    *range(0x2400, 0x2410), *range(0x2600, 0x2610), *range(0x2800, 0x2804), *range(0x2A00, 0x2A10),
)


def v4_blocked(address: int) -> bool:
    """Say whether an IPv4 address (as an int) is in a block the generator never writes."""
    rule = _V4_BLOCKED[address >> 24]
    if rule is True or rule is False:
        return rule
    return any(address & mask == network for mask, network in rule)


def v4_text(address: int) -> str:
    """Dotted quad of an IPv4 address given as an int."""
    return f"{address >> 24}.{(address >> 16) & 255}.{(address >> 8) & 255}.{address & 255}"


def traditional_stamp(second: int) -> str:
    """'Mmm dd hh:mm:ss' (day space-padded, English month) of epoch seconds, in UTC."""
    moment = time.gmtime(second)
    return (f"{_MONTHS[moment.tm_mon - 1]} {moment.tm_mday:2d} "
            f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d}")


def parse_start(text: str) -> float:
    """Epoch seconds, or 'YYYY-MM-DD[ HH:MM:SS]' (also with 'T'), read as UTC."""
    try:
        return float(text)
    except ValueError:
        pass
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            moment = datetime.datetime.strptime(text, form)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.UTC).timestamp()
    raise ValueError(f"not epoch seconds or YYYY-MM-DD[ HH:MM:SS]: {text!r}")


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything the output depends on (the command's options)."""

    lines: int
    seed: int = 1
    login_frac: float = 0.02
    ips: int = 10_000
    ipv6_frac: float = 0.05
    mapped_frac: float = 0.0
    local_frac: float = 0.0
    daemon: str = "dovecot"
    timestamp: str = "traditional"
    start: float = DEFAULT_START
    span: float = 86_400.0
    host: str = "mx1"

    def __post_init__(self) -> None:
        if self.lines < 0:
            raise ValueError("lines must be 0 or more")
        for name in ("login_frac", "ipv6_frac", "mapped_frac", "local_frac"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if not 1 <= self.ips <= MAX_IPS:
            raise ValueError(f"ips must be within 1..{MAX_IPS}")
        if self.daemon not in (*DAEMONS, "mixed"):
            raise ValueError(f"daemon must be one of {', '.join(DAEMONS)}, mixed")
        if self.timestamp not in TIMESTAMPS:
            raise ValueError(f"timestamp must be one of {', '.join(TIMESTAMPS)}")
        if self.span < 0:
            raise ValueError("span must be 0 or more")
        if not self.host or not self.host.isprintable() or any(c in self.host for c in " [:"):
            raise ValueError("host must be one printable word without '[' or ':'")

    @property
    def login_lines(self) -> int:
        """How many login lines the output has."""
        return round(self.lines * self.login_frac)


Line = tuple[str, str]  # (TAG[PID], MSG)


class MailLog:
    """One generated log; ``records()`` produces it (call it once per instance)."""

    CONVERSATIONS = 8  # noise conversations in progress at once (their lines interleave)
    RECENT = 64  # clients that polled lately; a login comes from one of them 40 % of the time

    def __init__(self, options: Options) -> None:
        self.options = options
        self._fqdn = options.host if "." in options.host else options.host + ".example.org"
        self.counts = dict.fromkeys(SUMMARY_KEYS, 0)
        seed = options.seed
        self._rng = random.Random(f"genlog/{seed}/content")
        self._client_rng = random.Random(f"genlog/{seed}/clients")
        self._position_rng = random.Random(f"genlog/{seed}/positions")
        pools = random.Random(f"genlog/{seed}/pools")
        self._v4_pool = self._draw_v4(pools, options.ips)
        self._v6_pool = [self._draw_v6(pools) for _ in range(max(16, options.ips // 20))]
        self._server_v4 = v4_text(self._draw_v4(pools, 1)[0])
        self._server_v6 = str(ipaddress.IPv6Address((self._draw_v6_int(pools) >> 64 << 64) | 0x25))
        self._recent: list[int] = []
        self._line = 0
        self._lines_per_second = options.lines / options.span if options.span > 0 else float(options.lines)
        self._timers: dict[int, list[Line]] = {}
        self._pid_counter = 1000 + self._rng.randrange(20_000)
        self._pids: dict[str, list[int]] = {}
        self._qmgr = self._new_pid()
        self._conversations: list[deque[Line]] = [deque() for _ in range(self.CONVERSATIONS)]
        events: list[tuple[Callable[[], list[Line]], int]] = [
            (self._smtp_reject, 30), (self._smtp_inbound, 24), (self._popimap_noise, 16),
            (self._smtp_sasl_failure, 10), (self._smtp_outbound, 6), (self._housekeeping, 4),
        ]
        self._events = [event for event, _ in events]
        self._event_weights = [weight for _, weight in events]

    # ------------------------------------------------------------ main loop

    def records(self) -> Iterator[tuple[str, str | None]]:
        """Yield (line without newline, the login's client address as pbsyslog reports it, or None)."""
        options = self.options
        n = options.lines
        if n == 0:
            return
        logins = sorted(self._position_rng.sample(range(n), options.login_lines))
        logins.append(n)  # sentinel: no login after the last line
        next_login = logins[0]
        login_number = 0
        start_us = round(options.start * 1_000_000)
        span_us = round(options.span * 1_000_000)
        traditional = options.timestamp == "traditional"
        header_tail = f" {options.host} "
        conversations = self._conversations
        timers = self._timers
        choose = self._rng.random
        width = len(conversations)
        counts = self.counts
        last_second = None
        base = ""
        for i in range(n):
            self._line = i
            due = timers.pop(i, None)
            if due is not None:
                for item in due:
                    conversations[int(choose() * width)].append(item)
            second, micro = divmod(start_us + span_us * i // n, 1_000_000)
            if second != last_second:
                last_second = second
                base = self._stamp(second)
            stamp = base if traditional else f"{base}.{micro:06d}+00:00"
            if i == next_login:
                tag, message, address = self._login()
                login_number += 1
                next_login = logins[login_number]
            else:
                conversation = conversations[int(choose() * width)]
                if not conversation:
                    conversation.extend(self._rng.choices(self._events, self._event_weights)[0]())
                tag, message = conversation.popleft()
                address = None
                counts["noise_lines"] += 1
            yield stamp + header_tail + tag + ": " + message, address
        counts["lines"] = n

    def _stamp(self, second: int) -> str:
        """The timestamp text of one second, without fraction (UTC)."""
        if self.options.timestamp == "traditional":
            return traditional_stamp(second)
        moment = time.gmtime(second)
        return (f"{moment.tm_year:04d}-{moment.tm_mon:02d}-{moment.tm_mday:02d}T"
                f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d}")

    def _now(self) -> int:
        """The current line's time, in whole seconds."""
        return int(self.options.start + self._line / max(self._lines_per_second, 1e-9))

    def _later(self, seconds: float, tag: str, message: str) -> None:
        """Queue a line of a conversation already under way for about ``seconds`` from now."""
        due = self._line + max(1, int(seconds * self._lines_per_second))
        self._timers.setdefault(due, []).append((tag, message))

    # ------------------------------------------------------------ addresses

    @staticmethod
    def _draw_v4(rng: random.Random, count: int) -> list[int]:
        """``count`` distinct public-looking IPv4 addresses (as ints)."""
        seen: set[int] = set()
        out: list[int] = []
        draw = rng.getrandbits
        while len(out) < count:
            address = draw(32)
            if address in seen or v4_blocked(address):
                continue
            seen.add(address)
            out.append(address)
        return out

    @staticmethod
    def _draw_v6_int(rng: random.Random) -> int:
        """A global-looking IPv6 address as an int: a /16 from _V6_FIRST_GROUPS, then random bits."""
        return rng.choice(_V6_FIRST_GROUPS) << 112 | rng.getrandbits(112)

    def _draw_v6(self, rng: random.Random) -> str:
        """A client IPv6 address, compressed and lowercase: SLAAC-random or a small host number."""
        address = self._draw_v6_int(rng)
        if rng.random() < 0.3:
            address = address >> 64 << 64 | rng.randrange(1, 0x1000)
        return str(ipaddress.IPv6Address(address))

    def _remote_v4(self) -> str:
        """A public-looking IPv4 address for a noise line (senders, scanners, remote MXs)."""
        draw = self._rng.getrandbits
        while True:
            address = draw(32)
            if not v4_blocked(address):
                return v4_text(address)

    def _remote(self) -> str:
        """A remote client address for noise: mostly IPv4, sometimes IPv6."""
        if self._rng.random() < self.options.ipv6_frac:
            return self._v6_pool[self._rng.randrange(len(self._v6_pool))]
        return self._remote_v4()

    def _reverse_name(self, address: str) -> str | None:
        """An ISP-style reverse DNS name for an IPv4 address, or None (no PTR, and IPv6); fixed per address."""
        choice = sum(map(ord, address)) % 5
        if choice < 2 or ":" in address:
            return None
        digits = address.replace(".", "-")
        return f"{'ip' if choice == 2 else 'host'}-{digits}.{_ISP_SUFFIXES[len(address) % len(_ISP_SUFFIXES)]}"

    # ------------------------------------------------------------ small parts

    def _new_pid(self) -> int:
        """The next process id, rising as on a real system, wrapping at Linux's default pid_max."""
        self._pid_counter += self._rng.randrange(1, 25)
        if self._pid_counter >= 4_194_304:
            self._pid_counter = 1000
        return self._pid_counter

    def _pid(self, service: str, workers: int = 3) -> int:
        """A pid of one of the long-running processes of ``service``, now and then replaced by a new one."""
        pids = self._pids.get(service)
        if pids is None:
            pids = self._pids[service] = [self._new_pid() for _ in range(workers)]
        slot = self._rng.randrange(len(pids))
        if self._rng.random() < 0.02:
            pids[slot] = self._new_pid()
        return pids[slot]

    def _queue_id(self) -> str:
        """A Postfix short queue id."""
        return f"{self._rng.getrandbits(44):X}"

    def _message_id(self, domain: str) -> str:
        return f"<{self._rng.getrandbits(64):016x}.{self._rng.getrandbits(20):05x}@{domain}>"

    def _dovecot_session(self, v6: bool) -> str:
        """A Dovecot session id: base64 of 12 bytes (IPv4 client) or 24 (IPv6)."""
        size = 24 if v6 else 12
        return base64.b64encode(self._rng.getrandbits(size * 8).to_bytes(size, "big")).decode("ascii")

    def _mailbox(self, number: int) -> tuple[str, str]:
        """(local part, domain) of one of our users, fixed per number."""
        given = _GIVEN[number % len(_GIVEN)]
        family = _FAMILY[(number // len(_GIVEN)) % len(_FAMILY)]
        serial = number // (len(_GIVEN) * len(_FAMILY))
        local = f"{given}.{family}{serial or ''}"
        return local, _OUR_DOMAINS[number % len(_OUR_DOMAINS)]

    def _our_user(self) -> str:
        local, domain = self._mailbox(self._rng.randrange(5000))
        return f"{local}@{domain}"

    def _their_address(self) -> str:
        rng = self._rng
        return f"{rng.choice(_GIVEN)}{rng.choice(('', '.', '_'))}{rng.choice(_FAMILY)}@{rng.choice(_THEIR_DOMAINS)}"

    def _daemon(self) -> str:
        daemon = self.options.daemon
        return self._rng.choice(DAEMONS) if daemon == "mixed" else daemon

    # ------------------------------------------------------------ logins

    def _pick_client(self) -> tuple[str, str, int]:
        """(kind, address as written before any ::ffff: form, user number) of the next login."""
        rng = self._client_rng
        options = self.options
        if rng.random() < options.local_frac:
            return "local", "127.0.0.1", rng.randrange(5000)
        if rng.random() < options.ipv6_frac:
            index = rng.randrange(len(self._v6_pool))
            return "ipv6", self._v6_pool[index], 7 * index + 3
        recent = self._recent
        if recent and rng.random() < 0.4:
            index = recent[rng.randrange(len(recent))]
        else:
            index = rng.randrange(len(self._v4_pool))
            if len(recent) < self.RECENT:
                recent.append(index)
            else:
                recent[rng.randrange(self.RECENT)] = index
        kind = "mapped" if rng.random() < options.mapped_frac else "ipv4"
        return kind, v4_text(self._v4_pool[index]), index

    def _login(self) -> tuple[str, str, str]:
        """One successful login line: (TAG[PID], MSG, the client address as pbsyslog reports it)."""
        kind, address, user_number = self._pick_client()
        write = {"dovecot": self._dovecot_login, "uw": self._uw_login, "courier": self._courier_login,
                 "cyrus": self._cyrus_login}[self._daemon()]
        tag, message, kind = write(kind, address, self._mailbox(user_number))
        counts = self.counts
        counts["login_lines"] += 1
        counts["login_" + kind] += 1
        return tag, message, address

    def _dovecot_login(self, kind: str, address: str, mailbox: tuple[str, str]) -> tuple[str, str, str]:
        rng = self._rng
        user = f"{mailbox[0]}@{mailbox[1]}"
        if kind == "local":
            protocol, rip, lip, security = "imap", address, "127.0.0.1", ", secured"
        else:
            protocol = "imap" if rng.random() < 0.7 else "pop3"
            rip, lip = address, self._server_v4
            if kind == "ipv6":
                lip = self._server_v6
            elif kind == "mapped":
                rip, lip = "::ffff:" + address, "::ffff:" + self._server_v4
            security = ", TLS" if rng.random() < 0.85 else ""
        method = rng.choices(("PLAIN", "LOGIN", "SCRAM-SHA-256"), (80, 15, 5))[0]
        mpid = self._new_pid()
        session = self._dovecot_session(kind == "ipv6")
        message = (f"{protocol}-login: Login: user=<{user}>, method={method}, rip={rip}, lip={lip}, "
                   f"mpid={mpid}{security}, session=<{session}>")
        prefix = f"{protocol}({user})<{mpid}><{session}>: "
        if protocol == "pop3":
            fetched = rng.randrange(0, 6)
            size = fetched * rng.randrange(2_000, 60_000)
            self._later(rng.uniform(1, 30), "dovecot",
                        f"{prefix}Disconnected: Logged out top=0/0, retr={fetched}/{size}, "
                        f"del={fetched}/{fetched + rng.randrange(0, 3)}, size={size}")
        else:
            counters = (f"in={rng.randrange(30, 4_000)} out={rng.randrange(300, 900_000)} "
                        f"deleted={rng.randrange(0, 3)} expunged={rng.randrange(0, 3)} trashed=0 "
                        f"hdr_count={rng.randrange(0, 40)} hdr_bytes={rng.randrange(0, 20_000)} "
                        f"body_count={rng.randrange(0, 6)} body_bytes={rng.randrange(0, 300_000)}")
            how = rng.random()
            if how < 0.6:
                text = f"Disconnected: Logged out {counters}"
            elif how < 0.9:
                text = (f"Disconnected: Connection closed (IDLE running for {rng.uniform(1, 1800):.3f} + waiting "
                        f"input for 0.001 secs, 2 B in + 10+0 B out, state=wait-input) {counters}")
            else:
                text = f"Disconnected: Inactivity - no input for 1800 secs {counters}"
            self._later(min(3600.0, rng.expovariate(1 / 400)), "dovecot", prefix + text)
        return "dovecot", message, kind

    def _uw_login(self, kind: str, address: str, mailbox: tuple[str, str]) -> tuple[str, str, str]:
        rng = self._rng
        user = mailbox[0]
        written = "::ffff:" + address if kind == "mapped" else address
        name = "localhost" if kind == "local" else self._reverse_name(address)
        host = f"{name} [{written}]" if name else f"[{written}]"
        if rng.random() < 0.4:
            tag = f"ipop3d[{self._new_pid()}]"
            messages = rng.randrange(0, 9)
            verb = rng.choices(("Login", "Auth", "APOP"), (85, 10, 5))[0]
            message = f"{verb} user={user} host={host} nmsgs={messages}/{messages}"
            self._later(rng.uniform(1, 25), tag,
                        f"Logout user={user} host={host} nmsgs={messages} ndele={rng.randrange(0, messages + 1)}")
        else:
            tag = f"imapd[{self._new_pid()}]"
            verb = "Login" if rng.random() < 0.85 else "Authenticated"
            message = f"{verb} user={user} host={host}"
            end = rng.choices(("Logout", "Autologout", "Command stream end of file, while reading line"), (70, 10, 20))
            self._later(min(3600.0, rng.expovariate(1 / 400)), tag, f"{end[0]} user={user} host={host}")
        return tag, message, kind

    def _courier_login(self, kind: str, address: str, mailbox: tuple[str, str]) -> tuple[str, str, str]:
        rng = self._rng
        user = f"{mailbox[0]}@{mailbox[1]}"
        if kind in ("ipv4", "mapped", "local"):
            written = "::ffff:" + address
            if kind == "ipv4":
                kind = "mapped"  # couriertcpd on a dual-stack socket writes every IPv4 client so
        else:
            written = address
        tag = rng.choices(("imapd-ssl", "imapd", "pop3d-ssl", "pop3d"), (45, 20, 20, 15))[0]
        port = rng.randrange(1024, 65536)
        client = f"ip=[{written}], port=[{port}]"
        if tag.startswith("imapd"):
            message = f"LOGIN, user={user}, {client}, protocol=IMAP"
            end = rng.choices(("LOGOUT", "DISCONNECTED", "TIMEOUT"), (70, 25, 5))[0]
            tls = ", starttls=1" if tag == "imapd" and rng.random() < 0.5 else ""
            self._later(min(3600.0, rng.expovariate(1 / 400)), tag,
                        f"{end}, user={user}, {client}, headers={rng.randrange(0, 20_000)}, "
                        f"body={rng.randrange(0, 300_000)}, rcvd={rng.randrange(20, 3_000)}, "
                        f"sent={rng.randrange(200, 900_000)}, time={rng.randrange(0, 3600)}{tls}")
        else:
            message = f"LOGIN, user={user}, {client}"
            fetched = rng.randrange(0, 6)
            tls = ", stls=1" if tag == "pop3d" and rng.random() < 0.5 else ""
            self._later(rng.uniform(1, 25), tag,
                        f"LOGOUT, user={user}, {client}, top=0, retr={fetched * rng.randrange(2_000, 60_000)}, "
                        f"rcvd={12 + 14 * fetched}, sent={41 + rng.randrange(0, 200_000) * (fetched > 0)}, "
                        f"time={rng.randrange(0, 30)}{tls}")
        return tag, message, kind

    def _cyrus_login(self, kind: str, address: str, mailbox: tuple[str, str]) -> tuple[str, str, str]:
        rng = self._rng
        user = mailbox[0]
        written = "::ffff:" + address if kind == "mapped" else address
        name = "localhost" if kind == "local" else self._reverse_name(address)
        host = f"{name} [{written}]" if name else f"[{written}]"
        service = rng.choices(("imaps", "imap", "pop3s", "pop3"), (45, 25, 20, 10))[0]
        pid = self._pid("cyrus/" + service, 4)
        tag = f"cyrus/{service}[{pid}]"
        mechanism = rng.choice(("plaintext", "PLAIN", "LOGIN"))
        if service.endswith("s") or rng.random() < 0.6:
            mechanism += "+TLS"
        message = (f"login: {host} {user} {mechanism} User logged in "
                   f"SESSIONID=<cyrus-{self._now()}-{pid}-{rng.randrange(1, 200)}-{rng.getrandbits(63)}>")
        usage = f"USAGE {user} user: {rng.uniform(0, 0.2):.6f} sys: {rng.uniform(0, 0.1):.6f}"
        if service.startswith("pop3"):
            fetched = rng.randrange(0, 6)
            self._later(rng.uniform(1, 20), tag, usage)
            self._later(rng.uniform(1, 20), tag, f"counts: retr=<{fetched}> top=<0> dele=<{fetched}>")
        else:
            self._later(min(3600.0, rng.expovariate(1 / 400)), tag, usage)
        return tag, message, kind

    # ------------------------------------------------------------ noise: POP3/IMAP daemons

    def _popimap_noise(self) -> list[Line]:
        """Lines of the POP3/IMAP daemon that are not logins: failed logins, no login, TLS errors."""
        daemon = self._daemon()
        rng = self._rng
        address = self._remote()
        v6 = ":" in address
        if rng.random() < 0.5:
            user = rng.choice(_SPAM_NAMES)
            if rng.random() < 0.5:
                user += "@" + rng.choice(_OUR_DOMAINS)
        else:
            user = self._our_user()
        if daemon == "dovecot":
            return self._dovecot_noise(address, v6, user)
        if daemon == "uw":
            return self._uw_noise(address, user.split("@")[0])
        if daemon == "courier":
            return self._courier_noise(address, v6, user)
        return self._cyrus_noise(address, user.split("@")[0])

    def _dovecot_noise(self, address: str, v6: bool, user: str) -> list[Line]:
        rng = self._rng
        protocol = rng.choice(("imap", "pop3"))
        lip = self._server_v6 if v6 else self._server_v4
        tls = rng.random() < 0.8
        flag = ", TLS" if tls else ""
        session = self._dovecot_session(v6)
        who = f"rip={address}, lip={lip}"
        what = rng.random()
        if what < 0.45:
            attempts = rng.randrange(1, 4)
            seconds = attempts * 2 + rng.randrange(0, 6)
            method = rng.choice(("PLAIN", "LOGIN"))
            if rng.random() < 0.6:
                ending = (f"Disconnected: Aborted login by logging out "
                          f"(auth failed, {attempts} attempts in {seconds} secs)")
            else:
                ending = f"Disconnected (auth failed, {attempts} attempts in {seconds} secs)"
            reason = rng.choice(("unknown user", "Password mismatch"))
            return [
                ("dovecot", f"auth: passwd-file({user},{address},<{session}>): {reason}"),
                ("dovecot", f"{protocol}-login: {ending}: user=<{user}>, method={method}, {who}{flag}, "
                            f"session=<{session}>"),
            ]
        if what < 0.65:
            return [("dovecot", f"{protocol}-login: Disconnected: Connection closed (no auth attempts in "
                                f"{rng.randrange(0, 3)} secs): user=<>, {who}, TLS handshaking: "
                                f"{rng.choice(_TLS_ERRORS)}, session=<{session}>")]
        if what < 0.8:
            return [("dovecot", f"{protocol}-login: Disconnected: Inactivity (no auth attempts in 180 secs): "
                                f"user=<>, {who}{flag}, session=<{session}>")]
        if what < 0.9:
            return [("dovecot", f"{protocol}-login: Disconnected: Aborted login by logging out (no auth attempts "
                                f"in 0 secs): user=<>, {who}{flag}, session=<{session}>")]
        return [("dovecot", f"imap-login: Aborted login (tried to use disallowed plaintext auth): user=<>, "
                            f"{who}, session=<{session}>")]

    def _uw_noise(self, address: str, user: str) -> list[Line]:
        rng = self._rng
        pop = rng.random() < 0.4
        tag = f"{'ipop3d' if pop else 'imapd'}[{self._new_pid()}]"
        name = self._reverse_name(address)
        host = f"{name} [{address}]" if name else f"[{address}]"
        lines: list[Line] = [(tag, f"{'pop3' if pop else 'imap'} service init from {address}")]
        what = rng.random()
        if what < 0.6:
            lines.append((tag, f"Login failed user={user} auth={user} host={host}"))
            lines.append((tag, f"Command stream end of file while reading line user={user} host={host}"))
        elif what < 0.75:
            lines.append((tag, f"AUTHENTICATE {rng.choice(('PLAIN', 'LOGIN'))} failure host={host}"))
            lines.append((tag, f"Logout user=??? host={host}"))
        else:
            lines.append((tag, f"Autologout user=??? host={host}"))
        return lines

    def _courier_noise(self, address: str, v6: bool, user: str) -> list[Line]:
        rng = self._rng
        tag = rng.choice(("imapd-ssl", "imapd", "pop3d-ssl", "pop3d"))
        written = address if v6 else "::ffff:" + address
        client = f"ip=[{written}], port=[{rng.randrange(1024, 65536)}]"
        lines: list[Line] = [(tag, f"Connection, {client}")]
        what = rng.random()
        if what < 0.55:
            lines.append((tag, f"LOGIN FAILED, user={user}, {client}"))
            lines.append((tag, f"LOGOUT, {client}"))
        elif what < 0.75 and tag.endswith("-ssl"):
            lines.append((tag, f"ip=[{written}], Unexpected SSL connection shutdown."))
        elif what < 0.85:
            lines.append((tag, f"TIMEOUT, {client}, headers=0, body=0, rcvd=0, sent=0, time=60"))
        else:
            lines.append((tag, f"LOGOUT, {client}"))
        lines.append((tag, f"Disconnected, {client}"))
        return lines

    def _cyrus_noise(self, address: str, user: str) -> list[Line]:
        rng = self._rng
        service = rng.choice(("imaps", "imap", "pop3s", "pop3"))
        tag = f"cyrus/{service}[{self._pid('cyrus/' + service, 4)}]"
        name = self._reverse_name(address)
        host = f"{name} [{address}]" if name else f"[{address}]"
        lines: list[Line] = []
        tls = service.endswith("s") or rng.random() < 0.5
        if tls:
            lines.append((tag, f"{service[:4]}d:Loading hard-coded DH parameters"))
        if service.endswith("s") and rng.random() < 0.2:
            lines.append((tag, f"{service} TLS negotiation failed: {host}"))
            return lines
        if tls:
            lines.append((tag, "starttls: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits new) "
                               "no authentication"))
        mechanism = rng.choice(("plaintext", "PLAIN", "LOGIN"))
        reason = rng.choice(("authentication failure: checkpass failed", "user not found: checkpass failed"))
        lines.append((tag, f"badlogin: {host} {mechanism} ({user}) [SASL(-13): {reason}]"))
        return lines

    # ------------------------------------------------------------ noise: Postfix and amavis

    def _client(self, address: str, named: float) -> str:
        """Postfix's name[address] for a client; ``named``: chance that its PTR checks out."""
        name = self._reverse_name(address) if self._rng.random() < named else None
        return f"{name or 'unknown'}[{address}]"

    def _smtp_reject(self) -> list[Line]:
        rng = self._rng
        address = self._remote()
        client = self._client(address, 0.3)
        tag = f"postfix/smtpd[{self._pid('smtpd', 4)}]"
        sender = self._their_address()
        recipient = self._our_user()
        helo = rng.choice(("User", "localhost", f"[{address}]", "mail.example.info", f"WIN-{rng.getrandbits(32):X}"))
        lines: list[Line] = []
        if client.startswith("unknown") and rng.random() < 0.3:
            lines.append((tag, f"warning: hostname {self._reverse_name(self._remote_v4()) or 'mail.example.info'} "
                               f"does not resolve to address {address}: Name or service not known"))
        lines.append((tag, f"connect from {client}"))
        what = rng.random()
        if what < 0.35:
            dnsbl, url = rng.choice(_DNSBLS)
            why = f"554 5.7.1 Service unavailable; Client host [{address}] blocked using {dnsbl}; {url.format(address)}"
        elif what < 0.55:
            recipient = self._their_address()
            why = f"554 5.7.1 <{recipient}>: Relay access denied"
        elif what < 0.75:
            why = f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown in virtual mailbox table"
        elif what < 0.9:
            why = f"450 4.7.1 Client host rejected: cannot find your reverse hostname, [{address}]"
        else:
            why = f"504 5.5.2 <{helo}>: Helo command rejected: need fully-qualified hostname"
        lines.append((tag, f"NOQUEUE: reject: RCPT from {client}: {why}; from=<{sender}> to=<{recipient}> "
                           f"proto=ESMTP helo=<{helo}>"))
        if rng.random() < 0.2:
            lines.append((tag, f"lost connection after RCPT from {client}"))
            lines.append((tag, f"disconnect from {client} ehlo=1 mail=1 rcpt=0/1 commands=2/3"))
        else:
            lines.append((tag, f"disconnect from {client} ehlo=1 mail=1 rcpt=0/1 rset=1 quit=1 commands=4/5"))
        return lines

    def _smtp_sasl_failure(self) -> list[Line]:
        rng = self._rng
        address = self._remote()
        client = self._client(address, 0.1)
        service = rng.choice(("smtpd", "submission/smtpd"))
        tag = f"postfix/{service}[{self._pid(service, 2)}]"
        if rng.random() < 0.7:
            failure = "SASL LOGIN authentication failed: UGFzc3dvcmQ6"
        else:
            failure = "SASL PLAIN authentication failed: authentication failure"
        return [
            (tag, f"connect from {client}"),
            (tag, f"warning: {client}: {failure}"),
            (tag, f"lost connection after AUTH from {client}"),
            (tag, f"disconnect from {client} ehlo=1 auth=0/1 commands=1/2"),
        ]

    def _smtp_inbound(self) -> list[Line]:
        rng = self._rng
        address = self._remote()
        client = self._client(address, 0.8)
        smtpd = f"postfix/smtpd[{self._pid('smtpd', 4)}]"
        qmgr = f"postfix/qmgr[{self._qmgr}]"
        queue_id = self._queue_id()
        sender = self._their_address()
        recipient = self._our_user()
        message_id = self._message_id(sender.split("@")[1])
        size = rng.randrange(1_500, 400_000)
        lines: list[Line] = [
            (smtpd, f"connect from {client}"),
            (smtpd, f"{queue_id}: client={client}"),
            (f"postfix/cleanup[{self._pid('cleanup', 2)}]", f"{queue_id}: message-id={message_id}"),
            (qmgr, f"{queue_id}: from=<{sender}>, size={size}, nrcpt=1 (queue active)"),
            (smtpd, f"disconnect from {client} ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7"),
        ]
        final = queue_id
        if rng.random() < 0.5:
            amavis_pid = self._pid("amavis", 3)
            milliseconds = rng.randrange(200, 4_000)
            filtered = self._queue_id()
            reinject = f"postfix/smtpd[{self._pid('smtpd-reinject', 2)}]"
            lines += [
                (f"amavis[{amavis_pid}]",
                 f"({amavis_pid:05d}-{rng.randrange(1, 40):02d}) Passed CLEAN {{RelayedInbound}}, "
                 f"[{address}]:{rng.randrange(1024, 65536)} [{address}] <{sender}> -> <{recipient}>, "
                 f"Queue-ID: {queue_id}, Message-ID: {message_id}, mail_id: "
                 f"{base64.urlsafe_b64encode(rng.getrandbits(72).to_bytes(9, 'big')).decode('ascii')}, "
                 f"Hits: {rng.uniform(-4, 4.9):.3f}, size: {size}, queued_as: {filtered}, {milliseconds} ms"),
                (reinject, "connect from localhost[127.0.0.1]"),
                (reinject, f"{filtered}: client=localhost[127.0.0.1]"),
                (f"postfix/cleanup[{self._pid('cleanup', 2)}]", f"{filtered}: message-id={message_id}"),
                (qmgr, f"{filtered}: from=<{sender}>, size={size + 700}, nrcpt=1 (queue active)"),
                (reinject, "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"),
                (f"postfix/smtp[{self._pid('smtp', 3)}]",
                 f"{queue_id}: to=<{recipient}>, relay=127.0.0.1[127.0.0.1]:10024, "
                 f"delay={milliseconds / 1000 + 0.3:.1f}, delays=0.2/0/0/{milliseconds / 1000:.1f}, dsn=2.0.0, "
                 f"status=sent (250 2.0.0 from "
                 f"MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as {filtered})"),
                (qmgr, f"{queue_id}: removed"),
            ]
            final = filtered
        lines += self._delivery(final, recipient, message_id)
        lines.append((qmgr, f"{final}: removed"))
        return lines

    def _delivery(self, queue_id: str, recipient: str, message_id: str) -> list[Line]:
        """The local delivery of one message, as the mail store in use logs it."""
        rng = self._rng
        store = self._daemon()
        host = self._fqdn
        delays = f"delay={rng.uniform(0.1, 3):.1f}, delays={rng.uniform(0, 1):.1f}/0/0/{rng.uniform(0, 1):.2f}"
        if store == "dovecot":
            lmtp_pid = self._new_pid()
            session = self._dovecot_session(False)
            return [
                ("dovecot", f"lmtp({lmtp_pid}): Connect from local"),
                ("dovecot", f"lmtp({recipient})<{lmtp_pid}><{session}>: msgid={message_id}: saved mail to INBOX"),
                (f"postfix/lmtp[{self._pid('lmtp', 2)}]",
                 f"{queue_id}: to=<{recipient}>, relay={host}[private/dovecot-lmtp], {delays}, dsn=2.0.0, "
                 f"status=sent (250 2.0.0 <{recipient}> {session} Saved)"),
                ("dovecot", f"lmtp({lmtp_pid}): Disconnect from local: Client has quit the connection (state=READY)"),
            ]
        local = recipient.split("@")[0]
        if store == "cyrus":
            lmtp = f"cyrus/lmtpunix[{self._pid('cyrus/lmtpunix', 2)}]"
            return [
                (lmtp, f"Delivered: {message_id} to mailbox: user.{local}"),
                (f"postfix/lmtp[{self._pid('lmtp', 2)}]",
                 f"{queue_id}: to=<{recipient}>, relay={host}[/run/cyrus/socket/lmtp], {delays}, dsn=2.1.5, "
                 f"status=sent (250 2.1.5 Ok SESSIONID=<cyrus-{rng.getrandbits(63)}>)"),
            ]
        where = "maildir" if store == "courier" else "mailbox"
        return [(f"postfix/local[{self._pid('local', 2)}]",
                 f"{queue_id}: to=<{local}@{host}>, orig_to=<{recipient}>, relay=local, {delays}, dsn=2.0.0, "
                 f"status=sent (delivered to {where})")]

    def _smtp_outbound(self) -> list[Line]:
        """A POP/IMAP user relays a message: the mail that POP-before-SMTP lets through."""
        rng = self._rng
        if self._recent and rng.random() < 0.8:
            address = v4_text(self._v4_pool[self._recent[rng.randrange(len(self._recent))]])
        else:
            address = self._remote()
        client = self._client(address, 0.5)
        smtpd = f"postfix/smtpd[{self._pid('smtpd', 4)}]"
        qmgr = f"postfix/qmgr[{self._qmgr}]"
        queue_id = self._queue_id()
        sender = self._our_user()
        recipient = self._their_address()
        domain = recipient.split("@")[1]
        lines: list[Line] = [
            (smtpd, f"connect from {client}"),
            (smtpd, f"{queue_id}: client={client}"),
            (f"postfix/cleanup[{self._pid('cleanup', 2)}]",
             f"{queue_id}: message-id={self._message_id(sender.split('@')[1])}"),
            (qmgr, f"{queue_id}: from=<{sender}>, size={rng.randrange(600, 3_000_000)}, nrcpt=1 (queue active)"),
            (smtpd, f"disconnect from {client} ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"),
        ]
        mx = f"mx{rng.randrange(1, 4)}.{domain}[{self._remote_v4()}]"
        smtp = f"postfix/smtp[{self._pid('smtp', 3)}]"
        if rng.random() < 0.93:
            lines.append((smtp, f"{queue_id}: to=<{recipient}>, relay={mx}:25, delay={rng.uniform(0.3, 4):.1f}, "
                                f"delays=0.1/0.01/{rng.uniform(0.05, 1):.2f}/{rng.uniform(0.1, 2):.2f}, dsn=2.0.0, "
                                f"status=sent (250 2.0.0 OK {rng.getrandbits(40):x} - accepted)"))
            lines.append((qmgr, f"{queue_id}: removed"))
        else:
            lines.append((smtp, f"connect to {mx}:25: Connection timed out"))
            lines.append((smtp, f"{queue_id}: to=<{recipient}>, relay=none, delay=30, delays=0.1/0/30/0, "
                                f"dsn=4.4.1, status=deferred (connect to {mx}:25: Connection timed out)"))
        return lines

    def _housekeeping(self) -> list[Line]:
        rng = self._rng
        what = rng.random()
        earlier = traditional_stamp(self._now() - 300)
        if what < 0.4:
            anvil = f"postfix/anvil[{self._pid('anvil', 1)}]"
            return [
                (anvil, f"statistics: max connection rate {rng.randrange(1, 9)}/60s for "
                        f"(smtp:{self._remote_v4()}) at {earlier}"),
                (anvil, f"statistics: max connection count {rng.randrange(1, 5)} for "
                        f"(smtp:{self._remote_v4()}) at {earlier}"),
                (anvil, f"statistics: max cache size {rng.randrange(2, 40)} at {earlier}"),
            ]
        if what < 0.6:
            scache = f"postfix/scache[{self._pid('scache', 1)}]"
            return [
                (scache, f"statistics: start interval {earlier}"),
                (scache, f"statistics: domain lookup hits={rng.randrange(0, 30)} miss={rng.randrange(1, 60)} "
                         f"success={rng.randrange(0, 70)}%"),
                (scache, f"statistics: max simultaneous domains=1 addresses=1 connection={rng.randrange(1, 4)}"),
            ]
        queue_id = self._queue_id()
        host = self._fqdn
        qmgr = f"postfix/qmgr[{self._qmgr}]"
        return [
            (f"postfix/pickup[{self._pid('pickup', 1)}]", f"{queue_id}: uid=0 from=<root>"),
            (f"postfix/cleanup[{self._pid('cleanup', 2)}]", f"{queue_id}: message-id={self._message_id(host)}"),
            (qmgr, f"{queue_id}: from=<root@{host}>, size={rng.randrange(500, 4_000)}, nrcpt=1 (queue active)"),
            (f"postfix/local[{self._pid('local', 2)}]",
             f"{queue_id}: to=<root@{host}>, orig_to=<root>, relay=local, delay=0.03, "
             f"delays=0.01/0.01/0/0.01, dsn=2.0.0, status=sent (delivered to mailbox)"),
            (qmgr, f"{queue_id}: removed"),
        ]


# ---------------------------------------------------------------- API


def generate_records(lines: int, seed: int = 1, **options: Any) -> Iterator[tuple[str, str | None]]:
    """Yield (line, login client address or None) for each line; options as ``Options``' fields."""
    return MailLog(Options(lines=lines, seed=seed, **options)).records()


def generate(lines: int, seed: int = 1, **options: Any) -> Iterator[str]:
    """Yield the log's lines (without newline); options as ``Options``' fields."""
    return (line for line, _ in generate_records(lines, seed, **options))


def write(log: MailLog, out: IO[bytes], chunk: int = 8192) -> dict[str, int]:
    """Write the whole log to a binary stream, in chunks; return the summary counts."""
    batch: list[str] = []
    for line, _ in log.records():
        batch.append(line)
        if len(batch) >= chunk:
            batch.append("")
            out.write("\n".join(batch).encode())
            batch = []
    if batch:
        batch.append("")
        out.write("\n".join(batch).encode())
    return dict(log.counts)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be within 0..1")
    return value


def _start(text: str) -> float:
    try:
        return parse_start(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlog.py", description="Write a seeded, realistic mail.log (Postfix, amavis, POP3/IMAP daemons)."
    )
    parser.add_argument("-n", "--lines", type=int, default=1_000_000, help="exact number of lines (default 1000000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    parser.add_argument("--quiet", action="store_true", help="no JSON summary on stderr")
    parser.add_argument("--login-frac", type=_fraction, default=0.02,
                        help="share of lines that are successful POP3/IMAP logins (default 0.02)")
    parser.add_argument("--ips", type=int, default=10_000, help="size of the IPv4 login client pool (default 10000)")
    parser.add_argument("--ipv6-frac", type=_fraction, default=0.05,
                        help="share of non-local logins from IPv6 clients (default 0.05)")
    parser.add_argument("--mapped-frac", type=_fraction, default=0.0,
                        help="share of IPv4 logins written as ::ffff:a.b.c.d (default 0)")
    parser.add_argument("--local-frac", type=_fraction, default=0.0,
                        help="share of logins from 127.0.0.1, as webmail (default 0)")
    parser.add_argument("--daemon", choices=(*DAEMONS, "mixed"), default="dovecot",
                        help="which POP3/IMAP server writes the logins (default dovecot)")
    parser.add_argument("--timestamp", choices=TIMESTAMPS, default="traditional",
                        help="traditional 'Jan 15 00:00:01' or rfc3339 '2026-01-15T00:00:01.123456+00:00'")
    parser.add_argument("--start", type=_start, default=DEFAULT_START,
                        help="first timestamp, epoch seconds or 'YYYY-MM-DD[ HH:MM:SS]' UTC (default 2026-01-15)")
    parser.add_argument("--span", type=float, default=86_400.0, help="seconds the lines cover (default 86400)")
    parser.add_argument("--host", default="mx1", help="syslog HOSTNAME field (default mx1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command: parse ``argv``, write the log, print the summary unless --quiet."""
    parser = build_parser()
    args = parser.parse_args(argv)
    fields = {field.name for field in dataclasses.fields(Options)}
    try:
        options = Options(**{name: value for name, value in vars(args).items() if name in fields})
    except ValueError as e:
        parser.error(str(e))
    log = MailLog(options)
    if args.output == "-":
        counts = write(log, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        with open(args.output, "wb") as out:
            counts = write(log, out)
    if not args.quiet:
        print(json.dumps(counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
