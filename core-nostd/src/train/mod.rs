//! The guarded training step: backward, checks, clipping, update, in that order, so that a
//! step that would write a non-finite value changes nothing.
//!
//! ```
//! use safegrad::nn::{Build, Init, Linear, Module};
//! use safegrad::optim::Sgd;
//! use safegrad::train::{step, StepConfig, StepError};
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f32, Cap<16, 128>>::new();
//! let model = Linear::<2, 2>::build(&mut tape, &mut Init::new(1))?;
//! let mut sgd = Sgd::new(0.1);
//! let config = StepConfig::default();
//!
//! tape.clear_activations();
//! let x = tape.input(&Tensor::new([[1.0, -1.0]]))?;
//! let logits = model.forward(&mut tape, x)?;
//! let loss = tape.softmax_cross_entropy(logits, &[1])?;
//! let report = step(&mut tape, loss, &mut sgd, &config)?;
//! assert!(report.loss.is_finite());
//!
//! // A sample with a NaN: rejected, the parameters stay as they were.
//! let before: Vec<f32> = tape.parameters().to_vec();
//! tape.clear_activations();
//! let x = tape.input(&Tensor::new([[f32::NAN, -1.0]]))?;
//! let logits = model.forward(&mut tape, x)?;
//! let loss = tape.softmax_cross_entropy(logits, &[1])?;
//! let err = step(&mut tape, loss, &mut sgd, &config).unwrap_err();
//! assert!(matches!(err, StepError::NonFinite(_)));
//! assert_eq!(tape.parameters(), &before[..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

mod epoch;
mod guard;
mod head_fit;
mod imprint;
mod replay;
pub mod replay_buffer;
mod samples;
mod update;

pub use epoch::{anchored_epoch, epoch, Anchor, EpochReport, Shuffle};
pub use guard::{Divergence, DivergenceGuard};
pub use head_fit::{fit_linear_head, HeadFit, HeadFitReport};
pub use imprint::imprint_class;
pub use replay::{Chain, Latent8, ReplayError};
pub use replay_buffer::{ReplayBuffer, ReplayBufferError};
pub use samples::{Fold, Samples};

use crate::audit::{audit, first_non_finite, AuditError, Finding};
use crate::error::TapeError;
use crate::graph::NodeId;
use crate::nn::Module;
use crate::optim::{clip_factor, clip_factor_with_norm, global_norm, Optimizer};
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};
use crate::tensor::Tensor;

/// Where a non-finite value was first seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Phase {
    /// In a forward value.
    Forward,
    /// In a gradient.
    Backward,
}

/// The first node with a non-finite value: in the forward, the first in recording order
/// whose inputs are finite (the node that produced it, not one that passed it on); in the
/// backward, the first node in the reverse sweep whose gradient is non-finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NonFinite {
    /// The node.
    pub node: NodeId,
    /// Its op's name.
    pub op: &'static str,
    /// Forward value or gradient.
    pub phase: Phase,
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.phase {
            Phase::Forward => "value",
            Phase::Backward => "gradient",
        };
        write!(
            f,
            "non-finite {what} first produced by node {} ({})",
            self.node, self.op
        )
    }
}

