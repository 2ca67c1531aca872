r"""Sweeps and phase diagrams: any verb of any registered model over a grid of parameters,
with a resumable result store, a local process pool or a dask.distributed cluster.

A sweep is a configuration (TOML or JSON, or the same dict in Python)::

    model = "multi-index"           # any registered model (`popdyn models`)
    verb = "predict"                # predict | simulate | compare | a model command (threshold, ...)
    seed = 0                        # root of every point's seed (SeedSequence, below)
    replicas = 2                    # independent runs (seeds) of every point
    outputs = ["u_final"]           # dotted paths into the verb's --json result to keep (default: all)
    trajectories = false            # keep each point's trajectory (.npz; verbs with --out)

    [base]                          # options shared by every point (the verb's flags, as names)
    student = "hermite:0,0,0,1,0.5"
    gram = "equiangular"

    [grid]                          # Cartesian product: one axis per name
    k = [2, 3, 4, 5]
    beta = { linspace = [0.05, 0.6, 12] }   # also logspace, geomspace, range

    [zip]                           # names that vary together (one axis), optional
    [[points]]                      # an explicit list of points (one more axis), optional
    [format]                        # options built from variables: covariance = "spiked:kappa={kappa},align=1"

    [prediction]                    # a second sweep: the predicted boundary of the plot
    verb = "threshold"              # (model: default the sweep's; base, format, grid as above)
    over = ["k"]                    # the swept variables it varies: one (a line) or two (a field)
    output = "beta_c"               # its predicted value; level = ..., the field's contour (else: null/non-null)
    [plot]                          # x, y (a swept variable each), value (an output), reduce (REDUCERS),
                                    # xscale, yscale, value_scale (linear | log), title, label

The points are the product of the axes (each ``grid`` name, the ``zip`` block, the ``points``
list), each merged over ``base``.  A swept name is an option of the verb, or a variable that a
``format`` template uses (``{kappa}``); templates substitute values, nothing in a configuration
is ever evaluated.  The prediction's values of its ``over`` variables are the sweep's, or its
own ``grid`` (e.g. a finer one).

How a point runs
----------------
Every point runs **the command a user would type**: ``popdyn VERB --model MODEL --flag=value
... --seed S --json`` through :func:`popdyn.cli.main`, in the worker, with its standard output
captured.  The record keeps that ``--json`` result, exactly; the point's options are parsed,
checked and refused exactly as on the command line, by the same code, and a failure is the
same one-line message and exit code.  ``record["argv"]`` reproduces the point on its own.

Seeds
-----
A point's seed is drawn from :class:`numpy.random.SeedSequence` with entropy the sweep's
``seed`` and spawn key the hash of the point's canonical parameters (model, verb, its typed
options) and its replica index (:func:`point_seed`).  A point's seed, and so its result, depends
on nothing else: not on the other points, their order, the executor or the number of workers.
Every point runs with one BLAS thread whatever the executor, so results are bit-for-bit the
same serially, in a process pool or on a dask cluster (and a pool of ``n`` workers does not
oversubscribe ``n`` cores).

The store
---------
:class:`popdyn._store.ResultStore`: one checksummed JSON record per point and replica, written
atomically by the process that drives the sweep (so workers need no shared file system), keyed
by the hash of the point's parameters; a rerun skips the finished points, and a damaged record is
detected and recomputed.  A killed or interrupted sweep (Ctrl-C, ``SIGTERM``, ``SIGKILL``)
resumes when rerun, losing at most the points that were running.  Failed points are recorded
with their error and listed at the end; they never stop the others (rerun with
``retry_failed=True`` to compute them again).

A record holds ``key``, ``model``, ``verb``, ``point`` (the swept variables), ``replica``,
``seed``, ``options`` (typed, as parsed), ``argv`` (the command line), ``status`` (``ok`` or
``failed``), ``exit_code``, ``error`` (the command line's one-line message), ``stderr`` (its
warnings), ``outputs`` (the kept paths) or ``result`` (the whole ``--json`` result), ``spec``
(the verb's complete spec, defaults included: the record file works as ``--problem FILE``),
``versions``, ``seconds``, ``finished`` (UTC), ``array`` (the trajectory file) and ``checksum``.
A rerun reuses a record that kept the outputs (and trajectory) the configuration asks for.

References
----------
The examples in ``examples/`` draw the :math:`\beta_c` phase diagram of arXiv 2411.08798
(abstract; theory/simsek2025/equations.md, "Equiangular index vectors") and the escape picture
of arXiv 2309.03843 (theory/mousavi2023/equations.md).

Examples
--------
>>> import tempfile
>>> config = {"model": "multi-index", "verb": "threshold",
...           "base": {"student": "he3", "teacher": "he3"}, "grid": {"k": [2, 3, 5]},
...           "outputs": ["beta_c"]}
>>> res = sweep(config, tempfile.mkdtemp(), executor="serial", progress=False)
>>> [(row["k"], row["beta_c"]) for row in res.table()]
[(2, 0.3333333333333333), (3, 0.25), (5, 0.16666666666666666)]
>>> res.counts["computed"], sweep(config, res.store, executor="serial", progress=False).counts["skipped"]
(3, 3)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import math
import numbers
import os
import re
import sys
import threading
import time
from pathlib import Path

from ._store import ResultStore, canonical_json, record_key

__all__ = ["sweep", "load", "load_config", "SweepConfig", "SweepResult", "SweepAborted", "run_point",
           "point_seed", "plot_sweep", "EXECUTORS", "REDUCERS", "MAX_POINTS"]

#: The executors: ``serial`` (in this process, for debugging), ``pool`` (local processes, the
#: default) and ``dask`` (a dask.distributed cluster: ``scheduler`` or ``dask_local``).
EXECUTORS = ("pool", "serial", "dask")
#: Most runs (points x replicas) in one sweep: 10^6 records of ~1 KB are a gigabyte of store.
MAX_POINTS = 10**6
#: Largest configuration file read (bytes); explicit point lists of 10^5 entries fit.
MAX_CONFIG_BYTES = 10**7
#: Keys of a configuration.
CONFIG_KEYS = ("model", "verb", "seed", "replicas", "outputs", "trajectories", "base", "grid", "zip", "points",
               "format", "prediction", "plot", "description")
#: Keys of the ``[prediction]`` table.
PREDICTION_KEYS = ("model", "verb", "over", "base", "grid", "format", "output", "level", "label", "scale")
#: Keys of the ``[plot]`` table.
PLOT_KEYS = ("x", "y", "value", "reduce", "xscale", "yscale", "value_scale", "title", "label")
#: Value generators in ``grid``/``zip`` (numpy.linspace, logspace (base 10), geomspace, arange).
GENERATORS = ("linspace", "logspace", "geomspace", "range")
#: The verbs that build a model's problem (the others are the models' own commands).
MODEL_VERBS = ("predict", "simulate", "compare")
#: Run options of the model verbs that no model declares (the command line's own limits).
VERB_RUN_OPTIONS = {"predict": ("max_ode_steps",), "simulate": ("max_steps",), "compare": ("max_steps",)}
#: Options the sweep sets itself (refused in a configuration, with the reason).
MANAGED = {"seed": "the sweep draws every point's seed (root `seed` and `replicas`)",
           "out": "trajectories are kept with `trajectories = true`",
           "checkpoint": "a sweep resumes by points", "checkpoint_every": "a sweep resumes by points",
           "plot": "the sweep draws its own plot (`[plot]`)", "quiet": "points run quietly",
           "json": "points always give --json", "model": "the model is the top-level `model`",
           "problem": "give the options themselves"}
#: Keys of a result that are wall-clock durations: the only fields of a point's result that
#: differ between two runs of the same point (compare results without them).
TIMING_KEYS = ("wall_time_s",)
#: Exit code of a point that was interrupted (Ctrl-C while it ran in this process).
_EXIT_INTERRUPTED = 130


class SweepAborted(RuntimeError):
    """The sweep could not go on (a worker process died); finished points are in the store."""


# ======================================================================================
# reducers: an array output -> one number (for plots and tables)
# ======================================================================================
def _as_array(value):
    import numpy as np

    return np.asarray([np.nan if v is None else v for v in _flat(value)], dtype=float)


def _flat(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _flat(v)
    else:
        yield value


def _reduce_abs(value) -> float:
    a = _as_array(value)
    if a.size != 1:
        raise ValueError(f"`reduce = \"abs\"` takes a single number, got {a.size} values (use absmax).")
    return float(abs(a[0]))


def _reduce_finite(value) -> float:
    import numpy as np

    a = _as_array(value)
    return float(np.all(np.isfinite(a))) if a.size else float("nan")


def _reduce(fn):
    def reducer(value) -> float:
        a = _as_array(value)
        return float(fn(a)) if a.size else float("nan")

    return reducer


#: ``[plot] reduce``: how an output that is an array (or a null) becomes one number.  Nulls
#: count as NaN (so ``max`` of an array with a null is NaN); ``finite`` is 1 when every entry is
#: a finite number and 0 otherwise (e.g. an escape time that is null when the flow stalls).
REDUCERS = {
    "abs": _reduce_abs,
    "spread": _reduce(lambda a: a.max() - a.min()),
    "max": _reduce(lambda a: a.max()),
    "min": _reduce(lambda a: a.min()),
    "mean": _reduce(lambda a: a.mean()),
    "absmax": _reduce(lambda a: abs(a).max()),
    "norm": _reduce(lambda a: (a ** 2).sum() ** 0.5),
    "finite": _reduce_finite,
}


# ======================================================================================
# configuration
# ======================================================================================
def _where(config) -> str:
    return f"sweep config {config!r}" if isinstance(config, (str, Path)) else "sweep config"


def read_config_file(path) -> dict:
    """The configuration table of a ``.toml`` or ``.json`` file (``ValueError`` names the file)."""
    p = Path(path).expanduser()
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"sweep config {str(path)!r} is {size} bytes; a configuration is at most "
                             f"{MAX_CONFIG_BYTES}.")
        raw = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"sweep config {str(path)!r} cannot be read: {(exc.strerror or str(exc)).rstrip('.')}."
                         ) from None
    toml = p.suffix.lower() == ".toml"
    if p.suffix.lower() not in (".toml", ".json"):
        raise ValueError(f"sweep config {str(path)!r} must end in .toml or .json.")
    try:
        if toml:
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        msg = " ".join(str(exc).split())[:160]
        raise ValueError(f"sweep config {str(path)!r} is not valid {'TOML' if toml else 'JSON'}: {msg}.") from None
    if not isinstance(data, dict):
        raise ValueError(f"sweep config {str(path)!r} must hold a table, got {type(data).__name__}.")
    return data


def _table(table, where: str) -> dict:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {type(table).__name__} {str(table)[:60]!r}.")
    return table


def _check_keys(table: dict, allowed, where: str) -> None:
    _table(table, where)
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(allowed)}.")


def _scalar(value, where: str):
    """A configuration value: int, float (finite), str or bool."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value}.")
        return value
    raise ValueError(f"{where} must be a number, a string or a boolean, got {type(value).__name__} {value!r}.")


