//! One-dimensional convolution over a `channels x length` input, as PyTorch's
//! `nn.Conv1d` defines it (a cross-correlation): with `C_IN / G` input channels per group,
//!
//! ```text
//! y[o, t] = b[o] + sum over i < C_IN / G, k < K of
//!           w[o, i, k] * x[g(o) * C_IN / G + i, t * stride + k * dilation - padding]
//! ```
//!
//! where `g(o) = o / (C_OUT / G)` is the group of output channel `o` and an index outside
//! `0..L_IN` reads the zero padding. The kernel `w` is PyTorch's layout, `[C_OUT, C_IN / G,
//! K]` row-major; the bias is `1 x C_OUT`. Depthwise is `G = C_IN`, pointwise is `K = 1`.
//!
//! Every output sums in one fixed order (the bias, then each input channel of the group,
//! each tap in turn), on the host as on the device, so both compute the same bits.
//!
//! ```
//! use safegrad::ops::conv::{conv1d, Conv1dShape};
//!
//! // Two taps, stride 1, one zero of padding each side: y[t] = x[t - 1] + 2 x[t].
//! let shape = Conv1dShape::new(1, 3, 1, 2, 1, 1, 1, 1);
//! assert_eq!(shape.l_out, 4);
//! let mut y = [0.0f32; 4];
//! conv1d(&shape, &[1.0, 2.0, 3.0], &[1.0, 2.0], &[0.5], &mut y);
//! assert_eq!(y, [2.5, 5.5, 8.5, 3.5]);
//! ```

use super::OpFamily;
use crate::audit::Facts;
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::scalar::{strong_mul, Scalar};
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, FlatVar, Tape, Var};
use crate::tensor::kernels::all_finite;

/// The geometry of a 1-D convolution: what a [`Conv1d`](crate::nn::Conv1d) layer's type
/// fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv1dShape {
    /// Input channels.
    pub c_in: usize,
    /// Input length.
    pub l_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Output length, [`Conv1dShape::output_len`].
    pub l_out: usize,
    /// Taps of the kernel.
    pub kernel: usize,
    /// Step between outputs.
    pub stride: usize,
    /// Zeros added before and after the input.
    pub padding: usize,
    /// Spacing of the taps.
    pub dilation: usize,
    /// Groups: each output channel reads `c_in / groups` input channels.
    pub groups: usize,
}

impl Conv1dShape {
    /// The geometry, its output length computed.
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        c_in: usize,
        l_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
    ) -> Self {
        Self {
            c_in,
            l_in,
            c_out,
            l_out: Self::output_len(l_in, kernel, stride, padding, dilation),
            kernel,
            stride,
            padding,
            dilation,
            groups,
        }
    }

    /// PyTorch's output length, `(l_in + 2 padding - dilation (kernel - 1) - 1) / stride + 1`
    /// rounded down; 0 when the dilated kernel is longer than the padded input (or the
    /// stride is 0).
    pub const fn output_len(
        l_in: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> usize {
        let padded = l_in + 2 * padding;
        if kernel == 0 || stride == 0 {
            return 0;
        }
        let span = dilation * (kernel - 1) + 1;
        if span > padded {
            0
        } else {
            (padded - span) / stride + 1
        }
    }

    /// `None` if the geometry is consistent: channels divisible by the groups, a kernel,
    /// stride and dilation of at least 1, an output of at least one value; otherwise what
    /// is wrong.
    pub const fn problem(&self) -> Option<&'static str> {
        if self.c_in == 0 || self.c_out == 0 {
            Some("a convolution needs at least one channel in and out")
        } else if self.groups == 0
            || !self.c_in.is_multiple_of(self.groups)
            || !self.c_out.is_multiple_of(self.groups)
        {
            Some("the channels in and out must be multiples of the groups")
        } else if self.kernel == 0 || self.stride == 0 || self.dilation == 0 {
            Some("kernel, stride and dilation must be at least 1")
        } else if self.l_out == 0 {
            Some("the dilated kernel is longer than the padded input")
        } else {
            None
        }
    }

    /// Input channels each output channel reads.
    pub const fn group_inputs(&self) -> usize {
        match self.c_in.checked_div(self.groups) {
            Some(n) => n,
            None => 0,
        }
    }

    /// Scalars of the kernel, `c_out * c_in / groups * kernel`.
    pub const fn weights(&self) -> usize {
        self.c_out * self.group_inputs() * self.kernel
    }

    /// Multiply-accumulates of one forward pass.
    pub const fn macs(&self) -> usize {
        self.c_out * self.l_out * self.group_inputs() * self.kernel
    }

    /// The taps `k` whose input index `t * stride + k * dilation - padding` lies in the
    /// input, for output `t`, and the input index of the first of them.
    #[inline(always)]
    fn taps(&self, t: usize) -> (usize, usize, usize) {
        window_taps(
            t,
            self.l_in,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
        )
    }
}

