//! Choosing between lanes: `select` (`where` in PyTorch and JAX) and `gather` (one column per
//! row, `z[r][index[r]]`: the logit of a target class, say). The lanes not chosen get exactly
//! zero gradient, whatever they hold.
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f32, Cap<8, 32>>::new();
//! let z = tape.variable(&Tensor::new([[1.0, 5.0, 2.0], [7.0, 3.0, f32::NAN]]))?;
//! let picked = tape.gather(z, &[1, 0])?; // z[0][1], z[1][0]
//! let loss = tape.sum(picked)?;
//! tape.backward(loss)?;
//! assert_eq!(tape.value(picked)?, Tensor::new([[5.0], [7.0]]));
//! assert_eq!(tape.grad(z)?, Tensor::new([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]));
//! # Ok::<(), safegrad::TapeError>(())
//! ```

use super::elementwise::ElementwiseOp;
use super::OpFamily;
use crate::audit::Facts;
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::scalar::Scalar;
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};
use crate::tensor::Tensor;

/// The selection ops as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SelectOp {
    /// `on_true` where `cond != 0`, else `on_false`.
    Select {
        /// The condition (no gradient).
        cond: NodeId,
        /// Taken where `cond != 0`.
        on_true: NodeId,
        /// Taken where `cond == 0`.
        on_false: NodeId,
    },
    /// `x[r][index[r]]` for each row `r`, an `R x 1` node.
    Gather {
        /// The `R x C` operand.
        x: NodeId,
        /// `R x 1` constant node holding the column of each row.
        index: NodeId,
    },
}

// -- formulas -------------------------------------------------------------------------------

/// `a` where `cond != 0`, else `b`.
#[inline]
pub fn select<T: Scalar>(cond: T, a: T, b: T) -> T {
    if cond != T::ZERO {
        a
    } else {
        b
    }
}

/// Gradient of [`select`] as `(d_a, d_b)`: the branch not taken gets exactly `0`.
#[inline]
pub fn select_grad<T: Scalar>(g: T, cond: T) -> (T, T) {
    if cond != T::ZERO {
        (g, T::ZERO)
    } else {
        (T::ZERO, g)
    }
}

/// The column a recorded index value names (indices are stored exactly as scalars).
pub(crate) fn column_of<T: Scalar>(index: T, columns: usize) -> Option<usize> {
    (0..columns).find(|&j| T::from_usize(j) == index)
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// `on_true` where `cond != 0`, else `on_false`; the branch not taken gets exactly zero
    /// gradient, the condition none.
    pub fn select<const R: usize, const C: usize>(
        &mut self,
        cond: Var<R, C>,
        on_true: Var<R, C>,
        on_false: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Select(SelectOp::Select {
            cond: cond.node(),
            on_true: on_true.node(),
            on_false: on_false.node(),
        });
        self.zip3(op, (cond, on_true, on_false), select)
    }

    /// `x[r][index[r]]` for each row: the value of one column per row (PyTorch's
    /// `x.gather(1, index)`). The indices are recorded as a constant node; an index outside
    /// `0..C` is refused before anything is recorded.
    pub fn gather<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        index: &[usize; R],
    ) -> Result<Var<R, 1>, TapeError> {
        let with_grad = self.resolve(x)?.requires_grad();
        if let Some((row, &column)) = index.iter().enumerate().find(|(_, &i)| i >= C) {
            return Err(TapeError::IndexOutOfRange {
                row,
                index: column,
                columns: C,
            });
        }
        self.ensure_room(2, R + R, if with_grad { R } else { 0 })?;
        let columns = Tensor::<T, R, 1>::from_fn(|r, _| {
            T::from_usize(index.get(r).copied().unwrap_or_default())
        });
        let index_node = self.constant(&columns)?;
        let op = Op::Select(SelectOp::Gather {
            x: x.node(),
            index: index_node.node(),
        });
        self.record1(op, x, |xv, out| {
            for ((o, row), &i) in out.iter_mut().zip(xv.chunks_exact(C.max(1))).zip(index) {
                *o = row.get(i).copied().unwrap_or(T::ZERO);
            }
        })
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for SelectOp {
    fn name(&self) -> &'static str {
        match self {
            Self::Select { .. } => "select",
            Self::Gather { .. } => "gather",
        }
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Self::Select {
                cond,
                on_true,
                on_false,
            } => [Some(cond), Some(on_true), Some(on_false)],
            Self::Gather { x, index } => [Some(x), Some(index), None],
        }
    }

    fn differentiable_inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Self::Select {
                on_true, on_false, ..
            } => [Some(on_true), Some(on_false), None],
            Self::Gather { x, .. } => [Some(x), None, None],
        }
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        match *self {
            Self::Select {
                cond,
                on_true,
                on_false,
            } => {
                let y = b.output();
                let args = (b.value(cond), y, y);
                b.accumulate(on_true, args, &|g, c, _, _| select_grad(g, c).0);
                b.accumulate(on_false, args, &|g, c, _, _| select_grad(g, c).1);
            }
            Self::Gather { x, index } => {
                let columns = b.input(x).map_or(0, |n| n.shape().1);
                let indices = b.value(index);
                let (g_out, g_x) = b.split(x);
                if columns > 0 {
                    let rows = g_x.chunks_exact_mut(columns).zip(g_out).zip(indices);
                    for ((g_row, &g), &i) in rows {
                        let picked = column_of(i, columns).and_then(|j| g_row.get_mut(j));
                        if let Some(d) = picked {
                            *d += g;
                        }
                    }
                }
            }
        }
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        match *self {
            Self::Select {
                cond,
                on_true,
                on_false,
            } => {
                // select(not_zero(x), x, ..): where the branch is taken, x is not zero.
                let mut taken = facts.domain(on_true);
                let cond_op = facts.op(cond);
                if matches!(cond_op, Some(Op::Elementwise(ElementwiseOp::NotZero { x })) if x == on_true)
                {
                    taken.non_zero = true;
                }
                taken.meet(facts.domain(on_false))
            }
            // Some of the operand's values: what holds for all of them holds for these.
            Self::Gather { x, .. } => facts.domain(x),
        }
    }

    fn masked_operands(&self, _: &Facts<'_, T>) -> [Option<NodeId>; 2] {
        match *self {
            Self::Select {
                on_true, on_false, ..
            } => [Some(on_true), Some(on_false)],
            // The columns not gathered are discarded.
            Self::Gather { x, .. } => [Some(x), None],
        }
    }
}
