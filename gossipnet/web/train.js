// @ts-check
/**
 * Training on a fixed sequence of images and evaluation: the twin of the parts of
 * gossipnet/nn/train.py a volunteer needs (``train_sequence``, ``evaluate``).
 *
 * A lease fixes the images and their order, so step s trains on images
 * [s * batch, (s + 1) * batch) with dropout masks keyed by (seed, s): the node can
 * recompute any lease exactly.
 */

import { logSoftmax } from './loss.js';

/**
 * uint8 NCHW images to float32 as gossipnet/data/normalize.py normalises them:
 * (u - mean) * (1 / std) per channel, each operation rounded to float32 as numpy's.
 */
export function normaliseImages(u8, inputShape, mean, std) {
  const [c, h, w] = inputShape, x = new Float32Array(u8.length), hw = h * w, f32 = Math.fround;
  const m = mean.map(f32), s = std.map((v) => f32(1 / v));
  for (let i = 0; i < u8.length; i++) {
    const ch = Math.floor(i / hw) % c;
    x[i] = f32(f32(u8[i] - m[ch]) * s[ch]);
  }
  return x;
}

/**
 * Take floor(n / batch) optimizer steps over x in order; onStep(s, loss) after each.
 * @param {import('./net.js').Net} net @param {import('./optim.js').Optimizer} opt
 * @param {Float32Array} x NCHW images @param {ArrayLike<number>} y @param {number} batch @param {number} seed
 * @param {(step: number, loss: number) => void} [onStep]
 * @returns {number[]} the loss of every step
 */
export function trainSequence(net, opt, x, y, batch, seed, onStep) {
  const per = net.inputShape.reduce((a, b) => a * b, 1);
  const steps = Math.floor(y.length / batch), losses = [];
  for (let s = 0; s < steps; s++) {
    net.setMasks(seed, s);
    const xb = x.subarray(s * batch * per, (s + 1) * batch * per);
    const yb = Array.prototype.slice.call(y, s * batch, (s + 1) * batch);
    const { loss } = net.lossAndGrads(xb, yb, batch);
    opt.step(net.grads);
    losses.push(loss);
    if (onStep) onStep(s, loss);
  }
  return losses;
}

/** Mean loss and accuracy in evaluation mode, in batches. */
export function evaluate(net, x, y, batch = 100) {
  const per = net.inputShape.reduce((a, b) => a * b, 1), k = net.numClasses;
  let loss = 0, correct = 0;
  for (let i = 0; i < y.length; i += batch) {
    const n = Math.min(batch, y.length - i);
    const logits = net.forward(x.subarray(i * per, (i + n) * per), n, false);
    const logp = logSoftmax(logits);
    for (let r = 0; r < n; r++) {
      loss -= logp[r * k + y[i + r]];
      let best = 0;
      for (let j = 1; j < k; j++) if (logits.data[r * k + j] > logits.data[r * k + best]) best = j;
      if (best === y[i + r]) correct++;
    }
  }
  return { loss: loss / y.length, accuracy: correct / y.length };
}
