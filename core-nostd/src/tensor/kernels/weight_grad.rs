//! The gradient of a product's right operand (a layer's weights), `grad_b += a^T g`, and the
//! SGD update from it when it is an outer product.

use super::nonzero::{all_nonzero, mask, padded, Nonzero, CHUNK};
use super::{all_finite, NARROW, SIMD, WIDE};
use crate::scalar::{strong_mul, Scalar};

/// `grad_b += a^T * g`: the gradient of `b` in `out = a (rows x inner) * b (inner x cols)`,
/// `g` being `out`'s gradient. `grad_b[k][j]` accumulates `a[r][k] * g[r][j]` over `r` in
/// increasing order, each tile of `grad_b` in registers while the rows go by; a zero
/// `g[r][j]` contributes nothing, whatever `a` holds (strong zeros).
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
    if let (Some(g), Some(a), Some(gb)) = (super::f32s(g), super::f32s(a), super::f32s_mut(grad_b))
    {
        return super::concrete::matmul_grad_b(g, a, gb, inner, cols, false);
    }
    matmul_grad_b(g, a, grad_b, inner, cols, false);
}

/// `grad_b = a^T * g`: [`add_matmul_grad_b`] into a buffer that need not be zeroed first
/// (each entry starts from `+0`). Zeros of the result may be of either sign.
///
/// ```
/// use safegrad::tensor::kernels::set_matmul_grad_b;
///
/// let mut grad = [7.0f32; 4]; // whatever was there
/// set_matmul_grad_b(&[1.0, 2.0], &[3.0, 0.0], &mut grad, 2, 2);
/// assert_eq!(grad, [3.0, 6.0, 0.0, 0.0]);
/// ```
pub fn set_matmul_grad_b<T: Scalar>(g: &[T], a: &[T], grad_b: &mut [T], inner: usize, cols: usize) {
    if let (Some(g), Some(a), Some(gb)) = (super::f32s(g), super::f32s(a), super::f32s_mut(grad_b))
    {
        return super::concrete::matmul_grad_b(g, a, gb, inner, cols, true);
    }
    matmul_grad_b(g, a, grad_b, inner, cols, true);
}

/// [`add_matmul_grad_b`] (`set` false) or [`set_matmul_grad_b`] (`set` true) for any scalar
/// type.
#[inline(always)]
pub(super) fn matmul_grad_b<T: Scalar>(
    g: &[T],
    a: &[T],
    grad_b: &mut [T],
    inner: usize,
    cols: usize,
    set: bool,
) {
    if inner == 0 || cols == 0 {
        return;
    }
    let rows = (g.len() / cols).min(a.len() / inner);
    let (Some(g), Some(a), Some(grad_b)) = (
        g.get(..rows * cols),
        a.get(..rows * inner),
        grad_b.get_mut(..inner.saturating_mul(cols)),
    ) else {
        return;
    };
    if !all_finite(a) {
        grad_b_strong(g, a, grad_b, inner, cols, set);
        return;
    }
    // With a finite `a`, a zero `g[r][j]` gives a `±0` term, which changes no sum but in the
    // sign of a zero: every term is added, without a branch.
    if !SIMD {
        // A row of `grad_b` at a time: a tile of one row fills half of a Cortex-M4F's
        // registers.
        for (k, gb_row) in grad_b.chunks_exact_mut(cols).enumerate() {
            let terms = || a.iter().skip(k).step_by(inner).copied().enumerate();
            grad_b_tiles(gb_row, g, terms, set);
        }
        return;
    }
    // Two rows of `grad_b` at a time share the loads of `g`.
    let mut pairs = grad_b.chunks_exact_mut(2 * cols);
    for (p, gb_rows) in (&mut pairs).enumerate() {
        let (gb0, gb1) = gb_rows.split_at_mut(cols);
        let j = pair_tile::<T, WIDE>((gb0, gb1), g, a, 2 * p, inner, 0, set);
        let j = pair_tile::<T, NARROW>((gb0, gb1), g, a, 2 * p, inner, j, set);
        pair_tile::<T, 1>((gb0, gb1), g, a, 2 * p, inner, j, set);
    }
    let k = inner - inner % 2;
    if let Some(gb_row) = pairs.into_remainder().get_mut(..cols) {
        let terms = || a.iter().skip(k).step_by(inner).copied().enumerate();
        grad_b_tiles(gb_row, g, terms, set);
    }
}

