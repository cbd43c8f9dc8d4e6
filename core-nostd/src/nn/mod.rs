//! Layers and models: shapes checked at compile time, parameters on the tape.
//!
//! A model is a layer or a tuple of layers, as in dfdx: `(Linear<16, 32>, Relu,
//! Linear<32, 4>)`. [`Build`] records its parameters on a tape (trainable or frozen, per
//! [`Train`]); [`Module::forward`] records its forward pass for a batch of `B` rows. The
//! output shape of each layer is the input shape of the next, or the model does not compile.
//!
//! ```
//! use safegrad::nn::{Build, Init, Linear, Module, Relu, Train};
//! use safegrad::{Cap, Tape, Tensor};
//!
//! type Mlp = (Linear<4, 8>, Relu, Linear<8, 3>);
//! let mut tape = Tape::<f32, Cap<32, 512>>::new();
//! // Freeze the first layer, train the last one.
//! let model = Mlp::build(&mut tape, &mut Init::new(7).with_plan(&[Train::Frozen]))?;
//! let x = tape.input(&Tensor::<f32, 2, 4>::full(0.5))?; // a batch of 2
//! let logits = model.forward(&mut tape, x)?; // Var<2, 3>
//! let loss = tape.softmax_cross_entropy(logits, &[0, 2])?;
//! tape.backward(loss)?;
//! assert_eq!(tape.trainable_len(), 8 * 3 + 3);
//! # Ok::<(), safegrad::TapeError>(())
//! ```
//!
//! A layer whose input width differs from the previous output does not compile:
//!
//! ```compile_fail
//! use safegrad::nn::{Build, Init, Linear, Module, Relu};
//! use safegrad::{Cap, Tape, Tensor};
//!
//! type Broken = (Linear<4, 8>, Relu, Linear<6, 3>);
//! let mut tape = Tape::<f32, Cap<32, 512>>::new();
//! let model = Broken::build(&mut tape, &mut Init::new(7)).unwrap();
//! let x = tape.input(&Tensor::<f32, 1, 4>::zeros()).unwrap();
//! let _ = model.forward(&mut tape, x);
//! ```

mod activation;
#[cfg(feature = "conv")]
mod conv;
mod footprint;
mod head;
mod linear;
pub mod loss;
mod norm;
mod sequential;
#[cfg(feature = "conv")]
mod view;

pub use activation::{Relu, Sigmoid, Tanh};
#[cfg(feature = "conv")]
pub use conv::{
    AvgPool1d, BatchNorm1d, Conv1d, DepthwiseConv1d, GlobalAvgPool1d, MaxPool1d, PointwiseConv1d,
};
pub use footprint::{sizes, Footprint, LayerShape, Layers, Plan, Sizes, MAX_LAYERS};
pub use head::{Headed, WithHead};
pub use linear::{InitScheme, Linear, LinearRelu};
pub use norm::{LayerNorm, Standardize};
#[cfg(feature = "conv")]
pub use view::{Flatten, Unflatten};

use crate::error::TapeError;
use crate::rng::{SeedableRng, SplitMix64};
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape};

/// A layer or model: records its forward pass for an input `X` (a `Var<B, IN>`).
pub trait Module<T: Scalar, X> {
    /// The output handle, `Var<B, OUT>`.
    type Output;

    /// Records the forward pass on `tape`.
    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: X,
    ) -> Result<Self::Output, TapeError>;
}

/// A layer or model that can record its parameters on a tape.
pub trait Build<T: Scalar>: Footprint + Sized {
    /// Records the parameters (initialised from `init`) and returns the handles.
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError>;
}

/// What of a layer with parameters is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Train {
    /// Every parameter.
    #[default]
    All,
    /// Only the bias (TinyTL's bias-only fine-tuning): the weights are frozen.
    BiasOnly,
    /// Nothing: every parameter is frozen and takes no gradient or optimiser memory.
    Frozen,
}

/// How [`Build`] initialises parameters: a seeded generator, a scheme, and a [`Plan`] that
/// says, layer by layer (each layer with parameters takes the next entry), what is trained.
#[derive(Clone, Debug)]
pub struct Init<'a> {
    /// The generator the weights are drawn from.
    pub rng: SplitMix64,
    /// The distribution of the weights.
    pub scheme: InitScheme,
    plan: Plan<'a>,
    /// Layers with parameters of the model being built (its type says; set by the
    /// outermost build).
    layers: Option<usize>,
    next: usize,
}

impl<'a> Init<'a> {
    /// Kaiming-uniform weights from `seed`, every layer trained.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::seed_from_u64(seed),
            scheme: InitScheme::KaimingUniform,
            plan: Plan::All,
            layers: None,
            next: 0,
        }
    }

    /// The same with another scheme.
    pub const fn with_scheme(mut self, scheme: InitScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// The same with a plan: [`Plan::LastLayer`], [`Plan::LastLayers`], [`Plan::BiasOnly`],
    /// [`Plan::BiasesAndLastLayers`], ..., or a list of
    /// [`Train`] entries (`&[Train]`), entry `i` for the `i`-th layer with parameters.
    pub fn with_plan(mut self, plan: impl Into<Plan<'a>>) -> Self {
        self.plan = plan.into();
        self
    }

    /// Called by a model's [`Build`] before its layers': the model has `layers` layers
    /// with parameters (the outermost call counts; nested models leave it).
    #[inline(always)]
    pub fn begin(&mut self, layers: usize) {
        if self.layers.is_none() {
            self.layers = Some(layers);
        }
    }

    /// The plan's entry for the next layer with parameters.
    #[inline(always)]
    pub fn next_train(&mut self) -> Train {
        let t = self.plan.train(self.next, self.layers.unwrap_or(1));
        self.next += 1;
        t
    }
}

/// A plan that trains only the last of `layers` layers with parameters.
///
/// ```
/// use safegrad::nn::{last_layer_only, Train};
///
/// assert_eq!(last_layer_only::<3>(), [Train::Frozen, Train::Frozen, Train::All]);
/// ```
pub fn last_layer_only<const L: usize>() -> [Train; L] {
    let mut plan = [Train::Frozen; L];
    if let Some(last) = plan.last_mut() {
        *last = Train::All;
    }
    plan
}
