"""The model protocol and registry: what a model family declares so that the command line,
``compare`` and ``verify`` can use it without knowing it.

A model family declares one :class:`Model` in its own module:

* its ``name`` (``popdyn predict --model NAME``), a one-line ``description`` and the
  ``papers`` behind it (arXiv ids, for ``--cite``);
* its ``options``: a parameter schema (:class:`Option`: name, type, default, help,
  choices, bounds) from which the command line is generated; ``popdyn predict --model
  NAME --help`` lists that model's options only;
* ``uses``: which of the verbs' common options (``d``, ``init``, ``eta``, ...) it reads, so
  that an option it ignores is a usage error instead of silently doing nothing;
* ``build(opts) -> problem`` and ``predict(problem, opts) -> Prediction``; optional
  ``simulate(problem, opts)``, ``validate(opts, given)`` and ``step_size(opts)`` hooks.

Models are found through the ``popdyn.models`` entry-point group (so that another
package can register a model without editing popdyn) and through :func:`register_model`
(for a model defined at run time, e.g. in a test).

Examples
--------
>>> {"committee", "multi-index"} <= set(model_names())
True
>>> get_model("committee").papers
()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

__all__ = ["Option", "Model", "Command", "Prediction", "default_model", "sgd_uses", "register_model", "get_model", "model_names", "models",
           "ENTRY_POINT_GROUP", "COMMON_OPTIONS"]

#: Entry-point group through which packages register their :class:`Model` objects.
ENTRY_POINT_GROUP = "popdyn.models"
#: The verbs' own options that a model may use (``Model.uses``); any other common option
#: is the verb's (``--json``, ``--quiet``, ``--out`` ...) and always applies.
COMMON_OPTIONS = ("d", "seed", "init", "t_end", "eta", "delta", "batch", "algorithm", "n_samples", "engine",
                  "replicas", "out", "plot", "checkpoint", "checkpoint_every")

_KINDS = ("int", "float", "str", "bool")


@dataclasses.dataclass(frozen=True)
class Option:
    """One parameter of a model, from which a command-line flag is generated.

    Parameters
    ----------
    name : str
        Python name (``"n_unlabeled"``); the flag is ``--n-unlabeled`` unless ``flag`` says
        otherwise (``"--K"``).
    kind : {"int", "float", "str", "bool"}
        ``bool`` options are switches (``store_true``).
    default : any
        Value when the flag is not given (``None``: unset).
    help : str
        One line for ``--help``.
    choices : tuple, optional
        Allowed values.
    minimum, maximum : float, optional
        Inclusive bounds for numbers.
    positive : bool
        Numbers must be ``> 0``.
    verbs : tuple of str
        The verbs that take the option.
    flag : str, optional
        The flag, when not derived from ``name``.
    check : callable, optional
        ``check(value)`` raises ``ValueError`` (a message without the flag) for values the
        bounds cannot express.
    required : bool
        The flag must be given.
    """

    name: str
    kind: str
    default: Any = None
    help: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    verbs: tuple = ("predict", "simulate", "compare")
    flag: str | None = None
    check: Callable | None = None
    required: bool = False

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"`name` must be a Python identifier, got {self.name!r}.")
        if self.kind not in _KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(_KINDS)}, got {self.kind!r}.")
        if self.flag is None:
            object.__setattr__(self, "flag", "--" + self.name.replace("_", "-"))
        elif not self.flag.startswith("--"):
            raise ValueError(f"`flag` must start with '--', got {self.flag!r}.")

    def parse(self, text: str):
        """Convert and check one command-line value (``ValueError`` names the flag)."""
        import math

        if self.kind == "str":
            value = text
        elif self.kind == "int":
            try:
                value = int(text)
            except ValueError:
                f = _float(text, self.flag, "an integer")
                if not f.is_integer():
                    raise ValueError(f"must be an integer, got {text!r}") from None
                value = int(f)
        else:
            value = _float(text, self.flag, "a finite number")
            if not math.isfinite(value):
                raise ValueError(f"must be a finite number, got {text!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(str, self.choices))}, got {text!r}")
        if self.kind in ("int", "float"):
            if self.positive and not value > 0:
                what = "a positive integer" if self.kind == "int" else "a positive finite number"
                raise ValueError(f"must be {what}, got {value}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"must be >= {self.minimum:g}, got {text!r}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"must be <= {self.maximum:g}, got {text!r}")
        if self.check is not None:
            self.check(value)
        return value


def _float(text: str, flag: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be {what}, got {text!r}") from None


@dataclasses.dataclass
class Prediction:
    """What ``predict`` reports: a JSON-ready dict, the text lines, and the trajectory to save.

    ``plot_name`` is the overlap that ``--plot`` draws.
    """

    out: dict
    lines: list
    trajectory: Any = None
    plot_name: str | None = None


@dataclasses.dataclass(frozen=True)
class Command:
    """A command of its own that a model adds to the command line (``popdyn NAME ...``).

    ``run(args) -> Prediction`` computes and returns the JSON-ready dict and the text lines
    (``trajectory`` unused); ``options`` are its flags, ``papers`` go to ``--cite``.
    """

    name: str
    help: str
    options: tuple = ()
    run: Callable | None = None
    papers: tuple = ()


@dataclasses.dataclass(frozen=True)
class Model:
    """A model family as the engines and the command line see it (module docstring)."""

    name: str
    description: str
    options: tuple = ()
    papers: tuple = ()
    uses: dict = dataclasses.field(default_factory=dict)
    build: Callable | None = None
    predict: Callable | None = None
    simulate: Callable | None = None
    validate: Callable | None = None
    step_size: Callable | None = None
    compare: bool = True
    commands: tuple = ()
    default: bool = False

    def __post_init__(self):
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"`name` must be a non-empty word, got {self.name!r}.")
        if self.build is None or self.predict is None:
            raise ValueError(f"model {self.name!r}: `build` and `predict` are required.")
        names = [o.name for o in self.options]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"model {self.name!r}: options declared twice: {sorted(dup)}.")
        bad = {n for uses in self.uses.values() for n in uses} - set(COMMON_OPTIONS)
        if bad:
            raise ValueError(f"model {self.name!r}: `uses` names unknown common options {sorted(bad)}; valid: "
                             f"{', '.join(COMMON_OPTIONS)}.")
        clash = set(names) & set(COMMON_OPTIONS)
        if clash:
            raise ValueError(f"model {self.name!r}: options {sorted(clash)} are the verbs' own; list them in "
                             "`uses` instead.")

    def options_for(self, verb: str) -> tuple:
        """The model's options that ``verb`` takes."""
        return tuple(o for o in self.options if verb in o.verbs)

    def uses_for(self, verb: str) -> frozenset:
        """The verbs' common options that this model reads under ``verb``."""
        return frozenset(self.uses.get(verb, ()))


