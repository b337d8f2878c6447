"""Tests for pbsyslog.patterns: the built-in table, its samples, the real corpus, the loader."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbsyslog.patterns import (
    AuthEvent,
    Pattern,
    PatternError,
    PatternTable,
    Sample,
    builtin_entries,
    load_table,
    normalise_ip,
)
from pbsyslog.syslog import SyslogMessage


def _corpus_dir() -> pathlib.Path:
    """The real-daemon corpus of Dovecot and Courier (tests/corpus/real)."""
    from corpus_paths import REAL

    return REAL


CORPUS = _corpus_dir()
TABLE = load_table()
BUILTIN = {p.name: p for p in TABLE.patterns}
SAMPLES = [(p.name, n, s) for p in TABLE.patterns for n, s in enumerate(p.samples, 1)]

# "TIMESTAMP HOST TAG[PID]: MSG" with an RFC 3339 or a classic timestamp.
LINE = re.compile(
    r"(?:\d{4}-\d\d-\d\dT\S+|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) "
    r"(?P<host>\S+) (?P<tag>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)\Z"
)


def message(program: str | None, text: str, facility: int | None = None) -> SyslogMessage:
    """A SyslogMessage with just a program and a MSG part."""
    return SyslogMessage(facility, None, None, None, program, None, text)


def split_line(line: str) -> SyslogMessage:
    """Parse one line of the corpus' rsyslog files into a SyslogMessage (header fields we need)."""
    found = LINE.match(line)
    assert found, f"not a syslog file line: {line!r}"
    return SyslogMessage(None, None, None, found["host"], found["tag"], found["pid"], found["msg"])


def labels() -> list[dict[str, Any]]:
    """The corpus labels of the rsyslog files of Dovecot and Courier (own.log left out)."""
    path = CORPUS / "labels.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if not r["file"].endswith("/own.log")]


LABELS = labels()
MAIL_LABELS = [r for r in LABELS if not r["file"].endswith("/auth.log")]
AUTH_LABELS = [r for r in LABELS if r["file"].endswith("/auth.log")]


def label_id(row: Mapping[str, Any]) -> str:
    """A short test id for a corpus line."""
    return f"{row['file'].removeprefix('real/')}:{row['line'][:70]}"


def entry(**changes: Any) -> dict[str, Any]:
    """A valid admin entry for a made-up daemon, with ``changes`` applied (None deletes a key)."""
    raw: dict[str, Any] = {
        "name": "acme-pop3d",
        "kind": "login",
        "programs": ["acme-pop3d"],
        "regex": r"^OK login user=(?P<user>\S+) from \[(?P<ip>[0-9a-f:.]+)\]$",
        "samples": [
            {"message": "OK login user=alice from [192.0.2.7]", "event": "login", "ip": "192.0.2.7"},
            {"message": "FAILED login user=alice from [192.0.2.7]", "event": "none"},
        ],
    }
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


# --------------------------------------------------------- built-in samples --


@pytest.mark.parametrize(
    ("name", "number", "sample"), SAMPLES, ids=[f"{n}#{i}" for n, i, _ in SAMPLES]
)
def test_builtin_sample_gives_expected_event(name: str, number: int, sample: Sample) -> None:
    """Each built-in sample gives exactly its expected event and address through the whole table, or nothing."""
    event = TABLE.classify(message(sample.program, sample.message))
    if sample.event is None:
        assert event is None
    else:
        assert event is not None
        assert (event.kind, event.ip, event.pattern) == (sample.event, sample.ip, name)
        if sample.user is not None:
            assert event.user == sample.user
        if sample.session is not None:
            assert event.session == sample.session


@pytest.mark.parametrize(
    ("name", "number", "sample"), SAMPLES, ids=[f"{n}#{i}" for n, i, _ in SAMPLES]
)
def test_match_reports_only_events_with_an_address(name: str, number: int, sample: Sample) -> None:
    """match() gives a sample's event only when it is a login, logout or failure with an address; else nothing."""
    event = TABLE.match(message(sample.program, sample.message))
    if sample.event in ("login", "logout", "fail") and sample.ip is not None:
        assert event is not None and (event.kind, event.ip) == (sample.event, sample.ip)
    else:
        assert event is None


@pytest.mark.parametrize(
    ("name", "number", "sample"), SAMPLES, ids=[f"{n}#{i}" for n, i, _ in SAMPLES]
)
def test_builtin_sample_matches_no_other_entry(name: str, number: int, sample: Sample) -> None:
    """No built-in sample is reported by any entry but its own, whatever the table's order."""
    claimed = {
        p.name
        for p in TABLE.patterns
        if p.handles(sample.program) and p.apply(sample.message) is not None
    }
    assert claimed == ({name} if sample.event is not None else set())


