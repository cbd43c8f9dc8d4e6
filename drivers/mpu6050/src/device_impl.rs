//! The driver's methods: construction, identification, configuration and readings.

use embedded_hal::i2c::I2c;

use crate::interface::{Address, I2cInterface};
use crate::register::{BitFlags, Register, BURST_LEN, PWR_MGMT_1_WAKE_PLL_X, WHO_AM_I_VALUE};
use crate::{Config, Error, ImuSample, Mpu6050, RawSample};

impl<I2C: I2c> Mpu6050<I2C> {
    /// Wraps the bus; talks to nothing yet. Call [`Mpu6050::init`] before reading.
    pub fn new(i2c: I2C, address: Address) -> Self {
        Mpu6050 {
            iface: I2cInterface {
                i2c,
                address: address.addr(),
            },
            config: None,
        }
    }

    /// Reads `WHO_AM_I` (0x75), which holds [`WHO_AM_I_VALUE`] (0x68) on an MPU-6050.
    ///
    /// Only reads: it neither wakes nor configures the device, and does not change what
    /// [`Mpu6050::config`] returns. [`Mpu6050::init`] makes the same check itself.
    pub fn who_am_i(&mut self) -> Result<u8, Error<I2C::Error>> {
        Ok(self.iface.read_register(Register::WHO_AM_I)?)
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
    /// See the crate docs for the start-up times around it.
    pub fn init(&mut self, config: Config) -> Result<(), Error<I2C::Error>> {
        // Cleared first: a failure part-way leaves the device in a state that matches neither
        // the old configuration nor the new one, so no reading may be scaled by either.
        self.config = None;
        let found = self.who_am_i()?;
        if found != WHO_AM_I_VALUE {
            return Err(Error::WrongDevice { found });
        }
        self.iface
            .write_register(Register::PWR_MGMT_1, PWR_MGMT_1_WAKE_PLL_X)?;
        self.iface
            .write_register(Register::SMPLRT_DIV, config.sample_rate_divider)?;
        self.iface.write_register(
            Register::CONFIG,
            config.dlpf.bits() & BitFlags::DLPF_CFG_MASK,
        )?;
        self.iface
            .write_register(Register::GYRO_CONFIG, config.gyro_range.register_value())?;
        self.iface
            .write_register(Register::ACCEL_CONFIG, config.accel_range.register_value())?;
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
        self.iface
            .read_registers(Register::ACCEL_XOUT_H, &mut bytes)?;
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
        self.iface.i2c
    }
}
