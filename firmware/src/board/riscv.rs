//! What the RISC-V board (QEMU's `virt`) needs: its timer as the tick counter, the
//! exception handler, and the stack's paint (riscv-rt starts the program but does not paint
//! the stack). The core computes in software floating point, which is IEEE arithmetic.

pub use riscv_rt::entry;

/// The stack's paint, as cortex-m-rt's.
pub const STACK_PAINT_VALUE: u32 = 0xCCCC_CCCC;

/// Paints the stack below the caller's frame.
pub(super) fn init() {
    super::stack::paint();
}

/// The machine timer's `mtime` in `virt`'s CLINT, counting at 10 MHz.
const MTIME: usize = 0x0200_BFF8;

/// Ticks of the machine timer (10 MHz on `virt`) since reset: the 64-bit `mtime`, read as
/// two halves, again if the high half moved in between. (`minstret` would count
/// instructions, but what QEMU returns for it under `-icount` has changed between its
/// versions; the timer's rate is the machine's.)
pub fn ticks() -> u64 {
    let word = |offset: usize| {
        // SAFETY: a half of the CLINT's `mtime`, read-only here.
        unsafe { core::ptr::read_volatile((MTIME + offset) as *const u32) }
    };
    loop {
        let high = word(4);
        let low = word(0);
        if word(4) == high {
            return (u64::from(high) << 32) | u64::from(low);
        }
    }
}

/// An exception (a bad address, an illegal instruction) ends the program with code 3.
#[export_name = "ExceptionHandler"]
fn exception(_frame: &riscv_rt::TrapFrame) -> ! {
    defmt::error!(
        "exception {=usize} at pc {=usize:#010x}",
        riscv::register::mcause::read().bits(),
        riscv::register::mepc::read()
    );
    super::exit(3)
}
