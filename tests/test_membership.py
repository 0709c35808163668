"""Membership state machine driven by hand with a fake clock: SWIM + Lifeguard behaviour."""

from __future__ import annotations

import random

import msgpack
import pytest

from gossipnet.membership import (EventKind, Membership, MembershipConfig, Outgoing, State,
                                  retransmit_limit, suspicion_timeout)
from gossipnet.membership.codec import Update, encode_entry, encode_update
from gossipnet.membership.timers import Awareness, Suspicion, remaining_timeout
from gossipnet.wire.types import MsgType

LAN = MembershipConfig.lan()


def node(i: int, config: MembershipConfig = LAN, incarnation: int = 0) -> Membership:
    return Membership(f"node{i}", (f"10.0.0.{i}", 7946), {"http": 8000 + i}, config,
                      random.Random(i), incarnation)


class Wire:
    """Routes Outgoing between Membership objects; ``down`` nodes drop everything."""

    def __init__(self, *members: Membership) -> None:
        self.by_addr = {m.self_addr: m for m in members}
        self.down: set[str] = set()
        self.cut: set[tuple[str, str]] = set()
        self.log: list[tuple[str, str, MsgType, dict]] = []

    def send(self, src: Membership, outs: list[Outgoing], now: float) -> None:
        queue = [(src, o) for o in outs]
        while queue:
            sender, out = queue.pop(0)
            dst = self.by_addr.get(out.addr)
            body = msgpack.unpackb(msgpack.packb(out.body, use_bin_type=True), raw=False)
            if dst is None:
                continue
            self.log.append((sender.self_id, dst.self_id, out.msg_type, body))
            if (dst.self_id in self.down or sender.self_id in self.down
                    or (sender.self_id, dst.self_id) in self.cut):
                continue
            replies = dst.handle(sender.self_id, sender.self_addr, out.msg_type, body, now)
            queue += [(dst, r) for r in replies]

    def run(self, start: float, end: float, step: float = 0.05) -> float:
        now = start
        while now < end:
            for m in self.by_addr.values():
                if m.self_id not in self.down:
                    self.send(m, m.tick(now), now)
            now = round(now + step, 6)
        return now


def joined(*members: Membership) -> Wire:
    wire = Wire(*members)
    first = members[0]
    for m in members[1:]:
        m.add_seed(first.self_addr, 0.0)
    wire.run(0.0, 3.0)
    for m in members:
        assert {v.node_id for v in m.alive_peers()} == {o.self_id for o in members} - {m.self_id}
        m.drain_events()
    return wire


def test_config_presets_follow_memberlist():
    assert (LAN.probe_interval, LAN.probe_timeout, LAN.indirect_checks) == (1.0, 0.5, 3)
    assert (LAN.suspicion_mult, LAN.suspicion_max_timeout_mult, LAN.push_pull_interval) == (4, 6, 30.0)
    local = MembershipConfig.local()
    assert (local.probe_timeout, local.indirect_checks, local.suspicion_mult) == (0.2, 1, 3)


def test_default_body_budget_fits_the_wire_envelope():
    from gossipnet.wire.envelope import MAX_UDP_BODY
    assert LAN.max_body_bytes <= MAX_UDP_BODY


@pytest.mark.parametrize("change", [{"probe_interval": 0}, {"probe_timeout": 2.0},
                                    {"suspicion_mult": 0}, {"max_body_bytes": 10},
                                    {"probe_interval": float("nan")}, {"tombstone_time": -1}])
def test_bad_config_is_refused_with_the_field_named(change):
    with pytest.raises(ValueError, match="MembershipConfig"):
        LAN.with_(**change)


def test_suspicion_bounds_are_4_to_24_seconds_up_to_10_nodes():
    for n in (1, 3, 10):
        assert suspicion_timeout(LAN, n) == 4.0
        assert LAN.suspicion_max_timeout_mult * suspicion_timeout(LAN, n) == 24.0
    assert suspicion_timeout(LAN, 100) == pytest.approx(8.0)
    assert retransmit_limit(LAN, 9) == 4 and retransmit_limit(LAN, 10) == 8


