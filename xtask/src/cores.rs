//! `cargo xtask cores`: the fine-tuning job on every core's QEMU machine, the samples
//! streamed over each board's UART, with parity against the host simulator; the
//! instructions per fine-tuning step, the canonical training step's instructions per
//! multiply-accumulate where the board's RAM holds it, and the program's flash and RAM.

use crate::device::device_stream;
use crate::firmware::{build_for_board, print_sizes, Math};
use crate::parity::host_finetune_crc;
use crate::qemu::{log_value, run_qemu, Machine, QemuOptions, MPS2_AN386};

/// A core, the QEMU machine that has it and the firmware board built for it.
struct Core {
    /// The processor core.
    name: &'static str,
    machine: Machine,
    /// The Rust target.
    target: &'static str,
    /// The firmware's board feature (none: `mps2-an386`).
    board: Option<&'static str>,
    /// Why the device benchmark (`stepbench`) does not run there, if it does not.
    no_stepbench: Option<&'static str>,
}

const fn arm(name: &'static str, tick_hz: u64) -> Machine {
    Machine {
        name,
        qemu: "qemu-system-arm",
        package: "qemu-system-arm",
        tick_hz,
        extra: &[],
    }
}

/// The cores, smallest first. The tick rates are QEMU's: the micro:bit's HCLK is 16 MHz,
/// the MPS2 boards' system clock 25 MHz (20 MHz on the AN505's IoT Kit), `virt`'s CLINT
/// timer 10 MHz.
const CORES: [Core; 6] = [
    Core {
        name: "Cortex-M0",
        machine: arm("microbit", 16_000_000),
        target: "thumbv6m-none-eabi",
        board: Some("microbit"),
        no_stepbench: Some(
            "its tape and the baseline's weights (15.6 KB of statics) do not fit the micro:bit's 16 KiB of RAM",
        ),
    },
    Core {
        name: "Cortex-M3",
        machine: arm("mps2-an385", 25_000_000),
        target: "thumbv7m-none-eabi",
        board: Some("an385"),
        no_stepbench: None,
    },
    Core {
        name: "Cortex-M4F",
        machine: MPS2_AN386,
        target: "thumbv7em-none-eabihf",
        board: None,
        no_stepbench: None,
    },
    Core {
        name: "Cortex-M7",
        machine: arm("mps2-an500", 25_000_000),
        target: "thumbv7em-none-eabihf",
        board: Some("an500"),
        no_stepbench: None,
    },
    Core {
        name: "Cortex-M33",
        machine: arm("mps2-an505", 20_000_000),
        target: "thumbv8m.main-none-eabihf",
        board: Some("an505"),
        no_stepbench: None,
    },
    Core {
        name: "RV32IMAC",
        machine: Machine {
            name: "virt",
            qemu: "qemu-system-riscv32",
            package: "qemu-system-misc",
            tick_hz: 10_000_000,
            extra: &["-bios", "none"],
        },
        target: "riscv32imac-unknown-none-elf",
        board: Some("virt"),
        no_stepbench: None,
    },
];

/// What one core's runs gave.
struct CoreReport {
    core: &'static str,
    machine: &'static str,
    /// The fine-tuned parameters' CRC-32, as the device logged it.
    crc: String,
    parity: bool,
    instructions_per_step: u64,
    /// The canonical step's instructions per multiply-accumulate: safegrad's and the
    /// hand-written baseline's.
    per_mac: Option<(f64, f64)>,
    flash: u64,
    static_ram: u64,
    stack: u64,
}

/// A number the log has after `key` on the first line containing `line`.
fn logged(log: &str, line: &str, key: &str) -> Result<u64, String> {
    log.lines()
        .find(|l| l.contains(line))
        .and_then(|l| log_value(l, key))
        .map(|v| v.trim_end_matches(','))
        .and_then(|v| v.parse().ok())
        .ok_or(format!("the log has no `{key}` on its `{line}` line"))
}

/// Runs the canonical training step's benchmark on `core`: safegrad's and the baseline's
/// instructions per multiply-accumulate.
fn step_bench(core: &Core) -> Result<(f64, f64), String> {
    let elf = build_for_board("stepbench", core.target, core.board)?;
    let run = run_qemu(
        &elf,
        &QemuOptions {
            machine: Some(&core.machine),
            ..QemuOptions::default()
        },
    )?;
    if run.code != 0 {
        print!("{}", run.log);
        return Err(format!(
            "stepbench on {} exited with {}",
            core.name, run.code
        ));
    }
    let per_tick = core.machine.instructions_per_tick();
    let macs = logged(&run.log, "ticks per step", "each,")? as f64;
    let per_mac = |key| -> Result<f64, String> {
        Ok(logged(&run.log, "ticks per step", key)? as f64 * per_tick / macs)
    };
    Ok((per_mac("safegrad")?, per_mac("baseline")?))
}

