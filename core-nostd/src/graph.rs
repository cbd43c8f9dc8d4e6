//! The vocabulary of a recorded graph: node ids, the ops, and the nodes.
//!
//! These types are what an auditor or a logger reads: every node names its [`Op`], its input
//! nodes, its shape and whether it carries a gradient.

use core::fmt;
use core::ops::Range;

/// Index of a node in a tape's recording order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a node computes. Inputs are the nodes it reads; the guarded forms carry their
/// guard, so the recorded graph shows which division or logarithm is protected and how.
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
    /// `a + b`, elementwise.
    Add {
        /// Left operand.
        a: NodeId,
        /// Right operand.
        b: NodeId,
    },
    /// `a - b`, elementwise.
    Sub {
        /// Left operand.
        a: NodeId,
        /// Right operand.
        b: NodeId,
    },
    /// `a * b`, elementwise, with IEEE semantics (`0 * inf = nan`).
    Mul {
        /// Left operand.
        a: NodeId,
        /// Right operand.
        b: NodeId,
    },
    /// `-x`.
    Neg {
        /// Operand.
        x: NodeId,
    },
    /// `factor * x`.
    Scale {
        /// Operand.
        x: NodeId,
        /// The constant factor.
        factor: T,
    },
    /// `x + row` with the `1 x C` row broadcast over the rows of `x`.
    AddRow {
        /// The `R x C` operand.
        x: NodeId,
        /// The `1 x C` row.
        row: NodeId,
    },
    /// `x * row` elementwise, with the `1 x C` row broadcast over the rows of `x` (a
    /// per-feature scale).
    MulRow {
        /// The `R x C` operand.
        x: NodeId,
        /// The `1 x C` row.
        row: NodeId,
    },
    /// Normalisation of each row: `(x - mean) / sqrt(var + eps)`, the variance computed in
    /// two passes (mean first, then the mean of squared deviations), so it is never negative.
    LayerNorm {
        /// Operand.
        x: NodeId,
        /// The guard inside the square root.
        eps: T,
    },
    /// A fully connected layer: `x * weight + bias`, the `1 x C` bias added to every row
    /// (one node for a matrix product and a broadcast addition).
    Linear {
        /// The `R x K` input.
        x: NodeId,
        /// The `K x C` weights.
        weight: NodeId,
        /// The `1 x C` bias.
        bias: NodeId,
    },
    /// A fully connected layer with a ReLU: `max(x * weight + bias, 0)`, one node. Its
    /// gradient buffer holds, after the gradient of its output, that of the pre-activation
    /// (the output's where the output is positive, else 0), from which its inputs' follow.
    LinearRelu {
        /// The `R x K` input.
        x: NodeId,
        /// The `K x C` weights.
        weight: NodeId,
        /// The `1 x C` bias.
        bias: NodeId,
    },
    /// Matrix product `a * b`.
    MatMul {
        /// Left `R x K` operand.
        a: NodeId,
        /// Right `K x C` operand.
        b: NodeId,
    },
    /// Transpose.
    Transpose {
        /// Operand.
        x: NodeId,
    },
    /// `max(x, 0)`.
    Relu {
        /// Operand.
        x: NodeId,
    },
    /// `tanh(x)`.
    Tanh {
        /// Operand.
        x: NodeId,
    },
    /// `1 / (1 + e^-x)`.
    Sigmoid {
        /// Operand.
        x: NodeId,
    },
    /// `e^x`.
    Exp {
        /// Operand.
        x: NodeId,
    },
    /// Raw `ln(x)`: `-inf` at 0, `nan` below.
    Ln {
        /// Operand.
        x: NodeId,
    },
    /// Raw `sqrt(x)`: infinite gradient at 0, `nan` below.
    Sqrt {
        /// Operand.
        x: NodeId,
    },
    /// Guarded `ln(x + eps)`.
    SafeLn {
        /// Operand.
        x: NodeId,
        /// The guard.
        eps: T,
    },
    /// Guarded `sqrt(x + eps)`.
    SafeSqrt {
        /// Operand.
        x: NodeId,
        /// The guard.
        eps: T,
    },
    /// Sum of all values, a `1 x 1` node.
    Sum {
        /// Operand.
        x: NodeId,
    },
    /// Mean of all values, a `1 x 1` node.
    Mean {
        /// Operand.
        x: NodeId,
    },
    /// Stable log-sum-exp of each row, an `R x 1` node.
    LogSumExp {
        /// Operand.
        x: NodeId,
    },
    /// Mean over rows of the stable softmax cross-entropy, a `1 x 1` node. Its value is
    /// followed in the tape's buffer by the softmax of each row of the logits, which its
    /// backward reads.
    SoftmaxCrossEntropy {
        /// `R x C` logits.
        logits: NodeId,
        /// `R x 1` constant node holding the class of each row.
        targets: NodeId,
    },
    /// Raw `num / den`.
    Div {
        /// Numerator.
        num: NodeId,
        /// Denominator.
        den: NodeId,
    },
    /// `num / (den + eps)`, TorchLean's `safedivSpec`; safe for `den >= 0` only.
    SafeDiv {
        /// Numerator.
        num: NodeId,
        /// Denominator.
        den: NodeId,
        /// The guard.
        eps: T,
    },
    /// `num / (den + eps * s(den))`, `s = +1` for `den >= 0` else `-1`: finite for every
    /// finite `den`.
    SafeDivSigned {
        /// Numerator.
        num: NodeId,
        /// Denominator.
        den: NodeId,
        /// The guard.
        eps: T,
    },
    /// `where(mask, num / where(mask, den, 1), 0)`: the denominator is masked before the
    /// division.
    MaskedDiv {
        /// Numerator.
        num: NodeId,
        /// Denominator.
        den: NodeId,
        /// Nonzero where the division happens.
        mask: NodeId,
    },
    /// `weight * x` with strong zeros: exactly 0 where `weight == 0`.
    Mask {
        /// The numeric mask or weight.
        weight: NodeId,
        /// Operand.
        x: NodeId,
    },
    /// `on_true` where `cond != 0`, else `on_false`.
    Select {
        /// The condition (no gradient).
        cond: NodeId,
        /// Taken where `cond != 0`.
        on_true: NodeId,
        /// Taken where `cond == 0`.
        on_false: NodeId,
    },
    /// `1` where `x != 0`, else `0` (no gradient).
    NotZero {
        /// Operand.
        x: NodeId,
    },
}

