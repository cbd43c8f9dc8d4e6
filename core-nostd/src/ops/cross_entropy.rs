//! The softmax of each row, and the softmax cross-entropy loss in its stable form
//! `ln(sum(exp(z - m))) - (z_t - m)`, `m = max(z)` held constant: finite for logits of any
//! finite size.
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f32, Cap<8, 32>>::new();
//! let z = tape.variable(&Tensor::new([[1e4, -1e4]]))?;
//! let loss = tape.softmax_cross_entropy(z, &[1])?;
//! tape.backward(loss)?;
//! assert_eq!(tape.scalar(loss)?, 2e4); // no overflow
//! assert_eq!(tape.grad(z)?, Tensor::new([[1.0, -1.0]])); // softmax - onehot
//!
//! let p = tape.softmax(z)?;
//! assert_eq!(tape.value(p)?, Tensor::new([[1.0, 0.0]]));
//! # Ok::<(), safegrad::TapeError>(())
//! ```

use super::select::column_of;
use super::OpFamily;
use crate::audit::Facts;
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::scalar::{strong_mul, Scalar};
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};
use crate::tensor::{kernels, Tensor};

/// The softmax ops as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CrossEntropyOp {
    /// The softmax of each row, `exp(x - m) / sum(exp(x - m))`, `m = max(x)`.
    Softmax {
        /// Operand.
        x: NodeId,
    },
    /// Mean over rows of the stable softmax cross-entropy, a `1 x 1` node. Its value is
    /// followed in the tape's buffer by the softmax of each row of the logits, which its
    /// backward reads.
    SoftmaxCrossEntropy {
        /// `R x C` logits.
        logits: NodeId,
        /// `R x 1` constant node holding the class of each row.
        targets: NodeId,
    },
}

// -- formulas -------------------------------------------------------------------------------

/// The softmax of one row, `exp(z - m) / sum(exp(z - m))` with `m = max(z)`, into `out`.
pub fn softmax<T: Scalar>(z: &[T], out: &mut [T]) {
    let m = kernels::max(z);
    let mut s = T::ZERO;
    for (p, &v) in out.iter_mut().zip(z) {
        let e = (v - m).exp();
        *p = e;
        s += e;
    }
    for p in out.iter_mut() {
        *p = *p / s;
    }
}

/// Gradient of [`softmax`] for one row from its output `y`: adds `y * (g - sum(g * y))` to
/// `grad`. A row whose upstream gradient is all zero contributes exactly zero.
pub fn softmax_grad<T: Scalar>(g: &[T], y: &[T], grad: &mut [T]) {
    let dot = g
        .iter()
        .zip(y)
        .fold(T::ZERO, |acc, (&gv, &yv)| acc + strong_mul(gv, yv));
    for ((d, &gv), &yv) in grad.iter_mut().zip(g).zip(y) {
        *d += strong_mul(gv - dot, yv);
    }
}

/// Softmax cross-entropy of one row of logits `z` against class `target`, in the stable form
/// `ln(sum(exp(z - m))) - (z_t - m)` with `m = max(z)` held constant. `None` when `target`
/// is not a column of the row.
///
/// ```
/// use safegrad::ops::softmax_cross_entropy;
///
/// let tied = softmax_cross_entropy(&[1e4f32, 1e4], 0).unwrap();
/// assert!((tied - core::f32::consts::LN_2).abs() < 1e-6);
/// assert_eq!(softmax_cross_entropy(&[1e4f32, -1e4], 1), Some(2e4));
/// ```
pub fn softmax_cross_entropy<T: Scalar>(z: &[T], target: usize) -> Option<T> {
    let z_t = *z.get(target)?;
    let m = kernels::max(z);
    let s = z.iter().fold(T::ZERO, |acc, &v| acc + (v - m).exp());
    Some(s.ln() - (z_t - m))
}

