//! The fine-tuning job on the device: loads the pre-trained motion model embedded at build
//! time, fine-tunes its last layer on the shifted samples with the host simulator's
//! schedule (`motion::job`), logs with `defmt` over semihosting, keeps the fine-tuned model
//! in the data flash, and exits with its verdict.
//!
//! Semihosting arguments choose what it does: `stream` reads the samples from UART0 (raw
//! IMU windows in `motion::wire` frames) instead of the sets built into flash; `flash=PATH`
//! backs the data flash with the host file `PATH`, so that a later boot resumes from the
//! checkpoint an earlier one saved.
//!
//! With the `new-class` feature, it teaches the model a class it was never trained on
//! instead (`motion::job::run_new_class`, as `host-sim finetune --new-class 3`): the model
//! pre-trained without class 3 (`motion::assets::new_class`), the recordings of every class,
//! the watch worn as in training.
//!
//! With the `replay` feature, the shifted installation's job trains the head on the
//! latents of 3 recordings of each class as the original installation gave them too (a
//! replay buffer in flash, `motion::assets::REPLAY`, 8 bits a value; as `host-sim finetune
//! --replay 3`), and scores the original installation's held-out samples before and after.
//!
//! The program knows no board: `firmware::board` gives it one, chosen when it is built
//! (`cargo xtask cores` builds it for each).
#![no_std]
#![no_main]

use assets::{EVAL_SET, FINETUNE_SET, PRETRAINED};
use motion::features::IMU_FEATURES;
use motion::job::{self, JobReport, MotionSession, SampleLog};
#[cfg(feature = "replay")]
use motion::model::CLASSES;
use motion::model::{FinetuneWorkspace, FINETUNE_PLAN};
use motion::samples::Stream;
use safegrad::dataset::Dataset;
use safegrad::session::Session;
use safegrad::store::Slots;
use safegrad::Error;
use static_cell::ConstStaticCell;

use firmware::board::storage::{self, Flash};
use firmware::board::{self, args, entry, exit, ticks};

#[cfg(all(feature = "new-class", feature = "replay"))]
compile_error!("the `new-class` and `replay` features choose different jobs: pick one");

/// The pre-trained model and the built-in samples: the shifted installation's.
#[cfg(not(feature = "new-class"))]
use motion::assets;

/// The pre-trained model and the built-in samples: the model that never saw the new class,
/// and every class's recordings.
#[cfg(feature = "new-class")]
use motion::assets::new_class as assets;

/// Training rows whose latents the head-only jobs keep: 40, ten recordings of each class
/// (the built-in sets have 12; more is refused as `SampleCapacity`).
#[cfg(any(feature = "new-class", feature = "replay"))]
const LATENT_ROWS: usize = 40;

/// The training rows' latents.
#[cfg(any(feature = "new-class", feature = "replay"))]
static LATENTS: ConstStaticCell<[([f32; 32], usize); LATENT_ROWS]> =
    ConstStaticCell::new([([0.0; 32], 0); LATENT_ROWS]);

/// The head's parameters while the new-class gate's folds fit.
#[cfg(feature = "new-class")]
static KEEP: ConstStaticCell<[f32; motion::model::FINETUNE_SIZES.trainable]> =
    ConstStaticCell::new([0.0; motion::model::FINETUNE_SIZES.trainable]);

/// The checkpoint's two slots (A and B), two 4 KiB sectors each, at the start of the data
/// flash; the streamed samples' two sets of two sectors each after them.
const SLOTS: Slots = Slots::new(0, 8192);
const SAMPLE_LOG: SampleLog = SampleLog {
    train: 16384,
    eval: 24576,
    capacity: 8192,
};

type Set<'a> = Dataset<'a, f32, IMU_FEATURES>;

/// The session's memory, sized from the model's type, in a static initialised at compile
/// time (zero bytes: `.bss`).
static WORKSPACE: ConstStaticCell<FinetuneWorkspace> =
    ConstStaticCell::new(FinetuneWorkspace::new());

/// Reads the samples streamed over UART0 into the flash's sample log; returns the lengths
/// of the two recorded sets. Not inlined: the frame buffers it needs are on the stack only
/// while it runs, and only when samples are streamed.
#[inline(never)]
fn record_stream(flash: &mut Flash) -> Result<(usize, usize), ()> {
    // SAFETY: UART0 is used by nothing else in this program.
    let uart = unsafe { board::uart::open() };
    let mut source = Stream::new(uart);
    let recorded = job::record(&mut source, flash, SAMPLE_LOG);
    let r = source.rejected();
    defmt::info!(
        "stream: {=u32} samples accepted, {=u32} frames refused ({=u32} CRC, {=u32} values), {=u32} sequence gaps",
        source.accepted(),
        r.frames,
        r.crc,
        r.values,
        r.gaps
    );
    if let Some(e) = r.last {
        defmt::warn!("stream: last refusal: {}", e);
    }
    recorded.map_err(|e| defmt::error!("stream: {}", e))
}

