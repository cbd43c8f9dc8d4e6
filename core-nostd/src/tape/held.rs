//! Gradients a training step holds as outer products (crate-private: the fast path of
//! [`train::step`](crate::train::step)).
//!
//! A step needs every trainable gradient once, checked and measured before anything changes.
//! [`Tape::backward_for_step`] runs the sweep of [`Tape::zero_grad`] followed by
//! [`Tape::backward`] with one difference. The gradient of a weight whose only user is a
//! one-row fully connected node (a layer trained on one sample at a time) is the outer
//! product `x^T g` of the layer's input row `x` and its output gradient `g`, and that of the
//! node's bias, if the node is its only user too, is `g` itself: the sweep *holds* them in
//! that form instead of writing them out. [`Tape::grad_sum_of_squares`] takes their sums of
//! squares from the factors (`|x|^2 |g|^2` and `|g|^2`); the step's update reads the factors
//! ([`Tape::update_trainable`]), and plain SGD updates the weights from them directly. While
//! held, [`Tape::grad`] computes such a gradient from its factors;
//! [`Tape::write_outer_grads`] writes it into the buffer (as [`Tape::clear_activations`] and
//! [`Tape::backward`] do first), and [`Tape::drop_outer_grads`] gives it up (the step's
//! update consumed it), after which reading it is [`TapeError::GradientConsumed`] until the
//! next sweep or [`Tape::zero_grad`].

use core::ops::Range;

use heapless::Vec;

use super::sweep::{sweep, Defer};
use super::{Capacity, Result, Tape, Values, Var};
use crate::error::TapeError;
use crate::graph::Node;
use crate::scalar::Scalar;
use crate::tensor::kernels::{self, set_matmul_grad_b, sum_of_squares};
use crate::tensor::Tensor;

/// How a training step updates the trainable parameters from their gradients (an
/// optimiser, seen by the tape).
pub(crate) trait Update<T> {
    /// Updates the scalars `first..` from their gradients scaled by `factor`.
    fn slice(&mut self, first: usize, values: &mut [T], grads: &[T], factor: T);

    /// Updates a block of weights whose gradient is the outer product `x^T g`, scaled by
    /// `factor`. Returns `true` if it wrote the gradient into `grads`.
    fn outer(
        &mut self,
        first: usize,
        values: &mut [T],
        grads: &mut [T],
        factors: Factors<'_, T>,
        factor: T,
    ) -> bool;
}

/// A gradient held as an outer product `x^T g`: the input row `x` of a layer trained on one
/// sample and its output gradient `g`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Factors<'a, T> {
    /// The layer's input row: one row of the gradient per value.
    pub(crate) x: &'a [T],
    /// The layer's output gradient: one column of the gradient per value.
    pub(crate) g: &'a [T],
    /// Every value of `x` and `g` is known to be finite (the step measured their sums of
    /// squares).
    pub(crate) finite: bool,
}

/// Layers one sweep holds the gradients of; further ones get theirs written as any other.
pub(crate) const OUTER_CAPACITY: usize = 8;

/// A one-row linear node whose weight's gradient is held as the outer product of its input
/// row and its output gradient (and its bias's, if held, as the output gradient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outer {
    /// The weight's node.
    pub(crate) weight: usize,
    /// The linear node, its only user.
    pub(crate) node: usize,
    /// The bias's node, if the linear node is its only user too.
    pub(crate) bias: Option<usize>,
}

/// What of an [`Outer`] a parameter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The weight: gradient `x^T g`.
    Weight,
    /// The bias: gradient `g`.
    Bias,
}

/// Where the gradients of the listed parameters are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Held as the factors, which are recorded.
    Held,
    /// Given up: not in the buffer, and not computable.
    NotKept,
}

/// The parameters whose gradient is not in the gradient buffer.
#[derive(Clone, Debug)]
pub(crate) struct OuterGrads {
    entries: Vec<Outer, OUTER_CAPACITY>,
    /// Bit `p` set for each parameter node `p < 32` whose gradient an entry holds (a
    /// 32-bit word, one register on a Cortex-M).
    mask: u32,
    state: State,
    /// Their factors were found finite by [`Tape::grad_sum_of_squares`].
    finite: bool,
}

impl OuterGrads {
    pub(crate) const fn new() -> Self {
        Self {
            entries: Vec::new(),
            mask: 0,
            state: State::Held,
            finite: false,
        }
    }

    pub(crate) fn is_held(&self) -> bool {
        self.state == State::Held && !self.entries.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.mask = 0;
        self.state = State::Held;
        self.finite = false;
    }

