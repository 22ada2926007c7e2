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
    /// `-retained-state`: an output `X_RetainedState` that is input `X` updated in place
    /// (a KV cache) stays in device DDR between runs; the host moves neither.
    pub retained_state: bool,
    /// `-network-specialization-config`: one set of symbol values per entry of the
    /// program (a language model's prefill and decode), sharing the retained state.
    pub specializations: Vec<HashMap<String, i64>>,
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
            retained_state: false,
            specializations: Vec::new(),
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
    /// A program of several entries: each entry as a program of its own (no constants),
    /// for its metrics and costs; the fields above are the first entry's, but `image`.
    pub entries: Vec<Compiled>,
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

/// Compiles a parsed model. `name` becomes the program's name. With specialisations,
/// the program has one entry per specialisation (see [`CompileOptions::specializations`]).
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
    let mut pname: String = name.chars().filter(|c| !c.is_control()).collect();
    while pname.len() > 63 {
        pname.pop();
    }
    let layers_of = |part: &Part, shift: &[u32]| -> Vec<Layer> {
        part.graph
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| Layer {
                name: layer.name.clone(),
                op_type: layer.op_type.clone(),
                starts: part.lowered.layer_starts.iter().zip(shift).map(|(starts, &at)| starts[l] + at).collect(),
            })
            .collect()
    };
    let streams_of = |part: &Part| -> Vec<Vec<Instruction>> {
        part.lowered.streams.iter().map(|s| s.iter().map(|&op| Instruction::encode(op)).collect()).collect()
    };
    let mut warnings = Vec::new();
    if opts.specializations.is_empty() {
        let part = compile_part(model, model_dir, opts, &opts.symbols, 0, &[])?;
        warnings.extend(unused_symbols(model, &opts.symbols));
        warnings.extend(part.graph.warnings.iter().cloned());
        warnings.extend(part.lowered.warnings.iter().cloned());
        let image = ProgramImage {
            name: pname,
            batch_size: part.batch_size,
            ddr_bytes: part.lowered.ddr_bytes,
            vtcm_bytes: part.lowered.vtcm_bytes.max(1),
            bindings: part.bindings.clone(),
            cores: streams_of(&part),
            constants: part.lowered.constants.clone(),
            layers: layers_of(&part, &vec![0; opts.cores as usize]),
            entries: Vec::new(),
        };
        return Ok(Compiled {
            image,
            graph: part.graph,
            lowered: part.lowered,
            replicas: part.replicas,
            warnings,
            entries: Vec::new(),
        });
    }
    if opts.specializations.len() > aicsim_abi::container::MAX_ENTRIES as usize {
        return Err(CompileError::Option {
            option: "-network-specialization-config",
            reason: format!(
                "{} specialisations; a program holds at most {}",
                opts.specializations.len(),
                aicsim_abi::container::MAX_ENTRIES
            ),
        });
    }
    // Each specialisation after the previous one's DDR; the retained state first in all.
    let mut parts: Vec<Part> = Vec::new();
    let mut names = Vec::new();
    for spec in &opts.specializations {
        let mut symbols = opts.symbols.clone();
        symbols.extend(spec.iter().map(|(k, v)| (k.clone(), *v)));
        let base = parts.last().map_or(0, |p| p.lowered.ddr_bytes);
        // Weights the entries have in common are stored once.
        let shared: Vec<(&str, &aicsim_abi::container::ConstantBlob)> = parts
            .iter()
            .flat_map(|p| p.lowered.constant_names.iter().map(String::as_str).zip(&p.lowered.constants))
            .collect();
        let part = compile_part(model, model_dir, opts, &symbols, base, &shared)?;
        if let Some(first) = parts.first() {
            let state =
                |p: &Part| p.bindings.iter().filter(|b| b.direction == IoDirection::State).cloned().collect::<Vec<_>>();
            if state(first) != state(&part) {
                return Err(CompileError::Option {
                    option: "-network-specialization-config",
                    reason: "the specialisations give the retained state different shapes; every entry must share one state (keep the cache length and batch the same)".into(),
                });
            }
            if first.batch_size != part.batch_size {
                return Err(CompileError::Option {
                    option: "-network-specialization-config",
                    reason: format!(
                        "the specialisations have batch sizes {} and {}; a program has one",
                        first.batch_size, part.batch_size
                    ),
                });
            }
        }
        let mut keys: Vec<_> = spec.iter().collect();
        keys.sort();
        names.push(keys.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        for w in part.graph.warnings.iter().chain(&part.lowered.warnings) {
            if !warnings.contains(w) {
                warnings.push(w.clone());
            }
        }
        parts.push(part);
    }
    let mut all_symbols = opts.symbols.clone();
    for spec in &opts.specializations {
        all_symbols.extend(spec.iter().map(|(k, v)| (k.clone(), *v)));
    }
    warnings.extend(unused_symbols(model, &all_symbols));
    let cores = opts.cores as usize;
    let mut streams: Vec<Vec<Instruction>> = vec![Vec::new(); cores];
    let mut layers = Vec::new();
    let mut entries = Vec::new();
    let mut bindings: Vec<IoBinding> = Vec::new();
    let mut constants = Vec::new();
    for (e, (part, name)) in parts.iter().zip(names).enumerate() {
        let shift: Vec<u32> = streams.iter().map(|s| s.len() as u32).collect();
        entries.push(aicsim_abi::container::Entry { name, starts: shift.clone() });
        layers.extend(layers_of(part, &shift));
        for (all, mine) in streams.iter_mut().zip(streams_of(part)) {
            all.extend(mine);
        }
        for b in &part.bindings {
            match b.direction {
                IoDirection::State if e > 0 => {}
                IoDirection::State => bindings.push(b.clone()),
                _ => bindings.push(b.clone().in_entry(e as u8)),
            }
        }
        constants.extend(part.lowered.constants.iter().cloned());
    }
    let last = parts.last().expect("at least one specialisation");
    let image = ProgramImage {
        name: pname,
        batch_size: parts[0].batch_size,
        ddr_bytes: last.lowered.ddr_bytes,
        vtcm_bytes: parts.iter().map(|p| p.lowered.vtcm_bytes).max().unwrap_or(1).max(1),
        bindings,
        cores: streams,
        constants,
        layers,
        entries,
    };
    if image.bindings.len() > aicsim_abi::container::MAX_BINDINGS as usize {
        return Err(CompileError::Model(format!(
            "the program would have {} bindings over its entries; a program holds at most {}",
            image.bindings.len(),
            aicsim_abi::container::MAX_BINDINGS
        )));
    }
    let entries = parts
        .iter()
        .zip(&image.entries)
        .map(|(part, entry)| Compiled {
            image: ProgramImage {
                name: format!("{} [{}]", image.name, entry.name),
                batch_size: part.batch_size,
                ddr_bytes: part.lowered.ddr_bytes,
                vtcm_bytes: part.lowered.vtcm_bytes.max(1),
                bindings: part.bindings.clone(),
                cores: streams_of(part),
                constants: Vec::new(),
                layers: layers_of(part, &vec![0; cores]),
                entries: Vec::new(),
            },
            graph: part.graph.clone(),
            lowered: part.lowered.clone(),
            replicas: part.replicas,
            warnings: Vec::new(),
            entries: Vec::new(),
        })
        .collect();
    let first = parts.swap_remove(0);
    Ok(Compiled { image, graph: first.graph, lowered: first.lowered, replicas: first.replicas, warnings, entries })
}

