// Runs every fixture the test server lists through the JavaScript engine and posts the
// logits, gradients and weights after training back as safetensors.
import { Net } from '/web/net.js';
import { makeOptimizer } from '/web/optim.js';
import { readSafetensors, writeSafetensors } from '/web/state.js';
import { trainSequence } from '/web/train.js';
import { useKernel } from '/web/gemm.js';
import { fingerprint } from '/web/spec.js';
import { sha256Hex } from '/web/sha256.js';

const names = await (await fetch('/fixtures')).json();
for (const kernel of ['wasm', 'js']) for (const name of names) {
  useKernel(kernel);
  const buf = await (await fetch(`/fixture/${name}`)).arrayBuffer();
  const { tensors, meta } = readSafetensors(buf);
  const cfg = JSON.parse(meta.config);
  const weights = {};
  for (const [k, t] of Object.entries(tensors)) if (k.startsWith('w.')) weights[k.slice(2)] = t;
  const x = tensors.x.data, y = Array.from(tensors.y.data, Number), n = y.length;
  const net = new Net(cfg.spec, cfg.input_shape);
  const out = {};
  out.fingerprint = { data: new TextEncoder().encode(fingerprint(cfg.spec, cfg.input_shape)), shape: [32] };
  out.fixture_sha256 = { data: new TextEncoder().encode(sha256Hex(buf)), shape: [64] };
  net.loadStateDict(weights);
  const logits = net.forward(x, n, false);
  out.logits = logits;
  net.setMasks(cfg.seed, 0);
  const { loss } = net.lossAndGrads(x, y, n);
  out.loss = { data: Float32Array.of(loss), shape: [] };
  for (const [k, g] of Object.entries(net.grads)) out[`grad.${k}`] = { data: g.data.slice(), shape: g.shape };
  for (const opt of ['sgd', 'adam']) {
    net.loadStateDict(weights);
    const o = makeOptimizer(opt, net.params, cfg.lr[opt], cfg.weight_decay, cfg.momentum);
    trainSequence(net, o, x, y, cfg.batch_size, cfg.seed);
    for (const [k, p] of Object.entries(net.params)) out[`${opt}.${k}`] = { data: p.data.slice(), shape: p.shape };
  }
  await fetch(`/result/${kernel}/${name}`, { method: 'POST', body: writeSafetensors(out) });
}
await fetch('/done', { method: 'POST', body: '' });
