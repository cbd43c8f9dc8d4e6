//! The vocabulary of a recorded graph: node ids, the ops, and the nodes.
//!
//! These types are what an auditor or a logger reads: every node names its [`Op`], its input
//! nodes, its shape and whether it carries a gradient.

use core::fmt;
use core::ops::Range;

use crate::ops::{
    ArithmeticOp, CrossEntropyOp, ElementwiseOp, GuardedOp, LayerNormOp, LinearOp, OpFamily,
    ReduceOp, SelectOp,
};
#[cfg(feature = "conv")]
use crate::ops::{BatchNormOp, ConvOp, PoolOp, ViewOp};
use crate::scalar::Scalar;

/// Index of a node in a tape's recording order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a node computes: a leaf, or an op of one of the op families of [`ops`](crate::ops).
/// Each family (its ops' recording, forward, backward and audit rule) lives in one file
/// of [`ops`](crate::ops); the guarded forms carry their guard, so the recorded graph shows
/// which division or logarithm is protected and how.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op<T> {
    /// A parameter: persists across steps. A trainable one carries a gradient that
    /// accumulates until zeroed; a frozen one carries none.
    Parameter,
    /// A leaf recorded for one step: a data sample (no gradient) or a variable (with one).
    Input,
    /// A constant, e.g. class labels or a mask (no gradient).
    Constant,
    /// Functions of one operand, lane by lane ([`ops::elementwise`](crate::ops::elementwise)).
    Elementwise(ElementwiseOp<T>),
    /// Sums, differences, products and the raw quotient ([`ops::arithmetic`](crate::ops::arithmetic)).
    Arithmetic(ArithmeticOp),
    /// Guarded division, logarithm and square root, and masks ([`ops::guarded`](crate::ops::guarded)).
    Guarded(GuardedOp<T>),
    /// Choosing between lanes ([`ops::select`](mod@crate::ops::select)).
    Select(SelectOp),
    /// Matrix products and fully connected layers ([`ops::linear`](crate::ops::linear)).
    Linear(LinearOp),
    /// Reductions ([`ops::reduce`](crate::ops::reduce)).
    Reduce(ReduceOp),
    /// Layer normalisation ([`ops::layer_norm`](mod@crate::ops::layer_norm)).
    LayerNorm(LayerNormOp<T>),
    /// Softmax and the softmax cross-entropy loss
    /// ([`ops::cross_entropy`](crate::ops::cross_entropy)).
    CrossEntropy(CrossEntropyOp),
    /// A node reading its operand in another shape ([`ops::view`](crate::ops::view); feature
    /// `conv`).
    #[cfg(feature = "conv")]
    View(ViewOp),
    /// 1-D convolution ([`ops::conv`](crate::ops::conv); feature `conv`).
    #[cfg(feature = "conv")]
    Conv(ConvOp),
    /// 1-D pooling ([`ops::pool`](crate::ops::pool); feature `conv`).
    #[cfg(feature = "conv")]
    Pool(PoolOp),
    /// Evaluation-mode batch normalisation ([`ops::batch_norm`](crate::ops::batch_norm);
    /// feature `conv`).
    #[cfg(feature = "conv")]
    BatchNorm(BatchNormOp<T>),
}

/// Runs `$e` with `$f` bound to the family op inside `$op`, or `$leaf` for a leaf.
macro_rules! by_family {
    ($op:expr, $f:ident => $e:expr, leaf => $leaf:expr) => {
        match $op {
            $crate::graph::Op::Parameter
            | $crate::graph::Op::Input
            | $crate::graph::Op::Constant => $leaf,
            $crate::graph::Op::Elementwise($f) => $e,
            $crate::graph::Op::Arithmetic($f) => $e,
            $crate::graph::Op::Guarded($f) => $e,
            $crate::graph::Op::Select($f) => $e,
            $crate::graph::Op::Linear($f) => $e,
            $crate::graph::Op::Reduce($f) => $e,
            $crate::graph::Op::LayerNorm($f) => $e,
            $crate::graph::Op::CrossEntropy($f) => $e,
            #[cfg(feature = "conv")]
            $crate::graph::Op::View($f) => $e,
            #[cfg(feature = "conv")]
            $crate::graph::Op::Conv($f) => $e,
            #[cfg(feature = "conv")]
            $crate::graph::Op::Pool($f) => $e,
            #[cfg(feature = "conv")]
            $crate::graph::Op::BatchNorm($f) => $e,
        }
    };
}
pub(crate) use by_family;

