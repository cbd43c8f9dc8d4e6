//! Requantisation: an `i32` accumulator scaled by a real factor into the `i8` range, in
//! integer arithmetic only, as TensorFlow Lite Micro and CMSIS-NN define it.
//!
//! A real factor `M` in `(0, 2^31)` is a 31-bit fixed-point multiplier `m` in
//! `[2^30, 2^31)` and a power of two: `M = m * 2^(shift - 31)` ([`Requant::from_scale`],
//! TFLite's `QuantizeMultiplier`). An accumulator `x` becomes
//! `rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x * 2^max(shift, 0), m),
//! max(-shift, 0))` ([`Requant::apply`], TFLite's `MultiplyByQuantizedMultiplier`). Both
//! steps round to nearest, the first with ties toward positive infinity, the second with
//! ties away from zero (gemmlowp's definitions); two roundings can differ from the exactly
//! rounded product by one (`5 * 0.25` gives 2). Every machine computes the same integers.

/// A real scale factor as a fixed-point multiplier and a power of two. Its layout is two
/// `i32`, as an `int8` body stores it ([`Int8Body`](super::Int8Body)).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Requant {
    /// The multiplier, in `[2^30, 2^31)` (or 0 for a factor below `2^-32`).
    pub multiplier: i32,
    /// The power of two: the factor is `multiplier * 2^(shift - 31)`.
    pub shift: i32,
}

impl Requant {
    /// The multiplier and shift of a real factor (TFLite's `QuantizeMultiplier`): the
    /// factor's mantissa in `[0.5, 1)` rounded to 31 bits, ties away from zero. `None` for a
    /// factor that is not finite and positive, or of `2^30` or more.
    ///
    /// ```
    /// use safegrad::quant::Requant;
    ///
    /// assert_eq!(Requant::from_scale(0.5), Some(Requant { multiplier: 1 << 30, shift: 0 }));
    /// assert_eq!(Requant::from_scale(0.25), Some(Requant { multiplier: 1 << 30, shift: -1 }));
    /// assert_eq!(Requant::from_scale(0.0), None);
    /// ```
    pub fn from_scale(real: f64) -> Option<Self> {
        if !(real.is_finite() && real > 0.0) {
            return None;
        }
        let (fraction, exponent) = libm::frexp(real);
        let mut q = libm::round(fraction * TWO_31) as i64;
        let mut shift = exponent;
        if q == 1i64 << 31 {
            q /= 2;
            shift += 1;
        }
        if shift < -31 {
            return Some(Self::default());
        }
        if shift > 30 {
            return None;
        }
        Some(Self {
            multiplier: i32::try_from(q).ok()?,
            shift,
        })
    }

    /// The factor this stands for, `multiplier * 2^(shift - 31)`.
    pub fn scale(self) -> f64 {
        f64::from(self.multiplier) * libm::ldexp(1.0, self.shift - 31)
    }

    /// `x` times the factor, rounded as TFLite's `MultiplyByQuantizedMultiplier` (see the
    /// [module](self)). A shift outside [`from_scale`](Self::from_scale)'s `[-31, 30]`,
    /// set by hand, counts as the nearer end of it.
    ///
    /// ```
    /// use safegrad::quant::Requant;
    ///
    /// let half = Requant::from_scale(0.5).unwrap();
    /// // 1.5 -> 2 and -1.5 -> -1: the high multiplication's ties go up.
    /// assert_eq!((half.apply(3), half.apply(-3), half.apply(4)), (2, -1, 2));
    /// ```
    #[inline]
    pub fn apply(self, x: i32) -> i32 {
        // The shifts `from_scale` gives, [-31, 30]; a field set out of that range counts as
        // its nearest end.
        let shift = self.shift.clamp(-31, 30);
        let (left, right) = (shift.max(0), (-shift).max(0));
        // Scales below 1/2, the usual ones, shift right only.
        let scaled = if left == 0 {
            x
        } else {
            x.saturating_mul(1i32 << left)
        };
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(scaled, self.multiplier),
            right,
        )
    }
}

const TWO_31: f64 = 2_147_483_648.0;

/// The high 32 bits of `2 a b`, rounded to nearest with ties toward positive infinity
/// (gemmlowp's nudge of `2^30`, or `1 - 2^30` below zero, then a division that truncates);
/// the one overflowing case, `a = b = i32::MIN`, saturates to `i32::MAX` (gemmlowp's
/// `SaturatingRoundingDoublingHighMul`).
///
/// ```
/// use safegrad::quant::saturating_rounding_doubling_high_mul as srdhm;
///
/// assert_eq!(srdhm(1 << 30, 1 << 30), 1 << 29); // 2 * 2^60 / 2^32
/// assert_eq!((srdhm(3, 1 << 30), srdhm(-3, 1 << 30)), (2, -1)); // 1.5 and -1.5
/// assert_eq!(srdhm(i32::MIN, i32::MIN), i32::MAX);
/// ```
#[inline]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates toward zero, as gemmlowp's.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero (gemmlowp's
/// `RoundingDivideByPOT`); `exponent` in `0..=31`.
///
/// ```
/// use safegrad::quant::rounding_divide_by_pot;
///
/// assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5
/// assert_eq!(rounding_divide_by_pot(-5, 1), -3); // -2.5
/// assert_eq!(rounding_divide_by_pot(-7, 2), -2); // -1.75
/// ```
#[inline]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let exponent = exponent.clamp(0, 31) as u32;
    // In 32 bits: a 64-bit shift is a library call on Armv7-M.
    let mask = ((1u32 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// An accumulator requantised and moved to the output's zero point, clamped to
/// `[min, 127]` (`min` is `-128`, or the zero point for a fused ReLU).
///
/// ```
/// use safegrad::quant::{requantize, Requant};
///
/// let one = Requant::from_scale(1.0).unwrap();
/// assert_eq!(requantize(1000, one, 0, -128), 127);
/// assert_eq!(requantize(-1000, one, 0, -128), -128);
/// assert_eq!(requantize(-5, one, 3, 3), 3); // a ReLU at the zero point
/// ```
#[inline]
pub fn requantize(acc: i32, requant: Requant, zero_point: i32, min: i8) -> i8 {
    let v = requant.apply(acc).saturating_add(zero_point);
    v.clamp(i32::from(min), 127) as i8
}