def _values(spec, where: str) -> list:
    """The values of one swept name: a list of scalars or a generator table."""
    import numpy as np

    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"{where} is an empty list; give at least one value.")
        return [_scalar(v, f"{where}[{i}]") for i, v in enumerate(spec)]
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in GENERATORS:
            raise ValueError(f"{where} must be a list of values or one generator table such as "
                             f"{{ linspace = [0, 1, 11] }}; generators: {', '.join(GENERATORS)}; got {spec!r}.")
        (name, args), = spec.items()
        if not isinstance(args, list) or not all(isinstance(a, numbers.Real) and not isinstance(a, bool)
                                                 for a in args):
            raise ValueError(f"{where}.{name} must be a list of numbers, got {args!r}.")
        if name == "range":
            if len(args) not in (2, 3) or not all(float(a).is_integer() for a in args) or (len(args) == 3
                                                                                        and args[2] == 0):
                raise ValueError(f"{where}.range must be [start, stop] or [start, stop, step] (integers, step != 0; "
                                 f"stop excluded), got {args!r}.")
            out = list(range(*(int(a) for a in args)))
        else:
            if len(args) != 3 or not float(args[2]).is_integer() or not 1 <= args[2] <= MAX_POINTS:
                raise ValueError(f"{where}.{name} must be [start, stop, num] with an integer num in [1, {MAX_POINTS}], "
                                 f"got {args!r}.")
            if name == "geomspace" and (args[0] == 0 or args[1] == 0 or (args[0] > 0) != (args[1] > 0)):
                raise ValueError(f"{where}.geomspace needs non-zero start and stop of the same sign, got {args!r}.")
            with np.errstate(over="raise"):
                try:
                    out = [float(v) for v in getattr(np, name)(float(args[0]), float(args[1]), int(args[2]))]
                except FloatingPointError:
                    raise ValueError(f"{where}.{name}: values overflow, got {args!r}.") from None
        if not out:
            raise ValueError(f"{where}.{name} {args!r} gives no value.")
        if not all(math.isfinite(v) for v in out):
            raise ValueError(f"{where}.{name} {args!r} gives non-finite values.")
        return out
    raise ValueError(f"{where} must be a list of values or a generator table ({', '.join(GENERATORS)}), got "
                     f"{type(spec).__name__} {spec!r}.")


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIELD = re.compile(r"\{([^{}]*)\}")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.([A-Za-z_][A-Za-z0-9_\-]*|[0-9]+))*$")


def _check_name(name, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}: names are option names such as t_end or beta (letters, digits, _), got {name!r}.")
    return name


