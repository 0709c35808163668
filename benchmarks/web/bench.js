// Training images/s of gossipnet/web (JavaScript and WebAssembly SIMD kernels) and, when
// the server offers it, of convnet.js on the same net, in this browser, one after another.
import { useKernel } from '/web/gemm.js';
import { Net } from '/web/net.js';
import { makeOptimizer } from '/web/optim.js';
import { trainSequence } from '/web/train.js';

const cfg = await (await fetch('/config')).json();
const results = {};
const per = cfg.input_shape.reduce((a, b) => a * b, 1);

function randomBatch(n) {
  const x = new Float32Array(n * per);
  for (let i = 0; i < x.length; i++) x[i] = Math.random() * 2 - 1;
  return { x, y: Array.from({ length: n }, () => Math.floor(Math.random() * cfg.classes)) };
}

/** Median images/s over rounds of `steps` steps, after one warm-up step. */
function gossipnet(kernel) {
  useKernel(kernel);
  const net = new Net(cfg.spec, cfg.input_shape, 1);
  const opt = makeOptimizer(cfg.optimizer, net.params, cfg.lr, cfg.weight_decay, 0.9);
  const { x, y } = randomBatch(cfg.batch * cfg.steps);
  trainSequence(net, opt, x.subarray(0, cfg.batch * per), y.slice(0, cfg.batch), cfg.batch, 0);
  const rates = [];
  for (let r = 0; r < cfg.rounds; r++) {
    const t0 = performance.now();
    trainSequence(net, opt, x, y, cfg.batch, r);
    rates.push((cfg.batch * cfg.steps) / ((performance.now() - t0) / 1000));
  }
  return rates.sort((a, b) => a - b)[Math.floor(rates.length / 2)];
}

/** convnet.js's own CIFAR-10 demo net and trainer (adadelta, batch 4, l2 1e-4). */
function convnetjs() {
  const c = globalThis.convnetjs;
  const net = new c.Net();
  net.makeLayers([
    { type: 'input', out_sx: 32, out_sy: 32, out_depth: 3 },
    { type: 'conv', sx: 5, filters: 16, stride: 1, pad: 2, activation: 'relu' }, { type: 'pool', sx: 2, stride: 2 },
    { type: 'conv', sx: 5, filters: 20, stride: 1, pad: 2, activation: 'relu' }, { type: 'pool', sx: 2, stride: 2 },
    { type: 'conv', sx: 5, filters: 20, stride: 1, pad: 2, activation: 'relu' }, { type: 'pool', sx: 2, stride: 2 },
    { type: 'softmax', num_classes: 10 },
  ]);
  const trainer = new c.SGDTrainer(net, { method: 'adadelta', batch_size: 4, l2_decay: 0.0001 });
  const vols = Array.from({ length: 16 }, () => {
    const v = new c.Vol(32, 32, 3, 0.0);
    for (let i = 0; i < v.w.length; i++) v.w[i] = Math.random() * 2 - 1;
    return v;
  });
  const n = cfg.batch * cfg.steps, rates = [];
  for (let r = 0; r < cfg.rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) trainer.train(vols[i % vols.length], i % 10);
    rates.push(n / ((performance.now() - t0) / 1000));
  }
  return rates.sort((a, b) => a - b)[Math.floor(rates.length / 2)];
}

results.js = gossipnet('js');
results.wasm = gossipnet('wasm');
if (globalThis.convnetjs && cfg.net === 'convnetjs-cifar10') results.convnetjs = convnetjs();
results.user_agent = navigator.userAgent;
await fetch('/result', { method: 'POST', body: JSON.stringify(results) });
