//! `cargo xtask <command>`: the project's build, run and test helpers.
//!
//! xtask drives `cargo` and other tools as processes; it links none of the project's crates.

use std::env;
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test        every test: the workspace's tests, the core built for Cortex-M4F and
              Cortex-M0+, and the exhaustive safe_div_signed check (release mode)
  exhaustive  only the exhaustive check over every finite f32 denominator
  cross       only the core's builds for thumbv7em-none-eabihf and thumbv6m-none-eabi";

/// The bare-metal targets the core must build for: Cortex-M4F (FPU) and Cortex-M0+ (no FPU).
const CORE_TARGETS: [&str; 2] = ["thumbv7em-none-eabihf", "thumbv6m-none-eabi"];

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .map_err(|e| format!("could not start {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn cross() -> Result<(), String> {
    for target in CORE_TARGETS {
        cargo(&["build", "-p", "safegrad", "--target", target])?;
        cargo(&[
            "build",
            "-p",
            "safegrad",
            "--target",
            target,
            "--features",
            "defmt",
        ])?;
    }
    Ok(())
}

fn exhaustive() -> Result<(), String> {
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

fn run(command: &str) -> Result<(), String> {
    match command {
        "test" => {
            cargo(&["test", "--workspace"])?;
            cross()?;
            exhaustive()
        }
        "exhaustive" => exhaustive(),
        "cross" => cross(),
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    }
}

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
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
