//! How deep the stack went. The stack region is painted before the program's work starts
//! (by cortex-m-rt before `main`, its `paint-stack` feature; on RISC-V by [`paint`], from
//! `init`); the words the program has used no longer hold the paint. On the Cortex-M boards
//! flip-link puts the stack at the bottom of RAM, below the statics.

/// The stack a program may use; more fails its run.
pub const BUDGET: usize = 8 * 1024;

#[cfg(target_arch = "arm")]
use cortex_m_rt::STACK_PAINT_VALUE;

#[cfg(target_arch = "riscv32")]
use super::arch::STACK_PAINT_VALUE;

extern "C" {
    /// The initial stack pointer, from the linker (cortex-m-rt, moved by flip-link; or
    /// riscv-rt).
    static _stack_start: u32;
}

#[cfg(target_arch = "arm")]
extern "C" {
    /// The lowest address of the stack region (cortex-m-rt).
    #[link_name = "_stack_end"]
    static STACK_BOTTOM: u32;
}

#[cfg(target_arch = "riscv32")]
extern "C" {
    /// The lowest address of the stack region (riscv-rt).
    #[link_name = "__estack"]
    static STACK_BOTTOM: u32;
}

/// The top of the stack.
pub fn top() -> usize {
    core::ptr::addr_of!(_stack_start) as usize
}

/// The lowest address of the stack region.
fn bottom() -> usize {
    core::ptr::addr_of!(STACK_BOTTOM) as usize
}

/// Bytes of the stack region.
pub fn region() -> usize {
    top() - bottom()
}

/// The deepest the stack has been: the top minus the lowest word no longer painted.
pub fn high_water() -> usize {
    let mut p = bottom();
    // SAFETY: reading words of the stack region below the stack pointer.
    while p < top() && unsafe { core::ptr::read_volatile(p as *const u32) } == STACK_PAINT_VALUE {
        p += 4;
    }
    top() - p
}

/// Paints the stack region from its bottom to 256 bytes below the stack pointer (what the
/// caller and this function use lies above). Not inlined, so that its own frame is the
/// deepest one while it runs.
#[cfg(target_arch = "riscv32")]
#[inline(never)]
pub(super) fn paint() {
    let sp: usize;
    // SAFETY: reads the stack pointer; no memory is touched.
    unsafe { core::arch::asm!("mv {}, sp", out(reg) sp) };
    let mut p = bottom();
    while p + 256 < sp {
        // SAFETY: a word of the stack region, below every live frame.
        unsafe { core::ptr::write_volatile(p as *mut u32, STACK_PAINT_VALUE) };
        p += 4;
    }
}
