//! QEMU's `mps2-an386` (Cortex-M4F), what every program on it needs besides its job: IEEE
//! floating-point modes, a tick counter, the exit through semihosting, the fault and panic
//! handling, the interrupt vectors, and the board's UART ([`uart`]), data flash
//! ([`storage`]), arguments ([`args`]) and stack check ([`stack`]).

pub mod args;
pub mod stack;
pub mod storage;
pub mod uart;

use core::sync::atomic::{AtomicU32, Ordering};

// The defmt logger of every program: over semihosting.
use defmt_semihosting as _;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::{exception, ExceptionFrame};

/// IEEE arithmetic: flush-to-zero and default-NaN off, round to nearest, whatever the reset
/// value, so that results match the host bit for bit.
pub fn set_ieee_fpscr() {
    // SAFETY: writing FPSCR only changes floating-point modes; 0 is a valid value.
    unsafe { core::arch::asm!("vmsr fpscr, {}", in(reg) 0u32) };
}

/// Ends the program (QEMU exits) with `code`.
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

/// Sets up what every program relies on: IEEE floating-point modes and the tick counter.
pub fn init() {
    set_ieee_fpscr();
    if let Some(mut p) = cortex_m::Peripherals::take() {
        start_ticks(&mut p.SYST);
    }
}

/// The panic handler of every program: log where, exit with code 2. (The message is left
/// out: formatting it would bring `core::fmt` into the firmware.)
#[panic_handler]
fn panic_exit(info: &core::panic::PanicInfo) -> ! {
    if let Some(location) = info.location() {
        defmt::error!("panic at {=str}:{=u32}", location.file(), location.line());
    } else {
        defmt::error!("panic");
    }
    exit(2)
}

/// A fault (a bad address, an undefined instruction) ends the program with code 3.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    exit(3)
}

/// SysTick wraps every 2^24 ticks; its handler counts the wraps.
static SYSTICK_WRAPS: AtomicU32 = AtomicU32::new(0);
const SYSTICK_RELOAD: u32 = 0x00FF_FFFF;

#[exception]
fn SysTick() {
    SYSTICK_WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Starts SysTick on the core clock, counting its wraps, for [`ticks`].
pub fn start_ticks(syst: &mut SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(SYSTICK_RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Ticks of the core clock since [`start_ticks`], from SysTick and its wrap count.
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

/// `ticks / count` (a count of 0 as 1) in 32 bits, as the runs here take under 2^32 ticks
/// (saturating beyond).
pub fn per(ticks: u64, count: u32) -> u32 {
    u32::try_from(ticks).unwrap_or(u32::MAX) / count.max(1)
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
