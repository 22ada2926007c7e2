//! HMX numerics: matrix multiply and 2-D convolution (as im2col + matrix multiply).
//!
//! Float tiles run through `matrixmultiply::sgemm`: packed aligned f32 operands are
//! read where they lie in VTCM, others are widened into f32 copies first (f16 widens
//! exactly; the result rounds once when it is written back, as an f32-accumulating HMX
//! would); int8 tiles accumulate in i32 exactly. With the `std` feature a large
//! convolution is split by output rows or output channels between the calling thread
//! and one helper thread (the simulator's functional speed; device time does not depend
//! on it).
// The one place the device crate needs unsafe: sgemm takes raw pointers, and the two
// halves of a split convolution write disjoint columns of one output.
#![allow(unsafe_code)]

use alloc::borrow::Cow;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use super::kernels::{f32_range, gather_f32, gather_i32, scatter_f32, scatter_i32};
use crate::isa::{ConvGeometry, Tensor};

/// `c[m x n] = a[m x k] * b[k x n] + beta * c`, all packed row-major.
pub fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    assert!(c.len() >= m * n, "sgemm output too short");
    sgemm_into(m, k, n, a, b, n, beta, Out { ptr: c.as_mut_ptr(), len: c.len() }, 0, n);
}

/// A row-major output matrix two threads write disjoint columns of.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `Out` is only handed to `sgemm_into`, whose callers give each thread its own
// columns; the pointer is valid for `len` elements for as long as the split runs.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

