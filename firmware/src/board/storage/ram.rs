//! A data flash in RAM, for the boards whose code memory is RAM (QEMU's MPS2 boards and
//! RISC-V `virt`): `memory.x`'s `STORAGE` region, not loaded with the program, as a
//! microcontroller's data flash would be. It is driven as
//! NOR flash (`nor_sim::SimFlash`: erase by sector, program only clears bits), and every
//! change is persisted to a host file through semihosting when the program was given
//! `flash=PATH`, so that a later boot finds what an earlier one saved.

use core::ffi::CStr;

use nor_sim::{Persist, SimFlash};
use semihosting::io::Read as _;

/// Bytes of the data flash: 32 KiB, or 256 KiB for the CNN's programs (`layout/cnn/memory.x`),
/// whose streamed raw windows take about 125 KB.
pub const FLASH_BYTES: usize = if cfg!(feature = "cnn") { 262144 } else { 32768 };

/// The data flash, persisted to a host file.
pub type Flash = SimFlash<'static, HostFile>;

/// The host file the flash image is kept in between boots (none: the image lives as long as
/// the program).
pub struct HostFile {
    path: [u8; 128],
}

impl HostFile {
    fn path(&self) -> Option<&CStr> {
        CStr::from_bytes_until_nul(&self.path)
            .ok()
            .filter(|p| !p.is_empty())
    }
}

impl Persist for HostFile {
    fn persist(&mut self, image: &[u8]) -> bool {
        match self.path() {
            Some(path) => semihosting::fs::write(path, image).is_ok(),
            None => true,
        }
    }
}

/// The `STORAGE` region.
fn region() -> &'static mut [u8; FLASH_BYTES] {
    #[link_section = ".storage"]
    static mut STORAGE: [u8; FLASH_BYTES] = [0; FLASH_BYTES];
    // SAFETY: `take` is the only caller and runs at most once (its flag).
    unsafe { &mut *core::ptr::addr_of_mut!(STORAGE) }
}

/// The data flash, holding what a previous boot persisted to the host file of the program's
/// `flash=PATH` argument (else erased). `None` if already taken.
#[inline(never)]
pub fn take() -> Option<Flash> {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, core::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let image = region();
    let file = HostFile {
        path: super::super::args::value("flash=").unwrap_or([0; 128]),
    };
    image.fill(0xFF);
    if let Some(p) = file.path() {
        if let Ok(mut f) = semihosting::fs::File::open(p) {
            let mut filled = 0;
            while filled < FLASH_BYTES {
                match f.read(image.get_mut(filled..).unwrap_or(&mut [])) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => filled += n,
                }
            }
            if filled != FLASH_BYTES {
                image.fill(0xFF);
            }
        }
    }
    Some(SimFlash::with_persist(image, file))
}
