// @ts-check
/**
 * The layers of the browser convnet: the twin of gossipnet/nn/layers.py.
 *
 * Same names, same parameter layouts (conv weight (out, in, kh, kw), dense weight
 * (out, in) over NCHW-ordered features, PyTorch's), so one safetensors file loads on
 * both sides. Activations are float32 and channels-last (NHWC) inside the net, as in
 * numpy: the im2col copy then reads runs of size * channels contiguous floats, and each
 * convolution is one GEMM (gemm.js) with the batch folded into its rows.
 *
 * A layer keeps what its backward pass needs from the last forward(x, true);
 * backward(grad) fills `grads` (same names as `params`) and returns the gradient with
 * respect to its input, or null when `needsInputGrad` is false (the first parametric
 * layer, whose input is data).
 */

import { gemm, gemmNT, gemmTN } from './gemm.js';
import { keepMask, uniform } from './masks.js';

/** @typedef {{data: Float32Array, shape: number[]}} Tensor */

// Target size of one im2col chunk (bytes), as numpy's CHUNK_BYTES: the copy and the GEMM
// that reads it meet in cache.
const CHUNK_BYTES = 1 << 19;

/** @param {number[]} shape */
export function size(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/** @param {number[]} shape @returns {Tensor} */
export function zeros(shape) {
  return { data: new Float32Array(size(shape)), shape };
}

/** He-normal weights from the hash stream (only for a net no node gave weights to). */
function heNormal(shape, fanIn, gain, seed, layer) {
  const n = size(shape);
  const u = uniform(seed, 0xffffffff, layer, 2 * n);
  const out = new Float32Array(n);
  const std = Math.sqrt(gain / fanIn);
  for (let i = 0; i < n; i++) {
    const r = Math.sqrt(-2 * Math.log(1 - u[2 * i]));
    out[i] = r * Math.cos(2 * Math.PI * u[2 * i + 1]) * std;
  }
  return out;
}

export class Layer {
  /** @param {string} name */
  constructor(name) {
    this.name = name;
    /** @type {Record<string, Tensor>} */
    this.params = {};
    /** @type {Record<string, Tensor>} */
    this.grads = {};
    this.needsInputGrad = true;
    this.kind = 'layer';
  }

  /** Output shape (without batch) from an input shape (NHWC [h, w, c] or flat [f]). */
  outputShape(shape) {
    return shape;
  }

  /** @param {Tensor} x @param {boolean} train @returns {Tensor} */
  forward(x, train) {
    throw new Error('not implemented');
  }

  /** @param {Tensor} grad @returns {Tensor | null} */
  backward(grad) {
    throw new Error('not implemented');
  }
}

/**
 * Zero-pad NHWC `x` by p into `buf` (reused when the shape matches; its border stays zero).
 * @param {Tensor} x @param {number} p @param {Tensor | undefined} buf @returns {Tensor}
 */
function pad(x, p, buf) {
  if (p === 0) return x;
  const [n, h, w, c] = x.shape;
  const hp = h + 2 * p, wp = w + 2 * p;
  if (!buf || buf.data.length !== n * hp * wp * c) buf = zeros([n, hp, wp, c]);
  buf.shape = [n, hp, wp, c];
  const src = x.data, dst = buf.data, row = w * c;
  for (let i = 0; i < n; i++) {
    for (let y = 0; y < h; y++) {
      const s = (i * h + y) * row;
      dst.set(src.subarray(s, s + row), ((i * hp + y + p) * wp + p) * c);
    }
  }
  return buf;
}

/**
 * im2col of images [i0, i1) of padded NHWC `xp` into `cols`: one row per output pixel,
 * columns (ky, kx, c) with kx * c contiguous, as numpy's _windows view reshaped.
 */
function im2col(xp, i0, i1, k, stride, oh, ow, cols) {
  const [, hp, wp, c] = xp.shape;
  const src = xp.data, run = k * c, kcols = k * run;
  let r = 0;
  for (let i = i0; i < i1; i++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let d = r * kcols;
        for (let ky = 0; ky < k; ky++) {
          let s = ((i * hp + oy * stride + ky) * wp + ox * stride) * c;
          for (let t = 0; t < run; t++) cols[d++] = src[s++];
        }
        r++;
      }
    }
  }
}

/** Images per chunk so that one im2col matrix stays near CHUNK_BYTES. */
function perChunk(rowsPerImage, cols) {
  return Math.max(1, Math.floor(CHUNK_BYTES / (rowsPerImage * cols * 4)));
}

