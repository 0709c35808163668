"""ConvnetLearner: its age-driven learning rate, its checkpoint, and what absorb refuses.

Small: 200 embedded images and the ``tiny`` net, a few steps each (the whole file runs in
a few seconds). Gossip learning as a whole is tested in tests/test_gossip_learning.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gossipnet.data import load_dataset
from gossipnet.errors import UserError
from gossipnet.learners.base import Snapshot
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner, age_lr_factor


@pytest.fixture(scope="module")
def data():
    return load_dataset("embedded")


def make(data, node: int = 0, **kw) -> ConvnetLearner:
    kw.setdefault("lr_schedule", "age")  # most tests here are about the decay
    cfg = ConvnetConfig(net="tiny", seed=node, eval_images=50, **kw)
    return ConvnetLearner(data, np.arange(100 * node, 100 * node + 100), cfg)


def test_learning_rate_decays_with_age_to_half_at_the_half_life_and_never_below_the_floor():
    assert age_lr_factor(0, 30_000, 0.05) == 1.0
    assert age_lr_factor(30_000, 30_000, 0.05) == pytest.approx(0.5)
    ages = [0, 1_000, 10_000, 100_000, 1e6, 1e7, 1e9]
    factors = [age_lr_factor(a, 30_000, 0.05) for a in ages]
    assert all(a > b for a, b in zip(factors[:-2], factors[1:-1])), factors
    assert factors[-1] == factors[-2] == 0.05
    # inverse time (power 1) is also half at the half-life, and lower than 1/sqrt beyond it
    assert age_lr_factor(30_000, 30_000, 0.05, power=1.0) == pytest.approx(0.5)
    assert age_lr_factor(90_000, 30_000, 0.05, power=1.0) == pytest.approx(0.25)
    assert age_lr_factor(90_000, 30_000, 0.05, power=1.0) < age_lr_factor(90_000, 30_000, 0.05)


def test_training_lowers_the_rate_as_the_node_ages(data):
    learner = make(data, lr_half_life_images=64)  # 64 images: half the rate after 2 steps of 32
    base = learner.base_lr
    assert learner.optimizer.lr == base and learner.metrics()["lr"] == base
    learner.train(2)
    assert learner.age == 64
    assert learner.optimizer.lr == pytest.approx(base * 0.5)  # the next step's rate, at the half-life
    out = learner.train(2)  # steps at ages 64 and 96 (the last a batch of 4: the shard has 100)
    assert out["lr"] == pytest.approx(base / math.sqrt(1 + 3 * 96 / 64))  # the last step's rate
    assert learner.age == 100
    assert learner.metrics()["lr"] == pytest.approx(base / math.sqrt(1 + 3 * 100 / 64))


def test_merging_an_older_model_takes_its_age_and_its_lower_rate(data):
    young, old = make(data, 0, lr_half_life_images=64), make(data, 1, lr_half_life_images=64)
    old.train(6)  # 164 images: an epoch of the 100-image shard ends in a batch of 4
    assert young.absorb(old.snapshot(), "old").accepted
    assert young.age == old.age == 164
    assert young.optimizer.lr == pytest.approx(young.base_lr / math.sqrt(1 + 3 * 164 / 64))
    assert young.optimizer.lr == pytest.approx(old.optimizer.lr)


def test_constant_schedule_keeps_the_base_rate(data):
    learner = make(data, lr_schedule="constant", lr_half_life_images=64)
    learner.train(4)
    assert learner.optimizer.lr == learner.base_lr == learner.lr_at(1e9)


def test_schedule_survives_a_state_dict_round_trip(data):
    a = make(data, lr_half_life_images=64)
    a.train(3)
    state = a.state_dict()
    b = make(data, lr_half_life_images=64)
    b.load_state_dict(state)
    assert b.age == a.age and b.optimizer.lr == pytest.approx(a.optimizer.lr)
    a.train(2)
    b.train(2)
    assert b.optimizer.lr == pytest.approx(a.optimizer.lr)
    for name, w in a.net.params().items():
        np.testing.assert_allclose(b.net.params()[name], w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [
    {"lr_schedule": "cosine"}, {"lr_half_life_images": 0}, {"lr_half_life_images": float("inf")},
    {"lr_floor": 0}, {"lr_floor": 1.5}, {"lr_decay_power": 0}, {"lr_decay_power": 3},
    {"momentum_on_absorb": -0.1}, {"momentum_on_absorb": 2},
])
def test_bad_schedule_settings_are_user_errors_naming_the_field(bad):
    with pytest.raises(UserError, match=next(iter(bad)).replace("lr_schedule", "schedule")):
        ConvnetConfig(**bad)


def test_momentum_on_absorb_scales_adams_first_moment_and_keeps_the_second(data):
    a, b = make(data, 0, momentum_on_absorb=0.5, shared_moments=()), make(data, 1, shared_moments=())
    a.train(2)
    b.train(2)
    m = {k: v.copy() for k, v in a.optimizer.state["m"].items()}
    v = {k: x.copy() for k, x in a.optimizer.state["v"].items()}
    assert a.absorb(b.snapshot(), "b").accepted
    for k in m:
        np.testing.assert_allclose(a.optimizer.state["m"][k], 0.5 * m[k])
        np.testing.assert_array_equal(a.optimizer.state["v"][k], v[k])


def _tampered(snap: Snapshot, **changes) -> Snapshot:
    fields = dict(kind=snap.kind, fingerprint=snap.fingerprint, age=snap.age,
                  tensors=dict(snap.tensors), meta=dict(snap.meta))
    fields.update(changes)
    return Snapshot(**fields)


def _bad_snapshots(snap: Snapshot):
    name = next(iter(snap.tensors))
    w = snap.tensors[name]
    nan = w.copy()
    nan.flat[0] = np.nan
    yield "wrong_kind", _tampered(snap, kind="evolution")
    yield "wrong_fingerprint", _tampered(snap, fingerprint="0" * 16)
    yield "bad_age", _tampered(snap, age=float("nan"))
    yield "bad_age", _tampered(snap, age=-1.0)
    yield "bad_shape", _tampered(snap, tensors={**snap.tensors, name: w[..., :1]})
    yield "bad_not_finite", _tampered(snap, tensors={**snap.tensors, name: nan})
    yield "bad_names", _tampered(snap, tensors={k: v for k, v in snap.tensors.items() if k != name})
    yield "bad_dtype", _tampered(snap, tensors={**snap.tensors, name: w.astype(np.float64)})


def test_absorb_rejects_foreign_or_broken_models_with_a_reason_and_changes_nothing(data):
    a, b = make(data, 0), make(data, 1)
    a.train(1)
    b.train(3)
    before = {k: v.copy() for k, v in a.net.params().items()}
    age, lr, m = a.age, a.optimizer.lr, {k: v.copy() for k, v in a.optimizer.state["m"].items()}
    reasons = []
    for want, snap in _bad_snapshots(b.snapshot()):
        result = a.absorb(snap, "b")
        assert not result.accepted and result.reason == want, (want, result)
        assert result.detail
        reasons.append(result.reason)
    assert a.merges == 0 and a.age == age and a.optimizer.lr == lr
    for k, w in a.net.params().items():
        np.testing.assert_array_equal(w, before[k])
        np.testing.assert_array_equal(a.optimizer.state["m"][k], m[k])
    assert a.absorb(b.snapshot(), "b").accepted and a.merges == 1


def test_shared_second_moment_travels_as_its_root_and_is_pooled_like_the_weights(data):
    # the plain average's arithmetic (the guarded default bounds the share: test_merge_guard.py)
    a, b = (make(data, 0, shared_moments=("v",), merge="average"),
            make(data, 1, shared_moments=("v",), merge="average"))
    a.train(2)
    b.train(6)  # older: b's share of the merge is 6 / (2 + 6)
    snap = b.snapshot()
    roots = {k: v for k, v in snap.tensors.items() if k.startswith("moment.v.")}
    assert set(roots) == {f"moment.v.{k}" for k in b.optimizer.state["v"]}
    for k, v in b.optimizer.state["v"].items():
        np.testing.assert_allclose(roots[f"moment.v.{k}"] ** 2, v, rtol=1e-5)
    own_v = {k: v.astype(np.float64) for k, v in a.optimizer.state["v"].items()}
    own_m = {k: v.copy() for k, v in a.optimizer.state["m"].items()}
    share = b.age / (a.age + b.age)
    assert a.absorb(snap, "b").accepted
    for k, v in a.optimizer.state["v"].items():
        expect = (1 - share) * own_v[k] + share * b.optimizer.state["v"][k].astype(np.float64)
        np.testing.assert_allclose(v, expect, rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(a.optimizer.state["m"][k], own_m[k])  # "m" not shared


def test_sharing_moments_is_part_of_the_fingerprint_so_mixed_swarms_never_merge(data):
    plain, v, mv = make(data, 0, shared_moments=()), make(data, 1), make(data, 2, shared_moments=("m", "v"))
    assert v.shared_moments == ("v",)  # Adam's default; SGD has no second moment to share
    assert make(data, 4, optimizer="sgd").shared_moments == ()
    assert plain.fingerprint != plain.net.fingerprint  # the class list is part of it
    assert len({plain.fingerprint, v.fingerprint, mv.fingerprint}) == 3
    assert make(data, 3, shared_moments=("v", "m")).fingerprint == mv.fingerprint
    result = plain.absorb(v.snapshot(), "v")
    assert not result.accepted and result.reason == "wrong_fingerprint"


def test_broken_shared_moments_are_refused_and_change_nothing(data):
    # the plain average's arithmetic (the guarded default bounds the share: test_merge_guard.py)
    a, b = (make(data, 0, shared_moments=("v",), merge="average"),
            make(data, 1, shared_moments=("v",), merge="average"))
    a.train(1)
    b.train(2)
    snap = b.snapshot()
    key = next(k for k in snap.tensors if k.startswith("moment.v."))
    negative, nan = snap.tensors[key].copy(), snap.tensors[key].copy()
    negative.flat[0], nan.flat[0] = -1.0, np.nan
    before = {k: v.copy() for k, v in a.optimizer.state["v"].items()}
    weights = {k: v.copy() for k, v in a.net.params().items()}
    for tensors in ({**snap.tensors, key: negative}, {**snap.tensors, key: nan},
                    {**snap.tensors, key: snap.tensors[key][..., :1]},
                    {k: v for k, v in snap.tensors.items() if k != key}):
        result = a.absorb(_tampered(snap, tensors=tensors), "b")
        assert not result.accepted and result.reason == "bad_moments" and result.detail
    for k in before:
        np.testing.assert_array_equal(a.optimizer.state["v"][k], before[k])
        np.testing.assert_array_equal(a.net.params()[k], weights[k])


@pytest.mark.parametrize("moments, optimizer", [(("x",), None), (("v", "v"), None), (("v",), "sgd")])
def test_unknown_or_unavailable_shared_moments_are_user_errors(data, moments, optimizer):
    with pytest.raises(UserError, match="moment"):
        make(data, 0, shared_moments=moments, optimizer=optimizer)
