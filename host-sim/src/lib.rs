//! safegrad on the host: the reference cases, and (in the binary) the command-line tool.
//!
//! This crate uses `std` freely; everything that computes goes through the `safegrad` core,
//! exactly as on the device.

pub mod audit_corpus;
pub mod bugzoo;
pub mod data;
pub mod digits;
pub mod example;
pub mod faults;
pub mod finetune;
pub mod json;
pub mod model;
pub mod onnx;
pub mod plans;
pub mod plot;
pub mod quantized;
pub mod reference;
pub mod shift;
pub mod soak;
