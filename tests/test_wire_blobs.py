"""Blobs: safetensors round trips, and every bad blob refused with its stage and reason, cheaply.

Blobs go through the path a node runs: ``exchange.publish`` -> ``Gate.check`` (before the
pull) -> ``Download`` (size and sha256 while streaming) -> ``Gate.open`` (bounded inflate,
header, tensors, finiteness).
"""

from __future__ import annotations

import hashlib
import json
import struct
import tracemalloc
import zlib
from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.exchange import BadManifest, Download, Gate, Manifest, Refused, publish
from gossipnet.learners.base import LearnerWire, Snapshot
from gossipnet.rejections import Rejection, Rejections
from gossipnet.trust.credentials import load_credentials
from gossipnet.trust.identity import Identity
from gossipnet.trust.swarm import Swarm
from gossipnet.wire import MAX_UDP_BODY, Accepted, MsgType, Receiver, Sealer
from gossipnet.wire.blobs import CODEC_RAW, CODEC_ZLIB, spec_of
from gossipnet.wire.body import encode_body

NOW = 1_800_000_000_000


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv1.weight": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
        "conv1.bias": np.zeros(8, np.float32),
        "fc.weight": rng.standard_normal((10, 72)).astype(np.float32),
        "fc.bias": rng.standard_normal(10).astype(np.float32),
    }


SPEC = spec_of(model())


def raw_blob(tensors: dict[str, np.ndarray], header_extra: dict | None = None) -> bytes:
    """A safetensors file written by hand, to send what encode_blob would refuse to make."""
    header, offset, chunks = {}, 0, []
    names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
             np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8"}
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        chunks.append(data)
    header.update(header_extra or {})
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(chunks)


def manifest_for(data: bytes, spec=SPEC, codec=CODEC_RAW, dtype="float32") -> Manifest:
    return Manifest("weights", "fp", 1.0, 1, hashlib.sha256(data).digest(), len(data), codec, dtype,
                    len(spec), sum(int(np.prod(s)) for s in spec.values()), 8001, "/blob/x")


def encode_blob(tensors, *, dtype="float32", compress=False, age=1.0) -> tuple[bytes, Manifest]:
    """Publish ``tensors`` as a learner would: the blob and its manifest."""
    offer = publish(Snapshot("convnet", "fp", age, tensors), LearnerWire("weights", dtype, 1, "merge"),
                    step=1, compress=compress)
    return offer.data, offer.manifest


def open_blob(gate: Gate, data: bytes, manifest: Manifest) -> Snapshot | Rejection:
    """What a node does with a pulled blob: download check, then open."""
    try:
        blob = Download.whole(manifest, data)
    except Refused as exc:
        return exc.rejection
    return gate.open(blob)


def assert_rejects(gate: Gate, data: bytes, manifest: Manifest, reason: str, stage: str = "gate") -> None:
    record = Rejections()
    result = open_blob(gate, data, manifest)
    assert isinstance(result, Rejection), "blob was accepted"
    assert (result.stage, result.reason) == (stage, reason), result
    record.add(result)
    assert record.get(stage, reason) == 1
    good, m = encode_blob(model())
    assert isinstance(open_blob(gate, good, m), Snapshot)  # and the next good one still goes through


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("compress", [False, True])
def test_blob_round_trips_in_every_codec(dtype, compress):
    tensors = model()
    data, manifest = encode_blob(tensors, dtype=dtype, compress=compress, age=42.5)
    assert manifest.codec == (CODEC_ZLIB if compress else CODEC_RAW) and manifest.dtype == dtype
    gate = Gate("convnet", SPEC)
    assert gate.check(manifest) is None
    snap = open_blob(gate, data, manifest)
    assert isinstance(snap, Snapshot) and snap.age == 42.5 and snap.kind == "convnet" and snap.fingerprint == "fp"
    out = snap.tensors
    for name, arr in tensors.items():
        assert out[name].dtype == np.float32 and out[name].shape == arr.shape
        tol = 1e-3 if dtype == "float16" else 0
        np.testing.assert_allclose(out[name], arr, rtol=tol, atol=tol)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text("abcdefgh.", min_size=1, max_size=12),
                       st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=5),
       st.booleans(), st.sampled_from(["float32", "float16"]))
def test_any_float_model_round_trips(shapes, compress, dtype):
    rng = np.random.default_rng(1)
    tensors = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    data, manifest = encode_blob(tensors, dtype=dtype, compress=compress)
    gate = Gate("convnet", spec_of(tensors))
    assert gate.check(manifest) is None
    out = open_blob(gate, data, manifest)
    assert isinstance(out, Snapshot)
    for name, arr in tensors.items():
        np.testing.assert_array_equal(out.tensors[name], arr.astype(dtype).astype(np.float32))