    /// `true` when an entry holds parameter node `p`'s gradient.
    #[inline]
    pub(crate) fn holds(&self, p: usize) -> bool {
        if p < 32 {
            (self.mask >> p) & 1 != 0
        } else {
            self.find(p).is_some()
        }
    }

    /// How many of the parameter nodes `0..n` a loop that passes over held gradients (all of
    /// them held if `held`) must visit: none when an entry holds every one (a batch-1 step of
    /// a tuple of layers, where three such loops cost the host about 280 instructions,
    /// `callgrind` on the host bench). On bare-metal targets the loops visit them all: the
    /// shortcut made a Cortex-M4F's `train::step` 160 bytes longer.
    pub(crate) fn unheld_len(&self, held: bool, n: usize) -> usize {
        let every = if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
        let all_held = held && n <= 32 && self.mask == every;
        if all_held && !cfg!(target_os = "none") {
            0
        } else {
            n
        }
    }

    /// Sets the mask from the entries.
    fn refresh_mask(&mut self) {
        let bit = |p: usize| if p < 32 { 1u32 << p } else { 0 };
        self.mask = self
            .entries
            .iter()
            .fold(0, |m, o| m | bit(o.weight) | o.bias.map_or(0, bit));
    }

    /// The entry holding parameter node `p`'s gradient, and what of it `p` is.
    pub(crate) fn find(&self, p: usize) -> Option<(&Outer, Part)> {
        self.entries.iter().find_map(|o| {
            if o.weight == p {
                Some((o, Part::Weight))
            } else if o.bias == Some(p) {
                Some((o, Part::Bias))
            } else {
                None
            }
        })
    }

    /// The first parameter node whose gradient is not in the buffer.
    pub(crate) fn first_node(&self) -> Option<usize> {
        self.entries.first().map(|o| o.weight)
    }
}

/// The value slots of the input of `o`'s linear node and the gradient slots its inputs'
/// gradients follow from.
fn factor_slots<T>(nodes: &[Node<T>], o: &Outer) -> Option<(Range<usize>, Range<usize>)> {
    let linear = nodes.get(o.node)?;
    let (x, _, _) = linear.op.linear_inputs()?;
    Some((nodes.get(x.0)?.slots(), linear.input_grad_slots()?))
}

