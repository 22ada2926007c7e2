//! Runtime errors.

use std::path::PathBuf;

use aicsim_abi::container::ContainerError;
use aicsim_driver::DriverError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot read program {path}: {source}")]
    ReadProgram { path: PathBuf, source: std::io::Error },
    #[error("program {path} is not a valid container: {source}")]
    BadContainer { path: PathBuf, source: ContainerError },
    #[error("program '{program}' {problem}")]
    UnsupportedProgram { program: String, problem: String },
    #[error("input {index} ('{name}') is {got} bytes but the program expects {expected}")]
    InputSize { index: usize, name: String, got: usize, expected: u64 },
    #[error("expected {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("{0}")]
    Driver(#[from] DriverError),
    #[error("submit failed: the channel stayed full through {attempts} attempts of {timeout:?} ({why})")]
    SubmitTimeout { attempts: u32, timeout: std::time::Duration, why: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A run faulted on the device, and the device said which instruction.
    #[error("program '{program}' faulted in layer '{layer}' ({op_type}) on core {core}: {what}")]
    ProgramFault { program: String, layer: String, op_type: String, core: usize, what: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
