//! The reverse sweep and the update of a training step.
//!
//! A step needs every trainable gradient once, checked and measured before anything changes.
//! [`Tape::backward_for_step`] runs the sweep of [`Tape::zero_grad`] followed by
//! [`Tape::backward`] with one difference: the gradient of a weight whose only user is a
//! one-row [`linear`](Tape::linear) node (a layer trained on one sample at a time) is the
//! outer product `x^T g` of the layer's input row and its output gradient, and the sweep
//! *holds* it in that form instead of writing it out. [`Tape::grad_sum_of_squares`] takes
//! its sum of squares from the two factors, `|x|^2 |g|^2`; [`Tape::update_trainable`] hands
//! the factors to the optimiser ([`Optimizer::update_outer`]), which for plain SGD updates
//! the weights from them directly. While held, [`Tape::grad`] computes such a gradient from
//! its factors; [`Tape::write_outer_grads`] writes it into the buffer (as
//! [`Tape::clear_activations`] and [`Tape::backward`] do first), and
//! [`Tape::drop_outer_grads`] gives it up, after which reading it is
//! [`TapeError::GradientNotKept`] until the next sweep or [`Tape::zero_grad`].
//! [`train::step`](crate::train::step) writes or drops them as
//! [`StepConfig::keep_grads`](crate::train::StepConfig::keep_grads) says.
//!
//! ```
//! use safegrad::optim::Sgd;
//! use safegrad::{Tape, Tensor, TapeError};
//!
//! let mut tape = Tape::<f32, 16, 64>::new();
//! let w = tape.parameter(&Tensor::new([[1.0, -1.0], [0.5, 2.0]]))?;
//! let b = tape.parameter(&Tensor::new([[0.0, 0.0]]))?;
//! let x = tape.input(&Tensor::new([[3.0, 4.0]]))?;
//! let y = tape.linear(x, w, b)?;
//! let loss = tape.sum(y)?;
//! assert_eq!(tape.backward_for_step(loss)?, 1); // w's gradient is [3, 4]^T [1, 1]
//! // |x|^2 |g|^2 = 25 * 2 for w, plus 2 for b.
//! assert_eq!(tape.grad_sum_of_squares(), 52.0);
//! assert_eq!(tape.grad(w)?, Tensor::new([[3.0, 3.0], [4.0, 4.0]])); // from the factors
//! tape.update_trainable(&mut Sgd::new(0.5), 1.0);
//! assert_eq!(tape.value(w)?, Tensor::new([[-0.5, -2.5], [-1.5, 0.0]]));
//! assert_eq!(tape.value(b)?, Tensor::new([[-0.5, -0.5]]));
//! tape.drop_outer_grads();
//! assert_eq!(tape.grad(w), Err(TapeError::GradientNotKept { node: w.node().0 }));
//! # Ok::<(), safegrad::TapeError>(())
//! ```

use core::ops::Range;

use heapless::Vec;

use super::backward::backward_node;
use super::{Result, Tape, Var};
use crate::error::TapeError;
use crate::graph::{Node, Op};
use crate::optim::Optimizer;
use crate::scalar::Scalar;
use crate::tensor::kernels::{set_matmul_grad_b, sum_of_squares};
use crate::tensor::Tensor;

/// Weights one sweep holds as outer products; the gradients of further ones are written as
/// any other.
pub const OUTER_CAPACITY: usize = 8;

/// A weight whose gradient is the outer product of a one-row linear node's input row and its
/// output gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outer {
    /// The weight's node.
    pub(crate) weight: usize,
    /// The linear node, its only user.
    pub(crate) node: usize,
}

/// Where the gradients of the listed weights are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Held as the factors of their outer products, which are recorded.
    Held,
    /// Given up: not in the buffer, and not computable.
    NotKept,
}

/// The weights whose gradient is not in the gradient buffer.
#[derive(Clone, Debug)]
pub(crate) struct OuterGrads {
    entries: Vec<Outer, OUTER_CAPACITY>,
    state: State,
}

impl OuterGrads {
    pub(crate) const fn new() -> Self {
        Self {
            entries: Vec::new(),
            state: State::Held,
        }
    }

    pub(crate) fn entries(&self) -> &[Outer] {
        &self.entries
    }

    pub(crate) fn is_held(&self) -> bool {
        self.state == State::Held && !self.entries.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.state = State::Held;
    }

    fn by_weight(&self, weight: usize) -> Option<&Outer> {
        self.entries.iter().find(|o| o.weight == weight)
    }
}

