//! `cargo xtask <command>`: the project's build, run and test helpers.
//!
//! xtask drives `cargo`, QEMU and `defmt-print` as processes; it links none of the
//! project's crates.

mod boards;
mod cores;
mod device;
mod device_bench;
mod example;
mod firmware;
mod host;
mod parity;
mod process;
mod qemu;
mod suite;

use std::process::ExitCode;

use clap::{Arg, ArgAction, Parser, Subcommand};

/// The project's build, run and test helpers.
#[derive(Parser)]
#[command(bin_name = "cargo xtask", arg_required_else_help = true)]
struct Cli {
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// xtask's commands.
///
/// `--json` is accepted by every command; the ones without a JSON report take it through
/// [`ignored_json_flag`] and print text all the same.
#[derive(Subcommand)]
enum Command {
    /// Every test, in order, stopping at the first failure.
    ///
    /// The workspace's tests, the core built for Cortex-M4F, Cortex-M0+ and RISC-V, the exhaustive
    /// safe_div_signed check (release mode), the fuzz test, the flash fault injection, the
    /// on-target tests, the firmware runs under QEMU, the host/device parity and the
    /// fine-tuning job on every core (`cores`).
    #[command(arg = ignored_json_flag())]
    Test,
    /// Build the firmware and boot it twice on QEMU mps2-an386 (Cortex-M4F).
    ///
    /// Boot 1: samples streamed over UART0, fine-tuning, checkpoint to flash; boot 2: a
    /// resume from flash. Prints the decoded defmt log; exits with the firmware's verdict.
    #[command(arg = ignored_json_flag())]
    Qemu,
    /// The on-target tests (kernels, gradients, formats) on the emulated Cortex-M4F.
    #[command(arg = ignored_json_flag())]
    QemuTest,
    /// A firmware that overflows its stack on purpose: QEMU must stop with a failure code.
    ///
    /// flip-link puts the stack at the bottom of RAM, so the overflow leaves RAM and faults.
    #[command(arg = ignored_json_flag())]
    Overflow,
    /// A million fuzzed byte streams and frames through the parser and the training step
    /// (release mode).
    #[command(arg = ignored_json_flag())]
    Fuzz,
    /// The canonical training step on the host: safegrad, a hand-written baseline and dfdx 0.13.
    ///
    /// Batch 1 and 32, single-threaded, in one run.
    Bench {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Instructions per canonical training step on the emulated Cortex-M4F.
    ///
    /// safegrad against a hand-written baseline, with libm and with fast-math (micromath);
    /// the instructions per call of exp, ln and sqrt and fast-math's largest errors; the
    /// fine-tuning firmware's flash, static RAM and stack against the model's minimum.
    BenchDevice {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// 100,000 streamed training steps in the host simulator, faults injected.
    #[command(arg = ignored_json_flag())]
    Soak,
    /// 300 streamed training frames on the device, one in 25 damaged.
    ///
    /// Every good frame must train, and the tape must not grow.
    #[command(arg = ignored_json_flag())]
    QemuSoak,
    /// Fine-tune on the host simulator and in QEMU: the parameters must be bit-identical.
    ///
    /// Compares the CRC-32 of the fine-tuned checkpoints; with libm, then with fast-math.
    #[command(arg = ignored_json_flag())]
    Parity,
    /// The fine-tuning job on every core under QEMU: Cortex-M0, M3, M4F, M7, M33 and RISC-V.
    ///
    /// Each board's firmware is built for its core, streamed the samples over its UART and
    /// compared with the host simulator bit for bit; prints instructions per step, the
    /// canonical step's instructions per multiply-accumulate, flash and RAM. With `--json`,
    /// the last line is a JSON array, one object per core.
    Cores {
        /// Print the JSON array as the last line.
        #[arg(long)]
        json: bool,
    },
    /// The example firmware for real boards, built in release mode.
    ///
    /// STM32F4 Discovery, nRF52840-DK and Raspberry Pi Pico (`boards/`): each reads an
    /// MPU-6050 over its HAL's I2C, fine-tunes with the session API and saves to its internal
    /// flash. Prints each one's flash and static RAM from its ELF; with `--json`, the last
    /// line is a JSON array.
    Boards {
        /// Print the JSON array as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Power cuts and bit flips on the checkpoint slots of the simulated NOR flash.
    ///
    /// A power cut at every byte program and sector erase of a checkpoint save, and every
    /// single-bit flip of a stored slot.
    Faults {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// The first program (firmware/examples/quickstart.rs) on the emulated Cortex-M4F.
    ///
    /// Checks its assets, runs it under QEMU and reports its held-out accuracy before and
    /// after fine-tuning; the JSON object's keys are ok, source, accuracy_before,
    /// accuracy_after and steps.
    Example {
        /// Print one JSON object as the last line.
        #[arg(long)]
        json: bool,
    },
    /// Run a Cortex-M4F ELF on QEMU mps2-an386 and decode its defmt log: the runner of
    /// `cargo run` and `cargo test` in firmware/.
    ///
    /// Exits with the program's exit code.
    QemuRun {
        /// The ELF.
        elf: std::path::PathBuf,
        /// The program's semihosting arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The exhaustive check over every finite f32 denominator.
    #[command(arg = ignored_json_flag())]
    Exhaustive,
    /// The core's builds for thumbv7em-none-eabihf, thumbv6m-none-eabi and
    /// riscv32imac-unknown-none-elf.
    #[command(arg = ignored_json_flag())]
    Cross,
}

/// `--json` for a command that has no JSON report: accepted, left out of its help, and
/// without effect.
fn ignored_json_flag() -> Arg {
    Arg::new("json")
        .long("json")
        .action(ArgAction::SetTrue)
        .hide(true)
}

/// Runs `command`.
fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Test => suite::every_test(),
        Command::Qemu => device::boot_twice(),
        Command::QemuTest => device::ontarget_tests(),
        Command::Overflow => device::stack_overflow(),
        Command::QemuSoak => device::soak(),
        Command::Soak => host::soak(),
        Command::Fuzz => host::fuzz(),
        Command::BenchDevice { json } => device_bench::bench_device(json),
        Command::Bench { json } => host::bench(json),
        Command::Faults { json } => host::faults(json),
        Command::Parity => parity::host_device_parity(),
        Command::Cores { json } => cores::cores(json),
        Command::Boards { json } => boards::boards(json),
        Command::Example { json } => example::example(json),
        Command::QemuRun { elf, args } => device::qemu_run(&elf, &args),
        Command::Exhaustive => host::exhaustive(),
        Command::Cross => host::cross(),
    }
}

/// Parses the command line (clap prints help, or refuses bad arguments with exit code 2),
/// runs the command and exits with 0, or with 1 after printing the error.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line as clap parses it.
#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    /// Parses `args` as they follow `cargo xtask`.
    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied())).map(|c| c.command)
    }

