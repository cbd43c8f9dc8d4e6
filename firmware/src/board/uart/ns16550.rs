//! The 16550 UART (National Semiconductor PC16550D), as QEMU's RISC-V `virt` has it at
//! `0x1000_0000`, byte-wide registers. Polled, through the line status register.

use core::convert::Infallible;
use core::ptr;

/// Base address of the UART on RISC-V `virt`.
pub const UART0_BASE: usize = 0x1000_0000;

/// Receive buffer (read) and transmit holding register (write).
const DATA: usize = 0;
/// FIFO control.
const FCR: usize = 2;
/// Line status.
const LSR: usize = 5;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// FIFOs enabled and cleared.
const FCR_ENABLE_CLEAR: u8 = 0b0000_0111;

/// A 16550 UART at a fixed address.
pub struct Ns16550 {
    base: usize,
}

impl Ns16550 {
    /// Takes the UART at `base` and enables its FIFOs. (QEMU does not pace the line, so the
    /// divisor is left as it is.)
    ///
    /// # Safety
    /// `base` must be a 16550's register block, used by nothing else.
    pub unsafe fn new(base: usize) -> Self {
        let uart = Self { base };
        uart.write_reg(FCR, FCR_ENABLE_CLEAR);
        uart
    }

    fn read_reg(&self, offset: usize) -> u8 {
        // SAFETY: `new`'s contract: the block is a 16550's, and the offsets are its registers.
        unsafe { ptr::read_volatile((self.base + offset) as *const u8) }
    }

    fn write_reg(&self, offset: usize, value: u8) {
        // SAFETY: as in `read_reg`.
        unsafe { ptr::write_volatile((self.base + offset) as *mut u8, value) }
    }
}

impl embedded_io::ErrorType for Ns16550 {
    type Error = Infallible;
}

impl embedded_io::Read for Ns16550 {
    /// Blocks until at least one byte has arrived, then returns what the FIFO holds, up to
    /// `buf`'s length.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.read_reg(LSR) & LSR_DATA_READY == 0 {}
        let mut n = 0;
        for b in buf.iter_mut() {
            if self.read_reg(LSR) & LSR_DATA_READY == 0 {
                break;
            }
            *b = self.read_reg(DATA);
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Ns16550 {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            while self.read_reg(LSR) & LSR_THR_EMPTY == 0 {}
            self.write_reg(DATA, b);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while self.read_reg(LSR) & LSR_THR_EMPTY == 0 {}
        Ok(())
    }
}
