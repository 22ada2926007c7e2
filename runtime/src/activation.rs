//! An activation — a program placed on cores, DDR and a channel — and the buffers of
//! one in-flight inference on it.
//!
//! The DMA plan every activation follows:
//! - each input buffer is one slice to `ddr_base + binding.ddr_offset`, whose element
//!   increments the activation's input semaphore after its DMA; the last input also
//!   rings the activation's doorbell, which starts the program once every input landed;
//! - each output buffer is one slice from `ddr_base + binding.ddr_offset`, whose element
//!   first waits (P) on the output semaphore, which the program increments once per
//!   output when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_abi::container::IoBinding;
use aicsim_abi::dbc::CompletionCode;
use aicsim_abi::isa::Op;
use aicsim_driver::{
    Buffer, Channel, DmaDirection, Doorbell, DoorbellWidth, DriverError, SemOp, SemaphoreCommand, Slice, Stamp,
    SyncPoint,
};

use crate::convert;
use crate::error::{Result, RuntimeError};
use crate::timestamps::{wall_ns, Timestamps};
use crate::{Device, Program};

/// How long a wait may take before the inference fails with ETIMEDOUT.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do when the channel's ring is full (EAGAIN), as qaic-runner's
/// `--submit-timeout` and `--submit-retry-count`: keep trying for `timeout`, then start
/// over up to `retries` more times, then fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitPolicy {
    pub timeout: Duration,
    pub retries: u32,
}

impl Default for SubmitPolicy {
    fn default() -> SubmitPolicy {
        SubmitPolicy { timeout: Duration::from_millis(1000), retries: 5 }
    }
}

/// A program activated on the device.
pub struct Activation {
    // Fields drop in order: the channel is deactivated before its program unloads.
    channel: Channel,
    _loaded: Arc<aicsim_driver::Program>,
    /// The slots of synchronous runs, one per entry once used.
    sync_slots: parking_lot::Mutex<Vec<Option<InferenceSlot>>>,
    /// Inferences queued on the channel so far; the device numbers its runs the same way.
    submitted: parking_lot::Mutex<u64>,
    program: Program,
    device: Arc<Device>,
    /// How long a wait for one inference may take (the driver's default is 5 s; a
    /// large model simulated functionally on a small host needs longer).
    wait_timeout: Duration,
}

impl Activation {
    /// Loads `program` (once) and activates it.
    pub fn new(device: Arc<Device>, program: &Program) -> Result<Activation> {
        let loaded = Arc::new(device.load_program(program.bytes())?);
        Activation::with_loaded(device, program, loaded)
    }

    /// Activates an already loaded program.
    pub fn with_loaded(
        device: Arc<Device>,
        program: &Program,
        loaded: Arc<aicsim_driver::Program>,
    ) -> Result<Activation> {
        let channel = device.activate(&loaded)?;
        Ok(Activation {
            device,
            program: program.clone(),
            channel,
            _loaded: loaded,
            sync_slots: parking_lot::Mutex::new(Vec::new()),
            submitted: parking_lot::Mutex::new(0),
            wait_timeout: WAIT_TIMEOUT,
        })
    }

    /// How long a wait for one inference may take.
    pub fn wait_timeout(&self) -> Duration {
        self.wait_timeout
    }

