//! A long streamed fine-tuning run: samples arrive as `motion::wire` frames, as on the
//! device's UART, with faults injected on purpose; every good frame is one training step.
//! It checks that nothing grows (the tape records the same graph every step, the frame
//! buffer is fixed) and that the only refusals are the injected ones.

use motion::features::{imu_features, IMU_CHANNELS, IMU_FEATURES};
use motion::samples::{VALUE_BOUND, WINDOW_VALUES};
use motion::wire::{encode_frame, parse_packet, FrameDecoder, Kind, WireError};
use safegrad::checkpoint;
use safegrad::nn::{sizes, Build, Init, Plan, Sizes};
use safegrad::optim::Sgd;
use safegrad::rng::{Draw, SeedableRng, SplitMix64};
use safegrad::train::{count_correct, record_loss, step, StepConfig, StepError};
use safegrad::{Cap, Tape};

use crate::data::MOTION_CLASSES;
use crate::finetune::{self, FinetuneConfig, MotionModel};

/// What a step of the motion model records with every parameter held in the tape and
/// trained: room for any plan the soak run trains.
const SOAK_SIZES: Sizes = sizes::<MotionModel>(Plan::All);

/// The tape of the soak run: the whole model held in it (the streamed steps train the last
/// layer through the guarded step directly, without a session), sized from its type.
type SoakTape =
    Tape<f32, Cap<{ SOAK_SIZES.nodes }, { SOAK_SIZES.values_held }, { SOAK_SIZES.gradients }>>;

/// Faults injected into the stream, one kind per frame chosen for injection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// A byte of the frame flipped (the CRC or the COBS framing refuses it).
    pub corrupted: u64,
    /// A NaN among the values, with a correct CRC.
    pub nan: u64,
    /// A value beyond the bound, with a correct CRC.
    pub out_of_range: u64,
    /// A label that is not a class, with a correct CRC.
    pub bad_label: u64,
    /// The frame cut short (the rest of it lost).
    pub truncated: u64,
}

impl Faults {
    /// All injected faults.
    pub fn total(&self) -> u64 {
        self.corrupted + self.nan + self.out_of_range + self.bad_label + self.truncated
    }
}

/// What the run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct SoakReport {
    /// Training steps taken (one per good frame).
    pub steps: u64,
    /// Frames sent.
    pub frames: u64,
    /// Frames refused, by reason.
    pub refused_crc: u64,
    /// Refused: broken COBS framing.
    pub refused_cobs: u64,
    /// Refused: non-finite values.
    pub refused_nan: u64,
    /// Refused: values out of range.
    pub refused_range: u64,
    /// Refused: bad labels.
    pub refused_label: u64,
    /// Refused for another reason (must be 0).
    pub refused_other: u64,
    /// What was injected.
    pub injected: Faults,
    /// Steps refused by the guarded step (must be 0: bad input never reaches it).
    pub step_errors: u64,
    /// Nodes, values and gradients of the tape after every step: the same throughout.
    pub tape_sizes: (usize, usize, usize),
    /// Whether any step's tape sizes differed from the first's.
    pub grew: bool,
    /// Held-out accuracy (rotated) at the end.
    pub final_accuracy: f64,
}

