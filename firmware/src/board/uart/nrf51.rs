//! The nRF51 series' UART (nRF51 Series Reference Manual v3.0, chapter 29), as QEMU's
//! `microbit` has it at `0x4000_2000`: tasks to start the receiver and transmitter, events
//! for a byte received or sent, one data register each way. Polled.

use core::convert::Infallible;
use core::ptr;

/// Base address of the UART on the nRF51822.
pub const UART0_BASE: usize = 0x4000_2000;

const TASKS_STARTRX: usize = 0x000;
const TASKS_STARTTX: usize = 0x008;
const EVENTS_RXDRDY: usize = 0x108;
const EVENTS_TXDRDY: usize = 0x11C;
const ENABLE: usize = 0x500;
const RXD: usize = 0x518;
const TXD: usize = 0x51C;
const ENABLE_UART: u32 = 4;

/// An nRF51 UART at a fixed address.
pub struct Nrf51Uart {
    base: usize,
    /// A byte has been written and its `TXDRDY` not yet seen.
    sending: bool,
}

impl Nrf51Uart {
    /// Takes the UART at `base`, enables it and starts its receiver and transmitter.
    ///
    /// # Safety
    /// `base` must be an nRF51 UART's register block, used by nothing else.
    pub unsafe fn new(base: usize) -> Self {
        let uart = Self {
            base,
            sending: false,
        };
        uart.write_reg(ENABLE, ENABLE_UART);
        uart.write_reg(TASKS_STARTRX, 1);
        uart.write_reg(TASKS_STARTTX, 1);
        uart
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract: the block is a UART's, and the offsets are its registers.
        unsafe { ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }

    /// Waits for the byte written last to leave.
    fn wait_sent(&mut self) {
        if self.sending {
            while self.read_reg(EVENTS_TXDRDY) == 0 {}
            self.write_reg(EVENTS_TXDRDY, 0);
            self.sending = false;
        }
    }
}

impl embedded_io::ErrorType for Nrf51Uart {
    type Error = Infallible;
}

impl embedded_io::Read for Nrf51Uart {
    /// Blocks until a byte has arrived, then returns it (`RXD` holds one byte at a time).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some(first) = buf.first_mut() else {
            return Ok(0);
        };
        while self.read_reg(EVENTS_RXDRDY) == 0 {}
        self.write_reg(EVENTS_RXDRDY, 0);
        *first = (self.read_reg(RXD) & 0xFF) as u8;
        Ok(1)
    }
}

impl embedded_io::Write for Nrf51Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            self.wait_sent();
            self.write_reg(TXD, u32::from(b));
            self.sending = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        self.wait_sent();
        Ok(())
    }
}
