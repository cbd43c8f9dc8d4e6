//! A linear head fitted by full-batch gradient descent on fixed inputs: with the body
//! frozen, the rows the last layer sees (their latents) never change, and the head's loss
//! is convex in its parameters. With a backtracking line search every step lowers the
//! objective whatever the inputs' scale, where batch-1 SGD at a fixed rate diverges on
//! large latents and needs its guard to halve the rate. On ill-conditioned inputs (large,
//! correlated, all positive) gradient descent approaches the minimum slowly, and the
//! iteration budget ends it early.

use super::{Samples, StepError};
use crate::error::TapeError;
use crate::nn::Linear;
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape};

/// How [`fit_linear_head`] fits.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HeadFit<T> {
    /// The weight of `½‖W − W₀‖²` (the weights' distance from where the fit starts, L2-SP;
    /// the biases are free) against the rows' summed cross-entropy: scikit-learn's `1 / C`.
    pub penalty: T,
    /// Converged once no component of the objective's gradient is larger than this.
    pub tolerance: T,
    /// Most iterations (each a full pass over the rows and a step).
    pub iterations: usize,
}

/// What [`fit_linear_head`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HeadFitReport<T> {
    /// Steps taken.
    pub iterations: usize,
    /// The objective where it stopped: mean cross-entropy plus the penalty over the rows.
    pub objective: T,
    /// No component of the gradient was above the tolerance when it stopped. Otherwise the
    /// iterations ran out, or no step along the gradient lowered the objective at this
    /// precision (stalled), or it overflowed.
    pub converged: bool,
    /// Rows used (those with a non-finite value are left out).
    pub rows: usize,
}

