"""Self-play measurements for slime volleyball islands (pure numpy; the learner wraps it).

Fitness in self-play is relative (``slime_tournament``: who beat whom), so what travels
between islands and what is judged here are games: a champion's replayable claim
against a public reference panel, payoff matrices of champions (CIAO plots, Elo), and
the yardstick, the score against the original's baseline on fixed seeds.

The baseline policy never enters any of this: ``score_vs_baseline`` is the yardstick
only. A migrant's claim is checkable without trusting the sender: it states the
champion's mean score against a public *reference panel* (networks every node derives
from one fixed seed and the layout) on named serve seeds; games are deterministic, so
the receiver replays the claim exactly before it spends anything on re-scoring.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

import numpy as np

from gossipnet.evo.policy import Layout
from gossipnet.evo.slime_env import ENV_ID
from gossipnet.evo.slime_match import Results, play_baseline, play_genomes
from gossipnet.evo.slime_physics import MAX_STEPS
from gossipnet.evo.slime_players import SLIME_ACTIONS, slime_layout
from gossipnet.evo.tasks import Task, TaskInfo

TASK_NAME = "slimevolley"
# Fixed seeds for the yardstick, disjoint from training draws (< 2**31).
EVAL_SEED_BASE = 2**31
REFERENCE_SEED = 0x5115E  # the public reference panel's networks come from this seed
REFERENCE_SIZE = 4


def slime_task(hidden: int) -> Task:
    """The task record islands fingerprint and check migrants against."""
    info = TaskInfo(TASK_NAME, ENV_ID, solved_at=0.0, return_scale=10.0)
    return Task(info=info, obs_dim=12, action=SLIME_ACTIONS, max_episode_steps=MAX_STEPS,
                layout=slime_layout(hidden), spaces="Box(12,float64)->Discrete(6)[atari buttons]")


@functools.lru_cache(maxsize=8)
def reference_panel(layout: Layout) -> np.ndarray:
    """The public reference opponents: same networks on every node with this layout."""
    panel = layout.init(np.random.default_rng(REFERENCE_SEED), REFERENCE_SIZE)
    panel.setflags(write=False)
    return panel


# Replays are pure functions of (layout, genome, seeds): a node replays each distinct claim
# once, and islands sharing a process (the demo, the benchmark) replay it once between them.
_REPLAYS: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
_REPLAY_LIMIT = 256


def _replay_key(layout: Layout, genome: np.ndarray, seeds: np.ndarray) -> bytes:
    return b"|".join((layout.describe().encode(), np.asarray(genome, np.float32).tobytes(),
                      np.asarray(seeds, np.int64).tobytes()))


def reference_score(layout: Layout, genome: np.ndarray, seeds: np.ndarray) -> tuple[float, int]:
    """A genome's mean score against the reference panel on ``seeds`` and the steps that
    took (steps of the first replay, if it was replayed before): what a migrant's claim
    states, and what a receiver replays exactly."""
    key = _replay_key(layout, genome, seeds)
    if key not in _REPLAYS:
        panel, seeds = reference_panel(layout), np.asarray(seeds, dtype=np.int64)
        genomes = np.concatenate([np.asarray(genome, np.float32).reshape(1, -1), panel])
        res = play_genomes(layout, genomes, np.zeros(panel.shape[0] * seeds.size, np.int64),
                           1 + np.repeat(np.arange(panel.shape[0]), seeds.size), np.tile(seeds, panel.shape[0]))
        _REPLAYS[key] = (float(res.score.mean()), res.steps)
        while len(_REPLAYS) > _REPLAY_LIMIT:
            _REPLAYS.popitem(last=False)
    return _REPLAYS[key]


def score_vs_baseline(layout: Layout, genomes: np.ndarray, episodes: int) -> tuple[np.ndarray, Results]:
    """Mean and per-episode scores against the original's baseline on fixed seeds."""
    seeds = EVAL_SEED_BASE + np.arange(episodes)
    res = play_baseline(layout, genomes, seeds)
    return res.score.mean(axis=1), res


def payoff_matrix(layout: Layout, genomes: np.ndarray, games: int, seed: int) -> tuple[np.ndarray, int]:
    """Antisymmetric ``(N, N)`` matrix of mean scores of every pair (row's view), e.g. a
    CIAO plot's champions or a hall of fame for Elo; ``games`` per unordered pair."""
    n = genomes.shape[0]
    i, j = np.triu_indices(n, k=1)
    if i.size == 0:
        return np.zeros((n, n)), 0
    right, left = np.repeat(i, games), np.repeat(j, games)
    seeds = np.tile(EVAL_SEED_BASE + seed * 1000 + np.arange(games), i.size)
    res = play_genomes(layout, genomes, right, left, seeds)
    mean = res.score.reshape(i.size, games).mean(axis=1)
    out = np.zeros((n, n))
    out[i, j], out[j, i] = mean, -mean
    return out, res.steps
