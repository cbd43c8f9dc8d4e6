//! Post-training quantisation of a model's frozen body to `int8` (`safegrad::quant`), under
//! its float head, and what it costs in accuracy and saves in flash.
//!
//! The body's layers (fully connected, convolutions, global average pooling) take
//! per-channel symmetric `int8` weights and `int32` biases; each layer's output, and the
//! body's input, an `int8` scale and zero point calibrated on the training split (its range
//! under the float model). A float prefix (the frozen input standardisation) runs before
//! the first quantised layer; the last layer's codes are dequantised into the float head.

use safegrad::ops::conv::{conv1d, Conv1dShape};
use safegrad::ops::pool::global_avg_pool;
use safegrad::quant::{
    fold_input_zero_point, quantize_bias, quantize_per_channel, Int8Body, Int8Encoder, Int8Error,
    Int8Layer, Int8Op, QuantParams, Requant, Window,
};
use safegrad::tensor::kernels;

/// A float layer of a body, with its parameters in safegrad's layout.
#[derive(Clone, Debug)]
pub enum FloatLayer {
    /// `x W + b` (`W` is `IN x OUT`), with or without a ReLU.
    Dense {
        inputs: usize,
        outputs: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
    },
    /// A 1-D convolution (the kernel as PyTorch's `[C_OUT, C_IN / G, K]`), with or without a
    /// ReLU.
    Conv {
        shape: Conv1dShape,
        weight: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
    },
    /// Global average pooling of `channels x len`.
    GlobalAvg { channels: usize, len: usize },
}

impl FloatLayer {
    /// The layer's output for `x`.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let relu = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = x.max(0.0));
        match self {
            Self::Dense {
                inputs,
                outputs,
                weight,
                bias,
                relu: r,
            } => {
                let mut y = vec![0.0; *outputs];
                kernels::linear(x, weight, Some(bias), &mut y, *inputs, *outputs);
                if *r {
                    relu(&mut y);
                }
                y
            }
            Self::Conv {
                shape,
                weight,
                bias,
                relu: r,
            } => {
                let mut y = vec![0.0; shape.c_out * shape.l_out];
                conv1d(shape, x, weight, bias, &mut y);
                if *r {
                    relu(&mut y);
                }
                y
            }
            Self::GlobalAvg { channels, len } => {
                let mut y = vec![0.0; *channels];
                global_avg_pool(x, *len, &mut y);
                y
            }
        }
    }

    /// Parameter scalars.
    pub fn parameters(&self) -> usize {
        match self {
            Self::Dense { weight, bias, .. } | Self::Conv { weight, bias, .. } => {
                weight.len() + bias.len()
            }
            Self::GlobalAvg { .. } => 0,
        }
    }
}

/// An `int8` body: the float prefix's output quantised, the layers in integer arithmetic,
/// the last output dequantised; encoded as a checkpoint carries it
/// ([`safegrad::quant::Int8Body`]) and run by the core, as on the device.
pub struct QuantBody {
    /// The encoding, in words so that it is aligned for reading in place.
    words: Vec<u32>,
    len: usize,
    /// Bytes of the encoding: what the body takes in flash (weights, biases, scales,
    /// requantisations, the prefix and the records).
    pub int8_bytes: usize,
    /// Bytes of the body's float parameters, the prefix's included.
    pub float_bytes: usize,
}

