//! Layer normalisation of each row, `(x - mean) / sqrt(var + eps)`, with the variance
//! computed in two passes (the mean first, then the mean of squared deviations), so that it
//! is never negative and the square root is always of a value of at least `eps`.
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f64, Cap<8, 32>>::new();
//! let x = tape.variable(&Tensor::new([[1.0, 2.0, 3.0]]))?;
//! let y = tape.layer_norm_eps(x, 0.0)?;
//! let v = tape.value(y)?;
//! assert!((v.get(0, 2).unwrap() - 1.5f64.sqrt()).abs() < 1e-12); // (3 - 2) / sqrt(2/3)
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

/// Layer normalisation as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LayerNormOp<T> {
    /// Normalisation of each row: `(x - mean) / sqrt(var + eps)`.
    LayerNorm {
        /// Operand.
        x: NodeId,
        /// The guard inside the square root.
        eps: T,
    },
}

/// The epsilon of [`Tape::layer_norm`], `1e-5` (PyTorch's and TorchLean's).
pub const DEFAULT_LAYER_NORM_EPS: f64 = 1e-5;

// -- formulas -------------------------------------------------------------------------------

/// Normalises one row: `y = (x - mean) / sqrt(var + eps)`, with the mean and then the
/// variance `mean((x - mean)^2)` computed in two passes. Writes `y` and returns
/// `1 / sqrt(var + eps)`.
///
/// ```
/// use safegrad::ops::layer_norm;
///
/// let mut y = [0.0f64; 4];
/// layer_norm(&[2.0, 2.0, 2.0, 2.0], 1e-5, &mut y); // a constant row
/// assert_eq!(y, [0.0; 4]);
/// ```
pub fn layer_norm<T: Scalar>(row: &[T], eps: T, y: &mut [T]) -> T {
    let (mean, inv_std) = mean_and_inv_std(row, eps);
    for (o, &v) in y.iter_mut().zip(row) {
        *o = (v - mean) * inv_std;
    }
    inv_std
}

/// The mean of a row and `1 / sqrt(var + eps)`, the variance computed in two passes.
pub fn mean_and_inv_std<T: Scalar>(row: &[T], eps: T) -> (T, T) {
    let n = T::from_usize(row.len());
    let mean = kernels::sum(row) / n;
    let var = row.iter().fold(T::ZERO, |acc, &v| {
        let d = v - mean;
        acc + d * d
    }) / n;
    (mean, T::ONE / (var + eps).sqrt())
}

/// Gradient of [`layer_norm`] for one row from its output `y` and `inv_std`: adds
/// `inv_std * (g - mean(g) - y * mean(g * y))` to `grad`. A row whose upstream gradient is
/// all zero contributes exactly zero.
pub fn layer_norm_grad<T: Scalar>(g: &[T], y: &[T], inv_std: T, grad: &mut [T]) {
    if g.iter().all(|&v| v == T::ZERO) {
        return;
    }
    let n = T::from_usize(g.len());
    let mean_g = kernels::sum(g) / n;
    let mean_gy = g
        .iter()
        .zip(y)
        .fold(T::ZERO, |acc, (&gv, &yv)| acc + strong_mul(gv, yv))
        / n;
    for ((d, &gv), &yv) in grad.iter_mut().zip(g).zip(y) {
        *d += inv_std * (gv - mean_g - yv * mean_gy);
    }
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// Normalises each row to zero mean and unit variance, `(x - mean) / sqrt(var + eps)`,
    /// with [`DEFAULT_LAYER_NORM_EPS`] (`1e-5`, TorchLean's and PyTorch's).
    pub fn layer_norm<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.layer_norm_eps(x, T::from_f64(DEFAULT_LAYER_NORM_EPS))
    }

    /// [`layer_norm`](Self::layer_norm) with a chosen epsilon.
    pub fn layer_norm_eps<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::LayerNorm(LayerNormOp::LayerNorm { x: x.node(), eps });
        self.record1(op, x, |xv, out| {
            if C > 0 {
                for (x_row, y_row) in xv.chunks_exact(C).zip(out.chunks_exact_mut(C)) {
                    layer_norm(x_row, eps, y_row);
                }
            }
        })
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for LayerNormOp<T> {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        let Self::LayerNorm { x, .. } = *self;
        [Some(x), None, None]
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        let Self::LayerNorm { x, eps } = *self;
        let cols = b.node().shape().1;
        let (xv, y) = (b.value(x), b.output());
        let (g_out, g_x) = b.split(x);
        if cols > 0 {
            let rows = g_out
                .chunks_exact(cols)
                .zip(xv.chunks_exact(cols))
                .zip(g_x.chunks_exact_mut(cols).zip(y.chunks_exact(cols)));
            for ((g_row, x_row), (gx_row, y_row)) in rows {
                let (_, inv_std) = mean_and_inv_std(x_row, eps);
                layer_norm_grad(g_row, y_row, inv_std, gx_row);
            }
        }
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let Self::LayerNorm { x, .. } = *self;
        Domain::finite_if(facts.domain(x).finite)
    }
}
