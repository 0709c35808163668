"""The node core, sans-IO: what the daemon and the simulator both run, fed plain inputs.

The simulator and the daemon build the same ``NodeCore`` and react to the same inputs
with the same outputs; a manifest that cannot fit our model starts no pull; every
refusal lands in one record by stage and reason.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.config import build_config
from gossipnet.core import NodeCore
from gossipnet.exchange import Manifest, publish
from gossipnet.gossip import GossipConfig
from gossipnet.membership import MembershipConfig
from gossipnet.net.udp import DropReason, UdpStats
from gossipnet.rejections import KNOWN_REASONS, Rejection, Rejections
from gossipnet.sim import HTTP_PORT, SimLearner, Swarm
from gossipnet.status.report import node_status
from gossipnet.status.schema import validate_status
from gossipnet.wire.types import MsgType

PEER = ("10.0.0.5", 7946)


def core(learner=None, peer_is_member: bool = True, **kw) -> NodeCore:
    """A core that knows "peer" (at PEER) as an alive member: it pulls only from members."""
    learner = learner or SimLearner()
    c = NodeCore("me", ("10.0.0.1", 7946), learner_kind=learner.kind, fingerprint=learner.fingerprint,
                 wire=learner.wire, shapes=learner.offer_shapes(), http_port=8001,
                 membership_rng=random.Random(1), gossip_rng=random.Random(2),
                 membership_config=MembershipConfig.local(), gossip_config=GossipConfig.local(), **kw)
    if peer_is_member:
        join_as_member(c, "peer", PEER)
    return c


def join_as_member(c: NodeCore, node_id: str, addr) -> None:
    """``node_id``'s own SYNC: its signed alive row (the wire layer checked the signature)."""
    from gossipnet.membership.codec import encode_entry
    from gossipnet.membership.types import State

    row = encode_entry(node_id, 1, State.ALIVE, addr, {"http": 8002, "kind": "sim"})
    c.membership.handle(node_id, addr, MsgType.SYNC, {"m": [row], "r": False}, 0.0)
    assert c.membership.member(node_id).state == State.ALIVE


def peer_manifest(age: float = 5.0, step: int = 3, tensors=None) -> Manifest:
    learner = SimLearner()
    learner.age = age
    snap = learner.snapshot()
    if tensors is not None:
        snap = type(snap)(snap.kind, snap.fingerprint, snap.age, tensors)
    return publish(snap, learner.wire, step).manifest.at(8002)


def status_of(c: NodeCore, udp: UdpStats | None = None) -> dict:
    return validate_status(node_status(c, node_id="me", swarm="s", kind="sim", fingerprint="sim0", started_at=0.0,
                                       now=1.0, step=0, metrics={}, incarnation=0, addresses={}, udp_stats=udp))


# ---------------------------------------------------------------- sim and node alike


def _node_with(learner):
    from gossipnet.node import Node
    from gossipnet.trust.credentials import load_credentials
    from gossipnet.trust.identity import Identity
    from tests.daemon_box import new_swarm_token

    cfg = build_config({}, {"preset": "local", "mdns": False, "state_dir": "/nonexistent-never-written"})
    identity = Identity.generate()
    creds = load_credentials(identity, int(time.time() * 1000), swarm_token=new_swarm_token())
    return Node(cfg, learner, identity, creds, incarnation=0)


def _swarm_trace(node, node_core: bool) -> list:
    """Three gossiping nodes, the first with ``node``'s id; the second is restarted halfway.
    With ``node_core``, the first node's core is the one ``Node.make_core`` builds (with the
    simulator's seeds) and its learner the node's; else the simulator's own."""
    swarm = Swarm(0, seed=5, config=MembershipConfig.local(), gossip_config=GossipConfig.local(), join="none")
    ids = [node.node_id, "n001", "n002"]
    swarm.signing_keys[node.node_id] = node.identity.private_key  # it signs, as the daemon does
    for i in ids:
        swarm.add_node(i)
    if node_core:
        sim = swarm.nodes[ids[0]]
        sim.core = node.make_core(sim.addr, HTTP_PORT, random.Random(f"{swarm.seed}:{ids[0]}:0"),
                                  random.Random(f"{swarm.seed}:{ids[0]}:gossip:0"))
        sim.learner = node.learner
    for i in ids[1:]:
        swarm.nodes[i].core.add_seed(swarm.nodes[ids[0]].addr, 0.0)
    swarm.trace = {}
    swarm.run(15.0)
    swarm.crash("n001")
    swarm.run(2.0)
    swarm.restart("n001", seed_with=ids[0])
    swarm.run(15.0)
    return swarm.trace[ids[0]]


def test_sim_and_node_react_to_the_same_inputs_with_the_same_outputs():
    node = _node_with(SimLearner())
    from_node, from_sim = _swarm_trace(node, node_core=True), _swarm_trace(node, node_core=False)
    assert len(from_node) > 100
    # The same messages, pulls and events at the same times, in the same order.
    assert from_node == from_sim
    kinds = {o.msg_type for _, _, out in from_node for o in out.sends}
    assert {MsgType.PING, MsgType.ACK, MsgType.MANIFEST} <= kinds
    assert any(p.peer_id == "n001" for _, _, out in from_node for p in out.pulls)
    assert any(e.kind == "peer_joined" for _, _, out in from_node for e in out.events)


