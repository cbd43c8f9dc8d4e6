//! The fine-tuning job: load the pre-trained model, check it, fine-tune its last layer on
//! the shifted samples with the host simulator's schedule, and evaluate before and after.

use core::fmt;

use heapless::Vec;
use safegrad::checkpoint::{self, CheckpointError};
use safegrad::dataset::{Dataset, DatasetError};
use safegrad::features::IMU_FEATURES;
use safegrad::nn::{last_layer_only, Build, Init, InitScheme, Linear, LinearRelu, Standardize};
use safegrad::optim::{Optimizer, Sgd};
use safegrad::rng::SplitMix64;
use safegrad::train::{
    audit_step_graph, count_correct, guarded_epoch, record_loss, step, Divergence, DivergenceGuard,
    StepConfig, StepError,
};
use safegrad::{Tape, TapeError};

use crate::samples::{Purpose, SampleSource};

/// Classes of BasicMotions.
pub const CLASSES: usize = 4;

/// The model, as `host-sim` defines it; the checkpoint's shape signature checks that they
/// agree.
pub type MotionModel = (
    Standardize<IMU_FEATURES>,
    LinearRelu<IMU_FEATURES, 32>,
    LinearRelu<32, 32>,
    Linear<32, CLASSES>,
);

/// The tape on the device: 32 nodes, 2304 values (1764 parameters and one batch-1 step's
/// activations), 256 gradients (the last layer's 132 and the 9 activations after it).
pub type DeviceTape = Tape<f32, 32, 2304, 256>;

/// The schedule of `host-sim finetune`'s defaults: the seed its shuffling derives from.
pub const SEED: u64 = 7;
/// Fine-tuning epochs.
pub const EPOCHS: usize = 30;
/// SGD learning rate.
pub const LEARNING_RATE: f32 = 0.05;
/// Gradient clipping by global norm.
pub const CLIP_NORM: f32 = 1.0;
/// Most samples the job holds in RAM per set.
pub const MAX_SAMPLES: usize = 64;
/// Trainable scalars: the last layer's weights and biases.
pub const TRAINABLE: usize = 32 * CLASSES + CLASSES;
/// Bytes of the model's checkpoint.
pub const CHECKPOINT_BYTES: usize = 16 + 1764 * 4 + 4;

/// Why the job stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum JobError {
    /// The embedded model was refused.
    Checkpoint(CheckpointError),
    /// An embedded sample set was refused.
    Dataset(DatasetError),
    /// More samples than the job holds.
    TooManySamples {
        /// Samples offered.
        found: usize,
    },
    /// Recording the model failed.
    Tape(TapeError),
    /// A training step was refused.
    Step(StepError),
}

impl From<CheckpointError> for JobError {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(e)
    }
}
impl From<DatasetError> for JobError {
    fn from(e: DatasetError) -> Self {
        Self::Dataset(e)
    }
}
impl From<TapeError> for JobError {
    fn from(e: TapeError) -> Self {
        Self::Tape(e)
    }
}
impl From<StepError> for JobError {
    fn from(e: StepError) -> Self {
        Self::Step(e)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checkpoint(e) => write!(f, "model refused: {e}"),
            Self::Dataset(e) => write!(f, "samples refused: {e}"),
            Self::TooManySamples { found } => {
                write!(f, "{found} samples, the job holds {MAX_SAMPLES}")
            }
            Self::Tape(e) => write!(f, "{e}"),
            Self::Step(e) => write!(f, "{e}"),
        }
    }
}

/// What the job measured.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub struct JobReport {
    /// Correct held-out predictions before fine-tuning.
    pub correct_before: usize,
    /// Correct held-out predictions after.
    pub correct_after: usize,
    /// Held-out samples.
    pub eval_samples: usize,
    /// Fine-tuning samples.
    pub finetune_samples: usize,
    /// Training steps taken.
    pub steps: usize,
    /// Samples refused as non-finite.
    pub rejected: usize,
    /// Times the divergence guard rolled back to the last good parameters and halved the
    /// learning rate.
    pub rollbacks: usize,
    /// Why it last did.
    pub last_divergence: Option<Divergence<f32>>,
    /// Trainable scalars.
    pub trainable: usize,
    /// Parameters, trainable and frozen.
    pub parameters: usize,
    /// Values of one training step's graph besides the parameters: the activations, the
    /// loss and what its backward keeps.
    pub activations: usize,
    /// Scalars of optimiser state.
    pub optimiser_state: usize,
    /// Clock ticks spent in the training steps.
    pub train_ticks: u64,
    /// Mean loss of the last epoch.
    pub final_loss: f32,
    /// CRC-32 of the fine-tuned checkpoint (it covers every parameter bit).
    pub checkpoint_crc32: u32,
}