/// The value slots of the input of `o`'s linear node and the node's gradient slots.
fn factor_slots<T>(nodes: &[Node<T>], o: &Outer) -> Option<(Range<usize>, Range<usize>)> {
    let linear = nodes.get(o.node)?;
    let Op::Linear { x, .. } = linear.op else {
        return None;
    };
    Some((nodes.get(x.0)?.slots(), linear.grad_slots()?))
}

/// The weights of `nodes` (parameters first, `parameters` of them) whose gradient is the
/// outer product of a one-row linear node's factors: trainable, read by that node alone, its
/// input an activation (not a parameter an update could change first).
fn outer_products<T>(nodes: &[Node<T>], parameters: usize) -> Vec<Outer, OUTER_CAPACITY> {
    let mut outer: Vec<Outer, OUTER_CAPACITY> = Vec::new();
    let mut uses: Vec<usize, OUTER_CAPACITY> = Vec::new();
    for (i, node) in nodes.iter().enumerate().skip(parameters) {
        let Op::Linear { weight, x, .. } = node.op else {
            continue;
        };
        let trainable =
            weight.0 < parameters && nodes.get(weight.0).is_some_and(Node::requires_grad);
        if node.rows == 1 && node.requires_grad() && trainable && x.0 >= parameters {
            // A full list only means this weight's gradient is written as any other.
            if outer
                .push(Outer {
                    weight: weight.0,
                    node: i,
                })
                .is_ok()
            {
                let _ = uses.push(0);
            }
        }
    }
    if !outer.is_empty() {
        for node in nodes.iter().skip(parameters) {
            for id in node.op.differentiable_inputs().into_iter().flatten() {
                for (o, n) in outer.iter().zip(uses.iter_mut()) {
                    if o.weight == id.0 {
                        *n += 1;
                    }
                }
            }
        }
        let mut n = uses.iter();
        outer.retain(|_| n.next() == Some(&1));
    }
    outer
}

impl<T: Scalar, const N: usize, const S: usize, const G: usize> Tape<T, N, S, G> {
    /// The reverse sweep of a training step: the gradients of [`zero_grad`](Self::zero_grad)
    /// followed by [`backward`](Self::backward), those of the weights of one-row linear nodes
    /// held as outer products (see the [module](self) documentation). Returns how many are.
    pub fn backward_for_step(&mut self, loss: Var<1, 1>) -> Result<usize> {
        let out = *self.resolve(loss)?;
        let seed_slots = out
            .grad_slots()
            .ok_or(TapeError::NoGradient { node: loss.node.0 })?;
        let nodes = self.nodes.get(..=loss.node.0).unwrap_or(&[]);
        let outer = outer_products(nodes, self.parameter_nodes);
        for (i, node) in nodes.iter().enumerate().take(self.parameter_nodes) {
            if outer.iter().any(|o| o.weight == i) {
                continue;
            }
            if let Some(g) = node.grad_slots().and_then(|s| self.grads.get_mut(s)) {
                g.fill(T::ZERO);
            }
        }
        if let Some(g) = self
            .grads
            .get_mut(self.parameter_grad_slots..self.grads_used)
        {
            g.fill(T::ZERO);
        }
        if let Some(g) = self.grads.get_mut(seed_slots) {
            g.fill(T::ONE);
        }
        for (i, node) in nodes.iter().enumerate().rev() {
            let defer = outer.iter().any(|o| o.node == i);
            backward_node(node, nodes, &self.values, &mut self.grads, defer);
        }
        let held = outer.len();
        self.outer = OuterGrads {
            entries: outer,
            state: State::Held,
        };
        Ok(held)
    }

    /// The sum of the squares of every trainable gradient after
    /// [`backward_for_step`](Self::backward_for_step), added node by node in recording order:
    /// finite exactly when every gradient is finite and the sum does not overflow. A held
    /// outer product's part is `|x|^2 |g|^2` (its sum over the entries up to rounding).
    pub fn grad_sum_of_squares(&self) -> T {
        let mut total = T::ZERO;
        for (i, node) in self.nodes.iter().enumerate().take(self.parameter_nodes) {
            let Some(slots) = node.grad_slots() else {
                continue;
            };
            let factors = self
                .outer
                .by_weight(i)
                .filter(|_| self.outer.is_held())
                .and_then(|o| factor_slots(&self.nodes, o))
                .and_then(|(x, g)| Some((self.values.get(x)?, self.grads.get(g)?)));
            total += match factors {
                Some((x, g)) => sum_of_squares(x) * sum_of_squares(g),
                None => sum_of_squares(self.grads.get(slots).unwrap_or(&[])),
            };
        }
        total
    }

