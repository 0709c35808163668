"""The door an island keeps for a peer's migrants, and how their fitness claims are judged.

Islands only have to share a fitness function to cooperate, so nothing a peer says is
believed: ``check_migrants`` refuses genomes of the wrong layout, too many of them, or
absurd values, before any are scored; ``forged_claims`` compares each claimed fitness
with what the island measured itself. With the claim's own episode seeds a claim replays
exactly (episodes are deterministic given seed and genome), so even a small overclaim is
caught; without them, only a claim far above our own noisy measurement counts as a lie.
Pure functions of their arguments: ``EvolutionLearner`` does the scoring.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from gossipnet.learners.base import Snapshot

# Claims travel rounded to 3 decimals; a replay on the claim's own seeds must match this well.
CLAIM_TOLERANCE = 0.01


class MigrantReject(enum.StrEnum):
    """Why a peer's migrants were refused (counted per reason)."""

    WRONG_KIND = "wrong_kind"
    WRONG_FINGERPRINT = "wrong_fingerprint"
    MALFORMED = "malformed"
    WRONG_GENOME_LENGTH = "wrong_genome_length"
    EMPTY = "empty"
    TOO_MANY_MIGRANTS = "too_many_migrants"
    NON_FINITE = "non_finite"
    ABSURD_MAGNITUDE = "absurd_magnitude"


@dataclass(frozen=True)
class Door:
    """What this island lets in: its kind and fingerprint, genome length, and bounds."""

    kind: str
    fingerprint: str
    genome_length: int
    max_migrants: int
    max_abs_gene: float


def check_migrants(snapshot: Snapshot, door: Door) -> tuple[MigrantReject, str] | None:
    """None if the snapshot holds migrants this island can score, else the reason and a detail."""
    if snapshot.kind != door.kind:
        return MigrantReject.WRONG_KIND, f"kind {snapshot.kind!r} is not {door.kind!r}"
    if snapshot.fingerprint != door.fingerprint:
        return MigrantReject.WRONG_FINGERPRINT, f"{snapshot.fingerprint!r} != {door.fingerprint!r}"
    tensors = snapshot.tensors
    if not isinstance(tensors, dict) or set(tensors) != {"genomes"}:
        return MigrantReject.MALFORMED, "expected exactly one tensor named 'genomes'"
    g = tensors["genomes"]
    if not isinstance(g, np.ndarray) or g.ndim != 2 or g.dtype != np.float32:
        return MigrantReject.MALFORMED, "genomes must be a 2-D float32 array"
    if g.shape[1] != door.genome_length:
        return MigrantReject.WRONG_GENOME_LENGTH, f"genome length {g.shape[1]}, expected {door.genome_length}"
    if g.shape[0] == 0:
        return MigrantReject.EMPTY, "no genomes"
    if g.shape[0] > door.max_migrants:
        return MigrantReject.TOO_MANY_MIGRANTS, f"{g.shape[0]} genomes, at most {door.max_migrants} accepted"
    if not np.all(np.isfinite(g)):
        return MigrantReject.NON_FINITE, "genomes contain NaN or Inf"
    biggest = float(np.abs(g).max())
    if biggest > door.max_abs_gene:
        return MigrantReject.ABSURD_MAGNITUDE, f"|gene| up to {biggest:.3g} > {door.max_abs_gene:g}"
    return None


def claim_seeds(meta: object, episodes: int) -> np.ndarray | None:
    """The episode seeds a peer's claims were measured on, if it sent exactly a usable set."""
    if not isinstance(meta, dict):
        return None
    seeds = [meta.get(f"seed_{j}") for j in range(episodes)]
    if f"seed_{episodes}" in meta or not all(type(v) is int and 0 <= v < 2**31 for v in seeds):
        return None
    return np.array(seeds, dtype=np.int64)


def claim(meta: object, i: int) -> float | None:
    """Migrant ``i``'s claimed fitness, if the peer sent a usable number."""
    value = meta.get(f"fitness_{i}") if isinstance(meta, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def forged_claims(meta: object, measured: np.ndarray, replayed: np.ndarray | None,
                  margin: float) -> list[tuple[int, float, float]]:
    """(migrant, claim, what we found) for every claim that is a lie.

    ``replayed``: scores on the claim's own seeds (exact; only overclaims count, since
    understating is odd but harmless); else ``measured`` on our seeds, where only a claim
    more than ``margin`` above it counts, because single episodes are noisy.
    """
    lies = []
    for i, score in enumerate(measured):
        claimed = claim(meta, i)
        if claimed is None:
            continue
        if replayed is not None:
            check, lie = float(replayed[i]), claimed - float(replayed[i]) > CLAIM_TOLERANCE
        else:
            check, lie = float(score), claimed - float(score) > margin
        if lie:
            lies.append((i, claimed, check))
    return lies
