"""A new model plugs in through the public API alone: this file defines a toy model,
registers it, and gets ``predict``, ``simulate``, ``compare``, the command line and
``verify`` with no edit anywhere else in popdyn.

The toy: linear regression with a unit teacher ``v`` in ``R^d`` and a student ``w``,
squared loss ``L(w) = 1/2 E[(x.w - x.v)^2] = 1/2 |w - v|^2`` for ``x ~ N(0, I_d)``.  The
overlap ``m = v.w`` obeys ``dm/dt = 1 - m`` under gradient flow, and online SGD with step
``eta`` has exactly ``E[m_{n+1} - 1] = (1 - eta) E[m_n - 1]``, so its replica mean follows
the ODE at ``t = eta * steps`` up to O(eta).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import popdyn
from popdyn.cli import main
from popdyn.model import Model, Option, Prediction, get_model, register_model, unregister_model
from popdyn.simulation import register_stepper


@dataclasses.dataclass(frozen=True)
class ToyProblem:
    """Linear regression; ``scale`` multiplies the teacher (its fixed point is m = scale)."""

    scale: float = 1.0
    ode_model = "toy"
    ode_state_names = ("m",)

    def ode_initial_state(self, state0):
        m = np.asarray(state0["m"] if isinstance(state0, dict) else state0, dtype=float).reshape(1)
        if not np.all(np.isfinite(m)):
            raise ValueError(f"`m0` must be finite, got {m}.")
        return {"m": m}

    def ode_rhs(self, t, state, **options):
        return {"m": self.scale - state["m"]}

    def describe(self):
        return {"model": "toy", "scale": self.scale}


class ToyStepper:
    """Online SGD on the toy problem, vectorised over replicas and the minibatch."""

    model = "toy"
    algorithms = ("sgd",)
    continuous = False

    def __init__(self, problem, config, streams):
        self.R, self.d, self.eta, self.B = config.replicas, config.d, config.eta, config.batch
        v = streams["model"].standard_normal(self.d)
        self.v = v / np.linalg.norm(v)
        self.scale = problem.scale
        self.w0 = float(config.init) * self.v
        self.constants = {"v": self.v}

    def init_state(self):
        return {"w": np.tile(self.w0, (self.R, 1))}

    def step(self, state, rng):
        x = rng.standard_normal((self.R, self.B, self.d))
        resid = np.einsum("rbd,rd->rb", x, state["w"] - self.scale * self.v)
        state["w"] -= self.eta / self.B * np.einsum("rb,rbd->rd", resid, x)

    def observe(self, state):
        return {"m": (state["w"] @ self.v)[:, None]}

    def work_per_step(self):
        return float(self.R * self.B * self.d)

    def describe(self):
        return {}


def _build(opts):
    return ToyProblem(scale=opts.scale)


def _predict(problem, opts):
    traj = popdyn.integrate(problem, float(opts.init), 5.0 if opts.t_end is None else opts.t_end)
    m_final = float(traj.final("m").ravel()[0])
    return Prediction({"model": "toy", "m_final": m_final}, [f"toy: m(t_end) = {m_final:.6f}"], traj, "m")


TOY = Model(name="toy-regression", description="linear regression, m' = scale - m (a test model)",
            options=(Option("scale", "float", 1.0, "teacher scale", positive=True),),
            uses={"predict": ("init", "t_end", "out", "plot"),
                  "simulate": ("d", "seed", "init", "t_end", "eta", "delta", "batch", "algorithm", "replicas", "out"),
                  "compare": ("d", "seed", "init", "t_end", "eta", "delta", "batch", "algorithm", "replicas",
                              "plot")},
            build=_build, predict=_predict)


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    register_model(TOY)
    register_stepper(ToyProblem, ToyStepper)
    yield
    unregister_model(TOY.name)


def _json(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_registry_and_models_listing():
    assert get_model("toy-regression") is TOY
    with pytest.raises(ValueError, match="toy-regression"):
        get_model("nope")


def test_predict_through_the_cli(capsys):
    out = _json(["predict", "--model", "toy-regression", "--scale", "2", "--init", "0.5", "--t-end", "3", "--json"],
                capsys)
    assert out["m_final"] == pytest.approx(2.0 - 1.5 * np.exp(-3.0), abs=1e-8)


def test_simulate_and_compare_through_the_cli(capsys, tmp_path):
    out = _json(["simulate", "--model", "toy-regression", "--d", "50", "--eta", "0.01", "--batch", "4",
                 "--t-end", "2", "--replicas", "4", "--init", "0.1", "--quiet", "--json"], capsys)
    assert out["n_replicas"] == 4
    # E[m] - 1 = (1 - eta)^steps (m0 - 1) exactly; replica noise is O(sqrt(eta)) with 4 replicas
    expected = 1.0 - 0.9 * (1 - 0.01) ** 200
    assert abs(np.mean(out["final_mean"]["m"]) - expected) < 0.1
    res = _json(["compare", "--model", "toy-regression", "--d", "200", "--eta", "0.005", "--t-end", "3",
                 "--replicas", "8", "--init", "0.2", "--quiet", "--plot", str(tmp_path / "toy.png"), "--json"],
                capsys)
    assert res["verdict"]["agree"] is True
    assert (tmp_path / "toy.png").exists()


class WrongToy(ToyProblem):
    """An ODE that is wrong for its own simulator (relaxes to 1.3 while SGD goes to 1)."""

    def ode_rhs(self, t, state, **options):
        return {"m": 1.3 * self.scale - state["m"]}


def test_compare_detects_a_wrong_model():
    register_stepper(WrongToy, ToyStepper)
    kwargs = dict(d=200, t_end=3.0, eta=0.005, batch=4, replicas=8, init=0.2, progress=False)
    for seed in range(3):
        assert popdyn.compare(ToyProblem(), rng=seed, **kwargs).verdict.agree
        assert not popdyn.compare(WrongToy(), rng=seed, **kwargs).verdict.agree


def test_options_of_other_models_are_refused(capsys):
    assert main(["predict", "--model", "toy-regression", "--noise", "0.1"]) == 2
    assert "--noise" in capsys.readouterr().err
    assert main(["predict", "--model", "toy-regression", "--d", "10"]) == 2
    assert "does not apply" in capsys.readouterr().err


def test_help_lists_only_the_models_options(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--model", "toy-regression", "--help"])
    text = capsys.readouterr().out
    assert "--scale" in text and "--noise" not in text and "--covariance" not in text


def test_verify_takes_a_claim_about_the_toy(monkeypatch):
    """A paper's claims are plain functions: a claim about the toy runs through ``verify``."""
    import importlib

    from popdyn.verification import Claim, ClaimResult

    verify_module = importlib.import_module("popdyn.verification")

    def run(quick, rng):
        traj = popdyn.integrate(ToyProblem(1.0), 0.0, 2.0)
        measured = float(traj.final("m").ravel()[0])
        predicted = 1.0 - np.exp(-2.0)
        return ClaimResult("toy", "relaxation", predicted, measured, 1e-8, abs(measured - predicted) < 1e-8)

    class EntryPoint:  # what a package declares under [project.entry-points."popdyn.papers"]
        name = "toy"

        @staticmethod
        def load():
            return [Claim("toy", "relaxation", "m(t) = 1 - e^-t", run)]

    monkeypatch.setattr(verify_module, "_entry_points", lambda: [EntryPoint()])
    (res,) = popdyn.verify(["toy"])
    assert res.passed and res.paper == "toy"