def test_manifest_travels_in_a_signed_datagram():
    swarm = Swarm(Ed25519PrivateKey.generate(), "t")
    ident = Identity.generate()
    creds = load_credentials(ident, NOW, swarm_token=swarm.token)
    _, manifest = encode_blob(model(), age=1e9)
    manifest = replace(manifest.at(8080), meta={f"fitness_{i}": 1e3 + i for i in range(8)})
    body = manifest.to_body()
    assert len(encode_body(body)) < MAX_UDP_BODY // 2  # meta at its largest still fits with room
    msg = Sealer(ident, creds, 1).seal(MsgType.MANIFEST, body, NOW)
    result = Receiver(creds.policy).open(msg, ("10.0.0.2", 1), NOW)
    assert isinstance(result, Accepted)
    assert Manifest.from_body(result.body) == manifest


@pytest.mark.parametrize(
    "change",
    [{"sha256": b"short"}, {"size": -1}, {"codec": "pickle"}, {"dtype": "object"}, {"kind": 3},
     {"age": float("nan")}, {"age": -1.0}, {"tensors": "4"}],
)
def test_malformed_manifest_is_refused(change):
    _, manifest = encode_blob(model())
    with pytest.raises(BadManifest):
        Manifest.from_body({**manifest.at(8001).to_body(), **change})


def test_manifest_of_another_shape_is_refused_before_pulling():
    gate = Gate("convnet", SPEC)
    other = {**model(), "fc.weight": np.zeros((10, 73), np.float32)}
    _, manifest = encode_blob(other)
    rejection = gate.check(manifest)
    assert rejection is not None and (rejection.stage, rejection.reason) == ("gate", "bad_shape")
    assert gate.check(encode_blob(model())[1]) is None


def test_oversized_declared_blob_is_refused_before_reading():
    gate = Gate("convnet", SPEC)
    data, manifest = encode_blob(model())
    rejection = gate.check(replace(manifest, size=10 << 20))
    assert rejection is not None and (rejection.stage, rejection.reason) == ("gate", "too_large")
    with pytest.raises(Refused, match="too_large"):
        Download(replace(manifest, size=2 << 30), limit=64 << 20)
    assert_rejects(gate, data + b"extra", manifest, "size_mismatch", stage="pull")


def test_download_stops_at_the_declared_size_and_checks_the_hash():
    data, manifest = encode_blob(model())
    download = Download(manifest)
    for i in range(0, len(data), 100):
        download.feed(data[i:i + 100])
    assert download.finish().data == data
    over = Download(manifest)
    over.feed(data)
    with pytest.raises(Refused, match="size_mismatch"):
        over.feed(b"x")
    short = Download(manifest)
    short.feed(data[:-1])
    with pytest.raises(Refused, match="size_mismatch"):
        short.finish()
    wrong = Download(manifest)
    wrong.feed(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(Refused, match="hash_mismatch"):
        wrong.finish()


def test_tampered_blob_fails_the_hash_before_parsing():
    data, manifest = encode_blob(model())
    tampered = bytearray(data)
    tampered[-5] ^= 0x40
    assert_rejects(Gate("convnet", SPEC), bytes(tampered), manifest, "hash_mismatch", stage="pull")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_weights_are_refused(bad):
    tensors = model()
    tensors["fc.weight"][3, 4] = bad
    data = raw_blob(tensors)
    assert_rejects(Gate("convnet", SPEC), data, manifest_for(data), 'not_finite')
    with pytest.raises(ValueError, match="NaN/Inf"):
        encode_blob(tensors)  # and we never send them


def test_float16_overflow_is_refused_when_encoding():
    tensors = model()
    tensors["fc.bias"][0] = 1e6  # above float16's 65,504
    with pytest.raises(ValueError, match="after casting to float16"):
        encode_blob(tensors, dtype="float16")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=1, max_size=40),
       st.sampled_from(["float16", "float32"]))
def test_encoding_refuses_exactly_the_tensors_that_are_not_finite_on_the_wire(values, dtype):
    """The finiteness check looks only at a tensor's min and max (blobs._finite_as): it must
    refuse exactly what a check of every cast value would."""
    arr = np.array(values, np.float32)
    with np.errstate(over="ignore"):
        finite_on_wire = bool(np.isfinite(arr.astype(dtype)).all())
    try:
        encode_blob({"w": arr}, dtype=dtype)
        refused = False
    except ValueError as exc:
        assert "NaN/Inf" in str(exc)
        refused = True
    assert refused == (not finite_on_wire)


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32, np.uint8])
def test_wrong_dtype_is_refused(dtype):
    tensors = {**model(), "conv1.bias": model()["conv1.bias"].astype(dtype)}
    data = raw_blob(tensors)
    assert_rejects(Gate("convnet", SPEC), data, manifest_for(data), 'bad_dtype')


