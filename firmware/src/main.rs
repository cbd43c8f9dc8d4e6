//! The Cortex-M4F application. It is built for `thumbv7em-none-eabihf` only; on the host
//! (as part of `cargo test --workspace`) it compiles to a program that says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("firmware: build this crate for --target thumbv7em-none-eabihf");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
