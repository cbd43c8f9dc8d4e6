//! The divergence guard: notices when training runs away.

use core::fmt;

use crate::scalar::Scalar;

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
/// checkpoint and lowers the learning rate ([`epoch`](super::epoch) reports it; a
/// [`Session`](crate::session::Session) does it).
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
