//! Per-inference timestamps and the stages of the latency profile built from them.

use std::time::{Duration, Instant};

/// When each stage of one inference happened, in host time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    /// The application's request entered the runtime.
    pub enqueue: Instant,
    /// Host pre-processing (converting/copying inputs into buffers) started.
    pub pre_proc_start: Instant,
    /// Pre-processing finished.
    pub pre_proc_end: Instant,
    /// The execute call into the kernel driver started.
    pub kernel_submit: Instant,
    /// The execute call returned: the request is on the device's channel.
    pub submitted: Instant,
    /// The completion of the inference's last buffer was back in user space.
    pub completed: Instant,
    /// Post-processing (reading outputs) finished; control returns to the application.
    pub post_proc_end: Instant,
}

impl Timestamps {
    pub fn new(now: Instant) -> Timestamps {
        Timestamps {
            enqueue: now,
            pre_proc_start: now,
            pre_proc_end: now,
            kernel_submit: now,
            submitted: now,
            completed: now,
            post_proc_end: now,
        }
    }

    /// Request to pre-processing start (`enqTime`).
    pub fn enqueue_time(&self) -> Duration {
        self.pre_proc_start - self.enqueue
    }

    /// `preProcTime`.
    pub fn pre_proc_time(&self) -> Duration {
        self.pre_proc_end - self.pre_proc_start
    }

    /// Pre-processing end to the kernel call (`submitTime`).
    pub fn submit_time(&self) -> Duration {
        self.kernel_submit - self.pre_proc_end
    }

    /// Kernel submit until the device channel has it (`exectoVc`).
    pub fn exec_to_vc(&self) -> Duration {
        self.submitted - self.kernel_submit
    }

    /// Device channel until the completion is handled (`execToComplete`): queueing on
    /// the device, DMA, execution and the interrupt path.
    pub fn exec_to_complete(&self) -> Duration {
        self.completed - self.submitted
    }

    /// Kernel submit until the completion is back in user space (`execTotal`).
    pub fn exec_total(&self) -> Duration {
        self.completed - self.kernel_submit
    }

    /// `postProc`.
    pub fn post_proc_time(&self) -> Duration {
        self.post_proc_end - self.completed
    }

    /// Request until its completion is back (`hostRoundTrip`), queueing included.
    pub fn host_round_trip(&self) -> Duration {
        self.completed - self.enqueue
    }

    /// Request until post-processing is done (`totalRoundtripTime`).
    pub fn total_round_trip(&self) -> Duration {
        self.post_proc_end - self.enqueue
    }
}