/** 2-D convolution (cross-correlation) with stride and zero padding: im2col + GEMM. */
export class Conv2D extends Layer {
  constructor(name, inChannels, filters, k, stride, padding, seed = 0, layerNo = 0) {
    super(name);
    this.kind = 'conv';
    this.inChannels = inChannels;
    this.filters = filters;
    this.size = k;
    this.stride = stride;
    this.pad = padding;
    const fanIn = inChannels * k * k;
    this.params = {
      weight: { data: heNormal([filters, inChannels, k, k], fanIn, 2, seed, layerNo), shape: [filters, inChannels, k, k] },
      bias: zeros([filters]),
    };
    this.grads = { weight: zeros([filters, inChannels, k, k]), bias: zeros([filters]) };
    /** @type {Record<string, Tensor>} */
    this.buffers = {};
    this.cols = new Float32Array(0);
  }

  outputShape([h, w]) {
    return [this.out(h), this.out(w), this.filters];
  }

  out(n) {
    return Math.floor((n + 2 * this.pad - this.size) / this.stride) + 1;
  }

  /** Weights as the (kh*kw*C, F) GEMM operand matching the im2col column order. */
  wmat() {
    const { filters: f, inChannels: c, size: k } = this;
    const w = this.params.weight.data, out = new Float32Array(k * k * c * f);
    for (let o = 0; o < f; o++)
      for (let ci = 0; ci < c; ci++)
        for (let ky = 0; ky < k; ky++)
          for (let kx = 0; kx < k; kx++) out[((ky * k + kx) * c + ci) * f + o] = w[((o * c + ci) * k + ky) * k + kx];
    return out;
  }

  colsBuffer(n) {
    if (this.cols.length < n) this.cols = new Float32Array(n);
    return this.cols;
  }

  forward(x, train) {
    const [n, h, w] = x.shape;
    const oh = this.out(h), ow = this.out(w), f = this.filters, k = this.size;
    const slot = train ? 'train' : 'eval';
    const xp = pad(x, this.pad, this.buffers[slot]);
    if (this.pad) this.buffers[slot] = xp;
    const wm = this.wmat(), kcols = wm.length / f;
    const out = zeros([n, oh, ow, f]);
    const per = perChunk(oh * ow, kcols);
    const cols = this.colsBuffer(per * oh * ow * kcols);
    for (let a = 0; a < n; a += per) {
      const b = Math.min(n, a + per), rows = (b - a) * oh * ow;
      im2col(xp, a, b, k, this.stride, oh, ow, cols);
      gemm(rows, f, kcols, cols, wm, out.data.subarray(a * oh * ow * f));
    }
    const bias = this.params.bias.data, o = out.data;
    for (let i = 0; i < o.length; i += f) for (let j = 0; j < f; j++) o[i + j] += bias[j];
    if (train) {
      this.xp = xp;
      this.inShape = x.shape;
    }
    return out;
  }

  backward(grad) {
    const [n, oh, ow, f] = grad.shape;
    const k = this.size, c = this.inChannels, kcols = k * k * c;
    const xp = /** @type {Tensor} */ (this.xp);
    const dw = new Float32Array(kcols * f);
    const per = perChunk(oh * ow, kcols);
    const cols = this.colsBuffer(per * oh * ow * kcols);
    for (let a = 0; a < n; a += per) {
      const b = Math.min(n, a + per), rows = (b - a) * oh * ow;
      im2col(xp, a, b, k, this.stride, oh, ow, cols);
      gemmTN(kcols, f, rows, cols, grad.data.subarray(a * oh * ow * f), dw, true);
    }
    const gw = this.grads.weight.data;
    for (let o = 0; o < f; o++)
      for (let ci = 0; ci < c; ci++)
        for (let ky = 0; ky < k; ky++)
          for (let kx = 0; kx < k; kx++) gw[((o * c + ci) * k + ky) * k + kx] = dw[((ky * k + kx) * c + ci) * f + o];
    const gb = this.grads.bias.data, g = grad.data;
    gb.fill(0);
    for (let i = 0; i < g.length; i += f) for (let j = 0; j < f; j++) gb[j] += g[i + j];
    this.xp = undefined;
    if (!this.needsInputGrad) return null;
    const [, h, w] = /** @type {number[]} */ (this.inShape);
    const p = this.pad, s = this.stride;
    if (s === 1 && p <= k - 1) return this.inputGradStride1(grad, n, h, w);
    return this.inputGradGeneral(grad, n, h, w);
  }