/// Why a step was refused. The parameters and the optimiser state are unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StepError {
    /// Recording or the reverse sweep failed.
    Tape(TapeError),
    /// The loss or a gradient is `nan` or infinite.
    NonFinite(NonFinite),
    /// Strict mode: the graph has an error-level audit finding (the first is given).
    Unsafe(Finding),
    /// Strict mode: the audit found more than [`STRICT_FINDINGS`] findings.
    Audit(AuditError),
    /// There are no rows to train on.
    NoSamples,
    /// The rollback snapshot has no room for every trainable scalar.
    SnapshotCapacity {
        /// Scalars the snapshot holds.
        capacity: usize,
        /// Trainable scalars of the model.
        needed: usize,
    },
    /// The shuffling order has no room for every row of the data.
    SampleCapacity {
        /// Rows the order holds.
        capacity: usize,
        /// Rows of the data.
        rows: usize,
    },
    /// Cross-validation asked for fewer than two folds, or more folds than rows.
    Folds {
        /// Folds asked for.
        folds: usize,
        /// Rows of the data.
        rows: usize,
    },
    /// A class the model's head has no output for.
    ClassOutOfRange {
        /// The class asked for.
        class: usize,
        /// Outputs of the head.
        classes: usize,
    },
    /// The data has no row of the class, with a finite body output, to learn it from.
    NoRowsOfClass {
        /// The class asked for.
        class: usize,
    },
    /// A [`HeadFit`] setting out of its range: a penalty or tolerance negative or not a
    /// number.
    HeadFitSetting {
        /// The setting's name.
        name: &'static str,
    },
    /// The mean body output of a class to imprint is not finite (its values overflowed).
    ImprintNotFinite {
        /// The class.
        class: usize,
    },
    /// A fit of the head alone ([`fit_linear_head`] in a session) while something else
    /// than the head trains, or the head does not.
    NotHeadOnly {
        /// Trainable scalars of the model.
        trainable: usize,
        /// Scalars of the head.
        head: usize,
    },
    /// The optimiser's state holds fewer scalars than the tape trains.
    OptimizerCapacity {
        /// Scalars the optimiser state holds.
        capacity: usize,
        /// Trainable scalars on the tape.
        needed: usize,
    },
}

impl From<TapeError> for StepError {
    fn from(e: TapeError) -> Self {
        Self::Tape(e)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tape(e) => write!(f, "step refused: {e}"),
            Self::NonFinite(n) => write!(f, "step refused: {n}"),
            Self::Unsafe(finding) => write!(f, "step refused in strict mode: {finding}"),
            Self::Audit(e) => write!(f, "step refused in strict mode: {e}"),
            Self::NoSamples => write!(f, "there are no rows to train on"),
            Self::SnapshotCapacity { capacity, needed } => write!(
                f,
                "the rollback snapshot holds {capacity} scalars, the model trains {needed}"
            ),
            Self::SampleCapacity { capacity, rows } => write!(
                f,
                "{rows} training rows, the shuffling order holds {capacity}"
            ),
            Self::Folds { folds, rows } => write!(
                f,
                "cross-validation over {folds} folds of {rows} rows: it needs from 2 folds to one per row"
            ),
            Self::ClassOutOfRange { class, classes } => write!(
                f,
                "class {class} is out of range: the head has {classes} outputs"
            ),
            Self::NoRowsOfClass { class } => write!(
                f,
                "no row of class {class} with a finite body output to learn it from"
            ),
            Self::HeadFitSetting { name } => write!(
                f,
                "the head fit's {name} must be a finite number, not negative"
            ),
            Self::ImprintNotFinite { class } => write!(
                f,
                "the mean body output of class {class} is not finite: nothing to imprint"
            ),
            Self::NotHeadOnly { trainable, head } => write!(
                f,
                "the head's fit needs the head, and nothing else, to train: the model trains {trainable} scalars, its head has {head}"
            ),
            Self::OptimizerCapacity { capacity, needed } => write!(
                f,
                "step refused: the optimiser holds state for {capacity} scalars, the model trains {needed}"
            ),
        }
    }
}

impl core::error::Error for StepError {}

/// Findings the strict mode's audit holds.
pub const STRICT_FINDINGS: usize = 16;

/// Options of [`step`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepConfig<T> {
    /// Clip the gradients to this global norm (PyTorch's `clip_grad_norm_`); `None` for no
    /// clipping.
    pub clip_norm: Option<T>,
    /// Strict mode: audit the recorded graph first ([`crate::audit::audit`]) and refuse to
    /// train on one with an error-level finding.
    pub strict: bool,
}

impl<T> Default for StepConfig<T> {
    fn default() -> Self {
        Self {
            clip_norm: None,
            strict: false,
        }
    }
}

