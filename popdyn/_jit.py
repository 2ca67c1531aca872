r"""Optional compiled kernels: numba when it is installed, the same Python function otherwise.

The d-free engines spend their time in a loop over SGD steps on a few numbers each; in
Python every step costs tens of microseconds of interpreter overhead.  A *kernel* is a
plain Python function over scalars and arrays, written in the subset of Python that numba
compiles (loops, ``math`` functions, NumPy arrays), and decorated with :func:`njit`:

* with numba installed (the ``fast`` extra, ``pip install popdyn[fast]``) and not switched
  off, the first call compiles it (``numba.njit``; ``cache=True`` by default, so later
  processes load the machine code from ``__pycache__`` instead of compiling again);
* otherwise the call runs the very same function in Python (slow, but the same
  arithmetic: the kernels' tests run without numba too).

numba is imported lazily, at the first compilation, never by ``import popdyn``.

The switch
----------
Set the environment variable ``POPDYN_NO_JIT=1`` (any value but ``""`` and ``"0"``), call
:func:`set_enabled(False) <set_enabled>`, or use the context manager :func:`disabled`, to
force the NumPy path: :func:`enabled` is then ``False``, the engines pick their vectorised
NumPy implementation and a direct call of a kernel runs it in Python.  The engines decide
when they are built (a stepper built under :func:`disabled` keeps the NumPy path).  The
two paths draw the same random numbers from the same generator; their results differ by
rounding only (each engine states its tolerance).

Kernels calling kernels
-----------------------
A kernel may call other kernels (module globals decorated with :func:`njit`, in any
module).  They are compiled first and bound in place of the Python objects.  numba's
cache checks only the source file of the function it caches, so when a callee lives in
another file and that file is newer than the cached index, the stale entry is flushed
and the kernel compiled again (at most once per edit).

Compiled activations
--------------------
:func:`activation_kernel` maps a registry activation (:mod:`popdyn.activations`) to an
integer code and a coefficient array that the kernel :func:`act_eval` evaluates with the
same arithmetic as the activation's NumPy evaluation (same formulas and operation order;
``erf``, ``exp``, ``tanh`` come from the platform's libm instead of NumPy/SciPy and may
differ in the last bit).  Polynomials are evaluated either by the three-term Hermite
recurrence of :class:`popdyn.hermite.HermiteSeries` (``form="series"``) or by Horner's
scheme in the power basis (``form="power"``, as
:func:`popdyn.models.multi_index_sim.fast_evaluator`).  Activations from Python callables
or sympy expressions have no compiled form (``None``): their engines keep the NumPy path.

Examples
--------
>>> @njit
... def total(x):
...     s = 0.0
...     for i in range(x.size):
...         s += x[i]
...     return s
>>> import numpy as np
>>> float(total(np.arange(4.0)))
6.0
>>> with disabled():
...     enabled(), float(total(np.arange(4.0)))   # the same function, run in Python
(False, 6.0)
"""

from __future__ import annotations

import contextlib
import math
import os
import types

__all__ = [
    "ENV_DISABLE",
    "Kernel",
    "njit",
    "available",
    "enabled",
    "set_enabled",
    "disabled",
    "status",
    "activation_kernel",
    "act_eval",
    "ACT_CODES",
    "POLY_FORMS",
]

#: Environment variable that forces the NumPy path (any value except ``""`` and ``"0"``).
ENV_DISABLE = "POPDYN_NO_JIT"

# numba: None = not tried yet, False = missing or broken (reason in _NUMBA_ERROR), else the module
_NUMBA = None
_NUMBA_ERROR = ""
_FORCED: bool | None = None  # set_enabled(): None = default (on when numba imports)


def _numba():
    """The numba module, imported once; ``None`` when it is missing or fails to import."""
    global _NUMBA, _NUMBA_ERROR
    if _NUMBA is None:
        try:
            import numba
        except Exception as exc:  # noqa: BLE001 - ImportError, or numba refusing this NumPy version
            _NUMBA, _NUMBA_ERROR = False, f"{type(exc).__name__}: {exc}"
        else:
            _NUMBA = numba
    return _NUMBA or None


