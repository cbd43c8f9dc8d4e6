//! The recorded graph (tape) and its reverse sweep.
//!
//! A [`Tape`] holds up to `N` nodes whose values and gradients live in two flat buffers of
//! `S` scalars each. Recording an op computes its value and appends a [`Node`] naming the
//! [`Op`] and its inputs; [`Tape::backward`] walks the nodes in reverse and lets each op
//! add its inputs' gradients. Nothing is allocated: a full tape returns
//! [`TapeError::NodeCapacity`] or [`TapeError::ScalarCapacity`].
//!
//! Parameters are recorded first and persist; [`Tape::clear_activations`] drops every node
//! after them, so the same tape is reused step after step. Parameter gradients accumulate
//! over calls to [`Tape::backward`] until [`Tape::zero_grad`].
//!
//! ```
//! use safegrad::{Tape, Tensor};
//!
//! // loss = sum(relu(x W + b)) for one sample, recorded afresh each step.
//! let mut tape = Tape::<f32, 16, 64>::new();
//! let w = tape.parameter(&Tensor::new([[1.0, -1.0], [0.5, 2.0]]))?;
//! let b = tape.parameter(&Tensor::new([[0.0, -0.5]]))?;
//! for _step in 0..3 {
//!     tape.clear_activations();
//!     tape.zero_grad();
//!     let x = tape.input(&Tensor::new([[2.0, 1.0]]))?;
//!     let h = tape.matmul(x, w)?;
//!     let h = tape.add_row(h, b)?;
//!     let y = tape.relu(h)?;
//!     let loss = tape.sum(y)?;
//!     tape.backward(loss)?;
//!     assert_eq!(tape.scalar(loss)?, 2.5); // relu([2.5, -0.5]) = [2.5, 0]
//! }
//! assert_eq!(tape.grad(w)?, Tensor::new([[2.0, 0.0], [1.0, 0.0]]));
//! assert_eq!(tape.grad(b)?, Tensor::new([[1.0, 0.0]]));
//! assert_eq!(tape.nodes().len(), 7); // 2 parameters + 5 activations, the same every step
//! # Ok::<(), safegrad::TapeError>(())
//! ```

use core::fmt;
use core::ops::Range;

use heapless::Vec;

use crate::error::TapeError;
use crate::ops;
use crate::scalar::{strong_mul, Scalar};
use crate::tensor::{kernels, Tensor};

/// Index of a node in a tape's recording order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A handle to an `R x C` node of a tape. It is `Copy`; the shape in its type makes
/// shape errors compile errors. A handle to an activation becomes stale when the
/// activations are cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var<const R: usize, const C: usize> {
    node: NodeId,
    generation: u32,
}

impl<const R: usize, const C: usize> Var<R, C> {
    /// The node this handle names.
    pub const fn node(&self) -> NodeId {
        self.node
    }
}

/// What a node computes. Inputs are the nodes it reads; the guarded forms carry their
/// guard, so the recorded graph shows which division or logarithm is protected and how.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op<T> {
    /// A trainable parameter: persists across steps, its gradient accumulates.
    Parameter,
    /// A data input; its gradient is computed (so inputs can be differentiated too).
    Input,
    /// A constant, e.g. class labels.
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
    /// Mean over rows of the stable softmax cross-entropy, a `1 x 1` node.
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
            | Op::NotZero { x } => [Some(x), None, None],
            Op::Add { a, b } | Op::Sub { a, b } | Op::Mul { a, b } | Op::MatMul { a, b } => {
                [Some(a), Some(b), None]
            }
            Op::AddRow { x, row } => [Some(x), Some(row), None],
            Op::SoftmaxCrossEntropy { logits, targets } => [Some(logits), Some(targets), None],
            Op::Div { num, den }
            | Op::SafeDiv { num, den, .. }
            | Op::SafeDivSigned { num, den, .. } => [Some(num), Some(den), None],
            Op::MaskedDiv { num, den, mask } => [Some(num), Some(den), Some(mask)],
            Op::Mask { weight, x } => [Some(weight), Some(x), None],
            Op::Select {
                cond,
                on_true,
                on_false,
            } => [Some(cond), Some(on_true), Some(on_false)],
        }
    }
}

