//! Normalisation layers.

use super::{Build, Footprint, Init, LayerShape, Layers, Module, Train};
use crate::error::TapeError;
use crate::ops::layer_norm::DEFAULT_LAYER_NORM_EPS;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};
use crate::tensor::Tensor;

/// Layer normalisation with a learned scale and shift: `gamma * (x - mean) / sqrt(var +
/// eps) + beta` over each row, the variance in two passes; `eps` is `1e-5` (PyTorch's
/// default) unless set with [`with_eps`](Self::with_eps).
///
/// ```
/// use safegrad::nn::{Build, Init, LayerNorm, Module};
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f64, Cap<16, 64>>::new();
/// let norm = LayerNorm::<2>::build(&mut tape, &mut Init::new(1))?.with_eps(0.5);
/// let x = tape.input(&Tensor::new([[1.0, 3.0]]))?; // mean 2, variance 1
/// let y = norm.forward(&mut tape, x)?;
/// let expected = 1.0 / 1.5f64.sqrt(); // (3 - 2) / sqrt(1 + 0.5)
/// assert!((tape.value(y)?.get(0, 1).unwrap() - expected).abs() < 1e-12);
/// # Ok::<(), safegrad::TapeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNorm<const C: usize> {
    /// Per-feature scale, `1 x C`, initially 1.
    pub gamma: Var<1, C>,
    /// Per-feature shift, `1 x C`, initially 0.
    pub beta: Var<1, C>,
    /// The guard inside the square root.
    pub eps: f64,
}

impl<const C: usize> LayerNorm<C> {
    /// The same layer with another epsilon.
    pub const fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
}

impl<const C: usize> Footprint for LayerNorm<C> {
    const LAYERS: Layers = Layers::one(LayerShape {
        weights: C,
        biases: C,
        fixed: 0,
        parameter_nodes: 2,
        planned: true,
        input: Some(C),
        output: Some(C),
        // The normalisation, the scale, the shift.
        nodes: 3,
        after_weights: 2,
        after_biases: 1,
        grad_factor: 1,
        views: 0,
    });
}

impl<T: Scalar, const C: usize> Build<T> for LayerNorm<C> {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(1);
        let (ones, zeros) = (Tensor::full(T::ONE), Tensor::zeros());
        let (gamma, beta) = match init.next_train() {
            Train::All => (tape.parameter(&ones)?, tape.parameter(&zeros)?),
            Train::BiasOnly => (tape.frozen_parameter(&ones)?, tape.parameter(&zeros)?),
            Train::Frozen => (
                tape.frozen_parameter(&ones)?,
                tape.frozen_parameter(&zeros)?,
            ),
        };
        Ok(Self {
            gamma,
            beta,
            eps: DEFAULT_LAYER_NORM_EPS,
        })
    }
}

impl<T: Scalar, const B: usize, const C: usize> Module<T, Var<B, C>> for LayerNorm<C> {
    type Output = Var<B, C>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<B, C>,
    ) -> Result<Var<B, C>, TapeError> {
        let y = tape.layer_norm_eps(x, T::from_f64(self.eps))?;
        let y = tape.mul_row(y, self.gamma)?;
        tape.add_row(y, self.beta)
    }
}

/// Fixed feature standardisation, `(x - mean) / std` per feature, with statistics measured
/// on the training data. Both are frozen parameters, so they travel with the model's
/// checkpoint; they take no entry of the training plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standardize<const C: usize> {
    /// `-mean`, `1 x C`.
    pub shift: Var<1, C>,
    /// `1 / std`, `1 x C`.
    pub scale: Var<1, C>,
}

impl<const C: usize> Standardize<C> {
    /// Sets the statistics: `mean` and `std` per feature. A standard deviation below
    /// `min_std` (a constant feature) is replaced by 1, so the feature is only centred.
    pub fn set_statistics<T: Scalar, Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        mean: &Tensor<T, 1, C>,
        std: &Tensor<T, 1, C>,
        min_std: T,
    ) -> Result<(), TapeError> {
        let shift = mean.map(|m| -m);
        let scale = std.map(|s| if s > min_std { T::ONE / s } else { T::ONE });
        tape.set_parameter(self.shift, &shift)?;
        tape.set_parameter(self.scale, &scale)
    }
}

impl<const C: usize> Footprint for Standardize<C> {
    const LAYERS: Layers = Layers::one(LayerShape {
        weights: 0,
        biases: 0,
        fixed: 2 * C,
        parameter_nodes: 2,
        planned: false,
        input: Some(C),
        output: Some(C),
        // The shift, the scale.
        nodes: 2,
        after_weights: 0,
        after_biases: 0,
        grad_factor: 1,
        views: 0,
    });
}

impl<T: Scalar, const C: usize> Build<T> for Standardize<C> {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(tape: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Self {
            shift: tape.frozen_parameter(&Tensor::zeros())?,
            scale: tape.frozen_parameter(&Tensor::full(T::ONE))?,
        })
    }
}

impl<T: Scalar, const B: usize, const C: usize> Module<T, Var<B, C>> for Standardize<C> {
    type Output = Var<B, C>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<B, C>,
    ) -> Result<Var<B, C>, TapeError> {
        let centred = tape.add_row(x, self.shift)?;
        tape.mul_row(centred, self.scale)
    }
}