/// Fills `outer` with the one-row linear nodes of `nodes` (parameters first, `parameters` of
/// them) whose trainable weight they alone read, their input an activation (not a parameter
/// an update could change first). A full list only means that further layers get their
/// gradients written as any other.
fn find_outer_products<T>(
    nodes: &[Node<T>],
    parameters: usize,
    outer: &mut Vec<Outer, OUTER_CAPACITY>,
) {
    outer.clear();
    let only_user = |p: usize| {
        p < parameters
            && nodes
                .get(p)
                .is_some_and(|n| n.requires_grad() && n.uses == 1)
    };
    for (i, node) in nodes.iter().enumerate().skip(parameters) {
        let Some((x, weight, bias)) = node.op.linear_inputs() else {
            continue;
        };
        if node.rows == 1 && node.requires_grad() && x.0 >= parameters && only_user(weight.0) {
            let entry = Outer {
                weight: weight.0,
                node: i,
                bias: only_user(bias.0).then_some(bias.0),
            };
            if outer.push(entry).is_err() {
                return;
            }
        }
    }
}

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// The reverse sweep of a training step: the gradients of [`zero_grad`](Self::zero_grad)
    /// followed by [`backward`](Self::backward), those of the parameters of one-row linear
    /// nodes held as factors (see the [module](self) documentation). Returns how many layers
    /// are held so.
    pub(crate) fn backward_for_step(&mut self, loss: Var<1, 1>) -> Result<usize> {
        let out = *self.resolve(loss)?;
        let seed_slots = out
            .grad_slots()
            .ok_or(TapeError::NoGradient { node: loss.node.0 })?;
        let nodes = self.nodes.get(..=loss.node.0).unwrap_or(&[]);
        self.outer.state = State::Held;
        self.outer.finite = false;
        find_outer_products(nodes, self.parameter_nodes, &mut self.outer.entries);
        self.outer.refresh_mask();
        let outer = &self.outer;
        let unheld = outer.unheld_len(true, self.parameter_nodes);
        for (i, node) in nodes.iter().enumerate().take(unheld) {
            if outer.holds(i) {
                continue;
            }
            if let Some(g) = node.grad_slots().and_then(|s| self.grads.get_mut(s)) {
                kernels::fill(g, T::ZERO);
            }
        }
        if let Some(g) = self
            .grads
            .get_mut(self.parameter_grad_slots..self.grads_used)
        {
            kernels::fill(g, T::ZERO);
        }
        if let Some(g) = self.grads.get_mut(seed_slots) {
            g.fill(T::ONE);
        }
        self.swept = true;
        let values = Values::new(&self.values, self.in_place.unwrap_or(&[]));
        let defer = |i: usize| match nodes.get(i).and_then(|n| n.op.linear_inputs()) {
            Some(_) => outer
                .entries
                .iter()
                .find(|o| o.node == i)
                .map_or(Defer::NOTHING, |o| Defer {
                    weight: true,
                    bias: o.bias.is_some(),
                }),
            None => Defer::NOTHING,
        };
        sweep(nodes, values, &mut self.grads, defer);
        Ok(outer.entries.len())
    }

    /// The sum of the squares of every trainable gradient after
    /// [`backward_for_step`](Self::backward_for_step), added node by node in recording order:
    /// finite exactly when every gradient is finite and the sum does not overflow. A held
    /// weight's part is `|x|^2 |g|^2` (its sum over the entries up to rounding), a held
    /// bias's `|g|^2`; when the total is finite, so is every factor, and the update need not
    /// check them again.
    pub(crate) fn grad_sum_of_squares(&mut self) -> T {
        let mut total = T::ZERO;
        let held = self.outer.is_held();
        let unheld = self.outer.unheld_len(held, self.parameter_nodes);
        for (i, node) in self.nodes.iter().enumerate().take(unheld) {
            if held && self.outer.holds(i) {
                continue;
            }
            if let Some(g) = node.grad_slots().and_then(|s| self.grads.get(s)) {
                total += sum_of_squares(g);
            }
        }
        if held {
            // Then the held layers, in recording order.
            for o in &self.outer.entries {
                let factors = factor_slots(&self.nodes, o)
                    .and_then(|(x, g)| Some((self.view().get(x)?, self.grads.get(g)?)));
                let Some((x, g)) = factors else {
                    total += T::INFINITY;
                    continue;
                };
                let g_squares = sum_of_squares(g);
                total += sum_of_squares(x) * g_squares;
                if o.bias.is_some() {
                    total += g_squares;
                }
            }
        }
        self.outer.finite = total.is_finite();
        total
    }

    /// Writes the gradients held as factors into the gradient buffer, where
    /// [`parameter_grads`](Self::parameter_grads) reads them. Gradients a step did not keep
    /// stay unavailable.
    pub(crate) fn write_outer_grads(&mut self) {
        if !self.outer.is_held() {
            return;
        }
        for o in &self.outer.entries {
            let Some((xs, gs)) = factor_slots(&self.nodes, o) else {
                continue;
            };
            let Some(x) = Values::new(&self.values, self.in_place.unwrap_or(&[])).get(xs) else {
                continue;
            };
            // The parameters' gradient slots lie before the linear node's.
            let (before, after) = self.grads.split_at_mut(gs.start.min(Mem::GRADIENTS));
            let Some(g) = after.get(..gs.len()) else {
                continue;
            };
            let weight = self.nodes.get(o.weight).and_then(Node::grad_slots);
            if let Some(out) = weight.and_then(|s| before.get_mut(s)) {
                set_matmul_grad_b(g, x, out, x.len(), g.len());
            }
            let bias = o
                .bias
                .and_then(|b| self.nodes.get(b))
                .and_then(Node::grad_slots);
            if let Some(out) = bias.and_then(|s| before.get_mut(s)) {
                out.copy_from_slice(g);
            }
        }
        self.outer.clear();
    }

    /// Gives up the gradients held as factors (a step that does not keep its gradients):
    /// reading them is [`TapeError::GradientConsumed`] until the next sweep or
    /// [`zero_grad`](Self::zero_grad).
    pub(crate) fn drop_outer_grads(&mut self) {
        self.outer.state = State::NotKept;
    }

    /// Before gradients accumulate: held ones written out, ones not kept zeroed.
    pub(super) fn settle_outer_grads(&mut self) {
        if self.outer.is_held() {
            self.write_outer_grads();
            return;
        }
        for o in &self.outer.entries {
            for p in [Some(o.weight), o.bias].into_iter().flatten() {
                let slots = self.nodes.get(p).and_then(Node::grad_slots);
                if let Some(g) = slots.and_then(|s| self.grads.get_mut(s)) {
                    g.fill(T::ZERO);
                }
            }
        }
        self.outer.clear();
    }

    /// The gradient of parameter `p` of `o`, from the factors while held.
    pub(super) fn held_grad<const R: usize, const C: usize>(
        &self,
        o: &Outer,
        part: Part,
        p: usize,
    ) -> Result<Tensor<T, R, C>> {
        let not_kept = TapeError::GradientConsumed { node: p };
        if !self.outer.is_held() {
            return Err(not_kept);
        }
        let (xs, gs) = factor_slots(&self.nodes, o).ok_or(not_kept)?;
        let (x, g) = (
            self.view().get(xs).ok_or(not_kept)?,
            self.grads.get(gs).ok_or(not_kept)?,
        );
        match part {
            Part::Weight => {
                let mut out = Tensor::<T, R, C>::zeros();
                set_matmul_grad_b(g, x, out.as_mut_slice(), R, C);
                Ok(out)
            }
            Part::Bias => Tensor::from_slice(g).ok_or(not_kept),
        }
    }

    /// Updates every trainable parameter through `rule`, node by node in recording order,
    /// each gradient scaled by `factor` (a clipping factor, 1 without clipping):
    /// [`Update::outer`] for a weight whose gradient is held as an outer product,
    /// [`Update::slice`] for the others (a held bias with its layer's output gradient). The
    /// index of a scalar in an optimiser's state counts from 0 as in
    /// [`update_parameters`](Self::update_parameters).
    pub(crate) fn update_trainable<U: Update<T>>(&mut self, rule: &mut U, factor: T) {
        let split = self.parameter_slots.min(Mem::VALUES);
        let (params, activations) = self.values.split_at_mut(split);
        let grad_split = self.parameter_grad_slots.min(Mem::GRADIENTS);
        let (param_grads, activation_grads) = self.grads.split_at_mut(grad_split);
        let held = self.outer.is_held();
        let finite = self.outer.finite;
        let mut written: Vec<usize, OUTER_CAPACITY> = Vec::new();
        let nodes = &self.nodes;
        let unheld = self.outer.unheld_len(held, self.parameter_nodes);
        for (i, node) in nodes.iter().enumerate().take(unheld) {
            let Some(grad_slots) = node.grad_slots() else {
                continue;
            };
            if held && self.outer.holds(i) {
                continue;
            }
            let first = grad_slots.start;
            if let (Some(values), Some(grads)) = (
                params.get_mut(node.slots()),
                param_grads.get_mut(grad_slots),
            ) {
                rule.slice(first, values, grads, factor);
            }
        }
        for o in self.outer.entries.iter().filter(|_| held) {
            // The factors live among the activations: offsets from the splits.
            let factors = factor_slots(nodes, o).and_then(|(x, g)| {
                let x = x.start.checked_sub(split)?..x.end.checked_sub(split)?;
                let g = g.start.checked_sub(grad_split)?..g.end.checked_sub(grad_split)?;
                Some((activations.get(x)?, activation_grads.get(g)?))
            });
            let Some((x, g)) = factors else {
                continue;
            };
            let weight = nodes.get(o.weight);
            if let Some(w) = weight {
                let slots = (w.grad_slots(), w.slots());
                if let (Some(gs), vs) = slots {
                    if let (Some(values), Some(grads)) =
                        (params.get_mut(vs), param_grads.get_mut(gs.clone()))
                    {
                        let outer = Factors { x, g, finite };
                        if rule.outer(gs.start, values, grads, outer, factor) {
                            let _ = written.push(o.node);
                        }
                    }
                }
            }
            if let Some(b) = o.bias.and_then(|b| nodes.get(b)) {
                if let (Some(gs), Some(values)) = (b.grad_slots(), params.get_mut(b.slots())) {
                    rule.slice(gs.start, values, g, factor);
                }
            }
        }
        if !written.is_empty() {
            // The optimiser wrote these weights' gradients out: their biases' too, then.
            let nodes = &self.nodes;
            for o in self
                .outer
                .entries
                .iter()
                .filter(|o| written.contains(&o.node))
            {
                let Some((_, gs)) = factor_slots(nodes, o) else {
                    continue;
                };
                let bias = o.bias.and_then(|b| nodes.get(b)).and_then(Node::grad_slots);
                let g = gs
                    .start
                    .checked_sub(grad_split)
                    .zip(gs.end.checked_sub(grad_split));
                if let (Some(b), Some((start, end))) = (bias, g) {
                    if let (Some(out), Some(g)) =
                        (param_grads.get_mut(b), activation_grads.get(start..end))
                    {
                        out.copy_from_slice(g);
                    }
                }
            }
            self.outer.entries.retain(|o| !written.contains(&o.node));
        }
    }
}
