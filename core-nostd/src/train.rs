//! The guarded training step: backward, checks, clipping, update, in that order, so that a
//! step that would write a non-finite value changes nothing.
//!
//! ```
//! use safegrad::nn::{Build, Init, Linear, Module};
//! use safegrad::optim::Sgd;
//! use safegrad::train::{step, StepConfig, StepError};
//! use safegrad::{Tape, Tensor};
//!
//! let mut tape = Tape::<f32, 16, 128>::new();
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

use crate::dataset::Samples;
use crate::domain::{audit, first_non_finite, AuditError, Finding};
use crate::error::TapeError;
use crate::graph::NodeId;
use crate::nn::Module;
use crate::optim::{clip_factor, clip_factor_with_norm, global_norm, Optimizer};
use crate::rng::{Draw, SplitMix64};
use crate::scalar::Scalar;
use crate::tape::{Tape, Var};
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
    /// Strict mode: audit the recorded graph first ([`crate::domain::audit`]) and refuse to
    /// train on one with an error-level finding.
    pub strict: bool,
    /// Keep every gradient in the tape's gradient buffer after the step. Without it (the
    /// default), the gradient of a layer's weights trained on one sample at a time is used
    /// as the outer product of the layer's input and output gradient and never written out
    /// (about a third of a step's work for an MLP): reading it afterwards is
    /// [`TapeError::GradientNotKept`]. A refused step keeps every gradient either way.
    pub keep_grads: bool,
}

