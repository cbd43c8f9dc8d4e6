//! The device side of safegrad: the fine-tuning job and what it reads samples through.
//!
//! Everything here but the UART's registers builds for the host too, so it is unit-tested
//! with `cargo test` (the IMU sample source against `embedded-hal-mock`); the binary
//! (`main.rs`) adds the board: start-up, logging, timing, flash persistence, exit. The
//! MPU-6050 driver is a crate of its own, `drivers/mpu6050` (`mpu6050`).
#![cfg_attr(not(test), no_std)]

pub mod assets;
#[cfg(target_os = "none")]
pub mod board;
pub mod job;
pub mod samples;
#[cfg(target_os = "none")]
pub mod uart;
