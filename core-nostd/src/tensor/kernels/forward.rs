//! The forward pass of a fully connected layer: `x W + b`, with or without a ReLU.

use super::nonzero::{all_nonzero, mask, padded, Nonzero, CHUNK};
use super::{rows, rows_mut, NARROW, SIMD, WIDE};
use crate::scalar::Scalar;

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
    // One row (a batch-1 step) runs the SSE2 code inlined into its caller on x86-64: its
    // AVX2 instance, a call away, did not make the host bench's step faster.
    if let (true, Some(x), Some(w), Some(out)) = (
        super::CONCRETE || x.len() > inner,
        super::f32s(x),
        super::f32s(w),
        super::f32s_mut(out),
    ) {
        return super::concrete::linear(x, w, bias.and_then(super::f32s), out, inner, cols);
    }
    linear_body(x, w, bias, out, inner, cols);
}

/// [`linear`] for any scalar type.
#[inline(always)]
pub(super) fn linear_body<T: Scalar>(
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
    // One row (a batch-1 step) runs the SSE2 code inlined into its caller on x86-64: its
    // AVX2 instance, a call away, did not make the host bench's step faster.
    if let (true, Some(x), Some(w), Some(out)) = (
        super::CONCRETE || x.len() > inner,
        super::f32s(x),
        super::f32s(w),
        super::f32s_mut(out),
    ) {
        return super::concrete::linear_relu(x, w, bias.and_then(super::f32s), out, inner, cols);
    }
    linear_relu_body(x, w, bias, out, inner, cols);
}

/// [`linear_relu`] for any scalar type.
#[inline(always)]
pub(super) fn linear_relu_body<T: Scalar>(
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

/// [`linear`] with `act` applied to each output as it is stored, in this target's shape.
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
    let Some(w) = w.get(..inner.saturating_mul(cols)) else {
        return;
    };
    if SIMD {
        // The rows taken off the front: no division by a run-time length to count them.
        for (x_row, out_row) in rows(x, inner).zip(rows_mut(out, cols)) {
            row_simd(x_row, w, bias, out_row, act);
        }
        return;
    }
    for (x_row, out_row) in x.chunks_exact(inner).zip(out.chunks_exact_mut(cols)) {
        row_branching(x_row, w, bias, out_row, act);
    }
}

/// One output row, a row at a time with a branch per input (the Cortex-M shape).
#[inline(always)]
fn row_branching<T: Scalar>(
    x_row: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out_row: &mut [T],
    act: impl Fn(T) -> T + Copy,
) {
    let c = tiles_branching::<T, WIDE>(x_row, w, bias, out_row, 0, act);
    let c = tiles_branching::<T, NARROW>(x_row, w, bias, out_row, c, act);
    tiles_branching::<T, 1>(x_row, w, bias, out_row, c, act);
}

