//! `aicsim-runtime` is the host runtime (the LRT equivalent): it loads program
//! containers, activates them on the device, and runs inferences — one at a time with
//! [`Activation::run`], or pipelined across N activations with S inferences in flight
//! each with [`InferenceSet`]. Every inference carries [`Timestamps`] for each host and
//! device stage.
//!
//! It is not a driver: buffers, channels and waits come from `aicsim-driver`.
#![forbid(unsafe_code)]

mod activation;
pub mod convert;
mod error;
mod handles;
mod host_model;
mod program;
mod queue;
pub mod samples;
mod set;
mod simulated;
mod timestamps;

pub use activation::{Activation, InferenceSlot, SubmitPolicy};
pub use error::{Result, RuntimeError};
pub use handles::{Completed, Handle, HandlePool};
pub use host_model::HostModel;
pub use program::Program;
pub use queue::{AsyncQueue, Outcome, QueueConfig, Rejected};
pub use set::{Completion, DeviceTiming, Generation, InferenceSet, RunLimit, RunSummary};
pub use simulated::LIVENESS_TIMEOUT;
pub use timestamps::{wall_ns, wall_ns_of, Timestamps};

pub use aicsim_driver::Device;
