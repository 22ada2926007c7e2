//! An [`InferenceSet`] on the simulated clock.
//!
//! Every inference travels the real stack — its input bytes into buffer objects, one
//! execute call putting its elements on the channel's ring, the device, the response
//! ring, its outputs read back — but its timestamps are simulated: the host's stages
//! from the [`HostModel`], the device's from the device. One thread drives every
//! *lane* (one of an activation's `S` in-flight inferences) in simulated-time order,
//! as qaic-runner's handles go round: take up a request, pre-process, submit, wait,
//! post-process, hand the handle back.
//!
//! Causality (see `aicsim_abi::clock`): a lane's next request can only come after its
//! current one completes, and completions come from the device in simulated-time
//! order. So a free lane's request at time `t` goes to the device only when no lane
//! still waiting could free up before `t`: the device has simulated up to `D`, so a
//! completion not yet posted comes at `D` or later and frees its lane at
//! `D + turnaround` at the earliest. The device in turn advances only up to the earliest
//! moment a free lane could submit (each channel's promise), or `lookahead` after a
//! completion the host has not accounted for yet. Requests are numbered in the order
//! they are taken up, which is the simulated-time order: the same run gives the same
//! numbers, figures and files however the threads are scheduled.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use aicsim_driver::{DriverError, NO_PROMISE};

use crate::activation::InferenceSlot;
use crate::error::{Result, RuntimeError};
use crate::host_model::HostModel;
use crate::set::{device_timing, Completion, Generation, InferenceSet, RunLimit, RunSummary};
use crate::timestamps::Timestamps;

/// How long the device may make no progress at all, in wall time, while inferences are
/// in flight, before the run fails: a hung device, not a slow simulation (a slow one
/// still moves).
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(60);

struct Flight {
    index: u64,
    ts: Timestamps,
    /// When its lane took the request up.
    claim: u64,
    seq: u64,
}

enum LaneState {
    /// Free from this simulated moment.
    Idle(u64),
    InFlight(Flight),
    /// Takes up nothing more.
    Done,
}

struct Lane {
    activation: usize,
    slot: InferenceSlot,
    /// In a generation run: the slot of each entry, the entry in flight, and the
    /// sequence under way (its index, the step next or in flight, the tokens chosen last).
    entry_slots: Vec<InferenceSlot>,
    entry: usize,
    sequence: Option<(u64, u32, Vec<i64>)>,
    state: LaneState,
    /// Whether the slot's input buffers hold its input set yet (the device only reads
    /// them, so it is written once).
    filled: bool,
}

/// One activation's channel as the engine sees it.
#[derive(Default)]
struct ChannelBook {
    /// Lanes in flight, oldest first (the device completes them in this order).
    in_flight: VecDeque<usize>,
    /// Completions accounted for (the waking responses acknowledged).
    acked: u32,
    /// The promise last published, and the acknowledgement published with it.
    promised: Option<(u64, u32)>,
}

pub(crate) struct Engine<'a, C> {
    set: &'a InferenceSet,
    limit: RunLimit,
    host: HostModel,
    inputs: &'a [Vec<Vec<u8>>],
    on_complete: &'a C,
    lanes: Vec<Lane>,
    /// Free lanes by (free from, lane).
    idle: BinaryHeap<Reverse<(u64, usize)>>,
    channels: Vec<ChannelBook>,
    t0: u64,
    to_channel: u64,
    /// The fewest device input bytes a request carries: its pre-processing is the
    /// shortest, so the device's promises and lookahead count on it.
    min_input_bytes: u64,
    turnaround: u64,
    next_index: u64,
    done: u64,
    in_flight: usize,
    last_returned: u64,
    outputs: Vec<Vec<u8>>,
    failure: Option<RuntimeError>,
    /// When the failing inference completed: requests taken up from then on are not.
    failed_at: u64,
    report_errors: bool,
    /// Finished inferences that may still count as in flight for a later one's queue
    /// depth: (activation, taken up, completed).
    recent: VecDeque<(usize, u64, u64)>,
    /// The latest moment a request was taken up (they are taken up in time order).
    last_claim: u64,
    generation: Option<Generation>,
    /// Outputs of each entry, sized for it.
    entry_outputs: Vec<Vec<Vec<u8>>>,
}

