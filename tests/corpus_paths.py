"""Where the test corpus is: ``tests/corpus/`` inside the repository (see its README.rst)."""

import pathlib

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"
REAL = CORPUS / "real"
WIRE = CORPUS / "wire"
