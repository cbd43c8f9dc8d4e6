//! Convolution, pooling and batch normalisation layers for `channels x length` inputs (one
//! sample: the rows of a `Var<C, L>` are its channels).

use super::{Build, Footprint, Init, InitScheme, LayerShape, Layers, Module, Train};
use crate::error::TapeError;
use crate::ops::batch_norm::DEFAULT_BATCH_NORM_EPS;
use crate::ops::conv::Conv1dShape;
use crate::ops::pool::Pool1dShape;
use crate::rng::Draw;
use crate::scalar::Scalar;
use crate::tape::{Capacity, FlatVar, Tape, Var};
use crate::tensor::Tensor;

/// PyTorch's `nn.Conv1d(C_IN, C_OUT, K, stride=S, padding=P, dilation=D, groups=G)` on a
/// `C_IN x L_IN` input, giving `C_OUT x L_OUT`. `L_OUT` must be the convolution's output
/// length, `(L_IN + 2P - D (K - 1) - 1) / S + 1`, and the channels multiples of `G`: a
/// layer whose type says otherwise does not compile. The kernel is PyTorch's layout,
/// `[C_OUT, C_IN / G, K]` row-major (a checkpoint stores it, then the `1 x C_OUT` bias), so
/// `conv.weight` and `conv.bias` of a PyTorch model load as they are
/// ([`from_pytorch`](Self::from_pytorch)).
///
/// ```
/// use safegrad::nn::{Build, Conv1d, Init, Module};
/// use safegrad::{Cap, Tape, Tensor};
///
/// // 2 channels of 8 samples, 4 filters of 3 taps, stride 2, padding 1: 4 x 4.
/// type Layer = Conv1d<2, 8, 4, 4, 3, 2, 1>;
/// let mut tape = Tape::<f32, Cap<8, 256>>::new();
/// let conv = Layer::build(&mut tape, &mut Init::new(1))?;
/// assert_eq!(conv.weight.len(), 4 * 2 * 3);
/// let x = tape.input(&Tensor::<f32, 2, 8>::full(1.0))?;
/// let y = conv.forward(&mut tape, x)?; // Var<4, 4>
/// let loss = tape.sum(y)?;
/// tape.backward(loss)?;
/// assert_eq!(tape.grad(conv.bias)?, Tensor::full(4.0)); // 4 outputs per filter
/// # Ok::<(), safegrad::TapeError>(())
/// ```
///
/// A wrong output length does not compile:
///
/// ```compile_fail
/// use safegrad::nn::{Build, Conv1d, Init, Module};
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<8, 256>>::new();
/// let conv = Conv1d::<2, 8, 4, 5, 3, 2, 1>::build(&mut tape, &mut Init::new(1)).unwrap();
/// let x = tape.input(&Tensor::<f32, 2, 8>::full(1.0)).unwrap();
/// let _ = conv.forward(&mut tape, x);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1d<
    const C_IN: usize,
    const L_IN: usize,
    const C_OUT: usize,
    const L_OUT: usize,
    const K: usize,
    const S: usize = 1,
    const P: usize = 0,
    const D: usize = 1,
    const G: usize = 1,
> {
    /// The kernel, `C_OUT x C_IN / G x K` (PyTorch's layout).
    pub weight: FlatVar,
    /// The bias, `1 x C_OUT`.
    pub bias: Var<1, C_OUT>,
}

/// A depthwise convolution (`groups = channels`): each of the `C` channels filtered by its
/// own kernel of `K` taps.
pub type DepthwiseConv1d<
    const C: usize,
    const L_IN: usize,
    const L_OUT: usize,
    const K: usize,
    const S: usize = 1,
    const P: usize = 0,
    const D: usize = 1,
> = Conv1d<C, L_IN, C, L_OUT, K, S, P, D, C>;

/// A pointwise convolution (kernel 1): a dense layer applied at every position.
pub type PointwiseConv1d<const C_IN: usize, const C_OUT: usize, const L: usize> =
    Conv1d<C_IN, L, C_OUT, L, 1>;

