"""`gossipnet train` draws tqdm's bar on a terminal and plain lines in a log."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARGS = ["-m", "gossipnet", "train", "--net", "tiny", "--limit-train", "320", "--epochs", "2"]
pytestmark = pytest.mark.timeout(120)


def run(stderr_tty: bool) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"}
    if not stderr_tty:
        done = subprocess.run([sys.executable, *ARGS], env=env, capture_output=True, text=True, timeout=100)
        assert done.returncode == 0, done.stderr
        return done.stderr
    leader, follower = pty.openpty()  # a terminal of 0 columns, as some CI ptys report
    proc = subprocess.Popen([sys.executable, *ARGS], env=env, stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=100) == 0
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_bar_with_rate_and_accuracy():
    out = run(stderr_tty=True)
    assert "20/20" in out and "step/s" in out and "test " in out and "\r" in out


def test_a_log_gets_one_plain_line_per_evaluation_without_carriage_returns():
    err = run(stderr_tty=False)
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "img/s" in lines[0] and "\r" not in err