def test_every_builtin_entry_has_positive_and_negative_samples() -> None:
    """Every built-in entry carries lines it must report and lines it must not."""
    for pattern in TABLE.patterns:
        events = {s.event for s in pattern.samples}
        assert pattern.kind in events and None in events, pattern.name


GROUPS = (
    "dovecot", "courier", "uw-imap", "dovecot-file", "qpopper", "cyrus", "gnu-pop3d", "vpopmail",
    "cucipop", "vm-pop3d", "popa3d", "solid-pop3d", "perdition", "teapop", "apple",
)
NAMES = (
    "dovecot-login", "dovecot-logout", "dovecot-fail", "courier-login", "courier-logout", "courier-fail",
    "uw-imap-login", "uw-imap-fail", "uw-imap-solaris-login", "dovecot-old-login",
    "dovecot-file-login", "dovecot-file-fail", "qpopper-login", "qpopper-stats",
    "qpopper-file-login", "cyrus-login", "cyrus-fail", "gnu-pop3d-login", "vpopmail-login",
    "vpopmail-fail", "cucipop-login", "vm-pop3d-login", "vm-pop3d-connect", "vm-pop3d-two-line",
    "popa3d-login", "popa3d-connect", "popa3d-two-line", "popa3d-fail", "popa3d-end", "popa3d-logout",
    "solid-pop3d-login", "solid-pop3d-logout", "solid-pop3d-connect", "solid-pop3d-two-line",
    "solid-pop3d-two-line-logout", "solid-pop3d-two-line-fail", "solid-pop3d-fail",
    "perdition-login", "perdition-old-login", "perdition-logout", "perdition-fail", "teapop-login",
    "apple-imap-login",
)


def test_builtin_groups_and_names() -> None:
    """The built-in table has the groups the config names, in file order, and these entries."""
    assert TABLE.groups == GROUPS
    assert TABLE.names == NAMES


def test_header_lists_every_group() -> None:
    """The data file's header documents every built-in group on a line of its own."""
    header = (pathlib.Path(__file__).resolve().parents[1] / "pbsyslog" / "patterns.toml").read_text()
    header = header[: header.index("[[pattern]]")]
    for group in GROUPS:
        assert re.search(rf"^#\s+{re.escape(group)}\s{{2,}}\S", header, re.M), group


def test_no_group_name_is_an_entry_name() -> None:
    """Group names and entry names never collide, so a name in the config means one thing."""
    assert not set(GROUPS) & set(NAMES)


def test_builtin_regexes_are_anchored_at_both_ends() -> None:
    """Every built-in regex starts at the beginning of MSG and runs to its end."""
    for pattern in TABLE.patterns:
        assert pattern.regex.pattern.startswith("^"), pattern.name
        assert pattern.regex.pattern.endswith("$"), pattern.name


# ------------------------------------------------------------- real corpus --


def test_corpus_is_there() -> None:
    """The labelled corpus the next tests run over is present and has logins of both daemons."""
    logins = {r["daemon"] for r in MAIL_LABELS if r["event"] == "login"}
    assert logins == {"dovecot", "courier"}
    assert len(AUTH_LABELS) > 0


@pytest.mark.parametrize("row", MAIL_LABELS, ids=[label_id(r) for r in MAIL_LABELS])
def test_corpus_mail_line(row: Mapping[str, Any]) -> None:
    """A real daemon line gives a login with the labelled address if and only if it is labelled a login."""
    event = TABLE.match(split_line(row["line"]))
    if row["event"] == "login":
        assert event is not None and event.kind == "login"
        assert event.ip == row["ip"]
    else:
        assert event is None or event.kind != "login", row["note"]


@pytest.mark.parametrize("row", MAIL_LABELS, ids=[label_id(r) for r in MAIL_LABELS])
def test_corpus_event_agrees_with_label(row: Mapping[str, Any]) -> None:
    """Whatever event a real line gives has the labelled kind and the labelled client address."""
    event = TABLE.match(split_line(row["line"]))
    if event is not None:
        assert (event.kind, event.ip) == (row["event"], row["ip"])


def test_corpus_courier_logouts_and_failures_are_reported() -> None:
    """Every Courier logout after a login and every Courier failed login in the corpus gives its event."""
    rows = [r for r in MAIL_LABELS if r["daemon"] == "courier" and r["event"] in ("logout", "fail")]
    assert rows
    for row in rows:
        event = TABLE.match(split_line(row["line"]))
        assert event is not None and (event.kind, event.ip) == (row["event"], row["ip"]), row["line"]


def test_corpus_dovecot_failures_from_login_process_are_reported() -> None:
    """Every Dovecot login-process 'auth failed' line in the corpus gives a failure with its address."""
    rows = [r for r in MAIL_LABELS if r["daemon"] == "dovecot" and "(auth failed" in r["line"]]
    assert rows
    for row in rows:
        event = TABLE.match(split_line(row["line"]))
        assert event == AuthEvent("fail", row["ip"], "dovecot-fail", event.user if event else None)


