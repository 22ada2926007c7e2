//! HMX numerics: matrix multiply and 2-D convolution (as im2col + matrix multiply).
//!
//! Float tiles run through `matrixmultiply::sgemm` on packed f32 copies of the
//! operands (f16 inputs widen exactly; the result rounds once when it is written back,
//! as an f32-accumulating HMX would); int8 tiles accumulate in i32 exactly.
// The one place the device crate needs unsafe: sgemm takes raw pointers.
#![allow(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

use super::kernels::{gather_f32, gather_i32, scatter_f32, scatter_i32};
use crate::isa::{ConvGeometry, Tensor};

/// `c[m x n] = a[m x k] * b[k x n] + beta * c`, all packed row-major.
pub fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "sgemm operand too short");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above make every index the row-major strides reach lie inside
    // the slices; `c` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `c[m x n] += a[m x k] * b[k x n]` in i32, wrapping.
pub fn igemm(m: usize, k: usize, n: usize, a: &[i32], b: &[i32], c: &mut [i32]) {
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let av = a[i * k + p];
            if av == 0 {
                continue;
            }
            for (out, &bv) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *out = out.wrapping_add(av.wrapping_mul(bv));
            }
        }
    }
}

pub(crate) fn matmul(vtcm: &mut [u8], dst: &Tensor, a: &Tensor, b: &Tensor, accumulate: bool) -> Option<()> {
    let (m, k, n) = (a.shape[0] as usize, a.shape[1] as usize, b.shape[1] as usize);
    if a.dtype.is_float() {
        let (x, y) = (gather_f32(vtcm, a)?, gather_f32(vtcm, b)?);
        let beta = if accumulate { 1.0 } else { 0.0 };
        if let Some(c) = super::kernels::f32_view(vtcm, dst) {
            sgemm(m, k, n, &x, &y, beta, c);
            return Some(());
        }
        let mut c = if accumulate { gather_f32(vtcm, dst)? } else { vec![0.0; m * n] };
        sgemm(m, k, n, &x, &y, beta, &mut c);
        scatter_f32(vtcm, dst, &c)
    } else {
        let (x, y) = (gather_i32(vtcm, a)?, gather_i32(vtcm, b)?);
        let mut c = if accumulate { gather_i32(vtcm, dst)? } else { vec![0; m * n] };
        igemm(m, k, n, &x, &y, &mut c);
        scatter_i32(vtcm, dst, &c)
    }
}

/// Lays out the receptive fields of one group as columns: `[ci * kh * kw, ho * wo]`.
fn im2col<T: Copy + Default>(
    input: &[T],
    [ci0, ci_n]: [usize; 2],
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    [ho, wo]: [usize; 2],
    g: &ConvGeometry,
) -> Vec<T> {
    let (sh, sw) = (g.stride[0] as usize, g.stride[1] as usize);
    let (ph, pw) = (g.pad[0] as usize, g.pad[1] as usize);
    let (dh, dw) = (g.dilation[0] as usize, g.dilation[1] as usize);
    let mut cols = vec![T::default(); ci_n * kh * kw * ho * wo];
    let mut row = 0;
    for c in ci0..ci0 + ci_n {
        for ky in 0..kh {
            for kx in 0..kw {
                let out = &mut cols[row * ho * wo..(row + 1) * ho * wo];
                for oy in 0..ho {
                    let y = (oy * sh + ky * dh).wrapping_sub(ph);
                    if y >= h {
                        continue;
                    }
                    for ox in 0..wo {
                        let x = (ox * sw + kx * dw).wrapping_sub(pw);
                        if x < w {
                            out[oy * wo + ox] = input[(c * h + y) * w + x];
                        }
                    }
                }
                row += 1;
            }
        }
    }
    cols
}

pub(crate) fn conv2d(
    vtcm: &mut [u8],
    dst: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    g: &ConvGeometry,
    accumulate: bool,
) -> Option<()> {
    let [ci, h, w] = [input.shape[0], input.shape[1], input.shape[2]].map(|v| v as usize);
    let [co, _, kh, kw] = weight.shape.map(|v| v as usize);
    let [ho, wo] = [dst.shape[1] as usize, dst.shape[2] as usize];
    let groups = g.groups as usize;
    let (ci_g, co_g) = (ci / groups, co / groups);
    let k = ci_g * kh * kw;
    let plane = ho * wo;
    if input.dtype.is_float() {
        let (x, wt) = (gather_f32(vtcm, input)?, gather_f32(vtcm, weight)?);
        // A 1x1, stride-1, unpadded convolution is a plain matrix product: the input
        // planes already are the columns.
        let pointwise = kh == 1 && kw == 1 && g.stride == [1, 1] && g.pad == [0, 0] && (ho, wo) == (h, w);
        let beta = if accumulate { 1.0 } else { 0.0 };
        let run = |out: &mut [f32]| {
            for grp in 0..groups {
                let owned;
                let cols: &[f32] = if pointwise {
                    &x[grp * ci_g * plane..(grp + 1) * ci_g * plane]
                } else {
                    owned = im2col(&x, [grp * ci_g, ci_g], [h, w], [kh, kw], [ho, wo], g);
                    &owned
                };
                let wg = &wt[grp * co_g * k..(grp + 1) * co_g * k];
                sgemm(co_g, k, plane, wg, cols, beta, &mut out[grp * co_g * plane..(grp + 1) * co_g * plane]);
            }
        };
        // Straight into VTCM when the output is packed f32; otherwise through a buffer.
        if let Some(out) = super::kernels::f32_view(vtcm, dst) {
            run(out);
            return Some(());
        }
        let mut out = if accumulate { gather_f32(vtcm, dst)? } else { vec![0.0; co * plane] };
        run(&mut out);
        scatter_f32(vtcm, dst, &out)
    } else {
        let (x, wt) = (gather_i32(vtcm, input)?, gather_i32(vtcm, weight)?);
        let mut out = if accumulate { gather_i32(vtcm, dst)? } else { vec![0; co * plane] };
        for grp in 0..groups {
            let cols = im2col(&x, [grp * ci_g, ci_g], [h, w], [kh, kw], [ho, wo], g);
            let wg = &wt[grp * co_g * k..(grp + 1) * co_g * k];
            igemm(co_g, k, plane, wg, &cols, &mut out[grp * co_g * plane..(grp + 1) * co_g * plane]);
        }
        scatter_i32(vtcm, dst, &out)
    }
}
