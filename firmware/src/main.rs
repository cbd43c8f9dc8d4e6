//! The Cortex-M4F application (QEMU `mps2-an386`): fine-tunes the embedded pre-trained
//! model on the device, logs with `defmt` over semihosting, and exits with its verdict.
//!
//! Built for `thumbv7em-none-eabihf` only; on the host (as part of `cargo test
//! --workspace`) it compiles to a program that says so.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("firmware: build this crate for --target thumbv7em-none-eabihf (cargo xtask qemu)");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod device {
    use core::sync::atomic::{AtomicU32, Ordering};

    use cortex_m::peripheral::syst::SystClkSource;
    use cortex_m_rt::{entry, exception, ExceptionFrame};
    use defmt_semihosting as _;
    use static_cell::ConstStaticCell;

    use firmware::assets;
    use firmware::job::{self, DeviceTape, CHECKPOINT_BYTES};

    /// The tape lives in a static initialised at compile time, not on the stack.
    static TAPE: ConstStaticCell<DeviceTape> = ConstStaticCell::new(DeviceTape::new());
    static CHECKPOINT: ConstStaticCell<[u8; CHECKPOINT_BYTES]> =
        ConstStaticCell::new([0; CHECKPOINT_BYTES]);

    /// SysTick wraps every 2^24 ticks; the handler counts the wraps.
    static SYSTICK_WRAPS: AtomicU32 = AtomicU32::new(0);
    const SYSTICK_RELOAD: u32 = 0x00FF_FFFF;

    #[exception]
    fn SysTick() {
        SYSTICK_WRAPS.fetch_add(1, Ordering::Relaxed);
    }

    /// Ticks of the core clock since start-up, from SysTick and its wrap count.
    fn ticks() -> u64 {
        loop {
            let wraps = SYSTICK_WRAPS.load(Ordering::Relaxed);
            let current = cortex_m::peripheral::SYST::get_current();
            if wraps == SYSTICK_WRAPS.load(Ordering::Relaxed) {
                let elapsed = u64::from(SYSTICK_RELOAD - current);
                return u64::from(wraps) * (u64::from(SYSTICK_RELOAD) + 1) + elapsed;
            }
        }
    }

    /// IEEE arithmetic: flush-to-zero and default-NaN off, round to nearest, whatever the
    /// reset value, so that results match the host bit for bit.
    fn set_ieee_fpscr() {
        // SAFETY: writing FPSCR only changes floating-point modes; 0 is a valid value.
        unsafe { core::arch::asm!("vmsr fpscr, {}", in(reg) 0u32) };
    }

    fn exit(code: i32) -> ! {
        semihosting::process::exit(code)
    }

    #[entry]
    fn main() -> ! {
        set_ieee_fpscr();
        if let Some(mut p) = cortex_m::Peripherals::take() {
            p.SYST.set_clock_source(SystClkSource::Core);
            p.SYST.set_reload(SYSTICK_RELOAD);
            p.SYST.clear_current();
            p.SYST.enable_interrupt();
            p.SYST.enable_counter();
        }
        defmt::info!("safegrad firmware: fine-tuning on the device");
        let tape = TAPE.take();
        let out = CHECKPOINT.take();
        let result = job::run(
            tape,
            assets::PRETRAINED,
            assets::FINETUNE_SET,
            assets::EVAL_SET,
            &mut ticks,
            out,
        );
        match result {
            Ok(r) => {
                defmt::info!(
                    "held-out accuracy before fine-tuning: {=usize}/{=usize}",
                    r.correct_before,
                    r.eval_samples
                );
                defmt::info!(
                    "held-out accuracy after fine-tuning: {=usize}/{=usize}",
                    r.correct_after,
                    r.eval_samples
                );
                defmt::info!(
                    "steps {=usize} on {=usize} samples, {=usize} trainable, final loss {=f32}",
                    r.steps,
                    r.finetune_samples,
                    r.trainable,
                    r.final_loss
                );
                defmt::info!(
                    "ticks per step {=u64} (SysTick, core clock)",
                    r.train_ticks / (r.steps.max(1) as u64)
                );
                defmt::info!("checkpoint crc32 {=u32:#010x}", r.checkpoint_crc32);
                exit(0)
            }
            Err(e) => {
                defmt::error!("job failed: {}", e);
                exit(1)
            }
        }
    }

    #[exception]
    unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
        defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
        exit(3)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        if let Some(location) = info.location() {
            defmt::error!("panic at {=str}:{=u32}", location.file(), location.line());
        } else {
            defmt::error!("panic");
        }
        exit(2)
    }
}