/// Columns `first..` of rows `k` and `k + 1` of [`matmul_grad_b`], `W` at a time; returns
/// the first column not done.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pair_tile<T: Scalar, const W: usize>(
    (gb0, gb1): (&mut [T], &mut [T]),
    g: &[T],
    a: &[T],
    k: usize,
    inner: usize,
    first: usize,
    set: bool,
) -> usize {
    let cols = gb0.len();
    let mut j = first;
    while let (Some(out0), Some(out1)) = (
        gb0.get_mut(j..).and_then(|o| o.first_chunk_mut::<W>()),
        gb1.get_mut(j..).and_then(|o| o.first_chunk_mut::<W>()),
    ) {
        let (mut acc0, mut acc1) = if set {
            ([T::ZERO; W], [T::ZERO; W])
        } else {
            (*out0, *out1)
        };
        let a_pairs = a
            .chunks_exact(inner)
            .filter_map(|row| row.get(k..).and_then(|r| r.first_chunk::<2>()));
        for (g_row, &[x0, x1]) in g.chunks_exact(cols).zip(a_pairs) {
            let Some(g_tile) = g_row.get(j..).and_then(|s| s.first_chunk::<W>()) else {
                continue;
            };
            for ((o0, o1), &gv) in acc0.iter_mut().zip(acc1.iter_mut()).zip(g_tile) {
                *o0 += x0 * gv;
                *o1 += x1 * gv;
            }
        }
        *out0 = acc0;
        *out1 = acc1;
        j += W;
    }
    j
}

/// Row `k` of the weight gradient from the contributing `(r, a[r][k])` pairs `terms` gives,
/// tile by tile; the row starts from `+0` if `set`.
#[inline(always)]
fn grad_b_tiles<T: Scalar, I: Iterator<Item = (usize, T)>>(
    gb_row: &mut [T],
    g: &[T],
    terms: impl Fn() -> I,
    set: bool,
) {
    let cols = gb_row.len();
    let j = grad_b_tile::<T, WIDE, I>(gb_row, g, &terms, 0, set, cols);
    let j = grad_b_tile::<T, NARROW, I>(gb_row, g, &terms, j, set, cols);
    grad_b_tile::<T, 1, I>(gb_row, g, &terms, j, set, cols);
}

#[inline(always)]
fn grad_b_tile<T: Scalar, const W: usize, I: Iterator<Item = (usize, T)>>(
    gb_row: &mut [T],
    g: &[T],
    terms: &impl Fn() -> I,
    first_col: usize,
    set: bool,
    cols: usize,
) -> usize {
    let mut j = first_col;
    while let Some(out) = gb_row.get_mut(j..).and_then(|o| o.first_chunk_mut::<W>()) {
        let mut acc = if set { [T::ZERO; W] } else { *out };
        for (r, x) in terms() {
            if let Some(g_tile) = g.get(r * cols + j..).and_then(|s| s.first_chunk::<W>()) {
                for (o, &gv) in acc.iter_mut().zip(g_tile) {
                    *o += x * gv;
                }
            }
        }
        *out = acc;
        j += W;
    }
    j
}

