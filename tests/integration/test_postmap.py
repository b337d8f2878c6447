"""The map as Postfix reads it: real postmap against the file pbsyslog writes.

The service is fed hand-sent UDP datagrams (no rsyslog), with a short grace
so that expiry can be watched end to end.
"""

from __future__ import annotations

import socket
import time

import pytest

from harness import (
    LOOPBACK_V4,
    LOOPBACK_V6,
    PbsyslogFactory,
    PbsyslogService,
    dovecot_login,
    free_port,
    postmap_q,
    run_postmap,
    wait_for,
)

GRACE = 2.0
EXPIRE_INTERVAL = 0.2
MAP_DEADLINE = 2.0
# Removal may come one tick and one map write after the grace ends.
EXPIRY_SLACK = 2.0



def courier_login(ip: str) -> str:
    """A Courier POP3 login line: Courier's dual-stack socket writes IPv4 clients as ::ffff:a.b.c.d."""
    return f"<22>Nov 29 14:44:39 vm pop3d: LOGIN, user=alice, ip=[{ip}], port=[41751]"


@pytest.fixture(scope="module")
def service(pbsyslog_service: PbsyslogFactory) -> PbsyslogService:
    """One pbsyslog with a 2 s grace and a 0.2 s expiry tick."""
    return pbsyslog_service({"grace": GRACE, "expire_interval": EXPIRE_INTERVAL})


def lookup_is(service: PbsyslogService, key: str, expected: tuple[int, str], timeout: float) -> bool:
    """Wait until ``postmap -q key`` on the service's map gives ``expected``."""
    return bool(wait_for(lambda: postmap_q(key, service.dbfile) == expected, timeout))


def stored_keys(service: PbsyslogService) -> list[str]:
    """The keys of the service's map exactly as stored, from `postmap -s`."""
    listing = run_postmap("-s", f"hash:{service.dbfile}")
    assert (listing.returncode, listing.stderr) == (0, ""), listing
    return [line.split("\t", 1)[0] for line in listing.stdout.splitlines()]


def assert_added_then_expired(service: PbsyslogService, line: str, key: str) -> None:
    """Send ``line``; ``key`` must be in the map at once, and gone only after the grace."""
    sent = time.monotonic()
    service.send_udp(line)
    assert lookup_is(service, key, (0, "OK\n"), MAP_DEADLINE), (
        f"postmap -q {key} gave {postmap_q(key, service.dbfile)!r} {MAP_DEADLINE} s after "
        f"sending {line!r}, not (0, 'OK\\n')\n{service.describe()}"
    )
    assert service.wait_for_output(f"added {key} to map", 1.0), service.describe()
    assert lookup_is(service, key, (1, ""), GRACE + EXPIRY_SLACK), (
        f"postmap -q {key} still gives {postmap_q(key, service.dbfile)!r} "
        f"{GRACE + EXPIRY_SLACK} s after the login\n{service.describe()}"
    )
    gone_after = time.monotonic() - sent
    assert gone_after >= GRACE, f"{key} expired after {gone_after:.2f} s, before the {GRACE} s grace"
    assert service.wait_for_output(f"removed {key} from map (expired)", 1.0), service.describe()


def test_map_exists_and_is_readable_at_start_up(pbsyslog_service: PbsyslogFactory) -> None:
    """Right after 'pbsyslog ready', before any login, Postfix can open the map and finds it empty."""
    fresh = pbsyslog_service()
    assert fresh.db_path.is_file(), f"{fresh.db_path} missing after 'pbsyslog ready'\n{fresh.describe()}"
    listing = run_postmap("-s", f"hash:{fresh.dbfile}")
    assert (listing.returncode, listing.stdout, listing.stderr) == (0, "", ""), listing
    assert postmap_q("192.0.2.99", fresh.dbfile) == (1, "")


def test_ipv4_login_is_added_then_expires(service: PbsyslogService) -> None:
    """A login from 192.0.2.10 is found by postmap -q at once and disappears after the grace."""
    assert_added_then_expired(service, dovecot_login("192.0.2.10"), "192.0.2.10")


