"""Several outputs: every map gets the same changes; corrupt ones are replaced; kinds stay in sync."""

from pathlib import Path

import pytest
from test_service import LOGIN, Reactor

from pbsyslog.config import MAP_KINDS, Config, OutputSpec
from pbsyslog.outputs import Outputs
from pbsyslog.outputs.berkeley import OUTPUT_KINDS, open_output
from pbsyslog.wiring import build


def keys_of(kind: str, path: Path) -> set[str]:
    """Read one map's keys as pbsyslog writes them."""
    writer = open_output(kind, str(path))
    try:
        return writer.keys()
    finally:
        writer.close()


def test_config_knows_every_kind() -> None:
    """The config's list of map kinds is the map writer's."""
    assert MAP_KINDS == OUTPUT_KINDS


def test_service_writes_every_output(tmp_path: Path) -> None:
    """A login reaches the primary btree map and the Sendmail and Exim outputs; expiry leaves all three."""
    config = Config.from_mapping({
        "dbfile": str(tmp_path / "map"), "map_kind": "postfix-btree", "grace": 60, "expire_interval": 5, "mynetworks": "none",
        "output": [
            {"kind": "sendmail-access", "path": str(tmp_path / "access")},
            {"kind": "exim-dbm", "path": str(tmp_path / "exim"), "value": "yes"},
        ],
        "ipv6_file_maps": "allow-parent-match",  # 2001:db8::5 would also stand for 2001:db8::5:X
    })
    reactor = Reactor()
    service = build(config, reactor)
    service.startService()
    service.receive(LOGIN % b"2001:db8::5")
    reactor.advance(0)
    for kind, path in (("postfix-btree", "map"), ("sendmail-access", "access"), ("exim-dbm", "exim")):
        assert keys_of(kind, tmp_path / path) == {"2001:db8::5"}, kind
    reactor.advance(60)
    for kind, path in (("postfix-btree", "map"), ("sendmail-access", "access"), ("exim-dbm", "exim")):
        assert keys_of(kind, tmp_path / path) == set(), kind
    service.stopService()


def test_corrupt_output_is_moved_aside(tmp_path: Path) -> None:
    """An unreadable Exim file (no .db suffix) is renamed and replaced when the outputs open."""
    (tmp_path / "exim").write_bytes(b"garbage" * 1000)
    outputs = Outputs([OutputSpec("exim-dbm", str(tmp_path / "exim"))], now=1000)
    outputs.apply(add=["192.0.2.1"])
    outputs.close()
    assert keys_of("exim-dbm", tmp_path / "exim") == {"192.0.2.1"}
    assert (tmp_path / "exim.corrupt-1000").read_bytes().startswith(b"garbage")


def test_writes_and_errors_counted_per_output(tmp_path: Path) -> None:
    """Each output counts its own batches and its own failures."""
    outputs = Outputs([OutputSpec("postfix-hash", str(tmp_path / "a")), OutputSpec("exim-dbm", str(tmp_path / "b"))], 0)
    outputs.apply(add=["192.0.2.1"])
    second = outputs.writers[1]
    second.apply = lambda **kw: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    with pytest.raises(OSError):
        outputs.apply(add=["192.0.2.2"])
    a, b = f"postfix-hash:{tmp_path}/a", f"exim-dbm:{tmp_path}/b"
    assert outputs.writes == {a: 2, b: 1} and outputs.errors == {a: 0, b: 1}
    outputs.close()


def test_an_output_that_drifted_is_repaired_and_said_once(tmp_path: Path) -> None:
    """replace_all brings a second output that differs from the primary in line, and logs that it did, once."""
    from twisted.logger import capturedLogs

    drifted = open_output("exim-dbm", str(tmp_path / "exim"))
    drifted.apply(add=["192.0.2.99"])
    drifted.close()
    outputs = Outputs([OutputSpec("postfix-hash", str(tmp_path / "map")),
                       OutputSpec("exim-dbm", str(tmp_path / "exim"))], 0.0)
    with capturedLogs() as events:
        assert outputs.replace_all(["192.0.2.7"]) == ({"192.0.2.7"}, set())
    repaired = [e for e in events if "repaired" in e["log_format"]]
    assert [(e["name"], e["a"], e["r"]) for e in repaired] == [(f"exim-dbm:{tmp_path / 'exim'}", 1, 1)]
    assert outputs.writers[1].keys() == {"192.0.2.7"}
    with capturedLogs() as events:
        outputs.replace_all(["192.0.2.7"])
    assert not [e for e in events if "repaired" in e["log_format"]]
    outputs.close()


def test_every_output_kind_is_a_map_output(tmp_path: Path) -> None:
    """Each file flavour and the pgsql writer implement MapOutput; only pgsql heals itself."""
    from pbsyslog.outputs import MapOutput
    from pbsyslog.outputs.berkeley import OUTPUT_KINDS, open_output
    from pbsyslog.outputs.pgsql import PgsqlWriter

    for kind in OUTPUT_KINDS:
        writer = open_output(kind, str(tmp_path / kind))
        assert isinstance(writer, MapOutput) and writer.self_healing is False, kind
        writer.close()
    table = PgsqlWriter("dbname=x", "pop_before_smtp", "pop1", lambda ip: None, lambda ip: None, start=False)
    assert isinstance(table, MapOutput) and table.self_healing is True


def test_ipv6_keys_that_stand_for_others_stay_out_of_parent_matching_maps(tmp_path: Path) -> None:
    """By default 2001:db8::5 is authorised (tracker, socketmap) but written only where no parent lookup happens."""
    config = Config.from_mapping({
        "dbfile": str(tmp_path / "map"), "grace": 60, "expire_interval": 5, "mynetworks": "none",
        "output": [
            {"kind": "sendmail-access", "path": str(tmp_path / "access")},
            {"kind": "exim-dbm", "path": str(tmp_path / "exim")},
        ],
    })
    reactor = Reactor()
    service = build(config, reactor)
    service.startService()
    for ip in (b"2001:db8::5", b"2001:db8:1:2:3:4:5:6", b"2001:db8::", b"192.0.2.5"):
        service.receive(LOGIN % ip)
    reactor.advance(0)
    assert service.authorised("2001:db8::5") and service.lookup("2001:db8::5") == "OK"
    safe = {"2001:db8:1:2:3:4:5:6", "2001:db8::", "192.0.2.5"}
    assert keys_of("postfix-hash", tmp_path / "map") == safe
    assert keys_of("sendmail-access", tmp_path / "access") == safe
    assert keys_of("exim-dbm", tmp_path / "exim") == safe | {"2001:db8::5"}
    assert service.outputs is not None and service.outputs.withheld == 1
    service.stopService()
