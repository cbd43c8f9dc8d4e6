//! Losses, recorded on the tape. Softmax cross-entropy is a tape op
//! ([`Tape::softmax_cross_entropy`]); the ones here are compositions of guarded ops.

use crate::error::TapeError;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};

/// Mean squared error, `mean((prediction - target)^2)`.
///
/// ```
/// use safegrad::nn::loss::mse;
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f64, Cap<16, 64>>::new();
/// let p = tape.variable(&Tensor::new([[1.0, 2.0]]))?;
/// let t = tape.constant(&Tensor::new([[0.0, 4.0]]))?;
/// let loss = mse(&mut tape, p, t)?;
/// tape.backward(loss)?;
/// assert_eq!(tape.scalar(loss)?, 2.5); // (1 + 4) / 2
/// assert_eq!(tape.grad(p)?, Tensor::new([[1.0, -2.0]])); // 2 (p - t) / 2
/// # Ok::<(), safegrad::TapeError>(())
/// ```
pub fn mse<T: Scalar, Mem: Capacity, const R: usize, const C: usize>(
    tape: &mut Tape<T, Mem>,
    prediction: Var<R, C>,
    target: Var<R, C>,
) -> Result<Var<1, 1>, TapeError> {
    let d = tape.sub(prediction, target)?;
    let sq = tape.mul(d, d)?;
    tape.mean(sq)
}

/// Mean of `x` over the lanes where `mask != 0`, `sum(mask * x) / sum(mask)`, with the
/// denominator masked before the division: an all-zero mask gives loss 0 and exactly zero
/// gradients, even where `x` is `inf` or `nan`. The mask is numeric (a weight per lane);
/// weights are meant to be non-negative: weights that cancel out (`[1, -1]`) also give 0.
///
/// ```
/// use safegrad::nn::loss::masked_mean;
/// use safegrad::{Cap, Tape, Tensor};
///
/// let mut tape = Tape::<f32, Cap<16, 64>>::new();
/// let x = tape.variable(&Tensor::new([[3.0, f32::NAN]]))?;
/// let m = tape.constant(&Tensor::new([[0.0, 0.0]]))?;
/// let loss = masked_mean(&mut tape, x, m)?;
/// tape.backward(loss)?;
/// assert_eq!(tape.scalar(loss)?, 0.0);
/// assert_eq!(tape.grad(x)?, Tensor::new([[0.0, 0.0]]));
/// # Ok::<(), safegrad::TapeError>(())
/// ```
pub fn masked_mean<T: Scalar, Mem: Capacity, const R: usize, const C: usize>(
    tape: &mut Tape<T, Mem>,
    x: Var<R, C>,
    mask: Var<R, C>,
) -> Result<Var<1, 1>, TapeError> {
    let weighted = tape.mask(mask, x)?;
    let total = tape.sum(weighted)?;
    let count = tape.sum(mask)?;
    let nonempty = tape.not_zero(count)?;
    tape.masked_div(total, count, nonempty)
}
