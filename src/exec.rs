//! `aic-exec`'s command line (qaic-exec's single-dash `-flag=value` style) and its
//! `-aic-perf-metrics` report.

use std::path::{Path, PathBuf};

use crate::output_files::{self, PendingFiles};
use aicsim_compiler::quantize::{self, Calibration, Precision, Profile, QuantOptions, QuantReport, Schema};
use aicsim_compiler::{CompileOptions, Compiled, Source};
use serde::Serialize;

/// Parsed `aic-exec` arguments.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecArgs {
    pub model: Option<String>,
    pub binary_dir: Option<String>,
    pub options: CompileOptions,
    pub perf_metrics: bool,
    pub perf_metrics_json: Option<String>,
    pub compile_only: bool,
    pub stats_batch_size: Option<u32>,
    pub profiling_types: Vec<String>,
    pub verbose: bool,
    pub dump_supported_ops: bool,
    pub quant: QuantArgs,
}

/// The quantisation flags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuantArgs {
    /// `-quantization-precision=Int8|Int16` (the width in `options.precision`).
    pub quantize: bool,
    /// `-no-quant`: compile in float whatever else is given.
    pub no_quant: bool,
    pub options: QuantOptions,
    pub input_list: Option<String>,
    pub dump_profile: Option<String>,
    pub load_profile: Option<String>,
    pub node_precision_info: Option<String>,
}

impl QuantArgs {
    /// Whether the model must be calibrated or a profile loaded.
    pub fn wanted(&self) -> bool {
        !self.no_quant && (self.quantize || self.dump_profile.is_some())
    }

    /// Whether `flag` is one of the quantisation flags.
    pub fn is_flag(flag: &str) -> bool {
        flag.starts_with("-quantization-")
            || matches!(
                flag,
                "-percentile-calibration-value"
                    | "-num-histogram-bins"
                    | "-input-list-file"
                    | "-dump-profile"
                    | "-load-profile"
                    | "-node-precision-info"
                    | "-execute-nodes-in-fp16"
                    | "-no-quant"
            )
    }

    /// Takes one quantisation flag (`flag=value`).
    pub fn take(&mut self, flag: &str, value: Option<&str>) -> Result<(), String> {
        let need = || value.ok_or_else(|| format!("{flag} needs a value ({flag}=...)"));
        let no_value = || match value {
            Some(v) => Err(format!("{flag} takes no value (got '{v}')")),
            None => Ok(()),
        };
        match flag {
            "-quantization-precision" => {
                self.options.precision = Precision::parse(need()?).map_err(|e| format!("{flag}: {e}"))?;
                self.quantize = true;
            }
            "-quantization-precision-bias" => match need()? {
                "Int32" => self.options.bias_int8 = false,
                "Int8" => self.options.bias_int8 = true,
                v => return Err(format!("-quantization-precision-bias={v}: expected Int32 or Int8")),
            },
            "-quantization-schema-activations" => {
                self.options.activations = Schema::parse(need()?).map_err(|e| format!("{flag}: {e}"))?
            }
            "-quantization-schema-constants" => {
                let s = Schema::parse(need()?).map_err(|e| format!("{flag}: {e}"))?;
                if s == Schema::SymmetricWithUint8 {
                    return Err(format!(
                        "{flag}=symmetric_with_uint8: HMX weights are int8 (symmetric or symmetric_with_power2_scale)"
                    ));
                }
                self.options.constants = s;
            }
            "-quantization-calibration" => {
                self.options.calibration = Calibration::parse(need()?).map_err(|e| format!("{flag}: {e}"))?
            }
            "-percentile-calibration-value" => {
                let v = need()?;
                self.options.percentile = v
                    .parse::<f64>()
                    .ok()
                    .filter(|p| *p > 0.0 && *p <= 100.0)
                    .ok_or_else(|| format!("{flag}={v}: expected a percentage in (0, 100]"))?;
            }
            "-num-histogram-bins" => self.options.bins = number(flag, need()?)? as usize,
            "-input-list-file" => self.input_list = Some(need()?.to_string()),
            "-dump-profile" => self.dump_profile = Some(need()?.to_string()),
            "-load-profile" => self.load_profile = Some(need()?.to_string()),
            "-node-precision-info" => self.node_precision_info = Some(need()?.to_string()),
            "-execute-nodes-in-fp16" => {
                let v = need()?;
                self.options.float_ops =
                    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                if self.options.float_ops.is_empty() {
                    return Err(format!("{flag}={v}: expected operator types, e.g. Conv,Gemm"));
                }
            }
            "-no-quant" => {
                no_value()?;
                self.no_quant = true
            }
            _ => return Err(format!("unknown flag '{flag}'")),
        }
        Ok(())
    }

    /// Flags that only make sense together.
    pub fn check(&self) -> Result<(), String> {
        let q = self;
        if q.quantize && !q.no_quant && q.input_list.is_none() && q.load_profile.is_none() {
            return Err("-quantization-precision needs calibration samples (-input-list-file=<file>) or a profile (-load-profile=<file>)".into());
        }
        if q.input_list.is_some() && q.load_profile.is_some() {
            return Err("-input-list-file and -load-profile both give the ranges; give one".into());
        }
        if q.dump_profile.is_some() && q.input_list.is_none() {
            return Err("-dump-profile writes what calibration learns: it needs -input-list-file=<file>".into());
        }
        Ok(())
    }
}