/// The taps `first..end` of a window of `kernel` taps that lie inside an input of `l_in`
/// values, for output `t` (its taps at `t * stride + k * dilation - padding`), and the input
/// index of tap `first`. Convolution and pooling share it. A dilation of 0 reads nothing.
#[inline(always)]
pub(crate) const fn window_taps(
    t: usize,
    l_in: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> (usize, usize, usize) {
    let start = t * stride;
    // Taps before `first` read the padding before the input.
    let first = if start >= padding || dilation == 0 {
        0
    } else {
        (padding - start).div_ceil(dilation)
    };
    // Taps from `end` on read the padding after it.
    let limit = l_in + padding;
    let end = if start >= limit || dilation == 0 {
        0
    } else {
        let end = (limit - start).div_ceil(dilation);
        if end < kernel {
            end
        } else {
            kernel
        }
    };
    let first = if first < end { first } else { end };
    let at = start + first * dilation;
    let skipped = if padding < at { padding } else { at };
    (first, end, at - skipped)
}

/// Convolution as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConvOp {
    /// `y = conv1d(x, weight) + bias`, one node.
    Conv1d {
        /// The `C_IN x L_IN` input.
        x: NodeId,
        /// The kernel, `C_OUT x C_IN / G x K`.
        weight: NodeId,
        /// The `1 x C_OUT` bias.
        bias: NodeId,
        /// The geometry.
        shape: &'static Conv1dShape,
    },
}

// -- formulas -------------------------------------------------------------------------------

/// The forward pass: writes `y` (`c_out x l_out`) from `x` (`c_in x l_in`), the kernel `w`
/// and the bias `b`, in the fixed order of the module's formula. Short slices leave the
/// outputs they cannot compute unwritten.
///
/// Outputs whose window lies inside the input (no padding) and whose taps are contiguous
/// (dilation 1) are computed in tiles of two channels by four positions, each output in its
/// own register: tiling changes which outputs are computed together, never the order of
/// one output's terms, so every output has the same bits as computed alone. On bare-metal
/// targets (and on x86-64 with AVX2) the `f32` instance is the crate's own, compiled with the crate's
/// optimisation whatever the firmware's.
pub fn conv1d<T: Scalar>(shape: &Conv1dShape, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    if concrete_f32() {
        if let (Some(x), Some(w), Some(b), Some(y)) = (
            T::as_f32s(x),
            T::as_f32s(w),
            T::as_f32s(b),
            T::as_f32s_mut(y),
        ) {
            return conv1d_f32(shape, x, w, b, y);
        }
    }
    conv1d_body(shape, x, w, b, y);
}

/// Whether [`conv1d`] and [`conv1d_grad`] called with `f32` values run this crate's
/// instances: the tensor kernels' rule (bare-metal targets, and x86-64 with AVX2).
use crate::tensor::kernels::concrete_f32;

crate::tensor::kernels::instance! {
    /// The `f32` instance of [`conv1d`], compiled in this crate (for AVX2 too on x86-64).
    fn conv1d_f32(shape: &Conv1dShape, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) =
        conv1d_body(shape, x, w, b, y);
}

/// The body of [`conv1d`].
#[inline(always)]
fn conv1d_body<T: Scalar>(shape: &Conv1dShape, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    if shape.problem().is_some() {
        return;
    }
    let (per, kernel, l_out) = (shape.group_inputs(), shape.kernel, shape.l_out);
    let outs_per_group = shape.c_out / shape.groups;
    let row_len = per * kernel;
    // Outputs `t_lo..t_hi` read no padding.
    let core::ops::Range {
        start: t_lo,
        end: t_hi,
    } = interior(shape);
    let tiled = shape.dilation == 1 && kernel <= TILED_TAPS;
    let pairs = tiled && outs_per_group.is_multiple_of(2);
    let mut rows = y
        .chunks_exact_mut(l_out)
        .zip(w.chunks_exact(row_len))
        .enumerate();
    while let Some((o, (y_row, w_o))) = rows.next() {
        let first_in = (o / outs_per_group) * per;
        let bias = b.get(o).copied().unwrap_or(T::ZERO);
        // The next channel of the same group, computed with this one.
        let mut partner = if pairs { rows.next() } else { None };
        let mut t = 0;
        while t < l_out {
            // The last tile of the interior overlaps the one before when the interior is
            // not a multiple of 4: its outputs are computed again, to the same bits.
            let tile_here = tiled && t >= t_lo && t < t_hi && t_hi - t_lo >= 4;
            if tile_here {
                t = t.min(t_hi - 4);
            }
            let base = (t * shape.stride).saturating_sub(shape.padding);
            let taps = (shape, x, first_in, base);
            let computed = match partner.as_mut() {
                Some((o2, (_, w2))) if tile_here => {
                    let bias2 = b.get(*o2).copied().unwrap_or(T::ZERO);
                    tile(taps, [w_o, w2], [bias, bias2], true)
                }
                _ if tile_here => tile(taps, [w_o, w_o], [bias, bias], false),
                _ => None,
            };
            if let Some([a, c]) = computed {
                put4(y_row, t, a);
                if let Some((_, (y2, _))) = partner.as_mut() {
                    put4(y2, t, c);
                }
                t += 4;
                continue;
            }
            if let Some(out) = y_row.get_mut(t) {
                *out = one_output(shape, x, w_o, bias, first_in, t);
            }
            if let Some((o2, (y2, w2))) = partner.as_mut() {
                let bias2 = b.get(*o2).copied().unwrap_or(T::ZERO);
                if let Some(out) = y2.get_mut(t) {
                    *out = one_output(shape, x, w2, bias2, first_in, t);
                }
            }
            t += 1;
        }
    }
}