/// The fine-tuning job on `core`, the samples streamed over its UART.
fn run_core(core: &Core, stream: &[u8], host: &str) -> Result<CoreReport, String> {
    let elf = build_for_board("finetune", core.target, core.board)?;
    let sizes = print_sizes(&elf)?;
    let run = run_qemu(
        &elf,
        &QemuOptions {
            stream: Some(stream),
            machine: Some(&core.machine),
            ..QemuOptions::default()
        },
    )?;
    if run.code != 0 {
        print!("{}{}", run.log, run.stderr);
        return Err(format!(
            "the fine-tuning job on {} ({}) exited with {}",
            core.name, core.machine.name, run.code
        ));
    }
    let crc = log_value(&run.log, "checkpoint crc32")
        .ok_or(format!("{} logged no checkpoint crc32", core.name))?
        .to_string();
    let ticks = logged(&run.log, "ticks per step", "step")?;
    let stack = logged(&run.log, "stack high-water mark", "mark")?;
    let per_mac = match core.no_stepbench {
        Some(_) => None,
        None => Some(step_bench(core)?),
    };
    Ok(CoreReport {
        core: core.name,
        machine: core.machine.name,
        parity: crc == host,
        crc,
        instructions_per_step: (ticks as f64 * core.machine.instructions_per_tick()).round() as u64,
        per_mac,
        flash: sizes.flash,
        static_ram: sizes.static_ram,
        stack,
    })
}

/// One report as a JSON object.
fn json_object(r: &CoreReport) -> String {
    let per_mac = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.2}"));
    format!(
        "{{\"core\":\"{}\",\"machine\":\"{}\",\"parity\":{},\"checkpoint_crc32\":\"{}\",\"instructions_per_step\":{},\"instructions_per_mac\":{},\"baseline_instructions_per_mac\":{},\"flash\":{},\"ram\":{},\"static_ram\":{},\"stack\":{}}}",
        r.core,
        r.machine,
        r.parity,
        r.crc,
        r.instructions_per_step,
        per_mac(r.per_mac.map(|p| p.0)),
        per_mac(r.per_mac.map(|p| p.1)),
        r.flash,
        r.static_ram + r.stack,
        r.static_ram,
        r.stack
    )
}

/// Runs every core, prints a table (and with `json` a JSON array as the last line); fails
/// if a run fails or a core's fine-tuned parameters differ from the host's.
pub fn cores(json: bool) -> Result<(), String> {
    let host = host_finetune_crc(Math::Exact, &[])?;
    println!("xtask: host (x86-64, host-sim finetune, libm): parameters crc32 {host}");
    let stream = device_stream()?;
    let mut reports = Vec::new();
    for core in &CORES {
        println!(
            "xtask: {} on QEMU {} ({})",
            core.name, core.machine.name, core.target
        );
        let r = run_core(core, &stream, &host)?;
        println!(
            "xtask: {}: parameters crc32 {} ({}), {} instructions per step",
            r.core,
            r.crc,
            if r.parity {
                "bit-identical to the host"
            } else {
                "DIFFERENT from the host"
            },
            r.instructions_per_step
        );
        if let Some(why) = core.no_stepbench {
            println!("xtask: {}: no canonical-step benchmark: {why}", r.core);
        }
        reports.push(r);
    }
    println!();
    println!("| core | QEMU machine | parity | instructions per step | instructions per MAC (baseline) | flash | RAM (static + stack) |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &reports {
        let per_mac = r.per_mac.map_or("(does not fit)".to_string(), |(s, b)| {
            format!("{s:.2} ({b:.2})")
        });
        println!(
            "| {} | {} | {} | {} | {} | {} | {} ({} + {}) |",
            r.core,
            r.machine,
            if r.parity { "yes" } else { "no" },
            r.instructions_per_step,
            per_mac,
            r.flash,
            r.static_ram + r.stack,
            r.static_ram,
            r.stack
        );
    }
    if json {
        let objects: Vec<String> = reports.iter().map(json_object).collect();
        println!("[{}]", objects.join(","));
    }
    let broken: Vec<&str> = reports
        .iter()
        .filter(|r| !r.parity)
        .map(|r| r.core)
        .collect();
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "parity: the fine-tuned parameters differ from the host's on {}",
            broken.join(", ")
        ))
    }
}
