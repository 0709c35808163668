"""Activation matching: line hidden units up by how they respond to the same images.

Weight matching compares weights only, so it is fooled by what training has not yet
changed: early in training most of a unit's weights are still its random
initialisation, and two nets' initialisations are unrelated. Matching units by the
correlation of their post-ReLU activations over a few hundred images (Git Re-Basin's
"activation matching"; Jordan et al. 2023 use it before REPAIR) sees only what the
units compute. Measured on two MLPs trained for 190 steps (gossipnet merge on the
embedded set): weight matching + REPAIR kept 74.2% of the parents' 83.7%, activation
matching + REPAIR 81.0%. On well trained parents (2,800 steps on Fashion-MNIST) weight
matching was a point better instead (86.6% against 85.7%, parents 87.4%; one pair,
docs/RECOMBINATION.md). A node has its own images, so the daemon can use either.

Every layer is matched at once: a unit's activations do not depend on how the layers
before it are ordered. For more than two nets, each is matched in turn to the mean of
the others' aligned, standardised activations until no assignment changes (MergeMany's
scheme with activations in place of weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from gossipnet.nn import Net
from gossipnet.nn import layers as L
from gossipnet.rebasin.permutations import Params, PermutationSpec, Perms, apply_permutation

BATCH = 250


def standardised_activations(net: Net, params: Params, x: np.ndarray,
                             spec: PermutationSpec) -> dict[str, np.ndarray]:
    """Permutation name -> (samples, units) activations after the unit's ReLU, each unit
    standardised to mean 0 and variance 1 (conv maps: every pixel is a sample)."""
    net.load_state_dict(params)
    owner = {layer: p for p, layer in spec.units.items()}
    chunks: dict[str, list[np.ndarray]] = {p: [] for p in spec.units}
    for i in range(0, len(x), BATCH):
        a = x[i : i + BATCH].astype(net.dtype, copy=False).transpose(0, 2, 3, 1)
        pending = None  # the permuted layer whose ReLU has not come yet
        for layer in net.layers:
            a = layer.forward(a, False)
            if layer.name in owner:
                pending = owner[layer.name]
            elif isinstance(layer, L.ReLU) and pending is not None:
                chunks[pending].append(a.reshape(-1, a.shape[-1]).astype(np.float64))
                pending = None
    out = {}
    for p, parts in chunks.items():
        if not parts:
            raise ValueError(f"units of {spec.units[p]} are not followed by a ReLU; use weight matching")
        z = np.concatenate(parts)
        out[p] = (z - z.mean(axis=0)) / (z.std(axis=0) + 1e-6)
    return out


def _assign(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    _, cols = linear_sum_assignment(ref.T @ other, maximize=True)
    return cols


def activation_matching(net: Net, spec: PermutationSpec, ref: Params, other: Params,
                        x: np.ndarray) -> Perms:
    """Permutations that put ``other``'s units in ``ref``'s order, by activation correlation."""
    za = standardised_activations(net, ref, x, spec)
    zb = standardised_activations(net, other, x, spec)
    return {p: _assign(za[p], zb[p]) for p in spec.sizes}


def match_many_activations(net: Net, spec: PermutationSpec, models: Sequence[Params],
                           x: np.ndarray, max_rounds: int = 20, seed: int = 0) -> list[Params]:
    """Every model with its units in one common order, found from activations on ``x``."""
    acts = [standardised_activations(net, m, x, spec) for m in models]
    perms = [spec.identity()] + [{p: _assign(acts[0][p], z[p]) for p in spec.sizes} for z in acts[1:]]
    rng = np.random.default_rng(seed)
    for _ in range(max_rounds if len(models) > 2 else 0):
        changed = False
        for i in rng.permutation(len(models)):
            for p in spec.sizes:
                rest = sum(acts[j][p][:, perms[j][p]] for j in range(len(models)) if j != i)
                cols = _assign(rest, acts[i][p])
                if not np.array_equal(cols, perms[i][p]):
                    perms[i][p], changed = cols, True
        if not changed:
            break
    return [apply_permutation(spec, p, m) for p, m in zip(perms, models)]
