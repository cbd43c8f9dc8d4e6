//! Kernels on flat row-major slices: the loops every op and layer runs, on the host and on the
//! device alike.
//!
//! Lengths are the caller's contract: a kernel given slices of other lengths computes over the
//! shorter extent and never panics. Each output is computed in one fixed order, documented
//! with its kernel and the same on every target, so results are bit-identical on x86-64 and
//! on a Cortex-M4F. Within that order, a kernel has two shapes: on a target with wide SIMD
//! registers ([`SIMD`](crate::tensor::kernels::SIMD): x86-64, AArch64) it works on several rows at once and finds zero
//! inputs without branches (an unpredictable branch costs a modern core far more than the
//! arithmetic it saves); on a Cortex-M, whose in-order pipeline pays little for a branch and
//! whose 32 single-precision registers hold one row's tile, it works a row at a time and
//! branches. Both shapes are built on every target, so that tests on the host can check
//! them against each other bit for bit.
//!
//! On x86-64 the `f32` kernels also have instances compiled for AVX2, run when the CPU has it
//! (the default target's code is SSE2): the same bodies, without FMA, so the same operations
//! in the same order and the same bits ([`avx2`], [`allow_avx2`]).
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
mod wide;

pub use forward::{linear, linear_relu, matmul};
pub use input_grad::add_matmul_grad_a;
pub use weight_grad::{add_matmul_grad_b, set_matmul_grad_b, sgd_outer, sub_outer};
#[cfg(feature = "conv")]
pub(crate) use wide::instance;
pub use wide::{allow_avx2, avx2, avx2_available};

/// Whether the kernels called with `f32` values run their instances in [`concrete`]: on
/// bare-metal targets, where a firmware is often built for size. Elsewhere the generic body
/// is inlined into its caller, where constant shapes specialise it, unless the AVX2
/// instances run ([`avx2`]). All compute the same operations in the same order.
const CONCRETE: bool = cfg!(target_os = "none");

/// Whether the kernels called with `f32` values run their instances in [`concrete`] now
/// (the convolution's kernels follow the same rule).
#[inline(always)]
pub(crate) fn concrete_f32() -> bool {
    CONCRETE || wide::avx2()
}

/// The values as `f32`s if the kernels run their concrete instances for them.
#[inline(always)]
fn f32s<T: Scalar>(values: &[T]) -> Option<&[f32]> {
    if concrete_f32() {
        T::as_f32s(values)
    } else {
        None
    }
}

/// [`f32s`], mutable.
#[inline(always)]
fn f32s_mut<T: Scalar>(values: &mut [T]) -> Option<&mut [f32]> {
    if concrete_f32() {
        T::as_f32s_mut(values)
    } else {
        None
    }
}

/// The value as an `f32` if the kernels run their concrete instances for it.
#[inline(always)]
fn f32v<T: Scalar>(value: T) -> Option<f32> {
    if concrete_f32() {
        value.as_f32()
    } else {
        None
    }
}

/// The `f32` instances of the kernels a training step spends its time in, as concrete
/// functions of this crate. On bare-metal targets ([`CONCRETE`]) they are compiled with this
/// crate's optimisation settings whatever those of the crate that calls them, so a firmware
/// built for size (`opt-level = "s"`) still runs full-speed kernels; and each is compiled
/// once, however many places call it. On x86-64 they are the AVX2 instances ([`wide`]), run
/// when the CPU has AVX2.
mod concrete {
    use super::wide::instance;
    use super::{forward, input_grad, weight_grad};

    instance! {
        fn linear(
            x: &[f32],
            w: &[f32],
            bias: Option<&[f32]>,
            out: &mut [f32],
            inner: usize,
            cols: usize,
        ) = forward::linear_body(x, w, bias, out, inner, cols);
    }

    instance! {
        fn linear_relu(
            x: &[f32],
            w: &[f32],
            bias: Option<&[f32]>,
            out: &mut [f32],
            inner: usize,
            cols: usize,
        ) = forward::linear_relu_body(x, w, bias, out, inner, cols);
    }