/// One recorded node: its op, its shape, and where its values sit in the tape's buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Node<T> {
    op: Op<T>,
    rows: usize,
    cols: usize,
    offset: usize,
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

    /// The node's slots in the tape's value and gradient buffers.
    pub const fn slots(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// A recorded graph of at most `N` nodes and `S` scalar values (plus `S` gradients).
///
/// Its size is `2 * S` scalars plus `N` small nodes, fixed at compile time; put a large tape
/// in a `static` or on a task's stack with room for it.
pub struct Tape<T: Scalar, const N: usize, const S: usize> {
    nodes: Vec<Node<T>, N>,
    values: [T; S],
    grads: [T; S],
    used: usize,
    parameter_nodes: usize,
    parameter_slots: usize,
    generation: u32,
}

impl<T: Scalar, const N: usize, const S: usize> Default for Tape<T, N, S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Scalar, const N: usize, const S: usize> fmt::Debug for Tape<T, N, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tape")
            .field("nodes", &self.nodes.len())
            .field("node_capacity", &N)
            .field("scalars", &self.used)
            .field("scalar_capacity", &S)
            .field("parameter_nodes", &self.parameter_nodes)
            .finish()
    }
}

type Result<V> = core::result::Result<V, TapeError>;

impl<T: Scalar, const N: usize, const S: usize> Tape<T, N, S> {
    /// An empty tape.
    pub fn new() -> Self {
        Self {
            nodes: Vec::new(),
            values: [T::ZERO; S],
            grads: [T::ZERO; S],
            used: 0,
            parameter_nodes: 0,
            parameter_slots: 0,
            generation: 0,
        }
    }

    // -- bookkeeping ------------------------------------------------------------------------

    /// The recorded nodes, in recording order (parameters first).
    pub fn nodes(&self) -> &[Node<T>] {
        &self.nodes
    }

    /// The node `id`, if recorded.
    pub fn node(&self, id: NodeId) -> Option<&Node<T>> {
        self.nodes.get(id.0)
    }

    /// Scalar slots in use (values of parameters and activations).
    pub const fn scalars_used(&self) -> usize {
        self.used
    }

    /// Drops every node recorded after the parameters, invalidating their handles. The
    /// parameters, their values and their accumulated gradients stay.
    pub fn clear_activations(&mut self) {
        self.nodes.truncate(self.parameter_nodes);
        self.used = self.parameter_slots;
        self.generation = self.generation.wrapping_add(1);
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) {
        if let Some(g) = self.grads.get_mut(..self.parameter_slots) {
            g.iter_mut().for_each(|v| *v = T::ZERO);
        }
    }

    /// All parameter values, in recording order, flat (for an optimiser or a checkpoint).
    pub fn parameters(&self) -> &[T] {
        self.values.get(..self.parameter_slots).unwrap_or(&[])
    }

    /// All parameter gradients, aligned with [`parameters`](Self::parameters).
    pub fn parameter_grads(&self) -> &[T] {
        self.grads.get(..self.parameter_slots).unwrap_or(&[])
    }

    /// Parameter values (mutable) and their gradients, for an optimiser step.
    pub fn parameters_and_grads_mut(&mut self) -> (&mut [T], &[T]) {
        let n = self.parameter_slots;
        let values = self.values.get_mut(..n).unwrap_or(&mut []);
        let grads = self.grads.get(..n).unwrap_or(&[]);
        (values, grads)
    }

