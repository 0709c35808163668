"""Read the official *binary* CIFAR-10 release, never the pickled one.

``cifar-10-binary.tar.gz`` unpacks to ``cifar-10-batches-bin/`` holding
``data_batch_1.bin`` .. ``data_batch_5.bin`` (training), ``test_batch.bin`` and
``batches.meta.txt`` (class names, one a line). Each ``.bin`` is a run of
3,073-byte records: one label byte (0-9), then 3,072 pixel bytes: the 1,024
red values of a 32x32 image row-major, then green, then blue. That is NCHW
already. Source: https://www.cs.toronto.edu/~kriz/cifar.html ("Binary version").

A tar.gz is read member by member in memory; nothing is ever extracted, so
member paths (``../``, absolute, links) cannot write anywhere.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from gossipnet.data.download import default_cache_dir, download
from gossipnet.data.normalize import RawData
from gossipnet.errors import UserError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
# sha256 and size as recorded by tensorflow_datasets (url_checksums/cifar10.txt);
# the md5 is the one published on the CIFAR page, kept for people checking by hand.
SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_BYTES = 170_052_171
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
SUBDIR = "cifar-10-batches-bin"

TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
CHANNELS, SIDE = 3, 32
RECORD_BYTES = 1 + CHANNELS * SIDE * SIDE  # 3,073
# The official batches hold 10,000 records (30,730,000 bytes); anything much
# larger is not a CIFAR-10 batch, and we refuse before reading it into memory.
MAX_BATCH_BYTES = 64 << 20
# In label order; the same as batches.meta.txt of the official release.
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")



def how_to_get() -> str:
    """The fix every "CIFAR-10 not found / corrupt" error ends with."""
    return (
        f"download {URL} (sha256 {SHA256}), or run with download enabled "
        f"(gossipnet caches it in {default_cache_dir()})"
    )


def decode_batch(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) uint8 from one ``.bin`` batch."""
    if len(data) == 0:
        raise UserError(f"{name}: empty CIFAR-10 batch file")
    if len(data) % RECORD_BYTES:
        raise UserError(
            f"{name}: {len(data):,} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records "
            f"({len(data) % RECORD_BYTES} bytes left over): truncated or not the binary version; {how_to_get()}"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    bad = np.flatnonzero(labels >= len(CLASSES))
    if bad.size:
        raise UserError(
            f"{name}: record {bad[0]} has label {labels[bad[0]]}, CIFAR-10 labels are 0 to 9; "
            f"the file is corrupt or not CIFAR-10 binary; {how_to_get()}"
        )
    images = records[:, 1:].reshape(-1, CHANNELS, SIDE, SIDE).copy()
    return images, labels


def parse_meta(text: bytes, name: str) -> tuple[str, ...]:
    """Class names from ``batches.meta.txt``: ten non-blank lines."""
    try:
        names = tuple(line.strip() for line in text.decode("ascii").splitlines() if line.strip())
    except UnicodeDecodeError:
        raise UserError(f"{name}: class-name file is not ASCII text") from None
    if len(names) != len(CLASSES):
        raise UserError(f"{name}: expected {len(CLASSES)} class names, one a line, found {len(names)}")
    return names


def read_cifar10(source: str | Path) -> RawData:
    """Read CIFAR-10 binary from a directory of ``.bin`` files, its parent, or the tar.gz.

    ``source`` may be ``cifar-10-batches-bin/`` itself, a directory holding it
    or holding ``cifar-10-binary.tar.gz``, or the archive's path.
    """
    source = Path(source).expanduser()
    if source.is_file():
        return _from_files(_read_tar(source), str(source))
    if not source.is_dir():
        what = "is not a regular file or directory" if source.exists() else "does not exist"
        raise UserError(f"CIFAR-10 data directory {source} {what}; {how_to_get()}")
    for folder in (source, source / SUBDIR):
        present = [f for f in (*TRAIN_FILES, TEST_FILE) if (folder / f).is_file()]
        if present:
            return _from_files(_read_dir(folder, present), str(folder))
    if (source / ARCHIVE_NAME).is_file():
        return read_cifar10(source / ARCHIVE_NAME)
    raise UserError(
        f"{source} holds no CIFAR-10 binary files: expected {', '.join(TRAIN_FILES)} and {TEST_FILE} "
        f"(in it or in {SUBDIR}/), or {ARCHIVE_NAME}; {how_to_get()}"
    )


def cached_archive(cache_dir: str | Path | None = None, *, fetch: bool = False) -> Path:
    """The archive in the cache, downloading it first when ``fetch`` is true.

    Module attributes ``URL`` and ``SHA256`` are read at call time, so tests can
    point them at a local server.
    """
    dest = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dest = dest / ARCHIVE_NAME
    if dest.is_file():
        return dest
    if not fetch:
        raise UserError(
            f"CIFAR-10 is not in the cache ({dest}); pass a data directory holding {SUBDIR}/ "
            f"or {ARCHIVE_NAME}, or enable download; {how_to_get()}"
        )
    return download(
        URL,
        dest,
        sha256=SHA256,
        max_bytes=ARCHIVE_BYTES + (1 << 20),
        manual_hint=f"download {URL} on a machine with internet and pass the directory holding it",
    )


def _read_dir(folder: Path, present: list[str]) -> dict[str, bytes]:
    wanted = (*TRAIN_FILES, TEST_FILE)
    missing = [f for f in wanted if f not in present]
    if missing:
        raise UserError(f"{folder}: CIFAR-10 files missing: {', '.join(missing)}; {how_to_get()}")
    files: dict[str, bytes] = {}
    for name in (*wanted, META_FILE):
        path = folder / name
        if name == META_FILE and not path.is_file():
            continue  # optional: the class names are known
        try:
            if path.stat().st_size > MAX_BATCH_BYTES:
                raise UserError(f"{path}: {path.stat().st_size:,} bytes is too large for a CIFAR-10 batch")
            files[name] = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return files


def _read_tar(path: Path) -> dict[str, bytes]:
    """The batch and meta members of a tar archive, by base name, read into memory."""
    wanted = {*TRAIN_FILES, TEST_FILE, META_FILE}
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if base not in wanted or not member.isfile():
                    continue  # links, devices, readme.html and anything else are ignored
                if base in files:
                    raise UserError(f"{path}: archive holds {base} twice; use the official {ARCHIVE_NAME}")
                if member.size > MAX_BATCH_BYTES:
                    raise UserError(f"{path}: member {member.name} is {member.size:,} bytes, too large for CIFAR-10")
                stream = tar.extractfile(member)
                files[base] = stream.read() if stream else b""
                if len(files[base]) != member.size:
                    raise UserError(f"{path}: truncated archive (member {member.name} ends early); {how_to_get()}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UserError(f"{path}: corrupt or unreadable archive ({exc or type(exc).__name__}); {how_to_get()}") from None
    missing = [f for f in (*TRAIN_FILES, TEST_FILE) if f not in files]
    if missing:
        raise UserError(f"{path}: archive lacks {', '.join(missing)}; is it {ARCHIVE_NAME}? {how_to_get()}")
    return files


def _from_files(files: dict[str, bytes], where: str) -> RawData:
    train = [decode_batch(files[f], f"{where}/{f}") for f in TRAIN_FILES]
    x_test, y_test = decode_batch(files[TEST_FILE], f"{where}/{TEST_FILE}")
    classes = parse_meta(files[META_FILE], f"{where}/{META_FILE}") if META_FILE in files else CLASSES
    return RawData(
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        classes=classes,
    )
