//! Reading ONNX models: every field the compiler needs, and no panic on bad bytes.

use aicsim_compiler::onnx::{data_type, parse_model, AttributeValue, Dim, OnnxError, TensorData};
use proptest::prelude::*;

/// A minimal protobuf writer for building test models.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    fn key(&mut self, field: u64, wire: u64) {
        self.varint(field << 3 | wire);
    }
    fn int(mut self, field: u64, v: i64) -> Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }
    fn float(mut self, field: u64, v: f32) -> Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, field: u64, b: &[u8]) -> Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, field: u64, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(self, field: u64, m: Msg) -> Self {
        self.bytes(field, &m.0)
    }
    fn packed_ints(self, field: u64, v: &[i64]) -> Self {
        let mut inner = Msg::default();
        for &x in v {
            inner.varint(x as u64);
        }
        self.bytes(field, &inner.0)
    }
}

fn value_info(name: &str, dims: &[Result<i64, &str>]) -> Msg {
    let mut shape = Msg::default();
    for d in dims {
        shape = shape.msg(
            1,
            match d {
                Ok(v) => Msg::default().int(1, *v),
                Err(p) => Msg::default().str(2, p),
            },
        );
    }
    let tensor_type = Msg::default().int(1, data_type::FLOAT as i64).msg(2, shape);
    Msg::default().str(1, name).msg(2, Msg::default().msg(1, tensor_type))
}

