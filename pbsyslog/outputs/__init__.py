"""Outputs: every map pbsyslog keeps, written together as one.

Contract: the service's tracker is the single source of truth and every
output is a projection of it.  ``Outputs`` opens each configured map
(creating it; a file Berkeley DB cannot read is moved aside and replaced),
applies each batch to all of them, and rebuilds all of them from a set of
keys.  It knows nothing about logins or time beyond the timestamp used to
name a file moved aside.

How it fails: ``apply`` and ``replace_all`` raise the first error of any
output; the caller marks the maps for healing and calls ``reopen`` +
``replace_all`` later, which is idempotent for the outputs that did succeed.

Every output is a ``MapOutput``.  A self-healing one (the "pgsql" output,
``pbsyslog.outputs.pgsql``) is not a file: it is built once, with the
tracker's ``deadline_of`` / ``pattern_of`` lookups (its rows carry
deadlines, the files only keys), is written before the files so a failing
file cannot hold it back, never raises (it queues for its own worker
thread), and is kept as it is by ``reopen``.  ``refresh(ips)`` passes the
outputs deadlines that moved without changing the set of keys.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from twisted.logger import Logger

from pbsyslog.addresses import stands_for_others
from pbsyslog.config import PGSQL_KIND, OutputSpec
from pbsyslog.outputs.berkeley import DBError, open_output, output_filename

log = Logger(namespace="pbsyslog")


@runtime_checkable
class MapOutput(Protocol):
    """One map the service keeps: a projection of the tracker's authorised addresses."""

    # True: never raises, outlives ``Outputs.reopen`` (it heals itself) and is written first.
    self_healing: bool
    # True: its reader also takes a key as a parent network of other clients
    # (Postfix access maps); see ``Outputs``'s ipv6 argument.
    parent_match: bool

    def apply(self, add: Iterable[str] = ..., remove: Iterable[str] = ...) -> None:
        """Commit one batch of additions and removals."""

    def refresh(self, ips: Iterable[str]) -> None:
        """The deadlines of ``ips`` moved (an output that keeps only keys ignores it)."""

    def replace_all(self, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Hold exactly ``keys``; return (added, removed)."""

    def keys(self) -> set[str]:
        """The addresses held."""

    def close(self) -> None:
        """Write what is pending and close."""

    def abandon(self) -> None:
        """Close without writing (after a failed write); never raises."""


class Outputs:
    """The open writers of every output; the first is the primary map."""

    def __init__(
        self,
        specs: Sequence[OutputSpec],
        now: float,
        *,
        deadline_of: Callable[[str], float | None] | None = None,
        pattern_of: Callable[[str], str | None] | None = None,
        reactor: Any = None,
        pgsql_connect: Callable[[str], Any] | None = None,
        ipv6_parent_match: bool = False,
    ) -> None:
        self.specs = tuple(specs)
        # False (ipv6_file_maps = "exact-only"): an IPv6 key that its reader
        # would also take for other clients is never written to an output
        # that does parent-network lookups (see addresses.stands_for_others).
        self.ipv6_parent_match = ipv6_parent_match
        self.withheld = 0  # additions kept out of some output for that reason
        self.writers: list[MapOutput] = []
        # Per output (metrics): batches written, and batches that failed.
        self.names = [output_name(spec) for spec in self.specs]
        self.writes: dict[str, int] = dict.fromkeys(self.names, 0)
        self.errors: dict[str, int] = dict.fromkeys(self.names, 0)
        # Built once, here: a self-healing output outlives reopen().
        self._kept: dict[int, MapOutput] = {
            i: open_pgsql(spec, deadline_of, pattern_of, reactor, pgsql_connect)
            for i, spec in enumerate(self.specs) if spec.kind == PGSQL_KIND
        }
        self.reopen(now)

    def reopen(self, now: float) -> None:
        """(Re)open every file output from its file, dropping any handle still open."""
        self.close_quietly()
        self.writers = [self._kept[i] if i in self._kept else open_checked(spec, now)
                        for i, spec in enumerate(self.specs)]

    def _files(self) -> list[MapOutput]:
        return [w for w in self.writers if not w.self_healing]

    def _ordered(self) -> list[tuple[str, MapOutput]]:
        """(name, writer): the self-healing ones first (they never raise), then the files."""
        pairs = list(zip(self.names, self.writers, strict=True))
        return sorted(pairs, key=lambda pair: not pair[1].self_healing)  # stable: config order within each

    def _exact(self, writer: MapOutput, keys: list[str]) -> list[str]:
        """``keys`` less those ``writer``'s reader would also take for other clients (unless allowed)."""
        if self.ipv6_parent_match or not writer.parent_match:
            return keys
        return [key for key in keys if not stands_for_others(key)]

    def apply(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Write one batch to every output, counting writes and failures per output."""
        add, remove = list(add), list(remove)
        withheld = sorted({key for key in add if stands_for_others(key)}) if not self.ipv6_parent_match else []
        for ip in withheld:
            names = [n for n, w in zip(self.names, self.writers, strict=True) if w.parent_match]
            if names:
                self.withheld += 1
                log.warn("{ip} is authorised but not written to {names}: Postfix would also match that key "
                         "for other clients (parent networks; ipv6_file_maps = \"exact-only\")",
                         ip=ip, names=", ".join(names))
        for name, writer in self._ordered():
            try:
                writer.apply(add=self._exact(writer, add), remove=remove)
            except Exception:
                self.errors[name] += 1
                raise
            self.writes[name] += 1

    def refresh(self, ips: Iterable[str]) -> None:
        """Tell the outputs that keep deadlines (pgsql) that those of ``ips`` moved."""
        if self._kept:
            ips = list(ips)
            for kept in self._kept.values():
                kept.refresh(self._exact(kept, ips))

    def replace_all(self, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Make every output hold exactly ``keys``; return what the primary gained and lost."""
        wanted = list(set(keys))
        for kept in self._kept.values():
            kept.replace_all(self._exact(kept, wanted))
        files = self._files()
        changes = [writer.replace_all(self._exact(writer, wanted)) for writer in files]
        # The caller logs the primary's changes address by address; an
        # output that had drifted from it (an offline change, a file
        # restored by hand) is said here, once per output.
        names = {id(w): n for n, w in zip(self.names, self.writers, strict=True)}
        for writer, (added, removed) in zip(files[1:], changes[1:], strict=True):
            if added != changes[0][0] or removed != changes[0][1]:
                log.info("repaired {name}: {a} added, {r} removed to match the authorised set",
                         name=names[id(writer)], a=len(added), r=len(removed))
        return changes[0]

    def keys(self) -> set[str]:
        """The primary map's keys."""
        return self.writers[0].keys()

    def close(self) -> None:
        """Flush and close every output (a pgsql one: writes what is pending, briefly)."""
        for kept in self._kept.values():
            kept.close()
        for writer in self._files():
            writer.close()
        self.writers = []
        self._kept = {}

    def close_quietly(self) -> None:
        """Close every file output even if flushing fails (full disk, damaged file)."""
        for writer in self._files():
            try:
                writer.close()
            except Exception:
                writer.abandon()  # the flush failed; drop the handle all the same
        self.writers = []


def output_name(spec: OutputSpec) -> str:
    """How logs and metrics name one output: its kind and where it writes."""
    return f"{spec.kind}:{spec.path}"


def open_checked(spec: OutputSpec, now: float) -> MapOutput:
    """Open one output; a file Berkeley DB cannot read (reading every key) is moved aside and replaced."""
    try:
        writer = open_output(spec.kind, spec.path, spec.value)
    except DBError as e:
        return _replace_corrupt(spec, now, e)
    try:
        writer.keys()  # reads every page: a damaged bucket page fails here, not at open
    except DBError as e:
        try:
            writer.close()
        except Exception:
            pass
        return _replace_corrupt(spec, now, e)
    return writer


def _replace_corrupt(spec: OutputSpec, now: float, error: Exception) -> MapOutput:
    filename = output_filename(spec.kind, spec.path)
    aside = f"{filename}.corrupt-{int(now)}"
    os.rename(filename, aside)
    log.warn("{file} could not be read ({error}); moved it to {aside} and made a new one",
             file=filename, error=error, aside=aside)
    return open_output(spec.kind, spec.path, spec.value)


def open_pgsql(
    spec: OutputSpec,
    deadline_of: Callable[[str], float | None] | None,
    pattern_of: Callable[[str], str | None] | None,
    reactor: Any,
    connect: Callable[[str], Any] | None,
) -> MapOutput:
    """Start the writer of one pgsql output (it connects in its own thread, never here)."""
    from pbsyslog.outputs.pgsql import PgsqlWriter

    if deadline_of is None or pattern_of is None:
        raise ValueError("a pgsql output needs the tracker's deadline_of and pattern_of lookups")
    options: dict[str, Any] = {}
    if reactor is not None:
        options["seconds"] = reactor.seconds
        if hasattr(reactor, "callFromThread"):
            options["call_in_reactor"] = reactor.callFromThread
    else:
        options["seconds"] = time.time
    if connect is not None:
        options["connect"] = connect
    return PgsqlWriter(
        spec.dsn or "", spec.table or "pop_before_smtp", spec.source_host or socket.gethostname(),
        deadline_of, pattern_of, **options,
    )
