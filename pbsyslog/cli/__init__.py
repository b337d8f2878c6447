"""The ``pbsyslog`` command: its arguments, ``main()``, the helpers subcommands share, ``dumpconfig``, ``version``.

What it does: parses the command line (``check``, ``replay``,
``dumpconfig``, ``version``, ``list``, ``add``, ``del``, ``flush``,
``status``) and runs one subcommand.  Here are the helpers every
subcommand shares (``read_config``: the ``--config`` file, or
``DEFAULT_CONFIG`` when it exists, or the built-in defaults;
``pattern_table``: the table the service would build, ``--patterns``
replacing the config's choice; ``CommandError`` and the exit statuses),
and the two small subcommands:

* ``dumpconfig [--config FILE] [--dbfile PATH]`` prints the effective
  configuration as TOML that ``Config.from_mapping`` accepts again.
* ``version`` prints the package version.

The others live beside it and are imported only when run: ``check`` and
``replay`` in ``pbsyslog.cli.check`` (syslog files through the service's
parser, pattern table and pipeline), ``list``, ``add IP [--grace S]``,
``del IP``, ``flush`` and ``status`` in ``pbsyslog.cli.admin`` (through
the control socket while the service runs, on the state files under the
service's lock while it is stopped).

What it must not do: import Twisted, the Berkeley DB bindings or a
subcommand's module before that subcommand runs (``check``, and ``replay``
without ``--write-map``, load no Twisted module at all), write any map or
state file itself, or need root: ``check``, ``replay`` and ``dumpconfig``
only read (``replay --write-map`` writes only the map it names).

How it fails: exit status 2, with one message on stderr naming the
problem (``pbsyslog COMMAND: ...``), for a usage error or a
``CommandError`` a subcommand raises: a config file that cannot be read or
is invalid, an unknown pattern name, an input file that cannot be read, an
admin request the service or the files refuse.  ``status`` with the
service stopped is exit status 3; a closed stdout (``| head``) is 1 and
Ctrl-C 130; 0 otherwise.  Whether lines matched does not change the
status.  When no ``--config`` is given, ``DEFAULT_CONFIG`` is read if it
exists and the built-in defaults are used if it does not.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from pbsyslog import __version__
from pbsyslog.config import Config, ConfigError, load
from pbsyslog.patterns import PatternError, PatternTable, load_table

DEFAULT_CONFIG = "/etc/pbsyslog/pbsyslog.toml"

EXIT_OK = 0
EXIT_USAGE = 2


class CommandError(Exception):
    """A usage, config or input problem: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 for --help
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    try:
        return int(args.run(args))
    except CommandError as e:
        print(f"pbsyslog {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # `pbsyslog check ... | head`: stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="pbsyslog",
        description="POP-before-SMTP from syslog: administrator's commands.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="show which lines of syslog files the pattern table matches",
        description="Run syslog files through the service's parser and pattern table "
        "and print every matched line; a summary goes to stderr.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="syslog file ('-': stdin, *.gz: gzip)")
    check.add_argument("--json", action="store_true", help="one JSON object per matched line")
    check.add_argument(
        "--patterns",
        metavar="NAMES",
        help="comma-separated pattern groups or entries, or 'all' (overrides the config's patterns)",
    )
    _add_config_option(check)
    check.set_defaults(run=_check)

    dump = commands.add_parser(
        "dumpconfig",
        help="print the effective configuration as TOML",
        description="Print the effective configuration (file, defaults and overrides) as TOML.",
    )
    _add_config_option(dump)
    dump.add_argument("--dbfile", metavar="PATH", help="map path without .db (overrides the config)")
    dump.set_defaults(run=_dumpconfig)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(run=_version)

    replay = commands.add_parser(
        "replay",
        help="feed a mail log through the service's pipeline with the file's own timestamps",
        description="Feed syslog files through the same pipeline as the service (patterns, "
        "sessions, never-authorise rules, tracker), each line at its own timestamp, and print "
        "which IPs would be authorised at the end (the old --reprocess).  Writes no map "
        "unless --write-map is given.",
    )
    replay.add_argument("files", nargs="+", metavar="FILE", help="syslog file ('-': stdin, *.gz: gzip)")
    replay.add_argument("--patterns", metavar="NAMES", help="as for check")
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.add_argument("--write-map", metavar="PATH",
                        help="also write the result to this map (without .db); never the config's dbfile")
    _add_config_option(replay)
    replay.set_defaults(run=_replay)

    for name, text in (
        ("list", "list authorised IPs with their pattern and seconds left"),
        ("add", "authorise an IP by hand"),
        ("del", "take an IP's authorisation away now"),
        ("flush", "take every authorisation away now"),
        ("status", "show what the running service is doing"),
    ):
        sub = commands.add_parser(name, help=text, description=text + " (through the running "
                                  "service's control socket, or on the files when it is stopped)")
        if name in ("add", "del"):
            sub.add_argument("ip", metavar="IP")
        if name == "add":
            sub.add_argument("--grace", type=float, metavar="SECONDS",
                             help="seconds to authorise for (default: the configured grace)")
        if name in ("list", "status"):
            sub.add_argument("--json", action="store_true", help="print JSON")
        if name == "list":
            sub.add_argument("--sort", choices=("address", "deadline"), default="address",
                             help="order: by address (IPv4 first, numerically; the default) or by seconds left")
        _add_config_option(sub)
        sub.add_argument("--dbfile", metavar="PATH", help="map path without .db (overrides the config)")
        sub.set_defaults(run=_admin)
    return parser


# The subcommands that live in their own modules, imported only when run:
# ``pbsyslog check`` must not load the admin client, nor ``list`` the pipeline.


def _check(args: argparse.Namespace) -> int:
    """``pbsyslog check``: see ``pbsyslog.cli.check``."""
    from pbsyslog.cli.check import check

    return check(args)


def _replay(args: argparse.Namespace) -> int:
    """``pbsyslog replay``: see ``pbsyslog.cli.check``."""
    from pbsyslog.cli.check import replay

    return replay(args)


def _admin(args: argparse.Namespace) -> int:
    """``pbsyslog list/add/del/flush/status``: see ``pbsyslog.cli.admin``."""
    from pbsyslog.cli.admin import run

    return run(args)


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    """Add the --config option every subcommand that reads the config shares."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML config file (default: {DEFAULT_CONFIG} if it exists, else built-in defaults)",
    )


def read_config(path: str | None) -> Config:
    """The config from ``path``, or from DEFAULT_CONFIG when it exists, or the defaults."""
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG):
            return Config()
        path = DEFAULT_CONFIG
    try:
        return load(path)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def pattern_table(config: Config, names: str | None) -> PatternTable:
    """The pattern table the service would build, with --patterns replacing the config's choice."""
    enabled: Sequence[str] | str = config.patterns
    if names is not None:
        chosen = [n.strip() for n in names.split(",") if n.strip()]
        if not chosen:
            raise CommandError("--patterns: expected comma-separated pattern names, got nothing")
        enabled = "all" if chosen == ["all"] else chosen
    try:
        return load_table(enabled, extra=config.extra_patterns)
    except PatternError as e:
        raise CommandError(str(e)) from None


# --- dumpconfig -----------------------------------------------------------


def _dumpconfig(args: argparse.Namespace) -> int:
    """``pbsyslog dumpconfig``: print the effective config as TOML."""
    config = read_config(args.config)
    try:
        config = config.override(dbfile=args.dbfile)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    pattern_table(config, None)  # a config whose patterns do not load is not effective
    text = dump_config(config)
    sys.stdout.write(text)
    return EXIT_OK


def dump_config(config: Config) -> str:
    """``config`` as a TOML document that ``Config.from_mapping`` turns back into an equal Config.

    The keys and values are ``Config.to_toml_mapping()``'s, so every
    setting Config declares is dumped; the result is read back and
    compared, and a setting that does not survive the trip raises
    RuntimeError rather than printing a config that means something else.
    """
    text = toml_document(config.to_toml_mapping())
    if Config.from_mapping(tomllib.loads(text)) != config:
        raise RuntimeError("dumpconfig: the dumped TOML does not give the same config back")
    return text


def toml_document(table: Mapping[str, Any]) -> str:
    """Write a mapping of TOML-representable values as a TOML document."""
    lines: list[str] = []
    _toml_table([], table, lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table_array(value: Any) -> bool:
    """Say whether a value is written as ``[[array of tables]]``."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _toml_table(path: list[str], table: Mapping[str, Any], lines: list[str]) -> None:
    """Append one table's key/value lines, then its sub-tables and arrays of tables."""
    nested = []
    for key, value in table.items():
        if isinstance(value, Mapping) or _is_table_array(value):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        header = ".".join(_toml_key(k) for k in [*path, key])
        if isinstance(value, Mapping):
            lines += ["", f"[{header}]"]
            _toml_table([*path, key], value, lines)
        else:
            for item in value:
                lines += ["", f"[[{header}]]"]
                _toml_table([*path, key], item, lines)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
# Characters a TOML literal ('...') string cannot hold; tab is allowed.
_NOT_LITERAL = re.compile(r"['\x00-\x08\x0a-\x1f\x7f]")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_key(key: str) -> str:
    """A key, bare when it may be."""
    return key if _BARE_KEY.match(key) else _toml_basic(key)


def _toml_basic(text: str) -> str:
    """A TOML basic ("...") string."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    """One value, inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # 1800.0, 1e+20, inf, -inf: all TOML floats
    if isinstance(value, str):
        # Literal strings keep regexes readable: no doubled backslashes.
        return _toml_basic(value) if _NOT_LITERAL.search(value) else f"'{value}'"
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


# --- version --------------------------------------------------------------


def _version(args: argparse.Namespace) -> int:
    """``pbsyslog version``: print the package version."""
    print(f"pbsyslog {__version__}")
    return EXIT_OK

