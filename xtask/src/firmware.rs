//! Building the firmware for the device: its programs, its example and its on-target tests,
//! with `libm` or fast-math, and the sizes of a built ELF. The firmware is a workspace of
//! its own (`firmware/`, built for the device by its `.cargo/config.toml`); its builds go to
//! `firmware/target`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{
    cargo_in, cargo_output_in, cargo_tool, remap_checkout, run_status, workspace_root,
};

/// The firmware's target.
pub const FIRMWARE_TARGET: &str = "thumbv7em-none-eabihf";

/// Which `exp`, `ln` and `sqrt` a build computes with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Math {
    /// `libm` (and the FPU's square root on the device): the default.
    Exact,
    /// safegrad's `fast-math` feature: micromath's approximations.
    Fast,
}

impl Math {
    /// The cargo arguments that select it for a crate with a `fast-math` feature.
    pub fn cargo_args(self) -> &'static [&'static str] {
        match self {
            Math::Exact => &[],
            Math::Fast => &["--features", "fast-math"],
        }
    }

    /// Its name in printed reports: `libm` or `fast-math`.
    pub fn label(self) -> &'static str {
        match self {
            Math::Exact => "libm",
            Math::Fast => "fast-math",
        }
    }
}

/// Makes sure the firmware can be built: the target is installed (`rustup target add`) and
/// so is its linker, flip-link.
fn prepare_build() -> Result<(), String> {
    run_status("rustup", &["target", "add", FIRMWARE_TARGET])?;
    cargo_tool("flip-link")?;
    Ok(())
}

/// The firmware's folder.
pub fn firmware_dir() -> PathBuf {
    workspace_root().join("firmware")
}

/// Where the firmware's release builds land.
fn release_dir() -> PathBuf {
    firmware_dir()
        .join("target")
        .join(FIRMWARE_TARGET)
        .join("release")
}

/// `cargo <command> --release --target-dir firmware/target <rest>`, run in `firmware/`.
fn firmware_cargo(command: &str, rest: &[&str]) -> Result<(), String> {
    let target_dir = firmware_dir().join("target");
    let target_dir = target_dir.to_string_lossy();
    let remap = remap_checkout();
    let mut args = vec![
        command,
        "--release",
        "--target-dir",
        &target_dir,
        "--config",
        &remap,
    ];
    args.extend(rest);
    cargo_in(&firmware_dir(), &args)
}

/// Builds the firmware program `bin` (`firmware/src/bin/<bin>.rs`, release) for the device
/// and returns the ELF's path.
pub fn build_firmware_bin(bin: &str) -> Result<PathBuf, String> {
    build_firmware_with(bin, Math::Exact)
}

/// [`build_firmware_bin`] with the given math.
pub fn build_firmware_with(bin: &str, math: Math) -> Result<PathBuf, String> {
    build_firmware_featured(bin, math, &[])
}

/// [`build_firmware_with`] with more of the firmware's features (`cnn`).
pub fn build_firmware_featured(
    bin: &str,
    math: Math,
    features: &[&str],
) -> Result<PathBuf, String> {
    prepare_build()?;
    let mut wanted: Vec<&str> = features.to_vec();
    if math == Math::Fast {
        wanted.push("fast-math");
    }
    let joined = wanted.join(",");
    let mut args = vec!["--bin", bin];
    if !wanted.is_empty() {
        args.extend(["--features", &joined]);
    }
    firmware_cargo("build", &args)?;
    Ok(release_dir().join(bin))
}

/// Builds the fine-tuning program `bin` for another board: `target`, with the board's
/// feature (`firmware/src/board/`; none for `mps2-an386`). Returns a copy of the ELF kept
/// under `firmware/target/boards/<board>/`, as boards of one target share cargo's output.
pub fn build_for_board(bin: &str, target: &str, board: Option<&str>) -> Result<PathBuf, String> {
    run_status("rustup", &["target", "add", target])?;
    cargo_tool("flip-link")?;
    let mut args = vec!["--bin", bin, "--target", target];
    if let Some(feature) = board {
        args.extend(["--features", feature]);
    }
    firmware_cargo("build", &args)?;
    let built = firmware_dir()
        .join("target")
        .join(target)
        .join("release")
        .join(bin);
    let dir = firmware_dir()
        .join("target")
        .join("boards")
        .join(board.unwrap_or("an386"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let kept = dir.join(bin);
    std::fs::copy(&built, &kept).map_err(|e| format!("{}: {e}", built.display()))?;
    Ok(kept)
}

/// Builds the firmware example `name` (`firmware/examples/<name>.rs`, release) and returns
/// the ELF's path.
pub fn build_example(name: &str) -> Result<PathBuf, String> {
    prepare_build()?;
    firmware_cargo("build", &["--example", name])?;
    Ok(release_dir().join("examples").join(name))
}

/// Builds the fine-tuning firmware and returns the ELF's path.
pub fn build_firmware() -> Result<PathBuf, String> {
    build_firmware_bin("finetune")
}

/// Builds the on-target tests (`firmware/tests/ontarget.rs`, release) and returns the path
/// of their ELF, as cargo reports it.
pub fn build_ontarget_tests() -> Result<PathBuf, String> {
    prepare_build()?;
    let target_dir = firmware_dir().join("target");
    let json = cargo_output_in(
        &firmware_dir(),
        &[
            "test",
            "--release",
            "--target-dir",
            &target_dir.to_string_lossy(),
            "--config",
            &remap_checkout(),
            "--test",
            "ontarget",
            "--no-run",
            "--message-format=json",
        ],
    )?;
    let elf = json
        .lines()
        .filter(|l| l.contains("\"name\":\"ontarget\""))
        .find_map(|l| l.split("\"executable\":\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .ok_or("cargo reported no executable for the on-target tests")?;
    Ok(PathBuf::from(elf))
}

/// Flash and static RAM of a firmware ELF, bytes.
pub struct Sizes {
    /// Code and read-only data: the vector table, the boot loader, `.text`, `.rodata` and
    /// `.data`'s initial values.
    pub flash: u64,
    /// `.data`, `.bss` and `.uninit`.
    pub static_ram: u64,
}

/// Measures the ELF's sections with `llvm-size -A` (rustup's llvm-tools component), prints
/// the `xtask: firmware size: ...` line and returns its flash and static RAM.
pub fn print_sizes(elf: &Path) -> Result<Sizes, String> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let host = Command::new("rustc")
        .args(["-vV"])
        .output()
        .map_err(|e| format!("rustc: {e}"))?;
    let host = String::from_utf8_lossy(&host.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or("rustc -vV printed no host")?;
    let tool = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-size");
    let out = Command::new(&tool)
        .args(["-A", &elf.to_string_lossy()])
        .output()
        .map_err(|e| format!("{}: {e} (rustup component add llvm-tools)", tool.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let size = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // riscv-rt's start-up code is `.init.rust`, RISC-V keeps its unwind tables, and the
    // RP2040's second-stage boot loader is `.boot2`.
    let flash = size(".vector_table")
        + size(".boot2")
        + size(".text")
        + size(".init.rust")
        + size(".rodata")
        + size(".eh_frame")
        + size(".data");
    let ram = size(".data") + size(".bss") + size(".uninit");
    println!(
        "xtask: firmware size: flash {flash} bytes (.text {}, .rodata {}, .data {}), static RAM {ram} bytes (.data {}, .bss {}), data flash {} bytes (checkpoints, logged samples)",
        size(".text"),
        size(".rodata"),
        size(".data"),
        size(".data"),
        size(".bss"),
        size(".storage")
    );
    Ok(Sizes {
        flash,
        static_ram: ram,
    })
}