    /// The same activation with another per-inference wait timeout.
    pub fn with_wait_timeout(mut self, timeout: Duration) -> Activation {
        self.wait_timeout = timeout;
        self
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    /// The device's record of run `seq` (as returned by a submit), if still held.
    pub fn run_record(&self, seq: u64) -> Option<aicsim_driver::RunRecord> {
        self.device.run_record(&self.channel, seq).ok().flatten()
    }

    /// Records every instruction's interval in this activation's runs from now on.
    pub fn set_trace(&self, on: bool) -> Result<()> {
        Ok(self.device.set_trace(&self.channel, on)?)
    }

    /// The device's statistics of run `seq` (as returned by a submit).
    pub fn run_profile(&self, seq: u64) -> Result<aicsim_driver::RunProfile> {
        Ok(self.device.run_profile(&self.channel, seq)?)
    }

    /// `error`, of run `seq`, named more precisely when it is a fault the device
    /// attributed to an instruction: which layer, which operation, and why (an index
    /// outside an embedding table, a position outside a KV cache).
    pub fn explain(&self, seq: u64, error: RuntimeError) -> RuntimeError {
        let RuntimeError::Driver(DriverError::Device { code: CompletionCode::ProgramFault, .. }) = &error else {
            return error;
        };
        let Some((entry, core, index)) = self.run_record(seq).and_then(|r| r.fault()) else { return error };
        let image = self.program.image();
        let op = image.entry_stream(entry, core).get(index).and_then(|i| i.decode().ok());
        let at = image.entries.get(entry).map_or(0, |e| e.starts[core] as usize) + index;
        let (layer, op_type) = image
            .layer_of(core, at as u32)
            .map_or_else(|| (String::from("?"), String::from("?")), |l| (l.name.clone(), l.op_type.clone()));
        let what = match op {
            Some(Op::Gather { table, .. }) => format!(
                "an index outside the table's {} rows (a token id past the vocabulary?); nothing was read outside it",
                table.shape[0]
            ),
            Some(Op::Scatter { dst, .. }) => format!(
                "a position outside the cache's {} rows (a sequence past the cache's capacity?); nothing was written",
                dst.shape[1]
            ),
            Some(op) => format!("instruction {index} ({op:?}) could not run"),
            None => format!("instruction {index}"),
        };
        RuntimeError::ProgramFault { program: self.program.name().into(), layer, op_type, core, what }
    }

    /// Buffers for one in-flight inference, sliced for this activation.
    pub fn new_slot(&self) -> Result<InferenceSlot> {
        self.new_entry_slot(0)
    }

    /// Buffers for one in-flight run of the program's entry `entry`.
    pub fn new_entry_slot(&self, entry: usize) -> Result<InferenceSlot> {
        let info = *self.channel.activation();
        let inputs = self.program.entry_inputs(entry);
        let outputs = self.program.entry_outputs(entry);
        if inputs.is_empty() {
            return Err(RuntimeError::UnsupportedProgram {
                program: self.program.name().into(),
                problem: format!("has no entry {entry} (it has {})", self.program.entry_count()),
            });
        }
        let mut slot = InferenceSlot {
            entry,
            inputs: Vec::new(),
            outputs: Vec::new(),
            output_bindings: outputs.iter().map(|b| (*b).clone()).collect(),
            staging: parking_lot::Mutex::new(Vec::new()),
        };
        // One buffer per binding, moving the binding's bytes with one slice.
        let attach = |b: &IoBinding, dir: DmaDirection, semaphore: SemaphoreCommand, doorbell: Option<Doorbell>| {
            let buf = self.device.create_buffer(b.size_bytes)?;
            let slice = Slice {
                offset: 0,
                size: b.size_bytes,
                dev_addr: info.ddr_base + b.ddr_offset,
                semaphores: vec![semaphore],
                doorbell,
            };
            buf.attach_slices(&self.channel, dir, &[slice])?;
            Ok::<_, RuntimeError>(buf)
        };
        for (i, b) in inputs.iter().enumerate() {
            // Each input bumps the input counter once its bytes are in; the last one rings.
            let sem = SemaphoreCommand { op: SemOp::Inc, index: info.sem_inputs, value: 1, at: SyncPoint::Postsync };
            let last = i + 1 == inputs.len();
            // The doorbell's data is 1 + the entry to run.
            let data = 1 + entry as u32;
            let doorbell = last.then_some(Doorbell { addr: info.doorbell, data, width: DoorbellWidth::Bits32 });
            slot.inputs.push(attach(b, DmaDirection::ToDevice, sem, doorbell)?);
        }
        for b in &outputs {
            // Outputs wait for the program to post its output counter before moving.
            let sem = SemaphoreCommand { op: SemOp::P, index: info.sem_outputs, value: 0, at: SyncPoint::Presync };
            slot.outputs.push(attach(b, DmaDirection::FromDevice, sem, None)?);
        }
        Ok(slot)
    }

    /// Runs one inference synchronously and returns its outputs.
    pub fn run(&self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        self.run_entry(0, inputs)
    }

    /// Runs entry `entry` of the program once, synchronously, and returns its outputs.
    /// State the program retains (a KV cache) stays on the device between runs.
    pub fn run_entry(&self, entry: usize, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        let mut guard = self.sync_slots.lock();
        if guard.len() <= entry {
            guard.resize_with(entry + 1, || None);
        }
        if guard[entry].is_none() {
            guard[entry] = Some(self.new_entry_slot(entry)?);
        }
        let slot = guard[entry].as_ref().expect("set above");
        let mut ts = Timestamps::now();
        slot.write_inputs(&self.program, inputs)?;
        ts.pre_proc_end = wall_ns();
        let seq = slot.submit(self, &mut ts)?;
        slot.wait(self, &mut ts).map_err(|e| self.explain(seq, e))?;
        let mut outputs: Vec<Vec<u8>> =
            self.program.entry_outputs(entry).iter().map(|b| vec![0u8; b.host_size_bytes() as usize]).collect();
        slot.read_outputs(&mut outputs)?;
        Ok(outputs)
    }
}

/// The buffers of one in-flight inference.
pub struct InferenceSlot {
    /// The program entry it runs.
    entry: usize,
    inputs: Vec<Buffer>,
    outputs: Vec<Buffer>,
    output_bindings: Vec<IoBinding>,
    /// Room for a tensor in the device's format on its way to or from the host's, kept
    /// between inferences.
    staging: parking_lot::Mutex<Vec<u8>>,
}

impl InferenceSlot {
    /// Copies host inputs into the input buffers (pre-processing), checking their sizes.
    pub fn write_inputs(&self, program: &Program, inputs: &[impl AsRef<[u8]>]) -> Result<()> {
        program.check_entry_inputs(self.entry, inputs)?;
        for ((data, buf), b) in inputs.iter().zip(&self.inputs).zip(&program.entry_inputs(self.entry)) {
            let data = data.as_ref();
            if b.converts() {
                let mut device = self.staging.lock();
                device.resize(b.size_bytes as usize, 0);
                convert::host_to_device(b, data, &mut device);
                buf.write(0, &device)?;
            } else {
                buf.write(0, data)?;
            }
        }
        Ok(())
    }

