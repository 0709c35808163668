"""examples/ work as written: each script runs in its quick mode, the config and the unit parse."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gossipnet.cli import build_parser
from gossipnet.config import NodeConfig, build_config, load_toml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REPO = EXAMPLES.parent
pytestmark = pytest.mark.timeout(240)


def run_script(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_node_toml_names_every_setting_and_loads_with_the_real_loader():
    text = (EXAMPLES / "node.toml").read_text()
    keys = set(re.findall(r"^#? ?([a-z_]+) = ", text, flags=re.M))
    missing = {f.name for f in dataclasses.fields(NodeConfig)} - keys
    assert not missing, f"examples/node.toml lacks (add them, with a comment): {sorted(missing)}"
    cfg = build_config(load_toml(EXAMPLES / "node.toml"), {})
    assert cfg == dataclasses.replace(NodeConfig(), state_dir=cfg.state_dir)  # its values are the defaults
    for line in text.splitlines():  # every active setting carries a comment on its line or above it
        if re.match(r"^[a-z_]+ = ", line):
            assert "#" in line or line.startswith("state_dir"), line


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_unit_is_sandboxed_restarts_and_runs_a_command_gossipnet_accepts(tmp_path):
    text = (EXAMPLES / "gossipnet.service").read_text()
    s = unit_settings(text)
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "Restart": "on-failure", "RestartPreventExitStatus": "2", "StateDirectory": "gossipnet",
                       "CapabilityBoundingSet": "", "SystemCallFilter": "@system-service"}.items():
        assert s.get(key) == [value], key
    argv = shlex.split(s["ExecStart"][0].replace("%E", "/etc").replace("%S", "/var/lib"))
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.state_dir == "/var/lib/gossipnet"
    assert Path(args.config).name == "node.toml"
    analyze = shutil.which("systemd-analyze")
    gossipnet = shutil.which("gossipnet")
    if analyze and gossipnet:  # systemd's own check, where systemd is installed
        unit = tmp_path / "gossipnet.service"
        unit.write_text(text.replace("/usr/local/bin/gossipnet", gossipnet))
        done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_every_command_of_the_walkthrough_parses():
    text = (EXAMPLES / "two_machines.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    commands = [line for b in blocks for line in b.splitlines() if line.startswith("gossipnet ")]
    assert len(commands) >= 8
    for line in commands:
        argv = shlex.split(line)[1:]
        build_parser().parse_args(argv)  # SystemExit (a failed test) on any flag gossipnet lacks


def test_folder_training_and_the_standalone_onnx_script_run_and_agree_with_predict(tmp_path):
    pytest.importorskip("onnxruntime")
    run = run_script(str(EXAMPLES / "train_on_folder.py"), "--demo", "--quick", "--out", "run", cwd=tmp_path)
    assert "test accuracy" in run.stdout and (tmp_path / "run" / "model.onnx").is_file()
    pictures = sorted(str(p) for p in (tmp_path / "run" / "demo-pictures").rglob("*.png"))[::5]
    theirs = run_script(str(EXAMPLES / "use_onnx_model.py"), "run/model.onnx", *pictures, "--json", cwd=tmp_path)
    ours = run_script("-m", "gossipnet", "predict", "run/model.safetensors", *pictures, "--json", cwd=tmp_path)
    labels = [[p["label"] for p in json.loads(line)["predictions"]] for line in theirs.stdout.splitlines()]
    expected = [[p["label"] for p in json.loads(line)["predictions"]] for line in ours.stdout.splitlines()]
    assert labels == expected and len(labels) == len(pictures)


def test_solve_cartpole_runs_in_its_quick_mode(tmp_path):
    done = run_script(str(EXAMPLES / "solve_cartpole.py"), "--seeds", "1", "--algos", "ga", cwd=tmp_path)
    assert re.search(r"^ga\s+\d+\s+1/1", done.stdout, flags=re.M), done.stdout
