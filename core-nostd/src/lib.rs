//! # safegrad
//!
//! Reverse-mode gradients for small networks on microcontrollers: `#![no_std]`, no heap,
//! fixed-shape tensors whose shapes are const generics, a recorded graph whose capacity is
//! fixed at compile time, and gradients that stay finite where naive code produces `nan`.
//!
//! - [`Tensor<T, R, C>`](Tensor): an `R x C` matrix; a shape mismatch does not compile.
//! - [`Tape<T, Cap<N, S>>`](Tape): records up to `N` nodes holding `S` scalars and runs the
//!   reverse sweep; a full tape is an [`Err`](TapeError), never a panic.
//! - Guarded ops are explicit nodes: [`Tape::safe_div`], [`Tape::safe_div_signed`],
//!   [`Tape::masked_div`], [`Tape::safe_ln`], [`Tape::safe_sqrt`], next to the raw
//!   [`Tape::div`], [`Tape::ln`], [`Tape::sqrt`].
//! - Strong zeros: a zero upstream gradient contributes exactly zero, even through an
//!   infinite local derivative ([`scalar::strong_mul`]).
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! // PyTorch's autograd note: divide by zero, then mask the bad lane.
//! let mut tape = Tape::<f32, Cap<8, 32>>::new();
//! let x = tape.variable(&Tensor::new([[1.0, 1.0]]))?;
//! let den = tape.constant(&Tensor::new([[0.0, 1.0]]))?;
//! let y = tape.div(x, den)?; // [inf, 1]
//! let keep = tape.not_zero(den)?;
//! let zero = tape.constant(&Tensor::zeros())?;
//! let masked = tape.select(keep, y, zero)?;
//! let loss = tape.sum(masked)?;
//! tape.backward(loss)?;
//! // PyTorch documents [nan, 1]; strong zeros give [0, 1].
//! assert_eq!(tape.grad(x)?, Tensor::new([[0.0, 1.0]]));
//! # Ok::<(), safegrad::TapeError>(())
//! ```
#![no_std]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod audit;
mod bytes;
pub mod checkpoint;
pub mod crc32;
pub mod dataset;
pub mod error;
pub mod fastmath;
pub mod graph;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod prelude;
pub mod quant;
pub mod rng;
pub mod scalar;
pub mod session;
pub mod store;
pub mod tape;
pub mod tensor;
pub mod train;

pub use error::{Error, TapeError};
pub use graph::{Domain, Node, NodeId, Op};
pub use scalar::Scalar;
pub use tape::{Cap, Capacity, FlatVar, Tape, Var};
pub use tensor::Tensor;

/// The README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
