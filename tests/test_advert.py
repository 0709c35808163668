"""What a node advertises over mDNS, and TXT hints read back defensively, as plain data (no zeroconf)."""

import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from gossipnet.errors import UserError
from gossipnet.net.advert import SERVICE_TYPE, Advertisement, RejectReason, peer_from_txt

SWARM = "ab" * 8
ADVERT = Advertisement(SWARM, "node-self", 7001, 8001, "convnet", 1)
NAME = f"gossipnet-peer-7002.{SERVICE_TYPE}"


def good_txt(**changes):
    txt = {"swarm": SWARM, "node": "node-peer", "udp": "7002", "http": "8002", "learner": "convnet", "proto": "1"}
    txt.update(changes)
    return {k: v for k, v in txt.items() if v is not None}


def parse(props, addresses=("198.18.0.2",)):
    return peer_from_txt(ADVERT, NAME, props, addresses)


# -- TXT records are hints: parsed with limits, never trusted --


@settings(max_examples=100, deadline=None)
@given(node_id=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=128),
       udp_port=st.integers(1, 65535), http_port=st.integers(1, 65535),
       learner=st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True))
def test_an_advertisement_reads_back_as_the_same_peer(node_id, udp_port, http_port, learner):
    theirs = Advertisement(SWARM, node_id, udp_port, http_port, learner, 1)
    if node_id == ADVERT.node_id:
        assert parse(theirs.txt()) == (None, RejectReason.SELF)
        return
    peer, reason = parse(theirs.txt())
    assert reason is None
    assert (peer.name, peer.node_id, peer.udp_port, peer.http_port, peer.learner, peer.protocol) == (
        NAME, node_id, udp_port, http_port, learner, 1)
    assert peer.udp_addr == ("198.18.0.2", udp_port)
    assert dict(peer.txt) == theirs.txt()


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"swarm": "cd" * 8}, RejectReason.OTHER_SWARM),
        ({"swarm": None}, RejectReason.OTHER_SWARM),
        ({"node": "node-self"}, RejectReason.SELF),
        ({"proto": "2"}, RejectReason.OTHER_PROTOCOL),
        ({"proto": "one"}, RejectReason.BAD_TXT),
        ({"node": None}, RejectReason.BAD_TXT),
        ({"node": "x" * 129}, RejectReason.BAD_TXT),
        ({"node": "tab\there"}, RejectReason.BAD_TXT),
        ({"udp": "0"}, RejectReason.BAD_TXT),
        ({"udp": "65536"}, RejectReason.BAD_TXT),
        ({"udp": "-1"}, RejectReason.BAD_TXT),
        ({"http": "80x"}, RejectReason.BAD_TXT),
        ({"http": None}, RejectReason.BAD_TXT),
        ({"learner": "Conv Net!"}, RejectReason.BAD_TXT),
    ],
)
def test_foreign_or_malformed_txt_is_rejected_with_a_reason(changes, reason):
    assert parse(good_txt(**changes)) == (None, reason)


def test_a_peer_without_a_usable_address_is_rejected():
    assert parse(good_txt(), addresses=()) == (None, RejectReason.NO_ADDRESS)
    assert parse(good_txt(), addresses=("224.0.0.251",)) == (None, RejectReason.NO_ADDRESS)
    assert parse(good_txt(), addresses=("0.0.0.0",)) == (None, RejectReason.NO_ADDRESS)


txt_values = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["7002", "0", "65535", SWARM, "1"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["swarm", "node", "udp", "http", "learner", "proto", "x"]),
                       txt_values, max_size=7))
def test_arbitrary_txt_never_raises_and_yields_a_valid_peer_or_a_reason(props):
    peer, reason = parse(props)
    assert (peer is None) != (reason is None)
    if peer is not None:
        assert 1 <= peer.udp_port <= 65535 and 1 <= peer.http_port <= 65535
        assert props.get("swarm") == SWARM and peer.node_id != ADVERT.node_id


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"swarm_id": "XYZ"}, "lowercase hex"),
        ({"node_id": ""}, "node id"),
        ({"udp_port": 0}, "bind first"),
        ({"learner": "Big Learner"}, "lowercase word"),
        ({"protocol": 300}, "0..255"),
    ],
)
def test_bad_advertisement_is_a_user_error(kwargs, fragment):
    fields = dict(swarm_id=SWARM, node_id="n", udp_port=1, http_port=2, learner="convnet", protocol=1)
    fields.update(kwargs)
    with pytest.raises(UserError, match=fragment):
        Advertisement(**fields)


def test_the_advertisement_rules_load_without_asyncio_or_zeroconf():
    code = ("import sys, gossipnet.net.advert; "
            "print(sorted(m for m in ('asyncio', 'zeroconf', 'socket') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_an_address_on_our_subnet_is_preferred_over_a_newer_one_elsewhere():
    import ipaddress

    from gossipnet.net.advert import on_subnet

    ours = Advertisement("ab" * 8, "me", 7946, 8080, "convnet", 1)
    txt = {"swarm": "ab" * 8, "node": "peer", "proto": "1", "udp": "7946", "http": "8080", "learner": "convnet"}
    subnet = ipaddress.ip_network("10.0.0.0/24")
    peer, _ = peer_from_txt(ours, "p", txt, ["203.0.113.9", "10.0.0.5"], subnet)
    assert peer is not None and peer.address == "10.0.0.5"
    peer, _ = peer_from_txt(ours, "p", txt, ["203.0.113.9", "10.0.0.5"])
    assert peer.address == "203.0.113.9"
    assert on_subnet("10.0.0.77", subnet) and not on_subnet("10.0.1.1", subnet)
    assert not on_subnet("junk", subnet) and not on_subnet("10.0.0.1", None)
