//! Batch normalisation in evaluation mode, with frozen running statistics, as PyTorch's
//! `nn.BatchNorm1d` computes it after `model.eval()`: for channel (row) `c`,
//!
//! ```text
//! alpha = gamma[c] / sqrt(var[c] + eps)        (as 1 / sqrt(var + eps), times gamma)
//! y     = x * alpha + (beta[c] - mean[c] * alpha)
//! ```
//!
//! The statistics are one `4 x C` frozen parameter, rows `gamma`, `beta`, running mean,
//! running variance. Only `x` takes a gradient, `g * alpha`. [`fold_into_conv`] folds the
//! normalisation into the convolution before it.
//!
//! ```
//! use safegrad::ops::batch_norm::batch_norm;
//!
//! // gamma 2, beta 1, mean 3, var 4, eps 0: y = (x - 3) / 2 * 2 + 1.
//! let mut y = [0.0f64; 2];
//! batch_norm(&[5.0, 7.0], 2, &[2.0, 1.0, 3.0, 4.0], 0.0, &mut y);
//! assert_eq!(y, [3.0, 5.0]);
//! ```

use super::OpFamily;
use crate::audit::{Facts, FindingKind, Severity, Unproven};
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::ops::conv::Conv1dShape;
use crate::scalar::{strong_mul, Scalar};
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};

/// Batch normalisation as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BatchNormOp<T> {
    /// Evaluation-mode batch normalisation of each row of `x`.
    Frozen {
        /// The `C x L` input.
        x: NodeId,
        /// The `4 x C` statistics: gamma, beta, running mean, running variance.
        stats: NodeId,
        /// The guard inside the square root.
        eps: T,
    },
}

/// PyTorch's default epsilon of `nn.BatchNorm1d`, `1e-5`.
pub const DEFAULT_BATCH_NORM_EPS: f64 = 1e-5;

// -- formulas -------------------------------------------------------------------------------

/// The scale and shift of channel `c` of `channels` from the statistics (`4 x channels`,
/// row-major): `alpha = gamma / sqrt(var + eps)` and `beta - mean * alpha`.
pub fn channel_affine<T: Scalar>(stats: &[T], channels: usize, c: usize, eps: T) -> (T, T) {
    let at = |row: usize| stats.get(row * channels + c).copied().unwrap_or(T::ZERO);
    let (gamma, beta, mean, var) = (at(0), at(1), at(2), at(3));
    let inv_std = T::ONE / (var + eps).sqrt();
    let alpha = inv_std * gamma;
    (alpha, beta - mean * alpha)
}

/// Normalises `x` (`C x len`, `C = stats.len() / 4`) into `y`.
pub fn batch_norm<T: Scalar>(x: &[T], len: usize, stats: &[T], eps: T, y: &mut [T]) {
    if len == 0 {
        return;
    }
    let channels = stats.len() / 4;
    for (c, (x_row, y_row)) in x.chunks_exact(len).zip(y.chunks_exact_mut(len)).enumerate() {
        let (alpha, shift) = channel_affine(stats, channels, c, eps);
        for (o, &v) in y_row.iter_mut().zip(x_row) {
            *o = v * alpha + shift;
        }
    }
}

/// Adds `g * alpha` to `dx`, channel by channel (strong zeros: `g == 0` adds 0).
pub fn batch_norm_grad<T: Scalar>(g: &[T], len: usize, stats: &[T], eps: T, dx: &mut [T]) {
    if len == 0 {
        return;
    }
    let channels = stats.len() / 4;
    for (c, (g_row, d_row)) in g
        .chunks_exact(len)
        .zip(dx.chunks_exact_mut(len))
        .enumerate()
    {
        let (alpha, _) = channel_affine(stats, channels, c, eps);
        for (d, &gv) in d_row.iter_mut().zip(g_row) {
            *d += strong_mul(gv, alpha);
        }
    }
}

