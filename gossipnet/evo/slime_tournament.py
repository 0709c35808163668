"""Tournament selection for self-play (pure numpy): every game decides a replacement.

This is the GA self-play of slimevolleygym's ``training_scripts/train_ga_selfplay.py``
(David Ha, 2020), which reached 0.35 against the baseline after 500k games, made to play
many games at once: a round pairs the population at random (disjoint pairs), every pair
plays one game, and the loser of each is replaced by a copy of the winner plus N(0, sigma^2) noise and inherits the winner's *winning streak* (the
length of its line of victories), while the winner's streak grows by one; a tie adds
noise to one of the two. A member can also meet a frozen opponent (a hall-of-fame
champion): if it loses, it is replaced by a mutant of that champion, so what the swarm
learnt elsewhere enters the population only by winning games here.

Why not a generational GA with fitness = mean score over a panel: among near-random
players a panel's mean is mostly serve luck, while one game's winner is a (noisy)
pairwise comparison that tournament selection is known to tolerate (Miller & Goldberg
1995); the published run is the evidence that it works on this task.

Pairs in a round are disjoint, so the order in which a round's results are settled does
not matter: a member is only ever replaced by the result of its own game.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossipnet.evo.algorithm import need, rng_from_state, rng_state


@dataclass(frozen=True)
class TournamentConfig:
    population: int = 128
    sigma: float = 0.1  # mutation noise, as published
    init_scale: float = 0.5  # initial parameters ~ N(0, init_scale^2), as published


class Tournament:
    """A population and its winning streaks."""

    def __init__(self, dim: int, config: TournamentConfig, seed: int) -> None:
        self.dim = dim
        self.config = config
        self.rng = np.random.default_rng([seed, 0x70E])
        p = config.population
        self.members = (self.rng.standard_normal((p, dim)) * config.init_scale).astype(np.float32)
        self.streak = np.zeros(p, np.int64)
        self.decided = 0  # games with a winner
        self.ties = 0

    def pairs(self, members: np.ndarray) -> np.ndarray:
        """``(k, 2)`` disjoint random pairs of ``members`` (one left out if odd)."""
        shuffled = self.rng.permutation(np.asarray(members, np.int64))
        return shuffled[: shuffled.size // 2 * 2].reshape(-1, 2)

    def settle(self, right: int, left: int, score: float) -> None:
        """A game between two members is over (``score``: the right one's view)."""
        if score == 0:
            self.ties += 1
            self._mutate(left, self.members[left])
            return
        winner, loser = (right, left) if score > 0 else (left, right)
        self.decided += 1
        self._mutate(loser, self.members[winner])
        self.streak[loser] = self.streak[winner]
        self.streak[winner] += 1

    def settle_frozen(self, member: int, opponent: np.ndarray, score: float) -> None:
        """A member's game against a frozen opponent is over (``score``: the member's view)."""
        if score == 0:
            self.ties += 1
            self._mutate(member, self.members[member])
        elif score > 0:
            self.decided += 1
            self.streak[member] += 1
        else:
            self.decided += 1
            self._mutate(member, opponent)
            self.streak[member] = 0

    def immigrate(self, champion: np.ndarray, k: int) -> None:
        """A foreign champion's mutants replace our ``k`` shortest winning streaks (they start
        their own streaks at 0, as a fresh loser's replacement would not)."""
        for slot in np.argsort(self.streak, kind="stable")[:k]:
            self._mutate(int(slot), champion)
            self.streak[slot] = 0

    def leaders(self, k: int) -> np.ndarray:
        """Indices of the ``k`` longest winning streaks (the published champion is the first)."""
        return np.argsort(-self.streak, kind="stable")[:k]

    def _mutate(self, slot: int, parent: np.ndarray) -> None:
        noise = self.rng.standard_normal(self.dim).astype(np.float32) * self.config.sigma
        self.members[slot] = np.asarray(parent, np.float32) + noise

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"members": self.members.copy(), "streak": self.streak.copy(), "rng": rng_state(self.rng),
                "counts": np.array([self.decided, self.ties], np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        p = self.config.population
        self.members = need(state, "members", (p, self.dim)).astype(np.float32)
        self.streak = need(state, "streak", (p,)).astype(np.int64)
        self.rng = rng_from_state(need(state, "rng"))
        self.decided, self.ties = (int(v) for v in need(state, "counts", (2,)))
