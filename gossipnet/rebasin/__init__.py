"""Merging nets that did not share a start: align their hidden units, then average.

Two nets trained from different random initialisations compute much the same
functions with their hidden units in a different order; averaging them unit by unit
mixes unrelated units and gives chance accuracy. Weight matching (Ainsworth, Hayase,
Srinivasa, "Git Re-Basin", ICLR 2023) finds the permutation of each hidden layer that
best lines one net up with another; REPAIR (Jordan et al., "REPAIR: REnormalizing
Permuted Activations for Interpolation Repair", ICLR 2023) then restores the per-unit
activation statistics that averaging shrinks. Pure numpy and scipy: no asyncio, no
sockets, so the daemon, the CLI and the benchmarks all call the same functions.
"""

from gossipnet.rebasin.activations import activation_matching, match_many_activations
from gossipnet.rebasin.matching import align, match_many, merge_aligned, weight_matching
from gossipnet.rebasin.permutations import PermutationSpec, apply_permutation, permutation_spec
from gossipnet.rebasin.repair import repair, unit_statistics

__all__ = [
    "PermutationSpec", "activation_matching", "align", "match_many_activations", "apply_permutation", "match_many", "merge_aligned",
    "permutation_spec", "repair", "unit_statistics", "weight_matching",
]