/// [`softmax_cross_entropy`] that also writes `softmax(z)` (`exp(z - m) / sum`) to
/// `probabilities`, for [`softmax_cross_entropy_grad_from`].
///
/// ```
/// use safegrad::ops::{softmax_cross_entropy, softmax_cross_entropy_with_softmax};
///
/// let mut p = [0.0f32; 3];
/// let loss = softmax_cross_entropy_with_softmax(&[1.0, 2.0, 3.0], 2, &mut p);
/// assert_eq!(loss, softmax_cross_entropy(&[1.0, 2.0, 3.0], 2));
/// assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// ```
pub fn softmax_cross_entropy_with_softmax<T: Scalar>(
    z: &[T],
    target: usize,
    probabilities: &mut [T],
) -> Option<T> {
    let z_t = *z.get(target)?;
    let m = kernels::max(z);
    let mut s = T::ZERO;
    for (p, &v) in probabilities.iter_mut().zip(z) {
        let e = (v - m).exp();
        *p = e;
        s += e;
    }
    for p in probabilities.iter_mut() {
        *p = *p / s;
    }
    Some(s.ln() - (z_t - m))
}

/// [`softmax_cross_entropy_grad`] from the softmax [`softmax_cross_entropy_with_softmax`]
/// wrote: adds `g * (p - onehot(t))` to `grad`.
pub fn softmax_cross_entropy_grad_from<T: Scalar>(
    g: T,
    probabilities: &[T],
    target: usize,
    grad: &mut [T],
) {
    for (j, (d, &p)) in grad.iter_mut().zip(probabilities).enumerate() {
        let local = if j == target { p - T::ONE } else { p };
        *d += strong_mul(g, local);
    }
}

/// Gradient of [`softmax_cross_entropy`] for one row: adds `g * (softmax(z) - onehot(t))`
/// to `grad`.
pub fn softmax_cross_entropy_grad<T: Scalar>(g: T, z: &[T], target: usize, grad: &mut [T]) {
    let m = kernels::max(z);
    // The exponentials are kept for the second pass when the row is short (the usual number
    // of classes), and computed again otherwise: the same values either way.
    let mut kept = [T::ZERO; EXP_KEPT];
    let s = z.iter().enumerate().fold(T::ZERO, |acc, (j, &v)| {
        let e = (v - m).exp();
        if let Some(k) = kept.get_mut(j) {
            *k = e;
        }
        acc + e
    });
    for (j, (d, &v)) in grad.iter_mut().zip(z).enumerate() {
        let e = match kept.get(j) {
            Some(&e) if z.len() <= EXP_KEPT => e,
            _ => (v - m).exp(),
        };
        let p = e / s;
        let local = if j == target { p - T::ONE } else { p };
        *d += strong_mul(g, local);
    }
}