/// Fits `head` (`F` inputs, `OUT` classes, both parameters held in the tape) on `data`'s
/// rows, its inputs, toward the minimum of the mean softmax cross-entropy plus
/// `penalty / (2 n) ‖W − W₀‖²` over the `n` rows, `W₀` the weights it starts from: gradient
/// descent, each step's length found by backtracking (Armijo's rule, from twice the last
/// length, halved until the objective falls by at least half the step times the squared
/// gradient). Every sum runs in a fixed order, so the same rows give the same bits on
/// every machine.
///
/// `anchor` holds `W₀` (at least `F · OUT` scalars) and `grad` the gradient (at least
/// `(F + 1) · OUT`). Rows with a non-finite value are left out. Refused before the head
/// changes: a penalty that is negative or not finite, or a tolerance that is negative or
/// not a number ([`StepError::HeadFitSetting`]), no rows left ([`StepError::NoSamples`]), a
/// label the head has no output for ([`TapeError::LabelOutOfRange`]), a head read in place
/// ([`TapeError::ReadOnly`]).
///
/// ```
/// use safegrad::nn::{Build, Init, Linear, Module};
/// use safegrad::train::{fit_linear_head, HeadFit};
/// use safegrad::{Cap, Tape};
///
/// let mut tape = Tape::<f32, Cap<4, 32>>::new();
/// let head = Linear::<2, 2>::build(&mut tape, &mut Init::new(1))?;
/// // Inputs of any scale: the line search finds each step's length.
/// let rows = [([30.0f32, 0.0], 0), ([0.0, 30.0], 1), ([25.0, 5.0], 0), ([4.0, 28.0], 1)];
/// let fit = HeadFit { penalty: 1.0, tolerance: 1e-4, iterations: 5_000 };
/// let (mut anchor, mut grad) = ([0.0; 4], [0.0; 6]);
/// let report = fit_linear_head(&mut tape, &head, &rows[..], &fit, &mut anchor, &mut grad)?;
/// assert_eq!(report.rows, 4);
/// assert!(report.objective < 2f32.ln()); // below the loss of the untrained head
/// let x = tape.input(&safegrad::Tensor::new([[2.0, 27.0]]))?;
/// let logits = head.forward(&mut tape, x)?;
/// assert_eq!(safegrad::train::argmax(tape.value(logits)?.as_slice()), 1);
/// # Ok::<(), safegrad::train::StepError>(())
/// ```
pub fn fit_linear_head<T, D, Mem, const F: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    head: &Linear<F, OUT>,
    data: &D,
    fit: &HeadFit<T>,
    anchor: &mut [T],
    grad: &mut [T],
) -> Result<HeadFitReport<T>, StepError>
where
    T: Scalar,
    Mem: Capacity,
    D: Samples<T, F> + ?Sized,
{
    if !fit.penalty.is_finite() || fit.penalty < T::ZERO {
        return Err(StepError::HeadFitSetting { name: "penalty" });
    }
    if fit.tolerance.is_nan() || fit.tolerance < T::ZERO {
        return Err(StepError::HeadFitSetting { name: "tolerance" });
    }
    let (weights, parameters) = (F * OUT, (F + 1) * OUT);
    let capacity = anchor.len();
    let anchor = anchor
        .get_mut(..weights)
        .ok_or(StepError::SnapshotCapacity {
            capacity,
            needed: weights,
        })?;
    let capacity = grad.len();
    let grad = grad
        .get_mut(..parameters)
        .ok_or(StepError::SnapshotCapacity {
            capacity,
            needed: parameters,
        })?;
    let mut bias = [T::ZERO; OUT];
    for (b, &v) in bias.iter_mut().zip(tape.parameter_mut(head.bias)?.iter()) {
        *b = v;
    }
    for (a, &v) in anchor
        .iter_mut()
        .zip(tape.parameter_mut(head.weight)?.iter())
    {
        *a = v;
    }
    let rows = usable_rows::<T, D, F, OUT>(data)?;
    if rows == 0 {
        return Err(StepError::NoSamples);
    }
    let n = T::from_usize(rows);
    let two = T::from_f64(2.0);
    let half = T::from_f64(0.5);
    // Bounds of a step's length: past the shortest no step can lower the objective at this
    // precision (the fit has stalled); the longest keeps the doubling finite.
    let (shortest, longest) = (T::from_f64(1e-30), T::from_f64(1e30));
    let w = tape.parameter_mut(head.weight)?;
    let mut objective =
        evaluate::<T, D, F, OUT>(data, w, &bias, anchor, fit.penalty, n, At::Point(grad));
    let mut report = HeadFitReport {
        iterations: 0,
        objective,
        converged: false,
        rows,
    };
    let mut step = T::ONE;
    while report.iterations < fit.iterations {
        let mut largest = T::ZERO;
        let mut squared = T::ZERO;
        for &g in grad.iter() {
            largest = if g.abs() > largest { g.abs() } else { largest };
            squared += g * g;
        }
        if !squared.is_finite() || !objective.is_finite() {
            // Overflowed: no step along this gradient can be trusted.
            break;
        }
        if largest <= fit.tolerance || squared <= T::ZERO {
            // Below the tolerance, or zero at this precision.
            report.converged = true;
            break;
        }
        if step < longest {
            step *= two;
        }
        let accepted = loop {
            let along = At::Along(&*grad, step);
            let trial = evaluate::<T, D, F, OUT>(data, w, &bias, anchor, fit.penalty, n, along);
            if trial <= objective - half * step * squared {
                break true;
            }
            step *= half;
            if step < shortest {
                break false;
            }
        };
        if !accepted {
            // Stalled: no step lowers the objective at this precision.
            break;
        }
        for (w, &g) in w.iter_mut().zip(grad.iter()) {
            *w -= step * g;
        }
        for (b, &g) in bias.iter_mut().zip(grad.iter().skip(weights)) {
            *b -= step * g;
        }
        report.iterations += 1;
        objective =
            evaluate::<T, D, F, OUT>(data, w, &bias, anchor, fit.penalty, n, At::Point(grad));
        report.objective = objective;
    }
    for (b, &v) in tape.parameter_mut(head.bias)?.iter_mut().zip(&bias) {
        *b = v;
    }
    Ok(report)
}

/// Rows with every value finite; an error for a label out of range.
fn usable_rows<T: Scalar, D: Samples<T, F> + ?Sized, const F: usize, const OUT: usize>(
    data: &D,
) -> Result<usize, StepError> {
    let mut x = [T::ZERO; F];
    let mut rows = 0;
    for i in 0..data.len() {
        let Some(label) = data.read_into(i, &mut x) else {
            continue;
        };
        if x.iter().all(|v| v.is_finite()) {
            if label >= OUT {
                return Err(StepError::Tape(TapeError::LabelOutOfRange {
                    row: i,
                    label,
                    classes: OUT,
                }));
            }
            rows += 1;
        }
    }
    Ok(rows)
}