def test_suspicion_timer_matches_memberlist_table():
    # memberlist suspicion_test.go TestSuspicion_remainingSuspicionTime: k=3, min 2 s, max 30 s.
    assert remaining_timeout(0, 3, 2.0, 30.0) == 30.0
    assert remaining_timeout(1, 3, 2.0, 30.0) == 16.0
    assert remaining_timeout(2, 3, 2.0, 30.0) == pytest.approx(7.81)
    assert remaining_timeout(3, 3, 2.0, 30.0) == 2.0
    s = Suspicion("origin", 3, 2.0, 30.0, start=100.0)
    assert s.deadline == 130.0
    assert not s.confirm("origin")  # the accuser does not confirm itself
    assert s.confirm("x") and s.deadline == 116.0
    assert not s.confirm("x")  # the same confirmer counts once
    assert s.confirm("y") and s.confirm("z") and s.deadline == 102.0
    assert not s.confirm("w")
    assert Suspicion("o", 0, 4.0, 24.0, start=0.0).deadline == 4.0


def test_awareness_scales_timeouts_and_saturates():
    a = Awareness(8)
    a.apply(-3)
    assert a.scale(0.5) == 0.5
    a.apply(100)
    assert a.score == 7 and a.scale(0.5) == 4.0


def test_seed_join_exchanges_full_state_and_meta():
    a, b = node(1), node(2)
    b.add_seed(a.self_addr, 0.0)
    wire = Wire(a, b)
    wire.send(b, b.tick(0.0), 0.0)
    assert [m for _, _, m, _ in wire.log[:2]] == [MsgType.SYNC, MsgType.SYNC_REPLY]
    assert a.member("node2").state == State.ALIVE and a.member("node2").meta == {"http": 8002}
    assert b.member("node1").addr == ("10.0.0.1", 7946)
    assert [e.kind for e in a.drain_events()] == [EventKind.JOINED]
    # answered: no more join attempts
    wire.log.clear()
    wire.run(0.05, 5.0)
    assert not any(t == MsgType.SYNC for _, _, t, _ in wire.log)


def test_unanswered_seed_is_retried_with_backoff():
    b = node(2)
    b.add_seed(("10.9.9.9", 7946), 0.0)
    times = [t / 10 for t in range(0, 200) if any(
        o.msg_type == MsgType.SYNC for o in b.tick(t / 10))]
    assert times[:4] == [0.0, 2.0, 6.0, 14.0]


def test_ping_is_acked_with_the_same_sequence_number():
    a, b = node(1), node(2)
    joined(a, b)
    out = a.handle("node2", b.self_addr, MsgType.PING, {"q": 77, "t": "node1", "u": []}, 5.0)
    assert [(o.msg_type, o.body["q"], o.addr) for o in out] == [(MsgType.ACK, 77, b.self_addr)]


def test_ping_meant_for_another_node_is_rejected_and_counted():
    a, b = node(1), node(2)
    joined(a, b)
    assert a.handle("node2", b.self_addr, MsgType.PING, {"q": 1, "t": "node9", "u": []}, 5.0) == []
    assert a.counters["rejected.wrong_target"] == 1


def test_rumours_spread_by_one_way_gossip_that_nobody_answers():
    members = [node(i) for i in range(1, 5)]
    wire = joined(*members)
    a = members[0]
    wire.log.clear()
    assert a.counters["received.gossip"] > 0  # joining already spread news this way
    before = a.counters["received.gossip"]
    rumour = {"u": [encode_update(Update(State.SUSPECT, "node4", 0, origin="node3"))]}
    assert a.handle("node3", ("10.0.0.3", 7946), MsgType.GOSSIP, rumour, 5.0) == []
    assert a.counters["received.gossip"] == before + 1 and "node4" in a._t.suspects
    wire.send(a, a.tick(5.2), 5.2)  # a's gossip round passes the rumour on
    sent = [(dst, body) for src, dst, t, body in wire.log if src == "node1" and t == MsgType.GOSSIP]
    assert sent and all(set(body) == {"u"} for _, body in sent)
    assert all("node4" in members[int(dst[-1]) - 1]._t.suspects or dst == "node4" for dst, _ in sent)
    # one-way: the only ACKs coming back answer the round's probe PINGs, none the GOSSIPs
    pings = sum(1 for src, _, t, _ in wire.log if src == "node1" and t == MsgType.PING)
    acks = sum(1 for _, dst, t, _ in wire.log if dst == "node1" and t == MsgType.ACK)
    assert acks == pings


def test_ack_nobody_asked_for_is_counted():
    a, b = node(1), node(2)
    joined(a, b)
    assert a.handle("node2", b.self_addr, MsgType.ACK, {"q": 123456, "u": []}, 5.0) == []
    assert a.counters["rejected.unexpected"] == 1


