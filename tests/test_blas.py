"""nn/blas.py (threadpoolctl underneath): the BLAS thread count a trainer sets is the one OpenBLAS uses."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from gossipnet.nn import blas


def test_set_threads_changes_what_openblas_reports_and_zero_is_refused():
    before = blas.get_threads()
    if before is None:
        assert blas.set_threads(1) is False  # another BLAS: a no-op that says so
        return
    try:
        assert blas.set_threads(1) is True and blas.get_threads() == 1
        assert blas.set_threads(2) is True and blas.get_threads() == 2
    finally:
        blas.set_threads(before)
    with pytest.raises(ValueError, match=">= 1"):
        blas.set_threads(0)


def test_one_thread_is_set_unless_the_environment_chose(monkeypatch):
    before = blas.get_threads()
    if before is None:
        pytest.skip("numpy's BLAS is not OpenBLAS")
    try:
        for var in blas.ENV_VARS:
            monkeypatch.delenv(var, raising=False)
        blas.set_threads(2)
        blas.use_one_thread()
        assert blas.get_threads() == 1
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
        blas.set_threads(2)
        blas.use_one_thread()
        assert blas.get_threads() == 2  # the user's choice wins
    finally:
        blas.set_threads(before)


def test_cpu_flags_are_read_from_cpuinfo_and_a_missing_file_is_no_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse2 avx2 avx512f\nbugs\t: none\n")
    assert blas.cpu_flags(str(info)) == {"fpu", "sse2", "avx2", "avx512f"}
    assert blas.cpu_flags(str(tmp_path / "absent")) == frozenset()


DESCRIBE = "from gossipnet.nn import blas; import sys; print(blas.describe(frozenset(sys.argv[1].split())))"


def _describe(coretype: str | None, flags: frozenset[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
    out = subprocess.run([sys.executable, "-c", DESCRIBE, " ".join(sorted(flags))], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_the_blas_line_says_when_openblas_coretype_holds_back_a_cpu_with_avx512():
    """OpenBLAS loads its kernels when numpy is imported, so each case is a fresh interpreter."""
    pinned = _describe("Haswell", blas.AVX512_FLAGS)
    if "Haswell kernels" not in pinned:
        pytest.skip(f"this numpy's BLAS has no Haswell kernels to pin: {pinned}")
    assert "OPENBLAS_CORETYPE=Haswell keeps" in pinned and "unset it" in pinned
    assert "OPENBLAS_CORETYPE" not in _describe("Haswell", frozenset({"avx2", "fma"}))  # nothing better here
    assert "OPENBLAS_CORETYPE" not in _describe(None, blas.AVX512_FLAGS)  # OpenBLAS chose for itself


def test_the_library_described_is_numpys_whichever_openblas_is_listed_first(monkeypatch):
    import scipy.linalg  # noqa: F401  (its own OpenBLAS, which threadpoolctl may list first)

    monkeypatch.setattr(blas, "_openblas", None)  # look the libraries up again, scipy's included
    libs = blas._controllers()
    wheel = [lib for lib in libs if "numpy.libs" in lib.filepath]
    if not wheel or len(libs) < 2:
        pytest.skip("numpy's BLAS is not a bundled OpenBLAS beside scipy's here")
    for order in (libs, libs[::-1]):  # the listing's order is the dynamic loader's, not fixed
        monkeypatch.setattr(blas, "_openblas", SimpleNamespace(lib_controllers=list(order)))
        assert blas._numpy_lib() is wheel[0]
        assert blas.describe().startswith(f"OpenBLAS {wheel[0].info()['version']},")
