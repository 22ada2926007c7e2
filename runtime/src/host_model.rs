//! What the host's stages of one inference take on the simulated clock. The defaults and
//! their sources: `docs/calibration.md`. The runner and the predictor both use this one
//! model (through [`crate::InferenceSet::run_simulated`]).

/// Host-side costs of one inference, in nanoseconds unless named otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostModel {
    /// Request to pre-processing start (`enqTime`).
    pub enqueue_ns: u64,
    /// Pre-processing (input conversion and copy), per byte of device input.
    pub pre_proc_ns_per_byte: f64,
    /// Pre-processing end to the kernel call (`submitTime`).
    pub submit_ns: u64,
    /// Kernel call until the request is on the device's channel (`exectoVc`).
    pub exec_to_vc_ns: u64,
    /// Device completion to the completion being back in user space (MSI, interrupt
    /// thread, waking the waiter).
    pub completion_ns: u64,
    /// `postProc`.
    pub post_proc_ns: u64,
    /// Application-side work counted in the total round trip beyond `postProc` (the
    /// runner taking and returning handles, output bookkeeping).
    pub app_ns: u64,
    /// From the end of one inference's round trip to the runner enqueueing the handle
    /// again.
    pub requeue_ns: u64,
}

impl Default for HostModel {
    fn default() -> HostModel {
        HostModel {
            enqueue_ns: 4_900,
            pre_proc_ns_per_byte: 37_000.0 / 602_112.0,
            submit_ns: 1_700,
            exec_to_vc_ns: 4_500,
            completion_ns: 20_000,
            post_proc_ns: 2_600,
            app_ns: 90_000,
            requeue_ns: 30_000,
        }
    }
}

impl HostModel {
    /// Pre-processing of `input_bytes` of device input.
    pub fn pre_proc_ns(&self, input_bytes: u64) -> u64 {
        (self.pre_proc_ns_per_byte * input_bytes as f64).round() as u64
    }

    /// From the request's enqueue (or the moment a handle takes it up) to its elements
    /// being on the channel.
    pub fn to_channel_ns(&self, input_bytes: u64) -> u64 {
        self.enqueue_ns + self.pre_proc_ns(input_bytes) + self.submit_ns + self.exec_to_vc_ns
    }

    /// From the device posting an inference's last response to its handle being free to
    /// take up the next request.
    pub fn turnaround_ns(&self) -> u64 {
        self.completion_ns + self.post_proc_ns + self.app_ns + self.requeue_ns
    }

    /// The least time from a response the host reacts to until an element it queues
    /// because of it reaches the channel: the lookahead the device may count on.
    pub fn lookahead_ns(&self, input_bytes: u64) -> u64 {
        self.turnaround_ns() + self.to_channel_ns(input_bytes)
    }
}
