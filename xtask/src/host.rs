//! The checks and benchmarks that run on the host: the core's cross builds, the exhaustive
//! and fuzz tests, and host-sim's benchmark, soak and flash fault injection.

use crate::process::cargo;

/// The bare-metal targets the core must build for: Cortex-M4F (FPU), Cortex-M0+ (no FPU)
/// and RISC-V RV32IMAC.
const CORE_TARGETS: [&str; 3] = [
    "thumbv7em-none-eabihf",
    "thumbv6m-none-eabi",
    "riscv32imac-unknown-none-elf",
];

/// Builds the core (`safegrad`) for each of [`CORE_TARGETS`], without features and with
/// `defmt,fast-math`.
pub fn cross() -> Result<(), String> {
    for target in CORE_TARGETS {
        cargo(&["build", "-p", "safegrad", "--target", target])?;
        cargo(&[
            "build",
            "-p",
            "safegrad",
            "--target",
            target,
            "--features",
            "defmt,fast-math",
        ])?;
    }
    Ok(())
}

/// The exhaustive check over every finite `f32` denominator (`tests/tests/exhaustive.rs`,
/// release mode).
pub fn exhaustive() -> Result<(), String> {
    cargo(&[
        "test",
        "--release",
        "-p",
        "safegrad-tests",
        "--test",
        "exhaustive",
        "--",
        "--ignored",
        "--nocapture",
    ])
}

/// A million fuzzed inputs through the sample-stream parser and the training step
/// (`tests/tests/fuzz_stream.rs`, release mode).
pub fn fuzz() -> Result<(), String> {
    cargo(&[
        "test",
        "--release",
        "-p",
        "safegrad-tests",
        "--test",
        "fuzz_stream",
        "--",
        "--ignored",
        "--nocapture",
    ])
}

/// Power cuts at every point of a checkpoint save and every bit flip of a stored slot, on the
/// simulated NOR flash (host-sim faults); prints its report (one JSON object with `json`).
pub fn faults(json: bool) -> Result<(), String> {
    let mut args = vec!["run", "-q", "--release", "-p", "host-sim", "--", "faults"];
    if json {
        args.push("--json");
    }
    cargo(&args)
}

/// The host benchmark: safegrad, a hand-written baseline and dfdx 0.13 on the canonical
/// step, then safegrad, a hand-written baseline and burn 0.19 on a convolution step, batch
/// 1 and 32, single-threaded, in one run (one JSON object with `json`).
pub fn bench(json: bool) -> Result<(), String> {
    let mut args = vec![
        "run",
        "--release",
        "-p",
        "host-sim",
        "--features",
        "peers",
        "--bin",
        "bench",
    ];
    if json {
        args.extend(["--", "--json"]);
    }
    cargo(&args)
}

/// 100,000 streamed training steps in the host simulator, with faults injected.
pub fn soak() -> Result<(), String> {
    cargo(&["run", "-q", "--release", "-p", "host-sim", "--", "soak"])
}
