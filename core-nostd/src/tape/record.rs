//! Recording: what every op's `Tape` method runs. Each checks its handles, computes the
//! op's value into the free slots, and only then appends the node, so a failed call records
//! nothing.

use super::{Capacity, Leaf, NodeStore, Result, Tape, Values, Var};
use crate::error::TapeError;
use crate::graph::{Domain, Node, NodeId, Op};
use crate::scalar::Scalar;
use crate::tensor::Tensor;

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// Checks that a node of `len` values fits, without recording anything yet; returns the
    /// start of its value slots.
    pub(crate) fn reserve(&self, len: usize) -> Result<usize> {
        if self.nodes.is_full() {
            return Err(TapeError::NodeCapacity {
                capacity: Mem::NODES,
            });
        }
        match self.used.checked_add(len) {
            Some(end) if end <= Mem::VALUES => Ok(self.used),
            _ => Err(TapeError::ScalarCapacity {
                capacity: Mem::VALUES,
                used: self.used,
                requested: len,
            }),
        }
    }

    /// Checks that `len` more gradient slots fit.
    pub(crate) fn reserve_grad(&self, len: usize) -> Result<usize> {
        match self.grads_used.checked_add(len) {
            Some(end) if end <= Mem::GRADIENTS => Ok(self.grads_used),
            _ => Err(TapeError::GradientCapacity {
                capacity: Mem::GRADIENTS,
                used: self.grads_used,
                requested: len,
            }),
        }
    }

    /// Appends an op's node: it carries a gradient when one of its differentiable inputs
    /// does. Each parameter it reads counts one more use.
    pub(crate) fn commit_op<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
    ) -> Result<Var<R, C>> {
        self.commit_op_shaped(op, R, C).map(|node| self.var(node))
    }

    /// A handle of the current generation on `node`.
    pub(crate) const fn var<const R: usize, const C: usize>(&self, node: NodeId) -> Var<R, C> {
        Var {
            node,
            generation: self.generation,
        }
    }

    /// [`commit_op`](Self::commit_op) for a `rows x cols` node (one copy of the code for
    /// every shape).
    pub(crate) fn commit_op_shaped(
        &mut self,
        op: Op<T>,
        rows: usize,
        cols: usize,
    ) -> Result<NodeId> {
        let inputs = op.differentiable_inputs();
        let with_grad = inputs.iter().flatten().any(|id| {
            self.nodes
                .get(id.0)
                .is_some_and(|n: &Node<T>| n.requires_grad())
        });
        let v = self.commit_shaped(op, rows, cols, with_grad, Domain::UNKNOWN)?;
        for id in inputs.into_iter().flatten() {
            if id.0 < self.parameter_nodes {
                if let Some(n) = self.nodes.get_mut(id.0) {
                    n.uses = n.uses.saturating_add(1);
                }
            }
        }
        Ok(v)
    }

    /// Appends the `rows x cols` node whose values were written at the reserved slots, with
    /// zeroed gradient slots if it needs them.
    pub(crate) fn commit_shaped(
        &mut self,
        op: Op<T>,
        rows: usize,
        cols: usize,
        with_grad: bool,
        declared: Domain,
    ) -> Result<NodeId> {
        let len = rows * cols;
        let grad_len = len * op.grad_slots_per_value();
        let offset = self.reserve(len)?;
        let grad_offset = if with_grad {
            let g = self.reserve_grad(grad_len)?;
            // A parameter's gradient accumulates from zero; an activation's is zeroed by the
            // sweep that computes it.
            if matches!(op, Op::Parameter) {
                if let Some(slots) = self.grads.get_mut(g..g + len) {
                    slots.fill(T::ZERO);
                }
            }
            Some(g)
        } else {
            None
        };
        let index = self.nodes.len();
        self.nodes
            .push(Node {
                op,
                rows,
                cols,
                offset,
                grad_offset,
                generation: self.generation,
                declared,
                uses: 0,
            })
            .map_err(|_| TapeError::NodeCapacity {
                capacity: Mem::NODES,
            })?;
        self.used = offset + len;
        if grad_offset.is_some() {
            self.grads_used += grad_len;
        }
        Ok(NodeId(index))
    }

    /// Appends a `rows x cols` node that aliases the values and gradient slots of `x` (a
    /// view): it takes a node and no slots. The sizes must agree.
    #[cfg(feature = "conv")]
    pub(crate) fn alias<const RX: usize, const CX: usize>(
        &mut self,
        op: Op<T>,
        x: Var<RX, CX>,
        rows: usize,
        cols: usize,
    ) -> Result<NodeId> {
        let source = *self.resolve(x)?;
        if rows * cols != source.len() {
            return Err(TapeError::Length {
                node: x.node().0,
                expected: source.len(),
                found: rows * cols,
            });
        }
        let index = self.nodes.len();
        self.nodes
            .push(Node {
                op,
                rows,
                cols,
                offset: source.offset,
                grad_offset: source.grad_offset,
                generation: self.generation,
                declared: Domain::UNKNOWN,
                uses: 0,
            })
            .map_err(|_| TapeError::NodeCapacity {
                capacity: Mem::NODES,
            })?;
        Ok(NodeId(index))
    }

    /// Splits the value buffer at the free slots: the recorded values (read-only) and the
    /// `len` slots the next node writes.
    #[inline(always)]
    pub(crate) fn split_for_output(&mut self, len: usize) -> Result<(Values<'_, T>, &mut [T])> {
        let capacity = TapeError::ScalarCapacity {
            capacity: Mem::VALUES,
            used: self.used,
            requested: len,
        };
        let (before, after) = self.values.split_at_mut(self.used);
        let out = after.get_mut(..len).ok_or(capacity)?;
        let before = Values {
            local: before,
            in_place: self.in_place.unwrap_or(&[]),
            split: Mem::VALUES,
        };
        Ok((before, out))
    }

    pub(crate) fn leaf<const R: usize, const C: usize>(
        &mut self,
        kind: Leaf,
        value: &Tensor<T, R, C>,
        declared: Domain,
    ) -> Result<Var<R, C>> {
        self.leaf_shaped(kind, Some(value.as_slice()), R, C, declared)
            .map(|node| self.var(node))
    }

    /// [`leaf`](Self::leaf) for the `rows x cols` values `value` (one copy of the code for
    /// every shape).
    pub(crate) fn leaf_shaped(
        &mut self,
        kind: Leaf,
        value: Option<&[T]>,
        rows: usize,
        cols: usize,
        declared: Domain,
    ) -> Result<NodeId> {
        let is_parameter = matches!(kind, Leaf::TrainableParameter | Leaf::FrozenParameter);
        if is_parameter && self.nodes.len() != self.parameter_nodes {
            return Err(TapeError::ParameterAfterActivation);
        }
        let with_grad = matches!(kind, Leaf::TrainableParameter | Leaf::Variable);
        let len = rows * cols;
        if let (Leaf::FrozenParameter, Some(params)) = (kind, self.in_place) {
            return self.in_place_leaf(params, rows, cols);
        }
        if with_grad {
            self.reserve_grad(len)?;
        }
        self.reserve(len)?;
        let (_, out) = self.split_for_output(len)?;
        match value {
            Some(value) => out.copy_from_slice(value),
            None => out.fill(T::ZERO),
        }
        let op = match kind {
            Leaf::TrainableParameter | Leaf::FrozenParameter => Op::Parameter,
            Leaf::Variable | Leaf::Data => Op::Input,
            Leaf::Constant => Op::Constant,
        };
        let declared = match kind {
            Leaf::TrainableParameter | Leaf::FrozenParameter => Domain::FINITE,
            Leaf::Constant => Domain::of_values(value.unwrap_or(&[T::ZERO])),
            Leaf::Variable | Leaf::Data => declared,
        };
        let v = self.commit_shaped(op, rows, cols, with_grad, declared)?;
        if is_parameter {
            self.parameter_nodes = self.nodes.len();
            self.parameter_slots = self.used;
            self.parameter_grad_slots = self.grads_used;
            self.parameter_len += len;
        }
        Ok(v)
    }

    /// Records an `R x C` parameter of zeros (trainable or frozen), its values written in the
    /// tape without a tensor on the stack: for a model whose parameters a checkpoint fills
    /// next. One copy of the code for every shape.
    pub(crate) fn zero_parameter<const R: usize, const C: usize>(
        &mut self,
        trainable: bool,
    ) -> Result<Var<R, C>> {
        let kind = if trainable {
            Leaf::TrainableParameter
        } else {
            Leaf::FrozenParameter
        };
        self.leaf_shaped(kind, None, R, C, Domain::UNKNOWN)
            .map(|node| self.var(node))
    }

    /// Records a `rows x cols` frozen parameter whose values are read in place, at its
    /// position among all parameter scalars.
    pub(crate) fn in_place_leaf(
        &mut self,
        params: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<NodeId> {
        let at = self.parameter_len;
        let end = at + rows * cols;
        if end > params.len() {
            return Err(TapeError::InPlaceRange {
                needed: end,
                available: params.len(),
            });
        }
        let index = self.nodes.len();
        self.nodes
            .push(Node {
                op: Op::Parameter,
                rows,
                cols,
                offset: Mem::VALUES + at,
                grad_offset: None,
                generation: self.generation,
                declared: Domain::FINITE,
                uses: 0,
            })
            .map_err(|_| TapeError::NodeCapacity {
                capacity: Mem::NODES,
            })?;
        self.parameter_nodes = self.nodes.len();
        self.parameter_len = end;
        Ok(NodeId(index))
    }

    /// Checks that `nodes` more nodes holding `values` values and `grads` gradients fit, for
    /// an op that records more than one node, so that it records all of them or none.
    pub(crate) fn ensure_room(&self, nodes: usize, values: usize, grads: usize) -> Result<()> {
        if self.nodes.len() + nodes > Mem::NODES {
            return Err(TapeError::NodeCapacity {
                capacity: Mem::NODES,
            });
        }
        self.reserve(values)?;
        self.reserve_grad(grads)?;
        Ok(())
    }

    /// Records an op of one operand: `f(x, out)` writes its `R x C` values.
    #[inline(always)]
    pub(crate) fn record1<const RX: usize, const CX: usize, const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        x: Var<RX, CX>,
        f: impl FnOnce(&[T], &mut [T]),
    ) -> Result<Var<R, C>> {
        let sx = self.resolve(x)?.slots();
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        f(before.get(sx).unwrap_or(&[]), out);
        self.commit_op(op)
    }

    /// Records an op of two operands: `f(a, b, out)` writes its `R x C` values.
    #[inline(always)]
    pub(crate) fn record2<
        const RA: usize,
        const CA: usize,
        const RB: usize,
        const CB: usize,
        const R: usize,
        const C: usize,
    >(
        &mut self,
        op: Op<T>,
        a: Var<RA, CA>,
        b: Var<RB, CB>,
        f: impl FnOnce(&[T], &[T], &mut [T]),
    ) -> Result<Var<R, C>> {
        let (sa, sb) = (self.resolve(a)?.slots(), self.resolve(b)?.slots());
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        f(
            before.get(sa).unwrap_or(&[]),
            before.get(sb).unwrap_or(&[]),
            out,
        );
        self.commit_op(op)
    }

    /// Records an op of three operands: `f(a, b, c, out)` writes its `R x C` values.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record3<
        const RA: usize,
        const CA: usize,
        const RB: usize,
        const CB: usize,
        const RC: usize,
        const CC: usize,
        const R: usize,
        const C: usize,
    >(
        &mut self,
        op: Op<T>,
        a: Var<RA, CA>,
        b: Var<RB, CB>,
        c: Var<RC, CC>,
        f: impl FnOnce(&[T], &[T], &[T], &mut [T]),
    ) -> Result<Var<R, C>> {
        let (sa, sb, sc) = (
            self.resolve(a)?.slots(),
            self.resolve(b)?.slots(),
            self.resolve(c)?.slots(),
        );
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        f(
            before.get(sa).unwrap_or(&[]),
            before.get(sb).unwrap_or(&[]),
            before.get(sc).unwrap_or(&[]),
            out,
        );
        self.commit_op(op)
    }

    /// Records an op of one operand whose `R x C` values are followed by `kept` more that
    /// its backward reads (they take value slots, not gradient slots): `f(x, out)` writes
    /// all `R * C + kept`.
    pub(crate) fn record_with_kept<
        const RX: usize,
        const CX: usize,
        const R: usize,
        const C: usize,
    >(
        &mut self,
        op: Op<T>,
        x: Var<RX, CX>,
        kept: usize,
        f: impl FnOnce(&[T], &mut [T]),
    ) -> Result<Var<R, C>> {
        let sx = self.resolve(x)?.slots();
        let len = R * C + kept;
        self.reserve(len)?;
        let (before, out) = self.split_for_output(len)?;
        f(before.get(sx).unwrap_or(&[]), out);
        let v = self.commit_op(op)?;
        self.used += kept;
        Ok(v)
    }

    /// Records an elementwise op of one operand.
    pub(crate) fn map<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        x: Var<R, C>,
        f: impl Fn(T) -> T,
    ) -> Result<Var<R, C>> {
        self.record1(op, x, |xv, out| {
            for (o, &v) in out.iter_mut().zip(xv) {
                *o = f(v);
            }
        })
    }

    /// Records an elementwise op of two operands.
    pub(crate) fn zip<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        a: Var<R, C>,
        b: Var<R, C>,
        f: impl Fn(T, T) -> T,
    ) -> Result<Var<R, C>> {
        self.record2(op, a, b, |av, bv, out| {
            for ((o, &x), &y) in out.iter_mut().zip(av).zip(bv) {
                *o = f(x, y);
            }
        })
    }

    /// Records an elementwise op of three operands.
    pub(crate) fn zip3<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        (a, b, c): (Var<R, C>, Var<R, C>, Var<R, C>),
        f: impl Fn(T, T, T) -> T,
    ) -> Result<Var<R, C>> {
        self.record3(op, a, b, c, |av, bv, cv, out| {
            for (((o, &x), &y), &z) in out.iter_mut().zip(av).zip(bv).zip(cv) {
                *o = f(x, y, z);
            }
        })
    }
}
