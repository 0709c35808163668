"""How fast a training step runs, in images/s: the one timing of the throughput benchmarks
(``convnet_throughput.py``, ``data_parallel.py``), so their figures are measured alike."""

from __future__ import annotations

import time
from collections.abc import Callable


def images_per_s(steps: Callable[[int], object], batch: int, seconds: float) -> float:
    """Images/s of ``steps(n)`` (n training steps of ``batch`` images), timed over about
    ``seconds`` after two warm-up steps, which also size the timed run."""
    steps(2)
    t0 = time.perf_counter()
    steps(2)
    n = max(4, int(seconds / max((time.perf_counter() - t0) / 2, 1e-6)))
    t0 = time.perf_counter()
    steps(n)
    return n * batch / (time.perf_counter() - t0)
