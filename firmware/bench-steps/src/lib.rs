//! The device benchmark's two implementations of the canonical training step (MLP
//! 16 -> 32 -> 32 -> 4 with ReLU, softmax cross-entropy, plain SGD, batch 1):
//!
//! - [`Mlp::step`], written by hand: fixed-size arrays, explicit loops, no allocation, one
//!   accumulator per output, the weight gradient applied directly in the update (no
//!   gradient buffer for the weights); `exp` and `ln` are safegrad's (`libm`, or micromath
//!   with its `fast-math` feature);
//! - [`on_tape::train_step`]: the same model on safegrad's tape with the same weights, one
//!   guarded `train::step`.
//!
//! A crate of its own, compiled at opt-level 3 while the firmware is built for size.
#![cfg_attr(not(test), no_std)]

use safegrad::Scalar;

/// Inputs.
pub const IN: usize = 16;
/// First hidden layer.
pub const H1: usize = 32;
/// Second hidden layer.
pub const H2: usize = 32;
/// Classes.
pub const OUT: usize = 4;
/// Multiply-accumulates of one step as the benchmarks count them (6,724; a step is 13,448
/// FLOPs).
pub const MACS: usize = 6724;

/// The MLP's parameters, `W` as `in x out` like `safegrad::nn::Linear`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// First layer.
    pub w1: [[f32; H1]; IN],
    /// Its bias.
    pub b1: [f32; H1],
    /// Second layer.
    pub w2: [[f32; H2]; H1],
    /// Its bias.
    pub b2: [f32; H2],
    /// Output layer.
    pub w3: [[f32; OUT]; H2],
    /// Its bias.
    pub b3: [f32; OUT],
}

/// A deterministic weight for position `(layer, r, c)`, the same for every implementation.
pub fn weight(layer: usize, r: usize, c: usize, fan_in: usize) -> f32 {
    let k = (layer * 7919 + r * 131 + c * 17) % 97;
    let u = k as f32 / 96.0 - 0.5;
    u * 2.0 * libm::sqrtf(1.0 / fan_in as f32)
}

/// The benchmark's input row.
pub fn input() -> [f32; IN] {
    core::array::from_fn(|i| ((i * 37 % 23) as f32 / 11.0) - 1.0)
}

impl Mlp {
    /// The benchmark's weights (biases 0.01).
    pub fn new() -> Self {
        Self {
            w1: core::array::from_fn(|r| core::array::from_fn(|c| weight(1, r, c, IN))),
            b1: [0.01; H1],
            w2: core::array::from_fn(|r| core::array::from_fn(|c| weight(2, r, c, H1))),
            b2: [0.01; H2],
            w3: core::array::from_fn(|r| core::array::from_fn(|c| weight(3, r, c, H2))),
            b3: [0.01; OUT],
        }
    }

    /// One SGD step on `(x, target)`; returns the loss before the update.
    pub fn step(&mut self, x: &[f32; IN], target: usize, lr: f32) -> f32 {
        // Forward.
        let mut h1 = self.b1;
        for (xi, row) in x.iter().zip(&self.w1) {
            for (h, w) in h1.iter_mut().zip(row) {
                *h += xi * w;
            }
        }
        let a1 = h1.map(|v| if v > 0.0 { v } else { 0.0 });
        let mut h2 = self.b2;
        for (ai, row) in a1.iter().zip(&self.w2) {
            for (h, w) in h2.iter_mut().zip(row) {
                *h += ai * w;
            }
        }
        let a2 = h2.map(|v| if v > 0.0 { v } else { 0.0 });
        let mut z = self.b3;
        for (ai, row) in a2.iter().zip(&self.w3) {
            for (o, w) in z.iter_mut().zip(row) {
                *o += ai * w;
            }
        }
        // Stable softmax cross-entropy.
        let m = z
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        let e = z.map(|v| Scalar::exp(v - m));
        let s: f32 = e.iter().fold(0.0, |a, &v| a + v);
        let loss = Scalar::ln(s) - (z.get(target).copied().unwrap_or(0.0) - m);
        let mut dz = e.map(|v| v / s);
        if let Some(d) = dz.get_mut(target) {
            *d -= 1.0;
        }
        // Backward and update, layer by layer (gradients of the inputs before the weights
        // change).
        let mut da2 = [0.0f32; H2];
        for (d, row) in da2.iter_mut().zip(&self.w3) {
            *d = row.iter().zip(&dz).fold(0.0, |acc, (w, g)| acc + w * g);
        }
        for (ai, row) in a2.iter().zip(self.w3.iter_mut()) {
            for (w, g) in row.iter_mut().zip(&dz) {
                *w -= lr * (ai * g);
            }
        }
        for (b, g) in self.b3.iter_mut().zip(&dz) {
            *b -= lr * g;
        }
        let dh2: [f32; H2] = core::array::from_fn(|i| if h2[i] > 0.0 { da2[i] } else { 0.0 });
        let mut da1 = [0.0f32; H1];
        for (d, row) in da1.iter_mut().zip(&self.w2) {
            *d = row.iter().zip(&dh2).fold(0.0, |acc, (w, g)| acc + w * g);
        }
        for (ai, row) in a1.iter().zip(self.w2.iter_mut()) {
            for (w, g) in row.iter_mut().zip(&dh2) {
                *w -= lr * (ai * g);
            }
        }
        for (b, g) in self.b2.iter_mut().zip(&dh2) {
            *b -= lr * g;
        }
        let dh1: [f32; H1] = core::array::from_fn(|i| if h1[i] > 0.0 { da1[i] } else { 0.0 });
        for (xi, row) in x.iter().zip(self.w1.iter_mut()) {
            for (w, g) in row.iter_mut().zip(&dh1) {
                *w -= lr * (xi * g);
            }
        }
        for (b, g) in self.b1.iter_mut().zip(&dh1) {
            *b -= lr * g;
        }
        loss
    }
}

