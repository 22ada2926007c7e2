//! An ONNX model from the fuzzer through the compiler's reader (the protobuf decoder and
//! the model structure), then, when it parses, through import, shape inference and
//! lowering with aic-exec's default options (one or four cores). What compiles must be a program the
//! device's validator accepts and that survives its container's round trip.
#![no_main]

use aicsim_abi::container::ProgramImage;
use aicsim_compiler::onnx::parse_model;
use aicsim_compiler::{compile, CompileOptions};
use aicsim_device::nsp::{validate_stream, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = parse_model(data) else { return };
    // One core or four, so the multi-core lowering is fuzzed too.
    let opts = CompileOptions { cores: if data.len().is_multiple_of(2) { 1 } else { 4 }, ..CompileOptions::default() };
    match compile(&model, None, "fuzz", &opts) {
        Ok(compiled) => {
            let image = &compiled.image;
            let limits = Limits { vtcm_bytes: image.vtcm_bytes, ddr_bytes: image.ddr_bytes, cores: image.num_cores() };
            for (core, stream) in image.cores.iter().enumerate() {
                if let Err(e) = validate_stream(core as u32, stream, &limits) {
                    panic!("the compiler emitted a program the device rejects: {e}");
                }
            }
            let bytes = image.to_bytes();
            assert_eq!(ProgramImage::parse(&bytes).as_ref(), Ok(image));
        }
        Err(e) => assert!(!e.to_string().is_empty(), "a model that does not compile says why"),
    }
});