/// The range of every value of `rows`.
fn range<'a>(rows: impl Iterator<Item = &'a [f32]>) -> (f32, f32) {
    rows.flatten()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// A layer quantised: its parameters, owned, for [`Int8Encoder::layer`].
struct Owned {
    op: Int8Op,
    relu: bool,
    output: QuantParams,
    scales: Vec<f32>,
    requant: Vec<Requant>,
    bias: Vec<i32>,
    weights: Vec<i8>,
}

impl QuantBody {
    /// Quantises `layers` after the float `prefix`, calibrating every activation's range
    /// on `rows` (the training split's rows, before the prefix).
    pub fn calibrate(
        prefix: &Prefix,
        layers: &[FloatLayer],
        rows: &[Vec<f32>],
    ) -> Result<Self, String> {
        let calibration: Vec<Vec<f32>> = rows.iter().map(|x| prefix.apply(x)).collect();
        let (lo, hi) = range(calibration.iter().map(Vec::as_slice));
        let input = QuantParams::from_range(lo, hi);
        let mut acts: Vec<Vec<f32>> = calibration;
        let mut params = input;
        let mut owned = Vec::new();
        for layer in layers {
            acts = acts.iter().map(|x| layer.forward(x)).collect();
            let (lo, hi) = range(acts.iter().map(Vec::as_slice));
            let out = QuantParams::from_range(lo, hi);
            let requant_of = |w_scales: &[f32]| -> Result<Vec<Requant>, String> {
                w_scales
                    .iter()
                    .map(|&s| {
                        let real = f64::from(params.scale) * f64::from(s) / f64::from(out.scale);
                        Requant::from_scale(real)
                            .ok_or_else(|| format!("a requantisation factor {real} out of range"))
                    })
                    .collect()
            };
            let q = match layer {
                FloatLayer::Dense {
                    inputs,
                    outputs,
                    weight,
                    bias,
                    relu,
                } => {
                    let pytorch = transpose(weight, *inputs, *outputs);
                    let mut w = vec![0i8; pytorch.len()];
                    let mut scales = vec![0.0f32; *outputs];
                    quantize_per_channel(&pytorch, &mut w, &mut scales);
                    let b: Vec<i32> = bias
                        .iter()
                        .zip(&scales)
                        .map(|(&b, &s)| quantize_bias(b, params.scale, s))
                        .collect();
                    let mut folded = vec![0i32; *outputs];
                    fold_input_zero_point(&b, &w, params.zero_point, &mut folded);
                    Owned {
                        op: Int8Op::Linear {
                            inputs: *inputs,
                            outputs: *outputs,
                        },
                        relu: *relu,
                        output: out,
                        requant: requant_of(&scales)?,
                        scales,
                        bias: folded,
                        weights: w,
                    }
                }
                FloatLayer::Conv {
                    shape,
                    weight,
                    bias,
                    relu,
                } => {
                    let mut w = vec![0i8; weight.len()];
                    let mut scales = vec![0.0f32; shape.c_out];
                    quantize_per_channel(weight, &mut w, &mut scales);
                    let b: Vec<i32> = bias
                        .iter()
                        .zip(&scales)
                        .map(|(&b, &s)| quantize_bias(b, params.scale, s))
                        .collect();
                    Owned {
                        op: Int8Op::Conv1d(Window {
                            c_in: shape.c_in,
                            l_in: shape.l_in,
                            c_out: shape.c_out,
                            kernel: shape.kernel,
                            stride: shape.stride,
                            padding: shape.padding,
                            dilation: shape.dilation,
                            groups: shape.groups,
                        }),
                        relu: *relu,
                        output: out,
                        requant: requant_of(&scales)?,
                        scales,
                        bias: b,
                        weights: w,
                    }
                }
                // An average keeps its input's codes' meaning.
                FloatLayer::GlobalAvg { channels, len } => Owned {
                    op: Int8Op::GlobalAvgPool {
                        channels: *channels,
                        len: *len,
                    },
                    relu: false,
                    output: params,
                    scales: Vec::new(),
                    requant: Vec::new(),
                    bias: Vec::new(),
                    weights: Vec::new(),
                },
            };
            params = q.output;
            owned.push(q);
        }
        let e = |x: Int8Error| x.to_string();
        let mut buf = vec![0u8; 1 << 20];
        let mut enc = Int8Encoder::new(
            &mut buf,
            prefix.channels,
            prefix.len,
            input,
            &prefix.shift,
            &prefix.mul,
        )
        .map_err(e)?;
        for q in &owned {
            enc.layer(&Int8Layer {
                op: q.op,
                relu: q.relu,
                output: q.output,
                weight_scales: &q.scales,
                requant: &q.requant,
                bias: &q.bias,
                weights: &q.weights,
            })
            .map_err(e)?;
        }
        let len = enc.finish().map_err(e)?;
        let mut words = vec![0u32; len.div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..len].copy_from_slice(&buf[..len]);
        let body = Self {
            words,
            len,
            int8_bytes: len,
            float_bytes: 4
                * (layers.iter().map(FloatLayer::parameters).sum::<usize>()
                    + prefix.shift.len()
                    + prefix.mul.len()),
        };
        body.body()?;
        Ok(body)
    }

    /// The encoding, as a version 2 checkpoint carries it.
    pub fn encoding(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }

    /// The body, parsed by the core.
    pub fn body(&self) -> Result<Int8Body<'_>, String> {
        Int8Body::parse(self.encoding()).map_err(|x| x.to_string())
    }

    /// The body's output (dequantised) for the row `x` (before the prefix), as the core
    /// computes it.
    pub fn forward(&self, x: &[f32]) -> Result<Vec<f32>, String> {
        let body = self.body()?;
        let mut scratch = vec![0i8; body.scratch_len()];
        let mut out = vec![0.0f32; body.outputs()];
        body.forward(x, &mut scratch, &mut out)
            .map_err(|x| x.to_string())?;
        Ok(out)
    }
}

