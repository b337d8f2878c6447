"""The project's reStructuredText documents parse without a warning (what PyPI and rst2man would show)."""

from __future__ import annotations

import io
from pathlib import Path

import docutils.core
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.rst", "CHANGELOG.rst", "HACKING.rst", "tests/corpus/README.rst"]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_document_parses_cleanly(name: str) -> None:
    """The document exists and docutils reports nothing at warning level or above."""
    errors = io.StringIO()
    docutils.core.publish_doctree(
        (ROOT / name).read_text(encoding="utf-8"),
        source_path=name,
        settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": errors},
    )
    assert errors.getvalue() == "", errors.getvalue()


LATE_LOGIN_DOCUMENTS = ["README.rst", "conf/pbsyslog.toml", "conf/rsyslog/pbsyslog-tcp.conf"]


@pytest.mark.parametrize("name", LATE_LOGIN_DOCUMENTS)
def test_documents_say_what_the_code_does_with_late_logins(name: str) -> None:
    """Each document that speaks of late logins says what the pipeline does: older than the grace authorises nothing."""
    text = " ".join((ROOT / name).read_text(encoding="utf-8").replace("#", " ").split())
    assert "older than" in text and "grace" in text and "authorises nothing" in text, name
    for wrong in ("never the timestamp the sender wrote", "counts from when pbsyslog receives it"):
        assert wrong not in text, (name, wrong)