    /// Bare-metal targets only. On x86-64 the generic body, inlined into its caller, runs:
    /// this function, compiled for AVX2 or not, ran twice its instructions (`callgrind`, the
    /// host bench's batch-1 step, 20,000 steps: 99 and 101 million against 41 million).
    #[inline(never)]
    pub(super) fn add_matmul_grad_a(
        g: &[f32],
        b: &[f32],
        grad_a: &mut [f32],
        inner: usize,
        cols: usize,
    ) {
        input_grad::add_matmul_grad_a_body(g, b, grad_a, inner, cols);
    }

    instance! {
        fn matmul_grad_b(
            g: &[f32],
            a: &[f32],
            grad_b: &mut [f32],
            inner: usize,
            cols: usize,
            set: bool,
        ) = weight_grad::matmul_grad_b(g, a, grad_b, inner, cols, set);
    }

    /// No AVX2 instance: a batch-1 step's update, where the AVX2 instances made the host
    /// bench's step slower, not faster (682 against 654 ns with every kernel's).
    #[inline(never)]
    pub(super) fn sgd_outer(
        values: &mut [f32],
        x: &[f32],
        g: &[f32],
        known_finite: bool,
        lr: f32,
        factor: f32,
    ) {
        weight_grad::sgd_outer_body(values, x, g, known_finite, lr, factor);
    }

    instance! {
        fn sgd_update(values: &mut [f32], grads: &[f32], lr: f32, factor: f32) =
            super::sgd_update_body(values, grads, lr, factor);
    }

    instance! {
        fn relu_mask(g: &[f32], y: &[f32], out: &mut [f32]) = super::relu_mask_body(g, y, out);
    }

    instance! {
        fn add_relu_grad(g: &[f32], x: &[f32], grad: &mut [f32]) =
            super::add_relu_grad_body(g, x, grad);
    }

    instance! {
        fn add_column_sums(x: &[f32], sums: &mut [f32]) = super::add_column_sums_body(x, sums);
    }

    instance! {
        fn fill(values: &mut [f32], v: f32) = super::fill_body(values, v);
    }

    instance! {
        fn sum_of_squares(x: &[f32]) -> f32 = super::sum_of_squares_body(x);
    }

    instance! {
        fn all_finite(x: &[f32]) -> bool = super::all_finite_body(x);
    }
}

/// The rows of `len` values of `x`, as many as it holds whole: `x.chunks_exact(len)` without
/// the division by a length known only at run time that counts them. None for `len` 0.
///
/// Only where measured better: for the rows of the input gradient's operands (46
/// instructions fewer per host step, 16 bytes fewer of the device's firmware), of the SIMD
/// shape's forward and of the cross-entropy's backward (35 fewer, 12 bytes fewer); elsewhere
/// the iterator took LLVM off a vectorised loop or made the firmware longer.
#[inline(always)]
pub(crate) fn rows<T>(x: &[T], len: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = if len == 0 { &[] } else { x };
    core::iter::from_fn(move || {
        let (row, tail) = rest.split_at_checked(len)?;
        rest = tail;
        Some(row)
    })
}

/// [`rows`], mutable.
#[inline(always)]
pub(crate) fn rows_mut<T>(x: &mut [T], len: usize) -> impl Iterator<Item = &mut [T]> {
    let mut rest = if len == 0 { &mut [] } else { x };
    core::iter::from_fn(move || {
        let (row, tail) = core::mem::take(&mut rest).split_at_mut_checked(len)?;
        rest = tail;
        Some(row)
    })
}

/// `true` on targets whose kernels take the SIMD shape (see the module documentation).
pub const SIMD: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Output columns the kernels keep in registers at a time.
const WIDE: usize = 16;
/// The tile for what is left of a row after the wide tiles (4 classes, say).
const NARROW: usize = 4;

/// Plain SGD on a run of parameters, `values[i] -= lr * grads[i]`, or
/// `lr * (grads[i] * factor)` when `factor` is not 1 (a clipping factor).
///
/// ```
/// use safegrad::tensor::kernels::sgd_update;
///
/// let mut p = [1.0f32, 2.0];
/// sgd_update(&mut p, &[1.0, -2.0], 0.5, 1.0);
/// assert_eq!(p, [0.5, 3.0]);
/// ```
pub fn sgd_update<T: Scalar>(values: &mut [T], grads: &[T], lr: T, factor: T) {
    if let (Some(v), Some(g), Some(lr), Some(factor)) =
        (f32s_mut(values), f32s(grads), f32v(lr), f32v(factor))
    {
        return concrete::sgd_update(v, g, lr, factor);
    }
    sgd_update_body(values, grads, lr, factor);
}

