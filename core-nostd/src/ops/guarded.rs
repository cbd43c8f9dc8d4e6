//! Guarded division, logarithm and square root, and the strong-zero mask. Each guarded op
//! records its guard (an epsilon, the denominator's sign, a mask) as part of its node, so
//! the audit can tell a protected graph from one that divides first and masks later.
//!
//! | op | value | safe for |
//! | --- | --- | --- |
//! | `safe_div(a, b)` | `a / (b + eps)` | `b >= 0` (TorchLean's `safedivSpec`; fails at `b = -eps`) |
//! | `safe_div_signed(a, b)` | `a / (b + eps * s(b))`, `s = +1` for `b >= 0`, else `-1` | every finite `b` |
//! | `masked_div(a, b, m)` | `where(m, a / where(m, b, 1), 0)` | masked lanes never divide |
//! | `safe_ln`, `safe_sqrt` | `ln(x + eps)`, `sqrt(x + eps)` | `x >= 0` |
//! | `mask(w, x)` | `w * x`, exactly 0 where `w == 0`, even for `x = inf, nan` | any `x` |
//!
//! ```
//! use safegrad::{Cap, Tape, Tensor};
//!
//! // PyTorch's documented fix: mask the denominator before dividing.
//! let mut tape = Tape::<f32, Cap<8, 32>>::new();
//! let x = tape.variable(&Tensor::new([[1.0, 1.0]]))?;
//! let den = tape.constant(&Tensor::new([[0.0, 2.0]]))?;
//! let keep = tape.not_zero(den)?;
//! let q = tape.masked_div(x, den, keep)?;
//! let loss = tape.sum(q)?;
//! tape.backward(loss)?;
//! assert_eq!(tape.value(q)?, Tensor::new([[0.0, 0.5]]));
//! assert_eq!(tape.grad(x)?, Tensor::new([[0.0, 0.5]]));
//! # Ok::<(), safegrad::TapeError>(())
//! ```

use super::elementwise::sqrt_grad;
use super::{ElementwiseOp, OpFamily};
use crate::audit::{Facts, FindingKind, Severity, Unproven};
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::ops::arithmetic::div_grad;
use crate::scalar::{strong_mul, Scalar};
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};

/// The guarded ops as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GuardedOp<T> {
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
    /// `weight * x` with strong zeros: exactly 0 where `weight == 0`.
    Mask {
        /// The numeric mask or weight.
        weight: NodeId,
        /// Operand.
        x: NodeId,
    },
}

// -- formulas -------------------------------------------------------------------------------

/// `ln(x + eps)`: finite for every `x >= 0`.
#[inline]
pub fn safe_ln<T: Scalar>(x: T, eps: T) -> T {
    (x + eps).ln()
}

/// Gradient of [`safe_ln`]: `g / (x + eps)`.
#[inline]
pub fn safe_ln_grad<T: Scalar>(g: T, x: T, eps: T) -> T {
    strong_mul(g, T::ONE / (x + eps))
}

/// `sqrt(x + eps)`: finite, with a finite gradient, for every `x >= 0`.
#[inline]
pub fn safe_sqrt<T: Scalar>(x: T, eps: T) -> T {
    (x + eps).sqrt()
}

/// TorchLean's `safedivSpec`: `num / (den + eps)`. Safe only for `den >= 0`: at
/// `den = -eps` it divides by zero.
#[inline]
pub fn safe_div<T: Scalar>(num: T, den: T, eps: T) -> T {
    num / (den + eps)
}

/// Gradient of [`safe_div`] as `(d_num, d_den)`.
#[inline]
pub fn safe_div_grad<T: Scalar>(g: T, num: T, den: T, eps: T) -> (T, T) {
    div_grad(g, num, den + eps)
}

/// The sign used by [`safe_div_signed`]: `+1` for `den >= 0` (including `-0.0`), else `-1`.
#[inline]
pub fn guard_sign<T: Scalar>(den: T) -> T {
    if den >= T::ZERO {
        T::ONE
    } else {
        -T::ONE
    }
}

