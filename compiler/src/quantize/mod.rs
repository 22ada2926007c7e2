//! Post-training quantisation (`aic-exec -quantization-precision=Int8`): calibrate a
//! float model on the simulated device, choose each activation's range, and rewrite the
//! model into QDQ form (QuantizeLinear / DequantizeLinear around its convolutions), which
//! the importer then compiles to int8 programs like any QDQ model.
//!
//! 1. [`calibrate`] compiles the float model (f32, one core), runs it functionally on a
//!    device over the calibration samples, and reads every stored tensor back from the
//!    activation's DDR: a first pass finds each tensor's range, a second fills a
//!    histogram of magnitudes over it ([`Profile`], JSON with `-dump-profile`).
//! 2. [`quantize_model`] picks each tensor's clipping threshold by the calibration
//!    method ([`threshold`]), its scale and zero point by the schema ([`Schema`]),
//!    quantises the weights per output channel (symmetric int8) and the biases to int32
//!    in units of the sums, and inserts the Q/DQ nodes.

mod calibrate;
mod qdq;

use std::collections::BTreeMap;

pub use calibrate::{calibrate, read_input_list, run_functional};
pub use qdq::{quantize_model, QuantReport};

use crate::CompileError;

/// How activation and weight ranges become scales (`-quantization-schema-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// int8, zero point 0: `[-t, t]` over 255 levels.
    Symmetric,
    /// As [`Schema::Symmetric`], but a tensor that is never negative is uint8 over
    /// `[0, t]` (twice the resolution): the default.
    SymmetricWithUint8,
    /// Symmetric with the scale rounded up to a power of two.
    SymmetricWithPower2Scale,
}

impl Schema {
    pub fn parse(s: &str) -> Result<Schema, String> {
        match s {
            "symmetric" => Ok(Schema::Symmetric),
            "symmetric_with_uint8" => Ok(Schema::SymmetricWithUint8),
            "symmetric_with_power2_scale" => Ok(Schema::SymmetricWithPower2Scale),
            other => {
                Err(format!("'{other}' is not a schema (symmetric, symmetric_with_uint8, symmetric_with_power2_scale)"))
            }
        }
    }
}

/// The activations' width (`-quantization-precision`); weights are int8 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// int8 (or uint8) activations: HMX at its int8 rate, a byte per element.
    Int8,
    /// int16 (or uint16) activations times int8 weights (the A16W8 scheme): 256 times
    /// finer steps, HMX at half its int8 rate, two bytes per element.
    Int16,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Precision, String> {
        match s {
            "Int8" => Ok(Precision::Int8),
            "Int16" => Ok(Precision::Int16),
            other => Err(format!("'{other}' is not a precision (Int8, Int16)")),
        }
    }

    /// Levels above zero of a signed (`unsigned` false) or unsigned tensor.
    pub fn levels(self, unsigned: bool) -> f64 {
        match (self, unsigned) {
            (Precision::Int8, false) => 127.0,
            (Precision::Int8, true) => 255.0,
            (Precision::Int16, false) => 32767.0,
            (Precision::Int16, true) => 65535.0,
        }
    }
}

/// How a tensor's clipping threshold is chosen from its histogram
/// (`-quantization-calibration`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Calibration {
    /// The largest magnitude seen (min/max).
    None,
    /// The `-percentile-calibration-value` percentile of the magnitudes.
    Percentile,
    /// Least mean squared error: rounding noise inside the range plus clipping outside.
    Mse,
    /// Signal-to-quantisation-noise, with clipping noise weighted 3x over rounding noise
    /// (as Qualcomm's AIMET SQNR encoding analyser weighs it).
    Sqnr,
    /// Least Kullback-Leibler divergence between the histogram and its quantised copy
    /// (TensorRT's entropy calibration).
    KlMinimization,
}

