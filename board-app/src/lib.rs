//! The motion job on a real board, shared by the board examples (`boards/`): the board
//! gives an `embedded-hal` I2C bus with an MPU-6050 on it, a delay, its internal flash as
//! `embedded-storage` NOR flash, and a way to tell the user what to do; [`run`] does the
//! rest.
//!
//! 1. A `Session` starts on the pre-trained model built into the program, or on the model
//!    an earlier run saved, if the flash holds one that checks.
//! 2. The sensor is set up for the training data's 10 Hz and gravity is measured at rest.
//! 3. A guided recording (`motion::samples::Guided`): for each class in turn the board
//!    tells the user ([`Event::Perform`]), then [`TRAIN_WINDOWS`] windows of 10 s are
//!    recorded to fine-tune on and [`EVAL_WINDOWS`] to measure on, each logged to the data
//!    flash as it is read.
//! 4. The last layer is fine-tuned with the same schedule and validation gate as on the
//!    emulated boards and the host (`motion::job::run`).
//! 5. The model is saved to the A/B slots of the data flash; the next run resumes from it.
#![no_std]

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind};
use motion::assets;
use motion::features::IMU_FEATURES;
use motion::job::{self, CollectError, JobReport, SampleLog};
use motion::model::{FinetuneWorkspace, FINETUNE_PLAN};
use motion::samples::{Guided, Imu, Purpose};
use mpu6050::{Address, Config, Mpu6050};
use safegrad::dataset::Dataset;
use safegrad::session::Session;
use safegrad::store::Slots;

/// Windows of each class to fine-tune on.
pub const TRAIN_WINDOWS: usize = 3;
/// Windows of each class to measure on, before and after.
pub const EVAL_WINDOWS: usize = 10;
/// Readings at rest that gravity is measured from (2 s at 10 Hz).
pub const CALIBRATION_READINGS: usize = 20;

/// Where the job keeps its data in the board's flash, as offsets of the `NorFlash` given
/// to [`run`]: the checkpoint's two slots and the two sample logs, each aligned to the
/// flash's erase size.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// The checkpoint's A/B slots.
    pub slots: Slots,
    /// The recorded samples' regions.
    pub log: SampleLog,
}

/// What the job tells the board as it goes, for the user: a log line, an LED, a display.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// The model an earlier run saved is loaded, from this save.
    Resumed {
        /// Its save number.
        seq: u32,
    },
    /// The model in flash was refused; the built-in one is used.
    SavedModelRefused(safegrad::Error),
    /// Keep the sensor still: gravity is being measured.
    Calibrating,
    /// Perform class `class` now (`motion::model::CLASS_NAMES`): `windows` windows of 10 s
    /// follow, for `purpose`.
    Perform {
        /// The class.
        class: usize,
        /// Fine-tuning or measuring.
        purpose: Purpose,
        /// Windows to be recorded.
        windows: usize,
    },
    /// The recording is done; fine-tuning starts.
    Recorded {
        /// Bytes of the two logged sets.
        train_bytes: usize,
        /// Bytes of the evaluation set.
        eval_bytes: usize,
    },
    /// The model is saved to the flash.
    Saved {
        /// Its save number.
        seq: u32,
    },
}

/// Why the job stopped.
#[derive(Debug, PartialEq)]
pub enum AppError<I> {
    /// The sensor did not answer or answered wrongly.
    Sensor(mpu6050::Error<I>),
    /// Recording the samples failed (the flash's error as its kind).
    Record(CollectError<mpu6050::Error<I>, NorFlashErrorKind>),
    /// The session refused (a corrupt model, a sample it could not use, a full flash).
    Job(safegrad::Error),
}

impl<I> From<safegrad::Error> for AppError<I> {
    fn from(e: safegrad::Error) -> Self {
        Self::Job(e)
    }
}

