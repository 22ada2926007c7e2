//! The whole compile: ONNX file -> program container, with the `aic-exec` options and
//! the resource and per-layer cost figures `-aic-perf-metrics` prints.

use std::collections::HashMap;
use std::path::Path;

use aicsim_abi::container::{HostFormat, HostLayout, IoBinding, IoDType, IoDirection, Layer, ProgramImage};
use aicsim_abi::isa::{DType, Instruction};

use crate::ir::Graph;
use crate::lower::{self, LayerReport, LowerOptions, Lowered};
use crate::onnx::{parse_model, Model};
use crate::CompileError;

/// Compile options (the `aic-exec` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct CompileOptions {
    /// `-onnx-define-symbol=name,value`.
    pub symbols: HashMap<String, i64>,
    /// `-aic-num-cores`.
    pub cores: u32,
    /// `-ols`: at least `cores x ols` tiles per layer (finer split for overlap).
    pub ols: u32,
    /// `-mos`: divides each core's VTCM tile budget (less on-chip memory per tile).
    pub mos: u32,
    /// `-batchsize`: samples per inference.
    pub batch_size: Option<u32>,
    /// `-convert-to-fp16`.
    pub fp16: bool,
    /// `-multicast-weights`.
    pub multicast_weights: bool,
    /// VTCM per core the program may use.
    pub vtcm_bytes: u64,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions {
            symbols: HashMap::new(),
            cores: 1,
            ols: 1,
            mos: 1,
            batch_size: None,
            fp16: false,
            multicast_weights: false,
            vtcm_bytes: 8 << 20,
        }
    }
}

/// A compiled program and what the compiler knows about it.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub image: ProgramImage,
    pub graph: Graph,
    pub lowered: Lowered,
    /// Copies of the graph per inference.
    pub replicas: usize,
    pub warnings: Vec<String>,
}

/// The `-aic-perf-metrics` summary.
#[derive(Clone, Debug, PartialEq)]
pub struct PerfMetrics {
    pub macs: u64,
    pub constants_bytes: u64,
    pub vtcm_bytes_per_core: u64,
    pub ddr_bytes: u64,
    pub io_bytes: u64,
    pub ddr_in_bytes: u64,
    pub ddr_out_bytes: u64,
    pub constant_in_bytes: u64,
    /// Moved to or from the on-chip pool, and of it read from other cores' VTCM.
    pub pool_bytes: u64,
    pub peer_bytes: u64,
}

impl Compiled {
    pub fn metrics(&self) -> PerfMetrics {
        let sum = |f: fn(&LayerReport) -> u64| self.lowered.layers.iter().map(f).sum();
        PerfMetrics {
            macs: self.lowered.layers.iter().map(|l| l.macs).sum(),
            constants_bytes: self.lowered.constants_bytes,
            vtcm_bytes_per_core: self.lowered.vtcm_bytes,
            ddr_bytes: self.lowered.ddr_bytes,
            io_bytes: self.image.bindings.iter().map(|b| b.size_bytes).sum(),
            ddr_in_bytes: sum(|l| l.load_bytes),
            ddr_out_bytes: sum(|l| l.store_bytes),
            constant_in_bytes: sum(|l| l.constant_bytes),
            pool_bytes: sum(|l| l.pool_bytes),
            peer_bytes: sum(|l| l.peer_bytes),
        }
    }
}

fn io_name(name: &str) -> Result<String, CompileError> {
    if name.len() > 47 {
        return Err(CompileError::Model(format!(
            "graph input/output name '{name}' is {} bytes; program containers hold at most 47",
            name.len()
        )));
    }
    Ok(name.into())
}

/// A warning for each defined symbol no graph input has: its value changes nothing,
/// which is worth saying (a batch symbol given to a fixed-batch model compiles batch 1).
fn unused_symbols(model: &Model, symbols: &HashMap<String, i64>) -> Vec<String> {
    let mut present: Vec<&str> = model
        .graph
        .inputs
        .iter()
        .flat_map(|i| i.shape.iter().flatten())
        .filter_map(|d| match d {
            crate::onnx::Dim::Param(p) => Some(p.as_str()),
            _ => None,
        })
        .collect();
    present.sort_unstable();
    present.dedup();
    let mut unused: Vec<(&String, &i64)> = symbols.iter().filter(|(k, _)| !present.contains(&k.as_str())).collect();
    unused.sort();
    let have = if present.is_empty() { "none".to_string() } else { present.join(", ") };
    unused
        .into_iter()
        .map(|(k, v)| {
            format!(
                "-onnx-define-symbol={k},{v}: the model has no symbolic dimension '{k}' (its symbols: {have}); ignored"
            )
        })
        .collect()
}

