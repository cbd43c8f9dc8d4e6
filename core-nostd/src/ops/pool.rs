//! Pooling over the length of a `channels x length` input, as PyTorch's `nn.MaxPool1d`,
//! `nn.AvgPool1d` and `nn.AdaptiveAvgPool1d(1)` define it (`ceil_mode=False`).
//!
//! - **Max** over each window `t * stride + k * dilation - padding`, `k < kernel`; the
//!   padding is never chosen (as PyTorch's `-inf`). **Ties:** the first of equal maxima (the
//!   lowest input index) is the maximum and takes the whole gradient, PyTorch's rule
//!   (`val > max || isnan(val)`); a `nan` in a window is chosen over any number.
//! - **Average** of each window, the zero padding counted (`count_include_pad=True`, PyTorch's
//!   default): the sum of the window in index order, divided by `kernel`.
//! - **Global average** of each channel: `channels x length` to `1 x channels`.
//!
//! The input elements after the last whole window (a length that the stride does not
//! divide) are read by no output and take a zero gradient.
//!
//! ```
//! use safegrad::ops::pool::{max_pool1d, Pool1dShape};
//!
//! // Kernel 2, stride 2: the last element is in no window. Ties go to the first.
//! let shape = Pool1dShape::new(1, 5, 2, 2, 0, 1);
//! let mut y = [0.0f32; 2];
//! let mut at = [0usize; 2];
//! max_pool1d(&shape, &[3.0, 3.0, 1.0, 2.0, 9.0], &mut y, &mut at);
//! assert_eq!((y, at), ([3.0, 2.0], [0, 3]));
//! ```

use super::OpFamily;
use crate::audit::Facts;
use crate::error::TapeError;
use crate::graph::{Domain, NodeId, Op};
use crate::scalar::Scalar;
use crate::tape::sweep::Backward;
use crate::tape::{Capacity, Tape, Var};

/// The geometry of a 1-D pooling: what a pooling layer's type fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pool1dShape {
    /// Channels (rows), pooled each on its own.
    pub channels: usize,
    /// Input length.
    pub l_in: usize,
    /// Output length.
    pub l_out: usize,
    /// Window length.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Padding before and after the input.
    pub padding: usize,
    /// Spacing of a window's elements (max pooling only; 1 for average pooling).
    pub dilation: usize,
}

impl Pool1dShape {
    /// The geometry, its output length computed as PyTorch's with `ceil_mode=False`.
    pub const fn new(
        channels: usize,
        l_in: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> Self {
        Self {
            channels,
            l_in,
            l_out: super::conv::Conv1dShape::output_len(l_in, kernel, stride, padding, dilation),
            kernel,
            stride,
            padding,
            dilation,
        }
    }

    /// `None` if the geometry is consistent (PyTorch's conditions: kernel, stride and
    /// dilation at least 1, padding at most half the kernel, an output of at least one
    /// value); otherwise what is wrong.
    pub const fn problem(&self) -> Option<&'static str> {
        if self.kernel == 0 || self.stride == 0 || self.dilation == 0 {
            Some("kernel, stride and dilation must be at least 1")
        } else if 2 * self.padding > self.kernel {
            Some("the padding must be at most half the kernel")
        } else if self.l_out == 0 {
            Some("the window is longer than the padded input")
        } else if !self.every_window_reads_input() {
            Some("a window reads only padding")
        } else {
            None
        }
    }

    /// `true` if every window holds at least one input element (a dilated window can fall
    /// entirely on the padding).
    const fn every_window_reads_input(&self) -> bool {
        let mut t = 0;
        while t < self.l_out {
            let (first, end, _) = self.window(t);
            if first >= end {
                return false;
            }
            t += 1;
        }
        true
    }

    /// The window of output `t`: the first and past-the-last tap inside the input, and
    /// the input index of the first.
    #[inline(always)]
    const fn window(&self, t: usize) -> (usize, usize, usize) {
        super::conv::window_taps(
            t,
            self.l_in,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
        )
    }
}

/// Pooling as recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PoolOp {
    /// The maximum of each window.
    Max {
        /// The `channels x l_in` input.
        x: NodeId,
        /// The geometry.
        shape: &'static Pool1dShape,
    },
    /// The average of each window, the padding counted.
    Avg {
        /// The `channels x l_in` input.
        x: NodeId,
        /// The geometry.
        shape: &'static Pool1dShape,
    },
    /// The average of each channel: `channels x length` to `1 x channels`.
    GlobalAvg {
        /// The `channels x length` input.
        x: NodeId,
    },
}

// -- formulas -------------------------------------------------------------------------------

