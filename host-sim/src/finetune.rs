//! The main job: pre-train on BasicMotions, shift the domain (the watch worn rotated), and
//! recover with on-device-style fine-tuning of a frozen model's last layer or biases. Two
//! models: the MLP over 16 hand-made features ([`MotionModel`]) and the 1-D CNN on the raw
//! `6 x 100` windows ([`MotionCnn`]).

use std::path::Path;

use motion::features::{imu_features, IMU_FEATURES};
use motion::model::finetune_seed;
pub use motion::model::{MotionCnn, MotionModel};
use motion::samples::WINDOW_VALUES;
use safegrad::nn::{sizes, Build, Footprint, Headed, Init, Linear, Module, Plan, WithHead};
use safegrad::optim::{Adam, Optimizer, Sgd};
use safegrad::rng::{Draw, SeedableRng, SplitMix64};
use safegrad::session::{GateReport, Plateau, Prepare, Schedule, Session};
use safegrad::train::{imprint_class, replay_buffer, Chain, HeadFit, Latent8, Samples};
use safegrad::{Tensor, Var};

use crate::data::{self, Example, MotionWindow, MOTION_CLASSES};
use crate::model::{
    accuracy, audit_step, checkpoint_of, fit, fit_gated, fit_head_gated, keep_checkpoint,
    new_workspace, EpochStats, HostSession, HostTape,
};
use crate::shift::Shift;

/// Trainable scalars of [`MotionModel`] when every layer trains.
pub const MOTION_PARAMETERS: usize = sizes::<MotionModel>(Plan::All).trainable;

/// Trainable scalars of [`MotionCnn`] when every layer trains.
pub const CNN_PARAMETERS: usize = sizes::<MotionCnn>(Plan::All).trainable;

/// Room of the pre-training optimiser's state: the larger model's trainable scalars.
const PRETRAIN_STATE: usize = if CNN_PARAMETERS > MOTION_PARAMETERS {
    CNN_PARAMETERS
} else {
    MOTION_PARAMETERS
};

/// The model the job trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MotionNet {
    /// [`MotionModel`]: standardised hand-made features, MLP 16-32-32-4.
    Mlp,
    /// [`MotionCnn`]: the raw `6 x 100` window, two convolutions, global average pooling,
    /// a dense head.
    Cnn,
}

impl MotionNet {
    /// Its name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
        }
    }

    /// Adam's pre-training learning rate for the model (measured over seeds 1-10: the CNN
    /// at 0.01 leaves two of them below 90% after fine-tuning, at 0.005 none).
    pub const fn pretrain_lr(self) -> f32 {
        match self {
            Self::Mlp => 0.01,
            Self::Cnn => 0.005,
        }
    }

    /// What one fine-tuning step of the model records under `mode`, from its type.
    pub const fn sizes(self, mode: FinetuneMode) -> safegrad::nn::Sizes {
        match self {
            Self::Mlp => sizes::<MotionModel>(mode.plan()),
            Self::Cnn => sizes::<MotionCnn>(mode.plan()),
        }
    }

    /// Layers with parameters, each an entry of a training plan.
    pub const fn layers(self) -> usize {
        match self {
            Self::Mlp => <MotionModel as Footprint>::LAYERS.planned(),
            Self::Cnn => <MotionCnn as Footprint>::LAYERS.planned(),
        }
    }
}

impl std::str::FromStr for MotionNet {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "mlp" => Ok(Self::Mlp),
            "cnn" => Ok(Self::Cnn),
            _ => Err(format!("unknown model `{name}`: expected mlp or cnn")),
        }
    }
}

/// What is trained during fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinetuneMode {
    /// Every layer: the baseline the sparse plans are measured against.
    All,
    /// The last `k` layers with parameters (weights and biases); the ones before are
    /// frozen. `LastLayers(1)` is [`FinetuneMode::LAST_LAYER`].
    LastLayers(usize),
    /// The last `k` layers whole and the biases of the layers before them (TinyTL).
    /// `BiasesAndLastLayers(0)` is [`FinetuneMode::BIAS_ONLY`].
    BiasesAndLastLayers(usize),
}

/// Layers with parameters of [`MotionModel`] (its `Standardize` layer never trains), as
/// many as [`MotionCnn`]'s (its statistics never train either).
pub const MOTION_LAYERS: usize = <MotionModel as Footprint>::LAYERS.planned();
const _: () = assert!(MOTION_LAYERS == <MotionCnn as Footprint>::LAYERS.planned());

impl FinetuneMode {
    /// The last layer; the body is frozen.
    pub const LAST_LAYER: Self = Self::LastLayers(1);
    /// The biases of every layer; all weights are frozen.
    pub const BIAS_ONLY: Self = Self::BiasesAndLastLayers(0);

    /// Every mode [`MotionModel`] takes, from the least trained to the most.
    pub fn all_for_motion() -> Vec<Self> {
        Self::all_for(MotionNet::Mlp)
    }

    /// Every mode `model` takes, from the least trained to the most.
    pub fn all_for(model: MotionNet) -> Vec<Self> {
        let mut modes = vec![Self::BIAS_ONLY];
        for k in 1..model.layers() {
            modes.push(Self::LastLayers(k));
            modes.push(Self::BiasesAndLastLayers(k));
        }
        modes.push(Self::All);
        modes
    }

