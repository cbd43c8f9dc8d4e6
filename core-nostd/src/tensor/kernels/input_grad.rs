//! The gradient of a product's left operand (a layer's input): `grad_a += g * b^T`.

use super::{rows, rows_mut, NARROW, SIMD, WIDE};
use crate::scalar::Scalar;

/// `grad_a += g * b^T`: the gradient of `a` in `out = a (rows x inner) * b (inner x cols)`,
/// `g` being `out`'s gradient: `grad_a[r][k]` gains the dot product of row `r` of `g` with row
/// `k` of `b`. The dot product is taken in blocks of 16 columns (then 4, then the last one to
/// three), each block summed in four lanes (column `j` to lane `j % 4`, each lane starting
/// from its first term, lanes added as `(l0 + l1) + (l2 + l3)`) and added to `grad_a[r][k]`
/// in turn: an order that a Cortex-M4F runs with the block of `g` in registers and x86-64 with
/// SSE, four rows of `b` at a time. A zero `g[r][j]` contributes nothing, whatever `b` holds
/// (strong zeros): a block whose sum is not finite is summed again without its zero terms.
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
    // Not on x86-64 (see `concrete::add_matmul_grad_a`).
    if super::CONCRETE {
        if let (Some(g), Some(b), Some(ga)) = (T::as_f32s(g), T::as_f32s(b), T::as_f32s_mut(grad_a))
        {
            return super::concrete::add_matmul_grad_a(g, b, ga, inner, cols);
        }
    }
    add_matmul_grad_a_body(g, b, grad_a, inner, cols);
}

/// [`add_matmul_grad_a`] for any scalar type.
#[inline(always)]
pub(super) fn add_matmul_grad_a_body<T: Scalar>(
    g: &[T],
    b: &[T],
    grad_a: &mut [T],
    inner: usize,
    cols: usize,
) {
    // An input without a gradient (a model's first layer reads data) has nothing to gain.
    if inner == 0 || cols == 0 || grad_a.is_empty() {
        return;
    }
    let Some(b) = b.get(..inner.saturating_mul(cols)) else {
        return;
    };
    for (g_row, ga_row) in rows(g, cols).zip(rows_mut(grad_a, inner)) {
        let mut j = 0;
        while blocks::<T, WIDE>(g_row, b, ga_row, j, SIMD) {
            j += WIDE;
        }
        while blocks::<T, NARROW>(g_row, b, ga_row, j, SIMD) {
            j += NARROW;
        }
        if j < cols {
            rest(g_row, b, ga_row, j);
        }
    }
}

