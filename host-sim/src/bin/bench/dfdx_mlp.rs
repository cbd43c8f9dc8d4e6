//! The workload on dfdx 0.13 (CPU device, compile-time shapes), written as dfdx's own
//! examples train: `forward_mut` on a traced input, `cross_entropy_with_logits_loss`
//! against one-hot targets (dfdx takes probabilities, not class indices), `backward`,
//! `Sgd::update`, `zero_grads`. Its matrix products go through the `gemm` crate on a rayon
//! pool; the benchmark sets `RAYON_NUM_THREADS=1` before anything starts the pool (at these
//! sizes `gemm` stays below its threading threshold anyway). `gemm` picks its kernel at run
//! time (FMA/AVX2 on x86-64), whatever the target CPU the crate is compiled for.

use dfdx::optim::{Optimizer, Sgd, SgdConfig};
use dfdx::prelude::*;

use bench_steps::{Batch, Weights, HIDDEN, IN, LR, OUT};

type Arch = (
    Linear<IN, HIDDEN>,
    ReLU,
    Linear<HIDDEN, HIDDEN>,
    ReLU,
    Linear<HIDDEN, OUT>,
);
type Model = <Arch as BuildOnDevice<Cpu, f32>>::Built;

type Input<const B: usize> = Tensor<Rank2<B, IN>, f32, Cpu>;
type Target<const B: usize> = Tensor<Rank2<B, OUT>, f32, Cpu>;

pub struct DfdxMlp<const B: usize> {
    model: Model,
    grads: Option<Gradients<f32, Cpu>>,
    sgd: Sgd<Model, f32, Cpu>,
    data: Vec<(Input<B>, Target<B>)>,
}

/// `W` (`in x out`, safegrad's layout) as dfdx stores it: `out x in`, flat.
fn transposed<const I: usize, const O: usize>(w: &[[f32; O]; I]) -> Vec<f32> {
    (0..O)
        .flat_map(|o| w.iter().map(move |row| row[o]))
        .collect()
}

impl<const B: usize> DfdxMlp<B> {
    pub fn new(weights: &Weights, batches: &[Batch<B>]) -> Self {
        let dev = Cpu::default();
        let model = dev.build_module::<Arch, f32>();
        let grads = Some(model.alloc_grads());
        let sgd = Sgd::new(
            &model,
            SgdConfig {
                lr: f64::from(LR),
                momentum: None,
                weight_decay: None,
            },
        );
        let data = batches
            .iter()
            .map(|b| {
                let mut onehot = [[0.0f32; OUT]; B];
                for (row, &t) in onehot.iter_mut().zip(&b.y) {
                    row[t] = 1.0;
                }
                (dev.tensor(b.x), dev.tensor(onehot))
            })
            .collect();
        let mut this = Self {
            model,
            grads,
            sgd,
            data,
        };
        this.set_weights(weights);
        this
    }

    pub fn set_weights(&mut self, w: &Weights) {
        let m = &mut self.model;
        m.0.weight.copy_from(&transposed(&w.w1));
        m.0.bias.copy_from(&w.b1);
        m.2.weight.copy_from(&transposed(&w.w2));
        m.2.bias.copy_from(&w.b2);
        m.4.weight.copy_from(&transposed(&w.w3));
        m.4.bias.copy_from(&w.b3);
    }

    /// All parameters, flat, in the order and layout of [`Weights::flat`].
    pub fn parameters(&self) -> Vec<f32> {
        fn back<const I: usize, const O: usize>(w: &[f32]) -> Vec<f32> {
            (0..I)
                .flat_map(|i| (0..O).map(move |o| w[o * I + i]))
                .collect()
        }
        let m = &self.model;
        let mut v = back::<IN, HIDDEN>(&m.0.weight.as_vec());
        v.extend(m.0.bias.as_vec());
        v.extend(back::<HIDDEN, HIDDEN>(&m.2.weight.as_vec()));
        v.extend(m.2.bias.as_vec());
        v.extend(back::<HIDDEN, OUT>(&m.4.weight.as_vec()));
        v.extend(m.4.bias.as_vec());
        v
    }

    /// One step on batch `k`; the loss before the update.
    pub fn step(&mut self, k: usize) -> Result<f32, String> {
        let (x, y) = &self.data[k];
        let grads = self
            .grads
            .take()
            .ok_or_else(|| "dfdx: gradients lost".to_string())?;
        let logits = self.model.forward_mut(x.trace(grads));
        let loss = cross_entropy_with_logits_loss(logits, y.clone());
        let value = loss.array();
        let mut grads = loss.backward();
        self.sgd
            .update(&mut self.model, &grads)
            .map_err(|e| format!("dfdx: {e:?}"))?;
        self.model.zero_grads(&mut grads);
        self.grads = Some(grads);
        Ok(value)
    }
}