def test_dead_node_is_suspected_after_indirect_probes_fail_then_declared_dead():
    a, b, c = node(1), node(2), node(3)
    wire = joined(a, b, c)
    wire.down.add("node3")
    wire.log.clear()
    now = wire.run(3.0, 12.0)
    kinds = [t for s, d, t, _ in wire.log if s == "node1"]
    assert MsgType.PING_REQ in kinds  # a asked b to probe c
    assert any(t == MsgType.NACK and d == "node1" for s, d, t, _ in wire.log)  # b: no ack
    events = {(e.kind, e.node_id): e.at for e in a.drain_events()}
    suspected, died = events[(EventKind.SUSPECT, "node3")], events[(EventKind.DEAD, "node3")]
    # 3 nodes: too few to expect confirmations (k = 0), so the minimum, 4 s, applies.
    assert died - suspected == pytest.approx(4.0, abs=0.06)
    assert a.member("node3").state == State.DEAD
    assert b.member("node3").state == State.DEAD
    assert now >= died


def test_indirect_probe_keeps_a_node_alive_when_the_direct_path_is_broken():
    a, b, c = node(1), node(2), node(3)
    wire = joined(a, b, c)
    wire.cut |= {("node1", "node3"), ("node3", "node1")}
    wire.run(3.0, 40.0)
    assert a.member("node3").state == State.ALIVE
    assert c.member("node1").state == State.ALIVE
    assert a.counters["probes_acked_indirect"] > 0 and b.counters["relays_acked"] > 0
    assert not [e for e in a.drain_events() + c.drain_events() if e.kind == EventKind.SUSPECT]


def test_suspected_node_refutes_with_a_higher_incarnation():
    a, b = node(1), node(2)
    wire = joined(a, b)
    suspect = encode_update(Update(State.SUSPECT, "node2", 0, origin="node7"))
    out = b.handle("node1", a.self_addr, MsgType.PING, {"q": 5, "t": "node2", "u": [suspect]}, 3.0)
    assert b.incarnation == 1 and b.counters["refutations"] == 1
    alive = [u for u in out[0].body["u"] if u["n"] == "node2"]
    assert alive == [{"k": 0, "n": "node2", "i": 1, "a": ["10.0.0.2", 7946], "m": {"http": 8002}}]
    # a hears the suspicion and the refutation: alive again at incarnation 1
    a.handle("node9", ("10.0.0.9", 7946), MsgType.ACK, {"q": 1, "u": [suspect]}, 3.0)
    assert a.member("node2").state == State.SUSPECT
    wire.send(b, out, 3.0)
    assert a.member("node2").state == State.ALIVE and a.member("node2").incarnation == 1
    assert [e.kind for e in a.drain_events()] == [EventKind.SUSPECT, EventKind.RECOVERED]


def test_stale_rumours_with_old_incarnations_are_ignored():
    a, b = node(1), node(2, incarnation=5)
    joined(a, b)
    stale = [encode_update(Update(State.SUSPECT, "node2", 4, origin="node3")),
             encode_update(Update(State.DEAD, "node2", 3, origin="node3"))]
    a.handle("node3", ("10.0.0.3", 7946), MsgType.ACK, {"q": 1, "u": stale}, 4.0)
    assert a.member("node2").state == State.ALIVE
    out = b.handle("node1", a.self_addr, MsgType.ACK, {"q": 1, "u": stale}, 4.0)
    assert b.incarnation == 5 and b.counters["refutations"] == 0 and out == []


def test_dead_rumour_about_ourselves_is_refuted():
    a, b = node(1), node(2)
    joined(a, b)
    dead = encode_update(Update(State.DEAD, "node1", 0, origin="node2"))
    a.handle("node2", b.self_addr, MsgType.ACK, {"q": 1, "u": [dead]}, 4.0)
    assert a.incarnation == 1 and a.member("node1").state == State.ALIVE


def test_restarted_node_with_higher_incarnation_becomes_alive_again():
    a, b = node(1), node(2)
    wire = joined(a, b)
    wire.down.add("node2")
    wire.run(3.0, 10.0)
    assert a.member("node2").state == State.DEAD
    b2 = node(2, incarnation=b.incarnation + 1)  # persisted counter + 1
    wire = Wire(a, b2)
    b2.add_seed(a.self_addr, 10.0)
    wire.send(b2, b2.tick(10.0), 10.0)
    assert a.member("node2").state == State.ALIVE and a.member("node2").incarnation == 1
    assert EventKind.RECOVERED in [e.kind for e in a.drain_events()]