def _format_value(value) -> str:
    """A value as the command line's text: floats exactly (``repr``), the rest as ``str``."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _fill_template(template: str, values: dict, where: str) -> str:
    def repl(m):
        name = m.group(1)
        if name not in values:
            names = ", ".join(sorted(values)) or "none"
            raise ValueError(f"{where}: {{{name}}} names no variable; variables: {names}.")
        return _format_value(values[name])

    return _FIELD.sub(repl, template)


@dataclasses.dataclass(frozen=True)
class _Point:
    """One point of a (sub-)sweep: its coordinates (swept variables) and the options it passes."""

    index: int
    coords: dict
    options: dict   # typed, without the seed


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One verb of one model over a list of points: the main sweep or the prediction."""

    model: str
    verb: str
    base: dict
    axes: tuple          # each a list of dicts (partial assignments)
    templates: dict
    outputs: tuple | None
    trajectories: bool
    replicas: int
    variables: tuple     # swept names, in axis order
    grid_only: bool      # the axes are all single-name grid axes (a full product)

    def verb_label(self) -> str:
        return f"popdyn {self.verb}" + (f" --model {self.model}" if self.verb in MODEL_VERBS else "")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A validated sweep configuration (:func:`load_config`).

    Attributes
    ----------
    raw : dict
        The configuration as given (written to the store's ``sweep.json``).
    seed : int
        Root entropy of the points' seeds.
    plan : _Plan
        The main sweep; ``prediction`` the optional predicted boundary (a second plan).
    plot : dict
        The ``[plot]`` table (possibly empty).
    points, prediction_points : tuple
        The expanded points.
    source : str or None
        The file the configuration came from.
    """

    raw: dict
    seed: int
    plan: _Plan
    prediction: _Plan | None
    plot: dict
    points: tuple
    prediction_points: tuple
    source: str | None = None
    prediction_output: str | None = None
    prediction_level: float | None = None
    prediction_label: str | None = None
    prediction_scale: str = "linear"

    @property
    def model(self) -> str:
        return self.plan.model

    @property
    def verb(self) -> str:
        return self.plan.verb

    @property
    def replicas(self) -> int:
        return self.plan.replicas


def load_config(config) -> SweepConfig:
    """Read and validate a sweep configuration: a ``.toml``/``.json`` path or a dict.

    Everything is checked before anything runs: unknown keys, unknown model, verb or option
    names (with the valid choices), wrong types, and every point's options through the
    command line's own parser and the model's ``validate`` hook.  Raises ``ValueError`` or
    ``TypeError`` naming the key, the constraint and the value.
    """
    source = None
    if isinstance(config, (str, Path)):
        source = str(config)
        raw = read_config_file(config)
    elif isinstance(config, SweepConfig):
        return config
    elif isinstance(config, dict):
        raw = config
    else:
        raise TypeError(f"`config` must be a path to a .toml/.json file or a dict, got {type(config).__name__}.")
    where = _where(config)
    raw = json.loads(json.dumps(raw))  # a plain, private copy (tomllib gives plain types too)
    _check_keys(raw, CONFIG_KEYS, where)
    from .model import default_model

    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{where}: `seed` must be a non-negative integer, got {seed!r}.")
    replicas = raw.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"{where}: `replicas` must be a positive integer, got {replicas!r}.")
    if "description" in raw and not isinstance(raw["description"], str):
        raise ValueError(f"{where}: `description` must be a string.")
    model = raw.get("model", default_model())
    axes, names, grid_only = _main_axes(raw, where)
    plan = _make_plan(raw, where, model, axes, names, grid_only, replicas, outputs=_outputs(raw, where),
                      trajectories=raw.get("trajectories", False))
    points = _expand(plan, where)
    if len(points) * replicas > MAX_POINTS:
        raise ValueError(f"{where}: {len(points)} points x {replicas} replicas = {len(points) * replicas} runs; a "
                         "sweep "
                         f"holds at most {MAX_POINTS}; split it.")
    prediction, pred_points, pred_output, level, label, scale = None, (), None, None, None, "linear"
    if "prediction" in raw:
        prediction, pred_points, pred_output, level, label, scale = _prediction(raw, where, plan, points)
    plot = raw.get("plot", {})
    _check_plot(plot, f"{where}: [plot]", plan, prediction, pred_output)
    return SweepConfig(raw=raw, seed=seed, plan=plan, prediction=prediction, plot=plot, points=tuple(points),
                       prediction_points=tuple(pred_points), source=source, prediction_output=pred_output,
                       prediction_level=level, prediction_label=label, prediction_scale=scale)


def _outputs(raw: dict, where: str):
    outputs = raw.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not outputs:
        raise ValueError(f"{where}: `outputs` must be a non-empty list of result paths such as \"beta_c\" or "
                         f"\"final_mean.m\", got {outputs!r}.")
    for o in outputs:
        if not isinstance(o, str) or not _PATH.match(o):
            raise ValueError(f"{where}: `outputs` entries are dotted result paths such as \"final_mean.m\" or "
                             f"\"u_final.0\", got {o!r}.")
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"{where}: `outputs` lists a path twice: {outputs!r}.")
    return tuple(outputs)


def _main_axes(raw: dict, where: str):
    axes, names = [], []
    grid = _table(raw.get("grid", {}), f"{where}: [grid]")
    for name, spec in grid.items():
        _check_name(name, f"{where}: [grid]")
        axes.append([{name: v} for v in _values(spec, f"{where}: grid.{name}")])
        names.append(name)
    grid_only = True
    zipped = _table(raw.get("zip", {}), f"{where}: [zip]")
    if zipped:
        grid_only = False
        cols = {}
        for name, spec in zipped.items():
            _check_name(name, f"{where}: [zip]")
            cols[name] = _values(spec, f"{where}: zip.{name}")
        lengths = {n: len(v) for n, v in cols.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{where}: [zip] lists must have the same length (they vary together), got {lengths}.")
        axes.append([dict(zip(cols, row)) for row in zip(*cols.values())])
        names += list(cols)
    points = raw.get("points")
    if points is not None:
        grid_only = False
        if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
            raise ValueError(f"{where}: `points` must be a non-empty list of tables ([[points]] in TOML), got "
                             f"{points!r}.")
        axis = []
        for i, p in enumerate(points):
            entry = {}
            for name, v in p.items():
                _check_name(name, f"{where}: points[{i}]")
                entry[name] = _scalar(v, f"{where}: points[{i}].{name}")
            axis.append(entry)
        axes.append(axis)
        names += [n for n in dict.fromkeys(n for p in axis for n in p)]
    dup = [n for n in names if names.count(n) > 1]
    if dup:
        raise ValueError(f"{where}: {dup[0]!r} is swept twice (in [grid], [zip] or [[points]]); sweep each name once.")
    return tuple(axes), tuple(names), grid_only


def _verb_options(model_name: str, verb: str, where: str):
    """(model, command or None, {name: Option or None}) for a verb, with clear errors."""
    from .model import get_model, models

    try:
        model = get_model(model_name)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    commands = {c.name: c for c in model.commands}
    verbs = [v for v in MODEL_VERBS if v != "compare" or model.compare] + sorted(commands)
    if not isinstance(verb, str) or verb not in verbs:
        others = sorted({c.name for m in models().values() for c in m.commands} - set(commands))
        hint = f" (commands of other models: {', '.join(others)})" if others else ""
        raise ValueError(f"{where}: `verb` must be one of {', '.join(verbs)} for model {model.name!r}, got "
                         f"{verb!r}{hint}.")
    if verb in MODEL_VERBS:
        names = {o.name: o for o in model.options_for(verb)}
        names.update({u: None for u in sorted(model.uses_for(verb))})
        names.update({u: None for u in VERB_RUN_OPTIONS[verb]})
        return model, None, names
    command = commands[verb]
    return model, command, {o.name: o for o in command.options}


def _make_plan(raw, where, model_name, axes, names, grid_only, replicas, *, outputs, trajectories) -> _Plan:
    if not isinstance(model_name, str):
        raise ValueError(f"{where}: `model` must be a model name (`popdyn models`), got {model_name!r}.")
    if "verb" not in raw:
        raise ValueError(f"{where}: `verb` is required (predict, simulate, compare or a model command such as "
                         "threshold).")
    model, command, options = _verb_options(model_name, raw["verb"], where)
    verb = raw["verb"]
    label = f"`popdyn {verb}" + (f" --model {model.name}`" if command is None else "`")
    base = _table(raw.get("base", {}), f"{where}: [base]")
    base = {_check_name(k, f"{where}: [base]"): _scalar(v, f"{where}: base.{k}") for k, v in base.items()}
    templates = _table(raw.get("format", {}), f"{where}: [format]")
    for k, v in templates.items():
        _check_name(k, f"{where}: [format]")
        if not isinstance(v, str):
            raise ValueError(f"{where}: format.{k} must be a template string such as \"spiked:kappa={{kappa}}\", got "
                             f"{v!r}.")
    if not isinstance(trajectories, bool):
        raise ValueError(f"{where}: `trajectories` must be true or false, got {trajectories!r}.")
    if trajectories and (command is not None or "out" not in model.uses_for(verb)):
        raise ValueError(f"{where}: `trajectories = true` needs a verb that saves a trajectory (--out); {label} "
                         "has none.")
    used = {m for t in templates.values() for m in _FIELD.findall(t)}
    for name in list(base) + list(names) + list(templates):
        if name in MANAGED:
            raise ValueError(f"{where}: `{name}` cannot be set in a sweep: {MANAGED[name]}.")
        if name not in options and name not in used:
            valid = ", ".join(sorted(n for n in options if n not in MANAGED))
            raise ValueError(f"{where}: `{name}` is not an option of {label} (and no [format] template uses it); "
                             f"valid options: {valid}.")
    for name in templates:
        if name in base or name in names:
            raise ValueError(f"{where}: `{name}` is both given and built by [format]; keep one.")
    for name in set(base) | set(names):
        o = options.get(name)
        if o is not None and o.kind == "bool":
            values = [base[name]] if name in base else [p[name] for ax in axes for p in ax if name in p]
            bad = [v for v in values if not isinstance(v, bool)]
            if bad:
                raise ValueError(f"{where}: `{name}` is a switch (true or false), got {bad[0]!r}.")
        elif name in options:
            values = [base[name]] if name in base else [p[name] for ax in axes for p in ax if name in p]
            bad = [v for v in values if isinstance(v, bool)]
            if bad:
                what = ("a number or text" if o is None
                        else {"int": "an integer", "float": "a number"}.get(o.kind, "text"))
                raise ValueError(f"{where}: `{name}` takes {what}, not a switch, got {bad[0]!r}.")
    seeded = "seed" in options
    if replicas > 1 and not seeded:
        raise ValueError(f"{where}: `replicas = {replicas}` needs a verb that takes a seed; {label} is "
                         "deterministic (use replicas = 1).")
    return _Plan(model=model.name, verb=verb, base=base, axes=tuple(axes), templates=dict(templates),
                 outputs=outputs, trajectories=trajectories, replicas=replicas, variables=tuple(names),
                 grid_only=grid_only)


def _expand(plan: _Plan, where: str) -> list:
    """The plan's points, validated through the command line's parser."""
    n = 1
    for ax in plan.axes:
        n *= len(ax)
    if n * plan.replicas > MAX_POINTS:
        raise ValueError(f"{where}: {n} points x {plan.replicas} replicas is more than {MAX_POINTS} runs; split the "
                         "sweep.")
    checker = _ArgvChecker(plan, where)
    points, seen = [], {}
    for i, combo in enumerate(itertools.product(*plan.axes) if plan.axes else [()]):
        coords = {}
        for part in combo:
            coords.update(part)
        values = {**plan.base, **coords}
        options = {k: v for k, v in values.items() if k in checker.options}
        for name, template in plan.templates.items():
            options[name] = _fill_template(template, values, f"{where}: format.{name}")
        typed = checker.check(options, coords)
        ident = canonical_json({"model": plan.model, "verb": plan.verb, "options": typed})
        if ident in seen:
            raise ValueError(f"{where}: points {seen[ident]} and {i} are the same run ({_show(coords)}); remove one.")
        seen[ident] = i
        points.append(_Point(i, coords, typed))
    return points


def _show(coords: dict) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in coords.items()) or "the base point"


class _ArgvChecker:
    """Parses every point's command line with the real parser (the checks of the command line)
    and the model's ``validate`` hook; returns the typed options."""

    def __init__(self, plan: _Plan, where: str):
        from .cli import build_parser

        self.plan, self.where = plan, where
        self.model, self.command, self.options = _verb_options(plan.model, plan.verb, where)
        self.parser = build_parser(_argv_head(plan.model, plan.verb))

    def check(self, options: dict, coords: dict) -> dict:
        argv = _argv_head(self.plan.model, self.plan.verb) + _flags(self.options, options)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = self.parser.parse_args(argv + ["--json"])
        except SystemExit:
            msg = " ".join(err.getvalue().split()).removeprefix("popdyn: error: ")
            msg = re.sub(r" \(see `[^`]*`\)$", "", msg)
            raise ValueError(f"{self.where}: the point {_show(coords)}: {msg}.") from None
        typed = {name: getattr(args, name) for name in options}
        if self.command is None and self.model.validate is not None:
            args.given = set(options)
            try:
                self.model.validate(args, args.given)
            except ValueError as exc:
                raise ValueError(f"{self.where}: the point {_show(coords)}: {exc}") from None
        return typed


def _argv_head(model: str, verb: str) -> list:
    return [verb, "--model", model] if verb in MODEL_VERBS else [verb]


def _flags(declared: dict, options: dict) -> list:
    """``--flag=value`` tokens (``=`` keeps values such as -1 or '-x' from reading as flags)."""
    out = []
    for name, value in options.items():
        o = declared.get(name)
        flag = o.flag if o is not None else "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value:
                out.append(flag)
        elif value is not None:
            out.append(f"{flag}={_format_value(value)}")
    return out


def _prediction(raw, where, plan: _Plan, points):
    table = raw["prediction"]
    w = f"{where}: [prediction]"
    _check_keys(table, PREDICTION_KEYS, w)
    over = table.get("over")
    if not isinstance(over, list) or not over or not all(isinstance(o, str) for o in over):
        raise ValueError(f"{w}: `over` must list the swept variables the prediction varies (one for a line, two for "
                         f"a field), got {over!r}; swept: {', '.join(plan.variables)}.")
    if len(over) > 2 or len(set(over)) != len(over):
        raise ValueError(f"{w}: `over` must name one or two different variables, got {over!r}.")
    for name in over:
        if name not in plan.variables:
            raise ValueError(f"{w}: `over` names {name!r}, which the sweep does not vary; swept: "
                             f"{', '.join(plan.variables)}.")
    grid = table.get("grid", {})
    _check_keys(grid, over, f"{w} grid")
    axes = []
    for name in over:
        if name in grid:
            axes.append([{name: v} for v in _values(grid[name], f"{w} grid.{name}")])
        else:
            axes.append([{name: v} for v in dict.fromkeys(p.coords[name] for p in points)])
    output = table.get("output")
    if not isinstance(output, str) or not _PATH.match(output):
        raise ValueError(f"{w}: `output` must be the dotted path of the predicted value in the verb's result, such as "
                         f"\"beta_c\" or \"escape_time\", got {output!r}.")
    level = table.get("level")
    if level is not None:
        level = _scalar(level, f"{w}: `level`")
        if isinstance(level, (bool, str)):
            raise ValueError(f"{w}: `level` must be a number, got {level!r}.")
        level = float(level)
    label = table.get("label")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"{w}: `label` must be a string, got {label!r}.")
    scale = table.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise ValueError(f"{w}: `scale` must be linear or log, got {scale!r}.")
    if scale == "log" and level is not None and not level > 0:
        raise ValueError(f"{w}: `level` must be > 0 with scale = \"log\", got {level}.")
    sub = {"verb": table.get("verb"), "base": table.get("base", {}),
           "format": table.get("format", raw.get("format", {}))}
    sub = {k: v for k, v in sub.items() if v is not None}
    pred = _make_plan(sub, w, table.get("model", plan.model), tuple(axes), tuple(over), True, 1,
                      outputs=(output,), trajectories=False)
    return pred, _expand(pred, w), output, level, label, scale


