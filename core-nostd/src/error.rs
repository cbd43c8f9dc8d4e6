//! The library's error types: [`TapeError`] for recording and differentiating, and
//! [`Error`], every error of the crate in one type, so that `?` works in code that records,
//! trains, loads and saves.

use core::fmt;

use embedded_storage::nor_flash::{NorFlashError, NorFlashErrorKind};

use crate::audit::AuditError;
use crate::checkpoint::CheckpointError;
use crate::dataset::{DatasetError, RecordError};
use crate::store::StoreError;
use crate::train::StepError;

/// Why recording or differentiating a graph failed. Every variant says what was wrong;
/// a failed call records nothing and changes no value or gradient.
///
/// ```
/// use safegrad::{Cap, Tape, Tensor, TapeError};
///
/// let mut tape = Tape::<f32, Cap<2, 8>>::new();
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
    /// A training step's update consumed this weight's gradient
    /// ([`train::step`](crate::train::step)); [`Tape::backward`](crate::Tape::backward)
    /// computes it again.
    GradientConsumed {
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
    /// An index is not a column of the operand ([`Tape::gather`](crate::Tape::gather)).
    IndexOutOfRange {
        /// Row of the operand.
        row: usize,
        /// The index given.
        index: usize,
        /// Columns of the operand.
        columns: usize,
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
    /// Values given for a node do not have its length.
    Length {
        /// Index of the node.
        node: usize,
        /// Its scalars.
        expected: usize,
        /// Values given.
        found: usize,
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
            Self::GradientConsumed { node } => write!(
                f,
                "the gradient of node #{node} was consumed by a training step's update; run backward to compute it"
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
            Self::IndexOutOfRange {
                row,
                index,
                columns,
            } => write!(
                f,
                "index {index} in row {row} is out of range: the operand has {columns} columns"
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
            Self::Length {
                node,
                expected,
                found,
            } => write!(
                f,
                "node #{node} holds {expected} values, {found} were given"
            ),
            Self::SnapshotLength { expected, found } => write!(
                f,
                "a snapshot of the trainable parameters holds {found} values, the tape trains {expected}"
            ),
        }
    }
}

impl core::error::Error for TapeError {}

/// Every error of the crate, with a `From` conversion from each, so that `?` works in code
/// that records, trains, loads and saves. Flash errors are kept as their
/// [`NorFlashErrorKind`].
///
/// ```
/// use safegrad::checkpoint::{self, CheckpointError};
/// use safegrad::{Cap, Error, Tape, Tensor};
///
/// fn load_and_scale(bytes: &[u8]) -> Result<f32, Error> {
///     let mut tape = Tape::<f32, Cap<4, 8>>::new();
///     let w = tape.parameter(&Tensor::new([[0.0, 0.0]]))?; // a TapeError
///     checkpoint::load(&mut tape, bytes)?; // a CheckpointError
///     Ok(tape.value(w)?.sum())
/// }
/// let err = load_and_scale(b"this is not a checkpoint at all").unwrap_err();
/// assert!(matches!(err, Error::Checkpoint(CheckpointError::Magic { .. })));
/// assert!(err.to_string().starts_with("not a checkpoint"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Recording or differentiating failed.
    Tape(TapeError),
    /// A training step was refused.
    Step(StepError),
    /// A checkpoint was refused.
    Checkpoint(CheckpointError),
    /// A data set was refused.
    Dataset(DatasetError),
    /// Recording a data set into flash failed.
    Record(RecordError<NorFlashErrorKind>),
    /// A checkpoint slot operation failed.
    Store(StoreError<NorFlashErrorKind>),
    /// The audit could not report.
    Audit(AuditError),
    /// An `int8` body was refused or could not run.
    Int8(crate::quant::Int8Error),
    /// A replay buffer was refused.
    Replay(crate::train::ReplayBufferError),
}

impl From<crate::train::ReplayBufferError> for Error {
    fn from(e: crate::train::ReplayBufferError) -> Self {
        Self::Replay(e)
    }
}

impl From<crate::quant::Int8Error> for Error {
    fn from(e: crate::quant::Int8Error) -> Self {
        Self::Int8(e)
    }
}

impl From<TapeError> for Error {
    fn from(e: TapeError) -> Self {
        Self::Tape(e)
    }
}

impl From<StepError> for Error {
    fn from(e: StepError) -> Self {
        Self::Step(e)
    }
}

impl From<CheckpointError> for Error {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(e)
    }
}

impl From<DatasetError> for Error {
    fn from(e: DatasetError) -> Self {
        Self::Dataset(e)
    }
}

impl From<AuditError> for Error {
    fn from(e: AuditError) -> Self {
        Self::Audit(e)
    }
}

impl<E: NorFlashError> From<StoreError<E>> for Error {
    fn from(e: StoreError<E>) -> Self {
        Self::Store(e.map_flash(|e| e.kind()))
    }
}

impl<E: NorFlashError> From<RecordError<E>> for Error {
    fn from(e: RecordError<E>) -> Self {
        Self::Record(e.map_flash(|e| e.kind()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tape(e) => write!(f, "{e}"),
            Self::Step(e) => write!(f, "{e}"),
            Self::Checkpoint(e) => write!(f, "{e}"),
            Self::Dataset(e) => write!(f, "{e}"),
            Self::Record(e) => write!(f, "{e}"),
            Self::Store(e) => write!(f, "{e}"),
            Self::Audit(e) => write!(f, "{e}"),
            Self::Int8(e) => write!(f, "{e}"),
            Self::Replay(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for Error {}
