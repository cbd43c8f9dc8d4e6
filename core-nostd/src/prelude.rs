//! What a program that fine-tunes a model uses, in one import: `use safegrad::prelude::*;`.
//!
//! ```
//! use safegrad::prelude::*;
//!
//! type Model = (Linear<4, 8>, Relu, Linear<8, 3>);
//! type Work = safegrad::workspace!(f32, Model, Plan::LastLayer);
//! let schedule: Schedule<'_, f32, Sgd<f32>> = Schedule::new(Sgd::new(0.05)).epochs(10);
//! # let _ = (Work::new(), schedule);
//! ```

pub use crate::dataset::Dataset;
pub use crate::error::{Error, TapeError};
pub use crate::nn::{
    Build, Footprint, Init, LayerNorm, Linear, LinearRelu, Module, Plan, Relu, Sigmoid,
    Standardize, Tanh, Train,
};
pub use crate::optim::{Adam, Momentum, Optimizer, Sgd};
pub use crate::session::{FitReport, Schedule, Session, Workspace};
pub use crate::store::Slots;
pub use crate::tape::{Cap, Tape, Var};
pub use crate::tensor::Tensor;
pub use crate::train::Samples;
