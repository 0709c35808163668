// @ts-check
/**
 * Network specs: validation, defaults and fingerprint, the twin of gossipnet/nn/spec.py.
 *
 * The presets live only on the Python side: a node hands its volunteers the canonical
 * spec, and the fingerprint (sha256 of the spec and input shape, as Python's json.dumps
 * with sorted keys writes them) proves both engines build the same net.
 */

import { sha256Hex } from './sha256.js';

const KEYS = {
  conv: { filters: null, size: null, stride: 1, pad: 0 },
  pool: { size: 2, stride: null },
  relu: {},
  dropout: { rate: 0.5 },
  flatten: {},
  fc: { units: null },
  softmax: { classes: null },
};
const ALIASES = { dense: 'fc', maxpool: 'pool' };

function positiveInt(no, kind, key, value, minimum = 1) {
  if (!Number.isInteger(value) || value < minimum) {
    throw new Error(`layer ${no} (${kind}): '${key}' must be an integer >= ${minimum}, got ${JSON.stringify(value)}`);
  }
}

/**
 * The spec with every default filled in, or an Error naming the first problem.
 * @param {Array<Record<string, any>>} spec @returns {Array<Record<string, any>>}
 */
export function canonicalSpec(spec) {
  if (!Array.isArray(spec) || spec.length === 0) throw new Error('a network spec must be a non-empty list of layer dicts');
  const out = spec.map((layer, i) => {
    const no = i + 1;
    if (!layer || typeof layer !== 'object' || !('type' in layer)) throw new Error(`layer ${no}: expected an object with a 'type' key`);
    const kind = ALIASES[layer.type] ?? layer.type;
    if (!(kind in KEYS)) throw new Error(`layer ${no}: unknown type ${JSON.stringify(layer.type)}`);
    const unknown = Object.keys(layer).filter((k) => k !== 'type' && !(k in KEYS[kind]));
    if (unknown.length) throw new Error(`layer ${no} (${kind}): unknown keys ${unknown.sort()}`);
    /** @type {Record<string, any>} */
    const c = { type: kind };
    for (const [key, def] of Object.entries(KEYS[kind])) {
      const value = key in layer ? layer[key] : def;
      if (value === null && !(kind === 'pool' && key === 'stride')) throw new Error(`layer ${no} (${kind}): missing required key '${key}'`);
      c[key] = value;
    }
    if (kind === 'conv') {
      for (const key of ['filters', 'size', 'stride']) positiveInt(no, kind, key, c[key]);
      positiveInt(no, kind, 'pad', c.pad, 0);
    } else if (kind === 'pool') {
      positiveInt(no, kind, 'size', c.size);
      if (c.stride === null) c.stride = c.size;
      positiveInt(no, kind, 'stride', c.stride);
    } else if (kind === 'dropout') {
      if (typeof c.rate !== 'number' || !(c.rate >= 0 && c.rate < 1)) throw new Error(`layer ${no} (dropout): 'rate' must be in [0, 1)`);
    } else if (kind === 'fc') {
      positiveInt(no, kind, 'units', c.units);
    } else if (kind === 'softmax') {
      positiveInt(no, kind, 'classes', c.classes, 2);
      if (no !== spec.length) throw new Error(`layer ${no}: softmax must be the last layer`);
    }
    return c;
  });
  if (out[out.length - 1].type !== 'softmax') throw new Error("the last layer must be {'type': 'softmax', 'classes': N}");
  return out;
}

/** JSON as Python's json.dumps(sort_keys=True, separators=(',', ':')) writes this spec. */
function pythonJson(value, floatKey = false) {
  if (Array.isArray(value)) return `[${value.map((v) => pythonJson(v)).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${pythonJson(value[k], k === 'rate')}`).join(',')}}`;
  }
  // dropout rates are Python floats: 0.0 prints as "0.0", not "0"
  if (floatKey && Number.isInteger(value)) return `${value}.0`;
  return JSON.stringify(value);
}

/**
 * sha256 (hex, first 16 bytes) of the canonical spec and input shape, as spec.py's.
 * @param {Array<Record<string, any>>} spec @param {number[]} inputShape @returns {string}
 */
export function fingerprint(spec, inputShape) {
  const doc = pythonJson({ input: inputShape, layers: canonicalSpec(spec) });
  return sha256Hex(new TextEncoder().encode(doc)).slice(0, 32);
}