/// Classes whose exponentials [`softmax_cross_entropy_grad`] keeps between its two passes.
const EXP_KEPT: usize = 16;

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// The softmax of each row, `exp(x - m) / sum(exp(x - m))` with `m` the row's largest
    /// value (PyTorch's `x.softmax(dim=1)`).
    pub fn softmax<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::CrossEntropy(CrossEntropyOp::Softmax { x: x.node() });
        self.record1(op, x, |xv, out| {
            if C > 0 {
                for (row, p) in xv.chunks_exact(C).zip(out.chunks_exact_mut(C)) {
                    softmax(row, p);
                }
            }
        })
    }

    /// Mean over the `R` rows of the softmax cross-entropy of each row of `logits` against
    /// its class in `targets`, in the stable form `ln(sum(exp(z - m))) - (z_t - m)`.
    /// A label outside `0..C` is rejected before anything is recorded.
    pub fn softmax_cross_entropy<const R: usize, const C: usize>(
        &mut self,
        logits: Var<R, C>,
        targets: &[usize; R],
    ) -> Result<Var<1, 1>, TapeError> {
        let with_grad = self.resolve(logits)?.requires_grad();
        if let Some((row, &label)) = targets.iter().enumerate().find(|(_, &t)| t >= C) {
            return Err(TapeError::LabelOutOfRange {
                row,
                label,
                classes: C,
            });
        }
        // Labels are recorded as a constant node (class indices are exact in f32 up to
        // 2^24), followed by the loss node, whose value is followed by the softmax of each
        // row (`R * C` values its backward reads instead of computing the exponentials again).
        self.ensure_room(2, R + 1 + R * C, usize::from(with_grad))?;
        let labels = Tensor::<T, R, 1>::from_fn(|r, _| {
            T::from_usize(targets.get(r).copied().unwrap_or_default())
        });
        let t = self.constant(&labels)?;
        let op = Op::CrossEntropy(CrossEntropyOp::SoftmaxCrossEntropy {
            logits: logits.node(),
            targets: t.node(),
        });
        self.record_with_kept(op, logits, R * C, |zv, out| {
            let (loss, probabilities) = out.split_at_mut(1);
            let mut total = T::ZERO;
            if C > 0 {
                let rows = zv.chunks_exact(C).zip(probabilities.chunks_exact_mut(C));
                for ((row, p), &target) in rows.zip(targets) {
                    total += softmax_cross_entropy_with_softmax(row, target, p).unwrap_or(T::ZERO);
                }
            }
            loss.fill(total / T::from_usize(R));
        })
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for CrossEntropyOp {
    fn name(&self) -> &'static str {
        match self {
            Self::Softmax { .. } => "softmax",
            Self::SoftmaxCrossEntropy { .. } => "softmax_cross_entropy",
        }
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Self::Softmax { x } => [Some(x), None, None],
            Self::SoftmaxCrossEntropy { logits, targets } => [Some(logits), Some(targets), None],
        }
    }

    fn differentiable_inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Self::Softmax { x } => [Some(x), None, None],
            Self::SoftmaxCrossEntropy { logits, .. } => [Some(logits), None, None],
        }
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        match *self {
            Self::Softmax { x } => {
                let cols = b.node().shape().1;
                let y = b.output();
                let (g_out, g_x) = b.split(x);
                if cols > 0 {
                    let rows = g_out.chunks_exact(cols).zip(y.chunks_exact(cols));
                    for ((g_row, y_row), gx_row) in rows.zip(g_x.chunks_exact_mut(cols)) {
                        softmax_grad(g_row, y_row, gx_row);
                    }
                }
            }
            Self::SoftmaxCrossEntropy { logits, targets } => {
                let (rows, cols) = b.input(logits).map_or((0, 0), |n| n.shape());
                let (zv, tv) = (b.value(logits), b.value(targets));
                // The forward left the softmax of each row after the loss value.
                let offset = b.node().slots().start;
                let softmax = b.values_at(offset + 1..offset + 1 + rows * cols);
                let (g_out, g_z) = b.split(logits);
                let g = g_out.first().copied().unwrap_or(T::ZERO);
                let g = strong_mul(g, T::ONE / T::from_usize(rows));
                if cols > 0 {
                    // Rows taken off the front: no division by a run-time length.
                    let mut p_rows = kernels::rows(softmax.unwrap_or(&[]), cols);
                    let per_row = kernels::rows_mut(g_z, cols).zip(kernels::rows(zv, cols));
                    for ((g_row, z_row), &t) in per_row.zip(tv) {
                        let target = column_of(t, cols).unwrap_or(cols);
                        match p_rows.next() {
                            Some(p) => softmax_cross_entropy_grad_from(g, p, target, g_row),
                            None => softmax_cross_entropy_grad(g, z_row, target, g_row),
                        }
                    }
                }
            }
        }
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        match *self {
            // Probabilities; one can underflow to 0.
            Self::Softmax { x } => Domain {
                finite: facts.domain(x).finite,
                non_negative: true,
                non_zero: false,
            },
            Self::SoftmaxCrossEntropy { logits, .. } => Domain {
                finite: facts.domain(logits).finite,
                non_negative: true,
                non_zero: false,
            },
        }
    }
}
