"""Fast checks of the documentation site's generated pages, without building the site.

The strict build itself (``sphinx-build -W -n``, last step of ``.ci/run``) checks rendering
and cross-references; these tests check what the generators put on the pages: every public
name in the API reference, a page for every registered model (one registered at run time
included), every row of ``popdyn verify --json`` in the report, and the README's one command.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

import popdyn
from popdyn.model import Model, Option, Prediction, register_model, unregister_model

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

import gen_pages  # noqa: E402

#: The one command that builds the site (README "Where to go next", docs/index.md, .ci/run).
BUILD_COMMAND = "sphinx-build -W --keep-going -n -b html docs docs/_build/html"


def _toy_model(name="toy-docs", papers=("2406.11828",)):
    return Model(
        name=name, description="a toy model registered at run time by the docs tests",
        papers=papers,
        options=(Option("width", "int", 3, "hidden width", positive=True),
                 Option("mode", "str", "fast", "how to run", choices=("fast", "slow")),
                 Option("level", "float", 0.5, "a level", minimum=0.0, maximum=1.0, verbs=("predict",)),
                 Option("flag", "bool", False, "a switch")),
        uses={"predict": ("d", "seed"), "simulate": ("d", "seed", "replicas")},
        build=lambda opts: None, predict=lambda problem, opts: Prediction({}, []), compare=False)


def test_every_public_name_is_in_the_api_index():
    errors = []
    public = gen_pages.public_names(errors)
    public_mods, internal = gen_pages.api_modules()
    page = gen_pages.api_index_page(public, public_mods, internal)
    listed = set(re.findall(r"^   (\S+)$", page, flags=re.M))
    assert not errors, errors
    assert [p.name for p in public] == list(popdyn.__all__)
    module_pages = {}
    for p in public:
        if p.kind == "data":
            assert f".. py:data:: popdyn.{p.name}" in page, p.name
            continue
        # its autosummary row on the index (relative to its module) ...
        assert p.target[len(p.module) + 1:] in listed, p.name
        # ... and its documentation on its module's page, where the row links
        assert p.module in public_mods + internal, p.name
        if p.module not in module_pages:
            module_pages[p.module] = gen_pages.api_module_page(p.module, public)
        directive = "autoclass" if p.kind == "class" else "autofunction"
        assert f".. {directive}:: {p.target}\n" in module_pages[p.module], p.name


def test_module_page_documents_its_all_and_links_reexports():
    public = gen_pages.public_names([])
    page = gen_pages.api_module_page("popdyn.verification", public)
    for name in ("verify", "Claim", "ClaimResult", "claim_seed_sequence", "load_claims"):
        assert f"popdyn.verification.{name}" in page, name
    assert "Exported as ``popdyn.verify``" in page
    # constants are documented where they are assigned
    assert ".. autodata:: popdyn.verification.KEY_WORDS" in page or ".. py:data:: KEY_WORDS" in page


def test_model_page_is_generated_for_a_model_registered_later():
    toy = register_model(_toy_model())
    try:
        names = [m.name for m in popdyn.model.models().values()]
        assert "toy-docs" in names
        paper = gen_pages.paper_info("2406.11828", {})
        assert paper.title.startswith("Learning sum of diverse features")
        page = gen_pages.model_page(toy, [paper], {})
        assert page.startswith("(model-toy-docs)=\n# toy-docs\n")
        assert "[arXiv 2406.11828](https://arxiv.org/abs/2406.11828)" in page
        rows = {line.split("|")[1].split()[0]: line for line in page.splitlines() if line.startswith("| `--")}
        assert set(rows) == {"`--width`", "`--mode`", "`--level`", "`--flag`"}
        assert "one of `fast`, `slow`" in rows["`--mode`"]
        assert "≥ 0" in rows["`--level`"] and "≤ 1" in rows["`--level`"] and rows["`--level`"].endswith("| predict |")
        assert rows["`--flag`"].startswith("| `--flag` (switch) | a switch | off |")
        assert rows["`--width`"].startswith("| `--width` (int) | hidden width | `3` | > 0 |")
        # compare=False: no compare line; predict and simulate with the common options they read
        assert "`popdyn predict --model toy-docs`" in page and "`popdyn simulate --model toy-docs`" in page
        assert "popdyn compare --model toy-docs" not in page
        assert "`--replicas`" in page
        # no theory folder for this paper: said so, no include
        assert "No `equations.md` is installed for this paper" in page
        index = gen_pages.models_index_page([toy], {})
        assert "[toy-docs](toy-docs.md)" in index
    finally:
        unregister_model("toy-docs")


def test_registered_models_pages_include_their_papers_equations():
    page_dir = DOCS / "models"
    for model in popdyn.model.models().values():
        papers = [gen_pages.paper_info(p) for p in model.papers]
        page = gen_pages.model_page(model, papers, {}, page_dir=page_dir)
        assert f"# {model.name}\n" in page
        for p in papers:
            assert f"arXiv {p.arxiv}" in page
            if p.equations is not None:
                # relative to the page: MyST reads an absolute include path from the source folder
                paths = re.findall(r"```\{include\} (\S+)", page)
                assert any((page_dir / path).resolve() == p.equations.resolve() for path in paths), p.arxiv
                assert not any(Path(path).is_absolute() for path in paths)


def test_papers_with_claims_have_their_equations():
    """Every paper that `popdyn verify` knows has its theory/<paper>/equations.md."""
    entry = gen_pages.paper_entry_points()
    assert entry, "no popdyn.papers entry points: is popdyn installed (pip install -e .)?"
    for arxiv in entry:
        info = gen_pages.paper_info(arxiv, entry)
        assert info.equations is not None and info.equations.is_file(), arxiv


def _result(paper, claim, passed=True, **kw):
    row = {"paper": paper, "claim": claim, "predicted": 0.25, "measured": 0.2500000001, "tolerance": 1e-8,
           "passed": passed, "details": "exact route: 1/4 | checked", "seconds": 0.5, "seed": 7}
    row.update(kw)
    return row


class _Claim:
    def __init__(self, name, description):
        self.name, self.description = name, description


def test_verification_report_shows_every_row():
    report = {"claims": [_result("1111.00001", "beta_c (he3, k=3)"),
                         _result("1111.00001", "beta_c (he4, k=3)", passed=False, measured=[0.3, "x"]),
                         _result("1111.00001", "coupon (n=5)", predicted="rule: argmax", tolerance="4 SE = 0.04"),
                         _result("2222.00002", "slope", measured=float("inf"))],
              "passed": False}
    claims = {"1111.00001": [_Claim("beta_c", "the threshold"), _Claim("coupon", "coupon collector")],
              "3333.00003": [_Claim("later", "a paper installed after the run")]}
    papers = {"1111.00001": gen_pages.Paper("1111.00001", "A title")}
    page = gen_pages.verification_report(report, claims, papers, command="popdyn verify --quick --json --seed 7",
                                         elapsed=12.0, mode="quick", notebooks={"1111.00001": ["nb_one"]},
                                         models_by_paper={"1111.00001": ["toy"]})
    assert "**3 of 4 checks pass** (1 FAIL)" in page
    assert "`popdyn verify --quick --json --seed 7`, seed 7, 12 s" in page
    # one table row per result, with predicted, measured, tolerance, result, seconds, seed, details
    rows = [line for line in page.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| case") and not line.startswith("| paper")
            and not line.startswith("| {ref}")]
    assert len(rows) == 4
    assert rows[0] == "| (he3, k=3) | 0.25 | 0.25 | 1e-08 | pass | 0.5 | 7 |"
    assert "* (he3, k=3): exact route: 1/4 \\| checked" in page
    assert "| **FAIL** |" in rows[1] and "\\[0.3, x\\]" in rows[1]
    assert "4 SE = 0.04" in rows[2]
    assert "| inf |" in rows[3]
    # claims grouped under their declared names, with the paper's description
    assert "### `beta_c`: 1/2 pass" in page and "the threshold" in page
    assert "### `coupon`: 1/1 pass" in page
    assert "(verify-1111-00001)=" in page and "## arXiv 1111.00001: A title" in page
    assert "model [toy](models/toy.md)" in page and "notebook [nb_one](notebooks/nb_one.ipynb)" in page
    # a paper with claims but no row still gets its section (model pages link to it), saying so
    assert "(verify-3333-00003)=" in page and "No result in this run" in page and "`later`" in page


def test_verify_groups_cover_every_paper_once():
    papers = ["2411.08798", "2003.10409", "2309.03843", "2406.01581", "2311.13774"]
    for jobs in (1, 2, 3, 8):
        groups = gen_pages.verify_groups(papers, jobs)
        assert len(groups) == min(jobs, len(papers)) and all(groups)
        assert sorted(p for g in groups for p in g) == sorted(papers)
    assert gen_pages.verify_groups([], 2) == [[]]


def test_every_declared_claim_row_maps_to_its_claim():
    from popdyn.verification import load_claims

    table = load_claims()
    for paper, claims in table.items():
        names = [c.name for c in claims]
        for name in names:
            assert gen_pages.claim_of(f"{name} (case 1)", names) == name
            assert gen_pages.claim_of(name, names) == name


def test_markdown_escaping():
    assert gen_pages.md_escape("a*b_c | d") == "a\\*b\\_c \\| d"
    assert gen_pages.md_code("x|y") == "`x&#124;y`"
    assert gen_pages.fmt_value(float("-inf")) == "−inf"
    assert gen_pages.fmt_value({"a": 1.0}) == "{a: 1}"


def test_notebooks_are_matched_to_their_papers():
    """A paper's notebook is the one named after its theory/ folder (simsek2025 -> simsek2025_*)."""
    sources = [Path("notebooks/simsek2025_multi_index.py"), Path("notebooks/simsek2025b.py"),
               Path("notebooks/sweeps_phase_diagram.py")]
    by_paper = gen_pages.notebooks_by_paper(sources, {"2411.08798": "popdyn_theory.simsek2025",
                                                      "2003.10409": "popdyn_theory.bagj2021"})
    assert by_paper == {"2411.08798": ["simsek2025_multi_index"], "2003.10409": []}
    real = gen_pages.notebooks_by_paper(gen_pages.notebook_sources(ROOT), gen_pages.paper_entry_points())
    assert real["2411.08798"] == ["simsek2025_multi_index"]


