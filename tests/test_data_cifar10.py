"""CIFAR-10 binary: small files in the exact official format, the tar.gz, and the download."""

import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from gossipnet.data import cifar10, load_dataset
from gossipnet.data.download import download
from gossipnet.errors import UserError

PER_BATCH = 4  # records per synthetic batch (the official files hold 10,000)


def encode_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Records as the CIFAR page specifies: label byte, then 1024 R, 1024 G, 1024 B (row-major)."""
    out = bytearray()
    for image, label in zip(images, labels):
        out.append(int(label))
        for channel in image:  # R, G, B planes
            out += channel.tobytes(order="C")
    return bytes(out)


def synthetic_files(seed: int = 0):
    """File name -> bytes for a complete tiny release, plus the arrays they encode."""
    rng = np.random.default_rng(seed)
    files, train_x, train_y = {}, [], []
    for name in (*cifar10.TRAIN_FILES, cifar10.TEST_FILE):
        x = rng.integers(0, 256, (PER_BATCH, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, PER_BATCH, dtype=np.uint8)
        files[name] = encode_batch(x, y)
        if name == cifar10.TEST_FILE:
            test = (x, y)
        else:
            train_x.append(x)
            train_y.append(y)
    files[cifar10.META_FILE] = ("\n".join(cifar10.CLASSES) + "\n\n").encode()
    return files, (np.concatenate(train_x), np.concatenate(train_y)), test


def write_dir(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_tar(path: Path, files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in {**{f"{cifar10.SUBDIR}/{n}": d for n, d in files.items()}, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def assert_matches(raw, train, test):
    np.testing.assert_array_equal(raw.x_train, train[0])
    np.testing.assert_array_equal(raw.y_train, train[1])
    np.testing.assert_array_equal(raw.x_test, test[0])
    np.testing.assert_array_equal(raw.y_test, test[1])
    assert raw.classes == cifar10.CLASSES


def test_record_layout_is_label_then_red_green_blue_planes():
    image = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    image[0, 0, 0, 1] = 11  # red, row 0, column 1
    image[0, 1, 1, 0] = 22  # green, row 1, column 0
    image[0, 2, 31, 31] = 33  # blue, last pixel
    record = bytearray(cifar10.RECORD_BYTES)
    record[0], record[1 + 1], record[1 + 1024 + 32], record[1 + 3071] = 7, 11, 22, 33
    x, y = cifar10.decode_batch(bytes(record), "one.bin")
    assert y.tolist() == [7]
    np.testing.assert_array_equal(x, image)


def test_directory_of_bin_files_is_read(tmp_path):
    files, train, test = synthetic_files()
    assert_matches(cifar10.read_cifar10(write_dir(tmp_path, files)), train, test)


def test_parent_of_the_extracted_subdirectory_is_read(tmp_path):
    files, train, test = synthetic_files()
    write_dir(tmp_path / cifar10.SUBDIR, files)
    assert_matches(cifar10.read_cifar10(tmp_path), train, test)


def test_tar_gz_is_read_without_extracting_anything(tmp_path):
    files, train, test = synthetic_files()
    hostile = {"../escaped.bin": b"x", "/tmp/absolute.bin": b"y", "cifar-10-batches-bin/readme.html": b"<p>"}
    archive = write_tar(tmp_path / cifar10.ARCHIVE_NAME, files, hostile)
    before = set(tmp_path.rglob("*")), set(Path.cwd().parent.iterdir())
    assert_matches(cifar10.read_cifar10(archive), train, test)
    assert_matches(cifar10.read_cifar10(tmp_path), train, test)  # the directory holding the archive
    assert (set(tmp_path.rglob("*")), set(Path.cwd().parent.iterdir())) == before
    assert not Path("/tmp/absolute.bin").exists()


def test_links_in_the_archive_are_ignored(tmp_path):
    files, _, _ = synthetic_files()
    del files[cifar10.TEST_FILE]
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(cifar10.TEST_FILE)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UserError, match="archive lacks test_batch.bin"):
        cifar10.read_cifar10(archive)


def test_meta_file_is_optional_and_otherwise_must_list_ten_classes(tmp_path):
    files, train, test = synthetic_files()
    del files[cifar10.META_FILE]
    assert_matches(cifar10.read_cifar10(write_dir(tmp_path / "a", files)), train, test)
    files[cifar10.META_FILE] = b"cat\ndog\n"
    with pytest.raises(UserError, match="expected 10 class names, one a line, found 2"):
        cifar10.read_cifar10(write_dir(tmp_path / "b", files))


def test_missing_batch_files_are_named(tmp_path):
    files, _, _ = synthetic_files()
    del files["data_batch_3.bin"], files[cifar10.TEST_FILE]
    with pytest.raises(UserError, match=r"missing: data_batch_3.bin, test_batch.bin.*cifar-10-binary.tar.gz"):
        cifar10.read_cifar10(write_dir(tmp_path, files))


def test_directory_without_cifar_files_says_what_is_expected(tmp_path):
    with pytest.raises(UserError, match=r"holds no CIFAR-10 binary files: expected data_batch_1.bin.*sha256"):
        cifar10.read_cifar10(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        cifar10.read_cifar10(tmp_path / "absent")


def test_truncated_batch_is_rejected_with_leftover_count(tmp_path):
    files, _, _ = synthetic_files()
    files["data_batch_2.bin"] = files["data_batch_2.bin"][:-100]
    with pytest.raises(UserError, match=r"data_batch_2.bin: 12,192 bytes .*\(2973 bytes left over\)"):
        cifar10.read_cifar10(write_dir(tmp_path, files))


def test_empty_batch_and_bad_label_are_rejected():
    with pytest.raises(UserError, match="empty CIFAR-10 batch"):
        cifar10.decode_batch(b"", "x.bin")
    record = bytes([10]) + bytes(3072)
    with pytest.raises(UserError, match="record 0 has label 10"):
        cifar10.decode_batch(record, "x.bin")


def test_python_pickle_release_is_not_mistaken_for_binary(tmp_path):
    # The pickled release has data_batch_1 (no .bin) and must never be unpickled.
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04fake pickle")
    with pytest.raises(UserError, match="holds no CIFAR-10 binary files"):
        cifar10.read_cifar10(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_archive_gives_a_user_error(tmp_path, damage):
    files, _, _ = synthetic_files()
    archive = write_tar(tmp_path / "a.tar.gz", files)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x1f\x8b" + bytes(500))
    with pytest.raises(UserError, match="a.tar.gz"):
        cifar10.read_cifar10(archive)


def test_load_dataset_normalises_cifar_with_training_statistics(tmp_path):
    files, train, test = synthetic_files()
    data = load_dataset("cifar10", write_dir(tmp_path, files))
    assert data.x_train.shape == (5 * PER_BATCH, 3, 32, 32) and data.x_train.dtype == np.float32
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 2, 3)), 1, atol=1e-5)
    x = train[0].astype(np.float64)
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    expect = (test[0] - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(data.x_test, expect, rtol=1e-5, atol=1e-5)
    assert data.y_test.dtype == np.int64


# --- download ------------------------------------------------------------------------------


class _NoLengthHandler(http.server.BaseHTTPRequestHandler):
    """Streams 64 KiB with no Content-Length, to exercise the running size cap."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(bytes(64 * 1024))

    def log_message(self, *args):
        pass


