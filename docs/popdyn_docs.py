"""Sphinx extension of the popdyn site: generated pages, the living verification report,
``popdyn.X`` references, and numpydoc's parse warnings made build warnings.

Events used:

* ``builder-inited``: start ``popdyn verify --json`` in subprocesses (the papers split over
  the cores, :func:`gen_pages.verify_groups`), so that it runs while the other pages (the
  notebooks above all) are read; write the generated pages (:func:`gen_pages.generate`);
  set the notebooks' fast mode and output folder;
* ``source-read`` of ``verification``: wait for that subprocess and append the report;
* ``env-get-outdated``: the report is re-read on every build (its numbers are live);
* ``missing-reference``: ``popdyn.X`` (a name of ``popdyn.__all__``) resolves to the
  object's documentation on its module's page (``popdyn.verify`` ->
  ``popdyn.verification.verify``);
* ``autodoc-process-docstring``: a numpydoc parse warning (e.g. an unknown section
  header) becomes a Sphinx warning, so ``-W`` fails on it.

Environment variables:

* ``POPDYN_DOCS_FULL=1``: the full verification report (``popdyn verify`` without
  ``--quick``) and the notebooks at full size (``POPDYN_FAST=0``);
* ``POPDYN_DOCS_VERIFY_JSON=FILE``: take the report from a saved ``popdyn verify --json``
  output instead of running it (e.g. a full run made earlier);
* ``POPDYN_DOCS_VERIFY_JOBS=N``: processes that share the papers (default: the cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from sphinx.util import logging

import gen_pages

logger = logging.getLogger(__name__)

#: The page that holds the report (``docs/verification.md``).
REPORT_DOC = "verification"
#: Seed of the report's run (``popdyn verify --seed``), fixed so that the report is reproducible.
REPORT_SEED = 0

_STATE: dict = {}


def full_mode() -> bool:
    return os.environ.get("POPDYN_DOCS_FULL", "0") == "1"


def verify_command() -> list[str]:
    """The ``popdyn verify`` command whose JSON the report shows."""
    cmd = ["popdyn", "verify", "--json", "--seed", str(REPORT_SEED)]
    return cmd if full_mode() else cmd[:2] + ["--quick"] + cmd[2:]


def _start_verify(out: Path) -> None:
    from popdyn.verification import list_papers

    cmd = verify_command()
    jobs = int(os.environ.get("POPDYN_DOCS_VERIFY_JOBS", os.cpu_count() or 1))
    procs = []
    for i, group in enumerate(gen_pages.verify_groups(list(list_papers()), jobs)):
        stdout, stderr = (open(out / f"verify{i}.{ext}", "w+b") for ext in ("json", "err"))
        proc = subprocess.Popen([sys.executable, "-m", "popdyn", *cmd[1:2], *group, *cmd[2:]], stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL, cwd=out)
        procs.append((proc, stdout, stderr, group))
    _STATE["verify"] = {"procs": procs, "cmd": " ".join(cmd), "t0": time.perf_counter()}
    logger.info(f"[popdyn] started `{' '.join(cmd)}` for the verification report ({len(procs)} processes)")


def _builder_inited(app) -> None:
    srcdir = Path(app.srcdir)
    root = srcdir.parent
    full = full_mode()
    # the notebooks' kernels inherit this environment (never MPLBACKEND: the kernel's inline
    # backend draws the figures into the pages)
    os.environ["POPDYN_FAST"] = "0" if full else "1"
    out = Path(tempfile.mkdtemp(prefix="popdyn_docs_"))
    os.environ["POPDYN_NOTEBOOK_OUT"] = str(out)
    _STATE["tmp"] = out
    saved = os.environ.get("POPDYN_DOCS_VERIFY_JSON")
    if saved:
        _STATE["verify"] = {"file": Path(saved)}
    else:  # started first: it runs while the pages are generated and read
        _start_verify(out)
    _STATE.update(gen_pages.generate(srcdir, root))
    for error in _STATE["errors"]:
        logger.warning(f"[popdyn] {error}", location="api/index")


def _report_json() -> tuple[dict | None, str, float, str]:
    """(parsed JSON or None, the command, seconds, an error message)."""
    job = _STATE["verify"]
    if "file" in job:
        try:
            return json.loads(job["file"].read_text(encoding="utf-8")), f"popdyn verify --json (saved in " \
                f"{job['file'].name})", float("nan"), ""
        except (OSError, ValueError) as exc:
            return None, str(job["file"]), float("nan"), f"could not read POPDYN_DOCS_VERIFY_JSON: {exc}"
    if "result" not in job:
        rows, errors = [], []
        for proc, stdout, stderr, group in job["procs"]:
            code = proc.wait()
            stdout.seek(0)
            stderr.seek(0)
            text, err = stdout.read().decode(), stderr.read().decode(errors="replace")
            stdout.close()
            stderr.close()
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            # exit 1: some claim failed (the report shows which); anything else is a failure to run
            if data is None or code not in (0, 1):
                errors.append(f"`popdyn verify {' '.join(group)}` exited with {code}: " + err.strip()[-2000:])
            else:
                rows += data["claims"]
        job["seconds"] = time.perf_counter() - job["t0"]
        if errors:
            job["result"] = (None, "; ".join(errors))
        else:  # in the order of one run over all papers: sorted ids, each paper's rows as run
            order = {paper: i for i, paper in enumerate(sorted({r["paper"] for r in rows}))}
            rows.sort(key=lambda r: order[r["paper"]])
            job["result"] = ({"claims": rows, "passed": all(r["passed"] for r in rows)}, "")
    data, error = job["result"]
    return data, job["cmd"], job["seconds"], error


def _source_read(app, docname, source) -> None:
    if docname != REPORT_DOC:
        return
    data, command, seconds, error = _report_json()
    if data is None:
        logger.warning(f"[popdyn] verification report: {error}", location=docname)
        source[0] += f"\n\n```{{error}}\nThe report could not be made: {error}\n```\n"
        return
    mode = "saved" if "file" in _STATE["verify"] else "quick" if "--quick" in command else "full"
    n_procs = len(_STATE["verify"].get("procs", ()))
    note = f" (the papers split over {n_procs} processes)" if n_procs > 1 else ""
    source[0] += "\n" + gen_pages.verification_report(
        data, _STATE["claims"], _STATE["papers"], command=command, elapsed=seconds, mode=mode, note=note,
        notebooks=_STATE["notebooks"], models_by_paper=_STATE["models_by_paper"])
    failed = [r for r in data["claims"] if not r["passed"]]
    if failed:
        logger.info(f"[popdyn] verification report: {len(failed)} checks FAIL (shown on the page)")


def _env_get_outdated(app, env, added, changed, removed):
    return [REPORT_DOC] if REPORT_DOC in env.found_docs else []


def _public_targets() -> dict[str, str]:
    if "targets" not in _STATE:
        _STATE["targets"] = {f"popdyn.{p.name}": p.target for p in _STATE["public"] if p.kind != "data"}
    return _STATE["targets"]


def _missing_reference(app, env, node, contnode):
    """Resolve a Python reference that Sphinx's exact lookup missed, in two ways only:

    * ``popdyn.X...`` where ``X`` is a name of ``popdyn.__all__``: the object's own page;
    * a name as Python sees it in the namespace of the module whose docstring holds it
      (``NumericalError`` in :mod:`popdyn.ode`, imported there from :mod:`popdyn.errors`).

    Anything else stays broken, and ``-n -W`` fails the build on it.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip(".~")
    for canonical in (_via_public(target), _via_namespace(target, node.get("py:module"), node.get("py:class"))):
        if canonical is None or canonical == target:
            continue
        new = node.deepcopy()
        new["reftarget"] = canonical
        found = env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"], canonical, new,
                                                  contnode)
        if found is not None:
            return found
    return None


