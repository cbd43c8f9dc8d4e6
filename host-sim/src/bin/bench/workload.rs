//! The canonical workload, shared by every implementation: the MLP's shape, its initial
//! weights and the training batches, all deterministic.

use safegrad::rng::{Draw, SeedableRng, SplitMix64};

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
/// Multiply-accumulates of one batch-1 step as the performance issue counts them:
/// forward, weight gradient and input gradient of each layer (3 x 1,664) plus one per
/// parameter for the update (1,732). Two FLOPs each: 13,448 FLOPs.
pub const MACS_PER_SAMPLE: usize = 3 * (IN * HIDDEN + HIDDEN * HIDDEN + HIDDEN * OUT)
    + (IN * HIDDEN + HIDDEN + HIDDEN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT);
/// FLOPs of a batch-1 step (the count); a batch-`B` step is counted as `B` times this.
pub const FLOPS_PER_SAMPLE: usize = 2 * MACS_PER_SAMPLE;

const WEIGHT_SEED: u64 = 0x5AFE_64AD;
const DATA_SEED: u64 = 0xDA7A_0001;

/// The parameters, in safegrad's layout: `y = x W + b`, `W` is `in x out`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub w1: [[f32; HIDDEN]; IN],
    pub b1: [f32; HIDDEN],
    pub w2: [[f32; HIDDEN]; HIDDEN],
    pub b2: [f32; HIDDEN],
    pub w3: [[f32; OUT]; HIDDEN],
    pub b3: [f32; OUT],
}

fn uniform_matrix<const R: usize, const C: usize>(
    rng: &mut SplitMix64,
    bound: f64,
) -> [[f32; C]; R] {
    let mut m = [[0.0; C]; R];
    for row in &mut m {
        for v in row.iter_mut() {
            *v = rng.uniform(-bound, bound) as f32;
        }
    }
    m
}

fn uniform_row<const C: usize>(rng: &mut SplitMix64, bound: f64) -> [f32; C] {
    let mut r = [0.0; C];
    for v in &mut r {
        *v = rng.uniform(-bound, bound) as f32;
    }
    r
}

impl Weights {
    /// Kaiming-uniform weights (`U(-b, b)`, `b = sqrt(6 / fan_in)`) and small non-zero
    /// biases (`U(-0.1, 0.1)`, so that the bias paths carry values), from SplitMix64.
    pub fn initial() -> Self {
        let mut rng = SplitMix64::seed_from_u64(WEIGHT_SEED);
        let kaiming = |fan_in: usize| (6.0 / fan_in as f64).sqrt();
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

    /// Every parameter, flat, in the order w1, b1, w2, b2, w3, b3.
    pub fn flat(&self) -> Vec<f32> {
        let mut v = Vec::new();
        v.extend(self.w1.iter().flatten());
        v.extend(&self.b1);
        v.extend(self.w2.iter().flatten());
        v.extend(&self.b2);
        v.extend(self.w3.iter().flatten());
        v.extend(&self.b3);
        v
    }
}

/// One batch of `B` samples with their classes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Batch<const B: usize> {
    pub x: [[f32; IN]; B],
    pub y: [usize; B],
}

/// The [`BATCHES`] batches of `B` samples: inputs `U(-1, 1)`, classes uniform in `0..4`,
/// from SplitMix64 (the same for every implementation).
pub fn batches<const B: usize>() -> Vec<Batch<B>> {
    let mut rng = SplitMix64::seed_from_u64(DATA_SEED ^ B as u64);
    (0..BATCHES)
        .map(|_| {
            let x = uniform_matrix(&mut rng, 1.0);
            let mut y = [0; B];
            for label in &mut y {
                *label = rng.below(OUT);
            }
            Batch { x, y }
        })
        .collect()
}
