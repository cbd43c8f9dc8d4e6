//! `cargo xtask boards`: the example firmware for real boards (`boards/`), built in release
//! mode for each board's target, with its flash and static RAM from the ELF. There is no
//! hardware here: the builds are checked, the runs are the user's (the README says how).

use crate::firmware::print_sizes;
use crate::process::{cargo_in, cargo_tool, remap_checkout, run_status, workspace_root};

/// A real board's example firmware.
struct Board {
    /// The board.
    name: &'static str,
    /// Its crate in `boards/`.
    package: &'static str,
    /// The Rust target of its core.
    target: &'static str,
    /// The chip, as probe-rs names it.
    chip: &'static str,
}

const BOARDS: [Board; 3] = [
    Board {
        name: "STM32F4 Discovery (STM32F407VG, Cortex-M4F)",
        package: "board-stm32f4-discovery",
        target: "thumbv7em-none-eabihf",
        chip: "STM32F407VGTx",
    },
    Board {
        name: "nRF52840-DK (nRF52840, Cortex-M4F)",
        package: "board-nrf52840-dk",
        target: "thumbv7em-none-eabihf",
        chip: "nRF52840_xxAA",
    },
    Board {
        name: "Raspberry Pi Pico (RP2040, Cortex-M0+)",
        package: "board-pico",
        target: "thumbv6m-none-eabi",
        chip: "RP2040",
    },
];

/// Builds every board's firmware, prints its flash and static RAM (and with `json` a JSON
/// array as the last line).
pub fn boards(json: bool) -> Result<(), String> {
    cargo_tool("flip-link")?;
    let dir = workspace_root().join("boards");
    let mut rows = Vec::new();
    for board in &BOARDS {
        run_status("rustup", &["target", "add", board.target])?;
        println!(
            "xtask: {}: {} for {}",
            board.name, board.package, board.target
        );
        cargo_in(
            &dir,
            &[
                "build",
                "--release",
                "--config",
                &remap_checkout(),
                "-p",
                board.package,
                "--target",
                board.target,
            ],
        )?;
        let elf = dir
            .join("target")
            .join(board.target)
            .join("release")
            .join(board.package);
        let sizes = print_sizes(&elf)?;
        rows.push((board, sizes));
    }
    println!();
    println!("| board | crate | target | flash | static RAM | probe-rs chip |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (b, s) in &rows {
        println!(
            "| {} | `boards/{}` | {} | {} | {} | {} |",
            b.name,
            b.package.trim_start_matches("board-"),
            b.target,
            s.flash,
            s.static_ram,
            b.chip
        );
    }
    if json {
        let objects: Vec<String> = rows
            .iter()
            .map(|(b, s)| {
                format!(
                    "{{\"board\":\"{}\",\"crate\":\"{}\",\"target\":\"{}\",\"chip\":\"{}\",\"flash\":{},\"static_ram\":{}}}",
                    b.name, b.package, b.target, b.chip, s.flash, s.static_ram
                )
            })
            .collect();
        println!("[{}]", objects.join(","));
    }
    Ok(())
}