/// [`matmul_grad_b`] when some `a[r][k]` is infinite or `nan`: term by term, strong zeros.
#[cold]
#[inline(never)]
fn grad_b_strong<T: Scalar>(
    g: &[T],
    a: &[T],
    grad_b: &mut [T],
    inner: usize,
    cols: usize,
    set: bool,
) {
    for (k, gb_row) in grad_b.chunks_exact_mut(cols).enumerate() {
        if set {
            gb_row.fill(T::ZERO);
        }
        for (g_row, &x) in g.chunks_exact(cols).zip(a.iter().skip(k).step_by(inner)) {
            for (o, &gv) in gb_row.iter_mut().zip(g_row) {
                *o += strong_mul(gv, x);
            }
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
// On x86-64, inlined into its callers: into the AVX2 instance of `sgd_outer` too, which
// otherwise called an SSE2 copy.
#[cfg_attr(target_arch = "x86_64", inline(always))]
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
    let g_finite = known_finite || all_finite(g);
    if !known_finite && !all_finite(x) {
        sub_outer_strong(values, x, g, &rate, g_finite);
        return;
    }
    if !g_finite {
        // Every term is computed (a zero `x[k]` meets an infinite or `nan` rate).
        sub_outer_strong(values, x, g, &rate, false);
    } else if SIMD {
        for (n, x_chunk) in x.chunks(CHUNK).enumerate() {
            let bits = mask(x_chunk);
            if all_nonzero(bits, x_chunk.len()) {
                let rows = values.get_mut(n * CHUNK * g.len()..).unwrap_or(&mut []);
                sub_outer_dense(rows, x_chunk, g, &rate);
                continue;
            }
            let pad;
            let chunk = match x_chunk.first_chunk::<CHUNK>() {
                Some(chunk) => chunk,
                None => {
                    pad = padded(x_chunk);
                    &pad
                }
            };
            let nz = Nonzero::new(chunk, n * CHUNK, bits);
            let rows = || nz.iter();
            sub_outer_tiles(values, g, &rate, rows);
        }
    } else {
        let j = rows_tile::<T, WIDE>(values, x, g, &rate, 0);
        let j = rows_tile::<T, NARROW>(values, x, g, &rate, j);
        rows_tile::<T, 1>(values, x, g, &rate, j);
    }
}

/// Plain SGD on a weight whose gradient is the outer product `x^T g`, scaled by `factor`:
/// [`sub_outer`] with the rate `lr * g[j]`, or `lr * (g[j] * factor)` when `factor` is not 1.
///
/// ```
/// use safegrad::tensor::kernels::sgd_outer;
///
/// let mut w = [1.0f32; 4];
/// sgd_outer(&mut w, &[2.0, 0.0], &[1.0, -1.0], false, 0.5, 1.0);
/// assert_eq!(w, [0.0, 2.0, 1.0, 1.0]);
/// ```
pub fn sgd_outer<T: Scalar>(
    values: &mut [T],
    x: &[T],
    g: &[T],
    known_finite: bool,
    lr: T,
    factor: T,
) {
    // On x86-64 the SSE2 code, inlined into the caller (see `concrete::sgd_outer`).
    if let (true, Some(v), Some(x), Some(g), Some(lr), Some(factor)) = (
        super::CONCRETE,
        super::f32s_mut(values),
        super::f32s(x),
        super::f32s(g),
        super::f32v(lr),
        super::f32v(factor),
    ) {
        return super::concrete::sgd_outer(v, x, g, known_finite, lr, factor);
    }
    sgd_outer_body(values, x, g, known_finite, lr, factor);
}

/// [`sgd_outer`] for any scalar type.
#[inline(always)]
pub(super) fn sgd_outer_body<T: Scalar>(
    values: &mut [T],
    x: &[T],
    g: &[T],
    known_finite: bool,
    lr: T,
    factor: T,
) {
    // `g * 1` is `g`: without clipping the multiplication is left out.
    if factor == T::ONE {
        sub_outer(values, x, g, known_finite, |g| lr * g);
    } else {
        sub_outer(values, x, g, known_finite, |g| lr * (g * factor));
    }
}

/// Columns `first..` of [`sub_outer`] with a finite `g`, row by row with a branch per row
/// (the Cortex-M shape; rows whose `x[k]` is zero skipped), `W` at a time; returns the first
/// column not done.
#[inline(always)]
fn rows_tile<T: Scalar, const W: usize>(
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
            if xk == T::ZERO {
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

/// [`sub_outer`] over the `(k, x[k])` pairs `rows` gives, tile by tile (the SIMD shape).
#[inline(always)]
fn sub_outer_tiles<T: Scalar, I: Iterator<Item = (usize, T)>>(
    values: &mut [T],
    g: &[T],
    rate: &impl Fn(T) -> T,
    rows: impl Fn() -> I,
) {
    let j = sub_outer_tile::<T, { 2 * WIDE }, I>(values, g, rate, &rows, 0);
    let j = sub_outer_tile::<T, WIDE, I>(values, g, rate, &rows, j);
    let j = sub_outer_tile::<T, NARROW, I>(values, g, rate, &rows, j);
    sub_outer_tile::<T, 1, I>(values, g, rate, &rows, j);
}

#[inline(always)]
fn sub_outer_tile<T: Scalar, const W: usize, I: Iterator<Item = (usize, T)>>(
    values: &mut [T],
    g: &[T],
    rate: &impl Fn(T) -> T,
    rows: &impl Fn() -> I,
    first: usize,
) -> usize {
    let cols = g.len();
    let mut j = first;
    while let Some(g_tile) = g.get(j..).and_then(|s| s.first_chunk::<W>()) {
        let mut c = [T::ZERO; W];
        for (c, &gv) in c.iter_mut().zip(g_tile) {
            *c = rate(gv);
        }
        for (k, xk) in rows() {
            let tile = values
                .get_mut(k * cols + j..)
                .and_then(|s| s.first_chunk_mut::<W>());
            if let Some(v) = tile {
                for (p, &cv) in v.iter_mut().zip(&c) {
                    *p -= xk * cv;
                }
            }
        }
        j += W;
    }
    j
}

/// [`sub_outer_tiles`] for a chunk of rows whose `x[k]` are all nonzero (a data input's
/// usually are): the rows of `values` one after the other, without the mask's positions and
/// their bounds checks, tile by tile.
#[inline(always)]
fn sub_outer_dense<T: Scalar>(values: &mut [T], x: &[T], g: &[T], rate: &impl Fn(T) -> T) {
    let j = sub_outer_dense_tile::<T, { 2 * WIDE }>(values, x, g, rate, 0);
    let j = sub_outer_dense_tile::<T, WIDE>(values, x, g, rate, j);
    let j = sub_outer_dense_tile::<T, NARROW>(values, x, g, rate, j);
    sub_outer_dense_tile::<T, 1>(values, x, g, rate, j);
}

#[inline(always)]
fn sub_outer_dense_tile<T: Scalar, const W: usize>(
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
            if let Some(v) = v_row.get_mut(j..).and_then(|s| s.first_chunk_mut::<W>()) {
                for (p, &cv) in v.iter_mut().zip(&c) {
                    *p -= xk * cv;
                }
            }
        }
        j += W;
    }
    j
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 37 rows (two chunks of inputs) by 53 columns (a double-wide tile, a wide one, a
    /// narrow one and one left); zero and negative-zero inputs, as after a ReLU.
    const ROWS: usize = 37;
    const COLS: usize = 53;

    fn inputs() -> ([f32; ROWS], [f32; COLS], [f32; ROWS * COLS]) {
        let x = core::array::from_fn(|k| match k % 4 {
            0 => 0.0,
            1 => -0.0,
            _ => (k as f32 * 0.71).sin() * 2.0,
        });
        let g = core::array::from_fn(|j| (j as f32 * 0.37).cos() - 0.25);
        let values = core::array::from_fn(|i| (i as f32 * 0.013).sin());
        (x, g, values)
    }

    #[test]
    fn sub_outer_shapes_give_the_same_bits_as_a_plain_loop() {
        let (x, g, start) = inputs();
        sub_outer_shapes_match(&x, &g, &start);
        // Every input nonzero: the SIMD shape's dense path.
        let dense: [f32; ROWS] = core::array::from_fn(|k| (k as f32 * 0.71).sin() + 1.5);
        sub_outer_shapes_match(&dense, &g, &start);
    }

    fn sub_outer_shapes_match(x: &[f32; ROWS], g: &[f32; COLS], start: &[f32; ROWS * COLS]) {
        let (x, g, start) = (*x, *g, *start);
        let rate = |v: f32| 0.01 * v;
        // Plain loop: every row with a nonzero input, every column, one rounding per term.
        let mut expected = start;
        for (k, &xk) in x.iter().enumerate() {
            if xk == 0.0 {
                continue;
            }
            for (j, &gj) in g.iter().enumerate() {
                expected[k * COLS + j] -= xk * rate(gj);
            }
        }
        let mut simd = start;
        for (n, x_chunk) in x.chunks(CHUNK).enumerate() {
            let chunk = padded(x_chunk);
            let nz = Nonzero::new(&chunk, n * CHUNK, mask(x_chunk));
            sub_outer_tiles(&mut simd, &g, &rate, || nz.iter());
        }
        let mut dense = start;
        for (n, x_chunk) in x.chunks(CHUNK).enumerate() {
            if all_nonzero(mask(x_chunk), x_chunk.len()) {
                let rows = &mut dense[n * CHUNK * COLS..];
                sub_outer_dense(rows, x_chunk, &g, &rate);
            } else {
                let chunk = padded(x_chunk);
                let nz = Nonzero::new(&chunk, n * CHUNK, mask(x_chunk));
                sub_outer_tiles(&mut dense, &g, &rate, || nz.iter());
            }
        }
        let mut branching = start;
        let j = rows_tile::<f32, WIDE>(&mut branching, &x, &g, &rate, 0);
        let j = rows_tile::<f32, NARROW>(&mut branching, &x, &g, &rate, j);
        assert_eq!(rows_tile::<f32, 1>(&mut branching, &x, &g, &rate, j), COLS);
        let mut public = start;
        sub_outer(&mut public, &x, &g, false, rate);
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(simd[i].to_bits(), e.to_bits(), "SIMD shape, value {i}");
            assert_eq!(
                dense[i].to_bits(),
                e.to_bits(),
                "dense SIMD shape, value {i}"
            );
            assert_eq!(
                branching[i].to_bits(),
                e.to_bits(),
                "branching shape, value {i}"
            );
            assert_eq!(public[i].to_bits(), e.to_bits(), "sub_outer, value {i}");
        }
    }

    #[test]
    fn weight_gradient_matches_a_plain_loop_in_order() {
        // Three rows of a and g: each entry is ((0 + a0 g0) + a1 g1) + a2 g2 in f32.
        let (x, g, _) = inputs();
        let a: [f32; 3 * ROWS] = core::array::from_fn(|i| x[i % ROWS] + i as f32 * 0.01);
        let g3: [f32; 3 * COLS] = core::array::from_fn(|i| g[i % COLS] * (1.0 + i as f32 * 1e-3));
        let mut expected = [0.0f32; ROWS * COLS];
        for k in 0..ROWS {
            for j in 0..COLS {
                let mut acc = 0.0f32;
                for r in 0..3 {
                    acc += a[r * ROWS + k] * g3[r * COLS + j];
                }
                expected[k * COLS + j] = acc;
            }
        }
        let mut set = [7.0f32; ROWS * COLS];
        set_matmul_grad_b(&g3, &a, &mut set, ROWS, COLS);
        let mut added = [0.0f32; ROWS * COLS];
        add_matmul_grad_b(&g3, &a, &mut added, ROWS, COLS);
        for (i, e) in expected.iter().enumerate() {
            assert_eq!(set[i], *e, "set, value {i}");
            assert_eq!(added[i], *e, "add, value {i}");
        }
    }
}