/// Writes four outputs from `t` on.
#[inline(always)]
fn put4<T: Scalar>(row: &mut [T], t: usize, v: [T; 4]) {
    if let Some(out) = row.get_mut(t..t + 4) {
        out.copy_from_slice(&v);
    }
}

/// One output, its padded taps skipped: the bias, then each input channel of the group,
/// each tap in turn.
#[inline(always)]
fn one_output<T: Scalar>(
    shape: &Conv1dShape,
    x: &[T],
    w_o: &[T],
    bias: T,
    first_in: usize,
    t: usize,
) -> T {
    let (k0, k1, at) = shape.taps(t);
    let mut acc = bias;
    for (i, w_i) in w_o.chunks_exact(shape.kernel).enumerate() {
        let x_row = x
            .get((first_in + i) * shape.l_in..(first_in + i + 1) * shape.l_in)
            .unwrap_or(&[]);
        let taps = w_i.get(k0..k1).unwrap_or(&[]);
        for (&wk, &xv) in taps
            .iter()
            .zip(x_row.iter().skip(at).step_by(shape.dilation))
        {
            acc += wk * xv;
        }
    }
    acc
}

/// What a tile reads: the geometry, the input, the group's first input channel and the
/// input index of the tile's first window.
type Taps<'a, T> = (&'a Conv1dShape, &'a [T], usize, usize);

/// The four windows of input channel `i` of a tile (dilation 1: `K` contiguous values
/// each, `stride` apart); `None` if the input is short.
#[inline(always)]
fn windows<'a, T: Scalar, const K: usize>(
    (shape, x, first_in, base): Taps<'a, T>,
    i: usize,
) -> Option<[&'a [T; K]; 4]> {
    let row = x.get((first_in + i) * shape.l_in..(first_in + i + 1) * shape.l_in)?;
    let s = shape.stride;
    let at = |j: usize| -> Option<&'a [T; K]> {
        row.get(base + j * s..base + j * s + K)?.try_into().ok()
    };
    Some([at(0)?, at(1)?, at(2)?, at(3)?])
}

/// Four positions of one channel, for a kernel of `K` taps (the tap loop unrolled).
#[inline(always)]
fn tile_1x4<T: Scalar, const K: usize>(taps: Taps<'_, T>, w_o: &[T], bias: T) -> [T; 4] {
    let (mut a0, mut a1, mut a2, mut a3) = (bias, bias, bias, bias);
    for (i, w_i) in w_o.chunks_exact(K).enumerate() {
        let (Some([x0, x1, x2, x3]), Ok(w_i)) =
            (windows::<T, K>(taps, i), <&[T; K]>::try_from(w_i))
        else {
            continue;
        };
        for ((((&wk, &v0), &v1), &v2), &v3) in w_i.iter().zip(x0).zip(x1).zip(x2).zip(x3) {
            a0 += wk * v0;
            a1 += wk * v1;
            a2 += wk * v2;
            a3 += wk * v3;
        }
    }
    [a0, a1, a2, a3]
}

/// Four positions of two channels of one group, for a kernel of `K` taps: each window value
/// loaded once for both.
#[inline(always)]
fn tile_2x4<T: Scalar, const K: usize>(
    taps: Taps<'_, T>,
    [wa, wb]: [&[T]; 2],
    [ba, bb]: [T; 2],
) -> [[T; 4]; 2] {
    let (mut a0, mut a1, mut a2, mut a3) = (ba, ba, ba, ba);
    let (mut c0, mut c1, mut c2, mut c3) = (bb, bb, bb, bb);
    let (shape, x, first_in, base) = taps;
    let (s, l_in, per) = (shape.stride, shape.l_in, wa.len() / K);
    // One check for every window of the tile: the last channel's last window ends in `x`,
    // and a window's end in its row. With a check for each window, the forward of
    // `MotionCnn`'s first convolution took 3.05 instructions per multiply-accumulate on the
    // Cortex-M4F instead of 2.85 (`cargo xtask bench-device`).
    let in_row = s
        .checked_mul(3)
        .and_then(|n| n.checked_add(K))
        .and_then(|n| n.checked_add(base));
    let last = first_in
        .checked_add(per)
        .and_then(|n| n.checked_sub(1))
        .and_then(|n| n.checked_mul(l_in));
    let fits = match (in_row, last) {
        (Some(end), Some(last)) => {
            per > 0 && end <= l_in && last.checked_add(end).is_some_and(|e| e <= x.len())
        }
        _ => false,
    };
    if !fits || wb.len() != wa.len() || wa.len() != per * K {
        return [[ba; 4], [bb; 4]];
    }
    let mut row = x.as_ptr().wrapping_add(first_in * l_in + base);
    for (wa_i, wb_i) in wa.chunks_exact(K).zip(wb.chunks_exact(K)) {
        let (Ok(wa_i), Ok(wb_i)) = (<&[T; K]>::try_from(wa_i), <&[T; K]>::try_from(wb_i)) else {
            continue;
        };
        // SAFETY: window `j` of this channel starts at `row + j * s` and ends at most at
        // `row + 3 * s + K`, within the channel's row and within `x` (checked above).
        let [x0, x1, x2, x3] = unsafe { [0, 1, 2, 3].map(|j| &*row.add(j * s).cast::<[T; K]>()) };
        row = row.wrapping_add(l_in);
        let rows = wa_i.iter().zip(wb_i).zip(x0).zip(x1).zip(x2).zip(x3);
        for (((((&p, &q), &v0), &v1), &v2), &v3) in rows {
            a0 += p * v0;
            a1 += p * v1;
            a2 += p * v2;
            a3 += p * v3;
            c0 += q * v0;
            c1 += q * v1;
            c2 += q * v2;
            c3 += q * v3;
        }
    }
    [[a0, a1, a2, a3], [c0, c1, c2, c3]]
}

