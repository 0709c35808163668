"""Checkpoints survive crashes and corruption without losing a node's training."""

import os
import stat

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.checkpoint import Checkpoint, CheckpointStore, CorruptCheckpoint, decode, encode
from gossipnet.errors import UserError


def _ckpt(step: int) -> Checkpoint:
    return Checkpoint(
        tensors={"learner/w": np.full((3, 4), step, np.float32), "node/step": np.array(step)},
        meta={"step": step, "node": "abc"},
    )


def test_round_trip_keeps_tensors_and_meta():
    back = decode(encode(_ckpt(7)))
    assert back.meta == {"step": 7, "node": "abc"}
    np.testing.assert_array_equal(back.tensors["learner/w"], np.full((3, 4), 7, np.float32))
    assert int(back.tensors["node/step"]) == 7


def test_store_resumes_newest_and_file_is_private(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.load() is None
    store.save(_ckpt(1))
    store.save(_ckpt(2))
    assert store.load().meta["step"] == 2
    assert stat.S_IMODE(os.stat(store.current).st_mode) == 0o600
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated by a crash
        lambda b: b"\x00" * len(b),  # zeroed blocks
        lambda b: b"",  # empty file
        lambda b: b[:8] + b"{not json" + b[17:],  # garbled header
    ],
)
def test_corrupt_current_checkpoint_falls_back_to_previous(tmp_path, damage):
    store = CheckpointStore(tmp_path)
    store.save(_ckpt(1))
    store.save(_ckpt(2))
    store.current.write_bytes(damage(store.current.read_bytes()))
    ckpt = store.load()
    assert ckpt.meta["step"] == 1
    assert ckpt.meta["recovered_from"] == str(store.previous)
    assert "checkpoint.safetensors" in ckpt.meta["recovery_problems"][0]


def test_no_readable_checkpoint_is_a_user_error_naming_the_files(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_ckpt(1))
    store.save(_ckpt(2))
    store.current.write_bytes(b"garbage")
    store.previous.write_bytes(b"more garbage")
    with pytest.raises(UserError, match="no readable checkpoint.*Move the state directory"):
        store.load()


def test_foreign_safetensors_file_is_not_taken_for_a_checkpoint():
    import safetensors.numpy as stn

    with pytest.raises(CorruptCheckpoint, match="not a gossipnet checkpoint"):
        decode(stn.save({"x": np.zeros(2, np.float32)}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_corrupt_checkpoint(data):
    try:
        decode(data)
    except CorruptCheckpoint:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_detected_or_harmless(data):
    original = _ckpt(3)
    blob = bytearray(encode(original))
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    try:
        back = decode(bytes(blob))
    except CorruptCheckpoint:
        return
    # Only a change that leaves the content identical (e.g. JSON padding) may pass.
    assert back.meta == original.meta
    assert back.tensors.keys() == original.tensors.keys()
    for name, t in original.tensors.items():
        np.testing.assert_array_equal(back.tensors[name], t)
        assert back.tensors[name].dtype == t.dtype
