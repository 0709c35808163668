"""`gossipnet run --start-from`: a fresh node begins from a trained model; a resumed node ignores it."""

from __future__ import annotations

import numpy as np
import pytest

from gossipnet.commands.learner_factory import build_learner
from gossipnet.commands.run import _start_from
from gossipnet.checkpoint import Checkpoint, CheckpointStore
from gossipnet.config import build_config
from gossipnet.errors import UserError
from gossipnet.model import load_model
from tests.image_folders import train_folder_model, write_folder


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("pictures"), n=12, seed=4)


@pytest.fixture(scope="module")
def trained(pictures, tmp_path_factory):
    return train_folder_model(pictures, tmp_path_factory.mktemp("train") / "model.safetensors", epochs=3)


def node_config(pictures, state_dir, **extra):
    flags = {"dataset": "folder", "data_dir": str(pictures), "net": "tiny", "image_size": 16, "cores": 1,
             "state_dir": str(state_dir), **extra}
    return build_config({}, flags)


def test_a_fresh_node_starts_from_the_trained_weights_with_their_age(pictures, trained, tmp_path):
    model = load_model(trained)
    assert model.images > 0 and model.lineage is None  # a train checkpoint knows its images, not a lineage
    cfg = node_config(pictures, tmp_path / "node", start_from=str(trained))
    learner = build_learner(cfg, "n1")
    fresh = {k: v.copy() for k, v in learner.net.state_dict().items()}
    _start_from(learner, cfg)
    for name, w in learner.net.state_dict().items():
        np.testing.assert_array_equal(w, model.weights[name])
        assert not np.array_equal(w, fresh[name])
    assert learner.age == model.images and learner.lineage.startswith("file-")
    other = build_learner(cfg, "n2")
    _start_from(other, cfg)
    assert other.lineage == learner.lineage  # nodes seeded from one file average without realigning
    learner.train(2)  # and it trains on from there
    assert learner.age > model.images


def test_a_node_with_its_own_checkpoint_resumes_and_ignores_start_from(pictures, trained, tmp_path):
    cfg = node_config(pictures, tmp_path / "node", start_from=str(trained))
    (tmp_path / "node").mkdir()
    CheckpointStore(cfg.state_dir).save(Checkpoint({"x": np.zeros(1, np.float32)}, {}))
    learner = build_learner(cfg, "n1")
    before = {k: v.copy() for k, v in learner.net.state_dict().items()}
    _start_from(learner, cfg)
    assert all(np.array_equal(v, before[k]) for k, v in learner.net.state_dict().items())
    assert learner.age == 0


def test_a_model_of_another_net_or_a_missing_file_is_a_user_error(pictures, trained, tmp_path):
    cfg = node_config(pictures, tmp_path / "a", start_from=str(trained), net="mlp")
    with pytest.raises(UserError, match=r"cannot start from .*not this node's --net mlp.*--net and --dataset"):
        _start_from(build_learner(cfg, "n1"), cfg)
    cfg = node_config(pictures, tmp_path / "b", start_from=str(tmp_path / "nope.safetensors"))
    with pytest.raises(UserError, match="does not exist"):
        _start_from(build_learner(cfg, "n1"), cfg)
    island = build_config({}, {"learner": "evolution", "task": "cartpole", "state_dir": str(tmp_path / "c"),
                               "start_from": str(trained)})
    with pytest.raises(UserError, match="takes a convnet model"):
        _start_from(build_learner(island, "n1"), island)
