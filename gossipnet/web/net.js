// @ts-check
/**
 * Net: a sequence of layers built from a declarative spec, with named parameters; the
 * twin of gossipnet/nn/net.py. The layer list, names and execution order (including
 * the pool-before-ReLU swap) are the numpy engine's, so parameter names
 * (`conv1.weight`, `fc1.bias`, `softmax.weight`) and dropout layer indices line up.
 */

import * as L from './layers.js';
import { softmaxCrossEntropy } from './loss.js';
import { canonicalSpec } from './spec.js';

export class Net {
  /**
   * @param {Array<Record<string, any>>} spec @param {number[]} inputShape [channels, height, width]
   * @param {number} [seed] initial weights (hash stream; a node's weights replace them)
   */
  constructor(spec, inputShape, seed = 0) {
    this.spec = canonicalSpec(spec);
    if (!Array.isArray(inputShape) || inputShape.length !== 3 || !inputShape.every((v) => Number.isInteger(v) && v > 0)) {
      throw new Error(`input shape must be [channels, height, width] > 0, got ${JSON.stringify(inputShape)}`);
    }
    this.inputShape = inputShape;
    /** @type {L.Layer[]} */
    this.layers = [];
    /** @type {number[][]} */
    this.shapes = [];
    const [c, h, w] = inputShape;
    let shape = [h, w, c];
    /** @type {Record<string, number>} */
    const counts = {};
    this.spec.forEach((d, i) => {
      const kind = d.type;
      counts[kind] = (counts[kind] || 0) + 1;
      const name = kind === 'softmax' ? kind : `${kind}${counts[kind]}`;
      if ((kind === 'fc' || kind === 'softmax') && shape.length === 3) {
        shape = this.add(new L.Flatten(`flatten_before_${name}`), shape);
      }
      shape = this.add(this.make(i + 1, name, d, shape, seed), shape);
    });
    this.numClasses = this.spec[this.spec.length - 1].classes;
    const first = this.layers.findIndex((l) => Object.keys(l.params).length > 0);
    this.layers.forEach((l, i) => { l.needsInputGrad = i > first; });
    this.layers.forEach((l, i) => { if (l instanceof L.Dropout) l.index = i; });
    /** @type {Record<string, L.Tensor>} */
    this.params = {};
    /** @type {Record<string, L.Tensor>} */
    this.grads = {};
    for (const l of this.layers) {
      for (const k of Object.keys(l.params)) {
        this.params[`${l.name}.${k}`] = l.params[k];
        this.grads[`${l.name}.${k}`] = l.grads[k];
      }
    }
  }

  add(layer, shape) {
    const out = layer.outputShape(shape);
    const last = this.layers[this.layers.length - 1];
    if (layer instanceof L.MaxPool2D && last instanceof L.ReLU) {
      // max(relu(x)) == relu(max(x)): pool first, as numpy does (execution order only)
      this.layers.pop();
      this.shapes.pop();
      this.layers.push(layer, last);
      this.shapes.push(out, out);
    } else {
      this.layers.push(layer);
      this.shapes.push(out);
    }
    return out;
  }

  make(no, name, d, shape, seed) {
    const kind = d.type, where = `layer ${no} (${kind})`;
    if (kind === 'conv' || kind === 'pool') {
      if (shape.length !== 3) throw new Error(`${where} needs an image-shaped input but gets flat features`);
      const [h, w, c] = shape, pad = d.pad || 0;
      if (d.size > h + 2 * pad || d.size > w + 2 * pad) throw new Error(`${where}: window ${d.size} does not fit the ${h}x${w} input`);
      if (kind === 'conv') return new L.Conv2D(name, c, d.filters, d.size, d.stride, pad, seed, no);
      return new L.MaxPool2D(name, d.size, d.stride);
    }
    if (kind === 'relu') return new L.ReLU(name);
    if (kind === 'dropout') return new L.Dropout(name, d.rate, 0);
    if (kind === 'flatten') return new L.Flatten(name);
    const features = L.size(shape);
    if (kind === 'fc') return new L.Dense(name, features, d.units, 2, seed, no);
    return new L.Dense(name, features, d.classes, 1, seed, no);
  }

  get numParams() {
    return Object.values(this.params).reduce((s, t) => s + t.data.length, 0);
  }

  /** Copies of every parameter, by name. */
  stateDict() {
    /** @type {Record<string, L.Tensor>} */
    const out = {};
    for (const [k, t] of Object.entries(this.params)) out[k] = { data: t.data.slice(), shape: t.shape.slice() };
    return out;
  }

  /**
   * Copy `state` into the parameters; an Error naming the first mismatch, before
   * anything is changed.
   * @param {Record<string, L.Tensor>} state
   */
  loadStateDict(state) {
    const missing = Object.keys(this.params).filter((k) => !(k in state));
    const extra = Object.keys(state).filter((k) => !(k in this.params));
    if (missing.length || extra.length) throw new Error(`weights do not fit this net: missing ${missing.slice(0, 5)}, unexpected ${extra.slice(0, 5)}`);
    for (const [k, p] of Object.entries(this.params)) {
      const v = state[k];
      if (v.shape.join(',') !== p.shape.join(',')) throw new Error(`weights ${k} have shape [${v.shape}], this net needs [${p.shape}]`);
      if (!v.data.every(Number.isFinite)) throw new Error(`weights ${k} contain NaN or infinity`);
    }
    for (const [k, p] of Object.entries(this.params)) p.data.set(state[k].data);
  }

  /** Key every dropout layer's masks by (seed, step, layer index), as Net.set_hash_masks. */
  setMasks(seed, step) {
    for (const l of this.layers) {
      if (l instanceof L.Dropout) {
        l.seed = seed >>> 0;
        l.step = step >>> 0;
      }
    }
  }

  /**
   * Logits [n, classes] for n NCHW float32 images.
   * @param {Float32Array} x @param {number} n @param {boolean} [train]
   */
  forward(x, n, train = false) {
    const [c, h, w] = this.inputShape;
    if (x.length !== n * c * h * w) throw new Error(`this net takes ${n} images of ${c}x${h}x${w} floats, got ${x.length} floats`);
    /** @type {L.Tensor} */
    let a = L.zeros([n, h, w, c]);
    for (let i = 0; i < n; i++)
      for (let ch = 0; ch < c; ch++)
        for (let p = 0; p < h * w; p++) a.data[(i * h * w + p) * c + ch] = x[(i * c + ch) * h * w + p];
    for (const layer of this.layers) a = layer.forward(a, train);
    return a;
  }

  /** Fill the grads from d loss / d logits. @param {L.Tensor} dlogits */
  backward(dlogits) {
    /** @type {L.Tensor | null} */
    let g = dlogits;
    for (let i = this.layers.length - 1; i >= 0 && g; i--) g = this.layers[i].backward(g);
  }

  /** One training forward + backward: the mean loss and the logits. */
  lossAndGrads(x, y, n) {
    const logits = this.forward(x, n, true);
    const { loss, grad } = softmaxCrossEntropy(logits, y);
    this.backward(grad);
    return { loss, logits };
  }
}
