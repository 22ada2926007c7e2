//! InferenceSet: N activations of one program, each keeping up to S inferences in
//! flight, fed from one shared queue of inference indices.
//!
//! Each activation is served by T submitter threads (`-T`), which split its S buffer
//! slots between them; a thread submits into a free slot, and when none is free waits
//! for its oldest in-flight inference, post-processes it and hands it to the caller.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicsim_driver::CHANNELS;
use parking_lot::Mutex;

use crate::activation::{Activation, InferenceSlot, SubmitPolicy};
use crate::error::{Result, RuntimeError};
use crate::host_model::HostModel;
use crate::timestamps::{wall_ns, wall_ns_of, Timestamps};
use crate::{Device, Program};

/// How long a run goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunLimit {
    /// Exactly this many inferences.
    Count(u64),
    /// Start inferences until this much time has passed, then finish those in flight.
    Duration(Duration),
    /// One inference per entry, inference `i` arriving `arrivals[i]` after the start
    /// (non-decreasing). It starts no earlier than that, and its round trip counts from
    /// its arrival, so time spent waiting for a free slot shows up as latency.
    Arrivals(Arc<Vec<Duration>>),
}

/// What the device reported about the run that served one inference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceTiming {
    /// The program's execution time.
    pub exec: Duration,
    /// How long the activation's cores sat idle before this inference could start.
    pub input_wait: Duration,
    /// From the program's end until its outputs were taken.
    pub output_wait: Duration,
    /// Device cycles of the run, for exact arithmetic.
    pub exec_cycles: u64,
    /// When the run ended, in device time since the device booted.
    pub end: Duration,
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
    /// Inferences in flight on all activations when it was submitted (itself included).
    pub in_flight_total: usize,
    /// `None` if the device's record of the run was already overwritten.
    pub device: Option<DeviceTiming>,
    /// The device's number for the run that served it (see [`Activation::run_profile`]).
    pub seq: u64,
    /// Which of the run's input sets it read, when the run was given them
    /// ([`InferenceSet::run_simulated`]).
    pub input_set: Option<usize>,
    /// Why it failed, when the set reports errors per inference
    /// ([`InferenceSet::with_errors_reported`]); its outputs are then unspecified.
    pub error: Option<&'a RuntimeError>,
    /// In a generation run ([`InferenceSet::run_generation`]): which step of sequence
    /// `index` this was (0: the prefill; `k`: the `k`-th decode step).
    pub step: Option<u32>,
}

/// A generation run: per sequence, the prefill entry over a prompt, then decode steps
/// each taking the token the previous step chose (greedy, on the host) at the next
/// position. The program keeps the KV cache in device DDR (retained state).
#[derive(Clone, Debug)]
pub struct Generation {
    pub prefill: usize,
    pub decode: usize,
    /// The prompt's token ids, `[batch, prompt_len]`.
    pub prompt: Vec<i64>,
    pub prompt_len: usize,
    /// Decode steps after the prefill (each gives one more token).
    pub decode_steps: u32,
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub inferences: u64,
    /// From the start of the run to the last inference's return to the application.
    pub elapsed: Duration,
    /// When the run started, on the clock of its timestamps.
    pub start_ns: u64,
}

/// The device's record of run `seq` of `activation` as durations, if still held.
pub(crate) fn device_timing(activation: &Activation, seq: u64) -> Option<DeviceTiming> {
    let clock_hz = activation.device().clock_hz().max(1);
    activation.run_record(seq).map(|r| {
        let time = |cycles: u64| Duration::from_secs_f64(cycles as f64 / clock_hz as f64);
        DeviceTiming {
            exec: time(r.exec_cycles()),
            input_wait: time(r.input_wait_cycles()),
            output_wait: time(r.output_wait_cycles()),
            exec_cycles: r.exec_cycles(),
            end: time(r.end_cycle),
        }
    })
}

