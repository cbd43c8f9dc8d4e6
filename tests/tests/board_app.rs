//! The real boards' shared job (`board-app`) on the host, on a simulated board: an
//! MPU-6050 on an `embedded-hal` I2C bus, answering at the register level with BasicMotions
//! recordings worn turned by 90 degrees about z (the main job's shift), quantised to its
//! 16-bit registers; and a memory-mapped NOR flash. Each recording plays when the job
//! prompts for its class, as a user would follow the prompts.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use board_app::{Event, Layout, EVAL_WINDOWS, TRAIN_WINDOWS};
use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};
use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType as FlashErrorType, NorFlash, NorFlashErrorKind,
    ReadNorFlash,
};
use host_sim::data::{default_dir, load_motions, MotionWindow};
use host_sim::shift::Shift;
use motion::job::SampleLog;
use motion::model::{FinetuneWorkspace, CLASSES};
use motion::samples::Purpose;
use mpu6050::{AccelRange, Config, GyroRange, STANDARD_GRAVITY};
use safegrad::store::Slots;

const MOTION_LEN: usize = 100;

/// What the simulated sensor plays: windows queued by the prompts, one reading per burst
/// read; at rest (gravity alone) when none is queued.
#[derive(Default)]
struct Playback {
    windows: VecDeque<MotionWindow>,
    t: usize,
    bursts: usize,
}

impl Playback {
    /// The next reading, in SI units with gravity along +z: acceleration and rotation rate.
    fn next(&mut self) -> ([f32; 3], [f32; 3]) {
        self.bursts += 1;
        let Some(w) = self.windows.front() else {
            return ([0.0, 0.0, STANDARD_GRAVITY], [0.0; 3]);
        };
        let t = self.t;
        let reading = (
            [w[0][t], w[1][t], w[2][t] + STANDARD_GRAVITY],
            [w[3][t], w[4][t], w[5][t]],
        );
        self.t += 1;
        if self.t == MOTION_LEN {
            self.t = 0;
            self.windows.pop_front();
        }
        reading
    }
}

/// An MPU-6050 at 0x68 as the bus sees it: a register file, the register pointer set by a
/// write's first byte, the measurement registers refreshed by each read from 0x3B.
struct SimMpu6050 {
    registers: [u8; 128],
    pointer: usize,
    playback: Rc<RefCell<Playback>>,
}

impl SimMpu6050 {
    fn new(playback: Rc<RefCell<Playback>>) -> Self {
        let mut registers = [0u8; 128];
        registers[0x75] = mpu6050::WHO_AM_I_VALUE;
        registers[0x6B] = 0x40; // asleep at power-up
        Self {
            registers,
            pointer: 0,
            playback,
        }
    }

    /// Fills 0x3B..=0x48 with the next reading at the configured ranges.
    fn measure(&mut self) {
        let config = Config::BASIC_MOTIONS_10HZ;
        assert_eq!(
            self.registers[0x1C],
            config.accel_range.register_value(),
            "ACCEL_CONFIG as the job sets it"
        );
        assert_eq!(
            self.registers[0x1B],
            config.gyro_range.register_value(),
            "GYRO_CONFIG as the job sets it"
        );
        let (accel, gyro) = self.playback.borrow_mut().next();
        let raw = |v: f32| (v.round().clamp(-32768.0, 32767.0) as i16).to_be_bytes();
        let per_g = AccelRange::G8.lsb_per_g();
        let per_dps = GyroRange::Dps2000.lsb_per_dps();
        let mut burst = Vec::with_capacity(14);
        for a in accel {
            burst.extend(raw(a / STANDARD_GRAVITY * per_g));
        }
        burst.extend([0, 0]); // temperature
        for g in gyro {
            burst.extend(raw(g.to_degrees() * per_dps));
        }
        self.registers[0x3B..0x3B + 14].copy_from_slice(&burst);
    }
}

impl ErrorType for SimMpu6050 {
    type Error = ErrorKind;
}

impl I2c for SimMpu6050 {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), ErrorKind> {
        if address != 0x68 {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in ops {
            match op {
                Operation::Write(bytes) => {
                    let Some((&first, rest)) = bytes.split_first() else {
                        continue;
                    };
                    self.pointer = usize::from(first);
                    for (i, b) in rest.iter().enumerate() {
                        self.registers[self.pointer + i] = *b;
                    }
                }
                Operation::Read(buf) => {
                    if self.pointer == 0x3B {
                        self.measure();
                    }
                    let n = buf.len();
                    buf.copy_from_slice(&self.registers[self.pointer..self.pointer + n]);
                }
            }
        }
        Ok(())
    }
}

