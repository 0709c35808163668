// @ts-check
/**
 * The hot loop: single-precision matrix products on row-major Float32Arrays.
 *
 * Every layer's heavy arithmetic goes through the three functions here (the twin of
 * numpy's BLAS calls in gossipnet/nn/layers.py), so a faster kernel (WebAssembly SIMD)
 * can replace them behind the same signatures without touching a layer.
 *
 *   gemm(m, n, k, a, b, c, acc)    C[m x n] (+)= A[m x k]  . B[k x n]
 *   gemmTN(m, n, k, a, b, c, acc)  C[m x n] (+)= A[k x m]^T . B[k x n]
 *   gemmNT(m, n, k, a, b, c, acc)  C[m x n] (+)= A[m x k]  . B[n x k]^T
 *
 * All three are one strided kernel that computes C in 4 x 4 tiles held in sixteen local
 * variables: each step of the k loop loads 4 + 4 values for 16 multiply-adds, where a
 * loop over a row of C in memory would load and store C on every one (measured here in
 * V8: 0.3-0.6 GFLOP/s for the row loop). Sums accumulate in float64 and are rounded
 * once, on the store.
 *
 * When the browser has WebAssembly SIMD, the same three functions copy their operands
 * into a WebAssembly memory and run gemm.wat's kernel (4 x 8 tiles of f32x4
 * accumulators, reading A or A^T in place); `useKernel('js' | 'wasm')` switches between the two so the benchmark
 * can measure what SIMD pays (docs/VOLUNTEERS.md). Both give the same sums up to
 * float32 rounding (the SIMD kernel accumulates in float32, as BLAS does).
 */

import { GEMM_WASM_BASE64 } from './gemm_wasm.js';

/** The compiled SIMD kernel, or null where WebAssembly SIMD is unavailable. */
function loadWasm() {
  try {
    const bytes = Uint8Array.from(atob(GEMM_WASM_BASE64), (ch) => ch.charCodeAt(0));
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
    return /** @type {{gemm: Function, memory: WebAssembly.Memory}} */ (/** @type {unknown} */ (inst.exports));
  } catch {
    return null;
  }
}

const wasm = loadWasm();
let useWasm = wasm !== null;

/** Which kernel runs: 'wasm' (SIMD) or 'js'. */
export function kernelName() {
  return useWasm ? 'wasm' : 'js';
}

/** Choose the kernel; 'wasm' where SIMD is missing throws. @param {'js' | 'wasm'} name */
export function useKernel(name) {
  if (name === 'wasm' && !wasm) throw new Error('this browser has no WebAssembly SIMD');
  useWasm = name === 'wasm';
}

/** Float32 view of the kernel's memory, grown to at least `floats` floats. */
function wasmFloats(floats) {
  const mem = /** @type {NonNullable<typeof wasm>} */ (wasm).memory;
  const need = floats * 4 - mem.buffer.byteLength;
  if (need > 0) mem.grow(Math.ceil(need / 65536));
  return new Float32Array(mem.buffer);
}

/**
 * The strided product of `kernel` below on the SIMD kernel: copy A in as it is (row-major
 * A, or row-major A^T when ai = 1), B padded to n8 columns, multiply, copy C out.
 */
function wasmKernel(m, n, k, a, ai, ap, b, bp, bj, c, acc) {
  const m4 = Math.ceil(m / 4) * 4, n8 = Math.ceil(n / 8) * 8;
  const offA = 0, offB = m4 * k, offC = offB + k * n8;
  const f = wasmFloats(offC + m4 * n8);
  let arow, astep, apanel;
  if (ap === 1) { // A row-major m x k (ai = k): rows beyond m are zeros
    f.set(a.subarray(0, m * k), offA);
    f.fill(0, offA + m * k, offA + m4 * k);
    arow = 4 * k; astep = 4; apanel = 16 * k;
  } else { // A^T: A stored k x m (ai = 1, ap = m), copied as k x m4
    if (m4 === m) f.set(a.subarray(0, k * m), offA);
    else for (let p = 0; p < k; p++) {
      f.set(a.subarray(p * m, p * m + m), offA + p * m4);
      f.fill(0, offA + p * m4 + m, offA + (p + 1) * m4);
    }
    arow = 4; astep = 4 * m4; apanel = 16;
  }
  if (bj === 1 && bp === n && n === n8) {
    f.set(b.subarray(0, k * n), offB);
  } else if (bj === 1) {
    for (let p = 0; p < k; p++) {
      const row = offB + p * n8;
      f.set(b.subarray(p * bp, p * bp + n), row);
      f.fill(0, row + n, row + n8);
    }
  } else {
    if (n8 > n) for (let p = 0; p < k; p++) f.fill(0, offB + p * n8 + n, offB + (p + 1) * n8);
    for (let j = 0; j < n; j++) {
      const src = j * bj;
      for (let p = 0; p < k; p++) f[offB + p * n8 + j] = b[src + p * bp];
    }
  }
  /** @type {NonNullable<typeof wasm>} */ (wasm).gemm(m4, n8, k, offA * 4, arow, astep, apanel, offB * 4, offC * 4);
  const out = new Float32Array(/** @type {NonNullable<typeof wasm>} */ (wasm).memory.buffer, offC * 4, m4 * n8);
  if (!acc && n === n8) {
    c.set(out.subarray(0, m * n));
  } else {
    for (let i = 0; i < m; i++) {
      const s = i * n8, d = i * n;
      if (acc) for (let j = 0; j < n; j++) c[d + j] += out[s + j];
      else c.set(out.subarray(s, s + n), d);
    }
  }
}

