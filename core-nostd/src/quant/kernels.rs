//! Integer kernels: `int8` inputs and weights, `int32` accumulators, requantised `int8`
//! outputs. Integer sums are exact, so every target computes the same codes; the Cortex-M4
//! and M7 (`thumbv7em`) take two multiply-accumulates per instruction with `SMLAD`, every
//! other target the portable loop.

use super::requant::{requantize, Requant};

/// `sum(a[i] * b[i])` over the shorter length, in `i32` (wrapping, which no sum of fewer
/// than 131,072 products of `int8` reaches).
///
/// ```
/// use safegrad::quant::dot_i8;
///
/// assert_eq!(dot_i8(&[1, -2, 3, 127, -128], &[4, 5, -6, 127, -128]), 4 - 10 - 18 + 16129 + 16384);
/// ```
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(safegrad_smlad)]
    {
        dot_i8_smlad(a, b)
    }
    #[cfg(not(safegrad_smlad))]
    {
        dot_i8_portable(a, b)
    }
}

/// The plain loop of [`dot_i8`], on every target (the reference the `SMLAD` path is
/// tested against).
#[inline]
pub fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).fold(0i32, |acc, (&x, &y)| {
        acc.wrapping_add(i32::from(x) * i32::from(y))
    })
}

/// Four `int8` as a word, the first in the low byte.
#[cfg(safegrad_smlad)]
#[inline(always)]
fn word(bytes: &[i8]) -> u32 {
    // One (unaligned) word load on Armv7E-M.
    let w: [i8; 4] = bytes.try_into().unwrap_or([0; 4]);
    u32::from_le_bytes(w.map(|b| b as u8))
}

/// [`dot_i8`] four products at a time: `SXTB16` sign-extends bytes 0 and 2 (and, rotated,
/// 1 and 3) of each word into two halfwords, `SMLAD` adds both halfword products to the
/// accumulator. Inline assembly, as the DSP intrinsics (`core::arch::arm::__smlad`) are not
/// stable Rust.
#[cfg(safegrad_smlad)]
#[inline]
fn dot_i8_smlad(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a4, a_rest) = a.split_at(n - n % 4);
    let b4 = b.get(..a4.len()).unwrap_or(&[]);
    let b_rest = b.get(a4.len()..n).unwrap_or(&[]);
    let mut acc: i32 = 0;
    for (x, y) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        let (x, y) = (word(x), word(y));
        // SAFETY: register-only DSP instructions of ARMv7E-M; no memory, no flags read.
        unsafe {
            core::arch::asm!(
                "sxtb16 {xe}, {x}",
                "sxtb16 {xo}, {x}, ror #8",
                "sxtb16 {ye}, {y}",
                "sxtb16 {yo}, {y}, ror #8",
                "smlad {acc}, {xe}, {ye}, {acc}",
                "smlad {acc}, {xo}, {yo}, {acc}",
                x = in(reg) x,
                y = in(reg) y,
                xe = out(reg) _,
                xo = out(reg) _,
                ye = out(reg) _,
                yo = out(reg) _,
                acc = inout(reg) acc,
                options(pure, nomem, nostack),
            );
        }
    }
    acc.wrapping_add(dot_i8_portable(a_rest, b_rest))
}

/// Folds the input's zero point into the biases of a fully connected layer: `out[o] =
/// bias[o] - zero_point * sum(w[o])` for the `bias.len()` rows of `w` (PyTorch's layout,
/// `OUT x IN`), so that the layer's sum runs on the raw codes.
pub fn fold_input_zero_point(bias: &[i32], w: &[i8], zero_point: i32, out: &mut [i32]) {
    let rows = bias.len();
    if rows == 0 || !w.len().is_multiple_of(rows) {
        return;
    }
    let per_row = w.len() / rows;
    for ((o, &b), row) in out.iter_mut().zip(bias).zip(w.chunks_exact(per_row.max(1))) {
        let sum: i32 = row.iter().map(|&v| i32::from(v)).sum();
        *o = b.wrapping_sub(zero_point.wrapping_mul(sum));
    }
}

