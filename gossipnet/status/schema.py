"""The ``/api/status`` document: built from plain inputs, checked on the way in.

One function builds it (``build_status``) so every node speaks the same JSON, and
one validates it (``validate_status``) because ``gossipnet status`` reads other
nodes' documents: a peer's JSON is untrusted input, so every field is checked for
type, range and size before anything prints it. ``docs/API.md`` documents each
field; bump ``SCHEMA_VERSION`` on any incompatible change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gossipnet import __version__

# 2: refusals moved from counters.wire_rejected / counters.absorb_rejected to one
#    "rejections" object by stage (udp, wire, gate, pull, learner) and reason.
SCHEMA_VERSION = 2

PEER_STATES = ("alive", "suspect", "dead", "left")

# Counter groups every node reports (others may be added; these are the ones
# the page and /metrics interpret).
COUNTER_GROUPS = ("exchange", "messages_in", "messages_out", "bytes")

# Size limits for untrusted documents: far above what a real node sends, low
# enough that a hostile one cannot make `gossipnet status` print megabytes.
MAX_PEERS = 1024
MAX_METRICS = 64
MAX_COUNTER_GROUPS = 32
MAX_STAGES = 16
MAX_COUNTERS_PER_GROUP = 128
MAX_ID = 256
MAX_TEXT = 512
MAX_COUNT = 2**63 - 1


# Metric names the page, the PNG and /metrics interpret, each with the aliases a
# learner may use; the first one present wins. Other metrics are shown as-is.
WELL_KNOWN_METRICS: dict[str, tuple[str, ...]] = {
    "loss": ("loss", "train_loss"),
    "train_accuracy": ("train_accuracy", "train_acc"),
    "test_accuracy": ("test_accuracy", "test_acc"),
    "best_fitness": ("best_fitness", "fitness_best"),
    "mean_fitness": ("mean_fitness", "fitness_mean"),
    "images_per_s": ("images_per_s", "images_per_sec"),
    "env_steps_per_s": ("env_steps_per_s", "steps_per_s"),
}


def well_known(values: Mapping[str, Any], name: str) -> Any:
    """The value of a well-known metric under any of its aliases, or None."""
    for alias in WELL_KNOWN_METRICS[name]:
        if alias in values:
            return values[alias]
    return None


class StatusSchemaError(ValueError):
    """A status document does not match the schema; the message names the field."""


def build_status(
    *,
    node_id: str,
    swarm: str,
    kind: str,
    fingerprint: str,
    started_at: float,
    now: float,
    step: int,
    metrics: Mapping[str, Any],
    counters: Mapping[str, Mapping[str, int]],
    peers: Sequence[Mapping[str, Any]],
    rejections: Mapping[str, Mapping[str, int]] | None = None,
    last_merge: Mapping[str, Any] | None = None,
    addresses: Mapping[str, str] | None = None,
    incarnation: int = 0,
    epoch: float | None = None,
) -> dict[str, Any]:
    """The status document for one node, from what the node knows right now.

    ``started_at`` and ``now`` are wall-clock seconds (``time.time()``), as is each
    peer's ``last_exchange`` and ``last_merge["at"]``. Non-finite metric values
    become ``null`` (JSON has no NaN); numpy scalars become plain numbers.
    """
    return {
        "schema": SCHEMA_VERSION,
        "gossipnet_version": __version__,
        "now": float(now),
        "node": {
            "id": str(node_id),
            "swarm": str(swarm),
            "incarnation": int(incarnation),
            "started_at": float(started_at),
            "uptime_s": max(0.0, float(now) - float(started_at)),
            "addresses": {str(k): str(v) for k, v in (addresses or {}).items()},
        },
        "learner": {
            "kind": str(kind),
            "fingerprint": str(fingerprint),
            "step": int(step),
            "epoch": _finite_or_none(epoch),
            "metrics": {str(k): _scalar(v) for k, v in metrics.items()},
        },
        "peers": [_peer(p) for p in peers],
        "counters": _groups(counters),
        "rejections": _groups(rejections or {}),
        "last_merge": None if last_merge is None else {
            "at": float(last_merge["at"]),
            "peer": str(last_merge.get("peer", "")),
            "accepted": bool(last_merge.get("accepted", True)),
            "reason": str(last_merge.get("reason", "ok")),
        },
    }


def _groups(groups: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    return {str(g): {str(k): int(v) for k, v in group.items()} for g, group in groups.items()}


def _peer(p: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "node_id": str(p["node_id"]),
        "address": str(p.get("address", "")),
        "state": str(p["state"]),
        "incarnation": int(p.get("incarnation", 0)),
        "last_exchange": _finite_or_none(p.get("last_exchange")),
        "http_url": None if p.get("http_url") is None else str(p["http_url"]),
    }


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _scalar(value: Any) -> float | int | str | bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _finite_or_none(value)
    if value is None:
        return None
    return str(value)[:MAX_TEXT]


# ---- validation -------------------------------------------------------------


def validate_status(obj: Any) -> dict[str, Any]:
    """Return ``obj`` if it is a valid status document of this schema, else raise ``StatusSchemaError``."""
    d = _dict(obj, "$", {"schema", "gossipnet_version", "now", "node", "learner", "peers", "counters",
                         "rejections", "last_merge"})
    if type(d["schema"]) is not int or d["schema"] != SCHEMA_VERSION:
        raise StatusSchemaError(f"$.schema: expected {SCHEMA_VERSION}, got {d['schema']!r}")
    _text(d["gossipnet_version"], "$.gossipnet_version", MAX_ID)
    _number(d["now"], "$.now")

    node = _dict(d["node"], "$.node", {"id", "swarm", "incarnation", "started_at", "uptime_s", "addresses"})
    _text(node["id"], "$.node.id", MAX_ID, nonempty=True)
    _text(node["swarm"], "$.node.swarm", MAX_ID)
    _count(node["incarnation"], "$.node.incarnation")
    _number(node["started_at"], "$.node.started_at")
    _number(node["uptime_s"], "$.node.uptime_s", minimum=0.0)
    addresses = _mapping(node["addresses"], "$.node.addresses", 16)
    for k, v in addresses.items():
        _text(k, "$.node.addresses key", MAX_ID)
        _text(v, f"$.node.addresses.{k}", MAX_TEXT)

    learner = _dict(d["learner"], "$.learner", {"kind", "fingerprint", "step", "epoch", "metrics"})
    _text(learner["kind"], "$.learner.kind", MAX_ID, nonempty=True)
    _text(learner["fingerprint"], "$.learner.fingerprint", MAX_ID)
    _count(learner["step"], "$.learner.step")
    if learner["epoch"] is not None:
        _number(learner["epoch"], "$.learner.epoch", minimum=0.0)
    for k, v in _mapping(learner["metrics"], "$.learner.metrics", MAX_METRICS).items():
        _text(k, "$.learner.metrics key", MAX_ID)
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, str):
            _text(v, f"$.learner.metrics.{k}", MAX_TEXT)
        else:
            _number(v, f"$.learner.metrics.{k}")

    peers = d["peers"]
    if not isinstance(peers, list) or len(peers) > MAX_PEERS:
        raise StatusSchemaError(f"$.peers: expected a list of at most {MAX_PEERS} peers")
    for i, p in enumerate(peers):
        where = f"$.peers[{i}]"
        p = _dict(p, where, {"node_id", "address", "state", "incarnation", "last_exchange", "http_url"})
        _text(p["node_id"], f"{where}.node_id", MAX_ID, nonempty=True)
        _text(p["address"], f"{where}.address", MAX_TEXT)
        if p["state"] not in PEER_STATES:
            raise StatusSchemaError(f"{where}.state: expected one of {PEER_STATES}, got {p['state']!r:.40}")
        _count(p["incarnation"], f"{where}.incarnation")
        if p["last_exchange"] is not None:
            _number(p["last_exchange"], f"{where}.last_exchange")
        if p["http_url"] is not None:
            _text(p["http_url"], f"{where}.http_url", MAX_TEXT)

    for section, limit in (("counters", MAX_COUNTER_GROUPS), ("rejections", MAX_STAGES)):
        for g, group in _mapping(d[section], f"$.{section}", limit).items():
            _text(g, f"$.{section} key", MAX_ID)
            for k, v in _mapping(group, f"$.{section}.{g}", MAX_COUNTERS_PER_GROUP).items():
                _text(k, f"$.{section}.{g} key", MAX_ID)
                _count(v, f"$.{section}.{g}.{k}")

    if d["last_merge"] is not None:
        m = _dict(d["last_merge"], "$.last_merge", {"at", "peer", "accepted", "reason"})
        _number(m["at"], "$.last_merge.at")
        _text(m["peer"], "$.last_merge.peer", MAX_ID)
        if not isinstance(m["accepted"], bool):
            raise StatusSchemaError("$.last_merge.accepted: expected true or false")
        _text(m["reason"], "$.last_merge.reason", MAX_ID)
    return d


def _dict(obj: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise StatusSchemaError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = keys - obj.keys()
    if missing:
        raise StatusSchemaError(f"{where}: missing {', '.join(sorted(missing))}")
    extra = obj.keys() - keys
    if extra:
        raise StatusSchemaError(f"{where}: unexpected {', '.join(sorted(str(k)[:40] for k in extra)[:5])}")
    return obj


def _mapping(obj: Any, where: str, limit: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise StatusSchemaError(f"{where}: expected an object, got {type(obj).__name__}")
    if len(obj) > limit:
        raise StatusSchemaError(f"{where}: more than {limit} entries")
    return obj


def _text(obj: Any, where: str, limit: int, nonempty: bool = False) -> None:
    if not isinstance(obj, str):
        raise StatusSchemaError(f"{where}: expected a string, got {type(obj).__name__}")
    if len(obj) > limit:
        raise StatusSchemaError(f"{where}: longer than {limit} characters")
    if nonempty and not obj:
        raise StatusSchemaError(f"{where}: must not be empty")


def _number(obj: Any, where: str, minimum: float | None = None) -> None:
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
        raise StatusSchemaError(f"{where}: expected a finite number, got {obj!r:.40}")
    if minimum is not None and obj < minimum:
        raise StatusSchemaError(f"{where}: must be >= {minimum}, got {obj!r}")


def _count(obj: Any, where: str) -> None:
    if type(obj) is not int or not 0 <= obj <= MAX_COUNT:
        raise StatusSchemaError(f"{where}: expected a non-negative integer, got {obj!r:.40}")
