//! Every compute op on random shapes against a straightforward reference written here
//! with plain loops: exact for integer ops, within 1e-5 relative for f32, within f16
//! rounding for f16 outputs.

use aicsim_abi::isa::{BinaryKind, ConvGeometry, DType, Op, PoolKind, PoolWindow, ReduceKind, Tensor, UnaryKind};
use aicsim_device::nsp::kernels::compute;
use aicsim_device::nsp::NspCore;
use half::f16;
use proptest::prelude::*;

const A: u64 = 0;
const B: u64 = 64 << 10;
const C: u64 = 128 << 10;

fn core() -> NspCore {
    NspCore::new(256 << 10)
}

fn put(core: &mut NspCore, at: u64, dtype: DType, values: &[f64]) {
    let v = core.vtcm_mut();
    for (i, &x) in values.iter().enumerate() {
        let o = at as usize + i * dtype.bytes() as usize;
        match dtype {
            DType::F32 => v[o..o + 4].copy_from_slice(&(x as f32).to_le_bytes()),
            DType::F16 => v[o..o + 2].copy_from_slice(&f16::from_f64(x).to_le_bytes()),
            DType::I8 => v[o] = x as i8 as u8,
            DType::U8 => v[o] = x as u8,
            DType::I16 => v[o..o + 2].copy_from_slice(&(x as i16).to_le_bytes()),
            DType::I32 => v[o..o + 4].copy_from_slice(&(x as i32).to_le_bytes()),
        }
    }
}

fn get(core: &NspCore, at: u64, dtype: DType, n: usize) -> Vec<f64> {
    let v = core.vtcm();
    (0..n)
        .map(|i| {
            let o = at as usize + i * dtype.bytes() as usize;
            match dtype {
                DType::F32 => f32::from_le_bytes(v[o..o + 4].try_into().unwrap()) as f64,
                DType::F16 => f16::from_le_bytes(v[o..o + 2].try_into().unwrap()).to_f64(),
                DType::I8 => v[o] as i8 as f64,
                DType::U8 => v[o] as f64,
                DType::I16 => i16::from_le_bytes(v[o..o + 2].try_into().unwrap()) as f64,
                DType::I32 => i32::from_le_bytes(v[o..o + 4].try_into().unwrap()) as f64,
            }
        })
        .collect()
}

/// What a value looks like after storing it as `dtype`.
fn stored(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => x as f32 as f64,
        DType::F16 => f16::from_f64(x).to_f64(),
        _ => x,
    }
}

fn close(dtype: DType, got: &[f64], want: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = match dtype {
            DType::F32 => (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            // One f16 rounding of the result plus f32 accumulation noise.
            DType::F16 => (g - w).abs() <= 2f64.powi(-10) * w.abs().max(1.0) + 1e-6,
            _ => g == w,
        };
        prop_assert!(ok, "element {}: got {} want {} ({:?})", i, g, w, dtype);
    }
    Ok(())
}

fn values(n: usize, lo: f64, hi: f64) -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(lo..hi, n)
}

fn float() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16)]
}

fn shape() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::vec(1u32..5, 1..=4)
}

