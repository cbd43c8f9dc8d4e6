//! Each op's forward and backward as pure functions on scalars or flat row-major slices.
//!
//! The [`Tape`](crate::Tape) records which op ran on which nodes and calls these functions;
//! they are public so that a test (or a firmware kernel) can run one op without a tape.
//! Every backward function multiplies the upstream gradient `g` into the local derivative
//! with [`strong_mul`], so `g == 0` always contributes exactly `0`.
//!
//! ```
//! use safegrad::ops;
//!
//! // PyTorch's autograd note: x / 0, masked afterwards. The masked lane's upstream gradient
//! // is 0; IEEE would form 0 * inf = nan, strong zeros give 0.
//! let (d_num, d_den) = ops::div_grad(0.0f32, 1.0, 0.0);
//! assert_eq!((d_num, d_den), (0.0, 0.0));
//! ```

use crate::scalar::{strong_mul, Scalar};

// ---------------------------------------------------------------------------------------------
// Activations and transcendental functions

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

/// Gradient of the raw `sqrt` from its output `y`: `g / (2 y)` (infinite at `x = 0`).
#[inline]
pub fn sqrt_grad<T: Scalar>(g: T, y: T) -> T {
    strong_mul(g, T::ONE / (y + y))
}

/// `sqrt(x + eps)`: finite, with a finite gradient, for every `x >= 0`.
#[inline]
pub fn safe_sqrt<T: Scalar>(x: T, eps: T) -> T {
    (x + eps).sqrt()
}

// ---------------------------------------------------------------------------------------------
// Division in its four forms