/// A fully connected `int8` layer: `y[o] = requantize(bias[o] + dot(x, w[o]))` for each of
/// the `y.len()` rows of `w` (`OUT x IN`, PyTorch's layout), with biases from
/// [`fold_input_zero_point`]; `min` is `-128`, or the output's zero point for a fused ReLU.
/// Short slices leave the outputs they cannot compute unwritten.
///
/// ```
/// use safegrad::quant::{qlinear, Requant};
///
/// // y = relu(x . w): 2 * 3 + 1 * -4 = 2 and -(2 * 1) = -2, the second clamped at zero.
/// let one = Requant::from_scale(1.0).unwrap();
/// let mut y = [0i8; 2];
/// qlinear(&[2, 1], &[3, -4, -1, 0], &[0, 0], &[one, one], 0, 0, &mut y);
/// assert_eq!(y, [2, 0]);
/// ```
pub fn qlinear(
    x: &[i8],
    w: &[i8],
    bias: &[i32],
    requant: &[Requant],
    out_zero_point: i32,
    min: i8,
    y: &mut [i8],
) {
    let in_len = x.len();
    if in_len == 0 {
        return;
    }
    for (((out, row), &b), &r) in y
        .iter_mut()
        .zip(w.chunks_exact(in_len))
        .zip(bias)
        .zip(requant)
    {
        let acc = b.wrapping_add(dot_i8(x, row));
        *out = requantize(acc, r, out_zero_point, min);
    }
}

#[cfg(feature = "conv")]
pub use conv::{qavg_pool1d, qconv1d, qglobal_avg_pool, qmax_pool1d};

#[cfg(feature = "conv")]
mod conv {
    use super::{dot_i8, requantize, Requant};
    use crate::ops::conv::{window_taps, Conv1dShape};
    use crate::ops::pool::Pool1dShape;

    /// Division rounded to nearest, ties away from zero, of a sum by a positive count.
    #[inline]
    fn round_div(sum: i32, count: i32) -> i32 {
        if count <= 0 {
            return 0;
        }
        let half = count / 2;
        if sum >= 0 {
            (sum + half) / count
        } else {
            (sum - half) / count
        }
    }

    /// A 1-D `int8` convolution (`shape`'s geometry, groups and padding included):
    /// `y[c][t] = requantize(bias[c] + sum w[c][i][k] * (x[i][t * S + k * D - P] -
    /// x_zero_point))` over the taps inside the input (the padding is the real 0, the code
    /// `x_zero_point`, and adds nothing). The kernel is PyTorch's layout,
    /// `[C_OUT, C_IN / G, K]`. Taps of dilation 1 run through [`dot_i8`], with the zero
    /// point's share subtracted once per window.
    #[allow(clippy::too_many_arguments)]
    pub fn qconv1d(
        shape: &Conv1dShape,
        x: &[i8],
        x_zero_point: i32,
        w: &[i8],
        bias: &[i32],
        requant: &[Requant],
        out_zero_point: i32,
        min: i8,
        y: &mut [i8],
    ) {
        if shape.problem().is_some() {
            return;
        }
        let groups = shape.groups;
        let per_group_in = shape.c_in / groups;
        let per_group_out = shape.c_out / groups;
        let k_len = shape.kernel;
        for (c, ((y_row, &b), &r)) in y
            .chunks_exact_mut(shape.l_out)
            .zip(bias)
            .zip(requant)
            .enumerate()
            .take(shape.c_out)
        {
            let g = c / per_group_out.max(1);
            let w_c = w
                .get(c * per_group_in * k_len..(c + 1) * per_group_in * k_len)
                .unwrap_or(&[]);
            // The zero point's share of a window that lies inside the input: once per channel.
            let w_total: i32 = w_c.iter().map(|&v| i32::from(v)).sum();
            let full_share = x_zero_point.wrapping_mul(w_total);
            for (t, out) in y_row.iter_mut().enumerate() {
                let (first, end, at) = window_taps(
                    t,
                    shape.l_in,
                    k_len,
                    shape.stride,
                    shape.padding,
                    shape.dilation,
                );
                let full = first == 0 && end == k_len;
                let mut acc = if full { b.wrapping_sub(full_share) } else { b };
                for (i, w_i) in w_c.chunks_exact(k_len.max(1)).enumerate() {
                    let channel = g * per_group_in + i;
                    let x_row = x
                        .get(channel * shape.l_in..(channel + 1) * shape.l_in)
                        .unwrap_or(&[]);
                    let taps = w_i.get(first..end).unwrap_or(&[]);
                    if shape.dilation == 1 {
                        let xs = x_row.get(at..at + taps.len()).unwrap_or(&[]);
                        acc = acc.wrapping_add(dot_i8(xs, taps));
                        if !full {
                            let w_sum: i32 = taps.iter().map(|&v| i32::from(v)).sum();
                            acc = acc.wrapping_sub(x_zero_point.wrapping_mul(w_sum));
                        }
                    } else {
                        for (&wv, &xv) in taps
                            .iter()
                            .zip(x_row.iter().skip(at).step_by(shape.dilation))
                        {
                            acc = acc.wrapping_add(i32::from(wv) * i32::from(xv));
                            if !full {
                                acc = acc.wrapping_sub(i32::from(wv) * x_zero_point);
                            }
                        }
                    }
                }
                *out = requantize(acc, r, out_zero_point, min);
            }
        }
    }