impl<
        const C_IN: usize,
        const L_IN: usize,
        const C_OUT: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const D: usize,
        const G: usize,
    > Conv1d<C_IN, L_IN, C_OUT, L_OUT, K, S, P, D, G>
{
    /// The geometry. Evaluating it checks the type's parameters: a layer whose output
    /// length or groups are wrong fails to compile here.
    #[allow(
        clippy::panic,
        reason = "evaluated at compile time: a wrong layer type fails the build"
    )]
    pub const SHAPE: &'static Conv1dShape = &{
        let shape = Conv1dShape::new(C_IN, L_IN, C_OUT, K, S, P, D, G);
        if let Some(problem) = shape.problem() {
            panic!("{}", problem);
        }
        assert!(
            shape.l_out == L_OUT,
            "L_OUT is not the output length (L_IN + 2P - D(K - 1) - 1) / S + 1"
        );
        shape
    };

    /// Records a layer with PyTorch's parameters: `weight` is `conv.weight` flattened
    /// (`[C_OUT, C_IN / G, K]` row-major), `bias` is `conv.bias`; trained as `train` says.
    /// [`TapeError::Length`] if a slice has the wrong length.
    pub fn from_pytorch<T: Scalar, Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        weight: &[T],
        bias: &[T],
        train: Train,
    ) -> Result<Self, TapeError> {
        let shape = Self::SHAPE;
        if weight.len() != shape.weights() || bias.len() != C_OUT {
            return Err(TapeError::Length {
                node: tape.nodes().len(),
                expected: shape.weights() + C_OUT,
                found: weight.len() + bias.len(),
            });
        }
        let w = tape.flat_parameter(C_OUT, shape.weights() / C_OUT, train == Train::All)?;
        tape.set_flat_parameter(w, weight)?;
        let b = Tensor::<T, 1, C_OUT>::from_slice(bias).unwrap_or_else(Tensor::zeros);
        let b = if train == Train::Frozen {
            tape.frozen_parameter(&b)?
        } else {
            tape.parameter(&b)?
        };
        Ok(Self { weight: w, bias: b })
    }
}

impl<
        const C_IN: usize,
        const L_IN: usize,
        const C_OUT: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const D: usize,
        const G: usize,
    > Footprint for Conv1d<C_IN, L_IN, C_OUT, L_OUT, K, S, P, D, G>
{
    const LAYERS: Layers = Layers::one(LayerShape {
        weights: Self::SHAPE.weights(),
        biases: C_OUT,
        fixed: 0,
        parameter_nodes: 2,
        planned: true,
        input: Some(C_IN * L_IN),
        output: Some(C_OUT * L_OUT),
        nodes: 1,
        after_weights: 1,
        after_biases: 1,
        grad_factor: 1,
        views: 0,
    });
}

impl<
        T: Scalar,
        const C_IN: usize,
        const L_IN: usize,
        const C_OUT: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const D: usize,
        const G: usize,
    > Build<T> for Conv1d<C_IN, L_IN, C_OUT, L_OUT, K, S, P, D, G>
{
    /// The kernel drawn from `init`'s scheme with PyTorch's fans (`fan_in = C_IN / G * K`,
    /// `fan_out = C_OUT * K`), the bias 0.
    fn build<Mem: Capacity>(
        tape: &mut Tape<T, Mem>,
        init: &mut Init<'_>,
    ) -> Result<Self, TapeError> {
        init.begin(1);
        let shape = Self::SHAPE;
        let train = init.next_train();
        let cols = shape.weights() / C_OUT;
        let weight = tape.flat_parameter(C_OUT, cols, train == Train::All)?;
        let bound = init.scheme.bound(shape.group_inputs() * K, C_OUT * K);
        let draw = init.scheme != InitScheme::Zeros;
        if tape.is_in_place_var(weight.node()) {
            // Read in place: the generator advances as if the kernel were drawn.
            if draw {
                for _ in 0..shape.weights() {
                    let _ = init.rng.uniform(-bound, bound);
                }
            }
        } else if draw {
            tape.fill_flat_parameter(weight, &mut |_| {
                T::from_f64(init.rng.uniform(-bound, bound))
            })?;
        }
        let bias = match train {
            Train::Frozen if tape.reads_frozen_in_place() => tape.frozen_parameter_in_place()?,
            Train::Frozen => tape.zero_parameter(false)?,
            _ => tape.zero_parameter(true)?,
        };
        Ok(Self { weight, bias })
    }
}

impl<
        T: Scalar,
        const C_IN: usize,
        const L_IN: usize,
        const C_OUT: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const D: usize,
        const G: usize,
    > Module<T, Var<C_IN, L_IN>> for Conv1d<C_IN, L_IN, C_OUT, L_OUT, K, S, P, D, G>
{
    type Output = Var<C_OUT, L_OUT>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<C_IN, L_IN>,
    ) -> Result<Var<C_OUT, L_OUT>, TapeError> {
        tape.conv1d(x, self.weight, self.bias, Self::SHAPE)
    }
}

