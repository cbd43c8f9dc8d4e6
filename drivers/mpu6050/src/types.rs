//! Configuration, readings and the error type.

use core::f32::consts::PI;
use core::fmt;

use crate::register::{BitFlags, BURST_LEN, WHO_AM_I_VALUE};

/// Standard gravity, m/s² per g, used to convert accelerometer readings.
pub const STANDARD_GRAVITY: f32 = 9.806_65;

/// Digital low-pass filter setting, `DLPF_CFG` in `CONFIG` (0x1A, bits 2:0), RM §4.3.
///
/// Each variant lists the accelerometer bandwidth and delay, then the gyroscope's, and the
/// gyroscope output rate `SMPLRT_DIV` divides (RM §4.3 table). `DLPF_CFG` = 7 is reserved
/// and not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
        self.fs_sel() << BitFlags::FULL_SCALE_SHIFT
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
        self.afs_sel() << BitFlags::FULL_SCALE_SHIFT
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

/// What [`Mpu6050::init`](crate::Mpu6050::init) writes: output rate, filter and ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
    /// The settings for the job (BasicMotions at 10 Hz), justified in the crate docs:
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
/// With the `defmt` feature it derives `defmt::Format`, which then exists only when `E`
/// implements `defmt::Format` too (e.g. map the bus error to
/// [`embedded_hal::i2c::ErrorKind`] with `embedded-hal`'s `defmt-03` feature, or log with
/// `Display` via `defmt::Display2Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error<E> {
    /// The I²C bus reported an error (no acknowledge, arbitration loss, ...).
    I2c(E),
    /// `WHO_AM_I` (0x75) did not read 0x68: the device at the address is not an MPU-6050
    /// (an MPU-6500 reads 0x70, an MPU-9250 0x71, many clones other values).
    WrongDevice {
        /// The `WHO_AM_I` byte that was read.
        found: u8,
    },
    /// A measurement was requested before [`Mpu6050::init`](crate::Mpu6050::init)
    /// succeeded: the device would still be asleep, or its ranges unknown.
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
