//! Where the device's samples come from: a [`SampleSource`] yields labelled feature rows,
//! whatever produced them: a set built into flash ([`BuiltIn`]), raw IMU windows streamed
//! over a serial line ([`Stream`]), or the IMU itself ([`Imu`], through the [`mpu6050`]
//! driver).

use core::fmt;

use safegrad::dataset::Dataset;

use crate::features::{imu_features, imu_features_of, IMU_CHANNELS, IMU_FEATURES};
use crate::model::CLASSES;
use crate::wire::{parse_packet, FrameDecoder, Kind, Message, WireError};

/// Samples per channel of a window: 10 s at 10 Hz.
pub const WINDOW_LEN: usize = 100;
/// Values of a streamed window.
pub const WINDOW_VALUES: usize = IMU_CHANNELS * WINDOW_LEN;
/// Largest magnitude a streamed value may have: above the MPU-6050's widest full-scale
/// ranges (16 g = 156.9 m/s^2, 2000 deg/s = 34.9 rad/s). Anything beyond is not a reading.
pub const VALUE_BOUND: f32 = 160.0;
/// Bytes of the stream's receive buffer: one COBS frame of a window with its header and CRC.
pub const FRAME_CAPACITY: usize = 2560;

/// What a sample is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Purpose {
    /// Fine-tune on it.
    Train,
    /// Measure accuracy on it.
    Eval,
}

/// A labelled feature row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// The features of one window.
    pub features: [f32; IMU_FEATURES],
    /// Its class.
    pub label: usize,
    /// Train or evaluate.
    pub purpose: Purpose,
}

/// A supply of labelled samples.
pub trait SampleSource {
    /// Why the source cannot go on.
    type Error;

    /// The next sample, or `None` when the source has no more.
    fn next_sample(&mut self) -> Result<Option<Sample>, Self::Error>;
}

/// Samples built into flash: a training set, then an evaluation set.
pub struct BuiltIn<'a> {
    train: Dataset<'a, f32, IMU_FEATURES>,
    eval: Dataset<'a, f32, IMU_FEATURES>,
    next: usize,
}

impl<'a> BuiltIn<'a> {
    /// A source over two checked data sets.
    pub fn new(
        train: Dataset<'a, f32, IMU_FEATURES>,
        eval: Dataset<'a, f32, IMU_FEATURES>,
    ) -> Self {
        Self {
            train,
            eval,
            next: 0,
        }
    }
}

impl SampleSource for BuiltIn<'_> {
    type Error = core::convert::Infallible;

    fn next_sample(&mut self) -> Result<Option<Sample>, Self::Error> {
        let i = self.next;
        self.next += 1;
        let (row, purpose) = if i < self.train.len() {
            (self.train.get(i), Purpose::Train)
        } else {
            (self.eval.get(i - self.train.len()), Purpose::Eval)
        };
        Ok(row.map(|(features, label)| Sample {
            features,
            label,
            purpose,
        }))
    }
}

/// Counts of what a [`Stream`] refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rejected {
    /// Frames refused by the framing or the packet checks.
    pub frames: u32,
    /// Of those, CRC mismatches.
    pub crc: u32,
    /// Of those, values that are not finite or out of range.
    pub values: u32,
    /// Gaps in the sequence numbers (frames lost on the line).
    pub gaps: u32,
    /// The last refusal.
    pub last: Option<WireError>,
}

/// A stream error that ends the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StreamError<E> {
    /// The serial line failed.
    Io(E),
}

impl<E: fmt::Debug> fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "serial line error: {e:?}"),
        }
    }
}

/// Raw IMU windows streamed in [`wire`](crate::wire) frames over any `embedded_io::Read`: each
/// good frame becomes a window, then its features, computed on the device. A malformed
/// frame is refused, counted in [`Rejected`], and the stream resynchronises at the next
/// frame; the model never sees it.
pub struct Stream<R> {
    reader: R,
    decoder: FrameDecoder<FRAME_CAPACITY>,
    expected_seq: Option<u16>,
    rejected: Rejected,
    accepted: u32,
}

