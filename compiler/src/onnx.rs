//! ONNX messages (the subset of `onnx.proto` a compiler needs), decoded from untrusted
//! bytes: model, opset imports, graph, nodes, attributes, tensors (inline, raw or in
//! external-data files) and value infos with symbolic or fixed dimensions. Every error
//! names the message and field; nothing panics.

use std::path::Path;

use crate::protobuf::{Reader, WireError, MAX_DEPTH};

/// Why a model cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OnnxError {
    #[error("malformed ONNX protobuf: {0}")]
    Wire(#[from] WireError),
    #[error("{message}: {reason}")]
    Invalid { message: &'static str, reason: String },
    #[error("tensor '{tensor}': external data {path}: {reason}")]
    ExternalData { tensor: String, path: String, reason: String },
}

fn invalid(message: &'static str, reason: impl Into<String>) -> OnnxError {
    OnnxError::Invalid { message, reason: reason.into() }
}

/// `TensorProto.DataType` values the compiler understands.
pub mod data_type {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;

    /// Whether elements of this type are integers (booleans included).
    pub fn is_integer(t: i32) -> bool {
        matches!(t, UINT8 | INT8 | UINT16 | INT16 | INT32 | INT64 | BOOL)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub ir_version: i64,
    pub opset_imports: Vec<OpsetId>,
    pub producer_name: String,
    pub graph: Graph,
}

impl Model {
    /// The opset version of the default (`""` or `ai.onnx`) domain.
    pub fn opset(&self) -> Option<i64> {
        self.opset_imports.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsetId {
    pub domain: String,
    pub version: i64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub value_info: Vec<ValueInfo>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attributes: Vec<Attribute>,
}

impl Node {
    pub fn attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.attributes.iter().find(|a| a.name == name).map(|a| &a.value)
    }

    /// An `ints` attribute.
    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        match self.attribute(name) {
            Some(AttributeValue::Ints(v)) => Some(v.clone()),
            _ => None,
        }
    }

    /// An `int` attribute, or `default`.
    pub fn attr_int(&self, name: &str, default: i64) -> i64 {
        match self.attribute(name) {
            Some(AttributeValue::Int(v)) => *v,
            _ => default,
        }
    }

    /// A `float` attribute, or `default`.
    pub fn attr_float(&self, name: &str, default: f32) -> f32 {
        match self.attribute(name) {
            Some(AttributeValue::Float(v)) => *v,
            _ => default,
        }
    }

    /// A `string` attribute (lossily UTF-8).
    pub fn attr_string(&self, name: &str) -> Option<String> {
        match self.attribute(name) {
            Some(AttributeValue::String(s)) => Some(String::from_utf8_lossy(s).into_owned()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: AttributeValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Tensor),
    Graph(Box<Graph>),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    Tensors(Vec<Tensor>),
    Graphs(Vec<Graph>),
}

/// Where a tensor's values are.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `raw_data`: little-endian values of `data_type`.
    Raw(Vec<u8>),
    Floats(Vec<f32>),
    /// `int32_data`, which also carries int8/uint8/bool/float16 values.
    Int32s(Vec<i64>),
    Int64s(Vec<i64>),
    Doubles(Vec<f64>),
    Strings(Vec<Vec<u8>>),
    /// In a file next to the model.
    External {
        location: String,
        offset: u64,
        length: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    pub data: TensorData,
}

/// One dimension of a value's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Value(i64),
    /// A symbolic dimension (`-onnx-define-symbol` gives it a value).
    Param(String),
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueInfo {
    pub name: String,
    /// `TensorProto.DataType`; 0 when not a tensor type.
    pub elem_type: i32,
    /// `None` when the shape is not given at all.
    pub shape: Option<Vec<Dim>>,
}

/// Parses a serialized `ModelProto`.
pub fn parse_model(bytes: &[u8]) -> Result<Model, OnnxError> {
    let mut r = Reader::new("ModelProto", bytes);
    let mut model =
        Model { ir_version: 0, opset_imports: Vec::new(), producer_name: String::new(), graph: Graph::default() };
    let mut graph = None;
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => model.ir_version = r.int(1, "ir_version", v)?,
            2 => model.producer_name = r.string(2, "producer_name", v)?,
            7 => graph = Some(parse_graph(r.bytes(7, "graph", v)?, 1)?),
            8 => model.opset_imports.push(parse_opset(r.bytes(8, "opset_import", v)?)?),
            _ => {}
        }
    }
    model.graph = graph.ok_or_else(|| invalid("ModelProto", "no graph"))?;
    if model.opset_imports.is_empty() {
        return Err(invalid("ModelProto", "no opset_import"));
    }
    Ok(model)
}

fn parse_opset(bytes: &[u8]) -> Result<OpsetId, OnnxError> {
    let mut r = Reader::new("OperatorSetIdProto", bytes);
    let mut o = OpsetId { domain: String::new(), version: 0 };
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => o.domain = r.string(1, "domain", v)?,
            2 => o.version = r.int(2, "version", v)?,
            _ => {}
        }
    }
    Ok(o)
}

