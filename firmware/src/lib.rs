//! The device side of safegrad: the fine-tuning job and what it reads samples through.
//!
//! Everything here builds for the host too, so it is unit-tested with `cargo test`; the
//! binary (`main.rs`) adds the board: start-up, logging, timing, exit.
#![cfg_attr(not(test), no_std)]

pub mod assets;
pub mod job;