/// One row's logits at the point, or at `W − s·gW`, `b − s·gb` along `(g, s)`.
fn logits<T: Scalar, const F: usize, const OUT: usize>(
    x: &[T; F],
    w: &[T],
    bias: &[T; OUT],
    along: Option<(&[T], T)>,
) -> [T; OUT] {
    let mut out = [T::ZERO; OUT];
    for (j, o) in out.iter_mut().enumerate() {
        let mut sum = T::ZERO;
        let column = w.iter().skip(j).step_by(OUT);
        let b = bias.get(j).copied().unwrap_or(T::ZERO);
        *o = match along {
            None => {
                for (&xi, &wi) in x.iter().zip(column) {
                    sum += xi * wi;
                }
                sum + b
            }
            Some((grad, step)) => {
                let g = grad.iter().skip(j).step_by(OUT);
                for (&xi, (&wi, &gi)) in x.iter().zip(column.zip(g)) {
                    sum += xi * (wi - step * gi);
                }
                let gb = grad.get(F * OUT + j).copied().unwrap_or(T::ZERO);
                sum + (b - step * gb)
            }
        };
    }
    out
}

/// The largest logit and `ln Σ exp(l − max)`: the cross-entropy of class `y` is
/// `max + lse − l[y]`.
fn log_sum_exp<T: Scalar>(logits: &[T]) -> (T, T) {
    let mut max = T::NEG_INFINITY;
    for &l in logits {
        max = if l > max { l } else { max };
    }
    let mut sum = T::ZERO;
    for &l in logits {
        sum += (l - max).exp();
    }
    (max, sum.ln())
}

/// Where [`evaluate`] evaluates the objective.
enum At<'a, T> {
    /// At the point, the gradient written into the slice (the weights', row-major as they
    /// are stored, then the biases').
    Point(&'a mut [T]),
    /// At `W − s·gW`, `b − s·gb` along the gradient `g` by `s`.
    Along(&'a [T], T),
}

/// The objective, mean cross-entropy plus the penalty over the rows, at `at`.
#[allow(clippy::too_many_arguments)]
fn evaluate<T: Scalar, D: Samples<T, F> + ?Sized, const F: usize, const OUT: usize>(
    data: &D,
    w: &[T],
    bias: &[T; OUT],
    anchor: &[T],
    penalty: T,
    n: T,
    mut at: At<'_, T>,
) -> T {
    if let At::Point(grad) = &mut at {
        grad.iter_mut().for_each(|g| *g = T::ZERO);
    }
    let mut x = [T::ZERO; F];
    let mut loss = T::ZERO;
    for i in 0..data.len() {
        let Some(label) = data.read_into(i, &mut x) else {
            continue;
        };
        if !x.iter().all(|v| v.is_finite()) {
            continue;
        }
        let along = match &at {
            At::Point(_) => None,
            At::Along(grad, step) => Some((*grad, *step)),
        };
        let l = logits::<T, F, OUT>(&x, w, bias, along);
        let (max, lse) = log_sum_exp(&l);
        loss += max + lse - l.get(label).copied().unwrap_or(T::ZERO);
        if let At::Point(grad) = &mut at {
            // d loss / d logit j = softmax_j - [j == label].
            let mut p = [T::ZERO; OUT];
            for (j, (pj, &lj)) in p.iter_mut().zip(&l).enumerate() {
                *pj = (lj - max - lse).exp() - if j == label { T::ONE } else { T::ZERO };
            }
            // The weights' rows (input i), then the biases' (input 1).
            for (i, row) in grad.chunks_exact_mut(OUT).enumerate() {
                let xi = x.get(i).copied().unwrap_or(T::ONE);
                for (g, &pj) in row.iter_mut().zip(&p) {
                    *g += xi * pj;
                }
            }
        }
    }
    let mut distance = T::ZERO;
    match at {
        At::Point(grad) => {
            for ((g, &wi), &ai) in grad.iter_mut().zip(w).zip(anchor) {
                let d = wi - ai;
                distance += d * d;
                *g += penalty * d;
            }
            for g in grad.iter_mut() {
                *g = *g / n;
            }
        }
        At::Along(grad, step) => {
            for ((&wi, &gi), &ai) in w.iter().zip(grad.iter()).zip(anchor) {
                let d = wi - step * gi - ai;
                distance += d * d;
            }
        }
    }
    (loss + T::from_f64(0.5) * penalty * distance) / n
}
