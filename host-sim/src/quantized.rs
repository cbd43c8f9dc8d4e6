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
    fold_input_zero_point, qconv1d, qglobal_avg_pool, qlinear, quantize_bias, quantize_per_channel,
    QuantParams, Requant,
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

/// A quantised layer.
#[derive(Clone, Debug)]
enum QLayer {
    Dense {
        /// `OUT x IN`.
        weight: Vec<i8>,
        /// With the input's zero point folded in.
        bias: Vec<i32>,
        requant: Vec<Requant>,
        out: QuantParams,
        relu: bool,
    },
    Conv {
        shape: Conv1dShape,
        weight: Vec<i8>,
        bias: Vec<i32>,
        requant: Vec<Requant>,
        input: QuantParams,
        out: QuantParams,
        relu: bool,
    },
    GlobalAvg {
        channels: usize,
        len: usize,
        params: QuantParams,
    },
}

/// An `int8` body: the float prefix's output quantised, the layers in integer arithmetic,
/// the last output dequantised.
pub struct QuantBody {
    input: QuantParams,
    layers: Vec<QLayer>,
    output: QuantParams,
    /// Bytes of the quantised parameters (`int8` weights, `int32` biases, a scale per
    /// output channel and per activation tensor) and of the float ones they replace.
    pub int8_bytes: usize,
    /// Bytes of the body's float parameters.
    pub float_bytes: usize,
}

/// The range of every value of `rows`.
fn range<'a>(rows: impl Iterator<Item = &'a [f32]>) -> (f32, f32) {
    rows.flatten()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

impl QuantBody {
    /// Quantises `layers`, calibrating every activation's range on `calibration` (the
    /// float prefix's outputs for the training split).
    pub fn calibrate(layers: &[FloatLayer], calibration: &[Vec<f32>]) -> Result<Self, String> {
        let (lo, hi) = range(calibration.iter().map(Vec::as_slice));
        let input = QuantParams::from_range(lo, hi);
        let mut acts: Vec<Vec<f32>> = calibration.to_vec();
        let mut params = input;
        let mut out_layers = Vec::new();
        let mut int8_bytes = 8; // the input's scale and zero point
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
                    int8_bytes += w.len() + 4 * b.len() + 4 * scales.len() + 8;
                    QLayer::Dense {
                        weight: w,
                        bias: folded,
                        requant: requant_of(&scales)?,
                        out,
                        relu: *relu,
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
                    int8_bytes += w.len() + 4 * b.len() + 4 * scales.len() + 8;
                    QLayer::Conv {
                        shape: *shape,
                        weight: w,
                        bias: b,
                        requant: requant_of(&scales)?,
                        input: params,
                        out,
                        relu: *relu,
                    }
                }
                FloatLayer::GlobalAvg { channels, len } => QLayer::GlobalAvg {
                    channels: *channels,
                    len: *len,
                    params,
                },
            };
            // An average keeps its input's codes' meaning.
            if !matches!(q, QLayer::GlobalAvg { .. }) {
                params = out;
            }
            out_layers.push(q);
        }
        Ok(Self {
            input,
            layers: out_layers,
            output: params,
            int8_bytes,
            float_bytes: 4 * layers.iter().map(FloatLayer::parameters).sum::<usize>(),
        })
    }

    /// The body's output (dequantised) for the float prefix's output `x`. A global average
    /// pooling at the end is the boundary into the float head: its exact integer sums are
    /// dequantised, `scale * sum(code - zero_point) / len`, rather than rounded to codes.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut codes: Vec<i8> = x.iter().map(|&v| self.input.quantize(v)).collect();
        let (last, layers) = match self.layers.split_last() {
            Some((QLayer::GlobalAvg { len, params, .. }, rest)) => (Some((*len, *params)), rest),
            _ => (None, &self.layers[..]),
        };
        for layer in layers {
            codes = match layer {
                QLayer::Dense {
                    weight,
                    bias,
                    requant,
                    out,
                    relu,
                } => {
                    let mut y = vec![0i8; bias.len()];
                    let min = if *relu { out.zero_point as i8 } else { -128 };
                    qlinear(&codes, weight, bias, requant, out.zero_point, min, &mut y);
                    y
                }
                QLayer::Conv {
                    shape,
                    weight,
                    bias,
                    requant,
                    input,
                    out,
                    relu,
                } => {
                    let mut y = vec![0i8; shape.c_out * shape.l_out];
                    let min = if *relu { out.zero_point as i8 } else { -128 };
                    qconv1d(
                        shape,
                        &codes,
                        input.zero_point,
                        weight,
                        bias,
                        requant,
                        out.zero_point,
                        min,
                        &mut y,
                    );
                    y
                }
                QLayer::GlobalAvg {
                    channels,
                    len,
                    params,
                } => {
                    let mut y = vec![0i8; *channels];
                    qglobal_avg_pool(&codes, *len, params.zero_point, &mut y);
                    y
                }
            };
        }
        match last {
            Some((len, p)) => codes
                .chunks_exact(len.max(1))
                .map(|row| {
                    let sum: i32 = row.iter().map(|&c| i32::from(c) - p.zero_point).sum();
                    p.scale * sum as f32 / len as f32
                })
                .collect(),
            None => codes.iter().map(|&c| self.output.dequantize(c)).collect(),
        }
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

/// A float function of a row, as the frozen input standardisation is.
pub type Prefix = Box<dyn Fn(&[f32]) -> Vec<f32>>;

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
        prefix: Box::new(move |x| {
            x.iter()
                .zip(shift.iter().zip(&scale))
                .map(|(&v, (&s, &k))| (v + s) * k)
                .collect()
        }),
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
    use safegrad::ops::batch_norm::{batch_norm, DEFAULT_BATCH_NORM_EPS};
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
    Ok(Split {
        prefix: Box::new(move |x| {
            let mut y = vec![0.0f32; x.len()];
            batch_norm(x, 100, &stats, eps, &mut y);
            y
        }),
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

/// Runs the fine-tuning job for `model` (default settings, `seed`) with the float body and
/// with the body quantised to `int8`.
pub fn measure(
    dir: &std::path::Path,
    model: crate::finetune::MotionNet,
    seed: u64,
) -> Result<QuantReport, String> {
    use crate::finetune::{featurize, run, window_rows, FinetuneConfig, MotionNet};
    let config = FinetuneConfig {
        seed,
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
    let calibration: Vec<Vec<f32>> = rows.iter().map(|x| (split.prefix)(x)).collect();
    let body = QuantBody::calibrate(&split.body, &calibration)?;
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