def available() -> bool:
    """``True`` when numba imports (the ``fast`` extra is installed and works with this NumPy)."""
    return _numba() is not None


def _env_disabled() -> bool:
    return os.environ.get(ENV_DISABLE, "").strip() not in ("", "0")


def enabled() -> bool:
    """``True`` when kernels are compiled: numba is available and neither ``POPDYN_NO_JIT``
    nor :func:`set_enabled` / :func:`disabled` switched it off."""
    if _env_disabled() or _FORCED is False:
        return False
    return available()


def set_enabled(flag: bool | None) -> None:
    """Switch compilation off (``False``), back on (``True``, when numba is available) or to
    the default (``None``).  ``POPDYN_NO_JIT`` still wins when set."""
    global _FORCED
    if flag is not None and not isinstance(flag, bool):
        raise TypeError(f"`flag` must be True, False or None, got {flag!r}.")
    _FORCED = flag


@contextlib.contextmanager
def disabled():
    """Context manager: the NumPy path inside (engines built inside keep it)."""
    global _FORCED
    saved = _FORCED
    _FORCED = False
    try:
        yield
    finally:
        _FORCED = saved


def status() -> dict:
    """``{"enabled", "numba", "reason"}``: whether kernels compile, numba's version (or
    ``None``) and, when they do not, why."""
    numba = _numba()
    if _env_disabled():
        reason = f"{ENV_DISABLE} is set"
    elif _FORCED is False:
        reason = "switched off by popdyn._jit.set_enabled(False) / disabled()"
    elif numba is None:
        reason = f"numba is not available ({_NUMBA_ERROR}); install the `fast` extra"
    else:
        reason = ""
    return {"enabled": not reason, "numba": None if numba is None else numba.__version__, "reason": reason}


class Kernel:
    """A function compiled by numba on first use when :func:`enabled`, else run in Python.

    Built by :func:`njit`.  Calling it dispatches on :func:`enabled` at each call;
    :meth:`function` returns the callable to use in a loop (compiled or Python).

    Attributes
    ----------
    py_func : function
        The Python function.
    options : dict
        Options for ``numba.njit`` (``cache`` and any others).
    """

    def __init__(self, fn, options: dict):
        self.py_func = fn
        self.options = dict(options)
        self._dispatcher = None
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__module__ = fn.__module__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<popdyn kernel {self.__module__}.{self.__qualname__}>"

    def __call__(self, *args):
        return self.function()(*args)

    @property
    def compiled(self) -> bool:
        """``True`` once the numba dispatcher exists (compiled or loaded from the cache)."""
        return self._dispatcher is not None

    def function(self):
        """The numba dispatcher when :func:`enabled` (compiling it on first use), else ``py_func``."""
        return self.dispatcher() if enabled() else self.py_func

    def _callees(self) -> dict:
        glb = self.py_func.__globals__
        return {name: glb[name] for name in self.py_func.__code__.co_names if isinstance(glb.get(name), Kernel)}

    def _sources(self, seen=None) -> set:
        """Source files of the kernels this one calls, transitively (not its own)."""
        seen = set() if seen is None else seen
        files = set()
        for k in self._callees().values():
            if id(k) in seen:
                continue
            seen.add(id(k))
            files.add(k.py_func.__code__.co_filename)
            files |= k._sources(seen)
        return files

    def dispatcher(self):
        """The numba dispatcher (compiled lazily).  Raises ``RuntimeError`` when numba is not available."""
        if self._dispatcher is not None:
            return self._dispatcher
        numba = _numba()
        if numba is None:
            raise RuntimeError(f"numba is not available ({_NUMBA_ERROR}); install the `fast` extra.")
        fn = self.py_func
        callees = self._callees()
        if callees:  # bind the callees' dispatchers in place of the Kernel objects (numba cannot type those)
            glb = dict(fn.__globals__)
            glb.update({name: k.dispatcher() for name, k in callees.items()})
            bound = types.FunctionType(fn.__code__, glb, fn.__name__, fn.__defaults__, fn.__closure__)
            bound.__qualname__, bound.__module__, bound.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
            fn = bound
        options = dict(self.options)
        if options.get("cache") and not os.path.isfile(fn.__code__.co_filename):
            options["cache"] = False  # no file to cache next to (interactive session, doctest)
        try:
            dispatcher = numba.njit(**options)(fn)
        except RuntimeError:  # "cannot cache function ...": no usable cache directory
            if not options.get("cache"):
                raise
            options["cache"] = False
            dispatcher = numba.njit(**options)(fn)
        if options.get("cache"):
            self._flush_if_stale(dispatcher)
        self._dispatcher = dispatcher
        return dispatcher

    def _flush_if_stale(self, dispatcher) -> None:
        """Drop numba's cached entry when a callee's source file is newer than it."""
        try:
            index = dispatcher._cache._cache_file._index_path
            if not os.path.exists(index):
                return
            stamp = os.path.getmtime(index)
            if any(os.path.getmtime(f) > stamp for f in self._sources() if os.path.exists(f)):
                dispatcher._cache.flush()
        except (AttributeError, OSError):  # another numba layout, or an unreadable cache: numba's own checks
            pass


