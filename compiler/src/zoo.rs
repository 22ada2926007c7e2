//! Built-in models, written here as ONNX graphs with deterministic synthetic weights
//! (`-m=zoo:<name>`): ResNet-50 (v1.5, 224x224, ~4.1 GMAC, 25.6 M parameters),
//! MobileNetV2 (224x224, ~0.3 GMAC) and a BERT-base encoder (12 layers, hidden 768,
//! 12 heads, sequence 128; its input is the embedded sequence). They compile through
//! the same import and lowering as a file, so they exercise the real path; the weights
//! are uniform with He-like scaling from a fixed seed, so outputs are reproducible.

use crate::onnx::{
    data_type, Attribute, AttributeValue, Dim, Graph, Model, Node, OpsetId, Tensor, TensorData, ValueInfo,
};
use crate::CompileError;

/// The zoo's model names (the last two are small test models for quantisation: a float
/// CNN to calibrate and a model already in QDQ form).
pub const NAMES: [&str; 5] = ["resnet50", "mobilenetv2", "bert-base", "small-cnn", "qdq-cnn"];

/// Builds a zoo model by name.
pub fn model(name: &str) -> Result<Model, CompileError> {
    match name {
        "resnet50" => Ok(resnet50()),
        "mobilenetv2" => Ok(mobilenet_v2()),
        "bert-base" => Ok(bert_base()),
        "small-cnn" => Ok(small_cnn()),
        "qdq-cnn" => Ok(qdq_cnn()),
        other => Err(CompileError::Model(format!("no zoo model '{other}' (the zoo has {})", NAMES.join(", ")))),
    }
}

struct Builder {
    nodes: Vec<Node>,
    inits: Vec<Tensor>,
    state: u64,
    count: usize,
}

fn attr(name: &str, value: AttributeValue) -> Attribute {
    Attribute { name: name.into(), value }
}

fn ints(v: &[i64]) -> AttributeValue {
    AttributeValue::Ints(v.to_vec())
}

impl Builder {
    fn new(seed: u64) -> Builder {
        Builder { nodes: Vec::new(), inits: Vec::new(), state: seed, count: 0 }
    }

    /// splitmix64: a uniform value in [-1, 1).
    fn uniform(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn name(&mut self, prefix: &str) -> String {
        self.count += 1;
        format!("{prefix}_{}", self.count)
    }

    /// A weight with standard deviation `std` (uniform, same variance).
    fn weight(&mut self, prefix: &str, dims: &[i64], std: f32) -> String {
        let n: i64 = dims.iter().product();
        let a = std * 3f32.sqrt();
        let values: Vec<f32> = (0..n).map(|_| self.uniform() * a).collect();
        self.constant(prefix, dims, values)
    }

    fn constant(&mut self, prefix: &str, dims: &[i64], values: Vec<f32>) -> String {
        let name = self.name(prefix);
        self.inits.push(Tensor {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            data: TensorData::Floats(values),
        });
        name
    }

    /// An integer tensor of ONNX element type `data_type` (its values as int32_data).
    fn int_tensor(&mut self, prefix: &str, dims: &[i64], data_type: i32, values: Vec<i64>) -> String {
        let name = self.name(prefix);
        self.inits.push(Tensor {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type,
            data: TensorData::Int32s(values),
        });
        name
    }

    fn ints_const(&mut self, prefix: &str, values: &[i64]) -> String {
        let name = self.name(prefix);
        self.inits.push(Tensor {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: data_type::INT64,
            data: TensorData::Int64s(values.to_vec()),
        });
        name
    }

    fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<Attribute>) -> String {
        let out = self.name(&op.to_lowercase());
        self.nodes.push(Node {
            name: out.clone(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.clone()],
            attributes,
        });
        out
    }