impl<R: embedded_io::Read> Stream<R> {
    /// A stream over `reader`.
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            decoder: FrameDecoder::new(),
            expected_seq: None,
            rejected: Rejected::default(),
            accepted: 0,
        }
    }

    /// What was refused so far.
    pub fn rejected(&self) -> Rejected {
        self.rejected
    }

    /// Samples accepted so far.
    pub fn accepted(&self) -> u32 {
        self.accepted
    }

    /// Gives the reader back.
    pub fn release(self) -> R {
        self.reader
    }

    fn refuse(&mut self, e: WireError) {
        self.rejected.frames += 1;
        match e {
            WireError::Crc { .. } => self.rejected.crc += 1,
            WireError::NonFinite { .. } | WireError::OutOfRange { .. } => {
                self.rejected.values += 1;
            }
            _ => {}
        }
        self.rejected.last = Some(e);
    }
}

/// The features of a checked packet's window, computed from the packet's values where they
/// lie (channel-major), without a copy of the window.
fn window_features(message: &Message<'_>) -> Option<[f32; IMU_FEATURES]> {
    let channel = |c: usize| message.values_in(c * WINDOW_LEN..(c + 1) * WINDOW_LEN);
    let f = imu_features_of(WINDOW_LEN, channel).ok()?;
    let mut out = [0.0f32; IMU_FEATURES];
    out.copy_from_slice(f.as_slice());
    Some(out)
}

/// What [`Stream::next_with`] kept of a window, with its class and purpose.
pub type Kept<O> = (O, usize, Purpose);

impl<R: embedded_io::Read> Stream<R> {
    /// Reads frames until the next good window, hands it to `keep` where it lies in the
    /// frame (a checked message: the values finite and in range), and returns what `keep`
    /// made of it with its class and purpose; `None` at the end of the stream. A frame
    /// `keep` refuses (`None`) is counted as refused for its values, like a bad frame.
    pub fn next_with<O>(
        &mut self,
        keep: &mut dyn FnMut(&Message<'_>, Purpose) -> Option<O>,
    ) -> Result<Option<Kept<O>>, StreamError<R::Error>> {
        let mut byte = [0u8; 1];
        loop {
            let n = self.reader.read(&mut byte).map_err(StreamError::Io)?;
            if n == 0 {
                return Ok(None);
            }
            let Some(frame) = self.decoder.push(byte[0]) else {
                continue;
            };
            let checked = frame.and_then(|packet| {
                parse_packet(packet, WINDOW_VALUES, CLASSES, VALUE_BOUND).map(|m| {
                    let purpose = match m.kind {
                        Kind::End => None,
                        Kind::Train => Some(Purpose::Train),
                        Kind::Eval => Some(Purpose::Eval),
                    };
                    let kept = purpose.and_then(|p| keep(&m, p).map(|o| (o, p)));
                    (m.seq, m.label, purpose.is_none(), kept)
                })
            });
            let (seq, label, end, kept) = match checked {
                Ok(x) => x,
                Err(e) => {
                    self.refuse(e);
                    continue;
                }
            };
            if self.expected_seq.is_some_and(|s| s != seq) {
                self.rejected.gaps += 1;
            }
            self.expected_seq = Some(seq.wrapping_add(1));
            if end {
                return Ok(None);
            }
            let Some((kept, purpose)) = kept else {
                self.refuse(WireError::NonFinite { index: 0 });
                continue;
            };
            self.accepted += 1;
            return Ok(Some((kept, label, purpose)));
        }
    }
}

impl<R: embedded_io::Read> SampleSource for Stream<R> {
    type Error = StreamError<R::Error>;