/// Folds a batch normalisation into the convolution before it: scales each output
/// channel's kernel `w` (PyTorch's layout, see [`conv`](super::conv)) by `alpha` and sets
/// its bias to `(b - mean) * alpha + beta`. The folded convolution alone computes what the
/// two computed, up to rounding. [`TapeError::Length`] (node 0) if the slices do not fit
/// `shape`.
///
/// ```
/// use safegrad::ops::batch_norm::fold_into_conv;
/// use safegrad::ops::conv::Conv1dShape;
///
/// let shape = Conv1dShape::new(1, 4, 1, 1, 1, 0, 1, 1); // y = w x + b
/// let (mut w, mut b) = ([3.0f64], [1.0]);
/// // gamma 2, beta 0.5, mean 1, var 4: y' = (y - 1) / 2 * 2 + 0.5 = y - 0.5
/// fold_into_conv(&shape, &mut w, &mut b, &[2.0, 0.5, 1.0, 4.0], 0.0)?;
/// assert_eq!((w, b), ([3.0], [0.5]));
/// # Ok::<(), safegrad::TapeError>(())
/// ```
pub fn fold_into_conv<T: Scalar>(
    shape: &Conv1dShape,
    w: &mut [T],
    b: &mut [T],
    stats: &[T],
    eps: T,
) -> Result<(), TapeError> {
    let c = shape.c_out;
    if w.len() != shape.weights() || b.len() != c || stats.len() != 4 * c {
        return Err(TapeError::Length {
            node: 0,
            expected: shape.weights() + 5 * c,
            found: w.len() + b.len() + stats.len(),
        });
    }
    let per_channel = shape.weights() / c.max(1);
    for (o, (w_o, b_o)) in w
        .chunks_exact_mut(per_channel.max(1))
        .zip(b.iter_mut())
        .enumerate()
    {
        let (alpha, shift) = channel_affine(stats, c, o, eps);
        for v in w_o.iter_mut() {
            *v *= alpha;
        }
        *b_o = *b_o * alpha + shift;
    }
    Ok(())
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// Records evaluation-mode batch normalisation of each row (channel) of `x` with the
    /// `4 x C` statistics `stats` (gamma, beta, running mean, running variance).
    pub fn batch_norm<const C: usize, const L: usize>(
        &mut self,
        x: Var<C, L>,
        stats: Var<4, C>,
        eps: T,
    ) -> Result<Var<C, L>, TapeError> {
        let op = Op::BatchNorm(BatchNormOp::Frozen {
            x: x.node(),
            stats: stats.node(),
            eps,
        });
        self.record2(op, x, stats, |xv, sv, out| batch_norm(xv, L, sv, eps, out))
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for BatchNormOp<T> {
    fn name(&self) -> &'static str {
        "batch_norm"
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        let Self::Frozen { x, stats, .. } = *self;
        [Some(x), Some(stats), None]
    }

    fn differentiable_inputs(&self) -> [Option<NodeId>; 3] {
        let Self::Frozen { x, .. } = *self;
        [Some(x), None, None]
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        let Self::Frozen { x, stats, eps } = *self;
        let len = b.node().shape().1;
        let sv = b.value(stats);
        let (g, dx) = b.split(x);
        batch_norm_grad(g, len, sv, eps, dx);
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let Self::Frozen { x, stats, eps } = *self;
        Domain::finite_if(facts.domain(x).finite && variances_guarded(facts, stats, eps))
    }

    /// The square root of `var + eps` is proven safe when every channel's `var + eps` is
    /// positive and finite (the statistics are frozen, so their values are the proof).
    fn finding(&self, facts: &Facts<'_, T>) -> Option<Unproven> {
        let Self::Frozen { stats, eps, .. } = *self;
        (!variances_guarded(facts, stats, eps)).then_some(Unproven::raw(
            FindingKind::SqrtNotPositive,
            Severity::Error,
            Domain::UNKNOWN,
        ))
    }
}

/// `true` if every running variance plus `eps` is positive and finite.
fn variances_guarded<T: Scalar>(facts: &Facts<'_, T>, stats: NodeId, eps: T) -> bool {
    let values = facts.values(stats);
    let channels = values.len() / 4;
    let vars = values.get(3 * channels..).unwrap_or(&[]);
    !vars.is_empty()
        && vars.iter().all(|&v| {
            let guarded = v + eps;
            guarded > T::ZERO && guarded.is_finite()
        })
}
