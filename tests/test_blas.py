"""nn/blas.py (threadpoolctl underneath): the BLAS thread count a trainer sets is the one OpenBLAS uses."""

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
