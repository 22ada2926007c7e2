//! The handle lifecycle of an inference set, as the LRT exposes it: get an available
//! handle (blocking) -> fill its input buffers -> submit -> get it back completed
//! (the oldest, or by id) -> put it back. Any number of threads may use one pool.
//!
//! Handles come back from [`HandlePool::get_completed`] in submission order: each
//! activation's channel completes in order, and waiting on the oldest keeps the
//! answer deterministic.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::activation::{InferenceSlot, SubmitPolicy};
use crate::error::{Result, RuntimeError};
use crate::timestamps::{wall_ns, Timestamps};
use crate::InferenceSet;

/// A free set of buffers, ready to be filled and submitted.
pub struct Handle {
    slot: usize,
    /// One host buffer per program input, already sized; fill them before submitting.
    pub inputs: Vec<Vec<u8>>,
}

/// A finished inference, holding its buffers until it is put back.
pub struct Completed {
    slot: usize,
    pub id: u64,
    pub activation: usize,
    pub outputs: Vec<Vec<u8>>,
    pub timestamps: Timestamps,
    /// Error of the inference, if it failed (its outputs are then unspecified).
    pub error: Option<RuntimeError>,
}

struct InFlight {
    slot: usize,
    ts: Timestamps,
}

struct State {
    free: VecDeque<usize>,
    /// Submission order of ids in flight.
    order: VecDeque<u64>,
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
}

/// Persistent handles over every activation of an [`InferenceSet`]: S per activation.
pub struct HandlePool<'s> {
    set: &'s InferenceSet,
    slots: Vec<(usize, InferenceSlot)>,
    state: Mutex<State>,
    freed: Condvar,
    policy: SubmitPolicy,
}

impl<'s> HandlePool<'s> {
    pub(crate) fn new(set: &'s InferenceSet, policy: SubmitPolicy) -> Result<HandlePool<'s>> {
        let mut slots = Vec::new();
        for (a, activation) in set.activations().iter().enumerate() {
            for _ in 0..set.set_size() {
                slots.push((a, activation.new_slot()?));
            }
        }
        // Interleave activations so that consecutive handles spread the load.
        let s = set.set_size();
        let n = set.activations().len();
        let free = (0..s).flat_map(|k| (0..n).map(move |a| a * s + k)).collect();
        Ok(HandlePool {
            set,
            slots,
            state: Mutex::new(State { free, order: VecDeque::new(), in_flight: HashMap::new(), next_id: 0 }),
            freed: Condvar::new(),
            policy,
        })
    }

    /// Total handles (activations x set size).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// A free handle, waiting up to `timeout` for one to be put back.
    pub fn get_available(&self, timeout: Duration) -> Result<Handle> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        loop {
            if let Some(slot) = st.free.pop_front() {
                let inputs =
                    self.set.program().inputs().iter().map(|b| vec![0u8; b.host_size_bytes() as usize]).collect();
                return Ok(Handle { slot, inputs });
            }
            if self.freed.wait_until(&mut st, deadline).timed_out() {
                return Err(RuntimeError::Config(format!(
                    "no handle became available within {timeout:?} (all {} in use)",
                    self.slots.len()
                )));
            }
        }
    }

    /// Pre-processes the handle's inputs and queues it on its activation. Returns its id.
    /// On failure the handle goes back to the pool.
    pub fn submit(&self, handle: Handle) -> Result<u64> {
        let (a, slot) = &self.slots[handle.slot];
        let activation = &self.set.activations()[*a];
        let mut ts = Timestamps::now();
        let result = slot.write_inputs(self.set.program(), &handle.inputs).and_then(|()| {
            ts.pre_proc_end = wall_ns();
            slot.submit_with(activation, &mut ts, &self.policy)
        });
        let mut st = self.state.lock();
        match result {
            Ok(_) => {
                let id = st.next_id;
                st.next_id += 1;
                st.order.push_back(id);
                st.in_flight.insert(id, InFlight { slot: handle.slot, ts });
                Ok(id)
            }
            Err(e) => {
                st.free.push_back(handle.slot);
                self.freed.notify_one();
                Err(e)
            }
        }
    }

    /// The oldest submitted handle, once complete; `None` if nothing is in flight.
    pub fn get_completed(&self) -> Option<Completed> {
        let (id, job) = {
            let mut st = self.state.lock();
            let id = st.order.pop_front()?;
            let job = st.in_flight.remove(&id).expect("ordered ids are in flight");
            (id, job)
        };
        Some(self.finish(id, job))
    }

    /// Handle `id`, once complete; `None` if it is not in flight (unknown, or already
    /// taken).
    pub fn get_completed_by_id(&self, id: u64) -> Option<Completed> {
        let job = {
            let mut st = self.state.lock();
            let job = st.in_flight.remove(&id)?;
            st.order.retain(|&x| x != id);
            job
        };
        Some(self.finish(id, job))
    }

    fn finish(&self, id: u64, mut job: InFlight) -> Completed {
        let (a, slot) = &self.slots[job.slot];
        let mut outputs: Vec<Vec<u8>> =
            self.set.program().outputs().iter().map(|b| vec![0u8; b.host_size_bytes() as usize]).collect();
        let error =
            slot.wait(&self.set.activations()[*a], &mut job.ts).and_then(|()| slot.read_outputs(&mut outputs)).err();
        job.ts.post_proc_end = wall_ns();
        job.ts.returned = job.ts.post_proc_end;
        Completed { slot: job.slot, id, activation: *a, outputs, timestamps: job.ts, error }
    }

    /// Returns a completed handle's buffers to the pool.
    pub fn put_back(&self, done: Completed) {
        self.state.lock().free.push_back(done.slot);
        self.freed.notify_one();
    }

    /// Waits for every handle in flight; returns them in submission order (still to be
    /// put back).
    pub fn wait_all(&self) -> Vec<Completed> {
        std::iter::from_fn(|| self.get_completed()).collect()
    }
}

impl InferenceSet {
    /// The handle lifecycle over this set's activations (S handles each).
    pub fn handles(&self) -> Result<HandlePool<'_>> {
        HandlePool::new(self, SubmitPolicy::default())
    }
}
