//! An f32 matrix product for the small, deep tiles of functional convolutions, without
//! packing: the weights are broadcast from their row-major rows and the columns (im2col's
//! layout, or the input planes themselves) are loaded straight from their rows, 32 at a
//! time. On these tiles (16-128 output channels, 14-672 pixels, depth up to 4608)
//! packing took a third of matrixmultiply's time. Used when the CPU has AVX-512F
//! (checked at run time); the caller falls back to matrixmultiply otherwise.
// Unsafe here: SIMD intrinsics behind a run-time feature check, on raw pointers whose
// reach the caller has checked.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

/// Rows of the output one block computes (accumulators: ROWS x 2 vectors of 16).
const ROWS: usize = 8;
/// Columns of the output one block computes.
const COLS: usize = 32;
/// Depth per pass: the columns' block (DEPTH x COLS f32, 32 KiB) stays in L1 while
/// every row block of the weights goes over it.
const DEPTH: usize = 256;

/// Whether this CPU runs [`sgemm`].
pub(super) fn available() -> bool {
    extern crate std;
    std::is_x86_feature_detected!("avx512f")
}

/// `c[m x n] = a[m x k] * b[k x n] + beta * c` with row strides `lda`, `ldb`, `ldc`.
///
/// # Safety
/// [`available`] must have returned true, and every element the strides reach
/// (`(m - 1) * lda + k` of `a`, `(k - 1) * ldb + n` of `b`, `(m - 1) * ldc + n` of `c`)
/// must be valid, `c`'s for writing and not aliased by `a` or `b`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let mut d0 = 0;
    loop {
        let depth = DEPTH.min(k - d0);
        // The first pass scales what c held by beta; later passes add to it.
        let scale = if d0 == 0 { beta } else { 1.0 };
        let mut col = 0;
        while col < n {
            let cols = COLS.min(n - col);
            let mut row = 0;
            while row < m {
                // SAFETY: the block lies inside the matrices the caller vouched for.
                unsafe {
                    let at = Block {
                        a: a.add(row * lda + d0),
                        lda,
                        b: b.add(d0 * ldb + col),
                        ldb,
                        c: c.add(row * ldc + col),
                        ldc,
                        depth,
                        cols,
                        scale,
                    };
                    match m - row {
                        1 => block::<1>(&at),
                        2 => block::<2>(&at),
                        3 => block::<3>(&at),
                        4 => block::<4>(&at),
                        5 => block::<5>(&at),
                        6 => block::<6>(&at),
                        7 => block::<7>(&at),
                        _ => block::<ROWS>(&at),
                    }
                }
                row += ROWS;
            }
            col += COLS;
        }
        d0 += depth;
        if d0 >= k {
            break;
        }
    }
}

/// One block: `R` rows by `cols` (<= 32) columns over `depth` of the product.
struct Block {
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    depth: usize,
    cols: usize,
    scale: f32,
}

