//! The logic of the aicsim command-line tools, each binary in `src/bin` a front end over
//! it:
//! - [`exec`]: aic-exec's qaic-exec flags and its compile-time metrics;
//! - [`runner`], [`profiling`], [`latency`], [`stats`]: what aic-runner collects, the
//!   profile files it writes (latency, per-core stats, trace), the latency-file format
//!   that `aic-latency-stats` reads, and the statistics both print;
//! - [`layer_costs`]: what each layer of a compiled program costs on the device model;
//! - [`predict`]: the calibrated host and card model behind the configurator's search;
//! - [`configurator`]: aic-configurator's search specification and search;
//! - [`generation`]: language-model generation (prefill, decode steps, per-token
//!   figures), for aic-runner, the predictor and the configurator;
//! - [`output_files`]: how a model's names become file names, and files written inside
//!   the chosen directory only, atomically.
//!
//! `runner::cli` and `configurator::cli` are aic-runner's and aic-configurator's command
//! lines (flags, planning, printing); their binaries only call `main` there.
#![forbid(unsafe_code)]

pub mod configurator;
pub mod exec;
pub mod generation;
pub mod latency;
pub mod layer_costs;
pub mod output_files;
pub mod predict;
pub mod profiling;
pub mod report;
pub mod runner;
pub mod stats;