/// The samples to fine-tune on and to evaluate, read in place: the sets built into flash,
/// or those `record_stream` logged.
#[inline(never)]
fn samples(image: &[u8], recorded: Option<(usize, usize)>) -> Result<(Set<'_>, Set<'_>), Error> {
    let (train, eval) = match recorded {
        None => (FINETUNE_SET, EVAL_SET),
        Some((t, e)) => {
            let at = |base: u32, len: usize| {
                image.get(base as usize..base as usize + len).unwrap_or(&[])
            };
            (at(SAMPLE_LOG.train, t), at(SAMPLE_LOG.eval, e))
        }
    };
    Ok((Dataset::parse(train)?, Dataset::parse(eval)?))
}

/// The session on the embedded pre-trained model. Not inlined: building records the
/// trainable layer from tensors on the stack, only while it runs.
#[inline(never)]
fn start() -> Result<MotionSession<'static>, Error> {
    // `try_take`: taken once, here; `take`'s panic message would cost flash.
    let Some(work) = WORKSPACE.try_take() else {
        exit(1)
    };
    Session::from_checkpoint(work, PRETRAINED, FINETUNE_PLAN)
}

/// The job: the shifted installation's.
#[cfg(not(any(feature = "new-class", feature = "replay")))]
fn fine_tune(
    session: &mut MotionSession<'static>,
    train: &Set<'_>,
    eval: &Set<'_>,
) -> Result<JobReport, Error> {
    job::run(session, train, eval, &mut ticks)
}

/// The job: the class the model never saw, taught.
#[cfg(feature = "new-class")]
fn fine_tune(
    session: &mut MotionSession<'static>,
    train: &Set<'_>,
    eval: &Set<'_>,
) -> Result<JobReport, Error> {
    let (Some(latents), Some(keep)) = (LATENTS.try_take(), KEEP.try_take()) else {
        exit(1)
    };
    let class = assets::NEW_CLASS;
    defmt::info!("teaching class {=usize}, which the model never saw", class);
    let buffers = job::NewClassBuffers { latents, keep };
    let sizes = motion::model::FINETUNE_SIZES;
    let r = job::run_new_class(session, sizes, class, buffers, train, eval, &mut ticks)?;
    firmware::log::new_class(&r);
    Ok(r.job)
}

/// The job: the shifted installation's, the head trained on the replay buffer's rows too,
/// and scored on the original installation's held-out samples.
#[cfg(feature = "replay")]
fn fine_tune(
    session: &mut MotionSession<'static>,
    train: &Set<'_>,
    eval: &Set<'_>,
) -> Result<JobReport, Error> {
    let Some(latents) = LATENTS.try_take() else {
        exit(1)
    };
    let replay = safegrad::train::ReplayBuffer::<32>::parse_for(motion::assets::REPLAY, CLASSES)?;
    let original = Set::parse(motion::assets::ORIGINAL_SET)?;
    defmt::info!(
        "replay buffer: {=usize} rows of the original installation, {=usize} bytes read in place",
        replay.len(),
        motion::assets::REPLAY.len()
    );
    let sizes = motion::model::FINETUNE_SIZES;
    let r = job::run_replay(
        session, sizes, &replay, latents, train, eval, &original, &mut ticks,
    )?;
    firmware::log::replay(&r);
    Ok(r.job)
}

#[inline(never)]
fn run() -> Result<(), Error> {
    let stream = args::has("stream");
    let Some(mut flash) = storage::take() else {
        exit(1)
    };
    let mut session = start()?;
    // A checkpoint saved by an earlier boot, if any (before the sample log is written).
    let resume = SLOTS.locate(&mut flash).ok().flatten();
    let recorded = if stream {
        Some(record_stream(&mut flash).unwrap_or_else(|()| exit(1)))
    } else {
        None
    };
    let (train, eval) = samples(flash.image(), recorded)?;
    defmt::info!(
        "samples: {=usize} to fine-tune on, {=usize} to evaluate ({=str}, read in place)",
        train.len(),
        eval.len(),
        if stream {
            "UART stream, logged to flash"
        } else {
            "built into flash"
        }
    );

    // Resume from the checkpoint in flash, read in place.
    if let Some(slot) = resume {
        let at = slot.offset as usize;
        let stored = flash.image().get(at..at + slot.len).unwrap_or(&[]);
        if session.load(stored).is_ok() {
            let correct = session.correct(&eval)?;
            defmt::info!(
                "resumed from the checkpoint in flash (save {=u32}): held-out accuracy {=usize}/{=usize}",
                slot.seq,
                correct,
                eval.len()
            );
            return Ok(());
        }
    }
    defmt::info!("no checkpoint in flash: fine-tuning the pre-trained model");

    let r = fine_tune(&mut session, &train, &eval)?;
    firmware::log::job(&r);
    match session.save(&mut flash, &SLOTS) {
        Ok(seq) => defmt::info!("checkpoint saved to flash (save {=u32})", seq),
        Err(e) => defmt::error!("saving the checkpoint failed: {}", e),
    }
    Ok(())
}

#[entry]
fn main() -> ! {
    board::init();
    defmt::info!(
        "safegrad firmware: fine-tuning on the device ({=str}, {=str})",
        board::CORE,
        board::MACHINE
    );
    let result = run();
    firmware::log::finish(result)
}
