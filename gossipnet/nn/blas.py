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

``describe`` is the line a run starts with: which kernels OpenBLAS chose matters as much as
its threads. OpenBLAS picks them for the CPU it finds unless ``OPENBLAS_CORETYPE`` names
a core; a machine image that pins an older core (seen here: ``Haswell`` on a Zen 5 EPYC
with AVX-512) costs this engine 0.78x the images/s (docs/CONVNET.md), so the line says so.
The user's setting is kept: it may be there to make runs alike across machines.
"""

from __future__ import annotations

import os

import numpy as np  # noqa: F401  (loads OpenBLAS before threadpoolctl looks for it)
from threadpoolctl import ThreadpoolController

ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
# OpenBLAS's kernel sets (its DYNAMIC_ARCH names) that use AVX-512, and the CPU flags they need.
AVX512_KERNELS = frozenset({"SkylakeX", "Cooperlake", "SapphireRapids"})
AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
_openblas: ThreadpoolController | None = None  # looked up once: the loaded libraries do not change


def _controllers() -> list:
    global _openblas
    if _openblas is None:
        _openblas = ThreadpoolController().select(internal_api="openblas")
    return _openblas.lib_controllers


def _numpy_lib():
    """numpy's own OpenBLAS: scipy brings another copy (another version, found first once
    scipy is loaded), which this engine's GEMMs never call."""
    libs = _controllers()
    ours = [lib for lib in libs if "numpy" in os.path.basename(os.path.dirname(lib.filepath or ""))]
    return (ours or libs or [None])[0]


def get_threads() -> int | None:
    """OpenBLAS's current thread count, or None when numpy does not use OpenBLAS."""
    lib = _numpy_lib()
    return int(lib.get_num_threads()) if lib else None


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


def use_one_thread() -> None:
    """One BLAS thread for this process, unless the environment chose a count: a node shares
    its cores with its event loop (and, in the demo, with other nodes), and two threads ran
    5-8x slower than one under load (this module's docstring)."""
    if not user_chose_threads():
        set_threads(1)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where that file is not there."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def describe(flags: frozenset[str] | None = None) -> str:
    """Which BLAS numpy uses, with which kernels and threads, for the log; with what to do
    when ``OPENBLAS_CORETYPE`` holds OpenBLAS to kernels without the AVX-512 this CPU has."""
    lib = _numpy_lib()
    if lib is None:
        return "numpy's BLAS is not OpenBLAS: its thread count is left as it is"
    info = lib.info()
    arch, threads = info.get("architecture"), info.get("num_threads")
    kernels = f"{arch} kernels, " if arch else ""  # some OpenBLAS builds do not say
    text = f"OpenBLAS {info.get('version')}, {kernels}{threads} thread{'s' if threads != 1 else ''}"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    held_back = arch and arch not in AVX512_KERNELS
    if forced and held_back and AVX512_FLAGS <= (cpu_flags() if flags is None else flags):
        text += (f"; OPENBLAS_CORETYPE={forced} keeps OpenBLAS from this CPU's AVX-512 kernels: "
                 "unset it to train faster (1.28x the images/s on one such machine)")
    return text
