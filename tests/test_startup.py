"""Start-up: ``import popdyn`` and the CLI load only what a command needs.

These check which modules a fresh interpreter has loaded (a fact), never a time: the times are
measured by ``python benchmarks/bench_startup.py``.
"""

import json
import subprocess
import sys

import pytest

import popdyn

#: Heavy libraries that no command should load unless it uses them.
HEAVY = ("scipy", "sympy", "matplotlib", "sklearn")


def _loaded_after(code: str) -> set:
    """The top-level module names a fresh interpreter holds after running ``code``."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_popdyn_loads_no_numerical_library():
    loaded = _loaded_after("import popdyn")
    assert not loaded & {"numpy", *HEAVY}, sorted(loaded & {"numpy", *HEAVY})


def test_version_command_loads_nothing_heavy():
    loaded = _loaded_after("import contextlib, io\nfrom popdyn.cli import main\n"
                           "with contextlib.redirect_stdout(io.StringIO()):\n"
                           "    try:\n        main(['--version'])\n    except SystemExit:\n        pass")
    assert not loaded & {"numpy", *HEAVY}, sorted(loaded & {"numpy", *HEAVY})


def test_committee_prediction_needs_no_sympy_or_matplotlib(tmp_path):
    code = ("import contextlib, io\nfrom popdyn.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['predict', '--model', 'committee', '--t-end', '5'])")
    loaded = _loaded_after(code)
    assert "scipy" in loaded                      # the ODE integrator is used
    assert not loaded & {"sympy", "matplotlib"}, sorted(loaded & {"sympy", "matplotlib"})


@pytest.mark.parametrize("name", popdyn.__all__)
def test_every_public_name_resolves(name):
    assert getattr(popdyn, name) is not None


def test_star_import_and_dir_see_every_public_name():
    namespace: dict = {}
    exec("from popdyn import *", namespace)
    assert set(popdyn.__all__) <= set(namespace)
    assert set(popdyn.__all__) <= set(dir(popdyn))


def test_submodules_are_reachable_as_attributes_and_unknown_names_are_refused():
    code = "import popdyn\nassert popdyn.hermite.h_values is popdyn.h_values\nassert popdyn.models.__name__"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        popdyn.not_a_name  # noqa: B018
