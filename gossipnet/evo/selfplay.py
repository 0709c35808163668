"""Self-play scoring for slime volleyball islands (pure numpy; the learner wraps it).

An island's fitness is relative: the mean score over games against a *panel* of its own
siblings (each game counts for both players) and opponents sampled from the swarm-wide
hall of fame. Every few generations a champion is picked by a round-robin against a
hall sample, joins the hall, and is offered to peers as a migrant.

The baseline policy never enters any of this: ``score_vs_baseline`` is the yardstick
only. A migrant's claim is checkable without trusting the sender: it states the
champion's mean score against a public *reference panel* (networks every node derives
from one fixed seed and the layout) on named serve seeds; games are deterministic, so
the receiver replays the claim exactly before it spends anything on re-scoring.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Plan:
    """A batch of games to play: game i is ``genomes[right[i]]`` against
    ``genomes[left[i]]`` with serves from ``seeds[i]``. Plans of several islands can be
    played as one batch (``merge_plans``), which is what makes small islands cheap."""

    genomes: np.ndarray
    right: np.ndarray
    left: np.ndarray
    seeds: np.ndarray

    @property
    def games(self) -> int:
        return int(self.right.size)


def play_plan(layout: Layout, plan: Plan) -> Results:
    if plan.games == 0:
        return Results(score=np.zeros(0), length=np.zeros(0, np.int64))
    return play_genomes(layout, plan.genomes, plan.right, plan.left, plan.seeds)


def play_plans(layout: Layout, plans: list[Plan]) -> list[Results]:
    """Play several plans in one lockstep batch; results come back per plan."""
    res = play_plan(layout, join(plans))
    cuts = np.cumsum([0] + [p.games for p in plans])
    return [Results(res.score[a:b], res.length[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def panel_plan(population: np.ndarray, hall_sample: np.ndarray, sibling_rounds: int,
               rng: np.random.Generator) -> Plan:
    """One generation's panel games.

    ``sibling_rounds`` times, the population is paired at random (each game scores for
    both sides); then member i meets ``hall_sample[i * H : (i + 1) * H]`` with
    ``H = len(hall_sample) // P``. Serves come from ``rng``.
    """
    p = population.shape[0]
    right, left = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for _ in range(sibling_rounds):
        pairs = rng.permutation(p)[: p // 2 * 2].reshape(-1, 2)
        right.append(pairs[:, 0])
        left.append(pairs[:, 1])
    per_member = hall_sample.shape[0] // p
    if per_member:
        right.append(np.repeat(np.arange(p), per_member))
        left.append(p + np.arange(p * per_member))
    right_idx, left_idx = np.concatenate(right), np.concatenate(left)
    genomes = np.concatenate([population, hall_sample[: p * per_member]]).astype(np.float32)
    return Plan(genomes, right_idx, left_idx, rng.integers(0, 2**31, right_idx.size))


def pairings(players: np.ndarray, opponents: np.ndarray, games: int,
             rng: np.random.Generator) -> Plan:
    """Every player against every opponent, ``games`` times, serves shared by all pairs."""
    p, o = players.shape[0], opponents.shape[0]
    seeds = rng.integers(0, 2**31, games)
    return Plan(np.concatenate([players, opponents]).astype(np.float32),
                np.repeat(np.arange(p), o * games), p + np.tile(np.repeat(np.arange(o), games), p),
                np.tile(seeds, p * o))


def join(plans: list[Plan]) -> Plan:
    """Several plans as one (genome tables stacked, indices shifted)."""
    offsets = np.cumsum([0] + [p.genomes.shape[0] for p in plans])
    return Plan(np.concatenate([p.genomes for p in plans]),
                np.concatenate([p.right + o for p, o in zip(plans, offsets)]),
                np.concatenate([p.left + o for p, o in zip(plans, offsets)]),
                np.concatenate([p.seeds for p in plans]))


def panel_fitness(plan: Plan, results: Results, population_size: int) -> np.ndarray:
    """Mean score of each member over the panel games it played (either side)."""
    n = plan.genomes.shape[0]
    total, count = np.zeros(n), np.zeros(n)
    np.add.at(total, plan.right, results.score)
    np.add.at(count, plan.right, 1)
    np.add.at(total, plan.left, -results.score)
    np.add.at(count, plan.left, 1)
    return total[:population_size] / np.maximum(count[:population_size], 1)


def round_robin(layout: Layout, players: np.ndarray, opponents: np.ndarray, games: int,
                seeds: np.ndarray) -> tuple[np.ndarray, Results]:
    """``(P, O)`` mean scores of every player against every opponent over ``games`` games
    each, the serve seeds shared by all pairs (common random numbers)."""
    p, o = players.shape[0], opponents.shape[0]
    seeds = np.asarray(seeds, dtype=np.int64)[:games]
    right = np.repeat(np.arange(p), o * games)
    left = p + np.tile(np.repeat(np.arange(o), games), p)
    genomes = np.concatenate([players, opponents]).astype(np.float32)
    res = play_genomes(layout, genomes, right, left, np.tile(seeds, p * o))
    return res.score.reshape(p, o, games).mean(axis=2), res


@functools.lru_cache(maxsize=8)
def reference_panel(layout: Layout) -> np.ndarray:
    """The public reference opponents: same networks on every node with this layout."""
    panel = layout.init(np.random.default_rng(REFERENCE_SEED), REFERENCE_SIZE)
    panel.setflags(write=False)
    return panel


def reference_plan(layout: Layout, genome: np.ndarray, seeds: np.ndarray) -> Plan:
    """One genome against every reference opponent on every seed."""
    panel = reference_panel(layout)
    seeds = np.asarray(seeds, dtype=np.int64)
    return Plan(np.concatenate([np.asarray(genome, np.float32).reshape(1, -1), panel]),
                np.zeros(panel.shape[0] * seeds.size, np.int64),
                1 + np.repeat(np.arange(panel.shape[0]), seeds.size), np.tile(seeds, panel.shape[0]))


# Replays are pure functions of (layout, genome, seeds): a node replays each distinct claim
# once, and islands sharing a process (the demo, the benchmark) replay it once between them.
_REPLAYS: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
_REPLAY_LIMIT = 256


def _replay_key(layout: Layout, genome: np.ndarray, seeds: np.ndarray) -> bytes:
    return b"|".join((layout.describe().encode(), np.asarray(genome, np.float32).tobytes(),
                      np.asarray(seeds, np.int64).tobytes()))


def remember_reference(layout: Layout, genome: np.ndarray, seeds: np.ndarray, score: float,
                       steps: int) -> None:
    """Record a reference score measured elsewhere (inside a generation's batch)."""
    _REPLAYS[_replay_key(layout, genome, seeds)] = (float(score), int(steps))
    while len(_REPLAYS) > _REPLAY_LIMIT:
        _REPLAYS.popitem(last=False)


def reference_score(layout: Layout, genome: np.ndarray, seeds: np.ndarray) -> tuple[float, int]:
    """A genome's mean score against the reference panel on ``seeds`` and the steps that
    took (steps of the first replay, if it was replayed before): what a migrant's claim
    states, and what a receiver replays exactly."""
    key = _replay_key(layout, genome, seeds)
    if key not in _REPLAYS:
        plan = reference_plan(layout, genome, seeds)
        res = play_plan(layout, plan)
        remember_reference(layout, genome, seeds, float(res.score.mean()), res.steps)
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