impl<T> Op<T> {
    /// A short, stable name of the op (`"safe_div"`, `"matmul"`, ...).
    pub const fn name(&self) -> &'static str {
        match self {
            Op::Parameter => "parameter",
            Op::Input => "input",
            Op::Constant => "constant",
            Op::Add { .. } => "add",
            Op::Sub { .. } => "sub",
            Op::Mul { .. } => "mul",
            Op::Neg { .. } => "neg",
            Op::Scale { .. } => "scale",
            Op::AddRow { .. } => "add_row",
            Op::MulRow { .. } => "mul_row",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Linear { .. } => "linear",
            Op::LinearRelu { .. } => "linear_relu",
            Op::MatMul { .. } => "matmul",
            Op::Transpose { .. } => "transpose",
            Op::Relu { .. } => "relu",
            Op::Tanh { .. } => "tanh",
            Op::Sigmoid { .. } => "sigmoid",
            Op::Exp { .. } => "exp",
            Op::Ln { .. } => "ln",
            Op::Sqrt { .. } => "sqrt",
            Op::SafeLn { .. } => "safe_ln",
            Op::SafeSqrt { .. } => "safe_sqrt",
            Op::Sum { .. } => "sum",
            Op::Mean { .. } => "mean",
            Op::LogSumExp { .. } => "log_sum_exp",
            Op::SoftmaxCrossEntropy { .. } => "softmax_cross_entropy",
            Op::Div { .. } => "div",
            Op::SafeDiv { .. } => "safe_div",
            Op::SafeDivSigned { .. } => "safe_div_signed",
            Op::MaskedDiv { .. } => "masked_div",
            Op::Mask { .. } => "mask",
            Op::Select { .. } => "select",
            Op::NotZero { .. } => "not_zero",
        }
    }

    /// The nodes this op reads, in operand order (unused slots are `None`).
    pub const fn inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Op::Parameter | Op::Input | Op::Constant => [None, None, None],
            Op::Neg { x }
            | Op::Scale { x, .. }
            | Op::Transpose { x }
            | Op::Relu { x }
            | Op::Tanh { x }
            | Op::Sigmoid { x }
            | Op::Exp { x }
            | Op::Ln { x }
            | Op::Sqrt { x }
            | Op::SafeLn { x, .. }
            | Op::SafeSqrt { x, .. }
            | Op::Sum { x }
            | Op::Mean { x }
            | Op::LogSumExp { x }
            | Op::NotZero { x }
            | Op::LayerNorm { x, .. } => [Some(x), None, None],
            Op::Add { a, b } | Op::Sub { a, b } | Op::Mul { a, b } | Op::MatMul { a, b } => {
                [Some(a), Some(b), None]
            }
            Op::AddRow { x, row } | Op::MulRow { x, row } => [Some(x), Some(row), None],
            Op::SoftmaxCrossEntropy { logits, targets } => [Some(logits), Some(targets), None],
            Op::Div { num, den }
            | Op::SafeDiv { num, den, .. }
            | Op::SafeDivSigned { num, den, .. } => [Some(num), Some(den), None],
            Op::MaskedDiv { num, den, mask } => [Some(num), Some(den), Some(mask)],
            Op::Linear { x, weight, bias } | Op::LinearRelu { x, weight, bias } => {
                [Some(x), Some(weight), Some(bias)]
            }
            Op::Mask { weight, x } => [Some(weight), Some(x), None],
            Op::Select {
                cond,
                on_true,
                on_false,
            } => [Some(cond), Some(on_true), Some(on_false)],
        }
    }

    /// `(x, weight, bias)` of a fully connected layer ([`Op::Linear`], [`Op::LinearRelu`]).
    pub const fn linear_inputs(&self) -> Option<(NodeId, NodeId, NodeId)> {
        match *self {
            Op::Linear { x, weight, bias } | Op::LinearRelu { x, weight, bias } => {
                Some((x, weight, bias))
            }
            _ => None,
        }
    }

    /// Gradient slots per value: 2 for [`Op::LinearRelu`] (the output's, then the
    /// pre-activation's), 1 for every other op.
    pub const fn grad_slots_per_value(&self) -> usize {
        match self {
            Op::LinearRelu { .. } => 2,
            _ => 1,
        }
    }

    /// The inputs that receive a gradient: [`inputs`](Self::inputs) without the condition of
    /// a select, the mask of a masked division and the labels of a loss.
    pub const fn differentiable_inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Op::NotZero { .. } => [None, None, None],
            Op::Select {
                on_true, on_false, ..
            } => [Some(on_true), Some(on_false), None],
            Op::MaskedDiv { num, den, .. } => [Some(num), Some(den), None],
            Op::SoftmaxCrossEntropy { logits, .. } => [Some(logits), None, None],
            _ => self.inputs(),
        }
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

    /// The facts both domains have (the lattice's meet).
    pub const fn meet(self, other: Self) -> Self {
        Self {
            finite: self.finite && other.finite,
            non_negative: self.non_negative && other.non_negative,
            non_zero: self.non_zero && other.non_zero,
        }
    }

    /// The facts that hold for these particular values (for constants).
    pub fn of_values<T: crate::Scalar>(values: &[T]) -> Self {
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
    /// gradient, or for [`Op::LinearRelu`] the pre-activation's, stored after it.
    pub fn input_grad_slots(&self) -> Option<Range<usize>> {
        let len = self.len();
        let skip = len * (self.op.grad_slots_per_value() - 1);
        self.grad_offset.map(|g| g + skip..g + skip + len)
    }
}
