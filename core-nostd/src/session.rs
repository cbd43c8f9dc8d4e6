//! A fine-tuning session: the model, read in place from its checkpoint, trained under a
//! schedule with the divergence guard, the rollback and the validation gate inside, and
//! saved to A/B slots in flash. The host simulator and the firmware both fine-tune through it.
//!
//! ```
//! use safegrad::nn::{Linear, Plan, Relu};
//! use safegrad::optim::Sgd;
//! use safegrad::session::{Schedule, Session};
//! # use safegrad::nn::{Build, Init};
//! # use safegrad::{checkpoint, Cap, Tape};
//!
//! type Model = (Linear<2, 8>, Relu, Linear<8, 2>);
//! type Work = safegrad::workspace!(f32, Model, Plan::LastLayer);
//!
//! // A pre-trained checkpoint; on a device, `safegrad::include_checkpoint!("model.sgck")`.
//! # let mut tape = Tape::<f32, Cap<8, 64>>::new();
//! # Model::build(&mut tape, &mut Init::new(3))?;
//! # let mut bytes = vec![0u8; checkpoint::encoded_len(&tape)];
//! # checkpoint::save(&tape, &mut bytes)?;
//! # let words: Vec<u32> = bytes.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
//! # let pretrained: &'static [u8] = bytemuck::cast_slice(Vec::leak(words));
//! let rows = [([1.0f32, 0.0], 0), ([0.0, 1.0], 1), ([0.9, 0.2], 0), ([0.1, 0.8], 1)];
//! let mut work = Work::new();
//! let mut session = Session::from_checkpoint(&mut work, pretrained, Plan::LastLayer)?;
//! let mut schedule = Schedule::new(Sgd::new(0.1)).epochs(20).clip_norm(1.0).seed(7);
//! let report = session.fit(&rows[..], &mut schedule)?;
//! assert_eq!(report.steps, 80);
//! assert_eq!(session.correct(&rows[..])?, 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::marker::PhantomData;

use embedded_storage::nor_flash::NorFlash;

use crate::checkpoint::{self, CheckpointError};
use crate::error::Error;
use crate::nn::{Build, Headed, Init, InitScheme, Linear, Module, Plan, WithHead};
use crate::optim::Optimizer;
use crate::scalar::Scalar;
use crate::store::Slots;
use crate::tape::{Cap, Capacity, Tape, Var};
use crate::train::{
    anchored_epoch, audit_step_graph_at, count_correct, fit_linear_head, imprint_class, predict,
    score, Anchor, Divergence, DivergenceGuard, Fold, HeadFit, Samples, Score, Shuffle, StepConfig,
    StepError,
};

/// The memory a session of the model `M` works in: the tape, room for two copies of the
/// trainable parameters (the last good epoch's, to roll back to, and those before fitting,
/// for the validation gate) and the shuffling order of up to `SAMPLES` rows. Its size
/// follows from the model's type: [`workspace!`](crate::workspace) names it.
pub struct Workspace<M, T: Scalar, Mem: Capacity, const TRAINABLE: usize, const SAMPLES: usize = 64>
{
    tape: Tape<T, Mem>,
    rollback: [T; TRAINABLE],
    start: [T; TRAINABLE],
    order: [usize; SAMPLES],
    model: PhantomData<M>,
}

impl<
        M,
        T: Scalar,
        const N: usize,
        const S: usize,
        const G: usize,
        const TRAINABLE: usize,
        const SAMPLES: usize,
    > Workspace<M, T, Cap<N, S, G>, TRAINABLE, SAMPLES>
{
    /// An empty workspace. A `const fn` of zero bytes: a `static` one goes to `.bss`.
    pub const fn new() -> Self {
        Self {
            tape: Tape::new(),
            rollback: [T::ZERO; TRAINABLE],
            start: [T::ZERO; TRAINABLE],
            order: [0; SAMPLES],
            model: PhantomData,
        }
    }
}

impl<M, T: Scalar, Mem: Capacity, const TRAINABLE: usize, const SAMPLES: usize> Default
    for Workspace<M, T, Mem, TRAINABLE, SAMPLES>
{
    fn default() -> Self {
        Self {
            tape: Tape::default(),
            rollback: [T::ZERO; TRAINABLE],
            start: [T::ZERO; TRAINABLE],
            order: [0; SAMPLES],
            model: PhantomData,
        }
    }
}

/// The type of the tape one training step of `$model` under `$plan` needs, with the frozen
/// parameters read in place: `Tape<$scalar, Cap<nodes, values, gradients>>` from
/// [`nn::sizes`](crate::nn::sizes).
///
/// ```
/// use safegrad::nn::{Linear, Plan, Relu};
/// use safegrad::tape::Capacity;
///
/// type Model = (Linear<8, 16>, Relu, Linear<16, 16>, Relu, Linear<16, 3>);
/// type DeviceTape = safegrad::tape_for!(f32, Model, Plan::LastLayer);
/// let tape = DeviceTape::new();
/// # let _ = tape;
/// fn capacities<T: safegrad::Scalar, Mem: Capacity>(_: &safegrad::Tape<T, Mem>) -> (usize, usize, usize) {
///     (Mem::NODES, Mem::VALUES, Mem::GRADIENTS)
/// }
/// assert_eq!(capacities(&DeviceTape::new()), (14, 131, 55));
/// ```
#[macro_export]
macro_rules! tape_for {
    ($scalar:ty, $model:ty, $plan:expr) => {
        $crate::Tape<
            $scalar,
            $crate::Cap<
                { $crate::nn::sizes::<$model>($plan).nodes },
                { $crate::nn::sizes::<$model>($plan).values },
                { $crate::nn::sizes::<$model>($plan).gradients },
            >,
        >
    };
}

