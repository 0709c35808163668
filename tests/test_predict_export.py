"""Use the model: `gossipnet predict` and `gossipnet export --onnx`, checked against onnxruntime."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from gossipnet.checkpoint import Checkpoint, CheckpointStore
from gossipnet.cli import main
from gossipnet.data import load_dataset
from gossipnet.errors import UserError
from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner
from gossipnet.model import ModelCard, TrainedModel, load_model
from gossipnet.nn import PRESETS, Net, fit_preset
from gossipnet.onnx_export import export_onnx
from tests.image_folders import CLASSES, train_folder_model, write_corrupt, write_folder

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("pictures"), n=12, seed=2)


@pytest.fixture(scope="module")
def trained(pictures, tmp_path_factory):
    return train_folder_model(pictures, tmp_path_factory.mktemp("run") / "model.safetensors")


def session(data: bytes):
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def test_predict_prints_top_k_json_lines_best_first_and_reports_bad_pictures(trained, pictures, capsys, tmp_path):
    images = sorted(str(p) for p in (pictures / "left").iterdir())[:3]
    bad = str(write_corrupt(tmp_path / "bad.png"))
    rc = main(["predict", str(trained), *images, bad, "--top-k", "2", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 1  # one picture could not be classified; the others were
    by_image = {d["image"]: d for d in lines}
    assert set(by_image) == {*images, bad} and "corrupt" in by_image[bad]["error"]
    for path in images:
        preds = by_image[path]["predictions"]
        assert len(preds) == 2 and preds[0]["probability"] >= preds[1]["probability"]
        assert preds[0]["label"] == "left" and {p["label"] for p in preds} <= set(CLASSES)
    assert main(["predict", str(trained), images[0]]) == 0
    assert capsys.readouterr().out.startswith(f"{images[0]}: left ")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_exports_checked_onnx_that_matches_numpy_to_1e4(preset, pictures):
    p = PRESETS[preset]
    mode = "grayscale" if p.input_shape[0] == 1 else "rgb"
    data = load_dataset("folder", pictures, image_size=p.input_shape[1], color_mode=mode)
    learner = ConvnetLearner(data, config=ConvnetConfig(net=preset, init_seed=7))
    learner.train(2)  # weights away from their initial values
    model = learner.model()
    blob = export_onnx(model)  # runs onnx.checker.check_model(full_check=True)
    onnx.checker.check_model(onnx.load_from_string(blob))
    raw = np.stack([model.decode(path) for path in sorted((pictures / "top").iterdir())[:6]])
    logits, probs = session(blob).run(None, {"image": raw.astype(np.float32)})
    expected = model.probabilities(raw)
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    np.testing.assert_allclose(logits, model.net.forward(
        (raw - np.array(data.pixel_mean, np.float32)[:, None, None]) / np.array(data.pixel_std, np.float32)[:, None, None]),
        atol=1e-4)
    meta = {p.key: p.value for p in onnx.load_from_string(blob).metadata_props}
    assert json.loads(meta["classes"]) == list(CLASSES) and meta["input_layout"] == "NCHW"


def test_predict_and_onnxruntime_agree_on_labels(trained, pictures, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", str(trained), "--onnx", str(out)]) == 0
    images = sorted(str(p) for c in CLASSES for p in (pictures / c).iterdir())
    assert main(["predict", str(trained), *images, "--json", "--top-k", "1"]) == 0
    ours = [json.loads(line)["predictions"][0]["label"] for line in capsys.readouterr().out.splitlines()]
    sess = session(out.read_bytes())
    classes = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["classes"])
    model = load_model(trained)
    x = np.stack([model.decode(p) for p in images]).astype(np.float32)
    theirs = [classes[i] for i in sess.run(["probabilities"], {"image": x})[0].argmax(1)]
    assert ours == theirs
    assert sum(label == path.split("/")[-2] for label, path in zip(ours, images)) >= 0.9 * len(images)


def test_a_node_state_directory_is_a_model_too(pictures, tmp_path, capsys):
    data = load_dataset("folder", pictures, image_size=16, color_mode="grayscale")
    learner = ConvnetLearner(data, config=ConvnetConfig(net="tiny"))
    learner.train(3)
    # The layout Node._checkpoint writes: the learner's state under "learner/".
    CheckpointStore(tmp_path).save(Checkpoint({f"learner/{k}": v for k, v in learner.state_dict().items()}))
    model = load_model(tmp_path)
    assert model.card.classes == CLASSES
    x = np.stack([model.decode(p) for p in sorted((pictures / "top").iterdir())[:4]])
    np.testing.assert_allclose(model.probabilities(x), learner.model().probabilities(x))
    assert main(["export", str(tmp_path), "--safetensors", str(tmp_path / "m.safetensors")]) == 0
    assert load_model(tmp_path / "m.safetensors").card == model.card


def test_files_that_are_not_models_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(UserError, match="holds no checkpoint"):
        load_model(tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="not a readable gossipnet checkpoint"):
        load_model(tmp_path / "junk.safetensors")
    CheckpointStore(tmp_path / "island").save(Checkpoint({"learner/learner.algo": np.frombuffer(b"ga", np.uint8)}))
    with pytest.raises(UserError, match="neuroevolution island"):
        load_model(tmp_path / "island")
    net = Net(fit_preset(PRESETS["tiny"], (1, 28, 28), 3), (1, 28, 28))
    model = TrainedModel(ModelCard(tuple(net.spec), (1, 28, 28), CLASSES, (0.0,), (1.0,)), net.state_dict())
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the [onnx] extra were not installed
    with pytest.raises(UserError, match=r"pip install 'gossipnet\[onnx\]'"):
        export_onnx(model)
