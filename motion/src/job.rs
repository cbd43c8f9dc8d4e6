//! The fine-tuning job: a [`Session`] on the pre-trained model, fine-tuned on the shifted
//! samples with [`finetune_schedule`], evaluated before and after. The firmware runs it on
//! the device; its unit tests run it on the host, bit for bit against `host-sim finetune`.

use embedded_storage::nor_flash::NorFlash;
use safegrad::dataset::{RecordError, Recorder};
use safegrad::nn::Linear;
use safegrad::nn::{Build, Headed, Module, Sizes, WithHead};
use safegrad::quant::{Int8Body, Int8Error, Int8Latents};
use safegrad::session::{FitReport, GateReport, Prepare, Session};
use safegrad::train::StepError;
use safegrad::train::{
    imprint_class, record_loss, step, Chain, Divergence, Samples, Score, StepConfig,
};
use safegrad::{Capacity, Error, Tape, Var};

use crate::features::IMU_FEATURES;
use crate::model::{
    finetune_schedule, gate_folds, FinetuneCapacity, MotionModel, CLASSES, CLIP_NORM,
    FINETUNE_SIZES, HEAD_FIT, SEED,
};
use crate::samples::{Purpose, SampleSource};

/// A fine-tuning session of the motion model (on the device's tape unless told otherwise).
pub type MotionSession<'w, Mem = FinetuneCapacity> = Session<'w, MotionModel, f32, Mem>;

/// What the job measured.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct JobReport {
    /// Correct held-out predictions before fine-tuning.
    pub correct_before: usize,
    /// Correct held-out predictions after.
    pub correct_after: usize,
    /// Held-out samples.
    pub eval_samples: usize,
    /// Fine-tuning samples.
    pub finetune_samples: usize,
    /// The validation gate's score of the pre-trained model on the fine-tuning samples.
    pub validation_before: Score<f32>,
    /// The gate's cross-validated score of fine-tuning on them.
    pub validation_after: Score<f32>,
    /// The gate kept the fine-tuned model; otherwise the model is the pre-trained one.
    pub committed: bool,
    /// Epochs of the fit on every fine-tuning sample (0 if the gate kept the pre-trained
    /// model).
    pub epochs: usize,
    /// Training steps of that fit.
    pub steps: usize,
    /// Training steps of every fit, the gate's folds' included: what `train_ticks` paid for.
    pub all_steps: usize,
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
    /// Scalars of optimiser state (SGD keeps none).
    pub optimiser_state: usize,
    /// Clock ticks spent fine-tuning.
    pub train_ticks: u64,
    /// Mean loss of the last epoch.
    pub final_loss: f32,
    /// CRC-32 of the fine-tuned checkpoint (it covers every parameter bit).
    pub checkpoint_crc32: u32,
}

/// Fine-tunes the session's model (as loaded) on `train` with the host simulator's
/// schedule, and evaluates it on `eval` before and after. `now` reads a clock in ticks. The
/// fine-tuned model stays in the session ([`Session::save`] writes it to flash). (Not
/// inlined on the device: fine-tuning's locals are on the stack only while it runs.)
#[cfg_attr(target_os = "none", inline(never))]
pub fn run<Mem, D, E>(
    session: &mut MotionSession<'_, Mem>,
    train: &D,
    eval: &E,
    now: &mut dyn FnMut() -> u64,
) -> Result<JobReport, Error>
where
    Mem: Capacity,
    D: Samples<f32, IMU_FEATURES> + ?Sized,
    E: Samples<f32, IMU_FEATURES> + ?Sized,
{
    run_model(session, FINETUNE_SIZES, train, eval, now)
}

/// [`run`] for any classifier `M` of `IN`-value rows over the [`CLASSES`] (the CNN on raw
/// windows, say); `sizes` is what one of its fine-tuning steps records (its type gives it,
/// `safegrad::nn::sizes`), for the report.
#[cfg_attr(target_os = "none", inline(never))]
pub fn run_model<M, Mem, D, E, const IN: usize>(
    session: &mut Session<'_, M, f32, Mem>,
    sizes: Sizes,
    train: &D,
    eval: &E,
    now: &mut dyn FnMut() -> u64,
) -> Result<JobReport, Error>
where
    M: Build<f32> + Module<f32, Var<1, IN>, Output = Var<1, CLASSES>>,
    Mem: Capacity,
    D: Samples<f32, IN> + ?Sized,
    E: Samples<f32, IN> + ?Sized,
{
    let correct_before = session.correct(eval)?;
    let mut schedule = finetune_schedule(SEED);
    let start = now();
    let gate = session.fit_gated(train, &mut schedule, gate_folds(train.len()))?;
    let train_ticks = now().wrapping_sub(start);
    let correct_after = session.correct(eval)?;
    Ok(JobReport {
        correct_before,
        correct_after,
        eval_samples: eval.len(),
        finetune_samples: train.len(),
        optimiser_state: 0,
        train_ticks,
        checkpoint_crc32: session.checkpoint_crc32(),
        ..gated(&gate, sizes)
    })
}

