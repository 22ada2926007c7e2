//! Per-inference timestamps.

use std::time::{Duration, Instant};

/// When each stage of one inference happened, in host time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    /// The inference was taken from the queue (the application's request).
    pub enqueue: Instant,
    /// Host pre-processing (copying/converting inputs into buffers) started.
    pub pre_proc_start: Instant,
    /// Pre-processing done; the execute call starts.
    pub submit_start: Instant,
    /// The execute call returned: the request is in the ring.
    pub submitted: Instant,
    /// The completion of the last buffer was seen.
    pub completed: Instant,
    /// Post-processing (reading outputs) done; control returns to the application.
    pub post_proc_end: Instant,
}

impl Timestamps {
    pub fn new(now: Instant) -> Timestamps {
        Timestamps {
            enqueue: now,
            pre_proc_start: now,
            submit_start: now,
            submitted: now,
            completed: now,
            post_proc_end: now,
        }
    }

    pub fn enqueue_time(&self) -> Duration {
        self.pre_proc_start - self.enqueue
    }

    pub fn pre_proc_time(&self) -> Duration {
        self.submit_start - self.pre_proc_start
    }

    pub fn submit_time(&self) -> Duration {
        self.submitted - self.submit_start
    }

    /// From the request entering the ring to its completion being seen (device + DMA +
    /// interrupt path).
    pub fn device_time(&self) -> Duration {
        self.completed - self.submitted
    }

    pub fn post_proc_time(&self) -> Duration {
        self.post_proc_end - self.completed
    }

    /// From the request to post-processing done.
    pub fn total_round_trip(&self) -> Duration {
        self.post_proc_end - self.enqueue
    }
}
