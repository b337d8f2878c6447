"""Map writers: the Berkeley DB files that Postfix, Sendmail and Exim read.

Contract: the only module that imports the Berkeley DB binding.  Each output
"flavour" writes exactly what its MTA's own map tool writes and its lookups
expect, and nothing else.  ``open_output(kind, path, value)`` opens one.
Every writer is a ``MapOutput`` (``pbsyslog.outputs``), with the attributes
``path`` and ``filename`` besides (the file actually written, which is what
a corrupt map is moved aside by).

The flavours (bytes as stored, for 192.0.2.7 and 2001:db8::7):

``postfix-hash``  ``PATH.db``, DB_HASH; ``b"192.0.2.7\\0"`` -> ``b"OK\\0"``:
    what ``postmap hash:PATH`` writes; read as ``hash:PATH``.
``postfix-btree`` ``PATH.db``, DB_BTREE, same bytes; read as ``btree:PATH``.
``sendmail-access``  ``PATH.db``, DB_HASH, no NUL (``makemap`` adds one only
    with ``-N``; sendmail's lookups try both), keys lower-cased (``makemap``
    and every lookup fold case unless the map has ``-f``):
    ``b"connect:192.0.2.7"`` -> ``b"RELAY"``; IPv6 under two keys,
    ``b"connect:ipv6:2001:db8:0:0:0:0:0:7"`` (``${client_addr}`` on Sendmail
    >= 8.15 and Debian's build, both compiled with ``IPV6_FULL``: uncompressed,
    ``%x`` groups) and ``b"connect:ipv6:2001:db8::7"`` (older builds, or
    ``UseCompressedIPv6Addresses=True``).  Use it as its own map, e.g.
    ``Kpbsyslog hash -T<TMPF> PATH`` or as the ``access`` map: never point it
    at a hand-made ``/etc/mail/access``, the writer owns every key in its file.
``sendmail-popauth``  ``PATH.db`` as above, bare ``${client_addr}`` keys for
    Claus Assmann's popauth.m4 (``Kpopauth hash -a<OK> PATH``; it only tests
    that the key exists): ``b"192.0.2.7"`` -> ``b"OK"``, IPv6 as
    ``b"ipv6:2001:db8:0:0:0:0:0:7"`` and ``b"ipv6:2001:db8::7"``.  popauth.m4
    prefixes its lookups with ``POP_B4_SMTP_TAG`` (``POP:`` on 8.10+) unless
    the .mc says ``define(`POP_B4_SMTP_TAG', `')``, as pop-before-smtp's
    instructions do; these keys assume that.
``exim-dbm``  ``PATH`` exactly (Exim's Berkeley DB lookups open the name as
    given, no ``.db``), DB_HASH, key and value NUL-terminated, which is what
    ``exim_dbmbuild`` writes by default and what the ``dbm`` lookup type
    (not ``dbmnz``) passes to the library, so the file works both as
    ``${lookup{$sender_host_address}dbm{PATH}}`` and in host lists as
    ``hosts = net-dbm;PATH``: ``b"192.0.2.7\\0"`` -> ``b"OK\\0"``; IPv6 under
    ``b"2001:db8::7\\0"`` (``$sender_host_address`` of a real connection:
    inet_ntop) and ``b"2001.0db8.0000.0000.0000.0000.0000.0007\\0"`` (the key a
    ``net-dbm;`` host list looks up: full, dotted).  Exim reads the file as
    its own user: this flavour's file is created mode 0644.

Who may read and write the file: a new file is created mode 0640 (0644 for
``exim-dbm``) whatever the umask: it names every authorised client, and
Postfix and Sendmail open their maps as root (one whose MTA reads it as
another user: ``chgrp`` it to that user's group).  The writer creates it
itself (``O_CREAT|O_EXCL|O_NOFOLLOW``; Berkeley DB then takes the empty file
for a new one and fills it in place), so a symlink planted at its name is
never followed to create a file.
An existing file is used only if this process could not have been tricked
into it: a regular file, not a symlink, owned by the effective uid, not
writable by group or others (``journal.check_owned``); after the open, the
descriptor must still be the file at the name.  An existing file's mode is
left as it is.

How the readers notice changes: Postfix (``util/dict_db.c``) and Sendmail
(``db_map_lookup``) take a shared ``flock`` on the DB's own descriptor for
each lookup and reopen a map whose mtime moved (Postfix: before its next
session); Exim opens the file afresh in each SMTP process.  So every batch
here runs under an exclusive ``flock`` on the same descriptor, ends with
``sync()``, and moves the file's mtime forward by at least one whole second
per commit: otherwise two commits in the same second could leave a reader
that opened the map between them with a stale view.  The price: during a
burst of more than one commit per second (the service coalesces to at most
1/commit_interval, 4 by default) the mtime runs ahead of the wall clock by
up to 3 s per second of burst, and the clock catches up once the burst is
over; the readers only compare mtimes for inequality, so that is harmless.

Why in place under flock, not an atomic rebuild + rename(): a rebuild costs
time in proportion to the whole map, an in-place commit in proportion to
the batch (``bench/map_strategy.py`` measures both).  A rebuild per commit
cannot keep up with a login storm at scale, while in place the flock gives every
lookup a consistent view and the mtime rule makes every smtpd reopen.

The file is created when the writer opens and is never deleted: an smtpd
that starts while the file is missing answers 451 until it exits.

What it must not do: adopt a map file another user made or may write (that
user would keep write access to the relay list), or follow a symlink at
the map's name.

How it fails: OSError / the binding's DBError propagate to the caller, which
logs them and heals the map from the tracker's state on the next tick.  A
file that fails the ownership rule raises ``journal.UntrustedFile`` (an
OSError, never a DBError, so it is not taken for a corrupt map and moved
aside): at start-up the service refuses to start with its message.
``open_output`` raises ValueError for an unknown kind.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
from collections.abc import Callable, Iterable

import attrs

from pbsyslog.addresses import unmapped
from pbsyslog.journal import UntrustedFile, check_owned

try:  # the maintained successor first; same API.
    from berkeleydb import db  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on what is installed
    from bsddb3 import db

DBError = db.DBError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Each writer's Berkeley DB cache (see MapWriter.__init__).
_CACHE_BYTES = 32 << 20


def encode(text: str) -> bytes:
    """Return ``text`` as postmap stores it: UTF-8 with one trailing NUL."""
    return text.encode() + b"\0"


def decode(raw: bytes) -> str:
    """Inverse of ``encode`` (a missing NUL is tolerated)."""
    return raw.removesuffix(b"\0").decode(errors="replace")


def _parse_ip(text: str) -> IPAddress | None:
    """``text`` as an address (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return unmapped(address)


def _sendmail_full(address: ipaddress.IPv6Address) -> str:
    """Sendmail's sm_inet6_ntop(): eight ``%x`` groups, never ``::``."""
    return ":".join(f"{int(group, 16):x}" for group in address.exploded.split(":"))


def _exim_dotted(address: ipaddress.IPv6Address) -> str:
    """Exim's host_nmtoa(..., '.'): eight ``%04x`` groups separated by dots (net-dbm; keys)."""
    return address.exploded.replace(":", ".")


def _sendmail_forms(tag: str) -> Callable[[IPAddress], list[str]]:
    """Key texts for one address: ``tag`` + ``${client_addr}`` in both IPv6 spellings."""

    def forms(address: IPAddress) -> list[str]:
        if isinstance(address, ipaddress.IPv4Address):
            return [f"{tag}{address}"]
        return [f"{tag}ipv6:{_sendmail_full(address)}", f"{tag}ipv6:{address.compressed}"]

    return forms


def _exim_forms(address: IPAddress) -> list[str]:
    """Key texts for one address: ``$sender_host_address`` and, for IPv6, the net-dbm; key."""
    if isinstance(address, ipaddress.IPv4Address):
        return [str(address)]
    return [address.compressed, _exim_dotted(address)]


def _exim_key_to_ip(text: str) -> str:
    """Undo the dotted IPv6 spelling of a net-dbm; key; anything else is returned as is."""
    parts = text.split(".")
    if len(parts) == 8 and all(len(p) == 4 for p in parts):
        return ":".join(parts)
    return text


@attrs.frozen
class Flavour:
    """How one MTA's map stores a key: file name, DB type, NUL, case, key spellings."""

    name: str
    suffix: str  # appended to PATH to get the file name the MTA opens
    dbtype: int
    nul: bool  # key and value carry one trailing NUL byte
    default_value: str
    # The stored key texts for one IP address; None: the key text as given.
    forms: Callable[[IPAddress], list[str]] | None = None
    tag: str = ""  # prefix of every key the forms produce (stripped by keys())
    fold_case: bool = False  # store keys lower-cased (Sendmail)
    key_to_ip: Callable[[str], str] = str  # a stored key (tag removed) back to an address text
    # The MTA also takes a key as a parent network of other clients (Postfix's
    # access maps, Sendmail's access map): see addresses.stands_for_others.
    parent_match: bool = True
    # A new file's mode, whatever the umask: readable by the MTA that opens it.
    mode: int = 0o640


FLAVOURS: dict[str, Flavour] = {
    f.name: f
    for f in (
        Flavour("postfix-hash", ".db", db.DB_HASH, True, "OK"),
        Flavour("postfix-btree", ".db", db.DB_BTREE, True, "OK"),
        Flavour(
            "sendmail-access", ".db", db.DB_HASH, False, "RELAY",
            forms=_sendmail_forms("connect:"), tag="connect:", fold_case=True,
            key_to_ip=lambda k: k.removeprefix("ipv6:"),
        ),
        Flavour(
            "sendmail-popauth", ".db", db.DB_HASH, False, "OK",
            forms=_sendmail_forms(""), fold_case=True,
            key_to_ip=lambda k: k.removeprefix("ipv6:"),
        ),
        # Exim looks $sender_host_address up as it is: exact.
        # Exim opens the file as its own user, not root: world-readable.
        Flavour("exim-dbm", "", db.DB_HASH, True, "OK", forms=_exim_forms, key_to_ip=_exim_key_to_ip,
                parent_match=False, mode=0o644),
    )
}

OUTPUT_KINDS: tuple[str, ...] = tuple(FLAVOURS)
DEFAULT_KIND = "postfix-hash"


def output_filename(kind: str, path: str) -> str:
    """The file a ``kind`` writer for ``path`` writes (and the MTA opens)."""
    return path + _flavour(kind).suffix


def _flavour(kind: str) -> Flavour:
    try:
        return FLAVOURS[kind]
    except KeyError:
        raise ValueError(f"unknown map kind {kind!r}; known: {', '.join(OUTPUT_KINDS)}") from None


class MapWriter:
    """An open map file of one flavour that pbsyslog owns (keys are IP address texts); a ``MapOutput``."""

    # A file is reopened from disk after a failed write, and it raises.
    self_healing = False

    def __init__(self, path: str, value: str | None, flavour: Flavour) -> None:
        self.kind = flavour.name
        self.parent_match = flavour.parent_match
        self.path = path
        self.filename = path + flavour.suffix
        self._flavour = flavour
        self._value = self._raw(flavour.default_value if value is None else value)
        self._db = db.DB()
        # Berkeley DB's default cache for a DB without an environment is
        # 256 KiB: writing a large map then spends most of its time moving
        # pages in and out of it (``bench/run.py``'s initial_map_write_s).  The
        # cache fills only as pages are touched (a small map stays small in
        # memory); postmap itself uses 16 MiB (berkeley_db_create_buffer_size).
        self._db.set_cachesize(0, _CACHE_BYTES, 1)
        _create_or_check(self.filename, flavour.mode)
        self._db.open(self.filename, dbtype=flavour.dbtype, flags=db.DB_CREATE, mode=flavour.mode)
        try:
            _still_the_file(self.filename, os.fstat(self._db.fd()))
        except BaseException:
            self.abandon()
            raise
        # The mtime a reader may already have seen; the first commit must move past it.
        self._last_mtime: int | None = int(os.fstat(self._db.fd()).st_mtime)

    def close(self) -> None:
        """Flush and close the map; the file stays in place."""
        self._db.sync()
        self._db.close()

    def abandon(self) -> None:
        """Drop the handle without flushing (a write failed: its cache may hold what the file never got)."""
        try:
            self._db.close()
        except Exception:
            pass

    def refresh(self, ips: Iterable[str]) -> None:
        """Nothing to do: a file holds keys, not deadlines."""

    def keys(self) -> set[str]:
        """Return the address of every key in the map (each IP once, however many spellings)."""
        return set(self._present())

    def stored_keys(self, key: str) -> list[bytes]:
        """The raw DB keys that stand for ``key`` in this flavour."""
        f = self._flavour
        address = _parse_ip(key) if f.forms is not None else None
        if f.forms is None or address is None:
            return [self._raw(key)]
        return [self._raw(t.lower() if f.fold_case else t) for t in f.forms(address)]

    def apply(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Commit one batch: put ``add`` keys, delete ``remove`` keys, sync, under an exclusive flock."""
        self._commit(puts=self._all_stored_keys(add), deletes=self._all_stored_keys(remove))

    def _all_stored_keys(self, keys: Iterable[str]) -> list[bytes]:
        """``stored_keys`` of every key, in order (one list comprehension for the flavours without forms)."""
        f = self._flavour
        if f.forms is None:
            if f.nul:
                return [key.encode() + b"\0" for key in keys]
            return [key.encode() for key in keys]
        return [raw for key in keys for raw in self.stored_keys(key)]

    def replace_all(self, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Make the map hold exactly ``keys``; return (added, removed)."""
        wanted = {self._canonical(k) for k in keys}
        present = self._present()
        added, removed = wanted - set(present), set(present) - wanted
        puts = [raw for key in added for raw in self.stored_keys(key)]
        # A kept key that lost one of its spellings gets it back.
        for key in wanted & set(present):
            puts.extend(raw for raw in self.stored_keys(key) if raw not in present[key])
        # Delete exactly what is stored: a key this writer would not spell
        # that way (a hand edit, an older format) goes too.
        deletes = [raw for key in removed for raw in present[key]]
        if puts or deletes:
            self._commit(puts=puts, deletes=deletes)
        return added, removed

    def _commit(self, puts: list[bytes], deletes: list[bytes]) -> None:
        fd = self._db.fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            delete = self._db.delete
            for raw in deletes:
                try:
                    delete(raw)
                except db.DBNotFoundError:
                    pass
            put = self._db.put
            value = self._value
            for raw in puts:
                put(raw, value)
            self._db.sync()
            self._advance_mtime(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _raw(self, text: str) -> bytes:
        return text.encode() + b"\0" if self._flavour.nul else text.encode()

    def _canonical(self, key: str) -> str:
        """``key`` as keys() reports it: for address-keyed flavours, the address's own text."""
        if self._flavour.forms is None:
            return key
        address = _parse_ip(key)
        return key if address is None else str(address)

    def _present(self) -> dict[str, set[bytes]]:
        """Every key in the map (as keys() reports it) with the raw DB keys that spell it."""
        present: dict[str, set[bytes]] = {}
        for raw in self._db.keys():
            present.setdefault(self._key_of(raw), set()).add(raw)
        return present

    def _key_of(self, raw: bytes) -> str:
        """The key a raw DB key spells; one this writer would not have written is its own literal text."""
        f = self._flavour
        if f.nul and not raw.endswith(b"\0"):
            return raw.decode(errors="replace")
        text = decode(raw) if f.nul else raw.decode(errors="replace")
        if f.forms is None:
            return text
        if not text.startswith(f.tag):
            return text
        address = _parse_ip(f.key_to_ip(text.removeprefix(f.tag)))
        if address is None or raw not in self.stored_keys(str(address)):
            return text
        return str(address)

    def _advance_mtime(self, fd: int) -> None:
        st = os.fstat(fd)
        seconds = int(st.st_mtime)
        if self._last_mtime is not None and seconds <= self._last_mtime:
            seconds = self._last_mtime + 1
            os.utime(fd, (st.st_atime, seconds))
        self._last_mtime = seconds


def _create_or_check(filename: str, mode: int) -> None:
    """Create ``filename`` empty with ``mode`` (never through a symlink), or check that the existing one is ours."""
    try:
        fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        check_owned(filename, os.lstat(filename))
        return
    try:
        os.fchmod(fd, mode)  # os.open's mode was masked by the umask
    finally:
        os.close(fd)


def _still_the_file(filename: str, opened: os.stat_result) -> None:
    """Raise UntrustedFile unless ``opened`` (the descriptor Berkeley DB opened) is the file at ``filename``, ours."""
    try:
        named: os.stat_result | None = os.lstat(filename)
    except FileNotFoundError:
        named = None
    if named is None or (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
        raise UntrustedFile(filename, "it was replaced while it was being opened")
    check_owned(filename, opened)


def open_output(kind: str, path: str, value: str | None = None) -> MapWriter:
    """Open (create) the ``kind`` map for ``path``; ``value`` None: that kind's default value."""
    return MapWriter(path, value, _flavour(kind))
