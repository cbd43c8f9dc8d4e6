//! Overflows the stack on purpose, to show that it is caught: flip-link puts the stack at
//! the bottom of RAM, so running off its end leaves RAM and faults, instead of running on
//! over the statics. Under QEMU the fault ends the run with a failure code (`cargo xtask
//! overflow` checks it).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
// The board: the logger, the panic and fault handlers.
use firmware as _;

/// Recursion that the compiler cannot turn into a loop: each frame keeps a buffer alive
/// across the call.
#[inline(never)]
#[allow(unconditional_recursion, reason = "the point is to overflow the stack")]
fn deeper(depth: u32) -> u32 {
    let mut buf = [0u8; 256];
    buf[(depth as usize) % 256] = depth as u8;
    let below = deeper(core::hint::black_box(depth + 1));
    core::hint::black_box(&buf);
    below.wrapping_add(u32::from(buf[0]))
}

#[entry]
fn main() -> ! {
    defmt::info!("overflowing the stack on purpose");
    let r = deeper(0);
    defmt::error!("the recursion returned {=u32}: no fault", r);
    semihosting::process::exit(0)
}