@pytest.mark.parametrize("row", AUTH_LABELS, ids=[label_id(r) for r in AUTH_LABELS])
def test_corpus_auth_line_is_never_a_login(row: Mapping[str, Any]) -> None:
    """A PAM line from auth.log never gives a login, whatever address its rhost= holds."""
    event = TABLE.match(split_line(row["line"]))
    assert event is None or event.kind != "login"


# -------------------------------------------------- matching and dispatching --


def test_unrelated_program_gives_nothing() -> None:
    """A Dovecot login text under a program with no entries gives no event."""
    text = BUILTIN["dovecot-login"].samples[0].message
    assert TABLE.match(message("postfix/smtpd", text)) is None


def test_missing_program_gives_nothing() -> None:
    """A message without a program (no tag in the header) gives no event."""
    assert TABLE.match(message(None, BUILTIN["dovecot-login"].samples[0].message)) is None


def test_program_given_as_path_uses_its_basename() -> None:
    """A tag written as a path (/usr/sbin/ipop3d) is matched with the entries of its last part."""
    event = TABLE.match(message("/usr/sbin/ipop3d", "Login user=bob host=[192.0.2.9] nmsgs=3/3"))
    assert event == AuthEvent("login", "192.0.2.9", "uw-imap-login", "bob")


def test_program_match_is_exact() -> None:
    """A tag that merely contains a known program name is not that program."""
    text = BUILTIN["dovecot-login"].samples[0].message
    assert TABLE.match(message("dovecot-evil", text)) is None
    assert TABLE.match(message("Dovecot", text)) is None


@pytest.mark.parametrize("facility", [None, 0, 2, 4, 10, 16, 23])
def test_match_does_not_depend_on_facility(facility: int | None) -> None:
    """The same line gives the same event whatever facility it was logged with."""
    text = BUILTIN["dovecot-login"].samples[0].message
    assert TABLE.match(message("dovecot", text, facility)) == AuthEvent(
        "login", "127.10.20.30", "dovecot-login", "alice", "KxeGB2thD8R/ChQe"
    )


def test_empty_user_is_reported_as_none() -> None:
    """A login line with an empty user field reports user None."""
    text = "imap-login: Login: user=<>, method=EXTERNAL, rip=192.0.2.7, lip=192.0.2.1, mpid=1, TLS, session=<AAAA>"
    assert TABLE.match(message("dovecot", text)) == AuthEvent("login", "192.0.2.7", "dovecot-login", None, "AAAA")


def test_match_never_raises_on_odd_messages() -> None:
    """Empty, huge and binary-looking MSG parts give no event instead of an exception."""
    for text in ["", "\x00" * 10, "pop3-login: Login: " + "A" * 100_000, "LOGIN, user=\udcff, ip=[1.2.3.4"]:
        for program in ("dovecot", "imapd", "ipop3d", "pop3d"):
            assert TABLE.match(message(program, text)) is None


def test_long_line_gives_the_same_event_as_a_short_one() -> None:
    """A matching line too long for the event cache gives its event all the same."""
    user = "a" * 400
    text = f"LOGIN FAILED, user={user}, ip=[::ffff:192.0.2.7], port=[41751]"
    assert TABLE.match(message("pop3d", text)) == AuthEvent("fail", "192.0.2.7", "courier-fail", user)


def test_many_unknown_programs_do_not_grow_the_table_without_bound() -> None:
    """Lines of ever new programs leave a bounded route memo and do not change matching."""
    table = load_table()
    for number in range(5000):
        assert table.match(message(f"spam{number}/pop3d", "LOGIN, user=a, ip=[192.0.2.7]")) is not None
    assert len(table._routes) <= 4096
    assert table.match(message("pop3d", "LOGIN, user=a, ip=[192.0.2.8]")) == AuthEvent(
        "login", "192.0.2.8", "courier-login", "a"
    )


# ------------------------------------------------- forged user names (hypothesis) --

# User names an attacker would try: arbitrary text, and forgeries, which are
# a prefix of the structure the daemon writes after the user field (with
# another address in it) followed by a few more pieces of that structure.
# Random text almost never imitates a log line; forgeries always try to.
FRAGMENTS = [
    "alice", "<", ">", ",", ", ", " ", "=", "[", "]", "6.6.6.6", "::ffff:6.6.6.6",
    "rip=", "lip=", "method=PLAIN", "mpid=1", "TLS", "session=<x>", "ip=[", "port=[1]",
    "protocol=IMAP", "time=0", "host=", "[6.6.6.6]", "auth=", "nmsgs=1/1",
]