/// Compiles a parsed model. `name` becomes the program's name.
pub fn compile(
    model: &Model,
    model_dir: Option<&Path>,
    name: &str,
    opts: &CompileOptions,
) -> Result<Compiled, CompileError> {
    for (flag, v) in [("-aic-num-cores", opts.cores), ("-ols", opts.ols), ("-mos", opts.mos)] {
        if v == 0 {
            return Err(CompileError::Option { option: flag, reason: "must be at least 1".into() });
        }
    }
    let graph = crate::build::import(model, &opts.symbols, model_dir)?;
    let first = graph.inputs.first().ok_or_else(|| CompileError::Model("the model has no runtime input".into()))?;
    if graph.outputs.is_empty() {
        return Err(CompileError::Model("the model has no graph output; a program must return something".into()));
    }
    let graph_batch = graph.values[first.value].shape.first().copied().unwrap_or(1);
    let replicas = match opts.batch_size {
        None => 1,
        Some(0) => return Err(CompileError::Option { option: "-batchsize", reason: "must be at least 1".into() }),
        Some(b) if b > aicsim_abi::container::MAX_BATCH_SIZE => {
            return Err(CompileError::Option {
                option: "-batchsize",
                reason: format!("{b} is more than {}", aicsim_abi::container::MAX_BATCH_SIZE),
            })
        }
        Some(b) if b as usize == graph_batch => 1,
        Some(b) if graph_batch == 1 => b as usize,
        Some(b) => {
            return Err(CompileError::Option {
                option: "-batchsize",
                reason: format!(
                "{b} does not match the model's batch dimension {graph_batch} (define the batch symbol as {b} or as 1)"
            ),
            })
        }
    };
    let dtype = if opts.fp16 { DType::F16 } else { DType::F32 };
    let lowered = lower::lower(
        &graph,
        LowerOptions {
            cores: opts.cores,
            dtype,
            vtcm_bytes: opts.vtcm_bytes,
            mos: opts.mos,
            ols: opts.ols,
            replicas,
            multicast_weights: opts.multicast_weights,
        },
    )?;
    let device_dtype = if opts.fp16 { IoDType::F16 } else { IoDType::F32 };
    let mut bindings = Vec::new();
    for (ios, direction) in [(&graph.inputs, IoDirection::Input), (&graph.outputs, IoDirection::Output)] {
        for io in ios {
            let v = &graph.values[io.value];
            let mut shape: Vec<u32> = v.shape.iter().map(|&d| d as u32).collect();
            if shape.is_empty() {
                shape.push(1);
            }
            shape[0] *= replicas as u32;
            if shape.len() > 6 {
                return Err(CompileError::Model(format!(
                    "'{}' has rank {}; bindings hold at most 6",
                    io.name,
                    shape.len()
                )));
            }
            let offset = lowered.value_offsets[v.storage];
            if v.int32 {
                // Integer inputs are int32 on the device; the host gives int64 or int32.
                let b = IoBinding::new(&io_name(&io.name)?, direction, IoDType::I32, &shape, offset);
                let host = if io.elem_type == crate::onnx::data_type::INT64 { IoDType::I64 } else { IoDType::I32 };
                bindings.push(b.with_host(HostFormat { dtype: host, layout: HostLayout::Same, scale: 1.0, offset: 0 }));
                continue;
            }
            let b = IoBinding::new(&io_name(&io.name)?, direction, device_dtype, &shape, offset);
            bindings.push(if opts.fp16 {
                b.with_host(HostFormat { dtype: IoDType::F32, layout: HostLayout::Same, scale: 1.0, offset: 0 })
            } else {
                b
            });
        }
    }
    let mut pname: String = name.chars().filter(|c| !c.is_control()).collect();
    while pname.len() > 63 {
        pname.pop();
    }
    let image = ProgramImage {
        name: pname,
        batch_size: (graph_batch * replicas) as u32,
        ddr_bytes: lowered.ddr_bytes,
        vtcm_bytes: lowered.vtcm_bytes.max(1),
        bindings,
        cores: lowered.streams.iter().map(|s| s.iter().map(|&op| Instruction::encode(op)).collect()).collect(),
        constants: lowered.constants.clone(),
        layers: graph
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| Layer {
                name: layer.name.clone(),
                op_type: layer.op_type.clone(),
                starts: lowered.layer_starts.iter().map(|starts| starts[l]).collect(),
            })
            .collect(),
        entries: Vec::new(),
    };
    let mut warnings = unused_symbols(model, &opts.symbols);
    warnings.extend(lowered.warnings.iter().cloned());
    Ok(Compiled { image, graph, lowered, replicas, warnings })
}

/// A parsed model and what compiling it needs besides the options.
#[derive(Clone, Debug)]
pub struct Source {
    pub model: Model,
    /// Where external data files are (the model file's directory).
    pub dir: Option<std::path::PathBuf>,
    /// The program's name.
    pub name: String,
}

impl Source {
    /// Reads an ONNX file.
    pub fn file(path: &Path) -> Result<Source, CompileError> {
        let bytes = std::fs::read(path)
            .map_err(|e| CompileError::Io { path: path.display().to_string(), reason: e.to_string() })?;
        Ok(Source {
            model: parse_model(&bytes)?,
            dir: path.parent().map(Path::to_path_buf),
            name: path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
        })
    }

    /// `zoo:NAME` (a built-in model) or an ONNX file's path.
    pub fn load(source: &str) -> Result<Source, CompileError> {
        match source.strip_prefix("zoo:") {
            Some(name) => Ok(Source { model: crate::zoo::model(name)?, dir: None, name: name.into() }),
            None => Source::file(Path::new(source)),
        }
    }

    pub fn compile(&self, opts: &CompileOptions) -> Result<Compiled, CompileError> {
        compile(&self.model, self.dir.as_deref(), &self.name, opts)
    }
}

/// Reads and compiles an ONNX file (external data is read next to it).
pub fn compile_file(path: &Path, opts: &CompileOptions) -> Result<Compiled, CompileError> {
    Source::file(path)?.compile(opts)
}
