"""In-place updates under flock vs atomic rebuild + rename(), at 1,000 and 1,000,000 entries.

Prints one JSON object per figure: the time to commit one batch (10 new
keys) to a map that already holds N entries, each way.  Run:
    .venv/bin/python bench/map_strategy.py [--sizes 1000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

from pbsyslog.outputs.berkeley import open_output


def ips(n: int, offset: int = 0) -> list[str]:
    """n distinct IPv4 texts."""
    return [f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(offset, offset + n)]


def in_place(directory: str, existing: list[str], runs: int) -> float:
    """Median seconds of one 10-key commit to an open map of len(existing) entries."""
    m = open_output("postfix-hash", os.path.join(directory, "inplace"))
    m.apply(add=existing)
    times = []
    for r in range(runs):
        batch = ips(10, offset=20_000_000 + r * 10)
        t = time.perf_counter()
        m.apply(add=batch)
        times.append(time.perf_counter() - t)
    m.close()
    return statistics.median(times)


def rebuild_rename(directory: str, existing: list[str], runs: int) -> float:
    """Median seconds to write a fresh map of len(existing)+10 entries and rename() it into place."""
    times = []
    for r in range(runs):
        keys = existing + ips(10, offset=20_000_000 + r * 10)
        t = time.perf_counter()
        tmp = os.path.join(directory, "new")
        m = open_output("postfix-hash", tmp)
        m.apply(add=keys)
        m.close()
        os.rename(tmp + ".db", os.path.join(directory, "rebuilt.db"))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,1000000")
    args = parser.parse_args()
    for n in (int(s) for s in args.sizes.split(",")):
        existing = ips(n)
        runs = 5 if n <= 100_000 else 1
        with tempfile.TemporaryDirectory() as d:
            a = in_place(d, existing, max(runs, 5))
            b = rebuild_rename(d, existing, runs)
        for name, value in (("in_place_commit", a), ("rebuild_rename_commit", b)):
            print(json.dumps({"name": f"{name}_{n}", "value": round(value * 1000, 3), "unit": "ms",
                              "reference": {"name": "entries", "value": n, "unit": "entries"}}))


if __name__ == "__main__":
    main()