    fn conv(&mut self, x: &str, ci: i64, co: i64, k: i64, stride: i64, groups: i64) -> String {
        let fan_in = (ci / groups) * k * k;
        let w = self.weight("w", &[co, ci / groups, k, k], (2.0 / fan_in as f32).sqrt());
        let p = (k - 1) / 2;
        self.node(
            "Conv",
            &[x, &w],
            vec![
                attr("kernel_shape", ints(&[k, k])),
                attr("strides", ints(&[stride, stride])),
                attr("pads", ints(&[p, p, p, p])),
                attr("group", AttributeValue::Int(groups)),
            ],
        )
    }

    fn bn(&mut self, x: &str, c: usize) -> String {
        let scale: Vec<f32> = (0..c).map(|_| 0.4 + 0.2 * self.uniform()).collect();
        let bias: Vec<f32> = (0..c).map(|_| 0.05 * self.uniform()).collect();
        let mean: Vec<f32> = (0..c).map(|_| 0.05 * self.uniform()).collect();
        let var: Vec<f32> = (0..c).map(|_| 1.0 + 0.25 * self.uniform()).collect();
        let d = [c as i64];
        let names = [
            self.constant("bn_s", &d, scale),
            self.constant("bn_b", &d, bias),
            self.constant("bn_m", &d, mean),
            self.constant("bn_v", &d, var),
        ];
        self.node(
            "BatchNormalization",
            &[x, &names[0], &names[1], &names[2], &names[3]],
            vec![attr("epsilon", AttributeValue::Float(1e-5))],
        )
    }

    /// Convolution `[ci, co, kernel, stride, groups]`, batch norm, activation.
    fn conv_bn(&mut self, x: &str, [ci, co, k, stride, groups]: [i64; 5], act: Option<&str>) -> String {
        let c = self.conv(x, ci, co, k, stride, groups);
        let b = self.bn(&c, co as usize);
        match act {
            Some("Relu") => self.node("Relu", &[&b], vec![]),
            Some("Relu6") => self.node(
                "Clip",
                &[&b],
                vec![attr("min", AttributeValue::Float(0.0)), attr("max", AttributeValue::Float(6.0))],
            ),
            _ => b,
        }
    }

    fn dense(&mut self, x: &str, k: i64, n: i64) -> String {
        let w = self.weight("fc_w", &[k, n], (1.0 / k as f32).sqrt());
        let b = self.weight("fc_b", &[n], 0.02);
        let m = self.node("MatMul", &[x, &w], vec![]);
        self.node("Add", &[&m, &b], vec![])
    }

    fn finish(self, name: &str, opset: i64, input: (&str, Vec<i64>), output: &str) -> Model {
        let vi = |n: &str, dims: Option<Vec<i64>>| ValueInfo {
            name: n.into(),
            elem_type: data_type::FLOAT,
            shape: dims.map(|d| d.into_iter().map(Dim::Value).collect()),
        };
        Model {
            ir_version: 8,
            opset_imports: vec![OpsetId { domain: String::new(), version: opset }],
            producer_name: "aicsim-zoo".into(),
            graph: Graph {
                name: name.into(),
                nodes: self.nodes,
                initializers: self.inits,
                inputs: vec![vi(input.0, Some(input.1))],
                outputs: vec![vi(output, None)],
                value_info: vec![],
            },
        }
    }
}

