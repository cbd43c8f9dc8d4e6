//! One epoch of batch-1 training, with or without a divergence guard.

use super::{record_loss_at, step, DivergenceGuard, Samples, StepConfig, StepError};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::rng::{Draw, SeedableRng, SplitMix64};
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Var};

use super::guard::Divergence;

/// The order epochs visit their rows in: a permutation of `0..rows` kept in a buffer the
/// caller lends, shuffled anew (Fisher-Yates, from the previous epoch's order) by a seeded
/// generator before each epoch.
///
/// ```
/// use safegrad::train::Shuffle;
///
/// let mut buffer = [0usize; 8];
/// let mut shuffle = Shuffle::new(&mut buffer, 5, 7)?;
/// let mut seen = shuffle.next_epoch().to_vec();
/// seen.sort();
/// assert_eq!(seen, [0, 1, 2, 3, 4]);
/// assert!(Shuffle::new(&mut [0usize; 4], 5, 7).is_err()); // no room for 5 rows
/// # Ok::<(), safegrad::train::StepError>(())
/// ```
#[derive(Debug)]
pub struct Shuffle<'a> {
    order: &'a mut [usize],
    rng: SplitMix64,
    /// Rows left to visit in all epochs together, if limited.
    budget: Option<usize>,
}

impl<'a> Shuffle<'a> {
    /// The identity order of `rows` rows in `buffer`, to be shuffled by a generator seeded
    /// with `seed`; [`StepError::SampleCapacity`] if the buffer is shorter than `rows`.
    pub fn new(buffer: &'a mut [usize], rows: usize, seed: u64) -> Result<Self, StepError> {
        let capacity = buffer.len();
        let order = buffer
            .get_mut(..rows)
            .ok_or(StepError::SampleCapacity { capacity, rows })?;
        for (i, o) in order.iter_mut().enumerate() {
            *o = i;
        }
        Ok(Self {
            order,
            rng: SplitMix64::seed_from_u64(seed),
            budget: None,
        })
    }

    /// Limits the rows visited in all epochs together to `budget` (`None`: no limit).
    pub fn limit(&mut self, budget: Option<usize>) {
        self.budget = budget;
    }

    /// `true` once the budget is spent.
    pub fn exhausted(&self) -> bool {
        self.budget == Some(0)
    }

    /// Shuffles the order for the next epoch and returns it: every row, or as many as the
    /// budget has left.
    pub fn next_epoch(&mut self) -> &[usize] {
        self.rng.shuffle(self.order);
        let take = match self.budget {
            Some(left) => {
                let take = left.min(self.order.len());
                self.budget = Some(left - take);
                take
            }
            None => self.order.len(),
        };
        self.order.get(..take).unwrap_or(&[])
    }

    /// Rows in the order.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// `true` without rows.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// What an [`epoch`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochReport<T> {
    /// Mean loss of the accepted steps.
    pub mean_loss: T,
    /// Steps taken (updates applied).
    pub steps: usize,
    /// Samples refused as non-finite (skipped, nothing changed).
    pub rejected: usize,
    /// Divergence the guard saw during or at the end of the epoch: roll back and lower the
    /// learning rate.
    pub divergence: Option<Divergence<T>>,
}

/// One epoch of batch-1 training: the order is shuffled, then one guarded
/// [`step`](super::step) is taken per row in that order. Without a guard, a step refused as
/// non-finite ends the epoch with its error. With a [`DivergenceGuard`], such a step skips
/// its sample (counted) instead; too many in a row stop the epoch; at its end the mean loss
/// goes to the guard. The host simulator and the firmware train through this function (in a
/// [`Session`](crate::session::Session)), so their schedules are the same code.
#[allow(clippy::too_many_arguments)]
pub fn epoch<T, M, O, D, Mem, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    optimizer: &mut O,
    data: &D,
    shuffle: &mut Shuffle<'_>,
    config: &StepConfig<T>,
    guard: Option<&mut DivergenceGuard<T>>,
) -> Result<EpochReport<T>, StepError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    O: Optimizer<T> + 'static,
    D: Samples<T, IN> + ?Sized,
    Mem: Capacity,
{
    anchored_epoch(tape, model, optimizer, data, shuffle, config, guard, None)
}

/// Where an [`anchored_epoch`] pulls the trainable parameters after each step: toward
/// `values` (a [`Tape::snapshot_trainable`], the model before fine-tuning, say) with an L2
/// penalty of `strength` (L2-SP).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anchor<'a, T> {
    /// The trainable scalars to pull toward, in the tape's order.
    pub values: &'a [T],
    /// The penalty's weight: the mean loss minimised is the data's plus
    /// `strength / 2 * |params - values|^2`.
    pub strength: T,
}

/// [`epoch`], with each accepted step followed by the decoupled step of `anchor`'s penalty:
/// every trainable scalar moves toward its anchor by `learning rate * strength` of the
/// distance ([`Tape::pull_trainable_toward`]).
#[allow(clippy::too_many_arguments)]
pub fn anchored_epoch<T, M, O, D, Mem, const IN: usize, const OUT: usize>(
    tape: &mut Tape<T, Mem>,
    model: &M,
    optimizer: &mut O,
    data: &D,
    shuffle: &mut Shuffle<'_>,
    config: &StepConfig<T>,
    mut guard: Option<&mut DivergenceGuard<T>>,
    anchor: Option<Anchor<'_, T>>,
) -> Result<EpochReport<T>, StepError>
where
    T: Scalar,
    M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    O: Optimizer<T> + 'static,
    D: Samples<T, IN> + ?Sized,
    Mem: Capacity,
{
    let mut out = EpochReport {
        mean_loss: T::ZERO,
        steps: 0,
        rejected: 0,
        divergence: None,
    };
    let mut total = T::ZERO;
    for &i in shuffle.next_epoch().iter() {
        let Some(loss) = record_loss_at(tape, model, data, i)? else {
            continue;
        };
        match step(tape, loss, optimizer, config) {
            Ok(report) => {
                if let Some(a) = anchor {
                    tape.pull_trainable_toward(a.values, optimizer.learning_rate() * a.strength)?;
                }
                total += report.loss;
                out.steps += 1;
                if let Some(g) = guard.as_deref_mut() {
                    g.observe_step();
                }
            }
            Err(StepError::NonFinite(_)) if guard.is_some() => {
                out.rejected += 1;
                if let Some(d) = guard
                    .as_deref_mut()
                    .and_then(DivergenceGuard::observe_rejection)
                {
                    out.divergence = Some(d);
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    out.mean_loss = total / T::from_usize(out.steps.max(1));
    if let Some(g) = guard {
        if out.divergence.is_none() && out.steps > 0 {
            out.divergence = g.observe_epoch(out.mean_loss);
        }
    }
    Ok(out)
}