/// What a step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport<T> {
    /// The loss before the update.
    pub loss: T,
    /// The global norm of the gradients before clipping (`inf` if it overflows the scalar
    /// type although every gradient is finite).
    pub grad_norm: T,
    /// The factor the gradients were scaled by (1 without clipping).
    pub clip_factor: T,
}

/// One guarded step on the graph recorded up to `loss`: zero the parameter gradients, run
/// the reverse sweep, check that the loss and every trainable gradient are finite, clip, and
/// update through `optimizer`. On any error nothing of the parameters or the optimiser
/// state has changed.
///
/// The update consumes the gradients: afterwards, the gradient of a weight trained on one
/// sample at a time reads as [`TapeError::GradientConsumed`] (run
/// [`Tape::backward`] to compute it); a refused step keeps every gradient. The check and
/// the global norm come from one sum of squares, which is finite exactly when every gradient
/// is; only when it is not finite, or so small that squares may have underflowed, are the
/// gradients read one by one and the norm computed in scaled form ([`global_norm`]).
#[cfg_attr(target_os = "none", inline(never))]
pub fn step<T, O, Mem: Capacity>(
    tape: &mut Tape<T, Mem>,
    loss: Var<1, 1>,
    optimizer: &mut O,
    config: &StepConfig<T>,
) -> Result<StepReport<T>, StepError>
where
    T: Scalar,
    O: Optimizer<T> + 'static,
{
    let needed = tape.trainable_len();
    if optimizer.capacity() < needed {
        return Err(StepError::OptimizerCapacity {
            capacity: optimizer.capacity(),
            needed,
        });
    }
    if config.strict {
        strict_audit(tape)?;
    }
    let loss_value = tape.scalar(loss)?;
    if !loss_value.is_finite() {
        return Err(StepError::NonFinite(first_non_finite_value(
            tape,
            loss.node(),
        )));
    }
    tape.backward_for_step(loss)?;
    let sum_of_squares = tape.grad_sum_of_squares();
    // Below this, squares of small gradients may have lost precision to underflow.
    let floor = T::MIN_POSITIVE / T::EPSILON;
    let (grad_norm, factor) = if sum_of_squares.is_finite() && sum_of_squares >= floor {
        let norm = sum_of_squares.sqrt();
        let factor = match config.clip_norm {
            Some(max_norm) => clip_factor(norm, max_norm),
            None => T::ONE,
        };
        (norm, factor)
    } else {
        tape.write_outer_grads();
        let grads = tape.parameter_grads()?;
        if grads.iter().any(|g| !g.is_finite()) {
            return Err(StepError::NonFinite(first_non_finite_grad(
                tape,
                loss.node(),
            )));
        }
        // The norm may overflow although every gradient is finite; the clipping factor
        // does not.
        let norm = global_norm(grads);
        let factor = match config.clip_norm {
            Some(max_norm) => clip_factor_with_norm(grads, norm, max_norm),
            None => T::ONE,
        };
        (norm, factor)
    };
    optimizer.begin_step();
    tape.update_trainable(&mut update::Rule(optimizer), factor);
    tape.drop_outer_grads();
    Ok(StepReport {
        loss: loss_value,
        grad_norm,
        clip_factor: factor,
    })
}

/// [`StepConfig::strict`]'s audit of the recorded graph: an error-level finding refuses the
/// step.
fn strict_audit<T: Scalar, Mem: Capacity>(tape: &Tape<T, Mem>) -> Result<(), StepError> {
    let report = audit::<T, Mem, STRICT_FINDINGS>(tape).map_err(StepError::Audit)?;
    match report.first_error() {
        Some(&finding) => Err(StepError::Unsafe(finding)),
        None => Ok(()),
    }
}

