"""The /api/status document: what build_status makes validates, and untrusted JSON is checked."""

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.status.schema import MAX_PEERS, SCHEMA_VERSION, StatusSchemaError, build_status, validate_status


def make_status(**overrides):
    args = dict(
        node_id="node-a", swarm="swarm-1", kind="convnet", fingerprint="ab" * 8, started_at=1000.0, now=1060.0,
        step=42, metrics={"loss": np.float32(0.5), "test_accuracy": 0.81, "note": "warm-up", "nan": float("nan")},
        counters={"exchange": {"sent": 3, "pulled": 2, "absorbed": 1}},
        rejections={"wire": {"bad_signature": 2}, "udp": {"queue_full": 0}},
        peers=[{"node_id": "node-b", "address": "10.0.0.2:7946", "state": "alive", "incarnation": 2,
                "last_exchange": 1050.0, "http_url": "http://10.0.0.2:8730/"},
               {"node_id": "node-c", "address": "10.0.0.3:7946", "state": "dead", "incarnation": 0,
                "last_exchange": None, "http_url": None}],
        last_merge={"at": 1055.0, "peer": "node-b", "accepted": True, "reason": "ok"},
        addresses={"udp": "10.0.0.1:7946", "http": "http://10.0.0.1:8730/"}, epoch=0.25,
    )
    args.update(overrides)
    return build_status(**args)


def test_a_built_status_validates_and_survives_strict_json():
    s = make_status()
    assert validate_status(json.loads(json.dumps(s, allow_nan=False))) == s
    assert s["schema"] == SCHEMA_VERSION and s["node"]["uptime_s"] == 60.0
    assert s["learner"]["metrics"]["loss"] == 0.5 and s["learner"]["metrics"]["nan"] is None


def test_a_fresh_node_with_nothing_yet_validates():
    validate_status(make_status(metrics={}, counters={}, peers=[], last_merge=None, addresses=None, epoch=None))


BREAKAGES = {
    "wrong schema version": lambda s: s.__setitem__("schema", 1),
    "schema as a string": lambda s: s.__setitem__("schema", "2"),
    "missing rejections": lambda s: s.pop("rejections"),
    "negative rejection count": lambda s: s["rejections"]["wire"].__setitem__("bad_signature", -1),
    "rejection stage not an object": lambda s: s["rejections"].__setitem__("wire", 3),
    "missing node": lambda s: s.pop("node"),
    "extra top-level key": lambda s: s.__setitem__("extra", 1),
    "empty node id": lambda s: s["node"].__setitem__("id", ""),
    "huge node id": lambda s: s["node"].__setitem__("id", "x" * 10_000),
    "negative step": lambda s: s["learner"].__setitem__("step", -1),
    "float step": lambda s: s["learner"].__setitem__("step", 1.5),
    "bool step": lambda s: s["learner"].__setitem__("step", True),
    "NaN now": lambda s: s.__setitem__("now", math.nan),
    "metric as a list": lambda s: s["learner"]["metrics"].__setitem__("loss", [1, 2]),
    "unknown peer state": lambda s: s["peers"][0].__setitem__("state", "zombie"),
    "peer not an object": lambda s: s["peers"].__setitem__(0, "node-b"),
    "too many peers": lambda s: s.__setitem__("peers", s["peers"][:1] * (MAX_PEERS + 1)),
    "negative counter": lambda s: s["counters"]["exchange"].__setitem__("sent", -5),
    "counter group not an object": lambda s: s["counters"].__setitem__("exchange", [1]),
    "accepted as a string": lambda s: s["last_merge"].__setitem__("accepted", "yes"),
    "addresses as a list": lambda s: s["node"].__setitem__("addresses", []),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_each_kind_of_bad_document_is_rejected_with_the_field_named(name):
    s = copy.deepcopy(make_status())
    BREAKAGES[name](s)
    with pytest.raises(StatusSchemaError, match=r"\$"):
        validate_status(s)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_arbitrary_json_is_rejected_cleanly(value):
    with pytest.raises(StatusSchemaError):
        validate_status(value)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_replacing_any_field_with_junk_never_crashes_the_validator(data):
    s = copy.deepcopy(make_status())
    # walk to a random container and replace one of its entries
    node = s
    while True:
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        node[key] = data.draw(json_values)
        break
    try:
        validate_status(s)
    except StatusSchemaError:
        pass