/// The tiles of one or two channels for a kernel of `K` taps.
#[inline(always)]
fn tile_k<T: Scalar, const K: usize>(
    taps: Taps<'_, T>,
    w: [&[T]; 2],
    bias: [T; 2],
    pair: bool,
) -> [[T; 4]; 2] {
    if pair {
        tile_2x4::<T, K>(taps, w, bias)
    } else {
        let [w0, _] = w;
        let [b0, _] = bias;
        [tile_1x4::<T, K>(taps, w0, b0), [T::ZERO; 4]]
    }
}

/// Kernels up to this many taps are tiled (their tap loop unrolled); longer ones are
/// computed an output at a time.
pub const TILED_TAPS: usize = 8;

/// The tiles for the kernel's length, `None` for a kernel longer than [`TILED_TAPS`].
#[inline(always)]
fn tile<T: Scalar>(
    taps: Taps<'_, T>,
    w: [&[T]; 2],
    bias: [T; 2],
    pair: bool,
) -> Option<[[T; 4]; 2]> {
    Some(match taps.0.kernel {
        1 => tile_k::<T, 1>(taps, w, bias, pair),
        2 => tile_k::<T, 2>(taps, w, bias, pair),
        3 => tile_k::<T, 3>(taps, w, bias, pair),
        4 => tile_k::<T, 4>(taps, w, bias, pair),
        5 => tile_k::<T, 5>(taps, w, bias, pair),
        6 => tile_k::<T, 6>(taps, w, bias, pair),
        7 => tile_k::<T, 7>(taps, w, bias, pair),
        8 => tile_k::<T, 8>(taps, w, bias, pair),
        _ => return None,
    })
}

/// The backward pass: adds to `dx`, `dw` and `db` (each empty to skip it) the gradients of
/// `sum(g * y)`. An output whose upstream gradient is 0 contributes exactly 0, whatever the
/// values it read (strong zeros): with finite inputs and weights its terms are `±0`, which
/// change no sum but in the sign of a zero, and are added without a test; otherwise they
/// are skipped. Each gradient sums its terms in a fixed order: `db[o]` and `dw[o, i, k]` over
/// the outputs `t` in turn; `dx[i, p]` over the output channels of the group two at a time
/// (the last one alone if their number is odd), then the outputs, then the two channels.
/// Kernels of up to [`TILED_TAPS`] taps at dilation 1 keep the two kernel rows' weights and
/// gradients in registers while they sweep the outputs.
#[allow(clippy::too_many_arguments)]
pub fn conv1d_grad<T: Scalar>(
    shape: &Conv1dShape,
    x: &[T],
    w: &[T],
    g: &[T],
    dx: &mut [T],
    dw: &mut [T],
    db: &mut [T],
) {
    if concrete_f32() {
        if let (Some(x), Some(w), Some(g), Some(dx), Some(dw), Some(db)) = (
            T::as_f32s(x),
            T::as_f32s(w),
            T::as_f32s(g),
            T::as_f32s_mut(dx),
            T::as_f32s_mut(dw),
            T::as_f32s_mut(db),
        ) {
            return conv1d_grad_f32(shape, x, w, g, dx, dw, db);
        }
    }
    conv1d_grad_body(shape, x, w, g, dx, dw, db, true);
}

crate::tensor::kernels::instance! {
    /// The `f32` instance of [`conv1d_grad`], compiled in this crate (for AVX2 too on x86-64).
    #[allow(clippy::too_many_arguments)]
    fn conv1d_grad_f32(
        shape: &Conv1dShape,
        x: &[f32],
        w: &[f32],
        g: &[f32],
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) = conv1d_grad_body(shape, x, w, g, dx, dw, db, true);
}

