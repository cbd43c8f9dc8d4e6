//! The device's soak test: streamed online fine-tuning, one training step per training
//! frame from UART0, until the stream ends (`cargo xtask qemu-soak` sends the frames, some
//! damaged on purpose). Every good frame must train and the tape must not grow; the exit
//! code says whether they did. On the host this program only says what it is for.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("soak: a bare-metal test; run it with `cargo xtask qemu-soak`");
}

#[cfg(target_os = "none")]
mod device {
    use cortex_m_rt::entry;
    use defmt_semihosting as _;
    use static_cell::ConstStaticCell;

    use firmware::assets;
    use firmware::board::{exit, per, set_ieee_fpscr, start_ticks, ticks};
    use firmware::job::{self, DeviceTape};
    use firmware::samples::Stream;
    use firmware::uart::{CmsdkUart, UART0_BASE};

    static TAPE: ConstStaticCell<DeviceTape> = ConstStaticCell::new(DeviceTape::new());

    #[entry]
    fn main() -> ! {
        set_ieee_fpscr();
        if let Some(mut p) = cortex_m::Peripherals::take() {
            start_ticks(&mut p.SYST);
        }
        let tape = TAPE.take();
        let model = match job::build(tape, assets::PRETRAINED) {
            Ok(m) => m,
            Err(e) => {
                defmt::error!("soak: {}", e);
                exit(1)
            }
        };
        // SAFETY: UART0 is used by nothing else in this program.
        let uart = unsafe { CmsdkUart::new(UART0_BASE) };
        let mut source = Stream::new(uart);
        let start = ticks();
        let report = job::soak(tape, &model, assets::PRETRAINED, &mut source);
        let elapsed = ticks() - start;
        let r = source.rejected();
        match report {
            Ok(s) => {
                defmt::info!(
                    "soak: {=u32} streamed training steps, {=u32} refused steps; {=u32} frames refused ({=u32} CRC, {=u32} values), {=u32} sequence gaps",
                    s.steps,
                    s.step_errors,
                    r.frames,
                    r.crc,
                    r.values,
                    r.gaps
                );
                defmt::info!(
                    "soak: tape {=usize} nodes, {=usize} values, {=usize} gradients after every step: {=str}; ticks per sample {=u32}",
                    s.tape_sizes.0,
                    s.tape_sizes.1,
                    s.tape_sizes.2,
                    if s.grew { "GREW" } else { "no growth" },
                    per(elapsed, s.steps)
                );
                exit(if s.grew || s.step_errors > 0 { 1 } else { 0 })
            }
            Err(e) => {
                defmt::error!("soak: {}", e);
                exit(1)
            }
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        firmware::board::panic_exit(info)
    }
}