def test_restart_that_lost_its_incarnation_recovers_by_refutation():
    config = LAN.with_(dead_node_reclaim_time=1000.0)
    a, b = node(1, config), node(2, config)
    wire = joined(a, b)
    wire.down.add("node2")
    wire.run(3.0, 10.0)
    assert a.member("node2").state == State.DEAD
    b2 = node(2, config)  # incarnation 0 again, same as the tombstone
    wire = Wire(a, b2)
    b2.add_seed(a.self_addr, 10.0)
    wire.run(10.0, 13.0)
    assert b2.incarnation == 1  # it read "node2 is dead at 0" in a's state and refuted
    assert a.member("node2").state == State.ALIVE and a.member("node2").incarnation == 1


def test_dead_node_reclaims_its_id_at_a_new_address_after_the_reclaim_time():
    a, b = node(1), node(2)
    wire = joined(a, b)
    wire.down.add("node2")
    wire.run(3.0, 10.0)
    dead_since = a.member("node2").since
    moved = encode_update(Update(State.ALIVE, "node2", 0, ("10.0.0.99", 7946), {"http": 1}))
    a.handle("node2", ("10.0.0.99", 7946), MsgType.ACK, {"q": 1, "u": [moved]}, dead_since + 5)
    assert a.member("node2").state == State.DEAD  # too soon
    a.handle("node2", ("10.0.0.99", 7946), MsgType.ACK, {"q": 1, "u": [moved]}, dead_since + 11)
    assert a.member("node2").state == State.ALIVE and a.member("node2").addr == ("10.0.0.99", 7946)


def test_only_the_node_itself_can_change_its_address_without_a_new_incarnation():
    a, b = node(1), node(2)
    joined(a, b)
    moved = encode_update(Update(State.ALIVE, "node2", 0, ("10.0.0.66", 7946), {"http": 1}))
    a.handle("node3", ("10.0.0.3", 7946), MsgType.ACK, {"q": 1, "u": [moved]}, 4.0)
    assert a.member("node2").addr == ("10.0.0.2", 7946)
    a.handle("node2", b.self_addr, MsgType.ACK, {"q": 1, "u": [moved]}, 4.0)
    assert a.member("node2").addr == ("10.0.0.66", 7946) and a.member("node2").meta == {"http": 1}
    assert [e.kind for e in a.drain_events()] == [EventKind.UPDATED]


def test_leave_is_announced_and_recorded_as_left():
    a, b, c = node(1), node(2), node(3)
    wire = joined(a, b, c)
    out = a.leave(5.0)
    assert {o.msg_type for o in out} == {MsgType.LEAVE} and len(out) == 2
    wire.send(a, out, 5.0)
    assert b.member("node1").state == State.LEFT and c.member("node1").state == State.LEFT
    assert a.tick(6.0) == [] and a.leave(6.0) == []
    assert a.handle("node2", b.self_addr, MsgType.PING, {"q": 1, "t": "node1", "u": []}, 6) == []
    assert a.counters["rejected.leaving"] == 1
    wire.run(5.0, 20.0)
    assert b.member("node1").state == State.LEFT  # no probe turns it into "dead"


def test_tombstones_are_reaped_after_the_tombstone_time():
    config = LAN.with_(tombstone_time=40.0)
    a, b = node(1, config), node(2, config)
    wire = joined(a, b)
    wire.down.add("node2")
    wire.run(3.0, 20.0)
    assert a.member("node2").state == State.DEAD
    wire.run(20.0, 100.0, step=0.5)
    assert a.member("node2") is None and a.counters["reaped"] == 1


def test_discovered_peer_is_joined_unless_already_known_alive_there():
    a, b = node(1), node(2)
    joined(a, b)
    a.discovered("node2", b.self_addr, 5.0)
    assert not [o for o in a.tick(5.0) if o.msg_type == MsgType.SYNC]
    a.discovered(None, ("10.0.0.7", 7946), 5.0)
    # already in a swarm: the join is spread over the retry interval, not immediate
    syncs = [o.addr for t in range(50, 71) for o in a.tick(t / 10) if o.msg_type == MsgType.SYNC]
    assert syncs == [("10.0.0.7", 7946)]


def many_members(m: Membership, count: int, meta_chars: int = 20) -> None:
    rows = [encode_entry(f"peer{i:04d}-" + "x" * 40, 0, State.ALIVE, (f"10.1.{i // 250}.{i % 250}", 7946),
                         {"kind": "k" * meta_chars, "http": 8000}) for i in range(count)]
    for row in rows:  # each speaks for itself: a third party's rows only introduce nodes
        m.handle(row["n"], tuple(row["a"]), MsgType.SYNC_REPLY, {"m": [row]}, 1.0)


