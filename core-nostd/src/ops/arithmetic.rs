//! Sums, differences, products and the raw quotient, lane by lane, and their row-broadcast
//! forms (`add_row` adds a bias, `mul_row` scales each feature).
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f32, Cap<8, 32>>::new();
//! let x = tape.variable(&Tensor::new([[1.0, 2.0], [3.0, 4.0]]))?;
//! let b = tape.variable(&Tensor::new([[10.0, 20.0]]))?;
//! let y = tape.add_row(x, b)?; // b added to every row
//! let loss = tape.sum(y)?;
//! tape.backward(loss)?;
//! assert_eq!(tape.value(y)?, Tensor::new([[11.0, 22.0], [13.0, 24.0]]));
//! assert_eq!(tape.grad(b)?, Tensor::new([[2.0, 2.0]])); // one per row
//! # Ok::<(), safegrad::TapeError>(())
//! ```

use super::{Lane, OpFamily};
use crate::audit::{Facts, FindingKind, Severity, Unproven};
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::scalar::{strong_mul, Scalar};
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};
use crate::tensor::kernels;

/// The arithmetic ops as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ArithmeticOp {
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
    /// Raw `num / den`.
    Div {
        /// Numerator.
        num: NodeId,
        /// Denominator.
        den: NodeId,
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
}

impl ArithmeticOp {
    /// The two operands, in order.
    pub const fn operands(&self) -> (NodeId, NodeId) {
        match *self {
            Self::Add { a, b } | Self::Sub { a, b } | Self::Mul { a, b } => (a, b),
            Self::Div { num, den } => (num, den),
            Self::AddRow { x, row } | Self::MulRow { x, row } => (x, row),
        }
    }
}

// -- formulas -------------------------------------------------------------------------------