    /// Writes the gradients held as outer products into the gradient buffer, where
    /// [`parameter_grads`](Self::parameter_grads) reads them. Gradients a step did not keep
    /// stay unavailable.
    pub fn write_outer_grads(&mut self) {
        if !self.outer.is_held() {
            return;
        }
        for o in &self.outer.entries {
            let (Some(weight), Some((xs, gs))) =
                (self.nodes.get(o.weight), factor_slots(&self.nodes, o))
            else {
                continue;
            };
            let (Some(ws), Some(x)) = (weight.grad_slots(), self.values.get(xs)) else {
                continue;
            };
            // The weight's gradient slots lie before the linear node's.
            let (before, after) = self.grads.split_at_mut(gs.start.min(G));
            let (Some(out), Some(g)) = (before.get_mut(ws), after.get(..gs.len())) else {
                continue;
            };
            set_matmul_grad_b(g, x, out, x.len(), g.len());
        }
        self.outer.clear();
    }

    /// Gives up the gradients held as outer products (a step that does not keep its
    /// gradients): reading them is [`TapeError::GradientNotKept`] until the next sweep or
    /// [`zero_grad`](Self::zero_grad).
    pub fn drop_outer_grads(&mut self) {
        self.outer.state = State::NotKept;
    }

    /// Before gradients accumulate: held ones written out, ones not kept zeroed.
    pub(super) fn settle_outer_grads(&mut self) {
        if self.outer.is_held() {
            self.write_outer_grads();
            return;
        }
        for o in &self.outer.entries {
            let slots = self.nodes.get(o.weight).and_then(Node::grad_slots);
            if let Some(g) = slots.and_then(|s| self.grads.get_mut(s)) {
                g.fill(T::ZERO);
            }
        }
        self.outer.clear();
    }

    /// The gradient of the weight of `o`, from its factors while held.
    pub(super) fn outer_grad<const R: usize, const C: usize>(
        &self,
        o: &Outer,
    ) -> Result<Tensor<T, R, C>> {
        let not_kept = TapeError::GradientNotKept { node: o.weight };
        if !self.outer.is_held() {
            return Err(not_kept);
        }
        let (xs, gs) = factor_slots(&self.nodes, o).ok_or(not_kept)?;
        let (x, g) = (
            self.values.get(xs).ok_or(not_kept)?,
            self.grads.get(gs).ok_or(not_kept)?,
        );
        let mut out = Tensor::<T, R, C>::zeros();
        set_matmul_grad_b(g, x, out.as_mut_slice(), R, C);
        Ok(out)
    }

    /// Updates every trainable parameter through `optimizer`, node by node in recording
    /// order, each gradient scaled by `factor` (a clipping factor, 1 without clipping):
    /// [`Optimizer::update_outer`] for a gradient held as an outer product,
    /// [`Optimizer::update_slice`] for the others. The index of a scalar in the optimiser's
    /// state counts from 0 as in [`update_parameters`](Self::update_parameters).
    pub fn update_trainable<O: Optimizer<T>>(&mut self, optimizer: &mut O, factor: T) {
        let split = self.parameter_slots.min(S);
        let (params, activations) = self.values.split_at_mut(split);
        let grad_split = self.parameter_grad_slots.min(G);
        let (param_grads, activation_grads) = self.grads.split_at_mut(grad_split);
        let held = self.outer.is_held();
        let mut written: Vec<usize, OUTER_CAPACITY> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate().take(self.parameter_nodes) {
            let Some(grad_slots) = node.grad_slots() else {
                continue;
            };
            let first = grad_slots.start;
            let (Some(values), Some(grads)) = (
                params.get_mut(node.slots()),
                param_grads.get_mut(grad_slots),
            ) else {
                continue;
            };
            // The factors live among the activations: offsets from the splits.
            let factors = self
                .outer
                .by_weight(i)
                .filter(|_| held)
                .and_then(|o| factor_slots(&self.nodes, o))
                .and_then(|(x, g)| {
                    let x = x.start.checked_sub(split)?..x.end.checked_sub(split)?;
                    let g = g.start.checked_sub(grad_split)?..g.end.checked_sub(grad_split)?;
                    Some((activations.get(x)?, activation_grads.get(g)?))
                });
            match factors {
                Some(xg) => {
                    if optimizer.update_outer(first, values, grads, xg, factor) {
                        let _ = written.push(i);
                    }
                }
                None => optimizer.update_slice(first, values, grads, factor),
            }
        }
        // A gradient the optimiser wrote out is in the buffer now.
        self.outer.entries.retain(|o| !written.contains(&o.weight));
    }
}
