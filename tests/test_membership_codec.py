"""Every membership body a peer can send is validated strictly: rejected and counted, never raised."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipnet.membership import Membership, MembershipConfig, State
from gossipnet.membership.codec import BadBody, Update, encode_entry, encode_update, parse
from gossipnet.wire.types import MsgType

MEMBERSHIP_TYPES = [t for t in MsgType if t != MsgType.MANIFEST]
ALIVE = {"k": 0, "n": "node2", "i": 0, "a": ["10.0.0.2", 7946], "m": {"http": 8002}}
ENTRY = {"n": "node2", "i": 0, "s": 0, "a": ["10.0.0.2", 7946], "m": {}}

GOOD = {
    MsgType.PING: {"q": 1, "t": "node1", "u": [ALIVE]},
    MsgType.ACK: {"q": 1, "u": []},
    MsgType.PING_REQ: {"q": 1, "t": "node3", "a": ["10.0.0.3", 7946], "k": True, "u": []},
    MsgType.NACK: {"q": 1},
    MsgType.SYNC: {"m": [ENTRY], "r": True},
    MsgType.SYNC_REPLY: {"m": [ENTRY]},
    MsgType.LEAVE: {"i": 0},
    MsgType.GOSSIP: {"u": [ALIVE]},
}

BAD = [
    (MsgType.PING, None),
    (MsgType.PING, []),
    (MsgType.PING, {"q": 1, "t": "node1"}),  # missing key
    (MsgType.PING, {"q": 1, "t": "node1", "u": [], "x": 1}),  # unknown key
    (MsgType.PING, {"q": -1, "t": "node1", "u": []}),
    (MsgType.PING, {"q": 2**32, "t": "node1", "u": []}),
    (MsgType.PING, {"q": True, "t": "node1", "u": []}),  # bool is not a seq
    (MsgType.PING, {"q": 1.0, "t": "node1", "u": []}),
    (MsgType.PING, {"q": 1, "t": "", "u": []}),
    (MsgType.PING, {"q": 1, "t": "x" * 129, "u": []}),
    (MsgType.PING, {"q": 1, "t": "no\nde", "u": []}),
    (MsgType.PING, {"q": 1, "t": b"node1", "u": []}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [ALIVE] * 65}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": {"k": 0}}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "k": 3}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "i": -1}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "i": 2**53 + 1}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "a": ["10.0.0.2"]}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "a": ["10.0.0.2", 0]}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "a": ["10.0.0.2", 65536]}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "a": ["", 7946]}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "m": {"k": [1]}}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "m": {"k": float("nan")}}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "m": {"k": "v" * 129}}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "m": {f"k{i}": i for i in range(17)}}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "m": {f"k{i}": "v" * 100 for i in range(3)}}]}),
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{**ALIVE, "f": "node3"}]}),  # alive with origin
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{"k": 1, "n": "node2", "i": 0}]}),  # no origin
    (MsgType.PING, {"q": 1, "t": "node1", "u": [{"k": 1, "n": "node2", "i": 0, "f": "n", "a": 1}]}),
    (MsgType.ACK, {"q": 1}),
    (MsgType.ACK, {"q": "1", "u": []}),
    (MsgType.PING_REQ, {"q": 1, "t": "node3", "a": ["10.0.0.3", 7946], "k": 1, "u": []}),
    (MsgType.PING_REQ, {"q": 1, "t": "node3", "a": "10.0.0.3:7946", "k": True, "u": []}),
    (MsgType.NACK, {"q": 1, "u": []}),
    (MsgType.NACK, {}),
    (MsgType.SYNC, {"m": [ENTRY]}),  # missing reply flag
    (MsgType.SYNC, {"m": [{**ENTRY, "s": 4}], "r": False}),
    (MsgType.SYNC, {"m": [ENTRY] * 65, "r": False}),
    (MsgType.SYNC_REPLY, {"m": [{**ENTRY, "m": None}]}),
    (MsgType.SYNC_REPLY, {"m": ENTRY}),
    (MsgType.LEAVE, {"i": "0"}),
    (MsgType.LEAVE, {"i": 0, "q": 1}),
    (MsgType.GOSSIP, {"u": [ALIVE], "q": 1}),
    (MsgType.GOSSIP, {"u": "node2"}),
    (MsgType.MANIFEST, {"kind": "x"}),  # not a membership message at all
]


def fresh() -> Membership:
    m = Membership("node1", ("10.0.0.1", 7946), {"http": 8001}, MembershipConfig.lan(),
                   random.Random(1))
    m.tick(0.0)
    return m


@pytest.mark.parametrize("msg_type", MEMBERSHIP_TYPES)
def test_well_formed_bodies_are_accepted(msg_type):
    m = fresh()
    m.handle("node2", ("10.0.0.2", 7946), msg_type, GOOD[msg_type], 1.0)
    assert sum(v for k, v in m.counters.items() if k.startswith("rejected.malformed")) == 0
    assert m.counters[f"received.{msg_type.name.lower()}"] == 1


@pytest.mark.parametrize("msg_type,body", BAD, ids=[f"{t.name}-{i}" for i, (t, _) in enumerate(BAD)])
def test_malformed_body_is_rejected_and_counted_without_effect(msg_type, body):
    m = fresh()
    before = m.members()
    assert m.handle("node2", ("10.0.0.2", 7946), msg_type, body, 1.0) == []
    assert m.counters["rejected.malformed"] == 1
    assert m.members() == before and m.drain_events() == []


def test_bad_sender_identity_or_address_is_rejected():
    m = fresh()
    good = GOOD[MsgType.ACK]
    assert m.handle("", ("10.0.0.2", 7946), MsgType.ACK, good, 1.0) == []
    assert m.handle("node2", ("10.0.0.2", -1), MsgType.ACK, good, 1.0) == []
    assert m.handle("node1", ("10.0.0.2", 7946), MsgType.ACK, good, 1.0) == []  # ourselves
    assert m.counters["rejected.malformed"] == 3


def test_built_bodies_round_trip_through_the_validator():
    alive = Update(State.ALIVE, "node2", 3, ("h", 1), {"a": 1.5, "b": None, "c": True})
    for u in (alive, Update(State.SUSPECT, "node2", 3, origin="node4"),
              Update(State.DEAD, "node2", 3, origin="node4"), Update(State.LEFT, "node2", 3)):
        body = msgpack.unpackb(msgpack.packb({"q": 1, "u": [encode_update(u)]}), raw=False)
        assert parse(MsgType.ACK, body).updates == [u]
    row = encode_entry("node2", 1, State.SUSPECT, ("h", 2), {})
    assert parse(MsgType.SYNC_REPLY, {"m": [row]}).entries[0].state == State.SUSPECT


def test_outgoing_bodies_of_a_live_node_all_validate():
    from gossipnet.sim import Swarm
    swarm = Swarm(6, seed=3)
    seen = set()
    original = swarm._send

    def checking_send(node, outs):
        for o in outs:
            if o.msg_type != MsgType.MANIFEST:
                parse(o.msg_type, msgpack.unpackb(msgpack.packb(o.body), raw=False))
                seen.add(o.msg_type)
        original(node, outs)

    swarm._send = checking_send
    swarm.run(40.0)
    swarm.crash("n003")
    swarm.run(20.0)
    swarm.leave("n004")
    swarm.run(5.0)
    assert seen == set(MEMBERSHIP_TYPES)


plain = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True) | st.text(max_size=40) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=3) | st.sampled_from("qtuakmnisfr") | st.integers(), children,
                      max_size=6),
    max_leaves=30,
)


def near_miss(msg_type: MsgType) -> st.SearchStrategy:
    """Valid bodies with one value swapped for arbitrary data: reaches the deep checks."""
    good = GOOD[msg_type]
    return st.sampled_from(sorted(good)).flatmap(
        lambda key: plain.map(lambda v: {**good, key: v}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg_type=st.sampled_from(list(MsgType)), data=st.data())
def test_arbitrary_bodies_never_raise(msg_type, data):
    body = data.draw(plain | (near_miss(msg_type) if msg_type in GOOD else plain))
    m = fresh()
    out = m.handle("node2", ("10.0.0.2", 7946), msg_type, body, 1.0)
    assert isinstance(out, list)
    for o in out:
        parse(o.msg_type, o.body)  # whatever we answer is itself well formed
    m.tick(2.0)


@settings(max_examples=100, deadline=None)
@given(body=plain)
def test_parse_raises_only_bad_body(body):
    for msg_type in MEMBERSHIP_TYPES:
        try:
            parse(msg_type, body)
        except BadBody:
            pass


def test_message_type_given_as_a_plain_int_works_and_unknown_types_are_rejected():
    m = fresh()
    out = m.handle("node2", ("10.0.0.2", 7946), 1, {"q": 5, "t": "node1", "u": []}, 1.0)
    assert [o.msg_type for o in out][:1] == [MsgType.ACK]
    assert m.handle("node2", ("10.0.0.2", 7946), 99, {"q": 5}, 1.0) == []
    assert m.handle("node2", ("10.0.0.2", 7946), MsgType.MANIFEST, {"q": 5}, 1.0) == []
    assert m.counters["rejected.malformed"] == 2
