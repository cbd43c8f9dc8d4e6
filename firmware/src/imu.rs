//! Driver for the InvenSense MPU-6050 6-axis IMU (3-axis accelerometer + 3-axis gyroscope)
//! over I²C, generic over [`embedded_hal::i2c::I2c`] (embedded-hal 1.0). `no_std`, no heap,
//! no panics.
//!
//! # Why this part
//!
//! The fine-tuning job learns from BasicMotions: a smart watch's 3-axis accelerometer and
//! 3-axis gyroscope sampled at 10 Hz. The MPU-6050 delivers exactly those six channels from
//! one I²C device, in one 14-byte burst, with an on-chip digital low-pass filter and a sample
//! rate divider that can produce a 10 Hz output directly. It is the most common hobby and
//! teaching IMU (GY-521 breakout), and its register map is public.
//!
//! References (all addresses and numbers below are cited from them):
//! * *MPU-6000 and MPU-6050 Register Map and Descriptions*, RM-MPU-6000A-00, Rev 4.2
//!   ("RM" below);
//! * *MPU-6000 and MPU-6050 Product Specification*, PS-MPU-6000A-00, Rev 3.4 ("PS" below).
//!
//! # Registers used
//!
//! | register | address | written by [`Mpu6050::init`] |
//! | --- | --- | --- |
//! | `SMPLRT_DIV` | 0x19 | [`Config::sample_rate_divider`] |
//! | `CONFIG` | 0x1A | `DLPF_CFG` = [`Config::dlpf`] (bits 2:0), `EXT_SYNC_SET` = 0 (no FSYNC) |
//! | `GYRO_CONFIG` | 0x1B | `FS_SEL` = [`Config::gyro_range`] (bits 4:3), self-test bits 0 |
//! | `ACCEL_CONFIG` | 0x1C | `AFS_SEL` = [`Config::accel_range`] (bits 4:3), self-test bits 0 |
//! | `ACCEL_XOUT_H` .. `GYRO_ZOUT_L` | 0x3B..0x48 | read as one 14-byte burst by [`Mpu6050::read`] |
//! | `PWR_MGMT_1` | 0x6B | 0x01: `SLEEP` = 0, `CYCLE` = 0, `TEMP_DIS` = 0, `CLKSEL` = 1 |
//! | `WHO_AM_I` | 0x75 | read only; must be 0x68 |
//!
//! The device powers up asleep (`PWR_MGMT_1` reset value 0x40, RM §4.28) on its internal
//! 8 MHz oscillator; RM §4.28 "highly recommends" a gyroscope as the clock reference for
//! stability, so `init` selects `CLKSEL` = 1 (PLL with X-axis gyroscope reference) while
//! clearing `SLEEP`.
//!
//! # Default settings, and why
//!
//! [`Config::default`] is chosen for the job's data, BasicMotions at 10 Hz:
//! * **Output rate 10 Hz.** Sample rate = gyroscope output rate / (1 + `SMPLRT_DIV`)
//!   (RM §4.2); with the DLPF enabled the gyroscope output rate is 1 kHz, so
//!   `SMPLRT_DIV` = 99 gives 1 kHz / 100 = 10 Hz. The data registers are refreshed at this
//!   rate (RM §4.2: the sensor register output is "based on the Sample Rate").
//! * **DLPF 5 Hz (`DLPF_CFG` = 6):** accelerometer 5 Hz bandwidth / 19.0 ms delay, gyroscope
//!   5 Hz / 18.6 ms (RM §4.3 table). At 10 Hz the Nyquist frequency is 5 Hz, so this is the
//!   setting that best limits aliasing; the ~19 ms delay is a fifth of a sample period.
//!   (`DLPF_CFG` = 5, 10 Hz, would pass 5–10 Hz content that then folds back.)
//! * **Accelerometer ±8 g (`AFS_SEL` = 2, 4096 LSB/g, PS §6.2).** BasicMotions' running and
//!   badminton recordings reach ±29.4 m/s² (3.0 g) of acceleration with gravity removed; the
//!   MPU-6050 measures gravity too, so up to ~4 g must fit: ±4 g would clip, ±8 g does not.
//!   Resolution is still 2.4 mm/s² per LSB.
//! * **Gyroscope ±2000 °/s (`FS_SEL` = 3, 16.4 LSB/(°/s), PS §6.1).** BasicMotions'
//!   badminton recordings reach 34.87 rad/s = 1998 °/s, the top of this range; running
//!   reaches 13.4 rad/s (765 °/s), beyond ±500 °/s. Resolution is still 0.061 °/s per LSB.
//!
//! # Units
//!
//! [`Mpu6050::read`] returns SI units: acceleration in m/s² (1 g = 9.80665 m/s²,
//! *including* gravity), angular rate in rad/s, die temperature in °C. [`Mpu6050::read_raw`]
//! returns the register values.
//!
//! # Timing the caller must respect
//!
//! * After power-up, allow the start-up time for register read/write (up to 100 ms, PS
//!   §6.3) before [`Mpu6050::init`].
//! * After `init` the gyroscope needs its start-up time (30 ms to ±1 °/s, PS §6.1) and the
//!   DLPF needs to settle: discard samples read within the first ~100 ms (the first
//!   10 Hz sample period).
//! * The driver does not synchronise with the sample clock: polling faster than the output
//!   rate returns the same sample again; polling slower skips samples.
//!
//! `init` does not issue `DEVICE_RESET`; it writes every register the driver relies on, so a
//! device left configured (e.g. after a microcontroller-only reset) is reconfigured fully.