const USAGE: &str = "\
usage: aic-exec -m=<model.onnx | zoo:NAME> -aic-binary-dir=<dir> [flags]
  (zoo: resnet50, mobilenetv2, bert-base, small-cnn, qdq-cnn)
  -onnx-define-symbol=<name>,<value>   value of a symbolic input dimension (repeatable)
  -aic-num-cores=<n>                   NSP cores the program runs on (default 1)
  -ols=<n>                             split each layer into at least cores x n tiles (default 1)
  -mos=<n>                             divide each core's VTCM tile budget by n (default 1)
  -batchsize=<n>                       samples per inference (a batch-1 model runs n copies)
  -stats-batchsize=<n>                 report -aic-perf-metrics per n samples
  -convert-to-fp16                     compute in fp16 (constants outside its range are clipped)
  -multicast-weights                   read a layer's weights once for all cores
  -retained-state                      keep each input X that output X_RetainedState updates in
                                       place (a KV cache) in device DDR between runs
  -network-specialization-config=<file>  one program entry per specialisation (JSON:
                                       {\"specializations\": [{\"seq_len\": \"32\"}, {\"seq_len\": \"1\"}]})
  -aic-hw, -aic-hw-version=2.0         target the (simulated) AIC100
  -compile-only                        compile without running
  -aic-perf-metrics                    print resources, predicted performance and per-layer costs
  -aic-perf-metrics-json=<file>        write the same as JSON
  -aic-profiling-type=stats|trace|latency|ascii  every program can be profiled; aic-runner
                                       takes the profile (the line to use is printed)
  -dump-supported-ops                   list the ONNX operators the compiler takes, then exit
  -quantization-precision=Int8|Int16   quantise the convolutions and matrix products (post-training,
                                       calibrated): int8, or int16 activations with int8 weights
  -input-list-file=<file>              calibration samples: one line each, the raw f32 input files
  -quantization-calibration=None|Percentile|MSE|SQNR|KLMinimization  clipping threshold (default None)
  -percentile-calibration-value=<p>    percent of magnitudes kept with Percentile (default 99.999)
  -num-histogram-bins=<n>              histogram bins per tensor (default 512)
  -quantization-schema-activations=symmetric|symmetric_with_uint8|symmetric_with_power2_scale
  -quantization-schema-constants=symmetric|symmetric_with_power2_scale
  -quantization-precision-bias=Int32|Int8  biases in int32 in units of the sums (default),
                                       or int8 with a scale of their own
  -dump-profile=<file>                 write the calibration profile (JSON)
  -load-profile=<file>                 use a profile instead of calibrating
  -node-precision-info=<file>          nodes to keep in float (FP16NodeInstanceNames: [...])
  -execute-nodes-in-fp16=<Op>,...      operator types to keep in float
  -no-quant                            compile in float
  -v                                   verbose";

fn number(flag: &str, value: &str) -> Result<u32, String> {
    value.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| format!("{flag}={value}: expected a positive integer"))
}

/// Parses the arguments; `Ok(None)` means help was printed.
pub fn parse_exec_args(argv: &[String]) -> Result<Option<ExecArgs>, String> {
    let mut a = ExecArgs::default();
    for arg in argv {
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (arg.as_str(), None),
        };
        let need = || value.ok_or_else(|| format!("{flag} needs a value ({flag}=...)"));
        let no_value = || match value {
            Some(v) => Err(format!("{flag} takes no value (got '{v}')")),
            None => Ok(()),
        };
        match flag {
            "-h" | "-help" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-m" | "-model" => a.model = Some(need()?.to_string()),
            "-aic-binary-dir" => a.binary_dir = Some(need()?.to_string()),
            "-onnx-define-symbol" => {
                let v = need()?;
                let (name, n) =
                    v.split_once(',').ok_or_else(|| format!("-onnx-define-symbol={v}: expected <name>,<value>"))?;
                let n: i64 = n
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("-onnx-define-symbol={v}: the value must be a positive integer"))?;
                a.options.symbols.insert(name.trim().to_string(), n);
            }
            "-aic-num-cores" => a.options.cores = number(flag, need()?)?,
            "-ols" => a.options.ols = number(flag, need()?)?,
            "-mos" => a.options.mos = number(flag, need()?)?,
            "-batchsize" => a.options.batch_size = Some(number(flag, need()?)?),
            "-stats-batchsize" => a.stats_batch_size = Some(number(flag, need()?)?),
            "-convert-to-fp16" => {
                no_value()?;
                a.options.fp16 = true
            }
            "-multicast-weights" => {
                no_value()?;
                a.options.multicast_weights = true
            }
            "-retained-state" => {
                no_value()?;
                a.options.retained_state = true
            }
            "-network-specialization-config" => a.options.specializations = read_specializations(need()?)?,
            "-aic-hw" => no_value()?,
            "-aic-hw-version" => {
                let v = need()?;
                if v != "2.0" {
                    return Err(format!("-aic-hw-version={v}: the simulated AIC100 is version 2.0"));
                }
            }
            "-compile-only" => {
                no_value()?;
                a.compile_only = true
            }
            "-aic-perf-metrics" => {
                no_value()?;
                a.perf_metrics = true
            }
            "-aic-perf-metrics-json" => a.perf_metrics_json = Some(need()?.to_string()),
            "-aic-profiling-type" => {
                let v = need()?;
                if !matches!(v, "stats" | "trace" | "latency" | "ascii") {
                    return Err(format!("-aic-profiling-type={v}: expected stats, trace, latency or ascii"));
                }
                a.profiling_types.push(v.to_string());
            }
            "-v" => {
                no_value()?;
                a.verbose = true
            }
            "-dump-supported-ops" => {
                no_value()?;
                a.dump_supported_ops = true
            }
            f if QuantArgs::is_flag(f) => a.quant.take(flag, value)?,
            _ => return Err(format!("unknown flag '{arg}' (aic-exec -h lists the flags)")),
        }
    }
    a.quant.check()?;
    if a.options.cores > 16 {
        return Err(format!("-aic-num-cores={}: the AIC100 has at most 16 NSP cores", a.options.cores));
    }
    Ok(Some(a))
}

