//! `train --data digits`: an MLP on the handwritten digits.

use std::path::Path;

use safegrad::nn::{sizes, Init, Linear, Plan, Relu};
use safegrad::optim::Adam;
use safegrad::rng::{Draw, SeedableRng, SplitMix64};
use safegrad::session::{Schedule, Session};

use crate::data::{self, DIGIT_CLASSES, DIGIT_PIXELS};
use crate::model::{accuracy, audit_step, checkpoint_of, fit, new_workspace, EpochStats};

/// The model: 64 pixels (scaled to `[0, 1]`) -> 64 -> ReLU -> 10 classes.
pub type DigitsModel = (Linear<DIGIT_PIXELS, 64>, Relu, Linear<64, DIGIT_CLASSES>);

/// Trainable scalars of [`DigitsModel`], the size of the optimiser state.
pub const DIGITS_PARAMETERS: usize = sizes::<DigitsModel>(Plan::All).trainable;

/// Settings of the run.
#[derive(Clone, Debug, PartialEq)]
pub struct DigitsConfig {
    /// Seed of the split, the initialisation and the shuffling.
    pub seed: u64,
    /// Passes over the training split (Adam, batch 1).
    pub epochs: usize,
    /// Learning rate.
    pub lr: f32,
    /// Fraction of the data held out for testing.
    pub test_fraction: f64,
}

impl Default for DigitsConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            epochs: 20,
            lr: 0.001,
            test_fraction: 0.2,
        }
    }
}

/// What the run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct DigitsReport {
    /// Training examples.
    pub train_samples: usize,
    /// Held-out examples.
    pub test_samples: usize,
    /// Held-out accuracy at the end.
    pub test_accuracy: f64,
    /// Training steps.
    pub steps: usize,
    /// Trainable scalars.
    pub trainable_params: usize,
    /// Loss and held-out accuracy per epoch.
    pub curve: Vec<EpochStats>,
    /// The trained model's checkpoint.
    pub checkpoint: Vec<u8>,
    /// The domain audit of the training step's graph (it must be clean).
    pub audit: safegrad::audit::Audit<16>,
}

/// Trains on a seeded 80/20 split (the order of the 1797 images shuffled by `seed`, the
/// last `test_fraction` held out).
pub fn run(
    dir: &Path,
    config: &DigitsConfig,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<DigitsReport, String> {
    let examples = data::load_digits(dir).map_err(|e| e.to_string())?;
    let mut rows: Vec<([f32; DIGIT_PIXELS], usize)> =
        examples.into_iter().map(|e| (e.x, e.label)).collect();
    SplitMix64::seed_from_u64(config.seed).shuffle(&mut rows);
    let test_len = ((rows.len() as f64) * config.test_fraction).round() as usize;
    let test = rows.split_off(rows.len() - test_len.min(rows.len()));
    let train = rows;

    let e = |err: safegrad::Error| err.to_string();
    let mut work = new_workspace();
    let mut session =
        Session::<DigitsModel, _, _>::new(&mut *work, Init::new(config.seed)).map_err(e)?;
    let mut schedule = Schedule::new(Adam::<f32, DIGITS_PARAMETERS>::new(config.lr))
        .epochs(config.epochs)
        .seed(config.seed);
    let (curve, steps) = fit(&mut session, &train, &test, &mut schedule, on_epoch).map_err(e)?;
    let test_accuracy = accuracy(&mut session, &test).map_err(e)?;
    let first = train.first().ok_or("no training images")?;
    let audit = audit_step(&mut session, first).map_err(e)?;
    Ok(DigitsReport {
        train_samples: train.len(),
        test_samples: test.len(),
        test_accuracy,
        steps,
        trainable_params: session.tape_ref().trainable_len(),
        curve,
        checkpoint: checkpoint_of(&session).map_err(e)?,
        audit,
    })
}