impl<'a, C> Engine<'a, C>
where
    C: Fn(&Completion<'_>),
{
    pub(crate) fn new(
        set: &'a InferenceSet,
        limit: RunLimit,
        host: &HostModel,
        inputs: &'a [Vec<Vec<u8>>],
        on_complete: &'a C,
        report_errors: bool,
    ) -> Result<Engine<'a, C>> {
        let program = set.program();
        let input_bytes = program.device_input_bytes();
        let to_channel = host.to_channel_ns(input_bytes);
        let mut lanes = Vec::new();
        for (a, activation) in set.activations().iter().enumerate() {
            for _ in 0..set.set_size() {
                lanes.push(Lane {
                    activation: a,
                    slot: activation.new_slot()?,
                    entry_slots: Vec::new(),
                    entry: 0,
                    sequence: None,
                    state: LaneState::Done,
                    filled: false,
                });
            }
        }
        let outputs = program.outputs().iter().map(|b| vec![0u8; b.host_size_bytes() as usize]).collect();
        Ok(Engine {
            set,
            limit,
            host: *host,
            inputs,
            on_complete,
            lanes,
            idle: BinaryHeap::new(),
            channels: set.activations().iter().map(|_| ChannelBook::default()).collect(),
            t0: 0,
            to_channel,
            min_input_bytes: input_bytes,
            turnaround: host.turnaround_ns(),
            next_index: 0,
            done: 0,
            in_flight: 0,
            last_returned: 0,
            outputs,
            failure: None,
            failed_at: u64::MAX,
            report_errors,
            recent: VecDeque::new(),
            last_claim: 0,
            generation: None,
            entry_outputs: Vec::new(),
        })
    }

    /// Makes the run a generation run (before [`Engine::run`]).
    pub(crate) fn generate(&mut self, gen: &Generation) -> Result<()> {
        let program = self.set.program();
        let entries = program.entry_count();
        for lane in &mut self.lanes {
            let activation = &self.set.activations()[lane.activation];
            lane.entry_slots = (0..entries).map(|e| activation.new_entry_slot(e)).collect::<Result<_>>()?;
        }
        self.entry_outputs = (0..entries)
            .map(|e| program.entry_outputs(e).iter().map(|b| vec![0u8; b.host_size_bytes() as usize]).collect())
            .collect();
        // A decode step moves a token and a position: far less than a prompt. Promises and
        // the lookahead must hold for the smallest request, or the device would run past
        // the moment a decode step reaches it.
        self.min_input_bytes =
            (0..entries).map(|e| program.entry_inputs(e).iter().map(|b| b.size_bytes).sum::<u64>()).min().unwrap_or(0);
        self.to_channel = self.host.to_channel_ns(self.min_input_bytes);
        self.generation = Some(gen.clone());
        Ok(())
    }

    /// When a lane free from `at` goes on: at once in the middle of a sequence, else
    /// when it takes up its next request, if it takes one up at all.
    fn next_time(&self, lane: usize, at: u64) -> Option<u64> {
        match &self.lanes[lane].sequence {
            Some(_) if self.set.stop_requested() => None,
            Some(_) => Some(at).filter(|&t| t < self.failed_at),
            None => self.claim_time(at),
        }
    }

    /// The host inputs of a generation step, as the entry's bindings take them.
    fn step_inputs(&self, lane: usize) -> Result<(usize, Vec<Vec<u8>>)> {
        let gen = self.generation.as_ref().expect("a generation run");
        let (_, step, tokens) = self.lanes[lane].sequence.as_ref().expect("a sequence under way");
        let batch = tokens.len().max(1);
        let (entry, ids, positions): (usize, Vec<i64>, Vec<i64>) = if *step == 0 {
            let positions = (0..batch).flat_map(|_| 0..gen.prompt_len as i64).collect();
            (gen.prefill, gen.prompt.clone(), positions)
        } else {
            let at = (gen.prompt_len as u32 + step - 1) as i64;
            (gen.decode, tokens.clone(), vec![at; batch])
        };
        let program = self.set.program();
        let bytes = |v: &[i64], b: &aicsim_abi::container::IoBinding| -> Vec<u8> {
            match b.host.dtype {
                aicsim_abi::container::IoDType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            }
        };
        let mut inputs = Vec::new();
        for b in program.entry_inputs(entry) {
            let data = match b.name.as_str() {
                "input_ids" => bytes(&ids, b),
                "position_ids" => bytes(&positions, b),
                other => {
                    return Err(RuntimeError::UnsupportedProgram {
                        program: program.name().into(),
                        problem: format!(
                            "generation feeds input_ids and position_ids; entry {entry} also takes '{other}'"
                        ),
                    })
                }
            };
            inputs.push(data);
        }
        Ok((entry, program.device_inputs_of(entry, &inputs)?))
    }

    pub(crate) fn run(mut self) -> Result<RunSummary> {
        let activations = self.set.activations();
        let device = activations[0].device().clone();
        let lookahead = self.host.lookahead_ns(self.min_input_bytes);
        for a in activations {
            device.set_lookahead(a.channel(), lookahead)?;
        }
        self.t0 = device.device_progress(activations[0].channel())?.0;
        // Completions of an earlier run on these activations are accounted for already:
        // this run counts from them (a set may run many times).
        let (_, posted) = self.device_view()?;
        for (book, count) in self.channels.iter_mut().zip(posted) {
            book.acked = count;
        }
        // Each activation's handles are filled one after the other. The activations start
        // evenly spread over one inference: on the card, host and device jitter drift
        // their phases apart, so their heavy layers rarely line up; in lock step they
        // would all stream weights at the same moments.
        let per_activation = self.set.set_size();
        let solo = self.set.program().solo_device_ns(&device.cost_model(), device.clock_hz()).unwrap_or(0);
        let spread = solo / activations.len() as u64;
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            let (a, s) = (i / per_activation, i % per_activation);
            let at = self.t0 + a as u64 * spread + s as u64 * self.to_channel;
            lane.state = LaneState::Idle(at);
            self.idle.push(Reverse((at, i)));
        }
        for a in 0..activations.len() {
            self.publish(a)?;
        }
        let mut seen = (device.progress(), Instant::now());
        loop {
            let progress = device.progress();
            let (now, wakes) = self.device_view()?;
            if self.complete_posted(&wakes)? {
                continue;
            }
            let bound = if self.in_flight > 0 { now.saturating_add(self.turnaround) } else { u64::MAX };
            if let Some(&Reverse((at, lane))) = self.idle.peek() {
                if self.next_time(lane, at).is_none_or(|t| t <= bound) {
                    self.idle.pop();
                    self.take_up(lane, at)?;
                    continue;
                }
            }
            if self.in_flight == 0 {
                break;
            }
            self.check_timeouts(now)?;
            if progress != seen.0 {
                seen = (progress, Instant::now());
            } else if seen.1.elapsed() > LIVENESS_TIMEOUT {
                return Err(DriverError::TimedOut(format!(
                    "the device made no progress for {} s of wall time with {} inferences in flight",
                    LIVENESS_TIMEOUT.as_secs(),
                    self.in_flight
                ))
                .into());
            }
            device.wait_progress(progress, Duration::from_millis(20));
        }
        // Done: the device need not wait for these channels any more.
        for (activation, book) in activations.iter().zip(&self.channels) {
            device.promise(activation.channel(), NO_PROMISE, book.acked)?;
        }
        self.set.clear_stop();
        if let Some(e) = self.failure {
            return Err(e);
        }
        Ok(RunSummary {
            inferences: self.done,
            elapsed: Duration::from_nanos(self.last_returned.saturating_sub(self.t0)),
            start_ns: self.t0,
        })
    }

    /// How far the device has simulated, and the waking responses it has posted on each
    /// channel: every one before that moment, and perhaps some after, but always all
    /// those before the latest one seen. The device posts in time order and goes on while
    /// the channels are read one after another, so one read could see a later response on
    /// one channel and miss an earlier one on a channel read before it; the counts are read
    /// until two passes agree, which rules that out (a count seen in the first pass makes
    /// every response posted before it visible to the second).
    fn device_view(&self) -> Result<(u64, Vec<u32>)> {
        let activations = self.set.activations();
        let device = activations[0].device();
        let now = device.device_progress(activations[0].channel())?.0;
        let read =
            || -> Result<Vec<u32>> { activations.iter().map(|a| Ok(device.device_progress(a.channel())?.1)).collect() };
        let mut wakes = read()?;
        loop {
            let again = read()?;
            if again == wakes {
                return Ok((now, wakes));
            }
            wakes = again;
        }
    }

    /// When a lane free from `at` takes up its next request, if it takes one up at all.
    fn claim_time(&self, at: u64) -> Option<u64> {
        if self.set.stop_requested() {
            return None;
        }
        match &self.limit {
            RunLimit::Count(n) => (self.next_index < *n).then_some(at),
            RunLimit::Duration(d) => {
                let end = self.t0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                (at < end).then_some(at)
            }
            RunLimit::Arrivals(arrivals) => {
                let arrival = arrivals.get(self.next_index as usize)?;
                Some(at.max(self.t0 + u64::try_from(arrival.as_nanos()).unwrap_or(u64::MAX)))
            }
        }
        // A failure stops the run from the moment it happened.
        .filter(|&claim| claim < self.failed_at)
    }

    /// Lane `lane`, free from `at`, takes up the next request (or stops: the run's
    /// limit is reached).
    fn take_up(&mut self, lane: usize, at: u64) -> Result<()> {
        let a = self.lanes[lane].activation;
        let Some(start) = self.next_time(lane, at) else {
            self.lanes[lane].state = LaneState::Done;
            self.lanes[lane].sequence = None;
            return self.publish(a);
        };
        let index = match &self.lanes[lane].sequence {
            Some((index, _, _)) => *index,
            None => {
                let index = self.next_index;
                self.next_index += 1;
                if let Some(gen) = &self.generation {
                    let batch = gen.prompt.len() / gen.prompt_len.max(1);
                    self.lanes[lane].sequence = Some((index, 0, vec![0; batch]));
                }
                index
            }
        };
        let enqueue = match (&self.limit, &self.lanes[lane].sequence) {
            (_, Some((_, step, _))) if *step > 0 => start,
            (RunLimit::Arrivals(arrivals), _) => {
                self.t0 + u64::try_from(arrivals[index as usize].as_nanos()).unwrap_or(0)
            }
            _ => start,
        };
        let program = self.set.program();
        let input_bytes = match &self.generation {
            Some(_) => {
                let (entry, inputs) = self.step_inputs(lane)?;
                self.lanes[lane].entry = entry;
                self.lanes[lane].entry_slots[entry].write_device_inputs(program, &inputs)?;
                inputs.iter().map(|i| i.len() as u64).sum()
            }
            None => program.device_input_bytes(),
        };
        let mut ts = Timestamps::at(enqueue);
        ts.pre_proc_start = start + self.host.enqueue_ns;
        ts.pre_proc_end = ts.pre_proc_start + self.host.pre_proc_ns(input_bytes);
        ts.kernel_submit = ts.pre_proc_end + self.host.submit_ns;
        ts.submitted = ts.kernel_submit + self.host.exec_to_vc_ns;
        if !self.inputs.is_empty() && !self.lanes[lane].filled {
            let set = &self.inputs[lane % self.inputs.len()];
            self.lanes[lane].slot.write_device_inputs(program, set)?;
            self.lanes[lane].filled = true;
        }
        let seq = self.submit(lane, ts.submitted)?;
        let book = &mut self.channels[a];
        book.in_flight.push_back(lane);
        self.in_flight += 1;
        self.last_claim = start;
        let flight = Flight { index, ts, claim: start, seq };
        self.lanes[lane].state = LaneState::InFlight(flight);
        if let RunLimit::Arrivals(_) = self.limit {
            // The next arrival moved on: every activation's free lanes start later.
            return (0..self.channels.len()).try_for_each(|b| self.publish(b));
        }
        self.publish(a)
    }

    /// The slot lane `lane`'s inference in flight (or next) uses.
    fn lane_slot(&self, lane: usize) -> &InferenceSlot {
        let l = &self.lanes[lane];
        match self.generation {
            Some(_) => &l.entry_slots[l.entry],
            None => &l.slot,
        }
    }

    /// Queues lane `lane`'s inference at `time_ns`. A full ring is tried again as the
    /// device moves, for the activation's submit policy counted in simulated time.
    fn submit(&self, lane: usize, time_ns: u64) -> Result<u64> {
        let a = self.lanes[lane].activation;
        let activation = &self.set.activations()[a];
        let policy = self.set.submit_policy();
        let patience = policy.timeout.saturating_mul(policy.retries.saturating_add(1));
        let device = activation.device();
        loop {
            let progress = device.progress();
            match self.lane_slot(lane).submit_at(activation, time_ns) {
                Err(RuntimeError::Driver(DriverError::Again(why))) => {
                    let now = device.device_progress(activation.channel())?.0;
                    if Duration::from_nanos(now.saturating_sub(time_ns)) > patience {
                        return Err(RuntimeError::SubmitTimeout {
                            attempts: policy.retries + 1,
                            timeout: policy.timeout,
                            why,
                        });
                    }
                    device.wait_progress(progress, Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Publishes activation `a`'s promise: the earliest moment a free lane of it could
    /// put a request on its channel.
    fn publish(&mut self, a: usize) -> Result<()> {
        let mut promise = NO_PROMISE;
        for (i, lane) in self.lanes.iter().enumerate().filter(|(_, l)| l.activation == a) {
            if let LaneState::Idle(at) = lane.state {
                // On an arrival schedule, no earlier than the next arrival: a later
                // request can only arrive later.
                if let Some(claim) = self.next_time(i, at) {
                    promise = promise.min(claim + self.to_channel);
                }
            }
        }
        let book = &mut self.channels[a];
        // An acknowledgement is news even when the promise stays: until the device sees
        // it, it holds its clock a lookahead after the completion it acknowledges, and a
        // host waiting for a later completion would wait for ever.
        if book.promised != Some((promise, book.acked)) || promise == NO_PROMISE {
            book.promised = Some((promise, book.acked));
            let activation = &self.set.activations()[a];
            activation.device().promise(activation.channel(), promise, book.acked)?;
        }
        Ok(())
    }

    /// Takes in every inference whose last response the device has posted, in the order
    /// they completed. Returns whether there was any.
    fn complete_posted(&mut self, wakes: &[u32]) -> Result<bool> {
        let mut posted = Vec::new();
        for (a, book) in self.channels.iter().enumerate() {
            let count = wakes[a].wrapping_sub(book.acked) as usize;
            posted.extend(book.in_flight.iter().take(count).map(|&lane| (a, lane)));
        }
        if posted.is_empty() {
            return Ok(false);
        }
        let mut finished = Vec::with_capacity(posted.len());
        for (a, lane) in posted {
            let activation = &self.set.activations()[a];
            let slot = self.lane_slot(lane);
            let mut wall = Timestamps::now();
            // Posted already: the wait only picks the completion up.
            let result = slot.wait(activation, &mut wall);
            let result = match (result, &self.lanes[lane].state) {
                (Err(e), LaneState::InFlight(f)) => Err(activation.explain(f.seq, e)),
                (r, _) => r,
            };
            let at = slot.completed_at(activation).unwrap_or(0);
            finished.push((at, a, lane, result));
        }
        finished.sort_by_key(|f| (f.0, f.1));
        for (at, a, lane, result) in finished {
            self.finish(a, lane, at, result)?;
        }
        Ok(true)
    }

    /// Lane `lane`'s inference completed on the device at `at`.
    fn finish(&mut self, a: usize, lane: usize, at: u64, result: Result<()>) -> Result<()> {
        let LaneState::InFlight(flight) = std::mem::replace(&mut self.lanes[lane].state, LaneState::Done) else {
            return Ok(());
        };
        let book = &mut self.channels[a];
        book.in_flight.pop_front();
        book.acked = book.acked.wrapping_add(1);
        self.in_flight -= 1;
        let mut ts = flight.ts;
        ts.completed = at + self.host.completion_ns;
        ts.post_proc_end = ts.completed + self.host.post_proc_ns;
        ts.returned = ts.post_proc_end + self.host.app_ns;
        let activation = &self.set.activations()[a];
        let step = self.lanes[lane].sequence.as_ref().map(|s| s.1);
        // A generation step's outputs are its entry's: its buffers stand in for the
        // run's until the step is taken in.
        let entry = self.generation.as_ref().map(|_| self.lanes[lane].entry);
        if let Some(e) = entry {
            std::mem::swap(&mut self.outputs, &mut self.entry_outputs[e]);
        }
        let l = &self.lanes[lane];
        let slot = match entry {
            Some(e) => &l.entry_slots[e],
            None => &l.slot,
        };
        let result = result.and_then(|()| slot.read_outputs(&mut self.outputs));
        let error = match result {
            Err(e) if !self.report_errors => {
                self.failure.get_or_insert(e);
                self.failed_at = self.failed_at.min(ts.completed);
                None
            }
            Err(e) => Some(e),
            Ok(()) => None,
        };
        let (queue_depth, in_flight_total) = self.depth_at(a, flight.claim, ts.completed);
        if self.failure.is_none() || error.is_some() {
            let device = if error.is_some() { None } else { device_timing(activation, flight.seq) };
            self.done += 1;
            self.last_returned = self.last_returned.max(ts.returned);
            (self.on_complete)(&Completion {
                index: flight.index,
                activation: a,
                outputs: &self.outputs,
                timestamps: ts,
                queue_depth,
                in_flight_total,
                device,
                seq: flight.seq,
                input_set: (!self.inputs.is_empty()).then(|| lane % self.inputs.len()),
                error: error.as_ref(),
                step,
            });
        }
        // A sequence goes on with the tokens its logits choose, or ends.
        if let (Some(gen), Some((_, step, tokens))) = (&self.generation, &mut self.lanes[lane].sequence) {
            let logits = self.outputs.first().map(|o| crate::samples::bytes_f32(o)).unwrap_or_default();
            let rows = tokens.len().max(1);
            let vocab = logits.len() / rows;
            for (r, t) in tokens.iter_mut().enumerate() {
                let row = &logits[r * vocab..(r + 1) * vocab];
                *t = row.iter().enumerate().fold(0, |best, (i, &x)| if x > row[best] { i } else { best }) as i64;
            }
            *step += 1;
            if error.is_some() || *step > gen.decode_steps {
                self.lanes[lane].sequence = None;
            }
        }
        if let Some(e) = entry {
            std::mem::swap(&mut self.outputs, &mut self.entry_outputs[e]);
        }
        let free = ts.returned + self.host.requeue_ns;
        self.lanes[lane].state = LaneState::Idle(free);
        self.idle.push(Reverse((free, lane)));
        self.publish(a)
    }

    /// How many inferences of activation `a`, and of all activations, were in flight when
    /// one of `a`'s was taken up at `claim` (itself included); it completed at
    /// `completed`. Counted once it has completed, when everything that completed before
    /// `claim` is known, so the figure does not depend on when the host learnt of them.
    fn depth_at(&mut self, a: usize, claim: u64, completed: u64) -> (usize, usize) {
        let (mut own, mut total) = (1, 1);
        for &(b, taken, done) in &self.recent {
            if taken <= claim && claim < done {
                total += 1;
                own += usize::from(b == a);
            }
        }
        // Still in flight: taken up before it means in flight then (on its own channel
        // none are: a channel completes in order).
        for book in &self.channels {
            for &lane in &book.in_flight {
                if let LaneState::InFlight(f) = &self.lanes[lane].state {
                    total += usize::from(f.claim <= claim);
                }
            }
        }
        self.recent.push_back((a, claim, completed));
        let oldest = self
            .lanes
            .iter()
            .filter_map(|l| match &l.state {
                LaneState::InFlight(f) => Some(f.claim),
                _ => None,
            })
            .min()
            .unwrap_or(self.last_claim)
            .min(self.last_claim);
        self.recent.retain(|&(_, _, done)| done > oldest);
        (own, total)
    }

    /// An inference the device has not completed within its activation's wait timeout
    /// of simulated time fails the run.
    fn check_timeouts(&self, now: u64) -> Result<()> {
        for (a, book) in self.channels.iter().enumerate() {
            let Some(&lane) = book.in_flight.front() else { continue };
            let LaneState::InFlight(flight) = &self.lanes[lane].state else { continue };
            let timeout = self.set.activations()[a].wait_timeout();
            if Duration::from_nanos(now.saturating_sub(flight.ts.submitted)) > timeout {
                return Err(DriverError::TimedOut(format!(
                    "inference {} did not complete within {} ms of simulated time",
                    flight.index,
                    timeout.as_millis()
                ))
                .into());
            }
        }
        Ok(())
    }
}
