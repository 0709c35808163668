"""A running node's ``/api/status`` document, from its core and its sockets' counters.

``schema.build_status`` defines the document; this module only gathers a node's parts
into it, so ``node.py`` keeps no counters of its own beyond the bytes its HTTP server
and puller move. The UDP socket's drops (oversize, queue full) are counted in
``net/udp.py``; here they join the node's one record of rejections, stage ``udp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gossipnet.core import NodeCore
from gossipnet.status.schema import build_status


def node_status(core: NodeCore | None, *, node_id: str, swarm: str, kind: str, fingerprint: str,
                started_at: float, now: float, step: int, metrics: Mapping[str, Any], incarnation: int,
                addresses: Mapping[str, str], udp_stats: Any = None,
                http_bytes: Mapping[str, int] | None = None,
                extra_counters: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """``udp_stats``: a ``net.udp.UdpStats`` (or None before the socket is bound)."""
    http_bytes = http_bytes or {}
    udp_in = udp_stats.bytes_in if udp_stats is not None else 0
    udp_out = udp_stats.bytes_out if udp_stats is not None else 0
    counters: dict[str, dict[str, int]] = {}
    rejections: dict[str, dict[str, int]] = {}
    peers = []
    last_merge = None
    if core is not None:
        if udp_stats is not None:
            core.rejections.set_totals("udp", {r.value: n for r, n in udp_stats.dropped.items()})
        counters = core.counters()
        rejections = core.rejections.as_dict()
        last_merge = core.last_merge
        incarnation = core.membership.incarnation
        for m in core.peers():
            http = m.meta.get("http")
            peers.append({
                "node_id": m.node_id, "address": f"{m.addr[0]}:{m.addr[1]}", "state": m.state.label,
                "incarnation": m.incarnation, "last_exchange": core.peer_exchange.get(m.node_id),
                "http_url": f"http://{m.addr[0]}:{http}/" if isinstance(http, int) else None,
            })
    counters.update(extra_counters or {})  # e.g. the volunteer desk's
    counters["bytes"] = {"in": udp_in + http_bytes.get("in", 0), "out": udp_out + http_bytes.get("out", 0)}
    epoch = metrics.get("epoch")
    return build_status(
        node_id=node_id, swarm=swarm, kind=kind, fingerprint=fingerprint, started_at=started_at, now=now,
        step=step, metrics=metrics, counters=counters, peers=peers, rejections=rejections,
        last_merge=last_merge, addresses=addresses, incarnation=incarnation,
        epoch=epoch if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else None,
    )
