//! The device benchmark's two implementations of the canonical training step: written by
//! hand ([`step_baseline`], its own crate so that it is compiled at full speed, as safegrad's
//! kernels are) and on safegrad's tape ([`on_tape`], built as the firmware is).

pub use step_baseline::{input, weight, Mlp, H1, H2, IN, MACS, OUT};

/// The same model on a safegrad tape, with the same weights.
pub mod on_tape {
    use super::{input, weight, H1, H2, IN, OUT};
    use safegrad::nn::{Build, Init, Linear, LinearRelu, Module};
    use safegrad::optim::Sgd;
    use safegrad::train::{step, StepConfig, StepError};
    use safegrad::{Tape, Tensor};

    /// The canonical MLP.
    pub type Model = (LinearRelu<IN, H1>, LinearRelu<H1, H2>, Linear<H2, OUT>);
    /// A tape for it at batch 1: 1,732 parameters and their gradients, the activations.
    pub type BenchTape = Tape<f32, 32, 2048, 2048>;

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