def _check_plot(plot, where, plan: _Plan, prediction, pred_output) -> None:
    _check_keys(plot, PLOT_KEYS, where)
    for key in ("x", "y"):
        if key in plot and plot[key] not in plan.variables:
            raise ValueError(f"{where}: `{key}` must be a swept variable ({', '.join(plan.variables)}), got "
                             f"{plot[key]!r}.")
    if "y" in plot and "x" not in plot:
        raise ValueError(f"{where}: `y` needs `x`.")
    if "value" in plot:
        v = plot["value"]
        if not isinstance(v, str) or not _PATH.match(v):
            raise ValueError(f"{where}: `value` must be a dotted result path, got {v!r}.")
        if plan.outputs is not None and v not in plan.outputs:
            raise ValueError(f"{where}: `value` {v!r} is not among the kept `outputs` ({', '.join(plan.outputs)}).")
    if "reduce" in plot and plot["reduce"] not in REDUCERS:
        raise ValueError(f"{where}: `reduce` must be one of {', '.join(REDUCERS)}, got {plot['reduce']!r}.")
    for key in ("xscale", "yscale", "value_scale"):
        if key in plot and plot[key] not in ("linear", "log"):
            raise ValueError(f"{where}: `{key}` must be linear or log, got {plot[key]!r}.")
    for key in ("title", "label"):
        if key in plot and not isinstance(plot[key], str):
            raise ValueError(f"{where}: `{key}` must be a string, got {plot[key]!r}.")
    x = plot.get("x", plan.variables[0] if 1 <= len(plan.variables) <= 2 else None)
    y = plot.get("y", plan.variables[1] if "x" not in plot and len(plan.variables) == 2 else None)
    if prediction is not None and x is not None and not set(prediction.variables) <= {x, y}:
        raise ValueError(f"{where}: the prediction varies {', '.join(prediction.variables)}, which must be plot axes "
                         f"(x = {x!r}, y = {y!r}).")


# ======================================================================================
# seeds and tasks
# ======================================================================================
def point_seed(root: int, model: str, verb: str, options: dict, replica: int) -> int:
    """The seed of one run of a point: a 64-bit integer from
    ``SeedSequence(root, spawn_key=(hash words of the parameters..., replica))``.

    The parameters are the model, the verb and the typed options without the seed (canonical
    JSON, so key order does not matter); the result depends on nothing else.

    >>> point_seed(0, "m", "predict", {"a": 1, "b": 0.5}, 0) == point_seed(0, "m", "predict", {"b": 0.5, "a": 1}, 0)
    True
    >>> point_seed(0, "m", "predict", {"a": 1}, 0) != point_seed(0, "m", "predict", {"a": 1}, 1)
    True
    """
    import numpy as np

    digest = hashlib.sha256(canonical_json({"model": model, "verb": verb, "options": options})).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    ss = np.random.SeedSequence(int(root), spawn_key=(*words, int(replica)))
    return int(ss.generate_state(1, np.uint64)[0])


@dataclasses.dataclass(frozen=True)
class _Task:
    key: str
    role: str          # "sweep" or "prediction"
    point: _Point
    replica: int
    seed: int | None
    options: dict      # typed, with the seed
    argv: tuple
    plan: _Plan


def _tasks(config: SweepConfig) -> list:
    out = []
    for role, plan, points in (("sweep", config.plan, config.points),
                               ("prediction", config.prediction, config.prediction_points)):
        if plan is None:
            continue
        _, _, declared = _verb_options(plan.model, plan.verb, "sweep config")
        seeded = "seed" in declared
        for p in points:
            for r in range(plan.replicas):
                seed = point_seed(config.seed, plan.model, plan.verb, p.options, r) if seeded else None
                options = dict(p.options) if seed is None else {**p.options, "seed": seed}
                key = record_key({"model": plan.model, "verb": plan.verb, "options": options})
                argv = _argv_head(plan.model, plan.verb) + _flags(declared, options) + ["--json"]
                if plan.verb in MODEL_VERBS:
                    argv.append("--quiet")
                    if plan.verb == "compare" and "plot" in declared:
                        argv.append("--plot=")   # no PNG per point
                out.append(_Task(key, role, p, r, seed, options, tuple(argv), plan))
    return out


# ======================================================================================
# the worker: one point = one command line, its --json result captured
# ======================================================================================
class _ThreadStream:
    """``sys.stdout``/``sys.stderr`` while points run: text written by a thread that is running a
    point goes to that point's buffer, everything else to the original stream (so points can
    run in threads, e.g. dask workers, without mixing their outputs)."""

    def __init__(self, original, local: threading.local):
        self._original, self._local = original, local

    def _buffer(self):
        return getattr(self._local, "buffer", None)

    def write(self, text):
        buf = self._buffer()
        return (buf if buf is not None else self._original).write(text)

    def flush(self):
        buf = self._buffer()
        if buf is None and self._original is not None:
            self._original.flush()

    def isatty(self):
        return False if self._buffer() is not None else bool(getattr(self._original, "isatty", lambda: False)())

    def fileno(self):
        if self._buffer() is not None:
            raise io.UnsupportedOperation("a point's captured stream has no file descriptor")
        return self._original.fileno()

    def __getattr__(self, name):
        return getattr(self._original, name)


_LOCK = threading.Lock()
_STATE = {"depth": 0, "streams": None, "blas": None, "controller": None}
_OUT, _ERR = threading.local(), threading.local()


@contextlib.contextmanager
def _point_context():
    """Capture this thread's stdout/stderr and hold BLAS to one thread while a point runs."""
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["streams"] = (sys.stdout, sys.stderr)
            sys.stdout = _ThreadStream(sys.stdout, _OUT)
            sys.stderr = _ThreadStream(sys.stderr, _ERR)
            if _STATE["controller"] is None:
                import scipy.linalg  # noqa: F401  (load scipy's BLAS before listing the libraries)
                from threadpoolctl import ThreadpoolController

                _STATE["controller"] = ThreadpoolController()
            _STATE["blas"] = _STATE["controller"].limit(limits=1)
        _STATE["depth"] += 1
    out, err = io.StringIO(), io.StringIO()
    _OUT.buffer, _ERR.buffer = out, err
    try:
        yield out, err
    finally:
        _OUT.buffer = _ERR.buffer = None
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                sys.stdout, sys.stderr = _STATE["streams"]
                _STATE["blas"].restore_original_limits()
                _STATE["blas"] = _STATE["streams"] = None


