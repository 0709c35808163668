"""Every benchmark script starts from a plain checkout: it finds this checkout's gossipnet
without PYTHONPATH or an install, and everything it imports at the top still exists.

A refactor once left ``benchmarks/wire_throughput.py`` importing a class that had moved,
and nothing noticed; the benchmarks run for minutes, so here each only answers --help.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the scripts: what the benchmarks share (benchmarks/timing.py) is imported, not run
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if '__name__ == "__main__"' in p.read_text())


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_starts_from_a_checkout(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage:"), out.stdout[:500]
