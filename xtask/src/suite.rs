//! `cargo xtask test`: every test of the project, in order, stopping at the first failure.

use crate::process::cargo;
use crate::{boards, cores, device, example, host, parity};

/// The workspace's tests, the core's `fast-math` unit tests, the cross builds, the
/// exhaustive and fuzz tests, the flash fault injection, then the device: on-target tests,
/// stack overflow, device soak, host soak, the two boots, the first program, host/device
/// parity, the fine-tuning job on every core, and the real boards' builds.
pub fn every_test() -> Result<(), String> {
    cargo(&["test", "--workspace"])?;
    cargo(&["test", "-p", "safegrad", "--features", "fast-math", "--lib"])?;
    host::cross()?;
    host::exhaustive()?;
    host::fuzz()?;
    host::faults(false)?;
    device::ontarget_tests()?;
    device::stack_overflow()?;
    device::soak()?;
    host::soak()?;
    device::boot_twice()?;
    example::example(true)?;
    parity::host_device_parity()?;
    cores::cores(false)?;
    boards::boards(false)
}