    /// Queues the whole inference (inputs then outputs) in one execute call, with the
    /// default [`SubmitPolicy`]. Returns the device's run number for it.
    pub fn submit(&self, activation: &Activation, ts: &mut Timestamps) -> Result<u64> {
        self.submit_with(activation, ts, &SubmitPolicy::default())
    }

    /// Queues the whole inference; a full ring (EAGAIN) is retried as `policy` says.
    /// Returns the device's run number for it (see [`Activation::run_record`]).
    pub fn submit_with(&self, activation: &Activation, ts: &mut Timestamps, policy: &SubmitPolicy) -> Result<u64> {
        // Held across the execute call: submissions are numbered in the order the
        // driver queues them, which is the order the device runs them.
        let mut count = activation.submitted.lock();
        let mut list = Vec::with_capacity(self.inputs.len() + self.outputs.len());
        list.extend(self.inputs.iter().map(|b| (b, DmaDirection::ToDevice)));
        list.extend(self.outputs.iter().map(|b| (b, DmaDirection::FromDevice)));
        ts.kernel_submit = wall_ns();
        let mut attempt = 0;
        let mut attempt_start = Instant::now();
        loop {
            match activation.device.execute(&activation.channel, &list) {
                Err(DriverError::Again(why)) => {
                    if attempt_start.elapsed() < policy.timeout {
                        std::thread::yield_now();
                    } else if attempt < policy.retries {
                        attempt += 1;
                        attempt_start = Instant::now();
                    } else {
                        return Err(RuntimeError::SubmitTimeout {
                            attempts: attempt + 1,
                            timeout: policy.timeout,
                            why,
                        });
                    }
                }
                result => break result?,
            }
        }
        ts.submitted = wall_ns();
        *count += 1;
        Ok(*count)
    }

    /// Copies inputs already in the device's format into the input buffers (what
    /// pre-processing leaves behind), checking their sizes.
    pub fn write_device_inputs(&self, program: &Program, inputs: &[Vec<u8>]) -> Result<()> {
        let bindings = program.entry_inputs(self.entry);
        if inputs.len() != bindings.len() {
            return Err(RuntimeError::InputCount { expected: bindings.len(), got: inputs.len() });
        }
        for (index, ((data, buf), b)) in inputs.iter().zip(&self.inputs).zip(&bindings).enumerate() {
            if data.len() as u64 != b.size_bytes {
                return Err(RuntimeError::InputSize {
                    index,
                    name: b.name.clone(),
                    got: data.len(),
                    expected: b.size_bytes,
                });
            }
            buf.write(0, data)?;
        }
        Ok(())
    }

    /// Queues the whole inference on the simulated clock, reaching the channel at
    /// `time_ns`; its last response wakes the host. One attempt: a full ring is
    /// [`DriverError::Again`]. Returns the device's run number for it.
    pub fn submit_at(&self, activation: &Activation, time_ns: u64) -> Result<u64> {
        let mut count = activation.submitted.lock();
        let mut list = Vec::with_capacity(self.inputs.len() + self.outputs.len());
        list.extend(self.inputs.iter().map(|b| (b, DmaDirection::ToDevice)));
        list.extend(self.outputs.iter().map(|b| (b, DmaDirection::FromDevice)));
        activation.device.execute_at(&activation.channel, &list, Stamp { time_ns, wakes_host: true })?;
        *count += 1;
        Ok(*count)
    }

    /// On the simulated clock, after [`InferenceSlot::wait`]: when the device posted the
    /// inference's last response.
    pub fn completed_at(&self, activation: &Activation) -> Result<u64> {
        let mut last = 0;
        for b in self.outputs.iter().chain(&self.inputs) {
            last = last.max(activation.device.completed_at(b)?);
        }
        Ok(last)
    }

    /// Waits for every buffer of the inference.
    pub fn wait(&self, activation: &Activation, ts: &mut Timestamps) -> Result<()> {
        for b in self.outputs.iter().chain(&self.inputs) {
            activation.device.wait(&activation.channel, b, activation.wait_timeout)?;
        }
        ts.completed = wall_ns();
        Ok(())
    }

    /// Copies the outputs out (post-processing); `outputs[i]` must be output i's size.
    /// `outputs[i]` must be output i's host size; outputs whose host format differs
    /// from the device's are converted here.
    pub fn read_outputs(&self, outputs: &mut [Vec<u8>]) -> Result<()> {
        for ((out, buf), b) in outputs.iter_mut().zip(&self.outputs).zip(&self.output_bindings) {
            if b.converts() {
                let mut device = self.staging.lock();
                device.resize(b.size_bytes as usize, 0);
                buf.read(0, &mut device)?;
                convert::device_to_host(b, &device, out);
            } else {
                buf.read(0, out)?;
            }
        }
        Ok(())
    }
}
