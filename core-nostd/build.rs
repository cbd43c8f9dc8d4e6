//! Sets `safegrad_smlad` on targets with the Armv7E-M DSP instructions (Cortex-M4 and M7),
//! where the `int8` kernels use `SMLAD` (`src/quant/kernels.rs`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(safegrad_smlad)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em") {
        println!("cargo::rustc-cfg=safegrad_smlad");
    }
}
