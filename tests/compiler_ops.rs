//! Operators checked end to end against values computed here by hand: `Pad` (constant
//! mode) feeding a convolution, on 1 and 3 cores.

use std::sync::Arc;

use aicsim_compiler::onnx::{data_type, Dim, Graph, Model, Node, OpsetId, Tensor, TensorData, ValueInfo};
use aicsim_compiler::{compile, CompileOptions};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::samples::{bytes_f32, f32_bytes};
use aicsim_runtime::{Activation, Program};

fn vi(name: &str, dims: &[i64]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        elem_type: data_type::FLOAT,
        shape: Some(dims.iter().map(|&d| Dim::Value(d)).collect()),
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> Node {
    Node {
        name: output.into(),
        op_type: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: vec![output.into()],
        ..Default::default()
    }
}

/// x [1, 2, 3, 3] -> Pad (rows 1 before / 2 after, columns 2 before / 1 after, value
/// 0.5) -> a 1x1 convolution that sums the two channels.
fn model() -> Model {
    let init = |name: &str, dims: &[i64], data: TensorData, data_type| Tensor {
        name: name.into(),
        dims: dims.to_vec(),
        data_type,
        data,
    };
    Model {
        ir_version: 8,
        opset_imports: vec![OpsetId { domain: String::new(), version: 13 }],
        producer_name: "test".into(),
        graph: Graph {
            name: "pad".into(),
            nodes: vec![node("Pad", &["x", "pads", "value"], "p"), node("Conv", &["p", "w"], "y")],
            initializers: vec![
                init("pads", &[8], TensorData::Int64s(vec![0, 0, 1, 2, 0, 0, 2, 1]), data_type::INT64),
                init("value", &[], TensorData::Floats(vec![0.5]), data_type::FLOAT),
                init("w", &[1, 2, 1, 1], TensorData::Floats(vec![1.0, 1.0]), data_type::FLOAT),
            ],
            inputs: vec![vi("x", &[1, 2, 3, 3])],
            outputs: vec![vi("y", &[1, 1, 6, 6])],
            value_info: vec![],
        },
    }
}

#[test]
fn pad_then_conv_matches_a_hand_computation() {
    let x: Vec<f32> = (0..18).map(|v| v as f32).collect();
    // Padded planes are 6 x 6; the 3 x 3 interior starts at row 1, column 2.
    let mut want = vec![1.0f32; 36]; // 0.5 + 0.5 where both channels are padding
    for r in 0..3 {
        for c in 0..3 {
            want[(r + 1) * 6 + c + 2] = x[r * 3 + c] + x[9 + r * 3 + c];
        }
    }
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    for cores in [1, 3] {
        let c = compile(&model(), None, "pad", &CompileOptions { cores, ..Default::default() }).unwrap();
        let program = Program::from_image(c.image).unwrap();
        let act = Activation::new(device.clone(), &program).unwrap();
        let got = bytes_f32(&act.run(&[&f32_bytes(&x)]).unwrap()[0]);
        assert_eq!(got, want, "cores={cores}");
    }
}

#[test]
fn reflect_padding_and_cropping_are_clear_errors() {
    let mut m = model();
    m.graph.nodes[0].attributes.push(aicsim_compiler::onnx::Attribute {
        name: "mode".into(),
        value: aicsim_compiler::onnx::AttributeValue::String(b"reflect".to_vec()),
    });
    let e = compile(&m, None, "pad", &CompileOptions::default()).unwrap_err().to_string();
    assert!(e.contains("only constant padding"), "{e}");
    let mut m = model();
    m.graph.initializers[0].data = TensorData::Int64s(vec![0, 0, -1, 0, 0, 0, 0, 0]);
    let e = compile(&m, None, "pad", &CompileOptions::default()).unwrap_err().to_string();
    assert!(e.contains("cropping"), "{e}");
}

/// ids [1, 6] int64 -> Gather of a [5, 3] table's rows -> +1: the device fetches each
/// row by its id; an id outside the table (5, or -1) fails the inference with an error,
/// the device reading nothing beyond the table, and the activation keeps serving.
#[test]
fn gather_by_token_ids_fetches_rows_and_refuses_ids_outside_the_table() {
    let table: Vec<f32> = (0..15).map(|v| v as f32 * 0.5).collect();
    let model = Model {
        ir_version: 8,
        opset_imports: vec![OpsetId { domain: String::new(), version: 13 }],
        producer_name: "test".into(),
        graph: Graph {
            name: "gather".into(),
            nodes: vec![node("Gather", &["table", "ids"], "rows"), node("Add", &["rows", "one"], "y")],
            initializers: vec![
                Tensor {
                    name: "table".into(),
                    dims: vec![5, 3],
                    data_type: data_type::FLOAT,
                    data: TensorData::Floats(table.clone()),
                },
                Tensor {
                    name: "one".into(),
                    dims: vec![],
                    data_type: data_type::FLOAT,
                    data: TensorData::Floats(vec![1.0]),
                },
            ],
            inputs: vec![ValueInfo { elem_type: data_type::INT64, ..vi("ids", &[1, 6]) }],
            outputs: vec![vi("y", &[1, 6, 3])],
            value_info: vec![],
        },
    };
    let device = Arc::new(Device::open_simulated(KmdConfig::default()).unwrap());
    let ids_bytes = |ids: &[i64]| ids.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    for cores in [1, 3] {
        for fp16 in [false, true] {
            let c = compile(&model, None, "gather", &CompileOptions { cores, fp16, ..Default::default() }).unwrap();
            let program = Program::from_image(c.image).unwrap();
            let act = Activation::new(device.clone(), &program).unwrap();
            let ids = [4i64, 0, 2, 2, 1, 3];
            let got = bytes_f32(&act.run(&[&ids_bytes(&ids)]).unwrap()[0]);
            let want: Vec<f32> =
                ids.iter().flat_map(|&i| (0..3).map(|j| table[i as usize * 3 + j] + 1.0).collect::<Vec<_>>()).collect();
            assert_eq!(got, want, "cores={cores} fp16={fp16}");
            for bad in [5i64, -1] {
                let e = act.run(&[&ids_bytes(&[0, 1, bad, 0, 0, 0])]).unwrap_err();
                let text = e.to_string();
                assert!(text.contains("fault"), "cores={cores} id {bad}: {text}");
            }
            // Still serving after the refused ones.
            assert_eq!(bytes_f32(&act.run(&[&ids_bytes(&ids)]).unwrap()[0]), want);
        }
    }
}