class _TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Sends one byte every 20 ms for at most 5 s: alive, but never done in time."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(250):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:
            pass  # the client gave up, as it should

    def log_message(self, *args):
        pass


@contextmanager
def local_server(directory: Path | None = None, handler=_NoLengthHandler):
    """An HTTP server on 127.0.0.1 serving ``directory``, or answering with ``handler``."""
    if directory is not None:

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(directory), **kwargs)

            def log_message(self, *args):
                pass

    else:
        Handler = handler
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def served_archive(tmp_path, monkeypatch):
    files, train, test = synthetic_files(seed=3)
    www = tmp_path / "www"
    www.mkdir()
    archive = write_tar(www / cifar10.ARCHIVE_NAME, files)
    with local_server(www) as base:
        monkeypatch.setattr(cifar10, "URL", f"{base}/{cifar10.ARCHIVE_NAME}")
        monkeypatch.setattr(cifar10, "SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
        yield archive, train, test


def test_download_with_good_checksum_lands_in_cache_and_loads(tmp_path, served_archive):
    archive, train, test = served_archive
    cache = tmp_path / "cache"
    data = load_dataset("cifar10", cache_dir=cache, download=True)
    assert (cache / cifar10.ARCHIVE_NAME).read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [cifar10.ARCHIVE_NAME]  # no temp left
    assert data.y_train.tolist() == train[1].tolist()
    assert load_dataset("cifar10", cache_dir=cache).y_test.tolist() == test[1].tolist()  # now cached


def test_download_with_bad_checksum_is_discarded(tmp_path, served_archive, monkeypatch):
    monkeypatch.setattr(cifar10, "SHA256", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match=r"failed its checksum: sha256 [0-9a-f]{64}, expected 0{64}"):
        load_dataset("cifar10", cache_dir=cache, download=True)
    assert list(cache.iterdir()) == []  # neither the archive nor a temp file


def test_cache_without_download_says_how_to_get_the_data(tmp_path):
    with pytest.raises(UserError, match=r"not in the cache .*enable download.*cs.toronto.edu"):
        load_dataset("cifar10", cache_dir=tmp_path)


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port on loopback that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(cifar10, "URL", f"http://127.0.0.1:{port}/{cifar10.ARCHIVE_NAME}")
    with pytest.raises(UserError, match=r"may be offline; download .* on a machine with internet"):
        load_dataset("cifar10", cache_dir=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_reported_with_status(tmp_path, served_archive, monkeypatch):
    monkeypatch.setattr(cifar10, "URL", cifar10.URL + ".missing")
    with pytest.raises(UserError, match="HTTP 404"):
        cifar10.cached_archive(tmp_path, fetch=True)


def test_oversized_download_is_cut_off(tmp_path, served_archive):
    archive, _, _ = served_archive
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="offers .* bytes, more than the 100 expected"):
        download(cifar10.URL, cache / "a", sha256=digest, max_bytes=100)
    with local_server() as base:
        with pytest.raises(UserError, match="sent more than the 1,000 bytes"):
            download(f"{base}/x", cache / "b", sha256=digest, max_bytes=1000)
    assert list(cache.iterdir()) == []


def test_trickling_server_is_given_up_on_at_the_deadline(tmp_path):
    with local_server(handler=_TrickleHandler) as base:
        # The trickle would end (with a wrong hash) after 5 s: this error means the deadline cut it.
        with pytest.raises(UserError, match=r"took longer than 0.3 s"):
            download(f"{base}/slow", tmp_path / "a", sha256="0" * 64, max_bytes=10_000, deadline=0.3)
    assert list(tmp_path.iterdir()) == []


def test_damaged_cached_archive_says_to_delete_it(tmp_path):
    (tmp_path / cifar10.ARCHIVE_NAME).write_bytes(b"\x1f\x8b" + bytes(100))
    with pytest.raises(UserError, match=r"cached copy is damaged: delete .*cifar-10-binary.tar.gz"):
        load_dataset("cifar10", cache_dir=tmp_path)
