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

/// Values of one window of a convolution (an output's taps over its input channels) that
/// `qconv1d`'s two-column path gathers, and half the inputs of a fully connected layer that
/// [`qlinear`] widens; longer ones take the plain path ([`dot_i8`]).
pub const WINDOW_CAP: usize = 128;

#[cfg(feature = "conv")]
/// `sum(w[e] * col[e])` for two columns of `int16` values widened and interleaved as
/// [`qconv1d`] gathers them: for each group of four values `v0..v3` of a column, the words
/// `v0 | v2 << 16` and `v1 | v3 << 16` (the halfword order of `SXTB16` on a word of four
/// `int8`), the first column's two words, then the second's. Groups: `w.len() / 4`.
#[inline(always)]
fn dot2_widened(w: &[i8], cols: &[u32]) -> (i32, i32) {
    let groups = (w.len() / 4).min(cols.len() / 4);
    #[cfg(safegrad_smlad)]
    {
        dot2_widened_smlad(
            w.get(..4 * groups).unwrap_or(&[]),
            cols.get(..4 * groups).unwrap_or(&[]),
        )
    }
    #[cfg(not(safegrad_smlad))]
    {
        dot2_widened_portable(
            w.get(..4 * groups).unwrap_or(&[]),
            cols.get(..4 * groups).unwrap_or(&[]),
        )
    }
}

/// The low and high halfwords of a word, signed.
#[inline(always)]
fn halves(v: u32) -> (i32, i32) {
    (
        i32::from(v as u16 as i16),
        i32::from((v >> 16) as u16 as i16),
    )
}

#[cfg(feature = "conv")]
/// [`dot2_widened`] in plain Rust: the same products, summed in another order (integer
/// sums are exact).
#[cfg_attr(safegrad_smlad, allow(dead_code))]
#[inline]
fn dot2_widened_portable(w: &[i8], cols: &[u32]) -> (i32, i32) {
    let (mut a0, mut a1) = (0i32, 0i32);
    for (w4, c4) in w.chunks_exact(4).zip(cols.chunks_exact(4)) {
        let [w0, w1, w2, w3] = [0, 1, 2, 3].map(|i| i32::from(w4.get(i).copied().unwrap_or(0)));
        let [c0, c1, c2, c3] = [0, 1, 2, 3].map(|i| c4.get(i).copied().unwrap_or(0));
        let dot = |even: u32, odd: u32| {
            let ((v0, v2), (v1, v3)) = (halves(even), halves(odd));
            w0 * v0 + w1 * v1 + w2 * v2 + w3 * v3
        };
        a0 = a0.wrapping_add(dot(c0, c1));
        a1 = a1.wrapping_add(dot(c2, c3));
    }
    (a0, a1)
}