fn parse_graph(bytes: &[u8], depth: usize) -> Result<Graph, OnnxError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep { message: "GraphProto" }.into());
    }
    let mut r = Reader::new("GraphProto", bytes);
    let mut g = Graph::default();
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => g.nodes.push(parse_node(r.bytes(1, "node", v)?, depth)?),
            2 => g.name = r.string(2, "name", v)?,
            5 => g.initializers.push(parse_tensor(r.bytes(5, "initializer", v)?)?),
            11 => g.inputs.push(parse_value_info(r.bytes(11, "input", v)?)?),
            12 => g.outputs.push(parse_value_info(r.bytes(12, "output", v)?)?),
            13 => g.value_info.push(parse_value_info(r.bytes(13, "value_info", v)?)?),
            _ => {}
        }
    }
    Ok(g)
}

fn parse_node(bytes: &[u8], depth: usize) -> Result<Node, OnnxError> {
    let mut r = Reader::new("NodeProto", bytes);
    let mut n = Node::default();
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => n.inputs.push(r.string(1, "input", v)?),
            2 => n.outputs.push(r.string(2, "output", v)?),
            3 => n.name = r.string(3, "name", v)?,
            4 => n.op_type = r.string(4, "op_type", v)?,
            5 => n.attributes.push(parse_attribute(r.bytes(5, "attribute", v)?, depth)?),
            7 => n.domain = r.string(7, "domain", v)?,
            _ => {}
        }
    }
    if n.op_type.is_empty() {
        return Err(invalid("NodeProto", format!("node '{}' has no op_type", n.name)));
    }
    Ok(n)
}

fn parse_attribute(bytes: &[u8], depth: usize) -> Result<Attribute, OnnxError> {
    let mut r = Reader::new("AttributeProto", bytes);
    let (mut name, mut kind) = (String::new(), None);
    let (mut f, mut i, mut s, mut t, mut g) = (None, None, None, None, None);
    let (mut floats, mut ints, mut strings, mut tensors, mut graphs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => name = r.string(1, "name", v)?,
            2 => f = Some(r.float(2, "f", v)?),
            3 => i = Some(r.int(3, "i", v)?),
            4 => s = Some(r.bytes(4, "s", v)?.to_vec()),
            5 => t = Some(parse_tensor(r.bytes(5, "t", v)?)?),
            6 => g = Some(parse_graph(r.bytes(6, "g", v)?, depth + 1)?),
            7 => r.floats(7, "floats", v, &mut floats)?,
            8 => r.ints(8, "ints", v, &mut ints)?,
            9 => strings.push(r.bytes(9, "strings", v)?.to_vec()),
            10 => tensors.push(parse_tensor(r.bytes(10, "tensors", v)?)?),
            11 => graphs.push(parse_graph(r.bytes(11, "graphs", v)?, depth + 1)?),
            20 => kind = Some(r.int(20, "type", v)?),
            _ => {}
        }
    }
    // AttributeType: FLOAT 1, INT 2, STRING 3, TENSOR 4, GRAPH 5, FLOATS 6, INTS 7,
    // STRINGS 8, TENSORS 9, GRAPHS 10. Old models may omit it: infer from the field set.
    let kind = kind.unwrap_or(match () {
        _ if f.is_some() => 1,
        _ if i.is_some() => 2,
        _ if s.is_some() => 3,
        _ if t.is_some() => 4,
        _ if g.is_some() => 5,
        _ if !floats.is_empty() => 6,
        _ if !ints.is_empty() => 7,
        _ if !strings.is_empty() => 8,
        _ if !tensors.is_empty() => 9,
        _ => 10,
    });
    let missing =
        || invalid("AttributeProto", format!("attribute '{name}' declares type {kind} but has no such value"));
    let value = match kind {
        1 => AttributeValue::Float(f.ok_or_else(missing)?),
        2 => AttributeValue::Int(i.ok_or_else(missing)?),
        3 => AttributeValue::String(s.ok_or_else(missing)?),
        4 => AttributeValue::Tensor(t.ok_or_else(missing)?),
        5 => AttributeValue::Graph(Box::new(g.ok_or_else(missing)?)),
        6 => AttributeValue::Floats(floats),
        7 => AttributeValue::Ints(ints),
        8 => AttributeValue::Strings(strings),
        9 => AttributeValue::Tensors(tensors),
        10 => AttributeValue::Graphs(graphs),
        other => return Err(invalid("AttributeProto", format!("attribute '{name}' has unsupported type {other}"))),
    };
    Ok(Attribute { name, value })
}

