//! Host pre- and post-processing: converting a tensor between the format the
//! application uses and the format the device uses (dtype, quantisation, layout).
//!
//! Rules, element by element: float to float is a cast (f16 rounds to nearest even);
//! float to int8/uint8 quantises, `clamp(round_half_even(x / scale) + offset)`; int to
//! float dequantises, `(q - offset) * scale`; int to int saturates. Layouts: a rank-4
//! tensor is NCHW on one side and NHWC on the other.

use aicsim_abi::container::{HostLayout, IoBinding, IoDType};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// A value on its way between formats.
#[derive(Clone, Copy)]
enum Value {
    Float(f32),
    Int(i64),
}

fn read(dtype: IoDType, b: &[u8]) -> Value {
    match dtype {
        IoDType::F32 => Value::Float(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        IoDType::F16 => Value::Float(f16::from_le_bytes([b[0], b[1]]).to_f32()),
        IoDType::I8 => Value::Int(i64::from(b[0] as i8)),
        IoDType::U8 => Value::Int(i64::from(b[0])),
        IoDType::I32 => Value::Int(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        IoDType::I64 => Value::Int(i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
    }
}

fn write(dtype: IoDType, v: Value, scale: f32, offset: i32, out: &mut [u8]) {
    let int = |lo: i64, hi: i64| match v {
        Value::Int(q) => q.clamp(lo, hi),
        Value::Float(x) => ((x / scale).round_ties_even() as i64).saturating_add(i64::from(offset)).clamp(lo, hi),
    };
    let float = || match v {
        Value::Float(x) => x,
        Value::Int(q) => (q - i64::from(offset)) as f32 * scale,
    };
    match dtype {
        IoDType::F32 => out[..4].copy_from_slice(&float().to_le_bytes()),
        IoDType::F16 => out[..2].copy_from_slice(&f16::from_f32(float()).to_le_bytes()),
        IoDType::I8 => out[0] = int(-128, 127) as i8 as u8,
        IoDType::U8 => out[0] = int(0, 255) as u8,
        IoDType::I32 => out[..4].copy_from_slice(&(int(i64::from(i32::MIN), i64::from(i32::MAX)) as i32).to_le_bytes()),
        IoDType::I64 => out[..8].copy_from_slice(&int(i64::MIN, i64::MAX).to_le_bytes()),
    }
}

/// For device element `d` (row-major in the device shape), the host element index.
fn host_index(b: &IoBinding) -> impl Fn(usize) -> usize + '_ {
    let s: Vec<usize> = b.shape.iter().map(|&v| v as usize).collect();
    move |d| match b.host.layout {
        HostLayout::Same => d,
        // Device [N, H, W, C], host [N, C, H, W].
        HostLayout::NchwOnHostNhwcOnDevice => {
            let (h, w, c) = (s[1], s[2], s[3]);
            let (n, rest) = (d / (h * w * c), d % (h * w * c));
            let (y, x, ch) = (rest / (w * c), rest / c % w, rest % c);
            ((n * c + ch) * h + y) * w + x
        }
        // Device [N, C, H, W], host [N, H, W, C].
        HostLayout::NhwcOnHostNchwOnDevice => {
            let (c, h, w) = (s[1], s[2], s[3]);
            let (n, rest) = (d / (c * h * w), d % (c * h * w));
            let (ch, y, x) = (rest / (h * w), rest / w % h, rest % w);
            ((n * h + y) * w + x) * c + ch
        }
    }
}

/// Elements converted at a time by the fast paths (on the stack).
const BLOCK: usize = 256;

/// f16 values (little-endian bytes) to f32 ones, a block at a time through the CPU's
/// conversion instructions where it has them; the same values as the element rule.
fn f16_to_f32(from: &[u8], to: &mut [u8]) {
    let (mut halves, mut floats) = ([f16::ZERO; BLOCK], [0f32; BLOCK]);
    for (from, to) in from.chunks(2 * BLOCK).zip(to.chunks_mut(4 * BLOCK)) {
        let n = from.len() / 2;
        for (h, b) in halves.iter_mut().zip(from.chunks_exact(2)) {
            *h = f16::from_le_bytes([b[0], b[1]]);
        }
        halves[..n].convert_to_f32_slice(&mut floats[..n]);
        for (b, x) in to.chunks_exact_mut(4).zip(&floats[..n]) {
            b.copy_from_slice(&x.to_le_bytes());
        }
    }
}

/// f32 values to f16 ones (round to nearest even), as [`f16_to_f32`].
fn f32_to_f16(from: &[u8], to: &mut [u8]) {
    let (mut floats, mut halves) = ([0f32; BLOCK], [f16::ZERO; BLOCK]);
    for (from, to) in from.chunks(4 * BLOCK).zip(to.chunks_mut(2 * BLOCK)) {
        let n = from.len() / 4;
        for (x, b) in floats.iter_mut().zip(from.chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        halves[..n].convert_from_f32_slice(&floats[..n]);
        for (b, h) in to.chunks_exact_mut(2).zip(&halves[..n]) {
            b.copy_from_slice(&h.to_le_bytes());
        }
    }
}

/// Converts a whole tensor's bytes from one format into another.
type Conversion = fn(&[u8], &mut [u8]);

/// The conversion between `from` and `to` as one of the fast paths, if it is one (the
/// layout is the same on both sides and the dtypes are f16 and f32).
fn fast_path(b: &IoBinding, from: IoDType, to: IoDType) -> Option<Conversion> {
    match (b.host.layout, from, to) {
        (HostLayout::Same, IoDType::F16, IoDType::F32) => Some(f16_to_f32),
        (HostLayout::Same, IoDType::F32, IoDType::F16) => Some(f32_to_f16),
        _ => None,
    }
}

/// Pre-processing: `host` (the binding's host format) into `device` (its device format).
/// Both must have exactly the binding's sizes.
pub fn host_to_device(b: &IoBinding, host: &[u8], device: &mut [u8]) {
    if !b.converts() {
        device.copy_from_slice(host);
        return;
    }
    if let Some(convert) = fast_path(b, b.host.dtype, b.dtype) {
        return convert(host, device);
    }
    let (hb, db) = (b.host.dtype.bytes() as usize, b.dtype.bytes() as usize);
    let map = host_index(b);
    for (d, out) in device.chunks_exact_mut(db).enumerate() {
        let h = map(d);
        write(b.dtype, read(b.host.dtype, &host[h * hb..(h + 1) * hb]), b.host.scale, b.host.offset, out);
    }
}

/// Post-processing: `device` (the binding's device format) into `host` (its host format).
pub fn device_to_host(b: &IoBinding, device: &[u8], host: &mut [u8]) {
    if !b.converts() {
        host.copy_from_slice(device);
        return;
    }
    if let Some(convert) = fast_path(b, b.dtype, b.host.dtype) {
        return convert(device, host);
    }
    let (hb, db) = (b.host.dtype.bytes() as usize, b.dtype.bytes() as usize);
    let map = host_index(b);
    for (d, value) in device.chunks_exact(db).enumerate() {
        let h = map(d);
        write(b.host.dtype, read(b.dtype, value), b.host.scale, b.host.offset, &mut host[h * hb..(h + 1) * hb]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aicsim_abi::container::{HostFormat, IoDirection};

    fn binding(dtype: IoDType, host: IoDType, layout: HostLayout, scale: f32, offset: i32) -> IoBinding {
        IoBinding::new("t", IoDirection::Input, dtype, &[2, 3, 4, 5], 0).with_host(HostFormat {
            dtype: host,
            layout,
            scale,
            offset,
        })
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn nchw_host_to_nhwc_device_moves_every_element_to_its_place_and_back() {
        let b = binding(IoDType::F32, IoDType::F32, HostLayout::NchwOnHostNhwcOnDevice, 1.0, 0);
        // Device shape is [N=2, H=3, W=4, C=5]; the host holds NCHW [2, 5, 3, 4].
        let host: Vec<f32> = (0..120).map(|i| i as f32).collect();
        let mut device = vec![0u8; 480];
        host_to_device(&b, &f32s(&host), &mut device);
        let dev: Vec<f32> = device.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        for n in 0..2 {
            for y in 0..3 {
                for x in 0..4 {
                    for c in 0..5 {
                        assert_eq!(dev[((n * 3 + y) * 4 + x) * 5 + c], host[((n * 5 + c) * 3 + y) * 4 + x]);
                    }
                }
            }
        }
        let mut back = vec![0u8; 480];
        device_to_host(&b, &device, &mut back);
        assert_eq!(back, f32s(&host));
    }

    #[test]
    fn nhwc_host_to_nchw_device_roundtrips() {
        let b = binding(IoDType::F32, IoDType::F32, HostLayout::NhwcOnHostNchwOnDevice, 1.0, 0);
        let host: Vec<f32> = (0..120).map(|i| i as f32 * 0.5).collect();
        let mut device = vec![0u8; 480];
        host_to_device(&b, &f32s(&host), &mut device);
        assert_ne!(device, f32s(&host));
        let mut back = vec![0u8; 480];
        device_to_host(&b, &device, &mut back);
        assert_eq!(back, f32s(&host));
    }

    #[test]
    fn quantisation_rounds_half_even_saturates_and_dequantises() {
        let b = binding(IoDType::I8, IoDType::F32, HostLayout::Same, 0.5, 3);
        let mut x = vec![0.0f32; 120];
        x[..6].copy_from_slice(&[0.25, 0.75, -1.0, 1000.0, -1000.0, 1.3]);
        let mut device = vec![0u8; 120];
        host_to_device(&b, &f32s(&x), &mut device);
        // 0.25/0.5 = 0.5 -> 0, 0.75/0.5 = 1.5 -> 2, -2, saturate, saturate, 2.6 -> 3; all + 3.
        assert_eq!(&device[..6].iter().map(|&q| q as i8).collect::<Vec<_>>(), &[3, 5, 1, 127, -128, 6]);
        let mut back = vec![0u8; 480];
        device_to_host(&b, &device, &mut back);
        let y: Vec<f32> = back.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(&y[..6], &[0.0, 1.0, -1.0, 62.0, -65.5, 1.5]);
        let u = binding(IoDType::U8, IoDType::F32, HostLayout::Same, 1.0, 128);
        let mut device = vec![0u8; 120];
        host_to_device(&u, &f32s(&x), &mut device);
        assert_eq!(&device[..6], &[128, 129, 127, 255, 0, 129]);
    }

    #[test]
    fn f32_to_f16_rounds_to_nearest_even() {
        let b = binding(IoDType::F16, IoDType::F32, HostLayout::Same, 1.0, 0);
        let mut x = vec![0.0f32; 120];
        x[0] = 1.0 + 1.0 / 4096.0; // between two f16 values, rounds down to even
        x[1] = 65504.0 * 2.0; // past f16 max: infinity
        let mut device = vec![0u8; 240];
        host_to_device(&b, &f32s(&x), &mut device);
        assert_eq!(f16::from_le_bytes([device[0], device[1]]).to_f32(), 1.0);
        assert!(f16::from_le_bytes([device[2], device[3]]).is_infinite());
    }

    #[test]
    fn the_f16_fast_paths_give_what_the_element_rule_gives() {
        // Every f16 bit pattern, and f32 values around every rounding boundary: more
        // than one block, and a partial last block.
        let halves: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
        let mut fast = vec![0u8; halves.len() * 2];
        f16_to_f32(&halves, &mut fast);
        for (i, (h, f)) in halves.chunks_exact(2).zip(fast.chunks_exact(4)).enumerate() {
            let want = match read(IoDType::F16, h) {
                Value::Float(x) => x,
                Value::Int(_) => unreachable!(),
            };
            let got = f32::from_le_bytes(f.try_into().unwrap());
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "f16 {i:#x}");
        }
        let floats: Vec<f32> = (0..70_001u32)
            .map(|i| f32::from_bits(0x3380_0000 + i * 16_411) * if i % 2 == 0 { 1.0 } else { -1.0 })
            .chain([0.0, -0.0, f32::INFINITY, 65520.0, 65519.99, 1e-8, 5.96e-8, 2.98e-8])
            .collect();
        let bytes = f32s(&floats);
        let mut fast = vec![0u8; floats.len() * 2];
        f32_to_f16(&bytes, &mut fast);
        for (x, h) in floats.iter().zip(fast.chunks_exact(2)) {
            let mut want = [0u8; 2];
            write(IoDType::F16, Value::Float(*x), 1.0, 0, &mut want);
            assert_eq!(h, want, "{x:e}");
        }
        // The bindings take them.
        let b = binding(IoDType::F16, IoDType::F32, HostLayout::Same, 1.0, 0);
        assert!(fast_path(&b, b.dtype, b.host.dtype).is_some() && fast_path(&b, b.host.dtype, b.dtype).is_some());
        let nchw = binding(IoDType::F16, IoDType::F32, HostLayout::NchwOnHostNhwcOnDevice, 1.0, 0);
        assert!(fast_path(&nchw, nchw.dtype, nchw.host.dtype).is_none());
    }
}
