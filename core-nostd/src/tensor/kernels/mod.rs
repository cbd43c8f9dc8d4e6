//! Kernels on flat row-major slices: the loops every op and layer runs, on the host and on the
//! device alike.
//!
//! Lengths are the caller's contract: a kernel given slices of other lengths computes over the
//! shorter extent and never panics. Each output is computed in one fixed order, documented
//! with its kernel and the same on every target, so results are bit-identical on x86-64 and
//! on a Cortex-M4F. Within that order, a kernel has two shapes: on a target with wide SIMD
//! registers ([`SIMD`]: x86-64, AArch64) it works on several rows at once and finds zero
//! inputs without branches (an unpredictable branch costs a modern core far more than the
//! arithmetic it saves); on a Cortex-M, whose in-order pipeline pays little for a branch and
//! whose 32 single-precision registers hold one row's tile, it works a row at a time and
//! branches. Both shapes are built on every target, so that tests on the host can check
//! them against each other bit for bit.
//!
//! The loops are tiled so that a tile of outputs stays in registers (16 single-precision
//! values: half of a Cortex-M4F's FP registers, four SSE registers on x86-64). Tiling changes
//! the order in which *different* outputs are computed, never the order of the terms of one.
//!
//! A term with a zero factor where strong zeros say so (a zero input in a product, a zero
//! upstream gradient in a gradient) is skipped: that is what strong zeros require when the
//! other factor is infinite or `nan`, and otherwise it changes no value (a finite factor
//! times zero is `±0`, and adding `±0` changes a sum at most in the sign of a zero). After a
//! ReLU about half of a hidden layer's inputs and gradients are zero, and their terms cost
//! nothing.

use crate::scalar::Scalar;

mod forward;
mod input_grad;
mod nonzero;
mod weight_grad;

pub use forward::{linear, linear_relu, matmul};
pub use input_grad::add_matmul_grad_a;
pub use weight_grad::{add_matmul_grad_b, set_matmul_grad_b, sub_outer};

/// `true` on targets whose kernels take the SIMD shape (see the module documentation).
pub const SIMD: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Output columns the kernels keep in registers at a time.
const WIDE: usize = 16;
/// The tile for what is left of a row after the wide tiles (4 classes, say).
const NARROW: usize = 4;

/// `values[i] = rule(values[i], grads[i])`, eight at a time: an update rule applied to a run of
/// parameters (`|p, g| p - lr * g` is plain SGD).
///
/// ```
/// use safegrad::tensor::kernels::update_each;
///
/// let mut p = [1.0f32, 2.0, 3.0];
/// update_each(&mut p, &[1.0, 1.0, -2.0], |p, g| p - 0.5 * g);
/// assert_eq!(p, [0.5, 1.5, 4.0]);
/// ```
pub fn update_each<T: Scalar>(values: &mut [T], grads: &[T], rule: impl Fn(T, T) -> T) {
    let mut v_chunks = values.chunks_exact_mut(8);
    let mut g_chunks = grads.chunks_exact(8);
    for (v, g) in (&mut v_chunks).zip(&mut g_chunks) {
        for (p, &gv) in v.iter_mut().zip(g) {
            *p = rule(*p, gv);
        }
    }
    for (p, &gv) in v_chunks
        .into_remainder()
        .iter_mut()
        .zip(g_chunks.remainder())
    {
        *p = rule(*p, gv);
    }
}

/// `out[i] = if y[i] > 0 { g[i] } else { 0 }`: the gradient of a ReLU's input from its output
/// `y` and the output's gradient `g`, written (the untaken side gets exactly zero).
///
/// ```
/// use safegrad::tensor::kernels::relu_mask;
///
/// let mut out = [9.0f32; 3];
/// relu_mask(&[2.0, f32::NAN, 3.0], &[0.5, 0.0, 1.0], &mut out);
/// assert_eq!(out, [2.0, 0.0, 3.0]);
/// ```
pub fn relu_mask<T: Scalar>(g: &[T], y: &[T], out: &mut [T]) {
    let eights = out
        .chunks_exact_mut(8)
        .zip(g.chunks_exact(8))
        .zip(y.chunks_exact(8));
    for ((o, gc), yc) in eights {
        for ((o, &gv), &yv) in o.iter_mut().zip(gc).zip(yc) {
            *o = if yv > T::ZERO { gv } else { T::ZERO };
        }
    }
    let done = out.len().min(g.len()).min(y.len()) / 8 * 8;
    let rest = out.get_mut(done..).unwrap_or(&mut []);
    let (g, y) = (g.get(done..).unwrap_or(&[]), y.get(done..).unwrap_or(&[]));
    for ((o, &gv), &yv) in rest.iter_mut().zip(g).zip(y) {
        *o = if yv > T::ZERO { gv } else { T::ZERO };
    }
}