/// Gradient of `num / den` as `(d_num, d_den)`: `(g / den, -g * (num / den) / den)`, the
/// order of operations PyTorch uses.
#[inline]
pub fn div_grad<T: Scalar>(g: T, num: T, den: T) -> (T, T) {
    (
        strong_mul(g, T::ONE / den),
        strong_mul(g, -((num / den) / den)),
    )
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

// ---------------------------------------------------------------------------------------------
// Masks and selection

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

/// `1` where `x != 0` (including `nan`), else `0`: a condition for [`select`] or a mask.
#[inline]
pub fn not_zero<T: Scalar>(x: T) -> T {
    if x != T::ZERO {
        T::ONE
    } else {
        T::ZERO
    }
}

// ---------------------------------------------------------------------------------------------
// Row-wise reductions: log-sum-exp and softmax cross-entropy

/// Stable log-sum-exp of one row: `m + ln(sum(exp(x - m)))` with `m = max(x)` held
/// constant. `-inf` for an empty row or a row of `-inf`; `nan` if any value is `nan`.
pub fn log_sum_exp<T: Scalar>(row: &[T]) -> T {
    let m = crate::tensor::kernels::max(row);
    if !m.is_finite() {
        return m;
    }
    let s = row.iter().fold(T::ZERO, |acc, &v| acc + (v - m).exp());
    m + s.ln()
}

/// Gradient of [`log_sum_exp`] for one row: adds `g * softmax(row)` to `grad`, with the
/// softmax computed as `exp(x - m) / sum(exp(x - m))` from the same `m = max(row)` as the
/// forward (not from the rounded log-sum-exp, which loses digits at large logits).
pub fn log_sum_exp_grad<T: Scalar>(g: T, row: &[T], grad: &mut [T]) {
    let m = crate::tensor::kernels::max(row);
    let s = row.iter().fold(T::ZERO, |acc, &v| acc + (v - m).exp());
    for (d, &v) in grad.iter_mut().zip(row) {
        *d += strong_mul(g, (v - m).exp() / s);
    }
}

/// Softmax cross-entropy of one row of logits `z` against class `target`, in the stable form
/// `ln(sum(exp(z - m))) - (z_t - m)` with `m = max(z)` held constant. `None` when `target`
/// is not a column of the row.
///
/// ```
/// use safegrad::ops::softmax_cross_entropy;
///
/// let tied = softmax_cross_entropy(&[1e4f32, 1e4], 0).unwrap();
/// assert!((tied - core::f32::consts::LN_2).abs() < 1e-6);
/// assert_eq!(softmax_cross_entropy(&[1e4f32, -1e4], 1), Some(2e4));
/// ```
pub fn softmax_cross_entropy<T: Scalar>(z: &[T], target: usize) -> Option<T> {
    let z_t = *z.get(target)?;
    let m = crate::tensor::kernels::max(z);
    let s = z.iter().fold(T::ZERO, |acc, &v| acc + (v - m).exp());
    Some(s.ln() - (z_t - m))
}

/// [`softmax_cross_entropy`] that also writes `softmax(z)` (`exp(z - m) / sum`) to
/// `probabilities`, for [`softmax_cross_entropy_grad_from`].
///
/// ```
/// use safegrad::ops::{softmax_cross_entropy, softmax_cross_entropy_with_softmax};
///
/// let mut p = [0.0f32; 3];
/// let loss = softmax_cross_entropy_with_softmax(&[1.0, 2.0, 3.0], 2, &mut p);
/// assert_eq!(loss, softmax_cross_entropy(&[1.0, 2.0, 3.0], 2));
/// assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// ```
pub fn softmax_cross_entropy_with_softmax<T: Scalar>(
    z: &[T],
    target: usize,
    probabilities: &mut [T],
) -> Option<T> {
    let z_t = *z.get(target)?;
    let m = crate::tensor::kernels::max(z);
    let mut s = T::ZERO;
    for (p, &v) in probabilities.iter_mut().zip(z) {
        let e = (v - m).exp();
        *p = e;
        s += e;
    }
    for p in probabilities.iter_mut() {
        *p = *p / s;
    }
    Some(s.ln() - (z_t - m))
}

/// [`softmax_cross_entropy_grad`] from the softmax [`softmax_cross_entropy_with_softmax`]
/// wrote: adds `g * (p - onehot(t))` to `grad`.
pub fn softmax_cross_entropy_grad_from<T: Scalar>(
    g: T,
    probabilities: &[T],
    target: usize,
    grad: &mut [T],
) {
    for (j, (d, &p)) in grad.iter_mut().zip(probabilities).enumerate() {
        let local = if j == target { p - T::ONE } else { p };
        *d += strong_mul(g, local);
    }
}

/// Gradient of [`softmax_cross_entropy`] for one row: adds `g * (softmax(z) - onehot(t))`
/// to `grad`.
pub fn softmax_cross_entropy_grad<T: Scalar>(g: T, z: &[T], target: usize, grad: &mut [T]) {
    let m = crate::tensor::kernels::max(z);
    // The exponentials are kept for the second pass when the row is short (the usual number
    // of classes), and computed again otherwise: the same values either way.
    let mut kept = [T::ZERO; EXP_KEPT];
    let s = z.iter().enumerate().fold(T::ZERO, |acc, (j, &v)| {
        let e = (v - m).exp();
        if let Some(k) = kept.get_mut(j) {
            *k = e;
        }
        acc + e
    });
    for (j, (d, &v)) in grad.iter_mut().zip(z).enumerate() {
        let e = match kept.get(j) {
            Some(&e) if z.len() <= EXP_KEPT => e,
            _ => (v - m).exp(),
        };
        let p = e / s;
        let local = if j == target { p - T::ONE } else { p };
        *d += strong_mul(g, local);
    }
}

/// Classes whose exponentials [`softmax_cross_entropy_grad`] keeps between its two passes.
const EXP_KEPT: usize = 16;

// ---------------------------------------------------------------------------------------------
// Layer normalisation

/// Normalises one row: `y = (x - mean) / sqrt(var + eps)`, with the mean and then the
/// variance `mean((x - mean)^2)` computed in two passes. Writes `y` and returns
/// `1 / sqrt(var + eps)`.
///
/// ```
/// use safegrad::ops::layer_norm;
///
/// let mut y = [0.0f64; 4];
/// layer_norm(&[2.0, 2.0, 2.0, 2.0], 1e-5, &mut y); // a constant row
/// assert_eq!(y, [0.0; 4]);
/// ```
pub fn layer_norm<T: Scalar>(row: &[T], eps: T, y: &mut [T]) -> T {
    let (mean, inv_std) = mean_and_inv_std(row, eps);
    for (o, &v) in y.iter_mut().zip(row) {
        *o = (v - mean) * inv_std;
    }
    inv_std
}

/// The mean of a row and `1 / sqrt(var + eps)`, the variance computed in two passes.
pub fn mean_and_inv_std<T: Scalar>(row: &[T], eps: T) -> (T, T) {
    let n = T::from_usize(row.len());
    let mean = crate::tensor::kernels::sum(row) / n;
    let var = row.iter().fold(T::ZERO, |acc, &v| {
        let d = v - mean;
        acc + d * d
    }) / n;
    (mean, T::ONE / (var + eps).sqrt())
}

/// Gradient of [`layer_norm`] for one row from its output `y` and `inv_std`: adds
/// `inv_std * (g - mean(g) - y * mean(g * y))` to `grad`. A row whose upstream gradient is
/// all zero contributes exactly zero.
pub fn layer_norm_grad<T: Scalar>(g: &[T], y: &[T], inv_std: T, grad: &mut [T]) {
    if g.iter().all(|&v| v == T::ZERO) {
        return;
    }
    let n = T::from_usize(g.len());
    let mean_g = crate::tensor::kernels::sum(g) / n;
    let mean_gy = g
        .iter()
        .zip(y)
        .fold(T::ZERO, |acc, (&gv, &yv)| acc + strong_mul(gv, yv))
        / n;
    for ((d, &gv), &yv) in grad.iter_mut().zip(g).zip(y) {
        *d += inv_std * (gv - mean_g - yv * mean_gy);
    }
}

// ---------------------------------------------------------------------------------------------
// Matrix product

/// Adds `g * b^T` to `grad_a`, the gradient of `a` in `out = a (rows x inner) * b
/// (inner x cols)`. A zero `g[i][j]` contributes nothing (strong zero), whatever `b` holds.
/// ([`kernels::add_matmul_grad_a`](crate::tensor::kernels::add_matmul_grad_a).)
pub fn matmul_grad_a<T: Scalar>(g: &[T], b: &[T], grad_a: &mut [T], inner: usize, cols: usize) {
    crate::tensor::kernels::add_matmul_grad_a(g, b, grad_a, inner, cols);
}

/// Adds `a^T * g` to `grad_b`, the gradient of `b` in `out = a (rows x inner) * b
/// (inner x cols)`. A zero `g[i][j]` contributes nothing (strong zero), whatever `a` holds.
/// ([`kernels::add_matmul_grad_b`](crate::tensor::kernels::add_matmul_grad_b).)
pub fn matmul_grad_b<T: Scalar>(g: &[T], a: &[T], grad_b: &mut [T], inner: usize, cols: usize) {
    crate::tensor::kernels::add_matmul_grad_b(g, a, grad_b, inner, cols);
}
