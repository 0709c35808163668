"""Announce schedule and pull decisions of the sans-IO gossip core (manifests: test_exchange.py)."""

from __future__ import annotations

import random

import pytest

from gossipnet.exchange import Manifest
from gossipnet.gossip import Gossip, GossipConfig
from gossipnet.membership import MemberView, State
from gossipnet.wire.types import MsgType

SHA = bytes(range(32))


def manifest(step: int = 1, fp: str = "abcd", kind: str = "weights", sha: bytes = SHA,
             size: int = 1000, age: float = 10.0) -> Manifest:
    return Manifest(kind, fp, age, step, sha, size, "safetensors", "float32", 2, 6, 8001, f"/blob/{step}")


def peers(n: int) -> list[MemberView]:
    return [MemberView(f"p{i}", (f"10.0.0.{i}", 7946), State.ALIVE, 0, {}, 0.0)
            for i in range(n)]


def gossip(**changes) -> Gossip:
    return Gossip("weights", "abcd", GossipConfig(**changes), random.Random(0))


def offer(g: Gossip, peer: str, m: Manifest, now: float = 0.0):
    """A valid manifest from ``peer``: the pull started, or None if gossip skipped it."""
    if g.wants(peer, m, now) is not None:
        return None
    return g.start_pull(peer, "10.0.0.5", m, now)


def test_announces_to_fanout_distinct_random_peers_every_interval():
    g = gossip(announce_interval=2.0, fanout=3)
    sends = []
    for t in range(0, 41):
        sends.append(g.tick(t / 2, peers(10), manifest()))
    rounds = [s for s in sends if s]
    assert len(rounds) in (10, 11)  # one per 2 s over 20 s
    for r in rounds:
        assert len(r) == 3 and len({o.addr for o in r}) == 3
        assert all(o.msg_type == MsgType.MANIFEST for o in r)
        assert Manifest.from_body(r[0].body) == manifest()
    assert len({o.addr for r in rounds for o in r}) > 3  # random, not always the same peers
    assert g.counters["announced"] == 3 * len(rounds)


def test_fanout_is_capped_by_the_peers_there_are_and_nothing_without_a_snapshot():
    g = gossip(fanout=3)
    g.tick(0.0, peers(2), manifest())
    assert len(g.tick(5.0, peers(2), manifest())) == 2
    assert g.tick(10.0, peers(5), None) == [] and g.tick(15.0, [], manifest()) == []


def test_pulls_only_snapshots_newer_than_the_last_absorbed_from_that_peer():
    g = gossip()
    pull = offer(g, "p1", manifest(step=5))
    assert pull is not None and pull.url == "http://10.0.0.5:8001/blob/5"
    g.pull_done("p1", pull.manifest, True, None, 1.0)
    assert offer(g, "p1", manifest(step=5), 2.0) is None
    assert offer(g, "p1", manifest(step=4, sha=b"\x01" * 32), 2.0) is None
    assert g.counters["skipped.not_newer"] == 2
    newer = offer(g, "p1", manifest(step=6, sha=b"\x02" * 32), 3.0)
    assert newer is not None
    assert offer(g, "p2", manifest(step=1), 3.0) is not None  # history is per peer
    g.pull_done("p1", newer.manifest, True, None, 4.0)
    g.forget("p1")  # p1 restarted: its step counter starts over
    assert offer(g, "p1", manifest(step=1, sha=b"\x04" * 32), 5.0) is not None


def test_other_fingerprint_or_kind_is_never_pulled():
    g = gossip()
    assert offer(g, "p1", manifest(fp="ffff")) is None
    assert offer(g, "p1", manifest(kind="genome")) is None
    assert g.counters["skipped.other_fingerprint"] == 1 and g.counters["skipped.other_kind"] == 1


def test_no_duplicate_pull_from_a_peer_and_a_concurrency_cap():
    g = gossip(max_concurrent_pulls=2)
    assert offer(g, "p1", manifest(step=1)) is not None
    assert offer(g, "p1", manifest(step=2, sha=b"\x03" * 32)) is None
    assert g.counters["skipped.already_pulling"] == 1
    assert offer(g, "p2", manifest(step=1)) is not None
    assert offer(g, "p3", manifest(step=1)) is None
    assert g.counters["skipped.at_capacity"] == 1 and len(g.in_flight()) == 2
    g.pull_done("p2", manifest(step=1), False, "hash_mismatch", 1.0)
    assert g.counters["rejected.hash_mismatch"] == 1
    assert offer(g, "p3", manifest(step=1), 1.0) is not None


def test_failed_peer_is_left_alone_for_a_while():
    g = gossip(retry_after=10.0)
    pull = offer(g, "p1", manifest(), 0.0)
    g.pull_done("p1", pull.manifest, False, "bad_signature", 1.0)
    assert offer(g, "p1", manifest(), 5.0) is None and g.counters["skipped.backoff"] == 1
    assert offer(g, "p1", manifest(), 11.5) is not None


def test_stuck_pull_times_out_frees_its_slot_and_late_result_is_ignored():
    g = gossip(pull_timeout=30.0, max_concurrent_pulls=1)
    pull = offer(g, "p1", manifest(), 0.0)
    assert g.next_deadline() <= 30.0
    g.tick(29.0, [], None)
    assert len(g.in_flight()) == 1
    g.tick(30.0, [], None)
    assert g.in_flight() == [] and g.counters["rejected.timeout"] == 1
    g.pull_done("p1", pull.manifest, True, None, 31.0)
    assert g.counters["late"] == 1 and g.counters["absorbed"] == 0
    assert offer(g, "p2", manifest(), 31.0) is not None


def test_config_rejects_nonsense():
    for bad in ({"announce_interval": 0}, {"fanout": 0}, {"pull_timeout": float("nan")},
                {"retry_after": -1}, {"max_concurrent_pulls": 0}):
        with pytest.raises(ValueError, match="GossipConfig"):
            GossipConfig(**bad)
