"""Policies as small tanh MLPs whose parameters are one flat float32 genome.

A genome is what islands exchange, so its meaning must be explicit: ``Layout``
names every slice (``w1``, ``b1``, ``w2``, ``b2``) and hashes that description
into a fingerprint. Two islands with different layouts never mix genomes.

The forward pass is batched over individuals: ``act(genomes, obs)`` takes one
genome and one observation per row, so a worker steps many environments in
lockstep with three numpy calls per step instead of a Python loop over policies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# 16 tanh units: the DESIGN reference (CMA-ES solves CartPole in 10-20
# generations and LunarLander in ~115 with this size).
DEFAULT_HIDDEN = 16


@dataclass(frozen=True)
class Layout:
    """The named slices of a genome: a one-hidden-layer tanh MLP.

    ``discrete``: actions are the argmax over ``act_dim`` outputs.
    Continuous: outputs pass through tanh and are scaled to ``[low, high]``.
    """

    obs_dim: int
    hidden: int
    act_dim: int
    discrete: bool

    @property
    def shapes(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return (
            ("w1", (self.obs_dim, self.hidden)),
            ("b1", (self.hidden,)),
            ("w2", (self.hidden, self.act_dim)),
            ("b2", (self.act_dim,)),
        )

    @property
    def size(self) -> int:
        return sum(int(np.prod(shape)) for _, shape in self.shapes)

    def describe(self) -> str:
        head = "argmax" if self.discrete else "tanh-scaled"
        parts = ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in self.shapes)
        return f"mlp-tanh/{parts}/{head}/float32"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.describe().encode()).hexdigest()[:16]

    def unpack(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a ``(P, size)`` genome batch as ``{name: (P, *shape)}`` arrays."""
        if genomes.ndim != 2 or genomes.shape[1] != self.size:
            raise ValueError(f"genomes must have shape (P, {self.size}), got {genomes.shape}")
        out, start = {}, 0
        for name, shape in self.shapes:
            n = int(np.prod(shape))
            out[name] = genomes[:, start : start + n].reshape((genomes.shape[0], *shape))
            start += n
        return out

    def init(self, rng: np.random.Generator, count: int, scale: float = 1.0) -> np.ndarray:
        """Random genomes: weights ~ N(0, scale^2 / fan_in), biases zero (LeCun-style)."""
        parts = []
        for name, shape in self.shapes:
            if name.startswith("w"):
                std = scale / np.sqrt(shape[0])
                parts.append(rng.standard_normal((count, int(np.prod(shape)))) * std)
            else:
                parts.append(np.zeros((count, int(np.prod(shape)))))
        return np.concatenate(parts, axis=1).astype(np.float32)


@dataclass(frozen=True)
class ActionSpace:
    """What the policy head must produce: ``n`` discrete choices, or a box [low, high]."""

    discrete: bool
    dim: int
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()


def act(layout: Layout, space: ActionSpace, genomes: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Actions for a batch: row i of ``obs`` is acted on by genome row i.

    Returns int64 indices for discrete spaces, float32 ``(P, dim)`` otherwise.
    """
    p = layout.unpack(genomes)
    x = obs.astype(np.float32, copy=False)
    h = np.tanh(np.einsum("po,poh->ph", x, p["w1"]) + p["b1"])
    y = np.einsum("ph,pha->pa", h, p["w2"]) + p["b2"]
    if space.discrete:
        return np.argmax(y, axis=1)
    low = np.asarray(space.low, dtype=np.float32)
    high = np.asarray(space.high, dtype=np.float32)
    return (low + (np.tanh(y) + 1.0) * 0.5 * (high - low)).astype(np.float32)