    /// The next window's features, computed from the frame's values where they lie.
    /// Finite, bounded values always give finite features; a window that did not would be
    /// refused like a bad frame.
    fn next_sample(&mut self) -> Result<Option<Sample>, Self::Error> {
        let next = self.next_with(&mut |m, _| window_features(m))?;
        Ok(next.map(|(features, label, purpose)| Sample {
            features,
            label,
            purpose,
        }))
    }
}

/// Windows read from an MPU-6050 at 10 Hz: [`WINDOW_LEN`] readings 100 ms apart, one
/// window per sample, labelled with the class the user says is going on (e.g. set from a
/// button or an app). Gravity is removed from the acceleration with a vector measured at
/// rest by [`Imu::calibrate`], since the training data's accelerometer channels do not
/// contain it. Samples are for training; `purpose` can be changed for evaluation.
pub struct Imu<I2C, D> {
    sensor: mpu6050::Mpu6050<I2C>,
    delay: D,
    gravity: [f32; 3],
    /// The class of the next windows.
    pub label: usize,
    /// What the next windows are for.
    pub purpose: Purpose,
    /// Windows to read before the source ends (`None`: never ends).
    pub remaining: Option<usize>,
}

impl<I2C: embedded_hal::i2c::I2c, D: embedded_hal::delay::DelayNs> Imu<I2C, D> {
    /// Milliseconds between readings (10 Hz).
    pub const PERIOD_MS: u32 = 100;

    /// A source over an initialised sensor.
    pub fn new(sensor: mpu6050::Mpu6050<I2C>, delay: D, label: usize) -> Self {
        Self {
            sensor,
            delay,
            gravity: [0.0; 3],
            label,
            purpose: Purpose::Train,
            remaining: None,
        }
    }

    /// Measures gravity as the mean of `readings` accelerations taken at rest, 100 ms apart.
    pub fn calibrate(&mut self, readings: usize) -> Result<[f32; 3], mpu6050::Error<I2C::Error>> {
        let mut sum = [0.0f32; 3];
        for _ in 0..readings {
            let s = self.sensor.read()?;
            for (acc, a) in sum.iter_mut().zip(s.accel) {
                *acc += a;
            }
            self.delay.delay_ms(Self::PERIOD_MS);
        }
        let n = readings.max(1) as f32;
        self.gravity = sum.map(|v| v / n);
        Ok(self.gravity)
    }

    /// Gives the sensor and the delay back.
    pub fn release(self) -> (mpu6050::Mpu6050<I2C>, D) {
        (self.sensor, self.delay)
    }
}

impl<I2C: embedded_hal::i2c::I2c, D: embedded_hal::delay::DelayNs> SampleSource for Imu<I2C, D> {
    type Error = mpu6050::Error<I2C::Error>;

    fn next_sample(&mut self) -> Result<Option<Sample>, Self::Error> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        let mut window = [[0.0f32; WINDOW_LEN]; IMU_CHANNELS];
        for t in 0..WINDOW_LEN {
            let s = self.sensor.read()?;
            let linear = [
                s.accel[0] - self.gravity[0],
                s.accel[1] - self.gravity[1],
                s.accel[2] - self.gravity[2],
            ];
            for (channel, v) in window.iter_mut().zip(linear.iter().chain(&s.gyro)) {
                if let Some(slot) = channel.get_mut(t) {
                    *slot = *v;
                }
            }
            self.delay.delay_ms(Self::PERIOD_MS);
        }
        if let Some(r) = self.remaining.as_mut() {
            *r -= 1;
        }
        let Ok(f) = imu_features(&window) else {
            return Ok(None);
        };
        let mut features = [0.0f32; IMU_FEATURES];
        features.copy_from_slice(f.as_slice());
        Ok(Some(Sample {
            features,
            label: self.label,
            purpose: self.purpose,
        }))
    }
}

/// A source that can be told what comes next: the class of its next windows, what they are
/// for, and how many to read before it ends (a sensor whose label the user sets).
pub trait Directed: SampleSource {
    /// The next `windows` samples are of class `label`, for `purpose`; then the source ends
    /// until it is directed again.
    fn direct(&mut self, label: usize, purpose: Purpose, windows: usize);
}

