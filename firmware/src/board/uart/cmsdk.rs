//! The CMSDK APB UART (ARM Cortex-M System Design Kit, technical reference manual DDI 0479,
//! section 4.3), as QEMU's MPS2 boards have it. Polled, through `embedded-io`'s `Read` and
//! `Write`.

use core::convert::Infallible;
use core::ptr;

/// Base address of UART0: `0x4000_4000` on `mps2-an385`, `-an386` and `-an500`; on
/// `mps2-an505` its secure alias `0x5020_0000`, as the program runs in the secure state.
pub const UART0_BASE: usize = if cfg!(feature = "an505") {
    0x5020_0000
} else {
    0x4000_4000
};

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;

/// A CMSDK UART at a fixed address.
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    /// Takes the UART at `base` and enables its transmitter and receiver. The baud-rate
    /// divider is set to 16, its smallest valid value (QEMU does not pace the line).
    ///
    /// # Safety
    /// `base` must be a CMSDK UART's register block, used by nothing else.
    pub unsafe fn new(base: usize) -> Self {
        let uart = Self { base };
        uart.write_reg(BAUDDIV, 16);
        uart.write_reg(CTRL, CTRL_TX_EN | CTRL_RX_EN);
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
}

impl embedded_io::ErrorType for CmsdkUart {
    type Error = Infallible;
}

impl embedded_io::Read for CmsdkUart {
    /// Blocks until at least one byte has arrived, then returns what is there (one byte:
    /// the CMSDK UART has a single-byte receive buffer).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some(first) = buf.first_mut() else {
            return Ok(0);
        };
        while self.read_reg(STATE) & STATE_RX_FULL == 0 {}
        *first = (self.read_reg(DATA) & 0xFF) as u8;
        Ok(1)
    }
}

impl embedded_io::Write for CmsdkUart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
            self.write_reg(DATA, u32::from(b));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
        Ok(())
    }
}