impl Calibration {
    pub fn parse(s: &str) -> Result<Calibration, String> {
        match s {
            "None" => Ok(Calibration::None),
            "Percentile" => Ok(Calibration::Percentile),
            "MSE" => Ok(Calibration::Mse),
            "SQNR" => Ok(Calibration::Sqnr),
            "KLMinimization" => Ok(Calibration::KlMinimization),
            other => Err(format!("'{other}' is not a calibration (None, Percentile, MSE, SQNR, KLMinimization)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Calibration::None => "None",
            Calibration::Percentile => "Percentile",
            Calibration::Mse => "MSE",
            Calibration::Sqnr => "SQNR",
            Calibration::KlMinimization => "KLMinimization",
        }
    }
}

/// The quantisation options of `aic-exec`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantOptions {
    /// The activations' width.
    pub precision: Precision,
    pub activations: Schema,
    pub constants: Schema,
    pub calibration: Calibration,
    /// Percent of the magnitudes kept inside the range (`-percentile-calibration-value`).
    pub percentile: f64,
    /// Histogram bins per tensor (`-num-histogram-bins`).
    pub bins: usize,
    /// Operator types kept in float (`-execute-nodes-in-fp16=Op,...`).
    pub float_ops: Vec<String>,
    /// Node names kept in float (`-node-precision-info=FILE`).
    pub float_nodes: Vec<String>,
    /// Biases in int8 (`-quantization-precision-bias=Int8`: one symmetric scale per
    /// bias) instead of int32 in units of the sums; the device still adds them to the
    /// int32 sums, with int8's precision.
    pub bias_int8: bool,
}

impl Default for QuantOptions {
    fn default() -> QuantOptions {
        QuantOptions {
            precision: Precision::Int8,
            activations: Schema::SymmetricWithUint8,
            constants: Schema::Symmetric,
            calibration: Calibration::None,
            percentile: 99.999,
            bins: 512,
            float_ops: Vec::new(),
            float_nodes: Vec::new(),
            bias_int8: false,
        }
    }
}

/// One tensor's statistics over the calibration samples.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorStats {
    pub min: f32,
    pub max: f32,
    /// Counts of magnitudes in `bins` equal bins over `[0, max(|min|, |max|)]`.
    pub histogram: Vec<u64>,
}

impl TensorStats {
    pub fn abs_max(&self) -> f32 {
        self.min.abs().max(self.max.abs())
    }
}

/// What calibration learnt about a model (`-dump-profile` / `-load-profile`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// The model it was made for: its graph name and a fingerprint of its nodes, inputs
    /// and weights' shapes.
    pub model: String,
    pub fingerprint: String,
    pub samples: usize,
    pub tensors: BTreeMap<String, TensorStats>,
}

impl Profile {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("profiles serialise")
    }

    /// Reads a profile and checks it was made for `model`.
    pub fn from_json(text: &str, path: &str, model: &crate::onnx::Model) -> Result<Profile, CompileError> {
        let io = |reason: String| CompileError::Io { path: path.into(), reason };
        let p: Profile = serde_json::from_str(text).map_err(|e| io(format!("not a calibration profile: {e}")))?;
        let want = fingerprint(model);
        if p.fingerprint != want {
            return Err(io(format!(
                "the profile was made for model '{}' (fingerprint {}), not this one ('{}', fingerprint {want})",
                p.model, p.fingerprint, model.graph.name
            )));
        }
        if let Some((name, t)) =
            p.tensors.iter().find(|(_, t)| t.histogram.is_empty() || !(t.min.is_finite() && t.max.is_finite()))
        {
            return Err(io(format!(
                "tensor '{name}' has no histogram or a range that is not finite ({}, {})",
                t.min, t.max
            )));
        }
        Ok(p)
    }
}

/// A fingerprint of what calibration depends on: every node (name, type, inputs,
/// outputs), the graph inputs and the initializers' names and shapes (FNV-1a, hex).
pub fn fingerprint(model: &crate::onnx::Model) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |s: &str| {
        for b in s.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    let g = &model.graph;
    for n in &g.nodes {
        eat(&n.name);
        eat(&n.op_type);
        n.inputs.iter().chain(&n.outputs).for_each(|s| eat(s));
    }
    for i in &g.inputs {
        eat(&i.name);
        eat(&format!("{:?}", i.shape));
    }
    for t in &g.initializers {
        eat(&t.name);
        eat(&format!("{:?}", t.dims));
    }
    format!("{h:016x}")
}

/// The clipping threshold of a magnitude histogram over `[0, abs_max]` for `levels`
/// quantisation levels above zero (127 for int8, 255 for uint8, 32767 / 65535 at 16
/// bits).
pub fn threshold(stats: &TensorStats, levels: f64, opts: &QuantOptions) -> f32 {
    let hist = &stats.histogram;
    let top = f64::from(stats.abs_max());
    let total: u64 = hist.iter().sum();
    if top == 0.0 || total == 0 || hist.is_empty() {
        return top as f32;
    }
    let bins = hist.len();
    let width = top / bins as f64;
    let center = |i: usize| (i as f64 + 0.5) * width;
    // Rounding noise inside the range, clipping noise (weighted) outside, per candidate
    // threshold at the end of bin `t`.
    let noise = |t: usize, clip_weight: f64| {
        let limit = (t + 1) as f64 * width;
        let step = limit / levels;
        hist.iter().enumerate().fold(0.0, |acc, (i, &n)| {
            let x = center(i);
            let e = if x <= limit { step * step / 12.0 } else { clip_weight * (x - limit) * (x - limit) };
            acc + n as f64 * e
        })
    };
    let best_by = |clip_weight: f64| {
        let first = (bins / 16).max(1) - 1;
        (first..bins).min_by(|&a, &b| noise(a, clip_weight).total_cmp(&noise(b, clip_weight))).unwrap_or(bins - 1)
    };
    let t = match opts.calibration {
        Calibration::None => return top as f32,
        Calibration::Percentile => {
            let want = (opts.percentile.clamp(0.0, 100.0) / 100.0 * total as f64).ceil() as u64;
            let mut seen = 0;
            hist.iter()
                .position(|&n| {
                    seen += n;
                    seen >= want
                })
                .unwrap_or(bins - 1)
        }
        Calibration::Mse => best_by(1.0),
        Calibration::Sqnr => best_by(3.0),
        // Entropy calibration merges the histogram into 128 bins, as int8's levels; at 16
        // bits the levels are finer than the histogram's bins, nothing is lost by
        // merging, and the whole range is kept.
        Calibration::KlMinimization if levels > 255.0 => bins - 1,
        Calibration::KlMinimization => kl_threshold(hist, 128),
    };
    ((t + 1) as f64 * width) as f32
}