/// The report's fields that the gate and the model's sizes give; the others zero.
fn gated(gate: &GateReport<f32>, sizes: Sizes) -> JobReport {
    let fit = gate.fit.unwrap_or(FitReport {
        epochs: 0,
        steps: 0,
        rejected: 0,
        rollbacks: 0,
        last_divergence: None,
        final_loss: 0.0,
        validation: None,
        restored: false,
        converged: false,
    });
    JobReport {
        correct_before: 0,
        correct_after: 0,
        eval_samples: 0,
        finetune_samples: 0,
        validation_before: gate.before,
        validation_after: gate.after,
        committed: gate.committed,
        epochs: fit.epochs,
        steps: fit.steps,
        all_steps: gate.steps,
        rejected: fit.rejected,
        rollbacks: fit.rollbacks,
        last_divergence: fit.last_divergence,
        trainable: sizes.trainable,
        parameters: sizes.parameters,
        activations: sizes.activations,
        optimiser_state: 0,
        train_ticks: 0,
        final_loss: fit.final_loss,
        checkpoint_crc32: 0,
    }
}

/// What [`run_new_class`] measured: the job's report, and the held-out accuracy on the
/// classes the model knew and on the new one, before and after.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NewClassReport {
    /// The job's report (its accuracies over every held-out sample). Its steps are the
    /// full-batch fit's iterations, and it keeps no optimiser state.
    pub job: JobReport,
    /// The class taught.
    pub class: usize,
    /// Held-out samples of the other classes.
    pub old_samples: usize,
    /// Of those, correct before and after.
    pub old_correct_before: usize,
    /// Correct after.
    pub old_correct_after: usize,
    /// Held-out samples of the new class.
    pub new_samples: usize,
    /// Of those, correct before (none, unless the model guesses the class it never saw).
    pub new_correct_before: usize,
    /// Correct after.
    pub new_correct_after: usize,
    /// Bytes of RAM the fit uses besides the session's: the training rows' latents and
    /// the head's parameters while the gate's folds fit.
    pub fit_bytes: usize,
}

/// The buffers of [`run_new_class`].
pub struct NewClassBuffers<'b, const F: usize> {
    /// Room for the training rows' latents (one per row).
    pub latents: &'b mut [([f32; F], usize)],
    /// Room for the head's parameters while the gate's folds are fitted: `(F + 1) x`
    /// [`CLASSES`] scalars at least.
    pub keep: &'b mut [f32],
}

