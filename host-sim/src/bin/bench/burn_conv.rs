//! The convolution step on burn 0.19's CPU backend (`NdArray`) with its autodiff: the whole
//! batch as one `batch x channels x length` tensor, the gradients from `backward`.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

use super::conv::{ConvStep, Gradients, Workload, C, X, Y};

type B = Autodiff<NdArray<f32>>;

pub struct BurnConv {
    w1: Tensor<B, 3>,
    b1: Tensor<B, 1>,
    w2: Tensor<B, 3>,
    b2: Tensor<B, 1>,
    x: Tensor<B, 3>,
    gy: Tensor<B, 3>,
    grads: Option<Grads>,
}

type Grads = <B as burn::tensor::backend::AutodiffBackend>::Gradients;

fn tensor<const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

/// A gradient's values, or an empty vector if there is none.
fn values<const D: usize>(t: &Tensor<B, D>, grads: &Grads) -> Vec<f32> {
    t.grad(grads)
        .and_then(|g| g.into_data().to_vec::<f32>().ok())
        .unwrap_or_default()
}

impl BurnConv {
    pub fn new(work: &Workload) -> Self {
        let n = work.x.len() / X;
        Self {
            w1: tensor(&work.w1, [C, 6, 5]).require_grad(),
            b1: tensor(&work.b1, [C]).require_grad(),
            w2: tensor(&work.w2, [C, C, 5]).require_grad(),
            b2: tensor(&work.b2, [C]).require_grad(),
            x: tensor(&work.x, [n, 6, X / 6]),
            gy: tensor(&work.gy, [n, C, Y / C]),
            grads: None,
        }
    }
}

impl ConvStep for BurnConv {
    fn name(&self) -> &'static str {
        "burn"
    }
    fn step(&mut self) -> f32 {
        let options = || ConvOptions::new([2], [0], [1], 1);
        let y1 = conv1d(
            self.x.clone(),
            self.w1.clone(),
            Some(self.b1.clone()),
            options(),
        );
        let y2 = conv1d(y1, self.w2.clone(), Some(self.b2.clone()), options());
        let loss = (y2 * self.gy.clone()).sum();
        self.grads = Some(loss.backward());
        loss.into_scalar()
    }
    fn gradients(&self) -> Gradients {
        let Some(grads) = &self.grads else {
            return Vec::new();
        };
        [
            values(&self.w1, grads),
            values(&self.b1, grads),
            values(&self.w2, grads),
            values(&self.b2, grads),
        ]
        .concat()
    }
}