/// ResNet-50 v1.5 (stride on the 3x3 convolution of each downsampling block).
pub fn resnet50() -> Model {
    let mut b = Builder::new(50);
    let mut x = b.conv_bn("data", [3, 64, 7, 2, 1], Some("Relu"));
    x = b.node(
        "MaxPool",
        &[&x],
        vec![attr("kernel_shape", ints(&[3, 3])), attr("strides", ints(&[2, 2])), attr("pads", ints(&[1, 1, 1, 1]))],
    );
    let mut ci = 64;
    for (stage, (&blocks, &width)) in [3, 4, 6, 3].iter().zip(&[64i64, 128, 256, 512]).enumerate() {
        for block in 0..blocks {
            let stride = if block == 0 && stage > 0 { 2 } else { 1 };
            let co = width * 4;
            let a = b.conv_bn(&x, [ci, width, 1, 1, 1], Some("Relu"));
            let m = b.conv_bn(&a, [width, width, 3, stride, 1], Some("Relu"));
            let c = b.conv_bn(&m, [width, co, 1, 1, 1], None);
            let skip = if block == 0 { b.conv_bn(&x, [ci, co, 1, stride, 1], None) } else { x.clone() };
            let s = b.node("Add", &[&c, &skip], vec![]);
            x = b.node("Relu", &[&s], vec![]);
            ci = co;
        }
    }
    let p = b.node("GlobalAveragePool", &[&x], vec![]);
    let f = b.node("Flatten", &[&p], vec![attr("axis", AttributeValue::Int(1))]);
    let l = b.dense(&f, 2048, 1000);
    let y = b.node("Softmax", &[&l], vec![attr("axis", AttributeValue::Int(1))]);
    b.finish("resnet50", 13, ("data", vec![1, 3, 224, 224]), &y)
}

/// MobileNetV2 (width 1.0).
pub fn mobilenet_v2() -> Model {
    let mut b = Builder::new(2);
    let mut x = b.conv_bn("data", [3, 32, 3, 2, 1], Some("Relu6"));
    let mut ci = 32;
    for &(t, c, n, s) in
        &[(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = ci * t;
            let e = if t == 1 { x.clone() } else { b.conv_bn(&x, [ci, hidden, 1, 1, 1], Some("Relu6")) };
            let d = b.conv_bn(&e, [hidden, hidden, 3, stride, hidden], Some("Relu6"));
            let p = b.conv_bn(&d, [hidden, c, 1, 1, 1], None);
            x = if stride == 1 && ci == c { b.node("Add", &[&p, &x], vec![]) } else { p };
            ci = c;
        }
    }
    let h = b.conv_bn(&x, [ci, 1280, 1, 1, 1], Some("Relu6"));
    let p = b.node("GlobalAveragePool", &[&h], vec![]);
    let f = b.node("Flatten", &[&p], vec![attr("axis", AttributeValue::Int(1))]);
    let l = b.dense(&f, 1280, 1000);
    let y = b.node("Softmax", &[&l], vec![attr("axis", AttributeValue::Int(1))]);
    b.finish("mobilenetv2", 13, ("data", vec![1, 3, 224, 224]), &y)
}

/// A BERT-base encoder over an embedded sequence `[1, 128, 768]`.
pub fn bert_base() -> Model {
    bert(12, 768, 12, 128, 3072)
}

/// A BERT-style encoder: `layers` x (self-attention, feed-forward), post-layer-norm.
pub fn bert(layers: usize, hidden: i64, heads: i64, seq: i64, ffn: i64) -> Model {
    let mut b = Builder::new(768);
    let d = hidden / heads;
    let split = b.ints_const("split_heads", &[1, seq, heads, d]);
    let merge = b.ints_const("merge_heads", &[1, seq, hidden]);
    let mut x = "embeddings".to_string();
    let ln = |b: &mut Builder, x: &str| {
        let g = b.constant("ln_g", &[hidden], vec![1.0; hidden as usize]);
        let z = b.constant("ln_b", &[hidden], vec![0.0; hidden as usize]);
        b.node(
            "LayerNormalization",
            &[x, &g, &z],
            vec![attr("axis", AttributeValue::Int(-1)), attr("epsilon", AttributeValue::Float(1e-12))],
        )
    };
    for _ in 0..layers {
        let heads_of = |b: &mut Builder, x: &str, perm: &[i64]| {
            let p = b.dense(x, hidden, hidden);
            let r = b.node("Reshape", &[&p, &split], vec![]);
            b.node("Transpose", &[&r], vec![attr("perm", ints(perm))])
        };
        let q = heads_of(&mut b, &x, &[0, 2, 1, 3]);
        let k = heads_of(&mut b, &x, &[0, 2, 3, 1]);
        let v = heads_of(&mut b, &x, &[0, 2, 1, 3]);
        let s = b.node("MatMul", &[&q, &k], vec![]);
        let scale = b.constant("scale", &[], vec![1.0 / (d as f32).sqrt()]);
        let s = b.node("Mul", &[&s, &scale], vec![]);
        let p = b.node("Softmax", &[&s], vec![attr("axis", AttributeValue::Int(-1))]);
        let c = b.node("MatMul", &[&p, &v], vec![]);
        let c = b.node("Transpose", &[&c], vec![attr("perm", ints(&[0, 2, 1, 3]))]);
        let c = b.node("Reshape", &[&c, &merge], vec![]);
        let o = b.dense(&c, hidden, hidden);
        let r = b.node("Add", &[&o, &x], vec![]);
        let h = ln(&mut b, &r);
        let f = b.dense(&h, hidden, ffn);
        let f = b.node("Gelu", &[&f], vec![]);
        let f = b.dense(&f, ffn, hidden);
        let r = b.node("Add", &[&f, &h], vec![]);
        x = ln(&mut b, &r);
    }
    b.finish("bert", 20, ("embeddings", vec![1, seq, hidden]), &x)
}

