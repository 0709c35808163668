"""`gossipnet train` for images, end to end on the embedded data set with a small limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gossipnet.cli import main
from gossipnet.nn import Net, get_preset
from gossipnet.nn.state import load_state, strip_prefix


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["train", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_train_learns_and_ends_with_a_json_line_and_a_checkpoint(capsys, tmp_path):
    ckpt = tmp_path / "run" / "tiny.safetensors"
    rc, out, err = run_cli(capsys, "--net", "tiny", "--limit-train", "2000", "--epochs", "2",
                           "--json", "--checkpoint", str(ckpt), "--seed", "3")
    assert rc == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["net"] == "tiny" and result["dataset"] == "embedded"
    assert result["epochs"] == pytest.approx(2.0)
    assert result["train_images"] == 2000 and result["test_images"] == 2000
    assert result["images_per_s"] > 0 and result["train_seconds"] > 0
    assert result["test_accuracy"] > 0.65  # chance is 0.10; a broken gradient stays near it
    assert [h["epoch"] for h in result["history"]] == [1.0, 2.0]
    assert "test accuracy" in err  # human summary on stderr, JSON alone on stdout

    tensors, meta = load_state(ckpt)
    preset = get_preset("tiny")
    assert meta["fingerprint"] == result["fingerprint"] == Net(preset.spec, preset.input_shape).fingerprint
    assert meta["test_accuracy"] == result["test_accuracy"]
    net = Net(meta["spec"], tuple(meta["input_shape"]))
    net.load_state_dict(strip_prefix("net.", tensors))
    assert int(tensors["trainer.step"]) == result["steps"] and "adam.t" in tensors


def test_default_command_runs_as_a_real_process():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "gossipnet.cli", "train", "--limit-train", "128", "--epochs", "1",
         "--batch-size", "32", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["net"] == "fashion" and result["steps"] == 4 and result["batch_size"] == 32
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert "fashion" in proc.stderr and "img/s" in proc.stderr
    assert result["blas"] in proc.stderr  # the kernels the images/s were measured with, both places


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--net", "convnetjs-cifar10"], "use --net with one of: fashion, mlp, tiny"),
        (["--net", "nope"], "unknown network preset"),
        (["--epochs", "-1"], "--epochs must be a positive number"),
        (["--batch-size", "0"], "--batch-size must be"),
        (["--lr", "0"], "--lr must be"),
        (["--limit-train", "0"], "--limit-train must be"),
        (["--data-dir", "/nonexistent"], "embedded data set"),
    ],
)
def test_bad_flags_exit_2_with_one_line_saying_what_to_do(capsys, argv, needle):
    rc, out, err = run_cli(capsys, "--quiet", *argv)
    assert rc == 2
    assert needle in err and "Traceback" not in err


def test_list_nets_names_every_preset(capsys):
    rc, out, _ = run_cli(capsys, "--list-nets")
    assert rc == 0
    for name in ("convnetjs-cifar10", "fashion", "tiny"):
        assert name in out


def test_sgd_override_uses_its_own_default_learning_rate(capsys):
    rc, out, _ = run_cli(capsys, "--net", "tiny", "--limit-train", "64", "--epochs", "1",
                         "--optimizer", "sgd", "--json", "--quiet")
    assert rc == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["optimizer"] == "sgd" and result["lr"] == 0.01
    assert np.isfinite(result["test_loss"])