fn numel(s: &[u32]) -> usize {
    s.iter().product::<u32>() as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn binary_ops_with_broadcasting_match_the_reference(
        s in shape(), dtype in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::I32)],
        kind in prop_oneof![Just(BinaryKind::Add), Just(BinaryKind::Sub), Just(BinaryKind::Mul), Just(BinaryKind::Div), Just(BinaryKind::Max), Just(BinaryKind::Min), Just(BinaryKind::Less), Just(BinaryKind::LessOrEqual), Just(BinaryKind::Equal)],
        broadcast in proptest::collection::vec(any::<bool>(), 4), seed in values(512, -8.0, 8.0), in_place: bool,
    ) {
        let kind = if dtype == DType::I32 && kind == BinaryKind::Div { BinaryKind::Add } else { kind };
        let n = numel(&s);
        // b is stored packed over the non-broadcast dims and read with stride 0 on the others.
        let b_shape: Vec<u32> = s.iter().enumerate().map(|(d, &v)| if broadcast[d] { 1 } else { v }).collect();
        let b_packed = Tensor::vtcm(B, dtype, &b_shape);
        let strides: Vec<u32> = (0..s.len()).map(|d| if broadcast[d] { 0 } else { b_packed.strides[d] }).collect();
        let b_view = Tensor::vtcm(B, dtype, &s).with_strides(&strides);
        let round = |x: f64| if dtype == DType::I32 { x.trunc() } else { stored(dtype, x) };
        let a: Vec<f64> = seed[..n].iter().map(|&x| round(x)).collect();
        let b: Vec<f64> = seed[256..256 + numel(&b_shape)].iter().map(|&x| { let v = round(x); if kind == BinaryKind::Div && v.abs() < 0.25 { 1.0 } else { v } }).collect();
        let mut c = core();
        put(&mut c, A, dtype, &a);
        put(&mut c, B, dtype, &b);
        // In place is the accumulator form `a = a op b` the compiler emits for biases.
        let out = if in_place { A } else { C };
        let dst = Tensor::vtcm(out, dtype, &s);
        compute(c.vtcm_mut(), &Op::Binary { kind, dst, a: Tensor::vtcm(A, dtype, &s), b: b_view }).unwrap();
        let mut want = Vec::with_capacity(n);
        let mut idx = vec![0u32; s.len()];
        for &x in &a {
            let bi: u32 = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
            let y = b[bi as usize];
            let r = match kind {
                BinaryKind::Add => x + y,
                BinaryKind::Sub => x - y,
                BinaryKind::Mul => x * y,
                BinaryKind::Div => x / y,
                BinaryKind::Max => x.max(y),
                BinaryKind::Min => x.min(y),
                BinaryKind::Less => f64::from(u8::from(x < y)),
                BinaryKind::LessOrEqual => f64::from(u8::from(x <= y)),
                BinaryKind::Equal => f64::from(u8::from(x == y)),
            };
            want.push(if dtype == DType::I32 { r } else { stored(dtype, r) });
            for d in (0..s.len()).rev() {
                idx[d] += 1;
                if idx[d] < s[d] { break; }
                idx[d] = 0;
            }
        }
        close(dtype, &get(&c, out, dtype, n), &want)?;
    }

    #[test]
    fn unary_ops_match_the_reference(s in shape(), dtype in float(), which in 0usize..12, xs in values(256, -6.0, 6.0)) {
        let n = numel(&s);
        let kind = [UnaryKind::Relu, UnaryKind::Clip { min: -1.25, max: 3.5 }, UnaryKind::Sigmoid, UnaryKind::Tanh, UnaryKind::Gelu, UnaryKind::Exp, UnaryKind::Erf, UnaryKind::Sqrt, UnaryKind::Reciprocal, UnaryKind::Copy, UnaryKind::Pow { exponent: -0.75 }, UnaryKind::Affine { scale: -1.5, shift: 0.25 }][which];
        let x: Vec<f64> = xs[..n].iter().map(|&v| {
            let v = if matches!(kind, UnaryKind::Sqrt) { v.abs() } else if matches!(kind, UnaryKind::Pow { .. }) { v.abs() + 0.5 } else if matches!(kind, UnaryKind::Reciprocal) && v.abs() < 0.1 { 0.5 } else { v };
            stored(dtype, v)
        }).collect();
        let mut c = core();
        put(&mut c, A, dtype, &x);
        compute(c.vtcm_mut(), &Op::Unary { kind, dst: Tensor::vtcm(C, dtype, &s), src: Tensor::vtcm(A, dtype, &s) }).unwrap();
        let want: Vec<f64> = x.iter().map(|&v| stored(dtype, match kind {
            UnaryKind::Relu => v.max(0.0),
            UnaryKind::Clip { min, max } => v.max(min as f64).min(max as f64),
            UnaryKind::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            UnaryKind::Tanh => v.tanh(),
            UnaryKind::Gelu => 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)),
            UnaryKind::Exp => v.exp(),
            UnaryKind::Erf => libm::erf(v),
            UnaryKind::Sqrt => v.sqrt(),
            UnaryKind::Reciprocal => 1.0 / v,
            UnaryKind::Copy => v,
            UnaryKind::Pow { exponent } => v.powf(exponent as f64),
            UnaryKind::Affine { scale, shift } => v * scale as f64 + shift as f64,
        })).collect();
        close(dtype, &get(&c, C, dtype, n), &want)?;
    }

    #[test]
    fn matmul_matches_the_reference(m in 1usize..24, k in 1usize..24, n in 1usize..24, which in 0usize..4, accumulate: bool, xs in values(24 * 24 * 3, -3.0, 3.0)) {
        let (ta, tc) = [(DType::F32, DType::F32), (DType::F16, DType::F16), (DType::I8, DType::I32), (DType::I16, DType::I32)][which];
        // int16 activations multiply int8 weights.
        let tb = if ta == DType::I16 { DType::I8 } else { ta };
        let q = |t: DType, v: f64| match t {
            DType::I8 => (v * 40.0).round().clamp(-128.0, 127.0),
            DType::I16 => (v * 10000.0).round().clamp(-32768.0, 32767.0),
            _ => stored(t, v),
        };
        let a: Vec<f64> = xs[..m * k].iter().map(|&v| q(ta, v)).collect();
        let b: Vec<f64> = xs[576..576 + k * n].iter().map(|&v| q(tb, v)).collect();
        let c0: Vec<f64> = xs[1152..1152 + m * n].iter().map(|&v| if tc == DType::I32 { (v * 1000.0).round() } else { stored(tc, v) }).collect();
        let mut c = core();
        put(&mut c, A, ta, &a);
        put(&mut c, B, tb, &b);
        put(&mut c, C, tc, &c0);
        let (mu, ku, nu) = (m as u32, k as u32, n as u32);
        compute(c.vtcm_mut(), &Op::MatMul { dst: Tensor::vtcm(C, tc, &[mu, nu]), a: Tensor::vtcm(A, ta, &[mu, ku]), b: Tensor::vtcm(B, tb, &[ku, nu]), accumulate, zero_point: 0 }).unwrap();
        let mut want = vec![0.0; m * n];
        for i in 0..m { for j in 0..n {
            let mut acc = if accumulate { c0[i * n + j] } else { 0.0 };
            for p in 0..k { acc += a[i * k + p] * b[p * n + j]; }
            want[i * n + j] = if tc == DType::I32 { acc } else { stored(tc, acc) };
        }}
        let tol = if ta == DType::F32 { DType::F32 } else { tc };
        close(tol, &get(&c, C, tc, m * n), &want)?;
    }

    #[test]
    fn conv2d_matches_the_reference(
        ci_g in 1u32..4, co_g in 1u32..4, groups in 1u32..3, h in 1u32..8, w in 1u32..8, kh in 1u32..4, kw in 1u32..4,
        stride in 1u32..3, pad in 0u32..2, dilation in 1u32..3, int8: bool, wide: bool, zp in -30i32..30, xs in values(2000, -2.0, 2.0),
    ) {
        let (ci, co) = (ci_g * groups, co_g * groups);
        let eff = |k: u32| (k - 1) * dilation + 1;
        prop_assume!(h + 2 * pad >= eff(kh) && w + 2 * pad >= eff(kw));
        let ho = (h + 2 * pad - eff(kh)) / stride + 1;
        let wo = (w + 2 * pad - eff(kw)) / stride + 1;
        // Integer inputs carry a quantisation offset: int8 below zero, uint8 from it
        // (padding is a real zero, so it contributes nothing); int16 inputs (`wide`)
        // with int8 weights, the offset scaled up.
        let zp = if int8 { zp } else { 0 };
        let (ti, to) = match (int8, wide, zp >= 0) {
            (false, _, _) => (DType::F32, DType::F32),
            (true, true, _) => (DType::I16, DType::I32),
            (true, false, false) => (DType::I8, DType::I32),
            (true, false, true) => (DType::U8, DType::I32),
        };
        let zp = if ti == DType::I16 { zp * 1000 } else { zp };
        let q = |v: f64| if int8 { (v * 50.0).round() } else { v as f32 as f64 };
        let qx = |v: f64| if ti == DType::I16 { (v * 12000.0).round() } else { q(v) };
        let (lo, hi) = match ti {
            DType::I8 => (-128.0, 127.0),
            DType::U8 => (0.0, 255.0),
            DType::I16 => (-32768.0, 32767.0),
            _ => (f64::MIN, f64::MAX),
        };
        let x: Vec<f64> = xs[..(ci * h * w) as usize].iter().map(|&v| (qx(v) + f64::from(zp)).clamp(lo, hi)).collect();
        let wt: Vec<f64> = xs[1000..1000 + (co * ci_g * kh * kw) as usize].iter().map(|&v| q(v)).collect();
        let mut c = core();
        put(&mut c, A, ti, &x);
        put(&mut c, B, if int8 { DType::I8 } else { ti }, &wt);
        let x: Vec<f64> = x.iter().map(|&v| v - f64::from(zp)).collect();
        let g = ConvGeometry { stride: [stride, stride], pad: [pad, pad], dilation: [dilation, dilation], groups };
        let wtype = if int8 { DType::I8 } else { ti };
        compute(c.vtcm_mut(), &Op::Conv2d { dst: Tensor::vtcm(C, to, &[co, ho, wo]), input: Tensor::vtcm(A, ti, &[ci, h, w]), weight: Tensor::vtcm(B, wtype, &[co, ci_g, kh, kw]), geometry: g, accumulate: false, zero_point: zp }).unwrap();
        let mut want = vec![0.0; (co * ho * wo) as usize];
        for oc in 0..co { for oy in 0..ho { for ox in 0..wo {
            let grp = oc / co_g;
            let mut acc = 0.0;
            for icg in 0..ci_g { for ky in 0..kh { for kx in 0..kw {
                let iy = (oy * stride + ky * dilation) as i64 - pad as i64;
                let ix = (ox * stride + kx * dilation) as i64 - pad as i64;
                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 { continue; }
                let ic = grp * ci_g + icg;
                acc += x[((ic * h) as i64 * w as i64 + iy * w as i64 + ix) as usize] * wt[(((oc * ci_g + icg) * kh + ky) * kw + kx) as usize];
            }}}
            want[((oc * ho + oy) * wo + ox) as usize] = acc;
        }}}
        close(to, &get(&c, C, to, want.len()), &want)?;
    }

    #[test]
    fn pooling_matches_the_reference(ch in 1u32..4, h in 1u32..9, w in 1u32..9, k in 1u32..4, stride in 1u32..3, pad in 0u32..2, kind in 0usize..3, dtype in float(), xs in values(400, -5.0, 5.0)) {
        prop_assume!(pad < k && h + 2 * pad >= k && w + 2 * pad >= k);
        let kind = [PoolKind::Max, PoolKind::Avg, PoolKind::AvgIncludePad][kind];
        let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
        let x: Vec<f64> = xs[..(ch * h * w) as usize].iter().map(|&v| stored(dtype, v)).collect();
        let mut c = core();
        put(&mut c, A, dtype, &x);
        let window = PoolWindow { kernel: [k, k], stride: [stride, stride], pad: [pad, pad] };
        compute(c.vtcm_mut(), &Op::Pool { kind, dst: Tensor::vtcm(C, dtype, &[ch, ho, wo]), src: Tensor::vtcm(A, dtype, &[ch, h, w]), window }).unwrap();
        let mut want = vec![];
        for cc in 0..ch { for oy in 0..ho { for ox in 0..wo {
            let mut vals = vec![];
            for ky in 0..k { for kx in 0..k {
                let (y, x_) = ((oy * stride + ky) as i64 - pad as i64, (ox * stride + kx) as i64 - pad as i64);
                if y >= 0 && x_ >= 0 && y < h as i64 && x_ < w as i64 { vals.push(x[((cc * h) as i64 * w as i64 + y * w as i64 + x_) as usize]); }
            }}
            let r = match kind {
                PoolKind::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                PoolKind::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                PoolKind::AvgIncludePad => vals.iter().sum::<f64>() / (k * k) as f64,
            };
            want.push(stored(dtype, r));
        }}}
        close(dtype, &get(&c, C, dtype, want.len()), &want)?;
    }

    #[test]
    fn row_ops_match_the_reference(rows in 1u32..6, len in 1u32..40, which in 0usize..7, dtype in float(), xs in values(240, -4.0, 4.0)) {
        let n = (rows * len) as usize;
        let x: Vec<f64> = xs[..n].iter().map(|&v| stored(dtype, v)).collect();
        let mut c = core();
        put(&mut c, A, dtype, &x);
        let src = Tensor::vtcm(A, dtype, &[rows, len]);
        let reduce = |kind| Op::Reduce { kind, dst: Tensor::vtcm(C, dtype, &[rows, 1]), src };
        let op = [
            Op::Softmax { dst: Tensor::vtcm(C, dtype, &[rows, len]), src },
            Op::LayerNorm { dst: Tensor::vtcm(C, dtype, &[rows, len]), src, epsilon: 1e-3 },
            reduce(ReduceKind::Sum), reduce(ReduceKind::Mean), reduce(ReduceKind::Max), reduce(ReduceKind::Min),
            Op::GlobalAvgPool { dst: Tensor::vtcm(C, dtype, &[rows]), src: Tensor::vtcm(A, dtype, &[rows, 1, len]) },
        ][which];
        compute(c.vtcm_mut(), &op).unwrap();
        let mut want = vec![];
        for r in x.chunks(len as usize) {
            let nf = r.len() as f64;
            let mean = r.iter().sum::<f64>() / nf;
            match which {
                0 => { let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max); let s: f64 = r.iter().map(|v| (v - m).exp()).sum(); want.extend(r.iter().map(|v| (v - m).exp() / s)); }
                1 => { let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nf; want.extend(r.iter().map(|v| (v - mean) / (var + 1e-3).sqrt())); }
                2 => want.push(r.iter().sum()),
                3 | 6 => want.push(mean),
                4 => want.push(r.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                _ => want.push(r.iter().copied().fold(f64::INFINITY, f64::min)),
            }
        }
        let want: Vec<f64> = want.into_iter().map(|v| stored(dtype, v)).collect();
        // Row sums in f32 lose a little more than one rounding over 40 terms.
        let got = get(&c, C, dtype, want.len());
        for (g, w) in got.iter().zip(&want) {
            let tol = if dtype == DType::F16 { 2f64.powi(-10) * w.abs().max(1.0) } else { 1e-5 * w.abs().max(1.0) } * 4.0;
            prop_assert!((g - w).abs() <= tol, "got {} want {}", g, w);
        }
    }

    #[test]
    fn conversions_quantise_and_transpose_exactly(rows in 1u32..8, cols in 1u32..8, which in 0usize..8, scale in 0.01f32..0.5, zp in -20i32..20, xs in values(64, -40.0, 40.0)) {
        let n = (rows * cols) as usize;
        let (from, to) = [
            (DType::F32, DType::I8), (DType::I8, DType::F32), (DType::F32, DType::F16), (DType::I32, DType::U8), (DType::F32, DType::U8),
            (DType::F32, DType::I16), (DType::I16, DType::F32), (DType::I32, DType::I16),
        ][which];
        let x: Vec<f64> = xs[..n].iter().map(|&v| match from {
            DType::I8 => v.round().clamp(-128.0, 127.0),
            DType::I16 => (v * 800.0).round().clamp(-32768.0, 32767.0),
            DType::I32 => (v * 100.0).round(),
            _ => v as f32 as f64,
        }).collect();
        let mut c = core();
        put(&mut c, A, from, &x);
        // Read the source transposed: dst[j][i] = src[i][j].
        let src = Tensor::vtcm(A, from, &[cols, rows]).with_strides(&[1, cols]);
        compute(c.vtcm_mut(), &Op::Convert { dst: Tensor::vtcm(C, to, &[cols, rows]), src, scale, zero_point: zp, scales: None }).unwrap();
        let (lo, hi) = match to {
            DType::I8 => (-128.0, 127.0),
            DType::U8 => (0.0, 255.0),
            DType::I16 => (-32768.0, 32767.0),
            _ => (f64::MIN, f64::MAX),
        };
        let mut want = vec![];
        for j in 0..cols as usize { for i in 0..rows as usize {
            let v = x[i * cols as usize + j];
            want.push(match (from, to) {
                (DType::F32, DType::I8 | DType::U8 | DType::I16) => ((v as f32 / scale).round_ties_even() as f64 + zp as f64).clamp(lo, hi),
                (DType::I8 | DType::I16, DType::F32) => ((v as i32 - zp) as f32 * scale) as f64,
                (DType::F32, DType::F16) => stored(DType::F16, v),
                (DType::I32, DType::U8 | DType::I16) => ((v as f32 * scale).round_ties_even() as f64 + zp as f64).clamp(lo, hi),
                _ => unreachable!(),
            });
        }}
        prop_assert_eq!(get(&c, C, to, n), want);
    }
}

