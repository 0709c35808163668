"""Play many slime volleyball games at once and score them.

``play`` runs a batch of games in lockstep: each step is one numpy pass over the games
still going; a game that ends leaves the batch (its state, and its players' recurrent
state, are dropped in one gather), so long games do not drag finished ones along.

Scores are from the right slime's side: the left slime's lives lost minus the right's
(-5..5), as the original's rewards sum to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossipnet.evo.policy import Layout
from gossipnet.evo.slime_compiled import play_against_baseline, play_genome_games
from gossipnet.evo.slime_physics import MAX_STEPS, T, SlimeBatch, draw_serves
from gossipnet.evo.slime_players import BaselinePlayers, RandomPlayers


@dataclass(frozen=True)
class Results:
    """Per game: ``score`` (right's view), ``length`` in steps; ``steps`` is their sum."""

    score: np.ndarray
    length: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.length.sum())


def play(left, right, serves: np.ndarray) -> Results:
    """Play ``len(serves)`` games to the end; ``left``/``right`` are player objects.

    Finished games stay in the batch, masked (their later rewards are ignored), until a
    quarter of it is finished: then one gather drops them all, which costs less than
    dropping each game the step it ends."""
    games = SlimeBatch(serves)
    n = games.size
    score = np.zeros(n)
    length = np.zeros(n, dtype=np.int64)
    ids = np.arange(n)
    running = np.zeros(n)
    live = np.ones(n, dtype=bool)
    for _ in range(MAX_STEPS):
        reward, done = games.step(left.act(games.obs[0]), right.act(games.obs[1]))
        running += np.where(live, reward, 0)
        ended = done & live
        if ended.any():
            fin = np.flatnonzero(ended)
            score[ids[fin]] = running[fin]
            length[ids[fin]] = games.s[T, fin]
            live &= ~done
            if not live.any():
                break
            if live.sum() <= 0.75 * live.size:
                keep = np.flatnonzero(live)
                ids, running, live = ids[keep], running[keep], live[keep]
                games.keep(keep)
                left.keep(keep)
                right.keep(keep)
    return Results(score=score, length=length)


def play_genomes(layout: Layout, genomes: np.ndarray, right: np.ndarray, left: np.ndarray,
                 seeds: np.ndarray) -> Results:
    """Game i: ``genomes[right[i]]`` (right side) against ``genomes[left[i]]``, serves from
    ``seeds[i]``. Score is the right player's. Played by the compiled engine
    (``slime_compiled``): every game between evolved policies goes through it, so a claim
    measured on one node replays exactly on another."""
    score, length = play_genome_games(layout, genomes, right, left, seeds)
    return Results(score=score, length=length)


def play_baseline(layout: Layout, genomes: np.ndarray, seeds: np.ndarray) -> Results:
    """Every genome against the baseline on every seed: ``score`` is ``(G, E)``, genome's
    view. Compiled, like every game of an evolved policy (the yardstick is measured often)."""
    g = np.asarray(genomes, dtype=np.float32)
    seeds = np.asarray(seeds, dtype=np.int64)
    who = np.repeat(np.arange(g.shape[0]), seeds.size)
    score, length = play_against_baseline(layout, g, who, np.tile(seeds, g.shape[0]))
    shape = (g.shape[0], seeds.size)
    return Results(score=score.reshape(shape), length=length.reshape(shape))


def play_random_vs_baseline(seeds: np.ndarray, rng_seed: int = 0) -> Results:
    """The original's reference point: random buttons (right) against the baseline."""
    seeds = np.asarray(seeds, dtype=np.int64)
    return play(BaselinePlayers(seeds.size), RandomPlayers(np.random.default_rng(rng_seed)),
                draw_serves(seeds))
