"""The administrator's commands with the service stopped reach every file map the service keeps, in its flavour."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_outputs import keys_of

from pbsyslog.cli import admin
from pbsyslog.config import Config
from pbsyslog.outputs.berkeley import open_output

IP = "192.0.2.7"


def config(tmp_path: Path) -> Config:
    """A btree primary map plus Sendmail and Exim outputs, all under tmp_path."""
    return Config.from_mapping({
        "dbfile": str(tmp_path / "map"), "map_kind": "postfix-btree", "grace": 60,
        "output": [
            {"kind": "sendmail-access", "path": str(tmp_path / "access")},
            {"kind": "exim-dbm", "path": str(tmp_path / "exim")},
        ],
    })


def stored(kind: str, path: Path) -> list[bytes]:
    writer = open_output(kind, str(path))
    try:
        return writer.stored_keys(IP)
    finally:
        writer.close()


MAPS = [("postfix-btree", "map"), ("sendmail-access", "access"), ("exim-dbm", "exim")]


def test_offline_add_and_del_reach_every_output(tmp_path: Path) -> None:
    """add writes the address to the btree primary and both outputs, each in its own key form; del takes it from all."""
    cfg = config(tmp_path)
    assert admin.request(cfg, {"cmd": "add", "ip": IP})["ip"] == IP
    for kind, name in MAPS:
        assert keys_of(kind, tmp_path / name) == {IP}, kind
    assert stored("sendmail-access", tmp_path / "access") == [b"connect:192.0.2.7"]  # makemap folds keys to lower case
    assert admin.request(cfg, {"cmd": "del", "ip": IP})["removed"] is True
    for kind, name in MAPS:
        assert keys_of(kind, tmp_path / name) == set(), kind


def test_offline_flush_empties_every_output(tmp_path: Path) -> None:
    """flush removes every journalled address from every output."""
    cfg = config(tmp_path)
    admin.request(cfg, {"cmd": "add", "ip": IP})
    admin.request(cfg, {"cmd": "add", "ip": "2001:db8::7"})
    assert admin.request(cfg, {"cmd": "flush"})["removed"] == 2
    for kind, name in MAPS:
        assert keys_of(kind, tmp_path / name) == set(), kind


def test_unreadable_output_is_a_clear_error(tmp_path: Path) -> None:
    """An output Berkeley DB cannot open gives an AdminError that names it (exit status 2), not a traceback."""
    (tmp_path / "access.db").write_bytes(b"not a database" * 100)
    with pytest.raises(admin.AdminError, match="sendmail-access map .*access"):
        admin.request(config(tmp_path), {"cmd": "add", "ip": IP})


def test_list_orders_by_address_or_deadline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pbsyslog list` orders addresses numerically, IPv4 before IPv6; --sort deadline by seconds left."""
    from pbsyslog.cli import main

    conf = tmp_path / "c.toml"
    conf.write_text(f'mynetworks = "none"\ndbfile = "{tmp_path}/map"\n')
    for ip, grace in (("10.77.0.10", 300), ("2001:db8::1", 100), ("10.77.0.2", 200), ("9.1.1.1", 400)):
        assert main(["add", "--config", str(conf), "--grace", str(grace), ip]) == 0
    capsys.readouterr()
    assert main(["list", "--config", str(conf)]) == 0
    rows = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == ["9.1.1.1", "10.77.0.2", "10.77.0.10", "2001:db8::1"]
    assert main(["list", "--config", str(conf), "--sort", "deadline"]) == 0
    rows = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == ["2001:db8::1", "10.77.0.2", "10.77.0.10", "9.1.1.1"]
