"""Merge rules for model weights: plain numpy on dicts of named arrays.

- ``age_weighted``: gossip learning's merge (Ormandi, Hegedus, Jelasity,
  "Gossip learning with linear models on fully distributed data", 2013;
  Hegedus, Danner, Jelasity, "Gossip learning as a decentralized alternative to
  federated learning", 2019): average weighted by how much each model has
  trained, keep the larger age.
- ``clipped``: ClippedGossip (He, Karimireddy, Jaggi, "Byzantine-robust
  decentralized learning via ClippedGossip", 2022): move towards the peer by
  at most ``tau`` in L2 norm over all parameters, so one poisoned peer cannot
  drag a node further than ``tau`` per merge.

Only models with identical names, shapes and floating dtypes merge; anything
else raises ``MergeMismatch`` (a peer-data rejection the learner counts).

Arithmetic stays in the arrays' own dtype (float32 for our nets): a merge is a few passes
over the weights, and converting each array to float64 first made absorbing a peer cost
several times more than the arithmetic (issue 17, docs/RESULTS.md "Gossip's cost"). The
sums behind norms and distances use BLAS dots, whose float32 rounding (~1e-6 relative)
is far below every threshold they are compared with; a sum that overflows float32 is
redone in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Weights = Mapping[str, np.ndarray]


class MergeMismatch(ValueError):
    """The peer's arrays do not match ours; ``reason`` is a short counter label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_compatible(own: Weights, peer: Weights) -> None:
    if set(own) != set(peer):
        missing, extra = sorted(set(own) - set(peer)), sorted(set(peer) - set(own))
        raise MergeMismatch("names", f"missing {missing[:5]}, unexpected {extra[:5]}")
    for name, a in own.items():
        b = peer[name]
        if not isinstance(b, np.ndarray):
            raise MergeMismatch("type", f"{name} is {type(b).__name__}, not an ndarray")
        if a.shape != b.shape:
            raise MergeMismatch("shape", f"{name} is {b.shape}, ours {a.shape}")
        if a.dtype != b.dtype or not np.issubdtype(a.dtype, np.floating):
            raise MergeMismatch("dtype", f"{name} is {b.dtype}, ours {a.dtype}")
        if not np.all(np.isfinite(b)):
            raise MergeMismatch("not_finite", f"{name} has NaN or inf")


def _check_age(age: float, what: str) -> float:
    if not math.isfinite(age) or age < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {age!r}")
    return float(age)


def age_share(own_age: float, peer_age: float) -> float:
    """The peer's weight in an age-weighted merge: a_peer / (a_own + a_peer), 1/2 if both are 0."""
    a, b = _check_age(own_age, "own_age"), _check_age(peer_age, "peer_age")
    return 0.5 if a + b == 0 else b / (a + b)


def age_weighted(own: Weights, own_age: float, peer: Weights,
                 peer_age: float) -> tuple[dict[str, np.ndarray], float]:
    """(a_own * w_own + a_peer * w_peer) / (a_own + a_peer), and max(a_own, a_peer).

    Two untrained models (both ages 0) average evenly.
    """
    check_compatible(own, peer)
    share = age_share(own_age, peer_age)
    return towards(own, differences(own, peer), share), max(float(own_age), float(peer_age))


def differences(own: Weights, peer: Weights) -> dict[str, np.ndarray]:
    """peer - own, array by array: new arrays, which ``towards`` may consume."""
    return {name: np.subtract(peer[name], w) for name, w in own.items()}


def towards(own: Weights, difference: dict[str, np.ndarray], fraction: float) -> dict[str, np.ndarray]:
    """own + fraction * difference: the step of every merge rule. Computed in place in
    ``difference``'s arrays (no temporaries), which are returned: the caller hands them over."""
    for name, d in difference.items():
        d *= fraction
        d += own[name]
    return difference


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum(a * b) over all elements, in the arrays' dtype (float64 if float32 overflows)."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is redone just below
        s = float(np.dot(a.reshape(-1), b.reshape(-1)))
    if not math.isfinite(s):
        s = float(np.dot(a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)))
    return s


def norm(w: Weights) -> float:
    """L2 norm over all arrays together."""
    return math.sqrt(sum(dot(a, a) for a in w.values()))


def difference_norm(own: Weights, peer: Weights) -> float:
    """L2 norm of peer - own over all parameters together."""
    return norm(differences(own, peer))


@dataclass(frozen=True)
class Geometry:
    """Where a peer's weights lie from ours: what the guarded merge decides on."""

    own_norm: float
    peer_norm: float
    dot: float  # <own, peer>
    distance: float  # ||peer - own||
    difference: dict[str, np.ndarray]  # peer - own (for ``towards``)


def geometry(own: Weights, peer: Weights) -> Geometry:
    """Both norms and their dot product in one loop over the arrays, then the difference
    (kept: the merge steps along it) and its norm, all in the arrays' float32."""
    own_sq = peer_sq = cross = 0.0
    for name, w in own.items():
        own_sq += dot(w, w)
        peer_sq += dot(peer[name], peer[name])
        cross += dot(w, peer[name])
    difference = differences(own, peer)
    return Geometry(math.sqrt(own_sq), math.sqrt(peer_sq), cross, norm(difference), difference)


def clipped(own: Weights, peer: Weights, tau: float, weight: float = 0.5) -> dict[str, np.ndarray]:
    """w_own + weight * clip(w_peer - w_own, tau): a step of at most ``weight * tau``.

    The clip scales the whole difference vector (all arrays together) so its L2
    norm is at most ``tau``, preserving its direction.
    """
    check_compatible(own, peer)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite radius, got {tau!r}")
    if not (math.isfinite(weight) and 0 < weight <= 1):
        raise ValueError(f"weight must be in (0, 1], got {weight!r}")
    difference = differences(own, peer)
    distance = norm(difference)
    return towards(own, difference, weight * (1.0 if distance <= tau else tau / distance))