/// The outputs that read no padding (`start..end`).
#[inline(always)]
fn interior(shape: &Conv1dShape) -> core::ops::Range<usize> {
    let span = shape.dilation * (shape.kernel.max(1) - 1) + 1;
    let lo = shape.padding.div_ceil(shape.stride.max(1)).min(shape.l_out);
    let hi = if shape.l_in + shape.padding >= span {
        ((shape.l_in + shape.padding - span) / shape.stride.max(1) + 1).min(shape.l_out)
    } else {
        0
    };
    lo..hi.max(lo)
}

/// The body of [`conv1d_grad`]; `tiles` false computes every row in memory (the tests
/// compare the two).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn conv1d_grad_body<T: Scalar>(
    shape: &Conv1dShape,
    x: &[T],
    w: &[T],
    g: &[T],
    dx: &mut [T],
    dw: &mut [T],
    db: &mut [T],
    tiles: bool,
) {
    if shape.problem().is_some() {
        return;
    }
    let (per, kernel, l_out, l_in) = (shape.group_inputs(), shape.kernel, shape.l_out, shape.l_in);
    for (d, g_row) in db.iter_mut().zip(g.chunks_exact(l_out)) {
        for &gv in g_row {
            *d += gv;
        }
    }
    let outs_per_group = shape.c_out / shape.groups;
    let inside = interior(shape);
    // With finite inputs and weights, the terms of a zero upstream gradient are `±0`, which
    // change no sum but in the sign of a zero: every term is added, without a branch.
    // Otherwise they are skipped (strong zeros).
    let strong = !(all_finite(x) && all_finite(w));
    let tiled = tiles && !strong && shape.dilation == 1 && kernel <= TILED_TAPS;
    let mut o = 0;
    while o < shape.c_out {
        // Two output channels of a group at a time (the last one of a group alone).
        let pair = o % outs_per_group + 1 < outs_per_group;
        let first_in = (o / outs_per_group) * per;
        let g_row = |o: usize| g.get(o * l_out..(o + 1) * l_out).unwrap_or(&[]);
        let (g0, g1) = (g_row(o), g_row(o + 1));
        for i in 0..per {
            let row = (first_in + i) * l_in..(first_in + i + 1) * l_in;
            let rows = Rows {
                shape,
                inside: inside.clone(),
                x: x.get(row.clone()).unwrap_or(&[]),
                dx: dx.get_mut(row).unwrap_or(&mut []),
            };
            let at = |o: usize| (o * per + i) * kernel;
            let w_row = |o: usize| w.get(at(o)..at(o) + kernel).unwrap_or(&[]);
            // The kernel rows' gradients; empty when the kernel takes none.
            let (dw0, dw1) = dw.split_at_mut(at(o + 1).min(dw.len()));
            let dw0 = dw0.get_mut(at(o)..at(o) + kernel).unwrap_or(&mut []);
            let dw1 = dw1.get_mut(..kernel).unwrap_or(&mut []);
            match (pair, tiled) {
                (true, true) => rows_tiled([g0, g1], [w_row(o), w_row(o + 1)], rows, [dw0, dw1]),
                (false, true) => rows_tiled([g0], [w_row(o)], rows, [dw0]),
                (true, false) => {
                    rows_any([g0, g1], [w_row(o), w_row(o + 1)], rows, [dw0, dw1], strong)
                }
                (false, false) => rows_any([g0], [w_row(o)], rows, [dw0], strong),
            }
        }
        o += if pair { 2 } else { 1 };
    }
}

/// An input channel's row as the backward of [`conv1d_grad`] sweeps it: the geometry, the
/// outputs that read no padding, the input row and its gradient (empty when the input
/// takes none).
struct Rows<'a, T> {
    shape: &'a Conv1dShape,
    inside: core::ops::Range<usize>,
    x: &'a [T],
    dx: &'a mut [T],
}

/// The gradients that `N` output channels' upstream gradients `g` send through their
/// kernel rows `w` to one input row (`rows.dx`) and to the kernel rows (`dw`), in one sweep
/// over the outputs, for kernels of up to [`TILED_TAPS`] taps at dilation 1 with finite
/// inputs and weights: the weights and the kernel gradients stay in registers.
#[inline(always)]
fn rows_tiled<T: Scalar, const N: usize>(
    g: [&[T]; N],
    w: [&[T]; N],
    rows: Rows<'_, T>,
    dw: [&mut [T]; N],
) {
    macro_rules! unrolled {
        ($($k:literal)*) => {
            match rows.shape.kernel {
                $($k => rows_k::<T, $k, N>(g, w, rows, dw),)*
                _ => {}
            }
        };
    }
    unrolled!(1 2 3 4 5 6 7 8);
}