fn parse_tensor(bytes: &[u8]) -> Result<Tensor, OnnxError> {
    let mut r = Reader::new("TensorProto", bytes);
    let (mut name, mut dims, mut data_type) = (String::new(), Vec::new(), 0);
    let (mut raw, mut floats, mut int32s, mut int64s, mut doubles, mut strings) =
        (None, Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut external, mut location_external) = (Vec::new(), false);
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => r.ints(1, "dims", v, &mut dims)?,
            2 => data_type = r.int(2, "data_type", v)? as i32,
            4 => r.floats(4, "float_data", v, &mut floats)?,
            5 => r.ints(5, "int32_data", v, &mut int32s)?,
            6 => strings.push(r.bytes(6, "string_data", v)?.to_vec()),
            7 => r.ints(7, "int64_data", v, &mut int64s)?,
            8 => name = r.string(8, "name", v)?,
            9 => raw = Some(r.bytes(9, "raw_data", v)?.to_vec()),
            10 => r.doubles(10, "double_data", v, &mut doubles)?,
            11 => r.ints(11, "uint64_data", v, &mut int64s)?,
            13 => external.push(parse_entry(r.bytes(13, "external_data", v)?)?),
            14 => location_external = r.int(14, "data_location", v)? == 1,
            _ => {}
        }
    }
    if dims.iter().any(|&d| d < 0) {
        return Err(invalid("TensorProto", format!("tensor '{name}' has a negative dimension {dims:?}")));
    }
    let data = if location_external {
        let get = |k: &str| external.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let location = get("location")
            .ok_or_else(|| invalid("TensorProto", format!("tensor '{name}' is external but names no location")))?;
        let number = |k: &str| -> Result<Option<u64>, OnnxError> {
            get(k)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        invalid("TensorProto", format!("tensor '{name}': external {k} '{v}' is not a number"))
                    })
                })
                .transpose()
        };
        TensorData::External { location, offset: number("offset")?.unwrap_or(0), length: number("length")? }
    } else if let Some(raw) = raw {
        TensorData::Raw(raw)
    } else if !floats.is_empty() {
        TensorData::Floats(floats)
    } else if !int64s.is_empty() {
        TensorData::Int64s(int64s)
    } else if !doubles.is_empty() {
        TensorData::Doubles(doubles)
    } else if !strings.is_empty() {
        TensorData::Strings(strings)
    } else {
        TensorData::Int32s(int32s)
    };
    Ok(Tensor { name, dims, data_type, data })
}

fn parse_entry(bytes: &[u8]) -> Result<(String, String), OnnxError> {
    let mut r = Reader::new("StringStringEntryProto", bytes);
    let (mut k, mut v) = (String::new(), String::new());
    while let Some((field, val)) = r.next_field()? {
        match field {
            1 => k = r.string(1, "key", val)?,
            2 => v = r.string(2, "value", val)?,
            _ => {}
        }
    }
    Ok((k, v))
}

