"""The held-out check of a volunteer's update: does it point downhill on images never leased?

The node keeps the end of its shard out of every lease. At a version's weights it takes
the held-out loss gradient once (in chunks, for a standard error); an update's check is
then the product of that gradient with the update: the held-out loss's first-order change
along it. Sans-IO, numpy only.
"""

from __future__ import annotations

import numpy as np

from gossipnet.nn import Net


def flat(tensors: dict[str, np.ndarray]) -> np.ndarray:
    """One vector of every parameter, in name order (gradients and deltas alike)."""
    return np.concatenate([tensors[k].ravel() for k in sorted(tensors)])


def slope_test(grads: np.ndarray, delta: np.ndarray) -> tuple[float, float]:
    """The held-out loss's first-order change along ``delta``: (mean over chunks, its
    standard error). ``grads`` holds one held-out chunk's loss gradient per row.

    ``g . d`` is half of ``L(w + d) - L(w - d)`` to second order (the curvature terms
    cancel), so it asks whether the update points downhill without being fooled by an
    honest update that overshoots: a fixed margin on ``L(w + d) - L(w)`` refused those.
    """
    slopes = grads @ delta
    return float(slopes.mean()), float(slopes.std(ddof=1) / np.sqrt(len(slopes)))


class HeldOut:
    """The held-out images and an evaluation-mode copy of the net (dropout off) to take
    their loss gradients with."""

    def __init__(self, spec, input_shape, x: np.ndarray, y: np.ndarray, chunks: int) -> None:
        self.x, self.y, self.chunks = x, y, chunks
        self.net = Net(spec, input_shape)
        for layer in self.net.layers:
            if layer.kind == "dropout":
                layer.rate = 0.0

    def gradients(self, weights: dict[str, np.ndarray]) -> np.ndarray:
        """The held-out loss gradient at ``weights``, one row per chunk (one backward pass
        over the held-out images in all, once per version)."""
        self.net.load_state_dict(weights)
        rows = []
        for idx in np.array_split(np.arange(len(self.y)), self.chunks):
            self.net.loss_and_grads(self.x[idx], self.y[idx])
            rows.append(flat(self.net.grads()))
        return np.stack(rows)
