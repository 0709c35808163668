"""Announce schedule, pull decisions and manifest validation of the sans-IO gossip core."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.gossip import BadManifest, Gossip, GossipConfig, Manifest
from gossipnet.membership import MemberView, State
from gossipnet.wire.types import MsgType

SHA = bytes(range(32))


def manifest(step: int = 1, fp: str = "abcd", kind: str = "weights", sha: bytes = SHA,
             size: int = 1000, age: float = 10.0) -> Manifest:
    return Manifest(kind, fp, age, step, sha, size, "safetensors", 8001, f"/blob/{step}",
                    {"dtype": "float32"})


def peers(n: int) -> list[MemberView]:
    return [MemberView(f"p{i}", (f"10.0.0.{i}", 7946), State.ALIVE, 0, {}, 0.0)
            for i in range(n)]


def gossip(**changes) -> Gossip:
    return Gossip("weights", "abcd", GossipConfig(**changes), random.Random(0))


def offer(g: Gossip, peer: str, m: Manifest, now: float = 0.0):
    return g.on_manifest(peer, ("10.0.0.5", 7946), m.to_body(), now)


def test_announces_to_fanout_distinct_random_peers_every_interval():
    g = gossip(interval=2.0, fanout=3)
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


def test_too_large_snapshots_are_not_pulled():
    g = gossip(max_blob_bytes=1000)
    assert offer(g, "p1", manifest(size=1001)) is None and g.counters["skipped.too_large"] == 1


def test_manifest_round_trips_with_wire_blob_manifest():
    from gossipnet.wire.blobs import encode_blob
    _, blob = encode_blob({"w": np.ones((2, 3), np.float32)}, age=7.0)
    m = Manifest.from_blob(blob, step=3, port=8001, path="/blob/3")
    assert Manifest.from_body(m.to_body()) == m and m.blob() == blob
    with pytest.raises(BadManifest):
        manifest().blob()  # no tensor counts in meta


GOOD = manifest().to_body()
BAD_FIELDS = [
    ("kind", ""), ("kind", "Weights"), ("kind", "x" * 33), ("kind", 1),
    ("fp", ""), ("fp", "f" * 129), ("fp", b"ab"), ("fp", "a\x00b"),
    ("age", -1.0), ("age", float("inf")), ("age", float("nan")), ("age", "1"), ("age", 1e16),
    ("step", -1), ("step", 1.5), ("step", True), ("step", 2**63),
    ("sha256", b"\x00" * 31), ("sha256", "00" * 32),
    ("size", 0), ("size", -5), ("size", 2**41),
    ("codec", "SAFE"), ("codec", ""),
    ("port", 0), ("port", 65536), ("port", "8001"),
    ("path", "blob"), ("path", "/a/../b"), ("path", "/a?x=1"), ("path", "//evil.example/x"),
    ("path", "/" + "a" * 300), ("path", "/a b"),
    ("meta", []), ("meta", {"k": [1]}), ("meta", {f"k{i}": i for i in range(20)}),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS)
def test_malformed_manifest_is_rejected_and_counted(field, value):
    g = gossip()
    assert g.on_manifest("p1", ("10.0.0.5", 7946), {**GOOD, field: value}, 0.0) is None
    assert g.counters["rejected.malformed"] == 1 and g.in_flight() == []


def test_manifest_with_missing_or_extra_keys_is_rejected():
    g = gossip()
    missing = dict(GOOD)
    del missing["path"]
    for body in (missing, {**GOOD, "extra": 1}, None, [GOOD], "x"):
        assert g.on_manifest("p1", ("10.0.0.5", 7946), body, 0.0) is None
    assert g.counters["rejected.malformed"] == 5


anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=5),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(GOOD)), value=anything, whole=anything)
def test_arbitrary_manifest_bodies_never_raise(key, value, whole):
    g = gossip()
    for body in ({**GOOD, key: value}, whole):
        g.on_manifest("p1", ("10.0.0.5", 7946), body, 0.0)
    # Every body is accounted for: refused as malformed, skipped with a reason, or pulled.
    skipped = sum(v for k, v in g.counters.items() if k.startswith("skipped."))
    assert g.counters["rejected.malformed"] + skipped + g.counters["pulls_started"] == 2


def test_config_rejects_nonsense():
    for bad in ({"interval": 0}, {"fanout": 0}, {"pull_timeout": float("nan")},
                {"retry_after": -1}, {"max_concurrent_pulls": 0}):
        with pytest.raises(ValueError, match="GossipConfig"):
            GossipConfig(**bad)
