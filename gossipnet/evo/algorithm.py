"""The ask/tell interface every evolution algorithm implements, and its shared state.

``ask()`` proposes genomes, the caller scores them, ``tell()`` hands the scores
back (higher is better). ``inject()`` offers migrants that were already scored
locally. The caller owns evaluation, so the same algorithm runs inline, over a
process pool, or inside a simulator.

State is a flat ``dict[str, np.ndarray]`` so a checkpoint is a safetensors file
and never a pickle; a random generator's state is stored as six uint64 words.
"""

from __future__ import annotations

import abc

import numpy as np

from gossipnet.errors import UserError

_MASK64 = (1 << 64) - 1


def rng_state(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's full state as a uint64 array (128-bit words split in two)."""
    st = rng.bit_generator.state
    if st["bit_generator"] != "PCG64":
        raise ValueError(f"only PCG64 generators are checkpointed, got {st['bit_generator']}")
    s, inc = st["state"]["state"], st["state"]["inc"]
    return np.array(
        [s >> 64, s & _MASK64, inc >> 64, inc & _MASK64, st["has_uint32"], st["uinteger"]],
        dtype=np.uint64,
    )


def rng_from_state(words: np.ndarray) -> np.random.Generator:
    """Inverse of ``rng_state``."""
    w = [int(v) for v in np.asarray(words, dtype=np.uint64).reshape(-1)]
    if len(w) != 6:
        raise UserError("checkpoint: a random generator state must hold 6 words")
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }
    return np.random.Generator(bg)


def need(state: dict[str, np.ndarray], key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Fetch a checkpoint array, raising a ``UserError`` that names it if absent or misshapen."""
    if key not in state:
        raise UserError(f"checkpoint is missing {key!r}; was it written by another algorithm?")
    arr = np.asarray(state[key])
    if shape is not None and arr.shape != shape:
        raise UserError(f"checkpoint {key!r} has shape {arr.shape}, expected {shape}")
    return arr


class Algorithm(abc.ABC):
    """A population-based optimiser over flat float32 genomes, maximising fitness."""

    name: str = "abstract"

    def __init__(self, dim: int, population: int, seed: int) -> None:
        if dim < 1:
            raise ValueError("genome dimension must be positive")
        if population < 2:
            raise UserError(f"population must be at least 2, got {population}")
        self.dim = dim
        self.population = population
        self.generation = 0
        self.rng = np.random.default_rng(seed)
        # the last told generation, best first: what snapshots and evaluation use
        self.last_genomes = np.zeros((0, dim), dtype=np.float32)
        self.last_fitness = np.zeros((0,), dtype=np.float64)

    @abc.abstractmethod
    def ask(self) -> np.ndarray:
        """The next ``(population, dim)`` float32 genomes to score."""

    @abc.abstractmethod
    def tell(self, genomes: np.ndarray, fitness: np.ndarray) -> None:
        """Scores for the genomes ``ask()`` returned, in the same order."""

    @abc.abstractmethod
    def inject(self, migrants: np.ndarray, fitness: np.ndarray) -> int:
        """Take locally re-scored migrants into the search; return how many were taken."""

    def _queue_migrants(self, migrants: np.ndarray, fitness: np.ndarray) -> int:
        """For algorithms that take migrants at the next ``ask()``: queue the best first into
        ``self.pending``, up to ``self.max_injected``; how many were queued."""
        room = self.max_injected - self.pending.shape[0]
        order = np.argsort(-np.asarray(fitness), kind="stable")[: max(room, 0)]
        self.pending = np.concatenate([self.pending, np.asarray(migrants, dtype=np.float32)[order]])
        return int(order.size)

    def elite(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` genomes of the last generation and their fitness."""
        return self.last_genomes[:k].copy(), self.last_fitness[:k].copy()

    def _record(self, genomes: np.ndarray, fitness: np.ndarray) -> None:
        order = np.argsort(-fitness, kind="stable")
        self.last_genomes = np.asarray(genomes, dtype=np.float32)[order]
        self.last_fitness = np.asarray(fitness, dtype=np.float64)[order]
        self.generation += 1

    def _check_tell(self, genomes: np.ndarray, fitness: np.ndarray, expected: int) -> np.ndarray:
        fitness = np.asarray(fitness, dtype=np.float64).reshape(-1)
        if genomes.shape != (expected, self.dim) or fitness.shape != (expected,):
            raise ValueError(
                f"tell() needs the {expected} genomes ask() returned and one fitness each, "
                f"got genomes {genomes.shape} and fitness {fitness.shape}"
            )
        if not np.all(np.isfinite(fitness)):
            raise ValueError("tell() fitness must be finite")
        return fitness

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "algorithm": np.frombuffer(self.name.encode(), dtype=np.uint8).copy(),
            "dim": np.array([self.dim, self.population, self.generation], dtype=np.int64),
            "rng": rng_state(self.rng),
            "last_genomes": self.last_genomes.copy(),
            "last_fitness": self.last_fitness.copy(),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        written_by = bytes(need(state, "algorithm").astype(np.uint8)).decode(errors="replace")
        if written_by != self.name:
            raise UserError(
                f"checkpoint was written by algorithm {written_by!r}, this search is {self.name!r}"
            )
        dims = need(state, "dim", (3,))
        if int(dims[0]) != self.dim or int(dims[1]) != self.population:
            raise UserError(
                f"checkpoint is for genomes of {int(dims[0])} with population {int(dims[1])}, "
                f"this run has {self.dim} and {self.population}"
            )
        self.generation = int(dims[2])
        self.rng = rng_from_state(need(state, "rng"))
        self.last_genomes = need(state, "last_genomes").astype(np.float32)
        self.last_fitness = need(state, "last_fitness").astype(np.float64)
        if self.last_genomes.ndim != 2 or self.last_genomes.shape[1] != self.dim:
            raise UserError("checkpoint 'last_genomes' does not match the genome length")
