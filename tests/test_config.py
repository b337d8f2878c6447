"""Config: defaults, the sample file, and errors that name the bad key."""

from pathlib import Path

import pytest

from pbsyslog.config import Config, ConfigError, Listener, load, parse_hostport

ROOT = Path(__file__).resolve().parent.parent


def test_sample_config_loads_with_documented_defaults() -> None:
    """conf/pbsyslog.toml loads and equals the built-in defaults it documents."""
    config = load(str(ROOT / "conf" / "pbsyslog.toml"))
    assert config == Config()
    assert config.listen == (Listener("udp", "127.0.0.1", 5514), Listener("tcp", "127.0.0.1", 5514))
    assert config.dbfile == "var/pop-before-smtp"
    assert config.grace == 1800


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"grase": 10}, "'grase'"),
        ({"grace": "10"}, "grace"),
        ({"grace": -1}, "grace"),
        ({"grace": 5, "expire_interval": 10}, "expire_interval"),
        ({"dbfile": "x.db"}, "dbfile"),
        ({"commit_interval": 2}, "commit_interval"),
        ({"commit_interval": -0.1}, "commit_interval"),
        ({"map_value": ""}, "map_value"),
        ({"patterns": []}, "patterns"),
        ({"patterns": "dovecot"}, "patterns"),
        ({"authorise_loopback": "yes"}, "authorise_loopback"),
        ({"listen": [{"protocol": "sctp", "host": "127.0.0.1", "port": 1}]}, "listen[0].protocol"),
        ({"listen": [{"protocol": "udp", "host": "localhost", "port": 1}]}, "listen[0].host"),
        ({"listen": [{"protocol": "udp", "host": "::1", "port": 70000}]}, "listen[0].port"),
        ({"listen": [{"protocol": "udp", "host": "::1", "port": 1, "bind": []}]}, "'bind'"),
        ({"listen": [{"protocol": "udp", "host": "::1", "port": 1, "allow": []}]}, "listen[0].allow"),
        ({"listen": [{"protocol": "udp", "host": "::1", "port": 1, "allow": ["nowhere"]}]}, "'nowhere'"),
        ({"listen": [{"protocol": "udp", "host": "0.0.0.0", "port": 1, "allow": ["192.0.2.0/28"]}]}, "insecure_remote"),
        ({"listen": [{"protocol": "tcp", "host": "::", "port": 1, "allow": ["::/0"]}]}, "whole world"),
        ({"listen": [{"protocol": "tls", "host": "::", "port": 1, "allow": ["0.0.0.0/0"], "tls_cert": "c", "tls_key": "k", "tls_ca": "a"}]}, "whole world"),
        ({"listen": [{"protocol": "tls", "host": "::1", "port": 1}]}, "listen[0].tls_cert"),
        ({"listen": [{"protocol": "udp", "host": "::1", "port": 1, "tls_ca": "x"}]}, "listen[0].tls_ca"),
        ({"listen": [{"protocol": "udp", "host": "::1", "port": 1, "hostnames": "mx"}]}, "listen[0].hostnames"),
        ({"listen": []}, "listen"),
    ],
)
def test_bad_settings_name_the_key(raw: dict, needle: str) -> None:
    """Each bad setting raises ConfigError whose message names the setting."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(raw)
    assert needle in str(info.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    """A missing file and a non-TOML file both give a ConfigError naming the path."""
    with pytest.raises(ConfigError, match="cannot read config"):
        load(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("grace = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(str(bad))


def test_ipv6_listener_and_hostport() -> None:
    """IPv6 literals are accepted in the file and as [ADDR]:PORT on the command line."""
    config = Config.from_mapping({"listen": [{"protocol": "tcp", "host": "0:0::1", "port": 6514}]})
    assert config.listen == (Listener("tcp", "::1", 6514),)
    assert parse_hostport("[::1]:5514", "udp") == Listener("udp", "::1", 5514)
    assert parse_hostport("127.0.0.2:99", "tcp") == Listener("tcp", "127.0.0.2", 99)
    for bad in ("::1:5514", "127.0.0.1", "127.0.0.1:x", "host.example:1"):
        with pytest.raises(ConfigError):
            parse_hostport(bad, "udp")


def test_overrides_are_checked() -> None:
    """Command-line overrides replace values and go through the same checks."""
    config = Config().override(grace="60", dbfile="/tmp/m", listen=[Listener("udp", "::1", 1)])
    assert (config.grace, config.dbfile, config.listen) == (60.0, "/tmp/m", (Listener("udp", "::1", 1),))
    with pytest.raises(ConfigError, match="--grace"):
        Config().override(grace="soon")
    with pytest.raises(ConfigError, match="expire_interval"):
        Config().override(grace="5")


def test_remote_senders_need_explicit_insecure_remote() -> None:
    """A plain listener that allows non-loopback senders starts only with insecure_remote = true."""
    raw = {"listen": [{"protocol": "udp", "host": "0.0.0.0", "port": 514, "allow": ["192.0.2.0/28", "::ffff:198.51.100.7"]}]}
    with pytest.raises(ConfigError, match="forged login line"):
        Config.from_mapping(raw)
    config = Config.from_mapping({**raw, "insecure_remote": True})
    assert config.listen[0].allow == ("192.0.2.0/28", "198.51.100.7/32")


def test_default_allow_is_loopback_and_any_bind_with_it_is_fine() -> None:
    """Listeners default to loopback senders only; binding the wildcard with that list needs nothing more."""
    config = Config.from_mapping({"listen": [{"protocol": "tcp", "host": "::", "port": 1}]})
    assert config.listen[0].allow == ("127.0.0.0/8", "::1/128")


def test_allow_override_applies_to_every_listener() -> None:
    """--allow replaces the allow-list of every listener, and is checked like the file's."""
    config = Config().override(allow=["127.0.0.2"])
    assert {x.allow for x in config.listen} == {("127.0.0.2/32",)}
    with pytest.raises(ConfigError, match="insecure_remote"):
        Config().override(allow=["192.0.2.1"])



