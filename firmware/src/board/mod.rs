//! The board a program runs on, chosen when it is built: one of the firmware's board
//! features, or none for QEMU's `mps2-an386` (Cortex-M4F). Every board gives a program the
//! same things besides its job: start-up ([`entry`], [`init`]), a tick counter ([`ticks`]),
//! the exit through semihosting, the fault and panic handling, a UART ([`uart`]), the data
//! flash ([`storage`]), the program's arguments ([`args`]) and the stack check ([`stack`]).
//!
//! | feature | QEMU machine | core | target |
//! | --- | --- | --- | --- |
//! | (none) | `mps2-an386` | Cortex-M4F | `thumbv7em-none-eabihf` |
//! | `an385` | `mps2-an385` | Cortex-M3 | `thumbv7m-none-eabi` |
//! | `an500` | `mps2-an500` | Cortex-M7 | `thumbv7em-none-eabihf` |
//! | `an505` | `mps2-an505` | Cortex-M33 | `thumbv8m.main-none-eabihf` |
//! | `microbit` | `microbit` (nRF51822) | Cortex-M0 | `thumbv6m-none-eabi` |
//! | `virt` | `virt` | RV32IMAC | `riscv32imac-unknown-none-elf` |
//!
//! Adding a board is adding its row here: a UART driver in [`uart`] if it has none of
//! these, a data flash in [`storage`] if its code memory is not writable RAM, and a memory
//! layout in `layout/` (`build.rs`). The programs and the fine-tuning job do not change.

pub mod args;
pub mod stack;
pub mod storage;
pub mod uart;

#[cfg(target_arch = "arm")]
#[path = "cortex_m.rs"]
mod arch;
#[cfg(target_arch = "riscv32")]
#[path = "riscv.rs"]
mod arch;

pub use arch::{entry, ticks};

// The defmt logger of every program: over semihosting.
use defmt_semihosting as _;

/// Whether at most one of `flags` is set.
const fn at_most_one(flags: &[bool]) -> bool {
    let (mut i, mut set) = (0, 0);
    while i < flags.len() {
        set += flags[i] as usize;
        i += 1;
    }
    set <= 1
}
const _: () = assert!(
    at_most_one(&[
        cfg!(feature = "an385"),
        cfg!(feature = "an500"),
        cfg!(feature = "an505"),
        cfg!(feature = "microbit"),
        cfg!(feature = "virt"),
    ]),
    "choose one board feature at most"
);

#[cfg(all(feature = "virt", not(target_arch = "riscv32")))]
compile_error!("the `virt` board is RISC-V: build it for riscv32imac-unknown-none-elf");
#[cfg(all(not(feature = "virt"), not(target_arch = "arm")))]
compile_error!("this board is a Cortex-M: build it for its thumbv* target (board/mod.rs)");

/// The QEMU machine the program is built for (`-M`).
pub const MACHINE: &str = if cfg!(feature = "an385") {
    "mps2-an385"
} else if cfg!(feature = "an500") {
    "mps2-an500"
} else if cfg!(feature = "an505") {
    "mps2-an505"
} else if cfg!(feature = "microbit") {
    "microbit"
} else if cfg!(feature = "virt") {
    "virt"
} else {
    "mps2-an386"
};

/// The processor core of [`MACHINE`].
pub const CORE: &str = if cfg!(feature = "an385") {
    "Cortex-M3"
} else if cfg!(feature = "an500") {
    "Cortex-M7"
} else if cfg!(feature = "an505") {
    "Cortex-M33"
} else if cfg!(feature = "microbit") {
    "Cortex-M0"
} else if cfg!(feature = "virt") {
    "RV32IMAC"
} else {
    "Cortex-M4F"
};

/// Ends the program (QEMU exits) with `code`.
pub fn exit(code: i32) -> ! {
    semihosting::process::exit(code)
}

/// Sets up what every program relies on: IEEE floating-point modes where the core has a
/// floating-point unit, the tick counter, and the stack's paint where the run-time does not
/// paint it.
pub fn init() {
    arch::init();
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

/// `ticks / count` (a count of 0 as 1) in 32 bits, as the runs here take under 2^32 ticks
/// (saturating beyond).
pub fn per(ticks: u64, count: u32) -> u32 {
    u32::try_from(ticks).unwrap_or(u32::MAX) / count.max(1)
}