/// A small QDQ model as onnxruntime's static quantiser writes one (a test model): `x [1, 4, 8, 8]` quantised to uint8, two 3x3 convolutions on int8 weights
/// (per output channel) and int32 biases, the second over the ReLU'd first plus a
/// residual `Add` of dequantised values, dequantised to the float output.
pub fn qdq_cnn() -> Model {
    let mut b = Builder::new(8);
    let scale = |b: &mut Builder, value: f32| b.constant("scale", &[], vec![value]);
    let q = |b: &mut Builder, x: &str, s: &str, z: &str| b.node("QuantizeLinear", &[x, s, z], vec![]);
    let dq = |b: &mut Builder, x: &str, s: &str, z: &str| b.node("DequantizeLinear", &[x, s, z], vec![]);
    let (c, k) = (4i64, 3i64);
    let per_channel = || vec![attr("axis", AttributeValue::Int(0))];
    let conv = |b: &mut Builder, x: &str, sx: f32| -> String {
        let values: Vec<i64> = (0..c * c * k * k).map(|_| (b.uniform() * 100.0) as i64).collect();
        let w = b.int_tensor("w_int8", &[c, c, k, k], data_type::INT8, values);
        let ws: Vec<f32> = (0..c).map(|i| 0.002 + 0.001 * i as f32).collect();
        let wscale = b.constant("w_scale", &[c], ws.clone());
        let wz = b.int_tensor("w_zero_point", &[c], data_type::INT8, vec![0; c as usize]);
        let wf = b.node("DequantizeLinear", &[&w, &wscale, &wz], per_channel());
        let bias: Vec<i64> = (0..c).map(|_| (b.uniform() * 500.0) as i64).collect();
        let bq = b.int_tensor("b_int32", &[c], data_type::INT32, bias);
        let bscale = b.constant("b_scale", &[c], ws.iter().map(|s| s * sx).collect());
        let bz = b.int_tensor("b_zero_point", &[c], data_type::INT32, vec![0; c as usize]);
        let bf = b.node("DequantizeLinear", &[&bq, &bscale, &bz], per_channel());
        let pads = attr("pads", ints(&[1, 1, 1, 1]));
        b.node("Conv", &[x, &wf, &bf], vec![attr("kernel_shape", ints(&[k, k])), pads])
    };
    let zero_point = |b: &mut Builder, v: i64| b.int_tensor("zero_point", &[], data_type::UINT8, vec![v]);
    let (s0, z0) = (scale(&mut b, 0.01), zero_point(&mut b, 128));
    let xq = q(&mut b, "x", &s0, &z0);
    let xf = dq(&mut b, &xq, &s0, &z0);
    let c1 = conv(&mut b, &xf, 0.01);
    let (s1, z1) = (scale(&mut b, 0.02), zero_point(&mut b, 0));
    let r1 = q(&mut b, &c1, &s1, &z1);
    let r1f = dq(&mut b, &r1, &s1, &z1);
    let c2 = conv(&mut b, &r1f, 0.02);
    let (s2, z2) = (scale(&mut b, 0.03), zero_point(&mut b, 120));
    let c2q = q(&mut b, &c2, &s2, &z2);
    let c2f = dq(&mut b, &c2q, &s2, &z2);
    let sum = b.node("Add", &[&c2f, &r1f], vec![]);
    let (s3, z3) = (scale(&mut b, 0.04), zero_point(&mut b, 100));
    let yq = q(&mut b, &sum, &s3, &z3);
    let y = dq(&mut b, &yq, &s3, &z3);
    b.finish("qdq_cnn", 13, ("x", vec![1, c, 8, 8]), &y)
}