/// The type of the [`Workspace`] a [`Session`] fine-tuning `$model` under `$plan` needs,
/// sized from the model's type ([`nn::sizes`](crate::nn::sizes)), with room for 64 rows of
/// training data, or `samples = K`.
///
/// ```
/// use safegrad::nn::{Linear, Plan, Relu};
///
/// type Model = (Linear<8, 16>, Relu, Linear<16, 3>);
/// type Work = safegrad::workspace!(f32, Model, Plan::LastLayer, samples = 256);
/// static WORK: static_cell::ConstStaticCell<Work> = static_cell::ConstStaticCell::new(Work::new());
/// # let _ = &WORK;
/// ```
#[macro_export]
macro_rules! workspace {
    ($scalar:ty, $model:ty, $plan:expr) => {
        $crate::workspace!($scalar, $model, $plan, samples = 64)
    };
    ($scalar:ty, $model:ty, $plan:expr, samples = $samples:expr) => {
        $crate::session::Workspace<
            $model,
            $scalar,
            $crate::Cap<
                { $crate::nn::sizes::<$model>($plan).nodes },
                { $crate::nn::sizes::<$model>($plan).values },
                { $crate::nn::sizes::<$model>($plan).gradients },
            >,
            { $crate::nn::sizes::<$model>($plan).trainable },
            $samples,
        >
    };
}

/// The bytes of a file, included at build time at an address aligned for any scalar (8
/// bytes), as `&'static [u8]`: a checkpoint whose parameters a [`Session`] reads in place.
/// The path is relative to the file that uses the macro, as with `include_bytes!`.
///
/// ```
/// static BYTES: &[u8] = safegrad::include_checkpoint!("../../motion/assets/pretrained.sgck");
/// assert_eq!(BYTES.as_ptr() as usize % 8, 0);
/// assert_eq!(&BYTES[..4], b"SGCK");
/// ```
#[macro_export]
macro_rules! include_checkpoint {
    ($path:expr) => {{
        #[repr(C)]
        struct Aligned<B: ?Sized> {
            _align: [u64; 0],
            bytes: B,
        }
        static ALIGNED: &Aligned<[u8]> = &Aligned {
            _align: [],
            bytes: *include_bytes!($path),
        };
        &ALIGNED.bytes
    }};
}

/// How [`Session::fit`] trains: the optimiser (its learning rate with it), the number of
/// epochs and an optional budget of steps, gradient clipping, the seed of the shuffling,
/// the divergence guard, and an optional validation set that gates the result.
///
/// ```
/// use safegrad::optim::Sgd;
/// use safegrad::session::Schedule;
///
/// let holdout = [([0.5f32, 0.5], 1)];
/// let schedule = Schedule::new(Sgd::new(0.05))
///     .epochs(30)
///     .max_steps(200)
///     .clip_norm(1.0)
///     .seed(7)
///     .validate(&holdout[..]);
/// assert_eq!(schedule.epochs, 30);
/// ```
#[derive(Clone, Debug)]
pub struct Schedule<'v, T, O, V: ?Sized = NoValidation> {
    /// The optimiser; a divergence halves its learning rate.
    pub optimizer: O,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Most rows visited in all (a step each, refused ones included); `None` for no limit.
    pub max_steps: Option<usize>,
    /// Clip the gradients to this global norm; `None` for no clipping.
    pub clip_norm: Option<T>,
    /// Seed of the shuffling.
    pub seed: u64,
    /// The divergence guard: a refused sample is skipped, a divergence rolls back to the
    /// last good epoch and halves the learning rate.
    pub guard: DivergenceGuard<T>,
    /// Audit one step's graph before the first step (every step records the same graph)
    /// and refuse to train on one with an error-level finding.
    pub audit: bool,
    /// Rows the result is checked on: if the model classifies fewer of them correctly after
    /// fitting than before, the parameters from before are restored.
    pub validation: Option<&'v V>,
    /// The weight of an L2 penalty on the trainable parameters' distance from their values
    /// before fitting (L2-SP), applied as a decoupled step after each update
    /// ([`anchored_epoch`](crate::train::anchored_epoch)); `None` for none.
    pub anchor: Option<T>,
    /// Stop once the loss has converged (see [`Plateau`]) rather than after `epochs`
    /// (which still bounds the fit); `None` to run every epoch.
    pub plateau: Option<Plateau<T>>,
}

/// When a fit has converged. The epochs are taken `window` at a time (epochs the guard
/// rolled back do not count); a window counts as progress when the mean of its epochs'
/// mean losses is below the best window's so far by more than `tolerance` times the best.
/// A window without progress halves the learning rate; the fit has converged, and stops,
/// at the `halvings`-th such window. Batch-1 losses are noisy from one epoch to the next:
/// the window averages the noise out, and the halvings let SGD settle near the minimum
/// rather than wander around it at the first rate.
///
/// ```
/// use safegrad::session::Plateau;
///
/// let plateau = Plateau { window: 20, tolerance: 0.01f32, halvings: 3 };
/// # let _ = plateau;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Plateau<T> {
    /// Epochs per window (0 counts as 1).
    pub window: u32,
    /// The relative fall of the mean loss a window must reach to count as progress.
    pub tolerance: T,
    /// Windows without progress (each halving the learning rate) until the fit stops.
    pub halvings: u32,
}

/// No validation set ([`Schedule`]'s default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoValidation;

impl<T, const F: usize> Samples<T, F> for NoValidation {
    fn len(&self) -> usize {
        0
    }
    fn row(&self, _: usize) -> Option<([T; F], usize)> {
        None
    }
}

impl<T: Scalar, O> Schedule<'static, T, O, NoValidation> {
    /// One epoch with `optimizer`, no clipping, seed 0, the default guard, the audit on, no
    /// validation.
    pub fn new(optimizer: O) -> Self {
        Self {
            optimizer,
            epochs: 1,
            max_steps: None,
            clip_norm: None,
            seed: 0,
            guard: DivergenceGuard::default(),
            audit: true,
            validation: None,
            anchor: None,
            plateau: None,
        }
    }
}

