"""The ``pbsyslog`` command: ``check``, ``dumpconfig``, ``version``, and ``list/add/del/flush/status``.

What it does:

* ``check [--json] [--patterns NAMES] [--config FILE] FILE...`` runs plain
  syslog files (or ``-``, stdin; ``*.gz`` is read through gzip) through the
  very code the service uses, ``pbsyslog.syslog.parse`` then
  ``PatternTable.match``, and prints every line a pattern matched: as
  ``LINE<TAB>PATTERN<TAB>EVENT<TAB>IP<TAB>TEXT`` (``FILE:LINE`` with several
  files), or with ``--json`` one object per line,
  ``{"line", "pattern", "group", "event", "ip"}`` plus ``"file"`` with
  several files.  A summary (lines, matches per event, unparsable lines,
  lines/second) goes to stderr.  This is the administrator's pattern tester.
* ``dumpconfig [--config FILE] [--dbfile PATH]`` prints the effective
  configuration as TOML that ``Config.from_mapping`` accepts again.
* ``version`` prints the package version.
* ``list``, ``add IP [--grace S]``, ``del IP``, ``flush``, ``status``: see
  ``pbsyslog/admin.py`` (control socket while the service runs, the state
  files under the service's lock while it is stopped).

File lines are handed to ``parse`` as they are, without a synthetic PRI:
``parse`` reads PRI-less RFC 3164 lines (classic ``Mmm dd hh:mm:ss`` and
rsyslog's RFC 3339 stamps) with the same header rule as wire frames, and a
``<22>`` in front would only change facility and severity, which matching
never looks at.  Left as they are, lines of a file written with a PRI
template still parse, and a line that starts with a broken ``<PRI>`` is
counted as unparsable, as the service would count that frame.  ``now`` is
not passed: the service does not pass it either, and timestamps play no
part in matching.

What it must not do: match differently from the service (no pre-filtering
of lines, no regexes of its own), write any map or state file, or need
root: ``check`` and ``dumpconfig`` only read.

How it fails: exit status 2, with one message on stderr naming the
problem, for a usage error, a config file that cannot be read or is
invalid, an unknown pattern name, or an input file that cannot be read; 0
otherwise.  Whether lines matched does not change the status.  When no
``--config`` is given, ``DEFAULT_CONFIG`` is read if it exists and the
built-in defaults are used if it does not.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import math
import os
import re
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import IO, Any, TextIO, cast

import attrs

from pbsyslog import __version__
from pbsyslog.config import Config, ConfigError, load
from pbsyslog.patterns import KINDS, PatternError, PatternTable, load_table
from pbsyslog.syslog import MalformedMessage, parse

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
        _add_config_option(sub)
        sub.add_argument("--dbfile", metavar="PATH", help="map path without .db (overrides the config)")
        sub.set_defaults(run=_admin)
    return parser


def _replay(args: argparse.Namespace) -> int:
    """``pbsyslog replay``: the tracker's state after feeding the files at their own times."""
    from pbsyslog.pipeline import Pipeline
    from pbsyslog.policy import never_list
    from pbsyslog.syslog import MalformedMessage, parse

    config = _config(args.config)
    table = _table(config, args.patterns)
    pipeline = Pipeline.from_config(config, table, never_list(config)[0])
    now = None
    with ExitStack() as stack:
        inputs = [(name, _open(name, stack)) for name in args.files]
        for name, stream in inputs:
            # Classic stamps carry no year: take it from the file's own date.
            reference = datetime.datetime.fromtimestamp(
                os.fstat(stream.fileno()).st_mtime if name != "-" else time.time(), datetime.UTC)
            for raw in stream:
                line = raw.rstrip(b"\r\n")
                try:
                    stamp = parse(line, now=reference).timestamp
                except MalformedMessage:
                    stamp = None
                if stamp is not None:
                    if stamp.tzinfo is None:
                        stamp = stamp.replace(tzinfo=datetime.UTC)
                    now = max(now or 0.0, stamp.timestamp())
                if now is not None:
                    pipeline.feed(line, now)
                    pipeline.tracker.expire(now)
    at = now if now is not None else time.time()
    entries = sorted(pipeline.tracker.entries().items())
    if args.write_map:
        if os.path.abspath(args.write_map) == os.path.abspath(config.dbfile):
            raise CommandError("--write-map names the service's own map; replay never writes it")
        from pbsyslog.outputs.berkeley import open_output

        writer = open_output(config.map_kind, args.write_map, config.map_value)
        try:
            writer.replace_all(ip for ip, _ in entries)
        finally:
            writer.close()
    result = [{"ip": ip, "pattern": pattern, "seconds_left": round(deadline - at, 1)}
              for ip, (deadline, pattern) in entries]
    if args.json:
        print(json.dumps({"at": at, "authorised": result}, indent=2))
    else:
        for e in result:
            print(f"{e['ip']}\t{e['pattern'] or '-'}\t{e['seconds_left']:.0f}")
    c = pipeline.counters
    print(f"pbsyslog replay: {c.frames} lines, {c.logins} logins, {c.refused} ignored, "
          f"{len(result)} authorised at the end", file=sys.stderr)
    return EXIT_OK