use core::f32::consts::PI;
use core::fmt;

use embedded_hal::i2c::I2c;

/// Standard gravity, m/s² per g, used to convert accelerometer readings.
pub const STANDARD_GRAVITY: f32 = 9.806_65;

/// The value `WHO_AM_I` (0x75) holds on an MPU-6050 (RM §4.32: bits 6:1 = 0b110100, i.e.
/// 0x68, whatever the AD0 pin says).
pub const WHO_AM_I_VALUE: u8 = 0x68;

/// Register addresses (RM §3, register map).
mod reg {
    /// Sample rate divider (RM §4.2).
    pub const SMPLRT_DIV: u8 = 0x19;
    /// FSYNC and DLPF configuration (RM §4.3).
    pub const CONFIG: u8 = 0x1A;
    /// Gyroscope self-test and full-scale range (RM §4.4).
    pub const GYRO_CONFIG: u8 = 0x1B;
    /// Accelerometer self-test and full-scale range (RM §4.5).
    pub const ACCEL_CONFIG: u8 = 0x1C;
    /// First of the 14 measurement registers, 0x3B..=0x48 (RM §4.17–4.19).
    pub const ACCEL_XOUT_H: u8 = 0x3B;
    /// Power management 1 (RM §4.28).
    pub const PWR_MGMT_1: u8 = 0x6B;
    /// Device identity (RM §4.32).
    pub const WHO_AM_I: u8 = 0x75;
}

/// `PWR_MGMT_1` (0x6B) as written by `init`: `DEVICE_RESET` = 0, `SLEEP` = 0, `CYCLE` = 0,
/// `TEMP_DIS` = 0 (temperature sensor on), `CLKSEL` = 1 (PLL, X-axis gyroscope reference).
const PWR_MGMT_1_WAKE_PLL_X: u8 = 0x01;

/// Length of the measurement burst from `ACCEL_XOUT_H` (0x3B) to `GYRO_ZOUT_L` (0x48).
const BURST_LEN: usize = 14;

/// The 7-bit I²C address of the device, set by its AD0 pin (RM §4.32, PS §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum Address {
    /// AD0 tied low: 0x68 (the GY-521 breakout's default, AD0 pulled down).
    Ad0Low,
    /// AD0 tied high: 0x69.
    Ad0High,
}

impl Address {
    /// The 7-bit bus address: 0x68 for [`Address::Ad0Low`], 0x69 for [`Address::Ad0High`].
    pub const fn addr(self) -> u8 {
        match self {
            Address::Ad0Low => 0x68,
            Address::Ad0High => 0x69,
        }
    }
}

/// Digital low-pass filter setting, `DLPF_CFG` in `CONFIG` (0x1A, bits 2:0), RM §4.3.
///
/// Each variant lists the accelerometer bandwidth and delay, then the gyroscope's, and the
/// gyroscope output rate `SMPLRT_DIV` divides (RM §4.3 table). `DLPF_CFG` = 7 is reserved
/// and not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum Dlpf {
    /// `DLPF_CFG` = 0 (filter off): accel 260 Hz / 0 ms, gyro 256 Hz / 0.98 ms, gyro output
    /// rate 8 kHz.
    Bw260Hz,
    /// `DLPF_CFG` = 1: accel 184 Hz / 2.0 ms, gyro 188 Hz / 1.9 ms, gyro output rate 1 kHz.
    Bw184Hz,
    /// `DLPF_CFG` = 2: accel 94 Hz / 3.0 ms, gyro 98 Hz / 2.8 ms, gyro output rate 1 kHz.
    Bw94Hz,
    /// `DLPF_CFG` = 3: accel 44 Hz / 4.9 ms, gyro 42 Hz / 4.8 ms, gyro output rate 1 kHz.
    Bw44Hz,
    /// `DLPF_CFG` = 4: accel 21 Hz / 8.5 ms, gyro 20 Hz / 8.3 ms, gyro output rate 1 kHz.
    Bw21Hz,
    /// `DLPF_CFG` = 5: accel 10 Hz / 13.8 ms, gyro 10 Hz / 13.4 ms, gyro output rate 1 kHz.
    Bw10Hz,
    /// `DLPF_CFG` = 6: accel 5 Hz / 19.0 ms, gyro 5 Hz / 18.6 ms, gyro output rate 1 kHz.
    Bw5Hz,
}

