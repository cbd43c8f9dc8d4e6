//! Linker setup: the memory layout `layout/memory.x` (with the `cnn` feature
//! `layout/cnn/memory.x`, with a larger data flash), `device.x` beside this file,
//! cortex-m-rt's `link.x` and defmt's `defmt.x`, for every program, example and on-target
//! test. The layouts are in a folder of their own: the linker looks for `memory.x` in its
//! working directory, this one, before its search path.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=layout/memory.x");
    println!("cargo:rerun-if-changed=layout/cnn/memory.x");
    println!("cargo:rerun-if-changed=device.x");
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let layout = if env::var_os("CARGO_FEATURE_CNN").is_some() {
        dir.join("layout").join("cnn")
    } else {
        dir.join("layout")
    };
    println!("cargo:rustc-link-search={}", layout.display());
    println!("cargo:rustc-link-search={}", dir.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
}