    /// The training plan.
    pub const fn plan(self) -> Plan<'static> {
        match self {
            Self::All => Plan::All,
            Self::LastLayers(k) => Plan::LastLayers(k),
            Self::BiasesAndLastLayers(k) => Plan::BiasesAndLastLayers(k),
        }
    }

    /// Its name on the command line: `all`, `last-layer`, `last-2-layers`, `bias-only`,
    /// `biases-last-layer`, `biases-last-2-layers`, ...
    pub fn name(self) -> String {
        match self {
            Self::All => "all".into(),
            Self::LastLayers(1) => "last-layer".into(),
            Self::LastLayers(k) => format!("last-{k}-layers"),
            Self::BiasesAndLastLayers(0) => "bias-only".into(),
            Self::BiasesAndLastLayers(1) => "biases-last-layer".into(),
            Self::BiasesAndLastLayers(k) => format!("biases-last-{k}-layers"),
        }
    }
}

impl std::str::FromStr for FinetuneMode {
    type Err = String;

    /// Parses a name as [`FinetuneMode::name`] prints it, for [`MotionModel`]: a count of
    /// layers must be at least 1 (`bias-only` trains no weights) and at most the model's
    /// layers with parameters, less one (training them all is `all`).
    fn from_str(name: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "unknown mode `{name}`: expected all, last-layer, last-K-layers, bias-only, \
                 biases-last-layer or biases-last-K-layers, with K from 2 to {}",
                MOTION_LAYERS - 1
            )
        };
        let counted = |rest: &str| -> Result<usize, String> {
            let k = rest
                .strip_suffix("-layers")
                .and_then(|k| k.parse::<usize>().ok())
                .ok_or_else(expected)?;
            if !(2..MOTION_LAYERS).contains(&k) {
                return Err(format!(
                    "mode `{name}`: the model has {MOTION_LAYERS} layers with parameters, so K \
                     runs from 2 to {} (last-layer for 1, all for {MOTION_LAYERS})",
                    MOTION_LAYERS - 1
                ));
            }
            Ok(k)
        };
        match name {
            "all" => Ok(Self::All),
            "last-layer" => Ok(Self::LAST_LAYER),
            "bias-only" => Ok(Self::BIAS_ONLY),
            "biases-last-layer" => Ok(Self::BiasesAndLastLayers(1)),
            _ => {
                if let Some(rest) = name.strip_prefix("biases-last-") {
                    counted(rest).map(Self::BiasesAndLastLayers)
                } else if let Some(rest) = name.strip_prefix("last-") {
                    counted(rest).map(Self::LastLayers)
                } else {
                    Err(expected())
                }
            }
        }
    }
}

/// Settings of the job.
#[derive(Clone, Debug, PartialEq)]
pub struct FinetuneConfig {
    /// The model.
    pub model: MotionNet,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Pre-training epochs (Adam).
    pub pretrain_epochs: usize,
    /// Pre-training learning rate.
    pub pretrain_lr: f32,
    /// How the watch is worn after pre-training (see [`Shift`]).
    pub shift: Shift,
    /// Shifted recordings per class used for fine-tuning (from the training split; the
    /// evaluation uses the held-out split only).
    pub per_class: usize,
    /// Most fine-tuning epochs over those recordings (SGD, batch 1; `plateau` may end it first).
    pub finetune_epochs: usize,
    /// Fine-tuning learning rate.
    pub finetune_lr: f32,
    /// Gradient clipping during fine-tuning (off by default, as on the device).
    pub clip_norm: Option<f32>,
    /// L2-SP: the weight of the penalty on the distance from the pre-trained parameters.
    pub anchor: Option<f32>,
    /// Stop fine-tuning once its loss has converged (`finetune_epochs` still bounds it).
    pub plateau: Option<Plateau<f32>>,
    /// The validation gate: keep the fine-tuned model only if, cross-validated over the
    /// fine-tuning recordings ([`motion::model::gate_folds`] folds), it beats the
    /// pre-trained one on them; `false` to keep it ungated.
    pub gate: bool,
    /// What fine-tuning trains.
    pub mode: FinetuneMode,
    /// Latent replay: this many unshifted training recordings per class, their latents (the
    /// frozen body's output) kept in 8 bits ([`safegrad::train::Latent8`]), trained on next
    /// to the shifted ones. The last layer only; 0 for none.
    pub replay: usize,
    /// Start from this pre-trained checkpoint (the device's asset, say) instead of
    /// pre-training: then the pre-training curve is empty and the pre-training settings
    /// are not used.
    pub pretrained: Option<Vec<u8>>,
    /// Fit the last layer by full-batch gradient descent on the frozen body's outputs
    /// ([`safegrad::train::fit_linear_head`]) rather than by SGD epochs: the last-layer mode
    /// only. The SGD settings (learning rate, epochs, plateau, clipping) are then not used.
    pub head_fit: Option<HeadFit<f32>>,
    /// A class pre-training never sees: the head's output for it is set up from its
    /// fine-tuning recordings ([`safegrad::train::imprint_class`]) and fine-tuning teaches
    /// it next to the others. `None` for every class in pre-training.
    pub new_class: Option<usize>,
    /// Pre-training sees each recording this many more times, each time worn differently:
    /// on the other wrist half of the time, and turned by a random rotation (an axis drawn
    /// uniformly from the sphere, an angle from 0 to 180 degrees; [`augmented`]). 0 for
    /// none. Not used when the job starts from a pre-trained checkpoint.
    pub augment: usize,
    /// Quantise the frozen body to `int8` after pre-training (calibrated on the training
    /// split, [`crate::quantized`]): fine-tuning and every evaluation after pre-training run
    /// the float head over the `int8` body's outputs. The last layer only.
    pub quantize: bool,
}

impl FinetuneConfig {
    /// The turned copies pre-training sees: [`augment`](Self::augment), or none when the job
    /// starts from a pre-trained checkpoint.
    pub fn augment_used(&self) -> usize {
        if self.pretrained.is_some() {
            0
        } else {
            self.augment
        }
    }

    /// The defaults for `model` (its pre-training learning rate).
    pub fn for_model(model: MotionNet) -> Self {
        Self {
            model,
            pretrain_lr: model.pretrain_lr(),
            ..Self::default()
        }
    }

