//! Activations as layers without parameters.

use super::{Build, Footprint, Init, LayerShape, Layers, Module};
use crate::error::TapeError;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};

/// `max(x, 0)` as a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relu;

/// `tanh(x)` as a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tanh;

/// The logistic sigmoid as a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sigmoid;

impl<T: Scalar, const B: usize, const C: usize> Module<T, Var<B, C>> for Relu {
    type Output = Var<B, C>;
    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<B, C>,
    ) -> Result<Var<B, C>, TapeError> {
        tape.relu(x)
    }
}

impl<T: Scalar, const B: usize, const C: usize> Module<T, Var<B, C>> for Tanh {
    type Output = Var<B, C>;
    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<B, C>,
    ) -> Result<Var<B, C>, TapeError> {
        tape.tanh(x)
    }
}

impl<T: Scalar, const B: usize, const C: usize> Module<T, Var<B, C>> for Sigmoid {
    type Output = Var<B, C>;
    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<B, C>,
    ) -> Result<Var<B, C>, TapeError> {
        tape.sigmoid(x)
    }
}

impl<T: Scalar> Build<T> for Relu {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(_: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Relu)
    }
}

impl<T: Scalar> Build<T> for Tanh {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(_: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Tanh)
    }
}

impl<T: Scalar> Build<T> for Sigmoid {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(_: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Sigmoid)
    }
}

impl Footprint for Relu {
    const LAYERS: Layers = Layers::one(LayerShape::elementwise(1));
}

impl Footprint for Tanh {
    const LAYERS: Layers = Layers::one(LayerShape::elementwise(1));
}

impl Footprint for Sigmoid {
    const LAYERS: Layers = Layers::one(LayerShape::elementwise(1));
}
