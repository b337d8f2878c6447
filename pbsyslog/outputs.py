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
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from twisted.logger import Logger

from pbsyslog.config import OutputSpec
from pbsyslog.mapfile import DBError, MapWriter, open_output, output_filename

log = Logger(namespace="pbsyslog")


class Outputs:
    """The open writers of every output; the first is the primary map."""

    def __init__(self, specs: Sequence[OutputSpec], now: float) -> None:
        self.specs = tuple(specs)
        self.writers: list[MapWriter] = []
        self.reopen(now)

    def reopen(self, now: float) -> None:
        """(Re)open every output from its file, dropping any handle still open."""
        self.close_quietly()
        self.writers = [open_checked(spec, now) for spec in self.specs]

    def apply(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        """Write one batch to every output."""
        add, remove = list(add), list(remove)
        for writer in self.writers:
            writer.apply(add=add, remove=remove)

    def replace_all(self, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Make every output hold exactly ``keys``; return what the primary gained and lost."""
        wanted = set(keys)
        changes = [writer.replace_all(wanted) for writer in self.writers]
        return changes[0]

    def keys(self) -> set[str]:
        """The primary map's keys."""
        return self.writers[0].keys()

    def close(self) -> None:
        """Flush and close every output."""
        for writer in self.writers:
            writer.close()
        self.writers = []

    def close_quietly(self) -> None:
        """Close every output even if flushing fails (full disk, damaged file)."""
        for writer in self.writers:
            try:
                writer.close()
            except Exception:
                try:
                    writer._db.close()  # the flush failed; drop the handle all the same
                except Exception:
                    pass
        self.writers = []


def open_checked(spec: OutputSpec, now: float) -> MapWriter:
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


def _replace_corrupt(spec: OutputSpec, now: float, error: Exception) -> MapWriter:
    filename = output_filename(spec.kind, spec.path)
    aside = f"{filename}.corrupt-{int(now)}"
    os.rename(filename, aside)
    log.warn("{file} could not be read ({error}); moved it to {aside} and made a new one",
             file=filename, error=error, aside=aside)
    return open_output(spec.kind, spec.path, spec.value)