#[cfg(feature = "conv")]
/// [`dot2_widened`] on Armv7E-M, in one assembly loop: per group, one (unaligned) word load
/// of four weights, one `LDM` of the two columns' four words, two `SXTB16` and four
/// `SMLAD`; two groups per pass, an odd one first. Hand-written because the
/// compiler's loop around the register-only sequence of [`dot_i8`] costs about twice the
/// instructions per multiply-accumulate (`cargo xtask bench-device`, the `conv2` row).
#[cfg(safegrad_smlad)]
#[inline(always)]
fn dot2_widened_smlad(w: &[i8], cols: &[u32]) -> (i32, i32) {
    let all = (w.len() / 4).min(cols.len() / 4);
    let (mut a0, mut a1) = (0i32, 0i32);
    let mut wp = w.as_ptr();
    let mut xp = cols.as_ptr();
    if all % 2 == 1 {
        // SAFETY: one group: 4 bytes from `wp` and 4 aligned words from `xp`, within their
        // slices; the pointers move past them.
        unsafe {
            core::arch::asm!(
                "ldr {w}, [{wp}], #4",
                "ldm {xp}!, {{r0, r1, r2, r3}}",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a0}, {t}, r0, {a0}",
                "smlad {a0}, {w}, r1, {a0}",
                "smlad {a1}, {t}, r2, {a1}",
                "smlad {a1}, {w}, r3, {a1}",
                wp = inout(reg) wp,
                xp = inout(reg) xp,
                w = out(reg) _,
                t = out(reg) _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                options(nostack, readonly),
            );
        }
    }
    let groups = all & !1;
    if groups == 0 {
        return (a0, a1);
    }
    // SAFETY: the loop reads `4 * groups` bytes from `wp` and `4 * groups` aligned words
    // from `xp`, both within their slices; it writes only registers.
    unsafe {
        let end = wp.add(4 * groups);
        core::arch::asm!(
            "2:",
            "ldr {w}, [{wp}], #4",
            "ldm {xp}!, {{r0, r1, r2, r3}}",
            "sxtb16 {t}, {w}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {a0}, {t}, r0, {a0}",
            "smlad {a0}, {w}, r1, {a0}",
            "smlad {a1}, {t}, r2, {a1}",
            "smlad {a1}, {w}, r3, {a1}",
            "ldr {w}, [{wp}], #4",
            "ldm {xp}!, {{r0, r1, r2, r3}}",
            "sxtb16 {t}, {w}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {a0}, {t}, r0, {a0}",
            "smlad {a0}, {w}, r1, {a0}",
            "smlad {a1}, {t}, r2, {a1}",
            "smlad {a1}, {w}, r3, {a1}",
            "cmp {wp}, {end}",
            "bne 2b",
            wp = inout(reg) wp => _,
            xp = inout(reg) xp => _,
            end = in(reg) end,
            w = out(reg) _,
            t = out(reg) _,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            options(nostack, readonly),
        );
    }
    (a0, a1)
}

/// Two rows of `int8` weights against one row of values widened as one column of
/// [`dot2_widened`] (two words per group of four): `(sum(w0 * x), sum(w1 * x))`.
#[inline(always)]
fn dot_rows_widened(w0: &[i8], w1: &[i8], x: &[u32]) -> (i32, i32) {
    let groups = (w0.len() / 4).min(w1.len() / 4).min(x.len() / 2);
    #[cfg(safegrad_smlad)]
    {
        dot_rows_widened_smlad(
            w0.get(..4 * groups).unwrap_or(&[]),
            w1.get(..4 * groups).unwrap_or(&[]),
            x.get(..2 * groups).unwrap_or(&[]),
        )
    }
    #[cfg(not(safegrad_smlad))]
    {
        dot_rows_widened_portable(
            w0.get(..4 * groups).unwrap_or(&[]),
            w1.get(..4 * groups).unwrap_or(&[]),
            x.get(..2 * groups).unwrap_or(&[]),
        )
    }
}

/// [`dot_rows_widened`] in plain Rust.
#[cfg_attr(safegrad_smlad, allow(dead_code))]
#[inline]
fn dot_rows_widened_portable(w0: &[i8], w1: &[i8], x: &[u32]) -> (i32, i32) {
    let dot = |w: &[i8]| {
        w.chunks_exact(4)
            .zip(x.chunks_exact(2))
            .fold(0i32, |acc, (w4, x2)| {
                let [a, b, c, d] = [0, 1, 2, 3].map(|i| i32::from(w4.get(i).copied().unwrap_or(0)));
                let ((v0, v2), (v1, v3)) = (
                    halves(x2.first().copied().unwrap_or(0)),
                    halves(x2.get(1).copied().unwrap_or(0)),
                );
                acc.wrapping_add(a * v0 + b * v1 + c * v2 + d * v3)
            })
    };
    (dot(w0), dot(w1))
}

