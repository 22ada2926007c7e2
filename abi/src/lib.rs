//! `aicsim-abi` is what both sides of the simulated PCIe boundary agree on, and nothing
//! else: the host (kernel-driver simulator, user-space driver, runtime), the compiler and
//! the device model all build on it, and it depends on none of them.
//!
//! - [`dbc`]: DMA Bridge Channel request and response elements, doorbell and semaphore
//!   commands, the per-channel registers and ring index arithmetic;
//! - [`ring`]: the ring endpoints — the one place that writes ring indices and owns the
//!   publish / fence / re-check sequence both sides follow;
//! - [`memory`]: the offset-addressed [`memory::SharedMemory`] through which every
//!   shared byte is reached (never a reference into shared memory);
//! - [`layout`]: where each register, ring, mailbox and record sits in the shared region;
//! - [`control`]: the control mailbox (activate, deactivate, status);
//! - [`clock`]: the simulated clock's stamps and promises;
//! - [`semaphore`]: what a semaphore command does to a device semaphore;
//! - [`run_record`]: the per-execution record the device writes for the host;
//! - [`profile`]: a run's statistics (per core, per op class, per instruction) and
//!   their wire form;
//! - [`container`] and [`isa`]: the program container and its instruction encoding;
//!   [`programs`]: the smallest real programs, for tests in every crate.
//!
//! It is `no_std` + `alloc`, forbids `unsafe`, and reads every value it takes from shared
//! memory by copy, validating it before use.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

#[cfg(target_endian = "big")]
compile_error!("aicsim's wire formats are little-endian and only little-endian hosts are supported");

pub mod clock;
pub mod container;
pub mod control;
pub mod dbc;
pub mod iommu;
pub mod isa;
pub mod layout;
pub mod memory;
pub mod profile;
pub mod programs;
pub mod ring;
pub mod run_record;
pub mod semaphore;
