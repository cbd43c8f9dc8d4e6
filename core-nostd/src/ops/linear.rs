//! Matrix products and fully connected layers: `matmul`, `linear` (`x W + b` as one node),
//! `linear_relu` (`max(x W + b, 0)` as one node) and `transpose`.
//!
//! Weights are `K x C` (inputs by outputs) and multiply from the right, `y = x W + b` for a
//! batch `x` of `R` rows of `K` features: row-major, the weights of output `j` are column
//! `j`. PyTorch's `nn.Linear` stores the transpose (`[out, in]`, `y = x W^T + b`);
//! [`nn::Linear::from_pytorch`](crate::nn::Linear::from_pytorch) converts.
//!
//! The kernels run each output in one fixed order, the same on every target
//! ([`crate::tensor::kernels`]): it starts from the bias and accumulates over `K`
//! in increasing order.

use super::OpFamily;
use crate::audit::Facts;
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::scalar::Scalar;
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};
use crate::tensor::kernels;

/// The matrix ops as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LinearOp {
    /// Matrix product `a * b`.
    MatMul {
        /// Left `R x K` operand.
        a: NodeId,
        /// Right `K x C` operand.
        b: NodeId,
    },
    /// A fully connected layer: `x * weight + bias`, the `1 x C` bias added to every row
    /// (one node for a matrix product and a broadcast addition).
    Linear {
        /// The `R x K` input.
        x: NodeId,
        /// The `K x C` weights.
        weight: NodeId,
        /// The `1 x C` bias.
        bias: NodeId,
    },
    /// A fully connected layer with a ReLU: `max(x * weight + bias, 0)`, one node. Its
    /// gradient buffer holds, after the gradient of its output, that of the pre-activation
    /// (the output's where the output is positive, else 0), from which its inputs' follow.
    LinearRelu {
        /// The `R x K` input.
        x: NodeId,
        /// The `K x C` weights.
        weight: NodeId,
        /// The `1 x C` bias.
        bias: NodeId,
    },
    /// Transpose.
    Transpose {
        /// Operand.
        x: NodeId,
    },
}

impl LinearOp {
    /// `(x, weight, bias)` of a fully connected layer.
    pub const fn layer_inputs(&self) -> Option<(NodeId, NodeId, NodeId)> {
        match *self {
            Self::Linear { x, weight, bias } | Self::LinearRelu { x, weight, bias } => {
                Some((x, weight, bias))
            }
            _ => None,
        }
    }
}

// -- formulas -------------------------------------------------------------------------------

/// Adds `g * b^T` to `grad_a`, the gradient of `a` in `out = a (rows x inner) * b
/// (inner x cols)`. A zero `g[i][j]` contributes nothing (strong zero), whatever `b` holds.
pub fn matmul_grad_a<T: Scalar>(g: &[T], b: &[T], grad_a: &mut [T], inner: usize, cols: usize) {
    kernels::add_matmul_grad_a(g, b, grad_a, inner, cols);
}

