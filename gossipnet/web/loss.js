// @ts-check
/**
 * Softmax cross-entropy through log-sum-exp: the twin of gossipnet/nn/loss.py.
 * Computed in float64 (JavaScript numbers), as numpy does, then the gradient is
 * stored as float32.
 */

import { zeros } from './layers.js';

/** Labels as an Int32Array of n classes in [0, classes), or an Error saying what is wrong. */
export function checkLabels(y, n, classes) {
  if (y.length !== n) throw new Error(`labels must be ${n} integers, got ${y.length}`);
  for (let i = 0; i < n; i++) {
    if (!Number.isInteger(y[i]) || y[i] < 0 || y[i] >= classes) {
      throw new Error(`labels must lie in [0, ${classes}); found ${y[i]}`);
    }
  }
  return y;
}

/** log p (float64, row-major n x k) of logits: z - max(z) - log(sum(exp(z - max(z)))). */
export function logSoftmax(logits) {
  const [n, k] = logits.shape, z = logits.data, out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let j = 0; j < k; j++) max = Math.max(max, z[i * k + j]);
    let sum = 0;
    for (let j = 0; j < k; j++) sum += Math.exp(z[i * k + j] - max);
    const lse = Math.log(sum);
    for (let j = 0; j < k; j++) out[i * k + j] = z[i * k + j] - max - lse;
  }
  return out;
}

/**
 * Mean cross-entropy of logits (n x k) against labels, and d loss / d logits.
 * @param {import('./layers.js').Tensor} logits @param {ArrayLike<number>} y
 */
export function softmaxCrossEntropy(logits, y) {
  const [n, k] = logits.shape;
  checkLabels(y, n, k);
  const logp = logSoftmax(logits);
  const grad = zeros([n, k]);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    loss -= logp[i * k + y[i]];
    for (let j = 0; j < k; j++) {
      const p = Math.exp(logp[i * k + j]) - (j === y[i] ? 1 : 0);
      grad.data[i * k + j] = p / n;
    }
  }
  return { loss: loss / n, grad };
}
