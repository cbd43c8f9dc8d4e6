//! The 1-D convolution written by hand, the baseline of the device's convolution benchmark:
//! plain nested loops over `f32` slices, the padding tested tap by tap, no tape, no
//! checks beyond the slices' own. The same arithmetic order as safegrad's `conv1d` (the
//! bias, then each input channel of the group, each tap in turn), so both give the same
//! bits.

/// A convolution's geometry: `c_in x l_in` to `c_out x l_out`, `kernel` taps at `stride`,
/// `padding` zeros each side, no dilation, no groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input channels.
    pub c_in: usize,
    /// Input length.
    pub l_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Output length.
    pub l_out: usize,
    /// Taps.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding each side.
    pub padding: usize,
}

impl Geometry {
    /// Multiply-accumulates of the forward pass (and of each of the two backward products).
    pub const fn macs(&self) -> usize {
        self.c_out * self.l_out * self.c_in * self.kernel
    }

    /// The input index tap `k` of output `t` reads, if it is inside the input.
    #[inline(always)]
    fn at(&self, t: usize, k: usize) -> Option<usize> {
        let p = t * self.stride + k;
        (p >= self.padding && p - self.padding < self.l_in).then(|| p - self.padding)
    }
}

/// `y = conv1d(x, w) + b`.
pub fn forward(g: &Geometry, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    for o in 0..g.c_out {
        for t in 0..g.l_out {
            let mut acc = b[o];
            for i in 0..g.c_in {
                for k in 0..g.kernel {
                    if let Some(p) = g.at(t, k) {
                        acc += w[(o * g.c_in + i) * g.kernel + k] * x[i * g.l_in + p];
                    }
                }
            }
            y[o * g.l_out + t] = acc;
        }
    }
}

/// Adds the gradients of `sum(gy * y)` to `dx`, `dw` and `db`.
pub fn backward(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    for o in 0..g.c_out {
        for t in 0..g.l_out {
            let up = gy[o * g.l_out + t];
            db[o] += up;
            for i in 0..g.c_in {
                for k in 0..g.kernel {
                    if let Some(p) = g.at(t, k) {
                        let wi = (o * g.c_in + i) * g.kernel + k;
                        dw[wi] += up * x[i * g.l_in + p];
                        dx[i * g.l_in + p] += up * w[wi];
                    }
                }
            }
        }
    }
}

/// Adds the gradients of `sum(gy * y)` to `dw` and `db` only (an input that is data takes
/// none).
pub fn backward_no_input(g: &Geometry, x: &[f32], gy: &[f32], dw: &mut [f32], db: &mut [f32]) {
    for o in 0..g.c_out {
        for t in 0..g.l_out {
            let up = gy[o * g.l_out + t];
            db[o] += up;
            for i in 0..g.c_in {
                for k in 0..g.kernel {
                    if let Some(p) = g.at(t, k) {
                        dw[(o * g.c_in + i) * g.kernel + k] += up * x[i * g.l_in + p];
                    }
                }
            }
        }
    }
}
