//! HMX numerics: matrix multiply and 2-D convolution (as im2col + matrix multiply).
//!
//! Float tiles run through our AVX-512 product (`nsp::avx512`, no packing) when the CPU
//! has AVX-512F, else `matrixmultiply::sgemm`: packed aligned f32 operands are read
//! where they lie in VTCM, others are widened into f32 copies first (f16 widens
//! exactly; the result rounds once when it is written back, as an f32-accumulating HMX
//! would); int8 tiles accumulate in i32 exactly. A large convolution is cut by depth,
//! output pixels or output channels into pieces that [`crate::parallel`] spreads over two
//! threads, and im2col layouts are reused across the output-channel blocks of one input
//! tile (the simulator's functional speed; device time depends on none of it).
// Unsafe here: sgemm takes raw pointers, and the pieces of a split convolution write
// disjoint parts of one output.
#![allow(unsafe_code)]

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use super::kernels::{f32_range, gather_f32, gather_i32, scatter_f32, scatter_i32};
use crate::parallel;
use aicsim_abi::isa::{ConvGeometry, Tensor};

/// `c[m x n] = a[m x k] * b[k x n] + beta * c`, all packed row-major.
pub fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    assert!(c.len() >= m * n, "sgemm output too short");
    let (a, b) = (Mat { data: a, ld: k }, Mat { data: b, ld: n });
    sgemm_into(m, k, n, a, b, beta, Out { ptr: c.as_mut_ptr(), len: c.len() }, 0, n);
}

/// A row-major output matrix two threads write disjoint columns of.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    len: usize,
}

impl Out {
    /// Adds `values` element-wise (all of this output; no other thread writes it now).
    fn add(&self, values: &[f32]) {
        assert!(values.len() <= self.len, "output too short");
        // SAFETY: `values.len()` elements from `ptr` are inside the output (asserted),
        // which the caller holds exclusively now; `values` is a buffer of its own.
        let c = unsafe { core::slice::from_raw_parts_mut(self.ptr, values.len()) };
        c.iter_mut().zip(values).for_each(|(c, v)| *c += v);
    }

    /// Elements `start..start + len` of this output.
    fn part(&self, start: usize, len: usize) -> Out {
        assert!(start + len <= self.len, "output part out of range");
        Out { ptr: self.ptr.wrapping_add(start), len }
    }
}

// SAFETY: `Out` is only handed to `sgemm_into`, whose callers give each thread its own
// columns; the pointer is valid for `len` elements for as long as the split runs.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

/// A row-major operand: `data` with row stride `ld`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    ld: usize,
}

/// `c[m x n] = a[m x k] * b[k x n] + beta * c` where `c` is columns `col..col + n` of
/// `out`, whose row stride is `ldc`.
#[allow(clippy::too_many_arguments)]
fn sgemm_into(m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, out: Out, col: usize, ldc: usize) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, ld: usize, cols: usize| (rows - 1) * ld + cols;
    assert!(k == 0 || a.data.len() >= last(m, a.ld, k), "sgemm operand too short");
    assert!(k == 0 || b.data.len() >= last(k, b.ld, n), "sgemm operand too short");
    assert!(col + n <= ldc && out.len >= col + last(m, ldc, n), "sgemm output too short");
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if super::avx512::available() {
        // SAFETY: as below; and the CPU has AVX-512F (just checked).
        unsafe {
            let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
            super::avx512::sgemm(m, k, n, ap, a.ld, bp, b.ld, beta, out.ptr.add(col), ldc);
        }
        return;
    }
    // SAFETY: the asserts above make every index the strides reach lie inside `a`, `b`
    // and `out`; `out` does not alias `a` or `b` (it is VTCM the operands are not in, or
    // a buffer of its own), and no other thread writes columns `col..col + n` of it.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.ld as isize,
            1,
            b.data.as_ptr(),
            b.ld as isize,
            1,
            beta,
            out.ptr.add(col),
            ldc as isize,
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

/// An operand's values: borrowed from `bytes` (which start at VTCM offset `base`) when
/// they are packed aligned f32 there, gathered otherwise.
fn operand<'a>(bytes: &'a [u8], base: usize, t: &Tensor) -> Option<Cow<'a, [f32]>> {
    let mut local = *t;
    local.offset = t.offset.checked_sub(base as u64)?;
    let r = f32_range(bytes, &local)?;
    Some(Cow::Borrowed(bytemuck::cast_slice(&bytes[r])))
}