/// `c[m x n] = a[m x k] * b[k x n] + beta * c` where `b` has row stride `ldb` and `c`
/// is columns `col..col + n` of `out`, whose row stride is `ldc`.
#[allow(clippy::too_many_arguments)]
fn sgemm_into(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
    beta: f32,
    out: Out,
    col: usize,
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, ld: usize, cols: usize| (rows - 1) * ld + cols;
    assert!(a.len() >= m * k, "sgemm operand too short");
    assert!(k == 0 || b.len() >= last(k, ldb, n), "sgemm operand too short");
    assert!(col + n <= ldc && out.len >= col + last(m, ldc, n), "sgemm output too short");
    // SAFETY: the asserts above make every index the strides reach lie inside `a`, `b`
    // and `out`; `out` does not alias `a` or `b` (it is VTCM the operands are not in, or
    // a buffer of its own), and no other thread writes columns `col..col + n` of it.
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
            ldb as isize,
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

pub(crate) fn matmul(vtcm: &mut [u8], dst: &Tensor, a: &Tensor, b: &Tensor, accumulate: bool) -> Option<()> {
    let (m, k, n) = (a.shape[0] as usize, a.shape[1] as usize, b.shape[1] as usize);
    if a.dtype.is_float() {
        return with_f32(vtcm, dst, a, b, accumulate, |x, y, beta, c| sgemm(m, k, n, x, y, beta, c));
    }
    let (x, y) = (gather_i32(vtcm, a)?, gather_i32(vtcm, b)?);
    let mut c = if accumulate { gather_i32(vtcm, dst)? } else { vec![0; m * n] };
    igemm(m, k, n, &x, &y, &mut c);
    scatter_i32(vtcm, dst, &c)
}

/// Lays out the receptive fields of output rows `oy` of one group as columns:
/// `[ci * kh * kw, oy.len() * wo]`. Padding stays zero.
fn im2col<T: Copy + Default>(
    input: &[T],
    [ci0, ci_n]: [usize; 2],
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    oy: Range<usize>,
    wo: usize,
    g: &ConvGeometry,
) -> Vec<T> {
    let (sh, sw) = (g.stride[0] as usize, g.stride[1] as usize);
    let (ph, pw) = (g.pad[0] as usize, g.pad[1] as usize);
    let (dh, dw) = (g.dilation[0] as usize, g.dilation[1] as usize);
    let n = oy.len() * wo;
    let mut cols = vec![T::default(); ci_n * kh * kw * n];
    let mut rows = cols.chunks_exact_mut(n.max(1));
    for c in ci0..ci0 + ci_n {
        let plane = &input[c * h * w..(c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let Some(out) = rows.next() else { return cols };
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
    cols
}

/// Work (multiply-adds) below which splitting a convolution across threads costs more
/// than it saves.
const SPLIT_MACS: usize = 1 << 18;

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
        // A 1x1, stride-1, unpadded convolution is a plain matrix product: the input
        // planes already are the columns.
        let pointwise = kh == 1 && kw == 1 && g.stride == [1, 1] && g.pad == [0, 0] && (ho, wo) == (h, w);
        return with_f32(vtcm, dst, input, weight, accumulate, |x, wt, beta, out| {
            let out_all = Out { ptr: out.as_mut_ptr(), len: out.len() };
            for grp in 0..groups {
                let wg = &wt[grp * co_g * k..(grp + 1) * co_g * k];
                assert!(out_all.len >= (grp + 1) * co_g * plane, "conv output too short");
                let og = Out { ptr: out_all.ptr.wrapping_add(grp * co_g * plane), len: co_g * plane };
                let big = co_g * k * plane >= SPLIT_MACS;
                // Both halves pack their whole share of the weights and of the columns.
                // Splitting output rows repeats the weights' packing (co_g x k) but also
                // halves im2col; splitting output channels repeats the columns' packing
                // (k x plane, and im2col runs before the split).
                let im2col_cost = if pointwise { 1 } else { 2 };
                if big && co_g >= 32 && co_g > im2col_cost * plane {
                    // The columns, `[k, plane]` either way.
                    let owned;
                    let b: &[f32] = if pointwise {
                        &x[grp * ci_g * plane..]
                    } else {
                        owned = im2col(x, [grp * ci_g, ci_g], [h, w], [kh, kw], 0..ho, wo, g);
                        &owned
                    };
                    let mid = co_g / 2;
                    let low = Out { ptr: og.ptr, len: mid * plane };
                    let high = Out { ptr: og.ptr.wrapping_add(mid * plane), len: (co_g - mid) * plane };
                    join(
                        || sgemm_into(mid, k, plane, &wg[..mid * k], b, plane, beta, low, 0, plane),
                        || sgemm_into(co_g - mid, k, plane, &wg[mid * k..], b, plane, beta, high, 0, plane),
                    );
                    continue;
                }
                // Output rows `rows` of this group: columns rows.start * wo.. of `og`.
                let part = |rows: Range<usize>| {
                    let n = rows.len() * wo;
                    if pointwise {
                        let b = &x[grp * ci_g * plane + rows.start * wo..];
                        sgemm_into(co_g, k, n, wg, b, plane, beta, og, rows.start * wo, plane);
                    } else {
                        let cols = im2col(x, [grp * ci_g, ci_g], [h, w], [kh, kw], rows.clone(), wo, g);
                        sgemm_into(co_g, k, n, wg, &cols, n, beta, og, rows.start * wo, plane);
                    }
                };
                if big && ho >= 2 {
                    let mid = ho / 2;
                    join(|| part(0..mid), || part(mid..ho));
                } else {
                    part(0..ho);
                }
            }
        });
    }
    let (x, wt) = (gather_i32(vtcm, input)?, gather_i32(vtcm, weight)?);
    let mut out = if accumulate { gather_i32(vtcm, dst)? } else { vec![0; co * plane] };
    for grp in 0..groups {
        let cols = im2col(&x, [grp * ci_g, ci_g], [h, w], [kh, kw], 0..ho, wo, g);
        let wg = &wt[grp * co_g * k..(grp + 1) * co_g * k];
        igemm(co_g, k, plane, wg, &cols, &mut out[grp * co_g * plane..(grp + 1) * co_g * plane]);
    }
    scatter_i32(vtcm, dst, &out)
}

/// Runs `a` here and `b` on the helper thread, and returns when both have finished.
#[cfg(feature = "std")]
fn join<A: FnOnce(), B: FnOnce() + Send>(a: A, b: B) {
    helper::join(a, b)
}

/// Without threads both halves run here.
#[cfg(not(feature = "std"))]
fn join<A: FnOnce(), B: FnOnce()>(a: A, b: B) {
    a();
    b();
}

/// One persistent helper thread per process for the second half of split kernels. A
/// caller that finds it busy (another device's thread is using it) runs both halves
/// itself. Both sides spin briefly before sleeping: split kernels come every few tens
/// of microseconds, and waking a sleeping thread can take longer than that (notably on
/// virtual machines).
#[cfg(feature = "std")]
mod helper {
    extern crate std;
    use alloc::boxed::Box;
    use core::sync::atomic::{AtomicBool, Ordering};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
    use std::time::{Duration, Instant};

    type Job = Box<dyn FnOnce() + Send + 'static>;

    /// How long either side spins before it sleeps.
    const SPIN: Duration = Duration::from_millis(2);

    #[derive(Default)]
    struct Slot {
        job: Option<Job>,
        done: bool,
        panicked: bool,
    }

    #[derive(Default)]
    struct Helper {
        slot: Mutex<Slot>,
        changed: Condvar,
        /// A job is waiting in the slot.
        posted: AtomicBool,
        /// The last job has finished.
        finished: AtomicBool,
        /// Held by the caller whose job the helper runs.
        owner: Mutex<()>,
    }

    /// Spins until `flag` is set or [`SPIN`] has passed; whether it was set.
    fn spin_until(flag: &AtomicBool) -> bool {
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if flag.load(Ordering::Acquire) {
                    return true;
                }
                core::hint::spin_loop();
            }
            if start.elapsed() > SPIN {
                return false;
            }
        }
    }

    impl Helper {
        fn slot(&self) -> MutexGuard<'_, Slot> {
            self.slot.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn wait<'a>(&self, s: MutexGuard<'a, Slot>) -> MutexGuard<'a, Slot> {
            self.changed.wait(s).unwrap_or_else(|e| e.into_inner())
        }

        fn serve(&self) {
            loop {
                spin_until(&self.posted);
                let job = {
                    let mut s = self.slot();
                    loop {
                        if let Some(job) = s.job.take() {
                            break job;
                        }
                        s = self.wait(s);
                    }
                };
                self.posted.store(false, Ordering::Relaxed);
                let panicked = catch_unwind(AssertUnwindSafe(job)).is_err();
                {
                    let mut s = self.slot();
                    s.done = true;
                    s.panicked = panicked;
                }
                self.finished.store(true, Ordering::Release);
                self.changed.notify_all();
            }
        }
    }

    fn helper() -> Option<&'static Helper> {
        static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
        *HELPER.get_or_init(|| {
            if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
                return None;
            }
            let h: &'static Helper = Box::leak(Box::default());
            std::thread::Builder::new().name("aicsim-hmx".into()).spawn(move || h.serve()).ok()?;
            Some(h)
        })
    }

    /// Waits for the helper to finish the job it was given.
    struct Finish(&'static Helper);

    impl Drop for Finish {
        fn drop(&mut self) {
            spin_until(&self.0.finished);
            let mut s = self.0.slot();
            while !s.done {
                s = self.0.wait(s);
            }
        }
    }

    pub(super) fn join<A: FnOnce(), B: FnOnce() + Send>(a: A, b: B) {
        let Some(h) = helper() else {
            a();
            b();
            return;
        };
        let Ok(_owner) = h.owner.try_lock() else {
            a();
            b();
            return;
        };
        let job: Box<dyn FnOnce() + Send + '_> = Box::new(b);
        // SAFETY: only the lifetime changes. The job borrows from this frame, and
        // `Finish` (dropped before this frame is left, by return or by unwinding) waits
        // until the helper has run it to the end.
        let job: Job = unsafe { core::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
        {
            let mut s = h.slot();
            s.done = false;
            s.panicked = false;
            s.job = Some(job);
        }
        h.finished.store(false, Ordering::Relaxed);
        h.posted.store(true, Ordering::Release);
        h.changed.notify_all();
        let finish = Finish(h);
        a();
        drop(finish);
        assert!(!h.slot().panicked, "the helper thread's half of a split kernel panicked");
    }
}
