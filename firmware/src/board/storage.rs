//! The board's data flash, `memory.x`'s `STORAGE` region: the checkpoint's slots and the
//! logged samples, driven through `embedded-storage`'s NOR flash traits. [`take`] gives it
//! once; [`Flash::image`] reads it in place.

#[cfg(feature = "microbit")]
mod nvmc;
#[cfg(not(feature = "microbit"))]
mod ram;

#[cfg(feature = "microbit")]
pub use nvmc::{take, Flash, FLASH_BYTES};
#[cfg(not(feature = "microbit"))]
pub use ram::{take, Flash, HostFile, FLASH_BYTES};
