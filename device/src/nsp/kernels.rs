//! Functional kernels: the real numerics of every compute op, on a core's VTCM.
//!
//! Operands are gathered into packed f32 (or i32) arrays in logical row-major order —
//! which makes strides, broadcasting and layout changes free — computed, and scattered
//! into the destination with its dtype's rounding (f16: round to nearest even; integer
//! conversions saturate). Every access is bounds-checked; a failure is `None`, which
//! load-time validation makes unreachable.

use alloc::vec;
use alloc::vec::Vec;
use half::f16;

use aicsim_abi::isa::{BinaryKind, DType, Op, PoolKind, PoolWindow, ReduceKind, Tensor, UnaryKind};

/// Byte offsets of every element of `t` in logical row-major order.
pub(crate) fn element_offsets(t: &Tensor) -> impl Iterator<Item = u64> + '_ {
    let rank = t.rank as usize;
    let total = t.elements();
    let bytes = t.dtype.bytes();
    let mut index = [0u32; 4];
    let mut produced = 0u64;
    core::iter::from_fn(move || {
        if produced == total {
            return None;
        }
        let elem: u64 = index[..rank].iter().zip(&t.strides).map(|(&i, &s)| u64::from(i) * u64::from(s)).sum();
        produced += 1;
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < t.shape[d] {
                break;
            }
            index[d] = 0;
        }
        Some(t.offset + elem * bytes)
    })
}

