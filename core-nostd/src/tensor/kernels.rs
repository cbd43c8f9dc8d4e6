//! Kernels on flat row-major slices: the loops every op and layer runs, on the host and on the
//! device alike.
//!
//! Lengths are the caller's contract: a kernel given slices of other lengths computes over the
//! shorter extent and never panics. Each output is computed in one fixed order, the same on
//! every target, so results are bit-identical on x86-64 and on a Cortex-M4F:
//!
//! - a matrix product accumulates each output over the inner index in increasing order,
//!   starting from the bias (or `+0`);
//! - a gradient accumulates into its buffer term by term, in increasing order of the summed
//!   index.
//!
//! The loops are tiled so that a tile of outputs stays in registers (16 single-precision
//! values: half of a Cortex-M4F's FP registers, four SSE registers on x86-64). Tiling changes
//! the order in which *different* outputs are computed, never the order of the terms of one.
//!
//! A gradient term whose upstream gradient is zero is skipped: that is what strong zeros
//! require when the other factor is infinite or `nan`, and otherwise it changes no value (a
//! finite factor times zero is `±0`, and adding `±0` changes a sum at most in the sign of a
//! zero). With ReLU, about half of the upstream gradients of a hidden layer are zero, and
//! their terms cost nothing.

use crate::scalar::{strong_mul, Scalar};

/// Output columns the forward kernels keep in registers at a time.
const WIDE: usize = 16;
/// The tile for what is left of a row after the wide tiles (4 classes, say).
const NARROW: usize = 4;

/// `out = a (rows x inner) * b (inner x cols)`, `out` is `rows x cols`. Each output is
/// accumulated from `+0` over `inner` in increasing order; a zero in `a` contributes nothing,
/// whatever `b` holds (see [`linear`]).
///
/// ```
/// use safegrad::tensor::kernels::matmul;
///
/// let mut out = [0.0f32; 2];
/// matmul(&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0], &mut out, 2, 2);
/// assert_eq!(out, [13.0, 16.0]);
/// ```
pub fn matmul<T: Scalar>(a: &[T], b: &[T], out: &mut [T], inner: usize, cols: usize) {
    linear(a, b, None, out, inner, cols);
}

/// `out = x (rows x inner) * w (inner x cols) + bias`, the `1 x cols` bias added to every row
/// (a fully connected layer). Each output starts from its bias (`+0` without one) and
/// accumulates `x[r][k] * w[k][c]` over `k` in increasing order.
///
/// A zero `x[r][k]` contributes nothing, whatever row `k` of `w` holds: strong zeros, as in
/// the backward. An input a ReLU switched off costs no work (about half of a hidden layer's),
/// and an infinite or `nan` weight leaving it cannot turn the output into `nan` (IEEE would
/// give `0 * inf = nan`); only the sign of a zero output can differ from the plain sum.
///
/// ```
/// use safegrad::tensor::kernels::linear;
///
/// let mut out = [0.0f32; 2];
/// linear(&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0], Some(&[0.5, -0.5]), &mut out, 2, 2);
/// assert_eq!(out, [13.5, 15.5]);
/// // The second input is zero: its infinite weights are not used.
/// linear(&[1.0, 0.0], &[3.0, 4.0, f32::INFINITY, f32::NAN], None, &mut out, 2, 2);
/// assert_eq!(out, [3.0, 4.0]);
/// ```
pub fn linear<T: Scalar>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
    inner: usize,
    cols: usize,
) {
    linear_act(x, w, bias, out, inner, cols, |v| v);
}

/// [`linear`] followed by a ReLU, `max(v, 0)` of each output as it is stored (written as a
/// comparison, so that `nan` stays `nan`).
///
/// ```
/// use safegrad::tensor::kernels::linear_relu;
///
/// let mut out = [0.0f32; 2];
/// linear_relu(&[1.0, 2.0], &[3.0, -4.0, 5.0, 1.0], None, &mut out, 2, 2);
/// assert_eq!(out, [13.0, 0.0]);
/// ```
pub fn linear_relu<T: Scalar>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
    inner: usize,
    cols: usize,
) {
    linear_act(x, w, bias, out, inner, cols, |v| {
        if v < T::ZERO {
            T::ZERO
        } else {
            v
        }
    });
}

