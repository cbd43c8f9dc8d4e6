//! `int8` quantisation for frozen layers: post-training quantisation's parameters,
//! TFLite's integer requantisation, and the integer kernels of fully connected,
//! convolutional and pooling layers.
//!
//! The scheme is TensorFlow Lite Micro's and CMSIS-NN's:
//!
//! - weights: `int8`, symmetric, one scale per output channel ([`quantize_per_channel`]);
//! - biases: `int32` at the scale `input_scale * weight_scale` ([`quantize_bias`]);
//! - activations: `int8` with a scale and a zero point per tensor, calibrated from a range
//!   ([`QuantParams::from_range`]);
//! - a layer's `int32` sum scaled to the output by `input_scale * weight_scale /
//!   output_scale`, a fixed-point multiplier and a shift ([`Requant`]), rounded and
//!   saturated to `[-128, 127]` ([`requantize`]).
//!
//! Everything after the scales is integer arithmetic with its rounding specified (to
//! nearest; the ties as gemmlowp breaks them, see [`Requant`]), so the host and the device
//! compute the same codes.
//!
//! ```
//! use safegrad::quant::{
//!     fold_input_zero_point, qlinear, quantize_bias, quantize_per_channel, QuantParams, Requant,
//! };
//!
//! // y = x . w + b for x in [0, 2], one output, quantised end to end.
//! let (w, b) = ([0.5f32, -0.25], [0.1f32]);
//! let input = QuantParams::from_range(0.0, 2.0);
//! let output = QuantParams::from_range(-1.0, 1.0);
//! let (mut qw, mut ws) = ([0i8; 2], [0.0f32; 1]);
//! quantize_per_channel(&w, &mut qw, &mut ws);
//! let bias = [quantize_bias(b[0], input.scale, ws[0])];
//! let mut folded = [0i32; 1];
//! fold_input_zero_point(&bias, &qw, input.zero_point, &mut folded);
//! let r = Requant::from_scale(f64::from(input.scale * ws[0] / output.scale)).unwrap();
//! let x = [input.quantize(1.0), input.quantize(2.0)];
//! let mut y = [0i8; 1];
//! qlinear(&x, &qw, &folded, &[r], output.zero_point, -128, &mut y);
//! let real = 1.0 * 0.5 + 2.0 * -0.25 + 0.1; // 0.1
//! assert!((output.dequantize(y[0]) - real).abs() <= 2.0 * output.scale);
//! ```

mod body;
mod kernels;
mod params;
mod requant;

pub use body::{
    Int8Body, Int8Encoder, Int8Error, Int8Latents, Int8Layer, Int8Op, Window, INT8_MAGIC,
};
pub use kernels::{dot_i8, dot_i8_portable, fold_input_zero_point, qlinear};
#[cfg(feature = "conv")]
pub use kernels::{qavg_pool1d, qconv1d, qglobal_avg_pool, qmax_pool1d};
pub use params::{quantize_bias, quantize_per_channel, QuantParams};
pub use requant::{
    requantize, rounding_divide_by_pot, saturating_rounding_doubling_high_mul, Requant,
};
