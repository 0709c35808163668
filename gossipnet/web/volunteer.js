// @ts-check
/**
 * The volunteer page: starts and stops the training worker (worker.js), shows what it
 * reports, and polls the node's /api/status for its accuracy and volunteer counts.
 * Starts by itself when the address has ?autostart=1 (kiosks, tests, benchmarks).
 */

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const worker = new Worker('/volunteer/web/worker.js', { type: 'module' });
let running = false, leases = 0, accepted = 0, images = 0, seconds = 0;

/** Totals the page exposes for automation (headless tests read them from the DOM). */
function show() {
  $('leases').textContent = String(leases);
  $('accepted').textContent = String(accepted);
  if (seconds > 0) $('speed').textContent = `${(images / seconds).toFixed(0)} images/s`;
  document.body.dataset.leases = String(leases);
  document.body.dataset.accepted = String(accepted);
}

worker.onmessage = (e) => {
  const m = e.data;
  if (m.type === 'state') $('state').textContent = m.text;
  else if (m.type === 'progress') {
    $('loss').textContent = m.loss.toFixed(3);
    $('state').textContent = `training: step ${m.step} of ${m.steps}, ${m.imagesPerS.toFixed(0)} images/s`;
  } else if (m.type === 'result') {
    leases += 1;
    images += m.images;
    seconds += m.seconds;
    if (m.accepted) accepted += 1;
    $('engine').textContent = m.kernel === 'wasm' ? 'WebAssembly SIMD' : 'JavaScript';
    $('state').textContent = m.accepted ? 'update accepted' : `update refused: ${m.reason} ${m.detail}`;
    show();
  }
};
worker.onerror = (e) => { $('state').textContent = `the worker failed: ${e.message}`; };

function toggle() {
  running = !running;
  worker.postMessage({ cmd: running ? 'start' : 'stop' });
  $('toggle').textContent = running ? 'Stop' : 'Start';
  $('toggle').className = running ? 'stop' : '';
}
$('toggle').addEventListener('click', toggle);

async function poll() {
  try {
    const s = await (await fetch('/api/status')).json();
    const acc = s.learner.metrics.test_accuracy;
    if (typeof acc === 'number') $('accuracy').textContent = `${(100 * acc).toFixed(1)}%`;
    const v = s.counters.volunteer;
    if (v) $('volunteers').textContent = `${v.clients} browsers, ${v.images_per_s} images/s, ${v.accepted} accepted`;
  } catch { /* the node is restarting: try again at the next poll */ }
}
poll();
setInterval(poll, 5000);
if (new URLSearchParams(location.search).get('autostart') === '1') toggle();