/// A delay that does not wait: the recordings play at the sensor's pace, one per read.
struct NoWait;

impl DelayNs for NoWait {
    fn delay_ns(&mut self, _ns: u32) {}
}

/// NOR flash mapped in memory, as a microcontroller's internal flash is: reads go through
/// the mapping, erases set 4 KiB sectors to 0xFF, writes only clear bits (a write that
/// would set one is refused). Every access is through the raw mapping.
struct MappedFlash {
    base: *mut u8,
    len: usize,
}

const SECTOR: usize = 4096;

impl MappedFlash {
    fn new(len: usize) -> Self {
        let image = vec![0xFFu8; len].into_boxed_slice();
        Self {
            base: Box::into_raw(image).cast(),
            len,
        }
    }
}

impl Drop for MappedFlash {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are the leaked box's.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.base, self.len)) });
    }
}

impl FlashErrorType for MappedFlash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for MappedFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len())?;
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: inside the image (checked above).
            *b = unsafe { self.base.add(offset as usize + i).read() };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len
    }
}

impl NorFlash for MappedFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        for i in from as usize..to as usize {
            // SAFETY: inside the image (checked above).
            unsafe { self.base.add(i).write(0xFF) };
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: inside the image (checked above).
            let at = unsafe { self.base.add(offset as usize + i) };
            // SAFETY: as above.
            let old = unsafe { at.read() };
            if old & b != b {
                return Err(NorFlashErrorKind::Other);
            }
            // SAFETY: as above.
            unsafe { at.write(b) };
        }
        Ok(())
    }
}

/// The data flash's layout, as the boards with 4 KiB sectors have it.
const LAYOUT: Layout = Layout {
    slots: Slots::new(0, 8192),
    log: SampleLog {
        train: 16384,
        eval: 24576,
        capacity: 8192,
    },
};

/// The recordings a user would give when prompted: the first `TRAIN_WINDOWS` of each class
/// of the training split to fine-tune on, the first `EVAL_WINDOWS` of the test split to
/// measure on, as `host-sim finetune` picks them; all worn turned by 90 degrees about z.
struct Recordings {
    train: Vec<Vec<MotionWindow>>,
    eval: Vec<Vec<MotionWindow>>,
}

impl Recordings {
    fn load() -> Self {
        let shift = Shift::rotation_z(90.0);
        let split = |name: &str, per_class: usize| {
            let test = name == "test";
            let mut by_class = vec![Vec::new(); CLASSES];
            for (i, e) in load_motions(&default_dir(), name)
                .unwrap()
                .into_iter()
                .enumerate()
            {
                let mut w = e.x;
                shift.apply(&mut w, Shift::stream(test, i));
                if by_class[e.label].len() < per_class {
                    by_class[e.label].push(w);
                }
            }
            by_class
        };
        Self {
            train: split("train", TRAIN_WINDOWS),
            eval: split("test", EVAL_WINDOWS),
        }
    }
}

/// One run of the job on the simulated board: what it reported and the events it sent.
fn run_once(
    flash: &mut MappedFlash,
    recordings: &Recordings,
) -> (
    Result<motion::job::JobReport, board_app::AppError<ErrorKind>>,
    Vec<Event>,
    usize,
) {
    let playback = Rc::new(RefCell::new(Playback::default()));
    let sensor = SimMpu6050::new(Rc::clone(&playback));
    let mut events = Vec::new();
    let cue = Rc::clone(&playback);
    let on_event = |e: Event| {
        if let Event::Perform { class, purpose, .. } = e {
            let windows = match purpose {
                Purpose::Train => &recordings.train[class],
                Purpose::Eval => &recordings.eval[class],
            };
            cue.borrow_mut().windows.extend(windows.iter().copied());
        }
        events.push(e);
    };
    let mut work = Box::new(FinetuneWorkspace::new());
    let mut tick = 0u64;
    let mut ticks = || {
        tick += 1;
        tick
    };
    let mapped = flash.base.cast_const();
    // SAFETY: `mapped` is the flash's image, which only `flash` writes.
    let report = unsafe {
        board_app::run(
            &mut work, sensor, NoWait, flash, mapped, LAYOUT, on_event, &mut ticks,
        )
    };
    let bursts = playback.borrow().bursts;
    (report, events, bursts)
}