def njit(fn=None, *, cache: bool = True, **options):
    """Decorator: a :class:`Kernel` (numba ``njit`` on first use when :func:`enabled`).

    ``cache=True`` (default) keeps the machine code in ``__pycache__`` next to the module
    (or numba's user cache when that is read-only; no cache for a function without a
    source file, e.g. typed in a session); other keywords go to ``numba.njit``.
    Usable bare (``@njit``) or with options (``@njit(cache=False)``).
    """
    if not isinstance(cache, bool):
        raise TypeError(f"`cache` must be a bool, got {cache!r}.")
    options = {"cache": cache, **options}
    if fn is None:
        return lambda f: Kernel(f, options)
    if not isinstance(fn, types.FunctionType):
        raise TypeError(f"`fn` must be a Python function, got {type(fn).__name__}.")
    return Kernel(fn, options)


# --------------------------------------------------------------------------------------
# compiled activations
# --------------------------------------------------------------------------------------
#: Activation codes of :func:`act_eval`.  ``"series"``: Hermite series (coefficients in the
#: normalised basis, the recurrence of popdyn.hermite.HermiteSeries); ``"power"``: Horner's
#: scheme (power-basis coefficients, highest degree first); the rest are the registry's
#: closed-form activations and their derivatives (``"d:<name>"``).
ACT_CODES = {
    "series": 0, "power": 1,
    "erf": 10, "d:erf": 11, "relu": 12, "d:relu": 13, "tanh": 14, "d:tanh": 15, "abs": 16, "d:abs": 17,
    "sign": 18, "d:sign": 19, "logcosh": 20, "d:logcosh": 21, "sigmoid": 22, "d:sigmoid": 23,
    "softplus": 24, "d:softplus": 25, "gelu": 26, "d:gelu": 27, "silu": 28, "d:silu": 29,
}
#: Polynomial evaluation forms of :func:`activation_kernel`.
POLY_FORMS = ("series", "power")

_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_PHI0 = 1.0 / math.sqrt(2.0 * math.pi)
_LOG2 = math.log(2.0)


