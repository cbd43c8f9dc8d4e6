//! The number trait that every tensor, op and tape is generic over.
//!
//! Transcendental functions go through [`libm`] explicitly. On a host with `std`, calling
//! `x.exp()` on a concrete `f32` resolves to std's method (the platform's C library), which
//! can differ from `libm` in the last bit and breaks bit-for-bit parity between the host and
//! the device. Code generic over [`Scalar`] always reaches the methods below. With the
//! `fast-math` feature, `f32`'s `exp`, `ln` and `sqrt` are [`crate::fastmath`]'s
//! approximations instead.

use core::fmt::{Debug, Display};
use core::ops::{Add, AddAssign, Div, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real number type the library computes with: implemented for `f32` (the device) and
/// `f64` (reference checks on the host).
///
/// ```
/// use safegrad::Scalar;
///
/// fn softplus<T: Scalar>(x: T) -> T {
///     (T::ONE + x.exp()).ln()
/// }
/// assert!((softplus(0.0f64) - core::f64::consts::LN_2).abs() < 1e-15);
/// assert_eq!(<f32 as Scalar>::DEFAULT_EPS, 1e-6);
/// ```
pub trait Scalar:
    Copy
    + PartialEq
    + PartialOrd
    + Debug
    + Display
    + Default
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + 'static
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// Negative infinity.
    const NEG_INFINITY: Self;
    /// The default guard of the safe ops, `1e-6` (TorchLean's `safedivSpec` epsilon).
    const DEFAULT_EPS: Self;
    /// Bytes one value occupies (for memory accounting).
    const BYTES: usize;
    /// The smallest positive normal value.
    const MIN_POSITIVE: Self;
    /// The difference between 1 and the next larger value.
    const EPSILON: Self;

    /// `e^self`, through `libm` (`f32` with `fast-math`: [`crate::fastmath::exp`]).
    fn exp(self) -> Self;
    /// Natural logarithm, through `libm` (`f32` with `fast-math`: [`crate::fastmath::ln`]).
    fn ln(self) -> Self;
    /// Square root, through `libm` (`f32` with `fast-math`: [`crate::fastmath::sqrt`]).
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent, through `libm`.
    fn tanh(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `true` unless the value is `nan` or `±inf`.
    fn is_finite(self) -> bool;
    /// `true` for `nan`.
    fn is_nan(self) -> bool;
    /// `true` when the sign bit is clear (`+0.0` and `-0.0` differ here).
    fn is_sign_positive(self) -> bool;
    /// Conversion from `f64`, rounding to nearest.
    fn from_f64(value: f64) -> Self;
    /// Exact widening to `f64`.
    fn to_f64(self) -> f64;
    /// Conversion of a small count (a class index, a number of elements) to the scalar.
    fn from_usize(value: usize) -> Self;
    /// The raw bit pattern, widened to `u64` (for hashing and bit-exact comparison).
    fn to_bits_u64(self) -> u64;
    /// The value whose bit pattern is the low [`BYTES`](Self::BYTES) bytes of `bits`.
    fn from_bits_u64(bits: u64) -> Self;

    /// The values as `f32`s when `Self` is `f32`, `None` otherwise: the kernels run their
    /// `f32` instances, which are compiled in this crate, through it (see
    /// [`crate::tensor::kernels`]).
    #[doc(hidden)]
    #[inline]
    fn as_f32s(values: &[Self]) -> Option<&[f32]> {
        let _ = values;
        None
    }
    /// [`as_f32s`](Self::as_f32s), mutable.
    #[doc(hidden)]
    #[inline]
    fn as_f32s_mut(values: &mut [Self]) -> Option<&mut [f32]> {
        let _ = values;
        None
    }
    /// The value as an `f32` when `Self` is `f32`.
    #[doc(hidden)]
    #[inline]
    fn as_f32(self) -> Option<f32> {
        None
    }
}

impl Scalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const INFINITY: Self = f32::INFINITY;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    const DEFAULT_EPS: Self = 1e-6;
    const BYTES: usize = 4;
    const MIN_POSITIVE: Self = f32::MIN_POSITIVE;
    const EPSILON: Self = f32::EPSILON;

    #[inline]
    fn exp(self) -> Self {
        if cfg!(feature = "fast-math") {
            crate::fastmath::exp(self)
        } else {
            libm::expf(self)
        }
    }
    #[inline]
    fn ln(self) -> Self {
        if cfg!(feature = "fast-math") {
            crate::fastmath::ln(self)
        } else {
            libm::logf(self)
        }
    }
    #[inline]
    fn sqrt(self) -> Self {
        if cfg!(feature = "fast-math") {
            crate::fastmath::sqrt(self)
        } else {
            libm::sqrtf(self)
        }
    }
    #[inline]
    fn tanh(self) -> Self {
        libm::tanhf(self)
    }
    #[inline]
    fn abs(self) -> Self {
        libm::fabsf(self)
    }
    #[inline]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    #[inline]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    #[inline]
    fn is_sign_positive(self) -> bool {
        f32::is_sign_positive(self)
    }
    #[inline]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline]
    fn from_usize(value: usize) -> Self {
        value as f32
    }
    #[inline]
    fn to_bits_u64(self) -> u64 {
        u64::from(self.to_bits())
    }
    #[inline]
    fn from_bits_u64(bits: u64) -> Self {
        f32::from_bits(bits as u32)
    }
    #[inline]
    fn as_f32s(values: &[Self]) -> Option<&[f32]> {
        Some(values)
    }
    #[inline]
    fn as_f32s_mut(values: &mut [Self]) -> Option<&mut [f32]> {
        Some(values)
    }
    #[inline]
    fn as_f32(self) -> Option<f32> {
        Some(self)
    }
}