/// Feature rows with their classes, as many as the job holds.
pub type Rows = Vec<([f32; IMU_FEATURES], usize), MAX_SAMPLES>;

/// Reads `source` to its end into `train` and `eval` (emptied first), in place: the rows
/// take 8.7 KB, which a caller keeps in a static rather than on the stack.
pub fn collect<S: SampleSource>(
    source: &mut S,
    train: &mut Rows,
    eval: &mut Rows,
) -> Result<(), CollectError<S::Error>> {
    train.clear();
    eval.clear();
    let mut seen = 0;
    while let Some(sample) = source.next_sample().map_err(CollectError::Source)? {
        seen += 1;
        let rows = match sample.purpose {
            Purpose::Train => &mut *train,
            Purpose::Eval => &mut *eval,
        };
        rows.push((sample.features, sample.label))
            .map_err(|_| CollectError::TooMany { found: seen })?;
    }
    Ok(())
}

/// Why collecting samples stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum CollectError<E> {
    /// The source failed.
    Source(E),
    /// More samples of one purpose than [`MAX_SAMPLES`].
    TooMany {
        /// Samples read so far.
        found: usize,
    },
}

/// Rows of an embedded data set.
pub fn rows(set: &Dataset<'_, f32, IMU_FEATURES>) -> Result<Rows, JobError> {
    let mut out = Rows::new();
    for row in set.iter() {
        out.push(row)
            .map_err(|_| JobError::TooManySamples { found: set.len() })?;
    }
    Ok(out)
}

/// Records the model on an empty tape: the body frozen, the last layer trainable.
pub fn build(tape: &mut DeviceTape) -> Result<MotionModel, JobError> {
    let plan = last_layer_only::<3>();
    // Zeros: a checkpoint fills the parameters before anything uses them.
    let init = Init::new(SEED).with_scheme(InitScheme::Zeros);
    Ok(MotionModel::build(tape, &mut init.with_plan(&plan))?)
}

/// Loads `checkpoint` into the model (refused unless every check passes) and counts the
/// correct predictions on `eval`.
pub fn evaluate_checkpoint(
    tape: &mut DeviceTape,
    model: &MotionModel,
    checkpoint: &[u8],
    eval: &[([f32; IMU_FEATURES], usize)],
) -> Result<usize, JobError> {
    checkpoint::load(tape, checkpoint)?;
    Ok(count_correct(tape, model, eval)?)
}

/// Fine-tunes the model recorded by [`build`], starting from `pretrained`, on `train` with
/// the host simulator's schedule (the same divergence guard: a refused sample is skipped, a
/// divergence rolls back to the last good epoch and halves the learning rate); evaluates on
/// `eval` before and after. `now` reads a clock
/// in ticks. The fine-tuned model stays in `tape` (`checkpoint::Encoder` writes it out).
pub fn run(
    tape: &mut DeviceTape,
    model: &MotionModel,
    pretrained: &[u8],
    train: &[([f32; IMU_FEATURES], usize)],
    eval: &[([f32; IMU_FEATURES], usize)],
    now: &mut dyn FnMut() -> u64,
) -> Result<JobReport, JobError> {
    let correct_before = evaluate_checkpoint(tape, model, pretrained, eval)?;
    // The step's graph is audited once: every step records the same graph.
    let mut activations = 0;
    if let Some((x, label)) = train.first() {
        audit_step_graph(tape, model, x, *label)?;
        activations = tape.scalars_used() - tape.parameters().len();
    }
    let mut sgd = Sgd::new(LEARNING_RATE);
    let mut rng = SplitMix64::new(SEED ^ 0x5eed);
    let mut order: Vec<usize, MAX_SAMPLES> = (0..train.len()).collect();
    let config = StepConfig {
        clip_norm: Some(CLIP_NORM),
        ..StepConfig::default()
    };
    let mut final_loss = 0.0;
    let (mut steps, mut rejected, mut rollbacks) = (0, 0, 0);
    let mut last_divergence = None;
    let mut guard = DivergenceGuard::default();
    // The last good trainable parameters, to roll back to: the pre-trained model's, then
    // those at the end of each good epoch (the frozen ones never change).
    let mut last_good = [0.0f32; TRAINABLE];
    tape.snapshot_trainable(&mut last_good)?;
    let start = now();
    for _ in 0..EPOCHS {
        let out = guarded_epoch(
            tape, model, &mut sgd, train, &mut order, &mut rng, &config, &mut guard,
        )?;
        final_loss = out.mean_loss;
        steps += out.steps;
        rejected += out.rejected;
        if out.divergence.is_some() {
            last_divergence = out.divergence;
            tape.restore_trainable(&last_good)?;
            sgd.scale_learning_rate(0.5);
            guard.reset();
            rollbacks += 1;
        } else {
            tape.snapshot_trainable(&mut last_good)?;
        }
    }
    let train_ticks = now().wrapping_sub(start);
    let correct_after = count_correct(tape, model, eval)?;
    let crc = checkpoint::checksum(tape);
    Ok(JobReport {
        correct_before,
        correct_after,
        eval_samples: eval.len(),
        finetune_samples: train.len(),
        steps,
        rejected,
        rollbacks,
        last_divergence,
        trainable: tape.trainable_len(),
        parameters: tape.parameters().len(),
        activations,
        optimiser_state: tape.trainable_len() * sgd.state_scalars_per_parameter(),
        train_ticks,
        final_loss,
        checkpoint_crc32: crc,
    })
}

