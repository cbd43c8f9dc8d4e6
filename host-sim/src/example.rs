//! `example-assets`: what the firmware's first program (`firmware/examples/quickstart.rs`)
//! embeds. A digits classifier `(Linear<64, 32>, Relu, Linear<32, 10>)` pre-trained on the
//! handwritten digits, then a change of camera: half the contrast and a brighter background
//! (`x' = 0.5 x + 0.4`, pixels in `[0, 1]`). The program fine-tunes the last layer on a
//! few shifted training images and measures the shifted held-out ones before and after.

use std::path::Path;

use safegrad::nn::{Init, Linear, Relu};
use safegrad::optim::{Adam, Sgd};
use safegrad::rng::{Draw, SeedableRng, SplitMix64};
use safegrad::session::{Schedule, Session};

use crate::data::{self, DIGIT_CLASSES, DIGIT_PIXELS};
use crate::model::{checkpoint_of, keep_checkpoint, new_workspace};

/// The example's model.
pub type ExampleModel = (Linear<DIGIT_PIXELS, 32>, Relu, Linear<32, DIGIT_CLASSES>);

/// A digits image and its class.
pub type Row = ([f32; DIGIT_PIXELS], usize);

/// The seed of the split, the initialisation and the shuffling.
pub const SEED: u64 = 7;
/// Pre-training epochs (Adam, learning rate [`PRETRAIN_LR`]).
pub const PRETRAIN_EPOCHS: usize = 10;
/// Pre-training learning rate.
pub const PRETRAIN_LR: f32 = 0.001;
/// Shifted training images per class the device fine-tunes on.
pub const PER_CLASS: usize = 5;
/// Shifted held-out images the device evaluates on.
pub const EVAL_IMAGES: usize = 200;
/// The program's fine-tuning schedule: SGD at this learning rate ...
pub const FINETUNE_LR: f32 = 0.05;
/// ... for this many epochs (the rest as `Schedule::new`'s defaults).
pub const FINETUNE_EPOCHS: usize = 30;

/// The change of camera: half the contrast, a brighter background.
pub fn new_camera(x: &[f32; DIGIT_PIXELS]) -> [f32; DIGIT_PIXELS] {
    x.map(|v| 0.5 * v + 0.4)
}

/// What [`make`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ExampleAssets {
    /// The pre-trained model's checkpoint.
    pub pretrained: Vec<u8>,
    /// The shifted images to fine-tune on.
    pub finetune: Vec<Row>,
    /// The shifted held-out images.
    pub eval: Vec<Row>,
    /// Held-out accuracy of the pre-trained model on the original images.
    pub pretrain_accuracy: f64,
    /// ... on the shifted ones, before fine-tuning.
    pub shifted_before: f64,
    /// ... after the program's fine-tuning, run here.
    pub shifted_after: f64,
    /// Steps of that fine-tuning.
    pub steps: usize,
}

/// Pre-trains the model on the digits in `dir` (the same 80/20 split as `train --data
/// digits`), shifts the images, and runs the program's fine-tuning once on the host.
pub fn make(dir: &Path) -> Result<ExampleAssets, String> {
    let e = |err: safegrad::Error| err.to_string();
    let examples = data::load_digits(dir).map_err(|e| e.to_string())?;
    let mut rows: Vec<Row> = examples.into_iter().map(|e| (e.x, e.label)).collect();
    SplitMix64::seed_from_u64(SEED).shuffle(&mut rows);
    let test = rows.split_off(rows.len() - rows.len() / 5);
    let train = rows;

    let mut work = new_workspace();
    let mut session = Session::<ExampleModel, _, _>::new(&mut *work, Init::new(SEED)).map_err(e)?;
    let mut schedule = Schedule::new(Adam::<f32, 2410>::new(PRETRAIN_LR))
        .epochs(PRETRAIN_EPOCHS)
        .seed(SEED);
    session.fit(&train[..], &mut schedule).map_err(e)?;
    let pretrain_accuracy = session.correct(&test[..]).map_err(e)? as f64 / test.len() as f64;
    let pretrained = checkpoint_of(&session).map_err(e)?;

    let shift =
        |rows: &[Row]| -> Vec<Row> { rows.iter().map(|(x, l)| (new_camera(x), *l)).collect() };
    let mut taken = [0usize; DIGIT_CLASSES];
    let finetune: Vec<Row> = shift(&train)
        .into_iter()
        .filter(|(_, l)| {
            taken[*l] += 1;
            taken[*l] <= PER_CLASS
        })
        .collect();
    let eval: Vec<Row> = shift(&test).into_iter().take(EVAL_IMAGES).collect();

    // The program's fine-tuning, on the host.
    let mut work = new_workspace();
    let mut session = Session::<ExampleModel, _, _>::from_checkpoint(
        &mut *work,
        keep_checkpoint(&pretrained),
        safegrad::nn::Plan::LastLayer,
    )
    .map_err(e)?;
    let before = session.correct(&eval[..]).map_err(e)?;
    let mut schedule = Schedule::new(Sgd::new(FINETUNE_LR)).epochs(FINETUNE_EPOCHS);
    let report = session.fit(&finetune[..], &mut schedule).map_err(e)?;
    let after = session.correct(&eval[..]).map_err(e)?;
    Ok(ExampleAssets {
        pretrained,
        finetune,
        eval: eval.clone(),
        pretrain_accuracy,
        shifted_before: before as f64 / eval.len() as f64,
        shifted_after: after as f64 / eval.len() as f64,
        steps: report.steps,
    })
}