/// One specialisation of a model, lowered with its private DDR from `private_base`.
struct Part {
    graph: Graph,
    lowered: Lowered,
    replicas: usize,
    batch_size: u32,
    bindings: Vec<IoBinding>,
}

fn compile_part(
    model: &Model,
    model_dir: Option<&Path>,
    opts: &CompileOptions,
    symbols: &HashMap<String, i64>,
    private_base: u64,
    shared: &[(&str, &aicsim_abi::container::ConstantBlob)],
) -> Result<Part, CompileError> {
    let graph = if opts.retained_state {
        crate::build::import_retained(model, symbols, model_dir)?
    } else {
        crate::build::import(model, symbols, model_dir)?
    };
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
    // Retained state: input X and output X_RetainedState on one storage.
    let state: Vec<(usize, usize)> = graph
        .inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| {
            let o = graph.outputs.iter().position(|o| {
                o.name.strip_suffix(crate::build::RETAINED_SUFFIX) == Some(input.name.as_str())
                    && graph.values[o.value].storage == graph.values[input.value].storage
            })?;
            Some((i, o))
        })
        .collect();
    if opts.retained_state && state.is_empty() {
        return Err(CompileError::Option {
            option: "-retained-state",
            reason: format!(
                "no output is an input updated in place and named after it (input X, output X{})",
                crate::build::RETAINED_SUFFIX
            ),
        });
    }
    if !state.is_empty() && replicas > 1 {
        return Err(CompileError::Option {
            option: "-batchsize",
            reason: "a program with retained state takes its batch from the model: define the batch symbol instead"
                .into(),
        });
    }
    let dtype = if opts.fp16 { DType::F16 } else { DType::F32 };
    let state_storage: Vec<usize> = state.iter().map(|&(i, _)| graph.values[graph.inputs[i].value].storage).collect();
    let lowered = lower::lower_at(
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
        &state_storage,
        private_base,
        shared,
    )?;
    let device_dtype = if opts.fp16 { IoDType::F16 } else { IoDType::F32 };
    let mut bindings = Vec::new();
    for (ios, direction) in [(&graph.inputs, IoDirection::Input), (&graph.outputs, IoDirection::Output)] {
        for (k, io) in ios.iter().enumerate() {
            let retained = match direction {
                IoDirection::Input => state.iter().any(|&(i, _)| i == k),
                _ => state.iter().any(|&(_, o)| o == k),
            };
            if retained && direction == IoDirection::Output {
                continue; // one state binding, under the input's name
            }
            let direction = if retained { IoDirection::State } else { direction };
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
            bindings.push(if opts.fp16 && !retained {
                b.with_host(HostFormat { dtype: IoDType::F32, layout: HostLayout::Same, scale: 1.0, offset: 0 })
            } else {
                b
            });
        }
    }
    let batch_size = (graph_batch * replicas) as u32;
    Ok(Part { graph, lowered, replicas, batch_size, bindings })
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

    /// An ONNX model's bytes (external data files are not reachable from here).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Source, CompileError> {
        Ok(Source { model: parse_model(bytes)?, dir: None, name: name.into() })
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
