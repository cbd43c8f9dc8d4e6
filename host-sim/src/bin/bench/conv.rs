//! The convolution step of the host benchmark: the two convolutions of `MotionCnn` (6 x 100
//! to 16 x 48 and 16 x 48 to 16 x 22, 5 taps at stride 2, with biases), forward, then
//! backward from a fixed upstream gradient of the second one's output (`loss = sum(gy * y2)`):
//! the second one's input, kernel and bias gradients, the first one's kernel and bias
//! gradients (its input is data). Batch 1 and 32, no update: each step computes the same
//! gradients from the same weights.
//!
//! - `baseline`: the convolution written by hand in plain loops (`bench_steps::conv`, the
//!   device benchmark's), sample by sample;
//! - `safegrad`: `safegrad::ops::conv::{conv1d, conv1d_grad}`, the kernels the tape's
//!   convolution node runs, sample by sample;
//! - `burn` 0.19 (`Autodiff<NdArray>`, single-threaded), only with `--features peers`:
//!   `burn::tensor::module::conv1d` on the whole batch, the gradients from its autodiff.

use bench_steps::conv::{self as plain, Geometry};
use safegrad::ops::conv::{conv1d, conv1d_grad, Conv1dShape};
use safegrad::rng::{Draw, SeedableRng, SplitMix64};

/// The first convolution.
pub static CONV1: Conv1dShape = Conv1dShape::new(6, 100, 16, 5, 2, 0, 1, 1);
/// The second convolution.
pub static CONV2: Conv1dShape = Conv1dShape::new(16, 48, 16, 5, 2, 0, 1, 1);

/// Input values of one sample.
pub const X: usize = 6 * 100;
/// Values between the convolutions.
pub const MID: usize = 16 * 48;
/// Output values of one sample.
pub const Y: usize = 16 * 22;
/// The first kernel's scalars.
pub const W1: usize = 16 * 6 * 5;
/// The second kernel's scalars.
pub const W2: usize = 16 * 16 * 5;
/// Channels out of each convolution (the biases).
pub const C: usize = 16;

/// Multiply-accumulates of one sample's step: both forward passes (23,040 and 28,160), the
/// second one's two backward products and the first one's kernel gradient.
pub const MACS_PER_SAMPLE: usize = 2 * 23_040 + 3 * 28_160;
const _: () = assert!(CONV1.macs() == 23_040 && CONV2.macs() == 28_160);
/// FLOPs of one sample's step, two per multiply-accumulate.
pub const FLOPS_PER_SAMPLE: usize = 2 * MACS_PER_SAMPLE;

/// The weights and a batch of inputs and upstream gradients, from SplitMix64.
#[derive(Clone)]
pub struct Workload {
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
    /// `batch x 6 x 100`.
    pub x: Vec<f32>,
    /// `batch x 16 x 22`.
    pub gy: Vec<f32>,
}

impl Workload {
    pub fn new(batch: usize) -> Self {
        let mut rng = SplitMix64::seed_from_u64(0xC0DE + batch as u64);
        let mut draw = |n: usize, scale: f64| -> Vec<f32> {
            (0..n).map(|_| rng.uniform(-scale, scale) as f32).collect()
        };
        // Kaiming-uniform bounds for 30 and 80 inputs per output.
        Self {
            w1: draw(W1, (6.0f64 / 30.0).sqrt()),
            b1: draw(C, 0.1),
            w2: draw(W2, (6.0f64 / 80.0).sqrt()),
            b2: draw(C, 0.1),
            x: draw(batch * X, 1.0),
            gy: draw(batch * Y, 1.0),
        }
    }
}

/// The gradients of one step: `dw1, db1, dw2, db2` concatenated (summed over the batch).
pub type Gradients = Vec<f32>;

/// One implementation of the convolution step.
pub trait ConvStep {
    fn name(&self) -> &'static str;
    /// One step; the loss `sum(gy * y2)`.
    fn step(&mut self) -> f32;
    /// The gradients of the last step.
    fn gradients(&self) -> Gradients;
}

