//! The board's UART0, the line the samples are streamed over, polled through
//! `embedded-io`'s `Read` and `Write`: the CMSDK UART on the MPS2 boards, the nRF51's UART
//! on the micro:bit, the 16550 on RISC-V `virt`.

#[cfg(not(any(feature = "microbit", feature = "virt")))]
pub mod cmsdk;
#[cfg(feature = "microbit")]
pub mod nrf51;
#[cfg(feature = "virt")]
pub mod ns16550;

/// The board's UART driver.
#[cfg(not(any(feature = "microbit", feature = "virt")))]
pub type Uart = cmsdk::CmsdkUart;
/// The board's UART driver.
#[cfg(feature = "microbit")]
pub type Uart = nrf51::Nrf51Uart;
/// The board's UART driver.
#[cfg(feature = "virt")]
pub type Uart = ns16550::Ns16550;

/// UART0, enabled for reading and writing.
///
/// # Safety
/// Nothing else in the program may use UART0.
pub unsafe fn open() -> Uart {
    #[cfg(not(any(feature = "microbit", feature = "virt")))]
    // SAFETY: the caller's contract; the address is the board's UART0.
    let uart = unsafe { cmsdk::CmsdkUart::new(cmsdk::UART0_BASE) };
    #[cfg(feature = "microbit")]
    // SAFETY: as above.
    let uart = unsafe { nrf51::Nrf51Uart::new(nrf51::UART0_BASE) };
    #[cfg(feature = "virt")]
    // SAFETY: as above.
    let uart = unsafe { ns16550::Ns16550::new(ns16550::UART0_BASE) };
    uart
}
