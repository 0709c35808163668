"""Members with valid credentials lie about others: signed alive records, bounded accusations,
introductions instead of rows (issue 12, items 6 and 7). Sans-IO, with a fake clock."""

from __future__ import annotations

import random

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipnet.membership import Membership, MembershipConfig, State
from gossipnet.membership.codec import MAX_INCARNATION, Update, encode_entry, encode_update
from gossipnet.membership.intros import PER_ORIGIN
from gossipnet.membership.records import RecordSigner
from gossipnet.trust.identity import node_id_of
from gossipnet.wire.types import MsgType

from tests.test_membership import Wire

LAN = MembershipConfig.lan()
KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32) for i in range(6)]


def signed(i: int, incarnation: int = 1) -> Membership:
    key = KEYS[i]
    nid = node_id_of(key.public_key().public_bytes_raw())
    return Membership(nid, (f"10.0.0.{i + 1}", 7946), {"http": 8000 + i}, LAN, random.Random(i),
                      incarnation, signing_key=key)


def swarm(n: int = 4) -> tuple[Wire, list[Membership]]:
    nodes = [signed(i) for i in range(n)]
    wire = Wire(*nodes)
    for m in nodes[1:]:
        m.add_seed(nodes[0].self_addr, 0.0)
    wire.run(0.0, 6.0)
    for m in nodes:
        assert {v.node_id for v in m.alive_peers()} == {o.self_id for o in nodes} - {m.self_id}
    return wire, nodes


def lie(liar: Membership, victim: Membership, updates: list[dict], now: float) -> None:
    """The liar's authenticated GOSSIP datagram carrying ``updates`` (as the wire would)."""
    body = msgpack.unpackb(msgpack.packb({"u": updates}, use_bin_type=True), raw=False)
    victim.handle(liar.self_id, liar.self_addr, MsgType.GOSSIP, body, now)


def test_dead_rumour_at_the_maximum_incarnation_cannot_kill_a_node_for_good():
    wire, (a, b, liar, y) = swarm(4)
    kill = encode_update(Update(State.DEAD, y.self_id, MAX_INCARNATION, origin=liar.self_id))
    for victim in (a, b, y):
        lie(liar, victim, [kill], 6.0)
    for victim in (a, b):
        assert victim.member(y.self_id).state == State.ALIVE
        assert victim.counters["rejected.future_incarnation"] == 1
    assert y.incarnation < MAX_INCARNATION and y.counters["rejected.future_incarnation"] == 1
    # An honest accusation at the real incarnation is still refuted, and the refutation spreads.
    honest = encode_update(Update(State.DEAD, y.self_id, y.incarnation, origin=liar.self_id))
    lie(liar, a, [honest], 6.0)
    assert a.member(y.self_id).state == State.DEAD
    wire.run(6.0, 20.0)
    assert a.member(y.self_id).state == State.ALIVE and y.incarnation == 2


def test_an_accusation_a_little_above_the_incarnation_is_refuted_not_fatal():
    wire, (a, b, liar, y) = swarm(4)
    inc = y.incarnation
    lie_ = encode_update(Update(State.DEAD, y.self_id, inc + 8, origin=liar.self_id))
    for victim in (a, b, y):
        lie(liar, victim, [lie_], 6.0)
    assert a.member(y.self_id).state == State.DEAD  # within the lead: believed...
    assert y.incarnation == inc + 9  # ...and out-bid by y itself
    wire.run(6.0, 20.0)
    assert all(m.member(y.self_id).state == State.ALIVE for m in (a, b))


def test_unsigned_or_foreign_alive_rumour_cannot_move_a_nodes_address():
    wire, (a, b, liar, y) = swarm(4)
    y_addr = a.member(y.self_id).addr
    hijack = Update(State.ALIVE, y.self_id, y.incarnation + 5, liar.self_addr, {"http": 1})
    forged_by_liar = RecordSigner(KEYS[2]).sign(  # the liar signs with its own key...
        hijack._replace(node_id=liar.self_id))._replace(node_id=y.self_id)  # ...under y's id
    tampered = y._t.self_update()._replace(addr=liar.self_addr, incarnation=y.incarnation + 1)
    for u in (hijack, forged_by_liar, tampered):
        lie(liar, a, [encode_update(u)], 6.0)
    assert a.member(y.self_id).addr == y_addr and a.member(y.self_id).incarnation == y.incarnation
    assert a.counters["rejected.unsigned_record"] == 3
    # The same rumour in a SYNC row is refused too.
    row = encode_entry(y.self_id, y.incarnation + 5, State.ALIVE, liar.self_addr, {"http": 1})
    a.handle(liar.self_id, liar.self_addr, MsgType.SYNC_REPLY, {"m": [row]}, 6.0)
    assert a.member(y.self_id).addr == y_addr and a.counters["rejected.unsigned_record"] == 4