    /// The job that teaches `class` as new (`finetune --new-class K`): pre-trained without
    /// it, taught with the watch worn as in training, its output imprinted and the last
    /// layer fitted by full-batch gradient descent ([`motion::model::HEAD_FIT`]) behind the
    /// gate.
    pub fn teaching(model: MotionNet, class: usize) -> Self {
        Self {
            new_class: Some(class),
            shift: Shift::none(),
            head_fit: Some(motion::model::HEAD_FIT),
            ..Self::for_model(model)
        }
    }
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            model: MotionNet::Mlp,
            seed: 7,
            pretrain_epochs: 60,
            pretrain_lr: 0.01,
            shift: Shift::default(),
            per_class: 3,
            finetune_epochs: motion::model::EPOCHS,
            finetune_lr: motion::model::LEARNING_RATE,
            clip_norm: None,
            anchor: Some(motion::model::ANCHOR),
            plateau: Some(motion::model::PLATEAU),
            gate: true,
            mode: FinetuneMode::LAST_LAYER,
            replay: 0,
            pretrained: None,
            head_fit: None,
            new_class: None,
            augment: 6,
            quantize: false,
        }
    }
}

/// What the job measured.
#[derive(Clone, Debug, PartialEq)]
pub struct FinetuneReport {
    /// Held-out accuracy of the pre-trained model, watch worn as in training.
    pub pretrain_accuracy: f64,
    /// Held-out accuracy on the shifted data, before fine-tuning.
    pub shifted_accuracy_before: f64,
    /// Held-out accuracy on the shifted data, after fine-tuning.
    pub shifted_accuracy_after: f64,
    /// Held-out accuracy on the original, unshifted data after fine-tuning (what the model
    /// forgot).
    pub original_accuracy_after: f64,
    /// Fine-tuning steps (batch 1) of the fit on every fine-tuning recording (none if the
    /// gate kept the pre-trained model).
    pub finetune_steps: usize,
    /// The validation gate's verdict, if the job was gated.
    pub gate: Option<GateReport<f32>>,
    /// Latent rows replayed ([`FinetuneConfig::replay`]).
    pub replay_samples: usize,
    /// What fine-tuning taught the new class ([`FinetuneConfig::new_class`]).
    pub new_class: Option<NewClassReport>,
    /// Recordings used for fine-tuning.
    pub finetune_samples: usize,
    /// Trainable scalars during fine-tuning.
    pub trainable_params: usize,
    /// Bytes of training state during fine-tuning: the gradient slots of the tape (trainable
    /// parameters and the activations that depend on them) and the optimiser state.
    pub train_state_bytes: usize,
    /// Bytes of all parameters (the checkpoint's payload).
    pub model_bytes: usize,
    /// Pre-training curve (loss, held-out accuracy).
    pub pretrain_curve: Vec<EpochStats>,
    /// Fine-tuning curve (loss, shifted held-out accuracy).
    pub finetune_curve: Vec<EpochStats>,
    /// The pre-trained model's checkpoint.
    pub pretrained_checkpoint: Vec<u8>,
    /// The fine-tuned model's checkpoint.
    pub finetuned_checkpoint: Vec<u8>,
    /// With `--quantize int8`, the quantised model's checkpoints (format version 2: the
    /// head's float parameters and the `int8` body) before and after fine-tuning, as the
    /// device keeps them.
    pub int8_checkpoints: Option<(Vec<u8>, Vec<u8>)>,
    /// The domain audit of the fine-tuning step's graph (it must be clean).
    pub audit: safegrad::audit::Audit<16>,
    /// The domain audit of the pre-training step's graph.
    pub pretrain_audit: safegrad::audit::Audit<16>,
    /// The shifted recordings fine-tuning used, as the model's input rows (features or
    /// raw windows), in order.
    pub finetune_rows: Vec<(Vec<f32>, usize)>,
    /// The shifted held-out recordings, as the model's input rows.
    pub shifted_eval_rows: Vec<(Vec<f32>, usize)>,
    /// The held-out recordings as pre-training saw them (unshifted), as the model's input
    /// rows.
    pub original_eval_rows: Vec<(Vec<f32>, usize)>,
    /// With `--replay`, the replayed rows as a replay buffer (`safegrad::train::
    /// replay_buffer` format), as a device keeps it in flash; empty otherwise.
    pub replay_buffer: Vec<u8>,
}

/// Held-out accuracy (after the shift, if any) on the classes pre-training saw and on the
/// one it did not, before and after fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NewClassReport {
    /// The new class.
    pub class: usize,
    /// Accuracy on the other classes' held-out recordings, before fine-tuning.
    pub old_accuracy_before: f64,
    /// The same after fine-tuning.
    pub old_accuracy_after: f64,
    /// Accuracy on the new class's held-out recordings, before fine-tuning.
    pub new_accuracy_before: f64,
    /// The same after fine-tuning.
    pub new_accuracy_after: f64,
}

/// Rows of `N` values from a report's rows; an error if one has another width (the rows of
/// the other model).
pub fn rows_of<const N: usize>(
    rows: &[(Vec<f32>, usize)],
) -> Result<Vec<([f32; N], usize)>, String> {
    rows.iter()
        .map(|(x, label)| {
            let x: [f32; N] = x
                .as_slice()
                .try_into()
                .map_err(|_| format!("a row of {} values, {N} expected", x.len()))?;
            Ok((x, *label))
        })
        .collect()
}

impl FinetuneReport {
    /// The share of the accuracy the shift cost that fine-tuning won back (1 when the
    /// shift cost nothing).
    pub fn drop_recovered(&self) -> f64 {
        if self.pretrain_accuracy > self.shifted_accuracy_before {
            (self.shifted_accuracy_after - self.shifted_accuracy_before)
                / (self.pretrain_accuracy - self.shifted_accuracy_before)
        } else {
            1.0
        }
    }