/// Convolutions big enough to be cut into pieces for two host threads, by output pixels,
/// output channels or depth (and the f16 form, whose output goes through a buffer), with
/// accumulation, against the plain loops.
#[test]
fn large_convolutions_match_the_reference() {
    let (xa, wa, ca) = (0u64, 1 << 20, 2 << 20);
    // ci, co, h, w, k, stride, pad, dilation, groups, dtype, accumulate
    let cases = [
        (16, 32, 20, 20, 3, 1, 1, 1, 1, DType::F32, false),
        (16, 32, 21, 19, 3, 2, 1, 1, 1, DType::F32, true),
        (8, 64, 17, 23, 3, 1, 2, 2, 1, DType::F32, false),
        (64, 64, 16, 16, 1, 1, 0, 1, 1, DType::F32, true),
        (32, 64, 18, 18, 3, 1, 1, 1, 2, DType::F32, false),
        (16, 32, 20, 20, 3, 1, 1, 1, 1, DType::F16, true),
        // More output channels than pixels: split by channels.
        (256, 128, 8, 8, 1, 1, 0, 1, 1, DType::F32, true),
        (64, 128, 6, 6, 3, 1, 1, 1, 1, DType::F32, false),
        // Columns laid out on two threads, a few channels per piece, the last piece short.
        (200, 128, 7, 7, 3, 1, 1, 1, 1, DType::F32, true),
        (96, 128, 12, 12, 3, 2, 1, 1, 1, DType::F32, false),
        // Deep enough that each thread takes half of the depth, f16 and accumulating.
        (64, 32, 12, 12, 3, 1, 1, 1, 1, DType::F16, true),
        (512, 24, 9, 9, 1, 1, 0, 1, 1, DType::F32, true),
    ];
    for (ci, co, h, w, k, stride, pad, dilation, groups, dtype, accumulate) in cases {
        let (ci_g, co_g) = (ci / groups, co / groups);
        let eff = (k - 1) * dilation + 1;
        let ho = (h + 2 * pad - eff) / stride + 1;
        let wo = (w + 2 * pad - eff) / stride + 1;
        let value = |i: u32, salt: u32| {
            stored(dtype, ((i.wrapping_mul(2654435761).wrapping_add(salt) >> 8) % 2001) as f64 / 1000.0 - 1.0)
        };
        let x: Vec<f64> = (0..ci * h * w).map(|i| value(i, 1)).collect();
        let wt: Vec<f64> = (0..co * ci_g * k * k).map(|i| value(i, 2) / 4.0).collect();
        let before: Vec<f64> = (0..co * ho * wo).map(|i| value(i, 3)).collect();
        let mut c = NspCore::new(4 << 20);
        put(&mut c, xa, dtype, &x);
        put(&mut c, wa, dtype, &wt);
        put(&mut c, ca, dtype, &before);
        let g = ConvGeometry { stride: [stride, stride], pad: [pad, pad], dilation: [dilation, dilation], groups };
        let op = Op::Conv2d {
            dst: Tensor::vtcm(ca, dtype, &[co, ho, wo]),
            input: Tensor::vtcm(xa, dtype, &[ci, h, w]),
            weight: Tensor::vtcm(wa, dtype, &[co, ci_g, k, k]),
            geometry: g,
            accumulate,
            zero_point: 0,
        };
        compute(c.vtcm_mut(), &op).unwrap();
        let mut want = vec![0.0; (co * ho * wo) as usize];
        for oc in 0..co {
            for oy in 0..ho {
                for ox in 0..wo {
                    let grp = oc / co_g;
                    let o = ((oc * ho + oy) * wo + ox) as usize;
                    let mut acc = if accumulate { before[o] } else { 0.0 };
                    for icg in 0..ci_g {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky * dilation) as i64 - pad as i64;
                                let ix = (ox * stride + kx * dilation) as i64 - pad as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    continue;
                                }
                                let ic = (grp * ci_g + icg) as i64;
                                acc += x[((ic * h as i64 + iy) * w as i64 + ix) as usize]
                                    * wt[(((oc * ci_g + icg) * k + ky) * k + kx) as usize];
                            }
                        }
                    }
                    want[o] = stored(dtype, acc);
                }
            }
        }
        let got = get(&c, ca, dtype, want.len());
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let tol = if dtype == DType::F32 { 1e-5 } else { 2f64.powi(-9) };
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{ci}x{co} k{k} s{stride} g{groups} {dtype:?}: element {i}: got {g} want {w}"
            );
        }
    }
}