/// N activations x S in-flight inferences.
pub struct InferenceSet {
    program: Program,
    activations: Vec<Activation>,
    set_size: usize,
    threads_per_activation: usize,
    submit_policy: SubmitPolicy,
    report_errors: bool,
    /// Set by [`InferenceSet::stop_handle`]'s holder: the run under way (either clock)
    /// takes up nothing more (what is in flight completes); each run clears it when it
    /// ends.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// State shared by the worker threads of one run.
struct RunState<'a, I, C> {
    limit: RunLimit,
    start: Instant,
    next: AtomicU64,
    done: AtomicU64,
    in_flight: AtomicUsize,
    stop: AtomicBool,
    /// The set's [`InferenceSet::stop_handle`].
    stopped: &'a AtomicBool,
    fill_inputs: &'a I,
    on_complete: &'a C,
}

impl<I, C> RunState<'_, I, C> {
    /// The next inference to start and when it arrived. On an arrival schedule, waits
    /// for the next arrival only if `may_wait` (the caller has nothing in flight);
    /// otherwise answers `Some(None)`: not yet.
    fn claim(&self, may_wait: bool) -> Option<Option<(u64, Instant)>> {
        if self.stop.load(Relaxed) || self.stopped.load(Relaxed) {
            return None;
        }
        match &self.limit {
            RunLimit::Count(n) => {
                let i = self.next.fetch_add(1, Relaxed);
                (i < *n).then(|| Some((i, Instant::now())))
            }
            RunLimit::Duration(d) => {
                (self.start.elapsed() < *d).then(|| Some((self.next.fetch_add(1, Relaxed), Instant::now())))
            }
            RunLimit::Arrivals(arrivals) => loop {
                if self.stop.load(Relaxed) {
                    return None;
                }
                let i = self.next.load(SeqCst);
                let at = self.start + *arrivals.get(i as usize)?;
                if let Some(left) = at.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                    if !may_wait {
                        return Some(None);
                    }
                    // Sleep most of the way, then yield, to start on time without burning a core.
                    if left > Duration::from_micros(200) {
                        std::thread::sleep((left - Duration::from_micros(100)).min(Duration::from_millis(5)));
                    } else {
                        std::thread::yield_now();
                    }
                    continue;
                }
                if self.next.compare_exchange(i, i + 1, SeqCst, SeqCst).is_ok() {
                    return Some(Some((i, at)));
                }
            },
        }
    }
}

struct InFlight {
    slot: usize,
    index: u64,
    ts: Timestamps,
    queue_depth: usize,
    in_flight_total: usize,
    seq: u64,
}