/// Adds `a^T * g` to `grad_b`, the gradient of `b` in `out = a (rows x inner) * b
/// (inner x cols)`. A zero `g[i][j]` contributes nothing (strong zero), whatever `a` holds.
pub fn matmul_grad_b<T: Scalar>(g: &[T], a: &[T], grad_b: &mut [T], inner: usize, cols: usize) {
    kernels::add_matmul_grad_b(g, a, grad_b, inner, cols);
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// Matrix product `a (R x K) * b (K x C)`.
    ///
    /// ```compile_fail
    /// use safegrad::{Cap, Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, Cap<8, 64>>::new();
    /// let a = tape.input(&Tensor::<f32, 2, 3>::zeros()).unwrap();
    /// let b = tape.input(&Tensor::<f32, 2, 3>::zeros()).unwrap();
    /// let _ = tape.matmul(a, b); // inner dimensions 3 and 2 differ
    /// ```
    pub fn matmul<const R: usize, const K: usize, const C: usize>(
        &mut self,
        a: Var<R, K>,
        b: Var<K, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Linear(LinearOp::MatMul {
            a: a.node(),
            b: b.node(),
        });
        self.record2(op, a, b, |a, b, out| kernels::matmul(a, b, out, K, C))
    }

    /// A fully connected layer, `x (R x K) * weight (K x C) + bias`, the `1 x C` bias added
    /// to every row: one node (what [`nn::Linear`](crate::nn::Linear) records). Each output
    /// starts from its bias and accumulates over `K` in increasing order.
    ///
    /// ```
    /// use safegrad::{Cap, Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, Cap<8, 32>>::new();
    /// let w = tape.parameter(&Tensor::new([[1.0, 2.0], [3.0, 4.0]]))?;
    /// let b = tape.parameter(&Tensor::new([[0.5, -0.5]]))?;
    /// let x = tape.input(&Tensor::new([[1.0, 1.0]]))?;
    /// let y = tape.linear(x, w, b)?;
    /// assert_eq!(tape.value(y)?, Tensor::new([[4.5, 5.5]]));
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn linear<const R: usize, const K: usize, const C: usize>(
        &mut self,
        x: Var<R, K>,
        weight: Var<K, C>,
        bias: Var<1, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Linear(LinearOp::Linear {
            x: x.node(),
            weight: weight.node(),
            bias: bias.node(),
        });
        self.record3(op, x, weight, bias, |x, w, b, out| {
            kernels::linear(x, w, Some(b), out, K, C);
        })
    }

    /// A fully connected layer with a ReLU, `max(x (R x K) * weight (K x C) + bias, 0)`, as one
    /// node (what [`nn::LinearRelu`](crate::nn::LinearRelu) records): the same values and
    /// gradients as [`linear`](Self::linear) followed by [`relu`](Self::relu), without the
    /// pre-activation's values or a second node. Its gradient slots hold the output's
    /// gradient and then the pre-activation's (so it takes `2 R C` of them).
    ///
    /// ```
    /// use safegrad::{Cap, Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, Cap<8, 32>>::new();
    /// let w = tape.parameter(&Tensor::new([[1.0, -2.0], [3.0, 4.0]]))?;
    /// let b = tape.parameter(&Tensor::new([[0.5, -5.5]]))?;
    /// let x = tape.input(&Tensor::new([[1.0, 1.0]]))?;
    /// let y = tape.linear_relu(x, w, b)?;
    /// assert_eq!(tape.value(y)?, Tensor::new([[4.5, 0.0]]));
    /// let loss = tape.sum(y)?;
    /// tape.backward(loss)?;
    /// assert_eq!(tape.grad(w)?, Tensor::new([[1.0, 0.0], [1.0, 0.0]]));
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn linear_relu<const R: usize, const K: usize, const C: usize>(
        &mut self,
        x: Var<R, K>,
        weight: Var<K, C>,
        bias: Var<1, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Linear(LinearOp::LinearRelu {
            x: x.node(),
            weight: weight.node(),
            bias: bias.node(),
        });
        self.record3(op, x, weight, bias, |x, w, b, out| {
            kernels::linear_relu(x, w, Some(b), out, K, C);
        })
    }

    /// Transpose.
    pub fn transpose<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<C, R>, TapeError> {
        let op = Op::Linear(LinearOp::Transpose { x: x.node() });
        self.record1(op, x, |x, out| kernels::transpose(x, out, R, C))
    }
}

// -- backward and audit ---------------------------------------------------------------------