/// Runs `kernel(a, b, beta, c)` on the f32 values of an HMX op's operands and output.
/// Operands that are packed aligned f32 outside the output's bytes are borrowed from
/// VTCM, the rest gathered (widened) first; a packed aligned f32 output is written in
/// place, any other goes through a buffer.
fn with_f32<K>(vtcm: &mut [u8], dst: &Tensor, a: &Tensor, b: &Tensor, accumulate: bool, kernel: K) -> Option<()>
where
    K: FnOnce(&[f32], &[f32], f32, &mut [f32]),
{
    let beta = if accumulate { 1.0 } else { 0.0 };
    let Some(out) = f32_range(vtcm, dst) else {
        let whole = &*vtcm;
        let get = |t: &Tensor| operand(whole, 0, t).or_else(|| gather_f32(whole, t).map(Cow::Owned));
        let (x, y) = (get(a)?, get(b)?);
        let mut c = if accumulate { gather_f32(whole, dst)? } else { vec![0.0; usize::try_from(dst.elements()).ok()?] };
        kernel(&x, &y, beta, &mut c);
        drop((x, y));
        return scatter_f32(vtcm, dst, &c);
    };
    // What cannot be borrowed beside the output is gathered while VTCM is still whole.
    let gather = |t: &Tensor| match f32_range(vtcm, t) {
        Some(r) if r.end <= out.start || r.start >= out.end => Some(None),
        _ => gather_f32(vtcm, t).map(Some),
    };
    let (xo, yo) = (gather(a)?, gather(b)?);
    let (below, rest) = vtcm.split_at_mut(out.start);
    let (c, above) = rest.split_at_mut(out.end - out.start);
    let (below, above) = (&*below, &*above);
    let view = |t: &Tensor, owned: Option<Vec<f32>>| match owned {
        Some(v) => Some(Cow::Owned(v)),
        None => operand(below, 0, t).or_else(|| operand(above, out.end, t)),
    };
    let (x, y) = (view(a, xo)?, view(b, yo)?);
    kernel(&x, &y, beta, bytemuck::cast_slice_mut(c));
    Some(())
}

/// An integer operand's values with its quantisation offset taken off.
fn gather_offset(vtcm: &[u8], t: &Tensor, zero_point: i32) -> Option<Vec<i32>> {
    let mut x = gather_i32(vtcm, t)?;
    if zero_point != 0 {
        x.iter_mut().for_each(|v| *v -= zero_point);
    }
    Some(x)
}

pub(crate) fn matmul(
    vtcm: &mut [u8],
    dst: &Tensor,
    a: &Tensor,
    b: &Tensor,
    accumulate: bool,
    zero_point: i32,
) -> Option<()> {
    let (m, k, n) = (a.shape[0] as usize, a.shape[1] as usize, b.shape[1] as usize);
    if a.dtype.is_float() {
        return with_f32(vtcm, dst, a, b, accumulate, |x, y, beta, c| sgemm(m, k, n, x, y, beta, c));
    }
    let (x, y) = (gather_offset(vtcm, a, zero_point)?, gather_i32(vtcm, b)?);
    let mut c = if accumulate { gather_i32(vtcm, dst)? } else { vec![0; m * n] };
    igemm(m, k, n, &x, &y, &mut c);
    scatter_i32(vtcm, dst, &c)
}

/// Lays out the receptive fields of output rows `oy` of one group as columns:
/// `[ci * kh * kw, oy.len() * wo]`. Padding stays zero.
fn im2col<T: Copy + Default>(
    input: &[T],
    channels: [usize; 2],
    hw: [usize; 2],
    khw: [usize; 2],
    oy: Range<usize>,
    wo: usize,
    g: &ConvGeometry,
) -> Vec<T> {
    let mut cols = vec![T::default(); channels[1] * khw[0] * khw[1] * oy.len() * wo];
    im2col_into(input, channels, hw, khw, oy, wo, g, &mut cols);
    cols
}

/// [`im2col`] into `cols`, which is zero where padding falls.
#[allow(clippy::too_many_arguments)]
fn im2col_into<T: Copy>(
    input: &[T],
    [ci0, ci_n]: [usize; 2],
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    oy: Range<usize>,
    wo: usize,
    g: &ConvGeometry,
    cols: &mut [T],
) {
    let (sh, sw) = (g.stride[0] as usize, g.stride[1] as usize);
    let (ph, pw) = (g.pad[0] as usize, g.pad[1] as usize);
    let (dh, dw) = (g.dilation[0] as usize, g.dilation[1] as usize);
    let n = oy.len() * wo;
    let mut rows = cols.chunks_exact_mut(n.max(1));
    for c in ci0..ci0 + ci_n {
        let plane = &input[c * h * w..(c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let Some(out) = rows.next() else { return };
                // Output columns whose input column x = ox * sw + kx * dw - pw is inside.
                let off = kx * dw;
                let lo = if off >= pw { 0 } else { (pw - off).div_ceil(sw) }.min(wo);
                let hi = if w + pw > off { ((w + pw - off - 1) / sw + 1).min(wo) } else { 0 };
                if lo >= hi {
                    continue;
                }
                let x0 = lo * sw + off - pw;
                for (i, o) in oy.clone().enumerate() {
                    let y = (o * sh + ky * dh).wrapping_sub(ph);
                    if y >= h {
                        continue;
                    }
                    let src = &plane[y * w..(y + 1) * w];
                    let dst = &mut out[i * wo + lo..i * wo + hi];
                    if sw == 1 {
                        dst.copy_from_slice(&src[x0..x0 + (hi - lo)]);
                    } else {
                        dst.iter_mut().enumerate().for_each(|(j, d)| *d = src[x0 + j * sw]);
                    }
                }
            }
        }
    }
}