/// A matrix transposed: `rows x cols` to `cols x rows`.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// The class a float head (`W` is `IN x OUT`) gives a latent.
pub fn head_class(latent: &[f32], weight: &[f32], bias: &[f32]) -> usize {
    let mut logits = vec![0.0f32; bias.len()];
    kernels::linear(
        latent,
        weight,
        Some(bias),
        &mut logits,
        latent.len(),
        bias.len(),
    );
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// The frozen input standardisation before the body, per channel: a row of `channels x
/// len` values, value `x` of channel `c` becoming `(x + shift[c]) * mul[c]` (the `int8`
/// body's float prefix).
#[derive(Clone, Debug)]
pub struct Prefix {
    /// Channels.
    pub channels: usize,
    /// Values per channel.
    pub len: usize,
    /// Each channel's shift.
    pub shift: Vec<f32>,
    /// Each channel's multiplier.
    pub mul: Vec<f32>,
}

impl Prefix {
    /// The standardised row.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = i / self.len.max(1);
                (v + self.shift[c]) * self.mul[c]
            })
            .collect()
    }
}

/// A model split for quantisation: the float prefix, the body's layers, the head.
pub struct Split {
    /// The frozen input standardisation, applied to a row before the body.
    pub prefix: Prefix,
    /// The body.
    pub body: Vec<FloatLayer>,
    /// The head's weight (`IN x OUT`) and bias.
    pub head: (Vec<f32>, Vec<f32>),
}

/// The MLP's parts from a checkpoint of `motion::model::MotionModel`.
pub fn split_mlp(checkpoint: &[u8]) -> Result<Split, String> {
    use motion::model::MotionModel;
    use safegrad::nn::Init;
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let mut work = crate::model::new_workspace::<MotionModel>();
    let mut session =
        safegrad::session::Session::<MotionModel, f32, _>::new(&mut *work, Init::new(0))
            .map_err(|x| e(&x))?;
    session.load(checkpoint).map_err(|x| e(&x))?;
    let (tape, m) = session.parts();
    let v =
        |t: Result<safegrad::Tensor<f32, 1, 16>, safegrad::TapeError>| -> Result<Vec<f32>, String> {
            Ok(t.map_err(|x| e(&x))?.as_slice().to_vec())
        };
    let shift = v(tape.value(m.0.shift))?;
    let scale = v(tape.value(m.0.scale))?;
    let dense = |w: &[f32], b: &[f32], inputs: usize, relu: bool| FloatLayer::Dense {
        inputs,
        outputs: b.len(),
        weight: w.to_vec(),
        bias: b.to_vec(),
        relu,
    };
    let w1 = tape.value(m.1.weight).map_err(|x| e(&x))?;
    let b1 = tape.value(m.1.bias).map_err(|x| e(&x))?;
    let w2 = tape.value(m.2.weight).map_err(|x| e(&x))?;
    let b2 = tape.value(m.2.bias).map_err(|x| e(&x))?;
    let w3 = tape.value(m.3.weight).map_err(|x| e(&x))?;
    let b3 = tape.value(m.3.bias).map_err(|x| e(&x))?;
    Ok(Split {
        prefix: Prefix {
            channels: shift.len(),
            len: 1,
            shift,
            mul: scale,
        },
        body: vec![
            dense(w1.as_slice(), b1.as_slice(), 16, true),
            dense(w2.as_slice(), b2.as_slice(), 32, true),
        ],
        head: (w3.as_slice().to_vec(), b3.as_slice().to_vec()),
    })
}

