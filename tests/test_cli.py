"""Tests for pbsyslog.cli: ``check`` over real daemon lines, ``dumpconfig`` round trips, ``version``."""

from __future__ import annotations

import gzip
import io
import json
import pathlib
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

import pytest

from pbsyslog import __version__, cli
from pbsyslog.config import Config, Listener, load
from pbsyslog.patterns import load_table
from pbsyslog.syslog import parse


def _corpus_dir() -> pathlib.Path:
    """The real-daemon corpus of Dovecot and Courier (tests/corpus/real)."""
    from corpus_paths import REAL

    return REAL


CORPUS = _corpus_dir()
DOVECOT_FILES = ("dovecot/mail.log", "dovecot/mail.traditional.log")
LABELS = [
    label
    for label in map(json.loads, (CORPUS / "labels.jsonl").read_text().splitlines())
    if label["file"].removeprefix("real/") in DOVECOT_FILES
]

# An admin's own pattern, as a config file would add it.
EXTRA_PATTERN = """
[[pattern]]
name = "mypop"
kind = "login"
programs = ["mypopd"]
description = "a site-local daemon's 'ok' line"
regex = '^auth ok from (?P<ip>[0-9.]+)\\s*$'

[[pattern.samples]]
message = "auth ok from 192.0.2.7"
event = "login"
ip = "192.0.2.7"

[[pattern.samples]]
message = "auth failed from 192.0.2.7"
event = "none"
"""
EXTRA_LINE = "Nov 29 14:22:55 vm mypopd[123]: auth ok from 192.0.2.9\n"
LOGIN_LINE = (
    "2026-11-29T14:22:55.929031+00:00 vm dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
    "rip=192.0.2.7, lip=127.0.0.1, mpid=13339, session=<KxeGB2thD8R/ChQe>\n"
)


