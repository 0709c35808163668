// @ts-check
/**
 * The volunteer's Web Worker: lease, download, train, post back, repeat; the page only
 * shows what it reports and says start or stop. Training blocks this worker, never
 * the page. Protocol: docs/VOLUNTEERS.md.
 *
 * Messages in: {cmd: 'start'} | {cmd: 'stop'}.
 * Messages out: {type: 'state', text} | {type: 'progress', step, steps, loss, imagesPerS}
 *   | {type: 'result', accepted, reason, detail, images, seconds, loss, kernel}.
 */

import { kernelName } from './gemm.js';
import { Net } from './net.js';
import { makeOptimizer } from './optim.js';
import { fingerprint } from './spec.js';
import { sha256Hex } from './sha256.js';
import { readSafetensors, writeSafetensors } from './state.js';
import { normaliseImages, trainSequence } from './train.js';

let running = false;
/** @type {{net: Net, fingerprint: string} | null} */
let cached = null;

const post = (msg) => postMessage(msg);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function fetchOk(url, init) {
  const r = await fetch(url, init);
  if (!r.ok) {
    const why = await r.json().catch(() => ({ reason: `http_${r.status}`, detail: r.statusText }));
    throw Object.assign(new Error(why.detail || why.reason), { reason: why.reason, status: r.status });
  }
  return r;
}

/** One lease: ask, download, train, send. Resolves once the update is sent, to `{ verdict }`,
 * a promise of the node's answer: the node answers after its checks, which wait for its current
 * training chunk, so the next lease trains meanwhile instead of this browser idling. */
async function oneLease() {
  post({ type: 'state', text: 'asking the node for work' });
  const lease = await (await fetchOk('/volunteer/lease', { method: 'POST' })).json();
  const [wbuf, ibuf] = await Promise.all([
    fetchOk(lease.weights_url).then((r) => r.arrayBuffer()),
    fetchOk(lease.images_url).then((r) => r.arrayBuffer()),
  ]);
  if (sha256Hex(wbuf) !== lease.weights_sha256) throw new Error('the weights do not match the lease\'s sha256');
  if (!cached || cached.fingerprint !== lease.fingerprint) {
    const fp = fingerprint(lease.spec, lease.input_shape);
    if (fp !== lease.fingerprint) throw new Error(`this page builds net ${fp}, the node runs ${lease.fingerprint}: reload the page`);
    cached = { net: new Net(lease.spec, lease.input_shape), fingerprint: fp };
  }
  const net = cached.net, o = lease.optimizer;
  const { tensors } = readSafetensors(wbuf);
  const weights = {}, state = {};
  for (const [k, t] of Object.entries(tensors)) (k.startsWith(`${o.kind}.`) ? state : weights)[k] = t;
  net.loadStateDict(weights);
  const opt = makeOptimizer(o.kind, net.params, o.lr, o.weight_decay, o.momentum);
  opt.loadStateDict(state);
  const imgs = readSafetensors(ibuf).tensors;
  const x = normaliseImages(imgs.x.data, lease.input_shape, lease.normalise.mean, lease.normalise.std);
  const y = Array.from(imgs.y.data, Number);
  post({ type: 'state', text: `training ${lease.steps} steps of ${lease.batch_size} images` });
  const t0 = performance.now();
  const losses = trainSequence(net, opt, x, y, lease.batch_size, lease.seed, (s, loss) => {
    const secs = (performance.now() - t0) / 1000;
    post({ type: 'progress', step: s + 1, steps: lease.steps, loss, imagesPerS: ((s + 1) * lease.batch_size) / secs });
  });
  const seconds = (performance.now() - t0) / 1000;
  const delta = {};
  for (const [k, p] of Object.entries(net.params)) {
    const d = new Float32Array(p.data.length), w0 = weights[k].data;
    for (let i = 0; i < d.length; i++) d[i] = p.data[i] - w0[i];
    delta[`delta.${k}`] = { data: d, shape: p.shape };
  }
  const loss = losses.reduce((a, b) => a + b, 0) / losses.length;
  const images = lease.steps * lease.batch_size;
  const body = writeSafetensors(delta, { lease: lease.lease, base_version: String(lease.base_version), loss: String(loss), images: String(images) });
  post({ type: 'state', text: 'sending the update' });
  const result = (accepted, reason, detail) => ({ type: 'result', accepted, reason, detail, images, seconds, loss, kernel: kernelName() });
  const sent = fetch('/volunteer/update', { method: 'POST', body, headers: { 'Content-Type': 'application/octet-stream' } });
  // wrapped: an async function returning a promise would wait for it
  return {
    verdict: sent.then(async (r) => {
      const answer = await r.json().catch(() => ({}));
      return result(r.ok, answer.reason || '', answer.detail || '');
    }, (err) => result(false, 'network', String(err))),
  };
}

async function loop() {
  let backoff = 1000;
  let verdict = null; // the previous update's answer: at most two updates in flight
  while (running) {
    try {
      const sent = await oneLease();
      if (verdict) post(await verdict);
      verdict = sent.verdict;
      backoff = 1000;
    } catch (err) {
      const e = /** @type {any} */ (err);
      post({ type: 'state', text: `waiting: ${e.reason || ''} ${e.message}` });
      await sleep(backoff);
      backoff = Math.min(30000, backoff * 2);
    }
  }
  if (verdict) post(await verdict);
  post({ type: 'state', text: 'stopped' });
}

onmessage = (e) => {
  if (e.data.cmd === 'start' && !running) {
    running = true;
    loop();
  } else if (e.data.cmd === 'stop') {
    running = false;
  }
};
