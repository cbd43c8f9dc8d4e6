//! The device side of safegrad: the fine-tuning job and what it reads samples through.
//!
//! Everything here but the UART's registers builds for the host too, so it is unit-tested
//! with `cargo test` (the IMU driver against `embedded-hal-mock`); the binary (`main.rs`)
//! adds the board: start-up, logging, timing, flash persistence, exit.
#![cfg_attr(not(test), no_std)]

pub mod assets;
#[cfg(target_os = "none")]
pub mod board;
pub mod imu;
pub mod job;
pub mod samples;
#[cfg(target_os = "none")]
pub mod uart;