fn bytes_at<const N: usize>(mem: &[u8], at: u64) -> Option<[u8; N]> {
    let at = usize::try_from(at).ok()?;
    mem.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn put(mem: &mut [u8], at: u64, value: &[u8]) -> Option<()> {
    let at = usize::try_from(at).ok()?;
    mem.get_mut(at..at.checked_add(value.len())?)?.copy_from_slice(value);
    Some(())
}

/// The values of `t` as f32, in logical order.
pub(crate) fn gather_f32(mem: &[u8], t: &Tensor) -> Option<Vec<f32>> {
    if t.dtype == DType::F32 && t.is_contiguous() {
        let start = usize::try_from(t.offset).ok()?;
        let raw = mem.get(start..start.checked_add(usize::try_from(t.packed_bytes()).ok()?)?)?;
        // Little-endian host (checked at compile time): an aligned view is a memcpy.
        return Some(match bytemuck::try_cast_slice::<u8, f32>(raw) {
            Ok(values) => values.to_vec(),
            Err(_) => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        });
    }
    let mut out = Vec::with_capacity(usize::try_from(t.elements()).ok()?);
    gather_dim(mem, t, 0, t.offset, &mut out)?;
    Some(out)
}

fn load_f32(mem: &[u8], dtype: DType, at: u64) -> Option<f32> {
    match dtype {
        DType::F32 => bytes_at::<4>(mem, at).map(f32::from_le_bytes),
        DType::F16 => bytes_at::<2>(mem, at).map(|b| f16::from_le_bytes(b).to_f32()),
        DType::I8 => bytes_at::<1>(mem, at).map(|b| f32::from(b[0] as i8)),
        DType::U8 => bytes_at::<1>(mem, at).map(|b| f32::from(b[0])),
        DType::I16 => bytes_at::<2>(mem, at).map(|b| f32::from(i16::from_le_bytes(b))),
        DType::I32 => bytes_at::<4>(mem, at).map(|b| i32::from_le_bytes(b) as f32),
    }
}

/// Appends the values of dimensions `dim..` of `t` starting at byte `at`: a broadcast
/// (stride 0) dimension is gathered once and repeated; a contiguous f32 row is one copy.
fn gather_dim(mem: &[u8], t: &Tensor, dim: usize, at: u64, out: &mut Vec<f32>) -> Option<()> {
    let rank = t.rank as usize;
    let (n, stride) = (t.shape[dim] as usize, u64::from(t.strides[dim]) * t.dtype.bytes());
    if n == 0 {
        return Some(());
    }
    if dim + 1 == rank {
        if stride == 0 {
            let v = load_f32(mem, t.dtype, at)?;
            out.extend(core::iter::repeat_n(v, n));
        } else if t.dtype == DType::F32 && stride == 4 {
            let start = usize::try_from(at).ok()?;
            let raw = mem.get(start..start.checked_add(n * 4)?)?;
            out.extend(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        } else {
            for i in 0..n as u64 {
                out.push(load_f32(mem, t.dtype, at + i * stride)?);
            }
        }
        return Some(());
    }
    if stride == 0 {
        let from = out.len();
        gather_dim(mem, t, dim + 1, at, out)?;
        let to = out.len();
        for _ in 1..n {
            out.extend_from_within(from..to);
        }
        return Some(());
    }
    for i in 0..n as u64 {
        gather_dim(mem, t, dim + 1, at + i * stride, out)?;
    }
    Some(())
}

/// The values of an integer `t` as i32, in logical order.
pub(crate) fn gather_i32(mem: &[u8], t: &Tensor) -> Option<Vec<i32>> {
    element_offsets(t)
        .map(|at| match t.dtype {
            DType::I8 => bytes_at::<1>(mem, at).map(|b| i32::from(b[0] as i8)),
            DType::U8 => bytes_at::<1>(mem, at).map(|b| i32::from(b[0])),
            DType::I16 => bytes_at::<2>(mem, at).map(|b| i32::from(i16::from_le_bytes(b))),
            DType::I32 => bytes_at::<4>(mem, at).map(i32::from_le_bytes),
            DType::F32 | DType::F16 => None,
        })
        .collect()
}

/// Writes f32 values into a float `t` (rounding to f16 where needed).
pub(crate) fn scatter_f32(mem: &mut [u8], t: &Tensor, values: &[f32]) -> Option<()> {
    if values.len() as u64 != t.elements() {
        return None;
    }
    if t.dtype == DType::F32 && t.is_contiguous() {
        let start = usize::try_from(t.offset).ok()?;
        let raw = mem.get_mut(start..start.checked_add(values.len() * 4)?)?;
        raw.copy_from_slice(bytemuck::cast_slice(values));
        return Some(());
    }
    for (at, &v) in element_offsets(t).zip(values) {
        match t.dtype {
            DType::F32 => put(mem, at, &v.to_le_bytes())?,
            DType::F16 => put(mem, at, &f16::from_f32(v).to_le_bytes())?,
            _ => return None,
        }
    }
    Some(())
}

/// Writes i32 values into an integer `t`, saturating to its range.
pub(crate) fn scatter_i32(mem: &mut [u8], t: &Tensor, values: &[i32]) -> Option<()> {
    if values.len() as u64 != t.elements() {
        return None;
    }
    for (at, &v) in element_offsets(t).zip(values) {
        match t.dtype {
            DType::I8 => put(mem, at, &[v.clamp(-128, 127) as i8 as u8])?,
            DType::U8 => put(mem, at, &[v.clamp(0, 255) as u8])?,
            DType::I16 => put(mem, at, &(v.clamp(-32768, 32767) as i16).to_le_bytes())?,
            DType::I32 => put(mem, at, &v.to_le_bytes())?,
            DType::F32 | DType::F16 => return None,
        }
    }
    Some(())
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
}

// Inlined so that a loop over a constant kind compiles to that kind's code alone.
#[inline(always)]
pub(crate) fn unary(kind: UnaryKind, x: f32) -> f32 {
    match kind {
        UnaryKind::Relu => x.max(0.0),
        UnaryKind::Clip { min, max } => x.max(min).min(max),
        UnaryKind::Sigmoid => sigmoid(x),
        UnaryKind::Tanh => libm::tanhf(x),
        UnaryKind::Gelu => gelu(x),
        UnaryKind::Exp => libm::expf(x),
        UnaryKind::Erf => libm::erff(x),
        UnaryKind::Sqrt => libm::sqrtf(x),
        UnaryKind::Reciprocal => 1.0 / x,
        UnaryKind::Copy => x,
        UnaryKind::Pow { exponent } => libm::powf(x, exponent),
        UnaryKind::Affine { scale, shift } => x * scale + shift,
    }
}

#[inline(always)]
pub(crate) fn binary_f32(kind: BinaryKind, a: f32, b: f32) -> f32 {
    match kind {
        BinaryKind::Add => a + b,
        BinaryKind::Sub => a - b,
        BinaryKind::Mul => a * b,
        BinaryKind::Div => a / b,
        BinaryKind::Max => a.max(b),
        BinaryKind::Min => a.min(b),
        BinaryKind::Less => f32::from(u8::from(a < b)),
        BinaryKind::LessOrEqual => f32::from(u8::from(a <= b)),
        BinaryKind::Equal => f32::from(u8::from(a == b)),
    }
}

pub(crate) fn binary_i32(kind: BinaryKind, a: i32, b: i32) -> i32 {
    match kind {
        BinaryKind::Add => a.wrapping_add(b),
        BinaryKind::Sub => a.wrapping_sub(b),
        BinaryKind::Mul => a.wrapping_mul(b),
        BinaryKind::Max => a.max(b),
        BinaryKind::Min => a.min(b),
        BinaryKind::Less => i32::from(a < b),
        BinaryKind::LessOrEqual => i32::from(a <= b),
        BinaryKind::Equal => i32::from(a == b),
        // Validation rejects integer division.
        BinaryKind::Div => 0,
    }
}

/// The conversion rule of [`Op::Convert`] for one value.
pub(crate) fn convert_to_int(x: f32, scale: f32, zero_point: i32) -> i32 {
    // (Saturating: an infinite quotient, from a zero per-element scale, stays at the
    // range's end.)
    let q = (libm::rintf(x / scale) as i64).saturating_add(i64::from(zero_point));
    q.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// i32 -> narrow integer: `round_half_even(x * scale) + zero_point`.
pub(crate) fn requantize(x: i32, scale: f32, zero_point: i32) -> i32 {
    let q = (libm::rintf(x as f32 * scale) as i64).saturating_add(i64::from(zero_point));
    q.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `scales`: each element's own scale (the instruction's scale times its scales operand).
fn convert(
    mem: &mut [u8],
    dst: &Tensor,
    src: &Tensor,
    scale: f32,
    zero_point: i32,
    scales: Option<&[f32]>,
) -> Option<()> {
    let s = |i: usize| scales.map_or(scale, |s| s[i]);
    match (src.dtype.is_float(), dst.dtype.is_float()) {
        (true, true) => scatter_f32(mem, dst, &gather_f32(mem, src)?),
        (true, false) => {
            let x = gather_f32(mem, src)?;
            let q: Vec<i32> = x.iter().enumerate().map(|(i, &x)| convert_to_int(x, s(i), zero_point)).collect();
            scatter_i32(mem, dst, &q)
        }
        (false, true) => {
            let q = gather_i32(mem, src)?;
            let x: Vec<f32> = q.iter().enumerate().map(|(i, &q)| (q.wrapping_sub(zero_point)) as f32 * s(i)).collect();
            scatter_f32(mem, dst, &x)
        }
        (false, false) => {
            let values = gather_i32(mem, src)?;
            let q: Vec<i32> = if src.dtype == DType::I32 && dst.dtype != DType::I32 {
                values.iter().enumerate().map(|(i, &v)| requantize(v, s(i), zero_point)).collect()
            } else {
                values
            };
            scatter_i32(mem, dst, &q)
        }
    }
}

fn pool(kind: PoolKind, window: &PoolWindow, src: &[f32], [c, h, w]: [usize; 3], [ho, wo]: [usize; 2]) -> Vec<f32> {
    let [kh, kw] = window.kernel.map(|v| v as usize);
    let [sh, sw] = window.stride.map(|v| v as usize);
    let [ph, pw] = window.pad.map(|v| v as usize);
    let mut out = Vec::with_capacity(c * ho * wo);
    for ch in 0..c {
        for oy in 0..ho {
            for ox in 0..wo {
                let (mut acc, mut count) = (if kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 }, 0usize);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let (y, x) = ((oy * sh + ky).wrapping_sub(ph), (ox * sw + kx).wrapping_sub(pw));
                        if y < h && x < w {
                            let v = src[(ch * h + y) * w + x];
                            acc = if kind == PoolKind::Max { acc.max(v) } else { acc + v };
                            count += 1;
                        }
                    }
                }
                out.push(match kind {
                    _ if count == 0 => 0.0,
                    PoolKind::Max => acc,
                    PoolKind::Avg => acc / count as f32,
                    PoolKind::AvgIncludePad => acc / (kh * kw) as f32,
                });
            }
        }
    }
    out
}

