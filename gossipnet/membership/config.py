"""Membership timings and limits, with memberlist's presets.

Sources: hashicorp/memberlist ``config.go`` (``DefaultLANConfig``,
``DefaultLocalConfig``) and the Lifeguard paper (Dadgar, Phillips, Currey,
"Lifeguard: Local Health Awareness for More Accurate Failure Detection", 2018).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MembershipConfig:
    """Every knob of the SWIM/Lifeguard state machine; times are seconds."""

    # memberlist DefaultLANConfig: "failure check every second".
    probe_interval: float = 1.0
    # memberlist DefaultLANConfig: "reasonable RTT time for LAN".
    probe_timeout: float = 0.5
    # memberlist DefaultLANConfig: "use 3 nodes for the indirect ping".
    indirect_checks: int = 3
    # memberlist: retransmit an update mult * ceil(log10(n + 1)) times.
    retransmit_mult: int = 4
    # memberlist: suspect for mult * max(1, log10(n)) * probe_interval at least ...
    suspicion_mult: int = 4
    # ... and at most 6x that, shrinking with independent confirmations (Lifeguard).
    suspicion_max_timeout_mult: int = 6
    # memberlist DefaultLANConfig: besides piggy-backing on probes, send pending
    # rumours every 200 ms to 3 random peers, so news outruns the suspicion timers.
    rumour_interval: float = 0.2
    gossip_nodes: int = 3
    # memberlist GossipToTheDeadTime: keep gossiping to a dead node this long, so a
    # node wrongly declared dead hears it and refutes.
    gossip_to_the_dead_time: float = 30.0
    # memberlist DefaultLANConfig: push-pull full state sync every 30 s.
    push_pull_interval: float = 30.0
    # memberlist DefaultLANConfig: Lifeguard local health multiplier (max 8).
    awareness_max_multiplier: int = 8
    # Serf's reconnect: every 30 s try a full sync with one random dead member,
    # so that the two sides of a healed partition find each other again.
    reconnect_interval: float = 30.0
    # A dead or left node may come back at another address with any incarnation
    # after this long, if it says so itself.  memberlist leaves this off because
    # its names are unauthenticated; ours are keys verified by the wire layer.
    dead_node_reclaim_time: float = 10.0
    # How long dead/left entries stay as tombstones, so that stale "alive"
    # rumours at an old incarnation cannot resurrect them.
    tombstone_time: float = 600.0
    # Re-send a join (SYNC) to seeds that have not answered yet.
    join_retry_interval: float = 2.0
    # Graceful leave: LEAVE goes straight to at most this many peers.
    leave_fanout: int = 16
    # Bodies ride in <= 1,400-byte signed datagrams (DESIGN.md section 3); the
    # certificate-mode envelope leaves 1,182 bytes (gossipnet.wire.envelope.MAX_UDP_BODY).
    max_body_bytes: int = 1182

    def __post_init__(self) -> None:
        positive = ("probe_interval", "probe_timeout", "push_pull_interval", "join_retry_interval",
                    "reconnect_interval", "rumour_interval")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"MembershipConfig.{name} must be a positive number, got {value!r}")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("MembershipConfig.probe_timeout must be shorter than probe_interval")
        for name in ("indirect_checks", "leave_fanout", "gossip_nodes"):
            if getattr(self, name) < 0:
                raise ValueError(f"MembershipConfig.{name} must be >= 0")
        for name in ("retransmit_mult", "suspicion_mult", "suspicion_max_timeout_mult",
                     "awareness_max_multiplier"):
            if getattr(self, name) < 1:
                raise ValueError(f"MembershipConfig.{name} must be >= 1")
        for name in ("dead_node_reclaim_time", "tombstone_time", "gossip_to_the_dead_time"):
            if getattr(self, name) < 0:
                raise ValueError(f"MembershipConfig.{name} must be >= 0")
        if self.max_body_bytes < 256:
            raise ValueError("MembershipConfig.max_body_bytes must be at least 256")

    @classmethod
    def lan(cls) -> MembershipConfig:
        """memberlist's DefaultLANConfig timings."""
        return cls()

    @classmethod
    def local(cls) -> MembershipConfig:
        """memberlist's DefaultLocalConfig: loopback, tighter timeouts, fewer helpers."""
        return cls(
            probe_timeout=0.2,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            push_pull_interval=15.0,
            reconnect_interval=15.0,
            rumour_interval=0.1,
            gossip_to_the_dead_time=15.0,
        )

    def with_(self, **changes: object) -> MembershipConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def suspicion_timeout(config: MembershipConfig, n: int) -> float:
    """Shortest suspicion: memberlist's suspicionTimeout(mult, n, interval)."""
    scale = max(1.0, math.log10(max(1.0, float(n))))
    return config.suspicion_mult * scale * config.probe_interval


def retransmit_limit(config: MembershipConfig, n: int) -> int:
    """How many messages carry one update: memberlist's retransmitLimit."""
    return config.retransmit_mult * int(math.ceil(math.log10(n + 1)))


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist's pushPullScale: slow full syncs down beyond 32 nodes."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)
