//! The canonical training step that the host and the device benchmarks time: MLP
//! 16 -> 32 -> 32 -> 4 with ReLU after both hidden layers, `f32`, softmax cross-entropy
//! against an integer class (mean over the batch), plain SGD with lr 0.01; one step is
//! forward + loss + backward + update. This crate holds, once for both benchmarks:
//!
//! - the workload: the initial [`Weights`] and the [`BATCHES`] training [`Batch`]es,
//!   deterministic (SplitMix64) and the same on every target;
//! - [`baseline::Baseline`], the step written by hand: fixed-size arrays, explicit loops, no
//!   allocation, no tape, no checks;
//! - [`on_tape`], the same step on safegrad's tape, as an application writes it;
//! - [`device`], both at batch 1 as functions of this crate, for the firmware.
//!
//! It is a crate of its own so that it keeps the release profile's opt-level 3 while the
//! firmware package is built for size (see the workspace's `Cargo.toml`).
//!
//! ```
//! use bench_steps::{baseline::Baseline, batches, Weights};
//!
//! let mut step = Baseline::<1>::new(&Weights::initial());
//! let data = batches::<1>();
//! let first = step.step(&data[0]);
//! assert!(first.is_finite() && first > 0.0);
//! ```
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

use safegrad::rng::{Draw, SeedableRng, SplitMix64};

pub mod conv;

/// Inputs per sample.
pub const IN: usize = 16;
/// Width of both hidden layers.
pub const HIDDEN: usize = 32;
/// Classes.
pub const OUT: usize = 4;
/// Learning rate of plain SGD.
pub const LR: f32 = 0.01;
/// Distinct batches the timed loops cycle through.
pub const BATCHES: usize = 8;
/// Multiply-accumulates of one batch-1 step as the benchmarks count them: forward, weight
/// gradient and input gradient of each layer (3 x 1,664) plus one per parameter for the
/// update (1,732): 6,724.
///
/// ```
/// assert_eq!(bench_steps::MACS, 6724);
/// assert_eq!(bench_steps::FLOPS_PER_SAMPLE, 13_448);
/// ```
pub const MACS: usize = 3 * (IN * HIDDEN + HIDDEN * HIDDEN + HIDDEN * OUT)
    + (IN * HIDDEN + HIDDEN + HIDDEN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT);
/// FLOPs of a batch-1 step, two per multiply-accumulate; a batch-`B` step is counted as `B`
/// times this.
pub const FLOPS_PER_SAMPLE: usize = 2 * MACS;

const WEIGHT_SEED: u64 = 0x5AFE_64AD;
const DATA_SEED: u64 = 0xDA7A_0001;

/// The parameters, in safegrad's layout: `y = x W + b`, `W` is `in x out`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    /// First layer.
    pub w1: [[f32; HIDDEN]; IN],
    /// Its bias.
    pub b1: [f32; HIDDEN],
    /// Second layer.
    pub w2: [[f32; HIDDEN]; HIDDEN],
    /// Its bias.
    pub b2: [f32; HIDDEN],
    /// Output layer.
    pub w3: [[f32; OUT]; HIDDEN],
    /// Its bias.
    pub b3: [f32; OUT],
}

fn uniform_row<const C: usize>(rng: &mut SplitMix64, bound: f64) -> [f32; C] {
    let mut r = [0.0; C];
    for v in &mut r {
        *v = rng.uniform(-bound, bound) as f32;
    }
    r
}

fn uniform_matrix<const R: usize, const C: usize>(
    rng: &mut SplitMix64,
    bound: f64,
) -> [[f32; C]; R] {
    let mut m = [[0.0; C]; R];
    for row in &mut m {
        *row = uniform_row(rng, bound);
    }
    m
}

