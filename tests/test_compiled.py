"""Compiled step loops: popdyn._jit, the committee engines' ``step_block`` and the engine's
block-stepping hook (popdyn.simulation).

Independent routes:
* the compiled path (numba) against the vectorised NumPy path, from the same seed: the
  same random numbers, the same overlaps to ``PATH_RTOL`` after thousands of steps
  (both engines; erf/relu/tanh/polynomials, minibatches, label noise, a trained second
  layer, Saad-Solla scaling, d = K + M, a singular start, stop conditions);
* the kernels' Python functions (what runs without numba) against the NumPy path, so the
  kernels' arithmetic is checked on a machine without numba too;
* the compiled activations against the registry's NumPy evaluation, every name;
* the semidefinite Cholesky kernel against its vectorised NumPy form and LAPACK;
* the engine's blocks against its one-step loop (a wrapper stepper without
  ``step_block``): identical arrays with recording grids, stop conditions, checkpoints,
  resumes and SIGINT; the divergence step reported alike;
* the stream: blocks drawn in the documented order (T = 1 is the per-step order of the
  Bartlett sampler), results independent of how the run is cut.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from popdyn import _jit
from popdyn._jit import act_eval, activation_kernel, njit
from popdyn._progress import Interrupted
from popdyn.activations import get_activation
from popdyn.errors import NumericalError
from popdyn.models import committee_exact as ce
from popdyn.models import committee_sim as cs
from popdyn.models.committee import CommitteeProblem
from popdyn.models.multi_index_sim import FAST_POLY_MAX_DEGREE, fast_evaluator
from popdyn.samplers import BartlettFactor
from popdyn.simulation import _block_error, _block_length, make_stepper, register_stepper, simulate

#: Compiled vs NumPy path: the same random numbers and the same operations, except the order
#: of the additions in small matrix products and d-dimensional sums, LAPACK's Cholesky vs the
#: kernel's loop, and libm's erf/exp vs NumPy/SciPy's (each ~1e-16 relative).  Measured over
#: the cases below and seeds 7..11 (up to 3000 steps): at most 8.4e-15 relative to the largest
#: entry.  The bound leaves room for the growth of rounding along a trajectory, while a wrong
#: update (any wrong term is O(eta) ~ 1e-2 relative per step) fails by ten orders.  Two
#: factors of an ill-conditioned joint Gram matrix C differ by ~eps * cond(C), so where C is
#: nearly singular the paths separate faster: at d = K + M exactly (the P vectors fill R^P;
#: cond(C) reaches 1e6..1e8, ~1e-12 after a few hundred steps; checked against a full
#: simulation statistically in tests/test_committee_exact.py, and here with one degree of
#: freedom more) and in the few steps after a singular start (checked here over its first
#: steps, where the rank decisions are made).
PATH_RTOL = 1e-12
#: Activation values: NumPy/SciPy's erf, exp, tanh, log1p, expit against libm's: a few ulp.
ACT_RTOL = 1e-14
#: ... with an absolute floor for values near zero (e.g. gelu(-6) ~ 6e-9).
ACT_ATOL = 1e-15

needs_numba = pytest.mark.skipif(not _jit.available(), reason="numba (the `fast` extra) is not installed")

G_CORR = np.array([[1.0, 0.3], [0.3, 0.8]])


def _rel(x, y) -> float:
    """Largest difference relative to the largest entry of ``y``."""
    x, y = np.asarray(x), np.asarray(y)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-300))


def _assert_close(a: dict, b: dict, names, label):
    for k in names:
        err = _rel(a[k], b[k])
        assert err <= PATH_RTOL, f"{label}: `{k}` differs by {err:.3g} relative (> {PATH_RTOL:g})"


# --------------------------------------------------------------------------------------
# popdyn._jit
# --------------------------------------------------------------------------------------
def test_switch_env_and_context(monkeypatch):
    monkeypatch.delenv(_jit.ENV_DISABLE, raising=False)
    default = _jit.enabled()
    assert default == _jit.available()
    with _jit.disabled():
        assert not _jit.enabled() and "disabled" in _jit.status()["reason"]
    assert _jit.enabled() == default
    monkeypatch.setenv(_jit.ENV_DISABLE, "1")
    assert not _jit.enabled() and _jit.ENV_DISABLE in _jit.status()["reason"]
    prob = CommitteeProblem("erf", "erf", K=2, M=2)
    for engine in ("exact", "full"):
        st, _ = make_stepper(prob, d=20, eta=0.05, replicas=2, init=0.5, rng=0, engine=engine)
        assert st.compiled is False and st.describe()["compiled"] is False
    monkeypatch.setenv(_jit.ENV_DISABLE, "0")
    assert _jit.enabled() == default
    _jit.set_enabled(False)
    try:
        assert not _jit.enabled()
    finally:
        _jit.set_enabled(None)
    with pytest.raises(TypeError, match="`flag`"):
        _jit.set_enabled("no")
    with pytest.raises(TypeError, match="`cache`"):
        njit(cache="yes")
    with pytest.raises(TypeError, match="`fn`"):
        njit(np.sin)


@njit(cache=False)
def _twice(x):
    return 2.0 * x


@njit(cache=False)
def _sum_twice(x):
    s = 0.0
    for i in range(x.size):
        s += _twice(x[i])  # a kernel calling a kernel
    return s


def test_kernel_runs_python_or_compiled():
    x = np.arange(5.0)
    with _jit.disabled():
        assert _sum_twice.function() is _sum_twice.py_func
        assert _sum_twice(x) == 20.0
    if _jit.available():
        assert _sum_twice(x) == 20.0 and _sum_twice.compiled and _twice.compiled
        assert _sum_twice.function() is _sum_twice.dispatcher()


@needs_numba
def test_stale_cache_of_a_callee_is_flushed(tmp_path):
    """numba checks only the cached function's own file; an edited callee in another file must
    not be served from the stale cache (popdyn._jit flushes it)."""
    pkg = tmp_path / "jitpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "callee.py").write_text("from popdyn._jit import njit\n\n@njit\ndef f(x):\n    return x + 1.0\n")
    (pkg / "caller.py").write_text("from popdyn._jit import njit\nfrom .callee import f\n\n"
                                   "@njit\ndef g(x):\n    return 2.0 * f(x)\n")
    code = "import sys; sys.path.insert(0, sys.argv[1]); from jitpkg.caller import g; print(g(1.0))"
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", _jit.ENV_DISABLE)}

    def run():
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                             env=env, check=True, timeout=300)
        return float(out.stdout.strip().splitlines()[-1])

    assert run() == 4.0
    assert any(p.suffix == ".nbi" for p in (pkg / "__pycache__").iterdir())  # cached
    callee = pkg / "callee.py"
    callee.write_text(callee.read_text().replace("x + 1.0", "x + 2.0"))
    later = max(p.stat().st_mtime for p in (pkg / "__pycache__").iterdir()) + 10.0
    os.utime(callee, (later, later))
    assert run() == 6.0


# --------------------------------------------------------------------------------------
# compiled activations
# --------------------------------------------------------------------------------------
NAMED = ("erf", "relu", "tanh", "abs", "sign", "logcosh", "sigmoid", "softplus", "gelu", "silu")
POLYS = ("identity", "he3", "hermite:0.2,1,0.5,-0.3", "poly:z**3 - 2*z + 1", "he10")
Z = np.concatenate([np.linspace(-6.0, 6.0, 97), [0.0, 1e-300, -1e-300, 30.0, -30.0, 700.0, -700.0]])


def _evaluators():
    fns = [act_eval.py_func]
    if _jit.available():
        fns.append(act_eval.dispatcher())
    return fns


@pytest.mark.parametrize("spec", NAMED + POLYS)
@pytest.mark.parametrize("derivative", [False, True])
def test_compiled_activation_matches_numpy(spec, derivative):
    act = get_activation(spec)
    # the power form serves fast_evaluator's Horner polynomials (degree <= FAST_POLY_MAX_DEGREE)
    forms = ("series", "power") if act.is_polynomial and act.degree <= FAST_POLY_MAX_DEGREE else ("series",)
    for form in forms:
        code, coef = activation_kernel(act, derivative=derivative, form=form)
        if form == "power":
            expect = fast_evaluator(act, derivative=derivative)(Z.copy(), np.empty(Z.shape))
        else:
            with np.errstate(all="ignore"):
                expect = act.derivative(Z) if derivative else act(Z)
        for fn in _evaluators():
            with _jit.disabled() if fn is act_eval.py_func else _nullcontext():
                got = np.array([fn(code, coef, float(z)) for z in Z])
            finite = np.isfinite(expect)
            np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=f"{spec} {form}")
            np.testing.assert_allclose(got[finite], expect[finite], rtol=ACT_RTOL, atol=ACT_ATOL,
                                       err_msg=f"{spec} derivative={derivative} form={form}")


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_activation_without_compiled_form():
    assert activation_kernel(get_activation(lambda z: z ** 3)) is None
    assert activation_kernel(get_activation("relu").dilate(2.0)) is None
    fake = dataclasses.replace(get_activation("erf"))  # carries the name "erf" but is not the registry's
    assert activation_kernel(fake) is None
    with pytest.raises(ValueError, match="`form` must be one of"):
        activation_kernel(get_activation("he2"), form="chebyshev")
    with pytest.raises(TypeError, match="`act`"):
        activation_kernel("erf")
    prob = CommitteeProblem(get_activation(lambda z: np.tanh(z), derivative=lambda z: 1 - np.tanh(z) ** 2),
                            "erf", K=2, M=1)
    st, _ = make_stepper(prob, d=20, eta=0.05, replicas=2, init=0.5, rng=0, engine="exact")
    assert st.compiled is False  # a callable keeps the NumPy path


# --------------------------------------------------------------------------------------
# the semidefinite Cholesky factor
# --------------------------------------------------------------------------------------
def _psd_cases():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6))
    W = rng.standard_normal((2, 4))
    V = np.vstack([W[0], W[0], W[1]])  # rank 2 with a repeated vector
    return [A @ A.T, np.eye(3), V @ V.T, np.zeros((4, 4)), np.ones((3, 3)),
            np.block([[G_CORR, G_CORR], [G_CORR, G_CORR]])]


@pytest.mark.parametrize("C", _psd_cases())
def test_semidefinite_cholesky(C):
    F = ce.psd_factor(C)
    np.testing.assert_allclose(F @ F.T, C, atol=1e-13 * max(1.0, np.abs(C).max()))
    assert np.all(np.triu(F, 1) == 0)
    vec = ce._semidefinite_cholesky(C[None])[0]
    kernels = [ce.cholesky_psd_kernel.py_func] + ([ce.cholesky_psd_kernel.dispatcher()] if _jit.available() else [])
    for kernel in kernels:
        out = np.empty_like(C)
        with _jit.disabled() if kernel is ce.cholesky_psd_kernel.py_func else _nullcontext():
            kernel(np.ascontiguousarray(C), out, ce.PIVOT_RTOL)
        np.testing.assert_array_equal(out, vec)  # the same operations in the same order
    if np.all(np.linalg.eigvalsh(C) > 1e-8):  # positive definite: LAPACK's factor, to rounding
        np.testing.assert_allclose(vec, np.linalg.cholesky(C), rtol=1e-13, atol=1e-14)


# --------------------------------------------------------------------------------------
# compiled vs NumPy path, whole runs from one seed
# --------------------------------------------------------------------------------------
EXACT_CASES = [
    pytest.param(dict(student="erf", teacher="erf", K=2, M=2), dict(d=500, batch=1, replicas=3, init=0.5,
                                                                    steps=3000), id="erf-B1-d500"),
    pytest.param(dict(student="relu", teacher="relu", K=3, M=2, train_second_layer=True, noise=0.05, delta_a=0.5),
                 dict(d=100, batch=4, replicas=4, init="uniform", same_init=False, steps=1500),
                 id="relu-B4-trained-noise"),
    pytest.param(dict(student="tanh", teacher="erf", K=2, M=1, delta=0.3),
                 dict(d=4, batch=2, replicas=3, init=0.5, steps=400), id="tanh-singular-wishart-dof1-B2"),
    pytest.param(dict(student="he3", teacher="hermite:0,1,0.5", K=2, M=2, delta=0.2, G=G_CORR),
                 dict(d=200, batch=3, replicas=2, init={"Q": 0.3 * np.eye(2), "M": 0.1 * np.eye(2)}, steps=1000),
                 id="polynomials-B3"),
    pytest.param(dict(student="gelu", teacher="sigmoid", K=2, M=2, noise=0.01),
                 dict(d=80, batch=2, replicas=2, init=0.5, steps=600), id="gelu-sigmoid"),
]

FULL_CASES = [
    pytest.param(dict(student="erf", teacher="erf", K=2, M=2), dict(d=200, batch=1, replicas=3, init=0.5,
                                                                    steps=2000), id="erf-B1-d200"),
    pytest.param(dict(student="relu", teacher="relu", K=2, M=3, train_second_layer=True, noise=0.05,
                      conventions="saad-solla"),
                 dict(d=60, batch=3, replicas=2, init="uniform", same_init=False, steps=800),
                 id="relu-B3-trained-noise-saad-solla"),
    pytest.param(dict(student="he3", teacher="he10", K=2, M=1, delta=0.05),
                 dict(d=40, batch=2, replicas=2, init=0.3, steps=300), id="horner-and-series-polynomials"),
]


def _both_paths(prob, engine, kw, seed=7, **extra):
    run = dict(eta=prob.eta(kw["d"]), rng=seed, engine=engine, progress=False, **kw, **extra)
    run.setdefault("n_record", 9)
    compiled = simulate(prob, **run)
    with _jit.disabled():
        numpy_path = simulate(prob, **run)
    return compiled, numpy_path


@needs_numba
@pytest.mark.parametrize("pkw,kw", EXACT_CASES)
def test_exact_engine_paths_agree(pkw, kw):
    prob = CommitteeProblem(**pkw)
    compiled, numpy_path = _both_paths(prob, "exact", kw)
    assert compiled.meta["compiled"] and not numpy_path.meta["compiled"]
    _assert_close(compiled.overlaps, numpy_path.overlaps, ("Q", "M", "a"), f"exact {pkw}")
    np.testing.assert_array_equal(compiled.Q, compiled.Q.transpose(0, 1, 3, 2))  # exactly symmetric


@needs_numba
def test_exact_engine_paths_agree_from_a_singular_start():
    """W = V at the start: C has rank M (then M + 1: both students move along the same sample).
    Both paths must make the same rank decisions (psd_factor's zero columns); a different one
    would change the fields by ~sqrt(PIVOT_RTOL) ~ 3e-7."""
    prob = CommitteeProblem("erf", "erf", K=2, M=2, G=G_CORR, train_second_layer=True, a0=[0.8, 1.1])
    C0 = np.block([[G_CORR, G_CORR], [G_CORR, G_CORR]])
    assert np.all(ce.psd_factor(C0)[2:, 2:] == 0.0)  # the semidefinite route
    d = 50
    for seed in range(7, 12):
        kw = dict(d=d, batch=1, replicas=3, init={"Q": G_CORR, "M": G_CORR}, steps=2,
                  record=np.arange(3) * prob.eta(d))
        compiled, numpy_path = _both_paths(prob, "exact", kw, seed=seed)
        assert np.max(np.abs(compiled.Q[1] - compiled.Q[0])) > 1e-3  # the students move
        _assert_close(compiled.overlaps, numpy_path.overlaps, ("Q", "M", "a"), f"singular start, seed {seed}")


@needs_numba
@pytest.mark.parametrize("pkw,kw", FULL_CASES)
def test_full_engine_paths_agree(pkw, kw):
    prob = CommitteeProblem(**pkw)
    compiled, numpy_path = _both_paths(prob, "full", kw)
    assert compiled.meta["compiled"] and not numpy_path.meta["compiled"]
    _assert_close(compiled.overlaps, numpy_path.overlaps, ("Q", "M", "a"), f"full {pkw}")


@needs_numba
@pytest.mark.parametrize("engine", ["exact", "full"])
def test_paths_agree_with_stop_conditions(engine):
    """Replicas stopped by ``stop`` (frozen rows, skipped by the kernel) at the same steps."""
    prob = CommitteeProblem("erf", "erf", K=2, M=2, delta=2.0)
    kw = dict(d=60, batch=1, replicas=6, init=0.5, same_init=False, steps=2000)
    level = 0.6  # reached by some replicas, not all (seed 7: 3 of 6 in both engines)

    def stop(o):
        return o["M"][:, 0, 0] >= level

    compiled, numpy_path = _both_paths(prob, engine, kw, stop=stop, stop_every=7)
    n_stop = np.isfinite(compiled.events["stop"]).sum()
    assert 0 < n_stop < kw["replicas"], compiled.events["stop"]
    np.testing.assert_array_equal(compiled.events["stop_step"], numpy_path.events["stop_step"])
    _assert_close(compiled.overlaps, numpy_path.overlaps, ("Q", "M", "a"), f"{engine} with stop")


def _python_kernel_stepper(prob, engine, **kw):
    """A stepper whose ``step_block`` runs the kernel's Python function (as without numba)."""
    st, noise = make_stepper(prob, engine=engine, **kw)
    st.compiled = True
    if engine == "exact":
        st._acts = [activation_kernel(prob.student), activation_kernel(prob.student, derivative=True),
                    activation_kernel(prob.teacher)]
        st._kernel = ce._exact_steps.py_func
    else:
        st._acts = [cs._kernel_activation(prob.student), cs._kernel_activation(prob.student, derivative=True),
                    cs._kernel_activation(prob.teacher)]
        st._kernel = cs._full_steps.py_func
        st._per_step = st.R * st.batch * (st.d + (1 if st._noise_sd > 0 else 0))
        st._rows = max(1, cs.DRAW_NUMBERS // st._per_step)
        st._draws = np.empty((st._rows, st._per_step))
        st._V = np.array(st.V, order="C")
    return st, noise


@pytest.mark.parametrize("engine", ["exact", "full"])
def test_python_kernels_match_numpy_path(engine):
    """The kernels' arithmetic, checked without compiling (what a machine without numba runs)."""
    prob = CommitteeProblem("relu", "erf", K=2, M=2, train_second_layer=True, noise=0.1, G=G_CORR)
    kw = dict(d=12, eta=prob.eta(12), batch=2, replicas=2, init=0.5, same_init=False, rng=3)
    with _jit.disabled():
        ref, noise_ref = make_stepper(prob, engine=engine, **kw)
        st, noise = _python_kernel_stepper(prob, engine, **kw)
        s_ref, s = ref.init_state(), st.init_state()
        ref.step_block(s_ref, noise_ref, 25)
        st.step_block(s, noise, 25)
    assert noise.bit_generator.state == noise_ref.bit_generator.state  # the same numbers consumed
    _assert_close(st.observe(s), ref.observe(s_ref), ("Q", "M", "a"), f"{engine} python kernel")


# --------------------------------------------------------------------------------------
# the stream
# --------------------------------------------------------------------------------------
def test_exact_stream_block_order(monkeypatch):
    """A block draws frame, Bartlett chi-squares, Bartlett normals and label noise in
    (T, R, ...) calls; with T = 1 these are the per-step draws of the Bartlett sampler."""
    prob = CommitteeProblem("erf", "erf", K=2, M=1, noise=0.04)
    d, R, B = 9, 3, 4
    for T in (1, 5):
        monkeypatch.setattr(ce, "STREAM_BLOCK", T)
        st, noise = make_stepper(prob, d=d, eta=0.05, batch=B, replicas=R, init=0.5, rng=1, engine="exact")
        assert st.block == T
        replay = np.random.Generator(type(noise.bit_generator)())
        replay.bit_generator.state = noise.bit_generator.state
        state = st.init_state()
        st.refill(state, noise)
        g, chi, nrm, xi = (st._layout()[4][i] for i in range(4))
        buf = state["draws"]
        np.testing.assert_array_equal(buf[:g], replay.standard_normal((T, R, st.P, B)).ravel())
        if T == 1:  # the old per-step order: BartlettFactor(d - P, B).draw, chi-squares first
            L = BartlettFactor(d - st.P, B).draw(replay, size=(R,))
            k = np.arange(chi // R)
            np.testing.assert_array_equal(buf[g:g + chi], L[:, k, k].ravel())
            rows, cols = np.tril_indices(B, -1)
            keep = cols < d - st.P
            np.testing.assert_array_equal(buf[g + chi:g + chi + nrm], L[:, rows[keep], cols[keep]].ravel())
        else:
            df = d - st.P - np.arange(chi // (T * R))
            np.testing.assert_array_equal(buf[g:g + chi], np.sqrt(replay.chisquare(df, size=(T, R, df.size))).ravel())
            np.testing.assert_array_equal(buf[g + chi:g + chi + nrm], replay.standard_normal(nrm))
        np.testing.assert_array_equal(buf[g + chi + nrm:], replay.standard_normal((T, R, B)).ravel() if xi else [])
        assert replay.bit_generator.state == noise.bit_generator.state


@pytest.mark.parametrize("engine", ["exact", "full"])
@pytest.mark.parametrize("jit", [True, False])
def test_result_does_not_depend_on_how_the_run_is_cut(engine, jit):
    """step() n times, step_block(n) once, and simulate with other recording grids and
    checkpoint intervals: bit-identical on one path."""
    if jit and not _jit.available():
        pytest.skip("numba is not installed")
    prob = CommitteeProblem("erf", "erf", K=2, M=2, noise=0.01, train_second_layer=True)
    kw = dict(d=40, eta=prob.eta(40), batch=2, replicas=3, init=0.5, rng=11)
    with _nullcontext() if jit else _jit.disabled():
        a, na = make_stepper(prob, engine=engine, **kw)
        b, nb = make_stepper(prob, engine=engine, **kw)
        sa, sb = a.init_state(), b.init_state()
        for _ in range(300):
            a.step(sa, na)
        b.step_block(sb, nb, 300)
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])
        run = dict(kw, engine=engine, steps=700, progress=False)
        one = simulate(prob, n_record=2, **run)
        many = simulate(prob, record="linear", n_record=71, **run)
    for k in ("Q", "M", "a"):
        np.testing.assert_array_equal(getattr(one, k)[-1], getattr(many, k)[-1])


# --------------------------------------------------------------------------------------
# the engine's block-stepping hook
# --------------------------------------------------------------------------------------
def test_block_length_ends_where_the_one_step_loop_acts():
    assert _block_length(0, 100, 1000, None, None, None) == 100
    assert _block_length(10, 100, 7, None, None, None) == 7
    assert _block_length(10, 100, 1000, 25, None, None) == 15
    assert _block_length(10, 100, 1000, None, 4, None) == 2  # next multiple of stop_every: 12
    assert _block_length(12, 100, 1000, None, 4, 5) == 3  # next multiple of checkpoint_steps: 15
    assert _block_length(99, 100, 1000, 100, 7, 9) == 1


def test_block_error_is_relocated():
    err = _block_error(NumericalError("diverged", step=3), 40, 10, 0.5)
    assert err.step == 43 and err.time == pytest.approx(21.5) and str(err) == "diverged (at step 43, t = 21.5)"
    err = _block_error(NumericalError("diverged"), 40, 10, 0.5)
    assert err.step == 50 and "within steps 41..50" in str(err)


class _OneStepProblem(CommitteeProblem):
    """A committee problem whose exact stepper hides ``step_block``: the engine's one-step loop."""


class _OneStepExact:
    model, algorithms, continuous = "committee", ("sgd",), False

    def __init__(self, problem, config, streams):
        self._inner = ce.CommitteeExactStepper(problem, config, streams)

    def __getattr__(self, name):
        if name == "step_block":
            raise AttributeError(name)
        return getattr(self._inner, name)


register_stepper(_OneStepProblem, _OneStepExact, engine="exact")


def _problems(**kw):
    fields = dict(student="erf", teacher="erf", K=2, M=2, delta=2.0, train_second_layer=True, noise=0.01)
    fields.update(kw)
    return CommitteeProblem(**fields), _OneStepProblem(**fields)


@pytest.mark.parametrize("jit", [True, False])
def test_blocks_equal_the_one_step_loop(jit, tmp_path):
    """Recording grid, stop + stop_every, checkpoint_steps and a resume: the same arrays."""
    if jit and not _jit.available():
        pytest.skip("numba is not installed")
    blocky, onestep = _problems()
    kw = dict(d=60, eta=blocky.eta(60), steps=900, replicas=5, init=0.5, same_init=False, rng=4, engine="exact",
              n_record=17, progress=False, stop=lambda o: o["M"][:, 0, 0] >= 0.8, stop_every=13)
    with _nullcontext() if jit else _jit.disabled():
        a = simulate(blocky, **kw)
        b = simulate(onestep, **kw)
        ck = tmp_path / "run.npz"
        c = simulate(blocky, checkpoint=ck, checkpoint_steps=50, checkpoint_every=1e9, **kw)  # blocks cut at 50s
        assert json.loads(str(np.load(ck)["header"]))["complete"]
        d = simulate(blocky, checkpoint=ck, checkpoint_steps=50, checkpoint_every=1e9, **kw)  # from the file
    assert 0 < np.isfinite(a.events["stop"]).sum() < 5
    assert d.meta["resumed_from"] == 900
    for other in (b, c, d):
        np.testing.assert_array_equal(a.t, other.t)
        np.testing.assert_array_equal(a.events["stop_step"], other.events["stop_step"])
        for k in ("Q", "M", "a"):
            np.testing.assert_array_equal(getattr(a, k), getattr(other, k))


def test_sigint_during_a_block_saves_its_end(tmp_path, monkeypatch):
    blocky, _ = _problems()
    common = dict(d=50, eta=blocky.eta(50), steps=600, replicas=3, init=0.5, rng=2, engine="exact", n_record=30,
                  progress=False)
    ref = simulate(blocky, **common)
    original, calls = ce.CommitteeExactStepper.step_block, {"n": 0, "done": 0}

    def signalling(self, state, rng, n_steps, frozen=None):
        original(self, state, rng, n_steps, frozen)
        calls["n"] += 1
        calls["done"] += n_steps
        if calls["n"] == 9:
            os.kill(os.getpid(), signal.SIGINT)

    ck = tmp_path / "run.npz"
    with monkeypatch.context() as m:
        m.setattr(ce.CommitteeExactStepper, "step_block", signalling)
        with pytest.raises(Interrupted, match="SIGINT"):
            simulate(blocky, checkpoint=ck, checkpoint_every=1e9, **common)
    assert calls["n"] == 9  # the block in progress finished, no further block ran
    header = json.loads(str(np.load(ck)["header"]))
    assert header["position"] == calls["done"] and not header["complete"]
    resumed = simulate(blocky, checkpoint=ck, **common)
    assert resumed.meta["resumed_from"] == calls["done"]
    for k in ("Q", "M", "a"):
        np.testing.assert_array_equal(getattr(resumed, k), getattr(ref, k))


@pytest.mark.parametrize("engine", ["exact", "full"])
def test_divergence_step_is_the_same_on_every_path(engine):
    fields = dict(student="relu", teacher="relu", K=2, M=2, train_second_layer=True, delta=500.0)
    prob = CommitteeProblem(**fields)
    kw = dict(d=50, eta=prob.eta(50), steps=400, replicas=5, init=1.0, rng=0, engine=engine, n_record=2,
              progress=False)  # no recording (norm check) before the end: the step loop meets the overflow
    steps = []
    for jit in (True, False):
        if jit and not _jit.available():
            continue
        with _nullcontext() if jit else _jit.disabled():
            with pytest.raises(NumericalError, match="non-finite") as info:
                simulate(prob, **kw)
        steps.append(info.value.step)
        assert info.value.time == pytest.approx(info.value.step * kw["eta"])
    if engine == "exact":
        with _jit.disabled(), pytest.raises(NumericalError) as info:
            simulate(_OneStepProblem(**fields), **kw)
        steps.append(info.value.step)
    assert steps[0] is not None and len(set(steps)) == 1, steps
