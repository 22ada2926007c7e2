//! Host pre- and post-processing: converting a tensor between the format the
//! application uses and the format the device uses (dtype, quantisation, layout).
//!
//! Rules, element by element: float to float is a cast (f16 rounds to nearest even);
//! float to int8/uint8 quantises, `clamp(round_half_even(x / scale) + offset)`; int to
//! float dequantises, `(q - offset) * scale`; int to int saturates. Layouts: a rank-4
//! tensor is NCHW on one side and NHWC on the other.

use aicsim_device::container::{HostLayout, IoBinding, IoDType};
use half::f16;

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

/// Pre-processing: `host` (the binding's host format) into `device` (its device format).
/// Both must have exactly the binding's sizes.
pub fn host_to_device(b: &IoBinding, host: &[u8], device: &mut [u8]) {
    if !b.converts() {
        device.copy_from_slice(host);
        return;
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
    use aicsim_device::container::{HostFormat, IoDirection};

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
}
