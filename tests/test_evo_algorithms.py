"""GA, OpenAI-ES and CMA-ES behind one ask/tell interface: determinism, checkpoints, migrants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load, save

from gossipnet.errors import UserError
from gossipnet.evo import ALGORITHMS, ActionSpace, Layout, act, make_algorithm
from gossipnet.evo.algorithm import rng_from_state, rng_state
from gossipnet.evo.es import centered_ranks

LAYOUT = Layout(obs_dim=3, hidden=4, act_dim=2, discrete=True)
TARGET = np.linspace(-1, 1, LAYOUT.size)


def fitness(genomes: np.ndarray) -> np.ndarray:
    return -np.sum((genomes - TARGET) ** 2, axis=1)


def run(algo, generations: int) -> list[np.ndarray]:
    asked = []
    for _ in range(generations):
        x = algo.ask()
        asked.append(x)
        algo.tell(x, fitness(x))
    return asked


@pytest.mark.parametrize("name", ALGORITHMS)
def test_ask_tell_is_deterministic_by_seed(name):
    a = run(make_algorithm(name, LAYOUT, 8, seed=3), 4)
    b = run(make_algorithm(name, LAYOUT, 8, seed=3), 4)
    c = run(make_algorithm(name, LAYOUT, 8, seed=4), 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[-1], c[-1])


@pytest.mark.parametrize("name", ALGORITHMS)
def test_search_improves_a_quadratic(name):
    algo = make_algorithm(name, LAYOUT, 16, seed=0)
    first = fitness(algo.ask()).max()
    run(algo, 60)
    assert algo.elite(1)[1][0] > first + 1.0


@pytest.mark.parametrize("name", ALGORITHMS)
def test_checkpoint_round_trip_continues_the_search_identically(name):
    algo = make_algorithm(name, LAYOUT, 8, seed=1)
    run(algo, 5)
    algo.inject(np.full((2, LAYOUT.size), 0.5, np.float32), np.array([-1.0, -2.0]))
    blob = save({k: np.ascontiguousarray(v) for k, v in algo.state_dict().items()})  # no pickle anywhere
    restored = make_algorithm(name, LAYOUT, 8, seed=99)
    restored.load_state_dict(load(blob))
    np.random.seed(12345)  # the global generator must not matter (pycma would use it by default)
    for x, y in zip(run(algo, 6), run(restored, 6)):
        assert np.array_equal(x, y)
    assert restored.generation == algo.generation == 11


def test_checkpoint_from_another_algorithm_is_a_user_error():
    ga = make_algorithm("ga", LAYOUT, 8, seed=1)
    run(ga, 1)
    cma = make_algorithm("cmaes", LAYOUT, 8, seed=1)
    with pytest.raises(UserError, match="'ga'"):
        cma.load_state_dict(ga.state_dict())
    other = make_algorithm("ga", LAYOUT, 10, seed=1)
    with pytest.raises(UserError, match="population"):
        other.load_state_dict(ga.state_dict())


@pytest.mark.parametrize("name", ALGORITHMS)
def test_tell_refuses_scores_that_do_not_match_the_ask(name):
    algo = make_algorithm(name, LAYOUT, 8, seed=0)
    x = algo.ask()
    with pytest.raises(ValueError):
        algo.tell(x[:4], fitness(x[:4]))
    with pytest.raises(ValueError):
        algo.tell(x, np.full(8, np.nan))


def test_ga_migrant_replaces_the_worst_only_when_better():
    ga = make_algorithm("ga", LAYOUT, 8, seed=0)
    run(ga, 2)
    worst = ga.scores.min()
    good = TARGET[None].astype(np.float32)
    assert ga.inject(good, np.array([0.0])) == 1
    assert ga.scores.min() > worst and np.any(np.all(ga.members == good, axis=1))
    assert ga.inject(good * 100, np.array([-1e9])) == 0  # worse than everyone: not taken
    elite_parent = ga.ask()[0]
    assert np.array_equal(elite_parent, good[0])  # the migrant is the elite now


@pytest.mark.parametrize("name", ["es", "cmaes"])
def test_injected_migrants_appear_in_the_next_ask(name):
    algo = make_algorithm(name, LAYOUT, 8, seed=0)
    run(algo, 2)
    migrant = np.full((1, LAYOUT.size), 0.01, np.float32)
    assert algo.inject(migrant, np.array([1.0])) == 1
    x = algo.ask()
    assert np.min(np.abs(x - migrant).max(axis=1)) < 1e-6
    # never more than half a generation from outside
    assert algo.inject(np.zeros((10, LAYOUT.size), np.float32), np.zeros(10)) == 4


def test_centered_ranks_ignore_the_scale_of_returns():
    r = centered_ranks(np.array([3.0, -1e6, 7.0, 0.0]))
    assert np.allclose(sorted(r), [-0.5, -1 / 6, 1 / 6, 0.5])
    assert np.allclose(r, centered_ranks(np.array([3.0, -1.0, 1e9, 0.0])))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**63), st.integers(0, 5))
def test_rng_state_round_trip_reproduces_the_stream(seed, draws):
    rng = np.random.default_rng(seed)
    rng.random(draws)
    rng.integers(0, 7, size=draws, dtype=np.uint32)  # leaves a buffered 32-bit half
    copy = rng_from_state(rng_state(rng))
    assert np.array_equal(rng.random(5), copy.random(5))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.1, 100))
def test_continuous_actions_stay_inside_the_box(seed, scale):
    layout = Layout(obs_dim=5, hidden=6, act_dim=2, discrete=False)
    space = ActionSpace(discrete=False, dim=2, low=(-2.0, 0.0), high=(2.0, 1.0))
    rng = np.random.default_rng(seed)
    genomes = layout.init(rng, 7, scale=scale)
    a = act(layout, space, genomes, rng.standard_normal((7, 5)) * scale)
    assert a.shape == (7, 2) and np.all(a[:, 0] >= -2) and np.all(a[:, 0] <= 2)
    assert np.all(a[:, 1] >= 0) and np.all(a[:, 1] <= 1)


def test_layout_names_every_slice_and_fingerprints_its_shape():
    assert LAYOUT.size == 3 * 4 + 4 + 4 * 2 + 2
    parts = LAYOUT.unpack(np.arange(LAYOUT.size, dtype=np.float32)[None])
    assert parts["w1"].shape == (1, 3, 4) and parts["b2"][0].tolist() == [24.0, 25.0]
    other = Layout(obs_dim=3, hidden=5, act_dim=2, discrete=True)
    assert other.fingerprint != LAYOUT.fingerprint
    with pytest.raises(ValueError):
        LAYOUT.unpack(np.zeros((1, LAYOUT.size + 1), np.float32))


def test_islands_sharing_an_init_seed_start_from_one_network_and_then_search_apart():
    a = make_algorithm("cmaes", LAYOUT, 8, seed=1, init_seed=7)
    b = make_algorithm("cmaes", LAYOUT, 8, seed=2, init_seed=7)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert np.abs(a.mean).max() > 0  # a drawn network, not CMA-ES's symmetric zero vector
    assert not np.array_equal(a.ask(), b.ask())
    np.testing.assert_array_equal(make_algorithm("cmaes", LAYOUT, 8, seed=1).mean, 0.0)
    for name in ("ga", "es"):
        x = make_algorithm(name, LAYOUT, 8, seed=1, init_seed=7)
        y = make_algorithm(name, LAYOUT, 8, seed=2, init_seed=7)
        z = make_algorithm(name, LAYOUT, 8, seed=2)
        assert np.array_equal(x.state_dict()["members" if name == "ga" else "theta"],
                              y.state_dict()["members" if name == "ga" else "theta"])
        assert not np.array_equal(y.state_dict()["members" if name == "ga" else "theta"],
                                  z.state_dict()["members" if name == "ga" else "theta"])