/**
 * C[i, j] (+)= sum_p A[i * ai + p * ap] * B[p * bp + j * bj].
 * @param {number} m @param {number} n @param {number} k
 * @param {Float32Array} a @param {number} ai @param {number} ap
 * @param {Float32Array} b @param {number} bp @param {number} bj
 * @param {Float32Array} c @param {boolean} acc
 */
function kernel(m, n, k, a, ai, ap, b, bp, bj, c, acc) {
  if (useWasm && k > 0) return wasmKernel(m, n, k, a, ai, ap, b, bp, bj, c, acc);
  const m4 = m - (m % 4), n4 = n - (n % 4);
  for (let i = 0; i < m4; i += 4) {
    const r0 = i * ai, r1 = r0 + ai, r2 = r1 + ai, r3 = r2 + ai;
    for (let j = 0; j < n4; j += 4) {
      const q0 = j * bj, q1 = q0 + bj, q2 = q1 + bj, q3 = q2 + bj;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let p = 0; p < k; p++) {
        const pa = p * ap, pb = p * bp;
        const x0 = a[r0 + pa], x1 = a[r1 + pa], x2 = a[r2 + pa], x3 = a[r3 + pa];
        const y0 = b[pb + q0], y1 = b[pb + q1], y2 = b[pb + q2], y3 = b[pb + q3];
        c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
        c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
        c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
        c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
      }
      const o0 = i * n + j, o1 = o0 + n, o2 = o1 + n, o3 = o2 + n;
      if (acc) {
        c[o0] += c00; c[o0 + 1] += c01; c[o0 + 2] += c02; c[o0 + 3] += c03;
        c[o1] += c10; c[o1 + 1] += c11; c[o1 + 2] += c12; c[o1 + 3] += c13;
        c[o2] += c20; c[o2 + 1] += c21; c[o2 + 2] += c22; c[o2 + 3] += c23;
        c[o3] += c30; c[o3 + 1] += c31; c[o3 + 2] += c32; c[o3 + 3] += c33;
      } else {
        c[o0] = c00; c[o0 + 1] = c01; c[o0 + 2] = c02; c[o0 + 3] = c03;
        c[o1] = c10; c[o1 + 1] = c11; c[o1 + 2] = c12; c[o1 + 3] = c13;
        c[o2] = c20; c[o2 + 1] = c21; c[o2 + 2] = c22; c[o2 + 3] = c23;
        c[o3] = c30; c[o3 + 1] = c31; c[o3 + 2] = c32; c[o3 + 3] = c33;
      }
    }
  }
  // the ragged edges: rows below m4 (all columns) and columns right of n4 (rows above m4)
  for (let i = 0; i < m; i++) {
    for (let j = i < m4 ? n4 : 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += a[i * ai + p * ap] * b[p * bp + j * bj];
      c[i * n + j] = acc ? c[i * n + j] + s : s;
    }
  }
}

/** C = A . B (C += with acc). @param {number} m @param {number} n @param {number} k
 * @param {Float32Array} a @param {Float32Array} b @param {Float32Array} c @param {boolean} [acc] */
export function gemm(m, n, k, a, b, c, acc = false) {
  kernel(m, n, k, a, k, 1, b, n, 1, c, acc);
}

/** C = A^T . B with A stored (k x m) (weight gradients). @param {number} m @param {number} n
 * @param {number} k @param {Float32Array} a @param {Float32Array} b @param {Float32Array} c @param {boolean} [acc] */
export function gemmTN(m, n, k, a, b, c, acc = false) {
  kernel(m, n, k, a, 1, m, b, n, 1, c, acc);
}

/** C = A . B^T with B stored (n x k) (a dense layer's forward pass). @param {number} m
 * @param {number} n @param {number} k @param {Float32Array} a @param {Float32Array} b
 * @param {Float32Array} c @param {boolean} [acc] */
export function gemmNT(m, n, k, a, b, c, acc = false) {
  kernel(m, n, k, a, k, 1, b, 1, k, c, acc);
}
