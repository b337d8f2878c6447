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