  /** dx as the full correlation of the gradient with the flipped kernel: im2col + GEMM. */
  inputGradStride1(grad, n, h, w) {
    const k = this.size, c = this.inChannels, f = this.filters;
    const gp = pad(grad, k - 1 - this.pad, this.buffers.grad);
    if (k - 1 - this.pad) this.buffers.grad = gp;
    const W = this.params.weight.data, wflip = new Float32Array(k * k * f * c);
    for (let ky = 0; ky < k; ky++)
      for (let kx = 0; kx < k; kx++)
        for (let o = 0; o < f; o++)
          for (let ci = 0; ci < c; ci++)
            wflip[((ky * k + kx) * f + o) * c + ci] = W[((o * c + ci) * k + (k - 1 - ky)) * k + (k - 1 - kx)];
    const dx = zeros([n, h, w, c]);
    const kf = k * k * f, per = perChunk(h * w, kf);
    const cols = this.colsBuffer(per * h * w * kf);
    for (let a = 0; a < n; a += per) {
      const b = Math.min(n, a + per);
      im2col(gp, a, b, k, 1, h, w, cols);
      gemm((b - a) * h * w, c, kf, cols, wflip, dx.data.subarray(a * h * w * c));
    }
    return dx;
  }

  /** General stride: GEMM to columns, then scatter them back (col2im). */
  inputGradGeneral(grad, n, h, w) {
    const k = this.size, c = this.inChannels, f = this.filters, p = this.pad, s = this.stride;
    const [, oh, ow] = grad.shape;
    const kcols = k * k * c, rows = n * oh * ow;
    const dcols = new Float32Array(rows * kcols);
    gemmNT(rows, kcols, f, grad.data, this.wmat(), dcols);
    const hp = h + 2 * p, wp = w + 2 * p;
    const dxp = new Float32Array(n * hp * wp * c);
    let r = 0;
    for (let i = 0; i < n; i++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++, r++)
          for (let ky = 0; ky < k; ky++)
            for (let kx = 0; kx < k; kx++) {
              const d = ((i * hp + oy * s + ky) * wp + ox * s + kx) * c, src = r * kcols + (ky * k + kx) * c;
              for (let ci = 0; ci < c; ci++) dxp[d + ci] += dcols[src + ci];
            }
    const dx = zeros([n, h, w, c]);
    for (let i = 0; i < n; i++)
      for (let y = 0; y < h; y++) {
        const from = ((i * hp + y + p) * wp + p) * c;
        dx.data.set(dxp.subarray(from, from + w * c), (i * h + y) * w * c);
      }
    return dx;
  }
}

/** Max pooling; ties go to the first offset in row-major order, as numpy's. */
export class MaxPool2D extends Layer {
  constructor(name, k, stride) {
    super(name);
    this.kind = 'pool';
    this.size = k;
    this.stride = stride;
  }

  outputShape([h, w, c]) {
    return [Math.floor((h - this.size) / this.stride) + 1, Math.floor((w - this.size) / this.stride) + 1, c];
  }

  forward(x, train) {
    const [n, h, w, c] = x.shape;
    const [oh, ow] = this.outputShape([h, w, c]);
    const out = zeros([n, oh, ow, c]);
    const arg = train ? new Int32Array(out.data.length) : null;
    const src = x.data, dst = out.data, k = this.size, s = this.stride;
    let o = 0;
    for (let i = 0; i < n; i++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++)
          for (let ch = 0; ch < c; ch++, o++) {
            let best = ((i * h + oy * s) * w + ox * s) * c + ch;
            let v = src[best];
            for (let ky = 0; ky < k; ky++)
              for (let kx = 0; kx < k; kx++) {
                const idx = ((i * h + oy * s + ky) * w + ox * s + kx) * c + ch;
                if (src[idx] > v) {
                  v = src[idx];
                  best = idx;
                }
              }
            dst[o] = v;
            if (arg) arg[o] = best;
          }
    this.arg = arg;
    this.inShape = x.shape;
    return out;
  }

  backward(grad) {
    const dx = zeros(/** @type {number[]} */ (this.inShape));
    const arg = /** @type {Int32Array} */ (this.arg), g = grad.data, d = dx.data;
    for (let o = 0; o < g.length; o++) d[arg[o]] += g[o];
    this.arg = null;
    return dx;
  }
}

export class ReLU extends Layer {
  constructor(name) {
    super(name);
    this.kind = 'relu';
  }

  forward(x, train) {
    const y = zeros(x.shape), s = x.data, d = y.data;
    for (let i = 0; i < s.length; i++) d[i] = s[i] > 0 ? s[i] : 0;
    if (train) this.y = y;
    return y;
  }

