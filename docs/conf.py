"""Sphinx configuration of the popdyn documentation site.

Build it (from the repository root; about 4 minutes on 2 cores, most of it the quick
verification report and the notebooks):

    python -m pip install -e ".[docs]" && sphinx-build -W --keep-going -n -b html docs docs/_build/html

``-W -n`` make every warning an error, broken cross-references included.  Why Sphinx (and
not MkDocs): see ``docs/index.md``.  The generated pages and the report: ``popdyn_docs.py``
and ``gen_pages.py`` beside this file.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import popdyn  # noqa: E402

project = "popdyn"
author = "popdyn developers"
copyright = "2026, popdyn developers"
release = version = popdyn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "popdyn_docs",
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# -- strictness: every cross-reference to popdyn must resolve ------------------------------
# (there is no network at build time for intersphinx, so references to other packages'
# objects -- numpy.ndarray in a signature -- stay plain text and are not checked)
nitpicky = True
_EXTERNAL = ("numpy", "np", "scipy", "sympy", "matplotlib", "mpl", "plt", "sklearn", "tqdm", "mpmath", "jupytext",
             "collections", "typing", "pathlib", "os", "io", "argparse", "numbers", "dataclasses", "concurrent",
             "multiprocessing", "importlib", "enum", "abc", "types", "fractions", "decimal", "warnings", "json",
             "math", "random", "hashlib", "datetime", "re", "functools", "itertools", "signal", "tempfile",
             "contextlib", "dask", "distributed", "threading", "subprocess", "sys", "tomllib", "logging")
nitpick_ignore_regex = [(r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..+)?"),
                        # private helpers (a name starting with "_") are not documented on purpose
                        (r"py:.*", r"(.+\.)?_[A-Za-z]\w*")]

# -- API reference (autodoc + numpydoc) ----------------------------------------------------
autodoc_member_order = "bysource"
# every attribute of a class (dataclass fields included) gets a target that docstrings can refer to
autodoc_default_options = {"undoc-members": True}
autodoc_preserve_defaults = False
autodoc_typehints = "signature"
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# every public name (popdyn.__all__) has a docstring (GL08) documenting its parameters (PR01, PR02)
# and, when it returns a value, its Returns section (RT01): numpydoc checks, on those names only
import re  # noqa: E402

import gen_pages  # noqa: E402

_PUBLIC = [p.target for p in gen_pages.public_names([]) if p.kind != "data"]
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "RT01"}
numpydoc_validation_exclude = {rf"^(?!(?:{'|'.join(map(re.escape, _PUBLIC))})$)"}

# -- Markdown pages and notebooks (MyST-NB) -------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"
# a cell that raises is a warning with its traceback in the log (so -W fails the build, and
# --keep-going still reports every failing notebook, not only the first)
nb_execution_raise_on_error = False
nb_execution_allow_errors = False
nb_execution_show_tb = True
nb_execution_in_temp = True
nb_execution_timeout = 1800
nb_merge_streams = True

# -- HTML ----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"popdyn {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "header_links_before_dropdown": 7,
}
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["popdyn.css"]
# pages without sub-pages get no (empty) left sidebar, so their tables have the width
html_sidebars = {page: [] for page in ("index", "getting-started", "conventions", "cli", "verification")}
# literal reprs in the report (dict keys, strings) keep their straight quotes
smartquotes = False
