"""Our slime volleyball engine against the original's recorded trajectories.

tests/data/slime_golden.npz comes from scripts/record_slime_golden.py, which runs the
original slimevolleygym in a throw-away venv: the serves it drew, both sides' buttons, and
after every step the ball, both slimes, lives, reward, done and both observations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gossipnet.evo import slime_compiled, slime_physics as sp
from gossipnet.evo.slime_players import BaselinePlayers

GOLDEN = Path(__file__).parent / "data" / "slime_golden.npz"
SCENARIOS = ("random_vs_random", "random_vs_baseline_a", "random_vs_baseline_b",
             "baseline_vs_random", "baseline_vs_baseline")
STATE_ROWS = [sp.BX, sp.BY, sp.BVX, sp.BVY, sp.LX, sp.LY, sp.LVX, sp.LVY,
              sp.RX, sp.RY, sp.RVX, sp.RVY, sp.LLIFE, sp.RLIFE]
TOL = 1e-9


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, np.ndarray]]:
    z = np.load(GOLDEN)
    return {name: {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(name + "/")}
            for name in SCENARIOS}


def padded_serves(serves: np.ndarray) -> np.ndarray:
    out = np.zeros((sp.MAX_SERVES, 2))
    out[: len(serves)] = serves
    return out


def test_golden_file_covers_long_and_short_games(golden):
    lengths = {n: len(g["reward"]) for n, g in golden.items()}
    assert lengths["baseline_vs_baseline"] == sp.MAX_STEPS  # ends on the time limit
    assert all(n < sp.MAX_STEPS for k, n in lengths.items() if k != "baseline_vs_baseline")
    assert sum(int(np.abs(g["reward"]).sum()) for g in golden.values()) >= 25  # many points and serves


@pytest.mark.parametrize("name", SCENARIOS)
def test_one_game_replays_the_original_exactly(golden, name):
    g = golden[name]
    games = sp.SlimeBatch(padded_serves(g["serves"])[None])
    np.testing.assert_allclose(games.s[STATE_ROWS, 0], g["state0"], rtol=0, atol=TOL)
    np.testing.assert_allclose(games.obs[1, :, 0], g["obs_right0"], rtol=0, atol=TOL)
    np.testing.assert_allclose(games.obs[0, :, 0], g["obs_left0"], rtol=0, atol=TOL)
    states, obs, rewards, dones = [], [], [], []
    for t in range(len(g["reward"])):
        reward, done = games.step(g["buttons_left"][t][:, None], g["buttons_right"][t][:, None])
        states.append(games.s[STATE_ROWS, 0].copy())
        obs.append(games.obs[:, :, 0].copy())
        rewards.append(reward[0])
        dones.append(done[0])
    np.testing.assert_allclose(np.array(states), g["state"], rtol=0, atol=TOL, err_msg=name)
    np.testing.assert_allclose(np.array(obs)[:, 1], g["obs_right"], rtol=0, atol=TOL)
    np.testing.assert_allclose(np.array(obs)[:, 0], g["obs_left"], rtol=0, atol=TOL)
    np.testing.assert_array_equal(rewards, g["reward"])
    np.testing.assert_array_equal(dones, g["done"])
    assert dones[-1] and not any(dones[:-1])

@pytest.mark.parametrize("name", SCENARIOS)
def test_the_compiled_engine_replays_the_original_exactly(golden, name):
    """The engine self-play trains with (one game at a time, compiled) against the recording."""
    g = golden[name]
    serves = padded_serves(g["serves"])
    s, obs = np.zeros(sp.N_ROWS), np.zeros((2, 12))
    slime_compiled.reset(s, serves, obs)
    np.testing.assert_array_equal(s[STATE_ROWS], g["state0"])
    states, observed, rewards, dones = [], [], [], []
    for t in range(len(g["reward"])):
        reward, done = slime_compiled.step(s, serves, obs, g["buttons_left"][t].astype(np.int64),
                                           g["buttons_right"][t].astype(np.int64))
        states.append(s[STATE_ROWS].copy())
        observed.append(obs.copy())
        rewards.append(reward)
        dones.append(done)
    np.testing.assert_allclose(np.array(states), g["state"], rtol=0, atol=TOL, err_msg=name)
    np.testing.assert_allclose(np.array(observed)[:, 1], g["obs_right"], rtol=0, atol=TOL)
    np.testing.assert_allclose(np.array(observed)[:, 0], g["obs_left"], rtol=0, atol=TOL)
    np.testing.assert_array_equal(rewards, g["reward"])
    np.testing.assert_array_equal(dones, g["done"])


def test_the_compiled_baseline_presses_the_original_baselines_buttons(golden):
    """Baseline against baseline for the full 3,000 steps: both compiled baselines choose
    the recorded buttons at every step, so the yardstick's games are the original's."""
    from gossipnet.evo.slime_players import baseline_weights

    g = golden["baseline_vs_baseline"]
    serves = padded_serves(g["serves"])
    s, obs = np.zeros(sp.N_ROWS), np.zeros((2, 12))
    slime_compiled.reset(s, serves, obs)
    weight, bias = baseline_weights()
    outs, scratch = [np.zeros(7), np.zeros(7)], np.zeros(15)
    for t in range(len(g["reward"])):
        left = slime_compiled.baseline_act(obs[0], outs[0], weight, bias, scratch)
        right = slime_compiled.baseline_act(obs[1], outs[1], weight, bias, scratch)
        np.testing.assert_array_equal(left, g["buttons_left"][t], err_msg=f"step {t}")
        np.testing.assert_array_equal(right, g["buttons_right"][t], err_msg=f"step {t}")
        slime_compiled.step(s, serves, obs, left, right)
    np.testing.assert_allclose(s[STATE_ROWS], g["state"][-1], rtol=0, atol=TOL)


def test_batched_games_and_baseline_policies_replay_the_original(golden):
    """All scenarios in one lockstep batch; finished games leave it; the baseline's buttons
    come from our batched baseline policy, not from the recording."""
    games = sp.SlimeBatch(np.stack([padded_serves(golden[n]["serves"]) for n in SCENARIOS]))
    left, right = BaselinePlayers(len(SCENARIOS)), BaselinePlayers(len(SCENARIOS))
    ids = np.arange(len(SCENARIOS))
    steps = 0
    seen: list[list] = [[] for _ in SCENARIOS]
    while ids.size:
        recs = [golden[SCENARIOS[i]] for i in ids]
        bl, br = left.act(games.obs[0]), right.act(games.obs[1])
        for k, (i, g) in enumerate(zip(ids, recs)):
            name = SCENARIOS[i]
            if name.endswith("baseline") or name.startswith("baseline_vs_baseline"):
                np.testing.assert_array_equal(bl[:, k], g["buttons_left"][steps], err_msg=name)
            else:
                bl[:, k] = g["buttons_left"][steps]
            if name.startswith("baseline_vs"):
                np.testing.assert_array_equal(br[:, k], g["buttons_right"][steps], err_msg=name)
            else:
                br[:, k] = g["buttons_right"][steps]
        reward, done = games.step(bl, br)
        for k, (i, g) in enumerate(zip(ids, recs)):
            seen[i].append((games.s[STATE_ROWS, k].copy(), games.obs[:, :, k].copy(), reward[k], done[k]))
        steps += 1
        keep = np.flatnonzero(~done)
        ids = ids[keep]
        games.keep(keep)
        left.keep(keep)
        right.keep(keep)
    assert steps == sp.MAX_STEPS
    for i, name in enumerate(SCENARIOS):
        g = golden[name]
        states, obs, rewards, dones = zip(*seen[i])
        np.testing.assert_allclose(np.array(states), g["state"], rtol=0, atol=TOL, err_msg=name)
        np.testing.assert_allclose(np.array(obs)[:, 0], g["obs_left"], rtol=0, atol=TOL)
        np.testing.assert_allclose(np.array(obs)[:, 1], g["obs_right"], rtol=0, atol=TOL)
        np.testing.assert_array_equal(rewards, g["reward"])
        np.testing.assert_array_equal(dones, g["done"])
