"""popdyn.trajectory.Trajectory: validation, replica statistics, interpolation, persistence.

Reference values are computed here with plain NumPy from the arrays handed to the
constructor (an independent route: no Trajectory method is used to build an expectation).
"""

import json
import os

import numpy as np
import pytest

from popdyn.trajectory import Trajectory

#: Arithmetic on the same numbers in a different order (mean/std over <= 5 replicas):
#: rounding only, a few ulps of O(1) values.
ROUND_TOL = 1e-14
#: np.interp at a grid point returns the stored value up to one rounding of
#: y0 + (t - t0) * slope with t == t0 or t == t1.
GRID_TOL = 1e-15


def make_traj(n_times=7, replicas=5, N=2, k=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(0.1, 1.0, n_times)) - 0.1
    u = rng.standard_normal((n_times, replicas, N, k))
    q = rng.standard_normal((n_times, replicas))
    fields = dict(time_unit="t = eta * steps", source="simulation", model="multi_index",
                  message="done", events={"escape": rng.uniform(0, 1, (replicas, N))},
                  meta={"seed": 3, "d": 50, "eta": 0.01, "nested": {"a": [1, 2]}})
    fields.update(kw)
    return Trajectory(t=t, overlaps={"u": u, "q": q}, **fields), t, u, q


# -- construction ---------------------------------------------------------------------
@pytest.mark.parametrize("t, match", [
    (np.array([]), "non-empty 1-d"),
    (np.zeros((2, 2)), "non-empty 1-d"),
    (np.array([0.0, 2.0, 1.0]), "non-decreasing"),
])
def test_bad_time_grid(t, match):
    with pytest.raises(ValueError, match=match):
        Trajectory(t=t, overlaps={}, time_unit="steps", source="ode", model="m")


@pytest.mark.parametrize("shape", [(3,), (4, 1), (2, 1, 2)])
def test_overlap_shape_must_be_time_first(shape):
    # t has 3 points: (3,) lacks the replica axis; (4, 1) and (2, 1, 2) have the wrong time axis
    with pytest.raises(ValueError, match="overlap `u` must have shape"):
        Trajectory(t=[0.0, 1.0, 2.0], overlaps={"u": np.zeros(shape)}, time_unit="steps", source="ode", model="m")


def test_arrays_are_converted_and_named_access():
    tr = Trajectory(t=[0, 1], overlaps={"u": [[[0.5]], [[0.25]]]}, time_unit="steps", source="ode", model="m")
    assert tr.t.dtype == float and tr.u.dtype == float
    assert tr.n_times == 2 and tr.n_replicas == 1 and tr.success
    assert tr.u is tr.overlaps["u"]
    with pytest.raises(AttributeError, match=r"no field or overlap 'M'; overlaps: \['u'\]"):
        tr.M


def test_frozen():
    tr, *_ = make_traj()
    with pytest.raises(AttributeError):
        tr.status = 3


# -- statistics ------------------------------------------------------------------------
def test_mean_std_final():
    tr, t, u, q = make_traj()
    assert tr.n_replicas == 5 and tr.n_times == t.size
    np.testing.assert_allclose(tr.mean("u"), u.sum(axis=1) / 5, rtol=0, atol=ROUND_TOL)
    dev = u - u.sum(axis=1, keepdims=True) / 5
    np.testing.assert_allclose(tr.std("u"), np.sqrt((dev**2).sum(axis=1) / 4), rtol=0, atol=ROUND_TOL)
    assert tr.mean("q").shape == (t.size,) and tr.std("q").shape == (t.size,)
    np.testing.assert_array_equal(tr.final("u"), u[-1])
    assert tr.final("u").shape == (5, 2, 3)


def test_std_single_replica_is_zero():
    tr, t, u, _ = make_traj(replicas=1)
    np.testing.assert_array_equal(tr.std("u"), np.zeros((t.size, 2, 3)))
    np.testing.assert_array_equal(tr.mean("u"), u[:, 0])


# -- interpolation ----------------------------------------------------------------------
def test_at_is_exact_on_the_grid():
    tr, t, u, q = make_traj()
    idx = np.array([0, 2, 3, 6])
    sub = tr.at(t[idx])
    np.testing.assert_allclose(sub.u, u[idx], rtol=0, atol=GRID_TOL)
    np.testing.assert_allclose(sub.q, q[idx], rtol=0, atol=GRID_TOL)
    np.testing.assert_array_equal(sub.t, t[idx])
    # everything else is carried over unchanged
    assert (sub.time_unit, sub.source, sub.model, sub.meta) == (tr.time_unit, tr.source, tr.model, tr.meta)


