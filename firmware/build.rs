//! Linker setup: the board's memory layout (`board` module; `layout/` holds one folder per
//! memory map: `layout/memory.x` for the MPS2 boards mps2-an385, -an386 and -an500,
//! `layout/cnn/memory.x` for the CNN's programs on them, with a larger data flash;
//! `layout/an505`, `layout/microbit` and `layout/virt`), the run-time's `link.x`
//! (cortex-m-rt's, with `device.x` beside this file; or riscv-rt's) and defmt's `defmt.x`,
//! for every program, example and on-target test. The layouts are in a folder of their own:
//! the linker looks for `memory.x` in its working directory, this one, before its search
//! path.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=layout");
    println!("cargo:rerun-if-changed=device.x");
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let feature = |name: &str| env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    let layout = dir.join("layout");
    let layout = if feature("AN505") {
        layout.join("an505")
    } else if feature("MICROBIT") {
        layout.join("microbit")
    } else if feature("VIRT") {
        layout.join("virt")
    } else if feature("CNN") {
        layout.join("cnn")
    } else {
        layout
    };
    println!("cargo:rustc-link-search={}", layout.display());
    println!("cargo:rustc-link-search={}", dir.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
}