def user_names(*structures: str) -> st.SearchStrategy[str]:
    """Arbitrary user names and forgeries of the given after-the-user structures."""
    forgeries = st.builds(
        lambda head, structure, cut, rest: head + structure[: int(cut * len(structure))] + "".join(rest),
        st.text(alphabet="abc@.-_ ", max_size=6),
        st.sampled_from(structures),
        st.floats(0, 1),
        st.lists(st.sampled_from(FRAGMENTS), max_size=4),
    )
    return st.one_of(st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=80), forgeries)


USER_NAMES = user_names(">, method=PLAIN, rip=6.6.6.6, lip=6.6.6.6, mpid=1, TLS, session=<AAAA>")


@given(user=USER_NAMES)
def test_dovecot_login_user_name_cannot_choose_the_address(user: str) -> None:
    """Whatever the user name, a Dovecot login with rip=192.0.2.7 gives 192.0.2.7 or nothing."""
    text = (
        f"pop3-login: Login: user=<{user}>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, "
        "mpid=13339, TLS, session=<KxeGB2thD8R/ChQe>"
    )
    event = TABLE.match(message("dovecot", text))
    assert event is None or (event.kind, event.ip) == ("login", "192.0.2.7")


@given(user=USER_NAMES)
def test_dovecot_failed_user_name_cannot_make_a_login(user: str) -> None:
    """Whatever the user name, a Dovecot failed login gives a failure for 192.0.2.7 or nothing."""
    text = (
        "imap-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 4 secs): "
        f"user=<{user}>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, session=<j+abB2thncd////+>"
    )
    event = TABLE.match(message("dovecot", text))
    assert event is None or (event.kind, event.ip) == ("fail", "192.0.2.7")


@given(
    user=user_names(
        ", ip=[6.6.6.6], port=[1], protocol=IMAP",
        ", ip=[::ffff:6.6.6.6], port=[1], top=0, retr=0, time=0",
    ),
    program=st.sampled_from(["pop3d", "imapd", "imapd-ssl"]),
)
def test_courier_user_name_cannot_choose_the_address(user: str, program: str) -> None:
    """Whatever the user name, Courier login, logout and failure lines give ::ffff:192.0.2.7's address or nothing."""
    for text, kind in [
        (f"LOGIN, user={user}, ip=[::ffff:192.0.2.7], port=[41751], protocol=IMAP", "login"),
        (f"LOGOUT, user={user}, ip=[::ffff:192.0.2.7], port=[41751], top=0, retr=0, time=0", "logout"),
        (f"LOGIN FAILED, user={user}, ip=[::ffff:192.0.2.7], port=[41751]", "fail"),
    ]:
        event = TABLE.match(message(program, text))
        assert event is None or (event.kind, event.ip) == (kind, "192.0.2.7")


@given(
    user=user_names(" host=evil.example [6.6.6.6] nmsgs=1/1", " auth=x host=[6.6.6.6]"),
    program=st.sampled_from(["imapd", "ipop3d"]),
)
def test_uw_user_name_cannot_choose_the_address(user: str, program: str) -> None:
    """Whatever the user name, UW login and failure lines give 192.0.2.7 or nothing."""
    for text, kind in [
        (f"Login user={user} host=client.example [192.0.2.7] nmsgs=1/1", "login"),
        (f"Login failed user={user} auth={user} host=client.example [192.0.2.7]", "fail"),
    ]:
        event = TABLE.match(message(program, text))
        assert event is None or (event.kind, event.ip) == (kind, "192.0.2.7")


# --------------------------------------------------------------- normalise_ip --


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:127.0.0.5", "127.0.0.5"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("2001:DB8::A", "2001:db8::a"),
        ("2001:0db8:0000:0000:0000:0000:0000:000a", "2001:db8::a"),
        ("[192.0.2.7]", "192.0.2.7"),
        ("[::ffff:192.0.2.7]", "192.0.2.7"),
        ("::FFFF:7f00:5", "127.0.0.5"),
        ("192.0.2.7", "192.0.2.7"),
        ("::1", "::1"),
        ("garbage", None),
        ("999.1.1.1", None),
        ("", None),
        ("[]", None),
        ("[192.0.2.7", None),
        ("[[192.0.2.7]]", None),
        ("192.0.2.07", None),
        ("192.0.2", None),
        (" 192.0.2.7", None),
        ("192.0.2.7\n", None),
        ("fe80::1%eth0", None),
        ("[fe80::1%eth0]", None),
        ("192.0.2.0/24", None),
        ("１９２.０.２.７", None),
        ("::１", None),
    ],
)
def test_normalise_ip(text: str, expected: str | None) -> None:
    """normalise_ip validates an address and writes it the way Postfix looks it up, or gives None."""
    assert normalise_ip(text) == expected


def test_normalise_ip_refuses_non_strings() -> None:
    """normalise_ip gives None for values that are not text."""
    assert normalise_ip(None) is None  # type: ignore[arg-type]
    assert normalise_ip(b"192.0.2.7") is None  # type: ignore[arg-type]


