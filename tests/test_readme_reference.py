"""README.rst names every config key and every pattern group, so the reference cannot fall behind."""

from pathlib import Path

import attrs

from pbsyslog.config import SETTINGS, Config
from pbsyslog.patterns import load_table

README = (Path(__file__).resolve().parent.parent / "README.rst").read_text()


def reference_rows() -> list[tuple[str, str]]:
    """The (key, what it does) rows of the simple table under "Configuration reference"."""
    lines = README.split("\nConfiguration reference\n", 1)[1].splitlines()
    # A border has two columns of '=' (the section's underline has one).
    borders = [i for i, line in enumerate(lines) if set(line) == {"=", " "} and len(line.split()) == 2]
    top, below_header, bottom = borders[:3]
    width = len(lines[top].split()[0])
    assert lines[top + 1].split() == ["key", "what", "it", "does"] and below_header == top + 2
    rows = []
    for line in lines[below_header + 1 : bottom]:
        key, doc = line[:width].strip(), line[width:].strip()
        assert key.startswith("``") and key.endswith("``"), f"not a ``key`` cell: {line!r}"
        rows.append((key[2:-2], doc))
    return rows


def test_every_config_field_is_a_setting() -> None:
    """Each Config field is declared with setting(), so from_mapping and dumpconfig know its key."""
    assert [s.name for s in SETTINGS.values()] == [f.name for f in attrs.fields(Config)]


def test_every_config_key_is_in_the_reference() -> None:
    """Each TOML key Config reads appears as a literal in the README's key table."""
    missing = [k for k in SETTINGS if f"``{k}``" not in README]
    assert not missing, f"README lacks config keys {missing}"


def test_reference_table_rows_are_the_settings_docs() -> None:
    """The README's key table has one row per setting, no other rows, and each row's text is the setting's doc."""
    rows = reference_rows()
    keys = [key for key, _ in rows]
    assert len(keys) == len(set(keys)), f"README lists a key twice: {sorted({k for k in keys if keys.count(k) > 1})}"
    missing = [k for k in SETTINGS if k not in keys]
    assert not missing, f"README's key table lacks rows for {missing}"
    unknown = [k for k in keys if k not in SETTINGS]
    assert not unknown, f"README's key table has rows for keys Config does not read: {unknown}"
    differ = {k: (doc, SETTINGS[k].doc) for k, doc in rows if doc != SETTINGS[k].doc}
    assert not differ, f"README row != setting doc (README, config.py): {differ}"


def test_every_pattern_group_is_listed() -> None:
    """Each built-in pattern group appears in the README's daemon table."""
    missing = [g for g in load_table("all").groups if f"``{g}``" not in README]
    assert not missing, f"README lacks pattern groups {missing}"