impl Weights {
    /// Kaiming-uniform weights (`U(-b, b)`, `b = sqrt(6 / fan_in)`) and small non-zero
    /// biases (`U(-0.1, 0.1)`, so that the bias paths carry values), from SplitMix64: the
    /// same bits on every target.
    ///
    /// ```
    /// use bench_steps::Weights;
    ///
    /// let w = Weights::initial();
    /// assert_eq!(w, Weights::initial());
    /// assert!(w.w1.iter().flatten().all(|v| v.abs() <= (6.0f32 / 16.0).sqrt()));
    /// ```
    pub fn initial() -> Self {
        let mut rng = SplitMix64::seed_from_u64(WEIGHT_SEED);
        let kaiming = |fan_in: usize| libm::sqrt(6.0 / fan_in as f64);
        let w1 = uniform_matrix(&mut rng, kaiming(IN));
        let b1 = uniform_row(&mut rng, 0.1);
        let w2 = uniform_matrix(&mut rng, kaiming(HIDDEN));
        let b2 = uniform_row(&mut rng, 0.1);
        let w3 = uniform_matrix(&mut rng, kaiming(HIDDEN));
        let b3 = uniform_row(&mut rng, 0.1);
        Self {
            w1,
            b1,
            w2,
            b2,
            w3,
            b3,
        }
    }

    /// Every parameter in the order w1, b1, w2, b2, w3, b3 (safegrad's recording order).
    ///
    /// ```
    /// assert_eq!(bench_steps::Weights::initial().flat().count(), 1732);
    /// ```
    pub fn flat(&self) -> impl Iterator<Item = f32> + '_ {
        let w1 = self.w1.iter().flatten();
        let w2 = self.w2.iter().flatten();
        let w3 = self.w3.iter().flatten();
        w1.chain(&self.b1)
            .chain(w2)
            .chain(&self.b2)
            .chain(w3)
            .chain(&self.b3)
            .copied()
    }
}

/// One batch of `B` samples with their classes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Batch<const B: usize> {
    /// The inputs, one row a sample.
    pub x: [[f32; IN]; B],
    /// The classes, in `0..OUT`.
    pub y: [usize; B],
}

/// The [`BATCHES`] batches of `B` samples: inputs `U(-1, 1)`, classes uniform in `0..4`,
/// from SplitMix64 (seeded by the batch size; the same on every target).
///
/// ```
/// use bench_steps::{batches, OUT};
///
/// let data = batches::<32>();
/// assert_eq!(data, batches::<32>());
/// assert!(data.iter().flat_map(|b| b.y).all(|c| c < OUT));
/// ```
pub fn batches<const B: usize>() -> [Batch<B>; BATCHES] {
    let mut rng = SplitMix64::seed_from_u64(DATA_SEED ^ B as u64);
    let mut out = [Batch {
        x: [[0.0; IN]; B],
        y: [0; B],
    }; BATCHES];
    for batch in &mut out {
        batch.x = uniform_matrix(&mut rng, 1.0);
        for label in &mut batch.y {
            *label = rng.below(OUT);
        }
    }
    out
}

/// The hand-written step.
pub mod baseline {
    use super::{Batch, Weights, HIDDEN, LR, OUT};
    use safegrad::Scalar;

    /// `x W + b` for every row of `x`.
    fn linear<const B: usize, const I: usize, const O: usize>(
        x: &[[f32; I]; B],
        w: &[[f32; O]; I],
        b: &[f32; O],
    ) -> [[f32; O]; B] {
        x.each_ref().map(|x_row| {
            let mut out = *b;
            for (x_i, w_row) in x_row.iter().zip(w) {
                for (o, w_ij) in out.iter_mut().zip(w_row) {
                    *o += x_i * w_ij;
                }
            }
            out
        })
    }

    /// `max(z, 0)`.
    fn relu<const B: usize, const C: usize>(z: &[[f32; C]; B]) -> [[f32; C]; B] {
        z.each_ref()
            .map(|row| row.map(|v| if v > 0.0 { v } else { 0.0 }))
    }

    /// The gradient of the pre-activation `z` below a layer from its output's gradient `d`:
    /// `d W^T`, zero where `z <= 0` (ReLU).
    fn input_grad_relu<const B: usize, const I: usize, const O: usize>(
        d: &[[f32; O]; B],
        w: &[[f32; O]; I],
        z: &[[f32; I]; B],
    ) -> [[f32; I]; B] {
        let mut dz = [[0.0; I]; B];
        for ((dz_row, d_row), z_row) in dz.iter_mut().zip(d).zip(z) {
            for ((g, w_row), &z_i) in dz_row.iter_mut().zip(w).zip(z_row) {
                let s = w_row.iter().zip(d_row).fold(0.0, |acc, (w, g)| acc + w * g);
                *g = if z_i > 0.0 { s } else { 0.0 };
            }
        }
        dz
    }