@given(st.text(max_size=50))
def test_normalise_ip_is_idempotent(text: str) -> None:
    """normalise_ip never raises, and what it returns normalises to itself."""
    result = normalise_ip(text)
    assert result is None or normalise_ip(result) == result


# ------------------------------------------------------------------ load_table --


def test_load_all_by_default() -> None:
    """load_table() with no arguments enables every built-in entry."""
    assert load_table().names == TABLE.names


def test_load_by_group_name() -> None:
    """Naming a group enables all of its entries and nothing else."""
    table = load_table(["courier"])
    assert table.names == ("courier-login", "courier-logout", "courier-fail")
    assert table.match(message("dovecot", BUILTIN["dovecot-login"].samples[0].message)) is None


def test_load_by_entry_name() -> None:
    """Naming an entry enables that entry alone."""
    assert load_table(["dovecot-login", "uw-imap"]).names == (
        "dovecot-login",
        "uw-imap-login",
        "uw-imap-fail",
        "uw-imap-solaris-login",
    )


def test_load_single_name_as_string() -> None:
    """A single name given as a string is that name, not a list of characters."""
    assert load_table("dovecot").groups == ("dovecot",)


def test_load_unknown_name_names_it_and_lists_known() -> None:
    """An unknown name raises PatternError naming it and listing the known names."""
    with pytest.raises(PatternError) as caught:
        load_table(["dovecot", "no-such-daemon"])
    assert caught.value.entry == "no-such-daemon"
    assert "no-such-daemon" in str(caught.value)
    assert "dovecot" in str(caught.value) and "uw-imap" in str(caught.value)


def test_load_nothing_enabled_is_an_error() -> None:
    """An empty selection with no extra entries raises PatternError instead of a table that never matches."""
    with pytest.raises(PatternError, match="no pattern is enabled"):
        load_table([])


def test_extra_entry_is_added_and_enabled() -> None:
    """An admin entry with a new name is appended and enabled even when not named in 'enabled'."""
    table = load_table(["courier"], extra=[entry()])
    assert table.names[-1] == "acme-pop3d"
    event = table.match(message("acme-pop3d", "OK login user=alice from [192.0.2.7]"))
    assert event == AuthEvent("login", "192.0.2.7", "acme-pop3d", "alice")


def test_extra_entry_replaces_builtin_of_same_name() -> None:
    """An admin entry named like a built-in entry replaces it in place."""
    replacement = entry(
        name="dovecot-login",
        group="dovecot",
        programs=["dovecot"],
        regex=r"^imap-login: Logged in: (?P<user>\S+) from (?P<ip>[0-9.]+)$",
        samples=[
            {"message": "imap-login: Logged in: alice from 192.0.2.7", "event": "login", "ip": "192.0.2.7"},
            {"message": "imap-login: Logged in: alice from nowhere", "event": "none"},
        ],
    )
    table = load_table(extra=[replacement])
    assert table.names == TABLE.names
    assert table.patterns[0].regex.pattern == replacement["regex"]
    assert table.match(message("dovecot", "imap-login: Logged in: alice from 192.0.2.7")) is not None
    assert table.match(message("dovecot", BUILTIN["dovecot-login"].samples[0].message)) is None


def test_extra_entry_named_like_a_group_replaces_the_group() -> None:
    """An admin entry named like a built-in group replaces all of that group's entries."""
    replacement = entry(name="courier", programs=["pop3d"])
    table = load_table(extra=[replacement])
    assert table.names[:6] == ("dovecot-login", "dovecot-logout", "dovecot-fail", "courier", "uw-imap-login", "uw-imap-fail")
    assert not any(name.startswith("courier-") for name in table.names)


def test_builtin_entries_are_fresh_copies() -> None:
    """Changing what builtin_entries returned does not change the next table."""
    entries = builtin_entries()
    entries[0]["regex"] = "(?P<ip>.*)"
    entries.clear()
    assert load_table().names == TABLE.names


def test_from_entries_accepts_builtin_entries() -> None:
    """PatternTable.from_entries builds the same table from the raw built-in entries."""
    assert PatternTable.from_entries(builtin_entries()).names == TABLE.names


# ------------------------------------------------------------ load_table errors --


def load_error(bad: Mapping[str, Any]) -> PatternError:
    """Load the built-in table plus ``bad`` and return the PatternError it raises."""
    with pytest.raises(PatternError) as caught:
        load_table(extra=[bad])
    return caught.value


def test_error_regex_without_ip_group() -> None:
    """A regex without a named group 'ip' raises PatternError naming the entry."""
    error = load_error(entry(regex=r"^OK login user=(?P<user>\S+) from \[([0-9.]+)\]$"))
    assert error.entry == "acme-pop3d" and "'ip'" in str(error)


def test_error_broken_regex() -> None:
    """A regex that does not compile raises PatternError naming the entry."""
    error = load_error(entry(regex=r"^OK login (?P<ip>[0-9.]+"))
    assert error.entry == "acme-pop3d" and "does not compile" in str(error)