/// A specialisation file as qaic-exec takes it: `{"specializations": [{symbol: value,
/// ...}, ...]}`, values as strings or numbers.
pub fn read_specializations(path: &str) -> Result<Vec<std::collections::HashMap<String, i64>>, String> {
    let flag = "-network-specialization-config";
    let text = std::fs::read_to_string(path).map_err(|e| format!("{flag}={path}: {e}"))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{flag}={path}: not JSON: {e}"))?;
    let list =
        doc.get("specializations").and_then(|s| s.as_array()).filter(|l| !l.is_empty()).ok_or_else(|| {
            format!("{flag}={path}: expected {{\"specializations\": [ {{symbol: value, ...}}, ... ]}}")
        })?;
    let mut specs = Vec::new();
    for (i, spec) in list.iter().enumerate() {
        let map = spec.as_object().ok_or_else(|| format!("{flag}={path}: specialisation {i} is not an object"))?;
        let mut symbols = std::collections::HashMap::new();
        for (k, v) in map {
            let n = match v {
                serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
                serde_json::Value::Number(n) => n.as_i64(),
                _ => None,
            }
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{flag}={path}: specialisation {i}: '{k}' must be a positive integer, not {v}"))?;
            symbols.insert(k.clone(), n);
        }
        specs.push(symbols);
    }
    Ok(specs)
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// The `-dump-supported-ops` listing: one operator per line, sorted, with how it is taken.
pub fn supported_ops_listing() -> String {
    use aicsim_compiler::ops::{supported, Support};
    let ops = supported();
    let mut out = format!("Supported ONNX operators (default domain, opsets 7 to 20): {}\n", ops.len());
    for (name, how) in ops {
        let how = match how {
            Support::Device => "runs on the device",
            Support::CompileTime => "evaluated at compile time (constant inputs only)",
        };
        out += &format!("  {name:<20} {how}\n");
    }
    out
}

/// A warning when `-stats-batchsize` differs from the batch the program runs: per-sample
/// figures then use the program's batch (the seed's batch-4 line on a fixed-batch model
/// would otherwise report four times too few MACs per sample).
pub fn stats_batch_warning(stats_batch: Option<u32>, program_batch: u32) -> Option<String> {
    let b = stats_batch?;
    (b != program_batch).then(|| {
        format!(
            "-stats-batchsize={b} but the program runs {program_batch} sample(s) per inference \
             (a fixed batch dimension, or a symbol or -batchsize not given); per-sample figures use {program_batch}"
        )
    })
}

/// NSP cores the throughput prediction may use: the 14 of the Standard card, as
/// aic-configurator's.
const PREDICTION_NSP: u32 = 14;

/// In-flight inferences per instance in the throughput prediction (aic-runner's and
/// the configurator's default).
const PREDICTION_SET_SIZE: u32 = 10;

/// The predicted figures of a compiled program.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictedPerformance {
    /// One instance, one inference in flight: the host round trip, ms.
    pub latency_ms: f64,
    pub latency_p99_ms: f64,
    /// As many instances as the card's 14 cores hold, 10 in flight each.
    pub throughput_instances: u32,
    pub throughput_set_size: u32,
    pub inf_per_sec: f64,
}

/// Everything `-aic-perf-metrics` prints (and `-aic-perf-metrics-json` writes).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PerfReport {
    pub batch_size: u32,
    /// Samples the per-sample figures divide by.
    pub stats_batch_size: u32,
    pub cores: u32,
    pub macs: u64,
    pub hmx_macs: u64,
    /// Of `hmx_macs`, int8 products (at twice the fp16 rate).
    pub hmx_int8_macs: u64,
    /// Of `hmx_macs`, int16 activations x int8 weights (at the fp16 rate).
    pub hmx_int16_macs: u64,
    pub non_hmx_macs: u64,
    pub constants_bytes: u64,
    pub vtcm_bytes_per_core: u64,
    /// DDR fixed at load (the constants) and per activation (values, inputs, outputs).
    pub static_ddr_bytes: u64,
    pub dynamic_ddr_bytes: u64,
    pub io_bytes: u64,
    /// Of `io_bytes`, the inputs' and the outputs' (the rest is retained state).
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// DMA instructions that multicast one read to several cores.
    pub multicast_table_entries: u64,
    pub ddr_in_bytes: u64,
    pub ddr_out_bytes: u64,
    pub constant_in_bytes: u64,
    pub pool_bytes: u64,
    pub peer_bytes: u64,
    /// The DMA traffic of each core's instruction stream, as the card's compiler
    /// estimates it per core.
    pub core_traffic: Vec<CoreTraffic>,
    pub predicted: PredictedPerformance,
    pub device: crate::layer_costs::ProgramCost,
    /// A program of several entries: each entry's report (the fields above are the
    /// first entry's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryPerf>,
    /// A language model's generation, predicted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<PredictedGeneration>,
}

