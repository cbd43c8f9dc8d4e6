//! The I²C transport: the device's bus address and register reads and writes.
//!
//! Every access is one bus transaction: a register write is `[register, value]` in one
//! write; a read writes the start register and reads back in one repeated-start
//! `write_read`, so the register pointer cannot be moved by another bus master in between
//! (PS §9.3, burst read sequence).

use embedded_hal::i2c::I2c;

/// The 7-bit I²C address of the device, set by its AD0 pin (RM §4.32, PS §9.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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

/// An I²C bus and the address of the device on it.
#[derive(Debug)]
pub(crate) struct I2cInterface<I2C> {
    pub(crate) i2c: I2C,
    pub(crate) address: u8,
}

impl<I2C: I2c> I2cInterface<I2C> {
    /// Reads one register.
    pub(crate) fn read_register(&mut self, register: u8) -> Result<u8, I2C::Error> {
        let mut value = [0u8; 1];
        self.read_registers(register, &mut value)?;
        let [value] = value;
        Ok(value)
    }

    /// Reads `buffer.len()` consecutive registers starting at `start`, in one transaction
    /// (the device increments its register pointer after each byte, PS §9.3).
    pub(crate) fn read_registers(
        &mut self,
        start: u8,
        buffer: &mut [u8],
    ) -> Result<(), I2C::Error> {
        self.i2c.write_read(self.address, &[start], buffer)
    }

    /// Writes one register.
    pub(crate) fn write_register(&mut self, register: u8, value: u8) -> Result<(), I2C::Error> {
        self.i2c.write(self.address, &[register, value])
    }
}