    /// SGD on `x W + b` from its output's gradient `d`: `W -= lr x^T d`, `b -= lr (sum of the
    /// rows of d)`. Each weight's gradient is summed over the batch and applied at once:
    /// no gradient buffer.
    fn sgd_linear<const B: usize, const I: usize, const O: usize>(
        x: &[[f32; I]; B],
        d: &[[f32; O]; B],
        w: &mut [[f32; O]; I],
        b: &mut [f32; O],
    ) {
        // The sums start at -0.0: `-0.0 + t` is `t` exactly, so that at batch 1 a weight's
        // gradient is its one term, with no addition (a start at 0.0 would cost one).
        for (i, w_row) in w.iter_mut().enumerate() {
            let mut g = [-0.0f32; O];
            for (x_row, d_row) in x.iter().zip(d) {
                let x_i = x_row[i];
                for (g, d_j) in g.iter_mut().zip(d_row) {
                    *g += x_i * d_j;
                }
            }
            for (w_ij, g) in w_row.iter_mut().zip(&g) {
                *w_ij -= LR * g;
            }
        }
        let mut g = [-0.0f32; O];
        for d_row in d {
            for (g, d_j) in g.iter_mut().zip(d_row) {
                *g += d_j;
            }
        }
        for (b_j, g) in b.iter_mut().zip(&g) {
            *b_j -= LR * g;
        }
    }

    /// The parameters of the hand-written step at batch size `B`; the activations and
    /// gradients of a step live on the stack while it runs.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Baseline<const B: usize> {
        /// The parameters, updated by every step.
        pub weights: Weights,
    }

    impl<const B: usize> Baseline<B> {
        /// The step from `weights`.
        pub fn new(weights: &Weights) -> Self {
            Self {
                weights: weights.clone(),
            }
        }

        /// One step on `batch`: forward, loss (stable softmax cross-entropy,
        /// `ln(sum(exp(z - m))) - (z_t - m)` with `m = max(z)`, averaged over the batch,
        /// `exp` and `ln` safegrad's), backward, update. Returns the loss before the update.
        ///
        /// ```
        /// use bench_steps::{baseline::Baseline, batches, Weights};
        ///
        /// let mut step = Baseline::<32>::new(&Weights::initial());
        /// let data = batches::<32>();
        /// let before = step.step(&data[0]);
        /// assert!(step.step(&data[0]) < before);
        /// ```
        pub fn step(&mut self, batch: &Batch<B>) -> f32 {
            let w = &mut self.weights;
            // Forward.
            let z1: [[f32; HIDDEN]; B] = linear(&batch.x, &w.w1, &w.b1);
            let a1 = relu(&z1);
            let z2: [[f32; HIDDEN]; B] = linear(&a1, &w.w2, &w.b2);
            let a2 = relu(&z2);
            let z3: [[f32; OUT]; B] = linear(&a2, &w.w3, &w.b3);
            // The loss, and its gradient with respect to the logits:
            // (softmax(z) - onehot(t)) / B.
            let inv_b = 1.0 / B as f32;
            let mut total = 0.0;
            let mut dz3 = [[0.0f32; OUT]; B];
            for ((z, d), &t) in z3.iter().zip(dz3.iter_mut()).zip(&batch.y) {
                let m = z
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
                let e = z.map(|v| Scalar::exp(v - m));
                let s: f32 = e.iter().fold(0.0, |a, &v| a + v);
                total += Scalar::ln(s) - (z.get(t).copied().unwrap_or(0.0) - m);
                *d = e.map(|v| v / s);
                if let Some(d_t) = d.get_mut(t) {
                    *d_t -= 1.0;
                }
                for d_j in d.iter_mut() {
                    *d_j *= inv_b;
                }
            }
            let loss = total / B as f32;
            // Backward and update, layer by layer: each layer's input gradient before its
            // weights change.
            let dz2 = input_grad_relu(&dz3, &w.w3, &z2);
            sgd_linear(&a2, &dz3, &mut w.w3, &mut w.b3);
            let dz1 = input_grad_relu(&dz2, &w.w2, &z1);
            sgd_linear(&a1, &dz2, &mut w.w2, &mut w.b2);
            sgd_linear(&batch.x, &dz1, &mut w.w1, &mut w.b1);
            loss
        }
    }
}