    /// The value of a node as a tensor.
    pub fn value<const R: usize, const C: usize>(&self, v: Var<R, C>) -> Result<Tensor<T, R, C>> {
        let slots = self.resolve(v)?;
        self.values
            .get(slots)
            .and_then(Tensor::from_slice)
            .ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// The value of a `1 x 1` node.
    pub fn scalar(&self, v: Var<1, 1>) -> Result<T> {
        let slots = self.resolve(v)?;
        self.values
            .get(slots.start)
            .copied()
            .ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// The gradient of a node from the last [`backward`](Self::backward) (accumulated over
    /// calls, for parameters).
    pub fn grad<const R: usize, const C: usize>(&self, v: Var<R, C>) -> Result<Tensor<T, R, C>> {
        let slots = self.resolve(v)?;
        self.grads
            .get(slots)
            .and_then(Tensor::from_slice)
            .ok_or(TapeError::UnknownVar { node: v.node.0 })
    }

    /// Overwrites a parameter's value (e.g. to load weights).
    pub fn set_parameter<const R: usize, const C: usize>(
        &mut self,
        v: Var<R, C>,
        value: &Tensor<T, R, C>,
    ) -> Result<()> {
        let slots = self.resolve(v)?;
        if slots.end > self.parameter_slots {
            return Err(TapeError::UnknownVar { node: v.node.0 });
        }
        let dst = self
            .values
            .get_mut(slots)
            .ok_or(TapeError::UnknownVar { node: v.node.0 })?;
        dst.copy_from_slice(value.as_slice());
        Ok(())
    }

    fn resolve<const R: usize, const C: usize>(&self, v: Var<R, C>) -> Result<Range<usize>> {
        let index = v.node.0;
        let node = self.nodes.get(index).ok_or(if v.generation == self.generation {
            TapeError::UnknownVar { node: index }
        } else {
            TapeError::StaleVar { node: index }
        })?;
        if index >= self.parameter_nodes && v.generation != self.generation {
            return Err(TapeError::StaleVar { node: index });
        }
        if node.rows != R || node.cols != C {
            return Err(TapeError::UnknownVar { node: index });
        }
        Ok(node.slots())
    }

    /// Reserves `len` fresh slots after the used ones and returns their start, without
    /// recording anything yet.
    fn reserve(&self, len: usize) -> Result<usize> {
        if self.nodes.is_full() {
            return Err(TapeError::NodeCapacity { capacity: N });
        }
        match self.used.checked_add(len) {
            Some(end) if end <= S => Ok(self.used),
            _ => Err(TapeError::ScalarCapacity {
                capacity: S,
                used: self.used,
                requested: len,
            }),
        }
    }

    /// Appends the node whose values were written at the reserved slots.
    fn commit<const R: usize, const C: usize>(&mut self, op: Op<T>) -> Result<Var<R, C>> {
        let offset = self.used;
        let index = self.nodes.len();
        self.nodes
            .push(Node {
                op,
                rows: R,
                cols: C,
                offset,
            })
            .map_err(|_| TapeError::NodeCapacity { capacity: N })?;
        self.used = offset + R * C;
        Ok(Var {
            node: NodeId(index),
            generation: self.generation,
        })
    }

    /// Splits the value buffer at the reserved slots: the recorded values (read-only) and the
    /// `len` slots the new node writes.
    fn split_for_output(&mut self, len: usize) -> Result<(&[T], &mut [T])> {
        let capacity = TapeError::ScalarCapacity {
            capacity: S,
            used: self.used,
            requested: len,
        };
        let (before, after) = self.values.split_at_mut(self.used);
        let out = after.get_mut(..len).ok_or(capacity)?;
        Ok((before, out))
    }

    fn leaf<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        value: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        self.reserve(R * C)?;
        let (_, out) = self.split_for_output(R * C)?;
        out.copy_from_slice(value.as_slice());
        self.grads
            .get_mut(self.used..self.used + R * C)
            .ok_or(TapeError::ScalarCapacity {
                capacity: S,
                used: self.used,
                requested: R * C,
            })?
            .iter_mut()
            .for_each(|g| *g = T::ZERO);
        self.commit(op)
    }

    fn map<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        x: Var<R, C>,
        f: impl Fn(T) -> T,
    ) -> Result<Var<R, C>> {
        let xs = self.resolve(x)?;
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        let xv = before.get(xs).unwrap_or(&[]);
        for (o, &v) in out.iter_mut().zip(xv) {
            *o = f(v);
        }
        self.commit(op)
    }