    /// clap's own consistency checks of the command line.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `--json` selects the JSON report of bench, bench-device, boards, cores and faults.
    #[test]
    fn json_reaches_the_commands_with_a_json_report() {
        assert!(matches!(
            parse(&["faults", "--json"]),
            Ok(Command::Faults { json: true })
        ));
        assert!(matches!(
            parse(&["faults"]),
            Ok(Command::Faults { json: false })
        ));
        assert!(matches!(
            parse(&["bench", "--json"]),
            Ok(Command::Bench { json: true })
        ));
        assert!(matches!(
            parse(&["bench-device", "--json"]),
            Ok(Command::BenchDevice { json: true })
        ));
        assert!(matches!(
            parse(&["cores", "--json"]),
            Ok(Command::Cores { json: true })
        ));
        assert!(matches!(
            parse(&["boards", "--json"]),
            Ok(Command::Boards { json: true })
        ));
    }

    /// The commands without a JSON report accept `--json` too.
    #[test]
    fn every_other_command_accepts_json() {
        for name in [
            "test",
            "qemu",
            "qemu-test",
            "overflow",
            "fuzz",
            "soak",
            "qemu-soak",
            "parity",
            "exhaustive",
            "cross",
        ] {
            assert!(parse(&[name, "--json"]).is_ok(), "{name} --json");
        }
    }

    /// An unknown command, flag or extra argument is an error.
    #[test]
    fn unknown_commands_and_flags_are_refused() {
        assert_eq!(
            parse(&["bogus"]).err().map(|e| e.kind()),
            Some(ErrorKind::InvalidSubcommand)
        );
        assert_eq!(
            parse(&["faults", "--bogus"]).err().map(|e| e.kind()),
            Some(ErrorKind::UnknownArgument)
        );
        assert_eq!(
            parse(&["cross", "extra"]).err().map(|e| e.kind()),
            Some(ErrorKind::UnknownArgument)
        );
    }
}
