// Compile gossipnet/web/gemm.wat into gossipnet/web/gemm_wasm.js (the bytes as base64).
//
// A development-time step, run by hand after editing gemm.wat; the node serves the
// committed gemm_wasm.js and nothing is compiled at run time. Needs wabt's JavaScript
// build: `npm install --prefix /tmp/wabt wabt@1.0.36`, then
// `NODE_PATH=/tmp/wabt/node_modules node scripts/build_wasm.mjs`.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const wabt = await require('wabt')();
const here = new URL('../gossipnet/web/', import.meta.url);
const source = readFileSync(new URL('gemm.wat', here), 'utf8');
const mod = wabt.parseWat('gemm.wat', source, { simd: true });
const { buffer } = mod.toBinary({});
const b64 = Buffer.from(buffer).toString('base64');
writeFileSync(new URL('gemm_wasm.js', here),
  `// Generated from gemm.wat by scripts/build_wasm.mjs (wabt wat2wasm); do not edit.\n` +
  `export const GEMM_WASM_BASE64 = '${b64}';\n`);
console.log(`gemm_wasm.js: ${buffer.length} bytes of WebAssembly`);
