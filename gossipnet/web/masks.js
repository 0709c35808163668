// @ts-check
/**
 * Dropout masks from a counter-based hash: the twin of gossipnet/nn/masks.py.
 *
 * Element i of the mask for (seed, step, layer) is a pure function of those four
 * integers, computed with 32-bit integer arithmetic only, so the node's numpy engine
 * draws exactly the masks this browser drew and can recompute a volunteer's steps.
 * See masks.py for the construction (MurmurHash3's fmix32, 24 uniform bits, an
 * integer threshold).
 */

export const SALT = 0x6a09e667;
export const GOLDEN = 0x9e3779b1;

/** MurmurHash3 fmix32 of a 32-bit integer; returns an unsigned 32-bit integer. */
export function fmix32(h) {
  h = h >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The 32-bit key of one (seed, step, layer) stream. */
export function streamKey(seed, step, layer) {
  return fmix32(fmix32(fmix32((seed ^ SALT) >>> 0) ^ step) ^ layer);
}

/**
 * Fill `keep` with 1 where dropout at `rate` keeps element i and 0 where it drops it.
 * @param {number} seed @param {number} step @param {number} layer @param {number} rate
 * @param {Uint8Array} keep
 */
export function keepMask(seed, step, layer, rate, keep) {
  const key = streamKey(seed, step, layer);
  const threshold = Math.floor(rate * 16777216);
  for (let i = 0; i < keep.length; i++) {
    const u = fmix32((Math.imul(i, GOLDEN) + key) >>> 0) >>> 8;
    keep[i] = u >= threshold ? 1 : 0;
  }
  return keep;
}

/**
 * `n` uniform floats in [0, 1) from the (seed, step, layer) stream (24 bits each):
 * for initialising weights in the browser when no node supplies them.
 */
export function uniform(seed, step, layer, n) {
  const key = streamKey(seed, step, layer);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (fmix32((Math.imul(i, GOLDEN) + key) >>> 0) >>> 8) / 16777216;
  return out;
}
