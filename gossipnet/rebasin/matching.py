"""Weight matching (Git Re-Basin, Ainsworth et al. 2023, Algorithm 1) and MergeMany.

For one hidden layer with every other permutation held fixed, the permutation that
maximises the inner product between net A's weights and net B's permuted weights is a
linear assignment problem over that layer's units: cost[i, j] sums, over every array
the permutation touches, A's slice for unit i dotted with B's slice for unit j. Solving
one layer at a time, in a random order, until no layer improves, is a coordinate ascent
that converges in a few sweeps. scipy's ``linear_sum_assignment`` (the Jonker-Volgenant
solver) does each step; that is the library this module leans on. For more than two
nets, MergeMany (ibid., Algorithm 3) matches each net in turn to the mean of all the
others, already aligned, until no assignment changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from gossipnet.rebasin.permutations import (
    Params, PermutationSpec, Perms, apply_permutation, permuted,
)


def _units_first(v: np.ndarray, axis: int, n: int) -> np.ndarray:
    return np.moveaxis(v, axis, 0).reshape(n, -1).astype(np.float64, copy=False)


def _cost(spec: PermutationSpec, perm: str, ref: Params, other: Params, perms: Perms) -> np.ndarray:
    n = spec.sizes[perm]
    cost = np.zeros((n, n))
    for name, axis in spec.uses(perm):
        a = ref[name].reshape(spec.views[name])
        b = permuted(spec, perms, other, name, skip_axis=axis).reshape(spec.views[name])
        cost += _units_first(a, axis, n) @ _units_first(b, axis, n).T
    return cost


def weight_matching(spec: PermutationSpec, ref: Params, other: Params, *, max_sweeps: int = 100,
                    seed: int = 0, init: Perms | None = None) -> Perms:
    """Permutations that line ``other``'s hidden units up with ``ref``'s.

    ``apply_permutation(spec, perms, other)`` is then the same function as ``other``,
    with its units in ``ref``'s order as far as the weights can tell.
    """
    perms = {p: np.asarray(v).copy() for p, v in (init or spec.identity()).items()}
    names = list(spec.sizes)
    rng = np.random.default_rng(seed)
    for _ in range(max_sweeps):
        improved = False
        for p in rng.permutation(names):
            cost = _cost(spec, p, ref, other, perms)
            _, cols = linear_sum_assignment(cost, maximize=True)
            n = len(cols)
            gain = cost[np.arange(n), cols].sum() - cost[np.arange(n), perms[p]].sum()
            if gain > 1e-9 * max(1.0, abs(cost[np.arange(n), cols].sum())):
                perms[p] = cols
                improved = True
        if not improved:
            break
    return perms


def align(spec: PermutationSpec, ref: Params, other: Params, **kwargs) -> Params:
    """``other`` with its hidden units reordered to match ``ref``'s."""
    return apply_permutation(spec, weight_matching(spec, ref, other, **kwargs), other)


def merge_aligned(models: Sequence[Params], shares: Sequence[float] | None = None) -> Params:
    """The weighted average of models whose units are already in one order."""
    k = len(models)
    w = np.full(k, 1.0 / k) if shares is None else np.asarray(shares, np.float64) / np.sum(shares)
    return {name: sum(wi * m[name].astype(np.float64) for wi, m in zip(w, models)).astype(arr.dtype)
            for name, arr in models[0].items()}


def match_many(spec: PermutationSpec, models: Sequence[Params], *, max_rounds: int = 20,
               seed: int = 0) -> list[Params]:
    """Every model with its units in one common order (MergeMany).

    Starts by aligning each model to the first, then repeatedly re-matches each model
    (from its original weights) to the mean of all the others, until a round changes no
    assignment. The first model's order is the common order only at the start: the
    result's order is wherever the rounds settle. Average the result with
    ``merge_aligned``.
    """
    if len(models) < 2:
        return [dict(m) for m in models]
    rng = np.random.default_rng(seed)
    perms = [spec.identity()] + [weight_matching(spec, models[0], m, seed=seed) for m in models[1:]]
    aligned = [apply_permutation(spec, p, m) for p, m in zip(perms, models)]
    for _ in range(max_rounds):
        changed = False
        for i in rng.permutation(len(models)):
            rest = merge_aligned([a for j, a in enumerate(aligned) if j != i])
            new = weight_matching(spec, rest, models[i], seed=seed, init=perms[i])
            if any(not np.array_equal(new[p], perms[i][p]) for p in new):
                changed = True
                perms[i] = new
                aligned[i] = apply_permutation(spec, new, models[i])
        if not changed:
            break
    return aligned
