"""Map flavours: each writes exactly the bytes its MTA's own map tool writes, read back with Berkeley DB."""

from __future__ import annotations

import fcntl
import os
from itertools import pairwise
from pathlib import Path

import pytest
from bsddb3 import db

from pbsyslog.outputs.berkeley import OUTPUT_KINDS, open_output, output_filename

V4, V6 = "192.0.2.7", "2001:db8::7"


def read_raw(filename: str | Path, dbtype: int = db.DB_UNKNOWN) -> dict[bytes, bytes]:
    """Open the file read-only under a shared flock, as the MTAs do, and dump every record."""
    d = db.DB()
    d.open(str(filename), dbtype=dbtype, flags=db.DB_RDONLY)
    try:
        fcntl.flock(d.fd(), fcntl.LOCK_SH)
        return dict(d.items())
    finally:
        d.close()


def db_type(filename: str | Path) -> int:
    """The access method Berkeley DB finds in the file."""
    d = db.DB()
    d.open(str(filename), dbtype=db.DB_UNKNOWN, flags=db.DB_RDONLY)
    try:
        return d.get_type()
    finally:
        d.close()


EXPECTED = {
    "postfix-hash": (
        "map.db", db.DB_HASH,
        {b"192.0.2.7\0": b"OK\0", b"2001:db8::7\0": b"OK\0"},
    ),
    "postfix-btree": (
        "map.db", db.DB_BTREE,
        {b"192.0.2.7\0": b"OK\0", b"2001:db8::7\0": b"OK\0"},
    ),
    "sendmail-access": (
        "map.db", db.DB_HASH,
        {
            b"connect:192.0.2.7": b"RELAY",
            b"connect:ipv6:2001:db8:0:0:0:0:0:7": b"RELAY",
            b"connect:ipv6:2001:db8::7": b"RELAY",
        },
    ),
    "sendmail-popauth": (
        "map.db", db.DB_HASH,
        {b"192.0.2.7": b"OK", b"ipv6:2001:db8:0:0:0:0:0:7": b"OK", b"ipv6:2001:db8::7": b"OK"},
    ),
    "exim-dbm": (
        "map", db.DB_HASH,
        {
            b"192.0.2.7\0": b"OK\0",
            b"2001:db8::7\0": b"OK\0",
            b"2001.0db8.0000.0000.0000.0000.0000.0007\0": b"OK\0",
        },
    ),
}


def test_every_kind_is_covered() -> None:
    """The byte-level expectations below cover exactly the kinds open_output offers, postfix-hash first."""
    assert OUTPUT_KINDS[0] == "postfix-hash"
    assert set(OUTPUT_KINDS) == set(EXPECTED)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_created_empty_with_the_right_name_and_type(tmp_path: Path, kind: str) -> None:
    """Opening creates an empty file of the MTA's DB type under the name the MTA opens."""
    name, dbtype, _ = EXPECTED[kind]
    w = open_output(kind, str(tmp_path / "map"))
    w.close()
    assert w.filename == str(tmp_path / name) == output_filename(kind, str(tmp_path / "map"))
    assert sorted(os.listdir(tmp_path)) == [name]
    assert db_type(tmp_path / name) == dbtype
    assert read_raw(tmp_path / name) == {}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_bytes_as_stored(tmp_path: Path, kind: str) -> None:
    """One IPv4 and one IPv6 login are stored as exactly these keys and values."""
    name, _, records = EXPECTED[kind]
    w = open_output(kind, str(tmp_path / "map"))
    w.apply(add=[V4, V6])
    assert read_raw(tmp_path / name) == records
    assert w.keys() == {V4, V6}
    w.close()


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_removal_removes_every_spelling(tmp_path: Path, kind: str) -> None:
    """Removing an address deletes all of its keys and leaves the others alone."""
    name, _, records = EXPECTED[kind]
    w = open_output(kind, str(tmp_path / "map"))
    w.apply(add=[V4, V6])
    w.apply(remove=[V6, "198.51.100.1"])
    v4_only = {k: v for k, v in records.items() if b"192.0.2.7" in k}
    assert len(v4_only) == 1
    assert read_raw(tmp_path / name) == v4_only
    assert w.keys() == {V4}
    w.close()


def test_default_values_per_kind(tmp_path: Path) -> None:
    """Without a configured value, Sendmail's access map relays (RELAY); the others store OK."""
    stored = {}
    for kind in OUTPUT_KINDS:
        w = open_output(kind, str(tmp_path / kind))
        w.apply(add=[V4])
        values = set(read_raw(w.filename).values())
        w.close()
        assert len(values) == 1, (kind, values)
        stored[kind] = values.pop().rstrip(b"\0").decode()
    assert stored == {
        "postfix-hash": "OK",
        "postfix-btree": "OK",
        "sendmail-access": "RELAY",
        "sendmail-popauth": "OK",
        "exim-dbm": "OK",
    }


