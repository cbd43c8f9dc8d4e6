//! `cargo xtask <command>`: the project's build, run and test helpers.
//!
//! xtask drives `cargo`, QEMU and `defmt-print` as processes; it links none of the
//! project's crates.

mod device;
mod device_bench;
mod firmware;
mod host;
mod parity;
mod process;
mod qemu;
mod suite;

use std::env;
use std::process::ExitCode;

/// The help text: the commands and what each runs.
const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test        every test: the workspace's tests, the core built for Cortex-M4F and
              Cortex-M0+, the exhaustive safe_div_signed check (release mode), the
              on-target tests, the firmware runs under QEMU and the host/device parity
  qemu        build the firmware and boot it twice on QEMU mps2-an386 (Cortex-M4F): samples
              streamed over UART0, fine-tuning, checkpoint to flash; then a resume from
              flash. Prints the decoded defmt log; exits with the firmware's verdict
  qemu-test   the on-target tests (kernels, gradients, formats) on the emulated Cortex-M4F
  overflow    a firmware that overflows its stack on purpose: QEMU must stop with a
              failure code (flip-link puts the stack at the bottom of RAM)
  fuzz        a million fuzzed byte streams and frames through the parser and the
              training step (release mode)
  bench       the canonical training step on the host: safegrad, a hand-written baseline
              and dfdx 0.13, batch 1 and 32 (--json: one object)
  bench-device  instructions per canonical training step on the emulated Cortex-M4F,
              safegrad against a hand-written baseline, with libm and with fast-math
              (micromath), and fast-math's largest errors (--json: one object)
  soak        100,000 streamed training steps in the host simulator, faults injected
  qemu-soak   300 streamed training frames on the device, one in 25 damaged
  parity      fine-tune on the host simulator and in QEMU, compare the final parameters
              bit for bit (CRC-32 of the checkpoint); with libm, then with fast-math
  faults      power cut at every byte program and sector erase of a checkpoint save, and
              every single-bit flip of a stored slot (--json: one object)
  exhaustive  the exhaustive check over every finite f32 denominator
  cross       the core's builds for thumbv7em-none-eabihf and thumbv6m-none-eabi";

/// Runs `command`; `json_flag` selects the JSON report of the commands that have one.
fn run(command: &str, json_flag: bool) -> Result<(), String> {
    match command {
        "test" => suite::every_test(),
        "qemu" => device::boot_twice(),
        "qemu-test" => device::ontarget_tests(),
        "overflow" => device::stack_overflow(),
        "qemu-soak" => device::soak(),
        "soak" => host::soak(),
        "fuzz" => host::fuzz(),
        "bench-device" => device_bench::bench_device(json_flag),
        "bench" => host::bench(json_flag),
        "faults" => host::faults(json_flag),
        "parity" => parity::host_device_parity(),
        "exhaustive" => host::exhaustive(),
        "cross" => host::cross(),
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    }
}

/// Reads the command (the first argument) and `--json` (anywhere after it), runs the
/// command and exits with 0, 1 on an error, or 2 without a command.
fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if command == "-h" || command == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let json_flag = args.iter().any(|a| a == "--json");
    match run(command, json_flag) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
