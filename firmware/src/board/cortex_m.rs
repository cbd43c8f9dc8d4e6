//! What every Cortex-M board shares: IEEE floating-point modes on cores with a
//! floating-point unit, SysTick as the tick counter, the fault handler and the interrupt
//! vectors. cortex-m-rt starts the program and paints the stack.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::{exception, ExceptionFrame};

pub use cortex_m_rt::entry;

/// IEEE arithmetic: flush-to-zero and default-NaN off, round to nearest, whatever the reset
/// value, so that results match the host bit for bit. (Cores without a floating-point unit
/// compute in software, which is IEEE arithmetic already.)
#[cfg(target_abi = "eabihf")]
fn set_ieee_fpscr() {
    // SAFETY: writing FPSCR only changes floating-point modes; 0 is a valid value.
    unsafe { core::arch::asm!("vmsr fpscr, {}", in(reg) 0u32) };
}

#[cfg(not(target_abi = "eabihf"))]
fn set_ieee_fpscr() {}

/// IEEE floating-point modes and the tick counter.
pub(super) fn init() {
    set_ieee_fpscr();
    if let Some(mut p) = cortex_m::Peripherals::take() {
        start_ticks(&mut p.SYST);
    }
}

/// A fault (a bad address, an undefined instruction) ends the program with code 3.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    super::exit(3)
}

/// SysTick wraps every 2^24 ticks; its handler counts the wraps. (Only the handler writes
/// it, so a load and a store do: the Cortex-M0 has no atomic read-modify-write.)
static SYSTICK_WRAPS: AtomicU32 = AtomicU32::new(0);
const SYSTICK_RELOAD: u32 = 0x00FF_FFFF;

#[exception]
fn SysTick() {
    let wraps = SYSTICK_WRAPS.load(Ordering::Relaxed);
    SYSTICK_WRAPS.store(wraps.wrapping_add(1), Ordering::Relaxed);
}

/// Starts SysTick on the core clock, counting its wraps, for [`ticks`].
fn start_ticks(syst: &mut SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(SYSTICK_RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Ticks of the core clock since [`super::init`], from SysTick and its wrap count.
pub fn ticks() -> u64 {
    loop {
        let wraps = SYSTICK_WRAPS.load(Ordering::Relaxed);
        let current = SYST::get_current();
        if wraps == SYSTICK_WRAPS.load(Ordering::Relaxed) {
            let elapsed = u64::from(SYSTICK_RELOAD - current);
            return u64::from(wraps) * (u64::from(SYSTICK_RELOAD) + 1) + elapsed;
        }
    }
}

extern "C" {
    /// The handler of the first external interrupt (`device.x` makes it the default
    /// handler).
    fn Interrupt0();
}

/// The external interrupt vectors: one entry, as the programs here poll their peripherals
/// and enable no interrupt (cortex-m-rt's generic table would hold 240 entries, 960 bytes of
/// flash).
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
pub static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [Interrupt0];
