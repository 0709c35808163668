"""A capped hall of fame of champions, and the ratings that measure it.

In a two-player game fitness is relative: a policy is only as good as the opponents it
was scored against. Rosin & Belew (1997) keep every past champion in a *hall of fame*
and score new individuals against a sample of it, so an island cannot forget how to
beat an old strategy while it chases the newest one. Here the hall is swarm-wide: it
holds this island's champions and the ones its peers gossiped and it re-scored.

It is capped (memory, and the cost of a round-robin): the newest ``keep_recent`` entries
are always kept, and the rest is a reservoir sample (Vitter's algorithm R) of everything
older, so however long the run, a sample spans its whole history rather than only the
latest fashion. The reservoir's coin flips are seeded by the entry count, so a hall is a
pure function of what was admitted (checkpoints resume it exactly).

``elo`` turns a payoff matrix (mean scores of every pair) into ratings, for the status
page and the benchmark: a rating is fitted, not accumulated game by game, so the order
in which games were played does not move it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gossipnet.evo.algorithm import need

MAX_SCORE = 5.0  # slime volleyball: lives


@dataclass
class HallOfFame:
    """Champions as float32 genomes, with where and when each came from."""

    dim: int
    capacity: int = 64
    keep_recent: int = 8
    genomes: np.ndarray = field(init=False)
    origin: list[str] = field(init=False, default_factory=list)
    generation: list[int] = field(init=False, default_factory=list)
    admitted: int = field(init=False, default=0)  # entries ever admitted (evicted ones too)
    aged: int = field(init=False, default=0)  # entries that have left the newest window

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.keep_recent < 0:
            raise ValueError("a hall of fame needs capacity >= 1 and keep_recent >= 0")
        self.keep_recent = min(self.keep_recent, self.capacity - 1)  # at least one reservoir slot
        self.genomes = np.zeros((0, self.dim), np.float32)

    def __len__(self) -> int:
        return self.genomes.shape[0]

    def add(self, genome: np.ndarray, origin: str, generation: int) -> None:
        g = np.asarray(genome, dtype=np.float32).reshape(1, self.dim)
        self.genomes = np.concatenate([self.genomes, g])
        self.origin.append(str(origin)[:64])
        self.generation.append(int(generation))
        self.admitted += 1
        if len(self) > self.capacity:
            # the oldest of the newest window leaves it: it enters the reservoir of older
            # entries with probability slots / aged, replacing a random one; else it goes
            slots = self.capacity - self.keep_recent
            leaving = slots
            self.aged += 1
            coin = np.random.default_rng([self.aged, 0x4A11])
            drop = leaving
            if coin.random() < slots / self.aged:
                drop = int(coin.integers(0, slots))
            self.genomes = np.delete(self.genomes, drop, axis=0)
            del self.origin[drop], self.generation[drop]

    def sample(self, k: int, rng: np.random.Generator, recent: float = 0.0) -> np.ndarray:
        """``k`` genomes drawn with replacement: each, with probability ``recent``, from the
        newest ``keep_recent`` entries (the swarm's current champions), else uniformly from
        the whole hall (its history)."""
        if len(self) == 0 or k <= 0:
            return np.zeros((0, self.dim), np.float32)
        index = rng.integers(0, len(self), size=k)
        if recent > 0:
            newest = min(len(self), max(1, self.keep_recent))
            pick_recent = rng.random(k) < recent
            index = np.where(pick_recent, len(self) - 1 - rng.integers(0, newest, size=k), index)
        return self.genomes[index]

    def foreign(self, own: str) -> int:
        """How many entries came from other islands."""
        return sum(o != own for o in self.origin)

    def state_dict(self) -> dict[str, np.ndarray]:
        origins = "\n".join(self.origin).encode()
        return {
            "genomes": self.genomes.copy(),
            "generation": np.asarray(self.generation, np.int64),
            "origin": np.frombuffer(origins, np.uint8).copy() if origins else np.zeros(0, np.uint8),
            "admitted": np.array([self.admitted, self.aged], np.int64),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        genomes = need(state, "genomes").astype(np.float32)
        if genomes.ndim != 2 or genomes.shape[1] != self.dim or genomes.shape[0] > self.capacity:
            raise ValueError(f"hall of fame state has shape {genomes.shape}, expected (<= {self.capacity}, {self.dim})")
        origin = bytes(need(state, "origin").astype(np.uint8)).decode(errors="replace")
        self.origin = origin.split("\n") if genomes.shape[0] else []
        self.generation = [int(g) for g in need(state, "generation").reshape(-1)]
        if not len(self.origin) == len(self.generation) == genomes.shape[0]:
            raise ValueError("hall of fame state: genomes, origins and generations disagree")
        self.genomes = genomes
        self.admitted, self.aged = (int(v) for v in need(state, "admitted", (2,)))


def elo(payoff: np.ndarray, iterations: int = 2000, lr: float = 20.0) -> np.ndarray:
    """Elo ratings (mean 1000) fitted to a payoff matrix.

    ``payoff[i, j]`` is i's mean score against j in -5..5 (NaN where not played); it is
    read as an expected result ``(s + 5) / 10`` and the ratings minimise the squared gap
    to Elo's logistic prediction, by plain gradient steps (n is at most the hall's cap).
    """
    p = np.asarray(payoff, dtype=np.float64)
    n = p.shape[0]
    if n == 0:
        return np.zeros(0)
    target = (p + MAX_SCORE) / (2 * MAX_SCORE)
    played = np.isfinite(target) & ~np.eye(n, dtype=bool)
    target = np.where(played, target, 0.5)
    r = np.zeros(n)
    for _ in range(iterations):
        expected = 1.0 / (1.0 + 10.0 ** ((r[None, :] - r[:, None]) / 400.0))
        grad = np.where(played, target - expected, 0.0).sum(axis=1)
        r += lr * grad / max(1, n - 1)
    return r - r.mean() + 1000.0
