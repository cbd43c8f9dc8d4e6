//! The nRF51's own flash, driven by its non-volatile memory controller (nRF51 Series
//! Reference Manual v3.0, chapter 6): 1 KiB pages erased by `ERASEPAGE`, 32-bit words
//! written while `CONFIG` enables writing, each write only clearing bits. The data flash is
//! the last 32 KiB of the code flash (`layout/microbit/memory.x`), not loaded with the
//! program, read in place as memory.

use embedded_storage::nor_flash::{
    check_erase, check_write, ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash,
};

/// Bytes of the data flash.
pub const FLASH_BYTES: usize = 32768;

/// The NVMC's register block.
const NVMC_BASE: usize = 0x4001_E000;
const READY: usize = 0x400;
const CONFIG: usize = 0x504;
const ERASEPAGE: usize = 0x508;
const CONFIG_READ: u32 = 0;
const CONFIG_WRITE: u32 = 1;
const CONFIG_ERASE: u32 = 2;
/// Bytes of a flash page, the unit of erasing.
const PAGE: usize = 1024;

/// The data flash region.
fn region() -> *mut u8 {
    #[link_section = ".storage"]
    static mut STORAGE: [u8; FLASH_BYTES] = [0; FLASH_BYTES];
    core::ptr::addr_of_mut!(STORAGE).cast()
}

fn nvmc_write(offset: usize, value: u32) {
    // SAFETY: a register of the NVMC, which only `Flash` drives.
    unsafe { core::ptr::write_volatile((NVMC_BASE + offset) as *mut u32, value) }
}

fn wait_ready() {
    // SAFETY: as in `nvmc_write`.
    while unsafe { core::ptr::read_volatile((NVMC_BASE + READY) as *const u32) } & 1 == 0 {}
}

/// The data flash, through the NVMC.
pub struct Flash {
    base: *mut u8,
}

impl Flash {
    /// The data flash's bytes, read in place.
    pub fn image(&self) -> &[u8] {
        // SAFETY: the region is `FLASH_BYTES` of memory-mapped flash that only this `Flash`
        // changes, and only through `&mut self`.
        unsafe { core::slice::from_raw_parts(self.base, FLASH_BYTES) }
    }
}

/// The data flash, as a previous run left it. `None` if already taken.
pub fn take() -> Option<Flash> {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    // A load and a store: the Cortex-M0 has no atomic swap, and the programs take the flash
    // from `main` only.
    if TAKEN.load(core::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    TAKEN.store(true, core::sync::atomic::Ordering::Relaxed);
    Some(Flash { base: region() })
}

impl ErrorType for Flash {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Flash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let start = offset as usize;
        let src = self
            .image()
            .get(start..start + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        FLASH_BYTES
    }
}

impl NorFlash for Flash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        nvmc_write(CONFIG, CONFIG_ERASE);
        for page in (from as usize..to as usize).step_by(PAGE) {
            nvmc_write(ERASEPAGE, self.base as u32 + page as u32);
            wait_ready();
        }
        nvmc_write(CONFIG, CONFIG_READ);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        nvmc_write(CONFIG, CONFIG_WRITE);
        for (i, word) in bytes.chunks_exact(4).enumerate() {
            let value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            let at = self.base as usize + offset as usize + 4 * i;
            // SAFETY: a word of the data flash (checked by `check_write`), written while the
            // NVMC allows writing.
            unsafe { core::ptr::write_volatile(at as *mut u32, value) };
            wait_ready();
        }
        nvmc_write(CONFIG, CONFIG_READ);
        Ok(())
    }
}
