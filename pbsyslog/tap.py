"""twistd glue: command-line options and ``makeService``.

Contract: options are validated in ``postOptions`` (config file, overrides,
pattern table), so a bad setting prints a clear usage error and twistd exits
non-zero before any port is bound.  The global reactor is imported only in
``makeService``.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage

from pbsyslog.config import Config, ConfigError, load, parse_hostport, parse_socketmap
from pbsyslog.inputs.tls import TLSSetupError, server_options
from pbsyslog.patterns import PatternError, load_origins, load_table


class Options(usage.Options):
    """``twistd pbsyslog`` options; each overrides the config file."""

    synopsis = (
        "[--config FILE] [--udp HOST:PORT]... [--tcp HOST:PORT]... [--allow CIDR]... "
        "[--socketmap HOST:PORT]... [--dbfile PATH] [--grace SECONDS]"
    )

    optParameters = [
        ["config", "c", None, "TOML config file (default: built-in defaults)"],
        ["dbfile", None, None, "map path without .db (Postfix: hash:PATH)"],
        ["grace", None, None, "seconds a client may relay after its last login"],
        ["metrics", None, None, "serve Prometheus metrics on HOST:PORT (/metrics)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["udp"] = []
        self["tcp"] = []
        self["allow"] = []
        self["socketmap"] = []
        self.config: Config | None = None

    def opt_udp(self, value: str) -> None:
        """Listen for syslog on UDP HOST:PORT ([V6]:PORT); repeatable, replaces the file's listeners."""
        self["udp"].append(value)

    def opt_socketmap(self, value: str) -> None:
        """Also answer Postfix socketmap lookups on HOST:PORT (loopback unless insecure_remote); repeatable."""
        self["socketmap"].append(value)

    def opt_allow(self, value: str) -> None:
        """Allow syslog from this sender network (CIDR); repeatable, replaces every listener's allow list."""
        self["allow"].append(value)

    def opt_tcp(self, value: str) -> None:
        """Listen for syslog on TCP HOST:PORT ([V6]:PORT); repeatable, replaces the file's listeners."""
        self["tcp"].append(value)

    def postOptions(self) -> None:
        try:
            self.config = self._build_config()
            load_table(self.config.patterns, extra=self.config.extra_patterns)
            load_origins(self.config.extra_origins)
            check_map_directory(self.config.dbfile)
            for listener in self.config.listen:
                if listener.tls_cert is not None:  # tls, or relp over TLS
                    server_options(listener.tls_cert, listener.tls_key, listener.tls_ca)
        except (ConfigError, PatternError, TLSSetupError) as e:
            raise usage.UsageError(str(e)) from None

    def reload(self) -> Config:
        """The config as the command line says now: the file read again, options applied again."""
        return self._build_config()

    def _build_config(self) -> Config:
        config = load(self["config"]) if self["config"] else Config()
        listeners = [parse_hostport(v, "udp") for v in self["udp"]]
        listeners += [parse_hostport(v, "tcp") for v in self["tcp"]]
        return config.override(
            grace=self["grace"], dbfile=self["dbfile"], listen=listeners, allow=self["allow"],
            socketmap=[parse_socketmap(v) for v in self["socketmap"]],
            metrics=self["metrics"],
        )


def check_map_directory(dbfile: str) -> None:
    """Refuse to start when the map's directory is missing or not writable (the map is created there)."""
    directory = os.path.dirname(os.path.abspath(dbfile))
    if not os.path.isdir(directory):
        raise ConfigError(f"dbfile: directory {directory} does not exist (create it; the map is made there)")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"dbfile: directory {directory} is not writable by this user")


def makeService(options: Options) -> Any:
    """Build the service on the global reactor."""
    from twisted.internet import reactor

    from pbsyslog.clock import SteadyClock
    from pbsyslog.wiring import build

    # Every timed call of the reactor, and every deadline of the service,
    # on a clock that a step of the system clock does not move (clock.py).
    reactor.seconds = SteadyClock().seconds  # type: ignore[method-assign]
    assert options.config is not None
    return build(options.config, reactor, reload_config=options.reload)