/// What one core's instructions move per inference (every byte its DMA descriptors
/// name; the constants are read again each inference, so the first inference moves the
/// same).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoreTraffic {
    /// Bytes read from DDR into this core's VTCM, and of them the constants'.
    pub ddr_read: u64,
    pub ddr_read_constants: u64,
    /// Bytes written from this core's VTCM to DDR.
    pub ddr_write: u64,
    /// Bytes one read of this core delivers to other cores' VTCM (multicast), and of them
    /// the constants'.
    pub mc_write: u64,
    pub mc_write_constants: u64,
    /// Bytes read from the on-chip pool, and of them those held by other cores (NoC).
    pub pool_read: u64,
    pub peer_read: u64,
    /// Synchronisation points: waits on another core's signal, and barriers.
    pub barriers: u64,
}

/// Bytes of the program's bindings of one direction.
fn io_bytes(c: &Compiled, direction: aicsim_abi::container::IoDirection) -> u64 {
    c.image.bindings.iter().filter(|b| b.direction == direction).map(|b| b.size_bytes).sum()
}

/// Each core's traffic, from its instruction stream.
fn core_traffic(c: &Compiled) -> Vec<CoreTraffic> {
    use aicsim_abi::isa::{Op, Space};
    let constant = |offset: u64| {
        c.lowered.constants.iter().any(|b| (b.ddr_offset..b.ddr_offset + b.data.len() as u64).contains(&offset))
    };
    c.lowered
        .streams
        .iter()
        .enumerate()
        .map(|(core, ops)| {
            let mut t = CoreTraffic::default();
            for op in ops {
                match op {
                    Op::DmaIn { src, multicast, peer_bytes, .. } => {
                        let bytes = src.packed_bytes();
                        let others = u64::from((multicast & !(1u64 << core)).count_ones());
                        let k = constant(src.offset);
                        match src.space {
                            Space::Ddr => {
                                t.ddr_read += bytes;
                                t.mc_write += bytes * others;
                                if k {
                                    t.ddr_read_constants += bytes;
                                    t.mc_write_constants += bytes * others;
                                }
                            }
                            Space::Pool => {
                                t.pool_read += bytes;
                                t.peer_read += u64::from(*peer_bytes);
                            }
                            Space::Vtcm => {}
                        }
                    }
                    Op::DmaOut { dst, src } if dst.space == Space::Ddr => t.ddr_write += src.packed_bytes(),
                    Op::Gather { dst, table, .. } if table.space == Space::Ddr => {
                        t.ddr_read += dst.packed_bytes();
                        if constant(table.offset) {
                            t.ddr_read_constants += dst.packed_bytes();
                        }
                    }
                    Op::Scatter { src, dst, .. } if dst.space == Space::Ddr => t.ddr_write += src.packed_bytes(),
                    Op::Wait { .. } | Op::Barrier => t.barriers += 1,
                    _ => {}
                }
            }
            t
        })
        .collect()
}

/// One entry of a program of several.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryPerf {
    pub name: String,
    pub report: PerfReport,
}

/// What a generation program is predicted to do: sequences of a prompt of the prefill
/// entry's length and [`GENERATION_TOKENS`] tokens (fewer if the cache holds fewer).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PredictedGeneration {
    pub prompt_len: usize,
    pub tokens_per_sequence: u32,
    pub time_to_first_token_ms: f64,
    pub time_per_output_token_ms: f64,
    /// One sequence at a time.
    pub tokens_per_sec: f64,
    /// As many instances as the card's 14 cores hold, one sequence each.
    pub instances: u32,
    pub tokens_per_sec_all_instances: f64,
}

/// Tokens per sequence in the `-aic-perf-metrics` generation prediction.
pub const GENERATION_TOKENS: u32 = 32;

/// Computes the `-aic-perf-metrics` report: the compiler's figures, one traced run of
/// the program on the device model, and the predictor's latency and throughput.
pub fn perf_report(c: &Compiled, stats_batch: Option<u32>) -> Result<PerfReport, String> {
    if c.entries.is_empty() {
        return entry_report(c, stats_batch, true);
    }
    let mut entries = Vec::new();
    for (e, compiled) in c.entries.iter().enumerate() {
        let report = entry_report(compiled, stats_batch, false)?;
        entries.push(EntryPerf { name: c.image.entry_name(e).to_string(), report });
    }
    let mut report = entries[0].report.clone();
    report.generation = predicted_generation(c)?;
    report.entries = entries;
    Ok(report)
}

/// The generation figures of a program with a prefill and a decode entry (`None` for
/// other programs of several entries).
fn predicted_generation(c: &Compiled) -> Result<Option<PredictedGeneration>, String> {
    use crate::predict::{predict_generation, DeviceModel, HostModel, Workload};
    let workload = Workload::from_compiled(c).map_err(|e| format!("-aic-perf-metrics: {e}"))?;
    let image = c.image.clone();
    let prompt_len = (0..image.entry_count())
        .filter_map(|e| image.entry_inputs(e).find(|b| b.name == "input_ids").map(|b| *b.shape.last().unwrap_or(&1)))
        .max()
        .unwrap_or(1) as usize;
    if crate::generation::entries(&workload.program, prompt_len).is_err() {
        return Ok(None);
    }
    let room = crate::generation::cache_len(&workload.program).map_or(u64::MAX, |c| c + 1 - prompt_len as u64);
    let tokens = GENERATION_TOKENS.min(room.min(u64::from(u32::MAX)) as u32).max(1);
    let model = DeviceModel::from(&aicsim_device::DeviceConfig {
        num_nsp: PREDICTION_NSP,
        ..aicsim_device::DeviceConfig::default()
    });
    let host = HostModel::default();
    let run = |instances: u32| {
        predict_generation(&workload, instances, prompt_len, tokens, 2, &model, &host)
            .map_err(|e| format!("-aic-perf-metrics: predicting the generation with {instances} instance(s): {e}"))
    };
    let alone = run(1)?;
    let instances = (PREDICTION_NSP / workload.cores.max(1)).max(1);
    let full = run(instances)?;
    Ok(Some(PredictedGeneration {
        prompt_len,
        tokens_per_sequence: tokens,
        time_to_first_token_ms: alone.total_round_trip.mean,
        time_per_output_token_ms: alone.host_round_trip.mean,
        tokens_per_sec: alone.inf_per_sec,
        instances,
        tokens_per_sec_all_instances: full.inf_per_sec,
    }))
}

