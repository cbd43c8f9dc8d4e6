//! The workload on safegrad, as an application writes it (`bench_steps::on_tape`, the step
//! the device benchmark times too): a tuple model built on a tape, and per step
//! `clear_activations`, `input`, `forward`, `softmax_cross_entropy` and the guarded
//! `train::step` with `Sgd` (default `StepConfig`: no clipping, not strict).

use bench_steps::on_tape::{self, Model};
use bench_steps::{Batch, Weights, IN, LR};
use safegrad::nn::Sizes;
use safegrad::optim::Sgd;
use safegrad::{Cap, Tape, Tensor};

/// What a step at batch 32 records, from the model's type.
const SIZES: Sizes = on_tape::SIZES.batch(32);
/// Nodes of the tape.
pub const TAPE_NODES: usize = SIZES.nodes;
/// Values for batch 32 (4,581), rounded up to a multiple of 512 that is not one of 1,024
/// (4,608): the gradient buffer that follows then does not start a whole number of 4 KiB
/// pages after the values (an x86 core stalls on loads that seem to alias stores to the
/// other buffer).
pub const TAPE_SCALARS: usize = {
    let r = SIZES.values_held.div_ceil(512) * 512;
    if r.is_multiple_of(1024) {
        r + 512
    } else {
        r
    }
};
/// Gradients for batch 32 (5,957), rounded up to a multiple of 1,024 (6,144).
pub const TAPE_GRADIENTS: usize = SIZES.gradients.div_ceil(1024) * 1024;
const _: () = assert!(TAPE_SCALARS >= SIZES.values_held && !TAPE_SCALARS.is_multiple_of(1024));

/// A tape sized for batch 32, used for both batch sizes.
pub type BenchTape = Tape<f32, Cap<TAPE_NODES, TAPE_SCALARS, TAPE_GRADIENTS>>;

pub struct SafegradMlp<const B: usize> {
    tape: Box<BenchTape>,
    model: Model,
    sgd: Sgd<f32>,
    data: Vec<(Tensor<f32, B, IN>, [usize; B])>,
}

impl<const B: usize> SafegradMlp<B> {
    pub fn new(weights: &Weights, batches: &[Batch<B>]) -> Result<Self, String> {
        let mut tape = Box::new(BenchTape::new());
        let model = on_tape::build(&mut *tape, weights).map_err(|e| e.to_string())?;
        let data = batches.iter().map(|b| (Tensor::new(b.x), b.y)).collect();
        Ok(Self {
            tape,
            model,
            sgd: Sgd::new(LR),
            data,
        })
    }

    pub fn set_weights(&mut self, w: &Weights) -> Result<(), String> {
        on_tape::set_weights(&mut *self.tape, &self.model, w).map_err(|e| e.to_string())
    }

    /// All parameters, flat, in the order of [`Weights::flat`] (the recording order).
    pub fn parameters(&self) -> Vec<f32> {
        self.tape.parameters().to_vec()
    }

    /// One step on batch `k`; the loss before the update.
    pub fn step(&mut self, k: usize) -> Result<f32, String> {
        let (x, y) = &self.data[k];
        on_tape::train_step(&mut *self.tape, &self.model, &mut self.sgd, x, y)
            .map_err(|e| e.to_string())
    }
}