/// Sign-aware guarded division `num / (den + eps * s(den))` with `s` from [`guard_sign`]
/// (held constant): the shifted denominator has magnitude at least `eps` for every finite
/// `den`, so the result is finite for finite `num` with `|num| * eps^-1` in range.
///
/// ```
/// use safegrad::ops::{safe_div, safe_div_signed};
///
/// let eps = 1e-6f32;
/// assert!(safe_div(1.0, -eps, eps).is_infinite()); // the documented failure
/// assert!(safe_div_signed(1.0, -eps, eps).is_finite());
/// ```
#[inline]
pub fn safe_div_signed<T: Scalar>(num: T, den: T, eps: T) -> T {
    num / (den + eps * guard_sign(den))
}

/// Gradient of [`safe_div_signed`] as `(d_num, d_den)`.
#[inline]
pub fn safe_div_signed_grad<T: Scalar>(g: T, num: T, den: T, eps: T) -> (T, T) {
    div_grad(g, num, den + eps * guard_sign(den))
}

/// Division with a masked denominator, PyTorch's documented fix as one op:
/// `where(mask, num / where(mask, den, 1), 0)`. Where `mask == 0` the result is `0` and no
/// division by `den` happens.
#[inline]
pub fn masked_div<T: Scalar>(num: T, den: T, mask: T) -> T {
    if mask == T::ZERO {
        T::ZERO
    } else {
        num / den
    }
}

/// Gradient of [`masked_div`] as `(d_num, d_den)`: exactly zero where `mask == 0`.
#[inline]
pub fn masked_div_grad<T: Scalar>(g: T, num: T, den: T, mask: T) -> (T, T) {
    if mask == T::ZERO {
        (T::ZERO, T::ZERO)
    } else {
        div_grad(g, num, den)
    }
}

/// Multiplication by a numeric mask or weight `w` with strong-zero semantics: exactly `0`
/// where `w == 0`, even for `x = inf` or `nan` (plain multiplication gives `0 * inf = nan`).
///
/// ```
/// use safegrad::ops::mask;
///
/// assert_eq!(mask(0.0f32, f32::INFINITY), 0.0);
/// assert_eq!(mask(0.5f32, 4.0), 2.0);
/// ```
#[inline]
pub fn mask<T: Scalar>(w: T, x: T) -> T {
    if w == T::ZERO {
        T::ZERO
    } else {
        w * x
    }
}