impl<'v, T: Scalar, O, V: ?Sized> Schedule<'v, T, O, V> {
    /// The same with `epochs` passes.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// The same with a budget of `steps` rows in all.
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = Some(steps);
        self
    }

    /// The same with gradient clipping at global norm `max_norm`.
    pub fn clip_norm(mut self, max_norm: T) -> Self {
        self.clip_norm = Some(max_norm);
        self
    }

    /// The same with the shuffling seeded by `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same with another divergence guard.
    pub fn guard(mut self, guard: DivergenceGuard<T>) -> Self {
        self.guard = guard;
        self
    }

    /// The same without the audit before the first step.
    pub fn without_audit(mut self) -> Self {
        self.audit = false;
        self
    }

    /// The same with an L2-SP penalty of weight `strength` (see [`anchor`](Self::anchor)).
    pub fn anchor(mut self, strength: T) -> Self {
        self.anchor = Some(strength);
        self
    }

    /// The same, stopping once the loss has converged (see [`Plateau`]).
    pub fn until_converged(mut self, plateau: Plateau<T>) -> Self {
        self.plateau = Some(plateau);
        self
    }

    /// The same with a validation set that gates the result (see
    /// [`validation`](Self::validation)).
    pub fn validate<'w, W: ?Sized>(self, rows: &'w W) -> Schedule<'w, T, O, W> {
        Schedule {
            optimizer: self.optimizer,
            epochs: self.epochs,
            max_steps: self.max_steps,
            clip_norm: self.clip_norm,
            seed: self.seed,
            guard: self.guard,
            audit: self.audit,
            validation: Some(rows),
            anchor: self.anchor,
            plateau: self.plateau,
        }
    }
}

/// What [`Session::fit`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FitReport<T> {
    /// Epochs run.
    pub epochs: usize,
    /// Steps taken (updates applied).
    pub steps: usize,
    /// Samples refused as non-finite (skipped, nothing changed).
    pub rejected: usize,
    /// Times the guard rolled back to the last good epoch and halved the learning rate.
    pub rollbacks: usize,
    /// Why it last did.
    pub last_divergence: Option<Divergence<T>>,
    /// Mean loss of the last epoch.
    pub final_loss: T,
    /// Validation rows classified correctly before and after fitting.
    pub validation: Option<(usize, usize)>,
    /// The validation gate restored the parameters from before fitting.
    pub restored: bool,
    /// The loss converged before the last epoch the schedule allowed (see [`Plateau`]).
    pub converged: bool,
}

/// What [`Session::fit_gated`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GateReport<T> {
    /// The model before fitting, scored on every row.
    pub before: Score<T>,
    /// Every row scored by the model fitted on the other folds.
    pub after: Score<T>,
    /// `after` beat `before` ([`Score::beats`]), so the model was fitted on every row and
    /// kept; otherwise the model is the one from before.
    pub committed: bool,
    /// The fit on every row, if the model was committed.
    pub fit: Option<FitReport<T>>,
    /// Steps of every fit, the folds' and the last one's.
    pub steps: usize,
}

/// The end of one epoch of [`Session::fit_observed`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochEnd<T> {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Mean loss of its accepted steps.
    pub mean_loss: T,
    /// Steps it took.
    pub steps: usize,
    /// Samples it refused as non-finite.
    pub rejected: usize,
    /// The guard rolled back at its end, for this reason.
    pub divergence: Option<Divergence<T>>,
    /// The learning rate for the next epoch.
    pub learning_rate: T,
}

/// What [`Session::fit_observed`] calls at the end of each epoch.
pub type Observer<'o, T, M, Mem> = dyn FnMut(&EpochEnd<T>, &mut Probe<'_, T, M, Mem>) + 'o;

/// What [`Session::fit_gated_prepared`] does to the model before each of its fits, given
/// the rows that fit trains on (a fold's training rows, then every row): set parameters up
/// from them, such as a new class's output ([`imprint_class`]). An error ends the gate, and
/// the model is put back as it was.
pub type Prepare<'p, T, M, Mem, const IN: usize> =
    dyn FnMut(&mut Tape<T, Mem>, &M, &dyn Samples<T, IN>) -> Result<(), Error> + 'p;

/// A [`Prepare`] and the room to keep the parameters in while it runs, or `None`: what the
/// gated fits of the head on latents take ([`Session::fit_head_full_batch_gated`]).
pub type Prepared<'a, 'p, T, M, Mem, const IN: usize> =
    Option<(&'a mut Prepare<'p, T, M, Mem, IN>, &'a mut [T])>;

/// The model as it stands at the end of an epoch, for an observer to evaluate.
pub struct Probe<'a, T: Scalar, M, Mem: Capacity> {
    tape: &'a mut Tape<T, Mem>,
    model: &'a M,
}

impl<T: Scalar, M, Mem: Capacity> Probe<'_, T, M, Mem> {
    /// Rows of `data` the model classifies correctly.
    pub fn correct<D, const IN: usize, const OUT: usize>(
        &mut self,
        data: &D,
    ) -> Result<usize, Error>
    where
        M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        D: Samples<T, IN> + ?Sized,
    {
        Ok(count_correct(self.tape, self.model, data)?)
    }
}

/// A model being fine-tuned: its tape, its parameters and the buffers of a [`Workspace`].
/// See the [module](self) documentation.
pub struct Session<'w, M, T: Scalar, Mem: Capacity> {
    tape: &'w mut Tape<T, Mem>,
    model: M,
    rollback: &'w mut [T],
    start: &'w mut [T],
    order: &'w mut [usize],
}

