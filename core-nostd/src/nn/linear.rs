//! The fully connected layer.

use super::{Build, Init, Module, Train};
use crate::error::TapeError;
use crate::rng::Draw;
use crate::scalar::Scalar;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// How the weights of a [`Linear`] layer are drawn (biases start at 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InitScheme {
    /// He et al. (2015) for ReLU networks: `U(-b, b)` with `b = sqrt(6 / fan_in)` (gain
    /// `sqrt(2)`; PyTorch's `kaiming_uniform_(nonlinearity="relu")`).
    #[default]
    KaimingUniform,
    /// Glorot and Bengio (2010): `U(-b, b)` with `b = sqrt(6 / (fan_in + fan_out))`
    /// (PyTorch's `xavier_uniform_`).
    XavierUniform,
    /// Every weight 0, no random draw: for a model whose parameters a checkpoint fills
    /// next (it leaves the generator and floating-point code alone).
    Zeros,
}

impl InitScheme {
    /// The bound `b` of the uniform distribution for a layer of `fan_in` inputs and
    /// `fan_out` outputs.
    pub fn bound(self, fan_in: usize, fan_out: usize) -> f64 {
        let denominator = match self {
            Self::KaimingUniform => fan_in,
            Self::XavierUniform => fan_in + fan_out,
            Self::Zeros => 0,
        };
        if denominator == 0 {
            0.0
        } else {
            libm::sqrt(6.0 / denominator as f64)
        }
    }
}

/// `y = x W + b`: `IN` inputs, `OUT` outputs; `W` is `IN x OUT`, `b` is `1 x OUT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear<const IN: usize, const OUT: usize> {
    /// The weights, `IN x OUT`.
    pub weight: Var<IN, OUT>,
    /// The bias, `1 x OUT`.
    pub bias: Var<1, OUT>,
}

impl<const IN: usize, const OUT: usize> Linear<IN, OUT> {
    /// Number of parameters, `IN * OUT + OUT`.
    pub const PARAMETERS: usize = IN * OUT + OUT;
}

/// Records the parameters of a fully connected layer: weights drawn from `init`'s scheme,
/// biases 0, trained as `init`'s plan says.
fn build_parameters<
    T: Scalar,
    const IN: usize,
    const OUT: usize,
    const N: usize,
    const S: usize,
    const G: usize,
>(
    tape: &mut Tape<T, N, S, G>,
    init: &mut Init<'_>,
) -> Result<(Var<IN, OUT>, Var<1, OUT>), TapeError> {
    let train = init.next_train();
    let zeros = init.scheme == InitScheme::Zeros;
    if train == Train::Frozen && tape.reads_frozen_in_place() {
        // The values are read in place: no initial tensors, but the generator advances as
        // if they were drawn, so that later layers get the same initial values either way.
        if !zeros {
            draw_weights(init, IN, OUT, &mut |_, _| {});
        }
        return Ok((
            tape.frozen_parameter_in_place()?,
            tape.frozen_parameter_in_place()?,
        ));
    }
    // Not inlined, so that the initial tensors are on the stack only while they are
    // recorded (never for a layer read in place); a zero initialisation is its own function,
    // so that a build that only uses it carries no generator code.
    if zeros {
        held_parameters(tape, train, None)
    } else {
        held_drawn(tape, init, train)
    }
}

/// [`held_parameters`] with weights drawn from `init`.
#[inline(never)]
fn held_drawn<
    T: Scalar,
    const IN: usize,
    const OUT: usize,
    const N: usize,
    const S: usize,
    const G: usize,
>(
    tape: &mut Tape<T, N, S, G>,
    init: &mut Init<'_>,
    train: Train,
) -> Result<(Var<IN, OUT>, Var<1, OUT>), TapeError> {
    let mut w = Tensor::<T, IN, OUT>::zeros();
    let values = w.as_mut_slice();
    draw_weights(init, IN, OUT, &mut |i, v| {
        if let Some(w) = values.get_mut(i) {
            *w = T::from_f64(v);
        }
    });
    held_parameters(tape, train, Some(&w))
}

/// Records a layer's parameters held in the tape: the weights `w` (zeros if `None`) and a
/// zero bias, trainable or frozen as `train` says.
#[inline(never)]
fn held_parameters<
    T: Scalar,
    const IN: usize,
    const OUT: usize,
    const N: usize,
    const S: usize,
    const G: usize,
