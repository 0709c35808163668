"""Sealer and Receiver: round trips, and every kind of bad envelope rejected, counted, survived."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossipnet.trust.credentials import Credentials, load_credentials
from gossipnet.trust.identity import Identity
from gossipnet.trust.swarm import Swarm
from gossipnet.wire import (
    MAX_DATAGRAM,
    MAX_UDP_BODY,
    Accepted,
    BodyTooLarge,
    MsgType,
    Reason,
    Receiver,
    ReceiverConfig,
    Rejected,
    Sealer,
    WireLimits,
)
from gossipnet.wire.body import ListOf, Range
from gossipnet.wire.envelope import HEADER_LEN

NOW = 1_800_000_000_000  # a fixed "now" in ms; the wire layer takes time as an input
SRC = ("192.0.2.7", 7946)


def make_swarm() -> Swarm:
    return Swarm(Ed25519PrivateKey.generate(), "test")


def member(swarm: Swarm) -> tuple[Identity, Credentials]:
    ident = Identity.generate()
    return ident, load_credentials(ident, NOW, swarm_token=swarm.token)


@pytest.fixture(scope="module")
def swarm() -> Swarm:
    return make_swarm()


@pytest.fixture
def alice(swarm):
    ident, creds = member(swarm)
    return Sealer(ident, creds, incarnation=1)


@pytest.fixture
def bob(swarm) -> Receiver:
    _, creds = member(swarm)
    return Receiver(creds.policy)


def assert_rejected(result, reason: Reason, receiver: Receiver, before: dict[str, int]) -> None:
    assert isinstance(result, Rejected), result
    assert result.reason is reason, result
    after = receiver.counters
    assert after[reason.value] == before[reason.value] + 1


def assert_still_accepts(sealer: Sealer, receiver: Receiver, now: int = NOW) -> None:
    result = receiver.open(sealer.seal(MsgType.PING, {"ok": True}, now), SRC, now)
    assert isinstance(result, Accepted), result


BODIES = {
    MsgType.PING: {"seq": 7, "updates": [{"node": "abc", "inc": 3, "state": "alive"}]},
    MsgType.ACK: {"seq": 7, "nack": False},
    MsgType.PING_REQ: {"target": "abc", "addr": ["127.0.0.1", 7946]},
    MsgType.NACK: {"seq": 9},
    MsgType.SYNC: {"members": [["a", 1, 0.5, None], ["b", 2, -1.25, b"\x00\x01"]]},
    MsgType.SYNC_REPLY: {"members": []},
    MsgType.LEAVE: {"inc": 4},
    MsgType.GOSSIP: {"u": [{"node": "abc", "inc": 3, "state": "suspect"}]},
    MsgType.MANIFEST: {"sha256": bytes(32), "size": 123456, "codec": "safetensors", "age": 1.5},
}


def test_every_message_type_round_trips(alice, bob):
    assert set(BODIES) == set(MsgType)
    for i, (mtype, body) in enumerate(BODIES.items(), start=1):
        result = bob.open(alice.seal(mtype, body, NOW + i), SRC, NOW + i)
        assert isinstance(result, Accepted), result
        assert (result.msg_type, result.body, result.seq, result.timestamp_ms) == (mtype, body, i, NOW + i)
        assert result.sender == alice.identity.pubkey
        assert result.node_id == alice.identity.node_id
        assert result.incarnation == 1
    assert bob.counters["accepted"] == len(MsgType)


@pytest.mark.parametrize("mode", ["allow", "open"])
def test_allowlist_and_open_swarms_round_trip_without_certificates(mode):
    a, b = Identity.generate(), Identity.generate()
    if mode == "allow":
        keys = f"{a.pubkey_text},{b.pubkey_text}"
        ca, cb = load_credentials(a, NOW, allow=keys), load_credentials(b, NOW, allow=keys)
    else:
        ca, cb = (load_credentials(x, NOW, insecure_open=True, swarm_name="lab") for x in (a, b))
    assert ca.swarm_id == cb.swarm_id and ca.cert is None
    sealer, receiver = Sealer(a, ca, 1), Receiver(cb.policy)
    data = sealer.seal(MsgType.PING, {"x": 1}, NOW)
    assert len(data) == HEADER_LEN + len(b"\x81\xa1x\x01") + 64
    assert isinstance(receiver.open(data, SRC, NOW), Accepted)


def test_replayed_message_is_rejected_and_counted(alice, bob):
    data = alice.seal(MsgType.PING, {"n": 1}, NOW)
    assert isinstance(bob.open(data, SRC, NOW), Accepted)
    before = bob.counters
    assert_rejected(bob.open(data, SRC, NOW + 10), Reason.REPLAYED, bob, before)
    assert_still_accepts(alice, bob)


def test_reordered_messages_within_the_window_are_accepted_once(alice, bob):
    msgs = [alice.seal(MsgType.PING, {"n": i}, NOW) for i in range(50)]
    for data in reversed(msgs):
        assert isinstance(bob.open(data, SRC, NOW), Accepted)
    for data in msgs:
        assert bob.open(data, SRC, NOW).reason is Reason.REPLAYED


def test_message_older_than_the_window_is_rejected_as_replayed(swarm):
    ident, creds = member(swarm)
    sealer = Sealer(ident, creds, 1)
    receiver = Receiver(make_receiver_policy(swarm), ReceiverConfig(window=8))
    first = sealer.seal(MsgType.PING, {}, NOW)
    for _ in range(8):
        sealer.seal(MsgType.PING, {}, NOW)  # sent but lost
    assert isinstance(receiver.open(sealer.seal(MsgType.PING, {}, NOW), SRC, NOW), Accepted)
    before = receiver.counters
    assert_rejected(receiver.open(first, SRC, NOW), Reason.REPLAYED, receiver, before)


def make_receiver_policy(swarm):
    return member(swarm)[1].policy


def test_message_from_before_a_restart_is_stale_and_restart_resets_the_window(swarm, bob):
    ident, creds = member(swarm)
    old_life = Sealer(ident, creds, incarnation=5)
    held = old_life.seal(MsgType.PING, {}, NOW)
    assert isinstance(bob.open(old_life.seal(MsgType.PING, {}, NOW), SRC, NOW), Accepted)
    new_life = Sealer(ident, creds, incarnation=6)  # seq starts again at 1
    assert isinstance(bob.open(new_life.seal(MsgType.PING, {}, NOW), SRC, NOW), Accepted)
    before = bob.counters
    assert_rejected(bob.open(held, SRC, NOW), Reason.STALE, bob, before)
    assert_still_accepts(new_life, bob)


@pytest.mark.parametrize("offset_ms", [-60_001, 60_001, -3_600_000])
def test_stale_or_future_timestamp_is_rejected(alice, bob, offset_ms):
    data = alice.seal(MsgType.PING, {}, NOW + offset_ms)
    before = bob.counters
    assert_rejected(bob.open(data, SRC, NOW), Reason.STALE, bob, before)
    assert_still_accepts(alice, bob)


def test_message_from_another_swarm_is_rejected(alice, bob):
    other_ident, other_creds = member(make_swarm())
    data = Sealer(other_ident, other_creds, 1).seal(MsgType.PING, {}, NOW)
    before = bob.counters
    assert_rejected(bob.open(data, SRC, NOW), Reason.WRONG_SWARM, bob, before)
    assert_still_accepts(alice, bob)


def test_unadmitted_key_is_rejected_even_with_the_right_swarm_id(swarm, alice, bob):
    intruder = Identity.generate()
    # Same swarm id, but a certificate the intruder signed with its own key.
    forged = Swarm(intruder.private_key, "x").admit(intruder.pubkey, NOW, 1).compact
    fake = Credentials(bob.policy, forged, "forged")
    before = bob.counters
    assert_rejected(bob.open(Sealer(intruder, fake, 1).seal(MsgType.PING, {}, NOW), SRC, NOW),
                    Reason.NOT_ADMITTED, bob, before)
    # No certificate at all.
    bare = Credentials(bob.policy, None, "none")
    before = bob.counters
    assert_rejected(bob.open(Sealer(intruder, bare, 1).seal(MsgType.PING, {}, NOW), SRC, NOW),
                    Reason.NOT_ADMITTED, bob, before)
    # A real member's certificate replayed by someone else: bound to the member's key.
    stolen = Credentials(bob.policy, alice.credentials.cert, "stolen")
    before = bob.counters
    assert_rejected(bob.open(Sealer(intruder, stolen, 1).seal(MsgType.PING, {}, NOW), SRC, NOW),
                    Reason.NOT_ADMITTED, bob, before)
    assert_still_accepts(alice, bob)


def test_expired_certificate_is_rejected(swarm, bob):
    ident = Identity.generate()
    cert = swarm.admit(ident.pubkey, NOW - 2 * 86_400_000, days=1)  # expired a day ago
    sealer = Sealer(ident, Credentials(bob.policy, cert.compact, "expired"), 1)
    before = bob.counters
    assert_rejected(bob.open(sealer.seal(MsgType.PING, {}, NOW), SRC, NOW), Reason.NOT_ADMITTED, bob, before)


def test_key_outside_the_allowlist_is_rejected():
    a, b, c = Identity.generate(), Identity.generate(), Identity.generate()
    keys = f"{a.pubkey_text},{b.pubkey_text}"
    receiver = Receiver(load_credentials(b, NOW, allow=keys).policy)
    outsider = Credentials(receiver.policy, None, "outsider")
    before = receiver.counters
    assert_rejected(receiver.open(Sealer(c, outsider, 1).seal(MsgType.PING, {}, NOW), SRC, NOW),
                    Reason.NOT_ADMITTED, receiver, before)
    assert_still_accepts(Sealer(a, load_credentials(a, NOW, allow=keys), 1), receiver)


def test_truncated_message_is_rejected(alice, bob):
    data = alice.seal(MsgType.SYNC, BODIES[MsgType.SYNC], NOW)
    for cut in (0, 2, 3, 40, HEADER_LEN + 70, len(data) - 1):
        before = bob.counters
        reason = Reason.BAD_MAGIC if cut < 3 else Reason.MALFORMED
        assert_rejected(bob.open(data[:cut], SRC, NOW), reason, bob, before)
    assert isinstance(bob.open(data, SRC, NOW), Accepted)  # the full one was never consumed


def test_oversized_datagram_is_rejected_before_parsing(alice, bob):
    before = bob.counters
    assert_rejected(bob.open(b"GSN" + bytes(MAX_DATAGRAM), SRC, NOW), Reason.TOO_LARGE, bob, before)
    assert_still_accepts(alice, bob)


def test_unknown_version_and_bad_magic_are_named(alice, bob):
    data = bytearray(alice.seal(MsgType.PING, {}, NOW))
    data[3] = 99
    before = bob.counters
    assert_rejected(bob.open(bytes(data), SRC, NOW), Reason.BAD_VERSION, bob, before)
    before = bob.counters
    assert_rejected(bob.open(b"HTTP/1.1 200 OK\r\n" * 10, SRC, NOW), Reason.BAD_MAGIC, bob, before)


def test_flood_from_one_source_is_rate_limited_and_others_still_served(swarm):
    ident, creds = member(swarm)
    sealer = Sealer(ident, creds, 1)
    receiver = Receiver(creds.policy, ReceiverConfig(rate_per_s=10, burst=5))
    results = [receiver.open(sealer.seal(MsgType.PING, {}, NOW), SRC, NOW) for _ in range(8)]
    assert [isinstance(r, Accepted) for r in results] == [True] * 5 + [False] * 3
    assert receiver.counters["rate_limited"] == 3
    other = ("192.0.2.8", 7946)
    assert isinstance(receiver.open(sealer.seal(MsgType.PING, {}, NOW), other, NOW), Accepted)
    # 10 tokens/s: 100 ms later the first source may send one more.
    assert isinstance(receiver.open(sealer.seal(MsgType.PING, {}, NOW + 100), SRC, NOW + 100), Accepted)


def test_source_and_sender_tables_stay_bounded(swarm):
    _, creds = member(swarm)
    receiver = Receiver(creds.policy, ReceiverConfig(max_sources=16, max_senders=4))
    senders = [Sealer(ident, member_creds(swarm, ident), 1) for ident in (Identity.generate() for _ in range(10))]
    for i in range(200):
        result = receiver.open(senders[i % 10].seal(MsgType.PING, {}, NOW), (f"10.0.0.{i}", 1), NOW)
        assert isinstance(result, Accepted)
    assert receiver.table_sizes() == {"sources": 16, "senders": 4}


def member_creds(swarm, ident):
    return load_credentials(ident, NOW, swarm_token=swarm.token)


def test_body_that_does_not_fit_a_datagram_raises_a_clear_error(alice):
    with pytest.raises(BodyTooLarge, match="SYNC body is .* over"):
        alice.seal(MsgType.SYNC, {"blob": bytes(MAX_UDP_BODY)}, NOW)
    fits = alice.seal(MsgType.SYNC, {"b": bytes(MAX_UDP_BODY - 6)}, NOW)  # map 1 + key 2 + bin16 3
    assert len(fits) == MAX_DATAGRAM


def test_http_plane_takes_larger_bodies_and_never_accepts_udp_envelopes(swarm, alice):
    ident, creds = member(swarm)
    http_sealer = Sealer(ident, creds, 1, WireLimits.http(1 << 16))
    http_receiver = Receiver(creds.policy, ReceiverConfig.http(1 << 16))
    big = {"blob": bytes(50_000)}
    assert isinstance(http_receiver.open(http_sealer.seal(MsgType.MANIFEST, big, NOW), SRC, NOW), Accepted)
    # A captured datagram replayed at the HTTP endpoint: different signing context.
    before = http_receiver.counters
    udp_msg = alice.seal(MsgType.PING, {}, NOW)
    assert_rejected(http_receiver.open(udp_msg, SRC, NOW), Reason.BAD_SIGNATURE, http_receiver, before)


def test_body_that_fails_its_schema_is_malformed_and_counted(swarm, alice):
    _, creds = member(swarm)
    receiver = Receiver(creds.policy, schemas={MsgType.PING: {"seq": Range(0, 2**32), "updates": ListOf(dict)}})
    before = receiver.counters
    assert_rejected(receiver.open(alice.seal(MsgType.PING, {"seq": "x", "updates": []}, NOW), SRC, NOW),
                    Reason.MALFORMED, receiver, before)
    assert isinstance(receiver.open(alice.seal(MsgType.PING, {"seq": 1, "updates": []}, NOW), SRC, NOW), Accepted)


def test_signed_envelope_with_a_hostile_body_is_malformed_not_a_crash(swarm, alice):
    _, creds = member(swarm)
    receiver = Receiver(creds.policy)
    for raw in (b"\x91" * 600 + b"\xc0", b"\xc1", b"\x81\x01\x02", b"\xd6\xff\x00\x00\x00\x01", b"\xa3ab"):
        before = receiver.counters
        assert_rejected(receiver.open(alice.seal_raw(MsgType.PING, raw, NOW), SRC, NOW),
                        Reason.MALFORMED, receiver, before)
    assert_still_accepts(alice, receiver)


# --- properties -----------------------------------------------------------------------------

_SWARM = make_swarm()
_IDENT, _CREDS = member(_SWARM)


_VALID = Sealer(_IDENT, _CREDS, 1).seal(MsgType.SYNC, BODIES[MsgType.SYNC], NOW)


def _mutated(prefix_len: int, tail: bytes) -> bytes:
    return _VALID[:prefix_len] + tail


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=1600)
    | st.builds(lambda tail: b"GSN\x01" + tail, st.binary(max_size=1500))
    # a real header (right swarm, real member) followed by junk: reaches the deep checks
    | st.builds(_mutated, st.integers(0, len(_VALID)), st.binary(max_size=1400))
)
def test_arbitrary_bytes_never_raise_only_rejections(data):
    receiver = Receiver(_CREDS.policy)
    result = receiver.open(data, SRC, NOW)
    assert isinstance(result, Rejected) or data == _VALID
    assert sum(receiver.counters.values()) == 1


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_bit_flip_anywhere_is_rejected_and_the_original_still_accepted(data):
    sealer = Sealer(_IDENT, _CREDS, 3)
    receiver = Receiver(_CREDS.policy)
    msg = sealer.seal(MsgType.MANIFEST, {"k": data.draw(st.binary(max_size=64))}, NOW)
    bit = data.draw(st.integers(0, len(msg) * 8 - 1))
    flipped = bytearray(msg)
    flipped[bit // 8] ^= 1 << (bit % 8)
    result = receiver.open(bytes(flipped), SRC, NOW)
    assert isinstance(result, Rejected)
    assert receiver.counters[result.reason.value] == 1
    assert isinstance(receiver.open(msg, SRC, NOW), Accepted)


def test_header_layout_is_the_documented_one(alice):
    data = alice.seal(MsgType.ACK, {}, NOW)
    magic, version, mtype, flags = struct.unpack_from(">3sBBB", data)
    assert (magic, version, mtype, flags) == (b"GSN", 2, int(MsgType.ACK), 1)
    assert data[6:14] == alice.credentials.swarm_id
    assert data[14:22] == bytes(8)  # no recipient named
    assert data[22:54] == alice.identity.pubkey
