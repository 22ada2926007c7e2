//! Shared code of the aicsim command-line tools: the latency-profile file format that
//! `aic-runner` writes and `aic-latency-stats` reads, and the statistics both print.
#![forbid(unsafe_code)]

pub mod configurator;
pub mod exec;
pub mod latency;
pub mod predict;
pub mod profiling;
pub mod runner;
pub mod stats;