/// The same step on safegrad's tape, as an application writes it: a tuple model built on
/// a tape, and per step `clear_activations`, `input`, `forward`, `softmax_cross_entropy`
/// and the guarded `train::step` with `Sgd` (the default `StepConfig`: no clipping, not
/// strict).
///
/// ```
/// use bench_steps::{batches, on_tape, Weights, LR};
/// use bench_steps::on_tape::SIZES as S;
/// use safegrad::{optim::Sgd, Cap, Tape, Tensor};
///
/// let mut tape = Box::new(Tape::<f32, Cap<{ S.nodes }, { S.values_held }, { S.gradients }>>::new());
/// let model = on_tape::build(&mut tape, &Weights::initial()).unwrap();
/// let mut sgd = Sgd::new(LR);
/// let data = batches::<1>();
/// let x = Tensor::new(data[0].x);
/// let loss = on_tape::train_step(&mut tape, &model, &mut sgd, &x, &data[0].y).unwrap();
/// assert!(loss.is_finite());
/// ```
pub mod on_tape {
    use super::{Weights, HIDDEN, IN, OUT};
    use safegrad::nn::{sizes, Build, Init, Linear, LinearRelu, Module, Plan, Sizes};
    use safegrad::optim::Sgd;
    use safegrad::train::{step, StepConfig, StepError};
    use safegrad::{Capacity, Tape, TapeError, Tensor, Var};

    /// The canonical MLP: each hidden layer and its ReLU as one node.
    pub type Model = (
        LinearRelu<IN, HIDDEN>,
        LinearRelu<HIDDEN, HIDDEN>,
        Linear<HIDDEN, OUT>,
    );

    /// What one step at batch 1 records, every parameter trained and held in the tape
    /// (`Sizes::batch` for more rows).
    pub const SIZES: Sizes = sizes::<Model>(Plan::All);

    /// Records the model on `tape` with the weights `w`.
    pub fn build<Mem: Capacity>(
        tape: &mut Tape<f32, Mem>,
        w: &Weights,
    ) -> Result<Model, TapeError> {
        let model = Model::build(tape, &mut Init::new(0))?;
        set_weights(tape, &model, w)?;
        Ok(model)
    }

    /// Sets the model's parameters to `w`.
    pub fn set_weights<Mem: Capacity>(
        tape: &mut Tape<f32, Mem>,
        model: &Model,
        w: &Weights,
    ) -> Result<(), TapeError> {
        let (l1, l2, l3) = model;
        tape.set_parameter(l1.weight, &Tensor::new(w.w1))?;
        tape.set_parameter(l1.bias, &Tensor::new([w.b1]))?;
        tape.set_parameter(l2.weight, &Tensor::new(w.w2))?;
        tape.set_parameter(l2.bias, &Tensor::new([w.b2]))?;
        tape.set_parameter(l3.weight, &Tensor::new(w.w3))?;
        tape.set_parameter(l3.bias, &Tensor::new([w.b3]))
    }

    /// Records the forward pass and the loss of one step on inputs `x` with classes `y`,
    /// on a cleared tape.
    pub fn record<const B: usize, Mem: Capacity>(
        tape: &mut Tape<f32, Mem>,
        model: &Model,
        x: &Tensor<f32, B, IN>,
        y: &[usize; B],
    ) -> Result<Var<1, 1>, TapeError> {
        tape.clear_activations();
        let input = tape.input(x)?;
        let logits = model.forward(tape, input)?;
        tape.softmax_cross_entropy(logits, y)
    }

    /// One training step on inputs `x` with classes `y`; returns the loss before the
    /// update.
    pub fn train_step<const B: usize, Mem: Capacity>(
        tape: &mut Tape<f32, Mem>,
        model: &Model,
        sgd: &mut Sgd<f32>,
        x: &Tensor<f32, B, IN>,
        y: &[usize; B],
    ) -> Result<f32, StepError> {
        let loss = record(tape, model, x, y)?;
        Ok(step(tape, loss, sgd, &StepConfig::default())?.loss)
    }
}