/// The first node that feeds `last`, in recording order, with a non-finite value and finite
/// inputs (see [`first_non_finite`]); `last` if there is none.
pub fn first_non_finite_value<T: Scalar, Mem: Capacity>(
    tape: &Tape<T, Mem>,
    last: NodeId,
) -> NonFinite {
    match first_non_finite(tape, last) {
        Some(p) => NonFinite {
            node: p.node,
            op: p.op,
            phase: Phase::Forward,
        },
        None => NonFinite {
            node: last,
            op: tape
                .nodes()
                .get(last.0)
                .map_or("unknown", |n| n.op().name()),
            phase: Phase::Forward,
        },
    }
}

/// The first node in the reverse sweep from `last` whose gradient is non-finite.
pub fn first_non_finite_grad<T: Scalar, Mem: Capacity>(
    tape: &Tape<T, Mem>,
    last: NodeId,
) -> NonFinite {
    let nodes = tape.nodes();
    for (i, node) in nodes.iter().enumerate().take(last.0 + 1).rev() {
        if !tape.grads_of(node).iter().all(|v| v.is_finite()) {
            return NonFinite {
                node: NodeId(i),
                op: node.op().name(),
                phase: Phase::Backward,
            };
        }
    }
    NonFinite {
        node: last,
        op: nodes.get(last.0).map_or("unknown", |n| n.op().name()),
        phase: Phase::Backward,
    }
}

/// Index of the largest value (the first on ties); `nan` never wins.
///
/// ```
/// use safegrad::train::argmax;
///
/// assert_eq!(argmax(&[0.5f32, 2.0, 2.0, f32::NAN]), 1);
/// ```
pub fn argmax<T: Scalar>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if values.get(best).is_some_and(|&b| v > b) {
            best = i;
        }
    }
    best
}

/// The class the model gives one input row: forward on a cleared tape, then [`argmax`].
pub fn predict<T, M, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    x: &[T; IN],
) -> Result<usize, TapeError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
{
    tape.clear_activations();
    let input = tape.input(&Tensor::new([*x]))?;
    let logits = model.forward(tape, input)?;
    let out = tape.value(logits)?;
    Ok(argmax(out.as_slice()))
}

/// How many `(x, label)` pairs the model classifies correctly.
pub fn count_correct<T, M, D, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    data: &D,
) -> Result<usize, TapeError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    D: Samples<T, IN> + ?Sized,
{
    let mut correct = 0;
    for i in 0..data.len() {
        tape.clear_activations();
        let Some((input, label)) = tape.input_with::<IN, _>(|out| data.read_into(i, out))? else {
            continue;
        };
        let logits = model.forward(tape, input)?;
        let out = tape.value(logits)?;
        if argmax(out.as_slice()) == label {
            correct += 1;
        }
    }
    Ok(correct)
}

/// How a model does on some rows: how many it classifies correctly, and its cross-entropy
/// summed over them.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Score<T> {
    /// Rows classified correctly.
    pub correct: usize,
    /// Rows scored.
    pub rows: usize,
    /// The sum of their losses.
    pub loss: T,
}

impl<T: Scalar> Score<T> {
    /// No rows.
    pub const fn zero() -> Self {
        Self {
            correct: 0,
            rows: 0,
            loss: T::ZERO,
        }
    }

    /// The two scores' rows together.
    pub fn plus(self, other: Self) -> Self {
        Self {
            correct: self.correct + other.correct,
            rows: self.rows + other.rows,
            loss: self.loss + other.loss,
        }
    }

    /// `true` if this score is better than `other`'s on the same rows: more rows correct,
    /// or as many with a lower loss.
    ///
    /// ```
    /// use safegrad::train::Score;
    ///
    /// let s = |correct, loss| Score { correct, rows: 4, loss };
    /// assert!(s(3, 2.0f32).beats(&s(2, 0.5)));
    /// assert!(s(3, 0.5f32).beats(&s(3, 2.0)));
    /// assert!(!s(3, 2.0f32).beats(&s(3, 2.0)));
    /// ```
    pub fn beats(&self, other: &Self) -> bool {
        self.correct > other.correct || (self.correct == other.correct && self.loss < other.loss)
    }
}

