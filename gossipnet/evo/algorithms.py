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
    init_seed: int | None = None,
) -> Algorithm:
    """A fresh search over ``layout``'s genomes; everything random follows from ``seed``,
    the starting networks from ``init_seed`` when one is given.

    GA starts from a population of independently initialised networks, ES from
    one, CMA-ES from the zero vector (its ``sigma0`` provides the spread), or, given
    ``init_seed``, from one initialised network. Islands sharing an ``init_seed`` break
    the hidden units' permutation symmetry alike, so a migrant is more likely a relative
    than an unrelated network; measured on LunarLander it did not make CMA-ES islands
    need fewer env steps (it did help one population), so it is off by default
    (docs/EVOLUTION.md).
    """
    init_rng = np.random.default_rng([seed if init_seed is None else init_seed, 0x1A1])
    if name == "ga":
        return GA(layout.init(init_rng, population), population, seed, config or GAConfig())
    if name == "es":
        return OpenAIES(layout.init(init_rng, 1)[0], population, seed, config or ESConfig())
    if name == "cmaes":
        x0 = np.zeros(layout.size) if init_seed is None else layout.init(init_rng, 1)[0]
        return CMAES(x0, population, seed, config or CMAConfig())
    raise UserError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)}")
