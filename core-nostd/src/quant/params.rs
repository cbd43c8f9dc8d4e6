//! Quantisation parameters: `int8` activations with a scale and a zero point (asymmetric,
//! per tensor), `int8` weights with a scale per output channel (symmetric), `int32` biases at
//! the scale of the input times the weight.
//!
//! Every rounding is to nearest with ties away from zero (`libm::roundf`, as TFLite's
//! `TfLiteRound`).

/// How a tensor's `int8` codes stand for reals: `real = scale * (code - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuantParams {
    /// The real step between two codes.
    pub scale: f32,
    /// The code of the real 0, in `[-128, 127]`.
    pub zero_point: i32,
}

impl QuantParams {
    /// The parameters that cover `[min, max]` with the 256 codes (TFLite's asymmetric
    /// scheme): the range widened to hold 0, `scale = (max - min) / 255`, the zero point
    /// the code of 0 rounded and clamped. A range of a single point (all zeros) gets scale 1.
    ///
    /// ```
    /// use safegrad::quant::QuantParams;
    ///
    /// let p = QuantParams::from_range(0.0, 2.55);
    /// assert_eq!(p.zero_point, -128);
    /// assert_eq!(p.quantize(1.0), -28); // 1.0 / 0.01 - 128
    /// assert_eq!(p.quantize(9.9), 127); // saturates
    /// ```
    pub fn from_range(min: f32, max: f32) -> Self {
        let (min, max) = (min.min(0.0), max.max(0.0));
        let scale = (max - min) / 255.0;
        if !(scale.is_finite() && scale > 0.0) {
            return Self {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let zero_point = libm::roundf(-128.0 - min / scale).clamp(-128.0, 127.0) as i32;
        Self { scale, zero_point }
    }

    /// The code of `x`: `round(x / scale) + zero_point`, saturated to `[-128, 127]`.
    #[inline]
    pub fn quantize(self, x: f32) -> i8 {
        let q = libm::roundf(x / self.scale) + self.zero_point as f32;
        q.clamp(-128.0, 127.0) as i8
    }

    /// The real a code stands for, `scale * (code - zero_point)`.
    #[inline]
    pub fn dequantize(self, q: i8) -> f32 {
        self.scale * (i32::from(q) - self.zero_point) as f32
    }
}

/// Symmetric per-channel quantisation of a weight matrix of `scales.len()` rows (output
/// channels) of `w.len() / scales.len()` values each: each row's scale is its largest
/// magnitude over 127 (1 for a row of zeros), each code `round(w / scale)` in
/// `[-127, 127]`. Writes `q` and `scales`; nothing if the lengths do not fit.
///
/// ```
/// use safegrad::quant::quantize_per_channel;
///
/// let mut q = [0i8; 4];
/// let mut scales = [0.0f32; 2];
/// quantize_per_channel(&[127.0, -63.5, 0.0, 2.0], &mut q, &mut scales);
/// assert_eq!(q, [127, -64, 0, 127]); // -63.5 rounds away from zero
/// assert_eq!(scales, [1.0, 2.0 / 127.0]);
/// ```
pub fn quantize_per_channel(w: &[f32], q: &mut [i8], scales: &mut [f32]) {
    let rows = scales.len();
    if rows == 0 || w.len() != q.len() || !w.len().is_multiple_of(rows) {
        return;
    }
    let per_row = w.len() / rows;
    if per_row == 0 {
        return;
    }
    for ((w_row, q_row), scale) in w
        .chunks_exact(per_row)
        .zip(q.chunks_exact_mut(per_row))
        .zip(scales.iter_mut())
    {
        let max = w_row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *scale = if max > 0.0 && max.is_finite() {
            max / 127.0
        } else {
            1.0
        };
        for (c, &v) in q_row.iter_mut().zip(w_row) {
            *c = libm::roundf(v / *scale).clamp(-127.0, 127.0) as i8;
        }
    }
}

/// A bias at the accumulator's scale, `input_scale * weight_scale`: `round(b / that)`,
/// saturated to the `i32` range.
///
/// ```
/// use safegrad::quant::quantize_bias;
///
/// assert_eq!(quantize_bias(0.25, 0.5, 0.1), 5);
/// ```
pub fn quantize_bias(b: f32, input_scale: f32, weight_scale: f32) -> i32 {
    let scale = f64::from(input_scale) * f64::from(weight_scale);
    if scale.is_nan() || scale <= 0.0 {
        return 0;
    }
    libm::round(f64::from(b) / scale).clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}
