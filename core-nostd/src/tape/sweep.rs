//! The reverse sweep: the nodes in reverse recording order, each op adding its contribution
//! to its inputs' gradients (the op's backward lives with the op, in [`ops`](crate::ops)).
//!
//! ```text
//! for node in nodes.rev():
//!     node.op.backward(output gradient -> inputs' gradients)
//! ```

use core::ops::Range;

use super::Values;
use crate::graph::{by_family, Node, NodeId};
use crate::ops::OpFamily;
use crate::scalar::Scalar;

/// The parameters of a fully connected node whose gradients its backward leaves alone: the
/// caller knows the node is their only user and takes their gradients from the node's input
/// and output gradient later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Defer {
    pub(crate) weight: bool,
    pub(crate) bias: bool,
}

impl Defer {
    /// Every gradient computed in the sweep.
    pub(crate) const NOTHING: Self = Self {
        weight: false,
        bias: false,
    };
}

/// Runs the reverse sweep over `nodes` (the last one first). `defer(i)` names the
/// parameters of node `i` whose gradients are left alone.
pub(crate) fn sweep<T: Scalar>(
    nodes: &[Node<T>],
    values: Values<'_, T>,
    grads: &mut [T],
    defer: impl Fn(usize) -> Defer,
) {
    for (i, node) in nodes.iter().enumerate().rev() {
        let Some(out_grad) = node.grad_slots() else {
            continue;
        };
        // A leaf (a parameter, a variable) has no backward: passed over before anything is
        // prepared for one. Tested after the gradient slots, the fine-tuning firmware is 72
        // bytes shorter than with the test first (`cargo xtask bench-device`).
        if node.op.is_leaf() {
            continue;
        }
        let mut b = Backward {
            node,
            nodes,
            values,
            grads: &mut *grads,
            out_grad,
            defer: defer(i),
        };
        by_family!(&node.op, op => op.backward(&mut b), leaf => ());
    }
}

/// What an op's backward sees: its node, the values of the graph, and the gradient buffer,
/// split so that it reads its output's gradient while it adds to its inputs'.
pub(crate) struct Backward<'s, 'v, T> {
    node: &'s Node<T>,
    nodes: &'s [Node<T>],
    values: Values<'v, T>,
    grads: &'s mut [T],
    out_grad: Range<usize>,
    defer: Defer,
}

impl<'v, T: Scalar> Backward<'_, 'v, T> {
    /// The node whose backward runs.
    pub(crate) fn node(&self) -> &Node<T> {
        self.node
    }

    /// The recorded node `id`.
    pub(crate) fn input(&self, id: NodeId) -> Option<&Node<T>> {
        self.nodes.get(id.0)
    }

    /// The values of node `id` (empty for an impossible id).
    pub(crate) fn value(&self, id: NodeId) -> &'v [T] {
        let slots = self.nodes.get(id.0).map_or(0..0, Node::slots);
        self.values.get(slots).unwrap_or(&[])
    }

    /// The values of the node whose backward runs.
    pub(crate) fn output(&self) -> &'v [T] {
        self.values.get(self.node.slots()).unwrap_or(&[])
    }

    /// The values in the slots `slots` (what an op kept after its output for its backward).
    pub(crate) fn values_at(&self, slots: Range<usize>) -> Option<&'v [T]> {
        self.values.get(slots)
    }

    /// The parameters whose gradients this node's backward leaves alone.
    pub(crate) fn defer(&self) -> Defer {
        self.defer
    }

    /// The slots of the output's gradient.
    pub(crate) fn out_grad_slots(&self) -> Range<usize> {
        self.out_grad.clone()
    }

    /// The gradient in `from` (read) and the gradient of input `id` (written; empty for an
    /// input without gradient, so that nothing is accumulated into it). Inputs are recorded
    /// before their output, so their slots lie before `from`.
    pub(crate) fn split_from(&mut self, from: &Range<usize>, id: NodeId) -> (&[T], &mut [T]) {
        let input = self
            .nodes
            .get(id.0)
            .and_then(Node::grad_slots)
            .unwrap_or(0..0);
        let (before, after) = self.grads.split_at_mut(from.start.min(self.grads.len()));
        let g_out: &[T] = after.get(..from.len()).unwrap_or(&[]);
        let g_in = before.get_mut(input).unwrap_or(&mut []);
        (g_out, g_in)
    }

    /// The output's gradient (read) and the gradients of three inputs (written), for an op
    /// whose backward fills them together. An input without gradient, or whose slots
    /// another of the three already took, gets an empty slice.
    #[cfg(feature = "conv")]
    pub(crate) fn split3(&mut self, ids: [NodeId; 3]) -> (&[T], [&mut [T]; 3]) {
        let ranges = ids.map(|id| {
            self.nodes
                .get(id.0)
                .and_then(Node::grad_slots)
                .unwrap_or(0..0)
        });
        let from = self.out_grad.start.min(self.grads.len());
        let (mut rest, after) = self.grads.split_at_mut(from);
        let g_out: &[T] = after.get(..self.out_grad.len()).unwrap_or(&[]);
        let mut out: [&mut [T]; 3] = [&mut [], &mut [], &mut []];
        let mut taken = [false; 3];
        // Hand out the slots from the highest start down, splitting what is left below.
        for _ in 0..3 {
            let mut best: Option<(usize, &core::ops::Range<usize>)> = None;
            for (k, (r, done)) in ranges.iter().zip(&taken).enumerate() {
                if !*done && best.is_none_or(|(_, b)| r.start > b.start) {
                    best = Some((k, r));
                }
            }
            let Some((k, r)) = best else { break };
            if let Some(t) = taken.get_mut(k) {
                *t = true;
            }
            if r.is_empty() || r.end > rest.len() {
                continue;
            }
            let (below, above) = core::mem::take(&mut rest).split_at_mut(r.start);
            if let (Some(slot), Some(o)) = (above.get_mut(..r.len()), out.get_mut(k)) {
                *o = slot;
            }
            rest = below;
        }
        (g_out, out)
    }

    /// The output's gradient (read) and the gradient of input `id` (written).
    pub(crate) fn split(&mut self, id: NodeId) -> (&[T], &mut [T]) {
        let from = self.out_grad.clone();
        self.split_from(&from, id)
    }

    /// The gradient buffer split at `at`: the slots before (inputs', written) and from `at` on.
    pub(crate) fn split_at(&mut self, at: usize) -> (&mut [T], &mut [T]) {
        self.grads.split_at_mut(at.min(self.grads.len()))
    }

    /// Adds `f(g, p, q, r)` to each gradient of input `id`, lane by lane, `g` the output's
    /// gradient. The local derivative is called through a `dyn` reference: one copy of the
    /// loop serves every elementwise op.
    pub(crate) fn accumulate(
        &mut self,
        id: NodeId,
        (p, q, r): (&[T], &[T], &[T]),
        f: &dyn Fn(T, T, T, T) -> T,
    ) {
        let (g_out, g_in) = self.split(id);
        for ((((gi, &g), &pv), &qv), &rv) in g_in.iter_mut().zip(g_out).zip(p).zip(q).zip(r) {
            *gi += f(g, pv, qv, rv);
        }
    }
}