/// Columns `first..` of one output row, `W` at a time while `W` of them are left; returns
/// the first column not computed.
#[inline(always)]
fn tiles_branching<T: Scalar, const W: usize>(
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
        let mut acc = bias_tile::<T, W>(bias, c);
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

/// The bias of columns `c..c + W`, or zeros.
#[inline(always)]
fn bias_tile<T: Scalar, const W: usize>(bias: Option<&[T]>, c: usize) -> [T; W] {
    match bias
        .and_then(|b| b.get(c..))
        .and_then(|b| b.first_chunk::<W>())
    {
        Some(b) => *b,
        None => [T::ZERO; W],
    }
}

/// One output row, its nonzero inputs found first without branches (the SIMD shape): the
/// same terms in the same order as [`row_branching`].
#[cfg_attr(target_arch = "x86_64", inline(always))]
fn row_simd<T: Scalar>(
    x_row: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out_row: &mut [T],
    act: impl Fn(T) -> T + Copy,
) {
    // Inputs are taken CHUNK at a time; between chunks the row holds the partial sums.
    for (n, x_chunk) in x_row.chunks(CHUNK).enumerate() {
        let bits = mask(x_chunk);
        let first = n == 0;
        if all_nonzero(bits, x_chunk.len()) {
            let w_rows = w.get(n * CHUNK * out_row.len()..).unwrap_or(&[]);
            let c = tiles_dense::<T, { 2 * WIDE / 4 }>(x_chunk, w_rows, bias, out_row, 0, first);
            let c = tiles_dense::<T, { WIDE / 4 }>(x_chunk, w_rows, bias, out_row, c, first);
            let c = tiles_dense::<T, { NARROW / 4 }>(x_chunk, w_rows, bias, out_row, c, first);
            tiles_dense::<T, 0>(x_chunk, w_rows, bias, out_row, c, first);
            continue;
        }
        let pad;
        let values = match x_chunk.first_chunk::<CHUNK>() {
            Some(values) => values,
            None => {
                pad = padded(x_chunk);
                &pad
            }
        };
        let nz = Nonzero::new(values, n * CHUNK, bits);
        // Eight SSE registers of sums: independent chains enough to hide an addition's
        // latency.
        let c = tiles_simd::<T, { 2 * WIDE / 4 }>(&nz, w, bias, out_row, 0, first);
        let c = tiles_simd::<T, { WIDE / 4 }>(&nz, w, bias, out_row, c, first);
        let c = tiles_simd::<T, { NARROW / 4 }>(&nz, w, bias, out_row, c, first);
        columns_simd(&nz, w, bias, out_row, c, first);
    }
    for o in out_row.iter_mut() {
        *o = act(*o);
    }
}

/// Columns `first..` of [`row_simd`] for one chunk of inputs, `4 V` at a time, the sums held
/// as `V` vectors of four; returns the first column not computed.
///
/// Written as vectors of four, LLVM keeps each in one SSE register from input to input; with
/// the sums as one array of `4 V` values it passed the eight registers of a 32-column tile
/// round through copies at every input (56 instructions per nonzero input against 42,
/// `callgrind` on the host bench's batch-1 step).
#[inline(always)]
fn tiles_simd<T: Scalar, const V: usize>(
    nz: &Nonzero<'_, T>,
    w: &[T],
    bias: Option<&[T]>,
    out_row: &mut [T],
    first: usize,
    first_chunk: bool,
) -> usize {
    let cols = out_row.len();
    let width = 4 * V;
    let mut c = first;
    while let Some(out) = out_row.get_mut(c..c + width) {
        let mut acc = tile_start::<T, V>(bias, out, c, first_chunk);
        for (k, xk) in nz.iter() {
            let Some(w_tile) = w.get(k * cols + c..k * cols + c + width) else {
                continue;
            };
            for (a, w4) in acc.iter_mut().zip(w_tile.chunks_exact(4)) {
                for (a, &wv) in a.iter_mut().zip(w4) {
                    *a += xk * wv;
                }
            }
        }
        for (o, a) in out.chunks_exact_mut(4).zip(&acc) {
            o.copy_from_slice(a);
        }
        c += width;
    }
    c
}

/// The sums of a tile before a chunk of inputs: the bias's (or zeros) for the first chunk,
/// else the partial sums in `out`.
#[inline(always)]
fn tile_start<T: Scalar, const V: usize>(
    bias: Option<&[T]>,
    out: &[T],
    c: usize,
    first_chunk: bool,
) -> [[T; 4]; V] {
    let mut acc = [[T::ZERO; 4]; V];
    let start: &[T] = if first_chunk {
        bias.and_then(|b| b.get(c..c + 4 * V)).unwrap_or(&[])
    } else {
        out
    };
    for (a, s) in acc.iter_mut().zip(start.chunks_exact(4)) {
        for (a, &s) in a.iter_mut().zip(s) {
            *a = s;
        }
    }
    acc
}

/// [`tiles_simd`] for a chunk of inputs that are all nonzero (a data input usually is): the
/// rows of `w_rows` (those of the chunk's inputs) one after the other, without the mask's
/// positions and their bounds checks. `V` 0 takes the columns one at a time; returns the
/// first column not computed.
#[inline(always)]
fn tiles_dense<T: Scalar, const V: usize>(
    x_chunk: &[T],
    w_rows: &[T],
    bias: Option<&[T]>,
    out_row: &mut [T],
    first: usize,
    first_chunk: bool,
) -> usize {
    let cols = out_row.len();
    let width = if V == 0 { 1 } else { 4 * V };
    let mut c = first;
    while let Some(out) = out_row.get_mut(c..c + width) {
        if V == 0 {
            let mut acc = match (first_chunk, out.first()) {
                (true, _) => bias.and_then(|b| b.get(c)).copied().unwrap_or(T::ZERO),
                (false, Some(&o)) => o,
                (false, None) => T::ZERO,
            };
            for (&xk, w_row) in x_chunk.iter().zip(w_rows.chunks_exact(cols)) {
                if let Some(&wv) = w_row.get(c) {
                    acc += xk * wv;
                }
            }
            if let Some(o) = out.first_mut() {
                *o = acc;
            }
        } else {
            let mut acc = tile_start::<T, V>(bias, out, c, first_chunk);
            for (&xk, w_row) in x_chunk.iter().zip(w_rows.chunks_exact(cols)) {
                let Some(w_tile) = w_row.get(c..c + width) else {
                    continue;
                };
                for (a, w4) in acc.iter_mut().zip(w_tile.chunks_exact(4)) {
                    for (a, &wv) in a.iter_mut().zip(w4) {
                        *a += xk * wv;
                    }
                }
            }
            for (o, a) in out.chunks_exact_mut(4).zip(&acc) {
                o.copy_from_slice(a);
            }
        }
        c += width;
    }
    c
}

/// Columns `first..` of [`row_simd`] for one chunk of inputs, one at a time.
#[cfg_attr(target_arch = "x86_64", inline(always))]
fn columns_simd<T: Scalar>(
    nz: &Nonzero<'_, T>,
    w: &[T],
    bias: Option<&[T]>,
    out_row: &mut [T],
    first: usize,
    first_chunk: bool,
) {
    let cols = out_row.len();
    for (c, out) in out_row.iter_mut().enumerate().skip(first) {
        let mut acc = if first_chunk {
            bias.and_then(|b| b.get(c)).copied().unwrap_or(T::ZERO)
        } else {
            *out
        };
        for (k, xk) in nz.iter() {
            if let Some(&wv) = w.get(k * cols + c) {
                acc += xk * wv;
            }
        }
        *out = acc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_INNER: usize = 37;
    const MAX_COLS: usize = 53;

    /// A layer's shape, `(inputs, columns, dense)`: with `dense` every input is nonzero.
    type Layer = (usize, usize, bool);

    /// Two rows of inputs and `inner x cols` weights: with `dense`, every input nonzero;
    /// otherwise zeros, negative zeros and values, with infinite and nan weights behind zero
    /// inputs.
    fn inputs((inner, cols, dense): Layer) -> ([f32; 2 * MAX_INNER], [f32; MAX_INNER * MAX_COLS]) {
        let x = core::array::from_fn(|i| match (i % inner) % 5 {
            _ if dense => (i as f32 * 0.37).sin() + 1.5,
            0 => 0.0,
            1 => -0.0,
            _ => (i as f32 * 0.37).sin(),
        });
        let mut w: [f32; MAX_INNER * MAX_COLS] =
            core::array::from_fn(|i| (i as f32 * 0.11).cos() * 3.0);
        if !dense {
            w[0] = f32::INFINITY; // row 0: x[0] is zero
            w[cols + 3] = f32::NAN; // row 1: x[1] is -0
        }
        (x, w)
    }

    /// `max(v, 0)` as the fused layer applies it.
    fn relu(v: f32) -> f32 {
        if v < 0.0 {
            0.0
        } else {
            v
        }
    }

    /// The outputs of the two rows in one shape (0 branching, 1 SIMD, 2 a plain loop), with a
    /// ReLU if `act`.
    fn run(shape: usize, layer: Layer, bias: Option<&[f32]>, act: bool) -> [f32; 2 * MAX_COLS] {
        let act = if act { relu } else { |v| v };
        let (inner, cols, _) = layer;
        let (x, w) = inputs(layer);
        let w = &w[..inner * cols];
        let mut out = [7.0f32; 2 * MAX_COLS];
        for r in 0..2 {
            let x_row = &x[r * inner..(r + 1) * inner];
            let out_row = &mut out[r * cols..(r + 1) * cols];
            match shape {
                0 => row_branching(x_row, w, bias, out_row, act),
                1 => row_simd(x_row, w, bias, out_row, act),
                _ => {
                    for (c, o) in out_row.iter_mut().enumerate() {
                        let mut acc = bias.map_or(0.0, |b| b[c]);
                        for (k, &xk) in x_row.iter().enumerate() {
                            if xk != 0.0 {
                                acc += xk * w[k * cols + c];
                            }
                        }
                        *o = act(acc);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn both_shapes_give_the_same_bits_as_a_plain_loop() {
        // 37 inputs (two chunks) or fewer; 53 columns (a tile of 32, one of 16, one of 4, one
        // left), 19, 32, 4 or 1; with a bias and without; inputs with zeros among them, or
        // all nonzero (the SIMD shape's dense path).
        let b: [f32; MAX_COLS] = core::array::from_fn(|i| i as f32 - 9.0);
        let shapes = [(37, 53), (37, 19), (16, 32), (32, 4), (3, 1)];
        for (inner, cols) in shapes {
            for (dense, bias) in [(false, true), (false, false), (true, true), (true, false)] {
                let layer = (inner, cols, dense);
                let bias = bias.then_some(&b[..cols]);
                for act in [false, true] {
                    let plain = run(2, layer, bias, act);
                    for shape in [0, 1] {
                        let out = run(shape, layer, bias, act);
                        for (i, (p, q)) in out.iter().zip(&plain).enumerate() {
                            let (p, q) = (p.to_bits(), q.to_bits());
                            assert_eq!(p, q, "{layer:?}, ReLU {act}, shape {shape}, {i}");
                        }
                    }
                    assert!(plain.iter().all(|v| v.is_finite()));
                }
            }
        }
    }
}
