//! InferenceSet: N activations of one program, each keeping up to S inferences in
//! flight, fed from one shared queue of inference indices.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_device::dbc::NUM_DBC;
use parking_lot::Mutex;

use crate::activation::Activation;
use crate::error::{Result, RuntimeError};
use crate::timestamps::Timestamps;
use crate::{Device, Program};

/// How long a run goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLimit {
    /// Exactly this many inferences.
    Count(u64),
    /// Start inferences until this much time has passed, then finish those in flight.
    Duration(Duration),
}

/// One finished inference, handed to the completion callback on its worker thread.
pub struct Completion<'a> {
    /// Position in the run, from 0.
    pub index: u64,
    /// Which activation ran it.
    pub activation: usize,
    pub outputs: &'a [Vec<u8>],
    pub timestamps: Timestamps,
    /// Inferences in flight on this activation when it was submitted (itself included).
    pub queue_depth: usize,
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub inferences: u64,
    /// From the first submission to the last completion.
    pub elapsed: Duration,
}

/// N activations x S in-flight inferences.
pub struct InferenceSet {
    program: Program,
    activations: Vec<Activation>,
    set_size: usize,
}

impl InferenceSet {
    /// Loads `program` once and activates it `num_activations` times.
    pub fn new(
        device: Arc<Device>,
        program: &Program,
        num_activations: usize,
        set_size: usize,
    ) -> Result<InferenceSet> {
        if num_activations == 0 || num_activations > NUM_DBC {
            return Err(RuntimeError::Config(format!(
                "{num_activations} activations requested; between 1 and {NUM_DBC} (one per DMA Bridge Channel)"
            )));
        }
        if set_size == 0 {
            return Err(RuntimeError::Config("set size must be at least 1".into()));
        }
        let loaded = Arc::new(device.load_program(program.bytes())?);
        let activations = (0..num_activations)
            .map(|_| Activation::with_loaded(device.clone(), program, loaded.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(InferenceSet { program: program.clone(), activations, set_size })
    }

    pub fn activations(&self) -> &[Activation] {
        &self.activations
    }

    pub fn set_size(&self) -> usize {
        self.set_size
    }

    /// Runs inferences until `limit`. `fill_inputs(index, inputs)` writes inference
    /// `index`'s inputs into host buffers already sized for the program (pre-processing);
    /// `on_complete` sees each finished inference. Both run on the activation's worker
    /// thread. The first error stops the run (inferences in flight are still waited for)
    /// and is returned.
    pub fn run<I, C>(&self, limit: RunLimit, fill_inputs: I, on_complete: C) -> Result<RunSummary>
    where
        I: Fn(u64, &mut [Vec<u8>]) + Sync,
        C: Fn(&Completion<'_>) + Sync,
    {
        let next = AtomicU64::new(0);
        let done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let first_error: Mutex<Option<RuntimeError>> = Mutex::new(None);
        let start = Instant::now();
        let claim = || -> Option<u64> {
            if stop.load(Relaxed) {
                return None;
            }
            match limit {
                RunLimit::Count(n) => {
                    let i = next.fetch_add(1, Relaxed);
                    (i < n).then_some(i)
                }
                RunLimit::Duration(d) => (start.elapsed() < d).then(|| next.fetch_add(1, Relaxed)),
            }
        };
        std::thread::scope(|scope| {
            for (a, activation) in self.activations.iter().enumerate() {
                let (claim, fill_inputs, on_complete, done, stop, first_error) =
                    (&claim, &fill_inputs, &on_complete, &done, &stop, &first_error);
                scope.spawn(move || {
                    if let Err(e) = self.worker(a, activation, claim, fill_inputs, on_complete, done) {
                        stop.store(true, SeqCst);
                        first_error.lock().get_or_insert(e);
                    }
                });
            }
        });
        match first_error.into_inner() {
            Some(e) => Err(e),
            None => Ok(RunSummary { inferences: done.load(SeqCst), elapsed: start.elapsed() }),
        }
    }

    fn worker<I, C>(
        &self,
        a: usize,
        activation: &Activation,
        claim: &dyn Fn() -> Option<u64>,
        fill_inputs: &I,
        on_complete: &C,
        done: &AtomicU64,
    ) -> Result<()>
    where
        I: Fn(u64, &mut [Vec<u8>]) + Sync,
        C: Fn(&Completion<'_>) + Sync,
    {
        let s = self.set_size;
        let slots = (0..s).map(|_| activation.new_slot()).collect::<Result<Vec<_>>>()?;
        let input_sizes: Vec<usize> = self.program.inputs().iter().map(|b| b.size_bytes as usize).collect();
        let mut staging: Vec<Vec<Vec<u8>>> =
            (0..s).map(|_| input_sizes.iter().map(|&n| vec![0u8; n]).collect()).collect();
        let mut outputs: Vec<Vec<u8>> =
            self.program.outputs().iter().map(|b| vec![0u8; b.size_bytes as usize]).collect();
        let mut free: Vec<usize> = (0..s).rev().collect();
        let mut in_flight: VecDeque<(usize, u64, Timestamps, usize)> = VecDeque::with_capacity(s);
        let mut failure = None;
        loop {
            let index = if free.is_empty() || failure.is_some() { None } else { claim() };
            if let Some(index) = index {
                let slot = free.pop().expect("checked non-empty");
                let mut ts = Timestamps::new(Instant::now());
                ts.pre_proc_start = Instant::now();
                fill_inputs(index, &mut staging[slot]);
                let submitted = slots[slot]
                    .write_inputs(&self.program, &staging[slot])
                    .and_then(|()| slots[slot].submit(activation, &mut ts));
                match submitted {
                    Ok(()) => in_flight.push_back((slot, index, ts, in_flight.len() + 1)),
                    Err(e) => {
                        free.push(slot);
                        failure.get_or_insert(e);
                    }
                }
                continue;
            }
            let Some((slot, index, mut ts, queue_depth)) = in_flight.pop_front() else { break };
            let finished = slots[slot].wait(activation, &mut ts).and_then(|()| slots[slot].read_outputs(&mut outputs));
            free.push(slot);
            match finished {
                Ok(()) => {
                    ts.post_proc_end = Instant::now();
                    done.fetch_add(1, Relaxed);
                    on_complete(&Completion { index, activation: a, outputs: &outputs, timestamps: ts, queue_depth });
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