def test_admin_value_overrides_default(tmp_path: Path) -> None:
    """A configured value replaces the kind's default and keeps the kind's NUL convention."""
    w = open_output("sendmail-access", str(tmp_path / "map"), "OK")
    w.apply(add=[V4])
    assert read_raw(tmp_path / "map.db") == {b"connect:192.0.2.7": b"OK"}
    w.close()


def test_postfix_hash_writes_the_value_it_is_given(tmp_path: Path) -> None:
    """The postfix-hash writer writes PATH.db as DB_HASH, with the value it is given."""
    m = open_output("postfix-hash", str(tmp_path / "map"), "permit")
    m.apply(add=[V4])
    assert m.filename == str(tmp_path / "map.db")
    assert read_raw(tmp_path / "map.db", db.DB_HASH) == {b"192.0.2.7\0": b"permit\0"}
    m.close()


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    """An unknown kind is a ValueError naming it, and no file is created."""
    with pytest.raises(ValueError, match="'qmail-cdb'"):
        open_output("qmail-cdb", str(tmp_path / "map"))
    assert os.listdir(tmp_path) == []


def test_ipv4_mapped_is_stored_as_ipv4(tmp_path: Path) -> None:
    """An IPv4-mapped IPv6 address gets the IPv4 key, which is how Sendmail and Exim print such clients."""
    w = open_output("sendmail-access", str(tmp_path / "map"))
    w.apply(add=["::ffff:192.0.2.7"])
    assert read_raw(tmp_path / "map.db") == {b"connect:192.0.2.7": b"RELAY"}
    assert w.keys() == {V4}
    w.close()


def write_raw(filename: Path, records: dict[bytes, bytes]) -> None:
    """Prepare a DB_HASH file holding exactly ``records`` (as an older writer or a hand edit left it)."""
    d = db.DB()
    d.open(str(filename), dbtype=db.DB_HASH, flags=db.DB_CREATE)
    for key, value in records.items():
        d.put(key, value)
    d.close()


def test_replace_all_heals_a_missing_spelling(tmp_path: Path) -> None:
    """replace_all restores an IPv6 key spelling that is missing, without reporting the address as added."""
    write_raw(tmp_path / "map", {b"2001:db8::7\0": b"OK\0"})
    w = open_output("exim-dbm", str(tmp_path / "map"))
    assert w.keys() == {V6}
    assert w.replace_all([V6]) == (set(), set())
    w.close()
    assert read_raw(tmp_path / "map") == {
        b"2001:db8::7\0": b"OK\0",
        b"2001.0db8.0000.0000.0000.0000.0000.0007\0": b"OK\0",
    }


def test_replace_all_deletes_keys_it_did_not_write(tmp_path: Path) -> None:
    """Keys in a foreign spelling (NUL-terminated for Sendmail, popauth.m4's POP: tag) are reported and removed."""
    write_raw(tmp_path / "map.db", {b"192.0.2.7": b"OK", b"192.0.2.8\0": b"OK\0", b"POP:192.0.2.9": b"OK"})
    w = open_output("sendmail-popauth", str(tmp_path / "map"))
    assert w.keys() == {V4, "192.0.2.8\0", "POP:192.0.2.9"}
    assert w.replace_all([V4, "192.0.2.10"]) == ({"192.0.2.10"}, {"192.0.2.8\0", "POP:192.0.2.9"})
    w.close()
    assert read_raw(tmp_path / "map.db") == {b"192.0.2.7": b"OK", b"192.0.2.10": b"OK"}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_mtime_moves_on_every_commit(tmp_path: Path, kind: str) -> None:
    """Commits within one second still give every flavour's file a new whole-second mtime."""
    w = open_output(kind, str(tmp_path / "map"))
    seen = []
    for i in range(3):
        w.apply(add=[f"192.0.2.{i}"])
        seen.append(int(os.stat(w.filename).st_mtime))
    w.close()
    assert all(b > a for a, b in pairwise(seen)), seen


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_file_is_world_readable(tmp_path: Path, kind: str) -> None:
    """The map is created mode 0640 whatever the umask; Exim's 0644 (Exim reads it as its own user, not root)."""
    old = os.umask(0o022)
    try:
        w = open_output(kind, str(tmp_path / "map"))
    finally:
        os.umask(old)
    w.close()
    assert os.stat(w.filename).st_mode & 0o777 == (0o644 if kind == "exim-dbm" else 0o640)