impl Dlpf {
    /// The `DLPF_CFG` field value (0..=6), written to `CONFIG` (0x1A) bits 2:0.
    pub const fn bits(self) -> u8 {
        match self {
            Dlpf::Bw260Hz => 0,
            Dlpf::Bw184Hz => 1,
            Dlpf::Bw94Hz => 2,
            Dlpf::Bw44Hz => 3,
            Dlpf::Bw21Hz => 4,
            Dlpf::Bw10Hz => 5,
            Dlpf::Bw5Hz => 6,
        }
    }

    /// The gyroscope output rate in Hz that `SMPLRT_DIV` divides: 8000 with the filter off
    /// (`DLPF_CFG` = 0), 1000 otherwise (RM §4.2, §4.3).
    pub const fn gyro_output_rate_hz(self) -> u16 {
        match self {
            Dlpf::Bw260Hz => 8000,
            _ => 1000,
        }
    }
}

/// Gyroscope full-scale range, `FS_SEL` in `GYRO_CONFIG` (0x1B, bits 4:3), RM §4.4; the
/// sensitivities are PS §6.1's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum GyroRange {
    /// `FS_SEL` = 0: ±250 °/s, 131 LSB/(°/s).
    Dps250,
    /// `FS_SEL` = 1: ±500 °/s, 65.5 LSB/(°/s).
    Dps500,
    /// `FS_SEL` = 2: ±1000 °/s, 32.8 LSB/(°/s).
    Dps1000,
    /// `FS_SEL` = 3: ±2000 °/s, 16.4 LSB/(°/s).
    Dps2000,
}

impl GyroRange {
    /// The `FS_SEL` field value (0..=3).
    pub const fn fs_sel(self) -> u8 {
        match self {
            GyroRange::Dps250 => 0,
            GyroRange::Dps500 => 1,
            GyroRange::Dps1000 => 2,
            GyroRange::Dps2000 => 3,
        }
    }

    /// The whole `GYRO_CONFIG` (0x1B) byte: `FS_SEL` in bits 4:3, self-test bits 7:5 clear.
    pub const fn register_value(self) -> u8 {
        self.fs_sel() << 3
    }

    /// Sensitivity in LSB per °/s (PS §6.1): 131, 65.5, 32.8, 16.4.
    pub const fn lsb_per_dps(self) -> f32 {
        match self {
            GyroRange::Dps250 => 131.0,
            GyroRange::Dps500 => 65.5,
            GyroRange::Dps1000 => 32.8,
            GyroRange::Dps2000 => 16.4,
        }
    }

    /// Converts a raw gyroscope reading to rad/s: `raw / lsb_per_dps * π / 180`.
    pub fn to_rad_per_s(self, raw: i16) -> f32 {
        f32::from(raw) / self.lsb_per_dps() * (PI / 180.0)
    }
}

/// Accelerometer full-scale range, `AFS_SEL` in `ACCEL_CONFIG` (0x1C, bits 4:3), RM §4.5;
/// the sensitivities are PS §6.2's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum AccelRange {
    /// `AFS_SEL` = 0: ±2 g, 16384 LSB/g.
    G2,
    /// `AFS_SEL` = 1: ±4 g, 8192 LSB/g.
    G4,
    /// `AFS_SEL` = 2: ±8 g, 4096 LSB/g.
    G8,
    /// `AFS_SEL` = 3: ±16 g, 2048 LSB/g.
    G16,
}

impl AccelRange {
    /// The `AFS_SEL` field value (0..=3).
    pub const fn afs_sel(self) -> u8 {
        match self {
            AccelRange::G2 => 0,
            AccelRange::G4 => 1,
            AccelRange::G8 => 2,
            AccelRange::G16 => 3,
        }
    }

    /// The whole `ACCEL_CONFIG` (0x1C) byte: `AFS_SEL` in bits 4:3, self-test bits 7:5 clear.
    pub const fn register_value(self) -> u8 {
        self.afs_sel() << 3
    }

    /// Sensitivity in LSB per g (PS §6.2): 16384, 8192, 4096, 2048.
    pub const fn lsb_per_g(self) -> f32 {
        match self {
            AccelRange::G2 => 16384.0,
            AccelRange::G4 => 8192.0,
            AccelRange::G8 => 4096.0,
            AccelRange::G16 => 2048.0,
        }
    }

