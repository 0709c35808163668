"""The IDX reader: round trips, and a clear UserError for every kind of bad file."""

import gzip
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gossipnet.data.idx import MAX_DIMS, encode_idx, read_idx, write_idx
from gossipnet.errors import UserError

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def images(n=5, rows=4, cols=3):
    return np.arange(n * rows * cols, dtype=np.uint8).reshape(n, rows, cols)


@settings(max_examples=60, deadline=None)
@given(
    array=st.sampled_from(IDX_DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    ),
    compress=st.booleans(),
)
def test_any_array_round_trips_through_raw_and_gzipped_idx(tmp_path_factory, array, compress):
    path = tmp_path_factory.mktemp("idx") / "a.idx"
    write_idx(path, array, compress=compress)
    back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=")
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_reader_returns_writable_native_endian_arrays(tmp_path):
    write_idx(tmp_path / "x.gz", np.array([1, -2, 300], dtype=np.int32))
    back = read_idx(tmp_path / "x.gz")
    assert back.dtype.isnative and back.flags.writeable
    back[0] = 7  # would raise on a read-only buffer


def test_header_is_big_endian_as_the_format_specifies():
    data = encode_idx(np.array([[1, 2, 3]], dtype=np.int16))
    assert data[:4] == bytes([0, 0, 0x0B, 2])
    assert struct.unpack(">II", data[4:12]) == (1, 3)
    assert data[12:] == b"\x00\x01\x00\x02\x00\x03"


def test_gzip_is_detected_by_magic_bytes_not_file_name(tmp_path):
    array = images()
    gz_without_suffix = tmp_path / "train-images-idx3-ubyte"
    gz_without_suffix.write_bytes(gzip.compress(encode_idx(array)))
    raw_with_gz_suffix = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw_with_gz_suffix.write_bytes(encode_idx(array))
    np.testing.assert_array_equal(read_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(read_idx(raw_with_gz_suffix), array)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(UserError, match=r"nope\.gz: file not found"):
        read_idx(tmp_path / "nope.gz")


def test_directory_instead_of_file_is_rejected(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        read_idx(tmp_path)


@pytest.mark.parametrize("compress", [False, True])
def test_wrong_magic_is_rejected_with_the_bytes_found(tmp_path, compress):
    data = b"PK\x03\x04" + bytes(100)  # a zip file, say
    path = tmp_path / "f"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(UserError, match=r"f: not an IDX file \(magic bytes 50 4b 03 04"):
        read_idx(path)


def test_unknown_dtype_code_is_rejected(tmp_path):
    (tmp_path / "f").write_bytes(bytes([0, 0, 0x0A, 1]) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(UserError, match="unknown IDX dtype code 0x0a"):
        read_idx(tmp_path / "f")


@pytest.mark.parametrize("ndim", [0, MAX_DIMS + 1, 255])
def test_implausible_dimension_count_is_rejected(tmp_path, ndim):
    (tmp_path / "f").write_bytes(bytes([0, 0, 0x08, ndim]) + bytes(4 * ndim))
    with pytest.raises(UserError, match=f"declares {ndim} dimensions"):
        read_idx(tmp_path / "f")


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("keep", [0, 3, 7, 15, 16 + 59])
def test_truncated_file_says_truncated(tmp_path, compress, keep):
    data = encode_idx(images())[:keep]  # full file: 16 header + 60 data bytes
    path = tmp_path / "f"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(UserError, match="truncated"):
        read_idx(path)


def test_truncated_data_reports_expected_and_found_sizes(tmp_path):
    (tmp_path / "f").write_bytes(encode_idx(images())[:-10])
    with pytest.raises(UserError, match=r"needs 60 data bytes, found 50"):
        read_idx(tmp_path / "f")


def test_gzip_stream_cut_short_says_truncated(tmp_path):
    packed = gzip.compress(encode_idx(np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8)))
    (tmp_path / "f.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(UserError, match="truncated gzip file"):
        read_idx(tmp_path / "f.gz")


def test_trailing_bytes_after_declared_data_are_rejected(tmp_path):
    (tmp_path / "f").write_bytes(encode_idx(images()) + b"junk")
    with pytest.raises(UserError, match="extra bytes after the 60 declared data bytes"):
        read_idx(tmp_path / "f")


def test_corrupt_gzip_payload_is_reported_as_corrupt(tmp_path):
    packed = bytearray(gzip.compress(encode_idx(images(50, 28, 28))))
    packed[len(packed) // 2] ^= 0xFF
    (tmp_path / "f.gz").write_bytes(bytes(packed))
    with pytest.raises(UserError, match=r"f\.gz: (corrupt gzip|truncated|not an IDX|.*extra bytes)"):
        read_idx(tmp_path / "f.gz")


def test_gzip_crc_mismatch_is_caught(tmp_path):
    packed = bytearray(gzip.compress(encode_idx(images())))
    packed[-8] ^= 0x01  # the CRC32 of the trailer (RFC 1952): data intact, checksum wrong
    (tmp_path / "f.gz").write_bytes(bytes(packed))
    with pytest.raises(UserError, match="corrupt gzip data.*CRC"):
        read_idx(tmp_path / "f.gz")


def test_huge_declared_shape_is_refused_before_allocating(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 60000, 28000, 28000)
    (tmp_path / "f").write_bytes(header + bytes(10))
    with pytest.raises(UserError, match="more than the .*-byte limit"):
        read_idx(tmp_path / "f")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), compress=st.booleans())
def test_arbitrary_bytes_give_an_array_or_a_user_error(tmp_path_factory, data, compress):
    path = tmp_path_factory.mktemp("fuzz") / "f"
    path.write_bytes(gzip.compress(data) if compress else data)
    try:
        read_idx(path)
    except UserError as exc:
        assert str(path) in str(exc)


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=1, max_value=200), flip=st.integers(min_value=10, max_value=10_000))
def test_damaged_gzip_never_escapes_as_anything_but_user_error(tmp_path_factory, cut, flip):
    packed = bytearray(gzip.compress(encode_idx(images(20, 28, 28))))
    packed[flip % len(packed)] ^= 0x5A
    path = tmp_path_factory.mktemp("dmg") / "f.gz"
    path.write_bytes(bytes(packed[: max(len(packed) - cut, 2)]))
    with pytest.raises(UserError):
        read_idx(path)


def test_writer_rejects_what_idx_cannot_store():
    with pytest.raises(ValueError, match="cannot store dtype"):
        encode_idx(np.zeros(3, dtype=np.uint16))
    with pytest.raises(ValueError, match="1 to"):
        encode_idx(np.zeros(()))


def test_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        read_idx(fifo)
