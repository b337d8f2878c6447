"""Test modules are imported by basename (pytest's prepend mode): two with one name break collection."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_module_names_are_unique() -> None:
    """No basename is used both in tests/ and tests/integration/."""
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "conftest.py" and "corpus" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []
