//! Functions of one operand, lane by lane: `neg`, `scale`, `relu`, `tanh`, `sigmoid`, `exp`,
//! the raw `ln` and `sqrt` (their guarded forms are in [`guarded`](super::guarded)), and the
//! `not_zero` condition.
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! let mut tape = Tape::<f32, Cap<8, 16>>::new();
//! let x = tape.variable(&Tensor::new([[-1.0, 2.0]]))?;
//! let y = tape.relu(x)?;
//! let loss = tape.sum(y)?;
//! tape.backward(loss)?;
//! assert_eq!(tape.value(y)?, Tensor::new([[0.0, 2.0]]));
//! assert_eq!(tape.grad(x)?, Tensor::new([[0.0, 1.0]]));
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

/// The elementwise ops as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ElementwiseOp<T> {
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
    /// `1` where `x != 0`, else `0` (no gradient).
    NotZero {
        /// Operand.
        x: NodeId,
    },
}

impl<T> ElementwiseOp<T> {
    /// The operand.
    pub const fn operand(&self) -> NodeId {
        match *self {
            Self::Neg { x }
            | Self::Scale { x, .. }
            | Self::Relu { x }
            | Self::Tanh { x }
            | Self::Sigmoid { x }
            | Self::Exp { x }
            | Self::Ln { x }
            | Self::Sqrt { x }
            | Self::NotZero { x } => x,
        }
    }
}

// -- formulas -------------------------------------------------------------------------------

/// `max(x, 0)`, written as a comparison (`f32::max` is a libcall on Cortex-M4). `nan` stays
/// `nan`, so a bad value is not hidden.
#[inline]
pub fn relu<T: Scalar>(x: T) -> T {
    if x < T::ZERO {
        T::ZERO
    } else {
        x
    }
}

/// Gradient of [`relu`]: `g` where `x > 0`, else `0` (the subgradient at 0 is 0).
#[inline]
pub fn relu_grad<T: Scalar>(g: T, x: T) -> T {
    if x > T::ZERO {
        g
    } else {
        T::ZERO
    }
}

/// Logistic function in the form that never overflows: `1 / (1 + e^-x)` for `x >= 0`,
/// `e^x / (1 + e^x)` otherwise.
#[inline]
pub fn sigmoid<T: Scalar>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// Gradient of [`sigmoid`] from its output `y`: `g * y * (1 - y)`.
#[inline]
pub fn sigmoid_grad<T: Scalar>(g: T, y: T) -> T {
    strong_mul(g, y * (T::ONE - y))
}

/// Gradient of `tanh` from its output `y`: `g * (1 - y^2)`.
#[inline]
pub fn tanh_grad<T: Scalar>(g: T, y: T) -> T {
    strong_mul(g, T::ONE - y * y)
}

/// Gradient of `exp` from its output `y`: `g * y`.
#[inline]
pub fn exp_grad<T: Scalar>(g: T, y: T) -> T {
    strong_mul(g, y)
}

/// Gradient of the raw `ln`: `g / x` (infinite at `x = 0`).
#[inline]
pub fn ln_grad<T: Scalar>(g: T, x: T) -> T {
    strong_mul(g, T::ONE / x)
}

/// Gradient of `sqrt` from its output `y`: `g / (2 y)` (infinite at `y = 0`).
#[inline]
pub fn sqrt_grad<T: Scalar>(g: T, y: T) -> T {
    strong_mul(g, T::ONE / (y + y))
}

/// `1` where `x != 0` (including `nan`), else `0`: a condition for
/// [`select`](super::select::select) or a mask.
#[inline]
pub fn not_zero<T: Scalar>(x: T) -> T {
    if x != T::ZERO {
        T::ONE
    } else {
        T::ZERO
    }
}

// -- recording ------------------------------------------------------------------------------

fn op<T, const R: usize, const C: usize>(x: Var<R, C>, f: fn(NodeId) -> ElementwiseOp<T>) -> Op<T> {
    Op::Elementwise(f(x.node()))
}

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// `-x`.
    pub fn neg<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.map(op(x, |x| ElementwiseOp::Neg { x }), x, |v| -v)
    }

    /// `factor * x`.
    pub fn scale<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        factor: T,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Elementwise(ElementwiseOp::Scale {
            x: x.node(),
            factor,
        });
        self.map(op, x, |v| factor * v)
    }

    /// `max(x, 0)`.
    pub fn relu<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.map(op(x, |x| ElementwiseOp::Relu { x }), x, relu)
    }

    /// `tanh(x)`.
    pub fn tanh<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.map(op(x, |x| ElementwiseOp::Tanh { x }), x, T::tanh)
    }

    /// Logistic sigmoid.
    pub fn sigmoid<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.map(op(x, |x| ElementwiseOp::Sigmoid { x }), x, sigmoid)
    }

    /// `e^x`.
    pub fn exp<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.map(op(x, |x| ElementwiseOp::Exp { x }), x, T::exp)
    }

    /// Raw `ln(x)`, recorded as raw: right when `x > 0` is known.
    pub fn ln<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.map(op(x, |x| ElementwiseOp::Ln { x }), x, T::ln)
    }

    /// Raw `sqrt(x)`, recorded as raw: its gradient is infinite at 0.
    pub fn sqrt<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.map(op(x, |x| ElementwiseOp::Sqrt { x }), x, T::sqrt)
    }

    /// `1` where `x != 0`, else `0`: a condition or mask derived from data (no gradient).
    pub fn not_zero<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.map(op(x, |x| ElementwiseOp::NotZero { x }), x, not_zero)
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for ElementwiseOp<T> {
    fn name(&self) -> &'static str {
        match self {
            Self::Neg { .. } => "neg",
            Self::Scale { .. } => "scale",
            Self::Relu { .. } => "relu",
            Self::Tanh { .. } => "tanh",
            Self::Sigmoid { .. } => "sigmoid",
            Self::Exp { .. } => "exp",
            Self::Ln { .. } => "ln",
            Self::Sqrt { .. } => "sqrt",
            Self::NotZero { .. } => "not_zero",
        }
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        [Some(self.operand()), None, None]
    }

    fn differentiable_inputs(&self) -> [Option<NodeId>; 3] {
        match self {
            Self::NotZero { .. } => [None; 3],
            _ => self.inputs(),
        }
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        let y = b.output();
        let x = self.operand();
        match *self {
            Self::Neg { .. } => b.accumulate(x, (y, y, y), &|g, _, _, _| -g),
            Self::Scale { factor, .. } => {
                b.accumulate(x, (y, y, y), &|g, _, _, _| strong_mul(g, factor));
            }
            Self::Relu { .. } => {
                let xv = b.value(x);
                let (g_out, g_x) = b.split(x);
                kernels::add_relu_grad(g_out, xv, g_x);
            }
            Self::Tanh { .. } => b.accumulate(x, (y, y, y), &|g, y, _, _| tanh_grad(g, y)),
            Self::Sigmoid { .. } => {
                b.accumulate(x, (y, y, y), &|g, y, _, _| sigmoid_grad(g, y));
            }
            Self::Exp { .. } => b.accumulate(x, (y, y, y), &|g, y, _, _| exp_grad(g, y)),
            Self::Ln { .. } => {
                let xv = b.value(x);
                b.accumulate(x, (xv, y, y), &|g, x, _, _| ln_grad(g, x));
            }
            Self::Sqrt { .. } => b.accumulate(x, (y, y, y), &|g, y, _, _| sqrt_grad(g, y)),
            Self::NotZero { .. } => {}
        }
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let d = facts.domain(self.operand());
        match *self {
            Self::Neg { .. } => Domain {
                finite: d.finite,
                non_negative: false,
                non_zero: d.non_zero,
            },
            Self::Scale { factor, .. } => Domain {
                finite: d.finite && factor.is_finite(),
                non_negative: d.non_negative && factor >= T::ZERO,
                non_zero: d.non_zero && factor != T::ZERO && factor.is_finite(),
            },
            Self::Relu { .. } | Self::Sigmoid { .. } => Domain {
                finite: d.finite,
                non_negative: true,
                non_zero: false,
            },
            Self::Tanh { .. } => Domain::finite_if(d.finite),
            Self::Exp { .. } => Domain {
                finite: d.finite,
                non_negative: true,
                non_zero: true,
            },
            Self::Ln { .. } => Domain::finite_if(d.is_positive()),
            Self::Sqrt { .. } => Domain {
                finite: d.finite && d.non_negative,
                non_negative: true,
                non_zero: d.is_positive(),
            },
            Self::NotZero { .. } => Domain::NON_NEGATIVE,
        }
    }

    fn finding(&self, facts: &Facts<'_, T>) -> Option<Unproven> {
        let d = facts.domain(self.operand());
        match self {
            Self::Ln { .. } => (!d.is_positive()).then_some(Unproven::raw(
                FindingKind::LnNotPositive,
                Severity::Error,
                d,
            )),
            Self::Sqrt { .. } => {
                // The forward of a non-negative operand is fine; only the gradient at 0 is not.
                let severity = if d.non_negative && d.finite {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                (!d.is_positive()).then_some(Unproven::raw(
                    FindingKind::SqrtNotPositive,
                    severity,
                    d,
                ))
            }
            _ => None,
        }
    }

    fn lane(&self) -> Lane {
        match *self {
            Self::Ln { .. } | Self::Sqrt { .. } => Lane::Raw,
            Self::NotZero { .. } => Lane::Other,
            _ => Lane::Through(self.operand()),
        }
    }
}