impl<'w, M, T, Mem> Session<'w, M, T, Mem>
where
    M: Build<T>,
    T: Scalar,
    Mem: Capacity,
{
    /// Fine-tunes the model stored in `checkpoint` (kept in flash, aligned for `T`:
    /// [`include_checkpoint!`](crate::include_checkpoint)): the layers `plan` freezes are
    /// read in place from it and take no RAM, the trainable ones are loaded into the tape.
    /// The checkpoint is checked (magic, version, length, CRC, parameter count, shape
    /// signature, finite values) before anything is used; a refused one is an error and
    /// nothing is built.
    pub fn from_checkpoint<const TRAINABLE: usize, const SAMPLES: usize>(
        workspace: &'w mut Workspace<M, T, Mem, TRAINABLE, SAMPLES>,
        checkpoint: &'static [u8],
        plan: Plan<'_>,
    ) -> Result<Self, Error>
    where
        T: bytemuck::Pod,
    {
        let params = checkpoint::parameters_in_place::<T>(checkpoint)?;
        // A checkpoint of another number of parameters is another model's: refused here, as
        // `load` would, before the layers read in place run past its end.
        if params.len() != M::PARAMETERS {
            return Err(Error::Checkpoint(CheckpointError::ParameterCount {
                found: params.len() as u32,
                expected: M::PARAMETERS as u32,
            }));
        }
        let tape = &mut workspace.tape;
        tape.reset();
        tape.read_frozen_in_place(params)?;
        // Zeros: the checkpoint fills every trainable parameter next.
        let mut init = Init::new(0).with_scheme(InitScheme::Zeros).with_plan(plan);
        let model = M::build(tape, &mut init)?;
        checkpoint::load(tape, checkpoint)?;
        Self::over(workspace, model)
    }

    /// A new model, every parameter held in the tape and initialised from `init` (its seed,
    /// scheme and plan): to train from scratch.
    pub fn new<const TRAINABLE: usize, const SAMPLES: usize>(
        workspace: &'w mut Workspace<M, T, Mem, TRAINABLE, SAMPLES>,
        mut init: Init<'_>,
    ) -> Result<Self, Error> {
        workspace.tape.reset();
        let model = M::build(&mut workspace.tape, &mut init)?;
        Self::over(workspace, model)
    }

    /// The session of `model`, built on `workspace`'s tape; its snapshots must hold every
    /// trainable scalar.
    fn over<const TRAINABLE: usize, const SAMPLES: usize>(
        workspace: &'w mut Workspace<M, T, Mem, TRAINABLE, SAMPLES>,
        model: M,
    ) -> Result<Self, Error> {
        let needed = workspace.tape.trainable_len();
        if TRAINABLE < needed {
            return Err(Error::Step(StepError::SnapshotCapacity {
                capacity: TRAINABLE,
                needed,
            }));
        }
        let Workspace {
            tape,
            rollback,
            start,
            order,
            ..
        } = workspace;
        Ok(Self {
            tape,
            model,
            rollback: rollback.get_mut(..needed).unwrap_or(&mut []),
            start: start.get_mut(..needed).unwrap_or(&mut []),
            order,
        })
    }

    /// The model's layers (their parameters' handles).
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The tape, for what the session does not do itself.
    pub fn tape(&mut self) -> &mut Tape<T, Mem> {
        self.tape
    }

    /// The tape, read only.
    pub fn tape_ref(&self) -> &Tape<T, Mem> {
        self.tape
    }

    /// The tape and the model together, for the training primitives of
    /// [`train`](crate::train).
    pub fn parts(&mut self) -> (&mut Tape<T, Mem>, &M) {
        (self.tape, &self.model)
    }

    /// The fit's buffers and the model, borrowed apart.
    fn split(&mut self) -> (Work<'_, T, Mem>, &M) {
        let Self {
            tape,
            model,
            rollback,
            start,
            order,
        } = self;
        (
            Work {
                tape,
                rollback,
                start,
                order,
            },
            model,
        )
    }

    /// Loads the trainable parameters of a checkpoint of this model (a fine-tuned one from
    /// flash, say): every check passes or nothing changes. Frozen parameters read in place
    /// must hold the same values.
    pub fn load(&mut self, checkpoint: &[u8]) -> Result<(), Error> {
        checkpoint::load(self.tape, checkpoint)?;
        Ok(())
    }

    /// The model as it stands, to evaluate.
    pub fn probe(&mut self) -> Probe<'_, T, M, Mem> {
        Probe {
            tape: self.tape,
            model: &self.model,
        }
    }

    /// Rows of `data` the model classifies correctly.
    pub fn correct<D, const IN: usize, const OUT: usize>(
        &mut self,
        data: &D,
    ) -> Result<usize, Error>
    where
        M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        D: Samples<T, IN> + ?Sized,
    {
        self.probe().correct(data)
    }

    /// The class the model gives one input row.
    pub fn predict<const IN: usize, const OUT: usize>(
        &mut self,
        x: &[T; IN],
    ) -> Result<usize, Error>
    where
        M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
    {
        Ok(predict(self.tape, &self.model, x)?)
    }

    /// Trains on `data` under `schedule` (see [`fit_observed`](Self::fit_observed)).
    pub fn fit<O, D, V, const IN: usize, const OUT: usize>(
        &mut self,
        data: &D,
        schedule: &mut Schedule<'_, T, O, V>,
    ) -> Result<FitReport<T>, Error>
    where
        M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        O: Optimizer<T> + 'static,
        D: Samples<T, IN> + ?Sized,
        V: Samples<T, IN> + ?Sized,
    {
        self.fit_observed(data, schedule, &mut |_, _| {})
    }

    /// Trains on `data` under `schedule`, batch 1, and calls `observer` at the end of each
    /// epoch with what it did and the model as it stands.
    ///
    /// Before the first step: the order of the rows is set up (its buffer must hold them
    /// all), one step's graph is audited (unless the schedule says not to), the validation
    /// rows are counted and the trainable parameters copied. Each epoch shuffles the rows
    /// and takes one guarded step per row ([`train::epoch`](crate::train::epoch)); if the
    /// guard sees a divergence, the parameters go back to the end of the last good epoch,
    /// the learning rate is halved and the guard starts afresh. After the last epoch (or
    /// the step budget), a model that classifies fewer validation rows correctly than before
    /// is replaced by the parameters from before.
    pub fn fit_observed<O, D, V, const IN: usize, const OUT: usize>(
        &mut self,
        data: &D,
        schedule: &mut Schedule<'_, T, O, V>,
        observer: &mut Observer<'_, T, M, Mem>,
    ) -> Result<FitReport<T>, Error>
    where
        M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        O: Optimizer<T> + 'static,
        D: Samples<T, IN> + ?Sized,
        V: Samples<T, IN> + ?Sized,
    {
        let (mut work, model) = self.split();
        work.fit(model, data, schedule, observer)
    }

    /// Fits the model on `data` under `schedule` only if that makes it better, judged by
    /// k-fold cross-validation over `folds` folds (row `i` in fold `i % folds`, see
    /// [`Fold`]; as many folds as rows is leave-one-out).
    ///
    /// The model as it stands is scored on every row ([`score`](crate::train::score)). For
    /// each fold, the model is fitted from where it stands on the other folds (the
    /// schedule's optimiser afresh each time) and scored on the fold's rows, then put back.
    /// If those scores together [beat](Score::beats) the model's own (more rows correct, or
    /// as many with a lower loss), the model is fitted on every row and kept: committed.
    /// Otherwise it is left as it was. The schedule's optimiser ends as the last fit left it.
    pub fn fit_gated<O, D, V, const IN: usize, const OUT: usize>(
        &mut self,
        data: &D,
        schedule: &mut Schedule<'_, T, O, V>,
        folds: usize,
    ) -> Result<GateReport<T>, Error>
    where
        M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        O: Optimizer<T> + Clone + 'static,
        D: Samples<T, IN> + ?Sized,
        V: Samples<T, IN> + ?Sized,
    {
        self.fit_gated_observed(data, schedule, folds, &mut |_, _| {})
    }

    /// [`fit_gated`](Self::fit_gated), calling `observer` at the end of each epoch of the
    /// fit on every row (if the model is committed).
    pub fn fit_gated_observed<O, D, V, const IN: usize, const OUT: usize>(
        &mut self,
        data: &D,
        schedule: &mut Schedule<'_, T, O, V>,
        folds: usize,
        observer: &mut Observer<'_, T, M, Mem>,
    ) -> Result<GateReport<T>, Error>
    where
        M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        O: Optimizer<T> + Clone + 'static,
        D: Samples<T, IN> + ?Sized,
        V: Samples<T, IN> + ?Sized,
    {
        let (mut work, model) = self.split();
        work.fit_gated(model, data, schedule, folds, None, observer)
    }

    /// [`fit_gated_observed`](Self::fit_gated_observed) with `prepare` run before each fit:
    /// each fold's fit starts from the model as it stands, prepared on the fold's training
    /// rows, and the committed fit from the model prepared on every row. The model's own
    /// score, which the folds' must beat, is taken unprepared. A new class the model has
    /// never seen is taught this way: its output set up by [`imprint_class`] from the rows
    /// each fit sees, so that the held-out rows stay unseen.
    ///
    /// `keep` holds the trainable parameters as they stand while the folds are fitted (at
    /// least as many scalars as the model trains, else [`StepError::SnapshotCapacity`]),
    /// to be put back if the fitted model is not committed or anything fails.
    pub fn fit_gated_prepared<O, D, V, const IN: usize, const OUT: usize>(
        &mut self,
        data: &D,
        schedule: &mut Schedule<'_, T, O, V>,
        folds: usize,
        prepare: &mut Prepare<'_, T, M, Mem, IN>,
        keep: &mut [T],
        observer: &mut Observer<'_, T, M, Mem>,
    ) -> Result<GateReport<T>, Error>
    where
        M: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        O: Optimizer<T> + Clone + 'static,
        D: Samples<T, IN> + ?Sized,
        V: Samples<T, IN> + ?Sized,
    {
        let (mut work, model) = self.split();
        work.fit_gated(
            model,
            data,
            schedule,
            folds,
            Some((prepare, keep)),
            observer,
        )
    }

    /// Sets the head's output `class` up from `data`'s rows of that class
    /// ([`imprint_class`]); returns the rows used.
    pub fn imprint_class<D, const IN: usize, const F: usize, const OUT: usize>(
        &mut self,
        data: &D,
        class: usize,
    ) -> Result<usize, Error>
    where
        M: Headed<T, Var<1, IN>, Latent = Var<1, F>> + WithHead<Head = Linear<F, OUT>>,
        Linear<F, OUT>: Module<T, Var<1, F>, Output = M::Output>,
        D: Samples<T, IN> + ?Sized,
    {
        Ok(imprint_class(self.tape, &self.model, data, class)?)
    }

    /// The body's output for each row of `data` ([`Headed`]), with the row's class, into
    /// the first rows of `out`; returns how many. With the body frozen (the last-layer
    /// plan) these latent rows are all the head sees: [`fit_head`](Self::fit_head) on them
    /// trains it as [`fit`](Self::fit) on `data` does, bit for bit, without running the
    /// body again. More rows than `out` holds is [`StepError::SampleCapacity`].
    pub fn latents<D, const IN: usize, const F: usize>(
        &mut self,
        data: &D,
        out: &mut [([T; F], usize)],
    ) -> Result<usize, Error>
    where
        M: Headed<T, Var<1, IN>, Latent = Var<1, F>>,
        M::Head: Module<T, Var<1, F>, Output = M::Output>,
        D: Samples<T, IN> + ?Sized,
    {
        let rows = data.len();
        let capacity = out.len();
        let out = out
            .get_mut(..rows)
            .ok_or(Error::Step(StepError::SampleCapacity { capacity, rows }))?;
        let mut written = 0;
        for (i, slot) in out.iter_mut().enumerate() {
            self.tape.clear_activations();
            let Some((x, label)) = self
                .tape
                .input_with::<IN, _>(|row| data.read_into(i, row))?
            else {
                continue;
            };
            let latent = self.model.body(self.tape, x)?;
            let value = self.tape.value(latent)?;
            for (d, &v) in slot.0.iter_mut().zip(value.as_slice()) {
                *d = v;
            }
            slot.1 = label;
            written += 1;
        }
        Ok(written)
    }

    /// Trains the head alone on latent rows ([`latents`](Self::latents)) under `schedule`:
    /// [`fit`](Self::fit) with the last layer as the model.
    pub fn fit_head<O, L, V, const F: usize, const OUT: usize>(
        &mut self,
        latents: &L,
        schedule: &mut Schedule<'_, T, O, V>,
    ) -> Result<FitReport<T>, Error>
    where
        M: WithHead,
        M::Head: Module<T, Var<1, F>, Output = Var<1, OUT>>,
        O: Optimizer<T> + 'static,
        L: Samples<T, F> + ?Sized,
        V: Samples<T, F> + ?Sized,
    {
        let (mut work, model) = self.split();
        work.fit(model.head(), latents, schedule, &mut |_, _| {})
    }

    /// [`fit_gated_observed`](Self::fit_gated_observed) of the head alone on latent rows
    /// ([`latents`](Self::latents)): the same gate, the same fits, bit for bit, as on the
    /// rows they came from, without running the frozen body again.
    pub fn fit_head_gated_observed<O, L, V, const F: usize, const OUT: usize>(
        &mut self,
        latents: &L,
        schedule: &mut Schedule<'_, T, O, V>,
        folds: usize,
        observer: &mut Observer<'_, T, M::Head, Mem>,
    ) -> Result<GateReport<T>, Error>
    where
        M: WithHead,
        M::Head: Module<T, Var<1, F>, Output = Var<1, OUT>>,
        O: Optimizer<T> + Clone + 'static,
        L: Samples<T, F> + ?Sized,
        V: Samples<T, F> + ?Sized,
    {
        let (mut work, model) = self.split();
        work.fit_gated(model.head(), latents, schedule, folds, None, observer)
    }

    /// [`fit_gated_prepared`](Self::fit_gated_prepared) of the head alone on latent rows.
    #[allow(clippy::too_many_arguments)]
    pub fn fit_head_gated_prepared<O, L, V, const F: usize, const OUT: usize>(
        &mut self,
        latents: &L,
        schedule: &mut Schedule<'_, T, O, V>,
        folds: usize,
        prepare: &mut Prepare<'_, T, M::Head, Mem, F>,
        keep: &mut [T],
        observer: &mut Observer<'_, T, M::Head, Mem>,
    ) -> Result<GateReport<T>, Error>
    where
        M: WithHead,
        M::Head: Module<T, Var<1, F>, Output = Var<1, OUT>>,
        O: Optimizer<T> + Clone + 'static,
        L: Samples<T, F> + ?Sized,
        V: Samples<T, F> + ?Sized,
    {
        let (mut work, model) = self.split();
        work.fit_gated(
            model.head(),
            latents,
            schedule,
            folds,
            Some((prepare, keep)),
            observer,
        )
    }

    /// Fits the head, a [`Linear`] layer and all that trains (the last-layer plan), on
    /// latent rows ([`latents`](Self::latents)) by full-batch gradient descent with a line
    /// search ([`fit_linear_head`]), L2-SP anchored to where it starts. The report counts each of
    /// its full-batch steps as an epoch and a step, and the rows left out as non-finite as
    /// rejected.
    pub fn fit_head_full_batch<L, const F: usize, const OUT: usize>(
        &mut self,
        latents: &L,
        fit: &HeadFit<T>,
    ) -> Result<FitReport<T>, Error>
    where
        M: WithHead<Head = Linear<F, OUT>>,
        Linear<F, OUT>: Module<T, Var<1, F>, Output = Var<1, OUT>>,
        L: Samples<T, F> + ?Sized,
    {
        let (mut work, model) = self.split();
        work.fit_head_full_batch(model.head(), latents, fit)
    }

    /// [`fit_head_full_batch`](Self::fit_head_full_batch) behind the validation gate of
    /// [`fit_gated`](Self::fit_gated), with an optional `prepare` and its `keep` as in
    /// [`fit_gated_prepared`](Self::fit_gated_prepared).
    pub fn fit_head_full_batch_gated<L, const F: usize, const OUT: usize>(
        &mut self,
        latents: &L,
        fit: &HeadFit<T>,
        folds: usize,
        prepared: Prepared<'_, '_, T, Linear<F, OUT>, Mem, F>,
    ) -> Result<GateReport<T>, Error>
    where
        M: WithHead<Head = Linear<F, OUT>>,
        Linear<F, OUT>: Module<T, Var<1, F>, Output = Var<1, OUT>>,
        L: Samples<T, F> + ?Sized,
    {
        let (mut work, model) = self.split();
        let head = model.head();
        work.gate(head, latents, folds, prepared, &mut |work, rows, _| {
            work.fit_head_full_batch(head, rows, fit)
        })
    }

    /// CRC-32 of the model's checkpoint (the value stored at its end): two models with the
    /// same value have the same parameters, bit for bit.
    pub fn checkpoint_crc32(&self) -> u32 {
        checkpoint::checksum(self.tape)
    }

    /// CRC-32 of the checkpoint of the model and the `int8` body `int8` before it
    /// ([`save_with_int8`](Self::save_with_int8)).
    pub fn checkpoint_crc32_with_int8(&self, int8: &[u8]) -> u32 {
        checkpoint::checksum_with_int8(self.tape, int8)
    }

    /// Bytes of the model's checkpoint.
    pub fn checkpoint_len(&self) -> usize {
        checkpoint::encoded_len(self.tape)
    }

    /// Writes the model's checkpoint into `out`; returns its length.
    pub fn write_checkpoint(&self, out: &mut [u8]) -> Result<usize, Error> {
        Ok(checkpoint::save(self.tape, out)?)
    }

    /// Saves the model's checkpoint into the older of the two `slots` of `flash`, a piece
    /// at a time, straight from the tape, with the model's shape signature; the newer slot
    /// is untouched until the new one is complete. Returns the slot's sequence number.
    pub fn save<F: NorFlash>(&self, flash: &mut F, slots: &Slots) -> Result<u32, Error> {
        let signature = checkpoint::shape_signature(self.tape);
        let mut encoder = checkpoint::Encoder::new(self.tape);
        Ok(slots.save_from(flash, encoder.len(), signature, |out| encoder.fill(out))?)
    }

    /// [`save`](Self::save) of the model as the head of a quantised one: its checkpoint
    /// carries the frozen `int8` body `int8` (the encoding
    /// [`Int8Body`](crate::quant::Int8Body) reads, [`Int8Body::as_bytes`](crate::quant::Int8Body::as_bytes)),
    /// format version 2, so that the saved model is whole.
    pub fn save_with_int8<F: NorFlash>(
        &self,
        flash: &mut F,
        slots: &Slots,
        int8: &[u8],
    ) -> Result<u32, Error> {
        let signature = checkpoint::shape_signature(self.tape);
        let mut encoder = checkpoint::Encoder::with_int8(self.tape, int8);
        Ok(slots.save_from(flash, encoder.len(), signature, |out| encoder.fill(out))?)
    }
}

/// A fit the gate runs: on the rows given, the last one (on every row) or not.
type GateFit<'f, 'a, T, Mem, D> =
    dyn FnMut(&mut Work<'a, T, Mem>, &Fold<'_, D>, bool) -> Result<FitReport<T>, Error> + 'f;

/// The buffers a fit works in, apart from the model: the fits of the whole model and of
/// its head are the same code over another module.
struct Work<'a, T: Scalar, Mem: Capacity> {
    tape: &'a mut Tape<T, Mem>,
    rollback: &'a mut [T],
    start: &'a mut [T],
    order: &'a mut [usize],
}

impl<'a, T: Scalar, Mem: Capacity> Work<'a, T, Mem> {
    /// Puts back the trainable parameters the gate started from: from `keep`, or `start`.
    fn put_back(&mut self, keep: Option<&[T]>) -> Result<(), Error> {
        let needed = self.tape.trainable_len();
        match keep {
            Some(keep) => self
                .tape
                .restore_trainable(keep.get(..needed).unwrap_or(keep))?,
            None => self.tape.restore_trainable(self.start)?,
        }
        Ok(())
    }

    /// [`Session::fit_observed`] for `model`.
    // One copy on the device, called for the plain fit and each of the gate's fits: inlined
    // there, it took the stack of two frames and the flash of two copies.
    #[cfg_attr(target_os = "none", inline(never))]
    fn fit<Md, O, D, V, const IN: usize, const OUT: usize>(
        &mut self,
        model: &Md,
        data: &D,
        schedule: &mut Schedule<'_, T, O, V>,
        observer: &mut Observer<'_, T, Md, Mem>,
    ) -> Result<FitReport<T>, Error>
    where
        Md: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        O: Optimizer<T> + 'static,
        D: Samples<T, IN> + ?Sized,
        V: Samples<T, IN> + ?Sized,
    {
        let rows = data.len();
        if rows == 0 {
            return Err(Error::Step(StepError::NoSamples));
        }
        let mut shuffle = Shuffle::new(self.order, rows, schedule.seed)?;
        shuffle.limit(schedule.max_steps);
        if schedule.audit {
            audit_step_graph_at(&mut *self.tape, model, data, 0)?;
        }
        let before = match schedule.validation {
            Some(v) => Some(count_correct(&mut *self.tape, model, v)?),
            None => None,
        };
        self.tape.snapshot_trainable(self.rollback)?;
        self.tape.snapshot_trainable(self.start)?;
        let config = StepConfig {
            clip_norm: schedule.clip_norm,
            ..StepConfig::default()
        };
        let mut guard = schedule.guard;
        guard.reset();
        let mut report = FitReport {
            epochs: 0,
            steps: 0,
            rejected: 0,
            rollbacks: 0,
            last_divergence: None,
            final_loss: T::ZERO,
            validation: None,
            restored: false,
            converged: false,
        };
        let mut best: Option<T> = None;
        let (mut halvings, mut window_sum, mut window_len) = (0, T::ZERO, 0);
        for n in 1..=schedule.epochs {
            if shuffle.exhausted() {
                break;
            }
            let anchor = schedule.anchor.map(|strength| Anchor {
                values: &*self.start,
                strength,
            });
            let out = anchored_epoch(
                &mut *self.tape,
                model,
                &mut schedule.optimizer,
                data,
                &mut shuffle,
                &config,
                Some(&mut guard),
                anchor,
            )?;
            report.epochs = n;
            report.final_loss = out.mean_loss;
            report.steps += out.steps;
            report.rejected += out.rejected;
            if out.divergence.is_some() {
                report.last_divergence = out.divergence;
                self.tape.restore_trainable(self.rollback)?;
                schedule.optimizer.scale_learning_rate(T::from_f64(0.5));
                guard.reset();
                report.rollbacks += 1;
            } else {
                self.tape.snapshot_trainable(self.rollback)?;
                if let Some(plateau) = schedule.plateau {
                    window_sum += out.mean_loss;
                    window_len += 1;
                    if window_len >= plateau.window.max(1) {
                        let mean = window_sum / T::from_usize(window_len as usize);
                        (window_sum, window_len) = (T::ZERO, 0);
                        // A loss that is not a number is no progress.
                        if best.is_none_or(|b| mean < b - b * plateau.tolerance) {
                            best = Some(mean);
                        } else {
                            halvings += 1;
                            if halvings >= plateau.halvings {
                                report.converged = true;
                            } else {
                                schedule.optimizer.scale_learning_rate(T::from_f64(0.5));
                            }
                        }
                    }
                }
            }
            let end = EpochEnd {
                epoch: n,
                mean_loss: out.mean_loss,
                steps: out.steps,
                rejected: out.rejected,
                divergence: out.divergence,
                learning_rate: schedule.optimizer.learning_rate(),
            };
            let mut probe = Probe {
                tape: &mut *self.tape,
                model,
            };
            observer(&end, &mut probe);
            if report.converged {
                break;
            }
        }
        if let (Some(before), Some(v)) = (before, schedule.validation) {
            let mut after = count_correct(&mut *self.tape, model, v)?;
            if after < before {
                self.tape.restore_trainable(self.start)?;
                report.restored = true;
                after = before;
            }
            report.validation = Some((before, after));
        }
        Ok(report)
    }