#[cfg(feature = "defmt")]
impl<I: embedded_hal::i2c::Error> defmt::Format for AppError<I> {
    fn format(&self, f: defmt::Formatter<'_>) {
        /// What went wrong on the bus, in words.
        fn bus(e: &impl embedded_hal::i2c::Error) -> &'static str {
            use embedded_hal::i2c::ErrorKind;
            match e.kind() {
                ErrorKind::Bus => "bus error",
                ErrorKind::ArbitrationLoss => "arbitration lost",
                ErrorKind::NoAcknowledge(_) => "no acknowledge (is the sensor wired, at 0x68?)",
                ErrorKind::Overrun => "overrun",
                _ => "other bus error",
            }
        }
        /// What went wrong in the flash, in words.
        fn flash(kind: NorFlashErrorKind) -> &'static str {
            match kind {
                NorFlashErrorKind::NotAligned => "not aligned",
                NorFlashErrorKind::OutOfBounds => "out of bounds",
                _ => "the flash failed",
            }
        }
        match self {
            Self::Sensor(e) | Self::Record(CollectError::Source(e)) => match e {
                mpu6050::Error::I2c(e) => defmt::write!(f, "the MPU-6050: {=str}", bus(e)),
                mpu6050::Error::WrongDevice { found } => {
                    defmt::write!(f, "not an MPU-6050: WHO_AM_I reads {=u8:#04x}", found)
                }
                mpu6050::Error::NotInitialized => {
                    defmt::write!(f, "the MPU-6050 is not initialised")
                }
            },
            Self::Record(CollectError::Record(e)) => {
                defmt::write!(f, "recording to flash: {}", e.map_flash(flash))
            }
            Self::Job(e) => defmt::write!(f, "{}", e),
        }
    }
}

/// The flash's bytes `at..at + len`, read in place through its memory mapping.
///
/// # Safety
/// As [`run`]'s `mapped`; nothing may write the flash while the slice lives.
unsafe fn mapped_bytes<'a>(mapped: *const u8, at: u32, len: usize) -> &'a [u8] {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts(mapped.add(at as usize), len) }
}

/// Runs the job in `work` (the session's memory, typically a static): records from the
/// MPU-6050 at 0x68 on `i2c`, telling the user what to do through `events`, fine-tunes,
/// saves to `flash`, and returns the job's report. `ticks` times the steps (any monotonic
/// counter).
///
/// # Safety
/// `mapped` must be the address where `flash`'s offset 0 is mapped for reading, as the
/// internal flash of a microcontroller is, for every region of `layout`; `flash` must be
/// the only writer of those regions.
#[allow(clippy::too_many_arguments)]
pub unsafe fn run<I2C, D, F>(
    work: &mut FinetuneWorkspace,
    i2c: I2C,
    delay: D,
    flash: &mut F,
    mapped: *const u8,
    layout: Layout,
    mut events: impl FnMut(Event),
    ticks: &mut dyn FnMut() -> u64,
) -> Result<JobReport, AppError<I2C::Error>>
where
    I2C: I2c,
    D: DelayNs,
    F: NorFlash,
{
    let mut session = Session::from_checkpoint(work, assets::PRETRAINED, FINETUNE_PLAN)?;
    if let Ok(Some(slot)) = layout.slots.locate(flash) {
        // SAFETY: `run`'s contract; the flash is not written while the slice lives.
        let stored = unsafe { mapped_bytes(mapped, slot.offset, slot.len) };
        match session.load(stored) {
            Ok(()) => events(Event::Resumed { seq: slot.seq }),
            Err(e) => events(Event::SavedModelRefused(e)),
        }
    }

    let mut sensor = Mpu6050::new(i2c, Address::Ad0Low);
    sensor.init(Config::default()).map_err(AppError::Sensor)?;
    let mut imu = Imu::new(sensor, delay, 0);
    events(Event::Calibrating);
    imu.calibrate(CALIBRATION_READINGS)
        .map_err(AppError::Sensor)?;
    let mut guided = Guided::new(imu, TRAIN_WINDOWS, EVAL_WINDOWS, |class, purpose| {
        let windows = match purpose {
            Purpose::Train => TRAIN_WINDOWS,
            Purpose::Eval => EVAL_WINDOWS,
        };
        events(Event::Perform {
            class,
            purpose,
            windows,
        });
    });
    let recorded = job::record(&mut guided, flash, layout.log);
    drop(guided);
    let (train_bytes, eval_bytes) = recorded.map_err(|e| {
        AppError::Record(match e {
            CollectError::Source(e) => CollectError::Source(e),
            CollectError::Record(e) => CollectError::Record(e.map_flash(|e| e.kind())),
        })
    })?;
    events(Event::Recorded {
        train_bytes,
        eval_bytes,
    });

    let report = {
        // SAFETY: `run`'s contract; the slices are dropped before the flash is written.
        let (train, eval) = unsafe {
            (
                mapped_bytes(mapped, layout.log.train, train_bytes),
                mapped_bytes(mapped, layout.log.eval, eval_bytes),
            )
        };
        let train = Dataset::<f32, IMU_FEATURES>::parse(train).map_err(safegrad::Error::from)?;
        let eval = Dataset::<f32, IMU_FEATURES>::parse(eval).map_err(safegrad::Error::from)?;
        job::run(&mut session, &train, &eval, ticks)?
    };
    let seq = session.save(flash, &layout.slots)?;
    events(Event::Saved { seq });
    Ok(report)
}
