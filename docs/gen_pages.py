"""The pages of the documentation site that are generated at build time.

``docs/conf.py`` calls :func:`generate` when Sphinx starts (event ``builder-inited``).  Every
page written here is derived from the code, so that nothing drifts:

* ``models/``: one page per model of the registry (:func:`popdyn.model.models`): name,
  description, papers (arXiv ids, titles from :data:`popdyn.citations.BIBTEX`), the options
  table with defaults and constraints, the command-line verbs and commands, the claims that
  ``popdyn verify`` checks, and the paper's ``theory/<paper>/equations.md`` (included, not
  copied).  A model registered later gets its page without an edit here.
* ``api/``: the API reference, one page per public module (autodoc + numpydoc), and an index
  of every name of ``popdyn.__all__``.
* ``notebooks/``: the jupytext scripts of ``notebooks/`` converted to ``.ipynb``; MyST-NB
  executes them during the build (in the fast mode unless ``POPDYN_DOCS_FULL=1``).

The verification report (``verification.md``) is filled in while it is read
(:func:`verification_report`), from the JSON of ``popdyn verify --json``.

The functions that build page text are pure (registry or JSON in, Markdown out) so that
``tests/test_docs.py`` can check them without building the site.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import math
import os
import pkgutil
import re
from pathlib import Path

#: Folders (under the Sphinx source folder) that :func:`generate` owns and rewrites.
GENERATED_DIRS = ("api", "models", "notebooks")
#: Longest ``repr`` of a module-level value shown in the API reference; longer ones (a
#: ``Model`` declaration with its callables, a table) are documented without their value.
MAX_VALUE_REPR = 80
#: Characters that Markdown (CommonMark) would read as markup inside plain help text.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#])")
#: Value types whose ``repr`` is meaningful in the API reference.
_PLAIN_VALUES = (bool, int, float, str, bytes, tuple, frozenset, type(None))


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def md_escape(text: str) -> str:
    """Plain text made safe for a Markdown paragraph or table cell (one line)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def md_code(text: str) -> str:
    """Inline code that may contain backticks or a table's ``|``."""
    text = " ".join(str(text).split())
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    # a '|' splits a Markdown table cell even inside code spans: use its HTML entity
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "&#124;")


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` unless the file already holds it (Sphinx re-reads changed files only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def first_sentence(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    if not doc:
        return ""
    para = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(para.split())


def arxiv_url(paper: str) -> str:
    return f"https://arxiv.org/abs/{paper}"


def slug(text: str) -> str:
    """A label/anchor made of lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --------------------------------------------------------------------------------------
# the public API
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PublicName:
    """One name of ``popdyn.__all__`` and where it is documented."""

    name: str
    module: str        #: the module whose page documents it
    target: str        #: its documented full name (``module.qualname``), or ``popdyn.<name>`` for data
    kind: str          #: "class", "function" or "data"


def public_names(errors: list | None = None) -> list[PublicName]:
    """Every name of ``popdyn.__all__`` with the module that defines it (imports each).

    A name that cannot be imported is left out and its error appended to ``errors`` (the
    build reports it as a warning, so a strict build fails).
    """
    import popdyn

    out = []
    for name in popdyn.__all__:
        try:
            obj = getattr(popdyn, name)
        except Exception as exc:  # an ImportError, or whatever the module raises on import
            if errors is None:
                raise
            errors.append(f"popdyn.__all__ names {name!r}, which cannot be imported: {type(exc).__name__}: {exc}")
            continue
        home = getattr(obj, "__module__", None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and home and home.startswith("popdyn"):
            kind = "class" if inspect.isclass(obj) else "function"
            out.append(PublicName(name, home, f"{home}.{obj.__qualname__}", kind))
        else:
            out.append(PublicName(name, "popdyn", f"popdyn.{name}", "data"))
    return out


def api_modules() -> tuple[list[str], list[str]]:
    """The modules of popdyn, sorted: (public, internal).  Internal modules (a component
    starting with ``_``) are documented too, since public docstrings refer to them;
    ``popdyn.__main__`` is left out (it only runs the command line)."""
    import popdyn

    public, internal = ["popdyn"], []
    for info in pkgutil.walk_packages(popdyn.__path__, "popdyn."):
        if info.name == "popdyn.__main__":
            continue
        (internal if any(part.startswith("_") for part in info.name.split(".")) else public).append(info.name)
    return sorted(public), sorted(internal)


@dataclasses.dataclass(frozen=True)
class SourceNames:
    """The names a module binds at top level, read from its source (no import of Sphinx)."""

    order: dict      #: name -> position of its first top-level binding (def, class, assignment)
    documented: set  #: assigned names with a doc comment (``#:`` above) or a docstring below


def source_names(module) -> SourceNames:
    """Top-level ``def``/``class``/assignments of ``module`` in source order, and which
    assignments autodoc would find documented (a ``#:`` comment block right above, or a
    string literal right below)."""
    import ast

    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return SourceNames({}, set())
    lines = source.splitlines()
    body = ast.parse(source).body
    order: dict[str, int] = {}
    documented: set[str] = set()
    for i, node in enumerate(body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            order.setdefault(node.name, len(order))
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        for name in names:
            order.setdefault(name, len(order))
        above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
        below = body[i + 1] if i + 1 < len(body) else None
        doc_below = isinstance(below, ast.Expr) and isinstance(getattr(below, "value", None), ast.Constant) and \
            isinstance(below.value.value, str)
        if names and (above.startswith("#:") or doc_below):
            documented.update(names)
    return SourceNames(order, documented)


def module_members(module) -> list[str]:
    """What a module page documents, in source order: the names of its ``__all__``, then
    every other public class or function it defines and every public name it assigns at
    module level (its constants), since its docstrings refer to them."""
    order = source_names(module).order
    names = list(getattr(module, "__all__", ()))
    for name, value in vars(module).items():
        if name.startswith("_") or name in names:
            continue
        defined_here = getattr(value, "__module__", None) == module.__name__ and (
            inspect.isclass(value) or inspect.isfunction(value))
        assigned = name in order and "." not in name and not (
            inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value)
            or type(value).__module__ == "__future__")  # `from __future__ import annotations`
        if defined_here or assigned:
            names.append(name)
    return sorted(names, key=lambda n: order.get(n, len(order)))


def _rst_title(text: str, char: str = "=") -> list[str]:
    return [text, char * len(text), ""]


def api_module_page(modname: str, public: list[PublicName]) -> str:
    """The API page of one module (reStructuredText): its docstring, then each member.

    A class or function that the module only imports (``__all__`` re-exports it) links to
    its own module's page instead of being documented twice; a module-level value is shown
    with its ``repr`` when that is short.
    """
    module = importlib.import_module(modname)
    documented = source_names(module).documented
    exported = [p.name for p in public if p.module == modname and p.kind != "data"]
    lines = _rst_title(f"``{modname}``")
    if exported:
        lines += ["Exported as " + ", ".join(f"``popdyn.{n}``" for n in exported) + ".", ""]
    lines += [f".. automodule:: {modname}", ""]
    reexported = []
    for name in module_members(module):
        value = getattr(module, name, None)
        full = f"{modname}.{name}"
        if inspect.ismodule(value):
            continue
        if inspect.isclass(value) or inspect.isroutine(value):
            home = getattr(value, "__module__", "") or ""
            if home != modname:
                if home.startswith("popdyn"):
                    role = "class" if inspect.isclass(value) else "func"
                    reexported.append(f":{role}:`~{home}.{value.__qualname__}`")
                continue
            if inspect.isclass(value):
                lines += [f".. autoclass:: {full}", "   :members:", ""]
            else:
                lines += [f".. autofunction:: {full}", ""]
            continue
        short = isinstance(value, _PLAIN_VALUES) and len(repr(value)) <= MAX_VALUE_REPR
        if name in documented:
            lines += [f".. autodata:: {full}"] + ([] if short else ["   :no-value:"]) + [""]
        else:
            # (the bare name: automodule made this module the current one)
            lines += [f".. py:data:: {name}"] + ([f"   :value: {value!r}"] if short else []) + [""]
    if reexported:
        lines += ["Also importable from this module: " + ", ".join(reexported) + ".", ""]
    return "\n".join(lines)


def api_index_page(public: list[PublicName], modules: list[str], internal: list[str]) -> str:
    """The API index (reStructuredText): the package docstring, every public name grouped by
    the module that defines it (autosummary tables), and the module pages."""
    lines = _rst_title("API reference")
    lines += ["Every name of ``popdyn.__all__``, grouped by the module that defines it; each links to its "
              "documentation on that module's page (``popdyn.X`` and the full name are the same object). "
              "The pages are generated from the numpydoc docstrings.", "",
              ".. automodule:: popdyn", ""]
    import popdyn

    for p in public:
        if p.kind == "data":
            value = getattr(popdyn, p.name)
            lines += [f".. py:data:: popdyn.{p.name}"]
            if isinstance(value, _PLAIN_VALUES) and len(repr(value)) <= MAX_VALUE_REPR:
                lines += [f"   :value: {value!r}"]
            lines += ["", "   " + ("The version of the installed popdyn." if p.name == "__version__"
                                   else f"A public value of type ``{type(value).__name__}``."), ""]
    lines += _rst_title("Public names", "-")
    by_module: dict[str, list[PublicName]] = {}
    for p in public:
        if p.kind != "data":
            by_module.setdefault(p.module, []).append(p)
    for modname in sorted(by_module):
        lines += _rst_title(f":mod:`{modname}`", "~")
        lines += [f".. currentmodule:: {modname}", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {p.target[len(modname) + 1:]}" for p in by_module[modname]]
        lines.append("")
    lines += [".. currentmodule:: popdyn", ""]
    lines += _rst_title("Modules", "-")
    lines += [".. toctree::", "   :maxdepth: 1", ""] + [f"   {m}" for m in modules if m != "popdyn"] + [""]
    lines += _rst_title("Internal modules", "-")
    lines += ["Not part of the public API; documented because public docstrings refer to them.", "",
              ".. toctree::", "   :maxdepth: 1", ""] + [f"   {m}" for m in internal] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# the model pages
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Paper:
    """What the site knows about one paper: BibTeX fields and its folder under theory/."""

    arxiv: str
    title: str = ""
    authors: str = ""
    year: str = ""
    theory_module: str | None = None   #: e.g. "popdyn_theory.simsek2025"
    equations: Path | None = None      #: its equations.md, when installed


def _bibtex_field(entry: str, field: str) -> str:
    m = re.search(rf"\b{field}\s*=\s*\{{((?:[^{{}}]|\{{[^{{}}]*\}})*)\}}", entry)
    if not m:
        return ""
    text = m.group(1)
    for pat, rep in ((r"\{\\c\{([A-Za-z])\}\}|\\c\{([A-Za-z])\}", None), (r"\{\\'e\}|\\'e|\{\\'\{e\}\}", "é")):
        if rep is None:
            text = re.sub(pat, lambda mm: {"S": "Ş", "s": "ş", "c": "ç", "C": "Ç"}.get(mm.group(1) or mm.group(2),
                                                                                     mm.group(1) or mm.group(2)), text)
        else:
            text = re.sub(pat, rep, text)
    return " ".join(text.replace("{", "").replace("}", "").split())


def _authors(field: str) -> str:
    names = []
    for person in field.split(" and "):
        last, _, first = person.partition(",")
        names.append(f"{first.strip()} {last.strip()}".strip())
    return ", ".join(names)


def paper_entry_points() -> dict[str, str]:
    """arXiv id -> module of its claims (``popdyn.papers`` entry points)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value.split(":", 1)[0] for ep in entry_points(group="popdyn.papers")}


def paper_info(arxiv: str, modules: dict[str, str] | None = None) -> Paper:
    """Title and authors from popdyn's BibTeX; the ``equations.md`` of its theory folder."""
    from popdyn.citations import BIBTEX

    modules = paper_entry_points() if modules is None else modules
    entry = BIBTEX.get(arxiv, "")
    module = modules.get(arxiv)
    equations = None
    if module is not None:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / "equations.md"
            equations = path if path.is_file() else None
    return Paper(arxiv, _bibtex_field(entry, "title"), _authors(_bibtex_field(entry, "author")) if entry else "",
                 _bibtex_field(entry, "year"), module, equations)


def option_constraints(opt) -> str:
    """The constraints of a :class:`popdyn.model.Option` in words."""
    parts = []
    if opt.required:
        parts.append("required")
    if opt.choices is not None:
        parts.append("one of " + ", ".join(md_code(c) for c in opt.choices))
    if opt.positive:
        parts.append("> 0")
    if opt.minimum is not None:
        parts.append(f"≥ {opt.minimum:g}")
    if opt.maximum is not None:
        parts.append(f"≤ {opt.maximum:g}")
    if opt.check is not None:
        doc = first_sentence(getattr(opt.check, "__doc__", None))
        parts.append(md_escape(doc) if doc else f"checked by `{getattr(opt.check, '__name__', 'check')}`")
    return "; ".join(parts) or "–"


def _default(opt) -> str:
    if opt.default is None:
        return "–"
    if opt.kind == "bool":
        return "on" if opt.default else "off"
    return md_code(opt.default)


def options_table(options, verbs: bool = True) -> list[str]:
    """A Markdown table of :class:`popdyn.model.Option` objects."""
    head = "| flag | meaning | default | constraints |" + (" verbs |" if verbs else "")
    rule = "|---|---|---|---|" + ("---|" if verbs else "")
    rows = [head, rule]
    for o in options:
        kind = "switch" if o.kind == "bool" else o.kind
        row = f"| {md_code(o.flag)} ({kind}) | {md_escape(o.help)} | {_default(o)} | {option_constraints(o)} |"
        if verbs:
            row += " " + ", ".join(o.verbs) + " |"
        rows.append(row)
    return rows


def model_verbs(model) -> list[str]:
    """The verbs (``predict``, ``simulate``, ``compare``) that a model takes."""
    verbs = [v for v in ("predict", "simulate", "compare") if v in model.uses or model.options_for(v)]
    return [v for v in verbs if v != "compare" or model.compare]


def model_page(model, papers: list[Paper], claims: dict[str, list] | None = None, page_dir: Path | None = None) -> str:
    """The page of one registered model (Markdown, MyST); ``page_dir`` is the folder the page
    is written to (MyST resolves an include relative to the page, an absolute path relative
    to the source folder)."""
    claims = claims or {}
    name = model.name
    lines = [f"({model_label(name)})=", f"# {name}", "", md_escape(model.description[:1].upper() + model.description[1:])
             + ".", ""]
    home = getattr(model.build, "__module__", "") or ""
    if home.startswith("popdyn."):
        lines += [f"Declared in {{py:mod}}`{home}`" + (" (the default model of `predict`, `simulate` and "
                                                         "`compare`)." if model.default else "."), "",
                  "```{eval-rst}", f".. automodule:: {home}", "   :no-index:", "```", ""]
    lines += ["## Papers", ""]
    if papers:
        for p in papers:
            cite = f"[arXiv {p.arxiv}]({arxiv_url(p.arxiv)})"
            if p.title:
                cite += f": {md_escape(p.authors)} ({p.year}), *{md_escape(p.title)}*"
            lines.append(f"* {cite}")
        lines.append("")
    else:
        lines += ["This model declares no paper (`Model.papers` is empty); its equations are on the "
                  "[conventions page](../conventions.md).", ""]

    lines += ["## Options", "",
              f"From the model's declaration (`popdyn.model.Option`); `popdyn predict --model {name} --help` "
              "lists the same.", ""]
    lines += options_table(model.options) if model.options else ["This model declares no options of its own."]
    lines.append("")

    lines += ["## Command line", ""]
    for verb in model_verbs(model):
        own = [o.flag for o in model.options_for(verb)]
        common = sorted(model.uses_for(verb))
        lines.append(f"* `popdyn {verb} --model {name}`: its options " + (", ".join(md_code(f) for f in own) or "none")
                     + "; the verb's common options it reads: "
                     + (", ".join(md_code("--" + c.replace("_", "-")) for c in common) or "none") + ".")
    for cmd in model.commands:
        lines.append(f"* `popdyn {cmd.name}`: {md_escape(cmd.help)}.")
    lines.append("")
    for cmd in model.commands:
        if cmd.options:
            lines += [f"### `popdyn {cmd.name}`", ""] + options_table(cmd.options, verbs=False) + [""]

    for p in papers:
        paper_claims = claims.get(p.arxiv, [])
        if paper_claims:
            lines += [f"## Claims of arXiv {p.arxiv} checked by `popdyn verify`", "",
                      f"Measured values: {{ref}}`verification report <{verification_anchor(p.arxiv)}>`.",
                      ""]
            lines += [f"* `{c.name}`: {md_escape(c.description)}" for c in paper_claims]
            lines.append("")
    for p in papers:
        if p.equations is not None:
            path = Path(os.path.relpath(p.equations, page_dir)) if page_dir is not None else p.equations
            lines += ["```{include} " + path.as_posix(), ":heading-offset: 1", "```", ""]
        else:
            lines += [f"## Equations of arXiv {p.arxiv}", "",
                      "No `equations.md` is installed for this paper (no `popdyn.papers` entry point names a "
                      "folder of `theory/` for it).", ""]
    return "\n".join(lines)


def model_label(name: str) -> str:
    return "model-" + slug(name)


def models_index_page(models, papers: dict[str, Paper]) -> str:
    lines = ["# Models", "",
             "One page per model family of the registry (`popdyn models` lists the same); a model registered "
             "through the `popdyn.models` entry points gets its page here without an edit.", "",
             "| model | description | papers |", "|---|---|---|"]
    for m in models:
        refs = ", ".join(f"[{p}]({arxiv_url(p)})" for p in m.papers) or "–"
        lines.append(f"| [{m.name}]({slug(m.name)}.md) | {md_escape(m.description)} | {refs} |")
    lines += ["", "```{toctree}", ":hidden:", ""] + [slug(m.name) for m in models] + ["```", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# the verification report
# --------------------------------------------------------------------------------------
def verification_anchor(paper: str) -> str:
    return "verify-" + slug(paper)


def fmt_value(x) -> str:
    """A predicted/measured/tolerance value for a table cell."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return "inf" if math.isinf(x) and x > 0 else "−inf" if math.isinf(x) else f"{x:.6g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {fmt_value(v)}" for k, v in x.items()) + "}"
    return str(x)


def claim_of(row_claim: str, names: list[str]) -> str:
    """The claim a result row belongs to: the longest declared name that starts the row's label."""
    hits = [n for n in names if row_claim == n or row_claim.startswith(n + " ") or row_claim.startswith(n + "(")]
    return max(hits, key=len) if hits else row_claim.split(" ", 1)[0]


def verification_report(report: dict, claims: dict[str, list], papers: dict[str, Paper], *, command: str,
                        elapsed: float, mode: str = "quick", note: str = "", notebooks: dict[str, list[str]] | None = None,
                        models_by_paper: dict[str, list[str]] | None = None) -> str:
    """The report's Markdown from the JSON of ``popdyn verify --json`` (``{"claims": [...], "passed": bool}``).

    ``claims`` maps each paper to its declared claims (name and description); ``notebooks``
    the paper to the notebook pages that draw its figures; ``models_by_paper`` the paper to
    the models that cite it.
    """
    rows = report["claims"]
    notebooks = notebooks or {}
    models_by_paper = models_by_paper or {}
    n_pass = sum(bool(r["passed"]) for r in rows)
    by_paper: dict[str, list[dict]] = {}
    for r in rows:
        by_paper.setdefault(r["paper"], []).append(r)
    seeds = sorted({r.get("seed") for r in rows}, key=str)
    failed = [r for r in rows if not r["passed"]]
    lines = ["## Summary", "",
             f"**{n_pass} of {len(rows)} checks pass** ({'all pass' if not failed else f'{len(failed)} FAIL'}), "
             f"from {sum(len(claims.get(p, [])) or 1 for p in by_paper)} claims of {len(by_paper)} papers; "
             + {"quick": "quick sizes", "full": "full sizes", "saved": "a saved run"}.get(mode, mode)
             + f": `{command}`{note}, seed {', '.join(map(str, seeds))}"
             + (f", {elapsed:.0f} s on the machine that built this page." if math.isfinite(elapsed) else "."), "",
             "A paper's seconds are the sum over its claims; a case's seconds are its claim's time divided "
             "evenly over the claim's cases (as `popdyn verify` reports them).", "",
             "| paper | title | checks | pass | seconds |", "|---|---|---|---|---|"]
    for paper, prow in by_paper.items():
        p = papers.get(paper, Paper(paper))
        ok = sum(bool(r["passed"]) for r in prow)
        secs = _paper_seconds(prow)
        lines.append(f"| {{ref}}`{paper} <{verification_anchor(paper)}>` | {md_escape(p.title) or '–'} | {len(prow)} | "
                     f"{ok}{'' if ok == len(prow) else ' (**' + str(len(prow) - ok) + ' FAIL**)'} | {secs:.1f} |")
    lines.append("")
    if failed:
        lines += ["Failing checks: " + "; ".join(md_code(f"{r['paper']} {r['claim']}") for r in failed) + ".", ""]
    missing = [paper for paper in claims if paper not in by_paper]
    if missing:
        lines += ["Papers whose claims are installed but have no result in this run: "
                  + ", ".join(f"{{ref}}`{p} <{verification_anchor(p)}>`" for p in missing) + ".", ""]
    for paper in list(by_paper) + missing:
        prow = by_paper.get(paper, [])
        p = papers.get(paper, Paper(paper))
        lines += [f"({verification_anchor(paper)})=", f"## arXiv {paper}" + (f": {md_escape(p.title)}" if p.title
                                                                             else ""), ""]
        refs = [f"[arXiv {paper}]({arxiv_url(paper)})"]
        refs += [f"model [{m}](models/{slug(m)}.md)" for m in models_by_paper.get(paper, [])]
        refs += [f"notebook [{nb}](notebooks/{nb}.ipynb)" for nb in notebooks.get(paper, [])]
        lines += ["See " + ", ".join(refs) + ".", ""]
        declared = claims.get(paper, [])
        if not prow:
            lines += ["No result in this run (the report's JSON has no row of this paper); its claims: "
                      + ", ".join(f"`{c.name}`" for c in declared) + ".", ""]
            continue
        names = [c.name for c in declared]
        groups: dict[str, list[dict]] = {}
        for r in prow:
            groups.setdefault(claim_of(r["claim"], names), []).append(r)
        described = {c.name: c.description for c in declared}
        for cname, crows in groups.items():
            ok = sum(bool(r["passed"]) for r in crows)
            lines += [f"### `{cname}`: {ok}/{len(crows)} pass", ""]
            if cname in described:
                lines += [md_escape(described[cname]), ""]
            lines += ["| case | predicted | measured | tolerance | result | seconds | seed |",
                      "|---|---|---|---|---|---|---|"]
            details = []
            for r in crows:
                case = r["claim"][len(cname):].strip() or "–"
                lines.append(f"| {md_escape(case)} | {md_escape(fmt_value(r['predicted']))} | "
                             f"{md_escape(fmt_value(r['measured']))} | {md_escape(fmt_value(r['tolerance']))} | "
                             f"{'pass' if r['passed'] else '**FAIL**'} | {fmt_value(float(r.get('seconds', 0.0)))} | "
                             f"{r.get('seed', '–')} |")
                if r.get("details"):
                    details.append(f"* {md_escape(case)}: {md_escape(r['details'])}")
            lines.append("")
            if details:
                lines += ["Details:", ""] + details + [""]
    return "\n".join(lines)


def verify_groups(papers: list[str], jobs: int) -> list[list[str]]:
    """The papers split over ``jobs`` processes (round robin over the sorted ids).

    Each claim draws from its own stream keyed by the seed and its name, so its result does not
    depend on which other papers run beside it (:func:`popdyn.verification.verify`): the merged
    rows are those of one ``popdyn verify`` over all papers.
    """
    papers = sorted(papers)
    jobs = max(1, min(jobs, len(papers)))
    return [papers[i::jobs] for i in range(jobs)] if papers else [[]]


def _paper_seconds(rows: list[dict]) -> float:
    # verify() reports each claim's time divided evenly over its rows
    return float(sum(float(r.get("seconds", 0.0)) for r in rows))


# --------------------------------------------------------------------------------------
# notebooks
# --------------------------------------------------------------------------------------
def notebook_sources(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("*.py"))


def notebooks_by_paper(sources: list[Path], papers: dict[str, str]) -> dict[str, list[str]]:
    """arXiv id -> notebook names, matched by the paper's theory folder (``simsek2025`` ->
    ``simsek2025_multi_index``)."""
    out: dict[str, list[str]] = {}
    for arxiv, module in papers.items():
        folder = module.rsplit(".", 1)[-1]
        out[arxiv] = [s.stem for s in sources if s.stem == folder or s.stem.startswith(folder + "_")]
    return out


def convert_notebooks(sources: list[Path], outdir: Path) -> list[str]:
    """Write each jupytext percent script as ``outdir/<name>.ipynb`` (unexecuted).

    A hidden first cell moves the kernel into the script's own folder, where Jupyter would
    start it, so that the notebook's relative paths (``../examples``) mean what they mean
    when it is opened from ``notebooks/``.
    """
    import jupytext
    from nbformat.v4 import new_code_cell

    names = []
    for src in sources:
        nb = jupytext.read(src)
        nb.metadata.pop("jupytext", None)
        cd = new_code_cell(f"import os\nos.chdir({str(src.resolve().parent)!r})",
                           metadata={"tags": ["remove-cell"]})
        nb.cells.insert(0, cd)
        for i, cell in enumerate(nb.cells):  # fixed ids, so that an unchanged notebook is not rewritten
            cell["id"] = f"cell-{i}"
        write_if_changed(outdir / f"{src.stem}.ipynb", jupytext.writes(nb, fmt="ipynb"))
        names.append(src.stem)
    return names


def notebooks_index_page(names: list[str], sources: list[Path]) -> str:
    lines = ["# Notebooks", "",
             "The jupytext scripts of `notebooks/`, executed while this site was built, with their outputs. "
             "The build runs them in the fast mode (`POPDYN_FAST=1`, the sizes the test suite uses); "
             "`POPDYN_DOCS_FULL=1` builds them at full size. Each can also be run as a script: "
             "`python notebooks/NAME.py`.", "", "| notebook | what it shows |", "|---|---|"]
    for name, src in zip(names, sources):
        lines.append(f"| [{name}]({name}.ipynb) | {md_escape(_notebook_title(src))} |")
    lines += ["", "```{toctree}", ":hidden:", ""] + names + ["```", ""]
    return "\n".join(lines)


def _notebook_title(src: Path) -> str:
    for line in src.read_text(encoding="utf-8").splitlines():
        if line.startswith("# # "):
            return line[4:].strip()
    return src.stem


# --------------------------------------------------------------------------------------
# everything at once
# --------------------------------------------------------------------------------------
def generate(srcdir: Path, root: Path) -> dict:
    """Write the generated pages under ``srcdir`` (the Sphinx source folder); ``root`` is the
    repository (for ``notebooks/``).  Returns what the verification report needs."""
    import shutil

    from popdyn.model import models
    from popdyn.verification import load_claims

    errors: list[str] = []
    public = public_names(errors)
    modules, internal = api_modules()
    registry = [m for _, m in sorted(models().items())]
    entry = paper_entry_points()
    arxiv_ids = sorted({p for m in registry for p in m.papers} | set(entry))
    papers = {p: paper_info(p, entry) for p in arxiv_ids}
    claims = load_claims()
    sources = notebook_sources(root)

    pages: dict[Path, str] = {Path("api/index.rst"): api_index_page(public, modules, internal)}
    for modname in modules + internal:
        if modname != "popdyn":
            pages[Path(f"api/{modname}.rst")] = api_module_page(modname, public)
    pages[Path("models/index.md")] = models_index_page(registry, papers)
    for m in registry:
        pages[Path(f"models/{slug(m.name)}.md")] = model_page(m, [papers[p] for p in m.papers], claims,
                                                              page_dir=srcdir / "models")
    pages[Path("notebooks/index.md")] = notebooks_index_page([s.stem for s in sources], sources)

    keep = set(pages) | {Path(f"notebooks/{s.stem}.ipynb") for s in sources}
    for folder in GENERATED_DIRS:
        base = srcdir / folder
        if base.exists():
            for path in base.rglob("*"):
                if path.is_file() and path.relative_to(srcdir) not in keep:
                    path.unlink()
        for path in sorted(base.rglob("*"), reverse=True) if base.exists() else ():
            if path.is_dir() and not any(path.iterdir()):
                shutil.rmtree(path)
    for rel, text in pages.items():
        write_if_changed(srcdir / rel, text)
    convert_notebooks(sources, srcdir / "notebooks")

    models_by_paper: dict[str, list[str]] = {}
    for m in registry:
        for p in m.papers:
            models_by_paper.setdefault(p, []).append(m.name)
    return {"papers": papers, "claims": claims, "models_by_paper": models_by_paper,
            "notebooks": notebooks_by_paper(sources, entry), "public": public, "errors": errors}