impl<T> Default for StepConfig<T> {
    fn default() -> Self {
        Self {
            clip_norm: None,
            strict: false,
            keep_grads: false,
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
/// The sweep is [`Tape::backward_for_step`]; the check and the global norm come from one sum
/// of squares ([`Tape::grad_sum_of_squares`]), which is finite exactly when every gradient
/// is. Only when it is not finite, or so small that squares may have underflowed, are the
/// gradients read one by one and the norm computed in scaled form ([`global_norm`]).
#[cfg_attr(target_os = "none", inline(never))]
pub fn step<T, O, const N: usize, const S: usize, const G: usize>(
    tape: &mut Tape<T, N, S, G>,
    loss: Var<1, 1>,
    optimizer: &mut O,
    config: &StepConfig<T>,
) -> Result<StepReport<T>, StepError>
where
    T: Scalar,
    O: Optimizer<T>,
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
    tape.update_trainable(optimizer, factor);
    if config.keep_grads {
        tape.write_outer_grads();
    } else {
        tape.drop_outer_grads();
    }
    Ok(StepReport {
        loss: loss_value,
        grad_norm,
        clip_factor: factor,
    })
}

/// [`StepConfig::strict`]'s audit of the recorded graph: an error-level finding refuses the
/// step.
fn strict_audit<T: Scalar, const N: usize, const S: usize, const G: usize>(
    tape: &Tape<T, N, S, G>,
) -> Result<(), StepError> {
    let report = audit::<T, N, S, G, STRICT_FINDINGS>(tape).map_err(StepError::Audit)?;
    match report.first_error() {
        Some(&finding) => Err(StepError::Unsafe(finding)),
        None => Ok(()),
    }
}

/// The first node that feeds `last`, in recording order, with a non-finite value and finite
/// inputs (see [`first_non_finite`]); `last` if there is none.
pub fn first_non_finite_value<T: Scalar, const N: usize, const S: usize, const G: usize>(
    tape: &Tape<T, N, S, G>,
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
pub fn first_non_finite_grad<T: Scalar, const N: usize, const S: usize, const G: usize>(
    tape: &Tape<T, N, S, G>,
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
pub fn predict<
    T,
    M,
    const N: usize,
    const S: usize,
    const G: usize,
    const IN: usize,
    const OUT: usize,
>(
    tape: &mut Tape<T, N, S, G>,
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
pub fn count_correct<
    T,
    M,
    D,
    const N: usize,
    const S: usize,
    const G: usize,
    const IN: usize,
    const OUT: usize,
>(
    tape: &mut Tape<T, N, S, G>,
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
        let Some((x, label)) = data.row(i) else {
            continue;
        };
        if predict(tape, model, &x)? == label {
            correct += 1;
        }
    }
    Ok(correct)
}

/// Records, on a cleared tape, the forward pass and the softmax cross-entropy of one row
/// `(x, label)`: the graph every batch-1 training step records.
pub fn record_loss<
    T,
    M,
    const N: usize,
    const S: usize,
    const G: usize,
    const IN: usize,
    const OUT: usize,
>(
    tape: &mut Tape<T, N, S, G>,
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
pub fn audit_step_graph<
    T,
    M,
    const N: usize,
    const S: usize,
    const G: usize,
    const IN: usize,
    const OUT: usize,
>(
    tape: &mut Tape<T, N, S, G>,
    model: &M,
    x: &[T; IN],
    label: usize,
) -> Result<crate::domain::Audit<STRICT_FINDINGS>, StepError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
{
    record_loss(tape, model, x, label)?;
    let report = audit::<T, N, S, G, STRICT_FINDINGS>(tape).map_err(StepError::Audit)?;
    if let Some(finding) = report.first_error() {
        return Err(StepError::Unsafe(*finding));
    }
    Ok(report)
}

/// One epoch of batch-1 training: `order` (a permutation of `0..data.len()`, kept by the
/// caller across epochs) is shuffled with `rng`, then one guarded [`step`] is taken per
/// sample in that order. Returns the mean loss. The host simulator and the firmware both
/// train through this function, so their schedules are the same code.
#[allow(clippy::too_many_arguments)]
pub fn epoch<
    T,
    M,
    O,
    D,
    const N: usize,
    const S: usize,
    const G: usize,
    const IN: usize,
    const OUT: usize,
>(
    tape: &mut Tape<T, N, S, G>,
    model: &M,
    optimizer: &mut O,
    data: &D,
    order: &mut [usize],
    rng: &mut SplitMix64,
    config: &StepConfig<T>,
) -> Result<T, StepError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    O: Optimizer<T>,
    D: Samples<T, IN> + ?Sized,
{
    rng.shuffle(order);
    let mut total = T::ZERO;
    for &i in order.iter() {
        let Some((x, label)) = data.row(i) else {
            continue;
        };
        let loss = record_loss(tape, model, &x, label)?;
        total += step(tape, loss, optimizer, config)?.loss;
    }
    Ok(total / T::from_usize(order.len().max(1)))
}

/// Why a [`DivergenceGuard`] stopped training.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Divergence<T> {
    /// An epoch's mean loss rose above `factor` times the running average of the epochs
    /// before it.
    LossRise {
        /// The epoch's mean loss.
        loss: T,
        /// The running average it was compared with.
        average: T,
    },
    /// Too many steps in a row were refused as non-finite.
    Rejections {
        /// Refusals in a row.
        count: u32,
    },
}

impl<T: fmt::Display> fmt::Display for Divergence<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LossRise { loss, average } => write!(
                f,
                "the epoch's mean loss {loss} rose above the bound relative to the running average {average}"
            ),
            Self::Rejections { count } => {
                write!(f, "{count} steps in a row were refused as non-finite")
            }
        }
    }
}

/// Watches training and says when it runs away.
///
/// The bound: after `warmup` epochs, an epoch whose mean loss is above both `factor` times
/// the exponential moving average of the previous epochs' mean losses (decay `decay`) and
/// the absolute `floor` is a [`Divergence::LossRise`]. Epoch means are used because the loss
/// of a single batch-1 step varies too much from sample to sample to be a signal; the floor
/// keeps a well-trained model, whose average loss is tiny, from calling an ordinary wobble a
/// divergence. `max_rejections` non-finite refusals in a row are a
/// [`Divergence::Rejections`], noticed at once. The caller then rolls back to its last good
/// checkpoint and lowers the learning rate ([`guarded_epoch`] reports it; the host simulator
/// and the firmware do it).
///
/// ```
/// use safegrad::train::{Divergence, DivergenceGuard};
///
/// // Factor 3, floor 1, one epoch of warm-up, 3 refusals in a row, decay 0.5.
/// let mut guard = DivergenceGuard::<f32>::default();
/// for loss in [2.0, 1.2, 0.8, 0.9, 0.7] {
///     assert_eq!(guard.observe_epoch(loss), None);
/// }
/// assert!(matches!(guard.observe_epoch(4.0), Some(Divergence::LossRise { .. })));
/// assert_eq!(guard.observe_rejection(), None);
/// assert_eq!(guard.observe_rejection(), None);
/// assert_eq!(guard.observe_rejection(), Some(Divergence::Rejections { count: 3 }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DivergenceGuard<T> {
    /// An epoch mean above `factor` times the running average is a rise...
    pub factor: T,
    /// ... if it is also above this floor.
    pub floor: T,
    /// Epochs before the bound applies.
    pub warmup: u32,
    /// Non-finite refusals in a row that count as divergence.
    pub max_rejections: u32,
    /// Decay of the running average.
    pub decay: T,
    average: T,
    seen: u32,
    rejections: u32,
}

