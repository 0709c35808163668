// @ts-check
/**
 * SGD with momentum and Adam: the twin of gossipnet/nn/optim.py, with the same state
 * names (`sgd.velocity.<param>`, `adam.m.<param>`, `adam.v.<param>`, `<kind>.t`).
 *
 * Every element-wise operation rounds to float32 where numpy's does (Math.fround on
 * each intermediate; a Float32Array store rounds too), so given equal gradients both
 * engines take bit-identical steps.
 */

const f32 = Math.fround;

export class Optimizer {
  /**
   * @param {Record<string, import('./layers.js').Tensor>} params @param {number} lr @param {number} weightDecay
   * @param {string[]} moments
   */
  constructor(params, lr, weightDecay, moments) {
    if (!(lr > 0 && Number.isFinite(lr))) throw new Error(`learning rate must be a positive number, got ${lr}`);
    if (!(weightDecay >= 0 && Number.isFinite(weightDecay))) throw new Error(`weight decay must be >= 0, got ${weightDecay}`);
    this.params = params;
    this.lr = lr;
    this.weightDecay = weightDecay;
    this.t = 0;
    this.kind = 'optimizer';
    /** @type {Record<string, Record<string, Float32Array>>} */
    this.state = {};
    for (const m of moments) {
      this.state[m] = {};
      for (const [k, p] of Object.entries(params)) this.state[m][k] = new Float32Array(p.data.length);
    }
  }

  /** g + weight_decay * w for weights (not biases), rounded as numpy rounds it. */
  grad(name, g, i) {
    if (this.weightDecay && name.endsWith('.weight')) return f32(g[i] + f32(f32(this.weightDecay) * this.params[name].data[i]));
    return g[i];
  }

  /**
   * Continue from saved moments and step (optim.py's state_dict names, e.g. a node's
   * weights file); an Error naming what does not fit, before anything changes.
   * @param {Record<string, {data: any, shape: number[]}>} tensors
   */
  loadStateDict(tensors) {
    for (const [m, d] of Object.entries(this.state)) {
      for (const [k, v] of Object.entries(d)) {
        const t = tensors[`${this.kind}.${m}.${k}`];
        if (!t || t.data.length !== v.length) throw new Error(`optimizer state ${this.kind}.${m}.${k} is missing or has the wrong size`);
      }
    }
    const t = tensors[`${this.kind}.t`];
    if (!t) throw new Error(`optimizer state ${this.kind}.t is missing`);
    for (const [m, d] of Object.entries(this.state)) for (const [k, v] of Object.entries(d)) v.set(tensors[`${this.kind}.${m}.${k}`].data);
    this.t = Number(t.data[0]);
  }

  /** Moments and step counter by name, as optim.py's state_dict. */
  stateDict() {
    /** @type {Record<string, Float32Array | BigInt64Array>} */
    const out = {};
    for (const [m, d] of Object.entries(this.state)) for (const [k, v] of Object.entries(d)) out[`${this.kind}.${m}.${k}`] = v.slice();
    out[`${this.kind}.t`] = BigInt64Array.of(BigInt(this.t));
    return out;
  }
}

/** SGD with heavy-ball momentum: v = mu v + g; w -= lr v (PyTorch's convention). */
export class SGD extends Optimizer {
  constructor(params, lr = 0.01, momentum = 0.9, weightDecay = 0) {
    super(params, lr, weightDecay, ['velocity']);
    if (!(momentum >= 0 && momentum < 1)) throw new Error(`momentum must be in [0, 1), got ${momentum}`);
    this.kind = 'sgd';
    this.momentum = momentum;
  }

  /** @param {Record<string, import('./layers.js').Tensor>} grads */
  step(grads) {
    this.t += 1;
    const mu = f32(this.momentum), lr = f32(this.lr);
    for (const [name, p] of Object.entries(this.params)) {
      const v = this.state.velocity[name], g = grads[name].data, w = p.data;
      for (let i = 0; i < w.length; i++) {
        v[i] = f32(v[i] * mu) + this.grad(name, g, i);
        w[i] = w[i] - f32(lr * v[i]);
      }
    }
  }
}

/** Adam (Kingma & Ba 2015) with bias correction folded into the step size. */
export class Adam extends Optimizer {
  constructor(params, lr = 1e-3, betas = [0.9, 0.999], eps = 1e-8, weightDecay = 0) {
    super(params, lr, weightDecay, ['m', 'v']);
    if (!betas.every((b) => b >= 0 && b < 1)) throw new Error(`Adam betas must be in [0, 1), got ${betas}`);
    this.kind = 'adam';
    [this.b1, this.b2] = betas;
    this.eps = eps;
  }

  step(grads) {
    this.t += 1;
    const a = f32((this.lr * Math.sqrt(1 - this.b2 ** this.t)) / (1 - this.b1 ** this.t));
    const b1 = f32(this.b1), b2 = f32(this.b2), c1 = f32(1 - this.b1), c2 = f32(1 - this.b2), eps = f32(this.eps);
    for (const [name, p] of Object.entries(this.params)) {
      const m = this.state.m[name], v = this.state.v[name], g = grads[name].data, w = p.data;
      for (let i = 0; i < w.length; i++) {
        const gi = this.grad(name, g, i);
        m[i] = f32(m[i] * b1) + f32(c1 * gi);
        v[i] = f32(v[i] * b2) + f32(c2 * f32(gi * gi));
        w[i] = w[i] - f32(f32(a * m[i]) / f32(f32(Math.sqrt(v[i])) + eps));
      }
    }
  }
}

/** An optimizer by name ("sgd" or "adam"), as optim.py's make_optimizer. */
export function makeOptimizer(kind, params, lr, weightDecay = 0, momentum = 0.9) {
  if (kind === 'sgd') return new SGD(params, lr, momentum, weightDecay);
  if (kind === 'adam') return new Adam(params, lr, [0.9, 0.999], 1e-8, weightDecay);
  throw new Error(`unknown optimizer ${JSON.stringify(kind)}; choose 'sgd' or 'adam'`);
}
