"""README.rst names every config key and every pattern group, so the reference cannot fall behind."""

from pathlib import Path

import attrs

from pbsyslog.cli import _TOML_KEYS
from pbsyslog.config import Config
from pbsyslog.patterns import load_table

README = (Path(__file__).resolve().parent.parent / "README.rst").read_text()


def test_every_config_key_is_in_the_reference() -> None:
    """Each TOML key Config reads appears as a literal in the README's key table."""
    keys = [_TOML_KEYS.get(f.name, f.name) for f in attrs.fields(Config)]
    missing = [k for k in keys if f"``{k}``" not in README]
    assert not missing, f"README lacks config keys {missing}"


def test_every_pattern_group_is_listed() -> None:
    """Each built-in pattern group appears in the README's daemon table."""
    missing = [g for g in load_table("all").groups if f"``{g}``" not in README]
    assert not missing, f"README lacks pattern groups {missing}"