/// Checks a pooling layer's type at compile time and gives its geometry.
#[allow(
    clippy::panic,
    reason = "evaluated at compile time: a wrong layer type fails the build"
)]
const fn pool_shape(
    channels: usize,
    l_in: usize,
    l_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Pool1dShape {
    let shape = Pool1dShape::new(channels, l_in, kernel, stride, padding, dilation);
    if let Some(problem) = shape.problem() {
        panic!("{}", problem);
    }
    assert!(
        shape.l_out == l_out,
        "L_OUT is not the output length (L_IN + 2P - D(K - 1) - 1) / S + 1"
    );
    shape
}

/// A layer without parameters of one node of `width` values per sample.
const fn pooling(width: usize) -> LayerShape {
    LayerShape {
        output: Some(width),
        ..LayerShape::elementwise(1)
    }
}

/// PyTorch's `nn.MaxPool1d(K, stride=S, padding=P, dilation=D)` (`ceil_mode=False`) on
/// `C x L_IN`, giving `C x L_OUT`; the first of equal maxima takes the gradient
/// ([`ops::pool`](crate::ops::pool)). The stride defaults to the kernel, as in PyTorch.
///
/// ```
/// use safegrad::nn::{MaxPool1d, Module};
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<8, 64>>::new();
/// let x = tape.variable(&Tensor::new([[1.0, 5.0, 5.0, 2.0, 7.0]]))?;
/// let y = MaxPool1d::<1, 5, 2, 2>.forward(&mut tape, x)?; // windows [1, 5], [5, 2]
/// assert_eq!(tape.value(y)?, Tensor::new([[5.0, 5.0]]));
/// let loss = tape.sum(y)?;
/// tape.backward(loss)?;
/// assert_eq!(tape.grad(x)?, Tensor::new([[0.0, 1.0, 1.0, 0.0, 0.0]]));
/// # Ok::<(), safegrad::TapeError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxPool1d<
    const C: usize,
    const L_IN: usize,
    const L_OUT: usize,
    const K: usize,
    const S: usize = K,
    const P: usize = 0,
    const D: usize = 1,
>;

impl<
        const C: usize,
        const L_IN: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const D: usize,
    > MaxPool1d<C, L_IN, L_OUT, K, S, P, D>
{
    /// The geometry, checked at compile time.
    pub const SHAPE: &'static Pool1dShape = &pool_shape(C, L_IN, L_OUT, K, S, P, D);
}

impl<
        const C: usize,
        const L_IN: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const D: usize,
    > Footprint for MaxPool1d<C, L_IN, L_OUT, K, S, P, D>
{
    const LAYERS: Layers = Layers::one(pooling(Self::SHAPE.channels * Self::SHAPE.l_out));
}

impl<
        T: Scalar,
        const C: usize,
        const L_IN: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const D: usize,
    > Build<T> for MaxPool1d<C, L_IN, L_OUT, K, S, P, D>
{
    fn build<Mem: Capacity>(_: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Self)
    }
}

impl<
        T: Scalar,
        const C: usize,
        const L_IN: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const D: usize,
    > Module<T, Var<C, L_IN>> for MaxPool1d<C, L_IN, L_OUT, K, S, P, D>
{
    type Output = Var<C, L_OUT>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<C, L_IN>,
    ) -> Result<Var<C, L_OUT>, TapeError> {
        tape.max_pool1d(x, Self::SHAPE)
    }
}

/// PyTorch's `nn.AvgPool1d(K, stride=S, padding=P)` (`ceil_mode=False`,
/// `count_include_pad=True`) on `C x L_IN`, giving `C x L_OUT`. The stride defaults to the
/// kernel.
///
/// ```
/// use safegrad::nn::{AvgPool1d, Module};
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<8, 64>>::new();
/// let x = tape.input(&Tensor::new([[1.0, 3.0, 5.0, 7.0]]))?;
/// let y = AvgPool1d::<1, 4, 2, 2>.forward(&mut tape, x)?;
/// assert_eq!(tape.value(y)?, Tensor::new([[2.0, 6.0]]));
/// # Ok::<(), safegrad::TapeError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AvgPool1d<
    const C: usize,
    const L_IN: usize,
    const L_OUT: usize,
    const K: usize,
    const S: usize = K,
    const P: usize = 0,
>;

impl<
        const C: usize,
        const L_IN: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
    > AvgPool1d<C, L_IN, L_OUT, K, S, P>
{
    /// The geometry, checked at compile time.
    pub const SHAPE: &'static Pool1dShape = &pool_shape(C, L_IN, L_OUT, K, S, P, 1);
}

impl<
        const C: usize,
        const L_IN: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
    > Footprint for AvgPool1d<C, L_IN, L_OUT, K, S, P>
{
    const LAYERS: Layers = Layers::one(pooling(Self::SHAPE.channels * Self::SHAPE.l_out));
}