fn rows(values: &mut [f32], row: usize, f: impl Fn(&mut [f32])) {
    if row > 0 {
        values.chunks_exact_mut(row).for_each(f);
    }
}

/// Whether `t` is a packed, 4-byte-aligned f32 tensor that can be worked on in place.
fn in_place(t: &Tensor) -> bool {
    t.dtype == DType::F32 && t.is_contiguous() && t.offset.is_multiple_of(4)
}

/// Byte range of `t` in `vtcm` if it is packed f32 at a 4-byte-aligned address.
pub(crate) fn f32_range(vtcm: &[u8], t: &Tensor) -> Option<core::ops::Range<usize>> {
    let start = usize::try_from(t.offset).ok()?;
    let end = start.checked_add(usize::try_from(t.packed_bytes()).ok()?)?;
    let aligned = (vtcm.as_ptr() as usize).wrapping_add(start) % 4 == 0;
    (t.dtype == DType::F32 && t.is_contiguous() && aligned && end <= vtcm.len()).then_some(start..end)
}

/// A packed aligned f32 tensor as a mutable slice of VTCM.
fn f32_slice<'a>(vtcm: &'a mut [u8], t: &Tensor) -> Option<&'a mut [f32]> {
    let r = f32_range(vtcm, t)?;
    Some(bytemuck::cast_slice_mut(&mut vtcm[r]))
}

