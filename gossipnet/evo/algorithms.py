"""Choosing an algorithm by name and giving it a starting point for a policy layout."""

from __future__ import annotations

import numpy as np

from gossipnet.errors import UserError
from gossipnet.evo.algorithm import Algorithm
from gossipnet.evo.cmaes import CMAES, CMAConfig
from gossipnet.evo.es import ESConfig, OpenAIES
from gossipnet.evo.ga import GA, GAConfig
from gossipnet.evo.policy import Layout

ALGORITHMS = ("ga", "es", "cmaes")


def make_algorithm(
    name: str,
    layout: Layout,
    population: int,
    seed: int,
    config: GAConfig | ESConfig | CMAConfig | None = None,
) -> Algorithm:
    """A fresh search over ``layout``'s genomes; everything random follows from ``seed``.

    GA starts from a population of independently initialised networks, ES from
    one, CMA-ES from the zero vector (its ``sigma0`` provides the spread).
    """
    init_rng = np.random.default_rng([seed, 0x1A1])  # separate stream for initial weights
    if name == "ga":
        return GA(layout.init(init_rng, population), population, seed, config or GAConfig())
    if name == "es":
        return OpenAIES(layout.init(init_rng, 1)[0], population, seed, config or ESConfig())
    if name == "cmaes":
        return CMAES(np.zeros(layout.size), population, seed, config or CMAConfig())
    raise UserError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)}")
