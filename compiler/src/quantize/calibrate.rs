//! Calibration on the simulated device: the float program runs functionally over the
//! samples, and every tensor it stores is read back from the activation's DDR.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aicsim_abi::control::ActivationInfo;
use aicsim_abi::layout::MemoryMap;
use aicsim_abi::memory::SharedMemory;
use aicsim_device::firmware::DeviceConfig;
use aicsim_device::rig::Rig;
use aicsim_device::scheduler::ExecMode;

use super::{fingerprint, Profile, TensorStats};
use crate::onnx::Model;
use crate::{compile, CompileError, CompileOptions, Compiled};

/// Little-endian f32 values of `bytes`.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A compiled program loaded and activated on a device of its own, run functionally.
struct Bench {
    rig: Rig,
    info: ActivationInfo,
    image: aicsim_abi::container::ProgramImage,
    io_at: u64,
}

fn device_error(what: &str, detail: impl std::fmt::Debug) -> CompileError {
    CompileError::Model(format!("calibration run: {what}: {detail:?}"))
}

impl Bench {
    fn new(c: &Compiled) -> Result<Bench, CompileError> {
        let bytes = c.image.to_bytes();
        let io: u64 = c.image.bindings.iter().map(|b| b.size_bytes).sum();
        let mib = |v: u64| v.div_ceil(1 << 20) << 20;
        let map = MemoryMap {
            ring_nelem: 16,
            host_bytes: 2 * mib(bytes.len() as u64).max(mib(io + 4096)),
            ddr_bytes: mib(2 * c.image.ddr_bytes) + (16 << 20),
        };
        let cores = c.image.cores.len() as u32;
        let config = DeviceConfig {
            num_nsp: cores.max(1),
            vtcm_bytes: c.image.vtcm_bytes.max(1 << 20).next_power_of_two(),
            map,
            mode: ExecMode::Functional,
            ..DeviceConfig::default()
        };
        let mut rig = Rig::new(config);
        let staging = rig.staging();
        let program = rig.load(&bytes, staging).map_err(|r| device_error("load", r.message))?;
        let info = rig.activate(program, 0).map_err(|r| device_error("activate", r.message))?;
        let io_at = rig.map.host_offset();
        Ok(Bench { rig, info, image: c.image.clone(), io_at })
    }

    fn infer(&mut self, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, CompileError> {
        let bytes: Vec<Vec<u8>> = inputs.iter().map(|x| x.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let outs =
            self.rig.infer(0, self.info, &self.image, &refs, self.io_at).map_err(|r| device_error("infer", r))?;
        Ok(outs.iter().map(|o| f32s(o)).collect())
    }

    /// `elements` f32 values of the activation's DDR from byte `offset`.
    fn read(&self, offset: u64, elements: usize) -> Vec<f32> {
        let mut raw = vec![0u8; elements * 4];
        let at = self.rig.map.ddr_offset() + self.info.ddr_base + offset;
        self.rig.mem.read(at, &mut raw).expect("values lie inside the activation's DDR");
        f32s(&raw)
    }
}

/// Runs a compiled program functionally on a simulated device of its own, once per
/// sample (each sample: one f32 vector per input); returns each sample's outputs.
pub fn run_functional(c: &Compiled, samples: &[Vec<Vec<f32>>]) -> Result<Vec<Vec<Vec<f32>>>, CompileError> {
    let mut bench = Bench::new(c)?;
    samples.iter().map(|s| bench.infer(s)).collect()
}

/// Calibrates `model` over `samples`: its float program (f32, one core) runs on the
/// simulated device once per sample for the ranges and again for the histograms of
/// `bins` bins.
pub fn calibrate(
    model: &Model,
    model_dir: Option<&Path>,
    symbols: &HashMap<String, i64>,
    samples: &[Vec<Vec<f32>>],
    bins: usize,
) -> Result<Profile, CompileError> {
    if samples.is_empty() {
        return Err(CompileError::Model("calibration needs at least one sample".into()));
    }
    let opts = CompileOptions { symbols: symbols.clone(), ..CompileOptions::default() };
    let c = compile(model, model_dir, &model.graph.name, &opts)?;
    // Every float tensor the program stores, by its ONNX name (a view reads its storage).
    let mut tensors: Vec<(String, u64, usize)> = Vec::new();
    for v in &c.graph.values {
        let at = c.lowered.value_offsets.get(v.storage).copied().unwrap_or(u64::MAX);
        if at != u64::MAX && v.quant.is_none() {
            tensors.push((v.name.clone(), at, v.elements() * c.replicas));
        }
    }
    let mut bench = Bench::new(&c)?;
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); tensors.len()];
    for s in samples {
        bench.infer(s)?;
        for ((_, at, n), r) in tensors.iter().zip(&mut ranges) {
            for v in bench.read(*at, *n) {
                if v.is_finite() {
                    *r = (r.0.min(v), r.1.max(v));
                }
            }
        }
    }
    let bins = bins.max(1);
    let mut hists = vec![vec![0u64; bins]; tensors.len()];
    for s in samples {
        bench.infer(s)?;
        for (((_, at, n), r), h) in tensors.iter().zip(&ranges).zip(&mut hists) {
            let top = r.0.abs().max(r.1.abs());
            for v in bench.read(*at, *n) {
                if v.is_finite() {
                    let i = if top > 0.0 { ((v.abs() / top) * bins as f32) as usize } else { 0 };
                    h[i.min(bins - 1)] += 1;
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (((name, _, _), r), h) in tensors.into_iter().zip(ranges).zip(hists) {
        let (min, max) = if r.0 <= r.1 { r } else { (0.0, 0.0) };
        out.insert(name, TensorStats { min, max, histogram: h });
    }
    Ok(Profile {
        model: model.graph.name.clone(),
        fingerprint: fingerprint(model),
        samples: samples.len(),
        tensors: out,
    })
}

/// The calibration samples an `-input-list-file` names: one line per sample, the raw
/// f32 files of its inputs in the model's input order (separated by commas or spaces;
/// relative paths from the list's directory). `inputs` gives each input's name and
/// element count; blank lines and `#` comments are skipped.
pub fn read_input_list(path: &Path, inputs: &[(String, usize)]) -> Result<Vec<Vec<Vec<f32>>>, CompileError> {
    let shown = path.display().to_string();
    let io = |p: &str, reason: String| CompileError::Io { path: p.into(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| io(&shown, e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let files: Vec<&str> = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).collect();
        if files.len() != inputs.len() {
            return Err(io(
                &shown,
                format!("line {} names {} file(s); the model has {} input(s)", n + 1, files.len(), inputs.len()),
            ));
        }
        let mut sample = Vec::new();
        for (f, (name, elements)) in files.iter().zip(inputs) {
            let p = if Path::new(f).is_absolute() { Path::new(f).to_path_buf() } else { dir.join(f) };
            let shown = p.display().to_string();
            let bytes = std::fs::read(&p).map_err(|e| io(&shown, e.to_string()))?;
            if bytes.len() != elements * 4 {
                return Err(io(
                    &shown,
                    format!(
                        "{} bytes; input '{name}' takes {elements} f32 values ({} bytes)",
                        bytes.len(),
                        elements * 4
                    ),
                ));
            }
            sample.push(f32s(&bytes));
        }
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(io(&shown, "lists no calibration samples".into()));
    }
    Ok(samples)
}
