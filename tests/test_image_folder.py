"""`--dataset folder`: your own pictures, from a folder the test writes, to a trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gossipnet.cli import main
from gossipnet.data import folder as folder_mod
from gossipnet.data import load_dataset
from gossipnet.data.folder import CACHE_DIRNAME, read_folder
from gossipnet.data.images import BadImage, decode_image
from gossipnet.errors import UserError
from tests.image_folders import CLASSES, write_class, write_corrupt, write_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `gossipnet train --dataset folder` run on 3 learnable classes with a corrupt file."""
    root = write_folder(tmp_path_factory.mktemp("pictures"), n=40, seed=1)
    corrupt = write_corrupt(root / "left" / "broken.png")
    ckpt = tmp_path_factory.mktemp("run") / "pictures.safetensors"
    return root, corrupt, ckpt


def test_learnable_folder_reaches_95_percent_and_the_corrupt_file_is_reported(trained, capsys):
    root, corrupt, ckpt = trained
    rc = main(["train", "--dataset", "folder", "--data-dir", str(root), "--net", "tiny",
               "--image-size", "16", "--epochs", "12", "--json", "--checkpoint", str(ckpt), "--seed", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["classes"] == list(CLASSES) and result["input_shape"] == [1, 16, 16]
    assert result["train_images"] + result["test_images"] == 3 * 40  # the corrupt file is not counted
    assert result["test_accuracy"] >= 0.95, result["history"]
    assert result["skipped"] == [{"path": "left/broken.png", "reason": result["skipped"][0]["reason"]}]
    assert "corrupt" in result["skipped"][0]["reason"]
    assert "left/broken.png" in err and "skipped 1 picture" in err


def test_a_second_load_reads_the_cache_and_decodes_nothing(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pics", n=6)
    first = read_folder(root, image_size=12)
    assert not first.from_cache and first.cache_path.parent == root / CACHE_DIRNAME

    def no_decoding(*_a, **_k):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(folder_mod, "decode_image", no_decoding)
    again = read_folder(root, image_size=12)  # a restart, or a second node on the same share
    assert again.from_cache
    np.testing.assert_array_equal(again.raw.x_train, first.raw.x_train)
    assert again.raw.classes == first.raw.classes == CLASSES


def test_changed_content_or_settings_miss_the_cache_and_a_damaged_cache_is_rebuilt(tmp_path):
    root = write_folder(tmp_path / "pics", n=6)
    first = read_folder(root, image_size=12)
    assert not read_folder(root, image_size=14).from_cache  # other settings: another key
    first.cache_path.write_bytes(first.cache_path.read_bytes()[:200])  # torn by a crash
    rebuilt = read_folder(root, image_size=12)
    assert not rebuilt.from_cache and read_folder(root, image_size=12).from_cache
    write_class(root / "top", "top", 7, seed=5)  # one more picture (top_006)
    assert not read_folder(root, image_size=12).from_cache


def test_a_read_only_share_caches_in_the_user_cache_directory(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pics", n=4)
    (root / CACHE_DIRNAME).write_text("a file where the cache directory would go")  # cannot mkdir
    got = read_folder(root, image_size=10, cache_dir=tmp_path / "user-cache")
    assert got.cache_path.parent == tmp_path / "user-cache"
    assert read_folder(root, image_size=10, cache_dir=tmp_path / "user-cache").from_cache


def test_held_out_split_is_seeded_per_class_and_disjoint(tmp_path):
    root = write_folder(tmp_path / "pics", n=10, colour=False)
    a = read_folder(root, image_size=8, seed=3, cache_dir=tmp_path / "c")
    b = load_dataset("folder", root, image_size=8, cache_dir=tmp_path / "c")
    assert a.channels == 1  # every picture grey: auto picks grey
    assert np.bincount(a.raw.y_test).tolist() == [2, 2, 2]  # 20% of every class
    assert np.bincount(a.raw.y_train).tolist() == [8, 8, 8]
    other = read_folder(root, image_size=8, seed=4, cache_dir=tmp_path / "c")
    assert not np.array_equal(a.raw.x_test, other.raw.x_test)
    assert b.skipped == () and len(b.pixel_mean) == len(b.pixel_std) == 1


def test_train_and_test_folders_are_read_as_given(tmp_path):
    write_folder(tmp_path / "train", n=5)
    write_folder(tmp_path / "test", n=2, seed=9)
    ds = load_dataset("folder", tmp_path, image_size=8)
    assert ds.classes == CLASSES and len(ds.y_train) == 15 and len(ds.y_test) == 6
    assert ds.input_shape == (3, 8, 8)  # some pictures are colour: auto picks colour


@pytest.mark.parametrize("layout, message", [
    ({"cats": 3, "dogs": 0}, "class folder .*dogs holds no pictures"),
    ({"cats": 3}, "needs at least 2 class sub-directories .*only 'cats'"),
    ({}, "needs at least 2 class sub-directories .*none"),
    ({"train/cats": 3, "train/dogs": 3, "test/cats": 1, "test/birds": 1},
     "same classes; only in train/: dogs; only in test/: birds"),
    ({"train/cats": 3, "train/dogs": 3}, "holds train/ but no test/"),
    ({"cats": 1, "dogs": 3}, "class 'cats' .* has a single picture"),
])
def test_bad_layouts_are_user_errors_that_say_what_to_change(tmp_path, layout, message):
    for sub, n in layout.items():
        (tmp_path / sub).mkdir(parents=True)
        write_class(tmp_path / sub, "centre", n, seed=0)
    with pytest.raises(UserError, match=message):
        load_dataset("folder", tmp_path)


def test_a_class_of_only_corrupt_pictures_is_named(tmp_path):
    write_folder(tmp_path, n=3, classes=("a", "b"))
    for p in (tmp_path / "b").iterdir():
        write_corrupt(p)
    with pytest.raises(UserError, match="no readable train image in class 'b'"):
        load_dataset("folder", tmp_path, image_size=8)


def test_missing_directory_and_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("folder", tmp_path / "nope")
    with pytest.raises(UserError, match="needs --data-dir"):
        load_dataset("folder")
    with pytest.raises(UserError, match="image-size"):
        load_dataset("folder", tmp_path, image_size=3)


def test_decoding_is_bounded_and_never_raises_anything_but_bad_image(tmp_path):
    good = write_class(tmp_path, "top", 2, seed=0)[1]
    assert decode_image(good, 9, 3).shape == (3, 9, 9) and decode_image(good, 9, 1).dtype == np.uint8
    for data, why in [(b"", "not a"), (b"GIF89a" + bytes(40), "corrupt|not a"), (good.read_bytes()[:60], "corrupt"),
                      (b"<svg></svg>", "not a")]:
        with pytest.raises(BadImage, match=why):
            decode_image(data, 8, 3)
    with pytest.raises(BadImage, match="pixels is more than"):
        decode_image(good, 8, 3, max_pixels=100)  # the canvas is refused before decoding
    with pytest.raises(BadImage, match="bytes is more than"):
        decode_image(good, 8, 3, max_bytes=100)