/// Gradient of [`mask`] as `(d_w, d_x)`: `d_x` is exactly `0` where `w == 0`; `d_w` is
/// `g * x` (with strong zeros in `g`).
#[inline]
pub fn mask_grad<T: Scalar>(g: T, w: T, x: T) -> (T, T) {
    let d_x = if w == T::ZERO {
        T::ZERO
    } else {
        strong_mul(g, w)
    };
    (strong_mul(g, x), d_x)
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// `ln(x + eps)` with the default epsilon: finite with a finite gradient for `x >= 0`.
    pub fn safe_ln<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.safe_ln_eps(x, T::DEFAULT_EPS)
    }

    /// `ln(x + eps)` with a chosen epsilon.
    pub fn safe_ln_eps<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Guarded(GuardedOp::SafeLn { x: x.node(), eps });
        self.map(op, x, |v| safe_ln(v, eps))
    }

    /// `sqrt(x + eps)` with the default epsilon: finite gradient for `x >= 0`.
    pub fn safe_sqrt<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.safe_sqrt_eps(x, T::DEFAULT_EPS)
    }

    /// `sqrt(x + eps)` with a chosen epsilon.
    pub fn safe_sqrt_eps<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Guarded(GuardedOp::SafeSqrt { x: x.node(), eps });
        self.map(op, x, |v| safe_sqrt(v, eps))
    }

    /// `num / (den + eps)` with the default epsilon (TorchLean's `safedivSpec`). Safe only
    /// for `den >= 0`; for a denominator of either sign use
    /// [`safe_div_signed`](Self::safe_div_signed).
    pub fn safe_div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.safe_div_eps(num, den, T::DEFAULT_EPS)
    }

    /// [`safe_div`](Self::safe_div) with a chosen epsilon.
    pub fn safe_div_eps<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Guarded(GuardedOp::SafeDiv {
            num: num.node(),
            den: den.node(),
            eps,
        });
        self.zip(op, num, den, |a, b| safe_div(a, b, eps))
    }

    /// `num / (den + eps * s(den))`, `s = +1` for `den >= 0` (including `-0.0`) else `-1`:
    /// finite for every finite `den`. Default epsilon.
    pub fn safe_div_signed<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        self.safe_div_signed_eps(num, den, T::DEFAULT_EPS)
    }

    /// [`safe_div_signed`](Self::safe_div_signed) with a chosen epsilon.
    pub fn safe_div_signed_eps<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Guarded(GuardedOp::SafeDivSigned {
            num: num.node(),
            den: den.node(),
            eps,
        });
        self.zip(op, num, den, |a, b| safe_div_signed(a, b, eps))
    }

    /// `num / den` where `mask != 0`, else `0`, with the denominator masked *before* the
    /// division (PyTorch's documented fix): masked lanes never divide.
    pub fn masked_div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        mask: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Guarded(GuardedOp::MaskedDiv {
            num: num.node(),
            den: den.node(),
            mask: mask.node(),
        });
        self.zip3(op, (num, den, mask), masked_div)
    }

    /// `weight * x` with strong zeros: exactly 0, with exactly 0 gradient to `x`, where
    /// `weight == 0`, even for `x = inf` or `nan`.
    pub fn mask<const R: usize, const C: usize>(
        &mut self,
        weight: Var<R, C>,
        x: Var<R, C>,
    ) -> Result<Var<R, C>, TapeError> {
        let op = Op::Guarded(GuardedOp::Mask {
            weight: weight.node(),
            x: x.node(),
        });
        self.zip(op, weight, x, mask)
    }
}

// -- backward and audit ---------------------------------------------------------------------

/// `true` when a masked division cannot divide by zero: its denominator is proven non-zero,
/// or its mask is `not_zero` of that very denominator.
fn masked_division_guarded<T: Scalar>(den: NodeId, mask: NodeId, facts: &Facts<'_, T>) -> bool {
    facts.domain(den).non_zero
        || matches!(facts.op(mask), Some(Op::Elementwise(ElementwiseOp::NotZero { x })) if x == den)
}