/// Elements per piece of an element-wise op spread over two threads.
const PIECE: usize = 8 << 10;

/// `f(i, piece)` for the pieces of `values` of `piece` elements: on two threads
/// ([`crate::parallel`]) when there are at least two.
fn for_pieces(values: &mut [f32], piece: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    if values.len() >= 2 * piece {
        crate::parallel::for_each_chunk_mut(values, piece, f);
    } else {
        f(0, values);
    }
}

/// The packed aligned f32 tensors `dst` (mutable) and `src` of `vtcm`, if their bytes
/// do not overlap.
fn apart<'a>(vtcm: &'a mut [u8], dst: &Tensor, src: &Tensor) -> Option<(&'a mut [u8], &'a [u8])> {
    let (d, s) = (f32_range(vtcm, dst)?, f32_range(vtcm, src)?);
    if s.end <= d.start {
        let (low, high) = vtcm.split_at_mut(d.start);
        Some((&mut high[..d.len()], &low[s]))
    } else if s.start >= d.end {
        let (low, high) = vtcm.split_at_mut(s.start);
        Some((&mut low[d], &high[..s.len()]))
    } else {
        None
    }
}

/// `acc[j] = acc[j] op ys[j / inner]`. Each kind gets its own loop, so the cheap ones
/// are vectorised.
fn binary_in_place(kind: BinaryKind, acc: &mut [f32], ys: &[f32], inner: usize) {
    fn apply(acc: &mut [f32], ys: &[f32], inner: usize, op: impl Fn(f32, f32) -> f32) {
        if inner == 1 {
            acc.iter_mut().zip(ys).for_each(|(x, &y)| *x = op(*x, y));
        } else {
            for (block, &y) in acc.chunks_exact_mut(inner).zip(ys) {
                block.iter_mut().for_each(|x| *x = op(*x, y));
            }
        }
    }
    match kind {
        BinaryKind::Add => apply(acc, ys, inner, |x, y| binary_f32(BinaryKind::Add, x, y)),
        BinaryKind::Mul => apply(acc, ys, inner, |x, y| binary_f32(BinaryKind::Mul, x, y)),
        other => apply(acc, ys, inner, |x, y| binary_f32(other, x, y)),
    }
}

