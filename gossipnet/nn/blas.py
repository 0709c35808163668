"""Read and set the number of threads numpy's OpenBLAS uses, at run time.

Why: OpenBLAS's worker threads wait for each other at every GEMM. When the cores are
busy with other work (a shared machine, the node's own event loop, a second trainer),
two BLAS threads on two cores run this engine 5-8x *slower* than one (measured here:
790-850 vs 93-164 images/s for the fashion net under a load average of 6, see
docs/CONVNET.md). A volunteer's background trainer should therefore default to one
BLAS thread. The environment variable must be set before numpy loads OpenBLAS; this
module instead calls OpenBLAS's own ``set_num_threads`` through ctypes, as threadpoolctl
does, on the library numpy already loaded. Without OpenBLAS (other BLAS builds) it is a
no-op that says so.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np  # noqa: F401  (loads OpenBLAS, so /proc/self/maps lists it)

_SUFFIXES = ("64_", "_64_", "")
_PREFIXES = ("scipy_openblas", "openblas")
ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
_lib: ctypes.CDLL | None | bool = False  # False: not looked up yet


def _openblas() -> ctypes.CDLL | None:
    global _lib
    if _lib is not False:
        return _lib  # type: ignore[return-value]
    _lib = None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
        except OSError:
            continue
        for pre in _PREFIXES:
            for suf in _SUFFIXES:
                getter = getattr(lib, f"{pre}_get_num_threads{suf}", None)
                setter = getattr(lib, f"{pre}_set_num_threads{suf}", None)
                if getter is not None and setter is not None:
                    getter.restype = ctypes.c_int
                    setter.argtypes = [ctypes.c_int]
                    lib._gn_get, lib._gn_set = getter, setter
                    _lib = lib
                    return lib
    return None


def get_threads() -> int | None:
    """OpenBLAS's current thread count, or None when numpy does not use OpenBLAS."""
    lib = _openblas()
    return int(lib._gn_get()) if lib is not None else None


def set_threads(n: int) -> bool:
    """Use ``n`` BLAS threads from now on; False when this BLAS cannot be controlled."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    lib = _openblas()
    if lib is None:
        return False
    lib._gn_set(int(n))
    return True


def user_chose_threads() -> bool:
    """True when the environment already fixes BLAS threads (the user's choice wins)."""
    return any(os.environ.get(v) for v in ENV_VARS)