    /// [`Session::fit_head_full_batch`] for `head`; `start` keeps the trainable parameters
    /// it started from, as [`fit`](Self::fit) does.
    fn fit_head_full_batch<D, const F: usize, const OUT: usize>(
        &mut self,
        head: &Linear<F, OUT>,
        data: &D,
        fit: &HeadFit<T>,
    ) -> Result<FitReport<T>, Error>
    where
        D: Samples<T, F> + ?Sized,
    {
        let (trainable, size) = (self.tape.trainable_len(), (F + 1) * OUT);
        let trains = |id| {
            self.tape
                .node(id)
                .is_some_and(|node| node.grad_slots().is_some())
        };
        // The head alone trains, its weights recorded before its bias: the snapshot of the
        // trainable parameters is the weights, then the bias.
        let (weight, bias) = (head.weight.node(), head.bias.node());
        if trainable != size || !trains(weight) || !trains(bias) || weight > bias {
            return Err(Error::Step(StepError::NotHeadOnly {
                trainable,
                head: size,
            }));
        }
        self.tape.snapshot_trainable(self.start)?;
        // `start` begins with the head's weights, which the fit copies there again as its
        // anchor.
        let out = fit_linear_head(&mut *self.tape, head, data, fit, self.start, self.rollback)?;
        Ok(FitReport {
            epochs: out.iterations,
            steps: out.iterations,
            rejected: data.len().saturating_sub(out.rows),
            rollbacks: 0,
            last_divergence: None,
            final_loss: out.objective,
            validation: None,
            restored: false,
            converged: out.converged,
        })
    }