_REGISTRY: dict[str, Model] = {}
_LOADED = False


def register_model(model: Model, *, replace: bool = False) -> Model:
    """Add ``model`` to the registry (``replace=True`` to overwrite a name)."""
    if not isinstance(model, Model):
        raise TypeError(f"`model` must be a popdyn.model.Model, got {type(model).__name__}.")
    _load_entry_points()
    if model.name in _REGISTRY and not replace and _REGISTRY[model.name] is not model:
        raise ValueError(f"a model named {model.name!r} is already registered; pass replace=True to overwrite it.")
    _REGISTRY[model.name] = model
    return model


def unregister_model(name: str) -> None:
    """Remove a model registered at run time (tests)."""
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        model = ep.load()
        if not isinstance(model, Model):
            raise TypeError(f"entry point {ep.name!r} of {ENTRY_POINT_GROUP!r} must give a popdyn.model.Model, "
                            f"got {type(model).__name__}.")
        _REGISTRY.setdefault(model.name, model)


def models() -> dict[str, Model]:
    """Name -> :class:`Model`, every registered model."""
    _load_entry_points()
    return dict(_REGISTRY)


def model_names() -> list[str]:
    """The registered model names."""
    return list(models())


def get_model(name: str) -> Model:
    """The model called ``name`` (``ValueError`` lists the valid names)."""
    table = models()
    if name not in table:
        raise ValueError(f"`model` must be one of {', '.join(sorted(table)) or '(none installed)'}, got {name!r}.")
    return table[name]


# --------------------------------------------------------------------------------------
# helpers the models' declarations share (options -> library arguments)
# --------------------------------------------------------------------------------------
#: Dimension when ``--d`` is not given (a covariance file sets its own).
DEFAULT_D = 500
#: Default online-SGD step in high-d units (eta = delta/d); with the default batch of 32
#: the per-step normalisation term eta*(d-1)/(2B)*C stays a small correction.
DEFAULT_DELTA = 0.5


def parse_init(text):
    """``--init``: ``'uniform'`` or a warm-start scale (a number)."""
    if text == "uniform":
        return text
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"`--init` must be 'uniform' or a warm-start overlap scale m0 (a number), got "
                         f"{text!r}.") from None


def default_step_size(opts) -> float:
    """``eta`` from ``--eta`` or ``--delta`` (``eta = delta/d``, default delta 0.5)."""
    if opts.eta is not None and opts.delta is not None:
        raise ValueError("give either `--eta` or `--delta` (eta = delta/d), not both.")
    if opts.eta is not None:
        return opts.eta
    return (DEFAULT_DELTA if opts.delta is None else opts.delta) / opts.d


def ode_options(opts) -> dict:
    """The ODE solver's step budget and progress output for :func:`popdyn.ode.integrate`."""
    return {"max_steps": getattr(opts, "max_ode_steps", None), "progress": False if getattr(opts, "quiet", False)
            else None}


def horizon(predicted: float, fallback: float) -> float:
    """Default ``--t-end``: past the predicted escape, or ``fallback`` when there is none (the
    flow stalls: ``inf``) or the start is already past the target (``0``)."""
    import math

    return predicted if math.isfinite(predicted) and predicted > 0 else fallback


def step_size(model: Model, opts) -> float:
    """The model's step size for these options (its ``step_size`` hook or :func:`default_step_size`)."""
    return (model.step_size or default_step_size)(opts)


def check_level(value: float) -> None:
    """An overlap level in (0, 1): unit-norm overlaps never exceed 1 in absolute value."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"must lie in (0, 1) (overlaps of unit vectors are at most 1 in absolute value), "
                         f"got {value:g}")


def default_model() -> str:
    """The model that ``predict``/``simulate``/``compare`` use without ``--model`` (the one
    declared ``default=True``; else the first name in alphabetical order)."""
    table = models()
    marked = sorted(name for name, m in table.items() if m.default)
    return marked[0] if marked else min(table)


#: The run options of an online-SGD model (the step and the start).
STEP_OPTIONS = ("d", "seed", "init", "t_end", "eta", "delta", "batch")


def sgd_uses(predict: tuple) -> dict:
    """``Model.uses`` of a model whose ``simulate`` and ``compare`` are the generic engines:
    ``predict`` uses the given run options; ``simulate`` and ``compare`` the step, the
    algorithm, the replicas and the engine (and their outputs)."""
    return {"predict": tuple(predict),
            "simulate": STEP_OPTIONS + ("algorithm", "n_samples", "replicas", "engine", "out", "checkpoint",
                                        "checkpoint_every"),
            "compare": STEP_OPTIONS + ("algorithm", "n_samples", "replicas", "engine", "plot")}