/// Teaches the session's model `class`, which it was pre-trained without, as
/// `host-sim finetune --new-class` does: the training rows go through the frozen body once,
/// into `buffers.latents`; behind the validation gate, each fit sets the class's output up
/// from its rows ([`imprint_class`]) and then fits the last
/// layer on them by full-batch gradient descent ([`HEAD_FIT`]). `train` holds the
/// recordings of every class, the new one's among them; `eval` is scored before and after,
/// over every class and split into the old classes and the new one.
#[cfg_attr(target_os = "none", inline(never))]
pub fn run_new_class<M, Mem, D, E, const IN: usize, const F: usize>(
    session: &mut Session<'_, M, f32, Mem>,
    sizes: Sizes,
    class: usize,
    buffers: NewClassBuffers<'_, F>,
    train: &D,
    eval: &E,
    now: &mut dyn FnMut() -> u64,
) -> Result<NewClassReport, Error>
where
    M: Build<f32>
        + Headed<f32, Var<1, IN>, Latent = Var<1, F>, Output = Var<1, CLASSES>>
        + WithHead<Head = Linear<F, CLASSES>>,
    Mem: Capacity,
    D: Samples<f32, IN> + ?Sized,
    E: Samples<f32, IN> + ?Sized,
{
    let NewClassBuffers { latents, keep } = buffers;
    let keep_len = (F + 1) * CLASSES;
    let old = OfClass {
        data: eval,
        class,
        of: false,
    };
    let new = OfClass { of: true, ..old };
    let (old_correct_before, new_correct_before) = (session.correct(&old)?, session.correct(&new)?);
    let start = now();
    // More rows than `latents` holds is refused here (`SampleCapacity`).
    session.latents(train, latents)?;
    let rows = latents.get(..train.len()).unwrap_or(&[]);
    let mut imprint = |tape: &mut Tape<f32, Mem>,
                       head: &Linear<F, CLASSES>,
                       rows: &dyn Samples<f32, F>|
     -> Result<(), Error> {
        imprint_class(tape, head, rows, class)?;
        Ok(())
    };
    let gate = session.fit_head_full_batch_gated(
        rows,
        &HEAD_FIT,
        gate_folds(train.len()),
        Some((&mut imprint as &mut Prepare<'_, f32, _, Mem, F>, keep)),
    )?;
    let train_ticks = now().wrapping_sub(start);
    let (old_correct_after, new_correct_after) = (session.correct(&old)?, session.correct(&new)?);
    let (old_samples, new_samples) = (old.count(session)?, new.count(session)?);
    Ok(NewClassReport {
        job: JobReport {
            correct_before: old_correct_before + new_correct_before,
            correct_after: old_correct_after + new_correct_after,
            eval_samples: eval.len(),
            finetune_samples: train.len(),
            train_ticks,
            checkpoint_crc32: session.checkpoint_crc32(),
            ..gated(&gate, sizes)
        },
        class,
        old_samples,
        old_correct_before,
        old_correct_after,
        new_samples,
        new_correct_before,
        new_correct_after,
        fit_bytes: train.len() * core::mem::size_of::<([f32; F], usize)>()
            + keep_len * core::mem::size_of::<f32>(),
    })
}

/// What [`run_replay`] measured: the job's report, and the held-out accuracy on the
/// original domain, the one pre-training saw, before and after.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplayReport {
    /// The job's report (its accuracies on the new domain's held-out samples).
    pub job: JobReport,
    /// Replayed rows trained on beside the new domain's.
    pub replayed: usize,
    /// Held-out samples of the original domain.
    pub original_samples: usize,
    /// Of those, correct before.
    pub original_correct_before: usize,
    /// Correct after.
    pub original_correct_after: usize,
}

/// Fine-tunes the session's head on `train`'s latents and `replay`'s rows, stored latents
/// of the domain pre-training saw (a [`ReplayBuffer`](safegrad::train::ReplayBuffer) read
/// in place, say), as `host-sim finetune --replay N` does: the training rows go through the
/// frozen body once, into `latents`; then [`run_model`]'s schedule and gate over the rows
/// of both, one after the other (`train`'s first), the gate's folds
/// ([`gate_folds`] of `train`'s length) holding out replayed rows as well. `eval` (the new
/// domain) and `original` (the original one) are scored before and after.
#[cfg_attr(target_os = "none", inline(never))]
#[allow(clippy::too_many_arguments)]
pub fn run_replay<M, Mem, R, D, E, O, const IN: usize, const F: usize>(
    session: &mut Session<'_, M, f32, Mem>,
    sizes: Sizes,
    replay: &R,
    latents: &mut [([f32; F], usize)],
    train: &D,
    eval: &E,
    original: &O,
    now: &mut dyn FnMut() -> u64,
) -> Result<ReplayReport, Error>
where
    M: Build<f32>
        + Headed<f32, Var<1, IN>, Latent = Var<1, F>, Output = Var<1, CLASSES>>
        + WithHead<Head = Linear<F, CLASSES>>,
    Mem: Capacity,
    R: Samples<f32, F> + ?Sized,
    D: Samples<f32, IN> + ?Sized,
    E: Samples<f32, IN> + ?Sized,
    O: Samples<f32, IN> + ?Sized,
{
    let correct_before = session.correct(eval)?;
    let original_correct_before = session.correct(original)?;
    let start = now();
    // More rows than `latents` holds is refused here (`SampleCapacity`).
    session.latents(train, latents)?;
    let rows = latents.get(..train.len()).unwrap_or(&[]);
    let both = Chain::new(rows, replay);
    let mut schedule = finetune_schedule(SEED);
    let folds = gate_folds(train.len());
    let gate = session.fit_head_gated_observed(&both, &mut schedule, folds, &mut |_, _| {})?;
    let train_ticks = now().wrapping_sub(start);
    Ok(ReplayReport {
        job: JobReport {
            correct_before,
            correct_after: session.correct(eval)?,
            eval_samples: eval.len(),
            finetune_samples: train.len(),
            train_ticks,
            checkpoint_crc32: session.checkpoint_crc32(),
            ..gated(&gate, sizes)
        },
        replayed: replay.len(),
        original_samples: original.len(),
        original_correct_before,
        original_correct_after: session.correct(original)?,
    })
}

/// The rows of `data` of `class` (`of`), or of every other class: the others read as rows
/// left out, as non-finite rows are, so that scoring counts the chosen ones alone. For
/// scoring only: its length is `data`'s, so folds or a training loop over it would count
/// the rows left out.
struct OfClass<'a, D: ?Sized> {
    data: &'a D,
    class: usize,
    of: bool,
}

impl<D: ?Sized> Clone for OfClass<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D: ?Sized> Copy for OfClass<'_, D> {}

impl<D: Samples<f32, IN> + ?Sized, const IN: usize> Samples<f32, IN> for OfClass<'_, D> {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn row(&self, i: usize) -> Option<([f32; IN], usize)> {
        self.data
            .row(i)
            .filter(|(_, label)| (*label == self.class) == self.of)
    }

    fn read_into(&self, i: usize, out: &mut [f32]) -> Option<usize> {
        self.data
            .read_into(i, out)
            .filter(|label| (*label == self.class) == self.of)
    }
}

impl<D: ?Sized> OfClass<'_, D> {
    /// How many rows are chosen, read through the session's tape (a raw window is not
    /// copied onto the stack).
    fn count<M: Build<f32>, Mem: Capacity, const IN: usize>(
        &self,
        session: &mut Session<'_, M, f32, Mem>,
    ) -> Result<usize, Error>
    where
        D: Samples<f32, IN>,
    {
        let tape = session.tape();
        let mut chosen = 0;
        for i in 0..self.data.len() {
            tape.clear_activations();
            if tape
                .input_with::<IN, _>(|row| self.read_into(i, row))?
                .is_some()
            {
                chosen += 1;
            }
        }
        Ok(chosen)
    }
}

/// The buffers of the quantised job ([`run_int8`]): the training rows' latents, a raw row
/// and the `int8` body's scratch.
pub struct Int8Buffers<'b, const IN: usize, const F: usize> {
    /// Room for the training rows' latents (one per row).
    pub latents: &'b mut [([f32; F], usize)],
    /// A row of the data sets.
    pub row: &'b mut [f32; IN],
    /// The body's codes ([`Int8Body::scratch_len`]).
    pub scratch: &'b mut [i8],
}