/// Work (multiply-adds) below which splitting a convolution across threads costs more
/// than it saves.
const SPLIT_MACS: usize = 1 << 18;

/// Pieces a split convolution is cut into: more would balance the two threads' shares
/// better (one may start late), but every piece reads (and matrixmultiply packs) its
/// operand again (measured: 3 or 4 pieces are slower than 2 on ResNet-50).
const PIECES: usize = 2;

/// Depth from which a split convolution's pieces each take half of the depth rather
/// than some channels or pixels: then each thread reads half of both operands, where the
/// other splits read one operand whole on both threads (measured on ResNet-50 with the
/// AVX-512 product: 100 ms per inference with the depth split, 109 without).
const SPLIT_DEPTH: usize = 512;

/// Elements of im2col's columns per piece when they are laid out on two threads.
const COLS_PIECE: usize = 16 << 10;

/// What an im2col layout of one group's input depends on besides the input's values.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Layout {
    hw: [usize; 2],
    khw: [usize; 2],
    out: [usize; 2],
    g: ConvGeometry,
}

/// The most recent im2col layouts, each with the input values it was made from. The
/// output-channel blocks of one layer are separate Conv2d ops over the same input tiles
/// (in VTCM buffers that alternate), and each would lay the columns out again. A layout
/// is reused only when its parameters are the same and the input's bytes compare equal,
/// so a hit is exactly what recomputing would give.
#[cfg(feature = "std")]
mod columns {
    extern crate std;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use std::sync::Mutex;

    use super::Layout;

    /// Layouts kept: every row block of a layer (ResNet-50's f32 tiles have up to
    /// eight) until the next output-channel block comes back to it, within
    /// [`KEPT_BYTES`] of columns and inputs together.
    const KEPT: usize = 16;
    const KEPT_BYTES: usize = 64 << 20;

    struct Entry {
        layout: Layout,
        input: Vec<f32>,
        cols: Arc<Vec<f32>>,
    }

    static RECENT: Mutex<Vec<Arc<Entry>>> = Mutex::new(Vec::new());

    fn bytes(v: &[f32]) -> &[u8] {
        bytemuck::cast_slice(v)
    }

    /// The columns of `input` laid out as `layout` says: a kept layout of equal input,
    /// or `make()` (then kept).
    pub(super) fn get(input: &[f32], layout: Layout, make: impl FnOnce() -> Vec<f32>) -> Arc<Vec<f32>> {
        let candidates: Vec<Arc<Entry>> = {
            let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
            recent.iter().filter(|e| e.layout == layout).cloned().collect()
        };
        // Compared outside the lock (the other thread may be looking too), as bytes: a
        // NaN is the same NaN.
        if let Some(hit) = candidates.into_iter().find(|e| bytes(&e.input) == bytes(input)) {
            return hit.cols.clone();
        }
        let cols = Arc::new(make());
        let entry = Arc::new(Entry { layout, input: input.to_vec(), cols: cols.clone() });
        let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
        recent.insert(0, entry);
        recent.truncate(KEPT);
        let size = |e: &Entry| (e.input.len() + e.cols.len()) * 4;
        while recent.len() > 1 && recent.iter().map(|e| size(e)).sum::<usize>() > KEPT_BYTES {
            recent.pop();
        }
        cols
    }
}

/// Without std there is no cache: every layout is made.
#[cfg(not(feature = "std"))]
mod columns {
    use alloc::vec::Vec;

    pub(super) fn get(_: &[f32], _: super::Layout, make: impl FnOnce() -> Vec<f32>) -> Vec<f32> {
        make()
    }
}

