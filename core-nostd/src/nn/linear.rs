//! The fully connected layer.

use super::{Build, Footprint, Init, LayerShape, Layers, Module, Train};
use crate::error::TapeError;
use crate::rng::Draw;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};
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

/// `y = x W + b`: `IN` inputs, `OUT` outputs.
///
/// The weights `W` are `IN x OUT`, row-major, and multiply a batch of rows from the right:
/// `W[i][j]` connects input `i` to output `j`, and output `j`'s weights are column `j`.
/// PyTorch's `nn.Linear` stores the transpose, `weight[j][i]` of shape `[out, in]`, with
/// `y = x W^T + b`: [`from_pytorch`](Self::from_pytorch) takes that layout. The bias `b`
/// is `1 x OUT`. A checkpoint stores `W` then `b`, each row-major.
///
/// ```
/// use safegrad::nn::{Linear, Module, Train};
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<8, 32>>::new();
/// // PyTorch: nn.Linear(2, 3).weight is [[1, 0], [0, 1], [1, 1]] (3 x 2).
/// let torch_weight = Tensor::new([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]);
/// let layer = Linear::<2, 3>::from_pytorch(
///     &mut tape,
///     &torch_weight,
///     &Tensor::new([[0.5, 0.5, 0.5]]),
///     Train::All,
/// )?;
/// assert_eq!(tape.value(layer.weight)?, torch_weight.transpose()); // IN x OUT here
/// let x = tape.input(&Tensor::new([[2.0, 3.0]]))?;
/// let y = layer.forward(&mut tape, x)?;
/// assert_eq!(tape.value(y)?, Tensor::new([[2.5, 3.5, 5.5]]));
/// # Ok::<(), safegrad::TapeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear<const IN: usize, const OUT: usize> {
    /// The weights, `IN x OUT`.
    pub weight: Var<IN, OUT>,
    /// The bias, `1 x OUT`.
    pub bias: Var<1, OUT>,
}

impl<const IN: usize, const OUT: usize> Linear<IN, OUT> {
    /// Records a layer with the given weights (`IN x OUT`, see the layout above) and bias,
    /// trained as `train` says. Parameters come before every activation.
    pub fn from_tensors<T: Scalar, Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        weight: &Tensor<T, IN, OUT>,
        bias: &Tensor<T, 1, OUT>,
        train: Train,
    ) -> Result<Self, TapeError> {
        let (weight, bias) = held_parameters(tape, train, weight, Some(bias))?;
        Ok(Self { weight, bias })
    }

    /// Records a layer from PyTorch's layout: `weight` is `OUT x IN` (`nn.Linear.weight`),
    /// transposed here.
    pub fn from_pytorch<T: Scalar, Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        weight: &Tensor<T, OUT, IN>,
        bias: &Tensor<T, 1, OUT>,
        train: Train,
    ) -> Result<Self, TapeError> {
        Self::from_tensors(tape, &weight.transpose(), bias, train)
    }
}

/// The shape of a fully connected layer: `IN * OUT` weights, `OUT` biases, one node.
const fn dense(input: usize, output: usize, grad_factor: usize) -> LayerShape {
    LayerShape {
        weights: input * output,
        biases: output,
        fixed: 0,
        parameter_nodes: 2,
        planned: true,
        input: Some(input),
        output: Some(output),
        nodes: 1,
        after_weights: 1,
        after_biases: 1,
        grad_factor,
        views: 0,
    }
}

impl<const IN: usize, const OUT: usize> Footprint for Linear<IN, OUT> {
    const LAYERS: Layers = Layers::one(dense(IN, OUT, 1));
}