    /// Converts a raw accelerometer reading to m/s²: `raw / lsb_per_g * 9.80665`.
    pub fn to_m_per_s2(self, raw: i16) -> f32 {
        f32::from(raw) / self.lsb_per_g() * STANDARD_GRAVITY
    }
}

/// Converts a raw `TEMP_OUT` (0x41–0x42) reading to °C: `raw / 340 + 36.53` (RM §4.18).
pub fn temperature_celsius(raw: i16) -> f32 {
    f32::from(raw) / 340.0 + 36.53
}

/// What [`Mpu6050::init`] writes: output rate, filter and ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub struct Config {
    /// `SMPLRT_DIV` (0x19): output rate = [`Dlpf::gyro_output_rate_hz`] / (1 + this).
    pub sample_rate_divider: u8,
    /// `DLPF_CFG` in `CONFIG` (0x1A).
    pub dlpf: Dlpf,
    /// `FS_SEL` in `GYRO_CONFIG` (0x1B).
    pub gyro_range: GyroRange,
    /// `AFS_SEL` in `ACCEL_CONFIG` (0x1C).
    pub accel_range: AccelRange,
}

impl Config {
    /// The settings for the job (BasicMotions at 10 Hz), justified in the module docs:
    /// `SMPLRT_DIV` = 99 with the DLPF at 5 Hz (`DLPF_CFG` = 6, 1 kHz gyro output rate) for a
    /// 10 Hz output, ±2000 °/s, ±8 g.
    pub const BASIC_MOTIONS_10HZ: Config = Config {
        sample_rate_divider: 99,
        dlpf: Dlpf::Bw5Hz,
        gyro_range: GyroRange::Dps2000,
        accel_range: AccelRange::G8,
    };

    /// The output (sample) rate in Hz, RM §4.2: gyroscope output rate / (1 + `SMPLRT_DIV`).
    ///
    /// The accelerometer's own output rate is 1 kHz; above that, accelerometer samples
    /// repeat (RM §4.2).
    pub fn sample_rate_hz(&self) -> f32 {
        f32::from(self.dlpf.gyro_output_rate_hz()) / (1.0 + f32::from(self.sample_rate_divider))
    }
}

impl Default for Config {
    /// [`Config::BASIC_MOTIONS_10HZ`].
    fn default() -> Self {
        Config::BASIC_MOTIONS_10HZ
    }
}

/// One measurement as the registers hold it, big-endian `i16`s from 0x3B..=0x48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub struct RawSample {
    /// `ACCEL_XOUT`, `ACCEL_YOUT`, `ACCEL_ZOUT` (0x3B–0x40), LSB per g from [`AccelRange`].
    pub accel: [i16; 3],
    /// `TEMP_OUT` (0x41–0x42); see [`temperature_celsius`].
    pub temperature: i16,
    /// `GYRO_XOUT`, `GYRO_YOUT`, `GYRO_ZOUT` (0x43–0x48), LSB per °/s from [`GyroRange`].
    pub gyro: [i16; 3],
}

impl RawSample {
    /// Decodes the 14-byte burst read from `ACCEL_XOUT_H` (0x3B): seven big-endian `i16`s,
    /// accel x/y/z, temperature, gyro x/y/z (RM §4.17–4.19).
    pub fn from_burst(bytes: [u8; BURST_LEN]) -> Self {
        let [axh, axl, ayh, ayl, azh, azl, th, tl, gxh, gxl, gyh, gyl, gzh, gzl] = bytes;
        RawSample {
            accel: [
                i16::from_be_bytes([axh, axl]),
                i16::from_be_bytes([ayh, ayl]),
                i16::from_be_bytes([azh, azl]),
            ],
            temperature: i16::from_be_bytes([th, tl]),
            gyro: [
                i16::from_be_bytes([gxh, gxl]),
                i16::from_be_bytes([gyh, gyl]),
                i16::from_be_bytes([gzh, gzl]),
            ],
        }
    }

    /// Converts to SI units with the given ranges (the ones the device was configured with).
    pub fn to_si(&self, accel_range: AccelRange, gyro_range: GyroRange) -> ImuSample {
        ImuSample {
            accel: self.accel.map(|a| accel_range.to_m_per_s2(a)),
            gyro: self.gyro.map(|g| gyro_range.to_rad_per_s(g)),
            temperature: temperature_celsius(self.temperature),
        }
    }
}

