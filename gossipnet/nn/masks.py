"""Dropout masks from a counter-based hash, reproducible bit for bit in JavaScript.

Why not numpy's generator: a browser volunteer (``gossipnet/web/masks.js``) must draw
the same masks as the node that spot-checks its work, and PCG64 + numpy's float
conversion has no small JavaScript twin. A counter-based hash does: element ``i`` of
the mask for (seed, step, layer) is a pure function of those four integers, so both
engines compute it independently, in any order, with 32-bit integer arithmetic only.

The hash is MurmurHash3's 32-bit finaliser (``fmix32``, a bijection with full
avalanche): ``key = fmix32(fmix32(fmix32(seed ^ SALT) ^ step) ^ layer)``, then
``u_i = fmix32(key + i * GOLDEN) >> 8``, 24 uniform bits. A unit is kept when
``u_i >= floor(rate * 2**24)``: an integer comparison, so no float rounding can make
the two engines disagree. ``Net.set_hash_masks`` switches a net's dropout layers to it;
the default (numpy's generator) is unchanged.
"""

from __future__ import annotations

import numpy as np

SALT = 0x6A09E667  # sqrt(2)'s fraction bits (SHA-256's first IV word): any constant works
GOLDEN = 0x9E3779B1  # 2**32 / golden ratio, odd: i * GOLDEN visits every uint32 once
_M32 = 0xFFFFFFFF


def fmix32_int(h: int) -> int:
    """MurmurHash3 fmix32 on one Python int (taken mod 2**32)."""
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def fmix32(h: np.ndarray) -> np.ndarray:
    """fmix32 on a uint32 array, in place, returned."""
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def stream_key(seed: int, step: int, layer: int) -> int:
    """The 32-bit key of one (seed, step, layer) stream."""
    return fmix32_int(fmix32_int(fmix32_int((seed & _M32) ^ SALT) ^ (step & _M32)) ^ (layer & _M32))


def uniform24(seed: int, step: int, layer: int, n: int) -> np.ndarray:
    """``n`` integers uniform in [0, 2**24) (uint32) from the (seed, step, layer) stream."""
    i = np.arange(n, dtype=np.uint32)
    with np.errstate(over="ignore"):
        x = i * np.uint32(GOLDEN) + np.uint32(stream_key(seed, step, layer))
    return fmix32(x) >> np.uint32(8)


def keep_mask(seed: int, step: int, layer: int, shape: tuple[int, ...], rate: float) -> np.ndarray:
    """Bool mask of ``shape`` (C order): True where dropout at ``rate`` keeps the unit."""
    n = int(np.prod(shape))
    threshold = int(np.floor(rate * (1 << 24)))
    return (uniform24(seed, step, layer, n) >= threshold).reshape(shape)