impl Default for Mlp {
    fn default() -> Self {
        Self::new()
    }
}

/// The same model on a safegrad tape, with the same weights.
pub mod on_tape {
    use super::{input, weight, H1, H2, IN, OUT};
    use safegrad::nn::{Build, Init, Linear, LinearRelu, Module};
    use safegrad::optim::Sgd;
    use safegrad::train::{step, StepConfig, StepError};
    use safegrad::{Cap, Tape, Tensor};

    /// The canonical MLP.
    pub type Model = (LinearRelu<IN, H1>, LinearRelu<H1, H2>, Linear<H2, OUT>);
    /// A tape for it at batch 1: 1,732 parameters and their gradients, the activations.
    pub type BenchTape = Tape<f32, Cap<32, 2048, 2048>>;

    /// Records the model with the benchmark's weights.
    pub fn build(tape: &mut BenchTape) -> Result<Model, safegrad::TapeError> {
        let m = Model::build(tape, &mut Init::new(1))?;
        tape.set_parameter(m.0.weight, &Tensor::from_fn(|r, c| weight(1, r, c, IN)))?;
        tape.set_parameter(m.0.bias, &Tensor::full(0.01))?;
        tape.set_parameter(m.1.weight, &Tensor::from_fn(|r, c| weight(2, r, c, H1)))?;
        tape.set_parameter(m.1.bias, &Tensor::full(0.01))?;
        tape.set_parameter(m.2.weight, &Tensor::from_fn(|r, c| weight(3, r, c, H2)))?;
        tape.set_parameter(m.2.bias, &Tensor::full(0.01))?;
        Ok(m)
    }

    /// Records the forward pass and the loss of one step on a cleared tape.
    pub fn record(
        tape: &mut BenchTape,
        model: &Model,
        target: usize,
    ) -> Result<safegrad::Var<1, 1>, safegrad::TapeError> {
        tape.clear_activations();
        let x = tape.input(&Tensor::new([input()]))?;
        let logits = model.forward(tape, x)?;
        tape.softmax_cross_entropy(logits, &[target])
    }

    /// One training step; returns the loss.
    pub fn train_step(
        tape: &mut BenchTape,
        model: &Model,
        sgd: &mut Sgd<f32>,
        target: usize,
    ) -> Result<f32, StepError> {
        tape.clear_activations();
        let x = tape.input(&Tensor::new([input()]))?;
        let logits = model.forward(tape, x)?;
        let loss = tape.softmax_cross_entropy(logits, &[target])?;
        Ok(step(tape, loss, sgd, &StepConfig::default())?.loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_and_safegrad_agree_step_after_step() {
        let mut base = Mlp::new();
        let mut tape = Box::new(on_tape::BenchTape::new());
        let model = on_tape::build(&mut tape).unwrap();
        let mut sgd = safegrad::optim::Sgd::new(0.01f32);
        for i in 0..20 {
            let target = i % OUT;
            let a = base.step(&input(), target, 0.01);
            let b = on_tape::train_step(&mut tape, &model, &mut sgd, target).unwrap();
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "step {i}: {a} vs {b}"
            );
        }
    }
}
