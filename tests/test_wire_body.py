"""Body codec: plain msgpack round trips, hostile bytes bounded, schemas name the bad field."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.wire.body import (
    BodyError,
    BodyLimits,
    BodyTooLarge,
    Bytes,
    ListOf,
    Optional,
    Range,
    decode_body,
    encode_body,
    validate,
)

BIG = BodyLimits.http(1 << 20)

scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
)
plain = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(plain)
def test_plain_data_round_trips(value):
    assert decode_body(encode_body(value, BIG), BIG) == value


def test_nan_round_trips_as_a_float():
    assert math.isnan(decode_body(encode_body(float("nan")), BIG))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_decode_or_raise_body_error_only(data):
    try:
        decode_body(data, BodyLimits.udp())
    except BodyError:
        pass


@pytest.mark.parametrize(
    "data, what",
    [
        (b"\x91" * 9 + b"\xc0", "deeper than 8"),  # nesting beyond max_depth
        (b"\x91" * 1300 + b"\xc0", "undecodable"),  # msgpack's own stack limit (1,024)
        (b"\xdd\xff\xff\xff\xff", "undecodable"),  # array32 claiming 4 billion items
        (b"\xc6\x7f\xff\xff\xff", "undecodable"),  # bin32 claiming 2 GiB
        (b"\x81\x01\x02", "undecodable"),  # int map key
        (b"\xd6\xff\x00\x00\x00\x01", "undecodable"),  # ext type -1 (msgpack Timestamp)
        (b"\xa2\xff\xfe", "undecodable"),  # str that is not UTF-8
        (b"\xc0\xc0", "undecodable"),  # trailing data
        (b"", "undecodable"),
    ],
    ids=["depth", "stack", "array32", "bin32", "int-key", "ext", "utf8", "trailing", "empty"],
)
def test_hostile_bodies_are_refused_with_a_reason(data, what):
    with pytest.raises(BodyError, match=what):
        decode_body(data, BodyLimits.udp())


def test_container_length_limit_applies():
    limits = BodyLimits(max_items=4)
    assert decode_body(msgpack.packb([1, 2, 3, 4]), limits) == [1, 2, 3, 4]
    with pytest.raises(BodyError):
        decode_body(msgpack.packb([1, 2, 3, 4, 5]), limits)
    with pytest.raises(BodyError):
        decode_body(msgpack.packb({str(i): i for i in range(5)}), limits)


def test_encoding_refuses_what_a_peer_could_not_decode():
    with pytest.raises(BodyError, match="not plain data"):
        encode_body({"x": object()})
    with pytest.raises(BodyError, match="map key"):
        encode_body({1: "int key"})
    with pytest.raises(BodyTooLarge, match="over the limit of 10"):
        encode_body(b"x" * 20, BodyLimits(max_bytes=10))
    assert decode_body(encode_body((1, (2, 3))), BIG) == [1, [2, 3]]


SCHEMA = {
    "node": str,
    "inc": Range(0, 2**64 - 1),
    "addr": ListOf((str, int), max_len=2),
    "key": Bytes(32, 32),
    "load": float,
    "note": Optional((str, None)),
}
GOOD = {"node": "abc", "inc": 3, "addr": ["10.0.0.1", 7946], "key": bytes(32), "load": 1, "extra": 1}


def test_schema_accepts_a_conforming_body_and_extra_keys():
    validate(GOOD, SCHEMA)
    validate({**GOOD, "note": None}, SCHEMA)


@pytest.mark.parametrize(
    "change, path",
    [
        ({"node": 5}, "body.node"),
        ({"inc": -1}, "body.inc"),
        ({"inc": True}, "body.inc"),
        ({"addr": ["a", "b", "c"]}, "body.addr"),
        ({"addr": ["a", 1.5]}, r"body.addr\[1\]"),
        ({"key": bytes(31)}, "body.key"),
        ({"load": "high"}, "body.load"),
        ({"note": 3}, "body.note"),
    ],
)
def test_schema_names_the_first_bad_field(change, path):
    with pytest.raises(BodyError, match=path):
        validate({**GOOD, **change}, SCHEMA)


def test_schema_reports_a_missing_key():
    body = dict(GOOD)
    del body["key"]
    with pytest.raises(BodyError, match="missing key 'key'"):
        validate(body, SCHEMA)