impl<I2C: embedded_hal::i2c::I2c, D: embedded_hal::delay::DelayNs> Directed for Imu<I2C, D> {
    fn direct(&mut self, label: usize, purpose: Purpose, windows: usize) {
        self.label = label;
        self.purpose = purpose;
        self.remaining = Some(windows);
    }
}

/// A guided recording session: every class in turn, `train` windows to fine-tune on then
/// `eval` windows to measure, from a [`Directed`] source. Before each run of windows it calls
/// `prompt` with the class and the purpose, for the board to tell the user what to do (an
/// LED, a log line, a display). It ends after the last class's evaluation windows.
///
/// ```
/// use motion::samples::{Directed, Guided, Purpose, Sample, SampleSource};
/// # struct Fake { label: usize, purpose: Purpose, left: usize }
/// # impl SampleSource for Fake {
/// #     type Error = ();
/// #     fn next_sample(&mut self) -> Result<Option<Sample>, ()> {
/// #         if self.left == 0 { return Ok(None); }
/// #         self.left -= 1;
/// #         Ok(Some(Sample { features: [0.0; 16], label: self.label, purpose: self.purpose }))
/// #     }
/// # }
/// # impl Directed for Fake {
/// #     fn direct(&mut self, label: usize, purpose: Purpose, windows: usize) {
/// #         (self.label, self.purpose, self.left) = (label, purpose, windows);
/// #     }
/// # }
/// let sensor = Fake { label: 0, purpose: Purpose::Train, left: 0 };
/// let mut prompts = 0;
/// let mut guided = Guided::new(sensor, 3, 10, |_class, _purpose| prompts += 1);
/// let mut samples = 0;
/// while let Some(_) = guided.next_sample().unwrap() {
///     samples += 1;
/// }
/// assert_eq!(samples, 4 * (3 + 10));
/// drop(guided);
/// assert_eq!(prompts, 4 * 2);
/// ```
pub struct Guided<S, P> {
    source: S,
    train: usize,
    eval: usize,
    prompt: P,
    /// Runs of windows started: class `started / 2`, training then evaluation.
    started: usize,
}

impl<S: Directed, P: FnMut(usize, Purpose)> Guided<S, P> {
    /// A session over `source`: `train` and `eval` windows of each class.
    pub fn new(source: S, train: usize, eval: usize, prompt: P) -> Self {
        Self {
            source,
            train,
            eval,
            prompt,
            started: 0,
        }
    }

    /// Gives the source back.
    pub fn release(self) -> S {
        self.source
    }
}

impl<S: Directed, P: FnMut(usize, Purpose)> SampleSource for Guided<S, P> {
    type Error = S::Error;