/// Records the parameters of a fully connected layer: weights drawn from `init`'s scheme,
/// biases 0, trained as `init`'s plan says.
#[inline(always)]
fn build_parameters<T: Scalar, const IN: usize, const OUT: usize, Mem: Capacity>(
    tape: &mut Tape<T, Mem>,
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
    // Zeros (a checkpoint fills the parameters next) are written straight into the tape,
    // without tensors on the stack or generator code; drawn weights are made in a function
    // of their own, not inlined, so that their tensors are on the stack only while recorded.
    if zeros {
        Ok((
            tape.zero_parameter(train == Train::All)?,
            tape.zero_parameter(train != Train::Frozen)?,
        ))
    } else {
        held_drawn(tape, init, train)
    }
}

/// [`held_parameters`] with weights drawn from `init`.
#[inline(never)]
fn held_drawn<T: Scalar, const IN: usize, const OUT: usize, Mem: Capacity>(
    tape: &mut Tape<T, Mem>,
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
    held_parameters(tape, train, &w, None)
}

/// Records a layer's parameters held in the tape: the weights `w` and the bias `b` (zeros
/// if `None`), trainable or frozen as `train` says.
#[inline(never)]
fn held_parameters<T: Scalar, const IN: usize, const OUT: usize, Mem: Capacity>(
    tape: &mut Tape<T, Mem>,
    train: Train,
    w: &Tensor<T, IN, OUT>,
    b: Option<&Tensor<T, 1, OUT>>,
) -> Result<(Var<IN, OUT>, Var<1, OUT>), TapeError> {
    let zero_bias;
    let bias = match b {
        Some(b) => b,
        None => {
            zero_bias = Tensor::<T, 1, OUT>::zeros();
            &zero_bias
        }
    };
    Ok(match train {
        Train::All => (tape.parameter(w)?, tape.parameter(bias)?),
        Train::BiasOnly => (tape.frozen_parameter(w)?, tape.parameter(bias)?),
        Train::Frozen => (tape.frozen_parameter(w)?, tape.frozen_parameter(bias)?),
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
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(1);
        let (weight, bias) = build_parameters(tape, init)?;
        Ok(Self { weight, bias })
    }
}

impl<T: Scalar, const B: usize, const IN: usize, const OUT: usize> Module<T, Var<B, IN>>
    for Linear<IN, OUT>
{
    type Output = Var<B, OUT>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
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
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<16, 256>>::new();
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
    /// Records a layer with the given weights (`IN x OUT`, as [`Linear`]'s) and bias,
    /// trained as `train` says.
    pub fn from_tensors<T: Scalar, Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        weight: &Tensor<T, IN, OUT>,
        bias: &Tensor<T, 1, OUT>,
        train: Train,
    ) -> Result<Self, TapeError> {
        let (weight, bias) = held_parameters(tape, train, weight, Some(bias))?;
        Ok(Self { weight, bias })
    }

    /// Records a layer from PyTorch's layout (`weight` is `OUT x IN`), transposed here.
    pub fn from_pytorch<T: Scalar, Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        weight: &Tensor<T, OUT, IN>,
        bias: &Tensor<T, 1, OUT>,
        train: Train,
    ) -> Result<Self, TapeError> {
        Self::from_tensors(tape, &weight.transpose(), bias, train)
    }
}

impl<const IN: usize, const OUT: usize> Footprint for LinearRelu<IN, OUT> {
    // Its gradient slots hold the output's and then the pre-activation's.
    const LAYERS: Layers = Layers::one(dense(IN, OUT, 2));
}

impl<T: Scalar, const IN: usize, const OUT: usize> Build<T> for LinearRelu<IN, OUT> {
    // Inlined, so that a build whose initialisation is known (zeros, for a checkpoint to fill)
    // carries no code for the others.
    #[inline(always)]
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(1);
        let (weight, bias) = build_parameters(tape, init)?;
        Ok(Self { weight, bias })
    }
}

impl<T: Scalar, const B: usize, const IN: usize, const OUT: usize> Module<T, Var<B, IN>>
    for LinearRelu<IN, OUT>
{
    type Output = Var<B, OUT>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<B, IN>,
    ) -> Result<Var<B, OUT>, TapeError> {
        tape.linear_relu(x, self.weight, self.bias)
    }
}