/// The job for a quantised model ([`run_model`]'s schedule and gate): the frozen `int8`
/// `body` (read in place from the checkpoint) and the session's float head, which alone
/// trains. The training rows go through the body once, into `buffers.latents`; the
/// evaluation rows as they are read. The report's CRC is the quantised model's checkpoint's
/// (the head and the body, format version 2), as [`Session::save_with_int8`] writes it.
#[cfg_attr(target_os = "none", inline(never))]
pub fn run_int8<Mem, D, E, const IN: usize, const F: usize>(
    session: &mut Session<'_, Linear<F, CLASSES>, f32, Mem>,
    body: Int8Body<'_>,
    buffers: Int8Buffers<'_, IN, F>,
    train: &D,
    eval: &E,
    now: &mut dyn FnMut() -> u64,
) -> Result<JobReport, Error>
where
    Mem: Capacity,
    D: Samples<f32, IN> + ?Sized,
    E: Samples<f32, IN> + ?Sized,
{
    let Int8Buffers {
        latents,
        row,
        scratch,
    } = buffers;
    let start = now();
    let rows = {
        let through = Int8Latents::<_, IN, F>::new(body, train, &mut *row, &mut *scratch)?;
        let capacity = latents.len();
        let out = latents
            .get_mut(..train.len())
            .ok_or(Error::Step(StepError::SampleCapacity {
                capacity,
                rows: train.len(),
            }))?;
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = through
                .row(i)
                .ok_or(Error::Int8(Int8Error::NonFinite { index: i }))?;
        }
        out
    };
    // The training rows' pass through the body is part of fine-tuning's time.
    let latent_ticks = now().wrapping_sub(start);
    let eval_latents = Int8Latents::<_, IN, F>::new(body, eval, row, scratch)?;
    let sizes = safegrad::nn::sizes::<Linear<F, CLASSES>>(crate::model::FINETUNE_PLAN);
    let mut report = run_model(session, sizes, &*rows, &eval_latents, now)?;
    report.train_ticks = report.train_ticks.wrapping_add(latent_ticks);
    report.checkpoint_crc32 = session.checkpoint_crc32_with_int8(body.as_bytes());
    Ok(report)
}

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

/// Why collecting samples stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CollectError<E, F = core::convert::Infallible> {
    /// The source failed.
    Source(E),
    /// Recording a sample into the flash failed (the region is full, or the flash failed).
    Record(RecordError<F>),
}

/// Reads `source` to its end and records its samples into `log`'s regions of `flash`
/// (erased first), as data sets that `Dataset::parse` reads in place: the samples take
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

/// Why recording a stream of raw windows stopped.
#[cfg(feature = "cnn")]
pub type StreamCollectError<R, F> = CollectError<
    crate::samples::StreamError<<R as embedded_io::ErrorType>::Error>,
    <F as embedded_storage::nor_flash::ErrorType>::Error,
>;

/// Reads the raw windows streamed on `source` to its end and records them, as they lie in
/// each frame, into `log`'s regions of `flash` (erased first): the CNN's samples, 600
/// values each, which `Dataset::parse` then reads in place. Returns the two sets' lengths
/// in bytes.
#[cfg(feature = "cnn")]
pub fn record_windows<R: embedded_io::Read, F: NorFlash>(
    source: &mut crate::samples::Stream<R>,
    flash: &mut F,
    log: SampleLog,
) -> Result<(usize, usize), StreamCollectError<R, F>> {
    use crate::samples::WINDOW_VALUES;
    let classes = CLASSES as u16;
    let mut train = Recorder::<f32, WINDOW_VALUES>::new(flash, log.train, log.capacity, classes)
        .map_err(CollectError::Record)?;
    let mut eval = Recorder::<f32, WINDOW_VALUES>::new(flash, log.eval, log.capacity, classes)
        .map_err(CollectError::Record)?;
    loop {
        let mut failed = None;
        let next = source
            .next_with(&mut |m, purpose| {
                let set = match purpose {
                    Purpose::Train => &mut train,
                    Purpose::Eval => &mut eval,
                };
                set.push_values(flash, m.values(), m.label)
                    .map_err(|e| failed = Some(e))
                    .ok()
            })
            .map_err(CollectError::Source)?;
        if let Some(e) = failed {
            return Err(CollectError::Record(e));
        }
        if next.is_none() {
            break;
        }
    }
    let train = train.finish(flash).map_err(CollectError::Record)?;
    let eval = eval.finish(flash).map_err(CollectError::Record)?;
    Ok((train, eval))
}

/// What a streamed soak run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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