def _get_path(obj, path: str):
    """The value at a dotted path (``KeyError`` with the available keys)."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            have = ", ".join(sorted(cur)) if isinstance(cur, dict) else f"a {type(cur).__name__}"
            raise KeyError(f"output {path!r}: no {part!r} in the result (there: {have})")
    return cur


def run_point(task: dict) -> dict:
    """Run one point (``task``: ``argv``, ``outputs``, ``trajectory``) as the command line
    would, and return its JSON-ready outcome.

    The top-level function the executors call (importable, picklable, spawn-safe).  Returns
    ``status`` (``"ok"``/``"failed"``), ``exit_code``, the ``--json`` ``result`` (or the kept
    ``outputs``), ``error`` (the command line's one-line message), ``stderr`` (warnings),
    ``seconds``, ``versions`` and ``array`` (the ``.npz`` bytes when a trajectory is kept).
    Never raises for a failure of the point itself.
    """
    import tempfile

    from ._io import versions
    from .cli import main

    argv = list(task["argv"])
    tmpdir = None
    if task.get("trajectory"):
        tmpdir = tempfile.mkdtemp(prefix="popdyn-sweep-")
        out_path = os.path.join(tmpdir, "trajectory.npz")
        argv.append(f"--out={out_path}")
    t0 = time.perf_counter()
    outcome = {"status": "failed", "exit_code": None, "result": None, "outputs": None, "error": None,
               "array": None}
    try:
        with _point_context() as (out, err):
            try:
                code = main(argv)
            except SystemExit as exc:   # argparse (cannot happen after validation, but never crash a sweep)
                code = exc.code if isinstance(exc.code, int) else 2
        outcome["exit_code"] = code
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        errors = [ln for ln in lines if not ln.startswith("popdyn: warning:")]
        outcome["stderr"] = lines
        if code == 0:
            result = json.loads(out.getvalue())
            if tmpdir is not None:
                with open(out_path, "rb") as fh:
                    outcome["array"] = fh.read()
                result["saved"] = None   # the store's own file (record "array"), not the worker's temporary
            if isinstance(result.get("spec"), dict):   # the verb's complete spec, defaults included
                outcome["spec"] = result["spec"]
            if task.get("outputs") is not None:
                outcome["outputs"] = {p: _get_path(result, p) for p in task["outputs"]}
            else:
                outcome["result"] = result
            outcome["status"] = "ok"
        else:
            outcome["error"] = errors[-1].removeprefix("popdyn: ") if errors else f"exit code {code}"
    except KeyError as exc:
        outcome["error"] = f"error: {exc.args[0]}"
    except Exception as exc:  # noqa: BLE001 - a bug must become a failed point, not a dead sweep
        outcome["error"] = f"internal error in the sweep worker: {type(exc).__name__}: {exc}"
    finally:
        if tmpdir is not None:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
    outcome["seconds"] = time.perf_counter() - t0
    outcome["versions"] = versions()
    return outcome


# ======================================================================================
# executors
# ======================================================================================
def _exit_with_parent() -> None:
    """Wait (blocked, no polling) until the driving process is gone, then exit: a sweep killed
    with SIGKILL leaves no orphaned worker behind."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


def _pool_worker_init() -> None:
    """Pool workers ignore Ctrl-C (the driving process stops the sweep and ends them) and exit
    when their parent dies."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, daemon=True).start()


class _Done:
    """A finished serial point, in the shape of a future."""

    def __init__(self, outcome):
        self.outcome = outcome


class _Serial:
    name = "serial"

    def __init__(self):
        self.workers = 1

    def submit(self, task):
        return _Done(run_point(task))

    def wait(self, pending, timeout):
        return list(pending)

    def result(self, future):
        return future.outcome

    def stop(self):
        pass

    def close(self):
        pass


class _Pool:
    name = "pool"

    def __init__(self, workers):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        self.ex = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_pool_worker_init)

    def submit(self, task):
        return self.ex.submit(run_point, task)

    def wait(self, pending, timeout):
        from concurrent.futures import FIRST_COMPLETED, wait

        return list(wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)[0])

    def result(self, future):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return future.result()
        except BrokenProcessPool:
            raise SweepAborted("a worker process died while running points (killed, out of memory, or a Python "
                               "script that starts a sweep outside `if __name__ == \"__main__\":` -- workers are "
                               "spawned and import the main script); the finished points are in the store: rerun "
                               "to resume (executor 'serial' shows which point fails)") from None

    def stop(self):
        """Cancel the queued points and end the running ones (they are recomputed by a rerun)."""
        self.ex.shutdown(wait=False, cancel_futures=True)
        terminate = getattr(self.ex, "terminate_workers", None)   # Python >= 3.14
        if terminate is not None:
            terminate()
            return
        for proc in list((getattr(self.ex, "_processes", None) or {}).values()):
            proc.terminate()

    def close(self):
        self.ex.shutdown(wait=True)


class _Dask:
    name = "dask"

    def __init__(self, scheduler=None, dask_local=None):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise ValueError("the dask executor needs dask.distributed: pip install -e \".[dask]\"") from None
        self.cluster, self.own_client = None, True
        if dask_local is not None:
            import logging

            self.cluster = LocalCluster(n_workers=dask_local, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        elif isinstance(scheduler, Client):
            self.client, self.own_client = scheduler, False
        else:
            try:
                self.client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise ValueError(f"`scheduler` {scheduler!r}: cannot connect to a dask scheduler there ({exc})."
                                 ) from None
        self.workers = max(1, sum(self.client.nthreads().values()))
        self.submitted = set()

    def submit(self, task):
        fut = self.client.submit(run_point, task, pure=False)
        self.submitted.add(fut)
        return fut

    def wait(self, pending, timeout):
        from dask.distributed import wait

        try:
            return list(wait(list(pending), timeout=timeout, return_when="FIRST_COMPLETED").done)
        except TimeoutError:
            return []

    def result(self, future):
        self.submitted.discard(future)
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the point failed on the cluster
            return {"status": "failed", "exit_code": None, "result": None, "outputs": None, "array": None,
                    "error": f"dask: {type(exc).__name__}: {exc}", "stderr": [], "seconds": None,
                    "versions": None}

    def stop(self):
        """Cancel the points queued or running on the cluster."""
        if self.submitted:
            self.client.cancel(list(self.submitted))
            self.submitted.clear()

    def close(self):
        if self.own_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _check_executor(executor, workers, scheduler, dask_local) -> None:
    """Check the executor arguments (before anything is created)."""
    if scheduler is not None or dask_local is not None:
        if executor not in ("dask", None, "pool"):
            raise ValueError(f"`scheduler`/`dask_local` go with executor 'dask', got executor {executor!r}.")
        if scheduler is not None and dask_local is not None:
            raise ValueError("give either `scheduler` (an existing cluster) or `dask_local` (start one), not both.")
        if dask_local is not None and (isinstance(dask_local, bool) or not isinstance(dask_local, int)
                                       or dask_local < 1):
            raise ValueError(f"`dask_local` must be a positive number of workers, got {dask_local!r}.")
        if workers is not None:
            raise ValueError("`workers` applies to the local pool; a dask cluster has its own workers (`dask_local`).")
        return
    if executor not in EXECUTORS:
        raise ValueError(f"`executor` must be one of {', '.join(EXECUTORS)}, got {executor!r}.")
    if executor == "dask":
        raise ValueError("executor 'dask' needs `scheduler` (an address or a dask Client) or `dask_local` (a number "
                         "of local workers).")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"`workers` must be a positive integer, got {workers!r}.")
    if executor == "serial":
        if workers not in (None, 1):
            raise ValueError(f"`workers` = {workers} does not apply to executor 'serial' (one point at a time).")


def _executor(executor, workers, scheduler, dask_local):
    _check_executor(executor, workers, scheduler, dask_local)
    if scheduler is not None or dask_local is not None:
        return _Dask(scheduler, dask_local)
    if executor == "serial":
        return _Serial()
    return _Pool(workers or os.cpu_count() or 1)


# ======================================================================================
# the driver
# ======================================================================================
class _StoreLock:
    """One sweep per store at a time: ``STORE/.lock`` holds the driving process id (a lock left
    by a killed process, whose id no longer runs, is taken over)."""

    def __init__(self, store: ResultStore):
        self.path = store.root / ".lock"

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    raise ValueError(f"the store {str(self.path.parent)!r} is in use by the sweep in process {pid}; "
                                     "wait for it or give another `--out`.") from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        raise ValueError(f"cannot lock the store {str(self.path.parent)!r}.")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _satisfies(record: dict, task: _Task, retry_failed: bool) -> bool:
    """A stored record can stand for ``task``: finished (ok, or failed unless retrying) with the
    outputs and trajectory the sweep keeps."""
    if record.get("status") == "failed":
        return not retry_failed
    if record.get("status") != "ok":
        return False
    if task.plan.trajectories and record.get("array") is None:
        return False
    if task.plan.outputs is None:
        return record.get("result") is not None
    try:
        for p in task.plan.outputs:
            _value(record, p)
    except KeyError:
        return False
    return True


def _value(record: dict, path: str):
    """The value of a kept output in a record (from ``outputs`` or the full ``result``)."""
    if record.get("outputs") is not None and path in record["outputs"]:
        return record["outputs"][path]
    if record.get("result") is not None:
        return _get_path(record["result"], path)
    raise KeyError(f"output {path!r} was not kept by this record (kept: {', '.join(record.get('outputs') or [])})")


def _record(task: _Task, outcome: dict) -> dict:
    plan = task.plan
    return {
        "key": task.key, "model": plan.model, "verb": plan.verb, "point": task.point.coords,
        "replica": task.replica, "seed": task.seed, "options": task.options,
        "argv": ["popdyn", *task.argv], "status": outcome["status"], "exit_code": outcome["exit_code"],
        "error": outcome.get("error"), "stderr": outcome.get("stderr", []),
        "kept": "all" if plan.outputs is None else list(plan.outputs),
        "outputs": outcome.get("outputs"), "result": outcome.get("result"),
        "spec": outcome.get("spec") or {"command": plan.verb, "model": plan.model, "options": task.options},
        "versions": outcome.get("versions"), "seconds": outcome.get("seconds"),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _payload(task: _Task) -> dict:
    return {"argv": list(task.argv), "outputs": None if task.plan.outputs is None else list(task.plan.outputs),
            "trajectory": task.plan.trajectories}


def _progress_bar(total: int, initial: int, enabled):
    from tqdm.auto import tqdm

    from ._progress import PROGRESS_INTERVAL

    tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(total=total, initial=initial, desc="sweep", unit="point", file=sys.stderr,
                disable=enabled is False or total == 0, mininterval=0.5 if tty else PROGRESS_INTERVAL,
                dynamic_ncols=True)


def sweep(config, out=None, *, executor: str = "pool", workers: int | None = None, scheduler=None,
          dask_local: int | None = None, resume: bool = True, retry_failed: bool = False,
          progress: bool | None = None) -> "SweepResult":
    """Run a sweep: every point of ``config`` once per replica, into the store ``out``.

    Parameters
    ----------
    config : str, Path or dict
        A ``.toml``/``.json`` configuration or the same table as a dict (module docstring);
        validated completely before anything runs (:func:`load_config`).
    out : str or Path, optional
        The store directory (default for a file ``NAME.toml``: ``NAME.sweep`` in the current
        directory; required for a dict).
    executor : {"pool", "serial", "dask"}
        ``pool``: local processes (``workers``, default all cores); ``serial``: one point at a
        time in this process (debugging); ``dask``: implied by ``scheduler`` or ``dask_local``.
    workers : int, optional
        Processes of the pool (default ``os.cpu_count()``).
    scheduler : str or dask.distributed.Client, optional
        An existing dask cluster: the scheduler's address (``"tcp://host:8786"``) or a
        client.  Workers need popdyn installed; only the driving process writes the store.
    dask_local : int, optional
        Start a dask ``LocalCluster`` with this many single-threaded worker processes.
    resume : bool
        Skip the points already in the store (default).  ``False`` recomputes every point.
    retry_failed : bool
        Compute again the points recorded as failed (default: they stay failed).
    progress : bool or None
        A tqdm bar on stderr (points done, rate, ETA, failures); ``None``: on, ``False``: off.

    Returns
    -------
    SweepResult
        The records of every point, in grid order, and the counts ``computed``,
        ``skipped``, ``recomputed`` (damaged records), ``failed``.

    Raises
    ------
    ValueError, TypeError
        A bad configuration or argument (nothing has run).
    popdyn._progress.Interrupted
        Ctrl-C or ``SIGTERM``: the running points are abandoned, the store stays consistent,
        and rerunning the same sweep resumes it.
    SweepAborted
        A pool worker process died; the finished points are in the store.
    """
    cfg = load_config(config)
    if out is None:
        if cfg.source is None:
            raise ValueError("`out` (the store directory) is required when `config` is a dict.")
        out = Path(Path(cfg.source).stem + ".sweep")
    if not isinstance(resume, bool) or not isinstance(retry_failed, bool):
        raise TypeError(f"`resume` and `retry_failed` must be True or False, got {resume!r}, {retry_failed!r}.")
    _check_executor(executor, workers, scheduler, dask_local)
    store = ResultStore(out)
    from ._version import __version__

    with _StoreLock(store):
        store.clean_temporary()
        store.write_config({"config": cfg.raw, "source": cfg.source, "popdyn": __version__})
        tasks = list({t.key: t for t in _tasks(cfg)}.values())
        records, todo = {}, []
        counts = {"runs": len(tasks), "computed": 0, "skipped": 0, "recomputed": 0, "failed": 0}
        damaged = []
        for t in tasks:
            if not resume:
                todo.append(t)
                continue
            rec, reason = store.read(t.key)
            if rec is not None and _satisfies(rec, t, retry_failed):
                records[t.key] = rec
                counts["skipped"] += 1
                continue
            if reason not in (None, "missing"):
                counts["recomputed"] += 1
                damaged.append(f"{t.key} ({reason})")
            todo.append(t)
        if damaged:
            print(f"popdyn: sweep: {len(damaged)} damaged record(s) will be recomputed: {', '.join(damaged[:5])}"
                  + (" ..." if len(damaged) > 5 else ""), file=sys.stderr)
        if todo:
            ex = _executor(executor, workers, scheduler, dask_local)
            _drive(ex, todo, store, records, counts, progress, len(tasks))
    for r in records.values():
        counts["failed"] += r.get("status") == "failed"
    return _result(cfg, store.root, records, counts)


def _drive(ex, todo, store: ResultStore, records: dict, counts: dict, progress, total: int) -> None:
    from ._progress import DeferredInterrupts, Interrupted

    window = 1 if isinstance(ex, _Serial) else max(4, 2 * ex.workers)
    guard = DeferredInterrupts(note="stopping the sweep (finished points are in the store; rerun to resume)")
    bar = _progress_bar(total, total - len(todo), progress)
    failed = 0
    pending: dict = {}
    queue = iter(todo)

    def stopped(signum=None):
        return Interrupted(f"sweep stopped: {len(records)} of {total} runs are in the store {str(store.root)!r}; "
                           "rerun the same command to resume.", signum=signum)

    try:
        with guard:
            while True:
                while len(pending) < window and guard.requested is None:
                    task = next(queue, None)
                    if task is None:
                        break
                    pending[ex.submit(_payload(task))] = task
                if not pending:
                    break
                for fut in ex.wait(list(pending), 0.25):
                    task = pending.pop(fut)
                    outcome = ex.result(fut)
                    if outcome.get("exit_code") == _EXIT_INTERRUPTED:   # Ctrl-C twice while a serial point ran
                        raise stopped()
                    records[task.key] = store.write(_record(task, outcome), outcome.get("array"))
                    counts["computed"] += 1
                    if outcome["status"] != "ok":
                        failed += 1
                        bar.set_postfix(failed=failed, refresh=False)
                    bar.update(1)
                if guard.requested is not None:
                    raise stopped(guard.requested)
    except Interrupted:
        ex.stop()
        raise
    except KeyboardInterrupt:   # a second Ctrl-C: stop at once (every record on disk is whole)
        ex.stop()
        raise stopped() from None
    except BaseException:
        ex.stop()
        raise
    finally:
        bar.close()
        ex.close()


# ======================================================================================
# results
# ======================================================================================
@dataclasses.dataclass
class SweepResult:
    """The records of a sweep (from :func:`sweep` or :func:`load`).

    Attributes
    ----------
    config : SweepConfig
    store : Path
        The store directory.
    records : list of dict
        One per point and replica of the sweep, in grid order (replicas innermost): the
        stored record, or ``{"status": "missing", ...}`` for a run not (yet) in the store.
    prediction_records : list of dict
        The same for the ``[prediction]`` points.
    counts : dict
        ``runs``, ``computed``, ``skipped``, ``recomputed``, ``failed`` (and ``missing``).
    """

    config: SweepConfig
    store: Path
    records: list
    prediction_records: list
    counts: dict

    @property
    def failed(self) -> list:
        """The failed runs (sweep and prediction): each record carries its parameters and error."""
        return [r for r in self.records + self.prediction_records if r.get("status") == "failed"]

    def table(self, which: str = "sweep") -> list:
        """A tidy table: one dict per run with the swept variables, ``replica``, ``seed``,
        ``status`` (``error`` for a failed run) and the kept outputs (by dotted path; without
        ``outputs``, every scalar of the result)."""
        if which not in ("sweep", "prediction"):
            raise ValueError(f"`which` must be 'sweep' or 'prediction', got {which!r}.")
        plan = self.config.plan if which == "sweep" else self.config.prediction
        records = self.records if which == "sweep" else self.prediction_records
        rows = []
        for rec in records:
            row = {**rec["_coords"], "replica": rec.get("replica"), "seed": rec.get("seed"), "status": rec["status"]}
            if rec["status"] == "failed":
                row["error"] = rec.get("error")
            if rec["status"] == "ok":
                if plan.outputs is not None:
                    row.update({p: _value(rec, p) for p in plan.outputs})
                else:
                    row.update(_scalars(rec["result"]))
            rows.append(row)
        return rows

    def values(self, path: str, *, which: str = "sweep", reduce: str | None = None) -> list:
        """``(coords, replica, value)`` of one output for every run (``None`` when the run failed
        or is missing); ``reduce`` names a :data:`REDUCERS` entry."""
        if reduce is not None and reduce not in REDUCERS:
            raise ValueError(f"`reduce` must be one of {', '.join(REDUCERS)}, got {reduce!r}.")
        records = self.records if which == "sweep" else self.prediction_records
        out = []
        for rec in records:
            v = None
            if rec["status"] == "ok":
                v = _value(rec, path)
                if reduce is not None:
                    v = REDUCERS[reduce](v)
            out.append((rec["_coords"], rec.get("replica"), v))
        return out

    def trajectory(self, record: dict):
        """The :class:`popdyn.Trajectory` kept with a record (``trajectories = true``)."""
        return ResultStore(self.store).load_array(record)

    def to_xarray(self):
        """An ``xarray.Dataset`` of the kept outputs (``pip install xarray``).

        A pure ``[grid]`` sweep has one dimension per swept variable and ``replica``; others
        have ``point`` (with the variables as coordinates) and ``replica``.  Numbers (and nulls,
        as NaN) become float arrays, text object arrays, lists extra dimensions
        ``<name>_dim<i>``; ``status`` says which runs are ok, failed or missing.
        """
        try:
            import xarray as xr
        except ImportError:
            raise ValueError("`to_xarray` needs xarray: pip install xarray (or pip install -e \".[xarray]\"); "
                             "`table()` gives the same data as a list of dicts.") from None
        import numpy as np

        plan = self.config.plan
        rows = self.table()
        names = list(plan.outputs) if plan.outputs is not None else sorted(
            {k for r in rows for k in r} - set(plan.variables) - {"replica", "seed", "status", "error"})
        R = plan.replicas
        if plan.grid_only and plan.variables:
            levels = [list(dict.fromkeys(p[name] for ax in [a] for p in ax)) for a, name in
                      zip(plan.axes, plan.variables)]
            dims = list(plan.variables) + ["replica"]
            shape = [len(lv) for lv in levels] + [R]
            coords = {n: lv for n, lv in zip(plan.variables, levels)}
        else:
            n_points = len(self.config.points)
            dims, shape = ["point", "replica"], [n_points, R]
            coords = {"point": np.arange(n_points)}
            for name in plan.variables:
                coords[name] = ("point", [p.coords.get(name) for p in self.config.points])
        coords["replica"] = np.arange(R)

        def objects(cells):
            arr = np.empty(len(cells), dtype=object)
            for i, c in enumerate(cells):   # one object per run (numpy would unpack nested lists)
                arr[i] = c
            return arr.reshape(shape), []

        def field(get):
            cells = [get(r) for r in rows]
            flat = [c for c in cells if c is not None]
            if flat and all(isinstance(c, str) for c in flat):
                return objects(cells)
            numeric = all(v is None or (isinstance(v, numbers.Real)) for c in flat for v in _flat(c))
            if flat and numeric and all(isinstance(c, list) for c in flat):
                arrs = [np.asarray(_as_array(c)).reshape(np.shape(c)) for c in flat]
                if len({a.shape for a in arrs}) == 1:
                    inner = arrs[0].shape
                    data = np.full((len(cells), *inner), np.nan)
                    for i, c in enumerate(cells):
                        if c is not None:
                            data[i] = np.asarray(_as_array(c)).reshape(inner)
                    return data.reshape(shape + list(inner)), list(inner)
                return objects(cells)
            if all(c is None or (isinstance(c, numbers.Real)) for c in cells):
                return np.array([np.nan if c is None else float(c) for c in cells]).reshape(shape), []
            return objects(cells)

        data_vars = {}
        for name in names:
            arr, inner = field(lambda r, n=name: r.get(n))
            data_vars[name] = (dims + [f"{name}_dim{i}" for i in range(len(inner))], arr)
        data_vars["status"] = (dims, objects([r["status"] for r in rows])[0])
        data_vars["seed"] = (dims, objects([r["seed"] for r in rows])[0])
        attrs = {"model": plan.model, "verb": plan.verb, "seed": self.config.seed, "store": str(self.store)}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    def plot(self, path=None, *, ax=None):
        """Draw the sweep as its ``[plot]`` table says (:func:`plot_sweep`)."""
        return plot_sweep(self, path, ax=ax)


def _scalars(result: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in result.items():
        if not prefix and k in ("spec", "versions"):
            continue
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_scalars(v, name + "."))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[name] = v
    return out


def _result(cfg: SweepConfig, root: Path, records: dict, counts: dict) -> SweepResult:
    main, pred = [], []
    for t in _tasks(cfg):
        rec = records.get(t.key)
        if rec is None:
            rec = {"key": t.key, "status": "missing", "replica": t.replica, "seed": t.seed, "options": t.options}
        rec = {**rec, "_coords": t.point.coords}
        (main if t.role == "sweep" else pred).append(rec)
    counts = {**counts, "missing": sum(r["status"] == "missing" for r in main + pred)}
    return SweepResult(cfg, Path(root), main, pred, counts)


def load(out) -> SweepResult:
    """The records of the sweep stored in ``out`` (its ``sweep.json`` gives the configuration).

    Damaged records are reported as ``missing`` (with ``counts["damaged"]``); rerun the sweep
    to recompute them.
    """
    root = Path(out).expanduser()
    if not (root / "sweep.json").is_file():
        raise ValueError(f"`out` {str(out)!r} is not a sweep store (no sweep.json).")
    store = ResultStore(root)
    meta = store.read_config()
    cfg = dataclasses.replace(load_config(meta["config"]), source=meta.get("source"))
    records, damaged = {}, 0
    for t in _tasks(cfg):
        rec, reason = store.read(t.key)
        if rec is not None:
            records[t.key] = rec
        elif reason != "missing":
            damaged += 1
    counts = {"runs": len(records), "computed": 0, "skipped": 0, "recomputed": 0, "damaged": damaged,
              "failed": sum(r.get("status") == "failed" for r in records.values())}
    return _result(cfg, root, records, counts)


# ======================================================================================
# plots
# ======================================================================================
def _plot_spec(result: SweepResult) -> dict:
    plan = result.config.plan
    spec = dict(result.config.plot)
    if "x" not in spec:
        if not 1 <= len(plan.variables) <= 2:
            raise ValueError(f"the sweep varies {len(plan.variables)} variables ({', '.join(plan.variables)}); say "
                             "which to draw with [plot] x = ... (and y = ...).")
        spec["x"] = plan.variables[0]
        if len(plan.variables) == 2:
            spec["y"] = plan.variables[1]
    if "value" not in spec:
        if plan.outputs is None or len(plan.outputs) != 1:
            raise ValueError("say which output to draw with [plot] value = \"...\" (a dotted path of the result).")
        spec["value"] = plan.outputs[0]
    axes = {spec["x"], spec.get("y")}
    fixed = [v for v in plan.variables if v not in axes]
    varying = [v for v in fixed if len({json.dumps(p.coords.get(v)) for p in result.config.points}) > 1]
    if varying:
        raise ValueError(f"the sweep also varies {', '.join(varying)}; a plot draws x (and y) only: choose them "
                         "with [plot] x/y or keep the others fixed.")
    return spec


def _numeric(v, path: str) -> float:
    if v is None:
        return float("nan")
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, numbers.Real):
        return float(v)
    raise ValueError(f"[plot] value {path!r} is {type(v).__name__} {str(v)[:60]!r}, not a number; add `reduce` "
                     f"({', '.join(REDUCERS)}) for an array.")


def _grouped(result, which: str, value: str, reduce, keys) -> dict:
    """(x[, y]) -> list of numbers over the replicas."""
    groups: dict = {}
    for coords, _, v in result.values(value, which=which, reduce=reduce):
        k = tuple(coords[n] for n in keys)
        groups.setdefault(k, []).append(_numeric(v, value))
    return groups


def plot_sweep(result: SweepResult, path=None, *, ax=None):
    """A 1-D curve with error bars, or a 2-D phase diagram, from a sweep's ``[plot]`` table.

    * ``x`` only: the mean of ``value`` over the replicas against ``x``, with error bars of one
      standard error of the mean (``std / sqrt(replicas)``); a ``[prediction]`` over ``x`` is
      drawn as a line.
    * ``x`` and ``y``: one square marker per point, coloured by the mean of ``value`` (crosses:
      failed or null); a ``[prediction]`` over one axis is drawn as the boundary line (e.g.
      :math:`\\beta_c(k)` from the ``threshold`` command), over both as a field in the
      background with its boundary: the contour at ``level``, or where the predicted value turns
      null (e.g. an escape time that is infinite: the flow stalls).

    ``reduce`` turns an array output into one number (:data:`REDUCERS`); ``xscale``, ``yscale``,
    ``value_scale`` are ``linear`` or ``log``.  Returns the axis; saves a PNG when ``path`` is given.
    """
    import matplotlib

    if ax is None and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize

    spec = _plot_spec(result)
    cfg = result.config
    x, y, value, reduce = spec["x"], spec.get("y"), spec["value"], spec.get("reduce")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 4.4))
    label = spec.get("label", value + (f" ({reduce})" if reduce else ""))
    keys = (x,) if y is None else (x, y)
    groups = _grouped(result, "sweep", value, reduce, keys)
    pts = list(groups)
    mean = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in groups.values()])
    n_ok = np.array([np.isfinite(v).sum() for v in groups.values()])
    std = np.array([np.nanstd(v, ddof=1) if c > 1 else np.nan for v, c in zip(groups.values(), n_ok)])
    se = np.where(n_ok > 1, std / np.sqrt(np.maximum(n_ok, 1)), 0.0)
    pred = _prediction_values(result) if cfg.prediction is not None else None
    if y is None:
        xs = np.array([p[0] for p in pts], dtype=float)
        order = np.argsort(xs)
        ax.errorbar(xs[order], mean[order], yerr=se[order], fmt="o-", ms=4, capsize=3,
                    label=f"{cfg.verb} (mean ± SE over {cfg.replicas} replicas)" if cfg.replicas > 1 else cfg.verb)
        if pred is not None:
            px, pv = pred["line"]
            ax.plot(px, pv, "--", color="C3", label=cfg.prediction_label or f"{cfg.prediction.verb}: "
                                                                         f"{cfg.prediction_output}")
            ax.legend(fontsize=8)
        ax.set_ylabel(label)
        if spec.get("value_scale") == "log":
            ax.set_yscale("log")
    else:
        xs = np.array([p[0] for p in pts], dtype=float)
        ys = np.array([p[1] for p in pts], dtype=float)
        if pred is not None and "field" in pred:
            _draw_field(ax, pred, cfg)
        ok = np.isfinite(mean)
        log = spec.get("value_scale") == "log"
        norm = LogNorm() if log else Normalize()
        if ok.any():
            sc = ax.scatter(xs[ok], ys[ok], c=mean[ok], s=110, marker="s", cmap="coolwarm" if pred is not None and
                            "field" in pred else "viridis", norm=norm, edgecolors="black", linewidths=0.6, zorder=4)
            ax.figure.colorbar(sc, ax=ax, label=f"{cfg.verb}: {label}")
        if (~ok).any():
            ax.scatter(xs[~ok], ys[~ok], marker="x", color="0.3", s=50, zorder=4, label="failed or null")
        if pred is not None and "line" in pred:
            px, pv = pred["line"]
            a, b = (px, pv) if pred["axis"] == x else (pv, px)
            ax.plot(a, b, "-", color="C3", lw=2, zorder=5,
                    label=cfg.prediction_label or f"{cfg.prediction.verb}: {cfg.prediction_output}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        ax.set_ylabel(y)
        if spec.get("yscale") == "log":
            ax.set_yscale("log")
    ax.set_xlabel(x)
    if spec.get("xscale") == "log":
        ax.set_xscale("log")
    title = spec.get("title") or (cfg.raw.get("description") or f"{cfg.plan.verb_label()}")
    ax.set_title(title, fontsize=9)
    if path is not None:
        from .plot import save_figure

        save_figure(ax.figure, path)
    return ax


def _prediction_values(result: SweepResult) -> dict:
    import numpy as np

    cfg = result.config
    pred = cfg.prediction
    groups = _grouped(result, "prediction", cfg.prediction_output, None, pred.variables)
    if len(pred.variables) == 1:
        xs = np.asarray([k[0] for k in groups], dtype=float)
        vs = np.asarray([v[0] for v in groups.values()], dtype=float)
        order = np.argsort(xs)
        return {"line": (xs[order], vs[order]), "axis": pred.variables[0]}
    spec = _plot_spec(result)
    a = sorted({k[0] for k in groups})
    b = sorted({k[1] for k in groups})
    grid = np.full((len(b), len(a)), np.nan)
    for (va, vb), v in groups.items():
        grid[b.index(vb), a.index(va)] = v[0]
    ax_a, ax_b = pred.variables
    if ax_a == spec["x"]:
        return {"field": (np.asarray(a, float), np.asarray(b, float), grid)}
    return {"field": (np.asarray(b, float), np.asarray(a, float), grid.T)}


def _draw_field(ax, pred: dict, cfg: SweepConfig) -> None:
    """The predicted field in the background (grey where null) and its boundary: the contour
    at ``level``, or between null and non-null values.  With ``scale = "log"`` the colours are
    ``log10`` of the value, values <= 0 drawn as the smallest positive one."""
    import matplotlib.pyplot as plt
    import numpy as np

    xs, ys, grid = pred["field"]
    finite = np.isfinite(grid)
    log = cfg.prediction_scale == "log"
    data = np.where(finite, grid, np.nan)
    if log:
        positive = finite & (grid > 0)
        floor = grid[positive].min() if positive.any() else 1.0
        data = np.where(finite, np.log10(np.where(positive, grid, floor)), np.nan)
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    im = ax.pcolormesh(xs, ys, np.ma.masked_invalid(data), shading="nearest", cmap=cmap, alpha=0.85, zorder=1)
    name = f"{cfg.prediction.verb}: {cfg.prediction_output}"
    ax.figure.colorbar(im, ax=ax, label=(f"log10 {name}" if log else name) + (" (grey: null)" if (~finite).any()
                                                                                else ""))
    if len(xs) < 2 or len(ys) < 2:
        return
    if cfg.prediction_level is not None and finite.any():
        level = math.log10(cfg.prediction_level) if log else cfg.prediction_level
        filled = np.where(finite, data, np.nanmax(data) + 1.0)   # null (never reached): beyond every level
        ax.contour(xs, ys, filled, levels=[level], colors="C3", linewidths=2, zorder=3)
        ax.plot([], [], color="C3", lw=2, label=cfg.prediction_label or f"{name} = {cfg.prediction_level:g}")
    elif (~finite).any() and finite.any():
        ax.contour(xs, ys, finite.astype(float), levels=[0.5], colors="C3", linewidths=2, zorder=3)
        ax.plot([], [], color="C3", lw=2, label=cfg.prediction_label or f"{name}: null beyond")


# ======================================================================================
# the command line (`popdyn sweep`, registered in popdyn.cli)
# ======================================================================================
def summary(result: SweepResult) -> dict:
    """The JSON summary of a sweep: counts, the store, and every failed run with its parameters."""
    cfg = result.config
    failures = [{"point": r["_coords"], "replica": r.get("replica"), "seed": r.get("seed"), "error": r.get("error"),
                 "argv": r.get("argv")} for r in result.failed]
    return {"config": cfg.source, "store": str(result.store), "model": cfg.model, "verb": cfg.verb,
            "points": len(cfg.points), "replicas": cfg.replicas, "prediction_points": len(cfg.prediction_points),
            **result.counts, "failures": failures}


def run_command(args) -> tuple:
    """``popdyn sweep``: run the sweep, draw ``--plot``; returns (JSON summary, text lines,
    exit code: 0, or 1 when a point failed or a worker died)."""
    try:
        res = sweep(args.config, args.store, executor=args.executor, workers=args.workers, scheduler=args.scheduler,
                    dask_local=args.dask_local, resume=not args.force, retry_failed=args.retry_failed,
                    progress=False if args.quiet else None)
    except SweepAborted as exc:
        print(f"popdyn: sweep aborted: {exc}", file=sys.stderr)
        return {"aborted": str(exc)}, [f"sweep aborted: {exc}"], 1
    out = summary(res)
    if args.plot:
        res.plot(args.plot)
        out["plot"] = args.plot
    c = res.counts
    cfg = res.config
    lines = [f"sweep {cfg.source}: {cfg.plan.verb_label()} over {len(cfg.points)} points x {cfg.replicas} "
             f"replica{'s' if cfg.replicas > 1 else ''}"
             + (f" (+ {len(cfg.prediction_points)} points of {cfg.prediction.verb_label()})" if cfg.prediction else ""),
             f"  store {res.store}: {c['computed']} computed, {c['skipped']} already there"
             + (f", {c['recomputed']} damaged record(s) recomputed" if c["recomputed"] else "")
             + f", {c['failed']} failed"]
    if res.failed:
        lines.append("  failed runs:")
        for f in out["failures"]:
            lines.append(f"    {_show(f['point'])} (replica {f['replica']}): {f['error']}")
    if "plot" in out:
        lines.append(f"  plot: {out['plot']}")
    return out, lines, 1 if res.failed else 0
