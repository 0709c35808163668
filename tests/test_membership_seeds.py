"""Seeds against fake mDNS records: few, tried a few times, then set aside; --peer seeds stay."""

from __future__ import annotations

import random

from gossipnet.membership import Membership, MembershipConfig
from gossipnet.membership.core import DISCOVERED_SEED_ATTEMPTS, MAX_DISCOVERED_SEEDS
from gossipnet.wire.types import MsgType


def member(i: int) -> Membership:
    return Membership(f"node{i}", (f"10.0.0.{i}", 7946), {}, MembershipConfig.lan(), random.Random(i))


def syncs_until(m: Membership, t0: float, t1: float, step: float = 0.25) -> list[tuple]:
    out = []
    t = t0
    while t <= t1:
        out += [o.addr for o in m.tick(t) if o.msg_type == MsgType.SYNC]
        t += step
    return out


def test_fake_records_are_capped_expire_and_do_not_keep_a_real_peer_out():
    a = member(1)
    a.tick(0.0)
    fakes = [(f"10.66.{i // 250}.{i % 250}", 7946) for i in range(256)]
    for addr in fakes:
        a.discovered(None, addr, 0.0, preferred=False)
    assert a.counters["seeds_refused"] == 256 - MAX_DISCOVERED_SEEDS
    sent = syncs_until(a, 0.0, 5.0)
    real = ("10.0.0.2", 7946)
    a.discovered("node2", real, 5.0)  # arrives while the fakes fill every slot
    sent += syncs_until(a, 5.25, 120.0)
    assert real in sent  # the real peer got its join
    fake_syncs = [s for s in sent if s != real]
    assert len(fake_syncs) <= MAX_DISCOVERED_SEEDS * DISCOVERED_SEED_ATTEMPTS
    assert a.counters["seeds_expired"] + a.counters["seeds_evicted"] >= MAX_DISCOVERED_SEEDS
    # re-announcing the same fakes does not bring them back for a while
    before = a.counters["seeds_quarantined"]
    for addr in fakes[:10]:
        a.discovered(None, addr, 130.0, preferred=False)
    assert a.counters["seeds_quarantined"] >= before + 1
    assert not [s for s in syncs_until(a, 130.0, 200.0) if s in fakes]


def test_static_peer_seeds_are_kept_until_they_answer():
    a = member(1)
    a.add_seed(("10.0.0.9", 7946), 0.0)
    for i in range(100):
        a.discovered(None, (f"10.66.0.{i}", 7946), 0.0)
    sent = syncs_until(a, 0.0, 400.0, step=1.0)
    assert sent.count(("10.0.0.9", 7946)) > DISCOVERED_SEED_ATTEMPTS  # still retried
    assert max(sent.count((f"10.66.0.{i}", 7946)) for i in range(100)) <= DISCOVERED_SEED_ATTEMPTS


def test_an_on_subnet_record_displaces_an_untried_off_subnet_one():
    a = member(1)
    a.tick(0.0)
    for i in range(MAX_DISCOVERED_SEEDS):
        a.discovered(None, (f"192.0.2.{i}", 7946), 0.0, preferred=False)
    a.discovered(None, ("192.0.2.200", 7946), 0.0, preferred=False)
    assert a.counters["seeds_refused"] == 1
    a.discovered("node3", ("10.0.0.3", 7946), 0.0, preferred=True)
    assert a.counters["seeds_evicted"] == 1
    assert ("10.0.0.3", 7946) in syncs_until(a, 0.0, 3.0)


def test_every_datagram_names_its_recipient_except_a_join_to_a_seed():
    """The envelope binds each message to the node it is for (docs/WIRE.md): membership must say whom."""
    nodes = {f"node{i}": member(i) for i in range(1, 5)}
    by_addr = {m.self_addr: m for m in nodes.values()}
    for m in list(nodes.values())[1:]:
        m.add_seed(nodes["node1"].self_addr, 0.0)
    seen_types = set()
    queue = []
    t = 0.0
    down = "node4"
    while t < 60.0:
        if t >= 20.0 and down in nodes:  # one node dies: suspicion, indirect probes, NACKs
            by_addr.pop(nodes.pop(down).self_addr)
        for m in nodes.values():
            queue += [(m, o) for o in m.tick(t)]
        while queue:
            src, o = queue.pop(0)
            seen_types.add(o.msg_type)
            dst = by_addr.get(o.addr)
            if o.to is None:
                assert o.msg_type == MsgType.SYNC, o
            elif dst is not None:
                assert o.to == dst.self_id, o
            if dst is not None:
                queue += [(dst, r) for r in dst.handle(src.self_id, src.self_addr, o.msg_type, o.body, t)]
        t += 0.1
    assert {MsgType.PING, MsgType.ACK, MsgType.SYNC, MsgType.SYNC_REPLY, MsgType.PING_REQ} <= seen_types