/// Max pooling: writes each window's maximum to `y` and its input index (within the
/// channel) to `at`, by the tie rule of the [module](self).
pub fn max_pool1d<T: Scalar>(shape: &Pool1dShape, x: &[T], y: &mut [T], at: &mut [usize]) {
    if shape.problem().is_some() {
        return;
    }
    let mut outputs = y
        .chunks_exact_mut(shape.l_out)
        .zip(at.chunks_exact_mut(shape.l_out));
    for (x_row, (y_row, at_row)) in x.chunks_exact(shape.l_in).zip(&mut outputs) {
        for (t, (out, index)) in y_row.iter_mut().zip(at_row).enumerate() {
            let (best, i) = window_max(shape, x_row, t);
            *out = best;
            *index = i;
        }
    }
}

/// The maximum of window `t` of one channel and its index.
#[inline(always)]
fn window_max<T: Scalar>(shape: &Pool1dShape, x_row: &[T], t: usize) -> (T, usize) {
    let (first, end, at) = shape.window(t);
    let mut best = T::NEG_INFINITY;
    // A window that reads only padding (possible with a dilation) is `-inf` and chooses
    // no input.
    let mut index = if first < end { at } else { usize::MAX };
    let taps = x_row.iter().enumerate().skip(at).step_by(shape.dilation);
    for (i, &v) in taps.take(end - first) {
        #[allow(clippy::eq_op, reason = "v != v is the test for nan")]
        if v > best || v != v {
            best = v;
            index = i;
        }
    }
    (best, index)
}

/// The gradient of max pooling: adds each output's gradient `g` to the input it chose.
pub fn max_pool1d_grad<T: Scalar>(shape: &Pool1dShape, x: &[T], g: &[T], dx: &mut [T]) {
    if shape.problem().is_some() {
        return;
    }
    let rows = x
        .chunks_exact(shape.l_in)
        .zip(dx.chunks_exact_mut(shape.l_in));
    for ((x_row, dx_row), g_row) in rows.zip(g.chunks_exact(shape.l_out)) {
        for (t, &gv) in g_row.iter().enumerate() {
            // Strong zeros: an output whose gradient is 0 sends nothing back.
            if gv == T::ZERO {
                continue;
            }
            let (_, index) = window_max(shape, x_row, t);
            if let Some(d) = dx_row.get_mut(index) {
                *d += gv;
            }
        }
    }
}

/// Average pooling (the padding counted): writes each window's sum, in index order,
/// divided by `kernel`.
pub fn avg_pool1d<T: Scalar>(shape: &Pool1dShape, x: &[T], y: &mut [T]) {
    if shape.problem().is_some() {
        return;
    }
    let divisor = T::from_usize(shape.kernel);
    for (x_row, y_row) in x
        .chunks_exact(shape.l_in)
        .zip(y.chunks_exact_mut(shape.l_out))
    {
        for (t, out) in y_row.iter_mut().enumerate() {
            let (first, end, at) = shape.window(t);
            let mut sum = T::ZERO;
            for &v in x_row
                .iter()
                .skip(at)
                .step_by(shape.dilation)
                .take(end - first)
            {
                sum += v;
            }
            *out = sum / divisor;
        }
    }
}

/// The gradient of average pooling: adds `g / kernel` to every input of each window.
pub fn avg_pool1d_grad<T: Scalar>(shape: &Pool1dShape, g: &[T], dx: &mut [T]) {
    if shape.problem().is_some() {
        return;
    }
    let divisor = T::from_usize(shape.kernel);
    for (dx_row, g_row) in dx
        .chunks_exact_mut(shape.l_in)
        .zip(g.chunks_exact(shape.l_out))
    {
        for (t, &gv) in g_row.iter().enumerate() {
            if gv == T::ZERO {
                continue;
            }
            let share = gv / divisor;
            let (first, end, at) = shape.window(t);
            for d in dx_row
                .iter_mut()
                .skip(at)
                .step_by(shape.dilation)
                .take(end - first)
            {
                *d += share;
            }
        }
    }
}

/// Global average pooling: each channel's (row's) sum in index order, divided by its
/// length `len`, into `y`, one value per channel.
pub fn global_avg_pool<T: Scalar>(x: &[T], len: usize, y: &mut [T]) {
    if len == 0 {
        return;
    }
    let divisor = T::from_usize(len);
    for (row, out) in x.chunks_exact(len).zip(y.iter_mut()) {
        let mut sum = T::ZERO;
        for &v in row {
            sum += v;
        }
        *out = sum / divisor;
    }
}

/// The gradient of global average pooling: adds `g[c] / len` to every input of channel `c`.
pub fn global_avg_pool_grad<T: Scalar>(g: &[T], len: usize, dx: &mut [T]) {
    if len == 0 {
        return;
    }
    let divisor = T::from_usize(len);
    for (row, &gv) in dx.chunks_exact_mut(len).zip(g) {
        if gv == T::ZERO {
            continue;
        }
        let share = gv / divisor;
        for d in row {
            *d += share;
        }
    }
}

