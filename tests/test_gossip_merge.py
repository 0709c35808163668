"""Merge rules: age-weighted averaging and ClippedGossip's bounded step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.merge import MergeMismatch, age_weighted, clipped, difference_norm, geometry, towards


def model(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"conv1.w": (rng.standard_normal((8, 3, 3, 3)) * scale).astype(np.float32),
            "conv1.b": (rng.standard_normal(8) * scale).astype(np.float32),
            "fc.w": (rng.standard_normal((10, 32)) * scale).astype(np.float32)}


def test_age_weighted_merge_is_the_weighted_mean_and_keeps_the_older_age():
    a, b = model(1), model(2)
    merged, age = age_weighted(a, 30.0, b, 10.0)
    assert age == 30.0
    for name in a:
        expected = (30 * a[name].astype(np.float64) + 10 * b[name]) / 40
        np.testing.assert_allclose(merged[name], expected, rtol=1e-6, atol=1e-6)
        assert merged[name].dtype == np.float32 and merged[name].shape == a[name].shape


def test_untrained_models_average_evenly_and_a_fresh_peer_changes_nothing():
    a, b = model(1), model(2)
    even, age = age_weighted(a, 0.0, b, 0.0)
    np.testing.assert_allclose(even["fc.w"], (a["fc.w"] + b["fc.w"]) / 2, rtol=1e-6, atol=1e-6)  # float32 arithmetic
    assert age == 0.0
    same, _ = age_weighted(a, 50.0, b, 0.0)
    np.testing.assert_array_equal(same["fc.w"], a["fc.w"])


def test_merge_does_not_modify_its_inputs():
    a, b = model(1), model(2)
    a0 = {k: v.copy() for k, v in a.items()}
    age_weighted(a, 1.0, b, 1.0)
    clipped(a, b, tau=0.1)
    assert all(np.array_equal(a[k], a0[k]) for k in a)


def test_poisoned_peer_moves_a_node_at_most_tau():
    honest, poison = model(1), model(2, scale=1e6)
    tau = 0.5
    merged = clipped(honest, poison, tau=tau, weight=1.0)
    assert difference_norm(honest, merged) == pytest.approx(tau, rel=1e-4)
    # the age-weighted merge, for contrast, is dragged far away
    dragged, _ = age_weighted(honest, 1.0, poison, 1.0)
    assert difference_norm(honest, dragged) > 1e5


def test_clipped_merge_of_a_close_peer_is_a_plain_weighted_step():
    a = model(1)
    b = {k: v + np.float32(0.001) for k, v in a.items()}
    merged = clipped(a, b, tau=10.0, weight=0.5)
    for name in a:
        np.testing.assert_allclose(merged[name], a[name] + 0.0005, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(scale=st.floats(1e-3, 1e8), tau=st.floats(1e-3, 1e3), weight=st.floats(0.01, 1.0),
       seed=st.integers(0, 2**16))
def test_clipped_step_never_exceeds_weight_times_tau(scale, tau, weight, seed):
    a, b = model(seed), model(seed + 1, scale=scale)
    step = difference_norm(a, clipped(a, b, tau=tau, weight=weight))
    assert step <= weight * tau * (1 + 1e-4) + 1e-5


@pytest.mark.parametrize("mutate,reason", [
    (lambda m: m.pop("fc.w"), "names"),
    (lambda m: m.update(extra=np.zeros(3, np.float32)), "names"),
    (lambda m: m.update({"fc.w": np.zeros((10, 31), np.float32)}), "shape"),
    (lambda m: m.update({"fc.w": m["fc.w"].astype(np.float64)}), "dtype"),
    (lambda m: m.update({"fc.w": m["fc.w"].astype(np.int32)}), "dtype"),
    (lambda m: m.update({"fc.w": np.full((10, 32), np.nan, np.float32)}), "not_finite"),
    (lambda m: m.update({"fc.w": [[0.0] * 32] * 10}), "type"),
])
def test_only_identical_architectures_merge(mutate, reason):
    a, b = model(1), model(2)
    mutate(b)
    for merge in (lambda: age_weighted(a, 1.0, b, 1.0), lambda: clipped(a, b, tau=1.0)):
        with pytest.raises(MergeMismatch) as info:
            merge()
        assert info.value.reason == reason


def test_bad_ages_and_radii_are_refused():
    a, b = model(1), model(2)
    with pytest.raises(ValueError, match="peer_age"):
        age_weighted(a, 1.0, b, float("nan"))
    with pytest.raises(ValueError, match="own_age"):
        age_weighted(a, -1.0, b, 1.0)
    with pytest.raises(ValueError, match="tau"):
        clipped(a, b, tau=0.0)
    with pytest.raises(ValueError, match="weight"):
        clipped(a, b, tau=1.0, weight=1.5)


@pytest.mark.parametrize("scale", [1.0, 1e-3, 1e20])  # 1e20: squares overflow float32
def test_geometry_in_float32_matches_float64_and_its_difference_is_the_step(scale):
    a, b = model(1, scale), model(2, scale)
    g = geometry(a, b)
    flat = {k: np.concatenate([m[n].astype(np.float64).ravel() for n in sorted(m)]) for k, m in (("a", a), ("b", b))}
    expected = (np.linalg.norm(flat["a"]), np.linalg.norm(flat["b"]), flat["a"] @ flat["b"],
                np.linalg.norm(flat["b"] - flat["a"]))
    for got, want in zip((g.own_norm, g.peer_norm, g.dot, g.distance), expected):
        assert math.isfinite(got) and got == pytest.approx(want, rel=1e-5)
    merged, _ = age_weighted(a, 3.0, b, 1.0)
    stepped = towards(a, g.difference, 0.25)
    for name in a:
        np.testing.assert_allclose(stepped[name], merged[name], rtol=1e-6)