def test_ipv6_login_is_added_then_expires(service: PbsyslogService) -> None:
    """A login from 2001:db8:1:2:3:4:5:10 is found by postmap -q at once and disappears after the grace."""
    assert_added_then_expired(service, dovecot_login("2001:db8:1:2:3:4:5:10"), "2001:db8:1:2:3:4:5:10")


def test_ipv6_key_that_stands_for_others_is_not_written(service: PbsyslogService) -> None:
    """A login from 2001:db8::10 (Postfix would also match that key for 2001:db8::10:X) stays out of the hash map, with a warning."""
    service.send_udp(dovecot_login("2001:db8::10"))
    assert service.wait_for_output("2001:db8::10 is authorised but not written to postfix-hash:", 2), service.describe()
    assert postmap_q("2001:db8::10", service.dbfile) == (1, "")


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("2001:0db8:0001:0002:0003:0004:0000:0000", "2001:db8:1:2:3:4::"),
        ("2001:DB8:1:2:3:4:5:12", "2001:db8:1:2:3:4:5:12"),
    ],
)
def test_ipv6_key_is_compressed_lowercase(service: PbsyslogService, written: str, key: str) -> None:
    """An IPv6 address written long or in capitals is stored in Postfix's compressed lowercase form."""
    service.send_udp(dovecot_login(written))
    assert lookup_is(service, key, (0, "OK\n"), MAP_DEADLINE), (
        f"postmap -q {key} gave {postmap_q(key, service.dbfile)!r} after a login from "
        f"rip={written}\n{service.describe()}"
    )
    # Not `postmap -q written`: postmap folds query keys to lower case, so
    # only the listing shows the key exactly as stored.
    keys = stored_keys(service)
    assert key in keys and written not in keys, f"map keys: {keys}"


def test_ipv4_mapped_address_is_stored_as_ipv4(service: PbsyslogService) -> None:
    """Courier's ::ffff:192.0.2.12 is stored under 192.0.2.12, which is what Postfix looks up."""
    service.send_udp(courier_login("::ffff:192.0.2.12"))
    assert lookup_is(service, "192.0.2.12", (0, "OK\n"), MAP_DEADLINE), (
        f"postmap -q 192.0.2.12 gave {postmap_q('192.0.2.12', service.dbfile)!r}\n"
        f"{service.describe()}"
    )
    assert postmap_q("::ffff:192.0.2.12", service.dbfile) == (1, "")


def test_command_line_listener_replaces_config_listeners(pbsyslog_service: PbsyslogFactory) -> None:
    """With --udp [::1]:PORT the service listens there only: a login sent over IPv6 lands in the map."""
    port = free_port(socket.SOCK_DGRAM, (LOOPBACK_V6,))
    v6 = pbsyslog_service(extra_args=["--udp", f"[{LOOPBACK_V6}]:{port}"])
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.sendto(dovecot_login("192.0.2.13").encode(), (LOOPBACK_V6, port))
    assert lookup_is(v6, "192.0.2.13", (0, "OK\n"), MAP_DEADLINE), v6.describe()
    # The file's TCP listener was replaced, so nothing answers on its port.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK_V4, v6.tcp_port), timeout=2).close()


def test_large_datagram_is_not_truncated(service: PbsyslogService) -> None:
    """A 65,000-byte datagram arrives whole: its end-anchored login line still matches (and, that long, authorises nothing)."""
    from pbsyslog.cli.admin import request
    from pbsyslog.config import Config

    line = dovecot_login("192.0.2.14").replace("user=<alice>", "user=<" + "a" * 64_000 + ">")
    assert 64_000 < len(line) <= 65_507
    service.send_udp(line)
    config = Config.from_mapping({"dbfile": str(service.dbfile)})
    # A cut datagram would match no pattern; the whole one is a login, refused as longer than any daemon writes.
    assert wait_for(lambda: request(config, {"cmd": "status"})["ignored"].get("too long") == 1, MAP_DEADLINE), \
        service.describe()
    assert postmap_q("192.0.2.14", service.dbfile) == (1, "")