/// [`rows_tiled`] for `K` taps. The sums of tap `k` are `[dw[0][k], .., dw[N - 1][k]]`, its
/// weights likewise.
#[inline(always)]
fn rows_k<T: Scalar, const K: usize, const N: usize>(
    g: [&[T]; N],
    w: [&[T]; N],
    rows: Rows<'_, T>,
    dw: [&mut [T]; N],
) {
    // The rows as arrays first: indices into them are then known to be in bounds. The
    // weights and sums are read value by value, straight into the registers the sweep keeps
    // them in.
    let w = w.map(|w_n| <&[T; K]>::try_from(w_n).ok());
    let mut dw = dw.map(|dw_n| <&mut [T; K]>::try_from(dw_n).ok());
    let wt: [[T; N]; K] = core::array::from_fn(|k| {
        core::array::from_fn(|n| {
            w.get(n)
                .copied()
                .flatten()
                .and_then(|r| r.get(k))
                .copied()
                .unwrap_or(T::ZERO)
        })
    });
    let mut acc: [[T; N]; K] = core::array::from_fn(|k| {
        core::array::from_fn(|n| {
            dw.get(n)
                .and_then(|r| r.as_deref())
                .and_then(|r| r.get(k))
                .copied()
                .unwrap_or(T::ZERO)
        })
    });
    let Rows {
        shape,
        inside,
        x,
        dx,
    } = rows;
    let upstream = |t: usize| g.map(|g_n| g_n.get(t).copied().unwrap_or(T::ZERO));
    // The outputs in order: those before `inside` and after it read padding, those inside
    // in one sweep. The edge's code, unrolled for each `K`, has one call site: one before
    // the sweep and one after make the CNN's firmware 8 KB larger.
    let mut t = 0;
    while t < shape.l_out {
        if t == inside.start && !inside.is_empty() {
            acc = interior_k::<T, K, N>(shape, &inside, g, x, dx, wt, acc);
            t = inside.end;
            continue;
        }
        edge(shape, t, upstream(t), x, dx, &wt, &mut acc);
        t += 1;
    }
    for (n, dw_n) in dw.iter_mut().enumerate() {
        if let Some(dw_n) = dw_n {
            for (d, acc_k) in dw_n.iter_mut().zip(&acc) {
                if let Some(&v) = acc_k.get(n) {
                    *d = v;
                }
            }
        }
    }
}

/// The outputs `inside` of [`rows_k`], whose windows lie in the input, `stride` apart;
/// returns the sums `acc` with their terms added.
#[inline(always)]
fn interior_k<T: Scalar, const K: usize, const N: usize>(
    shape: &Conv1dShape,
    inside: &core::ops::Range<usize>,
    g: [&[T]; N],
    x: &[T],
    dx: &mut [T],
    wt: [[T; N]; K],
    mut acc: [[T; N]; K],
) -> [[T; N]; K] {
    let count = inside.len();
    let first = (inside.start * shape.stride).saturating_sub(shape.padding);
    let Some(end) = count
        .saturating_sub(1)
        .checked_mul(shape.stride)
        .and_then(|n| n.checked_add(K))
        .and_then(|n| n.checked_add(first))
    else {
        return acc;
    };
    let span = first..end;
    let g_in = g.map(|g_n| g_n.get(inside.clone()).unwrap_or(&[]));
    // The rows cut to the same lengths: one bounds check serves them all.
    let x_in = x.get(span.clone()).unwrap_or(&[]);
    let dx_in = dx.get_mut(span.clone()).unwrap_or(&mut []);
    if count == 0 || g_in.iter().any(|g_n| g_n.len() != count) || x_in.len() != span.len() {
        return acc;
    }
    // The loops read the rows unchecked: their lengths are checked above, once. With a check
    // at each output, the backward of `MotionCnn`'s second convolution took 3.72
    // instructions per multiply-accumulate on the Cortex-M4F instead of 2.96 (`cargo xtask
    // bench-device`).
    let x_at = x_in.as_ptr();
    // SAFETY (both loops): `j < count`, the length of every `g_in` row, and `at = j * stride
    // <= (count - 1) * stride`, so `at + K <= span.len()`, the length of `x_in` and, when
    // the input takes a gradient, of `dx_in` (all checked above). The windows are `[T; K]`
    // within slices of `T`, so aligned; `x_in` and `dx_in` are distinct borrows, and
    // `dx_in` is used only through `dx_at` from there on.
    let upstream = |j: usize| {
        debug_assert!(j < count);
        g_in.map(|g_n| unsafe { *g_n.get_unchecked(j) })
    };
    let window = |at: usize| {
        debug_assert!(at + K <= x_in.len());
        unsafe { &*x_at.add(at).cast::<[T; K]>() }
    };
    if dx_in.len() != span.len() {
        // The input takes no gradient: the kernel gradients alone.
        let mut at = 0;
        for j in 0..count {
            let (gs, win) = (upstream(j), window(at));
            at += shape.stride;
            for (a, &v) in acc.iter_mut().zip(win) {
                for (a, &gv) in a.iter_mut().zip(&gs) {
                    *a += gv * v;
                }
            }
        }
        return acc;
    }
    let dx_at = dx_in.as_mut_ptr();
    let mut at = 0;
    for j in 0..count {
        let (gs, win) = (upstream(j), window(at));
        debug_assert!(at + K <= span.len());
        let dwin = unsafe { &mut *dx_at.add(at).cast::<[T; K]>() };
        at += shape.stride;
        // Tap by tap, the kernel gradients' terms and the input gradient's: two values live
        // at a time besides the weights and the sums, which fill the registers.
        for (((a, &v), d), w_k) in acc.iter_mut().zip(win).zip(dwin.iter_mut()).zip(&wt) {
            let mut sum = *d;
            for ((a, &gv), &wv) in a.iter_mut().zip(&gs).zip(w_k) {
                *a += gv * v;
                sum += gv * wv;
            }
            *d = sum;
        }
    }
    acc
}