/// The job reads every prompted window and nothing else, fine-tunes on the board's
/// recordings, saves; a second run resumes from the saved model, which measures as the
/// first run left it.
#[test]
fn the_board_job_records_fine_tunes_saves_and_resumes() {
    let recordings = Recordings::load();
    let mut flash = MappedFlash::new(32 * 1024);

    let (report, events, bursts) = run_once(&mut flash, &recordings);
    let report = report.expect("the first run");
    let windows = CLASSES * (TRAIN_WINDOWS + EVAL_WINDOWS);
    assert_eq!(
        bursts,
        board_app::CALIBRATION_READINGS + windows * MOTION_LEN,
        "gravity's readings, then every window's, one burst each"
    );
    let mut expected = vec![Event::Calibrating];
    for class in 0..CLASSES {
        for (purpose, windows) in [
            (Purpose::Train, TRAIN_WINDOWS),
            (Purpose::Eval, EVAL_WINDOWS),
        ] {
            expected.push(Event::Perform {
                class,
                purpose,
                windows,
            });
        }
    }
    assert_eq!(&events[..expected.len()], &expected[..]);
    assert!(matches!(events[expected.len()], Event::Recorded { .. }));
    assert_eq!(events.last(), Some(&Event::Saved { seq: 1 }));
    eprintln!(
        "board job: held-out accuracy {} of 40 before fine-tuning, {} after",
        report.correct_before, report.correct_after
    );
    assert_eq!(report.finetune_samples, CLASSES * TRAIN_WINDOWS);
    assert_eq!(report.eval_samples, CLASSES * EVAL_WINDOWS);
    // The pre-trained model, its body trained on turned copies of the recordings, classifies
    // the turned watch (`host-sim finetune`: 40 of 40 with the exact recordings); the job's
    // gate keeps whichever model scores better on the board's own windows, and the model it
    // keeps classifies the held-out windows as well.
    assert!(
        report.correct_before >= 36,
        "before fine-tuning: {} of 40",
        report.correct_before
    );
    assert!(
        report.correct_after >= 36,
        "after fine-tuning: {} of 40",
        report.correct_after
    );
    // The model kept is the pre-trained one, bit for bit, exactly when the gate refused.
    let pretrained = motion::assets::PRETRAINED;
    let pretrained_crc = u32::from_le_bytes(
        pretrained[pretrained.len() - 4..]
            .try_into()
            .expect("4 bytes"),
    );
    assert_eq!(
        report.checkpoint_crc32 == pretrained_crc,
        !report.committed,
        "committed {}, crc32 {:#010x}",
        report.committed,
        report.checkpoint_crc32
    );
    if !report.committed {
        assert_eq!(report.correct_after, report.correct_before);
    }

    let (second, events, _) = run_once(&mut flash, &recordings);
    let second = second.expect("the second run");
    assert_eq!(events.first(), Some(&Event::Resumed { seq: 1 }));
    assert_eq!(
        second.correct_before, report.correct_after,
        "the saved model measures as the first run left it"
    );
    assert_eq!(events.last(), Some(&Event::Saved { seq: 2 }));
}

/// A bus without the sensor is refused before anything is written, naming the sensor.
#[test]
fn no_sensor_is_refused_before_the_flash_is_touched() {
    struct Empty;
    impl ErrorType for Empty {
        type Error = ErrorKind;
    }
    impl I2c for Empty {
        fn transaction(&mut self, _: u8, _: &mut [Operation<'_>]) -> Result<(), ErrorKind> {
            Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
        }
    }
    let mut flash = MappedFlash::new(32 * 1024);
    let mut work = Box::new(FinetuneWorkspace::new());
    let mapped = flash.base.cast_const();
    let mut events = Vec::new();
    // SAFETY: as in `run_once`.
    let result = unsafe {
        board_app::run(
            &mut work,
            Empty,
            NoWait,
            &mut flash,
            mapped,
            LAYOUT,
            |e| events.push(e),
            &mut || 0,
        )
    };
    assert_eq!(
        result.err(),
        Some(board_app::AppError::Sensor(mpu6050::Error::I2c(
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
        )))
    );
    assert!(events.is_empty());
    let mut image = vec![0u8; 32 * 1024];
    flash.read(0, &mut image).unwrap();
    assert!(image.iter().all(|&b| b == 0xFF), "nothing was written");
}
