//! An asynchronous inference queue: submit inputs with a context of your own, receive
//! `(context, result)` later, from any thread.
//!
//! The input and output queues are bounded: `submit` blocks when the input queue is
//! full (and `try_submit` hands the request back), and workers stop taking inputs while
//! the output queue is full, so a slow consumer slows the producers down instead of
//! growing memory. One worker per activation keeps up to S inferences in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use crate::activation::{Activation, InferenceSlot};
use crate::error::{Result, RuntimeError};
use crate::timestamps::{wall_ns, Timestamps};
use crate::{Device, InferenceSet, Program};

/// What comes back for one request: its outputs, or why it failed.
pub type Outcome = Result<Vec<Vec<u8>>>;

struct Request<C> {
    context: C,
    inputs: Vec<Vec<u8>>,
}

/// Sizes of an [`AsyncQueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub activations: usize,
    /// Inferences in flight per activation.
    pub set_size: usize,
    /// Requests waiting to be taken by a worker.
    pub input_capacity: usize,
    /// Results waiting to be received.
    pub output_capacity: usize,
}

/// A request handed back by [`AsyncQueue::try_submit`].
#[derive(Debug)]
pub enum Rejected<C> {
    /// The input queue is full: try again later.
    Full(C, Vec<Vec<u8>>),
    /// The queue is shutting down.
    Closed(C, Vec<Vec<u8>>),
}

/// The asynchronous queue.
pub struct AsyncQueue<C: Send + 'static> {
    input: Option<Sender<Request<C>>>,
    output: Receiver<(C, Outcome)>,
    workers: Vec<JoinHandle<()>>,
    program: Program,
}

impl<C: Send + 'static> AsyncQueue<C> {
    /// Loads and activates `program` and starts one worker per activation.
    pub fn new(device: Arc<Device>, program: &Program, config: QueueConfig) -> Result<AsyncQueue<C>> {
        if config.input_capacity == 0 || config.output_capacity == 0 {
            return Err(RuntimeError::Config("queue capacities must be at least 1".into()));
        }
        let set = InferenceSet::new(device, program, config.activations, config.set_size)?;
        let (input_tx, input_rx) = bounded::<Request<C>>(config.input_capacity);
        let (output_tx, output_rx) = bounded::<(C, Outcome)>(config.output_capacity);
        let mut workers = Vec::new();
        for activation in set.into_activations() {
            let slots = (0..config.set_size).map(|_| activation.new_slot()).collect::<Result<Vec<_>>>()?;
            let (rx, tx, program) = (input_rx.clone(), output_tx.clone(), program.clone());
            workers.push(
                std::thread::Builder::new()
                    .name("aicsim-queue".into())
                    .spawn(move || worker(activation, slots, program, rx, tx))
                    .map_err(|e| RuntimeError::Config(format!("cannot start a worker: {e}")))?,
            );
        }
        Ok(AsyncQueue { input: Some(input_tx), output: output_rx, workers, program: program.clone() })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Queues a request, waiting while the input queue is full. Inputs are checked
    /// against the program here, so a bad request fails at once.
    pub fn submit(&self, context: C, inputs: Vec<Vec<u8>>) -> Result<()> {
        self.check(&inputs)?;
        let sender = self.input.as_ref().ok_or_else(|| RuntimeError::Config("the queue is closed".into()))?;
        sender
            .send(Request { context, inputs })
            .map_err(|_| RuntimeError::Config("the queue's workers have stopped".into()))
    }

    /// Queues a request if there is room now; otherwise hands it back.
    pub fn try_submit(&self, context: C, inputs: Vec<Vec<u8>>) -> std::result::Result<(), Rejected<C>> {
        if self.check(&inputs).is_err() {
            // A malformed request is rejected as if closed to it; `submit` says why.
            return Err(Rejected::Closed(context, inputs));
        }
        let Some(sender) = self.input.as_ref() else { return Err(Rejected::Closed(context, inputs)) };
        sender.try_send(Request { context, inputs }).map_err(|e| match e {
            TrySendError::Full(r) => Rejected::Full(r.context, r.inputs),
            TrySendError::Disconnected(r) => Rejected::Closed(r.context, r.inputs),
        })
    }

    /// The next finished request, waiting at most `timeout`; `None` on timeout or once
    /// the queue is closed and drained.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<(C, Outcome)> {
        match self.output.recv_timeout(timeout) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Stops taking requests; everything already submitted still completes. Returns the
    /// results not yet received.
    pub fn close(mut self) -> Vec<(C, Outcome)> {
        self.input = None;
        let mut rest = Vec::new();
        // Drain while workers finish, so none blocks on a full output queue.
        loop {
            match self.output.recv_timeout(Duration::from_millis(10)) {
                Ok(r) => rest.push(r),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if self.workers.iter().all(|w| w.is_finished()) => {
                    rest.extend(self.output.try_iter());
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        rest
    }

    fn check(&self, inputs: &[Vec<u8>]) -> Result<()> {
        self.program.check_inputs(inputs)
    }
}

impl<C: Send + 'static> Drop for AsyncQueue<C> {
    fn drop(&mut self) {
        self.input = None;
        // Unreceived results are dropped with the receiver; workers then see the output
        // side gone and stop.
        let workers: Vec<JoinHandle<()>> = self.workers.drain(..).collect();
        while self.output.try_recv().is_ok() || workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_micros(100));
            while self.output.try_recv().is_ok() {}
            if workers.iter().all(|w| w.is_finished()) {
                break;
            }
        }
        for w in workers {
            let _ = w.join();
        }
    }
}

fn worker<C: Send>(
    activation: Activation,
    slots: Vec<InferenceSlot>,
    program: Program,
    input: Receiver<Request<C>>,
    output: Sender<(C, Outcome)>,
) {
    let mut free: Vec<usize> = (0..slots.len()).rev().collect();
    let mut in_flight: VecDeque<(usize, C, Timestamps)> = VecDeque::new();
    let mut open = true;
    let out_sizes: Vec<usize> = program.outputs().iter().map(|b| b.host_size_bytes() as usize).collect();
    loop {
        // Take new requests while there are free slots: blocking only when idle.
        if open && !free.is_empty() {
            let next = if in_flight.is_empty() {
                input.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                input.try_recv()
            };
            match next {
                Ok(req) => {
                    let slot = free.pop().expect("checked non-empty");
                    let mut ts = Timestamps::now();
                    let submitted = slots[slot].write_inputs(&program, &req.inputs).and_then(|()| {
                        ts.pre_proc_end = wall_ns();
                        slots[slot].submit(&activation, &mut ts)
                    });
                    match submitted {
                        Ok(_) => in_flight.push_back((slot, req.context, ts)),
                        Err(e) => {
                            free.push(slot);
                            if output.send((req.context, Err(e))).is_err() {
                                return;
                            }
                        }
                    }
                    continue;
                }
                Err(TryRecvError::Disconnected) => open = false,
                Err(TryRecvError::Empty) => {}
            }
        }
        let Some((slot, context, mut ts)) = in_flight.pop_front() else {
            if open {
                continue;
            }
            return;
        };
        let mut outputs: Vec<Vec<u8>> = out_sizes.iter().map(|&n| vec![0u8; n]).collect();
        let result = slots[slot]
            .wait(&activation, &mut ts)
            .and_then(|()| slots[slot].read_outputs(&mut outputs))
            .map(|()| outputs);
        free.push(slot);
        if output.send((context, result)).is_err() {
            return;
        }
    }
}