/// The report of a program of one entry; `throughput` predicts many inferences in
/// flight too (not for an entry of a program that keeps state between runs).
fn entry_report(c: &Compiled, stats_batch: Option<u32>, throughput: bool) -> Result<PerfReport, String> {
    use crate::predict::{predict, Deployment, DeviceModel, HostModel, Measure, Workload};
    let m = c.metrics();
    let device = crate::layer_costs::layer_costs(c).map_err(|e| format!("-aic-perf-metrics: {e}"))?;
    let hmx_macs: u64 = device.layers.iter().filter(|l| l.on_hmx).map(|l| l.macs).sum();
    // The integer products: int8 x int8, or int16 activations x int8 weights.
    let integer_macs = |int16: bool| -> u64 {
        use aicsim_compiler::ir::LayerKind;
        c.graph
            .layers
            .iter()
            .filter(|l| match &l.kind {
                LayerKind::Conv { input, int8: Some(_), .. } | LayerKind::Dense { input, int8: Some(_), .. } => {
                    c.graph.values[*input].quant.is_some_and(|q| q.int16) == int16
                }
                _ => false,
            })
            .map(|l| c.graph.layer_macs(l) * c.replicas as u64)
            .sum()
    };
    let (hmx_int8_macs, hmx_int16_macs) = (integer_macs(false), integer_macs(true));
    let multicast = c
        .lowered
        .streams
        .iter()
        .flatten()
        .filter(|op| matches!(op, aicsim_abi::isa::Op::DmaIn { multicast, .. } if *multicast != 0))
        .count() as u64;
    let workload = Workload::from_compiled(c).map_err(|e| format!("-aic-perf-metrics: {e}"))?;
    let model = DeviceModel::from(&aicsim_device::DeviceConfig {
        num_nsp: PREDICTION_NSP,
        ..aicsim_device::DeviceConfig::default()
    });
    let host = HostModel::default();
    let window = Measure::Window { warmup: 2, measured: 6 };
    let run = |instances: u32, set_size: u32| {
        predict(&workload, Deployment { instances, set_size }, &model, &host, window)
            .map_err(|e| format!("-aic-perf-metrics: predicting {instances} instance(s): {e}"))
    };
    let alone = run(1, 1)?;
    let instances = (PREDICTION_NSP / workload.cores.max(1)).max(1);
    let full = if throughput { run(instances, PREDICTION_SET_SIZE)? } else { alone };
    Ok(PerfReport {
        batch_size: c.image.batch_size,
        stats_batch_size: stats_batch.filter(|&b| b == c.image.batch_size).unwrap_or(c.image.batch_size).max(1),
        cores: c.image.num_cores(),
        macs: m.macs,
        hmx_macs,
        hmx_int8_macs,
        hmx_int16_macs,
        non_hmx_macs: m.macs - hmx_macs.min(m.macs),
        constants_bytes: m.constants_bytes,
        vtcm_bytes_per_core: m.vtcm_bytes_per_core,
        static_ddr_bytes: m.constants_bytes,
        dynamic_ddr_bytes: m.ddr_bytes.saturating_sub(m.constants_bytes),
        io_bytes: m.io_bytes,
        input_bytes: io_bytes(c, aicsim_abi::container::IoDirection::Input),
        output_bytes: io_bytes(c, aicsim_abi::container::IoDirection::Output),
        multicast_table_entries: multicast,
        ddr_in_bytes: m.ddr_in_bytes,
        ddr_out_bytes: m.ddr_out_bytes,
        constant_in_bytes: m.constant_in_bytes,
        pool_bytes: m.pool_bytes,
        peer_bytes: m.peer_bytes,
        core_traffic: core_traffic(c),
        predicted: PredictedPerformance {
            latency_ms: alone.host_round_trip.mean,
            latency_p99_ms: alone.host_round_trip.p99,
            throughput_instances: if throughput { instances } else { 1 },
            throughput_set_size: if throughput { PREDICTION_SET_SIZE } else { 1 },
            inf_per_sec: full.inf_per_sec,
        },
        device,
        entries: Vec::new(),
        generation: None,
    })
}