impl<T: Scalar> Op<T> {
    /// A short, stable name of the op (`"safe_div"`, `"matmul"`, ...).
    pub fn name(&self) -> &'static str {
        by_family!(self, f => OpFamily::<T>::name(f), leaf => match self {
            Op::Parameter => "parameter",
            Op::Input => "input",
            _ => "constant",
        })
    }

    /// The nodes this op reads, in operand order (unused slots are `None`).
    pub fn inputs(&self) -> [Option<NodeId>; 3] {
        by_family!(self, f => OpFamily::<T>::inputs(f), leaf => [None; 3])
    }

    /// The inputs that receive a gradient: [`inputs`](Self::inputs) without the condition of
    /// a select, the mask of a masked division and the labels of a loss.
    pub fn differentiable_inputs(&self) -> [Option<NodeId>; 3] {
        by_family!(self, f => OpFamily::<T>::differentiable_inputs(f), leaf => [None; 3])
    }
}

impl<T> Op<T> {
    /// `(x, weight, bias)` of a fully connected layer ([`LinearOp::Linear`],
    /// [`LinearOp::LinearRelu`]).
    pub const fn linear_inputs(&self) -> Option<(NodeId, NodeId, NodeId)> {
        match self {
            Op::Linear(op) => op.layer_inputs(),
            _ => None,
        }
    }

    /// Gradient slots per value: 2 for [`LinearOp::LinearRelu`] (the output's, then the
    /// pre-activation's), 1 for every other op.
    pub const fn grad_slots_per_value(&self) -> usize {
        match self {
            Op::Linear(LinearOp::LinearRelu { .. }) => 2,
            _ => 1,
        }
    }

    /// `true` for a leaf: a parameter, an input or a constant.
    pub const fn is_leaf(&self) -> bool {
        matches!(self, Op::Parameter | Op::Input | Op::Constant)
    }
}

/// What is known of a node's values on the real line, for the domain audit: each fact holds
/// for every value of the node (for every input the graph may see). The facts form a small
/// lattice ordered by inclusion; [`Domain::meet`] keeps what two domains share.
///
/// ```
/// use safegrad::Domain;
///
/// assert!(Domain::POSITIVE.is_non_negative() && Domain::POSITIVE.is_non_zero());
/// assert_eq!(Domain::POSITIVE.meet(Domain::NON_NEGATIVE), Domain::NON_NEGATIVE);
/// assert_eq!(Domain::of_values(&[0.0f32, 2.0]), Domain::NON_NEGATIVE);
/// assert_eq!(Domain::of_values(&[f32::NAN]), Domain::UNKNOWN);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Domain {
    /// No value is `nan` or infinite.
    pub finite: bool,
    /// No value is below zero.
    pub non_negative: bool,
    /// No value is zero.
    pub non_zero: bool,
}

impl Domain {
    /// Nothing known.
    pub const UNKNOWN: Self = Self {
        finite: false,
        non_negative: false,
        non_zero: false,
    };
    /// Finite.
    pub const FINITE: Self = Self {
        finite: true,
        non_negative: false,
        non_zero: false,
    };
    /// Finite and at least zero (counts, squares, probabilities).
    pub const NON_NEGATIVE: Self = Self {
        finite: true,
        non_negative: true,
        non_zero: false,
    };
    /// Finite and never zero.
    pub const NON_ZERO: Self = Self {
        finite: true,
        non_negative: false,
        non_zero: true,
    };
    /// Finite and above zero.
    pub const POSITIVE: Self = Self {
        finite: true,
        non_negative: true,
        non_zero: true,
    };

