"""EvolutionLearner: migrants are checked, re-scored and never trusted; state round-trips."""

import dataclasses
import os
import signal
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safetensors.numpy import load, save

from gossipnet.errors import UserError
from gossipnet.evo import Evaluator
from gossipnet.learners.base import Snapshot
from gossipnet.learners.evolution import EvolutionConfig, EvolutionLearner
from gossipnet.learners.migrants import MigrantReject


def island(algo="ga", seed=0, **kw) -> EvolutionLearner:
    return EvolutionLearner(EvolutionConfig.for_task("cartpole", algo, seed=seed, population=8, eval_episodes=5, **kw))


def offer(learner, genomes, **meta) -> Snapshot:
    return Snapshot("evolution", learner.fingerprint, 1000.0, {"genomes": genomes}, meta)


@pytest.fixture(scope="module")
def trained():
    learner = island(seed=1)
    learner.train(2)
    return learner


def test_genome_of_the_wrong_length_is_rejected_and_counted(trained):
    n = trained.task.layout.size
    result = trained.absorb(offer(trained, np.zeros((2, n + 1), np.float32)), "peer")
    assert not result.accepted and result.reason == MigrantReject.WRONG_GENOME_LENGTH
    assert trained.metrics()["rejected_wrong_genome_length"] == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_genomes_are_rejected(bad):
    learner = island()
    g = np.zeros((2, learner.task.layout.size), np.float32)
    g[1, 5] = bad
    steps = learner.env_steps
    result = learner.absorb(offer(learner, g), "peer")
    assert (result.accepted, result.reason) == (False, "non_finite")
    assert learner.env_steps == steps  # rejected before any evaluation is spent on it
    assert learner.metrics()["migrants_rejected"] == 2


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda s, g: dataclasses.replace(s, kind="convnet"), "wrong_kind"),
        (lambda s, g: dataclasses.replace(s, fingerprint="lunarlander:0000"), "wrong_fingerprint"),
        (lambda s, g: dataclasses.replace(s, tensors={"genomes": g.astype(np.float64)}), "malformed"),
        (lambda s, g: dataclasses.replace(s, tensors={"genomes": g[0]}), "malformed"),
        (lambda s, g: dataclasses.replace(s, tensors={"genomes": g, "extra": g}), "malformed"),
        (lambda s, g: dataclasses.replace(s, tensors=None), "malformed"),
        (lambda s, g: dataclasses.replace(s, tensors={"genomes": g[:0]}), "empty"),
        (lambda s, g: dataclasses.replace(s, tensors={"genomes": np.repeat(g, 5, axis=0)}), "too_many_migrants"),
        (lambda s, g: dataclasses.replace(s, tensors={"genomes": g * 1e6}), "absurd_magnitude"),
    ],
)
def test_bad_snapshots_get_a_named_reason_and_never_raise(mutate, reason):
    learner = island()
    g = np.ones((2, learner.task.layout.size), np.float32)
    result = learner.absorb(mutate(offer(learner, g), g), "peer")
    assert (result.accepted, result.reason) == (False, reason)
    assert learner.metrics()[f"rejected_{reason}"] == 1
    assert learner.metrics()["migrants_accepted"] == 0


def test_something_that_is_not_a_snapshot_is_rejected_as_malformed():
    learner = island()
    result = learner.absorb(object(), "peer")  # type: ignore[arg-type]
    assert (result.accepted, result.reason) == (False, "malformed")


def test_forged_fitness_claim_is_rescored_and_counted():
    learner = island("ga", seed=2)
    learner.train(1)
    # an all-zero policy always pushes left: CartPole falls within ~10 steps
    dud = np.zeros((1, learner.task.layout.size), np.float32)
    steps = learner.env_steps
    result = learner.absorb(offer(learner, dud, fitness_0=500.0), "liar")
    assert result.accepted and "forged" in result.detail
    assert learner.env_steps > steps  # it was played locally
    assert learner.forged_claims == 1
    peer, claimed, measured = learner.forgeries[-1]
    assert (peer, claimed) == ("liar", 500.0) and measured < 20
    # the population holds the measured score, if the dud got in at all
    is_dud = np.all(learner.algo.members == 0, axis=1)
    assert np.all(learner.algo.scores[is_dud] < 20)


