"""Read and set the number of threads numpy's OpenBLAS uses, at run time.

Why: OpenBLAS's worker threads wait for each other at every GEMM. When the cores are
busy with other work (a shared machine, the node's own event loop, a second trainer),
two BLAS threads on two cores run this engine 5-8x *slower* than one (measured here:
790-850 vs 93-164 images/s for the fashion net under a load average of 6, see
docs/CONVNET.md). A volunteer's background trainer should therefore default to one
BLAS thread. The environment variable must be set before numpy loads OpenBLAS; this
module instead asks threadpoolctl (scikit-learn's library for exactly this) to call
OpenBLAS's own ``set_num_threads`` on the library numpy already loaded. Without
OpenBLAS (other BLAS builds) it is a no-op that says so.
"""

from __future__ import annotations

import os

import numpy as np  # noqa: F401  (loads OpenBLAS before threadpoolctl looks for it)
from threadpoolctl import ThreadpoolController

ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
_openblas: ThreadpoolController | None = None  # looked up once: the loaded libraries do not change


def _controllers() -> list:
    global _openblas
    if _openblas is None:
        _openblas = ThreadpoolController().select(internal_api="openblas")
    return _openblas.lib_controllers


def get_threads() -> int | None:
    """OpenBLAS's current thread count, or None when numpy does not use OpenBLAS."""
    libs = _controllers()
    return int(libs[0].get_num_threads()) if libs else None


def set_threads(n: int) -> bool:
    """Use ``n`` BLAS threads from now on; False when this BLAS cannot be controlled."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    libs = _controllers()
    for lib in libs:
        lib.set_num_threads(int(n))
    return bool(libs)


def user_chose_threads() -> bool:
    """True when the environment already fixes BLAS threads (the user's choice wins)."""
    return any(os.environ.get(v) for v in ENV_VARS)