    /// Every value finite.
    pub const fn is_finite(self) -> bool {
        self.finite
    }
    /// Every value at least zero.
    pub const fn is_non_negative(self) -> bool {
        self.non_negative
    }
    /// No value zero.
    pub const fn is_non_zero(self) -> bool {
        self.non_zero
    }
    /// Every value above zero.
    pub const fn is_positive(self) -> bool {
        self.non_negative && self.non_zero
    }

    /// Finite if `finite`, nothing else known.
    pub const fn finite_if(finite: bool) -> Self {
        Self {
            finite,
            non_negative: false,
            non_zero: false,
        }
    }

    /// The facts both domains have (the lattice's meet).
    pub const fn meet(self, other: Self) -> Self {
        Self {
            finite: self.finite && other.finite,
            non_negative: self.non_negative && other.non_negative,
            non_zero: self.non_zero && other.non_zero,
        }
    }

    /// The facts that hold for these particular values (for constants).
    pub fn of_values<T: Scalar>(values: &[T]) -> Self {
        let finite = values.iter().all(|v| v.is_finite());
        if !finite {
            return Self::UNKNOWN;
        }
        Self {
            finite,
            non_negative: values.iter().all(|&v| v >= T::ZERO),
            non_zero: values.iter().all(|&v| v != T::ZERO),
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.finite, self.non_negative, self.non_zero) {
            (true, true, true) => "positive",
            (true, true, false) => "non-negative",
            (true, false, true) => "non-zero",
            (true, false, false) => "finite",
            (false, true, true) => "positive or infinite",
            (false, true, false) => "non-negative or infinite",
            (false, false, true) => "non-zero or infinite",
            (false, false, false) => "unknown",
        };
        f.write_str(name)
    }
}

/// One recorded node: its op, its shape, where its values sit in the tape's value buffer and,
/// if it needs one, where its gradient sits in the gradient buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Node<T> {
    pub(crate) op: Op<T>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) offset: usize,
    pub(crate) grad_offset: Option<usize>,
    pub(crate) generation: u32,
    pub(crate) declared: Domain,
    /// For a parameter: how many of the recorded activations read it as a differentiable
    /// input (since the activations were last cleared).
    pub(crate) uses: u16,
}

impl<T> Node<T> {
    /// What the node computes.
    pub const fn op(&self) -> &Op<T> {
        &self.op
    }

    /// `(rows, columns)`.
    pub const fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Number of values, `rows * columns`.
    pub const fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// `true` for a node without values.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The node's slots in the tape's value buffer.
    pub const fn slots(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }

    /// `true` when the node carries a gradient: a trainable parameter, a variable, or an op
    /// with such a node among its differentiable inputs.
    pub const fn requires_grad(&self) -> bool {
        self.grad_offset.is_some()
    }

    /// The domain declared for a leaf when it was recorded (parameters are finite,
    /// constants what their values are, inputs what was declared: unknown by default);
    /// [`Domain::UNKNOWN`] for ops, whose domain the audit derives.
    pub const fn declared(&self) -> Domain {
        self.declared
    }

    /// The node's slots in the tape's gradient buffer, if it carries a gradient.
    pub fn grad_slots(&self) -> Option<Range<usize>> {
        self.grad_offset.map(|g| g..g + self.len())
    }

    /// The slots of the gradient from which the node's inputs' gradients follow: its own
    /// gradient, or for [`LinearOp::LinearRelu`] the pre-activation's, stored after it.
    pub fn input_grad_slots(&self) -> Option<Range<usize>> {
        let len = self.len();
        let skip = len * (self.op.grad_slots_per_value() - 1);
        self.grad_offset.map(|g| g + skip..g + skip + len)
    }
}
