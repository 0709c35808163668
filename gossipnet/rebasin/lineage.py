"""The daemon's merge across starts: align a peer's model when it grew from another init.

How a node knows: every convnet snapshot carries a *lineage*, the name of the random
initialisation its unit order descends from (``init-<seed>``), in its (signed,
untrusted) metadata. Same lineage: the units already line up, and the merge is the
plain age-weighted average (no cost). Another lineage: the peer's weights (and the
optimiser moments it shares) are first permuted into our unit order, by activation
matching on a few hundred of our own training images, and the merged model is then
optionally REPAIRed.

Lineages converge: after a merge across lineages, the node whose lineage name sorts
later permutes its merged model (and its optimiser state) into the other's order and
takes that lineage. A swarm thus ends up with one lineage (the smallest name any
member brought) and goes back to plain averaging; the matching cost is paid only
around a join. A peer that lies about its lineage gains nothing it could not do by
sending bad weights: the robust merge mode bounds both.

Activation matching is the default because a joining node's model, or a young swarm's,
is often only briefly trained, where weight matching is misled by the unchanged part of
the random init (measured in docs/RECOMBINATION.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from gossipnet.nn import Net
from gossipnet.rebasin.activations import activation_matching
from gossipnet.rebasin.matching import weight_matching
from gossipnet.rebasin.permutations import Params, PermutationSpec, Perms, permutation_spec, permuted
from gossipnet.rebasin.repair import repair

METHODS = ("off", "activations", "weights")


def lineage_of(init_seed: int) -> str:
    return f"init-{int(init_seed)}"


def invert(perms: Perms) -> Perms:
    return {p: np.argsort(v) for p, v in perms.items()}


def permute_named(spec: PermutationSpec, perms: Perms, arrays: Mapping[str, np.ndarray],
                  param_of) -> dict[str, np.ndarray]:
    """Apply ``perms`` to arrays named after parameters (weights, or optimiser moments
    such as ``moment.v.fc1.weight``): ``param_of(key)`` names the parameter a key shapes like."""
    out = {}
    for key, arr in arrays.items():
        name = param_of(key)
        out[key] = permuted(spec, perms, {name: arr}, name) if name in spec.axes else arr.copy()
    return out


class Realigner:
    """Finds and applies the permutation that puts a peer's model in our unit order."""

    def __init__(self, net: Net, sample: np.ndarray, method: str = "activations",
                 use_repair: bool = False):
        if method not in METHODS[1:]:
            raise ValueError(f"realign method must be one of {METHODS[1:]}, got {method!r}")
        self.net = Net(net.spec, net.input_shape)  # scratch net: forward passes only
        self.spec = permutation_spec(self.net)
        self.sample = np.ascontiguousarray(sample)
        self.method = method
        self.use_repair = use_repair
        self.matches = 0
        self.last_seconds = 0.0
        self.total_seconds = 0.0

    def find(self, own: Params, peer: Params) -> Perms:
        """Permutations taking ``peer``'s units to ``own``'s order (timed)."""
        t0 = time.perf_counter()
        if self.method == "activations":
            perms = activation_matching(self.net, self.spec, own, peer, self.sample)
        else:
            perms = weight_matching(self.spec, own, peer)
        self.last_seconds = time.perf_counter() - t0
        self.total_seconds += self.last_seconds
        self.matches += 1
        return perms

    def repaired(self, merged: Params, own: Params, aligned_peer: Params, share: float) -> Params:
        """``merged`` with its units rescaled to the parents' statistics on our sample
        (timed into the cost of the match that preceded it)."""
        if not self.use_repair or share <= 0:
            return merged
        t0 = time.perf_counter()
        fixed = repair(self.net, merged, [own, aligned_peer], self.sample, self.spec,
                       shares=[1.0 - share, share])
        spent = time.perf_counter() - t0
        self.last_seconds += spent
        self.total_seconds += spent
        return fixed