/// A small float CNN (a test model for quantisation): `x [1, 3, 16,
/// 16]` through 3x3 convolutions with biases and ReLUs, a strided one, a residual `Add`
/// over a 1x1 convolution, max pooling, global average pooling and a dense layer to 10
/// scores.
pub fn small_cnn() -> Model {
    let mut b = Builder::new(16);
    let conv = |b: &mut Builder, x: &str, ci: i64, co: i64, k: i64, stride: i64| -> String {
        let w = b.weight("w", &[co, ci, k, k], (2.0 / (ci * k * k) as f32).sqrt());
        let bias = b.weight("b", &[co], 0.1);
        let p = (k - 1) / 2;
        let attrs = vec![
            attr("kernel_shape", ints(&[k, k])),
            attr("strides", ints(&[stride, stride])),
            attr("pads", ints(&[p, p, p, p])),
        ];
        b.node("Conv", &[x, &w, &bias], attrs)
    };
    let c1 = conv(&mut b, "x", 3, 8, 3, 1);
    let r1 = b.node("Relu", &[&c1], vec![]);
    let c2 = conv(&mut b, &r1, 8, 16, 3, 2);
    let r2 = b.node("Relu", &[&c2], vec![]);
    let c3 = conv(&mut b, &r2, 16, 16, 1, 1);
    let s = b.node("Add", &[&c3, &r2], vec![]);
    let r3 = b.node("Relu", &[&s], vec![]);
    let p = b.node("MaxPool", &[&r3], vec![attr("kernel_shape", ints(&[2, 2])), attr("strides", ints(&[2, 2]))]);
    let c4 = conv(&mut b, &p, 16, 24, 3, 1);
    let r4 = b.node("Relu", &[&c4], vec![]);
    let g = b.node("GlobalAveragePool", &[&r4], vec![]);
    let f = b.node("Flatten", &[&g], vec![attr("axis", AttributeValue::Int(1))]);
    let y = b.dense(&f, 24, 10);
    b.finish("small_cnn", 13, ("x", vec![1, 3, 16, 16]), &y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, CompileOptions};

    #[test]
    fn every_zoo_model_compiles_and_has_its_published_size() {
        let r = compile(&resnet50(), None, "resnet50", &CompileOptions::default()).unwrap();
        let gmac = r.graph.macs() as f64 / 1e9;
        assert!((4.0..4.2).contains(&gmac), "ResNet-50 is ~4.1 GMAC, got {gmac}");
        let params: usize = r.lowered.constants.iter().map(|c| c.data.len() / 4).sum();
        assert!((25_400_000..25_700_000).contains(&params), "ResNet-50 has ~25.6 M parameters, got {params}");
        let m = compile(&mobilenet_v2(), None, "mobilenetv2", &CompileOptions::default()).unwrap();
        let gmac = m.graph.macs() as f64 / 1e9;
        assert!((0.28..0.32).contains(&gmac), "MobileNetV2 is ~0.3 GMAC, got {gmac}");
        let small =
            compile(&bert(2, 128, 4, 32, 512), None, "bert", &CompileOptions { cores: 2, ..Default::default() })
                .unwrap();
        assert_eq!(small.image.num_cores(), 2);
        assert!(model("nope").is_err());
    }
}