def test_a_whole_float64_model_is_refused_by_size_before_parsing():
    data = raw_blob({k: v.astype(np.float64) for k, v in model().items()})
    assert_rejects(Gate("convnet", SPEC), data, manifest_for(data), 'too_large')


def test_dtype_other_than_the_manifest_says_is_refused():
    data = raw_blob({k: v.astype(np.float16) for k, v in model().items()})
    assert_rejects(Gate("convnet", SPEC), data, manifest_for(data, dtype="float32"), 'bad_dtype')


def test_object_arrays_cannot_be_encoded():
    tensors = {**model(), "fc.bias": np.array([object()] * 10)}
    with pytest.raises(TypeError, match="only floating point"):
        encode_blob(tensors)


def test_wrong_shape_or_names_are_refused():
    gate = Gate("convnet", SPEC)
    transposed = {**model(), "fc.weight": model()["fc.weight"].reshape(72, 10)}
    data = raw_blob(transposed)
    assert_rejects(gate, data, manifest_for(data), 'bad_shape')
    renamed = {("head.weight" if k == "fc.weight" else k): v for k, v in model().items()}
    data = raw_blob(renamed)
    assert_rejects(gate, data, manifest_for(data), 'bad_shape')


@pytest.mark.parametrize(
    "data",
    [b"\x00" * 7, struct.pack("<Q", 1 << 40) + b"{}", struct.pack("<Q", 4) + b"nope",
     struct.pack("<Q", 2) + b"[]"],
    ids=["short", "huge-header", "not-json", "not-object"],
)
def test_garbage_instead_of_safetensors_is_malformed(data):
    assert_rejects(Gate("convnet", SPEC), data, manifest_for(data), "malformed")


def test_empty_blob_is_refused_before_any_request():
    with pytest.raises(Refused, match="too_large"):  # no size fits "1..limit bytes"
        Download(manifest_for(b""))


def test_inconsistent_offsets_are_malformed():
    good = raw_blob(model())
    (n,) = struct.unpack_from("<Q", good)
    header = json.loads(good[8:8 + n])
    header["fc.bias"]["data_offsets"][1] += 4  # claims more bytes than the file has
    h = json.dumps(header).encode()
    data = struct.pack("<Q", len(h)) + h + good[8 + n:]
    assert_rejects(Gate("convnet", SPEC), data, manifest_for(data), 'malformed')


def test_corrupt_zlib_stream_is_malformed():
    data, manifest = encode_blob(model(), compress=True)
    truncated = data[: len(data) // 2]
    assert_rejects(Gate("convnet", SPEC), truncated, manifest_for(truncated, codec=CODEC_ZLIB), 'malformed')


def zeros_bomb(total: int) -> bytes:
    """A valid zlib stream of ``total`` zero bytes, built without compressing them all.

    Deflate caps compression near 1,032:1, so 1 GiB needs ~1 MiB of stream; we compress
    1 MiB once and repeat the steady-state sync-flushed segment, then fix the adler32
    trailer (for all-zero data: A = 1, B = n mod 65521).
    """
    mib = 1 << 20
    assert total % mib == 0 and total >= 2 * mib
    c = zlib.compressobj(9)
    first = c.compress(bytes(mib)) + c.flush(zlib.Z_SYNC_FLUSH)
    steady = c.compress(bytes(mib)) + c.flush(zlib.Z_SYNC_FLUSH)
    end = c.flush()[:-4]
    return first + steady * (total // mib - 1) + end + struct.pack(">I", ((total % 65521) << 16) | 1)


def test_bomb_construction_is_a_valid_stream_of_the_stated_size():
    assert zlib.decompress(zeros_bomb(4 << 20)) == bytes(4 << 20)


def test_decompression_bomb_of_1_gib_is_refused_without_allocating_it():
    big_spec = {"w": (400_000,)}  # a 1.6 MB model, so a ~1 MiB compressed blob passes the size check
    bomb = zeros_bomb(1 << 30)
    assert len(bomb) < 1_100_000
    gate = Gate("convnet", big_spec)
    manifest = manifest_for(bomb, spec=big_spec, codec=CODEC_ZLIB)
    assert gate.check(manifest) is None
    blob = Download.whole(manifest, bomb)
    tracemalloc.start()
    try:
        result = gate.open(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, Rejection) and (result.stage, result.reason) == ("gate", "decompression_bomb")
    assert peak < 16 << 20, f"peak allocation {peak} bytes"


def test_small_bomb_against_a_small_model_is_refused():
    bomb = zlib.compress(bytes(1 << 20), 9)  # ~1 KiB that inflates to 1 MiB
    assert len(bomb) < 1100
    assert_rejects(Gate("convnet", SPEC), bomb, manifest_for(bomb, codec=CODEC_ZLIB), 'decompression_bomb')