/// The terms of output `t`, whose window reads padding, in [`rows_k`]'s order. The taps go
/// by in a loop of `K` that unrolls, so the sums and weights are indexed by constants and
/// stay in registers; a tap outside `k0..k1` reads padding and adds nothing.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn edge<T: Scalar, const K: usize, const N: usize>(
    shape: &Conv1dShape,
    t: usize,
    gs: [T; N],
    x: &[T],
    dx: &mut [T],
    wt: &[[T; N]; K],
    acc: &mut [[T; N]; K],
) {
    let (k0, k1, at) = shape.taps(t);
    for (k, (a, w_k)) in acc.iter_mut().zip(wt).enumerate() {
        if k < k0 || k >= k1 {
            continue;
        }
        let p = at + (k - k0);
        if let Some(&v) = x.get(p) {
            for (a, &gv) in a.iter_mut().zip(&gs) {
                *a += gv * v;
            }
        }
        if let Some(d) = dx.get_mut(p) {
            let mut sum = *d;
            for (&wv, &gv) in w_k.iter().zip(&gs) {
                sum += gv * wv;
            }
            *d = sum;
        }
    }
}

/// [`rows_tiled`] for any kernel and dilation, the sums in memory: the same terms in the
/// same order. With `strong`, the terms of a zero upstream gradient are skipped.
#[inline(always)]
fn rows_any<T: Scalar, const N: usize>(
    g: [&[T]; N],
    w: [&[T]; N],
    rows: Rows<'_, T>,
    mut dw: [&mut [T]; N],
    strong: bool,
) {
    let Rows { shape, x, dx, .. } = rows;
    let mul = |gv: T, v: T| if strong { strong_mul(gv, v) } else { gv * v };
    for t in 0..shape.l_out {
        let gs = g.map(|g_n| g_n.get(t).copied().unwrap_or(T::ZERO));
        let (k0, k1, at) = shape.taps(t);
        let span = (k0..k1).zip((at..).step_by(shape.dilation));
        for (k, p) in span.clone() {
            let Some(&v) = x.get(p) else { continue };
            for (dw_n, &gv) in dw.iter_mut().zip(&gs) {
                if let Some(a) = dw_n.get_mut(k) {
                    *a += mul(gv, v);
                }
            }
        }
        for (k, p) in span {
            let Some(d) = dx.get_mut(p) else { continue };
            let mut sum = *d;
            for (w_n, &gv) in w.iter().zip(&gs) {
                if let Some(&wv) = w_n.get(k) {
                    sum += mul(gv, wv);
                }
            }
            *d = sum;
        }
    }
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// Records `y = conv1d(x, weight) + bias` (see the [module](self)) for the geometry
    /// `shape`, whose channels and lengths must be the handles': [`TapeError::Length`]
    /// otherwise, or if the kernel does not have `shape.weights()` scalars.
    pub fn conv1d<const C_IN: usize, const L_IN: usize, const C_OUT: usize, const L_OUT: usize>(
        &mut self,
        x: Var<C_IN, L_IN>,
        weight: FlatVar,
        bias: Var<1, C_OUT>,
        shape: &'static Conv1dShape,
    ) -> Result<Var<C_OUT, L_OUT>, TapeError> {
        let w_node = *self.resolve_flat(weight)?;
        let fits = shape.c_in == C_IN
            && shape.l_in == L_IN
            && shape.c_out == C_OUT
            && shape.l_out == L_OUT
            && shape.problem().is_none();
        if !fits || w_node.len() != shape.weights() {
            return Err(TapeError::Length {
                node: weight.node().0,
                expected: shape.weights(),
                found: if fits { w_node.len() } else { 0 },
            });
        }
        let w_slots = w_node.slots();
        let (sx, sb) = (self.resolve(x)?.slots(), self.resolve(bias)?.slots());
        self.reserve(C_OUT * L_OUT)?;
        let (before, out) = self.split_for_output(C_OUT * L_OUT)?;
        conv1d(
            shape,
            before.get(sx).unwrap_or(&[]),
            before.get(w_slots).unwrap_or(&[]),
            before.get(sb).unwrap_or(&[]),
            out,
        );
        self.commit_op(Op::Conv(ConvOp::Conv1d {
            x: x.node(),
            weight: weight.node(),
            bias: bias.node(),
            shape,
        }))
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for ConvOp {
    fn name(&self) -> &'static str {
        "conv1d"
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        let Self::Conv1d {
            x, weight, bias, ..
        } = *self;
        [Some(x), Some(weight), Some(bias)]
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        let Self::Conv1d {
            x,
            weight,
            bias,
            shape,
        } = *self;
        let (xv, wv) = (b.value(x), b.value(weight));
        let (g_out, [dx, dw, db]) = b.split3([x, weight, bias]);
        conv1d_grad(shape, xv, wv, g_out, dx, dw, db);
    }

    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let Self::Conv1d {
            x, weight, bias, ..
        } = *self;
        Domain::finite_if(
            facts.domain(x).finite && facts.domain(weight).finite && facts.domain(bias).finite,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of a test tensor: varied signs and magnitudes, with zeros among them.
    fn value(seed: usize, i: usize) -> f32 {
        match (i * 7 + seed) % 11 {
            0 => 0.0,
            r => ((i * 13 + seed * 5) as f32 * 0.37).sin() * (r as f32 * 0.4),
        }
    }

    #[test]
    fn the_tiled_backward_gives_the_bits_of_the_rows_in_memory() {
        // Output channels in pairs and alone (groups with an odd number of them), every
        // unrolled kernel length, strides, padding: the outputs that read padding and the
        // interior ones.
        let shapes = [
            Conv1dShape::new(6, 40, 16, 5, 2, 0, 1, 1),
            Conv1dShape::new(3, 17, 5, 3, 1, 1, 1, 1),
            Conv1dShape::new(4, 23, 6, 8, 3, 2, 1, 2),
            Conv1dShape::new(4, 19, 4, 1, 1, 0, 1, 4),
            Conv1dShape::new(2, 12, 3, 2, 2, 1, 1, 1),
            Conv1dShape::new(6, 30, 9, 7, 1, 3, 1, 3),
            Conv1dShape::new(2, 16, 2, 4, 2, 2, 1, 1),
            Conv1dShape::new(1, 9, 2, 6, 1, 0, 1, 1),
            // No interior: every window reads padding.
            Conv1dShape::new(2, 3, 2, 5, 1, 2, 1, 1),
            // Eight taps over a two-value input: windows cut on both sides.
            Conv1dShape::new(1, 2, 2, 8, 1, 7, 1, 1),
            // Windows that read only padding.
            Conv1dShape::new(1, 1, 2, 3, 1, 4, 1, 1),
        ];
        for shape in shapes {
            assert!(shape.problem().is_none(), "{shape:?}");
            let (nx, nw, ny) = (
                shape.c_in * shape.l_in,
                shape.weights(),
                shape.c_out * shape.l_out,
            );
            let x: [f32; 512] = core::array::from_fn(|i| value(1, i));
            let w: [f32; 512] = core::array::from_fn(|i| value(2, i));
            let g: [f32; 512] = core::array::from_fn(|i| value(3, i));
            let (x, w, g) = (&x[..nx], &w[..nw], &g[..ny]);
            let mut by_way = [([0.25f32; 512], [0.5f32; 512], [0.0f32; 16]); 2];
            for (tiles, (dx, dw, db)) in [true, false].into_iter().zip(by_way.iter_mut()) {
                conv1d_grad_body(
                    &shape,
                    x,
                    w,
                    g,
                    &mut dx[..nx],
                    &mut dw[..nw],
                    &mut db[..shape.c_out],
                    tiles,
                );
            }
            let [(dx0, dw0, db0), (dx1, dw1, db1)] = by_way;
            let bits = |v: &[f32]| {
                v.iter()
                    .map(|v| v.to_bits())
                    .collect::<heapless::Vec<u32, 512>>()
            };
            assert_eq!(bits(&dx0), bits(&dx1), "dx, {shape:?}");
            assert_eq!(bits(&dw0), bits(&dw1), "dw, {shape:?}");
            assert_eq!(bits(&db0), bits(&db1), "db, {shape:?}");
            // Something was computed.
            assert!(dw0[..nw].iter().any(|&v| v != 0.5), "{shape:?}");
            assert!(dx0[..nx].iter().any(|&v| v != 0.25), "{shape:?}");
        }
    }

    #[test]
    fn the_tiled_backward_without_an_input_gradient_gives_the_same_kernel_gradient() {
        let shape = Conv1dShape::new(6, 40, 16, 5, 2, 1, 1, 1);
        let (nx, nw, ny) = (
            shape.c_in * shape.l_in,
            shape.weights(),
            shape.c_out * shape.l_out,
        );
        let x: [f32; 256] = core::array::from_fn(|i| value(4, i));
        let w: [f32; 512] = core::array::from_fn(|i| value(5, i));
        let g: [f32; 512] = core::array::from_fn(|i| value(6, i));
        let (x, w, g) = (&x[..nx], &w[..nw], &g[..ny]);
        let (mut dx, mut dw, mut dw_alone) = ([0.0f32; 256], [0.0f32; 512], [0.0f32; 512]);
        conv1d_grad(&shape, x, w, g, &mut dx[..nx], &mut dw[..nw], &mut []);
        conv1d_grad(&shape, x, w, g, &mut [], &mut dw_alone[..nw], &mut []);
        assert!(dw
            .iter()
            .zip(&dw_alone)
            .all(|(p, q)| p.to_bits() == q.to_bits()));
        assert!(dw[..nw].iter().any(|&v| v != 0.0));
    }
}