def test_honest_claims_and_junk_claims_are_not_counted_as_forged():
    a, b = island("cmaes", seed=3), island("cmaes", seed=4)
    a.train(3)
    snap = a.snapshot()
    assert snap.tensors["genomes"].shape == (1, a.task.layout.size) and "fitness_0" in snap.meta
    b.absorb(dataclasses.replace(snap, meta={"fitness_0": -1e9}), "a")  # modest claims are fine
    b.absorb(dataclasses.replace(snap, meta={"fitness_0": "lots", "fitness_1": float("nan")}), "a")
    assert b.forged_claims == 0
    assert b.migrants_accepted == 2


def test_honest_claims_replay_exactly_on_their_seeds_however_noisy_the_task():
    """CartPole returns vary a lot between episodes; replaying the claim's own seeds does not."""
    a, b = island("ga", seed=7), island("ga", seed=8)
    for _ in range(4):
        a.train(1)
        snap = a.snapshot()
        assert "seed_0" in snap.meta and "seed_1" in snap.meta
        assert b.absorb(snap, "a").accepted
    assert b.forged_claims == 0


def test_a_small_overclaim_is_caught_by_replaying_the_claimed_episodes():
    a, b = island("ga", seed=9), island("ga", seed=10)
    a.train(2)
    snap = a.snapshot()
    inflated = {**snap.meta, "fitness_0": snap.meta["fitness_0"] + 5.0}  # well inside episode noise
    b.absorb(dataclasses.replace(snap, meta=inflated), "a")
    assert b.forged_claims == 1
    peer, claimed, replayed = b.forgeries[-1]
    assert peer == "a" and claimed - replayed == pytest.approx(5.0, abs=0.01)


def test_migrants_from_another_island_enter_the_next_generation_and_are_marked():
    a, b = island("cmaes", seed=5), island("cmaes", seed=6)
    a.train(2)
    b.train(2)
    assert b.absorb(a.snapshot(), "a").accepted
    assert b.algo.pending.shape[0] == 1  # handed to pycma's inject before the next ask
    b.train(1)
    assert b.algo.pending.shape[0] == 0
    hist = b.history()
    assert hist["migrants"].tolist() == [0.0, 0.0, 1.0]
    assert hist["generation"].tolist() == [1.0, 2.0, 3.0] and np.all(np.diff(hist["env_steps"]) > 0)


@pytest.mark.parametrize("algo", ["ga", "es", "cmaes"])
def test_checkpoint_round_trip_continues_the_search(algo):
    a = island(algo, seed=7)
    a.train(2)
    a.absorb(offer(a, np.full((1, a.task.layout.size), 0.1, np.float32), fitness_0=1.0), "p")
    blob = save({k: np.ascontiguousarray(v) for k, v in a.state_dict().items()})
    b = island(algo, seed=8)
    b.load_state_dict(load(blob))
    assert b.metrics() == a.metrics()
    a.train(2)
    b.train(2)
    assert a.metrics() == b.metrics()
    for k, v in a.history().items():
        assert np.array_equal(v, b.history()[k]), k
    assert np.array_equal(a.snapshot().tensors["genomes"], b.snapshot().tensors["genomes"])


def test_checkpoint_of_another_task_or_algorithm_is_a_user_error():
    a = island("ga")
    a.train(1)
    with pytest.raises(UserError, match="--algo"):
        island("cmaes").load_state_dict(a.state_dict())
    pend = EvolutionLearner(EvolutionConfig.for_task("pendulum", "ga", population=8))
    with pytest.raises(UserError, match="--task"):
        pend.load_state_dict(a.state_dict())


def test_unknown_task_is_a_user_error_listing_the_tasks():
    with pytest.raises(UserError, match="cartpole, acrobot, pendulum, lunarlander, bipedalwalker"):
        EvolutionLearner(EvolutionConfig(task="mountaincar"))


def test_same_seed_same_island_and_metrics_report_progress():
    a, b = island("es", seed=9), island("es", seed=9)
    a.train(2)
    b.train(2)
    assert a.history()["best"].tolist() == b.history()["best"].tolist()
    m = a.metrics()
    assert m["generation"] == 2 and m["env_steps"] > 0 and m["best_fitness"] >= m["mean_fitness"]
    ev = a.evaluate()
    assert ev["eval_episodes"] == 5 and np.isfinite(ev["eval_mean"])


