//! Normalisation layers.

use super::{Build, Init, Module, Train};
use crate::error::TapeError;
use crate::scalar::Scalar;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// Layer normalisation with a learned scale and shift: `gamma * (x - mean) / sqrt(var +
/// eps) + beta` over each row, `eps = 1e-5`, the variance in two passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerNorm<const C: usize> {
    /// Per-feature scale, `1 x C`, initially 1.
    pub gamma: Var<1, C>,
    /// Per-feature shift, `1 x C`, initially 0.
    pub beta: Var<1, C>,
}

impl<T: Scalar, const C: usize> Build<T> for LayerNorm<C> {
    fn build<const N: usize, const S: usize, const G: usize>(
        tape: &mut Tape<T, N, S, G>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        let (ones, zeros) = (Tensor::full(T::ONE), Tensor::zeros());
        let (gamma, beta) = match init.next_train() {
            Train::All => (tape.parameter(&ones)?, tape.parameter(&zeros)?),
            Train::BiasOnly => (tape.frozen_parameter(&ones)?, tape.parameter(&zeros)?),
            Train::Frozen => (
                tape.frozen_parameter(&ones)?,
                tape.frozen_parameter(&zeros)?,
            ),
        };
        Ok(Self { gamma, beta })
    }
}

impl<T: Scalar, const B: usize, const C: usize> Module<T, Var<B, C>> for LayerNorm<C> {
    type Output = Var<B, C>;

    fn forward<const N: usize, const S: usize, const G: usize>(
        &self,
        tape: &mut Tape<T, N, S, G>,
        x: Var<B, C>,
    ) -> Result<Var<B, C>, TapeError> {
        let y = tape.layer_norm(x)?;
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
    pub fn set_statistics<T: Scalar, const N: usize, const S: usize, const G: usize>(
        &self,
        tape: &mut Tape<T, N, S, G>,
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

impl<T: Scalar, const C: usize> Build<T> for Standardize<C> {
    fn build<const N: usize, const S: usize, const G: usize>(
        tape: &mut Tape<T, N, S, G>,
        _: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        Ok(Self {
            shift: tape.frozen_parameter(&Tensor::zeros())?,
            scale: tape.frozen_parameter(&Tensor::full(T::ONE))?,
        })
    }
}

impl<T: Scalar, const B: usize, const C: usize> Module<T, Var<B, C>> for Standardize<C> {
    type Output = Var<B, C>;

    fn forward<const N: usize, const S: usize, const G: usize>(
        &self,
        tape: &mut Tape<T, N, S, G>,
        x: Var<B, C>,
    ) -> Result<Var<B, C>, TapeError> {
        let centred = tape.add_row(x, self.shift)?;
        tape.mul_row(centred, self.scale)
    }
}