def test_unknown_key_lists_every_known_key_sorted() -> None:
    """An unknown key is refused (the first one, sorted) with every key Config reads, sorted, in the message."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"zzz": 1, "grase": 10, "grace": "bad"})
    assert str(info.value) == (
        "unknown setting 'grase' (known: authorise_link_local, authorise_loopback, commit_interval, dbfile, "
        "expire_interval, first_frame_timeout, grace, idle_timeout, insecure_remote, ipv6_file_maps, listen, logout_tracking, map_kind, map_value, "
        "max_connections, max_connections_per_peer, max_frame, max_pending, max_session, max_tracked, metrics, "
        "mynetworks, never, origin, output, pattern, patterns, pending_age, policy, require_origin, socketmap, udp_rate, "
        "udp_receive_buffer)"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"map_value": "", "map_kind": "nope"},
         "map_kind: expected one of postfix-hash, postfix-btree, sendmail-access, sendmail-popauth, exim-dbm, got 'nope'"),
        ({"map_value": "", "output": {}}, "output: expected [[output]] tables"),
        ({"max_connections": -1, "listen": {}}, "listen: expected [[listen]] tables"),
        ({"max_tracked": 0, "metrics": 3}, 'metrics: expected "HOST:PORT" (or "" for none), got 3'),
        ({"pending_age": -5, "socketmap": {}}, "socketmap: expected [[socketmap]] tables"),
        ({"grace": "x", "pending_age": -5}, "grace: expected a number of seconds, got 'x'"),
    ],
)
def test_several_bad_keys_report_the_same_one_first(raw: dict, message: str) -> None:
    """With several bad keys the first one in Config's declaration order is reported (the order the checks always had)."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        ({"mynetworks": "postconf"}, "mynetworks", "postconf"),
        ({"mynetworks": "none"}, "mynetworks", "none"),
        ({"mynetworks": []}, "mynetworks", ()),
        ({"mynetworks": ["192.0.2.0/24", "::1"]}, "mynetworks", ("192.0.2.0/24", "::1/128")),
        ({"never": []}, "never", ()),
        ({"never": ["10.0.0.0/8"]}, "never", ("10.0.0.0/8",)),
        ({"metrics": ""}, "metrics", None),
        ({"metrics": "[::1]:9103"}, "metrics", ("::1", 9103)),
        ({"output": []}, "outputs", ()),
        ({"pattern": []}, "extra_patterns", ()),
    ],
)
def test_settings_forms(raw: dict, field: str, value: object) -> None:
    """Each accepted form of a setting gives its field value (keys named differently from their field included)."""
    assert getattr(Config.from_mapping(raw), field) == value


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mynetworks": "x"}, 'mynetworks: expected "postconf", "none" or a list of networks'),
        ({"mynetworks": ["nowhere"]}, "mynetworks: 'nowhere' is not an address or CIDR network"),
        ({"never": "x"}, 'never: expected a non-empty list of networks such as "192.0.2.0/28"'),
        ({"map_value": "a\nb"}, "map_value: must not contain NUL or line breaks"),
        ({"output": [{"kind": "exim-dbm", "path": "/x", "value": ""}]}, "map_value: expected a non-empty string, got ''"),
        ({"patterns": []}, "patterns: the list is empty; nothing would ever authorise"),
        ({"pattern": [1]}, "pattern: expected [[pattern]] tables"),
        ({"max_frame": 10}, "max_frame: must be between 480 and 16777216, got 10"),
        ({"udp_rate": -1}, "udp_rate: expected a rate per second (0 = unlimited), got -1"),
        ({"commit_interval": -0.1}, "commit_interval: must be a positive number of seconds, got -0.1"),
    ],
)
def test_bad_setting_messages(raw: dict, message: str) -> None:
    """The converters' messages, word for word."""
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"mynetworks": []},
        {"mynetworks": "none", "never": ["10.0.0.0/8"], "metrics": "[::1]:9103", "map_kind": "exim-dbm"},
        {"output": [{"kind": "pgsql", "dsn": "dbname=x", "table": "a.b"}, {"kind": "postfix-btree", "path": "/m", "value": "V"}]},
        {"socketmap": [{"port": 1, "names": ["a"]}, {"path": "/run/x"}], "pattern": [{"name": "x"}]},
        {"listen": [{"protocol": "tls", "host": "::", "port": 6514, "allow": ["192.0.2.0/28"], "tls_cert": "c", "tls_key": "k", "tls_ca": "a", "tls_peers": ["mx"]}]},
    ],
)
def test_to_toml_mapping_round_trips(raw: dict) -> None:
    """to_toml_mapping gives plain values that from_mapping turns back into the same Config."""
    config = Config.from_mapping(raw)
    dumped = config.to_toml_mapping()
    assert Config.from_mapping(dumped) == config
    assert "listen" in dumped and "metrics" not in Config().to_toml_mapping()
