"""load_dataset: names, data directories, MNIST-style files, normalisation."""

import numpy as np
import pytest

from gossipnet.data import DATASET_NAMES, load_dataset
from gossipnet.data.idx import write_idx
from gossipnet.data.mnist import FILES
from gossipnet.data.normalize import channel_stats, normalise
from gossipnet.errors import UserError


def write_mnist_dir(folder, n_train=30, n_test=10, seed=0, compress=True, names=FILES):
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    )
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(names, arrays):
        write_idx(folder / (name + (".gz" if compress else "")), array, compress=compress)
    return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("compress", [True, False])
def test_mnist_style_directory_loads_gzipped_or_raw(tmp_path, name, compress):
    x_train, y_train, x_test, y_test = write_mnist_dir(tmp_path, compress=compress)
    data = load_dataset(name, tmp_path)
    assert data.name == name and data.x_train.shape == (30, 1, 28, 28)
    assert data.classes[0] == ("0" if name == "mnist" else "T-shirt/top")
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    # Normalised with the *training* statistics, applied to both splits.
    mean, std = x_train.mean(dtype=np.float64), x_train.std(dtype=np.float64)
    np.testing.assert_allclose(data.x_test[:, 0], (x_test - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.x_train[:, 0], (x_train - mean) / std, rtol=1e-5, atol=1e-5)


def test_dotted_file_names_of_some_mirrors_are_found(tmp_path):
    dotted = tuple(n.replace("-idx", ".idx") for n in FILES)
    write_mnist_dir(tmp_path, names=dotted, compress=False)
    assert load_dataset("mnist", tmp_path).x_test.shape == (10, 1, 28, 28)


def test_unknown_name_lists_the_choices():
    with pytest.raises(UserError, match="unknown data set 'imagenet'; choose one of embedded, fashion-mnist, mnist, cifar10, folder"):
        load_dataset("imagenet")
    assert DATASET_NAMES == ("embedded", "fashion-mnist", "mnist", "cifar10", "folder")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_missing_data_dir_says_where_to_get_the_files(name):
    with pytest.raises(UserError, match=r"needs a data directory .*train-images-idx3-ubyte.gz.*from https://"):
        load_dataset(name)


def test_embedded_refuses_a_data_dir(tmp_path):
    with pytest.raises(UserError, match="ships inside gossipnet"):
        load_dataset("embedded", tmp_path)


def test_nonexistent_data_dir_is_named(tmp_path):
    with pytest.raises(UserError, match=r"fashion-mnist data directory .*/nope does not exist.*zalandoresearch"):
        load_dataset("fashion-mnist", tmp_path / "nope")


def test_missing_files_are_listed_with_the_full_expected_set(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"lacks t10k-labels-idx1-ubyte\[.gz\]; it must hold all of train-images"):
        load_dataset("mnist", tmp_path)


def test_label_count_mismatch_names_both_files(tmp_path):
    write_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(UserError, match=r"has 29 labels but train-images-idx3-ubyte.gz has 30 images"):
        load_dataset("mnist", tmp_path)


def test_images_and_labels_swapped_are_caught(tmp_path):
    write_mnist_dir(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    images = tmp_path / "train-images-idx3-ubyte.gz"
    data_l, data_i = labels.read_bytes(), images.read_bytes()
    labels.write_bytes(data_i)
    images.write_bytes(data_l)
    with pytest.raises(UserError, match=r"expected uint8 images of shape \(N, rows, cols\)"):
        load_dataset("mnist", tmp_path)


def test_out_of_range_label_is_rejected(tmp_path):
    write_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(10, 10, dtype=np.uint8))
    with pytest.raises(UserError, match="test labels must be 0 to 9, found 10 to 10"):
        load_dataset("mnist", tmp_path)


def test_train_and_test_image_sizes_must_agree(tmp_path):
    write_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 20, 20), dtype=np.uint8))
    with pytest.raises(UserError, match=r"train images are \(1, 28, 28\) but test images are \(1, 20, 20\)"):
        load_dataset("mnist", tmp_path)


def test_truncated_file_error_reaches_the_caller_with_its_path(tmp_path):
    write_mnist_dir(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte: truncated IDX file"):
        load_dataset("mnist", tmp_path)


def test_constant_channel_normalises_to_zeros_not_nan():
    x = np.full((4, 2, 3, 3), 9, dtype=np.uint8)
    x[:, 1] = np.arange(4, dtype=np.uint8)[:, None, None]
    mean, std = channel_stats(x)
    assert mean.tolist() == [9.0, 1.5] and std[0] == 1.0
    out = normalise(x, mean, std)
    assert np.all(out[:, 0] == 0)
    np.testing.assert_allclose(out[:, 1].std(), 1, rtol=1e-6)


def test_channel_stats_are_exact_on_many_images():
    x = np.random.default_rng(1).integers(0, 256, (9000, 3, 4, 4), dtype=np.uint8)  # several chunks
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3), dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3), dtype=np.float64), rtol=1e-12)
