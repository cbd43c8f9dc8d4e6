//! Layers that read their input in another shape: views, without copies.

use super::{Build, Footprint, Init, LayerShape, Layers, Module};
use crate::error::TapeError;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};

/// A view layer: no values, no gradients of its own.
const fn view(width: usize) -> LayerShape {
    LayerShape {
        output: Some(width),
        views: 1,
        ..LayerShape::elementwise(0)
    }
}

/// Flattens a `C x L` activation into the `1 x N` row a dense head reads (`N = C * L`,
/// channel by channel, as PyTorch's `flatten`): a view, no copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flatten<const N: usize>;

impl<const N: usize> Footprint for Flatten<N> {
    const LAYERS: Layers = Layers::one(view(N));
}

impl<T: Scalar, const N: usize> Build<T> for Flatten<N> {
    fn build<Mem: Capacity>(_: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Self)
    }
}

impl<T: Scalar, const C: usize, const L: usize, const N: usize> Module<T, Var<C, L>>
    for Flatten<N>
{
    type Output = Var<1, N>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<C, L>,
    ) -> Result<Var<1, N>, TapeError> {
        tape.reshape(x)
    }
}

/// Reads a `1 x (C * L)` sample row as `C x L` (channel by channel, PyTorch's row-major
/// `[C, L]` flattened): the first layer of a convolutional model fed rows. A view, no copy.
///
/// ```
/// use safegrad::nn::{sizes, Conv1d, Flatten, GlobalAvgPool1d, Linear, Plan, Relu, Unflatten};
///
/// // 3 channels of 32 samples, two convolutions, a dense head over 4 classes (a tuple
/// // of tuples: a tuple holds up to six layers).
/// type Cnn = (
///     (Unflatten<3, 32>, Conv1d<3, 32, 8, 30, 3>, Relu),
///     (Conv1d<8, 30, 8, 14, 3, 2>, Relu, GlobalAvgPool1d<8>, Linear<8, 4>),
/// );
/// let s = sizes::<Cnn>(Plan::LastLayer);
/// assert_eq!(s.input, 96);
/// assert_eq!(s.parameters, (8 * 3 * 3 + 8) + (8 * 8 * 3 + 8) + (8 * 4 + 4));
/// assert_eq!(s.trainable, 8 * 4 + 4);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unflatten<const C: usize, const L: usize>;

impl<const C: usize, const L: usize> Footprint for Unflatten<C, L> {
    const LAYERS: Layers = Layers::one(LayerShape {
        input: Some(C * L),
        ..view(C * L)
    });
}

impl<T: Scalar, const C: usize, const L: usize> Build<T> for Unflatten<C, L> {
    fn build<Mem: Capacity>(_: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Self)
    }
}

impl<T: Scalar, const N: usize, const C: usize, const L: usize> Module<T, Var<1, N>>
    for Unflatten<C, L>
{
    type Output = Var<C, L>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<1, N>,
    ) -> Result<Var<C, L>, TapeError> {
        tape.reshape(x)
    }
}
