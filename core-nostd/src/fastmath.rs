//! `exp`, `ln` and `sqrt` of an `f32` from [`micromath`]'s approximations: what the `f32`
//! [`Scalar`](crate::Scalar) functions compute when the `fast-math` feature is on.
//!
//! micromath computes with the four basic operations and bit manipulation only, so its results
//! are the same on every IEEE target: host/device parity holds with the feature on as with it
//! off (the two modes differ from each other). What micromath leaves undefined is handled
//! here: `nan`, `±inf`, zeros, negative and subnormal arguments, and `exp` arguments whose
//! result would not be a normal number, go to [`libm`], so that every special case is the
//! IEEE one.
//!
//! The approximations are coarse. Measured over every `f32` of the ranges the losses use
//! (`cargo run --release -p host-sim --bin fastmath-error`; see `BENCHMARKS.md`): `exp` (a
//! fourth-order series) on `[-87, 0]`, relative error up to 2.4e-3; `ln` (a polynomial on
//! `[1, 2)`) on `[1, 4]`, absolute error up to 6.1e-5, but on `[1e-6, 1)` up to 0.12, as
//! micromath takes an approximate reciprocal first; `sqrt` (the exponent bits halved),
//! relative error up to 6.1%.
//!
//! ```
//! use safegrad::fastmath;
//!
//! assert!((fastmath::exp(-1.5) - (-1.5f64).exp() as f32).abs() < 1e-3);
//! assert_eq!(fastmath::exp(f32::NEG_INFINITY), 0.0);
//! assert!(fastmath::ln(-1.0).is_nan());
//! assert_eq!(fastmath::sqrt(0.0), 0.0);
//! ```

use micromath::F32;

// The functions are not `#[inline]`: like `libm`'s, they are compiled in this crate, at its
// optimisation level, whatever the caller's.

/// Arguments of [`exp`] beyond this magnitude go to `libm` (micromath's result there is not
/// a normal number).
const EXP_LIMIT: f32 = 87.0;

/// `e^x`, micromath's approximation for `|x| < 87`; `libm::expf` otherwise.
pub fn exp(x: f32) -> f32 {
    if libm::fabsf(x) < EXP_LIMIT {
        F32(x).exp().0
    } else {
        libm::expf(x)
    }
}

/// `ln(x)`, micromath's approximation for positive normal `x`; `libm::logf` otherwise.
pub fn ln(x: f32) -> f32 {
    if x.is_normal() && x > 0.0 {
        F32(x).ln().0
    } else {
        libm::logf(x)
    }
}

/// `sqrt(x)`, micromath's approximation for positive normal `x`; the exact square root
/// otherwise.
pub fn sqrt(x: f32) -> f32 {
    if x.is_normal() && x > 0.0 {
        F32(x).sqrt().0
    } else {
        libm::sqrtf(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_values_are_the_ieee_ones() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert_eq!(ln(f32::INFINITY), f32::INFINITY);
        assert!(ln(-2.0).is_nan() && ln(f32::NAN).is_nan());
        assert!(ln(1e-40).is_finite() && ln(1e-40) < -90.0);
        assert_eq!(sqrt(0.0), 0.0);
        assert_eq!(sqrt(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(sqrt(f32::INFINITY), f32::INFINITY);
        assert!(sqrt(-1.0).is_nan() && sqrt(f32::NAN).is_nan());
        assert!((sqrt(1e-40) / 1e-20 - 1.0).abs() < 1e-5);
    }

    /// Every `step`-th `f32` in `[lo, hi]` (both of one sign).
    fn sweep(lo: f32, hi: f32, step: u32) -> impl Iterator<Item = f32> {
        let (a, b) = (
            lo.to_bits().min(hi.to_bits()),
            lo.to_bits().max(hi.to_bits()),
        );
        (a..=b).step_by(step as usize).map(f32::from_bits)
    }

    #[test]
    fn errors_stay_within_the_documented_bounds() {
        let rel = |got: f32, exact: f64| ((f64::from(got) - exact) / exact).abs();
        let exp_err = sweep(-87.0, -0.0, 997)
            .chain(sweep(0.0, 87.0, 997))
            .map(|x| rel(exp(x), libm::exp(f64::from(x))))
            .fold(0.0, f64::max);
        assert!(exp_err < 2.5e-3, "exp: relative error {exp_err:e}");
        let ln_err = sweep(1.0, 1e30, 997)
            .map(|x| (f64::from(ln(x)) - libm::log(f64::from(x))).abs())
            .fold(0.0, f64::max);
        assert!(ln_err < 1e-3, "ln: absolute error {ln_err:e}");
        let sqrt_err = sweep(f32::MIN_POSITIVE, f32::MAX, 9973)
            .map(|x| rel(sqrt(x), libm::sqrt(f64::from(x))))
            .fold(0.0, f64::max);
        assert!(sqrt_err < 0.07, "sqrt: relative error {sqrt_err:e}");
    }
}
