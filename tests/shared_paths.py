"""Where the read-only ``shared/`` folder is: beside the checkout (CI's layout), else the workplace's."""

import pathlib

_BESIDE = pathlib.Path(__file__).resolve().parents[2] / "shared"
SHARED = _BESIDE if _BESIDE.is_dir() else pathlib.Path("/work/shared")
if not SHARED.is_dir():
    raise RuntimeError(f"shared/ not found beside the checkout ({_BESIDE}) nor at /work/shared")
REAL = SHARED / "corpus" / "real"
WIRE = SHARED / "corpus" / "wire"
