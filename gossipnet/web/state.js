// @ts-check
/**
 * A small safetensors reader and writer: the twin of gossipnet/nn/state.py.
 *
 * Hand-written because the format is 8 bytes of header length, a JSON header and raw
 * little-endian arrays (huggingface/safetensors' spec), and no browser package reads it
 * without a build step. The reader checks what a hostile or truncated file could get
 * wrong: header size, dtype, shape against byte range, ranges inside the buffer.
 */

const DTYPES = { F32: 4, F16: 2, F64: 8, U8: 1, I32: 4, I64: 8 };
const MAX_HEADER = 1 << 20;

/** float16 bits to a number (IEEE 754 half precision). */
function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/**
 * Parse safetensors bytes into named tensors (F32/F16/F64 read as Float32Array, U8 as
 * Uint8Array, I32 as Int32Array, I64 as BigInt64Array) plus the metadata map.
 * @param {ArrayBuffer} buf
 * @returns {{tensors: Record<string, {data: any, shape: number[], dtype: string}>, meta: Record<string, string>}}
 */
export function readSafetensors(buf) {
  if (buf.byteLength < 8) throw new Error(`safetensors: ${buf.byteLength} bytes is too short for a header`);
  const view = new DataView(buf);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > Math.min(MAX_HEADER, buf.byteLength - 8)) throw new Error(`safetensors: header length ${headerLen} does not fit the ${buf.byteLength}-byte file`);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, headerLen)));
  const base = 8 + headerLen;
  /** @type {Record<string, any>} */
  const tensors = {};
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: [begin, end] } = info;
    const width = DTYPES[dtype];
    if (!width) throw new Error(`safetensors: ${name} has unsupported dtype ${dtype}`);
    const count = shape.reduce((a, b) => a * b, 1);
    if (end - begin !== count * width || begin < 0 || base + end > buf.byteLength) throw new Error(`safetensors: ${name}'s bytes do not match its shape or lie outside the file`);
    const bytes = buf.slice(base + begin, base + end); // a copy: aligned for any typed array
    let data;
    if (dtype === 'F32') data = new Float32Array(bytes);
    else if (dtype === 'F64') data = Float32Array.from(new Float64Array(bytes));
    else if (dtype === 'F16') data = Float32Array.from(new Uint16Array(bytes), halfToFloat);
    else if (dtype === 'U8') data = new Uint8Array(bytes);
    else if (dtype === 'I32') data = new Int32Array(bytes);
    else data = new BigInt64Array(bytes);
    tensors[name] = { data, shape, dtype };
  }
  return { tensors, meta: header.__metadata__ || {} };
}

/**
 * Serialise named typed arrays (Float32Array -> F32, Uint8Array -> U8, Int32Array -> I32,
 * BigInt64Array -> I64) with string metadata; tensors in sorted order, as safetensors writes.
 * @param {Record<string, {data: any, shape: number[]}>} tensors @param {Record<string, string>} [meta]
 * @returns {Uint8Array}
 */
export function writeSafetensors(tensors, meta = {}) {
  /** @type {Record<string, any>} */
  const header = {};
  if (Object.keys(meta).length) header.__metadata__ = meta;
  const names = Object.keys(tensors).sort();
  let offset = 0;
  for (const name of names) {
    const { data, shape } = tensors[name];
    const dtype = data instanceof Float32Array ? 'F32' : data instanceof Uint8Array ? 'U8'
      : data instanceof Int32Array ? 'I32' : data instanceof BigInt64Array ? 'I64' : null;
    if (!dtype) throw new Error(`safetensors: ${name} is not a Float32Array, Uint8Array, Int32Array or BigInt64Array`);
    header[name] = { dtype, shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8); // pad so the data starts 8-aligned
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const name of names) {
    const d = tensors[name].data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), at);
    at += d.byteLength;
  }
  return out;
}
