//! What the subcommands share: the host's workspace, a checkpoint kept for the whole run,
//! and fitting with a curve of loss and accuracy per epoch through
//! [`Session::fit_observed`] (the same loop, rollback and guard as on the device).

use safegrad::audit::Audit;
use safegrad::nn::{sizes, Build, Module, Plan, Sizes, WithHead};
use safegrad::optim::Optimizer;
use safegrad::session::{
    EpochEnd, GateReport, Observer, Prepare, Probe, Schedule, Session, Workspace,
};
use safegrad::train::{audit_step_graph, Samples};
use safegrad::{Cap, Capacity, Error, Var};

use crate::digits::DigitsModel;
use crate::example::ExampleModel;
use crate::finetune::{MotionCnn, MotionModel};

/// What one training step of the largest of the host's models records with every layer
/// trained and held in the tape (pre-training): the motion MLP and CNN, the digits MLP and
/// the first program's model. The host's tapes and snapshots are sized from it.
pub const HOST_SIZES: Sizes = largest(&[
    sizes::<MotionModel>(Plan::All),
    sizes::<MotionCnn>(Plan::All),
    sizes::<DigitsModel>(Plan::All),
    sizes::<ExampleModel>(Plan::All),
]);

/// The sizes of `all`, each field the largest of any (`values` holds every parameter).
const fn largest(all: &[Sizes]) -> Sizes {
    let mut out = Sizes {
        parameters: 0,
        trainable: 0,
        nodes: 0,
        values: 0,
        values_held: 0,
        gradients: 0,
        activations: 0,
        input: 0,
        classes: 0,
    };
    let mut i = 0;
    while i < all.len() {
        let s = &all[i];
        macro_rules! widen {
            ($($field:ident)*) => { $(if s.$field > out.$field { out.$field = s.$field; })* };
        }
        widen!(parameters trainable nodes values values_held gradients activations input classes);
        i += 1;
    }
    out.values = out.values_held;
    out
}

/// The tape's capacities on the host, from [`HOST_SIZES`].
pub type HostCapacity = Cap<{ HOST_SIZES.nodes }, { HOST_SIZES.values }, { HOST_SIZES.gradients }>;

/// The host's workspace for a model `M`: room for any of the host's models (see
/// [`HOST_SIZES`]), a batch-1 step and 2048 training rows; it lives in a `Box`.
pub type HostWorkspace<M> = Workspace<M, f32, HostCapacity, { HOST_SIZES.trainable }, 2048>;

/// A session on the host's workspace.
pub type HostSession<'w, M> = Session<'w, M, f32, HostCapacity>;

/// The tape of a host session.
pub type HostTape = safegrad::Tape<f32, HostCapacity>;

/// A fresh workspace on the heap.
pub fn new_workspace<M>() -> Box<HostWorkspace<M>> {
    Box::default()
}

/// The bytes of a checkpoint at an address aligned for any scalar, kept for the rest of the
/// run: a session reads its frozen parameters in place, as the device does from flash.
pub fn keep_checkpoint(bytes: &[u8]) -> &'static [u8] {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    let words: &'static [u64] = Vec::leak(words);
    &bytemuck::cast_slice(words)[..bytes.len()]
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

/// Fraction of `data` the session's model classifies correctly (0 for no rows).
pub fn accuracy<M, const IN: usize, const OUT: usize>(
    session: &mut HostSession<'_, M>,
    data: &[([f32; IN], usize)],
) -> Result<f64, Error>
where
    M: Build<f32> + Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    if data.is_empty() {
        return Ok(0.0);
    }
    Ok(session.correct(data)? as f64 / data.len() as f64)
}

/// One point of a fit's curve: the epoch's loss and the accuracy on `eval` of the model as
/// it stands (a failure to evaluate is kept in `failure`, and counts as 0 correct); a
/// rollback is reported on standard error.
fn curve_point<M, Mem: Capacity, const IN: usize, const OUT: usize>(
    end: &EpochEnd<f32>,
    probe: &mut Probe<'_, f32, M, Mem>,
    eval: &[([f32; IN], usize)],
    failure: &mut Option<Error>,
) -> EpochStats
where
    M: Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    let correct = match probe.correct(eval) {
        Ok(c) => c,
        Err(e) => {
            failure.get_or_insert(e);
            0
        }
    };
    if let Some(why) = end.divergence {
        eprintln!(
            "warning: epoch {}: {why}; rolled back to the last good parameters, learning rate now {}",
            end.epoch, end.learning_rate
        );
    }
    EpochStats {
        epoch: end.epoch,
        loss: f64::from(end.mean_loss),
        accuracy: correct as f64 / Samples::len(eval).max(1) as f64,
        rejected: end.rejected,
        rolled_back: end.divergence.is_some(),
    }
}

