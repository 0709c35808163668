"""Softmax cross-entropy, computed through log-sum-exp so no logit can overflow exp."""

from __future__ import annotations

import numpy as np

from gossipnet.errors import UserError


def check_labels(y: np.ndarray, n: int, classes: int) -> np.ndarray:
    """Labels as an int64 vector of ``n`` entries in [0, classes), or a UserError."""
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise UserError(f"labels must be {n} integers, got dtype {y.dtype} shape {y.shape}")
    if n and (y.min() < 0 or y.max() >= classes):
        raise UserError(f"labels must lie in [0, {classes}); found {y.min()}..{y.max()}: "
                        "does the data set have more classes than the net's softmax layer?")
    return y.astype(np.int64, copy=False)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p = z - max(z) - log(sum(exp(z - max(z)))): every exp argument is <= 0.

    Computed in float64 (the logits are only N x classes): float32 differences of huge
    logits would overflow to -inf.
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits`` (N, K) against labels ``y``, and d loss / d logits."""
    n, k = logits.shape
    y = check_labels(y, n, k)
    logp = log_softmax(logits)
    rows = np.arange(n)
    loss = float(-logp[rows, y].mean())
    grad = np.exp(logp)
    grad[rows, y] -= 1
    grad /= n
    return loss, grad.astype(logits.dtype, copy=False)