/// [`dot_rows_widened`] on Armv7E-M: per group, one `LDRD` of the widened values, and for
/// each row one word load of four weights, two `SXTB16` and two `SMLAD`; two groups per
/// pass, an odd one first. Hand-written for the same reason as
/// [`dot2_widened_smlad`] (the `linear` rows of `cargo xtask bench-device`).
#[cfg(safegrad_smlad)]
#[inline(always)]
fn dot_rows_widened_smlad(w0: &[i8], w1: &[i8], x: &[u32]) -> (i32, i32) {
    let all = (w0.len() / 4).min(w1.len() / 4).min(x.len() / 2);
    let (mut a0, mut a1) = (0i32, 0i32);
    let (mut p0, mut p1, mut xp) = (w0.as_ptr(), w1.as_ptr(), x.as_ptr());
    if all % 2 == 1 {
        // SAFETY: one group: 4 bytes from each row and 2 aligned words from `xp`, within
        // their slices; the pointers move past them.
        unsafe {
            core::arch::asm!(
                "ldrd {x0}, {x1}, [{xp}], #8",
                "ldr {w}, [{p0}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a0}, {t}, {x0}, {a0}",
                "smlad {a0}, {w}, {x1}, {a0}",
                "ldr {w}, [{p1}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a1}, {t}, {x0}, {a1}",
                "smlad {a1}, {w}, {x1}, {a1}",
                p0 = inout(reg) p0,
                p1 = inout(reg) p1,
                xp = inout(reg) xp,
                x0 = out(reg) _,
                x1 = out(reg) _,
                w = out(reg) _,
                t = out(reg) _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                options(nostack, readonly),
            );
        }
    }
    let groups = all & !1;
    if groups == 0 {
        return (a0, a1);
    }
    // SAFETY: the loop reads `4 * groups` bytes from each row and `2 * groups` aligned words
    // from `xp`, all within their slices; it writes only registers.
    unsafe {
        let end = p0.add(4 * groups);
        core::arch::asm!(
            "2:",
            "ldrd {x0}, {x1}, [{xp}], #8",
            "ldr {w}, [{p0}], #4",
            "sxtb16 {t}, {w}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {a0}, {t}, {x0}, {a0}",
            "smlad {a0}, {w}, {x1}, {a0}",
            "ldr {w}, [{p1}], #4",
            "sxtb16 {t}, {w}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {a1}, {t}, {x0}, {a1}",
            "smlad {a1}, {w}, {x1}, {a1}",
            "ldrd {x0}, {x1}, [{xp}], #8",
            "ldr {w}, [{p0}], #4",
            "sxtb16 {t}, {w}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {a0}, {t}, {x0}, {a0}",
            "smlad {a0}, {w}, {x1}, {a0}",
            "ldr {w}, [{p1}], #4",
            "sxtb16 {t}, {w}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {a1}, {t}, {x0}, {a1}",
            "smlad {a1}, {w}, {x1}, {a1}",
            "cmp {p0}, {end}",
            "bne 2b",
            p0 = inout(reg) p0 => _,
            p1 = inout(reg) p1 => _,
            xp = inout(reg) xp => _,
            end = in(reg) end,
            x0 = out(reg) _,
            x1 = out(reg) _,
            w = out(reg) _,
            t = out(reg) _,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            options(nostack, readonly),
        );
    }
    (a0, a1)
}

/// `v` widened into halfword `e` of a column of [`dot2_widened`]'s layout with `columns`
/// columns (1 or 2), column `col`.
#[inline(always)]
fn widened_index(e: usize, col: usize, columns: usize) -> usize {
    // Group `e / 4`, two words of each column: halfword `(e % 4) >> 1` of word `e % 2`.
    4 * columns * (e / 4) + 4 * col + 2 * (e & 1) + ((e >> 1) & 1)
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
// Never inlined: with link-time optimisation, a caller built for size (the firmware's
// `opt-level = "z"`) would otherwise take in the kernel and outline its loops.
#[inline(never)]
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
    let main = in_len - in_len % 4;
    // The input widened once to `int16` in `SMLAD`'s order (in a buffer sized for it, as
    // clearing it costs an instruction a word); then two rows at a time.
    if main == 0 || main > 2 * WINDOW_CAP {
        qlinear_rows(x, w, bias, requant, out_zero_point, min, y);
    } else if main <= 32 {
        qlinear_widened::<16>(x, w, bias, requant, out_zero_point, min, y);
    } else {
        qlinear_widened::<WINDOW_CAP>(x, w, bias, requant, out_zero_point, min, y);
    }
}

