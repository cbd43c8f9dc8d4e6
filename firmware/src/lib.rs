//! The programs' board, chosen when they are built ([`board`]: QEMU's `mps2-an386`
//! Cortex-M4F unless a board feature picks another core's machine): start-up, timing, exit,
//! faults, the UART, the data flash and the stack check; what the fine-tuning programs log
//! ([`log`]). The fine-tuning job itself is the `motion` crate's, the engine `safegrad`; the
//! programs are in `src/bin/` and `examples/`.
#![no_std]

pub mod board;
pub mod log;
