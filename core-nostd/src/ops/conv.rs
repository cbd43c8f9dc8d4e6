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
        let start = t * self.stride;
        // Taps before `first` read the padding before the input.
        let first = if start >= self.padding {
            0
        } else {
            (self.padding - start).div_ceil(self.dilation)
        };
        // Taps from `end` on read the padding after it.
        let limit = self.l_in + self.padding;
        let end = if start >= limit {
            0
        } else {
            ((limit - start).div_ceil(self.dilation)).min(self.kernel)
        };
        let first = first.min(end);
        let at = start + first * self.dilation;
        (first, end, at - self.padding.min(at))
    }
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
pub fn conv1d<T: Scalar>(shape: &Conv1dShape, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    if shape.problem().is_some() {
        return;
    }
    let (per, kernel, l_out) = (shape.group_inputs(), shape.kernel, shape.l_out);
    let outs_per_group = shape.c_out / shape.groups;
    for (o, (y_row, w_o)) in y
        .chunks_exact_mut(l_out)
        .zip(w.chunks_exact(per * kernel))
        .enumerate()
    {
        let bias = b.get(o).copied().unwrap_or(T::ZERO);
        let first_in = (o / outs_per_group) * per;
        for (t, out) in y_row.iter_mut().enumerate() {
            let (k0, k1, at) = shape.taps(t);
            let mut acc = bias;
            for (i, w_i) in w_o.chunks_exact(kernel).enumerate() {
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
            *out = acc;
        }
    }
}

/// The backward pass: adds to `dx`, `dw` and `db` (each empty to skip it) the gradients of
/// `sum(g * y)`. Every product with the upstream gradient is a
/// [`strong_mul`]: an output whose gradient is 0 contributes exactly 0, whatever the
/// values it read.
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
    if shape.problem().is_some() {
        return;
    }
    let (per, kernel, l_out) = (shape.group_inputs(), shape.kernel, shape.l_out);
    let outs_per_group = shape.c_out / shape.groups;
    for (o, g_row) in g.chunks_exact(l_out).enumerate() {
        if let Some(d) = db.get_mut(o) {
            for &gv in g_row {
                *d += gv;
            }
        }
        let first_in = (o / outs_per_group) * per;
        let w_range = o * per * kernel..(o + 1) * per * kernel;
        let w_o = w.get(w_range.clone()).unwrap_or(&[]);
        for (t, &gv) in g_row.iter().enumerate() {
            if gv == T::ZERO {
                continue;
            }
            let (k0, k1, at) = shape.taps(t);
            for i in 0..per {
                let row = (first_in + i) * shape.l_in..(first_in + i + 1) * shape.l_in;
                let taps = k0 + i * kernel..k1 + i * kernel;
                if !dw.is_empty() {
                    let x_row = x.get(row.clone()).unwrap_or(&[]);
                    let dw_i = dw
                        .get_mut(w_range.clone())
                        .and_then(|d| d.get_mut(taps.clone()));
                    for (d, &xv) in dw_i
                        .unwrap_or(&mut [])
                        .iter_mut()
                        .zip(x_row.iter().skip(at).step_by(shape.dilation))
                    {
                        *d += strong_mul(gv, xv);
                    }
                }
                if !dx.is_empty() {
                    let w_taps = w_o.get(taps).unwrap_or(&[]);
                    let dx_row = dx.get_mut(row).unwrap_or(&mut []);
                    for (d, &wk) in dx_row
                        .iter_mut()
                        .skip(at)
                        .step_by(shape.dilation)
                        .zip(w_taps)
                    {
                        *d += strong_mul(gv, wk);
                    }
                }
            }
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
        let (g_out, dx) = b.split(x);
        conv1d_grad(shape, xv, wv, g_out, dx, &mut [], &mut []);
        let (g_out, dw) = b.split(weight);
        conv1d_grad(shape, xv, wv, g_out, &mut [], dw, &mut []);
        let (g_out, db) = b.split(bias);
        conv1d_grad(shape, xv, wv, g_out, &mut [], &mut [], db);
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
