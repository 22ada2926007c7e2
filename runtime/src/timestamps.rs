//! Per-inference timestamps and the stages of the latency profile built from them.
//!
//! A timestamp is a count of nanoseconds on the clock the run uses: the simulated clock
//! (see [`crate::HostModel`]), or the wall clock since a process-wide epoch
//! ([`wall_ns`]). Only differences between timestamps of one run mean anything.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The wall clock in nanoseconds since the first time anyone asked in this process.
pub fn wall_ns() -> u64 {
    wall_ns_of(Instant::now())
}

/// `at` on the wall clock of [`wall_ns`] (0 for a moment before its epoch).
pub fn wall_ns_of(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// When each stage of one inference happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    /// The application's request entered the runtime.
    pub enqueue: u64,
    /// Host pre-processing (converting/copying inputs into buffers) started.
    pub pre_proc_start: u64,
    /// Pre-processing finished.
    pub pre_proc_end: u64,
    /// The execute call into the kernel driver started.
    pub kernel_submit: u64,
    /// The execute call returned: the request is on the device's channel.
    pub submitted: u64,
    /// The completion of the inference's last buffer was back in user space.
    pub completed: u64,
    /// Post-processing (reading outputs) finished.
    pub post_proc_end: u64,
    /// Control is back with the application, its own bookkeeping of the result done.
    pub returned: u64,
}

fn between(from: u64, to: u64) -> Duration {
    Duration::from_nanos(to.saturating_sub(from))
}

impl Timestamps {
    /// Every stage at `ns`.
    pub fn at(ns: u64) -> Timestamps {
        Timestamps {
            enqueue: ns,
            pre_proc_start: ns,
            pre_proc_end: ns,
            kernel_submit: ns,
            submitted: ns,
            completed: ns,
            post_proc_end: ns,
            returned: ns,
        }
    }

    /// Every stage now, on the wall clock.
    pub fn now() -> Timestamps {
        Timestamps::at(wall_ns())
    }

    /// Request to pre-processing start (`enqTime`).
    pub fn enqueue_time(&self) -> Duration {
        between(self.enqueue, self.pre_proc_start)
    }

    /// `preProcTime`.
    pub fn pre_proc_time(&self) -> Duration {
        between(self.pre_proc_start, self.pre_proc_end)
    }

    /// Pre-processing end to the kernel call (`submitTime`).
    pub fn submit_time(&self) -> Duration {
        between(self.pre_proc_end, self.kernel_submit)
    }

    /// Kernel submit until the device channel has it (`exectoVc`).
    pub fn exec_to_vc(&self) -> Duration {
        between(self.kernel_submit, self.submitted)
    }

    /// Device channel until the completion is handled (`execToComplete`): queueing on
    /// the device, DMA, execution and the interrupt path.
    pub fn exec_to_complete(&self) -> Duration {
        between(self.submitted, self.completed)
    }

    /// Kernel submit until the completion is back in user space (`execTotal`).
    pub fn exec_total(&self) -> Duration {
        between(self.kernel_submit, self.completed)
    }

    /// `postProc`.
    pub fn post_proc_time(&self) -> Duration {
        between(self.completed, self.post_proc_end)
    }

    /// Request until its completion is back (`hostRoundTrip`), queueing included.
    pub fn host_round_trip(&self) -> Duration {
        between(self.enqueue, self.completed)
    }

    /// Request until control is back with the application (`totalRoundtripTime`).
    pub fn total_round_trip(&self) -> Duration {
        between(self.enqueue, self.returned)
    }
}