/// One measurement in SI units.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub struct ImuSample {
    /// Acceleration along x, y, z in m/s², gravity included (at rest, about 9.81 m/s² along
    /// the axis pointing up).
    pub accel: [f32; 3],
    /// Angular rate about x, y, z in rad/s.
    pub gyro: [f32; 3],
    /// Die temperature in °C.
    pub temperature: f32,
}

/// What can go wrong talking to the MPU-6050.
///
/// Under `target_os = "none"` it derives `defmt::Format`, which then exists only when `E`
/// implements `defmt::Format` too (e.g. map the bus error to
/// [`embedded_hal::i2c::ErrorKind`] with `embedded-hal`'s `defmt-03` feature, or log with
/// `Display` via `defmt::Display2Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(target_os = "none", derive(defmt::Format))]
pub enum Error<E> {
    /// The I²C bus reported an error (no acknowledge, arbitration loss, ...).
    I2c(E),
    /// `WHO_AM_I` (0x75) did not read 0x68: the device at the address is not an MPU-6050
    /// (an MPU-6500 reads 0x70, an MPU-9250 0x71, many clones other values).
    WrongDevice {
        /// The `WHO_AM_I` byte that was read.
        found: u8,
    },
    /// A measurement was requested before [`Mpu6050::init`] succeeded: the device would
    /// still be asleep, or its ranges unknown.
    NotInitialized,
}

impl<E> From<E> for Error<E> {
    fn from(e: E) -> Self {
        Error::I2c(e)
    }
}