/// Element-wise ops big enough to be cut into pieces for two host threads, in the
/// in-place forms the compiler emits (activation, bias broadcast over the plane,
/// residual add), against the plain loops.
#[test]
fn large_in_place_elementwise_ops_match_the_reference() {
    let (ch, plane) = (67u32, 1999u32);
    let n = (ch * plane) as usize;
    let value =
        |i: usize, salt: usize| ((i.wrapping_mul(2654435761).wrapping_add(salt) >> 7) % 2001) as f64 / 500.0 - 2.0;
    let x: Vec<f64> = (0..n).map(|i| stored(DType::F32, value(i, 1))).collect();
    let bias: Vec<f64> = (0..ch as usize).map(|i| stored(DType::F32, value(i, 2))).collect();
    let other: Vec<f64> = (0..n).map(|i| stored(DType::F32, value(i, 3))).collect();
    let (xa, ba) = (0u64, 1u64 << 20);
    let acc = Tensor::vtcm(xa, DType::F32, &[ch, plane]);
    let f32_of = |v: f64| v as f32 as f64;
    // (op, what the element becomes)
    let relu = Op::Unary { kind: UnaryKind::Relu, dst: acc, src: acc };
    let sigmoid = Op::Unary { kind: UnaryKind::Sigmoid, dst: acc, src: acc };
    let bias_view = Tensor::vtcm(ba, DType::F32, &[ch, plane]).with_strides(&[1, 0]);
    let add_bias = Op::Binary { kind: BinaryKind::Add, dst: acc, a: acc, b: bias_view };
    let residual =
        Op::Binary { kind: BinaryKind::Mul, dst: acc, a: acc, b: Tensor::vtcm(ba, DType::F32, &[ch, plane]) };
    type Case<'a> = (Op, &'a [f64], Box<dyn Fn(usize, f64) -> f64 + 'a>);
    let cases: [Case; 4] = [
        (relu, &[], Box::new(|_, v: f64| v.max(0.0))),
        (sigmoid, &[], Box::new(|_, v: f64| 1.0 / (1.0 + (-v).exp()))),
        (add_bias, &bias, Box::new(|i, v| f32_of(v + bias[i / plane as usize]))),
        (residual, &other, Box::new(|i, v| f32_of(v * other[i]))),
    ];
    for (op, b, f) in cases {
        let mut c = NspCore::new(2 << 20);
        put(&mut c, xa, DType::F32, &x);
        put(&mut c, ba, DType::F32, b);
        compute(c.vtcm_mut(), &op).unwrap();
        let want: Vec<f64> = x.iter().enumerate().map(|(i, &v)| f(i, v)).collect();
        let got = get(&c, xa, DType::F32, n);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{op:?}: element {i}: got {g} want {w}");
        }
    }
}