@pytest.fixture(autouse=True)
def no_system_config(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a config file on the test machine out of every test."""
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(tmp_path / "absent" / "pbsyslog.toml"))


def run(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> tuple[int, str, str]:
    """Run the command in-process; return its exit status, stdout and stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def records(out: str) -> list[dict[str, Any]]:
    """The JSON objects ``check --json`` printed, one per line."""
    return [json.loads(line) for line in out.splitlines()]


def copy_corpus(tmp_path: pathlib.Path, name: str) -> pathlib.Path:
    """Copy one corpus file into tmp_path and return the copy."""
    target = tmp_path / name.replace("/", "-")
    target.write_bytes((CORPUS / name).read_bytes())
    return target


def checked_labels(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, name: str, events: Sequence[str]
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Run ``check --json`` on a copy of corpus file ``name`` (asserting it exits 0).

    Returns each of the file's labels whose event is one of ``events``, with
    the record ``check`` reported at that label's line number (None if none).
    """
    path = copy_corpus(tmp_path, name)
    lines = path.read_text().splitlines()
    code, out, _ = run(capsys, ["check", "--json", str(path)])
    assert code == 0
    by_line = {r["line"]: r for r in records(out)}
    return [
        (label, by_line.get(lines.index(label["line"]) + 1))
        for label in LABELS
        if label["file"] == f"real/{name}" and label["event"] in events
    ]


@pytest.mark.parametrize("name", DOVECOT_FILES)
def test_every_labelled_login_is_reported_with_its_ip(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, name: str
) -> None:
    """Each line labelled login is reported as a login of its labelled IP, at its own line number."""
    logins = checked_labels(capsys, tmp_path, name, ("login",))
    assert len(logins) >= 50
    for label, found in logins:
        assert found is not None and found["event"] == "login", label["line"]
        assert found["ip"] == label["ip"]


@pytest.mark.parametrize("name", DOVECOT_FILES)
def test_fail_and_other_lines_are_never_logins(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, name: str
) -> None:
    """Lines labelled fail or other are never reported as logins, and a reported failure carries the labelled IP."""
    others = checked_labels(capsys, tmp_path, name, ("fail", "other"))
    assert len(others) >= 60
    for label, found in others:
        if found is None:
            continue
        assert found["event"] != "login", label["line"]
        if label["event"] == "fail":
            assert (found["event"], found["ip"]) == ("fail", label["ip"])


def test_both_timestamp_styles_mixed_in_one_file(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """A file that alternates RFC 3339 and classic lines gives the logins of both originals, in order."""
    rfc3339 = (CORPUS / DOVECOT_FILES[0]).read_text().splitlines()
    classic = (CORPUS / DOVECOT_FILES[1]).read_text().splitlines()
    mixed = [a if i % 2 else b for i, (a, b) in enumerate(zip(rfc3339, classic, strict=True))]
    path = tmp_path / "mixed.log"
    path.write_text("\n".join(mixed) + "\n")
    code, out, _ = run(capsys, ["check", "--json", str(path)])
    assert code == 0
    expected = [
        (number, label["ip"])
        for number, line in enumerate(mixed, 1)
        for label in LABELS
        if label["line"] == line and label["event"] == "login"
    ]
    got = [(r["line"], r["ip"]) for r in records(out) if r["event"] == "login"]
    assert len(expected) >= 50
    assert got == expected


def test_file_lines_parse_as_the_same_wire_frame(tmp_path: pathlib.Path) -> None:
    """Every corpus file line gives the same host, program, pid and MSG with and without a <22> PRI in front."""
    for name in DOVECOT_FILES:
        for raw in (CORPUS / name).read_bytes().splitlines():
            bare, wire = parse(raw), parse(b"<22>" + raw)
            assert (bare.hostname, bare.program, bare.pid, bare.message) == (
                wire.hostname,
                wire.program,
                wire.pid,
                wire.message,
            )
            assert bare.hostname == "vm"


def test_check_json_agrees_with_parse_and_match(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """The JSON records are exactly what parse() then PatternTable.match() give for each line."""
    path = copy_corpus(tmp_path, DOVECOT_FILES[1])
    table = load_table()
    groups = {p.name: p.group for p in table.patterns}
    expected = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        event = table.match(parse(raw))
        if event is not None:
            expected.append(
                {"line": number, "pattern": event.pattern, "group": groups[event.pattern], "event": event.kind, "ip": event.ip}
            )
    code, out, _ = run(capsys, ["check", "--json", str(path)])
    assert code == 0
    assert records(out) == expected


def test_json_shape_for_one_file(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """With one file, each record has exactly line, pattern, group, event and ip."""
    path = tmp_path / "one.log"
    path.write_text("Nov 29 14:22:50 vm kernel: hello\n" + LOGIN_LINE)
    code, out, _ = run(capsys, ["check", "--json", str(path)])
    assert code == 0
    assert records(out) == [
        {"line": 2, "pattern": "dovecot-login", "group": "dovecot", "event": "login", "ip": "192.0.2.7"}
    ]


def test_json_names_the_file_when_there_are_several(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """With two files, records carry "file" and line numbers restart at 1 in each file."""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    first.write_text(LOGIN_LINE)
    second.write_text("Nov 29 14:22:50 vm kernel: hello\n" + LOGIN_LINE)
    code, out, _ = run(capsys, ["check", "--json", str(first), str(second)])
    assert code == 0
    assert [(r["file"], r["line"]) for r in records(out)] == [(str(first), 1), (str(second), 2)]


def test_human_format_has_number_pattern_event_ip_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    """Without --json a match prints as tab-separated line number, pattern, event, ip and the line itself."""
    path = tmp_path / "one.log"
    path.write_text("Nov 29 14:22:50 vm kernel: hello\n" + LOGIN_LINE)
    code, out, _ = run(capsys, ["check", str(path)])
    assert code == 0
    assert out == f"2\tdovecot-login\tlogin\t192.0.2.7\t{LOGIN_LINE}"


def test_stdin_dash(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``-`` reads the lines from stdin."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("x\n" + LOGIN_LINE).encode())))
    code, out, _ = run(capsys, ["check", "--json", "-"])
    assert code == 0
    assert [(r["line"], r["ip"]) for r in records(out)] == [(2, "192.0.2.7")]


def test_gzip_file(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """A rotated ``.gz`` log is read through gzip."""
    path = tmp_path / "mail.log.2.gz"
    path.write_bytes(gzip.compress(LOGIN_LINE.encode()))
    code, out, _ = run(capsys, ["check", "--json", str(path)])
    assert code == 0
    assert [r["ip"] for r in records(out)] == ["192.0.2.7"]


def test_summary_on_stderr_counts_lines_events_and_unparsable(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    """The summary counts all lines, logins and the lines parse() rejects (an empty one, a bad PRI)."""
    path = tmp_path / "s.log"
    path.write_text(LOGIN_LINE + "\n<999>Nov 29 14:22:50 vm x: y\n" + LOGIN_LINE)
    code, out, err = run(capsys, ["check", "--json", str(path)])
    assert code == 0
    assert len(records(out)) == 2
    assert "4 lines, 2 matched (login 2, logout 0, fail 0), 2 unparsable" in err
    assert "lines/s" in err


def test_patterns_option_restricts_the_table(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """--patterns courier leaves Dovecot lines unmatched; --patterns dovecot-fail,courier keeps only failures."""
    path = copy_corpus(tmp_path, DOVECOT_FILES[0])
    code, out, _ = run(capsys, ["check", "--json", "--patterns", "courier", str(path)])
    assert (code, out) == (0, "")
    code, out, _ = run(capsys, ["check", "--json", "--patterns", "dovecot-fail, courier", str(path)])
    assert code == 0
    assert out and {r["event"] for r in records(out)} == {"fail"}


def test_unknown_pattern_name_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """An unknown --patterns name exits 2 with a message naming it, and prints nothing on stdout."""
    path = tmp_path / "one.log"
    path.write_text(LOGIN_LINE)
    code, out, err = run(capsys, ["check", "--patterns", "dovecot,nosuchd", str(path)])
    assert (code, out) == (2, "")
    assert "nosuchd" in err


def test_unreadable_file_exits_2_before_any_output(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """A missing second file exits 2 naming it, without printing the first file's matches."""
    good = tmp_path / "good.log"
    good.write_text(LOGIN_LINE)
    missing = tmp_path / "missing.log"
    code, out, err = run(capsys, ["check", str(good), str(missing)])
    assert (code, out) == (2, "")
    assert str(missing) in err


def test_not_gzip_is_an_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """A ``.gz`` name holding plain text exits 2 naming the file."""
    path = tmp_path / "mail.log.gz"
    path.write_text(LOGIN_LINE)
    code, _, err = run(capsys, ["check", str(path)])
    assert code == 2
    assert str(path) in err


@pytest.mark.parametrize("argv", [["check"], ["frobnicate"], [], ["check", "--bogus", "x"]])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    """Missing files, unknown subcommands and unknown options exit 2."""
    code, _, err = run(capsys, argv)
    assert code == 2
    assert "usage:" in err


def test_config_extra_pattern_and_patterns_are_used(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """--config adds the admin's [[pattern]] and its patterns list disables the others unless --patterns overrides it."""
    config = tmp_path / "pbsyslog.toml"
    config.write_text('patterns = ["courier"]\n' + EXTRA_PATTERN)
    path = tmp_path / "x.log"
    path.write_text(LOGIN_LINE + EXTRA_LINE)
    code, out, _ = run(capsys, ["check", "--json", "--config", str(config), str(path)])
    assert code == 0
    assert records(out) == [{"line": 2, "pattern": "mypop", "group": "mypop", "event": "login", "ip": "192.0.2.9"}]
    code, out, _ = run(capsys, ["check", "--json", "--config", str(config), "--patterns", "dovecot", str(path)])
    assert code == 0
    assert [r["pattern"] for r in records(out)] == ["dovecot-login", "mypop"]


def test_default_config_file_is_read_when_present(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --config, DEFAULT_CONFIG is read if it exists (here: only courier enabled)."""
    config = tmp_path / "default.toml"
    config.write_text('patterns = ["courier"]\n')
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(config))
    path = tmp_path / "x.log"
    path.write_text(LOGIN_LINE)
    code, out, _ = run(capsys, ["check", str(path)])
    assert (code, out) == (0, "")


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "cannot read config"), ("grace = = 1\n", "not valid TOML"), ("grase = 1\n", "'grase'")],
)
def test_bad_config_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path, content: str | None, needle: str
) -> None:
    """A missing, malformed or invalid --config exits 2 with the config module's message."""
    config = tmp_path / "c.toml"
    if content is not None:
        config.write_text(content)
    path = tmp_path / "x.log"
    path.write_text(LOGIN_LINE)
    code, out, err = run(capsys, ["check", "--config", str(config), str(path)])
    assert (code, out) == (2, "")
    assert needle in err


def test_bad_extra_pattern_in_config_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """An admin pattern whose sample fails is a config error naming the pattern, exit 2."""
    config = tmp_path / "c.toml"
    config.write_text(EXTRA_PATTERN.replace('ip = "192.0.2.7"', 'ip = "192.0.2.8"'))
    code, _, err = run(capsys, ["dumpconfig", "--config", str(config)])
    assert code == 2
    assert "mypop" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``version`` prints the package version."""
    code, out, _ = run(capsys, ["version"])
    assert (code, out) == (0, f"pbsyslog {__version__}\n")


def test_dumpconfig_defaults_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    """With no config file, dumpconfig prints TOML that builds the default Config again."""
    code, out, _ = run(capsys, ["dumpconfig"])
    assert code == 0
    assert Config.from_mapping(tomllib.loads(out)) == Config()


def test_dumpconfig_round_trip_with_everything_set(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    """A config with every kind of value (quotes, backslashes, IPv6, [[pattern]] samples) and --dbfile survives the trip."""
    config = tmp_path / "c.toml"
    config.write_text(
        "grace = 600\nexpire_interval = 5\n"
        "map_value = 'PREPEND X-Note: \"popped\" \\ ok'\n"
        'patterns = ["dovecot", "courier-login"]\nauthorise_loopback = true\ninsecure_remote = true\nmax_frame = 4096\n'
        + EXTRA_PATTERN
        + '\n[[listen]]\nprotocol = "udp"\nhost = "::1"\nport = 0\n'
        + '\n[[listen]]\nprotocol = "tcp"\nhost = "192.0.2.1"\nport = 514\n'
        + 'allow = ["192.0.2.0/28", "2001:db8::/64"]\nhostnames = ["mx1"]\n'
    )
    code, out, _ = run(capsys, ["dumpconfig", "--config", str(config), "--dbfile", "/var/lib/pbsyslog/it's map"])
    assert code == 0
    dumped = Config.from_mapping(tomllib.loads(out))
    assert dumped == load(str(config)).override(dbfile="/var/lib/pbsyslog/it's map")
    assert dumped.listen[0] == Listener("udp", "::1", 0)
    assert dumped.listen[1].hostnames == ("mx1",)
    assert dumped.extra_patterns[0]["samples"][1]["event"] == "none"


def test_dumpconfig_bad_dbfile_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """--dbfile with a .db suffix is refused like the service refuses it, exit 2."""
    code, out, err = run(capsys, ["dumpconfig", "--dbfile", "map.db"])
    assert (code, out) == (2, "")
    assert "--dbfile" in err


def test_toml_document_quotes_keys_and_escapes_strings() -> None:
    """Keys that are not bare and strings with quotes, control characters and DEL read back unchanged."""
    raw = {
        "a b": "it's \"x\"\n\t\x01\x7f\\",
        "n": [1, 2.5, True, "x"],
        "inline": [{"k": 1}, 2],
        "t": {"s": "v", "deep": {"x": 1}},
        "arr": [{"x": "'"}, {"y": {"z": False}}],
    }
    assert tomllib.loads(cli.toml_document(raw)) == raw


def test_installed_console_script(tmp_path: pathlib.Path) -> None:
    """The installed ``pbsyslog`` script runs ``check --json`` and exits 0."""
    script = pathlib.Path(sys.executable).parent / "pbsyslog"
    assert script.exists(), "run `make venv` to install the console script"
    path = tmp_path / "one.log"
    path.write_text(LOGIN_LINE)
    done = subprocess.run(
        [str(script), "check", "--json", "--patterns", "dovecot", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert records(done.stdout) == [
        {"line": 1, "pattern": "dovecot-login", "group": "dovecot", "event": "login", "ip": "192.0.2.7"}
    ]
    assert "1 lines, 1 matched" in done.stderr


def test_dumpconfig_round_trips_outputs_and_metrics(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config with [[output]] tables and a metrics address dumps to TOML that loads back equal."""
    conf = tmp_path / "c.toml"
    conf.write_text(
        f'dbfile = "{tmp_path}/map"\nmetrics = "[::1]:9103"\n'
        f'[[output]]\nkind = "exim-dbm"\npath = "{tmp_path}/exim"\n'
    )
    assert cli.main(["dumpconfig", "--config", str(conf)]) == 0
    dumped = tomllib.loads(capsys.readouterr().out)
    assert dumped["metrics"] == "[::1]:9103"
    assert dumped["output"] == [{"kind": "exim-dbm", "path": f"{tmp_path}/exim"}]