@pytest.mark.parametrize("budget", [256, 600, 1190, 1400])
def test_piggy_backed_updates_fill_but_never_exceed_the_byte_budget(budget):
    m = node(1, LAN.with_(max_body_bytes=budget))
    many_members(m, 120)
    sizes = []
    for t in range(40):
        for o in m.tick(1.0 + t):
            size = len(msgpack.packb(o.body, use_bin_type=True))
            assert size <= budget
            sizes.append((size, len(o.body.get("u", o.body.get("m", [])))))
    assert sizes and max(n for _, n in sizes) >= 2
    assert max(s for s, _ in sizes) > budget - 130  # filled: another update would not fit


def test_full_state_sync_is_split_into_datagrams_that_fit():
    m = node(1)
    many_members(m, 150, meta_chars=60)
    out = m._sync(("10.0.0.2", 7946), MsgType.SYNC)
    assert len(out) > 5
    assert all(len(msgpack.packb(o.body, use_bin_type=True)) <= LAN.max_body_bytes for o in out)
    assert [o.body["r"] for o in out] == [True] + [False] * (len(out) - 1)
    assert sum(len(o.body["m"]) for o in out) == 151


def test_awareness_grows_when_probes_fail_without_nacks_and_heals_on_acks():
    a, b, c = node(1), node(2), node(3)
    wire = joined(a, b, c)
    wire.down |= {"node2", "node3"}  # everyone else gone: failed probes and no nacks
    wire.run(3.0, 12.0)
    assert a.awareness >= 2
    wire.down.clear()
    restarted = [node(2, incarnation=9), node(3, incarnation=9)]
    wire = Wire(a, *restarted)
    for r in restarted:
        r.add_seed(a.self_addr, 12.0)
    wire.run(12.0, 60.0)
    assert a.awareness == 0


def test_outdated_rumour_about_us_is_answered_with_our_current_alive():
    a, b = node(1), node(2, incarnation=3)
    wire = joined(a, b)
    wire.run(3.0, 30.0)  # b's own alive rumour has run out of retransmits
    assert b.counters["nudges"] == 0 and b.member("node1").state == State.ALIVE
    stale = encode_update(Update(State.DEAD, "node2", 1, origin="node1"))
    out = b.handle("node1", a.self_addr, MsgType.PING, {"q": 9, "t": "node2", "u": [stale]}, 30.0)
    assert b.incarnation == 3 and b.counters["nudges"] == 1
    assert {"n": "node2", "i": 3}.items() <= out[0].body["u"][0].items()


def test_independent_suspicions_shorten_the_timer_and_are_regossiped():
    members = [node(i) for i in range(1, 7)]  # 6 nodes: k = suspicion_mult - 2 = 2
    a = members[0]
    joined(*members)
    rumour = {"q": 1, "u": [encode_update(Update(State.SUSPECT, "node3", 0, origin="node2"))]}
    a.handle("node2", ("10.0.0.2", 7946), MsgType.ACK, rumour, 10.0)
    assert a._t.suspects["node3"].suspicion.deadline == pytest.approx(10.0 + 24.0)
    second = {"q": 1, "u": [encode_update(Update(State.SUSPECT, "node3", 0, origin="node4"))]}
    a.handle("node4", ("10.0.0.4", 7946), MsgType.ACK, second, 11.0)
    assert a._t.suspects["node3"].suspicion.deadline == pytest.approx(10.0 + 11.381, abs=1e-3)
    assert a.counters["suspicion_confirmations"] == 1
    sent = a.handle("node5", ("10.0.0.5", 7946), MsgType.PING, {"q": 2, "t": "node1", "u": []}, 11)
    assert {"k": 1, "n": "node3", "i": 0, "f": "node4"} in sent[0].body["u"]


def test_bad_peer_address_is_a_user_error_and_bad_discovery_is_counted():
    from gossipnet.errors import UserError
    a = node(1)
    with pytest.raises(UserError, match="host:port"):
        a.add_seed(("10.0.0.2", 70000))
    with pytest.raises(UserError, match="--port"):
        Membership("node1", ("10.0.0.1", 0))
    a.discovered("x" * 500, ("10.0.0.2", 7946), 0.0)
    a.discovered(None, ("", 7946), 0.0)
    assert a.counters["rejected.malformed"] == 2 and a.tick(0.0) == []