impl<T: Scalar> Default for DivergenceGuard<T> {
    fn default() -> Self {
        Self::new(T::from_f64(3.0), T::ONE, 1, 3, T::from_f64(0.5))
    }
}

impl<T: Scalar> DivergenceGuard<T> {
    /// A guard with the given bound (`factor`, `floor`), warm-up, refusal limit and decay.
    pub fn new(factor: T, floor: T, warmup: u32, max_rejections: u32, decay: T) -> Self {
        Self {
            factor,
            floor,
            warmup,
            max_rejections,
            decay,
            average: T::ZERO,
            seen: 0,
            rejections: 0,
        }
    }

    /// Forgets what it has seen (after a rollback).
    pub fn reset(&mut self) {
        self.average = T::ZERO;
        self.seen = 0;
        self.rejections = 0;
    }

    /// An epoch's mean loss. A rise is not folded into the average.
    pub fn observe_epoch(&mut self, loss: T) -> Option<Divergence<T>> {
        if self.seen >= self.warmup && loss > self.factor * self.average && loss > self.floor {
            return Some(Divergence::LossRise {
                loss,
                average: self.average,
            });
        }
        self.average = if self.seen == 0 {
            loss
        } else {
            self.decay * self.average + (T::ONE - self.decay) * loss
        };
        self.seen = self.seen.saturating_add(1);
        None
    }

    /// An accepted step: ends a run of refusals.
    pub fn observe_step(&mut self) {
        self.rejections = 0;
    }

    /// A step refused as non-finite.
    pub fn observe_rejection(&mut self) -> Option<Divergence<T>> {
        self.rejections = self.rejections.saturating_add(1);
        (self.rejections >= self.max_rejections).then_some(Divergence::Rejections {
            count: self.rejections,
        })
    }
}

/// What a [`guarded_epoch`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardedEpoch<T> {
    /// Mean loss of the accepted steps.
    pub mean_loss: T,
    /// Steps taken (updates applied).
    pub steps: usize,
    /// Samples refused as non-finite (skipped, nothing changed).
    pub rejected: usize,
    /// Divergence seen during or at the end of the epoch: roll back and lower the learning
    /// rate.
    pub divergence: Option<Divergence<T>>,
}

/// [`epoch`] with a [`DivergenceGuard`]: a step refused as non-finite skips its sample
/// (counted) instead of ending the epoch; too many in a row stop the epoch; at its end the
/// mean loss goes to the guard. Without refusals it computes exactly what [`epoch`] does.
#[allow(clippy::too_many_arguments)]
pub fn guarded_epoch<
    T,
    M,
    O,
    D,
    const N: usize,
    const S: usize,
    const G: usize,
    const IN: usize,
    const OUT: usize,
>(
    tape: &mut Tape<T, N, S, G>,
    model: &M,
    optimizer: &mut O,
    data: &D,
    order: &mut [usize],
    rng: &mut SplitMix64,
    config: &StepConfig<T>,
    guard: &mut DivergenceGuard<T>,
) -> Result<GuardedEpoch<T>, StepError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    O: Optimizer<T>,
    D: Samples<T, IN> + ?Sized,
{
    rng.shuffle(order);
    let mut out = GuardedEpoch {
        mean_loss: T::ZERO,
        steps: 0,
        rejected: 0,
        divergence: None,
    };
    let mut total = T::ZERO;
    for &i in order.iter() {
        let Some((x, label)) = data.row(i) else {
            continue;
        };
        let loss = record_loss(tape, model, &x, label)?;
        match step(tape, loss, optimizer, config) {
            Ok(report) => {
                total += report.loss;
                out.steps += 1;
                guard.observe_step();
            }
            Err(StepError::NonFinite(_)) => {
                out.rejected += 1;
                if let Some(d) = guard.observe_rejection() {
                    out.divergence = Some(d);
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    out.mean_loss = total / T::from_usize(out.steps.max(1));
    if out.divergence.is_none() && out.steps > 0 {
        out.divergence = guard.observe_epoch(out.mean_loss);
    }
    Ok(out)
}