impl<E: fmt::Debug> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::I2c(e) => write!(f, "MPU-6050: I2C bus error: {e:?}"),
            Error::WrongDevice { found } => write!(
                f,
                "MPU-6050: WHO_AM_I (0x75) read {found:#04x}, expected {WHO_AM_I_VALUE:#04x}"
            ),
            Error::NotInitialized => write!(f, "MPU-6050: read before init"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for Error<E> {}

/// An MPU-6050 on an I²C bus.
#[derive(Debug)]
pub struct Mpu6050<I2C> {
    i2c: I2C,
    address: u8,
    /// The configuration written by the last successful `init`.
    config: Option<Config>,
}

impl<I2C: I2c> Mpu6050<I2C> {
    /// Wraps the bus; talks to nothing yet. Call [`Mpu6050::init`] before reading.
    pub fn new(i2c: I2C, address: Address) -> Self {
        Mpu6050 {
            i2c,
            address: address.addr(),
            config: None,
        }
    }

    /// Checks the device and configures it, in this order:
    /// 1. reads `WHO_AM_I` (0x75); anything but 0x68 is [`Error::WrongDevice`] and nothing is
    ///    written;
    /// 2. writes `PWR_MGMT_1` (0x6B) = 0x01: wake (`SLEEP` = 0), PLL with X-gyro reference;
    /// 3. writes `SMPLRT_DIV` (0x19) = `config.sample_rate_divider`;
    /// 4. writes `CONFIG` (0x1A) = `DLPF_CFG` (`EXT_SYNC_SET` = 0, FSYNC unused);
    /// 5. writes `GYRO_CONFIG` (0x1B) = `FS_SEL << 3`;
    /// 6. writes `ACCEL_CONFIG` (0x1C) = `AFS_SEL << 3`.
    ///
    /// On an error the driver stays (or becomes) uninitialised, and `init` can be retried.
    /// See the module docs for the start-up times around it.
    pub fn init(&mut self, config: Config) -> Result<(), Error<I2C::Error>> {
        self.config = None;
        let found = self.read_register(reg::WHO_AM_I)?;
        if found != WHO_AM_I_VALUE {
            return Err(Error::WrongDevice { found });
        }
        self.write_register(reg::PWR_MGMT_1, PWR_MGMT_1_WAKE_PLL_X)?;
        self.write_register(reg::SMPLRT_DIV, config.sample_rate_divider)?;
        self.write_register(reg::CONFIG, config.dlpf.bits())?;
        self.write_register(reg::GYRO_CONFIG, config.gyro_range.register_value())?;
        self.write_register(reg::ACCEL_CONFIG, config.accel_range.register_value())?;
        self.config = Some(config);
        Ok(())
    }

    /// The configuration written by the last successful [`Mpu6050::init`], if any.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    /// Reads one measurement as register values: a single 14-byte burst from
    /// `ACCEL_XOUT_H` (0x3B), so all seven values come from the same sample (RM §4.17).
    ///
    /// [`Error::NotInitialized`] (without touching the bus) before a successful `init`.
    pub fn read_raw(&mut self) -> Result<RawSample, Error<I2C::Error>> {
        if self.config.is_none() {
            return Err(Error::NotInitialized);
        }
        let mut bytes = [0u8; BURST_LEN];
        self.i2c
            .write_read(self.address, &[reg::ACCEL_XOUT_H], &mut bytes)?;
        Ok(RawSample::from_burst(bytes))
    }

    /// Reads one measurement (one burst, as [`Mpu6050::read_raw`]) in SI units, scaled by
    /// the ranges `init` configured: m/s² (LSB/g 16384, 8192, 4096, 2048; g = 9.80665),
    /// rad/s (LSB/(°/s) 131, 65.5, 32.8, 16.4), °C (`TEMP_OUT` / 340 + 36.53).
    pub fn read(&mut self) -> Result<ImuSample, Error<I2C::Error>> {
        let raw = self.read_raw()?;
        let config = self.config.ok_or(Error::NotInitialized)?;
        Ok(raw.to_si(config.accel_range, config.gyro_range))
    }

    /// Gives the bus back, leaving the device as it is (awake and measuring, if initialised).
    pub fn release(self) -> I2C {
        self.i2c
    }

    fn read_register(&mut self, register: u8) -> Result<u8, Error<I2C::Error>> {
        let mut value = [0u8; 1];
        self.i2c.write_read(self.address, &[register], &mut value)?;
        let [value] = value;
        Ok(value)
    }

    fn write_register(&mut self, register: u8, value: u8) -> Result<(), Error<I2C::Error>> {
        self.i2c.write(self.address, &[register, value])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction};

    /// Relative (or, near zero, absolute) closeness for f32 results.
    fn assert_close(actual: f32, expected: f64) {
        let expected = expected as f32;
        let tol = 1e-6 * expected.abs().max(1.0);
        assert!(
            (actual - expected).abs() <= tol,
            "got {actual}, expected {expected}"
        );
    }

    /// The transactions a successful `init` makes, written out byte for byte.
    fn init_transactions(addr: u8, div: u8, config: u8, gyro: u8, accel: u8) -> Vec<Transaction> {
        vec![
            Transaction::write_read(addr, vec![0x75], vec![0x68]),
            Transaction::write(addr, vec![0x6B, 0x01]),
            Transaction::write(addr, vec![0x19, div]),
            Transaction::write(addr, vec![0x1A, config]),
            Transaction::write(addr, vec![0x1B, gyro]),
            Transaction::write(addr, vec![0x1C, accel]),
        ]
    }

    fn burst(addr: u8, bytes: [u8; 14]) -> Transaction {
        Transaction::write_read(addr, vec![0x3B], bytes.to_vec())
    }

    /// A driver at 0x68 after `init` with the given ranges, expecting `then` afterwards.
    fn initialised(
        accel: AccelRange,
        accel_byte: u8,
        gyro: GyroRange,
        gyro_byte: u8,
        then: Vec<Transaction>,
    ) -> Mpu6050<Mock> {
        let mut expected = init_transactions(0x68, 99, 0x06, gyro_byte, accel_byte);
        expected.extend(then);
        let mut imu = Mpu6050::new(Mock::new(&expected), Address::Ad0Low);
        let config = Config {
            accel_range: accel,
            gyro_range: gyro,
            ..Config::default()
        };
        imu.init(config).unwrap();
        imu
    }

    #[test]
    fn imu_init_default_writes_exact_sequence() {
        // SMPLRT_DIV 99, CONFIG DLPF_CFG=6, GYRO_CONFIG FS_SEL=3 (0b11 << 3 = 0x18),
        // ACCEL_CONFIG AFS_SEL=2 (0b10 << 3 = 0x10).
        let expected = init_transactions(0x68, 99, 0x06, 0x18, 0x10);
        let mut imu = Mpu6050::new(Mock::new(&expected), Address::Ad0Low);
        imu.init(Config::default()).unwrap();
        assert_eq!(imu.config(), Some(&Config::default()));
        imu.release().done();
    }

    #[test]
    fn imu_init_custom_config_at_ad0_high() {
        // 0x69; SMPLRT_DIV 7; DLPF off (0); ±500 °/s (1 << 3 = 0x08); ±4 g (1 << 3 = 0x08).
        let expected = init_transactions(0x69, 7, 0x00, 0x08, 0x08);
        let mut imu = Mpu6050::new(Mock::new(&expected), Address::Ad0High);
        let config = Config {
            sample_rate_divider: 7,
            dlpf: Dlpf::Bw260Hz,
            gyro_range: GyroRange::Dps500,
            accel_range: AccelRange::G4,
        };
        imu.init(config).unwrap();
        imu.release().done();
        // 8 kHz / (1 + 7) = 1 kHz.
        assert_eq!(config.sample_rate_hz(), 1000.0);
    }

    #[test]
    fn imu_register_field_values() {
        let dlpf = [
            (Dlpf::Bw260Hz, 0),
            (Dlpf::Bw184Hz, 1),
            (Dlpf::Bw94Hz, 2),
            (Dlpf::Bw44Hz, 3),
            (Dlpf::Bw21Hz, 4),
            (Dlpf::Bw10Hz, 5),
            (Dlpf::Bw5Hz, 6),
        ];
        for (d, bits) in dlpf {
            assert_eq!(d.bits(), bits);
        }
        let gyro = [
            (GyroRange::Dps250, 0x00),
            (GyroRange::Dps500, 0x08),
            (GyroRange::Dps1000, 0x10),
            (GyroRange::Dps2000, 0x18),
        ];
        for (g, byte) in gyro {
            assert_eq!(g.register_value(), byte);
        }
        let accel = [
            (AccelRange::G2, 0x00),
            (AccelRange::G4, 0x08),
            (AccelRange::G8, 0x10),
            (AccelRange::G16, 0x18),
        ];
        for (a, byte) in accel {
            assert_eq!(a.register_value(), byte);
        }
        assert_eq!(Address::Ad0Low.addr(), 0x68);
        assert_eq!(Address::Ad0High.addr(), 0x69);
    }

    #[test]
    fn imu_default_config_samples_at_10_hz() {
        // 1 kHz / (1 + 99).
        assert_eq!(Config::default().sample_rate_hz(), 10.0);
        assert_eq!(Config::default().dlpf.gyro_output_rate_hz(), 1000);
    }

    #[test]
    fn imu_wrong_who_am_i_is_reported_and_nothing_written() {
        // An MPU-6500 answers 0x70; only the WHO_AM_I read may happen.
        let expected = [Transaction::write_read(0x68, vec![0x75], vec![0x70])];
        let mut imu = Mpu6050::new(Mock::new(&expected), Address::Ad0Low);
        assert_eq!(
            imu.init(Config::default()),
            Err(Error::WrongDevice { found: 0x70 })
        );
        assert_eq!(imu.config(), None);
        // Not initialised: reading touches no bus.
        assert_eq!(imu.read(), Err(Error::NotInitialized));
        imu.release().done();
    }

    #[test]
    fn imu_read_before_init_touches_nothing() {
        let mut imu = Mpu6050::new(Mock::new(&[]), Address::Ad0Low);
        assert_eq!(imu.read_raw(), Err(Error::NotInitialized));
        assert_eq!(imu.read(), Err(Error::NotInitialized));
        imu.release().done();
    }

    #[test]
    fn imu_read_converts_known_burst_2g_250dps() {
        let bytes = [
            0xE0, 0x00, // accel x = -8192 -> -0.5 g
            0x00, 0x00, // accel y = 0
            0x40, 0x00, // accel z = 16384 -> 1 g
            0x00, 0x00, // temp = 0 -> 36.53 °C
            0x00, 0x83, // gyro x = 131 -> 1 °/s
            0xFE, 0xFA, // gyro y = -262 -> -2 °/s
            0x80, 0x00, // gyro z = -32768 -> -250.1374 °/s
        ];
        let mut imu = initialised(
            AccelRange::G2,
            0x00,
            GyroRange::Dps250,
            0x00,
            vec![burst(0x68, bytes), burst(0x68, bytes)],
        );
        let raw = imu.read_raw().unwrap();
        assert_eq!(
            raw,
            RawSample {
                accel: [-8192, 0, 16384],
                temperature: 0,
                gyro: [131, -262, -32768],
            }
        );
        let s = imu.read().unwrap();
        assert_close(s.accel[0], -4.903325);
        assert_close(s.accel[1], 0.0);
        assert_close(s.accel[2], 9.80665);
        assert_close(s.temperature, 36.53);
        // π/180 = 0.017453292519943295.
        assert_close(s.gyro[0], 0.017453292519943295);
        assert_close(s.gyro[1], -0.03490658503988659);
        // -32768 / 131 * π/180.
        assert_close(s.gyro[2], -4.365721292316808);
        imu.release().done();
    }

    #[test]
    fn imu_read_extremes_and_temperature() {
        let bytes = [
            0x7F, 0xFF, // accel x = 32767 -> 32767/16384 g at ±2 g
            0x80, 0x00, // accel y = -32768 -> -2 g
            0x00, 0x01, // accel z = 1
            0xFE, 0xAC, // temp = -340 -> 35.53 °C
            0x7F, 0xFF, // gyro x = 32767
            0x00, 0x00, // gyro y
            0xFF, 0xFF, // gyro z = -1
        ];
        let mut imu = initialised(
            AccelRange::G2,
            0x00,
            GyroRange::Dps250,
            0x00,
            vec![burst(0x68, bytes)],
        );
        let s = imu.read().unwrap();
        assert_close(s.accel[0], 19.61270144958496);
        assert_close(s.accel[1], -19.6133);
        assert_close(s.accel[2], 9.80665 / 16384.0);
        assert_close(s.temperature, 35.53);
        // 32767 / 131 °/s = 250.129770992 °/s = 4.365588061 rad/s.
        assert_close(s.gyro[0], 4.365588061076198);
        assert_close(s.gyro[1], 0.0);
        assert_close(s.gyro[2], -0.017453292519943295 / 131.0);
        imu.release().done();

        // 3400 -> 3400/340 + 36.53 = 46.53 °C.
        assert_close(temperature_celsius(3400), 46.53);
    }

    #[test]
    fn imu_other_ranges_scale_correctly() {
        // Each range: accel x = 1 g and accel y = -1 g in its LSB; gyro x = 10 °/s in its LSB.
        // (accel range, ACCEL_CONFIG byte, LSB/g, gyro range, GYRO_CONFIG byte, 10 °/s raw)
        let cases: [(AccelRange, u8, i16, GyroRange, u8, i16); 4] = [
            (AccelRange::G2, 0x00, 16384, GyroRange::Dps250, 0x00, 1310),
            (AccelRange::G4, 0x08, 8192, GyroRange::Dps500, 0x08, 655),
            (AccelRange::G8, 0x10, 4096, GyroRange::Dps1000, 0x10, 328),
            (AccelRange::G16, 0x18, 2048, GyroRange::Dps2000, 0x18, 164),
        ];
        for (accel, accel_byte, lsb_g, gyro, gyro_byte, raw_10dps) in cases {
            let [gh, gl] = raw_10dps.to_be_bytes();
            let [ah, al] = lsb_g.to_be_bytes();
            let [nh, nl] = (-lsb_g).to_be_bytes();
            let bytes = [ah, al, nh, nl, 0, 0, 0, 0, gh, gl, 0, 0, 0, 0];
            let mut imu = initialised(accel, accel_byte, gyro, gyro_byte, vec![burst(0x68, bytes)]);
            let s = imu.read().unwrap();
            assert_close(s.accel[0], 9.80665);
            assert_close(s.accel[1], -9.80665);
            // 10 °/s = 0.17453292519943295 rad/s.
            assert_close(s.gyro[0], 0.17453292519943295);
            imu.release().done();
        }
    }

    #[test]
    fn imu_i2c_error_in_who_am_i_is_passed_through() {
        let expected =
            [Transaction::write_read(0x68, vec![0x75], vec![0x00]).with_error(ErrorKind::Other)];
        let mut imu = Mpu6050::new(Mock::new(&expected), Address::Ad0Low);
        assert_eq!(
            imu.init(Config::default()),
            Err(Error::I2c(ErrorKind::Other))
        );
        imu.release().done();
    }

    #[test]
    fn imu_i2c_error_mid_init_leaves_driver_uninitialised() {
        let expected = [
            Transaction::write_read(0x68, vec![0x75], vec![0x68]),
            Transaction::write(0x68, vec![0x6B, 0x01]),
            Transaction::write(0x68, vec![0x19, 99]),
            Transaction::write(0x68, vec![0x1A, 0x06]).with_error(ErrorKind::ArbitrationLoss),
        ];
        let mut imu = Mpu6050::new(Mock::new(&expected), Address::Ad0Low);
        assert_eq!(
            imu.init(Config::default()),
            Err(Error::I2c(ErrorKind::ArbitrationLoss))
        );
        assert_eq!(imu.config(), None);
        assert_eq!(imu.read(), Err(Error::NotInitialized));
        imu.release().done();
    }

    #[test]
    fn imu_i2c_error_in_read_is_passed_through() {
        let failing = burst(0x68, [0; 14]).with_error(ErrorKind::Bus);
        let mut imu = initialised(
            AccelRange::G8,
            0x10,
            GyroRange::Dps2000,
            0x18,
            vec![failing],
        );
        assert_eq!(imu.read(), Err(Error::I2c(ErrorKind::Bus)));
        imu.release().done();
    }

    #[test]
    fn imu_error_display() {
        let e: Error<ErrorKind> = Error::WrongDevice { found: 0x70 };
        assert_eq!(
            e.to_string(),
            "MPU-6050: WHO_AM_I (0x75) read 0x70, expected 0x68"
        );
        let e: Error<ErrorKind> = Error::I2c(ErrorKind::Other);
        assert_eq!(e.to_string(), "MPU-6050: I2C bus error: Other");
        let e: Error<ErrorKind> = Error::NotInitialized;
        assert_eq!(e.to_string(), "MPU-6050: read before init");
    }
}
