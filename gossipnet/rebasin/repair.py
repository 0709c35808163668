"""REPAIR: give an averaged net's hidden units the activation statistics its parents had.

Averaging two aligned units whose weights are not identical shrinks the variance of
their outputs (the average of two imperfectly correlated signals), layer after layer,
until the last layers see collapsed features (Jordan et al. 2023, "REPAIR", sec. 3).
The fix measures, on a small sample of data, each hidden unit's output mean and
standard deviation in every parent and in the merged net, and rescales the merged
unit to the parents' weighted average. Without normalisation layers the affine
correction folds into the layer itself: ``w *= s``, ``b = (b - mu) * s + mu_goal``
with ``s = sd_goal / sd``. Layers are corrected in forward order, each measured after
the ones before it are fixed. The sample needs no labels; a few hundred images do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gossipnet.nn import Net
from gossipnet.rebasin.permutations import Params, PermutationSpec

Stats = dict[str, tuple[np.ndarray, np.ndarray]]  # layer name -> (mean, std) per unit
BATCH = 250


def _stats_at(net: Net, x: np.ndarray, wanted: set[str]) -> Stats:
    """Per-unit output mean and std of the layers named in ``wanted`` (eval mode)."""
    sums: dict[str, list] = {}
    stop = max(_order(net)(name) for name in wanted)  # no need to run the layers after it
    for i in range(0, len(x), BATCH):
        a = x[i : i + BATCH].astype(net.dtype, copy=False).transpose(0, 2, 3, 1)
        for layer in net.layers[: stop + 1]:
            a = layer.forward(a, False)
            if layer.name in wanted:
                flat = a.reshape(-1, a.shape[-1]).astype(np.float64)
                s = sums.setdefault(layer.name, [0, 0.0, 0.0])
                s[0] += len(flat)
                s[1] = s[1] + flat.sum(axis=0)
                s[2] = s[2] + np.square(flat).sum(axis=0)
    out = {}
    for name, (n, s1, s2) in sums.items():
        mean = s1 / n
        out[name] = (mean, np.sqrt(np.maximum(s2 / n - mean * mean, 0.0)))
    return out


def _order(net: Net):
    index = {layer.name: i for i, layer in enumerate(net.layers)}
    return lambda name: index[name]


def unit_statistics(net: Net, params: Params, x: np.ndarray, spec: PermutationSpec) -> Stats:
    """Each permuted layer's per-unit output mean and std for ``params`` on images ``x``."""
    net.load_state_dict(params)
    return _stats_at(net, x, set(spec.units.values()))


def repair(net: Net, merged: Params, parents: Sequence[Params], x: np.ndarray,
           spec: PermutationSpec, shares: Sequence[float] | None = None,
           parent_stats: Sequence[Stats] | None = None, eps: float = 1e-6) -> Params:
    """``merged`` with every hidden unit rescaled to its parents' mean statistics.

    ``parents`` must already be aligned to ``merged``'s unit order; ``shares`` are
    their weights in the merge (equal by default). ``parent_stats`` (from
    ``unit_statistics``) may be passed to save recomputing them along a path.
    ``net`` is any Net of this architecture; its parameters are overwritten.
    """
    if len(x) == 0:
        raise ValueError("REPAIR needs at least one image to measure statistics on")
    k = len(parents)
    w = np.full(k, 1.0 / k) if shares is None else np.asarray(shares, np.float64) / np.sum(shares)
    stats = list(parent_stats) if parent_stats is not None else [
        unit_statistics(net, p, x, spec) for p in parents]
    fixed = {name: arr.copy() for name, arr in merged.items()}
    net.load_state_dict(fixed)
    live = net.params()
    for layer_name in sorted(spec.units.values(), key=_order(net)):
        goal_mean = sum(wi * s[layer_name][0] for wi, s in zip(w, stats))
        goal_std = sum(wi * s[layer_name][1] for wi, s in zip(w, stats))
        mean, std = _stats_at(net, x, {layer_name})[layer_name]
        scale = goal_std / (std + eps)
        wname, bname = f"{layer_name}.weight", f"{layer_name}.bias"
        weight, bias = live[wname], live[bname]
        shape = (-1,) + (1,) * (weight.ndim - 1)
        weight *= scale.reshape(shape).astype(weight.dtype)
        bias[...] = ((bias.astype(np.float64) - mean) * scale + goal_mean).astype(bias.dtype)
    return {name: arr.copy() for name, arr in live.items()}