    /// The model kept is the fine-tuned one: the gate committed it, or there was no gate.
    pub fn committed(&self) -> bool {
        self.gate.is_none_or(|g| g.committed)
    }

    /// The CRC-32 stored at the end of the fine-tuned checkpoint: it covers every parameter
    /// bit, so two runs with the same value ended with the same parameters.
    /// With `--quantize int8`, the quantised model's checkpoint's.
    pub fn finetuned_crc32(&self) -> u32 {
        let kept = match &self.int8_checkpoints {
            Some((_, after)) => after,
            None => &self.finetuned_checkpoint,
        };
        let n = kept.len();
        let mut b = [0u8; 4];
        if let Some(tail) = kept.get(n.saturating_sub(4)..) {
            b.copy_from_slice(tail);
        }
        u32::from_le_bytes(b)
    }
}

/// A split's shift: the shift and whether the split is the held-out one (their noise
/// streams differ).
pub type SplitShift<'a> = Option<(&'a Shift, bool)>;

/// Features of every recording, optionally shifted first.
pub fn featurize(
    examples: &[Example<MotionWindow>],
    shift: SplitShift<'_>,
) -> Result<Vec<([f32; IMU_FEATURES], usize)>, String> {
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut w = e.x;
            if let Some((shift, test)) = shift {
                shift.apply(&mut w, Shift::stream(test, i));
            }
            let f = imu_features(&w).map_err(|err| format!("recording {i}: {err}"))?;
            let mut x = [0.0f32; IMU_FEATURES];
            x.copy_from_slice(f.as_slice());
            Ok((x, e.label))
        })
        .collect()
}

/// Every recording as the CNN's input row (the channels one after the other), optionally
/// shifted first.
pub fn window_rows(
    examples: &[Example<MotionWindow>],
    shift: SplitShift<'_>,
) -> Vec<([f32; WINDOW_VALUES], usize)> {
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut w = e.x;
            if let Some((shift, test)) = shift {
                shift.apply(&mut w, Shift::stream(test, i));
            }
            let mut x = [0.0f32; WINDOW_VALUES];
            for (row, channel) in x.chunks_exact_mut(w[0].len()).zip(&w) {
                row.copy_from_slice(channel);
            }
            (x, e.label)
        })
        .collect()
}

/// Mean and population variance of each channel of raw-window rows, over every sample of
/// every recording.
pub fn channel_statistics(rows: &[([f32; WINDOW_VALUES], usize)]) -> Tensor<f32, 4, 6> {
    let len = WINDOW_VALUES / 6;
    let n = (rows.len() * len).max(1) as f64;
    let mut mean = [0.0f64; 6];
    for (x, _) in rows {
        for (m, channel) in mean.iter_mut().zip(x.chunks_exact(len)) {
            *m += channel.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        }
    }
    let mut var = [0.0f64; 6];
    for (x, _) in rows {
        for ((s, channel), &m) in var.iter_mut().zip(x.chunks_exact(len)).zip(&mean) {
            *s += channel
                .iter()
                .map(|&v| (f64::from(v) - m).powi(2))
                .sum::<f64>()
                / n;
        }
    }
    // gamma 1, beta 0, the mean, the variance.
    Tensor::new([
        [1.0; 6],
        [0.0; 6],
        mean.map(|m| m as f32),
        var.map(|v| v as f32),
    ])
}

/// A recording and its class.
pub type LabelledWindow = (MotionWindow, usize);

/// The recordings the device is streamed, as raw windows seen by the shifted watch: the
/// fine-tuning recordings (the first `per_class` of each class of the training split, as
/// [`run`] takes them) and the held-out ones.
pub fn shifted_windows(
    dir: &Path,
    config: &FinetuneConfig,
) -> Result<(Vec<LabelledWindow>, Vec<LabelledWindow>), String> {
    let shifted = |examples: Vec<Example<MotionWindow>>, test: bool| -> Vec<LabelledWindow> {
        examples
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let mut w = e.x;
                config.shift.apply(&mut w, Shift::stream(test, i));
                (w, e.label)
            })
            .collect()
    };
    let train = shifted(
        data::load_motions(dir, "train").map_err(|e| e.to_string())?,
        false,
    );
    let test = shifted(
        data::load_motions(dir, "test").map_err(|e| e.to_string())?,
        true,
    );
    Ok((first_per_class(&train, config.per_class), test))
}

/// Mean and population standard deviation of each feature.
pub fn feature_statistics(
    rows: &[([f32; IMU_FEATURES], usize)],
) -> (Tensor<f32, 1, IMU_FEATURES>, Tensor<f32, 1, IMU_FEATURES>) {
    let n = rows.len().max(1) as f64;
    let mut mean = [0.0f64; IMU_FEATURES];
    for (x, _) in rows {
        for (m, &v) in mean.iter_mut().zip(x) {
            *m += f64::from(v) / n;
        }
    }
    let mut var = [0.0f64; IMU_FEATURES];
    for (x, _) in rows {
        for ((s, &v), &m) in var.iter_mut().zip(x).zip(&mean) {
            *s += (f64::from(v) - m).powi(2) / n;
        }
    }
    (
        Tensor::new([mean.map(|m| m as f32)]),
        Tensor::new([var.map(|v| v.sqrt() as f32)]),
    )
}