    /// [`Session::fit_gated_prepared`] for `model` (unprepared without `prepared`).
    fn fit_gated<Md, O, D, V, const IN: usize, const OUT: usize>(
        &mut self,
        model: &Md,
        data: &D,
        schedule: &mut Schedule<'_, T, O, V>,
        folds: usize,
        prepared: Prepared<'_, '_, T, Md, Mem, IN>,
        observer: &mut Observer<'_, T, Md, Mem>,
    ) -> Result<GateReport<T>, Error>
    where
        Md: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        O: Optimizer<T> + Clone + 'static,
        D: Samples<T, IN> + ?Sized,
        V: Samples<T, IN> + ?Sized,
    {
        let optimizer = schedule.optimizer.clone();
        self.gate(model, data, folds, prepared, &mut |work, rows, last| {
            // Each fit with the optimiser afresh.
            schedule.optimizer = optimizer.clone();
            if last {
                work.fit(model, rows, schedule, observer)
            } else {
                work.fit(model, rows, schedule, &mut |_, _| {})
            }
        })
    }

    /// The validation gate around `fit`, which fits `model` on the rows it is given and is
    /// told whether that is the last fit, on every row.
    fn gate<Md, D, const IN: usize, const OUT: usize>(
        &mut self,
        model: &Md,
        data: &D,
        folds: usize,
        prepared: Prepared<'_, '_, T, Md, Mem, IN>,
        fit: &mut GateFit<'_, 'a, T, Mem, D>,
    ) -> Result<GateReport<T>, Error>
    where
        Md: Module<T, Var<1, IN>, Output = Var<1, OUT>>,
        D: Samples<T, IN> + ?Sized,
    {
        let rows = data.len();
        if folds < 2 || folds > rows {
            return Err(Error::Step(StepError::Folds { folds, rows }));
        }
        // Every row is read through a `Fold` (a fold past the last holds out none), so that
        // the fits and scores below are compiled once, for one type of rows.
        let every = Fold::rest(data, folds, folds);
        let before = score(&mut *self.tape, model, &every)?;
        let (mut prepare, mut keep) = match prepared {
            Some((prepare, keep)) => (Some(prepare), Some(keep)),
            None => (None, None),
        };
        // What each fold's fit starts from and is put back to: `keep` with a `prepare`;
        // otherwise `start`, where `fit` keeps the same values once it starts.
        match keep.as_deref_mut() {
            Some(keep) => {
                let (needed, capacity) = (self.tape.trainable_len(), keep.len());
                let keep = keep
                    .get_mut(..needed)
                    .ok_or(StepError::SnapshotCapacity { capacity, needed })?;
                self.tape.snapshot_trainable(keep)?;
            }
            None => self.tape.snapshot_trainable(self.start)?,
        }
        let mut after = Score::zero();
        let mut steps = 0;
        for fold in 0..folds {
            let rest = Fold::rest(data, folds, fold);
            let held = match prepare.as_deref_mut() {
                Some(prepare) => prepare(&mut *self.tape, model, &rest),
                None => Ok(()),
            }
            .and_then(|()| fit(self, &rest, false))
            .and_then(|fit| {
                steps += fit.steps;
                let held = Fold::held_out(data, folds, fold);
                Ok(score(&mut *self.tape, model, &held)?)
            });
            // Put back whether or not the fold's fit succeeded: a refusal changes nothing.
            self.put_back(keep.as_deref())?;
            after = after.plus(held?);
        }
        let committed = after.beats(&before);
        let fit = if committed {
            let fit = match prepare {
                Some(prepare) => prepare(&mut *self.tape, model, &every),
                None => Ok(()),
            }
            .and_then(|()| fit(self, &every, true));
            let fit = match fit {
                Ok(fit) => fit,
                Err(e) => {
                    // A fit refused part-way leaves the model as it was.
                    self.put_back(keep.as_deref())?;
                    return Err(e);
                }
            };
            steps += fit.steps;
            Some(fit)
        } else {
            None
        };
        Ok(GateReport {
            before,
            after,
            committed,
            fit,
            steps,
        })
    }
}