def _admin(args: argparse.Namespace) -> int:
    """list / add / del / flush / status."""
    from pbsyslog.admin import AdminError, NotRunning, request

    config = _config(args.config)
    if args.dbfile:
        try:
            config = config.override(dbfile=args.dbfile)
        except ConfigError as e:
            raise CommandError(str(e)) from None
    message: dict[str, Any] = {"cmd": args.command}
    if args.command in ("add", "del"):
        message["ip"] = args.ip
    if args.command == "add" and args.grace is not None:
        if args.grace <= 0:
            raise CommandError("--grace must be positive")
        message["grace"] = args.grace
    try:
        reply = request(config, message)
    except NotRunning as e:
        print(f"pbsyslog status: {e}", file=sys.stderr)
        return 3
    except AdminError as e:
        raise CommandError(str(e)) from None
    if getattr(args, "json", False):
        reply.pop("ok", None)
        print(json.dumps(reply, indent=2))
    elif args.command == "list":
        print("IP\tPATTERN\tSECONDS_LEFT\tOPEN_SESSIONS")
        for entry in reply["entries"]:
            sessions = entry.get("open_sessions", "-")
            print(f"{entry['ip']}\t{entry['pattern'] or '-'}\t{entry['seconds_left']:.0f}\t{sessions}")
    elif args.command == "status":
        for key, value in reply.items():
            if key != "ok":
                print(f"{key}: {json.dumps(value)}")
    elif args.command == "add":
        print(f"added {reply['ip']}")
    elif args.command == "del":
        print("removed" if reply["removed"] else "not authorised")
    elif args.command == "flush":
        print(f"removed {reply['removed']}")
    return 0


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    """Add the --config option every subcommand that reads the config shares."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML config file (default: {DEFAULT_CONFIG} if it exists, else built-in defaults)",
    )


def _config(path: str | None) -> Config:
    """The config from ``path``, or from DEFAULT_CONFIG when it exists, or the defaults."""
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG):
            return Config()
        path = DEFAULT_CONFIG
    try:
        return load(path)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def _table(config: Config, names: str | None) -> PatternTable:
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


# --- check ----------------------------------------------------------------


@attrs.define
class Tally:
    """What ``check`` has seen, over all files."""

    lines: int = 0
    unparsable: int = 0
    events: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(KINDS, 0))

    def summary(self, seconds: float) -> str:
        """One line for stderr."""
        matched = sum(self.events.values())
        kinds = ", ".join(f"{kind} {count}" for kind, count in self.events.items())
        rate = self.lines / seconds if seconds > 0 else math.inf
        return (
            f"pbsyslog check: {self.lines} lines, {matched} matched ({kinds}), "
            f"{self.unparsable} unparsable; {seconds:.2f} s, {rate:,.0f} lines/s"
        )


def _check(args: argparse.Namespace) -> int:
    """``pbsyslog check``: print the matched lines of every file, then a summary."""
    table = _table(_config(args.config), args.patterns)
    group_of = {p.name: p.group for p in table.patterns}
    out = sys.stdout
    tally = Tally()
    started = time.perf_counter()
    with ExitStack() as stack:
        # Open every file first, so that a bad name is reported before any output.
        inputs = [(name, _open(name, stack)) for name in args.files]
        label = len(inputs) > 1
        for name, stream in inputs:
            try:
                _check_stream(stream, table, tally, out, args.json, group_of, name if label else None)
            except BrokenPipeError:
                raise  # our stdout, not the input: main() handles it
            except OSError as e:  # a read error part-way through an input
                raise CommandError(f"{name}: {e.strerror or e}") from None
    out.flush()
    print(tally.summary(time.perf_counter() - started), file=sys.stderr)
    return EXIT_OK


def _open(name: str, stack: ExitStack) -> IO[bytes]:
    """Open one input file in binary (``-``: stdin, ``*.gz``: gunzipped)."""
    if name == "-":
        return sys.stdin.buffer
    try:
        if name.endswith(".gz"):
            gz = stack.enter_context(gzip.GzipFile(name, "rb"))
            gz.peek(1)  # a non-gzip file fails here, not mid-output
            return cast(IO[bytes], gz)
        return stack.enter_context(open(name, "rb"))
    except OSError as e:  # gzip.BadGzipFile is an OSError too
        raise CommandError(f"cannot read {name}: {e.strerror or e}") from None


def _check_stream(
    stream: Iterable[bytes],
    table: PatternTable,
    tally: Tally,
    out: TextIO,
    as_json: bool,
    group_of: Mapping[str, str],
    label: str | None,
) -> None:
    """Match every line of one stream and write the matches to ``out``."""
    # The hot loop: per line, exactly parse() + match() as in the service,
    # and nothing else for lines that do not match (all names are locals).
    # A line whose header names a program no entry handles is dropped by
    # ``ignores`` first (one regex on the undecoded header, no objects): the
    # same answer match(parse(line)) gives, for a third of the cost.
    match = table.match
    ignores = table.ignores
    write = out.write
    events = tally.events
    number = 0
    unparsable = 0
    for number, raw in enumerate(stream, 1):
        if ignores(raw):
            continue
        try:
            message = parse(raw)
        except MalformedMessage:
            unparsable += 1
            continue
        event = match(message)
        if event is None:
            continue
        events[event.kind] += 1
        if as_json:
            record: dict[str, Any] = {}
            if label is not None:
                record["file"] = label
            record["line"] = number
            record["pattern"] = event.pattern
            record["group"] = group_of[event.pattern]
            record["event"] = event.kind
            record["ip"] = event.ip
            write(json.dumps(record) + "\n")
        else:
            text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            where = f"{label}:{number}" if label is not None else str(number)
            write(f"{where}\t{event.pattern}\t{event.kind}\t{event.ip}\t{text}\n")
    tally.lines += number
    tally.unparsable += unparsable


# --- dumpconfig -----------------------------------------------------------


def _dumpconfig(args: argparse.Namespace) -> int:
    """``pbsyslog dumpconfig``: print the effective config as TOML."""
    config = _config(args.config)
    try:
        config = config.override(dbfile=args.dbfile)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    _table(config, None)  # a config whose patterns do not load is not effective
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

