//! What the subcommands share: the tape type, evaluation, a training loop with curves.

use safegrad::checkpoint;
use safegrad::nn::Module;
use safegrad::optim::Optimizer;
use safegrad::rng::{SeedableRng, SplitMix64};
use safegrad::train::{
    audit_step_graph, count_correct, guarded_epoch, DivergenceGuard, StepConfig,
};
use safegrad::{Tape, TapeError, Var};

/// The tape the host uses: room for a model of a few thousand parameters and a batch-1
/// step. 16 + 2 * 32 KiB on the stack; it lives in a `Box`.
pub type HostTape = Tape<f32, 64, 8192>;

/// A fresh tape on the heap.
pub fn new_tape() -> Box<HostTape> {
    Box::new(HostTape::new())
}

/// Fraction of `(x, label)` pairs the model classifies correctly.
pub fn accuracy<M, const IN: usize, const OUT: usize>(
    tape: &mut HostTape,
    model: &M,
    data: &[([f32; IN], usize)],
) -> Result<f64, TapeError>
where
    M: Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    if data.is_empty() {
        return Ok(0.0);
    }
    Ok(count_correct(tape, model, data)? as f64 / data.len() as f64)
}

/// One point of a training curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    /// Accuracy on the evaluation set after the epoch.
    pub accuracy: f64,
    /// Samples refused as non-finite during the epoch.
    pub rejected: usize,
    /// The divergence guard stopped the epoch and rolled back.
    pub rolled_back: bool,
}

/// The tape's parameters as a checkpoint (the last good state to roll back to).
pub fn save_parameters(tape: &HostTape) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; checkpoint::encoded_len(tape)];
    checkpoint::save(tape, &mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// A schedule: epochs over the training set, in an order shuffled per epoch by `seed`,
/// one sample per step (batch 1, as on the device), through `safegrad::train::guarded_epoch`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Passes over the data.
    pub epochs: usize,
    /// Seed of the shuffling.
    pub seed: u64,
    /// Gradient clipping by global norm, if any.
    pub clip_norm: Option<f32>,
}

/// Trains `model` on `train` with `optimizer`, evaluating on `eval` after every epoch;
/// `on_epoch` sees each epoch's statistics as they come. The graph of a step is audited once,
/// before the first step (every step records the same graph): with an error-level finding,
/// nothing is trained. A [`DivergenceGuard`] watches the steps: a sample refused as
/// non-finite is skipped; on divergence the parameters roll back to the end of the last
/// good epoch and the learning rate is halved.
#[allow(clippy::too_many_arguments)]
pub fn fit<M, O, const IN: usize, const OUT: usize>(
    tape: &mut HostTape,
    model: &M,
    optimizer: &mut O,
    train: &[([f32; IN], usize)],
    eval: &[([f32; IN], usize)],
    schedule: &Schedule,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(Vec<EpochStats>, usize), String>
where
    M: Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
    O: Optimizer<f32>,
{
    let mut rng = SplitMix64::seed_from_u64(schedule.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let config = StepConfig {
        clip_norm: schedule.clip_norm,
        ..StepConfig::default()
    };
    if let Some((x, label)) = train.first() {
        audit_step_graph(tape, model, x, *label).map_err(|e| e.to_string())?;
    }
    let mut curve = Vec::with_capacity(schedule.epochs);
    let mut guard = DivergenceGuard::default();
    let mut snapshot = save_parameters(tape)?;
    let mut steps = 0;
    for epoch in 1..=schedule.epochs {
        let out = guarded_epoch(
            tape, model, optimizer, train, &mut order, &mut rng, &config, &mut guard,
        )
        .map_err(|e| e.to_string())?;
        steps += out.steps;
        let divergence = match out.divergence {
            Some(d) => {
                // Roll back to the last good parameters and halve the learning rate.
                checkpoint::load(tape, &snapshot).map_err(|e| e.to_string())?;
                optimizer.scale_learning_rate(0.5);
                guard.reset();
                Some(d.to_string())
            }
            None => None,
        };
        if divergence.is_none() {
            snapshot = save_parameters(tape)?;
        }
        let stats = EpochStats {
            epoch,
            loss: f64::from(out.mean_loss),
            accuracy: accuracy(tape, model, eval).map_err(|e| e.to_string())?,
            rejected: out.rejected,
            rolled_back: divergence.is_some(),
        };
        if let Some(why) = &divergence {
            eprintln!(
                "warning: epoch {epoch}: {why}; rolled back to the last good parameters, learning rate now {}",
                optimizer.learning_rate()
            );
        }
        on_epoch(&stats);
        curve.push(stats);
    }
    Ok((curve, steps))
}

/// The audit of one training step's graph (forward and loss on `row`), as the training
/// loop records it; an error-level finding is an error.
pub fn audit_step<M, const IN: usize, const OUT: usize>(
    tape: &mut HostTape,
    model: &M,
    row: &([f32; IN], usize),
) -> Result<safegrad::domain::Audit<16>, String>
where
    M: Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    audit_step_graph(tape, model, &row.0, row.1).map_err(|e| e.to_string())
}