/// [`linear`] with `act` applied to each output as it is stored.
#[inline(always)]
fn linear_act<T: Scalar>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
    inner: usize,
    cols: usize,
    act: impl Fn(T) -> T + Copy,
) {
    if cols == 0 {
        return;
    }
    if inner == 0 {
        for out_row in out.chunks_exact_mut(cols) {
            for (c, o) in out_row.iter_mut().enumerate() {
                *o = act(bias.and_then(|b| b.get(c)).copied().unwrap_or(T::ZERO));
            }
        }
        return;
    }
    for (x_row, out_row) in x.chunks_exact(inner).zip(out.chunks_exact_mut(cols)) {
        let c = linear_tiles::<T, WIDE>(x_row, w, bias, out_row, 0, act);
        let c = linear_tiles::<T, NARROW>(x_row, w, bias, out_row, c, act);
        linear_tiles::<T, 1>(x_row, w, bias, out_row, c, act);
    }
}

/// Columns `first..` of one output row of [`linear`], `W` at a time while `W` of them are
/// left; returns the first column not computed.
#[inline(always)]
fn linear_tiles<T: Scalar, const W: usize>(
    x_row: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out_row: &mut [T],
    first: usize,
    act: impl Fn(T) -> T,
) -> usize {
    let cols = out_row.len();
    let mut c = first;
    while let Some(out) = out_row.get_mut(c..).and_then(|o| o.first_chunk_mut::<W>()) {
        let mut acc = match bias
            .and_then(|b| b.get(c..))
            .and_then(|b| b.first_chunk::<W>())
        {
            Some(b) => *b,
            None => [T::ZERO; W],
        };
        for (&xk, w_row) in x_row.iter().zip(w.chunks_exact(cols)) {
            if xk == T::ZERO {
                continue;
            }
            if let Some(w_tile) = w_row.get(c..).and_then(|r| r.first_chunk::<W>()) {
                for (a, &wv) in acc.iter_mut().zip(w_tile) {
                    *a += xk * wv;
                }
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = act(a);
        }
        c += W;
    }
    c
}

/// `grad_a += g * b^T`: the gradient of `a` in `out = a (rows x inner) * b (inner x cols)`,
/// `g` being `out`'s gradient: `grad_a[r][k]` gains the dot product of row `r` of `g` with row
/// `k` of `b`. The dot product is taken in blocks of 16 columns (then 4, then the last one to
/// three), each block summed in four lanes (column `j` to lane `j % 4`, lanes added as
/// `(l0 + l1) + (l2 + l3)`) and added to `grad_a[r][k]` in turn: an order that a Cortex-M4F
/// runs with the block of `g` in registers and x86-64 with SSE, and that both run alike. A
/// zero `g[r][j]` contributes nothing, whatever `b` holds (strong zeros): a block whose sum
/// is not finite is summed again without its zero terms.
///
/// ```
/// use safegrad::tensor::kernels::add_matmul_grad_a;
///
/// // A zero upstream gradient meets an infinite weight: no nan.
/// let mut grad = [0.0f32; 2];
/// add_matmul_grad_a(&[0.0, 2.0], &[f32::INFINITY, 1.0, 3.0, 4.0], &mut grad, 2, 2);
/// assert_eq!(grad, [2.0, 8.0]);
/// ```
pub fn add_matmul_grad_a<T: Scalar>(g: &[T], b: &[T], grad_a: &mut [T], inner: usize, cols: usize) {
    if inner == 0 || cols == 0 {
        return;
    }
    for (g_row, ga_row) in g.chunks_exact(cols).zip(grad_a.chunks_exact_mut(inner)) {
        let mut j = 0;
        while dot_blocks::<T, WIDE>(g_row, b, ga_row, j) {
            j += WIDE;
        }
        while dot_blocks::<T, NARROW>(g_row, b, ga_row, j) {
            j += NARROW;
        }
        if j < cols {
            dot_rest(g_row, b, ga_row, j);
        }
    }
}

/// Adds columns `j..j + W` of every dot product of [`add_matmul_grad_a`] to `ga_row`, the
/// block of `g_row` held in registers; `false` if fewer than `W` columns are left.
#[inline(always)]
fn dot_blocks<T: Scalar, const W: usize>(g_row: &[T], b: &[T], ga_row: &mut [T], j: usize) -> bool {
    let cols = g_row.len();
    let Some(&g_block) = g_row.get(j..).and_then(|r| r.first_chunk::<W>()) else {
        return false;
    };
    for (w_row, ga) in b.chunks_exact(cols).zip(ga_row.iter_mut()) {
        if let Some(w_block) = w_row.get(j..).and_then(|r| r.first_chunk::<W>()) {
            let partial = lanes(&g_block, w_block);
            *ga += if partial.is_finite() {
                partial
            } else {
                lanes_strong(&g_block, w_block)
            };
        }
    }
    true
}

/// One block's sum in four lanes: term `i` to lane `i % 4` in increasing `i` (each lane
/// starting from its first term), then `(l0 + l1) + (l2 + l3)`. `W` is a multiple of 4.
#[inline(always)]
fn lanes<T: Scalar, const W: usize>(g: &[T; W], w: &[T; W]) -> T {
    let mut chunks = g.chunks_exact(4).zip(w.chunks_exact(4));
    let mut l = [T::ZERO; 4];
    if let Some((gc, wc)) = chunks.next() {
        for ((lane, &gv), &wv) in l.iter_mut().zip(gc).zip(wc) {
            *lane = gv * wv;
        }
    }
    for (gc, wc) in chunks {
        for ((lane, &gv), &wv) in l.iter_mut().zip(gc).zip(wc) {
            *lane += gv * wv;
        }
    }
    let [l0, l1, l2, l3] = l;
    (l0 + l1) + (l2 + l3)
}

/// [`lanes`] without the terms whose `g` is zero (strong zeros), for a block whose plain sum
/// is not finite: the same sum whenever no such term is `nan`.
#[cold]
#[inline(never)]
fn lanes_strong<T: Scalar>(g: &[T], w: &[T]) -> T {
    let mut l = [T::ZERO; 4];
    for (i, (&gv, &wv)) in g.iter().zip(w).enumerate() {
        if gv != T::ZERO {
            if let Some(lane) = l.get_mut(i % 4) {
                *lane += gv * wv;
            }
        }
    }
    let [l0, l1, l2, l3] = l;
    (l0 + l1) + (l2 + l3)
}

/// The last one to three columns of [`add_matmul_grad_a`]: a block of four lanes, one term
/// each (as a block padded with zero terms, which change no lane).
#[cold]
#[inline(never)]
fn dot_rest<T: Scalar>(g_row: &[T], b: &[T], ga_row: &mut [T], j: usize) {
    let cols = g_row.len();
    let g_rest = g_row.get(j..).unwrap_or(&[]);
    for (w_row, ga) in b.chunks_exact(cols).zip(ga_row.iter_mut()) {
        let w_rest = w_row.get(j..).unwrap_or(&[]);
        let mut l = [T::ZERO; 4];
        for ((lane, &gv), &wv) in l.iter_mut().zip(g_rest).zip(w_rest) {
            *lane += gv * wv;
        }
        let [l0, l1, l2, l3] = l;
        let partial = (l0 + l1) + (l2 + l3);
        *ga += if partial.is_finite() {
            partial
        } else {
            lanes_strong(g_rest, w_rest)
        };
    }
}

/// `grad_b += a^T * g`: the gradient of `b` in `out = a (rows x inner) * b (inner x cols)`,
/// `g` being `out`'s gradient. `grad_b[k][j]` accumulates `g[r][j] * a[r][k]` over `r` in
/// increasing order; a zero `g[r][j]` contributes nothing, whatever `a` holds (strong zeros).
///
/// ```
/// use safegrad::tensor::kernels::add_matmul_grad_b;
///
/// let mut grad = [0.0f32; 2];
/// add_matmul_grad_b(&[0.0, 3.0], &[f32::NAN], &mut grad, 1, 2);
/// assert_eq!(grad[0], 0.0); // zero upstream gradient: a strong zero
/// assert!(grad[1].is_nan()); // 3 * nan
/// ```
pub fn add_matmul_grad_b<T: Scalar>(g: &[T], a: &[T], grad_b: &mut [T], inner: usize, cols: usize) {
    matmul_grad_b::<T, false>(g, a, grad_b, inner, cols);
}

/// `grad_b = a^T * g`: [`add_matmul_grad_b`] into a buffer that need not be zeroed first (the
/// first row of `a` and `g` writes, the others accumulate). Used when the product is the
/// only contribution to `b`'s gradient, which saves zeroing the buffer. Zeros of the result
/// may be of either sign.
///
/// ```
/// use safegrad::tensor::kernels::set_matmul_grad_b;
///
/// let mut grad = [7.0f32; 4]; // whatever was there
/// set_matmul_grad_b(&[1.0, 2.0], &[3.0, 0.0], &mut grad, 2, 2);
/// assert_eq!(grad, [3.0, 6.0, 0.0, 0.0]);
/// ```
pub fn set_matmul_grad_b<T: Scalar>(g: &[T], a: &[T], grad_b: &mut [T], inner: usize, cols: usize) {
    matmul_grad_b::<T, true>(g, a, grad_b, inner, cols);
}

fn matmul_grad_b<T: Scalar, const SET: bool>(
    g: &[T],
    a: &[T],
    grad_b: &mut [T],
    inner: usize,
    cols: usize,
) {
    if inner == 0 || cols == 0 {
        return;
    }
    let grad_b = grad_b
        .get_mut(..inner.saturating_mul(cols))
        .unwrap_or(&mut []);
    for (r, (g_row, a_row)) in g.chunks_exact(cols).zip(a.chunks_exact(inner)).enumerate() {
        if SET && r == 0 {
            grad_b_row::<T, true>(g_row, a_row, grad_b);
        } else {
            grad_b_row::<T, false>(g_row, a_row, grad_b);
        }
    }
}

/// One sample's contribution `a_row^T g_row` to `grad_b` (written if `SET`, else added).
fn grad_b_row<T: Scalar, const SET: bool>(g_row: &[T], a_row: &[T], grad_b: &mut [T]) {
    // With a finite upstream gradient, a zero `a[r][k]` makes the whole row of terms `±0`.
    let g_finite = g_row.iter().all(|v| v.is_finite());
    let j = grad_b_tiles::<T, WIDE, SET>(g_row, a_row, grad_b, 0, g_finite);
    let j = grad_b_tiles::<T, NARROW, SET>(g_row, a_row, grad_b, j, g_finite);
    grad_b_tiles::<T, 1, SET>(g_row, a_row, grad_b, j, g_finite);
}

/// Columns `first..` of [`grad_b_row`], `W` at a time; returns the first column not done.
#[inline(always)]
fn grad_b_tiles<T: Scalar, const W: usize, const SET: bool>(
    g_row: &[T],
    a_row: &[T],
    grad_b: &mut [T],
    first: usize,
    g_finite: bool,
) -> usize {
    let cols = g_row.len();
    let mut j = first;
    while let Some(g_tile) = g_row.get(j..).and_then(|s| s.first_chunk::<W>()) {
        let g_tile = *g_tile;
        for (&ak, out_row) in a_row.iter().zip(grad_b.chunks_exact_mut(cols)) {
            let Some(out) = out_row.get_mut(j..).and_then(|o| o.first_chunk_mut::<W>()) else {
                break;
            };
            if ak == T::ZERO && g_finite {
                if SET {
                    *out = [T::ZERO; W];
                }
            } else if ak.is_finite() {
                for (o, &gv) in out.iter_mut().zip(&g_tile) {
                    let term = gv * ak;
                    *o = if SET { term } else { *o + term };
                }
            } else {
                strong_terms(out, &g_tile, ak, SET);
            }
        }
        j += W;
    }
    j
}

/// The gradient `x^T g` of a one-row product (`x` the `1 x inner` input, `g` the `1 x cols`
/// output gradient) written to `grads` as [`set_matmul_grad_b`] writes it, and each weight
/// updated from its gradient entry as it is written: `values[k][j] = rule(values[k][j],
/// grads[k][j])`, for a rule that leaves a weight with a zero gradient unchanged (plain SGD):
/// a row whose `x[k]` is zero (a row of zeros, `g` being finite) is written as zeros and
/// its weights are left alone, which after a ReLU is about half of the rows.
///
/// ```
/// use safegrad::tensor::kernels::outer_update;
///
/// let (mut w, mut grads) = ([1.0f32; 4], [9.0f32; 4]);
/// outer_update(&mut w, &mut grads, &[2.0, 0.0], &[1.0, -1.0], |p, g| p - 0.5 * g);
/// assert_eq!(grads, [2.0, -2.0, 0.0, 0.0]);
/// assert_eq!(w, [0.0, 2.0, 1.0, 1.0]);
/// ```
pub fn outer_update<T: Scalar>(
    values: &mut [T],
    grads: &mut [T],
    x: &[T],
    g: &[T],
    rule: impl Fn(T, T) -> T,
) {
    let cols = g.len();
    if cols == 0 {
        return;
    }
    let g_finite = g.iter().all(|v| v.is_finite());
    let rows = values
        .chunks_exact_mut(cols)
        .zip(grads.chunks_exact_mut(cols))
        .zip(x);
    for ((v_row, o_row), &xk) in rows {
        if xk == T::ZERO && g_finite {
            o_row.fill(T::ZERO);
        } else if xk.is_finite() {
            let rows8 = v_row
                .chunks_exact_mut(8)
                .zip(o_row.chunks_exact_mut(8))
                .zip(g.chunks_exact(8));
            for ((v, o), gc) in rows8 {
                let (Some(v), Some(o), Some(gc)) = (
                    v.first_chunk_mut::<8>(),
                    o.first_chunk_mut::<8>(),
                    gc.first_chunk::<8>(),
                ) else {
                    break;
                };
                outer_chunk(v, o, gc, xk, &rule);
            }
            let done = cols - cols % 8;
            let rest = v_row.get_mut(done..).unwrap_or(&mut []);
            let o_rest = o_row.get_mut(done..).unwrap_or(&mut []);
            for ((p, o), &gv) in rest
                .iter_mut()
                .zip(o_rest)
                .zip(g.get(done..).unwrap_or(&[]))
            {
                let term = gv * xk;
                *o = term;
                *p = rule(*p, term);
            }
        } else {
            strong_terms(o_row, g, xk, true);
            update_each(v_row, o_row, &rule);
        }
    }
}

/// `values[k][j] -= x[k] * c[j]` with `c[j] = rate(g[j])`: plain SGD on a weight whose
/// gradient is the outer product `x^T g` (the weights of a layer trained on one sample, `x`
/// its input row, `g` its output gradient, `rate` `|g| lr * g`), without writing the gradient
/// out. A row whose `x[k]` is zero (its gradient a row of zeros, `g` being finite) is left
/// alone, which after a ReLU is about half of the rows; with `x[k]` infinite or `nan`, the
/// terms whose `g[j]` is zero contribute nothing (strong zeros). With `known_finite`, the
/// caller vouches that `x` and `g` are finite and they are not checked again. The rates are
/// held in registers 16 at a time.
///
/// ```
/// use safegrad::tensor::kernels::sub_outer;
///
/// let mut w = [1.0f32; 4];
/// sub_outer(&mut w, &[2.0, 0.0], &[1.0, -1.0], false, |g| 0.5 * g);
/// assert_eq!(w, [0.0, 2.0, 1.0, 1.0]);
/// ```
pub fn sub_outer<T: Scalar>(
    values: &mut [T],
    x: &[T],
    g: &[T],
    known_finite: bool,
    rate: impl Fn(T) -> T,
) {
    if g.is_empty() {
        return;
    }
    let g_finite = known_finite || g.iter().all(|v| v.is_finite());
    if !known_finite && !x.iter().all(|v| v.is_finite()) {
        sub_outer_strong(values, x, g, &rate, g_finite);
        return;
    }
    if g_finite {
        let j = sub_outer_tiles::<T, WIDE, true>(values, x, g, &rate, 0);
        let j = sub_outer_tiles::<T, NARROW, true>(values, x, g, &rate, j);
        sub_outer_tiles::<T, 1, true>(values, x, g, &rate, j);
    } else {
        let j = sub_outer_tiles::<T, WIDE, false>(values, x, g, &rate, 0);
        let j = sub_outer_tiles::<T, NARROW, false>(values, x, g, &rate, j);
        sub_outer_tiles::<T, 1, false>(values, x, g, &rate, j);
    }
}

/// [`sub_outer`] when some `x[k]` is infinite or `nan`: row by row, and in such a row the
/// terms whose `g[j]` is zero left out (strong zeros).
#[cold]
#[inline(never)]
fn sub_outer_strong<T: Scalar>(
    values: &mut [T],
    x: &[T],
    g: &[T],
    rate: &impl Fn(T) -> T,
    g_finite: bool,
) {
    for (v_row, &xk) in values.chunks_exact_mut(g.len()).zip(x) {
        if xk == T::ZERO && g_finite {
            continue;
        }
        for (p, &gv) in v_row.iter_mut().zip(g) {
            if xk.is_finite() || gv != T::ZERO {
                *p -= xk * rate(gv);
            }
        }
    }
}

/// Columns `first..` of [`sub_outer`] for a finite `x`, `W` at a time (rows whose `x[k]` is
/// zero skipped if `SKIP_ZERO_ROWS`: when `g` is finite); returns the first column not done.
#[inline(always)]
fn sub_outer_tiles<T: Scalar, const W: usize, const SKIP_ZERO_ROWS: bool>(
    values: &mut [T],
    x: &[T],
    g: &[T],
    rate: &impl Fn(T) -> T,
    first: usize,
) -> usize {
    let cols = g.len();
    let mut j = first;
    while let Some(g_tile) = g.get(j..).and_then(|s| s.first_chunk::<W>()) {
        let mut c = [T::ZERO; W];
        for (c, &gv) in c.iter_mut().zip(g_tile) {
            *c = rate(gv);
        }
        for (v_row, &xk) in values.chunks_exact_mut(cols).zip(x) {
            if SKIP_ZERO_ROWS && xk == T::ZERO {
                continue;
            }
            let Some(v) = v_row.get_mut(j..).and_then(|s| s.first_chunk_mut::<W>()) else {
                break;
            };
            for (p, &cv) in v.iter_mut().zip(&c) {
                *p -= xk * cv;
            }
        }
        j += W;
    }
    j
}

/// Eight entries of [`outer_update`]: the terms, their store, then the rule (the order that
/// keeps a Cortex-M4F's loop free of predicated instructions).
#[inline(always)]
fn outer_chunk<T: Scalar>(
    v: &mut [T; 8],
    o: &mut [T; 8],
    g: &[T; 8],
    xk: T,
    rule: &impl Fn(T, T) -> T,
) {
    let mut terms = [T::ZERO; 8];
    for (t, &gv) in terms.iter_mut().zip(g) {
        *t = gv * xk;
    }
    *o = terms;
    for (p, &t) in v.iter_mut().zip(&terms) {
        *p = rule(*p, t);
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

/// `out[i] = strong_mul(g[i], x)` (or `+=` it unless `set`): the terms of a weight gradient
/// whose input value `x` is infinite or `nan`, kept out of the kernels' loops.
#[cold]
#[inline(never)]
fn strong_terms<T: Scalar>(out: &mut [T], g: &[T], x: T, set: bool) {
    for (o, &gv) in out.iter_mut().zip(g) {
        let term = strong_mul(gv, x);
        *o = if set { term } else { *o + term };
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

/// `sums[c] = x[0][c] + x[1][c] + ...`: [`add_column_sums`] into a buffer that need not be
/// zeroed first (the first row is written, the others added).
///
/// ```
/// use safegrad::tensor::kernels::set_column_sums;
///
/// let mut sums = [9.0f32; 2];
/// set_column_sums(&[1.0, 2.0, 3.0, 4.0], &mut sums);
/// assert_eq!(sums, [4.0, 6.0]);
/// ```
pub fn set_column_sums<T: Scalar>(x: &[T], sums: &mut [T]) {
    if sums.is_empty() {
        return;
    }
    let mut rows = x.chunks_exact(sums.len());
    match rows.next() {
        Some(first) => sums.copy_from_slice(first),
        None => return,
    }
    for x_row in rows {
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
