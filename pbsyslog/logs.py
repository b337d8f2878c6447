"""Log output choices for twistd: ``twistd --logger pbsyslog.logs.json ...``.

Contract: human-readable lines are twistd's default; ``json`` is a log
observer factory (what twistd's ``--logger`` option takes) writing one JSON
object per event to standard output, for log shippers: ``time``, ``level``,
``namespace``, ``text`` (the human line), plus the event's own simple fields
(so "added/removed" lines carry ``ip`` and ``pattern`` as keys), and a
``traceback`` for failures.  It never raises: an event it cannot encode is
written with its text only.
"""

from __future__ import annotations

import json as _json
import sys
from typing import Any, TextIO

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer


@implementer(ILogObserver)
class JSONLines:
    """One JSON object per log event, one per line."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": event.get("log_time"),
            "level": getattr(level, "name", None),
            "namespace": event.get("log_namespace"),
            "text": formatEvent(event),
        }
        for key, value in event.items():
            if not key.startswith("log_") and key not in record and isinstance(value, (str, int, float, bool)):
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        try:
            line = _json.dumps(record)
        except (TypeError, ValueError):
            line = _json.dumps({"time": record["time"], "text": str(record["text"])})
        self._out.write(line + "\n")
        self._out.flush()


def json() -> ILogObserver:
    """The ``--logger`` factory: JSON lines on standard output."""
    return JSONLines(sys.stdout)


class Failing:
    """Which kinds of operation are failing: log a failure once, and its recovery once, not every retry."""

    def __init__(self) -> None:
        self._kinds: set[str] = set()

    def failed(self, kind: str) -> bool:
        """``kind`` failed: True when it was working until now (log it), False while it keeps failing."""
        if kind in self._kinds:
            return False
        self._kinds.add(kind)
        return True

    def works(self, kind: str) -> bool:
        """``kind`` worked: True when it had been failing (log the recovery)."""
        if kind not in self._kinds:
            return False
        self._kinds.discard(kind)
        return True
