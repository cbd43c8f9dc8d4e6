//! The motion job: an activity classifier over a smart watch's 6-axis IMU (BasicMotions:
//! standing, running, walking, badminton), pre-trained on the host and fine-tuned on the
//! device after the watch is worn differently.
//!
//! This is the application, not the engine: the host simulator (`host-sim`) and the
//! firmware both use it, so that they share one definition of the model, its classes, its
//! seeds and its schedule ([`model`]), the features computed from raw windows
//! ([`features`]), where samples come from ([`samples`]: built in, streamed over a serial
//! line in [`wire`] frames, or read from an MPU-6050), and the fine-tuning job itself
//! ([`job`]), which runs a [`safegrad::session::Session`].
#![cfg_attr(not(test), no_std)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod assets;
pub mod features;
pub mod job;
pub mod model;
pub mod samples;
pub mod wire;