def test_a_relayed_signed_refutation_is_believed_without_hearing_the_node_itself():
    wire, (a, b, c, y) = swarm(4)
    lie(c, y, [encode_update(Update(State.SUSPECT, y.self_id, y.incarnation, origin=c.self_id))], 6.0)
    assert y.incarnation == 2
    refutation = y._t.self_update()
    lie(c, a, [encode_update(Update(State.SUSPECT, y.self_id, 1, origin=c.self_id))], 6.0)
    assert a.member(y.self_id).state == State.SUSPECT
    lie(c, a, [encode_update(refutation)], 6.1)  # relayed by c, signed by y
    assert a.member(y.self_id).state == State.ALIVE and a.member(y.self_id).incarnation == 2


def invented(d: int, i: int) -> dict:
    """A node that does not exist, with a valid signature: the liar made the key."""
    key = Ed25519PrivateKey.from_private_bytes(bytes([100 + d, i]) * 16)
    nid = node_id_of(key.public_key().public_bytes_raw())
    u = RecordSigner(key).sign(Update(State.ALIVE, nid, 1, (f"10.9.{d}.{i}", 7946), {}))
    return encode_entry(nid, 1, State.ALIVE, u.addr, {}, (u.pubkey, u.sig))


def test_invented_nodes_get_no_rows_and_a_real_node_still_joins():
    wire, (a, b, liar, y) = swarm(4)
    for d in range(65):  # issue 12's attack: 65 SYNC datagrams of 64 invented rows
        rows = [encode_entry(f"fake{d:02d}x{i:02d}", 1, State.ALIVE, (f"10.9.{d}.{i}", 7946), {})
                for i in range(64)]
        a.handle(liar.self_id, liar.self_addr, MsgType.SYNC_REPLY, {"m": rows}, 6.0)
    assert a.counters["rejected.unsigned_record"] == 65 * 64
    for d in range(3):  # the same with keys the liar made: signed, but nobody answers for them
        a.handle(liar.self_id, liar.self_addr, MsgType.SYNC_REPLY,
                 {"m": [invented(d, i) for i in range(64)]}, 6.0)
    assert len(a.members()) == 4  # ourselves and the three real peers
    assert len(a._t.intros) == PER_ORIGIN
    assert a.counters["rejected.intro_quota"] == 3 * 64 - PER_ORIGIN
    wire.run(6.0, 20.0)  # the introductions are pinged, never answer, expire
    assert len(a._t.intros) == 0 and a.counters["intros_expired"] == PER_ORIGIN
    assert a.awareness == 0  # pinging strangers is not probing members: health untouched
    late = signed(5)
    wire.by_addr[late.self_addr] = late
    late.add_seed(b.self_addr, 20.0)
    wire.run(20.0, 40.0)
    assert a.member(late.self_id) is not None and a.member(late.self_id).state == State.ALIVE


def test_a_third_partys_introduction_becomes_a_row_once_the_node_answers():
    wire, (a, b, c, y) = swarm(4)
    new = signed(4)
    wire.by_addr[new.self_addr] = new
    intro = encode_update(new._t.self_update())
    lie(b, a, [intro], 6.0)
    assert a.member(new.self_id) is None and new.self_id in a._t.intros
    wire.run(6.0, 8.0)  # a pings it, it acks: authenticated contact
    assert a.member(new.self_id).state == State.ALIVE
    assert a.counters["intro_acks"] >= 1 and a.counters["rejected.unexpected"] == 0


ACTIONS = st.lists(st.tuples(
    st.sampled_from(["alive", "suspect", "dead", "left", "row"]),
    st.integers(0, MAX_INCARNATION),
    st.sampled_from([0, 1]),  # which honest node the lie is about
    st.booleans(),  # to which of the two honest listeners
), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS)
def test_whatever_a_member_says_honest_nodes_keep_their_addresses_and_come_back_alive(actions):
    nodes = [signed(i) for i in range(4)]
    wire = Wire(*nodes)
    for m in nodes[1:]:
        m.add_seed(nodes[0].self_addr, 0.0)
    wire.run(0.0, 4.0)
    a, b, liar = nodes[0], nodes[1], nodes[3]
    addrs = {m.self_id: m.self_addr for m in nodes}
    now = 4.0
    for kind, inc, about, to in actions:
        y = (a, b)[about]
        victim = (b, a)[about] if to else y
        if kind == "row":
            body = {"m": [encode_entry(y.self_id, inc, State.DEAD, liar.self_addr, {})]}
            victim.handle(liar.self_id, liar.self_addr, MsgType.SYNC_REPLY, body, now)
            continue
        if kind == "alive":
            u = Update(State.ALIVE, y.self_id, inc, liar.self_addr, {"x": 1})
        elif kind == "left":
            u = Update(State.LEFT, y.self_id, inc)
        else:
            u = Update(State.SUSPECT if kind == "suspect" else State.DEAD, y.self_id, inc,
                       origin=liar.self_id)
        lie(liar, victim, [encode_update(u)], now)
        now += 0.1
    wire.down.add(liar.self_id)  # the liar falls silent: the honest nodes must recover
    wire.run(now, now + 60.0)
    for m in (a, b, nodes[2]):
        assert m.incarnation < MAX_INCARNATION
        for other in (a, b, nodes[2]):
            if other is m:
                continue
            view = m.member(other.self_id)
            assert view.addr == addrs[other.self_id]
            assert view.state == State.ALIVE, (m.self_id, other.self_id, view)