def activation_kernel(act, *, derivative: bool = False, form: str = "series"):
    r"""``(code, coeffs)`` for :func:`act_eval` evaluating ``act`` (or its derivative), or ``None``.

    Parameters
    ----------
    act : popdyn.activations.Activation
        A registry activation: a closed form by name (``erf``, ``relu``, ``tanh``, ``abs``,
        ``sign``, ``logcosh``, ``sigmoid``, ``softplus``, ``gelu``, ``silu``; the very object the
        registry returns for that name) or a polynomial (``heK``, ``identity``, ``hermite:``,
        ``poly:``).
    derivative : bool
        The derivative :math:`\sigma'` instead of :math:`\sigma`.
    form : {"series", "power"}
        Evaluation of a polynomial: the activation's own Hermite recurrence, or Horner in the
        power basis (the power coefficients of the float Hermite coefficients, as
        :func:`popdyn.models.multi_index_sim.fast_evaluator` computes them).

    Returns
    -------
    (int, ndarray) or None
        ``None`` for activations without a compiled form (callables, sympy expressions,
        dilations): use their NumPy evaluation.

    Examples
    --------
    >>> import numpy as np
    >>> from popdyn.activations import get_activation
    >>> code, coef = activation_kernel(get_activation("he3"))
    >>> z = 0.7
    >>> bool(abs(act_eval(code, coef, z) - float(get_activation("he3")(z))) < 1e-15)
    True
    >>> activation_kernel(get_activation(lambda z: z ** 3)) is None
    True
    """
    import numpy as np

    from . import activations as _acts
    from .hermite import HermiteSeries

    if not isinstance(act, _acts.Activation):
        raise TypeError(f"`act` must be an Activation, got {type(act).__name__}.")
    if form not in POLY_FORMS:
        raise ValueError(f"`form` must be one of {', '.join(map(repr, POLY_FORMS))}; got {form!r}.")
    if act.is_polynomial:
        if form == "power":
            series = HermiteSeries(np.array([float(c) for c in act.poly_coeffs]))
            if derivative:
                series = series.derivative()
            power = np.trim_zeros(np.atleast_1d(series.to_power()), "b")
            if power.size == 0:
                power = np.zeros(1)
            return ACT_CODES["power"], np.ascontiguousarray(power[::-1], dtype=float)
        fn = act.dfn if derivative else act.fn
        if not isinstance(fn, HermiteSeries):
            return None
        return ACT_CODES["series"], np.ascontiguousarray(fn.coefficients, dtype=float)
    name = act.name
    if name not in ACT_CODES or name in POLY_FORMS:
        return None
    try:
        registered = _acts.get_activation(name)
    except (ValueError, TypeError):
        return None
    if registered is not act:  # a callable that merely carries a registry name
        return None
    return ACT_CODES[("d:" if derivative else "") + name], np.zeros(1)


@njit
def _expit(z):
    """1/(1 + e^{-z}) without overflow."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit
def act_eval(code, coef, z):
    """Value at ``z`` (a float) of the activation ``(code, coef)`` from :func:`activation_kernel`."""
    if code == 0:  # Hermite series, normalised basis (popdyn.hermite.HermiteSeries.__call__)
        n = coef.size
        out = coef[0] * 1.0
        if n == 1:
            return out
        h_prev = 1.0
        h = z
        out = out + coef[1] * h
        for k in range(1, n - 1):
            h_new = (z * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
            h_prev = h
            h = h_new
            out = out + coef[k + 1] * h
        return out
    if code == 1:  # Horner, highest degree first (fast_evaluator)
        out = coef[0]
        for i in range(1, coef.size):
            out = out * z
            if coef[i] != 0.0:
                out = out + coef[i]
        return out
    if code == 10:
        return math.erf(z / _SQRT2)
    if code == 11:
        return _SQRT_2_OVER_PI * math.exp(-0.5 * (z * z))
    if code == 12:
        return 0.0 if z <= 0.0 else z  # NaN stays NaN, as numpy.maximum
    if code == 13:
        return 1.0 if z > 0.0 else 0.0
    if code == 14 or code == 21:
        return math.tanh(z)
    if code == 15:
        t = math.tanh(z)
        return 1.0 - t * t
    if code == 16:
        return abs(z)
    if code == 17 or code == 18:
        if z > 0.0:
            return 1.0
        if z < 0.0:
            return -1.0
        return z  # 0 (or NaN)
    if code == 19:
        return 0.0
    if code == 20:
        a = abs(z)
        return a + math.log1p(math.exp(-2.0 * a)) - _LOG2
    if code == 22 or code == 25:
        return _expit(z)
    if code == 23:
        s = _expit(z)
        return s * (1.0 - s)
    if code == 24:  # numpy.logaddexp(0, z)
        if z == 0.0:
            return _LOG2
        if z < 0.0:
            return math.log1p(math.exp(z))
        if z > 0.0:
            return z + math.log1p(math.exp(-z))
        return z  # NaN
    if code == 26:
        return z * (0.5 * math.erfc(-z / _SQRT2))
    if code == 27:
        return 0.5 * math.erfc(-z / _SQRT2) + z * _PHI0 * math.exp(-0.5 * (z * z))
    if code == 28:
        return z * _expit(z)
    if code == 29:
        s = _expit(z)
        return s * (1.0 + z * (1.0 - s))
    return math.nan
