//! The library's error type.

use core::fmt;

/// Why recording or differentiating a graph failed. Every variant says what was wrong;
/// a failed call records nothing and changes no value or gradient.
///
/// ```
/// use safegrad::{Tape, Tensor, TapeError};
///
/// let mut tape = Tape::<f32, 2, 8>::new();
/// let a = tape.input(&Tensor::new([[1.0, 2.0]])).unwrap();
/// let b = tape.exp(a).unwrap();
/// let err = tape.exp(b).unwrap_err(); // a third node does not fit
/// assert_eq!(err, TapeError::NodeCapacity { capacity: 2 });
/// assert_eq!(err.to_string(), "tape is full: node capacity N = 2 reached");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TapeError {
    /// All `N` node slots of the tape are in use.
    NodeCapacity {
        /// The tape's node capacity `N`.
        capacity: usize,
    },
    /// The values of a new node do not fit in the `S` scalar slots left.
    ScalarCapacity {
        /// The tape's scalar capacity `S`.
        capacity: usize,
        /// Slots already in use.
        used: usize,
        /// Slots the new node needs.
        requested: usize,
    },
    /// The gradients of a new node do not fit in the `G` gradient slots left.
    GradientCapacity {
        /// The tape's gradient capacity `G`.
        capacity: usize,
        /// Slots already in use.
        used: usize,
        /// Slots the new node needs.
        requested: usize,
    },
    /// The node carries no gradient: a constant, a data input, a frozen parameter, or an
    /// op computed from those alone.
    NoGradient {
        /// Index of the node.
        node: usize,
    },
    /// The handle names a node recorded before the last
    /// [`clear_activations`](crate::Tape::clear_activations).
    StaleVar {
        /// Index of the node the handle names.
        node: usize,
    },
    /// The handle does not name a node of this tape with its shape.
    UnknownVar {
        /// Index of the node the handle names.
        node: usize,
    },
    /// Parameters must be recorded before any activation, so that clearing activations keeps
    /// them.
    ParameterAfterActivation,
    /// The gradient of this weight is not in the gradient buffer: a training step computed
    /// it as the outer product of its layer's input and output gradient and did not keep it
    /// ([`StepConfig::keep_grads`](crate::train::StepConfig::keep_grads)), or a sweep for a
    /// step holds it that way ([`Tape::write_outer_grads`](crate::Tape::write_outer_grads)
    /// writes it).
    GradientNotKept {
        /// Index of the weight's node.
        node: usize,
    },
    /// A class label is not a column of the logits.
    LabelOutOfRange {
        /// Row of the batch.
        row: usize,
        /// The label given.
        label: usize,
        /// Number of classes (columns).
        classes: usize,
    },
    /// A frozen parameter read in place lies beyond the end of the values given to
    /// [`Tape::read_frozen_in_place`](crate::Tape::read_frozen_in_place).
    InPlaceRange {
        /// One past the last value the parameter needs.
        needed: usize,
        /// Values given.
        available: usize,
    },
    /// [`Tape::read_frozen_in_place`](crate::Tape::read_frozen_in_place) after parameters
    /// were recorded: the values it gives are indexed from the first parameter.
    InPlaceAfterParameters,
    /// A value given to [`Tape::read_frozen_in_place`](crate::Tape::read_frozen_in_place)
    /// is not finite.
    InPlaceNonFinite {
        /// Its index.
        index: usize,
    },
    /// The node is a frozen parameter read in place: its values cannot be changed.
    ReadOnly {
        /// Index of the node.
        node: usize,
    },
    /// A snapshot of the trainable parameters does not have one value per trainable scalar.
    SnapshotLength {
        /// Trainable scalars of the tape.
        expected: usize,
        /// Values of the snapshot.
        found: usize,
    },
}

impl fmt::Display for TapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NodeCapacity { capacity } => {
                write!(f, "tape is full: node capacity N = {capacity} reached")
            }
            Self::ScalarCapacity {
                capacity,
                used,
                requested,
            } => write!(
                f,
                "tape is full: scalar capacity S = {capacity} ({used} used, {requested} more requested)"
            ),
            Self::GradientCapacity {
                capacity,
                used,
                requested,
            } => write!(
                f,
                "tape is full: gradient capacity G = {capacity} ({used} used, {requested} more requested)"
            ),
            Self::NoGradient { node } => write!(
                f,
                "node #{node} carries no gradient (constant, data input, frozen parameter, or computed from those)"
            ),
            Self::StaleVar { node } => write!(
                f,
                "node #{node} was cleared with the activations; record it again in this step"
            ),
            Self::UnknownVar { node } => {
                write!(f, "node #{node} is not a node of this tape with this shape")
            }
            Self::GradientNotKept { node } => write!(
                f,
                "the gradient of node #{node} is not in the gradient buffer: the training step did not keep it (StepConfig::keep_grads), or write_outer_grads has not run"
            ),
            Self::ParameterAfterActivation => write!(
                f,
                "parameters must be recorded before any activation (call clear_activations first)"
            ),
            Self::LabelOutOfRange {
                row,
                label,
                classes,
            } => write!(
                f,
                "label {label} in row {row} is out of range: the logits have {classes} classes"
            ),
            Self::InPlaceRange { needed, available } => write!(
                f,
                "a frozen parameter read in place needs values up to {needed}, {available} were given"
            ),
            Self::InPlaceAfterParameters => write!(
                f,
                "read_frozen_in_place must come before the first parameter is recorded"
            ),
            Self::InPlaceNonFinite { index } => write!(
                f,
                "value {index} of the frozen parameters to read in place is not finite"
            ),
            Self::ReadOnly { node } => write!(
                f,
                "node #{node} is a frozen parameter read in place: its values cannot be changed"
            ),
            Self::SnapshotLength { expected, found } => write!(
                f,
                "a snapshot of the trainable parameters holds {found} values, the tape trains {expected}"
            ),
        }
    }
}

impl core::error::Error for TapeError {}