/// The [`Score`] of the model on `data`: one forward pass and loss per row. Rows whose loss
/// is not finite are left out of it, as a guarded [`epoch`] leaves them out of training.
pub fn score<T, M, D, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    data: &D,
) -> Result<Score<T>, TapeError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    D: Samples<T, IN> + ?Sized,
{
    let mut out = Score::zero();
    for i in 0..data.len() {
        tape.clear_activations();
        let Some((input, label)) = tape.input_with::<IN, _>(|out| data.read_into(i, out))? else {
            continue;
        };
        let logits = model.forward(tape, input)?;
        let class = argmax(tape.value(logits)?.as_slice());
        let loss = tape.softmax_cross_entropy(logits, &[label])?;
        let loss = tape.scalar(loss)?;
        // A row whose loss is not finite (a non-finite sample) is skipped, as training
        // skips it.
        if loss.is_finite() {
            out.correct += usize::from(class == label);
            out.rows += 1;
            out.loss += loss;
        }
    }
    Ok(out)
}

/// [`record_loss`] for row `i` of `data`, its values written straight into the tape (no
/// copy of the row on the stack); `None` past the end.
pub fn record_loss_at<T, M, D, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    data: &D,
    i: usize,
) -> Result<Option<Var<1, 1>>, TapeError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    D: Samples<T, IN> + ?Sized,
{
    tape.clear_activations();
    let Some((input, label)) = tape.input_with::<IN, _>(|out| data.read_into(i, out))? else {
        return Ok(None);
    };
    let logits = model.forward(tape, input)?;
    tape.softmax_cross_entropy(logits, &[label]).map(Some)
}

/// Records, on a cleared tape, the forward pass and the softmax cross-entropy of one row
/// `(x, label)`: the graph every batch-1 training step records.
pub fn record_loss<T, M, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    x: &[T; IN],
    label: usize,
) -> Result<Var<1, 1>, TapeError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
{
    tape.clear_activations();
    let input = tape.input(&Tensor::new([*x]))?;
    let logits = model.forward(tape, input)?;
    tape.softmax_cross_entropy(logits, &[label])
}

/// Records one training step's graph (forward and loss for the row `(x, label)`) and audits
/// it. Every step of [`epoch`] records the same graph, so auditing it once before training
/// is as strict as [`StepConfig::strict`] at a fraction of the cost. An error-level finding
/// is an [`StepError::Unsafe`]; otherwise the audit is returned (warnings included).
pub fn audit_step_graph<T, M, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    x: &[T; IN],
    label: usize,
) -> Result<crate::audit::Audit<STRICT_FINDINGS>, StepError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
{
    record_loss(tape, model, x, label)?;
    let report = audit::<T, Mem, STRICT_FINDINGS>(tape).map_err(StepError::Audit)?;
    if let Some(finding) = report.first_error() {
        return Err(StepError::Unsafe(*finding));
    }
    Ok(report)
}