    fn next_sample(&mut self) -> Result<Option<Sample>, Self::Error> {
        loop {
            if self.started > 0 {
                if let Some(sample) = self.source.next_sample()? {
                    return Ok(Some(sample));
                }
            }
            if self.started >= 2 * CLASSES {
                return Ok(None);
            }
            let class = self.started / 2;
            let (purpose, windows) = if self.started.is_multiple_of(2) {
                (Purpose::Train, self.train)
            } else {
                (Purpose::Eval, self.eval)
            };
            self.started += 1;
            (self.prompt)(class, purpose);
            self.source.direct(class, purpose, windows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode_frame;

    /// A source that counts what it is told: `left` samples of the directed class.
    struct Counting {
        label: usize,
        purpose: Purpose,
        left: usize,
        directions: Vec<(usize, Purpose, usize)>,
    }

    impl SampleSource for Counting {
        type Error = ();
        fn next_sample(&mut self) -> Result<Option<Sample>, ()> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            Ok(Some(Sample {
                features: [self.left as f32; IMU_FEATURES],
                label: self.label,
                purpose: self.purpose,
            }))
        }
    }

    impl Directed for Counting {
        fn direct(&mut self, label: usize, purpose: Purpose, windows: usize) {
            (self.label, self.purpose, self.left) = (label, purpose, windows);
            self.directions.push((label, purpose, windows));
        }
    }

    /// Every class in turn, training windows then evaluation ones, each run prompted before
    /// it starts; then the source ends and stays ended.
    #[test]
    fn a_guided_session_walks_every_class_in_order() {
        let source = Counting {
            label: 9,
            purpose: Purpose::Eval,
            left: 5,
            directions: Vec::new(),
        };
        let mut prompts = Vec::new();
        let mut guided = Guided::new(source, 2, 1, |c, p| prompts.push((c, p)));
        let mut seen = Vec::new();
        while let Some(s) = guided.next_sample().unwrap() {
            seen.push((s.label, s.purpose));
        }
        assert_eq!(guided.next_sample(), Ok(None));
        let source = guided.release();
        let mut expected = Vec::new();
        for class in 0..CLASSES {
            expected.extend([(class, Purpose::Train); 2]);
            expected.push((class, Purpose::Eval));
        }
        assert_eq!(
            seen, expected,
            "the samples left before the session are not read"
        );
        let runs: Vec<_> = (0..CLASSES)
            .flat_map(|c| [(c, Purpose::Train), (c, Purpose::Eval)])
            .collect();
        assert_eq!(prompts, runs);
        let told: Vec<_> = source.directions.iter().map(|&(c, p, _)| (c, p)).collect();
        assert_eq!(told, runs);
    }

    /// A run that ends early (a window the sensor could not read) moves on to the next.
    #[test]
    fn a_run_with_no_windows_moves_on() {
        let source = Counting {
            label: 0,
            purpose: Purpose::Train,
            left: 0,
            directions: Vec::new(),
        };
        let mut guided = Guided::new(source, 0, 1, |_, _| {});
        let mut n = 0;
        while let Some(s) = guided.next_sample().unwrap() {
            assert_eq!(s.purpose, Purpose::Eval);
            n += 1;
        }
        assert_eq!(n, CLASSES);
    }

    fn window(seed: f32) -> Vec<f32> {
        (0..WINDOW_VALUES)
            .map(|i| ((i as f32) * 0.37 + seed).sin() * 3.0)
            .collect()
    }

    fn frame(kind: Kind, seq: u16, label: u8, values: &[f32]) -> Vec<u8> {
        let mut out = vec![0u8; 6000];
        let n = encode_frame(kind, seq, label, values, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// The features of the window held as an array (the stream computes them from the
    /// frame's bytes where they lie).
    fn expected_features(values: &[f32]) -> [f32; IMU_FEATURES] {
        let mut window = [[0.0f32; WINDOW_LEN]; IMU_CHANNELS];
        for (slot, &v) in window.iter_mut().flatten().zip(values) {
            *slot = v;
        }
        let mut out = [0.0f32; IMU_FEATURES];
        out.copy_from_slice(imu_features(&window).unwrap().as_slice());
        out
    }

    #[test]
    fn good_frames_become_samples_and_bad_ones_are_counted_and_skipped() {
        let (a, b) = (window(0.0), window(1.0));
        let mut bytes = frame(Kind::Train, 0, 1, &a);
        let mut corrupt = frame(Kind::Train, 1, 2, &b);
        corrupt[40] ^= 0x55; // a damaged frame
        bytes.extend(&corrupt);
        let mut nan = b.clone();
        nan[10] = f32::NAN;
        bytes.extend(frame(Kind::Train, 2, 2, &nan));
        bytes.extend([0x13, 0x37, 0x00]); // line noise, flushed by the sender's leading 0x00
        bytes.extend(frame(Kind::Eval, 3, 3, &b));
        bytes.extend(frame(Kind::End, 4, 0, &[]));
        let mut s = Stream::new(&bytes[..]);
        let first = s.next_sample().unwrap().unwrap();
        assert_eq!((first.label, first.purpose), (1, Purpose::Train));
        assert_eq!(first.features, expected_features(&a));
        let second = s.next_sample().unwrap().unwrap();
        assert_eq!((second.label, second.purpose), (3, Purpose::Eval));
        assert_eq!(s.next_sample().unwrap(), None);
        let r = s.rejected();
        // The damaged frame (CRC), the NaN (values) and the noise (COBS); the accepted
        // sequence numbers jump from 0 to 3 once.
        assert_eq!(r.frames, 3, "{r:?}");
        assert_eq!(r.crc, 1);
        assert_eq!(r.gaps, 1);
        assert_eq!(r.values, 1);
        assert_eq!(s.accepted(), 2);
    }

    #[test]
    fn the_built_in_set_yields_training_then_evaluation_samples() {
        let train = Dataset::parse(crate::assets::FINETUNE_SET).unwrap();
        let eval = Dataset::parse(crate::assets::EVAL_SET).unwrap();
        let (n_train, n_eval) = (train.len(), eval.len());
        let mut src = BuiltIn::new(train, eval);
        let mut purposes = Vec::new();
        while let Some(s) = src.next_sample().unwrap() {
            purposes.push(s.purpose);
        }
        assert_eq!(purposes.len(), n_train + n_eval);
        assert!(purposes[..n_train].iter().all(|p| *p == Purpose::Train));
        assert!(purposes[n_train..].iter().all(|p| *p == Purpose::Eval));
    }
}

#[cfg(test)]
mod imu_tests {
    use super::*;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
    use mpu6050::{Address, Config, Mpu6050};

    const ADDR: u8 = 0x68;

    /// A burst (accel x, y, z, temperature, gyro x, y, z; big-endian) at the default
    /// ranges: +-8 g (4096 LSB/g) and +-2000 deg/s (16.4 LSB per deg/s).
    fn burst(accel: [i16; 3], gyro: [i16; 3]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in accel.iter().chain(&[0i16]).chain(&gyro) {
            b.extend(v.to_be_bytes());
        }
        b
    }

    fn init_transactions() -> Vec<Transaction> {
        vec![
            Transaction::write_read(ADDR, vec![0x75], vec![0x68]),
            Transaction::write(ADDR, vec![0x6B, 0x01]),
            Transaction::write(ADDR, vec![0x19, 99]),
            Transaction::write(ADDR, vec![0x1A, 0x06]),
            Transaction::write(ADDR, vec![0x1B, 0x18]),
            Transaction::write(ADDR, vec![0x1C, 0x10]),
        ]
    }

    #[test]
    fn a_window_of_readings_becomes_one_sample_with_gravity_removed() {
        let mut t = init_transactions();
        // Calibration at rest: 1 g on z (4096 LSB).
        for _ in 0..4 {
            t.push(Transaction::write_read(
                ADDR,
                vec![0x3B],
                burst([0, 0, 4096], [0, 0, 0]),
            ));
        }
        // A window: z still at 1 g, x alternating +-0.5 g, gyro x at 164 (10 deg/s).
        for i in 0..WINDOW_LEN {
            let x = if i % 2 == 0 { 2048 } else { -2048 };
            t.push(Transaction::write_read(
                ADDR,
                vec![0x3B],
                burst([x, 0, 4096], [164, 0, 0]),
            ));
        }
        let mut i2c = Mock::new(&t);
        let mut sensor = Mpu6050::new(i2c.clone(), Address::Ad0Low);
        sensor.init(Config::default()).unwrap();
        let mut source = Imu::new(sensor, NoopDelay::new(), 2);
        source.remaining = Some(1);
        let g = source.calibrate(4).unwrap();
        assert!((g[2] - 9.80665).abs() < 1e-4, "{g:?}");
        let s = source.next_sample().unwrap().unwrap();
        assert_eq!((s.label, s.purpose), (2, Purpose::Train));
        // Features: ax mean 0, std 0.5 g; az mean 0 after removing gravity; gx 10 deg/s.
        let half_g = 0.5 * 9.80665;
        assert!(s.features[0].abs() < 1e-4);
        assert!((s.features[1] - half_g).abs() < 1e-3, "{}", s.features[1]);
        assert!(s.features[4].abs() < 1e-4);
        assert!((s.features[6] - 10f32.to_radians()).abs() < 1e-5);
        assert_eq!(source.next_sample().unwrap(), None);
        i2c.done();
    }
}
