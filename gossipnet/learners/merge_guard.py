"""What a convnet node believes of a peer's snapshot before it merges it (the default merge).

A member holds valid credentials and may lie (DESIGN.md section 8). Under the plain
age-weighted average one snapshot can replace a node's weights outright (an age of 1e15
takes a share of 1 - 1e-15), so the default merge, ``guarded``, checks every claim:

- **Age** is a claim, not a fact: a peer's age counts at most our own age plus
  ``age_slack`` times the images we trained since we last merged that peer (at least
  ``min_age_slack`` images). An honest peer of similar speed cannot be further ahead than
  that, since merging keeps ages close; a faster honest peer is under-weighted, the safe
  direction. The merged age is the larger of ours and the *bounded* claim, so an inflated
  age neither takes the share nor spreads.
- **Share**: no single merge moves us more than ``max_share`` of the way to a peer.
- **Weights**: the peer's L2 norm must lie within ``max_norm_ratio`` of ours (x100 fails)
  and its weights must point our way (cosine >= ``min_cosine``; a sign flip has -1). Honest
  peers measured on 4 label-skewed Fashion-MNIST shards stayed within x3 and above 0.58.
- **Outliers prove themselves**: a peer further from us than ``outlier_mult`` times the
  lower median over peers of each peer's last accepted distance (one vote per peer, so one
  liar cannot raise it: with two peers the lower median is the smaller distance; and every
  peer until 2 have been measured) is merged only if the
  merged model's loss on a small held-out sample of our own shard is no worse than ours by
  more than ``loss_tolerance`` (absolute) plus ``loss_tolerance_rel`` (relative), or stays
  below chance (ln of the number of classes: label-split honest peers need that). Honest
  merges inside the radius cost two norms and a dot product.

Pure numpy and a loss callback: no I/O, so it is tested with plain calls.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from gossipnet import merge

Weights = Mapping[str, np.ndarray]
MAX_PEERS = 1024  # per-peer bookkeeping is an LRU: only admitted keys can grow it


@dataclass(frozen=True)
class GuardConfig:
    """Bounds on what one peer's snapshot can do to us; measured in docs/SECURITY.md."""

    max_share: float = 0.5
    age_slack: float = 2.0  # a peer may have trained this many times our own images since our last merge
    min_age_slack: float = 256.0  # images: a fresh node or a first merge still gets some credit
    max_norm_ratio: float = 10.0
    min_cosine: float = 0.25
    outlier_mult: float = 3.0
    # The lower median of 2 is their minimum: a liar can only lower it. 3 made every merge of
    # a 3-node swarm (2 peers each) pay a held-out forward pass (docs/RESULTS.md, issue 17).
    min_peers_for_median: int = 2
    loss_tolerance: float = 0.1  # nats on the held-out sample ...
    loss_tolerance_rel: float = 0.5  # ... plus this fraction of our own loss

    def __post_init__(self) -> None:
        for name in ("max_share", "age_slack", "min_age_slack", "max_norm_ratio", "outlier_mult",
                     "loss_tolerance", "loss_tolerance_rel"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.max_share <= 1:
            raise ValueError(f"max_share must be in (0, 1], got {self.max_share!r}")
        if self.max_norm_ratio < 1 or not -1 <= self.min_cosine <= 1:
            raise ValueError("max_norm_ratio must be >= 1 and min_cosine in [-1, 1]")


@dataclass(frozen=True)
class Verdict:
    """What to do with one snapshot: merge ``weights`` (the new own weights) at ``share`` and ``age``."""

    accepted: bool
    reason: str  # "ok", "checked" (an outlier that passed the held-out loss check) or a rejection
    detail: str
    weights: dict[str, np.ndarray] | None = None
    share: float = 0.0
    age: float = 0.0
    distance: float = 0.0


class MergeGuard:
    """Per-node memory of peers (ages vouched for, distances seen) and the merge decision."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        # peer -> (our trained images at the last accepted merge, the peer's last distance)
        self._peers: OrderedDict[str, tuple[float, float]] = OrderedDict()

    # ------------------------------------------------------------ age

    def plausible_age(self, peer: str, claimed: float, own_age: float, own_images: float) -> float:
        """The claimed age, bounded by what the peer can have learned that we did not."""
        since = own_images - self._peers[peer][0] if peer in self._peers else own_images
        slack = max(self.config.min_age_slack, self.config.age_slack * max(0.0, since))
        return min(float(claimed), own_age + slack)

    def share(self, own_age: float, peer_age: float) -> float:
        return min(self.config.max_share, merge.age_share(own_age, peer_age))

    # ------------------------------------------------------------ distance

    def radius(self) -> float:
        """Beyond this distance a snapshot is an outlier: outlier_mult x the peers' median."""
        last = sorted(d for _, d in self._peers.values() if d is not None and d > 0)
        if len(last) < self.config.min_peers_for_median:
            return 0.0
        return self.config.outlier_mult * last[(len(last) - 1) // 2]  # the lower median

    # ------------------------------------------------------------ decision

    def judge(self, own: Weights, own_age: float, own_images: float, peer: Weights,
              peer_age: float, peer_id: str,
              held_out_loss: Callable[[Weights], float] | None = None,
              chance_loss: float = 0.0, foreign: bool = False) -> Verdict:
        """Decide on one snapshot; ``held_out_loss(weights)`` scores a candidate on our sample.

        ``chance_loss`` (ln of the number of classes): a merge whose loss stays below it is
        never refused. On label-split shards an honest merge raises the loss on our own
        classes far beyond the tolerance at first (it trades them for the peer's), while a
        poisoned model lands far above chance.

        ``foreign``: the peer grew from another init and was realigned to our unit order
        (gossipnet/rebasin). Even matched, two independent starts point in unrelated
        directions (cosine ~0.03 measured on two MLPs), so the direction test says nothing;
        such a peer always proves itself on the held-out sample instead, and its distance
        stays out of the median of same-start peers.

        Raises ``merge.MergeMismatch`` for arrays that do not fit (the caller counts it).
        """
        merge.check_compatible(own, peer)
        if not (isinstance(peer_age, (int, float)) and math.isfinite(peer_age) and peer_age >= 0):
            return Verdict(False, "bad_age", f"age {peer_age!r} is not a finite count >= 0")
        bounded = self.plausible_age(peer_id, peer_age, own_age, own_images)
        share = self.share(own_age, bounded)
        new_age = max(own_age, bounded)
        where = merge.geometry(own, peer)  # in float32: norms, dot, distance
        own_norm, peer_norm = where.own_norm, where.peer_norm
        ratio = self.config.max_norm_ratio
        if own_norm > 0 and not own_norm / ratio <= peer_norm <= own_norm * ratio:
            return Verdict(False, "bad_norm", f"weight norm {peer_norm:.4g} against ours "
                           f"{own_norm:.4g}: outside x{ratio:g}")
        if own_norm > 0 and peer_norm > 0 and not foreign:
            cosine = where.dot / (own_norm * peer_norm)
            if cosine < self.config.min_cosine:
                return Verdict(False, "bad_direction", f"weights at cosine {cosine:.3f} to ours "
                               f"(below {self.config.min_cosine:g})")
        distance = where.distance
        candidate = merge.towards(own, where.difference, share)
        tau = self.radius()
        detail = f"distance {distance:.3g}, radius {tau:.3g}, share {share:.3g}"
        if (distance > tau or foreign) and share > 0 and held_out_loss is not None:
            after = held_out_loss(candidate)
            if after <= chance_loss:  # accepted whatever our own loss: don't score ourselves
                detail += f", held-out loss -> {after:.4f} (below chance {chance_loss:.4f})"
            else:  # a forward pass over the sample each: the guard's main cost (issue 17)
                before = held_out_loss(own)
                limit = before + self.config.loss_tolerance + self.config.loss_tolerance_rel * before
                if not after <= limit:  # also refuses NaN
                    return Verdict(False, "worse_loss", f"{detail}: held-out loss {before:.4f} -> "
                                   f"{after:.4f}", distance=distance)
                detail += f", held-out loss {before:.4f} -> {after:.4f}"
            reason = "checked"
        else:
            reason = "ok"
        self._remember(peer_id, own_images, None if foreign else distance)
        return Verdict(True, reason, detail, candidate, share, new_age, distance)

    def _remember(self, peer_id: str, own_images: float, distance: float | None) -> None:
        self._peers[peer_id] = (own_images, distance)
        self._peers.move_to_end(peer_id)
        while len(self._peers) > MAX_PEERS:
            self._peers.popitem(last=False)

    def forget(self, peer_id: str) -> None:
        self._peers.pop(peer_id, None)

