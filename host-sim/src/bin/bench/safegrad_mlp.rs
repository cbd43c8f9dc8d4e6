//! The workload on safegrad, as an application writes it: a tuple model built on a tape,
//! and per step `clear_activations`, `input`, `forward`, `softmax_cross_entropy` and the
//! guarded `train::step` with `Sgd` (default `StepConfig`: no clipping, not strict).

use safegrad::nn::{Build, Init, Linear, LinearRelu, Module};
use safegrad::optim::Sgd;
use safegrad::train::{step, StepConfig};
use safegrad::{Cap, Tape, Tensor};

use crate::workload::{Batch, Weights, HIDDEN, IN, LR, OUT};

/// The canonical MLP: each hidden layer and its ReLU as one node.
pub type Mlp = (
    LinearRelu<IN, HIDDEN>,
    LinearRelu<HIDDEN, HIDDEN>,
    Linear<HIDDEN, OUT>,
);

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
    model: Mlp,
    sgd: Sgd<f32>,
    config: StepConfig<f32>,
    data: Vec<(Tensor<f32, B, IN>, [usize; B])>,
}

impl<const B: usize> SafegradMlp<B> {
    pub fn new(weights: &Weights, batches: &[Batch<B>]) -> Result<Self, String> {
        let mut tape = Box::new(BenchTape::new());
        let model = Mlp::build(&mut *tape, &mut Init::new(0)).map_err(|e| e.to_string())?;
        let data = batches.iter().map(|b| (Tensor::new(b.x), b.y)).collect();
        let mut this = Self {
            tape,
            model,
            sgd: Sgd::new(LR),
            config: StepConfig::default(),
            data,
        };
        this.set_weights(weights)?;
        Ok(this)
    }

    pub fn set_weights(&mut self, w: &Weights) -> Result<(), String> {
        let (l1, l2, l3) = self.model;
        let t = &mut *self.tape;
        t.set_parameter(l1.weight, &Tensor::new(w.w1))
            .and_then(|()| t.set_parameter(l1.bias, &Tensor::new([w.b1])))
            .and_then(|()| t.set_parameter(l2.weight, &Tensor::new(w.w2)))
            .and_then(|()| t.set_parameter(l2.bias, &Tensor::new([w.b2])))
            .and_then(|()| t.set_parameter(l3.weight, &Tensor::new(w.w3)))
            .and_then(|()| t.set_parameter(l3.bias, &Tensor::new([w.b3])))
            .map_err(|e| e.to_string())
    }

    /// All parameters, flat, in the order of [`Weights::flat`] (the recording order).
    pub fn parameters(&self) -> Vec<f32> {
        self.tape.parameters().to_vec()
    }

    /// One step on batch `k`; the loss before the update.
    pub fn step(&mut self, k: usize) -> Result<f32, String> {
        let (x, y) = &self.data[k];
        let tape = &mut *self.tape;
        tape.clear_activations();
        let input = tape.input(x).map_err(|e| e.to_string())?;
        let logits = self.model.forward(tape, input).map_err(|e| e.to_string())?;
        let loss = tape
            .softmax_cross_entropy(logits, y)
            .map_err(|e| e.to_string())?;
        let report = step(tape, loss, &mut self.sgd, &self.config).map_err(|e| e.to_string())?;
        Ok(report.loss)
    }
}