    fn zip<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        a: Var<R, C>,
        b: Var<R, C>,
        f: impl Fn(T, T) -> T,
    ) -> Result<Var<R, C>> {
        let (sa, sb) = (self.resolve(a)?, self.resolve(b)?);
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        let (av, bv) = (before.get(sa).unwrap_or(&[]), before.get(sb).unwrap_or(&[]));
        for ((o, &x), &y) in out.iter_mut().zip(av).zip(bv) {
            *o = f(x, y);
        }
        self.commit(op)
    }

    fn zip3<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        (a, b, c): (Var<R, C>, Var<R, C>, Var<R, C>),
        f: impl Fn(T, T, T) -> T,
    ) -> Result<Var<R, C>> {
        let (sa, sb, sc) = (self.resolve(a)?, self.resolve(b)?, self.resolve(c)?);
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        let av = before.get(sa).unwrap_or(&[]);
        let bv = before.get(sb).unwrap_or(&[]);
        let cv = before.get(sc).unwrap_or(&[]);
        for (((o, &x), &y), &z) in out.iter_mut().zip(av).zip(bv).zip(cv) {
            *o = f(x, y, z);
        }
        self.commit(op)
    }

    // -- leaves -----------------------------------------------------------------------------

    /// Records a trainable parameter. Parameters come before every activation.
    pub fn parameter<const R: usize, const C: usize>(
        &mut self,
        init: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        if self.nodes.len() != self.parameter_nodes {
            return Err(TapeError::ParameterAfterActivation);
        }
        let v = self.leaf(Op::Parameter, init)?;
        self.parameter_nodes = self.nodes.len();
        self.parameter_slots = self.used;
        Ok(v)
    }

    /// Records a data input (an activation: cleared with the others).
    pub fn input<const R: usize, const C: usize>(
        &mut self,
        value: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        self.leaf(Op::Input, value)
    }

    /// Records a constant.
    pub fn constant<const R: usize, const C: usize>(
        &mut self,
        value: &Tensor<T, R, C>,
    ) -> Result<Var<R, C>> {
        self.leaf(Op::Constant, value)
    }

    // -- elementwise ------------------------------------------------------------------------

    /// `a + b`.
    pub fn add<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.zip(Op::Add { a: a.node, b: b.node }, a, b, |x, y| x + y)
    }

    /// `a - b`.
    pub fn sub<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.zip(Op::Sub { a: a.node, b: b.node }, a, b, |x, y| x - y)
    }

    /// `a * b` elementwise, IEEE semantics in the forward (`0 * inf = nan`); use
    /// [`mask`](Self::mask) to zero lanes.
    pub fn mul<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.zip(Op::Mul { a: a.node, b: b.node }, a, b, |x, y| x * y)
    }

    /// `-x`.
    pub fn neg<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Neg { x: x.node }, x, |v| -v)
    }

    /// `factor * x`.
    pub fn scale<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        factor: T,
    ) -> Result<Var<R, C>> {
        self.map(Op::Scale { x: x.node, factor }, x, |v| factor * v)
    }

    /// `max(x, 0)`.
    pub fn relu<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Relu { x: x.node }, x, ops::relu)
    }

    /// `tanh(x)`.
    pub fn tanh<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Tanh { x: x.node }, x, T::tanh)
    }

    /// Logistic sigmoid.
    pub fn sigmoid<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Sigmoid { x: x.node }, x, ops::sigmoid)
    }

    /// `e^x`.
    pub fn exp<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Exp { x: x.node }, x, T::exp)
    }

    /// Raw `ln(x)`, recorded as raw: right when `x > 0` is known.
    pub fn ln<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Ln { x: x.node }, x, T::ln)
    }

    /// Raw `sqrt(x)`, recorded as raw: its gradient is infinite at 0.
    pub fn sqrt<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Sqrt { x: x.node }, x, T::sqrt)
    }

    /// `ln(x + eps)` with the default epsilon: finite with a finite gradient for `x >= 0`.
    pub fn safe_ln<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.safe_ln_eps(x, T::DEFAULT_EPS)
    }

    /// `ln(x + eps)` with a chosen epsilon.
    pub fn safe_ln_eps<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        self.map(Op::SafeLn { x: x.node, eps }, x, |v| ops::safe_ln(v, eps))
    }

    /// `sqrt(x + eps)` with the default epsilon: finite gradient for `x >= 0`.
    pub fn safe_sqrt<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.safe_sqrt_eps(x, T::DEFAULT_EPS)
    }

    /// `sqrt(x + eps)` with a chosen epsilon.
    pub fn safe_sqrt_eps<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        self.map(Op::SafeSqrt { x: x.node, eps }, x, |v| ops::safe_sqrt(v, eps))
    }

    // -- division, masks, selection ---------------------------------------------------------

    /// Raw `num / den`, recorded as raw: right when `den != 0` is known.
    pub fn div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>> {
        let op = Op::Div {
            num: num.node,
            den: den.node,
        };
        self.zip(op, num, den, |a, b| a / b)
    }

    /// `num / (den + eps)` with the default epsilon (TorchLean's `safedivSpec`). Safe only
    /// for `den >= 0`; for a denominator of either sign use
    /// [`safe_div_signed`](Self::safe_div_signed).
    pub fn safe_div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.safe_div_eps(num, den, T::DEFAULT_EPS)
    }

    /// [`safe_div`](Self::safe_div) with a chosen epsilon.
    pub fn safe_div_eps<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        let op = Op::SafeDiv {
            num: num.node,
            den: den.node,
            eps,
        };
        self.zip(op, num, den, |a, b| ops::safe_div(a, b, eps))
    }

    /// `num / (den + eps * s(den))`, `s = +1` for `den >= 0` (including `-0.0`) else `-1`:
    /// finite for every finite `den`. Default epsilon.
    pub fn safe_div_signed<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.safe_div_signed_eps(num, den, T::DEFAULT_EPS)
    }

    /// [`safe_div_signed`](Self::safe_div_signed) with a chosen epsilon.
    pub fn safe_div_signed_eps<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        let op = Op::SafeDivSigned {
            num: num.node,
            den: den.node,
            eps,
        };
        self.zip(op, num, den, |a, b| ops::safe_div_signed(a, b, eps))
    }

    /// `num / den` where `mask != 0`, else `0`, with the denominator masked *before* the
    /// division (PyTorch's documented fix): masked lanes never divide.
    pub fn masked_div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        mask: Var<R, C>,
    ) -> Result<Var<R, C>> {
        let op = Op::MaskedDiv {
            num: num.node,
            den: den.node,
            mask: mask.node,
        };
        self.zip3(op, (num, den, mask), ops::masked_div)
    }

    /// `weight * x` with strong zeros: exactly 0, with exactly 0 gradient to `x`, where
    /// `weight == 0`, even for `x = inf` or `nan`.
    pub fn mask<const R: usize, const C: usize>(
        &mut self,
        weight: Var<R, C>,
        x: Var<R, C>,
    ) -> Result<Var<R, C>> {
        let op = Op::Mask {
            weight: weight.node,
            x: x.node,
        };
        self.zip(op, weight, x, ops::mask)
    }

    /// `on_true` where `cond != 0`, else `on_false`; the branch not taken gets exactly zero
    /// gradient, the condition none.
    pub fn select<const R: usize, const C: usize>(
        &mut self,
        cond: Var<R, C>,
        on_true: Var<R, C>,
        on_false: Var<R, C>,
    ) -> Result<Var<R, C>> {
        let op = Op::Select {
            cond: cond.node,
            on_true: on_true.node,
            on_false: on_false.node,
        };
        self.zip3(op, (cond, on_true, on_false), ops::select)
    }

    /// `1` where `x != 0`, else `0`: a condition or mask derived from data (no gradient).
    pub fn not_zero<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::NotZero { x: x.node }, x, ops::not_zero)
    }

    // -- shapes and reductions --------------------------------------------------------------

    /// `x + row`, the `1 x C` row added to every row of `x` (a bias).
    pub fn add_row<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        row: Var<1, C>,
    ) -> Result<Var<R, C>> {
        let (sx, sr) = (self.resolve(x)?, self.resolve(row)?);
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::add_row(
            before.get(sx).unwrap_or(&[]),
            before.get(sr).unwrap_or(&[]),
            out,
        );
        self.commit(Op::AddRow {
            x: x.node,
            row: row.node,
        })
    }

    /// Matrix product `a (R x K) * b (K x C)`.
    ///
    /// ```compile_fail
    /// use safegrad::{Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, 8, 64>::new();
    /// let a = tape.input(&Tensor::<f32, 2, 3>::zeros()).unwrap();
    /// let b = tape.input(&Tensor::<f32, 2, 3>::zeros()).unwrap();
    /// let _ = tape.matmul(a, b); // inner dimensions 3 and 2 differ
    /// ```
    pub fn matmul<const R: usize, const K: usize, const C: usize>(
        &mut self,
        a: Var<R, K>,
        b: Var<K, C>,
    ) -> Result<Var<R, C>> {
        let (sa, sb) = (self.resolve(a)?, self.resolve(b)?);
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::matmul(
            before.get(sa).unwrap_or(&[]),
            before.get(sb).unwrap_or(&[]),
            out,
            K,
            C,
        );
        self.commit(Op::MatMul {
            a: a.node,
            b: b.node,
        })
    }

    /// Transpose.
    pub fn transpose<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<C, R>> {
        let sx = self.resolve(x)?;
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::transpose(before.get(sx).unwrap_or(&[]), out, R, C);
        self.commit(Op::Transpose { x: x.node })
    }

    fn reduce<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        x: Var<R, C>,
        f: impl Fn(&[T]) -> T,
    ) -> Result<Var<1, 1>> {
        let sx = self.resolve(x)?;
        self.reserve(1)?;
        let (before, out) = self.split_for_output(1)?;
        let value = f(before.get(sx).unwrap_or(&[]));
        out.iter_mut().for_each(|o| *o = value);
        self.commit(op)
    }

    /// Sum of all values.
    pub fn sum<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<1, 1>> {
        self.reduce(Op::Sum { x: x.node }, x, kernels::sum)
    }

    /// Mean of all values.
    pub fn mean<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<1, 1>> {
        let n = T::from_usize(R * C);
        self.reduce(Op::Mean { x: x.node }, x, |v| kernels::sum(v) / n)
    }

    /// Stable log-sum-exp of each row.
    pub fn log_sum_exp<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, 1>> {
        let sx = self.resolve(x)?;
        self.reserve(R)?;
        let (before, out) = self.split_for_output(R)?;
        let xv = before.get(sx).unwrap_or(&[]);
        if C > 0 {
            for (o, row) in out.iter_mut().zip(xv.chunks_exact(C)) {
                *o = ops::log_sum_exp(row);
            }
        } else {
            out.iter_mut().for_each(|o| *o = T::NEG_INFINITY);
        }
        self.commit(Op::LogSumExp { x: x.node })
    }

    /// Mean over the `R` rows of the softmax cross-entropy of each row of `logits` against
    /// its class in `targets`, in the stable form `ln(sum(exp(z - m))) - (z_t - m)`.
    /// A label outside `0..C` is rejected before anything is recorded.
    pub fn softmax_cross_entropy<const R: usize, const C: usize>(
        &mut self,
        logits: Var<R, C>,
        targets: &[usize; R],
    ) -> Result<Var<1, 1>> {
        let sz = self.resolve(logits)?;
        if let Some((row, &label)) = targets.iter().enumerate().find(|(_, &t)| t >= C) {
            return Err(TapeError::LabelOutOfRange {
                row,
                label,
                classes: C,
            });
        }
        // Labels are recorded as a constant node (class indices are exact in f32 up to
        // 2^24), followed by the loss node.
        if self.nodes.len() + 2 > N {
            return Err(TapeError::NodeCapacity { capacity: N });
        }
        self.reserve(R + 1)?;
        let labels = Tensor::<T, R, 1>::from_fn(|r, _| {
            T::from_usize(targets.get(r).copied().unwrap_or_default())
        });
        let t = self.leaf(Op::Constant, &labels)?;
        let (before, out) = self.split_for_output(1)?;
        let zv = before.get(sz).unwrap_or(&[]);
        let mut total = T::ZERO;
        if C > 0 {
            for (row, &target) in zv.chunks_exact(C).zip(targets) {
                total += ops::softmax_cross_entropy(row, target).unwrap_or(T::ZERO);
            }
        }
        out.iter_mut()
            .for_each(|o| *o = total / T::from_usize(R));
        self.commit(Op::SoftmaxCrossEntropy {
            logits: logits.node,
            targets: t.node,
        })
    }

    // -- reverse sweep ----------------------------------------------------------------------

    /// Computes the gradient of the `1 x 1` node `loss` with respect to every node recorded
    /// before it. Activation gradients are overwritten; parameter gradients accumulate.
    pub fn backward(&mut self, loss: Var<1, 1>) -> Result<()> {
        self.backward_with_seed(loss, &Tensor::full(T::ONE))
    }

    /// Reverse sweep from any node with a given upstream gradient `seed` (a
    /// vector-Jacobian product).
    pub fn backward_with_seed<const R: usize, const C: usize>(
        &mut self,
        output: Var<R, C>,
        seed: &Tensor<T, R, C>,
    ) -> Result<()> {
        let slots = self.resolve(output)?;
        if let Some(g) = self.grads.get_mut(self.parameter_slots..self.used) {
            g.iter_mut().for_each(|v| *v = T::ZERO);
        }
        if let Some(g) = self.grads.get_mut(slots) {
            g.copy_from_slice(seed.as_slice());
        }
        let nodes = self.nodes.get(..=output.node.0).unwrap_or(&[]);
        for node in nodes.iter().rev() {
            backward_node(node, nodes, &self.values, &mut self.grads);
        }
        Ok(())
    }
}

