//! Host pre/post-processing end to end: the application works in f32 NCHW while the
//! device holds f16 NHWC (or quantised uint8); the runtime converts both ways.

use std::sync::Arc;

use aicsim_abi::container::{HostFormat, HostLayout, IoBinding, IoDType, IoDirection, ProgramImage};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::{bytes_f32, f32_bytes};
use aicsim_runtime::{Activation, InferenceSet, Program, RunLimit};
use half::f16;

const SHAPE: [u32; 4] = [2, 3, 4, 5];
const N: u32 = 120;

/// Copies the input tensor's bytes to the output unchanged, in device format.
fn echo(dtype: IoDType, host: HostFormat) -> ProgramImage {
    let mut image = aicsim_abi::programs::copy_program("echo", dtype, &SHAPE);
    for b in &mut image.bindings {
        b.host = host;
    }
    image
}

fn device() -> Arc<Device> {
    Arc::new(Device::open_simulated(KmdConfig::default()).unwrap())
}

#[test]
fn f32_nchw_on_the_host_and_f16_nhwc_on_the_device_roundtrip_with_f16_rounding() {
    let host = HostFormat { dtype: IoDType::F32, layout: HostLayout::NchwOnHostNhwcOnDevice, scale: 1.0, offset: 0 };
    let program = Program::from_image(echo(IoDType::F16, host)).unwrap();
    assert_eq!(program.inputs()[0].host_size_bytes(), 480);
    assert_eq!(program.inputs()[0].size_bytes, 240);
    let activation = Activation::new(device(), &program).unwrap();
    let x: Vec<f32> = (0..N).map(|i| i as f32 * 0.37 - 11.0).collect();
    let out = activation.run(&[&f32_bytes(&x)]).unwrap();
    let want: Vec<f32> = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    assert_eq!(bytes_f32(&out[0]), want, "layout undone on the way back; values rounded to f16 once");
}

#[test]
fn quantised_uint8_on_the_device_comes_back_dequantised_through_an_inference_set() {
    let (scale, offset) = (0.25f32, 100);
    let host = HostFormat { dtype: IoDType::F32, layout: HostLayout::Same, scale, offset };
    let program = Program::from_image(echo(IoDType::U8, host)).unwrap();
    let set = InferenceSet::new(device(), &program, 2, 3).unwrap();
    let checked = std::sync::atomic::AtomicU64::new(0);
    set.run(
        RunLimit::Count(60),
        |i, inputs| {
            inputs[0]
                .copy_from_slice(&f32_bytes(&(0..N).map(|k| (k as f32 + i as f32) * 0.3 - 20.0).collect::<Vec<_>>()))
        },
        |done| {
            let x: Vec<f32> = (0..N).map(|k| (k as f32 + done.index as f32) * 0.3 - 20.0).collect();
            let want: Vec<f32> = x
                .iter()
                .map(|&v| {
                    (((v / scale).round_ties_even() as i64 + i64::from(offset)).clamp(0, 255) - i64::from(offset))
                        as f32
                        * scale
                })
                .collect();
            assert_eq!(bytes_f32(&done.outputs[0]), want, "inference {}", done.index);
            assert!(done.timestamps.pre_proc_time() > std::time::Duration::ZERO);
            checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .unwrap();
    assert_eq!(checked.into_inner(), 60);
}

#[test]
fn a_layout_change_on_a_tensor_that_is_not_rank_4_is_rejected_by_name() {
    let host = HostFormat { dtype: IoDType::F32, layout: HostLayout::NhwcOnHostNchwOnDevice, scale: 1.0, offset: 0 };
    let mut image = echo(IoDType::F32, host);
    image.bindings[0] = IoBinding::new("x", IoDirection::Input, IoDType::F32, &[N], 0).with_host(host);
    let err = Program::from_bytes(image.to_bytes()).unwrap_err().to_string();
    assert!(err.contains("io section: x is not valid: a layout change needs a rank-4 tensor"), "{err}");
}