def test_error_sample_that_does_not_give_its_event() -> None:
    """A sample whose line does not give the expected event raises PatternError naming the entry."""
    samples = [
        {"message": "OK login user=alice from [192.0.2.7]", "event": "login", "ip": "192.0.2.8"},
        {"message": "nothing", "event": "none"},
    ]
    error = load_error(entry(samples=samples))
    assert error.entry == "acme-pop3d" and "192.0.2.8" in str(error)


def test_error_negative_sample_that_matches() -> None:
    """A sample marked "none" that the regex reports raises PatternError naming the entry."""
    samples = [
        {"message": "OK login user=alice from [192.0.2.7]", "event": "login", "ip": "192.0.2.7"},
        {"message": "OK login user=mallory from [6.6.6.6]", "event": "none"},
    ]
    error = load_error(entry(samples=samples))
    assert error.entry == "acme-pop3d" and "must not match" in str(error)


def test_error_sample_user_mismatch() -> None:
    """A sample whose expected user differs from the captured one raises PatternError."""
    samples = [
        {"message": "OK login user=alice from [192.0.2.7]", "event": "login", "ip": "192.0.2.7", "user": "bob"},
        {"message": "nothing", "event": "none"},
    ]
    assert load_error(entry(samples=samples)).entry == "acme-pop3d"


def test_error_too_broad_extra_entry_hits_builtin_samples() -> None:
    """An admin entry that also reports a built-in line raises PatternError naming both entries."""
    broad = entry(
        programs=["dovecot"],
        regex=r"^.*rip=(?P<ip>[0-9.]+),",
        samples=[
            {"message": "x rip=192.0.2.7,", "event": "login", "ip": "192.0.2.7"},
            {"message": "x", "event": "none"},
        ],
    )
    error = load_error(broad)
    assert "acme-pop3d" in str(error) and "dovecot-" in str(error)


def test_error_missing_samples() -> None:
    """An entry without samples, or without a negative one, raises PatternError naming the entry."""
    assert load_error(entry(samples=None)).entry == "acme-pop3d"
    only_positive = [{"message": "OK login user=alice from [192.0.2.7]", "event": "login", "ip": "192.0.2.7"}]
    assert "none" in str(load_error(entry(samples=only_positive)))


def test_error_unknown_key() -> None:
    """A misspelt key raises PatternError naming the entry and the key."""
    error = load_error(entry(regexp="x"))
    assert error.entry == "acme-pop3d" and "'regexp'" in str(error)


def test_error_bad_kind_and_programs() -> None:
    """A kind outside login/logout/fail, or programs that is not a list of tags, raises PatternError."""
    assert "kind" in str(load_error(entry(kind="success")))
    assert "programs" in str(load_error(entry(programs="acme-pop3d")))
    assert "programs" in str(load_error(entry(programs=[])))


def test_error_unnormalised_sample_ip() -> None:
    """A sample address not written as pbsyslog reports it raises PatternError showing the right form."""
    samples = [
        {"message": "OK login user=alice from [::ffff:192.0.2.7]", "event": "login", "ip": "::ffff:192.0.2.7"},
        {"message": "nothing", "event": "none"},
    ]
    error = load_error(entry(samples=samples))
    assert "'192.0.2.7'" in str(error)


def test_error_extra_named_group() -> None:
    """A regex with a named group other than ip and user raises PatternError naming the group."""
    assert "'IP'" in str(load_error(entry(regex=r"^OK (?P<ip>[0-9.]+) (?P<IP>x)$")))


def test_error_duplicate_extra_names() -> None:
    """Two admin entries of one name raise PatternError naming it."""
    with pytest.raises(PatternError) as caught:
        load_table(extra=[entry(), entry()])
    assert caught.value.entry == "acme-pop3d"


def test_error_entry_without_name() -> None:
    """An entry without a usable name raises PatternError saying which entry it is."""
    with pytest.raises(PatternError, match="#1"):
        load_table(extra=[entry(name=None)])


def test_pattern_error_is_a_value_error() -> None:
    """PatternError is a ValueError, so config code may catch either."""
    assert issubclass(PatternError, ValueError)


# ------------------------------------------------------------------ contract --