>(
    tape: &mut Tape<T, N, S, G>,
    train: Train,
    w: Option<&Tensor<T, IN, OUT>>,
) -> Result<(Var<IN, OUT>, Var<1, OUT>), TapeError> {
    let zeros;
    let w = match w {
        Some(w) => w,
        None => {
            zeros = Tensor::<T, IN, OUT>::zeros();
            &zeros
        }
    };
    let bias = Tensor::<T, 1, OUT>::zeros();
    Ok(match train {
        Train::All => (tape.parameter(w)?, tape.parameter(&bias)?),
        Train::BiasOnly => (tape.frozen_parameter(w)?, tape.parameter(&bias)?),
        Train::Frozen => (tape.frozen_parameter(w)?, tape.frozen_parameter(&bias)?),
    })
}

/// Draws the initial weights of a `fan_in x fan_out` layer from `init`, in row-major order,
/// and passes each to `put` with its index. One copy of the loop serves every shape.
fn draw_weights(
    init: &mut Init<'_>,
    fan_in: usize,
    fan_out: usize,
    put: &mut dyn FnMut(usize, f64),
) {
    let b = init.scheme.bound(fan_in, fan_out);
    for i in 0..fan_in * fan_out {
        put(i, init.rng.uniform(-b, b));
    }
}

impl<T: Scalar, const IN: usize, const OUT: usize> Build<T> for Linear<IN, OUT> {
    fn build<const N: usize, const S: usize, const G: usize>(
        tape: &mut Tape<T, N, S, G>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        let (weight, bias) = build_parameters(tape, init)?;
        Ok(Self { weight, bias })
    }
}

impl<T: Scalar, const B: usize, const IN: usize, const OUT: usize> Module<T, Var<B, IN>>
    for Linear<IN, OUT>
{
    type Output = Var<B, OUT>;

    fn forward<const N: usize, const S: usize, const G: usize>(
        &self,
        tape: &mut Tape<T, N, S, G>,
        x: Var<B, IN>,
    ) -> Result<Var<B, OUT>, TapeError> {
        tape.linear(x, self.weight, self.bias)
    }
}

/// `y = max(x W + b, 0)`: a [`Linear`] layer followed by a [`Relu`](super::Relu), recorded
/// as one node ([`Tape::linear_relu`]): the same values, gradients and parameters (a
/// checkpoint of one loads into the other), less memory and less work. `W` is `IN x OUT`,
/// `b` is `1 x OUT`.
///
/// ```
/// use safegrad::nn::{Build, Init, Linear, LinearRelu, Module, Relu};
/// use safegrad::{Tape, Tensor};
///
/// let mut tape = Tape::<f32, 16, 256>::new();
/// let fused = LinearRelu::<4, 3>::build(&mut tape, &mut Init::new(3))?;
/// let plain = (Linear::<4, 3>::build(&mut tape, &mut Init::new(3))?, Relu);
/// let x = tape.input(&Tensor::new([[0.5, -1.0, 2.0, 0.25]]))?;
/// let a = fused.forward(&mut tape, x)?;
/// let b = plain.forward(&mut tape, x)?;
/// assert_eq!(tape.value(a)?, tape.value(b)?);
/// # Ok::<(), safegrad::TapeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearRelu<const IN: usize, const OUT: usize> {
    /// The weights, `IN x OUT`.
    pub weight: Var<IN, OUT>,
    /// The bias, `1 x OUT`.
    pub bias: Var<1, OUT>,
}

impl<const IN: usize, const OUT: usize> LinearRelu<IN, OUT> {
    /// Number of parameters, `IN * OUT + OUT`.
    pub const PARAMETERS: usize = IN * OUT + OUT;
}

impl<T: Scalar, const IN: usize, const OUT: usize> Build<T> for LinearRelu<IN, OUT> {
    fn build<const N: usize, const S: usize, const G: usize>(
        tape: &mut Tape<T, N, S, G>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        let (weight, bias) = build_parameters(tape, init)?;
        Ok(Self { weight, bias })
    }
}

impl<T: Scalar, const B: usize, const IN: usize, const OUT: usize> Module<T, Var<B, IN>>
    for LinearRelu<IN, OUT>
{
    type Output = Var<B, OUT>;

    fn forward<const N: usize, const S: usize, const G: usize>(
        &self,
        tape: &mut Tape<T, N, S, G>,
        x: Var<B, IN>,
    ) -> Result<Var<B, OUT>, TapeError> {
        tape.linear_relu(x, self.weight, self.bias)
    }
}
