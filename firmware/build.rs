//! Linker setup for the bare-metal build only: `memory.x` and `device.x` beside this file, cortex-m-rt's
//! `link.x` and defmt's `defmt.x`, for the application and the on-target tests. Host builds (the library's tests) link normally.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=device.x");
    println!("cargo:rerun-if-changed=assets");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rustc-link-search={}", dir.display());
    for kind in ["bins", "tests"] {
        println!("cargo:rustc-link-arg-{kind}=-Tlink.x");
        println!("cargo:rustc-link-arg-{kind}=-Tdefmt.x");
    }
}
