;; WebAssembly SIMD kernel behind gemm.js: C[m x n] = A[m x k] . B[k x n], float32.
;;
;; Source of gemm_wasm.js (the bytes), compiled at development time with wabt's
;; wat2wasm (node scripts/build_wasm.mjs); nothing is compiled at run time.
;;
;; Layout (byte addresses into this module's memory):
;;   A[i + r, p] is at pa + (i / 4) * apanel + r * arow + p * astep, so the caller copies A
;;     in as it is, row-major A (arow = 4k, astep = 4, apanel = 16k) or row-major A^T for
;;     weight gradients (arow = 4, astep = 4m, apanel = 16), with no repacking;
;;   B is row-major k x n; C is row-major m x n;
;;   m is a multiple of 4 and n a multiple of 8 (gemm.js pads with zeros).
;; Each 4 x 8 tile of C lives in eight f32x4 accumulators over the whole k loop: per step,
;; two vector loads of B and four splat loads of A feed eight multiply-adds.
(module
  (memory (export "memory") 1)
  (func (export "gemm") (param $m i32) (param $n i32) (param $k i32)
                        (param $pa i32) (param $arow i32) (param $astep i32) (param $apanel i32)
                        (param $pb i32) (param $pc i32)
    (local $i i32) (local $j i32) (local $p i32)
    (local $ap i32) (local $bp i32) (local $cp i32) (local $rowb i32)
    (local $arow2 i32) (local $arow3 i32)
    (local $c00 v128) (local $c01 v128) (local $c10 v128) (local $c11 v128)
    (local $c20 v128) (local $c21 v128) (local $c30 v128) (local $c31 v128)
    (local $b0 v128) (local $b1 v128) (local $x v128)
    (local.set $rowb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $arow2 (i32.shl (local.get $arow) (i32.const 1)))
    (local.set $arow3 (i32.add (local.get $arow2) (local.get $arow)))
    (local.set $i (i32.const 0))
    (block $iend (loop $iloop
      (br_if $iend (i32.ge_u (local.get $i) (local.get $m)))
      (local.set $j (i32.const 0))
      (block $jend (loop $jloop
        (br_if $jend (i32.ge_u (local.get $j) (local.get $n)))
        (local.set $c00 (v128.const i32x4 0 0 0 0)) (local.set $c01 (v128.const i32x4 0 0 0 0))
        (local.set $c10 (v128.const i32x4 0 0 0 0)) (local.set $c11 (v128.const i32x4 0 0 0 0))
        (local.set $c20 (v128.const i32x4 0 0 0 0)) (local.set $c21 (v128.const i32x4 0 0 0 0))
        (local.set $c30 (v128.const i32x4 0 0 0 0)) (local.set $c31 (v128.const i32x4 0 0 0 0))
        ;; ap = pa + (i / 4) * apanel
        (local.set $ap (i32.add (local.get $pa) (i32.mul (i32.shr_u (local.get $i) (i32.const 2)) (local.get $apanel))))
        (local.set $bp (i32.add (local.get $pb) (i32.shl (local.get $j) (i32.const 2))))
        (local.set $p (local.get $k))
        (block $pend (loop $ploop
          (br_if $pend (i32.eqz (local.get $p)))
          (local.set $b0 (v128.load (local.get $bp)))
          (local.set $b1 (v128.load offset=16 (local.get $bp)))
          (local.set $x (v128.load32_splat (local.get $ap)))
          (local.set $c00 (f32x4.add (local.get $c00) (f32x4.mul (local.get $x) (local.get $b0))))
          (local.set $c01 (f32x4.add (local.get $c01) (f32x4.mul (local.get $x) (local.get $b1))))
          (local.set $x (v128.load32_splat (i32.add (local.get $ap) (local.get $arow))))
          (local.set $c10 (f32x4.add (local.get $c10) (f32x4.mul (local.get $x) (local.get $b0))))
          (local.set $c11 (f32x4.add (local.get $c11) (f32x4.mul (local.get $x) (local.get $b1))))
          (local.set $x (v128.load32_splat (i32.add (local.get $ap) (local.get $arow2))))
          (local.set $c20 (f32x4.add (local.get $c20) (f32x4.mul (local.get $x) (local.get $b0))))
          (local.set $c21 (f32x4.add (local.get $c21) (f32x4.mul (local.get $x) (local.get $b1))))
          (local.set $x (v128.load32_splat (i32.add (local.get $ap) (local.get $arow3))))
          (local.set $c30 (f32x4.add (local.get $c30) (f32x4.mul (local.get $x) (local.get $b0))))
          (local.set $c31 (f32x4.add (local.get $c31) (f32x4.mul (local.get $x) (local.get $b1))))
          (local.set $ap (i32.add (local.get $ap) (local.get $astep)))
          (local.set $bp (i32.add (local.get $bp) (local.get $rowb)))
          (local.set $p (i32.sub (local.get $p) (i32.const 1)))
          (br $ploop)))
        ;; cp = pc + (i * n + j) * 4
        (local.set $cp (i32.add (local.get $pc)
          (i32.shl (i32.add (i32.mul (local.get $i) (local.get $n)) (local.get $j)) (i32.const 2))))
        (v128.store (local.get $cp) (local.get $c00))
        (v128.store offset=16 (local.get $cp) (local.get $c01))
        (local.set $cp (i32.add (local.get $cp) (local.get $rowb)))
        (v128.store (local.get $cp) (local.get $c10))
        (v128.store offset=16 (local.get $cp) (local.get $c11))
        (local.set $cp (i32.add (local.get $cp) (local.get $rowb)))
        (v128.store (local.get $cp) (local.get $c20))
        (v128.store offset=16 (local.get $cp) (local.get $c21))
        (local.set $cp (i32.add (local.get $cp) (local.get $rowb)))
        (v128.store (local.get $cp) (local.get $c30))
        (v128.store offset=16 (local.get $cp) (local.get $c31))
        (local.set $j (i32.add (local.get $j) (i32.const 8)))
        (br $jloop)))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br $iloop)))))