impl Scalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const INFINITY: Self = f64::INFINITY;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    const DEFAULT_EPS: Self = 1e-6;
    const BYTES: usize = 8;
    const MIN_POSITIVE: Self = f64::MIN_POSITIVE;
    const EPSILON: Self = f64::EPSILON;

    #[inline]
    fn exp(self) -> Self {
        libm::exp(self)
    }
    #[inline]
    fn ln(self) -> Self {
        libm::log(self)
    }
    #[inline]
    fn sqrt(self) -> Self {
        libm::sqrt(self)
    }
    #[inline]
    fn tanh(self) -> Self {
        libm::tanh(self)
    }
    #[inline]
    fn abs(self) -> Self {
        libm::fabs(self)
    }
    #[inline]
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    #[inline]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    #[inline]
    fn is_sign_positive(self) -> bool {
        f64::is_sign_positive(self)
    }
    #[inline]
    fn from_f64(value: f64) -> Self {
        value
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_usize(value: usize) -> Self {
        value as f64
    }
    #[inline]
    fn to_bits_u64(self) -> u64 {
        self.to_bits()
    }
    #[inline]
    fn from_bits_u64(bits: u64) -> Self {
        f64::from_bits(bits)
    }
}

/// Product of an upstream gradient and a local derivative with *strong-zero* semantics: a
/// zero upstream gradient gives exactly zero, even where the local derivative is `inf` or
/// `nan` (IEEE would give `0 * inf = nan`). Every backward formula in the library goes
/// through this, so a lane that does not influence the loss receives gradient `0`.
///
/// ```
/// use safegrad::scalar::strong_mul;
///
/// assert_eq!(strong_mul(0.0f32, f32::INFINITY), 0.0);
/// assert_eq!(strong_mul(0.0f32, f32::NAN), 0.0);
/// assert_eq!(strong_mul(2.0f32, 3.0), 6.0);
/// assert!((0.0f32 * f32::INFINITY).is_nan());
/// ```
#[inline]
pub fn strong_mul<T: Scalar>(upstream: T, local: T) -> T {
    if upstream == T::ZERO {
        T::ZERO
    } else {
        upstream * local
    }
}
