"""The volunteer desk (sans-IO): honest leases are accepted and merged; every kind of bad
update is refused with its reason and counted; liars are caught by spot checks and banned."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.data.loaders import load_dataset
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
from gossipnet.nn import blas
from gossipnet.volunteers import REASONS, Refusal, TrainingSetup, VolunteerConfig, VolunteerDesk
from gossipnet.volunteers.leases import LeaseBook, ip_key
from gossipnet.volunteers.scripted import honest_update, update_body

pytestmark = pytest.mark.timeout(300)
HONEST, LIAR = "10.0.0.2", "10.0.0.66"


@pytest.fixture(scope="module")
def learner():
    # one BLAS thread, as `gossipnet run` uses: two thrash on a busy machine (gossipnet/nn/blas.py)
    before = blas.get_threads()
    blas.set_threads(1)
    yield _learner()
    if before:
        blas.set_threads(before)


def _learner():
    data = load_dataset("embedded")
    node = ConvnetLearner(data, np.arange(3000), ConvnetConfig(net="tiny", seed=1))
    node.train(20)
    return node


def make_desk(learner, **overrides) -> VolunteerDesk:
    cfg = VolunteerConfig(**{"holdout_images": 256, "spot_check_rate": 0.25, "burst": 1000, **overrides})
    desk = VolunteerDesk(cfg, TrainingSetup.of(learner), seed=3)
    desk.offer_version(learner.net.params(), learner.optimizer.state_dict(), own_images=100_000, now=0.0)
    return desk


def lease_for(desk, ip=HONEST, now=1.0) -> tuple[dict, dict[str, np.ndarray], float]:
    doc = desk.lease(ip, now)
    assert not isinstance(doc, Refusal), doc
    images = desk.images(ip, doc["lease"], now)
    assert isinstance(images, bytes)
    delta, loss = honest_update(doc, desk.weights(doc["base_version"]), images)
    return doc, delta, loss


def submit(desk, body, ip=HONEST, now=2.0):
    pending = desk.check(ip, body, now)
    return pending if isinstance(pending, Refusal) else desk.finish(pending, now)


def test_honest_updates_are_accepted_spot_checked_and_merged(learner):
    desk = make_desk(learner)
    for i in range(6):
        doc, delta, loss = lease_for(desk, now=1.0 + i)
        out = submit(desk, update_body(doc, delta, loss), now=1.5 + i)
        assert not isinstance(out, Refusal) and out["accepted"], out
    assert desk.counters["accepted"] == 6 and not desk.refused
    assert desk.counters["spot_checks"] >= 3  # the reference leases are all recomputed
    merged = desk.take_accepted()  # one base version: one mean delta for the six
    assert len(merged) == 1 and merged[0][1] == 6 * 256 and desk.take_accepted() == []
    before = learner.net.state_dict()
    for d, images in merged:
        learner.add_delta(d, images)
    assert any(not np.array_equal(before[k], v) for k, v in learner.net.params().items())
    status = desk.status(now=10.0)
    assert status["accepted"] == 6 and status["clients"] == 1 and status["images_per_s"] > 0


def test_every_hostile_update_is_refused_with_its_reason_and_counted(learner):
    desk = make_desk(learner, spot_check_rate=0.0)
    for i in range(3):  # honest reference leases first: the norm checks need them
        doc, delta, loss = lease_for(desk, now=1.0)
        assert submit(desk, update_body(doc, delta, loss)).get("accepted")
    attacks = {
        "x100": lambda d: {k: v * 100 for k, v in d.items()},
        "nan": lambda d: {k: np.where(np.arange(v.size).reshape(v.shape) == 0, np.nan, v).astype(np.float32)
                          for k, v in d.items()},
        "zero": lambda d: {k: np.zeros_like(v) for k, v in d.items()},
        "tiny": lambda d: {k: v * 1e-3 for k, v in d.items()},
        "wrong_shape": lambda d: {k: v[..., :1] if v.ndim > 1 else v for k, v in d.items()},
        "wrong_dtype": lambda d: {k: v.astype(np.float64) for k, v in d.items()},
        "missing_tensor": lambda d: dict(list(d.items())[1:]),
    }
    expect = {"x100": "norm_too_large", "nan": "not_finite", "zero": "zero_delta", "tiny": "norm_too_small",
              "wrong_shape": "wrong_shape", "wrong_dtype": "wrong_dtype", "missing_tensor": "wrong_shape"}
    for name, attack in attacks.items():
        doc, delta, loss = lease_for(desk, now=3.0)
        out = submit(desk, update_body(doc, attack(delta), loss))
        assert isinstance(out, Refusal) and out.reason == expect[name], (name, out)
        assert 400 <= out.status < 500
    # lease abuse
    doc, delta, loss = lease_for(desk, now=4.0)
    body = update_body(doc, delta, loss)
    forged = doc["lease"][:-4] + ("AAAA" if doc["lease"][-4:] != "AAAA" else "BBBB")
    assert submit(desk, update_body(doc, delta, loss, token=forged)).reason == "forged_lease"
    assert submit(desk, update_body(doc, delta, loss, token="x" * 5)).reason == "forged_lease"
    assert submit(desk, body, ip="10.9.9.9").reason == "wrong_client"
    assert submit(desk, update_body(doc, delta, loss, base_version=doc["base_version"] + 7)).reason == "stale_base"
    assert submit(desk, body).reason == "replayed"  # the stale-base post used the lease up
    doc, delta, loss = lease_for(desk, now=5.0)
    assert submit(desk, update_body(doc, delta, loss), now=5.0 + 1000).reason == "expired"
    assert submit(desk, b"\x00" * 5).reason == "malformed"
    assert submit(desk, b"\xff" * 16).reason == "malformed"
    assert submit(desk, b"\x00" * (desk.max_update_bytes + 1)).reason == "too_large"
    counted = sum(desk.refused.values())
    assert counted == len(attacks) + 9, desk.refused
    assert set(desk.refused) <= set(REASONS)
    assert desk.counters["accepted"] == 3


def _made_up(kind, honest, rng, ref):
    if kind == "sign_flipped":
        return {k: -v for k, v in honest.items()}
    # lazy: a random delta of plausible size that barely moves the loss
    noise = {k: rng.normal(0, 1, v.shape).astype(np.float32) for k, v in honest.items()}
    scale = 0.5 * ref / np.sqrt(sum(float(np.sum(v * v)) for v in noise.values()))
    return {k: (v * scale).astype(np.float32) for k, v in noise.items()}


@pytest.mark.parametrize("kind", ["lazy", "sign_flipped"])
def test_a_lying_client_is_refused_then_caught_by_a_spot_check_and_banned(learner, kind):
    rate = 0.25
    desk = make_desk(learner, spot_check_rate=rate)
    for _ in range(3):
        doc, delta, loss = lease_for(desk)
        assert submit(desk, update_body(doc, delta, loss)).get("accepted")
    rng = np.random.default_rng(0)
    ref = float(np.median(desk.references))
    leases, outcomes = 0, []
    while leases < 60:  # P(no spot check in 60 leases at 0.25) = 3e-8
        doc = desk.lease(LIAR, 10.0 + leases)
        if isinstance(doc, Refusal):
            assert doc.reason == "banned"
            break
        leases += 1
        images = desk.images(LIAR, doc["lease"], 10.0 + leases)
        honest, loss = honest_update(doc, desk.weights(doc["base_version"]), images)
        out = submit(desk, update_body(doc, _made_up(kind, honest, rng, ref), loss), ip=LIAR, now=10.5 + leases)
        outcomes.append(out.reason if isinstance(out, Refusal) else "accepted")
    assert outcomes[-1] == "spot_check_mismatch", outcomes
    # a liar's update gets through only when neither the loss nor a spot check looks at it
    assert outcomes.count("accepted") < len(outcomes)
    assert desk.counters["banned"] == 1 and desk.status(now=100.0)["banned"] == 1
    assert desk.lease(LIAR, 100.0).reason == "banned"
    assert not isinstance(desk.lease(HONEST, 100.0), Refusal)  # others are unaffected


def test_leases_are_rate_limited_per_address_and_capped_while_open(learner):
    desk = make_desk(learner, burst=3, leases_per_minute=6, max_open_per_client=10)
    got = [desk.lease("10.1.1.1", 0.0) for _ in range(5)]
    assert [isinstance(g, Refusal) and g.reason for g in got] == [False, False, False, "rate_limited", "rate_limited"]
    assert not isinstance(desk.lease("10.1.1.1", 10.0), Refusal)  # one token back after 10 s at 6/min
    assert not isinstance(desk.lease("10.1.1.2", 0.0), Refusal)
    capped = make_desk(learner, max_open_per_client=1)
    assert not isinstance(capped.lease("10.1.1.1", 0.0), Refusal)
    assert capped.lease("10.1.1.1", 0.1).reason == "busy"


def test_volunteers_never_outweigh_the_node(learner):
    desk = make_desk(learner, spot_check_rate=0.0)
    desk.offer_version(learner.net.params(), learner.optimizer.state_dict(), own_images=0, now=100.0)  # a node that has trained nothing
    doc, delta, loss = lease_for(desk, now=101.0)  # one lease of slack
    assert desk.lease(HONEST, 101.0).reason == "busy"
    assert submit(desk, update_body(doc, delta, loss), now=102.0).get("accepted")
    doc = desk.lease(HONEST, 103.0)
    assert isinstance(doc, Refusal) and doc.reason == "busy"


def test_an_update_keeps_its_base_until_checked_and_merges_weighted_by_staleness(learner):
    desk = make_desk(learner, spot_check_rate=0.0, reference_leases=0)
    doc, delta, loss = lease_for(desk, now=1.0)
    pending = desk.check(HONEST, update_body(doc, delta, loss), 2.0)
    assert not isinstance(pending, Refusal), pending
    # the node moves on before the training thread finishes the checks: its lease is used,
    # but the base it started from must survive the new snapshots
    params, state = learner.net.params(), learner.optimizer.state_dict()
    for t in (10.0, 20.0):
        desk.offer_version(params, state, own_images=100_000, now=t)
    assert desk.finish(pending, 21.0).get("accepted")
    # two leases' worth of the node's images since the base: tau 2, weight 3 ** -0.5
    (merged, images), = desk.take_accepted(own_images=100_000 + 2 * 256)
    assert images == 256
    k = next(iter(delta))
    np.testing.assert_allclose(merged[k], delta[k] * 3 ** -0.5, rtol=1e-6)


def test_the_held_out_slope_is_the_loss_change_along_the_update_and_a_flip_negates_it():
    from gossipnet.nn import get_preset
    from gossipnet.volunteers.holdout import HeldOut, flat, slope_test

    preset = get_preset("fashion")  # has dropout: the held-out gradient is the evaluation-mode one
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (48, *preset.input_shape)).astype(np.float32)
    y = rng.integers(0, 10, 48)
    held = HeldOut(preset.spec, preset.input_shape, x, y, chunks=4)
    weights = held.net.state_dict()
    d = {k: rng.normal(0, 1e-4, v.shape).astype(np.float32) for k, v in weights.items()}  # small: first order
    slope, se = slope_test(held.gradients(weights), flat(d))
    assert se > 0 and slope_test(held.gradients(weights), -flat(d))[0] == -slope

    def loss(sign):
        held.net.load_state_dict({k: (w.astype(np.float64) + sign * d[k]).astype(np.float32) for k, w in weights.items()})
        logits = held.net.forward(x, train=False).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(y)), y]))

    central = (loss(1) - loss(-1)) / 2  # the chunks are equal, so their mean slope is the whole set's
    assert abs(slope - central) <= 0.05 * abs(central), (slope, central)  # 1.2% here: relu and pool kinks


def test_ipv6_clients_share_a_budget_per_64():
    assert ip_key("2001:db8::1") == ip_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert ip_key("::ffff:10.0.0.1") == "10.0.0.1"


BOOK = LeaseBook(30, 5, 2, 10, 60)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(max_size=40), st.text(alphabet="ABCDEFabcdef0123456789-_", min_size=32, max_size=32)))
def test_no_string_but_a_minted_token_names_a_lease(text):
    book = BOOK
    assert book.number_of(text) is None or text == book.token_for(book.number_of(text))
    assert book.number_of(book.token_for(12345)) == 12345


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bodies_are_refused_never_raise(learner_desk, body):
    out = learner_desk.check(HONEST, body, 1.0)
    assert isinstance(out, Refusal) and out.reason in REASONS


@pytest.fixture(scope="module")
def learner_desk(learner):
    return make_desk(learner)


def test_config_errors_name_the_setting():
    from gossipnet.errors import UserError
    with pytest.raises(UserError, match="spot_check_rate"):
        VolunteerConfig(spot_check_rate=2)
    with pytest.raises(UserError, match="max_share"):
        dataclasses.replace(VolunteerConfig(), max_share=1.0)
