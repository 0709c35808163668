"""CMA-ES through pycma, with a checkpoint that is arrays, not a pickle.

pycma (Hansen's reference implementation) offers ``inject``, which puts given
solutions into the next ``ask()``: that is how migrants enter. pycma clips an
injected solution's step to a Mahalanobis size in ``tell`` before it updates
the covariance, so one far-away migrant cannot wreck the search distribution.

Randomness: pycma draws from ``np.random`` (the global generator) unless it is
given ``randn``; we hand it this object's own ``Generator`` so islands in one
process stay independent and reproducible, and the generator's state goes
into the checkpoint.

Checkpoint: pycma's own persistence is a pickle. Instead we copy every numeric
attribute (arrays and scalars) of the strategy and of its sampler, step-size
adaptation and diagonal scaling into named arrays, and on load build a fresh
``CMAEvolutionStrategy`` with the same options and write them back. The test
``test_cmaes_checkpoint_continues_identically`` checks that a restored search
asks exactly the same genomes as the uninterrupted one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cma
import numpy as np

from gossipnet.errors import UserError
from gossipnet.evo.algorithm import Algorithm, need


@dataclass(frozen=True)
class CMAConfig:
    """``sigma0``: initial step size; 0.5 covers the scale of 1/sqrt(fan_in) weights."""

    sigma0: float = 0.5


# parts of the strategy whose numeric attributes make up its state
_PARTS = ("es", "sm", "adapt_sigma", "sigma_vec", "best")


def _part(es: cma.CMAEvolutionStrategy, name: str) -> object:
    return es if name == "es" else getattr(es, name)


def _numeric(value: object) -> np.ndarray | None:
    """An attribute as an array if it is numeric state, else None (objects, lists, strings)."""
    if isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        return np.asarray(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    return None


class CMAES(Algorithm):
    name = "cmaes"

    def __init__(self, init: np.ndarray, population: int, seed: int, config: CMAConfig = CMAConfig()):
        init = np.asarray(init, dtype=np.float64).reshape(-1)
        super().__init__(init.shape[0], population, seed)
        if config.sigma0 <= 0:
            raise UserError(f"CMA-ES needs a positive sigma0, got {config.sigma0}")
        self.config = config
        self.x0 = init.copy()
        self.es = self._new_strategy()
        self.pending = np.zeros((0, self.dim), dtype=np.float32)
        self._asked: np.ndarray | None = None

    def _randn(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape)

    def _new_strategy(self) -> cma.CMAEvolutionStrategy:
        opts = {
            "popsize": self.population,
            "randn": self._randn,
            "seed": np.nan,  # no reseeding of np.random: randn above is ours
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
            # islands run for as long as the node lives; stop criteria are ours
            "tolfun": 0,
            "tolfunhist": 0,
            "tolflatfitness": np.inf,
            "tolx": 0,
            "tolstagnation": np.inf,
            "maxiter": np.inf,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cma.CMAEvolutionStrategy(self.x0, self.config.sigma0, opts)

    @property
    def max_injected(self) -> int:
        return self.population // 2

    def ask(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.pending.shape[0]:
                self.es.inject([m.astype(np.float64) for m in self.pending], force=True)
                self.pending = self.pending[:0]
            self._asked = np.array(self.es.ask(), dtype=np.float64)
        return self._asked.astype(np.float32)

    def tell(self, genomes: np.ndarray, fitness: np.ndarray) -> None:
        genomes = np.asarray(genomes, dtype=np.float32)
        fitness = self._check_tell(genomes, fitness, self.population)
        if self._asked is None or not np.array_equal(self._asked.astype(np.float32), genomes):
            raise ValueError("tell() needs exactly the genomes the last ask() returned")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.es.tell(list(self._asked), list(-fitness))  # pycma minimises
        self._asked = None
        self._record(genomes, fitness)

    def inject(self, migrants: np.ndarray, fitness: np.ndarray) -> int:
        """Queue migrants, best first, for pycma's ``inject`` before the next ``ask()``."""
        return self._queue_migrants(migrants, fitness)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.es.mean, dtype=np.float64)

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state["x0"] = self.x0.copy()
        state["pending"] = self.pending.copy()
        for part in _PARTS:
            for attr, value in vars(_part(self.es, part)).items():
                arr = _numeric(value)
                if arr is None:
                    continue
                if isinstance(value, np.ndarray):  # "part.attr": an array, restored as one
                    state[f"{part}.{attr}"] = np.array(arr, copy=True).reshape(value.shape or (1,))
                else:  # "part@attr": a Python/numpy scalar (stored 1-long: safetensors has no 0-d)
                    state[f"{part}@{attr}"] = arr.reshape(1)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        super().load_state_dict(state)
        self.x0 = need(state, "x0", (self.dim,)).astype(np.float64)
        pending = need(state, "pending").astype(np.float32)
        if pending.ndim != 2 or pending.shape[1] != self.dim:
            raise UserError("checkpoint 'pending' migrants do not match the genome length")
        if "es@countiter" not in state or "sm.C" not in state:
            raise UserError("checkpoint holds no CMA-ES state; was it written by another algorithm?")
        es = self._new_strategy()
        for key, arr in state.items():
            scalar = "@" in key
            part, _, attr = key.partition("@" if scalar else ".")
            if part not in _PARTS or not attr:
                continue
            target = _part(es, part)
            if scalar:
                if arr.size != 1:
                    raise UserError(f"checkpoint {key!r} must hold one number, has shape {arr.shape}")
                setattr(target, attr, arr.reshape(-1)[0].item())
                continue
            current = getattr(target, attr, None)
            if isinstance(current, np.ndarray):
                if current.size != arr.size:
                    raise UserError(
                        f"checkpoint {key!r} has shape {arr.shape}, expected {current.shape}"
                    )
                arr = arr.reshape(current.shape)
            setattr(target, attr, np.array(arr, copy=True))
        # the sampler's matrices are shared views with the strategy's C, B, D
        es.C, es.B, es.D = es.sm.C, es.sm.B, es.sm.D
        if not hasattr(es, "timer"):  # pycma makes its wall-clock timer in the first ask()
            es.timer = cma.utilities.utils.ElapsedWCTime()
        self.es = es
        self.pending = pending
        self._asked = None
