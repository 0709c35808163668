"""A simple genetic algorithm: truncation selection, Gaussian mutation, elitism.

This is the "deep GA" of Such et al. 2017 (arXiv:1712.06567) at small scale:
no crossover; the top ``truncation`` fraction are parents; each child is a
parent plus N(0, sigma^2) noise; the ``elite`` best are copied unchanged and
scored again next generation, so a lucky episode cannot keep a policy on top.
Migrants replace the worst members of the population if they score better.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossipnet.errors import UserError
from gossipnet.evo.algorithm import Algorithm, need


@dataclass(frozen=True)
class GAConfig:
    """GA knobs; the defaults suit MLPs of a few hundred weights."""

    elite: int = 1  # Such et al.: one elite, re-evaluated each generation
    truncation: float = 0.25  # fraction of the population that may parent
    sigma: float = 0.1  # mutation std; weights start at ~1/sqrt(fan_in)


class GA(Algorithm):
    name = "ga"

    def __init__(self, init: np.ndarray, population: int, seed: int, config: GAConfig = GAConfig()):
        init = np.asarray(init, dtype=np.float32)
        super().__init__(init.shape[-1], population, seed)
        if not 0 <= config.elite < population or not 0 < config.truncation <= 1:
            raise UserError(f"GA needs 0 <= elite < population and 0 < truncation <= 1: {config}")
        self.config = config
        if init.ndim == 1:
            noise = self.rng.standard_normal((population, self.dim)).astype(np.float32)
            init = init + config.sigma * noise
        if init.shape != (population, self.dim):
            raise ValueError(f"GA init must be ({population}, {self.dim}) or ({self.dim},)")
        self.members = init.copy()
        self.scores = np.full(population, -np.inf)
        self.scored = False

    def ask(self) -> np.ndarray:
        if not self.scored:
            return self.members.copy()
        order = np.argsort(-self.scores, kind="stable")
        n_parents = max(1, int(round(self.config.truncation * self.population)))
        parents = self.members[order[:n_parents]]
        n_children = self.population - self.config.elite
        picks = self.rng.integers(0, n_parents, size=n_children)
        noise = self.rng.standard_normal((n_children, self.dim)).astype(np.float32)
        children = parents[picks] + self.config.sigma * noise
        return np.concatenate([self.members[order[: self.config.elite]], children]).astype(np.float32)

    def tell(self, genomes: np.ndarray, fitness: np.ndarray) -> None:
        genomes = np.asarray(genomes, dtype=np.float32)
        fitness = self._check_tell(genomes, fitness, self.population)
        self.members = genomes.copy()
        self.scores = fitness.copy()
        self.scored = True
        self._record(genomes, fitness)

    def inject(self, migrants: np.ndarray, fitness: np.ndarray) -> int:
        """Each migrant, best first, replaces the current worst member if it beats it."""
        taken = 0
        for i in np.argsort(-np.asarray(fitness), kind="stable"):
            worst = int(np.argmin(self.scores))
            if self.scored and not fitness[i] > self.scores[worst]:
                break
            self.members[worst] = migrants[i]
            self.scores[worst] = fitness[i]
            taken += 1
        return taken

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state.update(
            members=self.members.copy(), scores=self.scores.copy(), scored=np.array([self.scored])
        )
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        self.members = need(state, "members", (self.population, self.dim)).astype(np.float32)
        self.scores = need(state, "scores", (self.population,)).astype(np.float64)
        self.scored = bool(need(state, "scored", (1,))[0])
