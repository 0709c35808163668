"""`gossipnet merge`: checkpoints from `gossipnet train --seed S`, merged with and without matching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gossipnet.cli import main
from gossipnet.nn import Net, get_preset
from gossipnet.nn.state import load_state, save_state, strip_prefix


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two MLPs trained alone from seeds 1 and 2 on 4,000 embedded images, and a tiny convnet."""
    d = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, net, seed in (("a", "mlp", 1), ("b", "mlp", 2), ("tiny", "tiny", 1)):
        paths[name] = d / f"{name}.safetensors"
        assert main(["train", "--net", net, "--limit-train", "4000", "--epochs", "3" if net == "mlp" else "1",
                     "--seed", str(seed), "--checkpoint", str(paths[name]), "--quiet"]) == 0
    return paths


def test_train_seed_sets_the_initialisation(tmp_path):
    """One optimizer step from seed 5 stays next to seed 5's init and far from seed 6's."""
    ckpt = tmp_path / "one_step.safetensors"
    assert main(["train", "--net", "mlp", "--limit-train", "64", "--batch-size", "64", "--epochs", "1",
                 "--seed", "5", "--checkpoint", str(ckpt), "--quiet"]) == 0
    tensors, meta = load_state(ckpt)
    assert meta["seed"] == 5 and int(tensors["trainer.step"]) == 1
    trained = strip_prefix("net.", tensors)["fc1.weight"]
    preset = get_preset("mlp")
    init = {s: Net(preset.spec, preset.input_shape, seed=s).state_dict()["fc1.weight"] for s in (5, 6)}
    assert np.abs(trained - init[5]).max() < 0.01  # Adam's first step moves a weight by <= lr
    assert np.abs(trained - init[6]).mean() > 0.02  # two seeds: two independent starts


def test_matching_merges_independent_starts_that_plain_averaging_ruins(capsys, trained, tmp_path):
    out = {}
    for label, flags in (("none", ["--match", "none"]), ("act", ["--match", "activations", "--repair"]),
                         ("weights", ["--match", "weights"])):
        rc, stdout, err = cli(capsys, "merge", str(trained["a"]), str(trained["b"]),
                              "-o", str(tmp_path / f"{label}.safetensors"), "--json", *flags)
        assert rc == 0, err
        out[label] = json.loads(stdout.strip().splitlines()[-1])
        assert "test accuracy" in stdout
    report = out["act"]
    assert [r["path"] for r in report["inputs"]] == [str(trained["a"]), str(trained["b"])]
    parents = np.mean([r["test_accuracy"] for r in report["inputs"]])
    assert parents > 0.75
    # measured: parents 83.7%, plain average 60.1%, activations + REPAIR 81%, weights 65.5%
    assert report["result"]["test_accuracy"] > parents - 0.05
    assert out["none"]["result"]["test_accuracy"] < parents - 0.10
    assert out["weights"]["result"]["test_accuracy"] > out["none"]["result"]["test_accuracy"]
    # the merged checkpoint is one `merge` (and a Net) reads again
    tensors, meta = load_state(tmp_path / "act.safetensors")
    assert meta["net"] == "mlp" and meta["test_accuracy"] == report["result"]["test_accuracy"]
    Net(meta["spec"], tuple(meta["input_shape"])).load_state_dict(strip_prefix("net.", tensors))
    rc, stdout, _ = cli(capsys, "merge", str(tmp_path / "act.safetensors"), str(trained["a"]),
                        "-o", str(tmp_path / "again.safetensors"), "--json")
    assert rc == 0 and json.loads(stdout.strip().splitlines()[-1])["result"]["test_accuracy"] > 0.5


def test_merge_rejects_different_presets_corrupt_and_missing_files(capsys, trained, tmp_path):
    out = str(tmp_path / "out.safetensors")
    rc, _, err = cli(capsys, "merge", str(trained["a"]), str(trained["tiny"]), "-o", out)
    assert rc == 2 and "preset 'tiny'" in err and "only checkpoints of one network preset" in err

    rc, _, err = cli(capsys, "merge", str(trained["a"]), str(tmp_path / "nope.safetensors"), "-o", out)
    assert rc == 2 and "nope.safetensors does not exist" in err

    corrupt = tmp_path / "corrupt.safetensors"
    data = bytearray(trained["b"].read_bytes())
    data[-10] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    rc, _, err = cli(capsys, "merge", str(trained["a"]), str(corrupt), "-o", out)
    assert rc == 2 and "corrupt" in err

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    rc, _, err = cli(capsys, "merge", str(trained["a"]), str(junk), "-o", out)
    assert rc == 2 and "corrupt or not a readable gossipnet checkpoint" in err

    other = tmp_path / "other.safetensors"
    save_state(other, {"x": np.zeros(3, np.float32)}, {"hello": 1})
    rc, _, err = cli(capsys, "merge", str(trained["a"]), str(other), "-o", out)
    assert rc == 2 and "not a network checkpoint" in err

    rc, _, err = cli(capsys, "merge", str(trained["a"]), "-o", out)
    assert rc == 2 and "at least two" in err
    assert not (tmp_path / "out.safetensors").exists()
