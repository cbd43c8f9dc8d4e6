//! Reductions: `sum` and `mean` of every value (a `1 x 1` node), and per row the largest
//! value (`row_max`) and the stable `log_sum_exp` (`R x 1` nodes).
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f32, Cap<8, 32>>::new();
//! let x = tape.variable(&Tensor::new([[1.0, 3.0, 3.0], [-2.0, -5.0, -1.0]]))?;
//! let m = tape.row_max(x)?;
//! let loss = tape.sum(m)?;
//! tape.backward(loss)?;
//! assert_eq!(tape.value(m)?, Tensor::new([[3.0], [-1.0]]));
//! // The gradient goes to the first largest value of each row.
//! assert_eq!(tape.grad(x)?, Tensor::new([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]));
//! # Ok::<(), safegrad::TapeError>(())
//! ```

use super::OpFamily;
use crate::audit::Facts;
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::scalar::{strong_mul, Scalar};
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};
use crate::tensor::kernels;

/// The reductions as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReduceOp {
    /// Sum of all values, a `1 x 1` node.
    Sum {
        /// Operand.
        x: NodeId,
    },
    /// Mean of all values, a `1 x 1` node.
    Mean {
        /// Operand.
        x: NodeId,
    },
    /// Largest value of each row, an `R x 1` node.
    RowMax {
        /// Operand.
        x: NodeId,
    },
    /// Stable log-sum-exp of each row, an `R x 1` node.
    LogSumExp {
        /// Operand.
        x: NodeId,
    },
}

impl ReduceOp {
    /// The operand.
    pub const fn operand(&self) -> NodeId {
        match *self {
            Self::Sum { x } | Self::Mean { x } | Self::RowMax { x } | Self::LogSumExp { x } => x,
        }
    }
}

// -- formulas -------------------------------------------------------------------------------

/// Stable log-sum-exp of one row: `m + ln(sum(exp(x - m)))` with `m = max(x)` held
/// constant. `-inf` for an empty row or a row of `-inf`; `nan` if any value is `nan`.
pub fn log_sum_exp<T: Scalar>(row: &[T]) -> T {
    let m = kernels::max(row);
    if !m.is_finite() {
        return m;
    }
    let s = row.iter().fold(T::ZERO, |acc, &v| acc + (v - m).exp());
    m + s.ln()
}

/// Gradient of [`log_sum_exp`] for one row: adds `g * softmax(row)` to `grad`, with the
/// softmax computed as `exp(x - m) / sum(exp(x - m))` from the same `m = max(row)` as the
/// forward (not from the rounded log-sum-exp, which loses digits at large logits).
pub fn log_sum_exp_grad<T: Scalar>(g: T, row: &[T], grad: &mut [T]) {
    let m = kernels::max(row);
    let s = row.iter().fold(T::ZERO, |acc, &v| acc + (v - m).exp());
    for (d, &v) in grad.iter_mut().zip(row) {
        *d += strong_mul(g, (v - m).exp() / s);
    }
}

/// The position of the largest value of a row, the first on ties, `nan` winning (the lane
/// [`Tape::row_max`] takes its value from); `None` for an empty row.
pub fn row_argmax<T: Scalar>(row: &[T]) -> Option<usize> {
    let m = kernels::max(row);
    row.iter()
        .position(|&v| v == m || (m.is_nan() && v.is_nan()))
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// Sum of all values.
    pub fn sum<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<1, 1>, TapeError> {
        let op = Op::Reduce(ReduceOp::Sum { x: x.node() });
        self.record1(op, x, |x, out| out.fill(kernels::sum(x)))
    }

    /// Mean of all values.
    pub fn mean<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<1, 1>, TapeError> {
        let n = T::from_usize(R * C);
        let op = Op::Reduce(ReduceOp::Mean { x: x.node() });
        self.record1(op, x, |x, out| out.fill(kernels::sum(x) / n))
    }

    /// The largest value of each row, `nan` if the row holds one (PyTorch's
    /// `x.amax(dim=1, keepdim=True)`); its gradient goes to the first largest value.
    pub fn row_max<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, 1>, TapeError> {
        let op = Op::Reduce(ReduceOp::RowMax { x: x.node() });
        self.record1(op, x, |xv, out| {
            if C == 0 {
                out.fill(T::NEG_INFINITY);
                return;
            }
            for (o, row) in out.iter_mut().zip(xv.chunks_exact(C)) {
                *o = kernels::max(row);
            }
        })
    }

    /// Stable log-sum-exp of each row.
    pub fn log_sum_exp<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, 1>, TapeError> {
        let op = Op::Reduce(ReduceOp::LogSumExp { x: x.node() });
        self.record1(op, x, |xv, out| {
            if C == 0 {
                out.fill(T::NEG_INFINITY);
                return;
            }
            for (o, row) in out.iter_mut().zip(xv.chunks_exact(C)) {
                *o = log_sum_exp(row);
            }
        })
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for ReduceOp {
    fn name(&self) -> &'static str {
        match self {
            Self::Sum { .. } => "sum",
            Self::Mean { .. } => "mean",
            Self::RowMax { .. } => "row_max",
            Self::LogSumExp { .. } => "log_sum_exp",
        }
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        [Some(self.operand()), None, None]
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        let x = self.operand();
        let (len, cols) = b.input(x).map_or((1, 0), |n| (n.len(), n.shape().1));
        let xv = b.value(x);
        match self {
            Self::Sum { .. } | Self::Mean { .. } => {
                let is_mean = matches!(self, Self::Mean { .. });
                let (g_out, g_x) = b.split(x);
                let g = g_out.first().copied().unwrap_or(T::ZERO);
                let g = if is_mean {
                    strong_mul(g, T::ONE / T::from_usize(len))
                } else {
                    g
                };
                g_x.iter_mut().for_each(|gx| *gx += g);
            }
            Self::RowMax { .. } => {
                let (g_out, g_x) = b.split(x);
                if cols > 0 {
                    let rows = g_x.chunks_exact_mut(cols).zip(xv.chunks_exact(cols));
                    for ((g_row, x_row), &g) in rows.zip(g_out) {
                        if let Some(d) = row_argmax(x_row).and_then(|j| g_row.get_mut(j)) {
                            *d += g;
                        }
                    }
                }
            }
            Self::LogSumExp { .. } => {
                let (g_out, g_x) = b.split(x);
                if cols > 0 {
                    let rows = g_x.chunks_exact_mut(cols).zip(xv.chunks_exact(cols));
                    for ((g_row, x_row), &g) in rows.zip(g_out) {
                        log_sum_exp_grad(g, x_row, g_row);
                    }
                }
            }
        }
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let x = facts.domain(self.operand());
        match self {
            Self::Sum { .. } | Self::Mean { .. } => Domain {
                finite: x.finite,
                non_negative: x.non_negative,
                non_zero: x.is_positive(),
            },
            // One of the row's values.
            Self::RowMax { .. } => x,
            Self::LogSumExp { .. } => Domain::finite_if(x.finite),
        }
    }
}