/// Both steps at batch 1, for the device benchmark. Generic code is compiled in the crate
/// that instantiates it: these concrete functions instantiate it here, at this crate's
/// opt-level 3, where a call from the firmware (built for size) would instantiate it there.
///
/// ```
/// use bench_steps::{baseline::Baseline, batches, device, Weights, LR};
/// use safegrad::{optim::Sgd, Tensor};
///
/// let mut tape = Box::new(device::BenchTape::new());
/// let model = device::build(&mut tape).unwrap();
/// let mut sgd = Sgd::new(LR);
/// let mut base = Baseline::new(&Weights::initial());
/// let sample = &batches::<1>()[0];
/// let a = device::baseline_step(&mut base, sample);
/// let b = device::train_step(&mut tape, &model, &mut sgd, &Tensor::new(sample.x), &sample.y);
/// assert!((a - b.unwrap()).abs() <= 1e-5);
/// ```
pub mod device {
    use super::baseline::Baseline;
    use super::on_tape::{self, Model};
    use super::{Batch, Weights, IN};
    use safegrad::optim::Sgd;
    use safegrad::train::StepError;
    use safegrad::{Cap, Tape, TapeError, Tensor, Var};

    /// A tape for the model at batch 1: 1,732 parameters and their gradients, and one
    /// step's activations.
    pub type BenchTape = Tape<
        f32,
        Cap<{ on_tape::SIZES.nodes }, { on_tape::SIZES.values_held }, { on_tape::SIZES.gradients }>,
    >;

    /// Records the model on `tape` with the initial [`Weights`].
    pub fn build(tape: &mut BenchTape) -> Result<Model, TapeError> {
        on_tape::build(tape, &Weights::initial())
    }

    /// [`Baseline::step`] at batch 1.
    pub fn baseline_step(baseline: &mut Baseline<1>, batch: &Batch<1>) -> f32 {
        baseline.step(batch)
    }

    /// [`on_tape::record`] at batch 1.
    pub fn record(
        tape: &mut BenchTape,
        model: &Model,
        x: &Tensor<f32, 1, IN>,
        y: &[usize; 1],
    ) -> Result<Var<1, 1>, TapeError> {
        on_tape::record(tape, model, x, y)
    }

    /// [`on_tape::train_step`] at batch 1.
    pub fn train_step(
        tape: &mut BenchTape,
        model: &Model,
        sgd: &mut Sgd<f32>,
        x: &Tensor<f32, 1, IN>,
        y: &[usize; 1],
    ) -> Result<f32, StepError> {
        on_tape::train_step(tape, model, sgd, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::baseline::Baseline;
    use super::*;
    use safegrad::nn::Sizes;
    use safegrad::optim::Sgd;
    use safegrad::{Cap, Capacity, Tape, Tensor};

    fn agree<const B: usize, Mem: Capacity>(tape: &mut Tape<f32, Mem>) {
        let w = Weights::initial();
        let mut base = Baseline::<B>::new(&w);
        let model = on_tape::build(tape, &w).unwrap();
        let mut sgd = Sgd::new(LR);
        let data = batches::<B>();
        for i in 0..20 {
            let batch = &data[i % BATCHES];
            let a = base.step(batch);
            let b = on_tape::train_step(tape, &model, &mut sgd, &Tensor::new(batch.x), &batch.y)
                .unwrap();
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "B={B}, step {i}: {a} vs {b}"
            );
        }
        let worst = base
            .weights
            .flat()
            .zip(tape.parameters())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "B={B}: parameters differ by {worst}");
    }

    #[test]
    fn the_baseline_and_safegrad_agree_step_after_step() {
        agree::<1, _>(&mut Box::new(device::BenchTape::new()));
        const S: Sizes = on_tape::SIZES.batch(32);
        agree::<32, _>(&mut Box::new(Tape::<
            f32,
            Cap<{ S.nodes }, { S.values_held }, { S.gradients }>,
        >::new()));
    }

    #[test]
    fn the_device_functions_are_the_generic_steps_at_batch_1() {
        let w = Weights::initial();
        let (mut a, mut b) = (Baseline::<1>::new(&w), Baseline::<1>::new(&w));
        for batch in &batches::<1>() {
            assert_eq!(device::baseline_step(&mut a, batch), b.step(batch));
        }
        assert_eq!(a, b);
    }
}
