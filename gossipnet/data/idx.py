"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic (two zero bytes, a dtype code, the number of
dimensions), one big-endian uint32 per dimension, then the items, big-endian,
row-major. Files are often gzipped; we tell gzip from raw by the first two
bytes (1f 8b, RFC 1952), never by the file name, because downloads get renamed.

Format reference: http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT").
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gossipnet.errors import UserError

GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952, section 2.3.1

# The IDX dtype codes (third magic byte) and the big-endian numpy dtypes they name.
DTYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in DTYPE_CODES.items()}

# Refuse to allocate more than this for one file: MNIST's largest file holds
# 47 MB, so 1 GiB is generous, and it stops a corrupt header (or a gzip bomb
# that declares a huge shape) from exhausting memory before we notice.
MAX_DATA_BYTES = 1 << 30
MAX_DIMS = 8


def read_idx(path: str | Path, *, max_bytes: int = MAX_DATA_BYTES) -> np.ndarray:
    """Read one IDX file (gzipped or raw) into a native-endian, writable array.

    Every way the file can be wrong (missing, not IDX, unknown dtype, truncated,
    trailing bytes, corrupt gzip) raises ``UserError`` naming the file.
    """
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        # A FIFO or device would block or never end; data sets are regular files.
        raise UserError(f"{path}: not a regular file, expected an IDX file")
    try:
        raw = path.open("rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected an IDX file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            try:
                return _read_stream(raw, path, max_bytes, compressed=False)
            except OSError as exc:
                raise UserError(f"{path}: read failed ({exc.strerror or exc})") from None
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            try:
                return _read_stream(stream, path, max_bytes, compressed=True)
            except EOFError:
                raise UserError(
                    f"{path}: truncated gzip file (the compressed stream ends early); "
                    "download the file again"
                ) from None
            except (gzip.BadGzipFile, zlib.error) as exc:
                raise UserError(
                    f"{path}: corrupt gzip data ({exc or type(exc).__name__}); "
                    "download the file again"
                ) from None
            except OSError as exc:
                raise UserError(f"{path}: read failed ({exc.strerror or exc})") from None


def _read_stream(stream: BinaryIO, path: Path, max_bytes: int, *, compressed: bool) -> np.ndarray:
    what = "gzipped IDX file" if compressed else "IDX file"
    magic = _read_exact(stream, 4)
    if len(magic) < 4:
        raise UserError(f"{path}: truncated {what}: {len(magic)} bytes, too short for the 4-byte magic")
    if magic[0:2] != b"\x00\x00":
        raise UserError(
            f"{path}: not an IDX file (magic bytes {magic.hex(' ')}, expected 00 00 <dtype> <ndim>)"
        )
    code, ndim = magic[2], magic[3]
    if code not in DTYPE_CODES:
        known = ", ".join(f"0x{c:02x}" for c in DTYPE_CODES)
        raise UserError(f"{path}: unknown IDX dtype code 0x{code:02x} (known: {known})")
    if not 1 <= ndim <= MAX_DIMS:
        raise UserError(f"{path}: IDX header declares {ndim} dimensions, expected 1 to {MAX_DIMS}")
    header = _read_exact(stream, 4 * ndim)
    if len(header) < 4 * ndim:
        raise UserError(f"{path}: truncated {what}: the header declares {ndim} dimensions but ends early")
    shape = tuple(int(d) for d in np.frombuffer(header, dtype=">u4"))
    dtype = DTYPE_CODES[code]
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))
    if nbytes > max_bytes:
        raise UserError(
            f"{path}: IDX header declares shape {shape} ({nbytes:,} bytes), more than the "
            f"{max_bytes:,}-byte limit; the file is corrupt or not a data set file"
        )
    buf = bytearray(nbytes)
    got = _readinto_exact(stream, buf)
    if got < nbytes:
        raise UserError(
            f"{path}: truncated {what}: shape {shape} needs {nbytes:,} data bytes, found {got:,}; "
            "download the file again"
        )
    if stream.read(1):  # for gzip this also reads the trailer and checks the CRC
        raise UserError(f"{path}: {what} has extra bytes after the {nbytes:,} declared data bytes")
    array = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _readinto_exact(stream: BinaryIO, buf: bytearray) -> int:
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as raw (uncompressed) IDX bytes."""
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= MAX_DIMS:
        raise ValueError(f"IDX stores 1 to {MAX_DIMS} dimensions, got {array.ndim}")
    if any(d >= 1 << 32 for d in array.shape):
        raise ValueError(f"IDX dimensions must fit in uint32, got {array.shape}")
    out = io.BytesIO()
    out.write(bytes([0, 0, code, array.ndim]))
    out.write(np.asarray(array.shape, dtype=">u4").tobytes())
    out.write(np.ascontiguousarray(array, dtype=DTYPE_CODES[code]).tobytes())
    return out.getvalue()


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool = True) -> None:
    """Write an array as an IDX file, gzipped by default.

    The gzip header's timestamp is fixed at 0 so the same array always gives
    the same bytes (the embedded data set is rebuilt and compared byte for byte).
    """
    data = encode_idx(array)
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    Path(path).write_bytes(data)