impl InferenceSet {
    /// Loads `program` once and activates it `num_activations` times.
    pub fn new(
        device: Arc<Device>,
        program: &Program,
        num_activations: usize,
        set_size: usize,
    ) -> Result<InferenceSet> {
        if num_activations == 0 || num_activations > CHANNELS {
            return Err(RuntimeError::Config(format!(
                "{num_activations} activations requested; between 1 and {CHANNELS} (one per DMA Bridge Channel)"
            )));
        }
        if set_size == 0 {
            return Err(RuntimeError::Config("set size must be at least 1".into()));
        }
        let loaded = Arc::new(device.load_program(program.bytes())?);
        let activations = (0..num_activations)
            .map(|_| Activation::with_loaded(device.clone(), program, loaded.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(InferenceSet {
            program: program.clone(),
            activations,
            set_size,
            threads_per_activation: 1,
            submit_policy: SubmitPolicy::default(),
            report_errors: false,
            stop: Arc::default(),
        })
    }

    /// Serve each activation with `threads` submitter threads (at most the set size).
    pub fn with_threads_per_activation(mut self, threads: usize) -> Result<InferenceSet> {
        if threads == 0 || threads > self.set_size {
            return Err(RuntimeError::Config(format!(
                "{threads} threads per activation; between 1 and the set size {}",
                self.set_size
            )));
        }
        self.threads_per_activation = threads;
        Ok(self)
    }

    /// Hand a failed inference (a device error, a timeout, a reset) to the completion
    /// callback with its error and carry on, instead of stopping the run. Failures to
    /// submit still stop it.
    pub fn with_errors_reported(mut self, on: bool) -> InferenceSet {
        self.report_errors = on;
        self
    }

    pub fn with_submit_policy(mut self, policy: SubmitPolicy) -> InferenceSet {
        self.submit_policy = policy;
        self
    }

    pub fn submit_policy(&self) -> &SubmitPolicy {
        &self.submit_policy
    }

    /// Runs inferences until `limit` on the simulated clock (the device must run with
    /// `Pacing::Simulated`): every inference travels the whole stack, its timestamps
    /// come from `host` and the device, and `limit`'s durations are simulated. The
    /// input sets are already in the device's format ([`Program::device_inputs`]); slot
    /// `s` of activation `a` holds set `(a * set_size + s) % inputs.len()`, written
    /// before its first inference and read by the device for every one after (the host's
    /// per-inference pre-processing is timed by `host`, not repeated); with none, the
    /// buffers keep what they hold.
    /// `on_complete` sees each finished inference, in the order they complete, on the
    /// calling thread. The first error stops the run (inferences in flight are still
    /// taken in) and is returned. See `simulated` for how time is kept.
    pub fn run_simulated<C>(
        &self,
        limit: RunLimit,
        host: &HostModel,
        inputs: &[Vec<Vec<u8>>],
        on_complete: C,
    ) -> Result<RunSummary>
    where
        C: Fn(&Completion<'_>),
    {
        crate::simulated::Engine::new(self, limit, host, inputs, &on_complete, self.report_errors)?.run()
    }

    /// Generates on the simulated clock: `limit` counts (or times) sequences, each the
    /// prefill then `gen.decode_steps` decode steps on one lane; `on_complete` sees
    /// every step ([`Completion::step`]). The program's entries take `input_ids` and
    /// `position_ids` (int64 on the host) and give the logits first, `[batch, 1, vocab]`;
    /// the next token is their argmax. An activation holds one KV cache, so the set
    /// size must be 1.
    pub fn run_generation<C>(
        &self,
        limit: RunLimit,
        host: &HostModel,
        gen: &Generation,
        on_complete: C,
    ) -> Result<RunSummary>
    where
        C: Fn(&Completion<'_>),
    {
        if self.set_size != 1 {
            return Err(RuntimeError::UnsupportedProgram {
                program: self.program.name().into(),
                problem: format!(
                    "generates with a set size of {}: an activation holds one KV cache, so one sequence at a time",
                    self.set_size
                ),
            });
        }
        let mut engine = crate::simulated::Engine::new(self, limit, host, &[], &on_complete, self.report_errors)?;
        engine.generate(gen)?;
        engine.run()
    }

    /// Recovery after a device reset or a subsystem restart released the channels: loads
    /// the program again and activates it afresh on every activation.
    pub fn recover(&mut self) -> Result<()> {
        let device = self.activations[0].device().clone();
        let n = self.activations.len();
        // Old channels are gone already; dropping them only reports as much.
        self.activations.clear();
        let loaded = Arc::new(device.load_program(self.program.bytes())?);
        for _ in 0..n {
            self.activations.push(Activation::with_loaded(device.clone(), &self.program, loaded.clone())?);
        }
        Ok(())
    }

    /// The activations, taken out of the set.
    pub fn into_activations(self) -> Vec<Activation> {
        self.activations
    }

    pub fn activations(&self) -> &[Activation] {
        &self.activations
    }

    /// A flag that ends the run under way early, on either clock (Ctrl-C in a notebook):
    /// once set, no lane takes up another request; the run returns when those in flight
    /// completed, and clears the flag.
    pub fn stop_handle(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.stop.clone()
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn clear_stop(&self) {
        self.stop.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn set_size(&self) -> usize {
        self.set_size
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Runs inferences until `limit`. `fill_inputs(index, inputs)` writes inference
    /// `index`'s inputs into host buffers already sized for the program (pre-processing);
    /// `on_complete` sees each finished inference. Both run on worker threads. The first
    /// error stops the run (inferences in flight are still waited for) and is returned.
    pub fn run<I, C>(&self, limit: RunLimit, fill_inputs: I, on_complete: C) -> Result<RunSummary>
    where
        I: Fn(u64, &mut [Vec<u8>]) + Sync,
        C: Fn(&Completion<'_>) + Sync,
    {
        let state = RunState {
            limit,
            start: Instant::now(),
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            stopped: &self.stop,
            fill_inputs: &fill_inputs,
            on_complete: &on_complete,
        };
        let first_error: Mutex<Option<RuntimeError>> = Mutex::new(None);
        let t = self.threads_per_activation;
        std::thread::scope(|scope| {
            for a in 0..self.activations.len() {
                for thread in 0..t {
                    // Slots thread, thread + t, thread + 2t, ... of this activation.
                    let slots: Vec<usize> = (thread..self.set_size).step_by(t).collect();
                    let (state, first_error) = (&state, &first_error);
                    scope.spawn(move || {
                        if let Err(e) = self.worker(a, slots.len(), state) {
                            state.stop.store(true, SeqCst);
                            first_error.lock().get_or_insert(e);
                        }
                    });
                }
            }
        });
        self.clear_stop();
        match first_error.into_inner() {
            Some(e) => Err(e),
            None => Ok(RunSummary {
                inferences: state.done.load(SeqCst),
                elapsed: state.start.elapsed(),
                start_ns: wall_ns_of(state.start),
            }),
        }
    }

    fn worker<I, C>(&self, a: usize, slot_count: usize, state: &RunState<'_, I, C>) -> Result<()>
    where
        I: Fn(u64, &mut [Vec<u8>]) + Sync,
        C: Fn(&Completion<'_>) + Sync,
    {
        let activation = &self.activations[a];
        let slots = (0..slot_count).map(|_| activation.new_slot()).collect::<Result<Vec<InferenceSlot>>>()?;
        let input_sizes: Vec<usize> = self.program.inputs().iter().map(|b| b.host_size_bytes() as usize).collect();
        let mut staging: Vec<Vec<Vec<u8>>> =
            (0..slot_count).map(|_| input_sizes.iter().map(|&n| vec![0u8; n]).collect()).collect();
        let mut outputs: Vec<Vec<u8>> =
            self.program.outputs().iter().map(|b| vec![0u8; b.host_size_bytes() as usize]).collect();
        let mut free: Vec<usize> = (0..slot_count).rev().collect();
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(slot_count);
        let mut failure = None;
        loop {
            let claimed = if free.is_empty() || failure.is_some() { None } else { state.claim(in_flight.is_empty()) };
            // Not due yet: finish what is in flight meanwhile.
            let claimed = match claimed {
                Some(None) if !in_flight.is_empty() => None,
                Some(None) => continue,
                Some(Some(c)) => Some(c),
                None => None,
            };
            if let Some((index, arrived)) = claimed {
                let slot = free.pop().expect("checked non-empty");
                let mut ts = Timestamps::now();
                ts.enqueue = wall_ns_of(arrived);
                (state.fill_inputs)(index, &mut staging[slot]);
                let submitted = slots[slot].write_inputs(&self.program, &staging[slot]).and_then(|()| {
                    ts.pre_proc_end = wall_ns();
                    slots[slot].submit_with(activation, &mut ts, &self.submit_policy)
                });
                match submitted {
                    Ok(seq) => {
                        let in_flight_total = state.in_flight.fetch_add(1, Relaxed) + 1;
                        let queue_depth = in_flight.len() + 1;
                        in_flight.push_back(InFlight { slot, index, ts, queue_depth, in_flight_total, seq });
                    }
                    Err(e) => {
                        free.push(slot);
                        failure.get_or_insert(e);
                    }
                }
                continue;
            }
            let Some(mut job) = in_flight.pop_front() else { break };
            let finished =
                slots[job.slot].wait(activation, &mut job.ts).and_then(|()| slots[job.slot].read_outputs(&mut outputs));
            free.push(job.slot);
            state.in_flight.fetch_sub(1, Relaxed);
            let error = match finished {
                Err(e) if !self.report_errors => {
                    failure.get_or_insert(e);
                    continue;
                }
                other => other.err(),
            };
            job.ts.post_proc_end = wall_ns();
            job.ts.returned = job.ts.post_proc_end;
            let device = if error.is_some() { None } else { device_timing(activation, job.seq) };
            state.done.fetch_add(1, Relaxed);
            (state.on_complete)(&Completion {
                step: None,
                index: job.index,
                activation: a,
                outputs: &outputs,
                timestamps: job.ts,
                queue_depth: job.queue_depth,
                in_flight_total: job.in_flight_total,
                device,
                seq: job.seq,
                input_set: None,
                error: error.as_ref(),
            });
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