    /// Max pooling on codes (the order of codes is the order of reals, so this is max
    /// pooling of the reals; the padding is never the maximum).
    pub fn qmax_pool1d(shape: &Pool1dShape, x: &[i8], y: &mut [i8]) {
        if shape.problem().is_some() {
            return;
        }
        for (x_row, y_row) in x
            .chunks_exact(shape.l_in)
            .zip(y.chunks_exact_mut(shape.l_out))
        {
            for (t, out) in y_row.iter_mut().enumerate() {
                let (first, end, at) = window_taps(
                    t,
                    shape.l_in,
                    shape.kernel,
                    shape.stride,
                    shape.padding,
                    shape.dilation,
                );
                *out = x_row
                    .iter()
                    .skip(at)
                    .step_by(shape.dilation)
                    .take(end - first)
                    .copied()
                    .max()
                    .unwrap_or(i8::MIN);
            }
        }
    }

    /// Average pooling on codes, the padding counted as the real 0 (as the float
    /// `AvgPool1d`): `zero_point + round((sum of (x - zero_point)) / kernel)`, ties away
    /// from zero.
    pub fn qavg_pool1d(shape: &Pool1dShape, x: &[i8], zero_point: i32, y: &mut [i8]) {
        if shape.problem().is_some() {
            return;
        }
        let k = shape.kernel as i32;
        for (x_row, y_row) in x
            .chunks_exact(shape.l_in)
            .zip(y.chunks_exact_mut(shape.l_out))
        {
            for (t, out) in y_row.iter_mut().enumerate() {
                let (first, end, at) =
                    window_taps(t, shape.l_in, shape.kernel, shape.stride, shape.padding, 1);
                let sum: i32 = x_row
                    .iter()
                    .skip(at)
                    .take(end - first)
                    .map(|&v| i32::from(v) - zero_point)
                    .sum();
                *out = (zero_point + round_div(sum, k)).clamp(-128, 127) as i8;
            }
        }
    }

    /// Global average pooling on codes: each channel's (row's) mean of `len` codes,
    /// rounded to nearest, ties away from zero.
    pub fn qglobal_avg_pool(x: &[i8], len: usize, zero_point: i32, y: &mut [i8]) {
        if len == 0 {
            return;
        }
        for (row, out) in x.chunks_exact(len).zip(y.iter_mut()) {
            let sum: i32 = row.iter().map(|&v| i32::from(v) - zero_point).sum();
            *out = (zero_point + round_div(sum, len as i32)).clamp(-128, 127) as i8;
        }
    }

    #[cfg(test)]
    mod tests {
        use super::round_div;

        #[test]
        fn round_div_ties_away_from_zero() {
            assert_eq!(round_div(5, 2), 3);
            assert_eq!(round_div(-5, 2), -3);
            assert_eq!(round_div(7, 4), 2);
            assert_eq!(round_div(-7, 4), -2);
            assert_eq!(round_div(6, 4), 2);
        }
    }
}