def test_pool_and_inline_rollouts_agree_and_continuous_tasks_run():
    rng = np.random.default_rng(0)
    learner = EvolutionLearner(EvolutionConfig.for_task("pendulum", "ga", population=6))
    genomes = learner.task.layout.init(rng, 6)
    inline, inline_steps = learner.evaluator.evaluate(genomes, np.array([1, 2]))
    with Evaluator("pendulum", 16, workers=2) as pool:
        pooled, pooled_steps = pool.evaluate(genomes, np.array([1, 2]))
        assert np.array_equal(inline, pooled) and inline_steps == pooled_steps == 6 * 2 * 200
        # a worker killed from outside breaks the pool; the evaluator starts a new one
        broken = pool._pool
        victim = next(iter(broken._processes))
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.5)  # let the executor notice
        again, _ = pool.evaluate(genomes, np.array([1, 2]))
        assert np.array_equal(again, inline) and pool._pool is not broken

_ISLAND = island("ga", seed=11)
_N = _ISLAND.task.layout.size


@st.composite
def genome_tensors(draw):
    if draw(st.booleans()):  # half the time a well-formed batch, so acceptance is exercised too
        rows = draw(st.integers(1, 8))
        seed = draw(st.integers(0, 2**32 - 1))
        return np.random.default_rng(seed).normal(0, 3, (rows, _N)).astype(np.float32)
    shape = draw(st.tuples(st.integers(0, 10), st.sampled_from([0, 1, _N - 1, _N, _N, _N, _N + 1])))
    values = draw(
        arrays(
            np.float64,
            shape,
            elements=st.floats(-10, 10, width=16) | st.sampled_from([np.nan, np.inf, -np.inf, 5e3, 0.0]),
            unique=False,
        )
    )
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float64, np.int32, np.uint8]))
    if np.dtype(dtype).kind != "f":
        values = np.nan_to_num(values, posinf=0, neginf=0)
    return values.astype(dtype)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    genome_tensors(),
    st.dictionaries(
        st.sampled_from(["fitness_0", "fitness_1", "count"]),
        st.floats() | st.text(max_size=3) | st.booleans() | st.integers(),
    ),
)
def test_arbitrary_genome_tensors_are_accepted_only_when_valid(genomes, meta):
    before = _ISLAND.metrics()
    result = _ISLAND.absorb(offer(_ISLAND, genomes, **meta), "fuzz")
    valid = (
        genomes.dtype == np.float32
        and genomes.shape[1] == _N
        and 1 <= genomes.shape[0] <= 8
        and np.all(np.isfinite(genomes))
        and np.abs(genomes).max() <= 1000
    )
    assert result.accepted == bool(valid), result
    if not valid:
        assert result.reason in {r.value for r in MigrantReject}
        assert _ISLAND.metrics()[f"rejected_{result.reason}"] == before[f"rejected_{result.reason}"] + 1


def test_islands_in_two_threads_of_one_process_do_not_share_environments():
    """The demo runs several islands in one process: their episodes must not interleave."""
    import threading

    from gossipnet.evo.rollout import run_episodes

    rng = np.random.default_rng(0)
    layout = island().task.layout
    genomes = [rng.standard_normal((8, layout.size)).astype(np.float32) for _ in range(2)]
    seeds = np.arange(4)
    alone = [run_episodes("cartpole", 16, g, seeds)[0] for g in genomes]
    together: list = [None, None]

    def work(i):
        for _ in range(5):
            together[i] = run_episodes("cartpole", 16, genomes[i], seeds)[0]
            assert np.array_equal(together[i], alone[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(np.array_equal(together[i], alone[i]) for i in range(2))


def test_the_best_policy_is_rendered_as_a_strip_of_frames_and_cached():
    learner = island("ga", seed=11)
    assert learner.visuals() == {}  # nothing evolved yet
    learner.train(1)
    frames = learner.visuals()["rollout"]
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
    assert 2 <= frames.shape[0] <= 8 and frames.std() > 0  # a drawn cart, not a blank
    assert learner.visuals()["rollout"] is frames  # same best genome: no second render


def test_islands_of_one_process_render_their_rollouts_at_the_same_time():
    """pygame is not thread-safe (the demo's islands once broke each other's drawing)."""
    from concurrent.futures import ThreadPoolExecutor

    from gossipnet.evo.rollout import render_episode
    from gossipnet.evo.tasks import get_task

    genome = np.zeros(get_task("cartpole", 16).layout.size, dtype=np.float32)
    with ThreadPoolExecutor(4) as pool:
        strips = list(pool.map(lambda s: render_episode("cartpole", 16, genome, s), range(8)))
    for frames in strips:
        assert frames.ndim == 4 and frames.shape[0] >= 2 and frames.shape[-1] == 3
        assert frames.dtype == np.uint8 and frames.max() > 0