/// Buffers of one sample's step, shared by the two implementations that go sample by
/// sample.
struct Scratch {
    y1: Vec<f32>,
    y2: Vec<f32>,
    dy1: Vec<f32>,
    dw1: Vec<f32>,
    db1: Vec<f32>,
    dw2: Vec<f32>,
    db2: Vec<f32>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            y1: vec![0.0; MID],
            y2: vec![0.0; Y],
            dy1: vec![0.0; MID],
            dw1: vec![0.0; W1],
            db1: vec![0.0; C],
            dw2: vec![0.0; W2],
            db2: vec![0.0; C],
        }
    }

    fn zero_gradients(&mut self) {
        for g in [&mut self.dw1, &mut self.db1, &mut self.dw2, &mut self.db2] {
            g.fill(0.0);
        }
    }

    fn gradients(&self) -> Gradients {
        [&self.dw1, &self.db1, &self.dw2, &self.db2]
            .into_iter()
            .flatten()
            .copied()
            .collect()
    }
}

/// The loss of one sample, `sum(gy * y2)`.
fn loss(gy: &[f32], y2: &[f32]) -> f32 {
    gy.iter().zip(y2).map(|(g, y)| g * y).sum()
}

/// The convolutions in plain loops (`bench_steps::conv`).
pub struct Baseline {
    work: Workload,
    s: Scratch,
}

impl Baseline {
    pub fn new(work: &Workload) -> Self {
        Self {
            work: work.clone(),
            s: Scratch::new(),
        }
    }
}

fn geometry(shape: &Conv1dShape) -> Geometry {
    Geometry {
        c_in: shape.c_in,
        l_in: shape.l_in,
        c_out: shape.c_out,
        l_out: shape.l_out,
        kernel: shape.kernel,
        stride: shape.stride,
        padding: shape.padding,
    }
}

impl ConvStep for Baseline {
    fn name(&self) -> &'static str {
        "baseline"
    }
    fn step(&mut self) -> f32 {
        let (g1, g2) = (geometry(&CONV1), geometry(&CONV2));
        let (w, s) = (&self.work, &mut self.s);
        s.zero_gradients();
        let mut total = 0.0;
        for (x, gy) in w.x.chunks_exact(X).zip(w.gy.chunks_exact(Y)) {
            plain::forward(&g1, x, &w.w1, &w.b1, &mut s.y1);
            plain::forward(&g2, &s.y1, &w.w2, &w.b2, &mut s.y2);
            total += loss(gy, &s.y2);
            s.dy1.fill(0.0);
            plain::backward(&g2, &s.y1, &w.w2, gy, &mut s.dy1, &mut s.dw2, &mut s.db2);
            plain::backward_no_input(&g1, x, &s.dy1, &mut s.dw1, &mut s.db1);
        }
        total
    }
    fn gradients(&self) -> Gradients {
        self.s.gradients()
    }
}

/// safegrad's convolution kernels.
pub struct Safegrad {
    work: Workload,
    s: Scratch,
}

impl Safegrad {
    pub fn new(work: &Workload) -> Self {
        Self {
            work: work.clone(),
            s: Scratch::new(),
        }
    }
}

impl ConvStep for Safegrad {
    fn name(&self) -> &'static str {
        "safegrad"
    }
    fn step(&mut self) -> f32 {
        let (w, s) = (&self.work, &mut self.s);
        s.zero_gradients();
        let mut total = 0.0;
        for (x, gy) in w.x.chunks_exact(X).zip(w.gy.chunks_exact(Y)) {
            conv1d(&CONV1, x, &w.w1, &w.b1, &mut s.y1);
            conv1d(&CONV2, &s.y1, &w.w2, &w.b2, &mut s.y2);
            total += loss(gy, &s.y2);
            s.dy1.fill(0.0);
            conv1d_grad(&CONV2, &s.y1, &w.w2, gy, &mut s.dy1, &mut s.dw2, &mut s.db2);
            conv1d_grad(&CONV1, x, &w.w1, &s.dy1, &mut [], &mut s.dw1, &mut s.db1);
        }
        total
    }
    fn gradients(&self) -> Gradients {
        self.s.gradients()
    }
}

/// A step run with safegrad's AVX2 kernel instances turned off
/// ([`safegrad::tensor::kernels::allow_avx2`]): the SSE2 code of the default x86-64 target.
pub struct Sse2Only<S>(pub S);

impl<S: ConvStep> ConvStep for Sse2Only<S> {
    fn name(&self) -> &'static str {
        "safegrad-sse2"
    }
    fn step(&mut self) -> f32 {
        safegrad::tensor::kernels::allow_avx2(false);
        let loss = self.0.step();
        safegrad::tensor::kernels::allow_avx2(true);
        loss
    }
    fn gradients(&self) -> Gradients {
        self.0.gradients()
    }
}
