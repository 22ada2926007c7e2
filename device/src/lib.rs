//! `aicsim-device` is the simulated accelerator's model: the firmware that services the
//! control mailbox and the request rings ([`firmware`]), the discrete-event scheduler
//! that times programs ([`scheduler`]), the NSP cores and their kernels ([`nsp`]), and
//! the profiles it keeps. What it shares with the host — wire formats, registers, ring
//! endpoints, memory layout, program container — is in `aicsim-abi`.
//!
//! It is `no_std` + `alloc` (the `std` feature adds `std::error::Error` impls,
//! an AVX-512 matrix product behind a run-time CPU check, and one helper thread that shares
//! large functional kernels and transfers, [`parallel`]). Its only `unsafe` is in
//! `nsp::gemm` (raw pointers into matrix products), `nsp::avx512` (the SIMD product
//! behind a run-time CPU check) and `parallel` (the helper's borrowed job, disjoint
//! pieces of one slice); everything the device shares with the host is reached through
//! the offset-addressed `aicsim_abi::memory::SharedMemory` trait, which the kernel-driver
//! simulator implements over a real shared mapping. The device never forms a reference
//! into shared memory; every value it reads from there is copied out, validated, and
//! only then used.
//!
//! It is not a driver: queueing, buffer objects and interrupts handling live in
//! `aicsim-kmd`, which depends on this crate and never the other way round.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

#[cfg(target_endian = "big")]
compile_error!("aicsim's wire formats are little-endian and only little-endian hosts are supported");

pub mod extent;
pub mod firmware;
pub mod nsp;
pub mod parallel;
pub mod rig;
pub mod scheduler;

pub use firmware::{DeviceConfig, FaultPlan, Firmware, Pacing};
