"""A node's volunteer desk: lease work to browsers, validate what they send, merge a share.

Sans-IO: the HTTP layer hands in (client address, body, now) and sends back what the
desk returns; the node's worker thread calls ``offer_version`` and ``take_accepted``
between training chunks and runs ``finish`` (the expensive checks) off the event loop.
One lock guards the desk's state, since those two sides run on different threads.

Validation runs in cost order (docs/VOLUNTEERS.md): ban, lease token (MAC, then
lookup), lease open and unused and this client's, base version, tensor names / dtype /
shapes / finiteness, delta norm against the node's own recomputed deltas (refuse or
clip), then in ``finish``: the held-out slope (does the update point downhill on images
never leased?), the spot check (recompute the lease with the numpy engine; mismatch
refuses and bans), and the volunteers' share of the model.
"""

from __future__ import annotations

import collections
import hashlib
import math
import random
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np
import safetensors.numpy as stn

from gossipnet.errors import UserError
from gossipnet.nn import Net, make_optimizer
from gossipnet.nn.train import train_sequence
from gossipnet.volunteers.config import REASONS, VolunteerConfig
from gossipnet.volunteers.holdout import HeldOut, flat, slope_test
from gossipnet.volunteers.leases import Lease, LeaseBook, ip_key
from gossipnet.volunteers.validate import BadUpdate, norm, relative_mismatch, update_delta, update_meta


IDLE_SECONDS = 60.0  # no lease for this long: stop snapshotting weights until the next one


@dataclass(frozen=True)
class Refusal:
    """A counted refusal: ``reason`` (a REASONS key), its HTTP status and what was wrong."""

    reason: str
    detail: str

    @property
    def status(self) -> int:
        return REASONS[self.reason]


@dataclass(frozen=True)
class TrainingSetup:
    """What a lease needs to describe the node's training: net, optimiser, data."""

    spec: list[dict]
    input_shape: tuple[int, int, int]
    fingerprint: str
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    batch_size: int
    x: np.ndarray  # the node's training shard, float32 NCHW, normalised
    y: np.ndarray
    pixel_mean: tuple[float, ...]
    pixel_std: tuple[float, ...]

    @classmethod
    def of(cls, learner, batch_size: int | None = None) -> TrainingSetup:
        """The setup of a ``ConvnetLearner``: its net, optimiser settings and shard."""
        opt = learner.optimizer
        return cls(spec=list(learner.net.spec), input_shape=tuple(learner.net.input_shape),
                   fingerprint=learner.net.fingerprint, optimizer=opt.kind, lr=float(learner.base_lr),
                   weight_decay=float(opt.weight_decay), momentum=float(getattr(opt, "momentum", 0.9)),
                   batch_size=batch_size or learner.trainer.batch_size, x=learner.x, y=learner.y,
                   pixel_mean=tuple(learner.pixel_mean), pixel_std=tuple(learner.pixel_std))


@dataclass
class _Version:
    weights: dict[str, np.ndarray]
    opt_state: dict[str, np.ndarray]  # the optimiser's moments and step: a lease continues them
    blob: bytes  # safetensors: weights and optimiser state
    sha256: str
    own_images: int  # the node's own images trained when this version was taken: staleness
    # held-out loss gradients at these weights, one row per chunk of the held-out images (in
    # ``flat``'s order): computed once per version an update arrives for, then each
    # update's check is a product of vectors. Not reused across versions: one 20 steps
    # older already said nothing about a fashion update's direction (docs/VOLUNTEERS.md)
    holdout_grads: np.ndarray | None = None


@dataclass
class Pending:
    """An update that passed the cheap checks, awaiting ``finish``."""

    lease: Lease
    delta: dict[str, np.ndarray]  # as sent (spot checks compare this)
    merged: dict[str, np.ndarray]  # as it would be merged (clipped)
    images: int
    base_images: int  # the node's own images at the base version (how stale the update is)


