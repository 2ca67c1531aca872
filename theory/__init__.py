"""Papers behind popdyn: one sub-package per paper, each with its model notes
(``equations.md``: equation-to-code map), BibTeX (``references.bib``) and its claims as
checks (``CLAIMS``) that ``popdyn verify`` runs.

This folder installs as the package ``popdyn_theory``.  It imports popdyn, never the reverse;
popdyn finds the papers only through the ``popdyn.papers`` entry points declared in
``pyproject.toml``, so a new paper needs its folder, its entry point and its line in the
package list there, and no edit anywhere else.
"""