/// Prints the `-aic-perf-metrics` report: the resource summary in the seed's fields,
/// the predicted performance, and the per-layer cost table; for a program of several
/// entries, each entry's, then the predicted generation.
pub fn print_perf_report(r: &PerfReport) {
    if r.entries.is_empty() {
        return print_entry_report(r);
    }
    for (i, e) in r.entries.iter().enumerate() {
        println!("##### Entry {} of {}: {} #####", i + 1, r.entries.len(), e.name);
        print_entry_report(&e.report);
    }
    if let Some(g) = &r.generation {
        println!(
            "=== Predicted generation (prompt {} tokens, {} tokens per sequence, the KV cache in device DDR) ===",
            g.prompt_len, g.tokens_per_sequence
        );
        println!("Time to first token:          {:.3} ms", g.time_to_first_token_ms);
        println!(
            "Time per output token:        {:.3} ms ({:.1} tokens/s for one sequence)",
            g.time_per_output_token_ms, g.tokens_per_sec
        );
        println!(
            "Throughput:                   {:.1} tokens/s ({} instance(s), one sequence each)",
            g.tokens_per_sec_all_instances, g.instances
        );
    }
}

/// The resource summary in the shape the card's compiler prints it (its field names and
/// layout; the figures are this program's).
fn print_seed_summary(r: &PerfReport) {
    let kb = |b: u64| b.div_ceil(1024);
    println!("Original MAC estimate: {}", r.macs);
    println!("AIC HMX MAC estimate:  {}", r.hmx_macs);
    println!("AIC non-HMX MAC estimate:  {}", r.non_hmx_macs);
    println!("final constants size: {} B", r.constants_bytes);
    println!("MulticastTableSize: {}", r.multicast_table_entries);
    for c in 0..r.cores {
        println!("VTCM{c}Size:   {} B", r.vtcm_bytes_per_core);
    }
    println!("VTCMMaxSize: {} B", r.vtcm_bytes_per_core);
    println!("StaticSharedDDRSize: \t{:>12} B", r.static_ddr_bytes);
    println!("DynamicSharedDDRSize: \t{:>12} B", r.dynamic_ddr_bytes);
    println!("StaticConstantsSize: \t{:>12} B", r.constants_bytes);
    println!("DynamicConstantsSize: \t{:>12} B", 0);
    println!("Constants size: {} (bytes)", r.constants_bytes);
    println!("QAicGraph");
    println!("Compiler estimated memory traffic:");
    println!("Port info:");
    println!(" port01: host input");
    println!(" port02: host output");
    let inputs = r.input_bytes;
    let first_inf = |label: &str, b: u64| println!("{label}{:>10} KB (first-inf {:>10} KB)", kb(b), kb(b));
    let core = |c: usize| format!("c{c:02}");
    first_inf("   host: DDR traffic  read: ", r.output_bytes);
    first_inf("             constant only: ", 0);
    for (c, t) in r.core_traffic.iter().enumerate() {
        first_inf(&format!("{:>7}: DDR traffic  read: ", core(c)), t.ddr_read);
        first_inf("             constant only: ", t.ddr_read_constants);
    }
    println!("   host: DDR traffic write: {:>10} KB", kb(inputs));
    for (c, t) in r.core_traffic.iter().enumerate() {
        println!("{:>7}: DDR traffic write: {:>10} KB", core(c), kb(t.ddr_write));
    }
    for (c, t) in r.core_traffic.iter().enumerate() {
        println!("{:>7}: MC  traffic write: {:>10} KB", core(c), kb(t.mc_write));
        println!("{:>7}:     constant only: {:>10} KB", core(c), kb(t.mc_write_constants));
    }
    for (c, t) in r.core_traffic.iter().enumerate() {
        println!("{:>7}: NoC traffic  read: {:>10} KB", core(c), kb(t.peer_read));
    }
    let sum = |f: fn(&CoreTraffic) -> u64| r.core_traffic.iter().map(f).sum::<u64>();
    first_inf("  total: DDR traffic  read: ", r.output_bytes + sum(|t| t.ddr_read));
    first_inf("             constant only: ", sum(|t| t.ddr_read_constants));
    println!("  total: DDR traffic write: {:>10} KB", kb(inputs + sum(|t| t.ddr_write)));
    println!("  total: MC  traffic write: {:>10} KB", kb(sum(|t| t.mc_write)));
    println!("  total:     constant only: {:>10} KB", kb(sum(|t| t.mc_write_constants)));
    println!("  total: NoC traffic  read: {:>10} KB", kb(sum(|t| t.peer_read)));
    for (c, t) in r.core_traffic.iter().enumerate() {
        println!("  {} barriers: {:>10}", core(c), t.barriers);
    }
}