/// Slots of an input node, or an empty range for an impossible id.
fn slots_of<T>(nodes: &[Node<T>], id: NodeId) -> Range<usize> {
    nodes.get(id.0).map_or(0..0, Node::slots)
}

/// The output's gradient (read) and an input's gradient (written). Inputs are always
/// recorded before their output, so their slots lie before the output's.
fn split_grads<'g, T>(
    grads: &'g mut [T],
    out: &Node<T>,
    input: Range<usize>,
) -> (&'g [T], &'g mut [T]) {
    let (before, after) = grads.split_at_mut(out.offset.min(grads.len()));
    let g_out: &[T] = after.get(..out.len()).unwrap_or(&[]);
    let g_in = before.get_mut(input).unwrap_or(&mut []);
    (g_out, g_in)
}

/// Adds `f(g, p, q, r)` to each gradient of `target`, lane by lane.
fn accumulate<T: Scalar>(
    grads: &mut [T],
    out: &Node<T>,
    target: Range<usize>,
    (p, q, r): (&[T], &[T], &[T]),
    f: impl Fn(T, T, T, T) -> T,
) {
    let (g_out, g_in) = split_grads(grads, out, target);
    for ((((gi, &g), &pv), &qv), &rv) in g_in.iter_mut().zip(g_out).zip(p).zip(q).zip(r) {
        *gi += f(g, pv, qv, rv);
    }
}