impl<T: Scalar> OpFamily<T> for GuardedOp<T> {
    fn name(&self) -> &'static str {
        match self {
            Self::SafeDiv { .. } => "safe_div",
            Self::SafeDivSigned { .. } => "safe_div_signed",
            Self::MaskedDiv { .. } => "masked_div",
            Self::SafeLn { .. } => "safe_ln",
            Self::SafeSqrt { .. } => "safe_sqrt",
            Self::Mask { .. } => "mask",
        }
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Self::SafeDiv { num, den, .. } | Self::SafeDivSigned { num, den, .. } => {
                [Some(num), Some(den), None]
            }
            Self::MaskedDiv { num, den, mask } => [Some(num), Some(den), Some(mask)],
            Self::SafeLn { x, .. } | Self::SafeSqrt { x, .. } => [Some(x), None, None],
            Self::Mask { weight, x } => [Some(weight), Some(x), None],
        }
    }

    fn differentiable_inputs(&self) -> [Option<NodeId>; 3] {
        match *self {
            Self::MaskedDiv { num, den, .. } => [Some(num), Some(den), None],
            _ => self.inputs(),
        }
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        let y = b.output();
        match *self {
            Self::SafeDiv { num, den, eps } => {
                let args = (b.value(num), b.value(den), y);
                b.accumulate(num, args, &|g, n, d, _| safe_div_grad(g, n, d, eps).0);
                b.accumulate(den, args, &|g, n, d, _| safe_div_grad(g, n, d, eps).1);
            }
            Self::SafeDivSigned { num, den, eps } => {
                let args = (b.value(num), b.value(den), y);
                b.accumulate(num, args, &|g, n, d, _| {
                    safe_div_signed_grad(g, n, d, eps).0
                });
                b.accumulate(den, args, &|g, n, d, _| {
                    safe_div_signed_grad(g, n, d, eps).1
                });
            }
            Self::MaskedDiv { num, den, mask } => {
                let args = (b.value(num), b.value(den), b.value(mask));
                b.accumulate(num, args, &|g, n, d, m| masked_div_grad(g, n, d, m).0);
                b.accumulate(den, args, &|g, n, d, m| masked_div_grad(g, n, d, m).1);
            }
            Self::SafeLn { x, eps } => {
                let xv = b.value(x);
                b.accumulate(x, (xv, y, y), &|g, x, _, _| safe_ln_grad(g, x, eps));
            }
            Self::SafeSqrt { x, .. } => {
                b.accumulate(x, (y, y, y), &|g, y, _, _| sqrt_grad(g, y));
            }
            Self::Mask { weight, x } => {
                let args = (b.value(weight), b.value(x), y);
                b.accumulate(weight, args, &|g, w, x, _| mask_grad(g, w, x).0);
                b.accumulate(x, args, &|g, w, x, _| mask_grad(g, w, x).1);
            }
        }
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let d = |id| facts.domain(id);
        match *self {
            Self::SafeDiv { num, den, eps } => {
                let (n, q) = (d(num), d(den));
                let guarded = q.non_negative && eps > T::ZERO;
                Domain {
                    finite: n.finite && guarded,
                    non_negative: n.non_negative && guarded,
                    non_zero: n.non_zero && guarded && q.finite,
                }
            }
            Self::SafeDivSigned { num, den, eps } => {
                let (n, q) = (d(num), d(den));
                Domain {
                    finite: n.finite && q.finite && eps > T::ZERO,
                    non_negative: false,
                    non_zero: n.non_zero && q.finite,
                }
            }
            Self::MaskedDiv { num, den, mask } => {
                Domain::finite_if(d(num).finite && masked_division_guarded(den, mask, facts))
            }
            Self::SafeLn { x, eps } => {
                Domain::finite_if(d(x).finite && d(x).non_negative && eps > T::ZERO)
            }
            Self::SafeSqrt { x, eps } => {
                let x = d(x);
                let shifted = x.non_negative && eps > T::ZERO;
                Domain {
                    finite: shifted && x.finite,
                    non_negative: true,
                    non_zero: shifted,
                }
            }
            Self::Mask { weight, x } => {
                let (w, x) = (d(weight), d(x));
                Domain {
                    finite: w.finite && x.finite,
                    non_negative: w.non_negative && x.non_negative,
                    non_zero: false,
                }
            }
        }
    }

    fn finding(&self, facts: &Facts<'_, T>) -> Option<Unproven> {
        let error = |kind, operand| Some(Unproven::guarded(kind, Severity::Error, operand));
        match *self {
            Self::MaskedDiv { den, mask, .. } if !masked_division_guarded(den, mask, facts) => {
                error(FindingKind::UnguardedDivision, facts.domain(den))
            }
            Self::SafeDiv { den, .. } if !facts.domain(den).non_negative => {
                error(FindingKind::SafeDivNegative, facts.domain(den))
            }
            Self::SafeLn { x, .. } | Self::SafeSqrt { x, .. } if !facts.domain(x).non_negative => {
                error(FindingKind::SafeGuardNegative, facts.domain(x))
            }
            _ => None,
        }
    }

    fn masked_operands(&self, _: &Facts<'_, T>) -> [Option<NodeId>; 2] {
        match *self {
            Self::Mask { x, .. } => [Some(x), None],
            _ => [None, None],
        }
    }
}