/// The im2col layouts a convolution keeps for the next output-channel block are reused
/// only for the same input values: changing one input value in place, or the weights,
/// between two runs of the same op gives the reference result every time.
#[test]
fn convolutions_over_a_changed_input_are_recomputed() {
    let (ci, co, h, w, k) = (24u32, 40u32, 15u32, 13u32, 3u32);
    let (xa, wa, ca) = (0u64, 1 << 20, 2 << 20);
    let value = |i: u32, salt: u32| ((i.wrapping_mul(2654435761).wrapping_add(salt) >> 8) % 2001) as f64 / 1000.0 - 1.0;
    let mut x: Vec<f64> = (0..ci * h * w).map(|i| stored(DType::F32, value(i, 1))).collect();
    let mut wt: Vec<f64> = (0..co * ci * k * k).map(|i| stored(DType::F32, value(i, 2) / 4.0)).collect();
    let g = ConvGeometry { stride: [1, 1], pad: [1, 1], dilation: [1, 1], groups: 1 };
    let op = Op::Conv2d {
        dst: Tensor::vtcm(ca, DType::F32, &[co, h, w]),
        input: Tensor::vtcm(xa, DType::F32, &[ci, h, w]),
        weight: Tensor::vtcm(wa, DType::F32, &[co, ci, k, k]),
        geometry: g,
        accumulate: false,
        zero_point: 0,
    };
    let reference = |x: &[f64], wt: &[f64]| {
        let mut out = vec![0.0; (co * h * w) as usize];
        for oc in 0..co as i64 {
            for oy in 0..h as i64 {
                for ox in 0..w as i64 {
                    let mut acc = 0.0;
                    for ic in 0..ci as i64 {
                        for ky in 0..k as i64 {
                            for kx in 0..k as i64 {
                                let (iy, ix) = (oy + ky - 1, ox + kx - 1);
                                if iy >= 0 && ix >= 0 && iy < h as i64 && ix < w as i64 {
                                    acc += x[((ic * h as i64 + iy) * w as i64 + ix) as usize]
                                        * wt[(((oc * ci as i64 + ic) * k as i64 + ky) * k as i64 + kx) as usize];
                                }
                            }
                        }
                    }
                    out[((oc * h as i64 + oy) * w as i64 + ox) as usize] = acc;
                }
            }
        }
        out
    };
    let mut c = NspCore::new(4 << 20);
    put(&mut c, wa, DType::F32, &wt);
    for step in 0..6 {
        match step {
            // A value in the middle of the input, then back.
            2 => x[(5 * h * w + 7 * w + 6) as usize] = 3.5,
            3 => x[(5 * h * w + 7 * w + 6) as usize] = stored(DType::F32, value(5 * h * w + 7 * w + 6, 1)),
            // The last value (padding-adjacent), and new weights over the same input.
            4 => *x.last_mut().unwrap() = -2.25,
            5 => {
                wt.iter_mut().for_each(|v| *v = -*v);
                put(&mut c, wa, DType::F32, &wt);
            }
            _ => {}
        }
        put(&mut c, xa, DType::F32, &x);
        compute(c.vtcm_mut(), &op).unwrap();
        let want = reference(&x, &wt);
        let got = get(&c, ca, DType::F32, want.len());
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "step {step}: element {i}: got {g} want {w}");
        }
    }
}

/// Quantising infinities saturates (a fuzzed program once fed one through a convert with
/// a zero point, and the sum overflowed).
#[test]
fn quantising_infinities_saturates() {
    let mut c = core();
    put(&mut c, A, DType::F32, &[f64::INFINITY, f64::NEG_INFINITY, 1.0]);
    let src = Tensor::vtcm(A, DType::F32, &[3]);
    let op = Op::Convert { dst: Tensor::vtcm(C, DType::I8, &[3]), src, scale: 0.5, zero_point: 5, scales: None };
    compute(c.vtcm_mut(), &op).unwrap();
    assert_eq!(get(&c, C, DType::I8, 3), vec![127.0, -128.0, 7.0]);
}
