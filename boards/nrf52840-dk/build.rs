//! Linker setup: nrf52840-hal's `memory.x` (it puts it on the search path), `storage.x`
//! beside this file for the data flash, cortex-m-rt's `link.x` and defmt's `defmt.x`.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    println!("cargo:rustc-link-search={dir}");
    println!("cargo:rerun-if-changed=storage.x");
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rustc-link-arg=-Tstorage.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
}
