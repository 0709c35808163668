"""Split a data set among the nodes of a swarm, IID or with label skew.

Every node computes the same partition from the same ``(labels, num_shards,
alpha, seed)`` and keeps its own part, so shards are disjoint and together
cover every item without the nodes talking to each other.

Non-IID shards follow Hsu, Qi and Brown (2019), "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification"
(arXiv:1909.06335): for each class, the share each shard gets is drawn from
Dirichlet(alpha). Small alpha (0.1) gives each shard a few dominant classes;
large alpha (100) approaches IID.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gossipnet.errors import UserError


def shard(
    y: np.ndarray, num_shards: int, index: int, *, alpha: float | None = None, seed: int = 0
) -> np.ndarray:
    """Indices (sorted, int64) of the items that belong to shard ``index``."""
    _check_int("num_shards", num_shards, low=1)
    _check_int("index", index, low=0)
    if index >= num_shards:
        raise UserError(f"shard index {index} is out of range for {num_shards} shards (use 0 to {num_shards - 1})")
    return partition(y, num_shards, alpha=alpha, seed=seed)[index]


def partition(
    y: np.ndarray, num_shards: int, *, alpha: float | None = None, seed: int = 0
) -> list[np.ndarray]:
    """All shards at once: disjoint, complete, non-empty, sorted index arrays.

    ``alpha=None`` shuffles and deals the items out evenly (sizes differ by at
    most one); a positive ``alpha`` skews each shard's label distribution.
    """
    labels = _check_labels(y)
    _check_int("num_shards", num_shards, low=1)
    _check_int("seed", seed, low=0)
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
            raise UserError(f"alpha must be a positive finite number or None for IID shards, got {alpha!r}")
    n = len(labels)
    if num_shards > n:
        raise UserError(
            f"cannot split {n} items into {num_shards} non-empty shards; use at most {n} shards"
        )
    rng = np.random.default_rng(seed)
    if alpha is None:
        parts = np.array_split(rng.permutation(n), num_shards)
    else:
        parts = _dirichlet_parts(labels, num_shards, float(alpha), rng)
        _fill_empty(parts, rng)
    return [np.sort(p).astype(np.int64) for p in parts]


def _dirichlet_parts(labels: np.ndarray, k: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    buckets: list[list[np.ndarray]] = [[] for _ in range(k)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        share = rng.dirichlet(np.full(k, alpha))
        if not np.all(np.isfinite(share)) or share.sum() <= 0:
            # Tiny alpha can underflow every component; the limit is one shard taking all.
            share = np.zeros(k)
            share[rng.integers(k)] = 1.0
        counts = _largest_remainder(share / share.sum(), len(members))
        for j, piece in enumerate(np.split(members, np.cumsum(counts)[:-1])):
            buckets[j].append(piece)
    return [np.concatenate(b) if b else np.empty(0, np.int64) for b in buckets]


def _largest_remainder(share: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total`` that round ``share * total`` fairly."""
    exact = share * total
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts


def _fill_empty(parts: list[np.ndarray], rng: np.random.Generator) -> None:
    """Give every empty shard one random item from the currently largest shard.

    With at least as many items as shards, the largest shard holds two or more
    whenever some shard is empty, so this always terminates with none empty.
    """
    for j in range(len(parts)):
        if len(parts[j]):
            continue
        donor = max(range(len(parts)), key=lambda i: len(parts[i]))
        pick = int(rng.integers(len(parts[donor])))
        parts[j] = parts[donor][pick : pick + 1]
        parts[donor] = np.delete(parts[donor], pick)


def _check_labels(y: np.ndarray) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise UserError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.size == 0:
        raise UserError("cannot shard an empty data set (no labels)")
    if labels.dtype.kind not in "iu":
        raise UserError(f"labels must be integers, got dtype {labels.dtype}")
    return labels


def _check_int(name: str, value: object, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise UserError(f"{name} must be at least {low}, got {value}")