/// What a streamed soak run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub struct SoakReport {
    /// Training steps taken: one per good training sample.
    pub steps: u32,
    /// Steps refused by the guarded step.
    pub step_errors: u32,
    /// Nodes, values and gradients of the tape after the first step.
    pub tape_sizes: (usize, usize, usize),
    /// Whether a later step's sizes differed.
    pub grew: bool,
}

/// Streamed, online fine-tuning: one training step per training sample as it arrives from
/// `source`, until the source ends, with the model loaded from `pretrained`. Evaluation
/// samples are skipped. It checks that the tape records the same graph every step.
pub fn soak<S: SampleSource>(
    tape: &mut DeviceTape,
    model: &MotionModel,
    pretrained: &[u8],
    source: &mut S,
) -> Result<SoakReport, CollectError<S::Error>> {
    let _ = checkpoint::load(tape, pretrained);
    let mut sgd = Sgd::new(LEARNING_RATE);
    let config = StepConfig {
        clip_norm: Some(CLIP_NORM),
        ..StepConfig::default()
    };
    let mut report = SoakReport {
        steps: 0,
        step_errors: 0,
        tape_sizes: (0, 0, 0),
        grew: false,
    };
    while let Some(sample) = source.next_sample().map_err(CollectError::Source)? {
        if sample.purpose != Purpose::Train {
            continue;
        }
        let recorded = record_loss(tape, model, &sample.features, sample.label);
        let ok = match recorded {
            Ok(loss) => step(tape, loss, &mut sgd, &config).is_ok(),
            Err(_) => false,
        };
        if ok {
            report.steps += 1;
        } else {
            report.step_errors += 1;
        }
        let sizes = (
            tape.nodes().len(),
            tape.scalars_used(),
            tape.gradients_used(),
        );
        if report.tape_sizes == (0, 0, 0) {
            report.tape_sizes = sizes;
        } else if sizes != report.tape_sizes {
            report.grew = true;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets;

    fn run_embedded(pretrained: &[u8]) -> Result<JobReport, JobError> {
        let mut tape = Box::new(DeviceTape::new());
        let model = build(&mut tape)?;
        let train = rows(&Dataset::parse(assets::FINETUNE_SET)?)?;
        let eval = rows(&Dataset::parse(assets::EVAL_SET)?)?;
        let mut t = 0u64;
        run(&mut tape, &model, pretrained, &train, &eval, &mut || {
            t += 1;
            t
        })
    }

    /// The host's figures for the same job, from `assets/expected.json`.
    fn expected(key: &str) -> String {
        let text = include_str!("../assets/expected.json");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{key}\"")))
            .unwrap_or_else(|| panic!("{key} in expected.json"));
        let value = line.split(':').nth(1).unwrap_or("").trim();
        value.trim_end_matches(',').trim_matches('"').to_string()
    }

    #[test]
    fn the_job_on_the_host_matches_host_sim_bit_for_bit() {
        let r = run_embedded(assets::PRETRAINED).unwrap();
        assert_eq!(
            format!("{:#010x}", r.checkpoint_crc32),
            expected("finetuned_checkpoint_crc32")
        );
        assert_eq!(r.steps.to_string(), expected("finetune_steps"));
        let after: f64 = expected("shifted_accuracy_after").parse().unwrap();
        assert_eq!(r.correct_after as f64 / r.eval_samples as f64, after);
        let before: f64 = expected("shifted_accuracy_before").parse().unwrap();
        assert_eq!(r.correct_before as f64 / r.eval_samples as f64, before);
        assert_eq!(r.trainable, 132);
    }

    #[test]
    fn a_damaged_model_is_refused_before_anything_runs() {
        let mut bad = assets::PRETRAINED.to_vec();
        bad[100] ^= 0x10;
        let err = run_embedded(&bad).unwrap_err();
        assert!(
            matches!(err, JobError::Checkpoint(CheckpointError::Crc { .. })),
            "{err}"
        );
    }

    #[test]
    fn collecting_from_the_built_in_source_gives_the_embedded_rows() {
        let train = Dataset::parse(assets::FINETUNE_SET).unwrap();
        let eval = Dataset::parse(assets::EVAL_SET).unwrap();
        let mut source = crate::samples::BuiltIn::new(train, eval);
        let (mut t, mut e) = (Rows::new(), Rows::new());
        e.push(([0.0; IMU_FEATURES], 9)).unwrap(); // emptied first
        collect(&mut source, &mut t, &mut e).unwrap();
        assert_eq!(t, rows(&train).unwrap());
        assert_eq!(e, rows(&eval).unwrap());
    }

    #[test]
    fn non_finite_samples_are_skipped_and_runs_of_them_roll_back() {
        let mut tape = Box::new(DeviceTape::new());
        let model = build(&mut tape).unwrap();
        let mut train = rows(&Dataset::parse(assets::FINETUNE_SET).unwrap()).unwrap();
        let eval = rows(&Dataset::parse(assets::EVAL_SET).unwrap()).unwrap();
        // Twelve good rows and twelve poisoned ones: each epoch meets runs of three.
        let good = train.clone();
        for (x, label) in good.iter() {
            let mut bad = *x;
            bad[3] = f32::NAN;
            train.push((bad, *label)).unwrap();
        }
        let r = run(
            &mut tape,
            &model,
            assets::PRETRAINED,
            &train,
            &eval,
            &mut || 0,
        )
        .unwrap();
        let mut out = [0u8; CHECKPOINT_BYTES];
        checkpoint::save(&*tape, &mut out).unwrap();
        assert_eq!(
            out[CHECKPOINT_BYTES - 4..],
            r.checkpoint_crc32.to_le_bytes()
        );
        assert!(r.rejected > 0, "{r:?}");
        assert!(r.rollbacks > 0 && r.last_divergence.is_some(), "{r:?}");
        assert!(matches!(
            r.last_divergence,
            Some(Divergence::Rejections { count: 3 })
        ));
        // Whatever was rolled back, the model in the checkpoint is finite and loads.
        let mut tape = Box::new(DeviceTape::new());
        let model = build(&mut tape).unwrap();
        assert!(evaluate_checkpoint(&mut tape, &model, &out, &eval).is_ok());
    }

    #[test]
    fn a_fine_tuned_checkpoint_resumes_with_its_accuracy() {
        let mut tape = Box::new(DeviceTape::new());
        let model = build(&mut tape).unwrap();
        let train = rows(&Dataset::parse(assets::FINETUNE_SET).unwrap()).unwrap();
        let eval = rows(&Dataset::parse(assets::EVAL_SET).unwrap()).unwrap();
        let r = run(
            &mut tape,
            &model,
            assets::PRETRAINED,
            &train,
            &eval,
            &mut || 0,
        )
        .unwrap();
        let mut out = [0u8; CHECKPOINT_BYTES];
        checkpoint::save(&*tape, &mut out).unwrap();
        assert_eq!(
            out[CHECKPOINT_BYTES - 4..],
            r.checkpoint_crc32.to_le_bytes()
        );
        // A new boot: a fresh tape, the checkpoint from flash.
        let mut tape = Box::new(DeviceTape::new());
        let model = build(&mut tape).unwrap();
        let correct = evaluate_checkpoint(&mut tape, &model, &out, &eval).unwrap();
        assert_eq!(correct, r.correct_after);
    }
}