/// The backward of a fully connected node: its input's gradient, and its parameters' unless
/// the sweep defers them.
fn layer_backward<T: Scalar>(
    b: &mut Backward<'_, '_, T>,
    (x, weight, bias): (NodeId, NodeId, NodeId),
) {
    let inner = b.input(x).map_or(0, |n| n.shape().1);
    let cols = b.node().shape().1;
    let out_grad = b.out_grad_slots();
    // The gradient the inputs' follow from: the output's, or for a fused ReLU the
    // pre-activation's, written after it (the output's where the output is positive, else 0).
    let from = match b.node().input_grad_slots() {
        Some(pre) if pre != out_grad => {
            let y = b.output();
            let (before, after) = b.split_at(pre.start);
            let g = before.get(out_grad).unwrap_or(&[]);
            kernels::relu_mask(g, y, after.get_mut(..pre.len()).unwrap_or(&mut []));
            pre
        }
        _ => out_grad,
    };
    let (xv, wv) = (b.value(x), b.value(weight));
    let defer = b.defer();
    let (g_out, g_x) = b.split_from(&from, x);
    kernels::add_matmul_grad_a(g_out, wv, g_x, inner, cols);
    if !defer.weight {
        let (g_out, g_w) = b.split_from(&from, weight);
        kernels::add_matmul_grad_b(g_out, xv, g_w, inner, cols);
    }
    if !defer.bias {
        let (g_out, g_b) = b.split_from(&from, bias);
        kernels::add_column_sums(g_out, g_b);
    }
}

impl<T: Scalar> OpFamily<T> for LinearOp {
    fn name(&self) -> &'static str {
        match self {
            Self::MatMul { .. } => "matmul",
            Self::Linear { .. } => "linear",
            Self::LinearRelu { .. } => "linear_relu",
            Self::Transpose { .. } => "transpose",
        }
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Self::MatMul { a, b } => [Some(a), Some(b), None],
            Self::Linear { x, weight, bias } | Self::LinearRelu { x, weight, bias } => {
                [Some(x), Some(weight), Some(bias)]
            }
            Self::Transpose { x } => [Some(x), None, None],
        }
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        match *self {
            Self::Linear { x, weight, bias } | Self::LinearRelu { x, weight, bias } => {
                layer_backward(b, (x, weight, bias));
            }
            Self::MatMul { a, b: c } => {
                let inner = b.input(a).map_or(0, |n| n.shape().1);
                let cols = b.node().shape().1;
                let (av, cv) = (b.value(a), b.value(c));
                let (g_out, g_a) = b.split(a);
                matmul_grad_a(g_out, cv, g_a, inner, cols);
                let (g_out, g_c) = b.split(c);
                matmul_grad_b(g_out, av, g_c, inner, cols);
            }
            Self::Transpose { x } => {
                // The output is `cols x rows` of x; out[c][r] = x[r][c].
                let (x_rows, x_cols) = (b.node().shape().1, b.node().shape().0);
                let (g_out, g_x) = b.split(x);
                if x_cols > 0 {
                    for (r, g_row) in g_x.chunks_exact_mut(x_cols).enumerate().take(x_rows) {
                        for (c, gx) in g_row.iter_mut().enumerate() {
                            *gx += g_out.get(c * x_rows + r).copied().unwrap_or(T::ZERO);
                        }
                    }
                }
            }
        }
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let d = |id| facts.domain(id);
        match *self {
            Self::MatMul { a, b } => {
                let (a, b) = (d(a), d(b));
                Domain {
                    finite: a.finite && b.finite,
                    non_negative: a.non_negative && b.non_negative,
                    non_zero: false,
                }
            }
            Self::Linear { x, weight, bias } => {
                let (x, w, b) = (d(x), d(weight), d(bias));
                let non_negative = x.non_negative && w.non_negative && b.non_negative;
                Domain {
                    finite: x.finite && w.finite && b.finite,
                    non_negative,
                    non_zero: non_negative && b.is_positive(),
                }
            }
            Self::LinearRelu { x, weight, bias } => Domain {
                finite: d(x).finite && d(weight).finite && d(bias).finite,
                non_negative: true,
                non_zero: false,
            },
            Self::Transpose { x } => d(x),
        }
    }
}
