//! The workload on safegrad, as an application writes it (`bench_steps::on_tape`, the step
//! the device benchmark times too): a tuple model built on a tape, and per step
//! `clear_activations`, `input`, `forward`, `softmax_cross_entropy` and the guarded
//! `train::step` with `Sgd` (default `StepConfig`: no clipping, not strict).

use bench_steps::on_tape::{self, Model};
use bench_steps::{Batch, Weights, IN, LR};
use safegrad::optim::Sgd;
use safegrad::{Cap, Tape, Tensor};

/// Nodes: 6 parameters, the input, 3 layers, labels, loss = 12.
pub const TAPE_NODES: usize = 16;
/// Values for batch 32: 1,732 parameters, 32 x (16 + 32 + 32 + 4 + 1 label + 4 softmax) and
/// the loss, 4,581, rounded up to 4,608: not a multiple of 1,024, so that the gradient
/// buffer that follows does not start a whole number of 4 KiB pages after the values (an
/// x86 core stalls on loads that seem to alias stores to the other buffer).
pub const TAPE_SCALARS: usize = 4608;
/// Gradients for batch 32: 1,732 parameters + 32 x (2 x 32 + 2 x 32 + 4) + 1 loss = 5,957
/// (a hidden layer with its ReLU keeps its output's and its pre-activation's), rounded up
/// to 6 x 1024.
pub const TAPE_GRADIENTS: usize = 6 * 1024;

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
