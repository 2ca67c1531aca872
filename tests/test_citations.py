"""BibTeX printed by ``popdyn --cite`` and stored next to each paper (``theory/*/references.bib``)."""

from __future__ import annotations

import pathlib
import re

import pytest

from popdyn.citations import BIBTEX, bibtex

THEORY = pathlib.Path(__file__).resolve().parents[1] / "theory"
BIB_FILES = sorted(THEORY.glob("*/references.bib"))
# A LaTeX accent group such as {\'e}, {\"o}, {\`a}, {\^o}, {\~n}, {\=a}, {\.z}: the
# opening brace must be followed by the backslash (a Python string literal without a
# doubled backslash turns {\'e} into {'e}).
LOST_BACKSLASH = re.compile(r"\{['\"`^~=.]")
FIELD = re.compile(r"^\s*(\w+)\s*=\s*(.*?),?\s*$", re.M)


def _fields(entry: str) -> dict:
    return {k.lower(): v for k, v in FIELD.findall(entry)}


@pytest.mark.parametrize("key", sorted(BIBTEX))
def test_bibtex_entries_keep_accent_backslashes(key):
    entry = BIBTEX[key]
    assert not LOST_BACKSLASH.search(entry), f"{key}: accent without backslash in {entry!r}"
    assert "\\\\" not in entry, f"{key}: doubled backslash"


def test_printed_bibtex_has_the_accent():
    text = bibtex(["2003.10409"])
    assert "G{\\'e}rard" in text and "G{'e}rard" not in text


def test_bib_files_exist_and_keep_backslashes():
    assert BIB_FILES, f"no references.bib under {THEORY}"
    for path in BIB_FILES:
        text = path.read_text(encoding="utf-8")
        assert not LOST_BACKSLASH.search(text), f"{path}: accent without backslash"


def test_bib_files_agree_with_printed_bibtex():
    """Each paper's references.bib entry has the same authors as the entry ``--cite`` prints."""
    checked = 0
    for path in BIB_FILES:
        for entry in re.split(r"(?=^@)", path.read_text(encoding="utf-8"), flags=re.M):
            f = _fields(entry)
            eprint = f.get("eprint", "").strip("{}")
            if eprint in BIBTEX:
                assert _fields(BIBTEX[eprint])["author"] == f["author"], (path, eprint)
                checked += 1
    assert checked >= 1