/// `Ok` if the training split has `per_class` recordings of every class; otherwise the
/// refusal of `--per-class`, with how many there are.
pub fn check_per_class<X>(train: &[Example<X>], per_class: usize) -> Result<(), String> {
    if per_class == 0 {
        return Err("--per-class must be at least 1: fine-tuning needs recordings".into());
    }
    let mut counts = [0usize; MOTION_CLASSES];
    for e in train {
        if let Some(c) = counts.get_mut(e.label) {
            *c += 1;
        }
    }
    match counts.iter().enumerate().find(|(_, &n)| n < per_class) {
        Some((class, &n)) => Err(format!(
            "--per-class {per_class}: the training split has {n} recordings of class {class}"
        )),
        None => Ok(()),
    }
}

/// The first `per_class` recordings of each class in file order, class by class: the
/// `j`-th recording of every class is row `class * per_class + j`, so that folds of
/// `per_class` ([`safegrad::train::Fold`], row `i` in fold `i % per_class`) each hold one
/// recording of every class.
pub fn first_per_class<X: Clone>(rows: &[(X, usize)], per_class: usize) -> Vec<(X, usize)> {
    (0..MOTION_CLASSES)
        .flat_map(|class| {
            rows.iter()
                .filter(move |(_, label)| *label == class)
                .take(per_class)
        })
        .cloned()
        .collect()
}