/// [`qlinear`] over the input widened into `WORDS` words (at least half its length rounded
/// down to a multiple of 4).
fn qlinear_widened<const WORDS: usize>(
    x: &[i8],
    w: &[i8],
    bias: &[i32],
    requant: &[Requant],
    out_zero_point: i32,
    min: i8,
    y: &mut [i8],
) {
    let in_len = x.len();
    let main = in_len - in_len % 4;
    let mut words = [0u32; WORDS];
    {
        let halves: &mut [i16] = bytemuck::cast_slice_mut(&mut words);
        for (e, &v) in x.iter().take(main).enumerate() {
            if let Some(h) = halves.get_mut(widened_index(e, 0, 1)) {
                *h = i16::from(v);
            }
        }
    }
    let widened = words.get(..main / 2).unwrap_or(&[]);
    let (x_tail, rows) = (x.get(main..).unwrap_or(&[]), w.chunks_exact(in_len.max(1)));
    let rows = y
        .iter_mut()
        .zip(rows)
        .zip(bias)
        .zip(requant)
        .map(|(((out, row), &b), &r)| (out, row, b, r));
    let mut pending: Option<(&mut i8, &[i8], i32, Requant)> = None;
    let finish = |out: &mut i8, row: &[i8], b: i32, r: Requant, sum: i32| {
        let tail = dot_i8_portable(row.get(main..).unwrap_or(&[]), x_tail);
        *out = requantize(
            b.wrapping_add(sum).wrapping_add(tail),
            r,
            out_zero_point,
            min,
        );
    };
    for (out, row, b, r) in rows {
        match pending.take() {
            None => pending = Some((out, row, b, r)),
            Some((out0, row0, b0, r0)) => {
                let (s0, s1) = dot_rows_widened(
                    row0.get(..main).unwrap_or(&[]),
                    row.get(..main).unwrap_or(&[]),
                    widened,
                );
                finish(out0, row0, b0, r0, s0);
                finish(out, row, b, r, s1);
            }
        }
    }
    if let Some((out, row, b, r)) = pending {
        let main_row = row.get(..main).unwrap_or(&[]);
        let (s, _) = dot_rows_widened(main_row, main_row, widened);
        finish(out, row, b, r, s);
    }
}