fn print_entry_report(r: &PerfReport) {
    let per = f64::from(r.stats_batch_size);
    let gmac = |macs: u64| macs as f64 / 1e9;
    print_seed_summary(r);
    println!("=== Resource summary ===");
    println!(
        "MAC estimate:                 {:.3} GMAC per inference ({:.3} GMAC per sample)",
        gmac(r.macs),
        gmac(r.macs) / per
    );
    println!("  HMX MACs:                   {:.3} GMAC per inference", gmac(r.hmx_macs));
    if r.hmx_int8_macs > 0 {
        println!("    of them int8:               {:.3} GMAC per inference", gmac(r.hmx_int8_macs));
    }
    if r.hmx_int16_macs > 0 {
        println!("    of them int16 x int8:       {:.3} GMAC per inference", gmac(r.hmx_int16_macs));
    }
    println!("  Non-HMX MACs:               {:.3} GMAC per inference", gmac(r.non_hmx_macs));
    println!("Constants size:               {}", mib(r.constants_bytes));
    println!("VTCM size per core:           {} of {}", mib(r.vtcm_bytes_per_core), mib(8 << 20));
    println!(
        "Shared DDR size:              {} per activation (constants {}, inputs and outputs {}, activations {})",
        mib(r.static_ddr_bytes + r.dynamic_ddr_bytes),
        mib(r.constants_bytes),
        mib(r.io_bytes),
        mib(r.dynamic_ddr_bytes.saturating_sub(r.io_bytes))
    );
    println!("Static DDR size:              {} (constants, loaded once)", mib(r.static_ddr_bytes));
    println!(
        "Dynamic DDR size:             {} per activation (inputs, outputs, activations)",
        mib(r.dynamic_ddr_bytes)
    );
    println!("Multicast table size:         {} entries", r.multicast_table_entries);
    println!(
        "Estimated DDR traffic:        in {}, out {} per inference; constants only: {}",
        mib(r.ddr_in_bytes),
        mib(r.ddr_out_bytes),
        mib(r.constant_in_bytes)
    );
    println!(
        "Estimated on-chip traffic:    {} through the pool per inference, {} of it read from other cores over the NoC",
        mib(r.pool_bytes),
        mib(r.peer_bytes)
    );
    let p = &r.predicted;
    println!("=== Predicted performance (the calibrated device and host model, batch {}) ===", r.batch_size);
    println!("Device time per inference:    {:.1} us (one inference alone on {} core(s))", r.device.run_us, r.cores);
    println!(
        "Latency:                      {:.3} ms host round trip, p99 {:.3} ms (1 instance, set size 1)",
        p.latency_ms, p.latency_p99_ms
    );
    println!(
        "Throughput:                   {:.1} inf/s ({} instance(s) x {} core(s), set size {})",
        p.inf_per_sec, p.throughput_instances, r.cores, p.throughput_set_size
    );
    println!("=== Per-layer cost (one inference on the device model; time = first start to last end) ===");
    println!("{:<40} {:<20} {:>14} {:>10} {:>7}  bound", "layer", "op", "MACs", "time(us)", "share");
    for l in &r.device.layers {
        let mut name = l.name.clone();
        if name.len() > 40 {
            name.truncate(37);
            name.push_str("...");
        }
        println!(
            "{:<40} {:<20} {:>14} {:>10.2} {:>6.1}%  {}",
            name, l.op_type, l.macs, l.span_us, l.share_percent, l.bound
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Option<ExecArgs>, String> {
        parse_exec_args(&s.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_reference_command_line_parses() {
        let a = args(&[
            "-m=model.onnx",
            "-onnx-define-symbol=batch_size,4",
            "-mos=1",
            "-ols=2",
            "-aic-num-cores=2",
            "-batchsize=4",
            "-multicast-weights",
            "-convert-to-fp16",
            "-aic-hw",
            "-aic-hw-version=2.0",
            "-compile-only",
            "-aic-binary-dir=./out",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.model.as_deref(), Some("model.onnx"));
        assert_eq!(a.options.symbols.get("batch_size"), Some(&4));
        assert_eq!((a.options.cores, a.options.ols, a.options.mos, a.options.batch_size), (2, 2, 1, Some(4)));
        assert!(a.options.fp16 && a.options.multicast_weights && a.compile_only);
        assert_eq!(a.binary_dir.as_deref(), Some("./out"));
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        assert!(args(&["-aic-num-cores=0"]).unwrap_err().contains("positive integer"));
        assert!(args(&["-aic-num-cores=x"]).unwrap_err().contains("-aic-num-cores=x"));
        assert!(args(&["-aic-num-cores=17"]).unwrap_err().contains("at most 16"));
        assert!(args(&["-onnx-define-symbol=batch"]).unwrap_err().contains("<name>,<value>"));
        assert!(args(&["-convert-to-fp16=yes"]).unwrap_err().contains("takes no value"));
        assert!(args(&["-aic-hw-version=1.0"]).unwrap_err().contains("2.0"));
        assert!(args(&["--frobnicate"]).unwrap_err().contains("unknown flag"));
        assert!(args(&["-m"]).unwrap_err().contains("needs a value"));
    }
}

/// What quantisation did, for `aic-exec` to print and write.
#[derive(Debug, Default)]
pub struct Quantised {
    /// Console lines.
    pub lines: Vec<String>,
    /// The profile's JSON, when `-dump-profile` asks for it (and where).
    pub profile: Option<(PathBuf, String)>,
    pub report: Option<QuantReport>,
}

/// Applies the quantisation flags to `source`: calibrates on the listed samples (or
/// loads a profile), and with `-quantization-precision=Int8` rewrites the model into
/// QDQ form, which then compiles to an int8 program. Nothing is written here.
pub fn quantise(source: &mut Source, q: &QuantArgs, options: &CompileOptions) -> Result<Quantised, String> {
    let mut out = Quantised::default();
    if !q.wanted() {
        return Ok(out);
    }
    let mut opts = q.options.clone();
    if let Some(file) = &q.node_precision_info {
        let text = std::fs::read_to_string(file).map_err(|e| format!("-node-precision-info={file}: {e}"))?;
        opts.float_nodes =
            quantize::parse_node_precision(&text).map_err(|e| format!("-node-precision-info={file}: {e}"))?;
    }
    let profile = match (&q.load_profile, &q.input_list) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file).map_err(|e| format!("-load-profile={file}: {e}"))?;
            let p = Profile::from_json(&text, file, &source.model).map_err(|e| format!("-load-profile: {e}"))?;
            out.lines.push(format!(
                "Loaded calibration profile {file} ({} tensors, {} samples)",
                p.tensors.len(),
                p.samples
            ));
            p
        }
        (None, Some(list)) => {
            let graph = aicsim_compiler::build::import(&source.model, &options.symbols, source.dir.as_deref())
                .map_err(|e| e.to_string())?;
            let inputs: Vec<(String, usize)> =
                graph.inputs.iter().map(|i| (i.name.clone(), graph.values[i.value].elements())).collect();
            let samples =
                quantize::read_input_list(Path::new(list), &inputs).map_err(|e| format!("-input-list-file: {e}"))?;
            let p = quantize::calibrate(&source.model, source.dir.as_deref(), &options.symbols, &samples, opts.bins)
                .map_err(|e| e.to_string())?;
            out.lines.push(format!(
                "Calibrated on {} sample(s) from {list}: ranges and {}-bin histograms of {} tensors",
                samples.len(),
                opts.bins,
                p.tensors.len()
            ));
            p
        }
        (None, None) => unreachable!("the arguments were checked"),
    };
    if let Some(file) = &q.dump_profile {
        out.profile = Some((PathBuf::from(file), profile.to_json() + "\n"));
    }
    if q.quantize {
        let dir = source.dir.as_deref();
        let (model, report) = quantize::quantize_model(&source.model, dir, &options.symbols, &profile, &opts)
            .map_err(|e| e.to_string())?;
        source.model = model;
        out.lines.push(format!(
            "Quantised {} of {} layer(s) to {}: convolutions and matrix products (calibration {}, activations {:?}, constants {:?} per channel)",
            report.quantised.len(),
            report.quantised.len() + report.kept.len(),
            match opts.precision {
                Precision::Int8 => "int8",
                Precision::Int16 => "int16 activations x int8 weights",
            },
            opts.calibration.name(),
            opts.activations,
            opts.constants,
        ));
        for (node, why) in &report.kept {
            out.lines.push(format!("  kept in float: {node} ({why})"));
        }
        out.report = Some(report);
    }
    Ok(out)
}

/// aic-exec's whole job: compiles as `args` say, prints what it prints, and writes the
/// program (and the files asked for) into the output directory, atomically; returns the
/// directory (`None` when only the supported operators were listed).
pub fn run(args: &ExecArgs) -> Result<Option<PathBuf>, String> {
    if args.dump_supported_ops {
        print!("{}", supported_ops_listing());
        return Ok(None);
    }
    let source = args.model.as_deref().ok_or("no model: give -m=<model.onnx> or -m=zoo:<name>")?;
    let dir = args.binary_dir.as_deref().ok_or("no output directory: give -aic-binary-dir=<dir>")?;
    match source.strip_prefix("zoo:") {
        Some(name) => println!("Reading ONNX Model from built-in zoo model {name}"),
        None => println!("Reading ONNX Model from {source}"),
    }
    let mut source = Source::load(source).map_err(|e| e.to_string())?;
    println!("Compile started ............... ");
    let quantised = quantise(&mut source, &args.quant, &args.options)?;
    for line in &quantised.lines {
        println!("{line}");
    }
    let compiled = source.compile(&args.options).map_err(|e| e.to_string())?;
    let integer = match args.quant.options.precision {
        Precision::Int8 => "INT8",
        Precision::Int16 => "INT16",
    };
    let precision = match (quantised.report.is_some(), args.options.fp16) {
        (true, true) => format!("{integer} (float layers in FP16)"),
        (true, false) => format!("{integer} (float layers in FP32)"),
        (false, true) => "FP16".into(),
        (false, false) => "FP32".into(),
    };
    println!("Compiling model with {precision} precision.");
    let stats_warning = stats_batch_warning(args.stats_batch_size, compiled.image.batch_size);
    for w in compiled.warnings.iter().chain(&stats_warning) {
        eprintln!("WARNING: {w}");
    }
    if args.verbose {
        println!(
            "{} layers on {} core(s), {} instruction(s) in all, batch {}",
            compiled.graph.layers.len(),
            compiled.image.num_cores(),
            compiled.image.cores.iter().map(Vec::len).sum::<usize>(),
            compiled.image.batch_size
        );
    }
    // The program, and the metrics' JSON when asked for, are put in place together once
    // everything has succeeded: a failure leaves neither.
    let dir = PathBuf::from(dir);
    let mut files = PendingFiles::default();
    files.push(&dir, "programqpc.bin".into(), compiled.image.to_bytes());
    if let Some((file, json)) = quantised.profile {
        let (parent, name) = output_files::user_file(&file).map_err(|e| format!("-dump-profile={e}"))?;
        files.push(&parent, name, json.into_bytes());
    }
    if args.perf_metrics || args.perf_metrics_json.is_some() {
        let report = perf_report(&compiled, args.stats_batch_size)?;
        if args.perf_metrics {
            print_perf_report(&report);
        }
        if let Some(file) = &args.perf_metrics_json {
            let (parent, name) =
                output_files::user_file(Path::new(file)).map_err(|e| format!("-aic-perf-metrics-json={e}"))?;
            let json = serde_json::to_string_pretty(&report).expect("plain values") + "\n";
            files.push(&parent, name, json.into_bytes());
        }
    }
    for written in files.write_all()? {
        written.announce();
    }
    if !args.compile_only {
        println!("Note: aic-exec only compiles; run the program with: aic-runner -t {}", dir.display());
    }
    for t in &args.profiling_types {
        println!(
            "Profiling ({t}): the program can be profiled; take the profile with: aic-runner -t {} --aic-profiling-type {t}",
            dir.display()
        );
    }
    println!("Generated binary is present at {}", dir.display());
    Ok(Some(dir))
}