/// Progress of the job, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// An epoch of pre-training ended.
    Pretrain(&'a EpochStats, usize),
    /// An epoch of fine-tuning ended.
    Finetune(&'a EpochStats, usize),
}

/// Runs the job on the data in `dir`.
pub fn run(
    dir: &Path,
    config: &FinetuneConfig,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<FinetuneReport, String> {
    let e = |err: &dyn std::fmt::Display| err.to_string();
    if config.per_class == 0 {
        return Err("--per-class must be at least 1: fine-tuning needs recordings".into());
    }
    let layers = config.model.layers();
    if let FinetuneMode::LastLayers(k) | FinetuneMode::BiasesAndLastLayers(k) = config.mode {
        if k >= layers {
            return Err(format!(
                "mode `{}`: the {} model has {layers} layers with parameters",
                config.mode.name(),
                config.model.name()
            ));
        }
    }
    if config.head_fit.is_some() && config.mode != FinetuneMode::LAST_LAYER {
        return Err(format!(
            "--fit full-batch trains the last layer only, not --mode {}",
            config.mode.name()
        ));
    }
    if config.replay > 0 && config.mode != FinetuneMode::LAST_LAYER {
        return Err(format!(
            "--replay keeps the frozen body's outputs, so it trains the last layer only, not `{}`",
            config.mode.name()
        ));
    }
    if config.quantize && config.mode != FinetuneMode::LAST_LAYER {
        return Err(format!(
            "--quantize int8 freezes the whole body in int8, so it trains the last layer only, not `{}`",
            config.mode.name()
        ));
    }
    if let Some(class) = config.new_class {
        if class >= MOTION_CLASSES {
            return Err(format!(
                "--new-class {class}: the classes are 0 to {} ({})",
                MOTION_CLASSES - 1,
                motion::model::CLASS_NAMES.join(", ")
            ));
        }
    }
    let train = data::load_motions(dir, "train").map_err(|x| e(&x))?;
    let test = data::load_motions(dir, "test").map_err(|x| e(&x))?;
    check_per_class(&train, config.per_class)?;
    // Pre-training's recordings: every class but the new one.
    let seen = |examples: &[Example<MotionWindow>]| -> Vec<Example<MotionWindow>> {
        examples
            .iter()
            .filter(|x| Some(x.label) != config.new_class)
            .cloned()
            .collect()
    };
    let (mut pretrain, pretest) = (seen(&train), seen(&test));
    pretrain.extend(augmented(&pretrain, config.augment_used(), config.seed)?);
    if config.replay > 0 {
        check_per_class(&train, config.replay).map_err(|x| x.replace("--per-class", "--replay"))?;
    }
    let (train_shift, test_shift) = (Some((&config.shift, false)), Some((&config.shift, true)));
    match config.model {
        MotionNet::Mlp => {
            let rows = Rows {
                train: featurize(&pretrain, None)?,
                test: featurize(&pretest, None)?,
                shifted_train: featurize(&train, train_shift)?,
                shifted_test: featurize(&test, test_shift)?,
            };
            let (mean, std) = feature_statistics(&rows.train);
            let quantizer: Quantizer<'_> = &crate::quantized::split_mlp;
            run_model::<MotionModel, IMU_FEATURES, 32>(
                config,
                rows,
                progress,
                &|tape, model| model.0.set_statistics(tape, &mean, &std, 1e-6),
                quantizer,
            )
        }
        MotionNet::Cnn => {
            let rows = Rows {
                train: window_rows(&pretrain, None),
                test: window_rows(&pretest, None),
                shifted_train: window_rows(&train, train_shift),
                shifted_test: window_rows(&test, test_shift),
            };
            let stats = channel_statistics(&rows.train);
            let quantizer: Quantizer<'_> = &crate::quantized::split_cnn;
            run_model::<MotionCnn, WINDOW_VALUES, 16>(
                config,
                rows,
                progress,
                &|tape, model| tape.set_parameter((model.0).1.stats, &stats),
                quantizer,
            )
        }
    }
}

/// `copies` more of every recording of `examples`, each worn as a random rigid installation
/// would wear it: half of the time on the other wrist (`mirror`, see [`Shift`]), and turned
/// about an axis drawn uniformly from the sphere by an angle drawn uniformly from 0 to 180
/// degrees (`mirror+rot:AX,AY,AZ:DEG` or `rot:AX,AY,AZ:DEG`). The draws come from `seed`.
pub fn augmented(
    examples: &[Example<MotionWindow>],
    copies: usize,
    seed: u64,
) -> Result<Vec<Example<MotionWindow>>, String> {
    let mut rng = SplitMix64::seed_from_u64(seed ^ 0xA5A5_0F0F_1234_5678);
    let mut out = Vec::with_capacity(examples.len() * copies);
    for _ in 0..copies {
        for e in examples {
            let shift: Shift = loop {
                // A direction uniform on the sphere: a Gaussian vector (Box-Muller).
                let mut normal = || {
                    let (u1, u2) = (1.0 - rng.next_f64(), rng.next_f64());
                    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                };
                let axis = [normal(), normal(), normal()];
                let degrees = 180.0 * rng.next_f64();
                let mirror = if rng.next_f64() < 0.5 { "mirror+" } else { "" };
                let spec = format!("{mirror}rot:{},{},{}:{degrees}", axis[0], axis[1], axis[2]);
                match spec.parse() {
                    Ok(shift) => break shift,
                    // An axis too short to have a direction: drawn again.
                    Err(_) if axis.iter().all(|a| a.abs() < 1e-9) => continue,
                    Err(err) => return Err(format!("augmentation: `{spec}`: {err}")),
                }
            };
            let mut x = e.x;
            shift.apply(&mut x, 0);
            out.push(Example { x, label: e.label });
        }
    }
    Ok(out)
}

/// The job's recordings as a model's input rows.
struct Rows<const IN: usize> {
    /// Pre-training's (every class but the new one).
    train: Vec<([f32; IN], usize)>,
    /// Pre-training's held-out ones.
    test: Vec<([f32; IN], usize)>,
    shifted_train: Vec<([f32; IN], usize)>,
    shifted_test: Vec<([f32; IN], usize)>,
}

/// Sets a freshly built model's frozen input statistics from the training split.
type SetStatistics<'a, M> = &'a dyn Fn(&mut HostTape, &M) -> Result<(), safegrad::TapeError>;

/// Splits a checkpoint of the model into its float prefix, body and head, for
/// `--quantize int8`.
type Quantizer<'a> = &'a dyn Fn(&[u8]) -> Result<crate::quantized::Split, String>;

/// Latent rows and their classes.
type LatentRows<const F: usize> = Vec<([f32; F], usize)>;

/// The model's `int8` body after pre-training, with the float prefix before it.
struct Int8Body {
    body: crate::quantized::QuantBody,
}

impl Int8Body {
    /// A row's latent: the prefix in float, the body in `int8`, dequantised.
    fn latent<const IN: usize, const LATENT: usize>(
        &self,
        row: &[f32; IN],
    ) -> Result<[f32; LATENT], String> {
        let mut out = [0.0f32; LATENT];
        for (o, v) in out.iter_mut().zip(self.body.forward(row)?) {
            *o = v;
        }
        Ok(out)
    }
}

/// The checkpoint of a quantised model: the head `head` (its weight and bias) and the
/// `int8` body `body` (format version 2).
fn int8_checkpoint<const LATENT: usize>(
    weight: &safegrad::Tensor<f32, LATENT, MOTION_CLASSES>,
    bias: &safegrad::Tensor<f32, 1, MOTION_CLASSES>,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let mut tape = HostTape::new();
    let head =
        Linear::<LATENT, MOTION_CLASSES>::build(&mut tape, &mut Init::new(0)).map_err(|x| e(&x))?;
    tape.set_parameter(head.weight, weight).map_err(|x| e(&x))?;
    tape.set_parameter(head.bias, bias).map_err(|x| e(&x))?;
    let mut out = vec![0u8; safegrad::checkpoint::encoded_len_with_int8(&tape, body)];
    safegrad::checkpoint::save_with_int8(&tape, body, &mut out).map_err(|x| e(&x))?;
    Ok(out)
}

/// The quantised model's checkpoint with the head of `session`.
fn int8_checkpoint_of<M, const LATENT: usize>(
    session: &mut HostSession<'_, M>,
    body: &[u8],
) -> Result<Vec<u8>, String>
where
    M: Build<f32> + WithHead<Head = Linear<LATENT, MOTION_CLASSES>>,
{
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let (tape, model) = session.parts();
    let head = model.head();
    let w = tape.value(head.weight).map_err(|x| e(&x))?;
    let b = tape.value(head.bias).map_err(|x| e(&x))?;
    int8_checkpoint(&w, &b, body)
}

/// The share of `rows` (latents) the session's head classifies right.
fn head_accuracy<M, const LATENT: usize>(
    session: &mut HostSession<'_, M>,
    rows: &[([f32; LATENT], usize)],
) -> Result<f64, String>
where
    M: Build<f32> + WithHead<Head = Linear<LATENT, MOTION_CLASSES>>,
{
    let (tape, model) = session.parts();
    let head = model.head();
    let w = tape.value(head.weight).map_err(|x| x.to_string())?;
    let b = tape.value(head.bias).map_err(|x| x.to_string())?;
    let right = rows
        .iter()
        .filter(|(x, l)| crate::quantized::head_class(x, w.as_slice(), b.as_slice()) == *l)
        .count();
    Ok(right as f64 / rows.len().max(1) as f64)
}

/// The job for the model `M` on `IN`-value rows.
fn run_model<M, const IN: usize, const LATENT: usize>(
    config: &FinetuneConfig,
    rows: Rows<IN>,
    progress: &mut dyn FnMut(Progress<'_>),
    prepare: SetStatistics<'_, M>,
    quantizer: Quantizer<'_>,
) -> Result<FinetuneReport, String>
where
    M: Build<f32>
        + Module<f32, Var<1, IN>, Output = Var<1, MOTION_CLASSES>>
        + Headed<f32, Var<1, IN>, Latent = Var<1, LATENT>>
        + WithHead<Head = Linear<LATENT, MOTION_CLASSES>>,
{
    let e = |err: &dyn std::fmt::Display| err.to_string();
    let Rows {
        train: train_rows,
        test: test_rows,
        shifted_train,
        shifted_test,
    } = rows;

    // Pre-training: every layer trained, Adam.
    let mut work = new_workspace();
    let mut session =
        Session::<M, _, _>::new(&mut *work, Init::new(config.seed)).map_err(|x| e(&x))?;
    {
        let (tape, model) = session.parts();
        prepare(tape, model).map_err(|x| e(&x))?;
    }
    let pretrain_curve = if let Some(pretrained) = &config.pretrained {
        session.load(pretrained).map_err(|x| e(&x))?;
        Vec::new()
    } else {
        let mut schedule = Schedule::new(Adam::<f32, PRETRAIN_STATE>::new(config.pretrain_lr))
            .epochs(config.pretrain_epochs)
            .seed(config.seed);
        let epochs = config.pretrain_epochs;
        fit(
            &mut session,
            &train_rows,
            &test_rows,
            &mut schedule,
            &mut |s| progress(Progress::Pretrain(s, epochs)),
        )
        .map_err(|x| e(&x))?
        .0
    };
    let pretrained_checkpoint = checkpoint_of(&session).map_err(|x| e(&x))?;
    // With `--quantize int8`, the body in int8, calibrated on pre-training's rows.
    let int8 = if config.quantize {
        let split = quantizer(&pretrained_checkpoint)?;
        let calibration: Vec<Vec<f32>> = train_rows.iter().map(|(x, _)| x.to_vec()).collect();
        let body =
            crate::quantized::QuantBody::calibrate(&split.prefix, &split.body, &calibration)?;
        Some(Int8Body { body })
    } else {
        None
    };
    let int8_latents = |rows: &[([f32; IN], usize)]| -> Result<Option<LatentRows<LATENT>>, String> {
        int8.as_ref()
            .map(|q| {
                rows.iter()
                    .map(|(x, l)| Ok((q.latent(x)?, *l)))
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()
    };
    // The accuracy of the model as it stands: through the int8 body when there is one.
    let accuracy =
        |session: &mut HostSession<'_, M>, rows: &[([f32; IN], usize)]| -> Result<f64, String> {
            match int8_latents(rows)? {
                Some(latents) => head_accuracy(session, &latents),
                None => accuracy(session, rows).map_err(|x| e(&x)),
            }
        };
    let pretrain_accuracy = accuracy(&mut session, &test_rows)?;
    let shifted_accuracy_before = accuracy(&mut session, &shifted_test)?;
    // Held-out rows of the classes pre-training saw, and of the new one.
    let (old_test, new_test): (Vec<_>, Vec<_>) = shifted_test
        .iter()
        .partition(|(_, label)| Some(*label) != config.new_class);
    let old_accuracy_before = accuracy(&mut session, &old_test)?;
    let new_accuracy_before = accuracy(&mut session, &new_test)?;
    let first = train_rows.first().ok_or("no training recordings")?;
    let pretrain_audit = audit_step(&mut session, first).map_err(|x| e(&x))?;

    // Fine-tuning: a session on the pre-trained checkpoint, the body frozen and read in
    // place, as on the device; SGD, batch 1, the L2-SP anchor, until converged, behind the
    // validation gate.
    let plan = config.mode.plan();
    let mut work = new_workspace();
    let mut session = Session::<M, _, _>::from_checkpoint(
        &mut *work,
        keep_checkpoint(&pretrained_checkpoint),
        plan,
    )
    .map_err(|x| e(&x))?;
    let int8_pretrained = match &int8 {
        Some(q) => Some(int8_checkpoint_of(&mut session, q.body.encoding())?),
        None => None,
    };
    let finetune_set = first_per_class(&shifted_train, config.per_class);
    let mut schedule = Schedule::new(Sgd::new(config.finetune_lr))
        .epochs(config.finetune_epochs)
        .seed(finetune_seed(config.seed));
    schedule.clip_norm = config.clip_norm;
    schedule.anchor = config.anchor;
    schedule.plateau = config.plateau;
    let epochs = config.finetune_epochs;
    // The latents of `rows` through the frozen body.
    let latents = |session: &mut HostSession<'_, M>,
                   rows: &[([f32; IN], usize)]|
     -> Result<Vec<([f32; LATENT], usize)>, String> {
        if let Some(latents) = int8_latents(rows)? {
            return Ok(latents);
        }
        let mut out = vec![([0.0f32; LATENT], 0usize); rows.len()];
        session.latents(rows, &mut out).map_err(|x| e(&x))?;
        Ok(out)
    };
    let replay: Vec<Latent8<LATENT>> = if config.replay > 0 {
        latents(&mut session, &first_per_class(&train_rows, config.replay))?
            .iter()
            .map(|(x, class)| Latent8::encode(x, *class).map_err(|x| e(&x)))
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    // A new class's output is set up from the rows each fit trains on, before it.
    let new_class = config.new_class;
    let mut imprint = |tape: &mut HostTape, model: &M, rows: &dyn Samples<f32, IN>| match new_class
    {
        Some(class) => Ok(imprint_class(tape, model, rows, class).map(|_| ())?),
        None => Ok(()),
    };
    let head_fit = config.head_fit;
    let head_alone = !replay.is_empty() || head_fit.is_some() || int8.is_some();
    let (finetune_curve, finetune_steps, gate) = if head_alone {
        // The head alone, on the shifted recordings' latents and the replayed ones.
        let new = latents(&mut session, &finetune_set)?;
        let rows = Chain::new(&new[..], &replay[..]);
        let mut imprint_head =
            |tape: &mut HostTape,
             head: &Linear<LATENT, MOTION_CLASSES>,
             rows: &dyn Samples<f32, LATENT>| match new_class {
                Some(class) => Ok(imprint_class(tape, head, rows, class).map(|_| ())?),
                None => Ok(()),
            };
        let folds = motion::model::gate_folds(finetune_set.len());
        let mut keep = vec![0.0f32; session.tape_ref().trainable_len()];
        match (head_fit, config.gate) {
            (Some(fit), true) => {
                let prepared = new_class.map(|_| {
                    (
                        &mut imprint_head as &mut Prepare<'_, _, _, _, LATENT>,
                        &mut keep[..],
                    )
                });
                let gate = session
                    .fit_head_full_batch_gated(&rows, &fit, folds, prepared)
                    .map_err(|x| e(&x))?;
                (Vec::new(), gate.fit.map_or(0, |f| f.steps), Some(gate))
            }
            (Some(fit), false) => {
                let (tape, model) = session.parts();
                imprint_head(tape, model.head(), &rows).map_err(|x: safegrad::Error| e(&x))?;
                let fit = session
                    .fit_head_full_batch(&rows, &fit)
                    .map_err(|x| e(&x))?;
                (Vec::new(), fit.steps, None)
            }
            (None, false) => {
                let (tape, model) = session.parts();
                imprint_head(tape, model.head(), &rows).map_err(|x: safegrad::Error| e(&x))?;
                let fit = session.fit_head(&rows, &mut schedule).map_err(|x| e(&x))?;
                (Vec::new(), fit.steps, None)
            }
            (None, true) => {
                // The SGD fit's curve is evaluated on the held-out recordings' latents.
                let eval = latents(&mut session, &shifted_test)?;
                let (curve, gate) = fit_head_gated(
                    &mut session,
                    &rows,
                    &eval,
                    &mut schedule,
                    folds,
                    new_class.map(|_| &mut imprint_head as &mut Prepare<'_, _, _, _, LATENT>),
                    &mut |s| progress(Progress::Finetune(s, epochs)),
                )
                .map_err(|x| e(&x))?;
                (curve, gate.fit.map_or(0, |f| f.steps), Some(gate))
            }
        }
    } else if config.gate {
        let folds = motion::model::gate_folds(finetune_set.len());
        let (curve, gate) = fit_gated(
            &mut session,
            &finetune_set,
            &shifted_test,
            &mut schedule,
            folds,
            new_class.map(|_| &mut imprint as &mut Prepare<'_, _, _, _, IN>),
            &mut |s| progress(Progress::Finetune(s, epochs)),
        )
        .map_err(|x| e(&x))?;
        (curve, gate.fit.map_or(0, |f| f.steps), Some(gate))
    } else {
        if let Some(class) = new_class {
            session
                .imprint_class(&finetune_set[..], class)
                .map_err(|x| e(&x))?;
        }
        let (curve, steps) = fit(
            &mut session,
            &finetune_set,
            &shifted_test,
            &mut schedule,
            &mut |s| progress(Progress::Finetune(s, epochs)),
        )
        .map_err(|x| e(&x))?;
        (curve, steps, None)
    };
    let shifted_accuracy_after = accuracy(&mut session, &shifted_test)?;
    let original_accuracy_after = accuracy(&mut session, &test_rows)?;
    let new_class = match config.new_class {
        Some(class) => Some(NewClassReport {
            class,
            old_accuracy_before,
            old_accuracy_after: accuracy(&mut session, &old_test)?,
            new_accuracy_before,
            new_accuracy_after: accuracy(&mut session, &new_test)?,
        }),
        None => None,
    };
    let first = finetune_set.first().ok_or("no fine-tuning samples")?;
    let audit = audit_step(&mut session, first).map_err(|x| e(&x))?;
    // The training state of one batch-1 step, from the model's type: the gradients of the
    // trainable parameters and of the activations after them, and the optimiser's state.
    // The full-batch head fit keeps instead the head's gradient, its starting weights, the
    // latent rows (f32) and, when the gate prepares each fit, a copy of the head to put
    // back (the replayed rows are counted apart, `replay_samples`).
    let step = sizes::<M>(plan);
    let trainable_params = step.trainable;
    let state_scalars = match head_fit {
        Some(_) => {
            let keep = if config.gate && new_class.is_some() {
                trainable_params
            } else {
                0
            };
            2 * trainable_params - MOTION_CLASSES + finetune_set.len() * LATENT + keep
        }
        None => {
            step.gradients + trainable_params * schedule.optimizer.state_scalars_per_parameter()
        }
    };
    Ok(FinetuneReport {
        pretrain_accuracy,
        shifted_accuracy_before,
        shifted_accuracy_after,
        original_accuracy_after,
        finetune_steps,
        gate,
        replay_samples: replay.len(),
        new_class,
        finetune_samples: finetune_set.len(),
        trainable_params,
        train_state_bytes: state_scalars * std::mem::size_of::<f32>(),
        model_bytes: step.parameters * std::mem::size_of::<f32>(),
        pretrain_curve,
        finetune_curve,
        pretrained_checkpoint,
        finetuned_checkpoint: checkpoint_of(&session).map_err(|x| e(&x))?,
        int8_checkpoints: match (int8_pretrained, &int8) {
            (Some(before), Some(q)) => {
                Some((before, int8_checkpoint_of(&mut session, q.body.encoding())?))
            }
            _ => None,
        },
        audit,
        pretrain_audit,
        finetune_rows: finetune_set.iter().map(|(x, l)| (x.to_vec(), *l)).collect(),
        shifted_eval_rows: shifted_test.iter().map(|(x, l)| (x.to_vec(), *l)).collect(),
        original_eval_rows: test_rows.iter().map(|(x, l)| (x.to_vec(), *l)).collect(),
        replay_buffer: if replay.is_empty() {
            Vec::new()
        } else {
            let mut buf = vec![0u8; replay_buffer::encoded_len::<LATENT>(replay.len())];
            replay_buffer::encode(&replay, MOTION_CLASSES as u16, &mut buf).map_err(|x| e(&x))?;
            buf
        },
    })
}