pub(crate) fn conv2d(
    vtcm: &mut [u8],
    dst: &Tensor,
    input: &Tensor,
    weight: &Tensor,
    g: &ConvGeometry,
    accumulate: bool,
    zero_point: i32,
) -> Option<()> {
    let [ci, h, w] = [input.shape[0], input.shape[1], input.shape[2]].map(|v| v as usize);
    let [co, _, kh, kw] = weight.shape.map(|v| v as usize);
    let [ho, wo] = [dst.shape[1] as usize, dst.shape[2] as usize];
    let groups = g.groups as usize;
    let (ci_g, co_g) = (ci / groups, co / groups);
    let k = ci_g * kh * kw;
    let plane = ho * wo;
    if input.dtype.is_float() {
        // A 1x1, stride-1, unpadded convolution is a plain matrix product: the input
        // planes already are the columns.
        let pointwise = kh == 1 && kw == 1 && g.stride == [1, 1] && g.pad == [0, 0] && (ho, wo) == (h, w);
        return with_f32(vtcm, dst, input, weight, accumulate, |x, wt, beta, out| {
            let out_all = Out { ptr: out.as_mut_ptr(), len: out.len() };
            for grp in 0..groups {
                let wg = &wt[grp * co_g * k..(grp + 1) * co_g * k];
                let og = out_all.part(grp * co_g * plane, co_g * plane);
                let big = co_g * k * plane >= SPLIT_MACS;
                // The columns `[k, plane]`: the input planes themselves for a pointwise
                // convolution, else laid out by im2col (on both threads, a few input
                // channels per piece), or found among the recent layouts.
                let x_g = &x[grp * ci_g * h * w..(grp + 1) * ci_g * h * w];
                let owned;
                let b: &[f32] = if pointwise {
                    x_g
                } else {
                    owned = columns::get(x_g, Layout { hw: [h, w], khw: [kh, kw], out: [ho, wo], g: *g }, || {
                        let mut cols = vec![0.0; k * plane];
                        let per = (COLS_PIECE / (kh * kw * plane).max(1)).max(1);
                        parallel::for_each_chunk_mut(&mut cols, per * kh * kw * plane, &|i, part| {
                            let channels = [i * per, part.len() / (kh * kw * plane)];
                            im2col_into(x_g, channels, [h, w], [kh, kw], 0..ho, wo, g, part);
                        });
                        cols
                    });
                    &owned
                };
                let (wm, bm) = (Mat { data: wg, ld: k }, Mat { data: b, ld: plane });
                if !big {
                    sgemm_into(co_g, k, plane, wm, bm, beta, og, 0, plane);
                } else if k >= SPLIT_DEPTH {
                    // Deep: each piece takes half of the depth (and half of each
                    // operand); the second half's products are added after.
                    // The order of the sums is fixed, so the result is deterministic.
                    let k0 = (k / 2).next_multiple_of(8);
                    let mut second = vec![0.0f32; co_g * plane];
                    let tail = Out { ptr: second.as_mut_ptr(), len: second.len() };
                    parallel::for_each(2, &|i| {
                        if i == 0 {
                            sgemm_into(co_g, k0, plane, wm, bm, beta, og, 0, plane);
                        } else {
                            let a = Mat { data: &wg[k0..], ld: k };
                            let b = Mat { data: &b[k0 * plane..], ld: plane };
                            sgemm_into(co_g, k - k0, plane, a, b, 0.0, tail, 0, plane);
                        }
                    });
                    og.add(&second);
                } else if co_g >= 32 && co_g > plane {
                    // More output channels than pixels: each piece takes some channels
                    // (and reads all the columns).
                    let per = co_g.div_ceil(PIECES).next_multiple_of(16);
                    parallel::for_each(co_g.div_ceil(per), &|i| {
                        let c = i * per..((i + 1) * per).min(co_g);
                        let out = og.part(c.start * plane, c.len() * plane);
                        let a = Mat { data: &wg[c.start * k..c.end * k], ld: k };
                        sgemm_into(c.len(), k, plane, a, bm, beta, out, 0, plane);
                    });
                } else {
                    // Each piece takes some columns (and reads all the weights).
                    let per = plane.div_ceil(PIECES).next_multiple_of(16);
                    parallel::for_each(plane.div_ceil(per), &|i| {
                        let n = i * per..((i + 1) * per).min(plane);
                        let b = Mat { data: &b[n.start..], ld: plane };
                        sgemm_into(co_g, k, n.len(), wm, b, beta, og, n.start, plane);
                    });
                }
            }
        });
    }
    let (x, wt) = (gather_offset(vtcm, input, zero_point)?, gather_i32(vtcm, weight)?);
    let mut out = if accumulate { gather_i32(vtcm, dst)? } else { vec![0; co * plane] };
    for grp in 0..groups {
        let cols = im2col(&x, [grp * ci_g, ci_g], [h, w], [kh, kw], 0..ho, wo, g);
        let wg = &wt[grp * co_g * k..(grp + 1) * co_g * k];
        igemm(co_g, k, plane, wg, &cols, &mut out[grp * co_g * plane..(grp + 1) * co_g * plane]);
    }
    scatter_i32(vtcm, dst, &out)
}