fn model(external_dir: Option<&std::path::Path>) -> Vec<u8> {
    let weights: Vec<u8> = (0..8).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
    let w = Msg::default().packed_ints(1, &[2, 1, 2, 2]).int(2, data_type::FLOAT as i64).str(8, "w").bytes(9, &weights);
    let b =
        Msg::default().packed_ints(1, &[2]).int(2, data_type::FLOAT as i64).str(8, "b").float(4, 0.25).float(4, -0.75);
    let mut graph = Msg::default().str(2, "tiny").msg(5, w).msg(5, b);
    if let Some(dir) = external_dir {
        let data: Vec<u8> = [9.0f32, 8.0, 7.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut file = vec![0u8; 16];
        file.extend_from_slice(&data);
        std::fs::write(dir.join("weights.bin"), &file).unwrap();
        let entry = |k: &str, v: &str| Msg::default().str(1, k).str(2, v);
        let ext = Msg::default()
            .packed_ints(1, &[3])
            .int(2, data_type::FLOAT as i64)
            .str(8, "ext")
            .msg(13, entry("location", "weights.bin"))
            .msg(13, entry("offset", "16"))
            .msg(13, entry("length", "12"))
            .int(14, 1);
        graph = graph.msg(5, ext);
    }
    let conv = Msg::default()
        .str(1, "x")
        .str(1, "w")
        .str(1, "b")
        .str(2, "y")
        .str(3, "conv0")
        .str(4, "Conv")
        .msg(5, Msg::default().str(1, "kernel_shape").packed_ints(8, &[2, 2]).int(20, 7))
        .msg(5, Msg::default().str(1, "group").int(3, 1).int(20, 2))
        .msg(5, Msg::default().str(1, "auto_pad").bytes(4, b"NOTSET").int(20, 3))
        .msg(5, Msg::default().str(1, "pads").int(8, 0).int(8, 0).int(8, 1).int(8, 1));
    let relu = Msg::default()
        .str(1, "y")
        .str(2, "z")
        .str(3, "act")
        .str(4, "LeakyRelu")
        .msg(5, Msg::default().str(1, "alpha").float(2, 0.125));
    graph = graph
        .msg(1, conv)
        .msg(1, relu)
        .msg(11, value_info("x", &[Err("batch_size"), Ok(1), Ok(5), Ok(5)]))
        .msg(12, value_info("z", &[Err("batch_size"), Ok(2), Ok(4), Ok(4)]));
    Msg::default().int(1, 7).str(2, "aicsim-test").msg(8, Msg::default().str(1, "").int(2, 13)).msg(7, graph).0
}

#[test]
fn every_field_the_compiler_needs_is_read() {
    let m = parse_model(&model(None)).unwrap();
    assert_eq!((m.ir_version, m.producer_name.as_str(), m.opset()), (7, "aicsim-test", Some(13)));
    let g = &m.graph;
    assert_eq!(g.name, "tiny");
    assert_eq!(g.nodes.len(), 2);
    let conv = &g.nodes[0];
    assert_eq!((conv.op_type.as_str(), conv.name.as_str()), ("Conv", "conv0"));
    assert_eq!(conv.inputs, ["x", "w", "b"]);
    assert_eq!(conv.outputs, ["y"]);
    assert_eq!(conv.attribute("kernel_shape"), Some(&AttributeValue::Ints(vec![2, 2])));
    assert_eq!(conv.attribute("group"), Some(&AttributeValue::Int(1)));
    assert_eq!(conv.attribute("auto_pad"), Some(&AttributeValue::String(b"NOTSET".to_vec())));
    assert_eq!(
        conv.attribute("pads"),
        Some(&AttributeValue::Ints(vec![0, 0, 1, 1])),
        "unpacked repeated ints, type inferred"
    );
    assert_eq!(g.nodes[1].attribute("alpha"), Some(&AttributeValue::Float(0.125)));
    assert_eq!(
        g.inputs[0].shape,
        Some(vec![Dim::Param("batch_size".into()), Dim::Value(1), Dim::Value(5), Dim::Value(5)])
    );
    assert_eq!(g.initializers[0].dims, vec![2, 1, 2, 2]);
    assert!(matches!(g.initializers[0].data, TensorData::Raw(_)));
    assert_eq!(g.initializers[0].to_f32(None).unwrap(), (0..8).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
    assert_eq!(g.initializers[1].to_f32(None).unwrap(), vec![0.25, -0.75]);
}

#[test]
fn external_data_is_read_from_next_to_the_model_and_bounds_checked() {
    let dir = std::env::temp_dir().join(format!("aicsim-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let m = parse_model(&model(Some(&dir))).unwrap();
    let ext = m.graph.initializers.iter().find(|t| t.name == "ext").unwrap();
    assert_eq!(ext.to_f32(Some(&dir)).unwrap(), vec![9.0, 8.0, 7.0]);
    std::fs::write(dir.join("weights.bin"), [0u8; 20]).unwrap();
    let err = ext.to_f32(Some(&dir)).unwrap_err();
    assert!(matches!(err, OnnxError::ExternalData { .. }), "{err}");
    assert!(err.to_string().contains("outside the 20-byte file"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_value_count_that_does_not_match_the_dimensions_is_named() {
    let t = Msg::default().packed_ints(1, &[3]).int(2, data_type::FLOAT as i64).str(8, "short").float(4, 1.0);
    let bytes = Msg::default().int(1, 7).msg(8, Msg::default().int(2, 13)).msg(7, Msg::default().msg(5, t)).0;
    let m = parse_model(&bytes).unwrap();
    let err = m.graph.initializers[0].to_f32(None).unwrap_err().to_string();
    assert_eq!(err, "TensorProto: tensor 'short' has 1 values but its dimensions [3] need 3");
}

#[test]
fn structural_problems_are_named() {
    assert_eq!(parse_model(&Msg::default().int(1, 7).0).unwrap_err().to_string(), "ModelProto: no graph");
    let no_op = Msg::default()
        .int(1, 7)
        .msg(8, Msg::default().int(2, 13))
        .msg(7, Msg::default().msg(1, Msg::default().str(3, "n1")))
        .0;
    assert_eq!(parse_model(&no_op).unwrap_err().to_string(), "NodeProto: node 'n1' has no op_type");
    let wrong = Msg::default().str(1, "seven").0;
    assert!(parse_model(&wrong)
        .unwrap_err()
        .to_string()
        .contains("ModelProto: field 1 (ir_version) should be a varint"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Err(e) = parse_model(&bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn mutations_of_a_real_model_never_panic_the_reader(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cut in any::<usize>()) {
        let mut bytes = model(None);
        for (at, v) in flips {
            let n = bytes.len();
            bytes[at % n] = v;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok(m) = parse_model(&bytes) {
            for t in &m.graph.initializers {
                let _ = t.to_f32(None);
            }
        }
    }
}
