//! The fine-tuning job: load the pre-trained model, check it, fine-tune its last layer on
//! the shifted samples with the host simulator's schedule, and evaluate before and after.

use core::fmt;

use embedded_storage::nor_flash::NorFlash;
use heapless::Vec;
use safegrad::checkpoint::{self, CheckpointError};
use safegrad::dataset::{Dataset, DatasetError, RecordError, Recorder, Samples};
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

/// Nodes of the tape: the model's parameters and one batch-1 step's graph.
pub const TAPE_NODES: usize = 16;
/// Values the tape holds: the trainable last layer's 132 parameters and one step's
/// activations (the frozen body is read in place from flash).
pub const TAPE_VALUES: usize = 254;
/// Gradients: the last layer's 132 and those of the activations after it (the logits and the
/// loss).
pub const TAPE_GRADIENTS: usize = 137;
/// The tape on the device, sized to the job exactly.
pub type DeviceTape = Tape<f32, TAPE_NODES, TAPE_VALUES, TAPE_GRADIENTS>;

/// The schedule of `host-sim finetune`'s defaults: the seed its shuffling derives from.
pub const SEED: u64 = 7;
/// Fine-tuning epochs.
pub const EPOCHS: usize = 30;
/// SGD learning rate.
pub const LEARNING_RATE: f32 = 0.05;
/// Gradient clipping by global norm.
pub const CLIP_NORM: f32 = 1.0;
/// Most training samples the job takes: its shuffling order, kept in RAM, has room for this
/// many (the rows themselves are read in place from flash).
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

/// Feature rows with their classes, in RAM (the job itself reads its rows in place from
/// flash, as [`Dataset`]s).
pub type Rows = Vec<([f32; IMU_FEATURES], usize), MAX_SAMPLES>;

/// Where [`record`] logs the samples it reads: two regions of the flash, whole erase
/// sectors, one for the training set and one for the evaluation set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleLog {
    /// Offset of the training set's region.
    pub train: u32,
    /// Offset of the evaluation set's region.
    pub eval: u32,
    /// Bytes of each region.
    pub capacity: usize,
}

/// Reads `source` to its end and records its samples into `log`'s regions of `flash`
/// (erased first), as data sets that [`Dataset::parse`] reads in place: the samples take
/// flash, not RAM, for the epochs that train on them. Returns the two sets' lengths in
/// bytes.
pub fn record<S: SampleSource, F: NorFlash>(
    source: &mut S,
    flash: &mut F,
    log: SampleLog,
) -> Result<(usize, usize), CollectError<S::Error, F::Error>> {
    let classes = CLASSES as u16;
    let mut train = Recorder::<f32, IMU_FEATURES>::new(flash, log.train, log.capacity, classes)
        .map_err(CollectError::Record)?;
    let mut eval = Recorder::<f32, IMU_FEATURES>::new(flash, log.eval, log.capacity, classes)
        .map_err(CollectError::Record)?;
    while let Some(sample) = source.next_sample().map_err(CollectError::Source)? {
        let set = match sample.purpose {
            Purpose::Train => &mut train,
            Purpose::Eval => &mut eval,
        };
        set.push(flash, &sample.features, sample.label)
            .map_err(CollectError::Record)?;
    }
    let train = train.finish(flash).map_err(CollectError::Record)?;
    let eval = eval.finish(flash).map_err(CollectError::Record)?;
    Ok((train, eval))
}

/// Why collecting samples stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum CollectError<E, F = core::convert::Infallible> {
    /// The source failed.
    Source(E),
    /// Recording a sample into the flash failed (the region is full, or the flash failed).
    Record(RecordError<F>),
}

/// Rows of an embedded data set, in RAM.
pub fn rows(set: &Dataset<'_, f32, IMU_FEATURES>) -> Result<Rows, JobError> {
    let mut out = Rows::new();
    for row in set.iter() {
        out.push(row)
            .map_err(|_| JobError::TooManySamples { found: set.len() })?;
    }
    Ok(out)
}

/// Records the model on an empty tape: the body frozen and read in place from the
/// parameters of `frozen` (a checkpoint in flash, 4-byte aligned), the last layer trainable
/// (its values come from the checkpoint [`run`] or [`evaluate_checkpoint`] loads).
/// (Not inlined on the device: the trainable layer's initial tensors are on the stack only
/// while it runs.)
#[cfg_attr(target_os = "none", inline(never))]
pub fn build(tape: &mut DeviceTape, frozen: &'static [u8]) -> Result<MotionModel, JobError> {
    tape.read_frozen_in_place(checkpoint::parameters_in_place(frozen)?)?;
    let plan = last_layer_only::<3>();
    // Zeros: a checkpoint fills the parameters before anything uses them.
    let init = Init::new(SEED).with_scheme(InitScheme::Zeros);
    Ok(MotionModel::build(tape, &mut init.with_plan(&plan))?)
}

/// Loads `checkpoint` into the model (refused unless every check passes) and counts the
/// correct predictions on `eval`.
pub fn evaluate_checkpoint<E: Samples<f32, IMU_FEATURES> + ?Sized>(
    tape: &mut DeviceTape,
    model: &MotionModel,
    checkpoint: &[u8],
    eval: &E,
) -> Result<usize, JobError> {
    checkpoint::load(tape, checkpoint)?;
    Ok(count_correct(tape, model, eval)?)
}