def test_at_interpolates_linearly_between_grid_points():
    tr, t, u, _ = make_traj()
    lam = np.array([0.25, 0.5, 0.9])
    times = t[2] + lam * (t[3] - t[2])
    expected = u[2][None] + lam[:, None, None, None] * (u[3] - u[2])[None]
    np.testing.assert_allclose(tr.at(times).u, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("times, match", [
    ([[0.5]], "1-d"),
    ([-1.0], "must lie in"),
    ([1e6], "must lie in"),
])
def test_at_rejects_bad_times(times, match):
    tr, *_ = make_traj()
    with pytest.raises(ValueError, match=match):
        tr.at(times)


# -- persistence -------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    tr, t, u, q = make_traj(status=1, message="escape event fired")
    path = tmp_path / "sub" / "run.npz"  # parent directory is created
    out = tr.save(path)
    assert os.fspath(out) == os.fspath(path) and path.exists()
    # atomic write: the temporary file was renamed away, nothing else left in the folder
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.npz"]
    back = Trajectory.load(path)
    np.testing.assert_array_equal(back.t, t)
    np.testing.assert_array_equal(back.u, u)
    np.testing.assert_array_equal(back.q, q)
    np.testing.assert_array_equal(back.events["escape"], tr.events["escape"])
    assert (back.time_unit, back.source, back.model, back.status, back.message) == \
        ("t = eta * steps", "simulation", "multi_index", 1, "escape event fired")
    assert back.meta == tr.meta


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "run.npz"
    make_traj(seed=1)[0].save(path)
    tr2, t2, u2, _ = make_traj(seed=2)
    tr2.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]
    np.testing.assert_array_equal(Trajectory.load(path).u, u2)


def test_saved_file_has_ordinary_permissions(tmp_path):
    path = tmp_path / "run.npz"
    make_traj()[0].save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_failure_leaves_no_temp_file(tmp_path):
    # a meta value that json cannot encode falls back to str (default=str), so to force a
    # failure we write into a path that is a directory: the rename fails after the temp
    # file was written, and the temp file must be removed
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep").write_text("x")
    tr, *_ = make_traj()
    with pytest.raises(OSError):
        tr.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# -- summary ----------------------------------------------------------------------------
def test_summary_is_json_serialisable():
    tr, t, u, q = make_traj()
    s = tr.summary()
    back = json.loads(json.dumps(s))  # plain json, no default= hook
    assert back["n_times"] == t.size and back["n_replicas"] == 5
    assert back["t_final"] == t[-1]
    assert set(back["final_mean"]) == {"u", "q"}
    np.testing.assert_allclose(back["final_mean"]["u"], u[-1].mean(axis=0), rtol=0, atol=ROUND_TOL)
    np.testing.assert_allclose(back["final_mean"]["q"], q[-1].mean(), rtol=0, atol=ROUND_TOL)
    assert back["meta"] == tr.meta
    for key in ("source", "model", "time_unit", "status", "message"):
        assert back[key] == getattr(tr, key)


def test_ode_and_simulation_trajectories_round_trip(tmp_path):
    """Real results (an ODE solution and a short simulation) survive save/load and json."""
    from popdyn.models.multi_index import MultiIndexProblem, gram
    from popdyn.ode import integrate
    from popdyn.simulation import simulate

    prob = MultiIndexProblem("he3", "he3", gram("orthogonal", 2), n_neurons=2)
    sim = simulate(prob, d=30, algorithm="sgd", eta=0.01, steps=50, batch=4, replicas=2, init=0.3,
                   n_record=5, rng=1, progress=False)
    ode = integrate(prob, np.asarray(sim.meta["u0"]), 0.5, n_times=5)
    for name, tr in (("sim", sim), ("ode", ode)):
        path = tmp_path / f"{name}.npz"
        tr.save(path)
        back = Trajectory.load(path)
        np.testing.assert_array_equal(back.u, tr.u)
        np.testing.assert_array_equal(back.t, tr.t)
        assert back.source == tr.source and back.time_unit == tr.time_unit
        json.dumps(tr.summary())
    assert ode.n_replicas == 1 and sim.n_replicas == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ode.npz", "sim.npz"]