/// Streamed, online fine-tuning: one guarded training step per training sample as it
/// arrives from `source`, until the source ends. Evaluation samples are skipped. It checks
/// that the tape records the same graph every step.
pub fn soak<Mem: Capacity, S: SampleSource>(
    session: &mut MotionSession<'_, Mem>,
    source: &mut S,
) -> Result<SoakReport, CollectError<S::Error>> {
    let mut sgd = finetune_schedule(SEED).optimizer;
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
    let (tape, model) = session.parts();
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
    use crate::model::{FinetuneWorkspace, FINETUNE_PLAN};
    use safegrad::checkpoint::CheckpointError;
    use safegrad::dataset::Dataset;

    type Rows = Vec<([f32; IMU_FEATURES], usize)>;

    fn rows(bytes: &[u8]) -> Rows {
        Dataset::<f32, IMU_FEATURES>::parse(bytes)
            .unwrap()
            .iter()
            .collect()
    }

    fn session(work: &mut FinetuneWorkspace) -> MotionSession<'_> {
        Session::from_checkpoint(work, assets::PRETRAINED, FINETUNE_PLAN).unwrap()
    }

    fn run_on<D: Samples<f32, IMU_FEATURES> + ?Sized>(train: &D) -> (JobReport, Vec<u8>) {
        let mut work = Box::new(FinetuneWorkspace::new());
        let mut session = session(&mut work);
        let eval = rows(assets::EVAL_SET);
        let mut t = 0u64;
        let report = run(&mut session, train, &eval[..], &mut || {
            t += 1;
            t
        })
        .unwrap();
        let mut out = vec![0u8; session.checkpoint_len()];
        session.write_checkpoint(&mut out).unwrap();
        (report, out)
    }

    /// The host's figures for the same job, from `assets/expected.json`.
    fn expected(key: &str) -> String {
        value_in(include_str!("../assets/expected.json"), key)
    }

    /// The value of `key` in the flat JSON object `text`, unquoted.
    pub(super) fn value_in(text: &str, key: &str) -> String {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{key}\"")))
            .unwrap_or_else(|| panic!("{key} in expected.json"));
        let value = line.split(':').nth(1).unwrap_or("").trim();
        value.trim_end_matches(',').trim_matches('"').to_string()
    }

    /// The new-class job on the device's workspace type, on `train`, with room for
    /// `latent_rows` latents.
    fn teach(
        work: &mut FinetuneWorkspace,
        train: &[([f32; IMU_FEATURES], usize)],
        latent_rows: usize,
    ) -> Result<NewClassReport, Error> {
        use crate::assets::new_class::{NEW_CLASS, PRETRAINED};
        let mut session = Session::from_checkpoint(work, PRETRAINED, FINETUNE_PLAN)?;
        let eval = rows(assets::new_class::EVAL_SET);
        let mut latents = vec![([0.0f32; 32], 0usize); latent_rows];
        let mut keep = [0.0f32; 33 * CLASSES];
        let buffers = NewClassBuffers {
            latents: &mut latents,
            keep: &mut keep,
        };
        run_new_class(
            &mut session,
            FINETUNE_SIZES,
            NEW_CLASS,
            buffers,
            train,
            &eval[..],
            &mut || 0,
        )
    }

    /// The job that teaches a new class, run here on the device's workspace type, gives
    /// `host-sim finetune --new-class 3`'s parameters and accuracies.
    #[test]
    fn the_new_class_job_on_the_host_matches_host_sim_bit_for_bit() {
        let expected = |key| value_in(include_str!("../assets/new-class/expected.json"), key);
        let train = rows(assets::new_class::FINETUNE_SET);
        let mut work = Box::new(FinetuneWorkspace::new());
        let r = teach(&mut work, &train, train.len()).unwrap();
        assert_eq!(r.class.to_string(), expected("new_class"));
        assert_eq!(
            format!("{:#010x}", r.job.checkpoint_crc32),
            expected("finetuned_checkpoint_crc32")
        );
        assert_eq!(r.job.committed.to_string(), expected("committed"));
        assert_eq!(r.job.steps.to_string(), expected("finetune_steps"));
        // The held-out split, counted here from the labels.
        let eval = rows(assets::new_class::EVAL_SET);
        let new = eval.iter().filter(|(_, l)| *l == r.class).count();
        assert_eq!((r.new_samples, r.old_samples), (new, eval.len() - new));
        let share = |correct: usize, of: usize| Ok(correct as f64 / of as f64);
        let parse = |key| expected(key).parse::<f64>();
        assert_eq!(
            share(r.old_correct_after, r.old_samples),
            parse("old_classes_accuracy_after")
        );
        assert_eq!(
            share(r.new_correct_after, r.new_samples),
            parse("new_class_accuracy_after")
        );
        assert_eq!(
            share(r.new_correct_before, r.new_samples),
            parse("new_class_accuracy_before")
        );
        assert_eq!(
            share(r.job.correct_after, r.job.eval_samples),
            parse("accuracy_after")
        );
    }

    /// The job with latent replay, run here on the device's workspace type from the replay
    /// buffer in the assets, gives `host-sim finetune --replay 3`'s parameters and
    /// accuracies on both domains.
    #[test]
    fn the_replay_job_on_the_host_matches_host_sim_bit_for_bit() {
        use safegrad::train::ReplayBuffer;
        let replay = ReplayBuffer::<32>::parse(assets::REPLAY).unwrap();
        assert_eq!(replay.len().to_string(), {
            let per_class: usize = expected("replay_per_class").parse().unwrap();
            (per_class * CLASSES).to_string()
        });
        let mut work = Box::new(FinetuneWorkspace::new());
        let mut tuned = session(&mut work);
        let train = rows(assets::FINETUNE_SET);
        let (eval, original) = (rows(assets::EVAL_SET), rows(assets::ORIGINAL_SET));
        let mut latents = vec![([0.0f32; 32], 0usize); train.len()];
        let r = run_replay(
            &mut tuned,
            FINETUNE_SIZES,
            &replay,
            &mut latents,
            &train[..],
            &eval[..],
            &original[..],
            &mut || 0,
        )
        .unwrap();
        assert_eq!(
            format!("{:#010x}", r.job.checkpoint_crc32),
            expected("replay_finetuned_checkpoint_crc32")
        );
        assert_eq!(r.job.committed.to_string(), expected("replay_committed"));
        let share = |correct: usize, of: usize| Ok(correct as f64 / of as f64);
        assert_eq!(
            share(r.job.correct_after, r.job.eval_samples),
            expected("replay_shifted_accuracy_after").parse::<f64>()
        );
        assert_eq!(
            share(r.original_correct_after, r.original_samples),
            expected("replay_original_accuracy_after").parse::<f64>()
        );
        // Without the replayed rows the same job is the one without replay.
        let mut work = Box::new(FinetuneWorkspace::new());
        let mut tuned = session(&mut work);
        let none: &[([f32; 32], usize)] = &[];
        let r = run_replay(
            &mut tuned,
            FINETUNE_SIZES,
            none,
            &mut latents,
            &train[..],
            &eval[..],
            &original[..],
            &mut || 0,
        )
        .unwrap();
        assert_eq!(
            format!("{:#010x}", r.job.checkpoint_crc32),
            expected("finetuned_checkpoint_crc32")
        );
    }

    /// Too little room for the training rows' latents is refused before anything trains.
    #[test]
    fn the_new_class_job_refuses_too_small_a_latent_buffer() {
        let train = rows(assets::new_class::FINETUNE_SET);
        let mut work = Box::new(FinetuneWorkspace::new());
        let r = teach(&mut work, &train, train.len() - 1);
        assert!(
            matches!(
                r,
                Err(Error::Step(StepError::SampleCapacity { capacity, rows }))
                    if capacity == train.len() - 1 && rows == train.len()
            ),
            "{r:?}"
        );
    }

    #[test]
    fn the_job_on_the_host_matches_host_sim_bit_for_bit() {
        let (r, _) = run_on(&rows(assets::FINETUNE_SET)[..]);
        assert_eq!(
            format!("{:#010x}", r.checkpoint_crc32),
            expected("finetuned_checkpoint_crc32")
        );
        assert_eq!(r.steps.to_string(), expected("finetune_steps"));
        let after: f64 = expected("shifted_accuracy_after").parse().unwrap();
        assert_eq!(r.correct_after as f64 / r.eval_samples as f64, after);
        let before: f64 = expected("shifted_accuracy_before").parse().unwrap();
        assert_eq!(r.correct_before as f64 / r.eval_samples as f64, before);
    }

    /// The quantised MLP's job (its int8 body in place, its float head trained), run here
    /// on the device's workspace type, gives host-sim's `--quantize int8` parameters.
    #[test]
    fn the_int8_job_on_the_host_matches_host_sim_bit_for_bit() {
        use crate::model::{MlpInt8Workspace, MLP_INT8_SCRATCH};
        let mut work = Box::new(MlpInt8Workspace::new());
        let mut session = Session::from_checkpoint(&mut work, assets::INT8, FINETUNE_PLAN).unwrap();
        let body = safegrad::quant::Int8Body::parse(
            safegrad::checkpoint::int8_body::<f32>(assets::INT8).unwrap(),
        )
        .unwrap();
        let train = rows(assets::FINETUNE_SET);
        let eval = rows(assets::EVAL_SET);
        let mut latents = [([0.0f32; 32], 0usize); 16];
        let mut row = [0.0f32; IMU_FEATURES];
        let mut scratch = [0i8; MLP_INT8_SCRATCH];
        let buffers = Int8Buffers {
            latents: &mut latents,
            row: &mut row,
            scratch: &mut scratch,
        };
        let r = run_int8(
            &mut session,
            body,
            buffers,
            &train[..],
            &eval[..],
            &mut || 0,
        )
        .unwrap();
        assert_eq!(
            format!("{:#010x}", r.checkpoint_crc32),
            expected("int8_finetuned_checkpoint_crc32")
        );
        let after: f64 = expected("int8_shifted_accuracy_after").parse().unwrap();
        assert_eq!(r.correct_after as f64 / r.eval_samples as f64, after);
        let before: f64 = expected("int8_shifted_accuracy_before").parse().unwrap();
        assert_eq!(r.correct_before as f64 / r.eval_samples as f64, before);
        assert_eq!(r.trainable, 32 * 4 + 4);
    }

    #[test]
    fn the_tape_is_sized_to_one_step_exactly() {
        // The sizes from the model's type are what one step records.
        let mut work = Box::new(FinetuneWorkspace::new());
        let mut session = session(&mut work);
        let (x, label) = rows(assets::FINETUNE_SET)[0];
        let (tape, model) = session.parts();
        record_loss(tape, model, &x, label).unwrap();
        assert_eq!(
            (
                tape.nodes().len(),
                tape.scalars_used(),
                tape.gradients_used()
            ),
            (
                FINETUNE_SIZES.nodes,
                FINETUNE_SIZES.values,
                FINETUNE_SIZES.gradients
            )
        );
        assert_eq!(tape.trainable_len(), 132);
        assert_eq!(tape.parameter_len(), FINETUNE_SIZES.parameters);
    }

    #[test]
    fn a_damaged_model_is_refused_before_anything_runs() {
        let mut work = Box::new(FinetuneWorkspace::new());
        let mut session = session(&mut work);
        let before = session.checkpoint_crc32();
        let mut bad = assets::PRETRAINED.to_vec();
        bad[100] ^= 0x10;
        let err = session.load(&bad).unwrap_err();
        assert!(
            matches!(err, Error::Checkpoint(CheckpointError::Crc { .. })),
            "{err}"
        );
        assert_eq!(session.checkpoint_crc32(), before, "nothing changed");
        // The same damage in the checkpoint the session starts from.
        let words: Vec<u32> = bad
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        let leaked: &'static [u32] = Vec::leak(words);
        let bytes: &'static [u8] = &bytemuck::cast_slice(leaked)[..bad.len()];
        let mut work = Box::new(FinetuneWorkspace::new());
        let refused =
            Session::<MotionModel, f32, _>::from_checkpoint(&mut *work, bytes, FINETUNE_PLAN);
        assert!(matches!(
            refused.err(),
            Some(Error::Checkpoint(CheckpointError::Crc { .. }))
        ));
    }

    #[test]
    fn recording_the_built_in_source_gives_the_embedded_sets_in_flash() {
        use embedded_storage::nor_flash::{ErrorType, NorFlashErrorKind, ReadNorFlash};
        struct Ram(Vec<u8>);
        impl ErrorType for Ram {
            type Error = NorFlashErrorKind;
        }
        impl ReadNorFlash for Ram {
            const READ_SIZE: usize = 1;
            fn read(&mut self, at: u32, out: &mut [u8]) -> Result<(), Self::Error> {
                out.copy_from_slice(&self.0[at as usize..at as usize + out.len()]);
                Ok(())
            }
            fn capacity(&self) -> usize {
                self.0.len()
            }
        }
        impl NorFlash for Ram {
            const WRITE_SIZE: usize = 4;
            const ERASE_SIZE: usize = 4096;
            fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
                self.0[from as usize..to as usize].fill(0xFF);
                Ok(())
            }
            fn write(&mut self, at: u32, bytes: &[u8]) -> Result<(), Self::Error> {
                for (d, s) in self.0[at as usize..].iter_mut().zip(bytes) {
                    *d &= s;
                }
                Ok(())
            }
        }
        let train = Dataset::parse(assets::FINETUNE_SET).unwrap();
        let eval = Dataset::parse(assets::EVAL_SET).unwrap();
        let mut source = crate::samples::BuiltIn::new(train, eval);
        let mut flash = Ram(vec![0xFF; 16384]);
        let log = SampleLog {
            train: 0,
            eval: 8192,
            capacity: 8192,
        };
        let (t, e) = record(&mut source, &mut flash, log).unwrap();
        // The same bytes as the embedded sets: rows, classes, header and CRC.
        assert_eq!(&flash.0[..t], assets::FINETUNE_SET);
        assert_eq!(&flash.0[8192..8192 + e], assets::EVAL_SET);
    }

    #[test]
    fn training_on_rows_in_ram_or_in_flash_is_the_same() {
        let in_flash = run_on(&Dataset::<f32, IMU_FEATURES>::parse(assets::FINETUNE_SET).unwrap());
        let in_ram = run_on(&rows(assets::FINETUNE_SET)[..]);
        assert_eq!(in_flash, in_ram);
    }

    #[test]
    fn non_finite_samples_are_skipped_and_runs_of_them_roll_back() {
        let mut train = rows(assets::FINETUNE_SET);
        // Twelve good rows and twelve poisoned ones: each epoch meets runs of three.
        let good = train.clone();
        for (x, label) in good.iter() {
            let mut bad = *x;
            bad[3] = f32::NAN;
            train.push((bad, *label));
        }
        // The job's schedule without the gate (the pre-trained model classifies the clean
        // rows already, so the gate would keep it and fit nothing).
        let mut work = Box::new(FinetuneWorkspace::new());
        let mut tuned = session(&mut work);
        let r = tuned.fit(&train[..], &mut finetune_schedule(SEED)).unwrap();
        let mut out = vec![0u8; tuned.checkpoint_len()];
        tuned.write_checkpoint(&mut out).unwrap();
        assert!(r.rejected > 0, "{r:?}");
        assert!(r.rollbacks > 0 && r.last_divergence.is_some(), "{r:?}");
        assert!(matches!(
            r.last_divergence,
            Some(Divergence::Rejections { count: 3 })
        ));
        // Whatever was rolled back, the model in the checkpoint is finite and loads.
        let mut work = Box::new(FinetuneWorkspace::new());
        let mut fresh = session(&mut work);
        assert!(fresh.load(&out).is_ok());
        // The whole job on the same rows, the gate's folds included, ends with a model that
        // loads, and its checkpoint is the one it reports.
        let (r, out) = run_on(&train[..]);
        assert_eq!(out[out.len() - 4..], r.checkpoint_crc32.to_le_bytes());
        let mut work = Box::new(FinetuneWorkspace::new());
        assert!(session(&mut work).load(&out).is_ok());
    }

    #[test]
    fn a_fine_tuned_checkpoint_resumes_with_its_accuracy() {
        let (r, out) = run_on(&rows(assets::FINETUNE_SET)[..]);
        assert_eq!(out.len(), crate::model::CHECKPOINT_BYTES);
        assert_eq!(out[out.len() - 4..], r.checkpoint_crc32.to_le_bytes());
        // A new boot: a fresh session, the checkpoint from flash.
        let mut work = Box::new(FinetuneWorkspace::new());
        let mut session = session(&mut work);
        session.load(&out).unwrap();
        let eval = rows(assets::EVAL_SET);
        assert_eq!(session.correct(&eval[..]).unwrap(), r.correct_after);
    }
}

