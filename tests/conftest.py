"""Test selection: what `make check` runs and what only `make test` runs.

Every test under tests/integration/ is marked ``integration`` (it starts real
daemons, and most of them need root); so is a test elsewhere that calls a
real system program or needs root (``@pytest.mark.integration`` on it).
`make check` runs ``-m "not integration"``: no root, no apt, no daemons.
"""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected from tests/integration/ as ``integration``."""
    for item in items:
        if INTEGRATION in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
