"""A stand-alone ``StatusProvider`` with settable state, for tests and benchmarks.

It lets the HTTP server, the page and ``gossipnet status`` be exercised (and a
browser pointed at them) without a running node: tests set its fields and
advance its history as a node would.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gossipnet.status.history import MetricsHistory
from gossipnet.status.schema import build_status


@dataclass
class DemoProvider:
    """Holds everything a node would report; ``advance()`` adds one training point."""

    node_id: str = "demo-node"
    swarm: str = "demo-swarm"
    kind: str = "convnet"
    fingerprint: str = "0" * 16
    peers: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    rejections: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> reason -> count
    metrics: dict[str, Any] = field(default_factory=dict)
    visual_arrays: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    last_merge: dict[str, Any] | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    step: int = 0
    history: MetricsHistory = field(default_factory=MetricsHistory)

    def status(self) -> dict[str, Any]:
        return build_status(
            node_id=self.node_id, swarm=self.swarm, kind=self.kind, fingerprint=self.fingerprint,
            started_at=self.started_at, now=time.time(), step=self.step, metrics=self.metrics,
            counters=self.counters, peers=self.peers, rejections=self.rejections, last_merge=self.last_merge,
            addresses=self.addresses,
        )

    def visuals(self) -> Mapping[str, Any]:
        return self.visual_arrays

    def blob(self, sha256_hex: str) -> bytes | None:
        return self.blobs.get(sha256_hex)

    def offer_blob(self, data: bytes) -> str:
        """Make ``data`` the current snapshot blob; return its sha256 hex."""
        digest = hashlib.sha256(data).hexdigest()
        self.blobs = {digest: data}
        return digest

    def advance(self, steps: int = 1, now: float | None = None) -> None:
        """Record ``steps`` plausible training points (a loss falling, accuracy rising)."""
        for _ in range(steps):
            self.step += 1
            s = self.step
            if self.kind == "evolution":
                self.metrics = {"best_fitness": 10.0 * np.log1p(s), "mean_fitness": 6.0 * np.log1p(s)}
            else:
                self.metrics = {"loss": 2.3 / (1 + 0.05 * s), "train_accuracy": 1 - 0.9 / (1 + 0.03 * s),
                                "test_accuracy": 1 - 0.9 / (1 + 0.025 * s), "images_per_s": 1500.0}
            alive = sum(1 for p in self.peers if p.get("state") == "alive")
            self.history.record(time.time() if now is None else now, s, self.metrics, alive)