/// Runs a fit with an observer that draws its curve: each epoch's point ([`curve_point`]
/// on `eval`), passed to `on_epoch` as it comes; `epochs` is how many it may run. A failure
/// to evaluate is the result's error.
fn with_curve<Md, R, const IN: usize, const OUT: usize>(
    epochs: usize,
    eval: &[([f32; IN], usize)],
    on_epoch: &mut dyn FnMut(&EpochStats),
    run: impl FnOnce(&mut Observer<'_, f32, Md, HostCapacity>) -> Result<R, Error>,
) -> Result<(Vec<EpochStats>, R), Error>
where
    Md: Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    let mut curve = Vec::with_capacity(epochs);
    let mut failure = None;
    let result = run(&mut |end, probe| {
        let stats = curve_point(end, probe, eval, &mut failure);
        on_epoch(&stats);
        curve.push(stats);
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok((curve, result)),
    }
}

/// Trains the session's model on `train` under `schedule`, evaluating on `eval` after every
/// epoch: the curve, and the steps taken. `on_epoch` sees each epoch's statistics as they
/// come; a rollback is reported on standard error.
pub fn fit<M, O, const IN: usize, const OUT: usize>(
    session: &mut HostSession<'_, M>,
    train: &[([f32; IN], usize)],
    eval: &[([f32; IN], usize)],
    schedule: &mut Schedule<'_, f32, O>,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(Vec<EpochStats>, usize), Error>
where
    M: Build<f32> + Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
    O: Optimizer<f32> + 'static,
{
    let (curve, report) = with_curve(schedule.epochs, eval, on_epoch, |observer| {
        session.fit_observed(train, schedule, observer)
    })?;
    Ok((curve, report.steps))
}

/// [`fit`] behind the session's validation gate ([`Session::fit_gated`] over `folds`
/// folds; [`Session::fit_gated_prepared`] with a `prepare`): the curve of the fit on every
/// row (empty if the gate kept the model as it was) and the gate's verdict.
#[allow(clippy::too_many_arguments)]
pub fn fit_gated<M, O, const IN: usize, const OUT: usize>(
    session: &mut HostSession<'_, M>,
    train: &[([f32; IN], usize)],
    eval: &[([f32; IN], usize)],
    schedule: &mut Schedule<'_, f32, O>,
    folds: usize,
    prepare: Option<&mut Prepare<'_, f32, M, HostCapacity, IN>>,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(Vec<EpochStats>, GateReport<f32>), Error>
where
    M: Build<f32> + Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
    O: Optimizer<f32> + Clone + 'static,
{
    with_curve(schedule.epochs, eval, on_epoch, |observer| match prepare {
        Some(prepare) => {
            let mut keep = vec![0.0; session.tape_ref().trainable_len()];
            session.fit_gated_prepared(train, schedule, folds, prepare, &mut keep, observer)
        }
        None => session.fit_gated_observed(train, schedule, folds, observer),
    })
}

/// [`fit_gated`] of the session's head alone on latent rows ([`Session::latents`]; the
/// new domain's, with replayed ones, say), evaluating on `eval` latents after every epoch.
#[allow(clippy::too_many_arguments)]
pub fn fit_head_gated<M, O, L, const F: usize, const OUT: usize>(
    session: &mut HostSession<'_, M>,
    train: &L,
    eval: &[([f32; F], usize)],
    schedule: &mut Schedule<'_, f32, O>,
    folds: usize,
    prepare: Option<&mut Prepare<'_, f32, M::Head, HostCapacity, F>>,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(Vec<EpochStats>, GateReport<f32>), Error>
where
    M: Build<f32> + WithHead,
    M::Head: Module<f32, Var<1, F>, Output = Var<1, OUT>>,
    O: Optimizer<f32> + Clone + 'static,
    L: Samples<f32, F> + ?Sized,
{
    with_curve(schedule.epochs, eval, on_epoch, |observer| match prepare {
        Some(prepare) => {
            let mut keep = vec![0.0; session.tape_ref().trainable_len()];
            session.fit_head_gated_prepared(train, schedule, folds, prepare, &mut keep, observer)
        }
        None => session.fit_head_gated_observed(train, schedule, folds, observer),
    })
}

/// The audit of one training step's graph (forward and loss on `row`), as the training
/// loop records it; an error-level finding is an error.
pub fn audit_step<M, Mem: Capacity, const IN: usize, const OUT: usize>(
    session: &mut Session<'_, M, f32, Mem>,
    row: &([f32; IN], usize),
) -> Result<Audit<16>, Error>
where
    M: Build<f32> + Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    let (tape, model) = session.parts();
    Ok(audit_step_graph(tape, model, &row.0, row.1)?)
}

/// The model's checkpoint.
pub fn checkpoint_of<M: Build<f32>, Mem: Capacity>(
    session: &Session<'_, M, f32, Mem>,
) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; session.checkpoint_len()];
    let n = session.write_checkpoint(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
