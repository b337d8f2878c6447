"""The pattern table: one syslog message -> a POP3/IMAP login, logout or failure.

What it does: holds the regexes of ``patterns.toml`` (and the admin's own
``[[pattern]]`` entries) with the sample lines attached to each, checks them
when a table is built, and matches a parsed ``SyslogMessage`` against them:
first by program name (one dict lookup), then by the regexes of that
program, each matched against the MSG part from its first character.  The
address a regex captures is validated and normalised with ``ipaddress``.

What it must not do: report an address that did not come from the field in
which the daemon writes the client address of that very event; report a
login for a failed or unfinished authentication; depend on the facility,
the timestamp or the sender.  It does no I/O except reading the packaged
table when asked for it, and imports nothing from ``twisted.internet``.

How it fails: building a table (``PatternTable.from_entries``,
``load_table``) raises ``PatternError`` naming the entry and the reason: a
bad key, a regex that does not compile or lacks the ``ip`` group, a sample
that does not give its expected result, or a line claimed by two entries.
Matching never raises for any message: a line that matches nothing, or whose
captured address is not an address, gives ``None``.

Where things are: ``model`` (the records: ``Pattern``, ``Sample``,
``AuthEvent``, ``PatternError``, the kinds, ``normalise_ip``), ``entries``
(checking one raw entry and its samples), ``prefilter`` (the literal
starts that let most lines skip every regex), ``table`` (``PatternTable``:
routing, ``classify``, ``match``, ``ignores``) and ``loader`` (the packaged
entries, the admin's, and ``load_table``).
"""

from pbsyslog.patterns.loader import builtin_entries, load_origins, load_table
from pbsyslog.patterns.model import (
    ENTRY_KINDS,
    KINDS,
    SESSION_KEYS,
    AuthEvent,
    OriginRule,
    Pattern,
    PatternError,
    Sample,
    normalise_ip,
)
from pbsyslog.patterns.table import PatternTable

__all__ = [
    "ENTRY_KINDS",
    "KINDS",
    "SESSION_KEYS",
    "AuthEvent",
    "OriginRule",
    "Pattern",
    "PatternError",
    "PatternTable",
    "Sample",
    "builtin_entries",
    "load_origins",
    "load_table",
    "normalise_ip",
]
