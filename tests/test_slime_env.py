"""The slime volleyball environment: gymnasium API, batching, and score distributions
against the original's (tests/data/slime_reference.json, from scripts/record_slime_golden.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from gossipnet.evo import slime_physics as sp
from gossipnet.evo.slime_env import ENV_ID, SlimeVolleyEnv
from gossipnet.evo.slime_match import play, play_genomes, play_random_vs_baseline
from gossipnet.evo.slime_players import BaselinePlayers, slime_layout

REFERENCE = json.loads((Path(__file__).parent / "data" / "slime_reference.json").read_text())


def within_ci(ours: np.ndarray, ref: dict, z: float = 4.0) -> tuple[bool, str]:
    """Two-sample test of means: |difference| below z standard errors (z = 4: a false alarm
    about once in 16,000 runs; a real bias of a few tenths of a point still fails)."""
    se = math.sqrt(ours.var() / ours.size + ref["std"] ** 2 / ref["episodes"])
    diff = float(ours.mean() - ref["mean"])
    return abs(diff) <= z * se, f"ours {ours.mean():.3f} vs original {ref['mean']:.3f} (se {se:.3f})"


def test_random_against_baseline_matches_the_original():
    res = play_random_vs_baseline(np.arange(300), rng_seed=1)
    ok, msg = within_ci(res.score, REFERENCE["random_vs_baseline"])
    assert ok, msg
    assert abs(res.score.mean() - (-4.87)) < 0.1, msg  # the published figure, -4.866


def test_baseline_against_baseline_matches_the_original():
    seeds = np.arange(60)
    res = play(BaselinePlayers(seeds.size), BaselinePlayers(seeds.size), sp.draw_serves(seeds))
    ok, msg = within_ci(res.score, REFERENCE["baseline_vs_baseline"])
    assert ok, msg
    ref_len = REFERENCE["baseline_vs_baseline"]["steps"] / REFERENCE["baseline_vs_baseline"]["episodes"]
    assert abs(res.length.mean() - ref_len) < 0.2 * ref_len  # long rallies, as in the original


def test_a_game_does_not_depend_on_the_batch_it_is_played_in():
    layout = slime_layout(8)
    genomes = layout.init(np.random.default_rng(3), 6)
    rng = np.random.default_rng(4)
    right, left, seeds = rng.integers(0, 6, 40), rng.integers(0, 6, 40), rng.integers(0, 2**31, 40)
    together = play_genomes(layout, genomes, right, left, seeds)
    for i in (0, 17, 39):
        alone = play_genomes(layout, genomes, right[i:i + 1], left[i:i + 1], seeds[i:i + 1])
        assert alone.score[0] == together.score[i] and alone.length[0] == together.length[i]


def test_gymnasium_api_and_determinism():
    env = gym.make(ENV_ID, disable_env_checker=False)
    from gymnasium.utils.env_checker import check_env
    check_env(env.unwrapped, skip_render_check=True)
    runs = []
    for _ in range(2):
        obs, info = env.reset(seed=5)
        total, rng = 0.0, np.random.default_rng(0)
        for t in range(sp.MAX_STEPS):
            action = int(rng.integers(0, 6)) if t % 2 else rng.integers(0, 2, 3)
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
            if terminated or truncated:
                break
        runs.append((total, t, obs.tolist()))
        assert terminated != truncated
        assert info["ale.lives"] == 0 or info["ale.otherLives"] == 0 or truncated
    assert runs[0] == runs[1]
    env.close()


@pytest.mark.parametrize("bad", [7, -1, 2.5, [1, 0], [[1, 0, 1]]])
def test_bad_actions_are_refused_with_a_clear_error(bad):
    env = SlimeVolleyEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(bad)


def test_self_play_step_and_rgb_frames():
    env = SlimeVolleyEnv(render_mode="rgb_array", width=240)
    obs, info = env.reset(seed=1)
    np.testing.assert_array_equal(info["otherObs"][[1, 5]], obs[[1, 5]])  # mirrored views
    frame = env.render()
    assert frame.shape == (100, 240, 3) and frame.dtype == np.uint8
    for _ in range(40):  # the left slime jumps (self-play override): it leaves the ground
        obs, *_ , info = env.step(0, other_action=3)
    assert info["otherObs"][1] > sp.REF_U / sp.OBS_SCALE
    assert not np.array_equal(env.render(), frame)
