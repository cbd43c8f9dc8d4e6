//! The Cortex-M4F application (QEMU `mps2-an386`): fine-tunes the embedded pre-trained
//! model on the device, logs with `defmt` over semihosting, keeps the fine-tuned model in
//! flash, and exits with its verdict.
//!
//! Semihosting arguments choose what it does: `stream` reads the samples from UART0 (raw IMU
//! windows in `safegrad::wire` frames) instead of the set built into flash; `flash=PATH`
//! backs the flash with the host file `PATH`, so that a later boot resumes from the
//! checkpoint an earlier one saved. (The streamed soak test is its own program,
//! `src/bin/soak.rs`.)
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
    use core::ffi::CStr;

    use cortex_m_rt::entry;
    use defmt_semihosting as _;
    use safegrad::checkpoint;
    use safegrad::dataset::Dataset;
    use safegrad::features::IMU_FEATURES;
    use semihosting::io::Read as _;
    use static_cell::ConstStaticCell;

    use firmware::board::{exit, per, set_ieee_fpscr, start_ticks, ticks};
    use firmware::job::{self, DeviceTape, SampleLog};
    use firmware::samples::Stream;
    use firmware::uart::{CmsdkUart, UART0_BASE};
    use firmware::{assets, job::JobError};
    use nor_sim::{Persist, SimFlash};
    use safegrad::store::Slots;

    /// Bytes of flash set aside for data: the checkpoint's two slots (A and B) of two 4 KiB
    /// sectors, then the streamed samples' two sets of two sectors each.
    const FLASH_BYTES: usize = 32768;
    const SLOTS: Slots = Slots::new(0, 8192);
    const SAMPLE_LOG: SampleLog = SampleLog {
        train: 16384,
        eval: 24576,
        capacity: 8192,
    };
    type Flash = SimFlash<'static, HostFile>;
    type Set<'a> = Dataset<'a, f32, IMU_FEATURES>;

    /// The flash image, persisted to a host file through semihosting.
    struct HostFile {
        path: [u8; 128],
    }

    impl HostFile {
        fn path(&self) -> Option<&CStr> {
            CStr::from_bytes_until_nul(&self.path).ok()
        }
    }

    impl Persist for HostFile {
        fn persist(&mut self, image: &[u8]) -> bool {
            match self.path() {
                Some(path) if !path.is_empty() => semihosting::fs::write(path, image).is_ok(),
                _ => true,
            }
        }
    }

    /// The tape lives in a static initialised at compile time.
    static TAPE: ConstStaticCell<DeviceTape> = ConstStaticCell::new(DeviceTape::new());

    /// The data flash (checkpoints, logged samples): `memory.x`'s `STORAGE` region at the end
    /// of the code memory, not loaded with the program (start-up fills it from the host file,
    /// or erases it).
    fn storage() -> &'static mut [u8; FLASH_BYTES] {
        #[link_section = ".storage"]
        static mut STORAGE: [u8; FLASH_BYTES] = [0; FLASH_BYTES];
        // SAFETY: called once, by `run`, before anything else reaches the region.
        unsafe { &mut *core::ptr::addr_of_mut!(STORAGE) }
    }

    /// The bottom of RAM (`memory.x`). flip-link puts the stack there, below the statics, so
    /// an overflow runs off the end of RAM and faults.
    const RAM_START: usize = 0x2000_0000;
    const PAINT: u32 = 0x5AFE_57AC;
    /// The stack the fine-tuning run may use; more fails the run.
    const STACK_BUDGET: usize = 8 * 1024;

    extern "C" {
        /// The initial stack pointer, from the linker (cortex-m-rt, moved by flip-link).
        static _stack_start: u32;
    }

    fn stack_top() -> usize {
        core::ptr::addr_of!(_stack_start) as usize
    }

    /// Fills the unused stack, from the bottom of RAM up to a little below the current
    /// stack pointer, with a pattern.
    fn paint_stack() {
        let limit = cortex_m::register::msp::read() as usize - 256;
        let mut p = RAM_START;
        while p < limit {
            // SAFETY: [RAM_START, limit) is unused stack below the live frames.
            unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
            p += 4;
        }
    }

    /// The deepest the stack has been since [`paint_stack`]: the top of the stack minus the
    /// lowest word no longer holding the pattern.
    fn stack_high_water() -> usize {
        let mut p = RAM_START;
        // SAFETY: reading RAM below the stack pointer.
        while p < stack_top() && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
            p += 4;
        }
        stack_top() - p
    }

    /// What the semihosting arguments ask for.
    struct Options {
        stream: bool,
        flash_path: [u8; 128],
    }

    #[inline(never)]
    fn options() -> Options {
        let mut o = Options {
            stream: false,
            flash_path: [0; 128],
        };
        let Ok(args) = semihosting::experimental::env::args::<256>() else {
            return o;
        };
        for arg in &args {
            match arg {
                Ok("stream") => o.stream = true,
                Ok(a) if a.starts_with("flash=") => {
                    let path = a.as_bytes().get(6..).unwrap_or(&[]);
                    if path.len() < o.flash_path.len() {
                        o.flash_path.iter_mut().zip(path).for_each(|(d, &s)| *d = s);
                    }
                }
                _ => {}
            }
        }
        o
    }

    /// The data flash over `image`, holding what a previous boot persisted to the host
    /// file at `path`, if any (else erased).
    #[inline(never)]
    fn load_image(image: &'static mut [u8; FLASH_BYTES], path: [u8; 128]) -> Flash {
        let file = HostFile { path };
        image.fill(0xFF);
        if let Some(p) = file.path().filter(|p| !p.is_empty()) {
            if let Ok(mut f) = semihosting::fs::File::open(p) {
                let mut filled = 0;
                while filled < FLASH_BYTES {
                    match f.read(image.get_mut(filled..).unwrap_or(&mut [])) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => filled += n,
                    }
                }
                if filled != FLASH_BYTES {
                    image.fill(0xFF);
                }
            }
        }
        SimFlash::with_persist(image, file)
    }

    /// Reads the samples streamed over UART0 into the flash's sample log; returns the
    /// lengths of the two recorded sets. Not inlined: the frame buffers it needs are on the
    /// stack only while it runs, and only when samples are streamed.
    #[inline(never)]
    fn record_stream(flash: &mut Flash) -> Result<(usize, usize), ()> {
        // SAFETY: UART0 is used by nothing else in this program.
        let uart = unsafe { CmsdkUart::new(UART0_BASE) };
        let mut source = Stream::new(uart);
        let recorded = job::record(&mut source, flash, SAMPLE_LOG);
        let r = source.rejected();
        defmt::info!(
            "stream: {=u32} samples accepted, {=u32} frames refused ({=u32} CRC, {=u32} values), {=u32} sequence gaps",
            source.accepted(),
            r.frames,
            r.crc,
            r.values,
            r.gaps
        );
        if let Some(e) = r.last {
            defmt::warn!("stream: last refusal: {}", e);
        }
        recorded.map_err(|e| defmt::error!("stream: {}", e))
    }

    /// The samples to fine-tune on and to evaluate, read in place: the sets built into flash,
    /// or those `record_stream` logged.
    #[inline(never)]
    fn samples(image: &[u8], recorded: Option<(usize, usize)>) -> Result<(Set<'_>, Set<'_>), ()> {
        let (train, eval) = match recorded {
            None => (assets::FINETUNE_SET, assets::EVAL_SET),
            Some((t, e)) => {
                let at = |base: u32, len: usize| {
                    image.get(base as usize..base as usize + len).unwrap_or(&[])
                };
                (at(SAMPLE_LOG.train, t), at(SAMPLE_LOG.eval, e))
            }
        };
        match (Dataset::parse(train), Dataset::parse(eval)) {
            (Ok(t), Ok(e)) => Ok((t, e)),
            _ => {
                defmt::error!("the sample sets are damaged");
                Err(())
            }
        }
    }

    #[inline(never)]
    fn run() -> Result<(), JobError> {
        let opts = options();
        let flash = &mut load_image(storage(), opts.flash_path);
        let tape = TAPE.take();
        let model = job::build(tape, assets::PRETRAINED)?;
        // A checkpoint saved by an earlier boot, if any (before the sample log is written).
        let resume = SLOTS.locate(flash).ok().flatten();
        let recorded = if opts.stream {
            Some(record_stream(flash).unwrap_or_else(|()| exit(1)))
        } else {
            None
        };
        let Ok((train, eval)) = samples(flash.image(), recorded) else {
            exit(1)
        };
        defmt::info!(
            "samples: {=usize} to fine-tune on, {=usize} to evaluate ({=str}, read in place)",
            train.len(),
            eval.len(),
            if opts.stream {
                "UART stream, logged to flash"
            } else {
                "built into flash"
            }
        );

        // Resume from the checkpoint in flash, read in place.
        if let Some(slot) = resume {
            let at = slot.offset as usize;
            let stored = flash.image().get(at..at + slot.len).unwrap_or(&[]);
            if checkpoint::verify(tape, stored).is_ok() {
                let correct = job::evaluate_checkpoint(tape, &model, stored, &eval)?;
                defmt::info!(
                    "resumed from the checkpoint in flash (save {=u32}): held-out accuracy {=usize}/{=usize}",
                    slot.seq,
                    correct,
                    eval.len()
                );
                return Ok(());
            }
        }
        defmt::info!("no checkpoint in flash: fine-tuning the pre-trained model");

        let r = job::run(tape, &model, assets::PRETRAINED, &train, &eval, &mut ticks)?;
        report(&r);
        save(tape, flash);
        Ok(())
    }

    /// Logs what the job measured.
    #[inline(never)]
    fn report(r: &job::JobReport) {
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
        if r.rejected > 0 || r.rollbacks > 0 {
            defmt::warn!(
                "divergence guard: {=usize} samples refused as non-finite, {=usize} rollbacks to the last good epoch (learning rate halved each time)",
                r.rejected,
                r.rollbacks
            );
        }
        if let Some(why) = r.last_divergence {
            defmt::warn!("divergence guard: last rollback because {}", why);
        }
        defmt::info!(
            "ticks per step {=u32} (SysTick, core clock)",
            per(r.train_ticks, r.steps as u32)
        );
        defmt::info!("checkpoint crc32 {=u32:#010x}", r.checkpoint_crc32);
        // What the model needs at the least: parameters, the trainable ones' gradients, one
        // step's activations and the optimiser state, 4 bytes each.
        let scalars = r.parameters + r.trainable + r.activations + r.optimiser_state;
        defmt::info!(
            "memory minimum {=usize} bytes: {=usize} parameters, {=usize} gradients, {=usize} activation values, {=usize} optimiser scalars",
            scalars * 4,
            r.parameters,
            r.trainable,
            r.activations,
            r.optimiser_state
        );
    }

    /// Saves the model to the checkpoint flash a piece at a time, straight from the tape.
    #[inline(never)]
    fn save(tape: &DeviceTape, flash: &mut Flash) {
        let signature = checkpoint::shape_signature(tape);
        let mut encoder = checkpoint::Encoder::new(tape);
        match SLOTS.save_from(flash, encoder.len(), signature, |out| encoder.fill(out)) {
            Ok(seq) => defmt::info!("checkpoint saved to flash (save {=u32})", seq),
            Err(e) => defmt::error!("saving the checkpoint failed: {}", e),
        }
    }

    #[entry]
    fn main() -> ! {
        set_ieee_fpscr();
        paint_stack();
        if let Some(mut p) = cortex_m::Peripherals::take() {
            start_ticks(&mut p.SYST);
        }
        defmt::info!("safegrad firmware: fine-tuning on the device");
        let result = run();
        let used = stack_high_water();
        defmt::info!(
            "stack high-water mark {=usize} bytes of a {=usize}-byte budget (stack region {=usize} bytes below the statics)",
            used,
            STACK_BUDGET,
            stack_top() - RAM_START
        );
        if used > STACK_BUDGET {
            defmt::error!("the stack exceeded its budget");
            exit(4)
        }
        match result {
            Ok(()) => exit(0),
            Err(e) => {
                defmt::error!("job failed: {}", e);
                exit(1)
            }
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        firmware::board::panic_exit(info)
    }
}