impl<
        T: Scalar,
        const C: usize,
        const L_IN: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
    > Build<T> for AvgPool1d<C, L_IN, L_OUT, K, S, P>
{
    fn build<Mem: Capacity>(_: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Self)
    }
}

impl<
        T: Scalar,
        const C: usize,
        const L_IN: usize,
        const L_OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
    > Module<T, Var<C, L_IN>> for AvgPool1d<C, L_IN, L_OUT, K, S, P>
{
    type Output = Var<C, L_OUT>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<C, L_IN>,
    ) -> Result<Var<C, L_OUT>, TapeError> {
        tape.avg_pool1d(x, Self::SHAPE)
    }
}

/// Global average pooling of `C` channels of any length: `C x L` to `1 x C`, a row for a
/// dense head (PyTorch's `nn.AdaptiveAvgPool1d(1)` then `flatten`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalAvgPool1d<const C: usize>;

impl<const C: usize> Footprint for GlobalAvgPool1d<C> {
    const LAYERS: Layers = Layers::one(pooling(C));
}

impl<T: Scalar, const C: usize> Build<T> for GlobalAvgPool1d<C> {
    fn build<Mem: Capacity>(_: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        Ok(Self)
    }
}

impl<T: Scalar, const C: usize, const L: usize> Module<T, Var<C, L>> for GlobalAvgPool1d<C> {
    type Output = Var<1, C>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<C, L>,
    ) -> Result<Var<1, C>, TapeError> {
        tape.global_avg_pool(x)
    }
}

/// PyTorch's `nn.BatchNorm1d(C)` after `model.eval()`: each channel of a `C x L` input
/// normalised by frozen running statistics ([`ops::batch_norm`](crate::ops::batch_norm)).
/// The statistics are one frozen `4 x C` parameter (gamma, beta, running mean, running
/// variance; a checkpoint stores them in that order); they take no entry of the training
/// plan. Built, it is gamma 1, beta 0, mean 0, variance 1.
///
/// ```
/// use safegrad::nn::{BatchNorm1d, Build, Init, Module};
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f64, Cap<8, 64>>::new();
/// let bn = BatchNorm1d::<2>::build(&mut tape, &mut Init::new(1))?.with_eps(0.0);
/// // gamma, beta, mean, variance per channel
/// tape.set_parameter(bn.stats, &Tensor::new([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0], [4.0, 1.0]]))?;
/// let x = tape.input(&Tensor::new([[3.0, 5.0], [1.0, -1.0]]))?;
/// let y = bn.forward(&mut tape, x)?;
/// assert_eq!(tape.value(y)?, Tensor::new([[1.0, 2.0], [3.0, -1.0]]));
/// # Ok::<(), safegrad::TapeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm1d<const C: usize> {
    /// The statistics, `4 x C`: gamma, beta, running mean, running variance.
    pub stats: Var<4, C>,
    /// The guard inside the square root (PyTorch's default `1e-5`).
    pub eps: f64,
}

impl<const C: usize> BatchNorm1d<C> {
    /// The same layer with another epsilon.
    pub const fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
}

impl<const C: usize> Footprint for BatchNorm1d<C> {
    const LAYERS: Layers = Layers::one(LayerShape {
        fixed: 4 * C,
        parameter_nodes: 1,
        ..LayerShape::elementwise(1)
    });
}

impl<T: Scalar, const C: usize> Build<T> for BatchNorm1d<C> {
    fn build<Mem: Capacity>(tape: &mut Tape<T, Mem>, _: &mut Init<'_>) -> Result<Self, TapeError> {
        let stats = if tape.reads_frozen_in_place() {
            tape.frozen_parameter_in_place()?
        } else {
            let mut s = Tensor::<T, 4, C>::zeros();
            for (i, v) in s.as_mut_slice().iter_mut().enumerate() {
                // Rows 0 (gamma) and 3 (variance) start at 1.
                if i < C || i >= 3 * C {
                    *v = T::ONE;
                }
            }
            tape.frozen_parameter(&s)?
        };
        Ok(Self {
            stats,
            eps: DEFAULT_BATCH_NORM_EPS,
        })
    }
}

impl<T: Scalar, const C: usize, const L: usize> Module<T, Var<C, L>> for BatchNorm1d<C> {
    type Output = Var<C, L>;

    fn forward<Mem: Capacity>(
        &self,
        tape: &mut Tape<T, Mem>,
        x: Var<C, L>,
    ) -> Result<Var<C, L>, TapeError> {
        tape.batch_norm(x, self.stats, T::from_f64(self.eps))
    }
}