/// [`audit_step_graph`] for row `i` of `data`, its values written straight into the tape
/// (no copy of the row on the stack: a raw window of hundreds of values would take
/// kilobytes of a microcontroller's stack); `None` past the end.
pub fn audit_step_graph_at<T, M, D, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    data: &D,
    i: usize,
) -> Result<Option<crate::audit::Audit<STRICT_FINDINGS>>, StepError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    D: Samples<T, IN> + ?Sized,
{
    if record_loss_at(tape, model, data, i)?.is_none() {
        return Ok(None);
    }
    let report = audit::<T, Mem, STRICT_FINDINGS>(tape).map_err(StepError::Audit)?;
    if let Some(finding) = report.first_error() {
        return Err(StepError::Unsafe(*finding));
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    //! The crate-private fast path of a step: weight gradients held as outer products.
    //! Checked against the plain reverse sweep ([`Tape::backward`]) on an identical tape,
    //! which writes every gradient out.

    use super::*;
    use crate::nn::{Build, Init, Linear, LinearRelu, Relu};
    use crate::optim::{Adam, Sgd};
    use crate::tape::Cap;

    type Model = (LinearRelu<3, 4>, Linear<4, 2>);
    type Plain = (Linear<3, 4>, Relu, Linear<4, 2>);
    type SmallTape = Tape<f64, Cap<32, 256>>;

    fn loss_of<M>(tape: &mut SmallTape, model: &M, row: usize) -> Var<1, 1>
    where
        M: Module<f64, Var<1, 3>, Output = Var<1, 2>>,
    {
        let x = [0.5 - row as f64, 0.25 * row as f64, 1.0];
        record_loss(tape, model, &x, row % 2).unwrap()
    }

    #[test]
    fn held_gradients_are_the_swept_ones_until_the_update_consumes_them() {
        let (mut held, mut swept) = (SmallTape::new(), SmallTape::new());
        let model = Model::build(&mut held, &mut Init::new(5)).unwrap();
        let same = Model::build(&mut swept, &mut Init::new(5)).unwrap();
        let loss = loss_of(&mut held, &model, 1);
        let reference = loss_of(&mut swept, &same, 1);
        swept.zero_grad();
        swept.backward(reference).unwrap();

        assert_eq!(held.backward_for_step(loss), Ok(2), "both layers held");
        // Read by handle, from the factors.
        assert_eq!(
            held.grad(model.0.weight).unwrap(),
            swept.grad(same.0.weight).unwrap()
        );
        assert_eq!(
            held.grad(model.1.weight).unwrap(),
            swept.grad(same.1.weight).unwrap()
        );
        assert_eq!(
            held.grad(model.1.bias).unwrap(),
            swept.grad(same.1.bias).unwrap()
        );
        // Not in the buffer yet.
        assert_eq!(
            held.parameter_grads(),
            Err(TapeError::GradientConsumed {
                node: model.0.weight.node().0
            })
        );
        // The sum of squares from the factors is the buffer's, up to rounding.
        let expected: f64 = swept.parameter_grads().unwrap().iter().map(|g| g * g).sum();
        let sum = held.grad_sum_of_squares();
        assert!(
            (sum - expected).abs() <= 1e-12 * expected,
            "{sum} vs {expected}"
        );
        // Written out, they are the swept gradients exactly.
        held.write_outer_grads();
        assert_eq!(
            held.parameter_grads().unwrap(),
            swept.parameter_grads().unwrap()
        );
    }

    #[test]
    fn sgd_from_the_factors_and_adam_from_the_gradients_match_the_plain_update() {
        // SGD updates a held weight from its two factors, Adam from the written gradient:
        // both must give what the plain sweep and a per-scalar update give.
        fn run<O: Optimizer<f64> + 'static, M>(mut optimizer: O, fused: bool) -> [f64; 26]
        where
            M: Build<f64> + Module<f64, Var<1, 3>, Output = Var<1, 2>>,
        {
            let mut tape = SmallTape::new();
            let model = M::build(&mut tape, &mut Init::new(9)).unwrap();
            for row in 0..6 {
                let loss = loss_of(&mut tape, &model, row);
                if fused {
                    step(&mut tape, loss, &mut optimizer, &StepConfig::default()).unwrap();
                } else {
                    tape.zero_grad();
                    tape.backward(loss).unwrap();
                    optimizer.begin_step();
                    tape.update_parameters(|i, p, g| optimizer.update(i, p, g));
                }
            }
            let mut out = [0.0; 26];
            out.copy_from_slice(tape.parameters());
            out
        }
        let close = |a: [f64; 26], b: [f64; 26]| {
            a.iter()
                .zip(&b)
                .all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + y.abs()))
        };
        assert!(close(
            run::<_, Model>(Sgd::new(0.2), true),
            run::<_, Plain>(Sgd::new(0.2), false)
        ));
        assert!(close(
            run::<_, Model>(Adam::<f64, 26>::new(0.05), true),
            run::<_, Plain>(Adam::<f64, 26>::new(0.05), false)
        ));
    }
}
