"""The receiver against outsiders: budgets keyed by IP, bounded Ed25519 work, recipient binding."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gossipnet.trust.credentials import load_credentials
from gossipnet.trust.identity import Identity
from gossipnet.trust.swarm import Swarm
from gossipnet.wire import Accepted, MsgType, Reason, Receiver, ReceiverConfig, Rejected, Sealer
from gossipnet.wire.envelope import HEADER_LEN, SIG_LEN, recipient_tag
from gossipnet.wire.guards import TokenBuckets, source_key

NOW = 1_800_000_000_000


@pytest.fixture(scope="module")
def swarm() -> Swarm:
    return Swarm(Ed25519PrivateKey.generate(), "hardening")


def node(swarm: Swarm, incarnation: int = 1):
    ident = Identity.generate()
    creds = load_credentials(ident, NOW, swarm_token=swarm.token)
    return ident, Sealer(ident, creds, incarnation), Receiver(creds.policy, node_id=ident.node_id)


def test_source_key_ignores_ports_and_groups_ipv6_by_64():
    assert source_key("10.0.0.7") == "10.0.0.7"
    a = source_key("2001:db8:1:2:aaaa::1")
    assert a == source_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert a != source_key("2001:db8:1:3::1")
    assert source_key("::ffff:10.0.0.7") == "10.0.0.7"
    assert source_key("fe80::1%eth0") == "fe80::/64"


def test_one_host_rotating_source_ports_shares_one_budget(swarm):
    _, alice, _ = node(swarm)
    bob_id, _, bob = node(swarm)
    cfg = ReceiverConfig(rate_per_s=10, burst=20)
    bob = Receiver(bob.policy, cfg, node_id=bob_id.node_id)
    results = [bob.open(alice.seal(MsgType.PING, {}, NOW, to=bob_id.node_id), ("10.0.0.9", 1024 + i), NOW)
               for i in range(100)]
    assert sum(isinstance(r, Accepted) for r in results) == 20
    assert bob.counters["rate_limited"] == 80
    # another host is unaffected
    ok = bob.open(alice.seal(MsgType.PING, {}, NOW, to=bob_id.node_id), ("10.0.0.10", 5), NOW)
    assert isinstance(ok, Accepted)


def test_self_made_certificates_get_a_global_verification_budget(swarm):
    """Every envelope carrying a certificate of a fake swarm key would cost one Ed25519 verify."""
    bob_id, _, bob = node(swarm)
    cfg = ReceiverConfig(cert_verify_per_s=5, cert_verify_burst=10)
    bob = Receiver(bob.policy, cfg, node_id=bob_id.node_id)
    fake = Swarm(Ed25519PrivateKey.generate(), "fake")
    verified_before = bob.counters
    for i in range(60):  # 60 different hosts, each within its own rate limit
        ident = Identity.generate()
        creds = load_credentials(ident, NOW, swarm_token=fake.token)
        # same swarm id as bob's swarm, but a certificate bob's swarm key never signed
        from dataclasses import replace
        creds = replace(creds, policy=bob.policy)
        msg = Sealer(ident, creds, 1).seal(MsgType.PING, {}, NOW, to=bob_id.node_id)
        assert isinstance(bob.open(msg, (f"10.1.0.{i}", 7946), NOW), Rejected)
    c = bob.counters
    assert c["not_admitted"] - verified_before["not_admitted"] == 10  # the burst, then nothing
    assert c["cert_budget"] == 50
    # a second later the budget has refilled by the rate: a real newcomer gets in then
    newcomer, sealer, _ = node(swarm)
    msg = sealer.seal(MsgType.PING, {}, NOW + 1000, to=bob_id.node_id)
    assert isinstance(bob.open(msg, ("10.2.0.1", 7946), NOW + 1000), Accepted)


def test_failed_signatures_exhaust_only_that_sender_and_source(swarm):
    alice_id, alice, _ = node(swarm)
    bob_id, _, bob = node(swarm)
    assert isinstance(bob.open(alice.seal(MsgType.PING, {}, NOW, to=bob_id.node_id), ("10.0.0.1", 1), NOW),
                      Accepted)  # alice's certificate is now cached: forgeries reach the signature check
    attacker = ("10.6.6.6", 4000)
    for _ in range(50):
        forged = bytearray(alice.seal(MsgType.PING, {}, NOW, to=bob_id.node_id))
        forged[-1] ^= 0xFF
        assert isinstance(bob.open(bytes(forged), attacker, NOW), Rejected)
    c = bob.counters
    assert c["bad_signature"] == 5  # the default burst; the rest never reached Ed25519
    assert c["sig_budget"] == 45
    # alice herself, from her own address, is not silenced by the forgeries
    assert isinstance(bob.open(alice.seal(MsgType.PING, {}, NOW, to=bob_id.node_id), ("10.0.0.1", 1), NOW),
                      Accepted)


def test_message_for_one_node_is_refused_by_another_before_any_verification(swarm):
    _, alice, _ = node(swarm)
    bob_id, _, bob = node(swarm)
    carol_id, _, carol = node(swarm)
    for mtype in (MsgType.MANIFEST, MsgType.PING_REQ, MsgType.SYNC, MsgType.PING):
        msg = alice.seal(mtype, {"x": 1}, NOW, to=bob_id.node_id)
        res = carol.open(msg, ("10.9.9.9", 1), NOW)
        assert isinstance(res, Rejected) and res.reason is Reason.WRONG_RECIPIENT, (mtype, res)
        assert isinstance(bob.open(msg, ("10.0.0.2", 1), NOW), Accepted)
    assert carol.counters["wrong_recipient"] == 4 and carol.counters["bad_signature"] == 0


def test_only_a_join_sync_may_name_no_recipient(swarm):
    _, alice, _ = node(swarm)
    _, _, bob = node(swarm)
    assert isinstance(bob.open(alice.seal(MsgType.SYNC, {}, NOW), ("10.0.0.2", 1), NOW), Accepted)
    for mtype in (MsgType.MANIFEST, MsgType.PING, MsgType.PING_REQ, MsgType.SYNC_REPLY, MsgType.GOSSIP):
        res = bob.open(alice.seal(mtype, {}, NOW), ("10.0.0.2", 1), NOW)
        assert isinstance(res, Rejected) and res.reason is Reason.WRONG_RECIPIENT


def test_recipient_is_covered_by_the_signature(swarm):
    """Rewriting the recipient of a sniffed message to the replay target breaks the signature."""
    _, alice, _ = node(swarm)
    bob_id, _, _ = node(swarm)
    carol_id, _, carol = node(swarm)
    msg = bytearray(alice.seal(MsgType.MANIFEST, {}, NOW, to=bob_id.node_id))
    msg[14:22] = recipient_tag(carol_id.node_id)
    res = carol.open(bytes(msg), ("10.0.0.3", 1), NOW)
    assert isinstance(res, Rejected) and res.reason is Reason.BAD_SIGNATURE
    assert len(msg) > HEADER_LEN + SIG_LEN


def test_recipient_tag_rejects_what_is_no_node_id():
    with pytest.raises(ValueError):
        recipient_tag("not-a-node-id!")
    with pytest.raises(ValueError):
        recipient_tag("aaaa")


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5000)), max_size=60))
def test_token_bucket_never_grants_more_than_burst_plus_rate_times_time(ops):
    b = TokenBuckets(rate=2.0, burst=3.0, capacity=8)
    t = 0
    granted: dict[int, int] = {}
    for key, dt in ops:
        t += dt
        assert b.has(key, t) in (True, False)
        if b.allow(key, t):
            granted[key] = granted.get(key, 0) + 1
    for n in granted.values():
        assert n <= 3 + 2.0 * t / 1000
