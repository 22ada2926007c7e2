//! A program container read and validated on the host.

use std::path::Path;
use std::sync::Arc;

use aicsim_abi::container::{IoBinding, ProgramImage};
use aicsim_abi::memory::HeapMemory;
use aicsim_device::nsp::{validate_stream, CostModel, Limits, NspCore};
use aicsim_device::scheduler::{ExecMode, Plan, Scheduler};

use crate::error::{Result, RuntimeError};

/// A parsed program container, cheap to clone.
#[derive(Clone, Debug)]
pub struct Program {
    image: Arc<ProgramImage>,
    bytes: Arc<Vec<u8>>,
}

impl Program {
    /// Reads `DIR/programqpc.bin` when `path` is a directory, else the file itself.
    pub fn from_path(path: &Path) -> Result<Program> {
        let file = if path.is_dir() { path.join("programqpc.bin") } else { path.to_path_buf() };
        let bytes = std::fs::read(&file).map_err(|source| RuntimeError::ReadProgram { path: file.clone(), source })?;
        Program::from_bytes(bytes).map_err(|e| match e {
            RuntimeError::BadContainer { source, .. } => RuntimeError::BadContainer { path: file, source },
            other => other,
        })
    }

    /// Parses container bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Program> {
        let image = ProgramImage::parse(&bytes)
            .map_err(|source| RuntimeError::BadContainer { path: "<memory>".into(), source })?;
        Program::check(&image)?;
        Ok(Program { image: Arc::new(image), bytes: Arc::new(bytes) })
    }

    /// Serialises an image (e.g. a built-in program).
    pub fn from_image(image: ProgramImage) -> Result<Program> {
        Program::check(&image)?;
        let bytes = image.to_bytes();
        Ok(Program { image: Arc::new(image), bytes: Arc::new(bytes) })
    }

    fn check(image: &ProgramImage) -> Result<()> {
        for entry in 0..image.entry_count() {
            if image.entry_inputs(entry).next().is_none() {
                let which = if image.entries.is_empty() {
                    String::new()
                } else {
                    format!("'s entry '{}'", image.entry_name(entry))
                };
                return Err(RuntimeError::UnsupportedProgram {
                    program: format!("{}{which}", image.name),
                    problem: "has no inputs: the doorbell rides on the last input".into(),
                });
            }
        }
        Ok(())
    }

    pub fn image(&self) -> &ProgramImage {
        &self.image
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn name(&self) -> &str {
        &self.image.name
    }

    pub fn batch_size(&self) -> u32 {
        self.image.batch_size
    }

    /// Checks that `inputs` are one buffer per program input, each of its host size.
    pub fn check_inputs(&self, inputs: &[impl AsRef<[u8]>]) -> Result<()> {
        self.check_entry_inputs(0, inputs)
    }

    /// [`Program::check_inputs`] for entry `entry`.
    pub fn check_entry_inputs(&self, entry: usize, inputs: &[impl AsRef<[u8]>]) -> Result<()> {
        let bindings = self.entry_inputs(entry);
        if inputs.len() != bindings.len() {
            return Err(RuntimeError::InputCount { expected: bindings.len(), got: inputs.len() });
        }
        for (index, (data, b)) in inputs.iter().zip(&bindings).enumerate() {
            let got = data.as_ref().len();
            if got as u64 != b.host_size_bytes() {
                return Err(RuntimeError::InputSize {
                    index,
                    name: b.name.clone(),
                    got,
                    expected: b.host_size_bytes(),
                });
            }
        }
        Ok(())
    }

    /// Pre-processing of one set of inputs: each from its host format into the device's,
    /// as the input buffers take it.
    pub fn device_inputs(&self, inputs: &[impl AsRef<[u8]>]) -> Result<Vec<Vec<u8>>> {
        self.device_inputs_of(0, inputs)
    }

    /// [`Program::device_inputs`] for entry `entry`.
    pub fn device_inputs_of(&self, entry: usize, inputs: &[impl AsRef<[u8]>]) -> Result<Vec<Vec<u8>>> {
        self.check_entry_inputs(entry, inputs)?;
        Ok(inputs
            .iter()
            .zip(self.entry_inputs(entry))
            .map(|(data, b)| {
                let mut device = vec![0u8; b.size_bytes as usize];
                crate::convert::host_to_device(b, data.as_ref(), &mut device);
                device
            })
            .collect())
    }

    /// How long one inference of the program takes on a device with `cost` at
    /// `clock_hz` when nothing else runs, in nanoseconds; `None` if its instructions do
    /// not decode (the device would refuse it too).
    pub fn solo_device_ns(&self, cost: &CostModel, clock_hz: u64) -> Option<u64> {
        self.entry_device_ns(0, cost, clock_hz)
    }

    /// [`Program::solo_device_ns`] of one entry.
    pub fn entry_device_ns(&self, entry: usize, cost: &CostModel, clock_hz: u64) -> Option<u64> {
        let image = &self.image;
        let limits = Limits { vtcm_bytes: image.vtcm_bytes, ddr_bytes: image.ddr_bytes, cores: image.num_cores() };
        let streams = (0..image.cores.len())
            .map(|core| validate_stream(core as u32, image.entry_stream(entry, core), &limits).ok())
            .collect::<Option<Vec<_>>>()?;
        let mut scheduler = Scheduler::new(*cost, clock_hz);
        let cores: Vec<u32> = (0..image.num_cores()).collect();
        scheduler.start(Arc::new(Plan::new(streams, cost)), &cores, 0);
        let mut nsps: Vec<Option<NspCore>> = (0..image.num_cores()).map(|_| None).collect();
        let done = scheduler.run_until_completion(&mut nsps, 0, &HeapMemory::new(0), ExecMode::Timing);
        let cycles = done.into_iter().next()?.1.ok()?.cycles();
        Some(aicsim_abi::clock::ns_at_or_after(cycles, clock_hz))
    }

    /// Bytes the host sends to the device per inference, in the device's format.
    pub fn device_input_bytes(&self) -> u64 {
        self.image.inputs().map(|b| b.size_bytes).sum()
    }

    pub fn inputs(&self) -> Vec<&IoBinding> {
        self.image.inputs().collect()
    }

    pub fn outputs(&self) -> Vec<&IoBinding> {
        self.image.outputs().collect()
    }

    pub fn entry_inputs(&self, entry: usize) -> Vec<&IoBinding> {
        self.image.entry_inputs(entry).collect()
    }

    pub fn entry_outputs(&self, entry: usize) -> Vec<&IoBinding> {
        self.image.entry_outputs(entry).collect()
    }

    /// How many entries the program has (see [`ProgramImage::entries`]).
    pub fn entry_count(&self) -> usize {
        self.image.entry_count()
    }
}