def test_generate_writes_every_page(tmp_path):
    pytest.importorskip("jupytext")
    state = gen_pages.generate(tmp_path, ROOT)
    for model in popdyn.model.models():
        assert (tmp_path / "models" / f"{gen_pages.slug(model)}.md").is_file(), model
    written = {}
    for src in gen_pages.notebook_sources(ROOT):
        path = tmp_path / "notebooks" / f"{src.stem}.ipynb"
        nb = json.loads(path.read_text())
        # a hidden first cell runs the kernel in the script's folder, as Jupyter would
        first = nb["cells"][0]
        assert first["metadata"]["tags"] == ["remove-cell"], src.stem
        assert "".join(first["source"]) == f"import os\nos.chdir({str(src.resolve().parent)!r})"
        assert len(nb["cells"]) > 2, src.stem
        written[path] = path.read_text()
    public, internal = gen_pages.api_modules()
    for mod in public + internal:
        if mod != "popdyn":
            assert (tmp_path / "api" / f"{mod}.rst").is_file(), mod
    assert set(state["claims"]) == set(gen_pages.paper_entry_points())
    # a stale generated page (a model that is gone) is removed; the notebooks come out identical
    # (fixed cell ids: Sphinx re-reads, and MyST-NB re-executes, only what changed)
    (tmp_path / "models" / "gone.md").write_text("x")
    gen_pages.generate(tmp_path, ROOT)
    assert not (tmp_path / "models" / "gone.md").exists()
    for path, text in written.items():
        assert path.read_text() == text, path.name


def test_readme_docs_and_ci_build_the_site_with_one_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Where to go next", 1)[1].split("\n## ", 1)[0]
    assert f'python -m pip install -e ".[docs]" && {BUILD_COMMAND}' in section
    assert BUILD_COMMAND in (DOCS / "index.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    tail = ci.split("# --- the documentation site (strict build) ---", 1)[1]
    assert 'python -m pip install -e ".[docs]"' in tail and BUILD_COMMAND in tail


def test_included_readme_sections_exist():
    """docs/ includes README sections by their headings: renaming one must fail here, not only in the build."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in DOCS.glob("*.md"):
        text = page.read_text(encoding="utf-8")
        for marker in re.findall(r':(?:start-after|end-before): "([^"]+)"', text):
            assert marker in readme, f"{page.name} includes README.md from {marker!r}, which is gone"