/// `xs[j] = op(xs[j])`, vectorised for the cheap kinds as [`binary_in_place`] is.
fn unary_in_place(kind: UnaryKind, xs: &mut [f32]) {
    fn apply(xs: &mut [f32], op: impl Fn(f32) -> f32) {
        xs.iter_mut().for_each(|x| *x = op(*x));
    }
    match kind {
        UnaryKind::Relu => apply(xs, |x| unary(UnaryKind::Relu, x)),
        UnaryKind::Clip { min, max } => apply(xs, |x| unary(UnaryKind::Clip { min, max }, x)),
        other => apply(xs, |x| unary(other, x)),
    }
}

/// Runs one compute op (anything but DMA, sync and End) on `vtcm`.
pub fn compute(vtcm: &mut [u8], op: &Op) -> Option<()> {
    match *op {
        Op::Binary { kind, dst, a, b } if dst.dtype == DType::I32 => {
            let (x, y) = (gather_i32(vtcm, &a)?, gather_i32(vtcm, &b)?);
            let out: Vec<i32> = x.iter().zip(&y).map(|(&x, &y)| binary_i32(kind, x, y)).collect();
            scatter_i32(vtcm, &dst, &out)
        }
        Op::Binary { kind, dst, a, b } if dst == a && in_place(&dst) => {
            // The common fused form `acc = acc op b`: only b is gathered, and of a b
            // broadcast over trailing dimensions (a bias) only one value per block.
            let rank = usize::from(b.rank);
            let outer = (0..=rank).rev().find(|&d| d == 0 || b.strides[d - 1] != 0).unwrap_or(0);
            let inner: usize = b.shape[outer..rank].iter().map(|&n| n as usize).product();
            let mut values = b;
            values.rank = outer.max(1) as u8;
            if outer == 0 {
                (values.shape[0], values.strides[0]) = (1, 1);
            }
            // b's values are read where they lie when they are packed aligned f32 apart
            // from the accumulator, gathered otherwise.
            let owned;
            let (acc, y): (&mut [f32], &[f32]) = match apart(vtcm, &dst, &values) {
                Some((acc, y)) => (bytemuck::cast_slice_mut(acc), bytemuck::cast_slice(y)),
                None => {
                    owned = gather_f32(vtcm, &values)?;
                    (f32_slice(vtcm, &dst)?, &owned)
                }
            };
            if acc.len() != y.len() * inner {
                return None;
            }
            let inner = inner.max(1);
            let per = (PIECE / inner).max(1);
            for_pieces(acc, per * inner, &|i, part| binary_in_place(kind, part, &y[i * per..], inner));
            Some(())
        }
        Op::Binary { kind, dst, a, b } => {
            let (x, y) = (gather_f32(vtcm, &a)?, gather_f32(vtcm, &b)?);
            let out: Vec<f32> = x.iter().zip(&y).map(|(&x, &y)| binary_f32(kind, x, y)).collect();
            scatter_f32(vtcm, &dst, &out)
        }
        Op::Unary { kind: UnaryKind::Copy, dst, src } if !dst.dtype.is_float() => {
            let v = gather_i32(vtcm, &src)?;
            scatter_i32(vtcm, &dst, &v)
        }
        Op::Unary { kind: UnaryKind::Relu, dst, src } if !dst.dtype.is_float() => {
            let v: Vec<i32> = gather_i32(vtcm, &src)?.into_iter().map(|v| v.max(0)).collect();
            scatter_i32(vtcm, &dst, &v)
        }
        Op::Unary { kind, dst, src } if dst == src && in_place(&dst) => {
            for_pieces(f32_slice(vtcm, &dst)?, PIECE, &|_, part| unary_in_place(kind, part));
            Some(())
        }
        Op::Unary { kind, dst, src } => {
            let out: Vec<f32> = gather_f32(vtcm, &src)?.into_iter().map(|x| unary(kind, x)).collect();
            scatter_f32(vtcm, &dst, &out)
        }
        Op::Convert { dst, src, scale, zero_point, scales } => {
            let scales = match scales {
                Some(s) => Some(gather_f32(vtcm, &s)?.into_iter().map(|v| v * scale).collect::<Vec<f32>>()),
                None => None,
            };
            convert(vtcm, &dst, &src, scale, zero_point, scales.as_deref())
        }
        Op::MatMul { dst, a, b, accumulate, zero_point } => {
            super::gemm::matmul(vtcm, &dst, &a, &b, accumulate, zero_point)
        }
        Op::Conv2d { dst, input, weight, geometry, accumulate, zero_point } => {
            super::gemm::conv2d(vtcm, &dst, &input, &weight, &geometry, accumulate, zero_point)
        }
        Op::Pool { kind, dst, src, window } => {
            let s = src.shape.map(|v| v as usize);
            let out = pool(
                kind,
                &window,
                &gather_f32(vtcm, &src)?,
                [s[0], s[1], s[2]],
                [dst.shape[1] as usize, dst.shape[2] as usize],
            );
            if dst.dtype.is_float() {
                scatter_f32(vtcm, &dst, &out)
            } else {
                // Max pooling of integers: every value is one of the inputs.
                scatter_i32(vtcm, &dst, &out.iter().map(|&v| v as i32).collect::<Vec<_>>())
            }
        }
        Op::GlobalAvgPool { dst, src } => {
            let x = gather_f32(vtcm, &src)?;
            let plane = (src.shape[1] * src.shape[2]) as usize;
            let out: Vec<f32> = if plane == 0 {
                vec![0.0; src.shape[0] as usize]
            } else {
                x.chunks_exact(plane).map(|p| p.iter().sum::<f32>() / plane as f32).collect()
            };
            scatter_f32(vtcm, &dst, &out)
        }
        Op::Softmax { dst, src } => {
            let mut x = gather_f32(vtcm, &src)?;
            rows(&mut x, src.shape[src.rank as usize - 1] as usize, |row| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    *v = libm::expf(*v - max);
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            });
            scatter_f32(vtcm, &dst, &x)
        }
        Op::LayerNorm { dst, src, epsilon } => {
            let mut x = gather_f32(vtcm, &src)?;
            rows(&mut x, src.shape[src.rank as usize - 1] as usize, |row| {
                let n = row.len() as f32;
                let mean = row.iter().sum::<f32>() / n;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
                let inv = 1.0 / libm::sqrtf(var + epsilon);
                row.iter_mut().for_each(|v| *v = (*v - mean) * inv);
            });
            scatter_f32(vtcm, &dst, &x)
        }
        Op::Reduce { kind, dst, src } => {
            let x = gather_f32(vtcm, &src)?;
            let row = src.shape[src.rank as usize - 1] as usize;
            let out: Vec<f32> = x
                .chunks_exact(row.max(1))
                .map(|r| match kind {
                    ReduceKind::Sum => r.iter().sum(),
                    ReduceKind::Mean => r.iter().sum::<f32>() / r.len() as f32,
                    ReduceKind::Max => r.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    ReduceKind::Min => r.iter().copied().fold(f32::INFINITY, f32::min),
                })
                .collect();
            scatter_f32(vtcm, &dst, &out)
        }
        Op::End
        | Op::DmaIn { .. }
        | Op::DmaOut { .. }
        | Op::Gather { .. }
        | Op::Scatter { .. }
        | Op::Signal { .. }
        | Op::Wait { .. }
        | Op::Barrier => Some(()),
    }
}
