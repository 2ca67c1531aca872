"""Papers behind popdyn: one sub-package per paper, each with its model notes
(``equations.md``: equation-to-code map), BibTeX (``references.bib``) and its claims as
checks (``CLAIMS``) that ``popdyn verify`` runs.

This package imports popdyn, never the reverse; popdyn finds the papers through the
``popdyn.papers`` entry points declared in ``pyproject.toml``.
"""

from __future__ import annotations


def _papers():
    from .bagj2021 import CLAIMS as bagj
    from .lee2024 import CLAIMS as lee
    from .mousavi2023 import CLAIMS as mousavi
    from .simsek2025 import CLAIMS as simsek

    return {"2411.08798": simsek, "2003.10409": bagj, "2309.03843": mousavi, "2406.01581": lee}


def __getattr__(name):
    if name == "PAPERS":
        return _papers()
    raise AttributeError(name)