#[cfg(all(test, feature = "cnn"))]
mod cnn_tests {
    use super::*;
    use crate::assets::cnn;
    use crate::model::{
        CnnFinetuneCapacity, CnnFinetuneWorkspace, MotionCnn, CNN_FINETUNE_SIZES, FINETUNE_PLAN,
    };
    use crate::samples::WINDOW_VALUES;
    use safegrad::dataset::Dataset;

    /// The host's figures for the CNN's job, from `assets/cnn/expected.json`.
    fn expected(key: &str) -> String {
        super::tests::value_in(include_str!("../assets/cnn/expected.json"), key)
    }

    /// A session of the device's CNN workspace on the pre-trained CNN.
    fn session(
        work: &mut CnnFinetuneWorkspace,
    ) -> Session<'_, MotionCnn, f32, CnnFinetuneCapacity> {
        Session::from_checkpoint(work, cnn::PRETRAINED, FINETUNE_PLAN).unwrap()
    }

    /// The CNN's job on the device's workspace type, run here, gives host-sim's parameters.
    #[test]
    fn the_cnn_job_on_the_host_matches_host_sim_bit_for_bit() {
        let mut work = Box::new(CnnFinetuneWorkspace::new());
        let mut session = session(&mut work);
        let train = Dataset::<f32, WINDOW_VALUES>::parse(cnn::FINETUNE_SET).unwrap();
        let eval = Dataset::<f32, WINDOW_VALUES>::parse(cnn::EVAL_SET).unwrap();
        let mut t = 0u64;
        let r = run_model(&mut session, CNN_FINETUNE_SIZES, &train, &eval, &mut || {
            t += 1;
            t
        })
        .unwrap();
        assert_eq!(
            format!("{:#010x}", r.checkpoint_crc32),
            expected("finetuned_checkpoint_crc32")
        );
        assert_eq!(r.steps.to_string(), expected("finetune_steps"));
        let after = r.correct_after as f64 / r.eval_samples as f64;
        assert_eq!(Ok(after), expected("shifted_accuracy_after").parse::<f64>());
        assert_eq!(r.trainable, 16 * 4 + 4);
    }

    /// The quantised CNN's job, run here on the device's workspace type, gives host-sim's
    /// `--model cnn --quantize int8` parameters.
    #[test]
    fn the_int8_cnn_job_on_the_host_matches_host_sim_bit_for_bit() {
        use crate::model::{CnnInt8Workspace, CNN_INT8_SCRATCH};
        let mut work = Box::new(CnnInt8Workspace::new());
        let mut session = Session::from_checkpoint(&mut work, cnn::INT8, FINETUNE_PLAN).unwrap();
        let body = safegrad::quant::Int8Body::parse(
            safegrad::checkpoint::int8_body::<f32>(cnn::INT8).unwrap(),
        )
        .unwrap();
        assert_eq!(body.scratch_len(), CNN_INT8_SCRATCH);
        let train = Dataset::<f32, WINDOW_VALUES>::parse(cnn::FINETUNE_SET).unwrap();
        let eval = Dataset::<f32, WINDOW_VALUES>::parse(cnn::EVAL_SET).unwrap();
        let mut latents = [([0.0f32; 16], 0usize); 16];
        let mut row = [0.0f32; WINDOW_VALUES];
        let mut scratch = [0i8; CNN_INT8_SCRATCH];
        let buffers = Int8Buffers {
            latents: &mut latents,
            row: &mut row,
            scratch: &mut scratch,
        };
        let r = run_int8(&mut session, body, buffers, &train, &eval, &mut || 0).unwrap();
        assert_eq!(
            format!("{:#010x}", r.checkpoint_crc32),
            expected("int8_finetuned_checkpoint_crc32")
        );
        let after = r.correct_after as f64 / r.eval_samples as f64;
        assert_eq!(
            Ok(after),
            expected("int8_shifted_accuracy_after").parse::<f64>()
        );
    }

    /// The CNN's head applied to its body's output gives its forward pass's logits, bit for
    /// bit, on every held-out window; the latent is the pooled 16 channels.
    #[test]
    fn the_cnn_is_its_head_on_its_body() {
        use safegrad::nn::{Headed, Module, WithHead};
        use safegrad::Var;
        let mut work = Box::new(CnnFinetuneWorkspace::new());
        let mut session = session(&mut work);
        let eval = Dataset::<f32, WINDOW_VALUES>::parse(cnn::EVAL_SET).unwrap();
        let (tape, model) = session.parts();
        let bits = |tape: &safegrad::Tape<f32, _>, v| -> Vec<u32> {
            let value = tape.value(v).unwrap();
            value.as_slice().iter().map(|f| f.to_bits()).collect()
        };
        for i in 0..eval.len() {
            // The device's tape holds one pass: the whole model first, then its parts.
            tape.clear_activations();
            let (x, _) = tape
                .input_with::<WINDOW_VALUES, _>(|out| eval.read_into(i, out))
                .unwrap()
                .unwrap();
            let whole = model.forward(tape, x).unwrap();
            let whole = bits(tape, whole);
            tape.clear_activations();
            let (x, _) = tape
                .input_with::<WINDOW_VALUES, _>(|out| eval.read_into(i, out))
                .unwrap()
                .unwrap();
            let latent: Var<1, 16> = model.body(tape, x).unwrap();
            let split = model.head().forward(tape, latent).unwrap();
            assert_eq!(bits(tape, split), whole, "window {i}");
        }
    }
}