/// The CNN's parts from a checkpoint of `motion::model::MotionCnn`.
pub fn split_cnn(checkpoint: &[u8]) -> Result<Split, String> {
    use motion::model::MotionCnn;
    use safegrad::nn::Init;
    use safegrad::ops::batch_norm::{channel_affine, DEFAULT_BATCH_NORM_EPS};
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let mut work = crate::model::new_workspace::<MotionCnn>();
    let mut session =
        safegrad::session::Session::<MotionCnn, f32, _>::new(&mut *work, Init::new(0))
            .map_err(|x| e(&x))?;
    session.load(checkpoint).map_err(|x| e(&x))?;
    let (tape, m) = session.parts();
    let (first, second) = (&m.0, &m.1);
    let stats = tape
        .value(first.1.stats)
        .map_err(|x| e(&x))?
        .as_slice()
        .to_vec();
    let conv =
        |w: safegrad::FlatVar, b: &[f32], shape: Conv1dShape| -> Result<FloatLayer, String> {
            Ok(FloatLayer::Conv {
                shape,
                weight: tape.flat_value(w).map_err(|x| e(&x))?.to_vec(),
                bias: b.to_vec(),
                relu: true,
            })
        };
    let b1 = tape.value(first.2.bias).map_err(|x| e(&x))?;
    let b2 = tape.value(second.0.bias).map_err(|x| e(&x))?;
    let c1 = conv(
        first.2.weight,
        b1.as_slice(),
        Conv1dShape::new(6, 100, 16, 5, 2, 0, 1, 1),
    )?;
    let c2 = conv(
        second.0.weight,
        b2.as_slice(),
        Conv1dShape::new(16, 48, 16, 5, 2, 0, 1, 1),
    )?;
    let w = tape.value(second.3.weight).map_err(|x| e(&x))?;
    let b = tape.value(second.3.bias).map_err(|x| e(&x))?;
    let eps = DEFAULT_BATCH_NORM_EPS as f32;
    // The batch normalisation `x * alpha + beta` as the prefix `(x + beta / alpha) * alpha`.
    let (shift, mul): (Vec<f32>, Vec<f32>) = (0..6)
        .map(|c| {
            let (alpha, beta) = channel_affine(&stats, 6, c, eps);
            (beta / alpha, alpha)
        })
        .unzip();
    Ok(Split {
        prefix: Prefix {
            channels: 6,
            len: 100,
            shift,
            mul,
        },
        body: vec![
            c1,
            c2,
            FloatLayer::GlobalAvg {
                channels: 16,
                len: 22,
            },
        ],
        head: (w.as_slice().to_vec(), b.as_slice().to_vec()),
    })
}

/// The fine-tuning job with a float body and with an `int8` one: accuracies and the body's
/// bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantReport {
    /// `mlp` or `cnn`.
    pub model: &'static str,
    /// Held-out accuracy of the float job: before the shift, after it, after fine-tuning.
    pub float: [f64; 3],
    /// The same for `finetune --quantize int8`.
    pub int8: [f64; 3],
    /// Bytes of the body's parameters, float and `int8` (weights, biases, scales and zero
    /// points).
    pub body_bytes: (usize, usize),
}

/// Runs the fine-tuning job for `model` (default settings, `seed`, `augment` turned copies
/// of each recording in pre-training) with the float body and with the body quantised to
/// `int8`.
pub fn measure(
    dir: &std::path::Path,
    model: crate::finetune::MotionNet,
    seed: u64,
    augment: usize,
) -> Result<QuantReport, String> {
    use crate::finetune::{featurize, run, window_rows, FinetuneConfig, MotionNet};
    let config = FinetuneConfig {
        seed,
        augment,
        ..FinetuneConfig::for_model(model)
    };
    let float = run(dir, &config, &mut |_| {})?;
    let int8 = run(
        dir,
        &FinetuneConfig {
            quantize: true,
            ..config
        },
        &mut |_| {},
    )?;
    // The int8 body's size, calibrated as the job calibrates it.
    let train = crate::data::load_motions(dir, "train").map_err(|x| x.to_string())?;
    let (name, split, rows): (_, _, Vec<Vec<f32>>) = match model {
        MotionNet::Mlp => (
            "mlp",
            split_mlp(&float.pretrained_checkpoint)?,
            featurize(&train, None)?
                .iter()
                .map(|(x, _)| x.to_vec())
                .collect(),
        ),
        MotionNet::Cnn => (
            "cnn",
            split_cnn(&float.pretrained_checkpoint)?,
            window_rows(&train, None)
                .iter()
                .map(|(x, _)| x.to_vec())
                .collect(),
        ),
    };
    let body = QuantBody::calibrate(&split.prefix, &split.body, &rows)?;
    let accuracies = |r: &crate::finetune::FinetuneReport| {
        [
            r.pretrain_accuracy,
            r.shifted_accuracy_before,
            r.shifted_accuracy_after,
        ]
    };
    Ok(QuantReport {
        model: name,
        float: accuracies(&float),
        int8: accuracies(&int8),
        body_bytes: (body.float_bytes, body.int8_bytes),
    })
}