def to_uint8(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Undo ``gossipnet.data.normalize.normalise`` exactly: the uint8 pixels of ``x``."""
    m = np.asarray(mean, np.float64).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float64).reshape(1, -1, 1, 1)
    return np.clip(np.rint(x.astype(np.float64) * s + m), 0, 255).astype(np.uint8)


@dataclass
class VolunteerDesk:
    """Leases, validation, spot checks and the merge queue of one node."""

    config: VolunteerConfig
    setup: TrainingSetup
    seed: int = 0
    counters: Counter = field(default_factory=Counter)  # leases, accepted, spot_checks, clipped, banned
    refused: Counter = field(default_factory=Counter)  # reason -> count
    # CPU seconds the node spent on volunteers, by part (snapshot, holdout, spot_check):
    # what the benchmarks weigh the volunteers' images against
    cpu: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        cfg, st = self.config, self.setup
        n = len(st.y)
        if n < cfg.holdout_images + cfg.steps * st.batch_size:
            raise UserError(f"volunteers need at least {cfg.holdout_images + cfg.steps * st.batch_size} "
                            f"training images on this node, it has {n}; lower --volunteer-steps or turn "
                            "volunteers off")
        if not st.pixel_mean or len(st.pixel_mean) != st.input_shape[0]:
            raise UserError("this data set has no pixel statistics, so its images cannot be sent to "
                            "browsers exactly; load it with gossipnet.data, or turn volunteers off")
        # gossipnet.data's package imports its downloader (sockets): import the one function here
        from gossipnet.data.normalize import normalise

        probe = st.x[:64]
        if not np.array_equal(normalise(to_uint8(probe, st.pixel_mean, st.pixel_std), st.pixel_mean,
                                         st.pixel_std), probe):
            raise UserError("this data set's images are not uint8 pixels normalised per channel; "
                            "volunteers cannot reproduce them: turn volunteers off")
        self.leasable = n - cfg.holdout_images
        self.holdout = HeldOut(st.spec, st.input_shape, st.x[self.leasable:], st.y[self.leasable:],
                               cfg.holdout_chunks)
        self.book = LeaseBook(cfg.leases_per_minute, cfg.burst, cfg.max_open_per_client, cfg.max_open,
                              cfg.ban_seconds)
        self.rng = random.Random(self.seed)
        self.references: collections.deque[float] = collections.deque(maxlen=5)  # recent: norms shrink as training settles
        self.versions: OrderedDict[int, _Version] = OrderedDict()
        self.version = 0
        self._offered_at = -math.inf
        self._leased_at = -math.inf
        self.own_images = 0
        self.merged_images = 0
        self._queue: list[Pending] = []
        self._checking: Counter = Counter()  # version -> updates between check and finish
        self._scratch = Net(st.spec, st.input_shape)
        self._shapes = {k: v.shape for k, v in self._scratch.params().items()}
        self.max_update_bytes = 4 * sum(int(np.prod(s)) for s in self._shapes.values()) + 64 * 1024
        self._work: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=4096)
        self._lock = threading.Lock()

    # ---- the node's side (worker thread) ---------------------------------------------------

    def offer_version(self, params: dict[str, np.ndarray], opt_state: dict[str, np.ndarray],
                      own_images: int, now: float) -> None:
        """Snapshot the node's weights and optimiser state for new leases (at most every
        version_interval). A lease continues the node's second moment and step count: Adam
        restarted from zero moments takes steps of the full rate on every weight, which
        raised the held-out loss of honest leases (docs/VOLUNTEERS.md)."""
        with self._lock:
            self.own_images = own_images
            if now - self._offered_at < self.config.version_interval:
                return
            if self.versions and now - self._leased_at > IDLE_SECONDS:
                return  # nobody is volunteering: no snapshot (a copy and a hash of the model)
            self._offered_at = now
            cpu0 = time.thread_time()
            weights = {k: np.array(v, np.float32) for k, v in params.items()}
            # the first moment (Adam's m, SGD's velocity) starts at zero: carried over, it
            # put the node's recent direction into every delta again (~5 steps' worth at
            # beta 0.9 over 8 steps), and merged deltas overshot (accuracy fell, measured)
            state = {k: np.zeros_like(v) if k.split(".")[1] in ("m", "velocity") else np.array(v)
                     for k, v in opt_state.items()}
            blob = stn.save({**weights, **state})
            self.version += 1
            self.versions[self.version] = _Version(weights, state, blob, hashlib.sha256(blob).hexdigest(), own_images)
            # kept while an open lease or an update on its way to ``finish`` needs it: the
            # update's lease is used by then, and dropping its base wasted a browser's work
            in_use = {lease.version for lease in self.book.leases.values() if not lease.used}
            in_use.update(v for v, n in self._checking.items() if n > 0)
            for v in [v for v in self.versions if v != self.version and v not in in_use]:
                del self.versions[v]
            self.cpu["snapshot"] += time.thread_time() - cpu0

    def take_accepted(self, own_images: int | None = None) -> list[tuple[dict[str, np.ndarray], int]]:
        """What to add to the node's weights now: per base version, the *mean* of the
        accepted deltas that started from it, times ``merge_weight * (1 + tau) ** -a``,
        with the images they embody. ``tau`` is the base's staleness, in leases: the
        node's own images trained since the base (``own_images``: now; default, at the
        last offer) over a lease's images; ``a`` is ``staleness_exponent`` (FedAsync's
        polynomial staleness function). The node adds them between training chunks
        (``ConvnetLearner.add_delta``).

        Why the mean: deltas from one base are parallel estimates of the same few steps;
        summed, K volunteers took a step K times too long from a point the node has
        already left, and the node's accuracy fell as volunteers were added (measured,
        docs/VOLUNTEERS.md). Averaged they are one step with a K-times larger batch.
        Why the staleness weight: a delta computed on weights the node has since moved
        away from is worth less the further it moved (docs/VOLUNTEERS.md).
        """
        cfg = self.config
        with self._lock:
            queue, self._queue = self._queue, []
            now_images = self.own_images if own_images is None else own_images
        groups: dict[int, list[Pending]] = {}
        for item in queue:
            groups.setdefault(item.lease.version, []).append(item)
        out = []
        for items in groups.values():
            tau = max(0, now_images - items[0].base_images) / (items[0].images or 1)
            w = cfg.merge_weight * (1.0 + tau) ** -cfg.staleness_exponent
            scale = np.float32(w / len(items))
            mean = {k: sum(item.merged[k] for item in items) * scale for k in items[0].merged}
            out.append((mean, sum(item.images for item in items)))
        return out

    # ---- the browser's side (event loop) ----------------------------------------------------

    def refuse(self, reason: str, detail: str) -> Refusal:
        """Count a refusal under ``reason`` (a REASONS key) and return it."""
        self.refused[reason] += 1
        return Refusal(reason, detail)

    def lease(self, ip: str, now: float) -> dict | Refusal:
        """A new lease as the JSON document the page gets, or a counted refusal."""
        cfg, st = self.config, self.setup
        client = ip_key(ip)
        with self._lock:
            if not cfg.enabled or not self.versions:
                return self.refuse("disabled" if not cfg.enabled else "busy",
                                    "no volunteers here" if not cfg.enabled else "the node has no model to share yet")
            why = self.book.refusal_to_mint(client, now)
            if why is None and not self._room_for(cfg.steps * st.batch_size, now):
                why = "busy"
            if why is not None:
                return self.refuse(why, {"banned": "this address failed a spot check; try again later",
                                          "rate_limited": "too many leases from this address; slow down",
                                          "busy": "the node has enough volunteers right now; retry in a minute"}[why])
            n = cfg.steps * st.batch_size
            indices = np.array(self.rng.sample(range(self.leasable), n), np.int64)
            spot = len(self.references) < cfg.reference_leases or self.rng.random() < cfg.spot_check_rate
            lease = self.book.mint(client, self.version, indices, self.rng.getrandbits(32), cfg.steps,
                                   st.batch_size, now, cfg.lease_seconds, spot)
            self.counters["leases"] += 1
            self._leased_at = now
            self._work.append((now, 0, client))
            version = self.versions[self.version]
        return {
            "lease": lease.token, "base_version": lease.version, "weights_sha256": version.sha256,
            "weights_url": f"/volunteer/weights/{lease.version}", "images_url": f"/volunteer/images/{lease.token}",
            "spec": st.spec, "input_shape": list(st.input_shape), "fingerprint": st.fingerprint,
            "optimizer": {"kind": st.optimizer, "lr": st.lr, "weight_decay": st.weight_decay,
                          "momentum": st.momentum},
            "batch_size": lease.batch_size, "steps": lease.steps, "seed": lease.seed,
            "expires_in": cfg.lease_seconds,
            "normalise": {"mean": list(st.pixel_mean), "std": list(st.pixel_std)},
        }

    def _room_for(self, images: int, now: float) -> bool:
        """Whether volunteers' images (merged, queued and leased) stay within max_share."""
        s = self.config.max_share
        leased = sum(len(lease.indices) for lease in self.book.leases.values()
                     if not lease.used and now <= lease.expires_at)
        budget = s / (1 - s) * self.own_images + images  # one lease of slack: the first can start
        return self.merged_images + leased + images <= budget

    def weights(self, version: int) -> bytes | None:
        """The safetensors weights a lease starts from, while any open lease needs them."""
        with self._lock:
            v = self.versions.get(version)
            return v.blob if v is not None else None

    def images(self, ip: str, token: str, now: float) -> bytes | Refusal:
        """The lease's images (uint8 NCHW) and labels (int32), in training order."""
        with self._lock:
            found = self.book.find(token, now)
            if isinstance(found, str):
                return self.refuse(found, f"lease {found.replace('_', ' ')}")
            if found.client != ip_key(ip):
                return self.refuse("wrong_client", "this lease was issued to another address")
            st = self.setup
            x = to_uint8(st.x[found.indices], st.pixel_mean, st.pixel_std)
            y = st.y[found.indices].astype(np.int32)
        return stn.save({"x": x, "y": y})

    def check(self, ip: str, body: bytes, now: float) -> Pending | Refusal:
        """The cheap checks of a posted update, in cost order; Pending goes to ``finish``."""
        cfg = self.config
        client = ip_key(ip)
        with self._lock:
            if not cfg.enabled:
                return self.refuse("disabled", "no volunteers here")
            if self.book.banned.get(client, -1.0) > now:
                return self.refuse("banned", "this address failed a spot check; try again later")
            if len(body) > self.max_update_bytes:
                return self.refuse("too_large", f"{len(body)} bytes; an update of this net is at most "
                                                  f"{self.max_update_bytes}")
            try:
                header, token, base, _loss, _images = update_meta(body)
            except BadUpdate as exc:
                return self.refuse(exc.reason, str(exc))
            found = self.book.find(token, now)
            if isinstance(found, str):
                return self.refuse(found, f"lease {found.replace('_', ' ')}")
            if found.client != client:
                return self.refuse("wrong_client", "this lease was issued to another address")
            self.book.consume(found)  # single use, whatever follows
            images = len(found.indices)
            self._work.append((now, images, client))
            if base != found.version or base not in self.versions:
                return self.refuse("stale_base", f"base version {base} is not this lease's ({found.version}) "
                                                  "or no longer held; take a new lease")
            try:
                delta = update_delta(body, header, self._shapes)
            except BadUpdate as exc:
                return self.refuse(exc.reason, str(exc))
            size = norm(delta)
            merged = delta
            if size == 0:
                return self.refuse("zero_delta", "the update changes nothing")
            if self.references:
                ref = float(np.median(self.references))
                if size < cfg.min_factor * ref:
                    return self.refuse("norm_too_small", f"norm {size:.3g} against {ref:.3g} for an honest lease")
                if size > cfg.refuse_factor * ref:
                    return self.refuse("norm_too_large", f"norm {size:.3g} against {ref:.3g} for an honest lease")
                if size > cfg.clip_factor * ref:
                    scale = np.float32(cfg.clip_factor * ref / size)
                    merged = {k: v * scale for k, v in delta.items()}
                    self.counters["clipped"] += 1
            self._checking[found.version] += 1
            return Pending(found, delta, merged, images, self.versions[base].own_images)

    def finish(self, pending: Pending, now: float) -> dict | Refusal:
        """The expensive checks (held-out slope, spot check, share); queue the merge. CPU-heavy:
        run it where training runs, not on the event loop."""
        try:
            return self._finish(pending, now)
        finally:
            with self._lock:
                self._checking[pending.lease.version] -= 1

    def _finish(self, pending: Pending, now: float) -> dict | Refusal:
        cfg, st, lease = self.config, self.setup, pending.lease
        with self._lock:
            version = self.versions.get(lease.version)
        if version is None:
            return self.refuse("stale_base", "the base version was dropped while this update waited")
        cpu0 = time.thread_time()
        if version.holdout_grads is None:
            version.holdout_grads = self.holdout.gradients(version.weights)
        slope, se = slope_test(version.holdout_grads, flat(pending.merged))
        uphill = slope > cfg.uphill_margin_se * se
        why_uphill = (f"the update raises the held-out loss: by {slope:+.3g} nats to first order, "
                      f"{slope / se if se > 0 else math.inf:+.1f} standard errors")
        # an uphill update on a lease picked for a spot check is still recomputed: a liar
        # whose lies point uphill is then banned, not merely refused again and again
        cpu1 = time.thread_time()
        self.cpu["holdout"] += cpu1 - cpu0
        if uphill and not lease.spot_check:
            return self.refuse("worse_loss", why_uphill)
        net = self._scratch
        if lease.spot_check:
            self.counters["spot_checks"] += 1
            net.load_state_dict(version.weights)
            opt = make_optimizer(st.optimizer, net.params(), st.lr, st.weight_decay, st.momentum)
            opt.load_state_dict(version.opt_state)
            x = st.x[lease.indices]  # what the browser normalises from uint8, bit for bit (checked at start)
            train_sequence(net, opt, x, st.y[lease.indices], lease.batch_size, lease.seed)
            want = {k: p - version.weights[k] for k, p in net.params().items()}
            self.cpu["spot_check"] += time.thread_time() - cpu1
            mismatch = relative_mismatch(pending.delta, want)
            if mismatch > cfg.tolerance:
                with self._lock:
                    self.book.ban(lease.client, now)
                    self.counters["banned"] += 1
                return self.refuse("spot_check_mismatch", f"recomputed update differs by {mismatch:.3g} "
                                                            f"(tolerance {cfg.tolerance}); address banned")
            self.references.append(norm(want))
        if uphill:
            return self.refuse("worse_loss", why_uphill)
        with self._lock:
            s = cfg.max_share
            if self.merged_images + pending.images > s / (1 - s) * self.own_images + pending.images:
                return self.refuse("over_share", "volunteers already contributed their share; retry later")
            self.merged_images += pending.images
            self._queue.append(pending)
            self.counters["accepted"] += 1
        return {"accepted": True, "images": pending.images, "spot_checked": lease.spot_check,
                "holdout_slope": slope, "holdout_slope_se": se}

    # ---- what the status page shows ---------------------------------------------------------

    def status(self, now: float, window: float = 60.0) -> dict[str, int]:
        """Counters for /api/status (``counters.volunteer``; refusals by reason are
        ``self.refused``, ``rejections.volunteer``): all integers, as the schema wants."""
        with self._lock:
            recent = [(t, n, c) for t, n, c in self._work if now - t <= window]
            open_leases = sum(1 for lease in self.book.leases.values() if not lease.used and now <= lease.expires_at)
            return {
                "clients": len({c for _, _, c in recent}),  # addresses seen in the last minute
                "images_per_s": round(sum(n for _, n, _ in recent) / window),
                "leases": self.counters["leases"],
                "open_leases": open_leases,
                "accepted": self.counters["accepted"],
                "refused": sum(self.refused.values()),
                "spot_checks": self.counters["spot_checks"],
                "clipped": self.counters["clipped"],
                "banned": sum(1 for until in self.book.banned.values() if until > now),
                "merged_images": self.merged_images,
            }