fn parse_value_info(bytes: &[u8]) -> Result<ValueInfo, OnnxError> {
    let mut r = Reader::new("ValueInfoProto", bytes);
    let mut vi = ValueInfo { name: String::new(), elem_type: 0, shape: None };
    while let Some((field, v)) = r.next_field()? {
        match field {
            1 => vi.name = r.string(1, "name", v)?,
            2 => {
                // TypeProto: tensor_type = 1 -> { elem_type = 1, shape = 2 -> { dim = 1 } }.
                let mut tp = Reader::new("TypeProto", r.bytes(2, "type", v)?);
                while let Some((tf, tv)) = tp.next_field()? {
                    if tf != 1 {
                        continue;
                    }
                    let mut tt = Reader::new("TypeProto.Tensor", tp.bytes(1, "tensor_type", tv)?);
                    while let Some((f, val)) = tt.next_field()? {
                        match f {
                            1 => vi.elem_type = tt.int(1, "elem_type", val)? as i32,
                            2 => vi.shape = Some(parse_shape(tt.bytes(2, "shape", val)?)?),
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(vi)
}

fn parse_shape(bytes: &[u8]) -> Result<Vec<Dim>, OnnxError> {
    let mut r = Reader::new("TensorShapeProto", bytes);
    let mut dims = Vec::new();
    while let Some((field, v)) = r.next_field()? {
        if field != 1 {
            continue;
        }
        let mut d = Reader::new("TensorShapeProto.Dimension", r.bytes(1, "dim", v)?);
        let mut dim = Dim::Unknown;
        while let Some((f, val)) = d.next_field()? {
            match f {
                1 => dim = Dim::Value(d.int(1, "dim_value", val)?),
                2 => dim = Dim::Param(d.string(2, "dim_param", val)?),
                _ => {}
            }
        }
        dims.push(dim);
    }
    Ok(dims)
}

impl Tensor {
    /// Number of elements its dimensions give.
    pub fn elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(u64::try_from(d).ok()?))
    }

    /// The values as f32 (float, float16, double and integer tensors), reading external
    /// data relative to `model_dir`. Checks that the value count matches the dimensions.
    pub fn to_f32(&self, model_dir: Option<&Path>) -> Result<Vec<f32>, OnnxError> {
        let n = self
            .elements()
            .ok_or_else(|| invalid("TensorProto", format!("tensor '{}' has too many elements", self.name)))?
            as usize;
        let raw_owned;
        let values: Vec<f32> = match &self.data {
            TensorData::Floats(v) => v.clone(),
            TensorData::Doubles(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Int64s(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Int32s(v) if self.data_type == data_type::FLOAT16 => {
                v.iter().map(|&x| f16_to_f32(x as u16)).collect()
            }
            TensorData::Int32s(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Strings(_) => {
                return Err(invalid("TensorProto", format!("tensor '{}' holds strings", self.name)))
            }
            TensorData::Raw(raw) => decode_raw(&self.name, self.data_type, raw)?,
            TensorData::External { location, offset, length } => {
                raw_owned = read_external(&self.name, model_dir, location, *offset, *length)?;
                decode_raw(&self.name, self.data_type, &raw_owned)?
            }
        };
        if values.len() != n {
            return Err(invalid(
                "TensorProto",
                format!(
                    "tensor '{}' has {} values but its dimensions {:?} need {n}",
                    self.name,
                    values.len(),
                    self.dims
                ),
            ));
        }
        Ok(values)
    }
}

fn f16_to_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

fn decode_raw(name: &str, data_type: i32, raw: &[u8]) -> Result<Vec<f32>, OnnxError> {
    let width = match data_type {
        data_type::FLOAT | data_type::INT32 => 4,
        data_type::FLOAT16 | data_type::INT16 | data_type::UINT16 => 2,
        data_type::INT64 | data_type::DOUBLE => 8,
        data_type::INT8 | data_type::UINT8 | data_type::BOOL => 1,
        other => {
            return Err(invalid(
                "TensorProto",
                format!("tensor '{name}' has data type {other}, which aicsim does not read"),
            ))
        }
    };
    if !raw.len().is_multiple_of(width) {
        return Err(invalid(
            "TensorProto",
            format!("tensor '{name}' has {} raw bytes, not a multiple of {width}", raw.len()),
        ));
    }
    Ok(raw
        .chunks_exact(width)
        .map(|c| match data_type {
            data_type::FLOAT => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            data_type::INT32 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32,
            data_type::FLOAT16 => f16_to_f32(u16::from_le_bytes([c[0], c[1]])),
            data_type::INT16 => f32::from(i16::from_le_bytes([c[0], c[1]])),
            data_type::UINT16 => f32::from(u16::from_le_bytes([c[0], c[1]])),
            data_type::INT64 => i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            data_type::DOUBLE => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
            data_type::INT8 => f32::from(c[0] as i8),
            _ => f32::from(c[0]),
        })
        .collect())
}

fn read_external(
    tensor: &str,
    model_dir: Option<&Path>,
    location: &str,
    offset: u64,
    length: Option<u64>,
) -> Result<Vec<u8>, OnnxError> {
    let err = |reason: String| OnnxError::ExternalData { tensor: tensor.into(), path: location.into(), reason };
    let rel = Path::new(location);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(err("must be a relative path inside the model's directory".into()));
    }
    let path = model_dir.unwrap_or_else(|| Path::new(".")).join(rel);
    let bytes = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
    let start = usize::try_from(offset).map_err(|_| err("offset out of range".into()))?;
    let end = match length {
        Some(len) => start.checked_add(usize::try_from(len).map_err(|_| err("length out of range".into()))?),
        None => Some(bytes.len()),
    };
    match end {
        Some(end) if start <= end && end <= bytes.len() => Ok(bytes[start..end].to_vec()),
        _ => Err(err(format!("[{offset}, +{length:?}) is outside the {}-byte file", bytes.len()))),
    }
}