/// Fine-tunes the model recorded by [`build`], starting from `pretrained`, on `train` with
/// the host simulator's schedule (the same divergence guard: a refused sample is skipped, a
/// divergence rolls back to the last good epoch and halves the learning rate); evaluates on
/// `eval` before and after. `now` reads a clock
/// in ticks. The fine-tuned model stays in `tape` (`checkpoint::Encoder` writes it out).
#[cfg_attr(target_os = "none", inline(never))]
pub fn run<D, E>(
    tape: &mut DeviceTape,
    model: &MotionModel,
    pretrained: &[u8],
    train: &D,
    eval: &E,
    now: &mut dyn FnMut() -> u64,
) -> Result<JobReport, JobError>
where
    D: Samples<f32, IMU_FEATURES> + ?Sized,
    E: Samples<f32, IMU_FEATURES> + ?Sized,
{
    if train.len() > MAX_SAMPLES {
        return Err(JobError::TooManySamples { found: train.len() });
    }
    let correct_before = evaluate_checkpoint(tape, model, pretrained, eval)?;
    // The step's graph is audited once: every step records the same graph.
    let mut activations = 0;
    if let Some((x, label)) = train.row(0) {
        audit_step_graph(tape, model, &x, label)?;
        activations = tape.scalars_used() - tape.parameters().len();
    }
    let mut sgd = Sgd::new(LEARNING_RATE);
    let mut rng = SplitMix64::new(SEED ^ 0x5eed);
    let mut order: Vec<usize, MAX_SAMPLES> = Vec::new();
    for i in 0..train.len() {
        // At most MAX_SAMPLES rows (checked above).
        let _ = order.push(i);
    }
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
        parameters: tape.parameter_len(),
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
        let model = build(&mut tape, assets::PRETRAINED)?;
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
        // The tape holds the trainable layer and one step's activations, not the frozen
        // body, which is read in place: it is sized to that exactly.
        let mut tape = Box::new(DeviceTape::new());
        let model = build(&mut tape, assets::PRETRAINED).unwrap();
        let train = Dataset::parse(assets::FINETUNE_SET).unwrap();
        let (x, label) = train.get(0).unwrap();
        audit_step_graph(&mut tape, &model, &x, label).unwrap();
        assert_eq!(
            (
                tape.nodes().len(),
                tape.scalars_used(),
                tape.gradients_used()
            ),
            (TAPE_NODES, TAPE_VALUES, TAPE_GRADIENTS)
        );
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
    fn recording_the_built_in_source_gives_the_embedded_sets_in_flash() {
        use nor_sim::SimFlash;
        let train = Dataset::parse(assets::FINETUNE_SET).unwrap();
        let eval = Dataset::parse(assets::EVAL_SET).unwrap();
        let mut source = crate::samples::BuiltIn::new(train, eval);
        let mut image = Box::new([0u8; 16384]);
        let mut flash = SimFlash::new(&mut *image);
        let log = SampleLog {
            train: 0,
            eval: 8192,
            capacity: 8192,
        };
        let (t, e) = record(&mut source, &mut flash, log).unwrap();
        // The same bytes as the embedded sets: rows, classes, header and CRC.
        assert_eq!(&flash.image()[..t], assets::FINETUNE_SET);
        assert_eq!(&flash.image()[8192..8192 + e], assets::EVAL_SET);
    }

    #[test]
    fn training_on_rows_in_ram_or_in_flash_is_the_same() {
        let train = Dataset::parse(assets::FINETUNE_SET).unwrap();
        let eval = Dataset::parse(assets::EVAL_SET).unwrap();
        let in_flash = {
            let mut tape = Box::new(DeviceTape::new());
            let model = build(&mut tape, assets::PRETRAINED).unwrap();
            let mut t = 0u64;
            let mut clock = || {
                t += 1;
                t
            };
            run(
                &mut tape,
                &model,
                assets::PRETRAINED,
                &train,
                &eval,
                &mut clock,
            )
            .unwrap()
        };
        let in_ram = run_embedded(assets::PRETRAINED).unwrap();
        assert_eq!(in_flash, in_ram);
    }

    #[test]
    fn non_finite_samples_are_skipped_and_runs_of_them_roll_back() {
        let mut tape = Box::new(DeviceTape::new());
        let model = build(&mut tape, assets::PRETRAINED).unwrap();
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
        let model = build(&mut tape, assets::PRETRAINED).unwrap();
        assert!(evaluate_checkpoint(&mut tape, &model, &out, &eval).is_ok());
    }

    #[test]
    fn a_fine_tuned_checkpoint_resumes_with_its_accuracy() {
        let mut tape = Box::new(DeviceTape::new());
        let model = build(&mut tape, assets::PRETRAINED).unwrap();
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
        let model = build(&mut tape, assets::PRETRAINED).unwrap();
        let correct = evaluate_checkpoint(&mut tape, &model, &out, &eval).unwrap();
        assert_eq!(correct, r.correct_after);
    }
}