def test_a_restarted_peer_is_pulled_again_though_its_step_counter_started_over():
    """The simulator once skipped the core's forget-on-rejoin; now it runs the daemon's glue."""
    swarm = Swarm(3, seed=2, config=MembershipConfig.local(), gossip_config=GossipConfig.local(), join="all")
    swarm.trace = {}
    swarm.run(20.0)

    def steps_taken_from_n001() -> list[int]:
        """The steps of n001's snapshots that n000 merged (its merge events say 'n001 step N')."""
        return [int(e.detail.split()[-1]) for _, _, out in swarm.trace["n000"] for e in out.events
                if e.kind == "merge" and e.peer == "n001"]

    before = steps_taken_from_n001()
    assert before and max(before) >= 10
    swarm.crash("n001")
    swarm.run(3.0)
    swarm.trace = {}
    swarm.restart("n001", seed_with="n000", lose_state=True)
    swarm.run(8.0)
    after = steps_taken_from_n001()
    assert after and min(after) < 8  # steps below what n000 took before: it forgot the old counter


# ---------------------------------------------------------------- manifests and the gate


def test_manifest_whose_shapes_do_not_fit_our_model_starts_no_pull():
    c = core()
    bad = peer_manifest(tensors={"age": np.zeros(3, np.float32)})  # 3 numbers where we hold 1
    out = c.on_message("peer", PEER, MsgType.MANIFEST, bad.to_body(), 1.0)
    assert out.pulls == [] and c.gossip.in_flight() == []
    assert c.rejections.get("gate", "bad_shape") == 1
    out = c.on_message("peer", PEER, MsgType.MANIFEST, peer_manifest().to_body(), 2.0)
    assert [p.url for p in out.pulls] == [f"http://10.0.0.5:8002/blob/{peer_manifest().sha_hex}"]


def test_a_manifest_is_pulled_from_the_members_own_address_never_the_datagrams_source():
    c = core()
    spoofed = ("10.6.6.6", 4000)  # a replay from the attacker's address
    pull = c.on_message("peer", spoofed, MsgType.MANIFEST, peer_manifest().to_body(), 1.0).pulls[0]
    assert pull.host == PEER[0] and "10.6.6.6" not in pull.url
    stranger = core(peer_is_member=False)
    assert stranger.on_message("peer", PEER, MsgType.MANIFEST, peer_manifest().to_body(), 1.0).pulls == []
    assert stranger.rejections.get("gate", "not_a_member") == 1


def test_gate_and_wire_rejections_with_the_same_reason_both_count():
    c = core()
    c.reject(Rejection("wire", "malformed", "truncated"))
    c.on_message("peer", PEER, MsgType.MANIFEST, {"not": "a manifest"}, 1.0)
    c.reject(Rejection("wire", "too_large"))
    huge = peer_manifest()
    c.on_message("peer", PEER, MsgType.MANIFEST, {**huge.to_body(), "size": 10**9}, 2.0)
    doc = status_of(c)
    assert doc["rejections"]["wire"]["malformed"] == 1 and doc["rejections"]["gate"]["malformed"] == 1
    assert doc["rejections"]["wire"]["too_large"] == 1 and doc["rejections"]["gate"]["too_large"] == 1


def test_learner_refusal_and_failed_pull_are_counted_by_stage():
    c = core()
    pull = c.on_message("peer", PEER, MsgType.MANIFEST, peer_manifest().to_body(), 1.0).pulls[0]
    from gossipnet.learners.base import AbsorbResult

    out = c.pull_done(pull, AbsorbResult(False, "wrong_kind", "x"), 2.0, 100.0)
    assert [e.kind for e in out.events] == ["rejected"] and c.last_merge["reason"] == "wrong_kind"
    assert c.rejections.get("learner", "wrong_kind") == 1 and c.exchange["pulled"] == 1
    pull = c.on_message("peer", PEER, MsgType.MANIFEST, peer_manifest(step=9).to_body(), 20.0).pulls[0]
    c.pull_done(pull, Rejection("pull", "unreachable"), 21.0, 101.0)
    assert c.rejections.get("pull", "unreachable") == 1 and c.exchange["pulled"] == 1


def test_udp_drops_join_the_record_and_known_reasons_start_at_zero():
    c = core()
    stats = UdpStats()
    doc = status_of(c, stats)
    assert all(doc["rejections"]["udp"][r.value] == 0 for r in DropReason)
    assert doc["rejections"]["wire"]["bad_signature"] == 0 and doc["rejections"]["gate"]["bad_shape"] == 0
    assert doc["rejections"]["learner"] == {}  # SimLearner declares no reasons
    stats.dropped[DropReason.QUEUE_FULL] = 7
    assert status_of(c, stats)["rejections"]["udp"]["queue_full"] == 7


