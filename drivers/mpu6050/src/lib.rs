//! Driver for the InvenSense MPU-6050 6-axis IMU (3-axis accelerometer + 3-axis gyroscope)
//! over I²C, generic over [`embedded_hal::i2c::I2c`] (embedded-hal 1.0). `no_std`, no heap,
//! no panics.
//!
//! [`Mpu6050::init`] checks the chip's identity and configures output rate, low-pass filter
//! and full-scale ranges ([`Config`]); [`Mpu6050::read`] reads accelerometer, temperature
//! and gyroscope in one burst and scales them to SI units ([`ImuSample`]);
//! [`Mpu6050::read_raw`] returns the register values ([`RawSample`]). [`Mpu6050::who_am_i`]
//! reads the identity alone, e.g. to probe a bus.
//!
//! # Example
//!
//! On a board, `i2c` is the HAL's I²C peripheral; here it is `embedded-hal-mock`'s, which
//! checks that the driver makes exactly these transactions. A device lying flat, at rest:
//!
//! ```
//! use embedded_hal::i2c::ErrorKind;
//! use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
//! use mpu6050::{Address, Config, Error, Mpu6050};
//!
//! let expected = [
//!     // init: WHO_AM_I, then PWR_MGMT_1, SMPLRT_DIV, CONFIG, GYRO_CONFIG, ACCEL_CONFIG.
//!     Transaction::write_read(0x68, vec![0x75], vec![0x68]),
//!     Transaction::write(0x68, vec![0x6B, 0x01]),
//!     Transaction::write(0x68, vec![0x19, 99]),
//!     Transaction::write(0x68, vec![0x1A, 0x06]),
//!     Transaction::write(0x68, vec![0x1B, 0x18]),
//!     Transaction::write(0x68, vec![0x1C, 0x10]),
//!     // read: one burst from ACCEL_XOUT_H; accel z = 4096 (1 g at ±8 g), gyro x = 164
//!     // (10 °/s at ±2000 °/s), temperature 0 (36.53 °C).
//!     Transaction::write_read(
//!         0x68,
//!         vec![0x3B],
//!         vec![0, 0, 0, 0, 0x10, 0x00, 0, 0, 0x00, 0xA4, 0, 0, 0, 0],
//!     ),
//! ];
//! let i2c = Mock::new(&expected);
//!
//! let mut imu = Mpu6050::new(i2c, Address::Ad0Low);
//! imu.init(Config::default())?;
//! let sample = imu.read()?;
//! assert!((sample.accel[2] - 9.806_65).abs() < 1e-4); // m/s²
//! assert!((sample.gyro[0] - 10f32.to_radians()).abs() < 1e-5); // rad/s
//! assert!((sample.temperature - 36.53).abs() < 1e-4); // °C
//!
//! imu.release().done();
//! # Ok::<(), Error<ErrorKind>>(())
//! ```
//!
//! # Features
//!
//! * `defmt`: `defmt::Format` for [`Address`], the configuration types, the readings and
//!   [`Error`].
//!
//! # Why this part
//!
//! safegrad's fine-tuning job learns from BasicMotions: a smart watch's 3-axis
//! accelerometer and 3-axis gyroscope sampled at 10 Hz. The MPU-6050 delivers exactly those
//! six channels from one I²C device, in one 14-byte burst, with an on-chip digital low-pass
//! filter and a sample rate divider that can produce a 10 Hz output directly. It is the most common hobby and
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
//! The driver itself never waits, so it takes no `DelayNs`: the caller times its reads
//! anyway (e.g. one every 100 ms at 10 Hz) and can fold these waits into that schedule.
//!
//! `init` does not issue `DEVICE_RESET`; it writes every register the driver relies on, so a
//! device left configured (e.g. after a microcontroller-only reset) is reconfigured fully.

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// The driver runs inside firmware that must not stop: every failure is an `Error`.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod device_impl;
mod interface;
mod register;
mod types;

pub use crate::interface::Address;
pub use crate::register::WHO_AM_I_VALUE;
pub use crate::types::{
    temperature_celsius, AccelRange, Config, Dlpf, Error, GyroRange, ImuSample, RawSample,
    STANDARD_GRAVITY,
};

/// An MPU-6050 on an I²C bus.
///
/// Created with [`Mpu6050::new`], configured with [`Mpu6050::init`], read with
/// [`Mpu6050::read`] or [`Mpu6050::read_raw`]; [`Mpu6050::release`] gives the bus back.
#[derive(Debug)]
pub struct Mpu6050<I2C> {
    iface: interface::I2cInterface<I2C>,
    /// The configuration written by the last successful `init`: readings are scaled by its
    /// ranges, and none are taken without it.
    config: Option<Config>,
}