/// Adds one node's contribution to the gradients of its inputs.
fn backward_node<T: Scalar>(out: &Node<T>, nodes: &[Node<T>], values: &[T], grads: &mut [T]) {
    let val = |id: NodeId| values.get(slots_of(nodes, id)).unwrap_or(&[]);
    let y = values.get(out.slots()).unwrap_or(&[]);
    let s = |id: NodeId| slots_of(nodes, id);
    match out.op {
        Op::Parameter | Op::Input | Op::Constant | Op::NotZero { .. } => {}
        Op::Add { a, b } => {
            accumulate(grads, out, s(a), (y, y, y), |g, _, _, _| g);
            accumulate(grads, out, s(b), (y, y, y), |g, _, _, _| g);
        }
        Op::Sub { a, b } => {
            accumulate(grads, out, s(a), (y, y, y), |g, _, _, _| g);
            accumulate(grads, out, s(b), (y, y, y), |g, _, _, _| -g);
        }
        Op::Mul { a, b } => {
            let (av, bv) = (val(a), val(b));
            accumulate(grads, out, s(a), (bv, y, y), |g, b, _, _| strong_mul(g, b));
            accumulate(grads, out, s(b), (av, y, y), |g, a, _, _| strong_mul(g, a));
        }
        Op::Neg { x } => accumulate(grads, out, s(x), (y, y, y), |g, _, _, _| -g),
        Op::Scale { x, factor } => {
            accumulate(grads, out, s(x), (y, y, y), |g, _, _, _| {
                strong_mul(g, factor)
            });
        }
        Op::Relu { x } => {
            accumulate(grads, out, s(x), (val(x), y, y), |g, x, _, _| {
                ops::relu_grad(g, x)
            });
        }
        Op::Tanh { x } => {
            accumulate(grads, out, s(x), (y, y, y), |g, y, _, _| ops::tanh_grad(g, y));
        }
        Op::Sigmoid { x } => accumulate(grads, out, s(x), (y, y, y), |g, y, _, _| {
            ops::sigmoid_grad(g, y)
        }),
        Op::Exp { x } => {
            accumulate(grads, out, s(x), (y, y, y), |g, y, _, _| ops::exp_grad(g, y));
        }
        Op::Ln { x } => {
            accumulate(grads, out, s(x), (val(x), y, y), |g, x, _, _| {
                ops::ln_grad(g, x)
            });
        }
        Op::Sqrt { x } | Op::SafeSqrt { x, .. } => {
            accumulate(grads, out, s(x), (y, y, y), |g, y, _, _| ops::sqrt_grad(g, y));
        }
        Op::SafeLn { x, eps } => {
            accumulate(grads, out, s(x), (val(x), y, y), |g, x, _, _| {
                ops::safe_ln_grad(g, x, eps)
            });
        }
        Op::Div { num, den } => {
            let args = (val(num), val(den), y);
            accumulate(grads, out, s(num), args, |g, n, d, _| ops::div_grad(g, n, d).0);
            accumulate(grads, out, s(den), args, |g, n, d, _| ops::div_grad(g, n, d).1);
        }
        Op::SafeDiv { num, den, eps } => {
            let args = (val(num), val(den), y);
            accumulate(grads, out, s(num), args, |g, n, d, _| {
                ops::safe_div_grad(g, n, d, eps).0
            });
            accumulate(grads, out, s(den), args, |g, n, d, _| {
                ops::safe_div_grad(g, n, d, eps).1
            });
        }
        Op::SafeDivSigned { num, den, eps } => {
            let args = (val(num), val(den), y);
            accumulate(grads, out, s(num), args, |g, n, d, _| {
                ops::safe_div_signed_grad(g, n, d, eps).0
            });
            accumulate(grads, out, s(den), args, |g, n, d, _| {
                ops::safe_div_signed_grad(g, n, d, eps).1
            });
        }
        Op::MaskedDiv { num, den, mask } => {
            let args = (val(num), val(den), val(mask));
            accumulate(grads, out, s(num), args, |g, n, d, m| {
                ops::masked_div_grad(g, n, d, m).0
            });
            accumulate(grads, out, s(den), args, |g, n, d, m| {
                ops::masked_div_grad(g, n, d, m).1
            });
        }
        Op::Mask { weight, x } => {
            let args = (val(weight), val(x), y);
            accumulate(grads, out, s(weight), args, |g, w, x, _| {
                ops::mask_grad(g, w, x).0
            });
            accumulate(grads, out, s(x), args, |g, w, x, _| ops::mask_grad(g, w, x).1);
        }
        Op::Select {
            cond,
            on_true,
            on_false,
        } => {
            let args = (val(cond), y, y);
            accumulate(grads, out, s(on_true), args, |g, c, _, _| {
                ops::select_grad(g, c).0
            });
            accumulate(grads, out, s(on_false), args, |g, c, _, _| {
                ops::select_grad(g, c).1
            });
        }
        Op::AddRow { x, row } => {
            accumulate(grads, out, s(x), (y, y, y), |g, _, _, _| g);
            let (g_out, g_row) = split_grads(grads, out, s(row));
            if !g_row.is_empty() {
                for g_out_row in g_out.chunks_exact(g_row.len()) {
                    for (gr, &g) in g_row.iter_mut().zip(g_out_row) {
                        *gr += g;
                    }
                }
            }
        }
        Op::MatMul { a, b } => {
            let (inner, cols) = (nodes.get(a.0).map_or(0, |n| n.cols), out.cols);
            let (g_out, g_a) = split_grads(grads, out, s(a));
            ops::matmul_grad_a(g_out, val(b), g_a, inner, cols);
            let (g_out, g_b) = split_grads(grads, out, s(b));
            ops::matmul_grad_b(g_out, val(a), g_b, inner, cols);
        }
        Op::Transpose { x } => {
            // out is cols x rows of x; out[c][r] = x[r][c].
            let (x_rows, x_cols) = (out.cols, out.rows);
            let (g_out, g_x) = split_grads(grads, out, s(x));
            if x_cols > 0 {
                for (r, g_row) in g_x.chunks_exact_mut(x_cols).enumerate().take(x_rows) {
                    for (c, gx) in g_row.iter_mut().enumerate() {
                        *gx += g_out.get(c * x_rows + r).copied().unwrap_or(T::ZERO);
                    }
                }
            }
        }
        Op::Sum { x } | Op::Mean { x } => {
            let n = T::from_usize(nodes.get(x.0).map_or(1, Node::len));
            let is_mean = matches!(out.op, Op::Mean { .. });
            let (g_out, g_x) = split_grads(grads, out, s(x));
            let g = g_out.first().copied().unwrap_or(T::ZERO);
            let g = if is_mean { strong_mul(g, T::ONE / n) } else { g };
            g_x.iter_mut().for_each(|gx| *gx += g);
        }
        Op::LogSumExp { x } => {
            let cols = nodes.get(x.0).map_or(0, |n| n.cols);
            let xv = val(x);
            let (g_out, g_x) = split_grads(grads, out, s(x));
            if cols > 0 {
                for (((g_row, x_row), &g), &lse) in g_x
                    .chunks_exact_mut(cols)
                    .zip(xv.chunks_exact(cols))
                    .zip(g_out)
                    .zip(y)
                {
                    ops::log_sum_exp_grad(g, x_row, lse, g_row);
                }
            }
        }
        Op::SoftmaxCrossEntropy { logits, targets } => {
            let (rows, cols) = nodes.get(logits.0).map_or((0, 0), Node::shape);
            let (zv, tv) = (val(logits), val(targets));
            let (g_out, g_z) = split_grads(grads, out, s(logits));
            let g = g_out.first().copied().unwrap_or(T::ZERO);
            let g = strong_mul(g, T::ONE / T::from_usize(rows));
            if cols > 0 {
                for ((g_row, z_row), &t) in g_z
                    .chunks_exact_mut(cols)
                    .zip(zv.chunks_exact(cols))
                    .zip(tv)
                {
                    let target = (0..cols).find(|&j| T::from_usize(j) == t).unwrap_or(cols);
                    ops::softmax_cross_entropy_grad(g, z_row, target, g_row);
                }
            }
        }
    }
}
