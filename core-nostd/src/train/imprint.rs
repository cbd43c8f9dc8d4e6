//! A new class for a trained model: one output of its head set up from a few rows of the
//! class (weight imprinting, Qi et al. 2018), before fine-tuning teaches it next to the
//! others. A head has as many outputs as its type says; a class that pre-training never
//! saw keeps an output there (pre-training only pushes it down), and this gives it a start.

use super::{Samples, StepError};
#[cfg(doc)]
use crate::error::TapeError;
use crate::nn::{Headed, Linear, Module, WithHead};
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};

/// Sets output `class` of `model`'s head, a [`Linear`] layer, from `data`'s rows of that
/// class: its weights become the mean of their body outputs ([`Headed::body`]), scaled to
/// the mean norm of the head's other outputs' weights (to norm 1 if those are all zero),
/// and its bias the mean of the other biases (0 if there are none). Rows whose body output
/// is not finite are left out. A mean of zero (every body output zero, dead ReLUs) gives
/// the output zero weights, for fine-tuning to start from. Returns the rows used.
///
/// The sums run in row order, so the same rows give the same bits on every machine. The
/// other outputs are untouched; so is everything on a refusal: a class the head has no
/// output for ([`StepError::ClassOutOfRange`]), no usable row of it
/// ([`StepError::NoRowsOfClass`]), a mean that overflowed
/// ([`StepError::ImprintNotFinite`]) or a head read in place ([`TapeError::ReadOnly`]).
///
/// ```
/// use safegrad::nn::{Build, Init, Linear, Relu};
/// use safegrad::train::imprint_class;
/// use safegrad::{Cap, Tape};
///
/// type Model = (Linear<2, 3>, Relu, Linear<3, 3>);
/// let mut tape = Tape::<f32, Cap<16, 128>>::new();
/// let model = Model::build(&mut tape, &mut Init::new(1))?;
/// let rows = [([1.0f32, 0.5], 2), ([0.0, 1.0], 0), ([0.8, 0.7], 2)];
/// assert_eq!(imprint_class(&mut tape, &model, &rows[..], 2)?, 2);
/// # Ok::<(), safegrad::train::StepError>(())
/// ```
pub fn imprint_class<T, M, D, Mem, const IN: usize, const F: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    data: &D,
    class: usize,
) -> Result<usize, StepError>
where
    T: Scalar,
    Mem: Capacity,
    M: Headed<T, Var<1, IN>, Latent = Var<1, F>> + WithHead<Head = Linear<F, OUT>>,
    Linear<F, OUT>: Module<T, Var<1, F>, Output = M::Output>,
    D: Samples<T, IN> + ?Sized,
{
    if class >= OUT {
        return Err(StepError::ClassOutOfRange {
            class,
            classes: OUT,
        });
    }
    let mut mean = [T::ZERO; F];
    let mut rows = 0usize;
    for i in 0..data.len() {
        tape.clear_activations();
        let Some((x, label)) = tape.input_with::<IN, _>(|out| data.read_into(i, out))? else {
            continue;
        };
        if label != class {
            continue;
        }
        let latent = model.body(tape, x)?;
        let value = tape.value(latent)?;
        if value.as_slice().iter().all(|v| v.is_finite()) {
            for (m, &v) in mean.iter_mut().zip(value.as_slice()) {
                *m += v;
            }
            rows += 1;
        }
    }
    tape.clear_activations();
    if rows == 0 {
        return Err(StepError::NoRowsOfClass { class });
    }
    let n = T::from_usize(rows);
    let mut norm = T::ZERO;
    for m in mean.iter_mut() {
        *m = *m / n;
        norm += *m * *m;
    }
    let norm = norm.sqrt();
    if !norm.is_finite() {
        return Err(StepError::ImprintNotFinite { class });
    }
    let head = model.head();
    // Both parameters writable, or nothing is written.
    tape.parameter_mut(head.bias)?;
    let weight = tape.parameter_mut(head.weight)?;
    // The mean norm of the other outputs' weights (column `j` of the `F x OUT` weights).
    let mut others = T::ZERO;
    for j in (0..OUT).filter(|&j| j != class) {
        let mut sum = T::ZERO;
        for w in weight.iter().skip(j).step_by(OUT) {
            sum += *w * *w;
        }
        others += sum.sqrt();
    }
    let others = if OUT > 1 {
        others / T::from_usize(OUT - 1)
    } else {
        T::ZERO
    };
    let target = if others > T::ZERO { others } else { T::ONE };
    let scale = if norm > T::ZERO {
        target / norm
    } else {
        T::ZERO
    };
    if !scale.is_finite() {
        return Err(StepError::ImprintNotFinite { class });
    }
    for (w, &m) in weight.iter_mut().skip(class).step_by(OUT).zip(&mean) {
        *w = m * scale;
    }
    let bias = tape.parameter_mut(head.bias)?;
    let mut sum = T::ZERO;
    for (j, &b) in bias.iter().enumerate() {
        if j != class {
            sum += b;
        }
    }
    let mean_bias = if OUT > 1 {
        sum / T::from_usize(OUT - 1)
    } else {
        T::ZERO
    };
    if let Some(b) = bias.get_mut(class) {
        *b = mean_bias;
    }
    Ok(rows)
}