// -- recording ------------------------------------------------------------------------------

impl<T: Scalar, Mem: Capacity> Tape<T, Mem> {
    /// Records max pooling of each row of `x` (see the [module](self)) for the geometry
    /// `shape`, whose channels and lengths must be the handles' ([`TapeError::Length`]
    /// otherwise).
    pub fn max_pool1d<const C: usize, const L_IN: usize, const L_OUT: usize>(
        &mut self,
        x: Var<C, L_IN>,
        shape: &'static Pool1dShape,
    ) -> Result<Var<C, L_OUT>, TapeError> {
        check_pool(shape, x.node(), C, L_IN, L_OUT)?;
        self.record1(
            Op::Pool(PoolOp::Max { x: x.node(), shape }),
            x,
            |xv, out| {
                if let Some(x_rows) = xv.get(..C * L_IN) {
                    for (x_row, y_row) in x_rows.chunks_exact(L_IN).zip(out.chunks_exact_mut(L_OUT))
                    {
                        for (t, o) in y_row.iter_mut().enumerate() {
                            *o = window_max(shape, x_row, t).0;
                        }
                    }
                }
            },
        )
    }

    /// Records average pooling of each row of `x`, the padding counted (see the
    /// [module](self)).
    pub fn avg_pool1d<const C: usize, const L_IN: usize, const L_OUT: usize>(
        &mut self,
        x: Var<C, L_IN>,
        shape: &'static Pool1dShape,
    ) -> Result<Var<C, L_OUT>, TapeError> {
        check_pool(shape, x.node(), C, L_IN, L_OUT)?;
        self.record1(
            Op::Pool(PoolOp::Avg { x: x.node(), shape }),
            x,
            |xv, out| {
                avg_pool1d(shape, xv, out);
            },
        )
    }

    /// Records the average of each row of `x`: `C x L` to `1 x C`.
    pub fn global_avg_pool<const C: usize, const L: usize>(
        &mut self,
        x: Var<C, L>,
    ) -> Result<Var<1, C>, TapeError> {
        self.record1(Op::Pool(PoolOp::GlobalAvg { x: x.node() }), x, |xv, out| {
            global_avg_pool(xv, L, out);
        })
    }
}

/// [`TapeError::Length`] unless `shape` is consistent and fits the handles.
fn check_pool(
    shape: &Pool1dShape,
    x: NodeId,
    channels: usize,
    l_in: usize,
    l_out: usize,
) -> Result<(), TapeError> {
    let fits = shape.channels == channels
        && shape.l_in == l_in
        && shape.l_out == l_out
        && shape.problem().is_none();
    if fits {
        Ok(())
    } else {
        Err(TapeError::Length {
            node: x.0,
            expected: shape.channels * shape.l_in,
            found: channels * l_in,
        })
    }
}

// -- backward and audit ---------------------------------------------------------------------

impl<T: Scalar> OpFamily<T> for PoolOp {
    fn name(&self) -> &'static str {
        match self {
            Self::Max { .. } => "max_pool1d",
            Self::Avg { .. } => "avg_pool1d",
            Self::GlobalAvg { .. } => "global_avg_pool",
        }
    }

    fn inputs(&self) -> [Option<NodeId>; 3] {
        let (Self::Max { x, .. } | Self::Avg { x, .. } | Self::GlobalAvg { x }) = *self;
        [Some(x), None, None]
    }

    fn backward(&self, b: &mut Backward<'_, '_, T>) {
        match *self {
            Self::Max { x, shape } => {
                let xv = b.value(x);
                let (g, dx) = b.split(x);
                max_pool1d_grad(shape, xv, g, dx);
            }
            Self::Avg { x, shape } => {
                let (g, dx) = b.split(x);
                avg_pool1d_grad(shape, g, dx);
            }
            Self::GlobalAvg { x } => {
                let len = b.input(x).map_or(0, |n| n.shape().1);
                let (g, dx) = b.split(x);
                global_avg_pool_grad(g, len, dx);
            }
        }
    }

    /// A maximum or an average of finite values is finite; of non-negative values,
    /// non-negative; of positive values, positive (a window holds at least one input).
    fn domain(&self, facts: &Facts<'_, T>) -> Domain {
        let (Self::Max { x, .. } | Self::Avg { x, .. } | Self::GlobalAvg { x }) = *self;
        let d = facts.domain(x);
        Domain {
            finite: d.finite,
            non_negative: d.non_negative,
            non_zero: d.non_zero && d.non_negative,
        }
    }
}