/// Gradient of `num / den` as `(d_num, d_den)`: `(g / den, -g * (num / den) / den)`, the
/// order of operations PyTorch uses.
#[inline]
pub fn div_grad<T: Scalar>(g: T, num: T, den: T) -> (T, T) {
    (
        strong_mul(g, T::ONE / den),
        strong_mul(g, -((num / den) / den)),
    )
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// `a + b`.
    pub fn add<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = ArithmeticOp::Add {
            a: a.node(),
            b: b.node(),
        };
        self.zip(Op::Arithmetic(op), a, b, |x, y| x + y)
    }

    /// `a - b`.
    pub fn sub<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = ArithmeticOp::Sub {
            a: a.node(),
            b: b.node(),
        };
        self.zip(Op::Arithmetic(op), a, b, |x, y| x - y)
    }

    /// `a * b` elementwise, IEEE semantics in the forward (`0 * inf = nan`); use
    /// [`mask`](Self::mask) to zero lanes.
    pub fn mul<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = ArithmeticOp::Mul {
            a: a.node(),
            b: b.node(),
        };
        self.zip(Op::Arithmetic(op), a, b, |x, y| x * y)
    }

    /// Raw `num / den`, recorded as raw: right when `den != 0` is known.
    pub fn div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = ArithmeticOp::Div {
            num: num.node(),
            den: den.node(),
        };
        self.zip(Op::Arithmetic(op), num, den, |a, b| a / b)
    }

    /// `x + row`, the `1 x C` row added to every row of `x` (a bias).
    pub fn add_row<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        row: Var<1, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = ArithmeticOp::AddRow {
            x: x.node(),
            row: row.node(),
        };
        self.record2(Op::Arithmetic(op), x, row, |x, row, out| {
            kernels::add_row(x, row, out);
        })
    }

    /// `x * row`, the `1 x C` row multiplied into every row of `x` (a per-feature scale).
    pub fn mul_row<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        row: Var<1, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = ArithmeticOp::MulRow {
            x: x.node(),
            row: row.node(),
        };
        self.record2(Op::Arithmetic(op), x, row, |x, row, out| {
            kernels::mul_row(x, row, out);
        })
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for ArithmeticOp {
    fn name(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add",
            Self::Sub { .. } => "sub",
            Self::Mul { .. } => "mul",
            Self::Div { .. } => "div",
            Self::AddRow { .. } => "add_row",
            Self::MulRow { .. } => "mul_row",
        }
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        let (a, b) = self.operands();
        [Some(a), Some(b), None]
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        let y = b.output();
        match *self {
            Self::Add { a, b: c } => {
                b.accumulate(a, (y, y, y), &|g, _, _, _| g);
                b.accumulate(c, (y, y, y), &|g, _, _, _| g);
            }
            Self::Sub { a, b: c } => {
                b.accumulate(a, (y, y, y), &|g, _, _, _| g);
                b.accumulate(c, (y, y, y), &|g, _, _, _| -g);
            }
            Self::Mul { a, b: c } => {
                let (av, cv) = (b.value(a), b.value(c));
                b.accumulate(a, (cv, y, y), &|g, c, _, _| strong_mul(g, c));
                b.accumulate(c, (av, y, y), &|g, a, _, _| strong_mul(g, a));
            }
            Self::Div { num, den } => {
                let args = (b.value(num), b.value(den), y);
                b.accumulate(num, args, &|g, n, d, _| div_grad(g, n, d).0);
                b.accumulate(den, args, &|g, n, d, _| div_grad(g, n, d).1);
            }
            Self::AddRow { x, row } => {
                b.accumulate(x, (y, y, y), &|g, _, _, _| g);
                let (g_out, g_row) = b.split(row);
                kernels::add_column_sums(g_out, g_row);
            }
            Self::MulRow { x, row } => {
                let (xv, rv) = (b.value(x), b.value(row));
                let (g_out, g_x) = b.split(x);
                if !rv.is_empty() {
                    let rows = g_x
                        .chunks_exact_mut(rv.len())
                        .zip(g_out.chunks_exact(rv.len()));
                    for (gx_row, g_row) in rows {
                        for ((gx, &g), &r) in gx_row.iter_mut().zip(g_row).zip(rv) {
                            *gx += strong_mul(g, r);
                        }
                    }
                }
                let (g_out, g_row) = b.split(row);
                if !g_row.is_empty() {
                    let width = g_row.len();
                    for (g_out_row, x_row) in g_out.chunks_exact(width).zip(xv.chunks_exact(width))
                    {
                        for ((gr, &g), &xval) in g_row.iter_mut().zip(g_out_row).zip(x_row) {
                            *gr += strong_mul(g, xval);
                        }
                    }
                }
            }
        }
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let (a, b) = self.operands();
        let (da, db) = (facts.domain(a), facts.domain(b));
        match self {
            Self::Add { .. } | Self::AddRow { .. } => {
                let non_negative = da.non_negative && db.non_negative;
                Domain {
                    finite: da.finite && db.finite,
                    non_negative,
                    non_zero: non_negative && (da.is_positive() || db.is_positive()),
                }
            }
            Self::Sub { .. } => Domain::finite_if(da.finite && db.finite),
            Self::Mul { .. } | Self::MulRow { .. } => Domain {
                finite: da.finite && db.finite,
                non_negative: a == b || (da.non_negative && db.non_negative),
                non_zero: da.non_zero && db.non_zero,
            },
            Self::Div { .. } => Domain {
                finite: da.finite && db.non_zero,
                non_negative: da.non_negative && db.non_negative,
                non_zero: da.non_zero && db.finite,
            },
        }
    }

    fn finding(&self, facts: &Facts<'_, T>) -> Option<Unproven> {
        match *self {
            Self::Div { den, .. } => {
                let d = facts.domain(den);
                (!d.non_zero).then_some(Unproven::raw(
                    FindingKind::UnguardedDivision,
                    Severity::Error,
                    d,
                ))
            }
            _ => None,
        }
    }

    fn masked_operands(&self, facts: &Facts<'_, T>) -> [Option<NodeId>; 2] {
        match *self {
            // A product with a 0/1 mask zeroes the other operand's lanes.
            Self::Mul { a, b } => [
                facts.is_mask_like(a).then_some(b),
                facts.is_mask_like(b).then_some(a),
            ],
            _ => [None, None],
        }
    }

    fn lane(&self) -> Lane {
        match self {
            Self::Div { .. } => Lane::Raw,
            _ => Lane::Other,
        }
    }
}