def _via_public(target: str) -> str | None:
    table = _public_targets()
    head, rest = target, ""
    while head and head not in table:
        head, _, tail = head.rpartition(".")
        rest = tail + ("." + rest if rest else "")
    return None if not head else table[head] + ("." + rest if rest else "")


def _via_namespace(target: str, modname: str | None, clsname: str | None) -> str | None:
    import importlib
    import inspect

    if not modname or not modname.startswith("popdyn") or target.startswith("popdyn."):
        return None
    try:
        scope = importlib.import_module(modname)
    except Exception:  # the module itself is broken: autodoc reports it
        return None
    first, _, rest = target.partition(".")
    obj = getattr(scope, first, None)
    if obj is None and clsname:
        obj = getattr(getattr(scope, clsname.split(".")[0], None), first, None)
    if inspect.ismodule(obj):
        home = obj.__name__
    elif inspect.isclass(obj) or inspect.isfunction(obj):
        home = f"{obj.__module__}.{obj.__qualname__}"
    else:
        return None
    return home + ("." + rest if rest else "") if home.startswith("popdyn") else None


def _numpydoc_warnings(app, what, name, obj, options, lines) -> None:
    """Run numpydoc's parser first and report its warnings (numpydoc only ``warnings.warn``s)."""
    if what == "module":
        return
    from numpydoc.docscrape import NumpyDocString

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            NumpyDocString("\n".join(lines))
        except Exception as exc:  # numpydoc raises the same error right after; say where
            caught.append(warnings.WarningMessage(str(exc), UserWarning, "", 0))
    for w in caught:
        logger.warning(f"[numpydoc] {name}: {w.message}", location=_where(obj))


def _where(obj):
    import inspect

    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
    except (TypeError, OSError):
        return None


def _build_finished(app, exc) -> None:
    for proc, *_ in _STATE.get("verify", {}).get("procs", ()):
        if proc.poll() is None:  # the build stopped before the report was read
            proc.kill()
            proc.wait()
    tmp = _STATE.get("tmp")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def setup(app):
    app.connect("builder-inited", _builder_inited)
    app.connect("source-read", _source_read)
    app.connect("env-get-outdated", _env_get_outdated)
    app.connect("missing-reference", _missing_reference)
    app.connect("autodoc-process-docstring", _numpydoc_warnings, priority=400)
    app.connect("build-finished", _build_finished)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
