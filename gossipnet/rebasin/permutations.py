"""Which axes of which parameters one hidden-unit permutation moves, derived from a Net.

A permutation of a layer's output units (a Dense layer's units, a Conv2D layer's
channels) must move that layer's weight rows and bias, and the matching *input*
columns of the next layer with parameters. Pooling, ReLU and dropout act unit by unit,
so they pass a permutation through unchanged. A Dense layer after a Flatten of a conv
map sees features in NCHW order (``c * H * W + y * W + x``, see ``nn.layers.Flatten``):
its weight is viewed as ``(out, C, H*W)`` so a channel permutation moves whole blocks
of H*W columns. The logits layer's outputs are classes and are never permuted.

Git Re-Basin's ``weight_matching.py`` writes these specs by hand per architecture;
here they come from the net itself, so every spec gossipnet can build is covered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossipnet.nn import Net
from gossipnet.nn import layers as L

Params = dict[str, np.ndarray]
Perms = dict[str, np.ndarray]


@dataclass(frozen=True)
class PermutationSpec:
    """For every parameter: the view it is permuted in, and the permutation per view axis.

    ``sizes``: permutation name -> number of units. ``views``: parameter -> shape it is
    reshaped to while permuting. ``axes``: parameter -> one permutation name (or None)
    per view axis. ``units``: permutation name -> the layer whose outputs it orders, in
    forward order (REPAIR corrects those layers' output statistics).
    """

    sizes: dict[str, int]
    views: dict[str, tuple[int, ...]]
    axes: dict[str, tuple[str | None, ...]]
    units: dict[str, str]

    def uses(self, perm: str) -> list[tuple[str, int]]:
        """The (parameter, view axis) pairs that ``perm`` moves."""
        return [(name, ax) for name, per_axis in self.axes.items()
                for ax, p in enumerate(per_axis) if p == perm]

    def identity(self) -> Perms:
        return {p: np.arange(n) for p, n in self.sizes.items()}


def permutation_spec(net: Net) -> PermutationSpec:
    """The permutation spec of ``net``'s architecture (its weights are not read)."""
    sizes: dict[str, int] = {}
    views: dict[str, tuple[int, ...]] = {}
    axes: dict[str, tuple[str | None, ...]] = {}
    units: dict[str, str] = {}
    incoming: str | None = None  # the permutation ordering the current feature axis
    block = 1  # input columns per unit of ``incoming`` (H*W after flattening a conv map)
    shape: tuple[int, ...] = (net.input_shape[1], net.input_shape[2], net.input_shape[0])
    param_layers = [layer for layer in net.layers if layer.params]
    last = param_layers[-1]
    for layer, out_shape in zip(net.layers, net.shapes):
        if isinstance(layer, L.Flatten) and len(shape) == 3:
            block = shape[0] * shape[1]
        elif isinstance(layer, (L.Conv2D, L.Dense)):
            w, b = f"{layer.name}.weight", f"{layer.name}.bias"
            out = None if layer is last else f"P_{layer.name}"
            if out is not None:
                n = layer.params["bias"].shape[0]
                sizes[out], units[out] = n, layer.name
            wshape = layer.params["weight"].shape
            if isinstance(layer, L.Conv2D):
                views[w], axes[w] = wshape, (out, incoming, None, None)
            else:
                cols = wshape[1] // block
                views[w], axes[w] = (wshape[0], cols, block), (out, incoming, None)
            views[b], axes[b] = layer.params["bias"].shape, (out,)
            incoming, block = out, 1
        elif not isinstance(layer, (L.ReLU, L.MaxPool2D, L.Dropout, L.Flatten)):
            raise TypeError(f"no permutation rule for layer {layer.name} ({type(layer).__name__})")
        shape = out_shape
    return PermutationSpec(sizes, views, axes, units)


def permuted(spec: PermutationSpec, perms: Perms, params: Params, name: str,
             skip_axis: int | None = None) -> np.ndarray:
    """``params[name]`` with every permutation applied, except on view axis ``skip_axis``."""
    w = params[name]
    v = w.reshape(spec.views[name])
    for ax, p in enumerate(spec.axes[name]):
        if p is not None and ax != skip_axis:
            v = np.take(v, perms[p], axis=ax)
    return v.reshape(w.shape)


def apply_permutation(spec: PermutationSpec, perms: Perms, params: Params) -> Params:
    """A new parameter dict: ``params`` with its hidden units reordered by ``perms``.

    The result computes exactly the same function (up to float rounding).
    """
    return {name: permuted(spec, perms, params, name) if name in spec.axes else params[name].copy()
            for name in params}


def random_permutations(spec: PermutationSpec, rng: np.random.Generator) -> Perms:
    return {p: rng.permutation(n) for p, n in spec.sizes.items()}
