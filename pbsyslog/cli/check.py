"""``pbsyslog check`` and ``pbsyslog replay``: syslog files run through the service's own code.

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
* ``replay [--json] [--patterns NAMES] [--write-map PATH] [--config FILE]
  FILE...`` feeds the files through the service's ``Pipeline`` (patterns,
  sessions, never-authorise rules, tracker), each line at its own
  timestamp, and prints which IPs would be authorised at the end, with
  their pattern and seconds left; a summary goes to stderr.

File lines are handed to ``parse`` as they are, without a synthetic PRI:
``parse`` reads PRI-less RFC 3164 lines (classic ``Mmm dd hh:mm:ss`` and
rsyslog's RFC 3339 stamps) with the same header rule as wire frames, and a
``<22>`` in front would only change facility and severity, which matching
never looks at.  Left as they are, lines of a file written with a PRI
template still parse, and a line that starts with a broken ``<PRI>`` is
counted as unparsable, as the service would count that frame.  ``check``
does not pass ``now``: the service does not pass it either, and timestamps
play no part in matching.  ``replay`` passes the file's modification time
as ``now``, so that classic stamps, which carry no year, take the file's.

What it must not do: match differently from the service (no pre-filtering
of lines beyond the table's own ``ignores``, no regexes of its own), write
the service's map or state files (``replay --write-map`` writes only the
map it names, and refuses the configured ``dbfile``), need root, or import
Twisted: ``check`` and ``replay`` load no Twisted module at all, and the
pipeline and the Berkeley DB writer are imported only by the command that
uses them.  The one exception is ``replay --write-map``: the writer's
package, ``pbsyslog.outputs``, imports ``twisted.logger`` (no reactor).

How it fails: ``CommandError`` (exit status 2, one message on stderr) for a
config that cannot be read or is invalid, an unknown pattern name, an input
file that cannot be opened or read, or ``--write-map`` naming the service's
own map.  Whether lines matched does not change the status.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from typing import IO, Any, TextIO, cast

import attrs

from pbsyslog.cli import EXIT_OK, CommandError, pattern_table, read_config
from pbsyslog.patterns import KINDS, PatternTable
from pbsyslog.syslog import MalformedMessage, parse

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


def check(args: argparse.Namespace) -> int:
    """``pbsyslog check``: print the matched lines of every file, then a summary."""
    table = pattern_table(read_config(args.config), args.patterns)
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


# --- replay ---------------------------------------------------------------


def replay(args: argparse.Namespace) -> int:
    """``pbsyslog replay``: the tracker's state after feeding the files at their own times."""
    from pbsyslog.pipeline import Pipeline
    from pbsyslog.policy import never_list

    config = read_config(args.config)
    table = pattern_table(config, args.patterns)
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