def test_membership_refusals_join_the_record_by_reason():
    c = core()
    assert all(n == 0 for n in status_of(c)["rejections"]["membership"].values())
    c.on_message("peer", PEER, MsgType.PING, {"q": 7, "t": "someone-else", "u": []}, 1.0)  # a previous owner's
    c.on_message("peer", PEER, MsgType.PING, {"q": "seven"}, 1.5)  # not a ping's structure
    c.on_message("peer", PEER, MsgType.ACK, {"q": 12345, "u": []}, 2.0)  # nobody asked
    doc = status_of(c)["rejections"]["membership"]
    assert doc == {"malformed": 1, "wrong_target": 1, "unexpected": 1, "leaving": 0}, doc


def test_every_udp_drop_reason_is_a_known_rejection():
    assert {r.value for r in DropReason} <= set(KNOWN_REASONS["udp"])


def test_rejection_record_names_stages_and_sanitises_reasons():
    record = Rejections({"learner": ("bad_age",)})
    assert record.get("learner", "bad_age") == 0 and "bad_age" in record.as_dict()["learner"]
    record.count("learner", "Weird Reason!\n")
    assert record.get("learner", "other") == 1
    with pytest.raises(KeyError, match="KNOWN_REASONS"):
        record.count("nowhere", "x")
    for i in range(200):
        record.count("gate", f"r{i}")
    assert len(record.as_dict()["gate"]) <= 65 and record.get("gate", "other") > 0


GOOD = peer_manifest().to_body()
BAD_FIELDS = [
    ("kind", ""), ("kind", "Weights"), ("kind", "x" * 33), ("kind", 1), ("kind", "sim"),
    ("fp", ""), ("fp", "f" * 129), ("fp", b"ab"), ("fp", "a\x00b"),
    ("age", -1.0), ("age", float("inf")), ("age", float("nan")), ("age", "1"), ("age", 1e16),
    ("step", -1), ("step", 1.5), ("step", True), ("step", 2**63),
    ("sha256", b"\x00" * 31), ("sha256", "00" * 32),
    ("size", 0), ("size", -5), ("size", 2**41),
    ("codec", "SAFE"), ("codec", ""), ("codec", "pickle"), ("dtype", "float64"), ("dtype", None),
    ("tensors", 0), ("tensors", -1), ("tensors", "1"), ("params", -1), ("params", 2**41),
    ("port", 0), ("port", 65536), ("port", "8001"),
    ("path", "blob"), ("path", "/a/../b"), ("path", "/a?x=1"), ("path", "//evil.example/x"),
    ("path", "/" + "a" * 300), ("path", "/a b"),
    ("meta", []), ("meta", {"k": [1]}), ("meta", {f"k{i}": i for i in range(20)}),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS)
def test_malformed_manifest_is_rejected_at_the_gate_and_counted(field, value):
    c = core()
    assert c.on_message("peer", PEER, MsgType.MANIFEST, {**GOOD, field: value}, 0.0).pulls == []
    assert c.rejections.get("gate", "malformed") == 1 and c.gossip.in_flight() == []


def test_manifest_with_missing_or_extra_keys_is_rejected():
    c = core()
    missing = dict(GOOD)
    del missing["path"]
    for body in (missing, {**GOOD, "extra": 1}, None, [GOOD], "x"):
        assert c.on_message("peer", PEER, MsgType.MANIFEST, body, 0.0).pulls == []
    assert c.rejections.get("gate", "malformed") == 5


anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=40),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=5),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(GOOD)), value=anything, whole=anything)
def test_arbitrary_manifest_bodies_never_raise_and_are_all_accounted_for(key, value, whole):
    c = core()
    for body in ({**GOOD, key: value}, whole):
        c.on_message("peer", PEER, MsgType.MANIFEST, body, 0.0)
    # Every body is accounted for: refused at the gate, skipped with a reason, or pulled.
    skipped = sum(v for k, v in c.gossip.counters.items() if k.startswith("skipped."))
    assert c.rejections.total("gate") + skipped + c.gossip.counters["pulls_started"] == 2


def test_ticking_at_each_deadline_moves_time_forward_with_or_without_news():
    """A driver that sleeps until next_deadline() must never spin: a core that pulled
    (so its gossip timers ran) but has nothing of its own to announce yet."""
    from gossipnet.learners.base import AbsorbResult

    c = core()
    c.tick(0.0)
    pull = c.on_message("peer", PEER, MsgType.MANIFEST, peer_manifest().to_body(), 0.1).pulls[0]
    c.tick(0.2)
    c.pull_done(pull, AbsorbResult(True), 0.3, 0.3)
    now, seen = 0.3, []
    for _ in range(50):
        deadline = c.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        seen.append(now)
        c.tick(now)
    assert seen[-1] - seen[0] > 2.0 and len(set(seen)) > 10


def test_the_sans_io_modules_import_no_asyncio_and_no_sockets():
    import subprocess
    import sys

    modules = ["gossipnet.core", "gossipnet.exchange", "gossipnet.rejections", "gossipnet.gossip",
               "gossipnet.learner_host", "gossipnet.learners.migrants", "gossipnet.sim", "gossipnet.volunteers"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in ('asyncio', 'socket', 'aiohttp', 'zeroconf', 'asyncio_dgram') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