/// # Safety
/// As [`sgemm`], for this block.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn block<const R: usize>(x: &Block) {
    // Lanes of the two column vectors that are inside the output (a masked-off lane is
    // neither read nor written, so the second vector may start past the end).
    let lanes = |from: usize| -> __mmask16 {
        let n = x.cols.saturating_sub(from).min(16);
        if n == 16 {
            0xffff
        } else {
            (1u16 << n) - 1
        }
    };
    let (m0, m1) = (lanes(0), lanes(16));
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if x.scale != 0.0 {
        let s = _mm512_set1_ps(x.scale);
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row r of the block's output, masked to its columns.
            unsafe {
                let c = x.c.add(r * x.ldc);
                acc[0] = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m0, c));
                acc[1] = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m1, c.wrapping_add(16)));
            }
        }
    }
    for d in 0..x.depth {
        // SAFETY: row d of the block's columns (masked) and column d of its weights.
        unsafe {
            let b = x.b.add(d * x.ldb);
            let b0 = _mm512_maskz_loadu_ps(m0, b);
            let b1 = _mm512_maskz_loadu_ps(m1, b.wrapping_add(16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*x.a.add(r * x.lda + d));
                acc[0] = _mm512_fmadd_ps(w, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(w, b1, acc[1]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        // SAFETY: row r of the block's output, masked to its columns.
        unsafe {
            let c = x.c.add(r * x.ldc);
            _mm512_mask_storeu_ps(c, m0, acc[0]);
            _mm512_mask_storeu_ps(c.wrapping_add(16), m1, acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Plain loops in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        for i in 0..m {
            for j in 0..n {
                let sum: f64 = (0..k).map(|d| f64::from(a[i * lda + d]) * f64::from(b[d * ldb + j])).sum();
                let old = if beta == 0.0 { 0.0 } else { f64::from(beta) * f64::from(c[i * ldc + j]) };
                c[i * ldc + j] = (sum + old) as f32;
            }
        }
    }

    #[test]
    fn every_edge_of_rows_columns_and_depth_matches_plain_loops() {
        if !super::available() {
            std::eprintln!("skipped: no AVX-512F on this CPU (matrixmultiply runs instead)");
            return;
        }
        let value =
            |i: usize, salt: usize| ((i.wrapping_mul(2654435761).wrapping_add(salt) >> 9) % 1999) as f32 / 999.0 - 1.0;
        // m, k, n, extra row stride, beta
        let cases = [
            (1, 1, 1, 0, 0.0),
            (8, 256, 32, 0, 0.0),
            (9, 257, 33, 3, 1.0),
            (7, 600, 16, 0, 1.0),
            (16, 4608, 49, 5, 0.0),
            (13, 31, 17, 1, 0.5),
            (64, 513, 70, 0, 1.0),
            (3, 0, 40, 2, 1.0),
            (5, 5, 100, 7, 0.0),
        ];
        for (m, k, n, pad, beta) in cases {
            let (lda, ldb, ldc) = (k + pad, n + pad, n + 2 * pad);
            let a: Vec<f32> = (0..m * lda).map(|i| value(i, 1)).collect();
            let b: Vec<f32> = (0..k.max(1) * ldb).map(|i| value(i, 2)).collect();
            // Beta 0 must overwrite whatever the output held, NaN included.
            let start: Vec<f32> =
                (0..m * ldc).map(|i| if beta == 0.0 && i % 7 == 0 { f32::NAN } else { value(i, 3) }).collect();
            let (mut got, mut want) = (start.clone(), start.clone());
            // SAFETY: available() is true and every slice covers what the strides reach.
            unsafe { super::sgemm(m, k, n, a.as_ptr(), lda, b.as_ptr(), ldb, beta, got.as_mut_ptr(), ldc) };
            reference(m, k, n, &a, lda, &b, ldb, beta, &mut want, ldc);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let inside = i % ldc < n;
                if !inside {
                    // Columns past n belong to someone else: untouched.
                    assert_eq!(g.to_bits(), w.to_bits(), "{m}x{k}x{n}: element {i} outside the output changed");
                    continue;
                }
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "{m}x{k}x{n} beta {beta}: element {i}: got {g} want {w}"
                );
            }
        }
    }

    #[test]
    fn a_column_block_that_ends_at_the_end_of_memory_reads_nothing_past_it() {
        if !super::available() {
            return;
        }
        // n = 5 and the last row of b ends exactly at the end of its allocation: the
        // masked-off lanes must not be touched (a fault would abort the test).
        let (m, k, n) = (3, 4, 5);
        let a = vec![1.0f32; m * k];
        let b = vec![2.0f32; k * n];
        let mut c = vec![0.0f32; m * n];
        // SAFETY: available() is true; packed strides.
        unsafe { super::sgemm(m, k, n, a.as_ptr(), k, b.as_ptr(), n, 0.0, c.as_mut_ptr(), n) };
        assert!(c.iter().all(|&v| v == 8.0));
    }
}
