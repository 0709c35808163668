"""Settings of a node's volunteer desk, with the reason every refusal is counted under."""

from __future__ import annotations

from dataclasses import dataclass

from gossipnet.errors import UserError

# Every refusal's reason and the HTTP status the server answers with (docs/VOLUNTEERS.md).
REASONS: dict[str, int] = {
    "disabled": 404,        # this node takes no volunteers
    "malformed": 400,       # not a safetensors update with the four metadata fields
    "too_large": 413,       # body bigger than the net's delta can be
    "banned": 403,          # this address failed a spot check recently
    "rate_limited": 429,    # too many leases from this address per minute
    "busy": 429,            # too many open leases (here or in total), or volunteers' share is full
    "forged_lease": 403,    # token not minted by this node
    "unknown_lease": 404,   # token well-formed but never issued
    "replayed": 409,        # lease already used
    "expired": 410,         # lease past its deadline
    "wrong_client": 403,    # lease issued to another address
    "stale_base": 409,      # base version is not the lease's, or no longer held
    "wrong_shape": 422,     # tensor names or shapes are not the net's
    "wrong_dtype": 422,     # not float32
    "not_finite": 422,      # NaN or infinity
    "zero_delta": 422,      # nothing trained
    "norm_too_small": 422,  # far less movement than the node's own recomputations show
    "norm_too_large": 422,  # far more movement than the node's own recomputations show
    "worse_loss": 422,      # the held-out loss rises along the update (uphill)
    "spot_check_mismatch": 422,  # the node recomputed the lease and got another update
    "over_share": 429,      # volunteers already contributed their share of the model
}


@dataclass(frozen=True)
class VolunteerConfig:
    """How a node leases work to browsers and what it accepts back."""

    enabled: bool = True
    steps: int = 8  # optimizer steps per lease
    batch_size: int | None = None  # None: the preset's
    lease_seconds: float = 120.0  # a phone on the demo net trains 8 x 32 images in ~10 s
    spot_check_rate: float = 0.1  # fraction of leases the node recomputes itself
    reference_leases: int = 3  # first leases always recomputed: their norms are the reference
    tolerance: float = 0.01  # ||delta - recomputed|| / ||recomputed|| above this is a mismatch
    leases_per_minute: float = 30.0  # per address (IPv6: per /64), token bucket
    burst: int = 6
    max_open_per_client: int = 2
    max_open: int = 64
    ban_seconds: float = 3600.0
    holdout_images: int = 256  # the end of the node's shard: never leased, scores updates
    # The held-out check: refuse when the held-out loss's slope along the update (its
    # gradient . delta, per chunk of the held-out images) is above this many standard
    # errors. 0: refuse whatever the best estimate says points uphill. Measured on the
    # tiny net (docs/VOLUNTEERS.md): honest updates are downhill by ~4 standard errors
    # (one in 200 came out uphill), sign-flipped ones are the mirror image; a fixed
    # 0.1-nat margin on the loss itself refused honest updates that overshot.
    uphill_margin_se: float = 0.0
    holdout_chunks: int = 8  # the held-out images in this many chunks: the slope's standard error
    clip_factor: float = 1.5  # deltas longer than this x the reference norm are scaled down
    refuse_factor: float = 3.0  # ... and longer than this x are refused
    # ... and shorter than this x are refused. Loose: honest norms fell 20x within the first
    # hundred steps of the tiny net while the references lagged, and a short delta does no
    # harm (the spot checks catch lazy clients).
    min_factor: float = 0.01
    # Volunteers' images merged may reach max_share of all the images the model learns
    # from (node's own + volunteers'): 0.5 means the volunteers together never outweigh
    # the node's own training.
    max_share: float = 0.5
    version_interval: float = 2.0  # seconds between the weight snapshots leases start from
    # The mean delta per base version is added times merge_weight * (1 + tau) ** -a, tau
    # the base's staleness in leases' worth of the node's own images, a this exponent
    # (FedAsync's polynomial staleness weighting; docs/VOLUNTEERS.md has the runs).
    merge_weight: float = 1.0
    staleness_exponent: float = 0.5

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> UserError:
            return UserError(f"volunteer setting {name}={getattr(self, name)!r}: must be {rule}")

        if not 0 <= self.spot_check_rate <= 1:
            raise bad("spot_check_rate", "between 0 and 1")
        if not 0 < self.merge_weight <= 1:
            raise bad("merge_weight", "in (0, 1]")
        if not 0 <= self.staleness_exponent <= 4:
            raise bad("staleness_exponent", "between 0 and 4")
        if not 0 < self.max_share < 1:
            raise bad("max_share", "strictly between 0 and 1")
        for name in ("steps", "burst", "max_open_per_client", "max_open", "holdout_images", "holdout_chunks"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        for name in ("lease_seconds", "leases_per_minute", "ban_seconds", "tolerance", "version_interval"):
            if not getattr(self, name) > 0:
                raise bad(name, "> 0")
        if self.holdout_chunks < 2 or self.holdout_chunks > self.holdout_images:
            raise bad("holdout_chunks", "between 2 and holdout_images")
        if not 0 < self.min_factor < 1 <= self.clip_factor <= self.refuse_factor:
            raise bad("clip_factor", "with 0 < min_factor < 1 <= clip_factor <= refuse_factor")