#[inline(always)]
fn sgd_update_body<T: Scalar>(values: &mut [T], grads: &[T], lr: T, factor: T) {
    // `g * 1` is `g`: without clipping the multiplication is left out.
    if factor == T::ONE {
        update_each(values, grads, |p, g| p - lr * g);
    } else {
        update_each(values, grads, |p, g| p - lr * (g * factor));
    }
}

/// Sets every value to `v`, eight at a time (a Cortex-M's `memset` stores a word per loop
/// iteration; this stores eight).
///
/// ```
/// use safegrad::tensor::kernels::fill;
///
/// let mut g = [3.0f32; 11];
/// fill(&mut g, 0.0);
/// assert_eq!(g, [0.0; 11]);
/// ```
pub fn fill<T: Scalar>(values: &mut [T], v: T) {
    if let (Some(values), Some(v)) = (f32s_mut(values), f32v(v)) {
        return concrete::fill(values, v);
    }
    fill_body(values, v);
}

#[inline(always)]
fn fill_body<T: Scalar>(values: &mut [T], v: T) {
    let mut chunks = values.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&[v; 8]);
    }
    for x in chunks.into_remainder() {
        *x = v;
    }
}

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
    if let (Some(g), Some(y), Some(out)) = (f32s(g), f32s(y), f32s_mut(out)) {
        return concrete::relu_mask(g, y, out);
    }
    relu_mask_body(g, y, out);
}

#[inline(always)]
fn relu_mask_body<T: Scalar>(g: &[T], y: &[T], out: &mut [T]) {
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
    if let (Some(g), Some(x), Some(grad)) = (f32s(g), f32s(x), f32s_mut(grad)) {
        return concrete::add_relu_grad(g, x, grad);
    }
    add_relu_grad_body(g, x, grad);
}

#[inline(always)]
fn add_relu_grad_body<T: Scalar>(g: &[T], x: &[T], grad: &mut [T]) {
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
    if let (Some(x), Some(sums)) = (f32s(x), f32s_mut(sums)) {
        return concrete::add_column_sums(x, sums);
    }
    add_column_sums_body(x, sums);
}

#[inline(always)]
fn add_column_sums_body<T: Scalar>(x: &[T], sums: &mut [T]) {
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
    match f32s(x) {
        Some(x) => T::from_f64(f64::from(concrete::sum_of_squares(x))),
        None => sum_of_squares_body(x),
    }
}

#[inline(always)]
fn sum_of_squares_body<T: Scalar>(x: &[T]) -> T {
    let mut lanes = [T::ZERO; 8];
    let mut chunks = x.chunks_exact(8);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v * v;
        }
    }
    // The last values' squares are added to every lane, those past the end as `+0`, which
    // changes no lane (a lane, a sum of squares from `+0`, is never `-0`). Added only to
    // the lanes they reach, they go through a masked store in the AVX2 instance, which the
    // sums' reload below waits for: the kernel then takes 7% of the host bench's batch-1
    // step.
    if !chunks.remainder().is_empty() {
        let mut tail = [T::ZERO; 8];
        for (t, &v) in tail.iter_mut().zip(chunks.remainder()) {
            *t = v * v;
        }
        for (l, t) in lanes.iter_mut().zip(tail) {
            *l += t;
        }
    }
    // On x86-64, `black_box` keeps the eight sums in order in two registers while the values
    // go by: otherwise LLVM arranges them for the last additions and shuffles every eight
    // values to match (20 instructions per eight values against 7; `callgrind` on the host
    // bench's batch-1 step).
    let lanes = if SIMD {
        core::hint::black_box(lanes)
    } else {
        lanes
    };
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
    match f32s(x) {
        Some(x) => concrete::all_finite(x),
        None => all_finite_body(x),
    }
}

#[inline(always)]
fn all_finite_body<T: Scalar>(x: &[T]) -> bool {
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
