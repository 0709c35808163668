"""The embedded default: real, balanced, normalised, and exactly what the script builds."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gossipnet.data import load_dataset
from gossipnet.data.idx import read_idx
from gossipnet.data.mnist import EMBEDDED_DIR, FASHION_CLASSES, read_idx_set

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO.parent / "shared" / "datasets" / "fashion-mnist"


@pytest.fixture(scope="module")
def embedded():
    return load_dataset("embedded")


def test_embedded_set_has_the_documented_shapes_and_types(embedded):
    assert embedded.name == "embedded"
    assert embedded.x_train.shape == (10_000, 1, 28, 28) and embedded.x_train.dtype == np.float32
    assert embedded.x_test.shape == (2_000, 1, 28, 28) and embedded.x_test.dtype == np.float32
    assert embedded.y_train.dtype == np.int64 and embedded.y_test.dtype == np.int64
    assert embedded.classes == FASHION_CLASSES and embedded.num_classes == 10
    assert embedded.input_shape == (1, 28, 28)


def test_embedded_classes_are_balanced(embedded):
    assert np.bincount(embedded.y_train).tolist() == [1000] * 10
    assert np.bincount(embedded.y_test).tolist() == [200] * 10


def test_embedded_training_split_is_normalised(embedded):
    assert abs(float(embedded.x_train.mean(dtype=np.float64))) < 1e-4
    assert abs(float(embedded.x_train.std(dtype=np.float64)) - 1) < 1e-4
    assert np.isfinite(embedded.x_test).all()


def test_licence_and_readme_ship_beside_the_data():
    assert "Zalando" in (EMBEDDED_DIR / "COPYRIGHT").read_text()
    readme = (EMBEDDED_DIR / "README.md").read_text()
    assert "scripts/build_embedded.py" in readme and "1,000 of each class" in readme


def test_embedded_images_are_the_source_images_they_claim_to_be():
    if not SOURCE.is_dir():
        pytest.skip(f"the Fashion-MNIST source is not at {SOURCE}")
    for split in ("train", "t10k"):
        picked = read_idx(EMBEDDED_DIR / f"{split}-source-indices-idx1-int.gz")
        assert len(np.unique(picked)) == len(picked)
        for kind in ("images-idx3", "labels-idx1"):
            source = read_idx(SOURCE / f"{split}-{kind}-ubyte.gz")
            np.testing.assert_array_equal(read_idx(EMBEDDED_DIR / f"{split}-{kind}-ubyte.gz"), source[picked])


def load_script():
    spec = importlib.util.spec_from_file_location("build_embedded", REPO / "scripts" / "build_embedded.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_build_script_selects_exactly_the_committed_subset():
    # Byte-for-byte regeneration (gzip -9 of 5 MB) is `build_embedded.py --check`; here the
    # cheap part: the script's seeded selection is the one committed, and the notices match.
    if not SOURCE.is_dir():
        pytest.skip(f"the Fashion-MNIST source is not at {SOURCE}")
    script = load_script()
    train, test = script.select(
        read_idx(SOURCE / "train-labels-idx1-ubyte.gz"),
        read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz"),
        script.TRAIN_PER_CLASS,
        script.TEST_PER_CLASS,
        script.SEED,
    )
    np.testing.assert_array_equal(read_idx(EMBEDDED_DIR / script.INDEX_FILES[0]), train)
    np.testing.assert_array_equal(read_idx(EMBEDDED_DIR / script.INDEX_FILES[1]), test)
    assert (EMBEDDED_DIR / "COPYRIGHT").read_bytes() == (SOURCE / "COPYRIGHT").read_bytes()


def test_build_script_output_is_reproducible_and_loadable(tmp_path):
    # A small build (10 + 2 per class) through the same code path, twice: identical bytes,
    # and the package's own reader loads it.
    if not SOURCE.is_dir():
        pytest.skip(f"the Fashion-MNIST source is not at {SOURCE}")
    script = load_script()
    for out in (tmp_path / "a", tmp_path / "b"):
        assert script.main(["--source", str(SOURCE), "--out", str(out), "--train-per-class", "10",
                            "--test-per-class", "2"]) == 0
    assert script.main(["--source", str(SOURCE), "--out", str(tmp_path / "a"), "--train-per-class", "10",
                        "--test-per-class", "2", "--check"]) == 0
    for name in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    raw = read_idx_set(tmp_path / "a", "embedded", FASHION_CLASSES)
    assert raw.x_train.shape == (100, 1, 28, 28) and np.bincount(raw.y_test).tolist() == [2] * 10