def test_import_does_not_touch_the_reactor() -> None:
    """Importing and using the module imports nothing from twisted.internet."""
    code = (
        "import sys; import pbsyslog.patterns as p; p.load_table(); "
        "print(any(m.startswith('twisted.internet') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    assert result.stdout.strip() == "False"


def test_pattern_records_are_frozen() -> None:
    """Pattern and AuthEvent are immutable records."""
    with pytest.raises(AttributeError):
        TABLE.patterns[0].name = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        AuthEvent("login", "192.0.2.7", "x").ip = "6.6.6.6"  # type: ignore[misc]
    assert isinstance(TABLE.patterns[0], Pattern)


def _all_samples() -> Iterator[Sample]:
    """Every sample of the built-in table."""
    for pattern in TABLE.patterns:
        yield from pattern.samples


def test_samples_cover_every_program() -> None:
    """Every program a built-in entry names has at least one positive sample of that entry's group."""
    positives = {(p.group, s.program) for p in TABLE.patterns for s in p.samples if s.event is not None}
    for pattern in TABLE.patterns:
        for program in pattern.programs:
            assert (pattern.group, program) in positives, (pattern.name, program)


# --------------------------------------- forged user names, the other daemons --

# (program, line template with {user}, kind): the client address is always
# 192.0.2.7 (or a spelling of it); the user field is the attacker's.
FORGEABLE = [
    ("cyrus/imap", "login: client.example [192.0.2.7] {user} plaintext User logged in SESSIONID=<cyrus-1-2-3-4>", "login"),
    ("cyrus/pop3", "badlogin: client.example [192.0.2.7] plaintext ({user}) [SASL(-13): authentication failure]", "fail"),
    ("perdition.pop3", 'Auth: 192.0.2.7:4242->192.0.2.1:110 client-secure=plaintext authorisation_id=NONE authentication_id="{user}" server="10.0.0.2:110" protocol=POP3 server-secure=plaintext status="ok"', "login"),
    ("perdition.pop3", 'Auth: 192.0.2.7:4242->192.0.2.1:110 client-secure=plaintext authorisation_id=NONE authentication_id="{user}" server="10.0.0.2:110" protocol=POP3 server-secure=plaintext status="failed: Re-Authentication Failure"', "fail"),
    ("perdition.pop3", 'Closing session: 192.0.2.7:4242->192.0.2.1:110 authorisation_id=NONE authentication_id="{user}" received=12 sent=18', "logout"),
    ("solid-pop3d", "user {user} authenticated - 192.0.2.7", "login"),
    ("solid-pop3d", "authentication failed: no such user: {user} - 192.0.2.7", "fail"),
    ("solid-pop3d", "session ended for user {user} - 192.0.2.7", "logout"),
    ("in.qpopper", '(v4.0.9) POP login by user "{user}" at (client.example) 192.0.2.7 [pop_log.c:244]', "login"),
    ("qpopper", "Stats: {user} 0 0 1 300 client.example 192.0.2.7", "login"),
    ("vpopmail", "vchkpw-pop3: (PLAIN) login success {user}@example.com:192.0.2.7", "login"),
    ("vpopmail", "vchkpw-pop3: password fail {user}@example.com:192.0.2.7", "fail"),
    ("dovecot-log", "Nov 29 14:27:53 pop3-login: Info: Login: user=<{user}>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1, session=<x>", "login"),
    ("imap-login", "Login: {user} [192.0.2.7]", "login"),
    ("popa3d", "Authentication passed for {user} -- [192.0.2.7]", "login"),
    ("teapop", "Successful login for {user} from client.example [192.0.2.7]", "login"),
    ("AppleMailServer", 'IMAP User "{user}" log on successful from 192.0.2.7', "login"),
    ("vm-pop3d", "User {user} logged in from 192.0.2.7", "login"),
    ("cucipop", "{user} 192.0.2.7 0, 2 (3020), 0 (0)", "login"),
    ("gnu-pop3d", "User {user} logged in with mailbox /var/mail/x from 192.0.2.7", "login"),
]

OTHER_USER_NAMES = user_names(
    " [6.6.6.6] plaintext User logged in",
    '" server="6.6.6.6:1" protocol=POP3 server-secure=plaintext status="ok',
    " - 6.6.6.6",
    ' at (evil) 6.6.6.6',
    "@evil:6.6.6.6 x",
    ":6.6.6.6",
    " -- [6.6.6.6]",
    " 6.6.6.6 0, 0 (0), 0 (0)",
    " logged in from 6.6.6.6",
    ">, method=PLAIN, rip=6.6.6.6, lip=6.6.6.6",
)


@pytest.mark.parametrize(("program", "template", "kind"), FORGEABLE, ids=[f"{p}:{t[:30]}" for p, t, _ in FORGEABLE])
@given(user=OTHER_USER_NAMES)
def test_forged_user_name_cannot_choose_the_address_or_the_kind(program: str, template: str, kind: str, user: str) -> None:
    """Whatever the user name, the line gives its own kind for 192.0.2.7, or nothing."""
    event = TABLE.match(message(program, template.format(user=user)))
    assert event is None or (event.kind, event.ip) == (kind, "192.0.2.7")


@pytest.mark.parametrize(("program", "template", "kind"), FORGEABLE, ids=[f"{p}:{t[:30]}" for p, t, _ in FORGEABLE])
def test_forgeable_templates_match_with_a_plain_user(program: str, template: str, kind: str) -> None:
    """Each template above is a line its entry reports, so the forgery test tests something."""
    event = TABLE.match(message(program, template.format(user="alice")))
    assert event is not None and (event.kind, event.ip) == (kind, "192.0.2.7")


def test_perdition_ipv6_port_is_split_at_the_last_colon() -> None:
    """In Perdition's ip:port, '::1:39841' is address ::1 with port 39841, not the address ::1:39841."""
    text = (
        'Auth: ::1:39841->::1:41303 client-secure=plaintext authorisation_id=NONE authentication_id="alice" '
        'server="127.0.0.1:44011" protocol=POP3 server-secure=plaintext status="ok"'
    )
    event = TABLE.match(message("perdition.pop3", text))
    assert event is not None and event.ip == "::1"


def test_cyrus_anonymous_login_never_authorises() -> None:
    """A Cyrus anonymous login (anyone can do it) gives no login."""
    text = "login: client.example [192.0.2.7] anonymous plaintext User logged in"
    event = TABLE.match(message("cyrus/imap", text))
    assert event is None or event.kind != "login"


def test_smtp_auth_through_vchkpw_never_authorises() -> None:
    """vchkpw's SMTP AUTH success lines are not mailbox logins."""
    for service in ("smtp", "smtps", "submission"):
        text = f"vchkpw-{service}: (PLAIN) login success alice@example.com:192.0.2.7"
        assert TABLE.match(message("vpopmail", text)) is None


def test_unknown_program_costs_no_regex() -> None:
    """A program no entry names routes to nothing: one dict lookup, no regex."""
    table = load_table()
    assert table._rules_for("postfix/smtpd") == ()
    assert table._rules_for("sshd") == ()


def _ipaddress_normal(text: str) -> str | None:
    """What normalise_ip gives for bare text, by ipaddress alone (no fast path)."""
    import ipaddress

    if not re.fullmatch(r"[0-9A-Fa-f:.]{2,45}", text):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@given(st.one_of(
    st.lists(st.integers(0, 300).map(str) | st.sampled_from(["00", "01", "007", "", "1a", "\u0661"]),
             min_size=3, max_size=5).map(".".join),
    st.text(alphabet="0123456789.:af\n", max_size=20),
))
def test_normalise_ip_fast_path_agrees_with_ipaddress(text: str) -> None:
    """The canonical-IPv4 shortcut gives exactly what ipaddress gives, for addresses and near misses."""
    assert normalise_ip(text) == _ipaddress_normal(text)


def test_ignores_only_lines_no_entry_could_report() -> None:
    """table.ignores(frame) is True only when classify(parse(frame)) is None: for every sample, as any program."""
    from pbsyslog.syslog import parse

    table = load_table("all")
    programs = {sample.program for p in table.patterns for sample in p.samples}
    programs |= {"postfix/smtpd", "/usr/sbin/ipop3d", "amavis", "sshd"}
    skipped = 0
    for pattern in table.patterns:
        for sample in pattern.samples:
            for program in programs:
                frame = f"<22>Jan 15 00:00:00 mx1 {program}[42]: {sample.message}".encode()
                handled = any(p.handles(program) for p in table.patterns)
                if table.ignores(frame):
                    skipped += 1
                    assert table.classify(parse(frame)) is None, frame
                else:
                    assert handled, frame
                if handled and table.classify(parse(frame)) is not None:
                    assert not table.ignores(frame), frame
    assert skipped > 0


_GATED = st.sampled_from([
    "pop3-login: Login: user=<", "imap-login: Disconnected", "imap(", "Login: ", "LOGIN, user=", "pop3(", "",
])
_MSG_BYTES = st.lists(
    st.sampled_from([b"\xff", b"\xc3", b"\xe2\x80", b"\r", b"\n", b"\x00", b" ", b"(", b"<", b"a", b"\xc3\xa9"]),
    max_size=4,
).map(b"".join)


@given(
    st.sampled_from(["dovecot", "imapd", "pop3d", "perdition", "postfix/smtpd", "qpopper", "/usr/sbin/ipop3d"]),
    st.sampled_from(["", "[42]"]), _GATED, _MSG_BYTES, st.integers(0, 30), _MSG_BYTES, st.sampled_from(["all", "dovecot"]),
)
def test_ignores_never_drops_what_classify_reports(
    program: str, pid: str, start: str, noise: bytes, cut: int, tail: bytes, which: str
) -> None:
    """Gate prefixes cut short, with invalid UTF-8 and line ends spliced in: ignores() is True only for no event."""
    from pbsyslog.syslog import parse

    table = load_table(which)
    body = start.encode()
    frame = f"<22>Jan 15 00:00:00 mx1 {program}{pid}: ".encode() + body[:cut] + noise + body[cut:] + tail
    if table.ignores(frame):
        assert table.classify(parse(frame)) is None, frame