/// `grad[i] += if x[i] > 0 { g[i] } else { 0 }`: the gradient of `max(x, 0)` added to `x`'s, eight at
/// a time (`g` where `x > 0`, else 0: the untaken side gets exactly zero).
///
/// ```
/// use safegrad::tensor::kernels::add_relu_grad;
///
/// let mut grad = [1.0f32; 3];
/// add_relu_grad(&[2.0, 2.0, f32::NAN], &[0.5, -0.5, 0.0], &mut grad);
/// assert_eq!(grad, [3.0, 1.0, 1.0]);
/// ```
pub fn add_relu_grad<T: Scalar>(g: &[T], x: &[T], grad: &mut [T]) {
    let lanes = grad
        .chunks_exact_mut(8)
        .zip(g.chunks_exact(8))
        .zip(x.chunks_exact(8));
    for ((d, gc), xc) in lanes {
        for ((d, &gv), &xv) in d.iter_mut().zip(gc).zip(xc) {
            // Adding +0 would change nothing but the sign of a zero: the lane is left alone.
            if xv > T::ZERO {
                *d += gv;
            }
        }
    }
    let done = grad.len().min(g.len()).min(x.len()) / 8 * 8;
    let rest = grad.get_mut(done..).unwrap_or(&mut []);
    let (g, x) = (g.get(done..).unwrap_or(&[]), x.get(done..).unwrap_or(&[]));
    for ((d, &gv), &xv) in rest.iter_mut().zip(g).zip(x) {
        if xv > T::ZERO {
            *d += gv;
        }
    }
}

/// `out[r][c] = x[r][c] + row[c]`.
pub fn add_row<T: Scalar>(x: &[T], row: &[T], out: &mut [T]) {
    if row.is_empty() {
        return;
    }
    for (x_row, out_row) in x
        .chunks_exact(row.len())
        .zip(out.chunks_exact_mut(row.len()))
    {
        for ((o, &xv), &bv) in out_row.iter_mut().zip(x_row).zip(row) {
            *o = xv + bv;
        }
    }
}

/// `sums[c] += x[r][c]` over the rows of `x` in increasing order (the gradient of a
/// broadcast row, a bias).
pub fn add_column_sums<T: Scalar>(x: &[T], sums: &mut [T]) {
    if sums.is_empty() {
        return;
    }
    for x_row in x.chunks_exact(sums.len()) {
        update_each(sums, x_row, |s, v| s + v);
    }
}

/// `out[r][c] = x[r][c] * row[c]`.
pub fn mul_row<T: Scalar>(x: &[T], row: &[T], out: &mut [T]) {
    if row.is_empty() {
        return;
    }
    for (x_row, out_row) in x
        .chunks_exact(row.len())
        .zip(out.chunks_exact_mut(row.len()))
    {
        for ((o, &xv), &sv) in out_row.iter_mut().zip(x_row).zip(row) {
            *o = xv * sv;
        }
    }
}

/// `out = x^T`, where `x` is `rows x cols`.
pub fn transpose<T: Scalar>(x: &[T], out: &mut [T], rows: usize, cols: usize) {
    if cols == 0 {
        return;
    }
    for (r, x_row) in x.chunks_exact(cols).enumerate().take(rows) {
        for (c, &v) in x_row.iter().enumerate() {
            if let Some(o) = out.get_mut(c * rows + r) {
                *o = v;
            }
        }
    }
}

/// Sum in index order.
pub fn sum<T: Scalar>(x: &[T]) -> T {
    x.iter().fold(T::ZERO, |acc, &v| acc + v)
}

/// Sum of squares: eight partial sums (value `i` goes to sum `i % 8`, in index order), then
/// added pairwise, `((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))`. Finite exactly when
/// every value is finite and the sum does not overflow.
///
/// ```
/// use safegrad::tensor::kernels::sum_of_squares;
///
/// assert_eq!(sum_of_squares(&[3.0f32, 4.0]), 25.0);
/// assert!(sum_of_squares(&[1.0f32, f32::NAN]).is_nan());
/// assert!(sum_of_squares(&[2e19f32]).is_infinite()); // overflows f32
/// ```
pub fn sum_of_squares<T: Scalar>(x: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v * v;
        }
    }
    for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += v * v;
    }
    let [s0, s1, s2, s3, s4, s5, s6, s7] = lanes;
    ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

/// `true` when no value is infinite or `nan`: eight running sums of `v * 0` (which is `0`
/// for a finite `v` and `nan` otherwise), so that the test has no branch per value and
/// vectorises.
///
/// ```
/// use safegrad::tensor::kernels::all_finite;
///
/// assert!(all_finite(&[1.0f32, -3e38, 0.0]));
/// assert!(!all_finite(&[1.0f32, f32::INFINITY]));
/// assert!(!all_finite(&[f32::NAN]));
/// ```
pub fn all_finite<T: Scalar>(x: &[T]) -> bool {
    let mut lanes = [T::ZERO; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v * T::ZERO;
        }
    }
    for (l, &v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l += v * T::ZERO;
    }
    lanes.iter().all(|l| *l == T::ZERO)
}

/// Largest value, propagating `nan`; `-inf` for an empty slice.
pub fn max<T: Scalar>(x: &[T]) -> T {
    x.iter().fold(T::NEG_INFINITY, |m, &v| {
        if v > m || v.is_nan() || m.is_nan() {
            if m.is_nan() {
                m
            } else {
                v
            }
        } else {
            m
        }
    })
}
