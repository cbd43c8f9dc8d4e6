//! The firmware on the emulated device: two boots of the fine-tuning firmware, the on-target
//! tests, the deliberate stack overflow and the streamed soak.

use crate::firmware::{build_firmware, build_firmware_bin, build_ontarget_tests, print_sizes};
use crate::process::{host_sim, workspace_root};
use crate::qemu::{log_value, run_qemu, QemuOptions, ICOUNT_SHIFT};

/// Frames of the device's soak run.
const SOAK_FRAMES: u64 = 300;

/// The stream of rotated recordings, written by host-sim (`device-stream`) to
/// `target/device-stream.bin`.
pub fn device_stream() -> Result<Vec<u8>, String> {
    device_stream_with(&[])
}

/// The stream `host-sim device-stream ARGS` writes (to `target/device-stream.bin`, or with
/// arguments `target/device-stream` followed by them joined with `-`, then `.bin`).
pub fn device_stream_with(args: &[&str]) -> Result<Vec<u8>, String> {
    let name = match args {
        [] => "device-stream.bin".to_string(),
        _ => format!("device-stream{}.bin", args.join("-")),
    };
    let path = workspace_root().join("target").join(name);
    let path_text = path.to_string_lossy();
    let mut all = vec!["device-stream", "--out", &path_text];
    all.extend(args);
    host_sim(&all)?;
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Prints the instructions per training step, from the SysTick ticks the firmware logged
/// (`ticks per step`); prints nothing if it logged none.
fn print_instructions(log: &str) {
    if let Some(ticks) = log_value(log, "ticks per step").and_then(|t| t.parse::<u64>().ok()) {
        println!(
            "xtask: about {} instructions per training step (icount shift {ICOUNT_SHIFT}: {} instructions per SysTick tick)",
            ticks * 40 / (1 << ICOUNT_SHIFT),
            40 / (1 << ICOUNT_SHIFT)
        );
    }
}

/// Two boots: the first streams the rotated recordings over UART0, fine-tunes and saves the
/// checkpoint to flash (a host file); the second resumes from it, and must report the
/// accuracy the first ended with.
pub fn boot_twice() -> Result<(), String> {
    let stream = device_stream()?;
    let elf = build_firmware()?;
    let flash = workspace_root().join("target").join("qemu-flash.bin");
    let _ = std::fs::remove_file(&flash);
    let _ = print_sizes(&elf)?;

    println!("xtask: boot 1: samples streamed over UART0, flash empty");
    let first = run_qemu(
        &elf,
        &QemuOptions {
            stream: Some(&stream),
            flash: Some(&flash),
            args: &[],
            no_icount: false,
            machine: None,
        },
    )?;
    print!("{}", first.log);
    print_instructions(&first.log);
    if first.code != 0 {
        return Err(format!("boot 1: firmware exited with {}", first.code));
    }
    let after = log_value(&first.log, "held-out accuracy after fine-tuning:")
        .ok_or("boot 1 logged no accuracy after fine-tuning")?
        .to_string();

    println!("xtask: boot 2: built-in samples, flash kept from boot 1");
    let second = run_qemu(
        &elf,
        &QemuOptions {
            stream: None,
            flash: Some(&flash),
            args: &[],
            no_icount: false,
            machine: None,
        },
    )?;
    print!("{}", second.log);
    if second.code != 0 {
        return Err(format!("boot 2: firmware exited with {}", second.code));
    }
    let resumed = second
        .log
        .lines()
        .find(|l| l.contains("resumed from the checkpoint in flash"))
        .and_then(|l| log_value(l, "held-out accuracy"))
        .ok_or("boot 2 did not resume from the checkpoint in flash")?;
    if resumed != after {
        return Err(format!(
            "boot 2 resumed with accuracy {resumed}, boot 1 ended with {after}"
        ));
    }
    println!("xtask: firmware exited with 0 twice; boot 2 resumed with boot 1's model ({resumed})");
    Ok(())
}

/// Builds the on-target tests and runs them on QEMU; their exit code is the verdict.
pub fn ontarget_tests() -> Result<(), String> {
    let elf = build_ontarget_tests()?;
    let run = run_qemu(&elf, &QemuOptions::default())?;
    print!("{}", run.log);
    if run.code == 0 && run.log.contains("all tests passed!") {
        println!("xtask: on-target tests passed on the emulated Cortex-M4F");
        Ok(())
    } else {
        Err(format!("on-target tests failed (exit code {})", run.code))
    }
}

/// Runs a firmware that overflows its stack on purpose: with flip-link the stack sits at the
/// bottom of RAM, so the overflow leaves RAM and faults; QEMU must stop with a failure code
/// instead of running on.
pub fn stack_overflow() -> Result<(), String> {
    let elf = build_firmware_bin("overflow")?;
    let run = run_qemu(&elf, &QemuOptions::default())?;
    print!("{}", run.log);
    let lockup = run
        .stderr
        .lines()
        .find(|l| l.contains("Lockup"))
        .unwrap_or("");
    if run.code != 0 && !run.log.contains("no fault") {
        println!(
            "xtask: stack overflow caught: QEMU stopped with exit code {} ({})",
            run.code,
            if lockup.is_empty() {
                "fault"
            } else {
                lockup.trim()
            }
        );
        Ok(())
    } else {
        Err(format!(
            "the stack overflow was not caught (exit code {})",
            run.code
        ))
    }
}

/// The damaged frames host-sim reports it injected into a soak stream: the sum of the
/// `corrupted`, `nan`, `out_of_range`, `bad_label` and `truncated` counts of its JSON report.
fn injected_faults(report: &str) -> u64 {
    ["corrupted", "nan", "out_of_range", "bad_label", "truncated"]
        .iter()
        .filter_map(|k| {
            report
                .split(&format!("\"{k}\":"))
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// A streamed soak on the device (`firmware/src/bin/soak.rs`): 300 training frames over
/// UART0 (each byte crosses the emulated UART one at a time), one in 25 damaged on purpose;
/// one training step per good frame. Every good frame must train, and the tape must not
/// grow.
pub fn soak() -> Result<(), String> {
    let path = workspace_root().join("target").join("soak-stream.bin");
    let path_str = path.to_string_lossy().into_owned();
    let frames = SOAK_FRAMES.to_string();
    let report = host_sim(&[
        "device-stream",
        "--out",
        &path_str,
        "--soak",
        &frames,
        "--fault-every",
        "25",
    ])?;
    let injected = injected_faults(&report);
    let stream = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let elf = build_firmware_bin("soak")?;
    let run = run_qemu(
        &elf,
        &QemuOptions {
            stream: Some(&stream),
            flash: None,
            args: &[],
            no_icount: true,
            machine: None,
        },
    )?;
    print!("{}", run.log);
    let steps: u64 = log_value(&run.log, "soak:")
        .and_then(|v| v.parse().ok())
        .ok_or("the firmware logged no soak result")?;
    let expected = SOAK_FRAMES - injected;
    if run.code == 0 && steps == expected && run.log.contains("no growth") {
        println!(
            "xtask: device soak: {steps} training steps from {SOAK_FRAMES} frames, the {injected} damaged ones refused, no growth"
        );
        Ok(())
    } else {
        Err(format!(
            "device soak: {steps} steps, expected {expected} (exit code {})",
            run.code
        ))
    }
}

/// Runs `elf` on QEMU with `args` as its semihosting arguments, prints its decoded log (and
/// what QEMU printed, if it failed), and exits with the program's exit code: the runner of
/// `cargo run` and `cargo test` in `firmware/`.
pub fn qemu_run(elf: &std::path::Path, args: &[String]) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_qemu(
        elf,
        &QemuOptions {
            args: &args,
            ..QemuOptions::default()
        },
    )?;
    print!("{}", run.log);
    if run.code != 0 {
        eprint!("{}", run.stderr);
    }
    std::process::exit(run.code)
}