/// Runs `steps` streamed fine-tuning steps; one frame in `fault_every` carries a fault.
pub fn run(dir: &std::path::Path, steps: u64, fault_every: u64) -> Result<SoakReport, String> {
    let config = FinetuneConfig::default();
    let base = finetune::run(
        dir,
        &FinetuneConfig {
            finetune_epochs: 0,
            ..config.clone()
        },
        &mut |_| {},
    )?;
    let (train, _) = finetune::shifted_windows(dir, &config)?;
    let eval = finetune::rows_of::<IMU_FEATURES>(&base.shifted_eval_rows)?;

    let plan = config.mode.plan();
    let mut tape = Box::new(SoakTape::new());
    let model = MotionModel::build(&mut tape, &mut Init::new(config.seed).with_plan(plan))
        .map_err(|e| e.to_string())?;
    checkpoint::load(&mut *tape, &base.pretrained_checkpoint).map_err(|e| e.to_string())?;
    let mut sgd = Sgd::new(config.finetune_lr);
    let step_config = StepConfig {
        clip_norm: config.clip_norm,
        ..StepConfig::default()
    };

    let mut decoder = FrameDecoder::<2560>::new();
    let mut frame = vec![0u8; 6000];
    let mut rng = SplitMix64::seed_from_u64(0x50a6);
    let mut report = SoakReport {
        steps: 0,
        frames: 0,
        refused_crc: 0,
        refused_cobs: 0,
        refused_nan: 0,
        refused_range: 0,
        refused_label: 0,
        refused_other: 0,
        injected: Faults::default(),
        step_errors: 0,
        tape_sizes: (0, 0, 0),
        grew: false,
        final_accuracy: 0.0,
    };
    let mut seq: u16 = 0;
    let mut values = vec![0f32; WINDOW_VALUES];
    while report.steps < steps {
        let (window, label) = &train[rng.below(train.len())];
        for (dst, v) in values.iter_mut().zip(window.iter().flatten()) {
            *dst = *v;
        }
        let mut label = *label as u8;
        let fault = fault_every > 0 && report.frames % fault_every == fault_every - 1;
        let kind = if fault { rng.below(5) } else { usize::MAX };
        match kind {
            1 => values[rng.below(WINDOW_VALUES)] = f32::NAN,
            2 => values[rng.below(WINDOW_VALUES)] = 1e6,
            3 => label = MOTION_CLASSES as u8 + rng.below(10) as u8,
            _ => {}
        }
        let n = encode_frame(Kind::Train, seq, label, &values, &mut frame)
            .ok_or("a window does not fit a frame")?;
        seq = seq.wrapping_add(1);
        report.frames += 1;
        let mut bytes = frame[..n].to_vec();
        match kind {
            0 => {
                let i = rng.below(n - 1);
                bytes[i] ^= 1 << rng.below(8);
                report.injected.corrupted += 1;
            }
            1 => report.injected.nan += 1,
            2 => report.injected.out_of_range += 1,
            3 => report.injected.bad_label += 1,
            4 => {
                // The frame's end is lost; the sender's next leading 0x00 ends it.
                bytes.truncate(n / 2);
                report.injected.truncated += 1;
            }
            _ => {}
        }
        // The sender's leading 0x00, then the frame.
        for &b in std::iter::once(&0u8).chain(bytes.iter()) {
            let Some(result) = decoder.push(b) else {
                continue;
            };
            let checked =
                result.and_then(|p| parse_packet(p, WINDOW_VALUES, MOTION_CLASSES, VALUE_BOUND));
            let message = match checked {
                Ok(m) => m,
                Err(e) => {
                    match e {
                        WireError::Crc { .. } => report.refused_crc += 1,
                        WireError::Cobs | WireError::Truncated { .. } => report.refused_cobs += 1,
                        WireError::NonFinite { .. } => report.refused_nan += 1,
                        WireError::OutOfRange { .. } => report.refused_range += 1,
                        WireError::Label { .. } => report.refused_label += 1,
                        _ => report.refused_other += 1,
                    }
                    continue;
                }
            };
            let mut window = [[0f32; motion::samples::WINDOW_LEN]; IMU_CHANNELS];
            for (dst, v) in window.iter_mut().flatten().zip(message.values()) {
                *dst = v;
            }
            let features = imu_features(&window).map_err(|e| e.to_string())?;
            let mut x = [0f32; IMU_FEATURES];
            x.copy_from_slice(features.as_slice());
            let loss =
                record_loss(&mut *tape, &model, &x, message.label).map_err(|e| e.to_string())?;
            match step(&mut tape, loss, &mut sgd, &step_config) {
                Ok(_) => report.steps += 1,
                Err(StepError::NonFinite(_)) => report.step_errors += 1,
                Err(e) => return Err(e.to_string()),
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
    }
    let correct = count_correct(&mut *tape, &model, &eval[..]).map_err(|e| e.to_string())?;
    report.final_accuracy = correct as f64 / eval.len().max(1) as f64;
    Ok(report)
}

/// A byte stream of `frames` training frames drawn from the rotated fine-tuning
/// recordings, one in `fault_every` damaged like [`run`] damages them, then an end frame;
/// each frame after a `0x00`. Returns the bytes and what was injected.
pub fn stream(
    dir: &std::path::Path,
    frames: u64,
    fault_every: u64,
) -> Result<(Vec<u8>, Faults), String> {
    let (train, _) = finetune::shifted_windows(dir, &FinetuneConfig::default())?;
    let mut rng = SplitMix64::seed_from_u64(0x50a6);
    let mut injected = Faults::default();
    let mut out = Vec::new();
    let mut frame = vec![0u8; 6000];
    let mut values = vec![0f32; WINDOW_VALUES];
    for i in 0..frames {
        let (window, label) = &train[rng.below(train.len())];
        for (dst, v) in values.iter_mut().zip(window.iter().flatten()) {
            *dst = *v;
        }
        let mut label = *label as u8;
        let kind = if fault_every > 0 && i % fault_every == fault_every - 1 {
            rng.below(5)
        } else {
            usize::MAX
        };
        match kind {
            1 => values[rng.below(WINDOW_VALUES)] = f32::NAN,
            2 => values[rng.below(WINDOW_VALUES)] = 1e6,
            3 => label = MOTION_CLASSES as u8 + rng.below(10) as u8,
            _ => {}
        }
        let n = encode_frame(Kind::Train, i as u16, label, &values, &mut frame)
            .ok_or("a window does not fit a frame")?;
        let mut bytes = frame[..n].to_vec();
        match kind {
            0 => {
                let at = rng.below(n - 1);
                bytes[at] ^= 1 << rng.below(8);
                injected.corrupted += 1;
            }
            1 => injected.nan += 1,
            2 => injected.out_of_range += 1,
            3 => injected.bad_label += 1,
            4 => {
                bytes.truncate(n / 2);
                injected.truncated += 1;
            }
            _ => {}
        }
        out.push(0);
        out.extend_from_slice(&bytes);
    }
    let n = encode_frame(Kind::End, frames as u16, 0, &[], &mut frame).ok_or("end frame")?;
    out.push(0);
    out.extend_from_slice(&frame[..n]);
    Ok((out, injected))
}