/// Adds columns `j..j + W` of every dot product to `ga_row`, the block of `g_row` held in
/// registers, four rows of `b` at a time if `four`; `false` if fewer than `W` columns are
/// left.
#[inline(always)]
fn blocks<T: Scalar, const W: usize>(
    g_row: &[T],
    b: &[T],
    ga_row: &mut [T],
    j: usize,
    four: bool,
) -> bool {
    let cols = g_row.len();
    let Some(&g_block) = g_row.get(j..).and_then(|r| r.first_chunk::<W>()) else {
        return false;
    };
    let mut done = 0;
    if four {
        for (ga, w_rows) in ga_row.chunks_exact_mut(4).zip(b.chunks_exact(4 * cols)) {
            let block = |t: usize| {
                w_rows
                    .get(t * cols + j..)
                    .and_then(|r| r.first_chunk::<W>())
            };
            if let (Some(w0), Some(w1), Some(w2), Some(w3)) =
                (block(0), block(1), block(2), block(3))
            {
                let sums = lanes4(&g_block, [w0, w1, w2, w3]);
                // `s * 0` is 0 for a finite sum and nan otherwise: one test for four rows.
                if all_zero(sums.map(|s| s * T::ZERO)) {
                    for (ga, sum) in ga.iter_mut().zip(sums) {
                        *ga += sum;
                    }
                } else {
                    for ((ga, sum), w) in ga.iter_mut().zip(sums).zip([w0, w1, w2, w3]) {
                        *ga += if sum.is_finite() {
                            sum
                        } else {
                            lanes_strong(&g_block, w)
                        };
                    }
                }
            }
            done += 4;
        }
    }
    // With every row done four at a time, nothing is left (and no division counts it).
    if four && done >= ga_row.len() {
        return true;
    }
    let (Some(b), Some(ga_row)) = (b.get(done * cols..), ga_row.get_mut(done..)) else {
        return true;
    };
    for (w_row, ga) in b.chunks_exact(cols).zip(ga_row) {
        if let Some(w_block) = w_row.get(j..).and_then(|r| r.first_chunk::<W>()) {
            let sum = lanes(&g_block, w_block);
            *ga += if sum.is_finite() {
                sum
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

/// [`lanes`] of four rows of `b` at once: the same sums. Each row's four lanes sit in one
/// vector; at the end the four vectors are transposed, so that the lanes are added as
/// `(l0 + l1) + (l2 + l3)` for the four rows together.
#[inline(always)]
fn lanes4<T: Scalar, const W: usize>(g: &[T; W], w: [&[T; W]; 4]) -> [T; 4] {
    let [w0, w1, w2, w3] = w;
    let mut acc = [[T::ZERO; 4]; 4];
    let mut first = true;
    let quads = g
        .chunks_exact(4)
        .zip(w0.chunks_exact(4))
        .zip(w1.chunks_exact(4))
        .zip(w2.chunks_exact(4))
        .zip(w3.chunks_exact(4));
    for ((((gc, c0), c1), c2), c3) in quads {
        for (a, wc) in acc.iter_mut().zip([c0, c1, c2, c3]) {
            for ((lane, &gv), &wv) in a.iter_mut().zip(gc).zip(wc) {
                *lane = if first { gv * wv } else { *lane + gv * wv };
            }
        }
        first = false;
    }
    let [[a0, b0, c0, d0], [a1, b1, c1, d1], [a2, b2, c2, d2], [a3, b3, c3, d3]] = acc;
    [
        (a0 + b0) + (c0 + d0),
        (a1 + b1) + (c1 + d1),
        (a2 + b2) + (c2 + d2),
        (a3 + b3) + (c3 + d3),
    ]
}

/// `true` when all four values are zero, tested together (on x86-64 a packed comparison and
/// one `movmskps`: 5 instructions where adding the four and comparing took 10, `callgrind`
/// on the host bench's batch-1 step).
#[inline(always)]
fn all_zero<T: Scalar>(v: [T; 4]) -> bool {
    let zero = v.map(|v| v == T::ZERO);
    let mut m = 0u32;
    for (i, &z) in zero.iter().enumerate() {
        if z {
            m |= 1 << i;
        }
    }
    m == 0b1111
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

/// The last one to three columns: a block of four lanes, one term each (as a block padded
/// with zero terms, which change no lane).
#[cold]
#[inline(never)]
fn rest<T: Scalar>(g_row: &[T], b: &[T], ga_row: &mut [T], j: usize) {
    let cols = g_row.len();
    let g_rest = g_row.get(j..).unwrap_or(&[]);
    for (w_row, ga) in b.chunks_exact(cols).zip(ga_row.iter_mut()) {
        let w_rest = w_row.get(j..).unwrap_or(&[]);
        let mut l = [T::ZERO; 4];
        for ((lane, &gv), &wv) in l.iter_mut().zip(g_rest).zip(w_rest) {
            *lane += gv * wv;
        }
        let [l0, l1, l2, l3] = l;
        let sum = (l0 + l1) + (l2 + l3);
        *ga += if sum.is_finite() {
            sum
        } else {
            lanes_strong(g_rest, w_rest)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_give_the_same_bits() {
        // 2 rows of g, 38 columns (two wide blocks, a narrow one, two left), 9 rows of b
        // (two quads and one more); zero gradients meet infinite and nan weights.
        let (inner, cols) = (9, 38);
        let g: [f32; 76] = core::array::from_fn(|i| match (i % cols) % 7 {
            0 => 0.0,
            _ => (i as f32 * 0.29).sin() * 4.0,
        });
        let mut b: [f32; 9 * 38] = core::array::from_fn(|i| (i as f32 * 0.13).cos());
        b[7] = f32::INFINITY; // g[0][7] is zero
        b[2 * cols + 14] = f32::NAN; // g[0][14] is zero
        let mut by_shape = [[0.5f32; 18]; 2];
        for (four, ga) in [false, true].into_iter().zip(by_shape.iter_mut()) {
            for (g_row, ga_row) in g.chunks_exact(cols).zip(ga.chunks_exact_mut(inner)) {
                let mut j = 0;
                while blocks::<f32, WIDE>(g_row, &b, ga_row, j, four) {
                    j += WIDE;
                }
                while blocks::<f32, NARROW>(g_row, &b, ga_row, j, four) {
                    j += NARROW;
                }
                rest(g_row, &b, ga_row, j);
            }
        }
        let [a, s] = by_shape;
        for (p, q) in a.iter().zip(&s) {
            assert_eq!(p.to_bits(), q.to_bits());
        }
        assert!(a.iter().all(|v| v.is_finite()));
    }
}