  backward(grad) {
    const dx = zeros(grad.shape), y = /** @type {Tensor} */ (this.y).data, g = grad.data, d = dx.data;
    for (let i = 0; i < g.length; i++) d[i] = y[i] > 0 ? g[i] : 0;
    this.y = undefined;
    return dx;
  }
}

/**
 * Inverted dropout. Masks come from the hash stream (masks.js) keyed by the
 * (seed, step) the net was given and this layer's index, so the node can redraw them.
 */
export class Dropout extends Layer {
  constructor(name, rate, index) {
    super(name);
    this.kind = 'dropout';
    this.rate = rate;
    this.index = index;
    this.seed = 0;
    this.step = 0;
    /** @type {Float32Array | null} */
    this.mask = null;
  }

  forward(x, train) {
    if (!train || this.rate === 0) {
      this.mask = null;
      return x;
    }
    const keep = keepMask(this.seed, this.step, this.index, this.rate, new Uint8Array(x.data.length));
    const scale = Math.fround(1 / (1 - this.rate));
    const mask = new Float32Array(keep.length), y = zeros(x.shape);
    for (let i = 0; i < keep.length; i++) {
      mask[i] = keep[i] ? scale : 0;
      y.data[i] = x.data[i] * mask[i];
    }
    this.mask = mask;
    return y;
  }

  backward(grad) {
    if (!this.mask) return grad;
    const dx = zeros(grad.shape);
    for (let i = 0; i < dx.data.length; i++) dx.data[i] = grad.data[i] * this.mask[i];
    this.mask = null;
    return dx;
  }
}

/** NHWC activations to (N, C*H*W) features in NCHW order (PyTorch's, for portable weights). */
export class Flatten extends Layer {
  constructor(name) {
    super(name);
    this.kind = 'flatten';
  }

  outputShape(shape) {
    return [size(shape)];
  }

  forward(x, train) {
    this.inShape = x.shape;
    if (x.shape.length === 2) return x;
    const [n, h, w, c] = x.shape, f = h * w * c;
    const y = zeros([n, f]), s = x.data, d = y.data;
    for (let i = 0; i < n; i++)
      for (let yy = 0; yy < h; yy++)
        for (let xx = 0; xx < w; xx++)
          for (let ch = 0; ch < c; ch++) d[i * f + (ch * h + yy) * w + xx] = s[((i * h + yy) * w + xx) * c + ch];
    return y;
  }

  backward(grad) {
    const shape = /** @type {number[]} */ (this.inShape);
    if (shape.length === 2) return grad;
    const [n, h, w, c] = shape, f = h * w * c;
    const dx = zeros(shape), s = grad.data, d = dx.data;
    for (let i = 0; i < n; i++)
      for (let yy = 0; yy < h; yy++)
        for (let xx = 0; xx < w; xx++)
          for (let ch = 0; ch < c; ch++) d[((i * h + yy) * w + xx) * c + ch] = s[i * f + (ch * h + yy) * w + xx];
    return dx;
  }
}

/** Fully connected layer y = x W^T + b with W of shape (out, in). */
export class Dense extends Layer {
  constructor(name, inFeatures, units, gain = 2, seed = 0, layerNo = 0) {
    super(name);
    this.kind = 'fc';
    this.inFeatures = inFeatures;
    this.units = units;
    this.params = {
      weight: { data: heNormal([units, inFeatures], inFeatures, gain, seed, layerNo), shape: [units, inFeatures] },
      bias: zeros([units]),
    };
    this.grads = { weight: zeros([units, inFeatures]), bias: zeros([units]) };
  }

  outputShape() {
    return [this.units];
  }

  forward(x, train) {
    const n = x.shape[0], y = zeros([n, this.units]);
    gemmNT(n, this.units, this.inFeatures, x.data, this.params.weight.data, y.data);
    const b = this.params.bias.data, u = this.units;
    for (let i = 0; i < n; i++) for (let j = 0; j < u; j++) y.data[i * u + j] += b[j];
    if (train) this.x = x;
    return y;
  }

  backward(grad) {
    const x = /** @type {Tensor} */ (this.x), n = grad.shape[0], u = this.units, f = this.inFeatures;
    gemmTN(u, f, n, grad.data, x.data, this.grads.weight.data);
    const gb = this.grads.bias.data;
    gb.fill(0);
    for (let i = 0; i < n; i++) for (let j = 0; j < u; j++) gb[j] += grad.data[i * u + j];
    this.x = undefined;
    if (!this.needsInputGrad) return null;
    const dx = zeros([n, f]);
    gemm(n, f, u, grad.data, this.params.weight.data, dx.data);
    return dx;
  }
}