/// TensorRT's entropy calibration: the bin count `i >= target` whose histogram prefix
/// (outliers folded into its last bin) loses least information, as KL divergence, when
/// merged into `target` bins and expanded back. Returns the last kept bin.
fn kl_threshold(hist: &[u64], target: usize) -> usize {
    let bins = hist.len();
    if bins <= target {
        return bins - 1;
    }
    let mut best = (f64::INFINITY, bins - 1);
    for i in target..=bins {
        let mut p: Vec<f64> = hist[..i].iter().map(|&n| n as f64).collect();
        p[i - 1] += hist[i..].iter().map(|&n| n as f64).sum::<f64>();
        let mut q = vec![0.0; i];
        for j in 0..target {
            let (lo, hi) = (j * i / target, ((j + 1) * i / target).max(j * i / target + 1));
            let nonzero = hist[lo..hi].iter().filter(|&&n| n > 0).count();
            let sum: f64 = hist[lo..hi].iter().map(|&n| n as f64).sum();
            for k in lo..hi {
                if hist[k] > 0 {
                    q[k] = sum / nonzero as f64;
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        if ps == 0.0 || qs == 0.0 {
            continue;
        }
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(&a, _)| a > 0.0)
            .map(|(&a, &b)| {
                let (a, b) = (a / ps, (b / qs).max(1e-12));
                a * (a / b).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i - 1);
        }
    }
    best.1
}

/// Node names from a `-node-precision-info` file: the names listed under
/// `FP16NodeInstanceNames` (a YAML list, inline `[a, b]` or one `- name` per line).
pub fn parse_node_precision(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut in_list = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("FP16NodeInstanceNames:") {
            in_list = true;
            let rest = rest.trim();
            if let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                names.extend(inner.split(',').map(|s| unquote(s.trim())).filter(|s| !s.is_empty()));
                in_list = false;
            }
            continue;
        }
        match line.strip_prefix("- ") {
            Some(name) if in_list => names.push(unquote(name.trim())),
            _ => in_list = false,
        }
    }
    if names.is_empty() {
        return Err("no node names under FP16NodeInstanceNames".into());
    }
    Ok(names)
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '\'').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(hist: Vec<u64>, max: f32) -> TensorStats {
        TensorStats { min: 0.0, max, histogram: hist }
    }

    #[test]
    fn thresholds_follow_the_method() {
        // Millions of small values and one outlier at the top.
        let mut hist = vec![0u64; 512];
        for (i, h) in hist.iter_mut().enumerate().take(64) {
            *h = (1000 - i as u64 * 10) * 1000;
        }
        hist[511] = 1;
        let s = stats(hist, 10.0);
        let t = |calibration, percentile| {
            threshold(&s, 127.0, &QuantOptions { calibration, percentile, ..QuantOptions::default() })
        };
        assert_eq!(t(Calibration::None, 0.0), 10.0);
        // 99.99% of the magnitudes lie in the first 64 bins (1.25).
        assert!(t(Calibration::Percentile, 99.99) <= 1.26, "{}", t(Calibration::Percentile, 99.99));
        for c in [Calibration::Mse, Calibration::Sqnr, Calibration::KlMinimization] {
            let v = t(c, 0.0);
            assert!(v > 0.5 && v < 5.0, "{c:?} clipped at {v}: the outlier must not set the range");
        }
        // Clipping weighted more keeps at least as much range.
        assert!(t(Calibration::Sqnr, 0.0) >= t(Calibration::Mse, 0.0));
    }

    #[test]
    fn node_precision_files_list_names() {
        assert_eq!(parse_node_precision("FP16NodeInstanceNames: [conv1, 'conv2']\n").unwrap(), ["conv1", "conv2"]);
        let yaml = "# keep these\nFP16NodeInstanceNames:\n  - fc\n  - \"head\"\nOther: 1\n";
        assert_eq!(parse_node_precision(yaml).unwrap(), ["fc", "head"]);
        assert!(parse_node_precision("Other: [a]").is_err());
    }
}
