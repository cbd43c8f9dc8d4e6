//! The training plans side by side: for every plan a model takes, the memory one
//! fine-tuning step needs (from the model's type) and the accuracy it recovers after the
//! shift, over several seeds.

use std::path::Path;

use crate::finetune::{self, FinetuneConfig, FinetuneMode, FinetuneReport};

/// Bytes of one `f32` scalar.
const SCALAR: usize = std::mem::size_of::<f32>();

/// What one plan needs and what it reached.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRow {
    /// The plan.
    pub mode: FinetuneMode,
    /// Trainable scalars.
    pub trainable: usize,
    /// Gradient slots of one step: the trainable parameters and the activations after
    /// them. SGD's whole training state.
    pub gradient_bytes: usize,
    /// Adam's moments for the trainable parameters, on top of the gradients.
    pub adam_bytes: usize,
    /// Value slots of the tape for one step: the trainable parameters and the activations
    /// (the frozen parameters are read in place, from flash on the device).
    pub value_bytes: usize,
    /// The session's rollback copies of the trainable parameters (the last good state and
    /// the starting state).
    pub rollback_bytes: usize,
    /// The job's report for each seed, in order.
    pub reports: Vec<FinetuneReport>,
}

impl PlanRow {
    /// RAM of the session's scalars with SGD: tape values and gradients and the rollback
    /// copies (the tape's node bookkeeping and the shuffle order come on top).
    pub fn sgd_bytes(&self) -> usize {
        self.value_bytes + self.gradient_bytes + self.rollback_bytes
    }

    /// Shifted held-out accuracy after fine-tuning, per seed.
    pub fn after(&self) -> impl Iterator<Item = f64> + '_ {
        self.reports.iter().map(|r| r.shifted_accuracy_after)
    }

    /// Seeds for which fine-tuning recovered at least `share` of the accuracy drop.
    pub fn recovering(&self, share: f64) -> usize {
        self.reports
            .iter()
            .filter(|r| r.drop_recovered() >= share - 1e-9)
            .count()
    }
}

/// Fine-tunes `config`'s model with every plan of `modes` for every seed of `seeds`, with
/// `config`'s other settings. Each seed is pre-trained once; every plan then fine-tunes
/// from that checkpoint, so each report equals `finetune::run` with that mode and seed.
pub fn run(
    dir: &Path,
    config: &FinetuneConfig,
    seeds: &[u64],
    modes: &[FinetuneMode],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<PlanRow>, String> {
    if seeds.is_empty() {
        return Err("no seeds: give at least one".into());
    }
    let mut rows: Vec<PlanRow> = modes
        .iter()
        .map(|&mode| {
            let s = config.model.sizes(mode);
            PlanRow {
                mode,
                trainable: s.trainable,
                gradient_bytes: s.gradients * SCALAR,
                adam_bytes: 2 * s.trainable * SCALAR,
                value_bytes: s.values * SCALAR,
                rollback_bytes: 2 * s.trainable * SCALAR,
                reports: Vec::with_capacity(seeds.len()),
            }
        })
        .collect();
    let total = seeds.len() * modes.len();
    let mut done = 0;
    for &seed in seeds {
        let mut pretrained = config.pretrained.clone();
        for row in &mut rows {
            let report = finetune::run(
                dir,
                &FinetuneConfig {
                    seed,
                    mode: row.mode,
                    pretrained: pretrained.clone(),
                    ..config.clone()
                },
                &mut |_| {},
            )?;
            if pretrained.is_none() {
                pretrained = Some(report.pretrained_checkpoint.clone());
            }
            row.reports.push(report);
            done += 1;
            progress(done, total);
        }
    }
    Ok(rows)
}