/// [`qlinear`] a row at a time through [`dot_i8`]: for inputs of fewer than four values or
/// more than `2 * WINDOW_CAP`.
fn qlinear_rows(
    x: &[i8],
    w: &[i8],
    bias: &[i32],
    requant: &[Requant],
    out_zero_point: i32,
    min: i8,
    y: &mut [i8],
) {
    for (((out, row), &b), &r) in y
        .iter_mut()
        .zip(w.chunks_exact(x.len().max(1)))
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
    use super::{dot2_widened, dot_i8, requantize, widened_index, Requant, WINDOW_CAP};
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
    /// `[C_OUT, C_IN / G, K]`. Two windows at a time, as CMSIS-NN's convolutions do: their
    /// values less the zero point are gathered once, widened to `int16` (im2col), and each
    /// output channel's kernel row is read once for both (two `SMLAD` per weight pair on
    /// Armv7E-M). Windows of fewer than 4 or more than 128 values, and a zero point outside
    /// `[-128, 127]`, go a tap row at a time through [`dot_i8`].
    // Never inlined, as `qlinear`.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
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
        let per_in = shape.c_in / groups;
        let per_out = shape.c_out / groups;
        let k_len = shape.kernel;
        let len = per_in * k_len;
        // The gathered values, code less zero point, must fit `int16`: any zero point of an
        // `int8` tensor does.
        if !(4..=WINDOW_CAP).contains(&len) || !(-128..=127).contains(&x_zero_point) {
            qconv1d_taps(
                shape,
                x,
                x_zero_point,
                w,
                bias,
                requant,
                out_zero_point,
                min,
                y,
            );
            return;
        }
        let main = len - len % 4;
        let l_out = shape.l_out;
        let step = shape.dilation.max(1);
        // Two windows' values less the zero point (the padding 0), widened to `int16` and
        // interleaved for `dot2_widened`; the last `len % 4` of each after them. `at[e]` is
        // where value `e` of the first window goes (the second's is 4 halfwords on).
        let mut cols = [0u32; WINDOW_CAP + 4];
        let mut at = [0u16; WINDOW_CAP];
        for (e, slot) in at.iter_mut().enumerate().take(len) {
            *slot = if e < main {
                widened_index(e, 0, 2)
            } else {
                2 * main + (e - main)
            } as u16;
        }
        for g in 0..groups {
            for t in (0..l_out).step_by(2) {
                let second = t + 1 < l_out;
                {
                    let halves: &mut [i16] = bytemuck::cast_slice_mut(&mut cols);
                    for col in 0..2 {
                        let tt = if second { t + col } else { t };
                        let (first, end, start) = window_taps(
                            tt,
                            shape.l_in,
                            k_len,
                            shape.stride,
                            shape.padding,
                            shape.dilation,
                        );
                        let column = halves.get_mut(4 * col..).unwrap_or(&mut []);
                        let whole = first == 0 && end == k_len && step == 1;
                        for (i, places) in at.chunks_exact(k_len).take(per_in).enumerate() {
                            let channel = g * per_in + i;
                            let taps = x
                                .get(channel * shape.l_in + start..(channel + 1) * shape.l_in)
                                .unwrap_or(&[]);
                            if whole {
                                // The window inside the input, its taps side by side.
                                for (&p, &c) in places.iter().zip(taps) {
                                    if let Some(h) = column.get_mut(usize::from(p)) {
                                        *h = i32::from(c).wrapping_sub(x_zero_point) as i16;
                                    }
                                }
                                continue;
                            }
                            let (before, rest) = places.split_at(first.min(k_len));
                            let (inside, after) = rest.split_at((end - first).min(rest.len()));
                            for &p in before.iter().chain(after) {
                                if let Some(h) = column.get_mut(usize::from(p)) {
                                    *h = 0;
                                }
                            }
                            for (&p, &c) in inside.iter().zip(taps.iter().step_by(step)) {
                                if let Some(h) = column.get_mut(usize::from(p)) {
                                    *h = i32::from(c).wrapping_sub(x_zero_point) as i16;
                                }
                            }
                        }
                    }
                }
                let tails: [[i32; 3]; 2] = {
                    let halves: &[i16] = bytemuck::cast_slice(&cols);
                    let tail = |col: usize| {
                        [0, 1, 2].map(|j| {
                            halves
                                .get(2 * main + 4 * col + j)
                                .map_or(0, |&v| i32::from(v))
                        })
                    };
                    [tail(0), tail(1)]
                };
                let widened = cols.get(..main).unwrap_or(&[]);
                for c in g * per_out..(g + 1) * per_out {
                    let (Some(w_c), Some(&b), Some(&r)) =
                        (w.get(c * len..(c + 1) * len), bias.get(c), requant.get(c))
                    else {
                        continue;
                    };
                    let (s0, s1) = dot2_widened(w_c.get(..main).unwrap_or(&[]), widened);
                    let tail_dot = |tail: &[i32; 3]| -> i32 {
                        w_c.get(main..)
                            .unwrap_or(&[])
                            .iter()
                            .zip(tail)
                            .map(|(&wv, &v)| i32::from(wv) * v)
                            .sum()
                    };
                    let [tail0, tail1] = &tails;
                    let out = |s: i32, tail: &[i32; 3]| {
                        requantize(
                            b.wrapping_add(s).wrapping_add(tail_dot(tail)),
                            r,
                            out_zero_point,
                            min,
                        )
                    };
                    if let Some(o) = y.get_mut(c * l_out + t) {
                        *o = out(s0, tail0);
                    }
                    if second {
                        if let Some(o) = y.get_mut(c * l_out + t + 1) {
                            *o = out(s1, tail1);
                        }
                    }
                }
            }
        }
    }

    /// [`qconv1d`] a window at a time, each input channel's taps through [`dot_i8`]: for
    /// windows of fewer than 4 or more than [`WINDOW_CAP`] values.
    #[allow(clippy::too_many_arguments)]
    fn qconv1d_taps(
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
