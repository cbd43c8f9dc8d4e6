//! The device's soak test: streamed online fine-tuning, one training step per training
//! frame from UART0, until the stream ends (`cargo xtask qemu-soak` sends the frames, some
//! damaged on purpose). Every good frame must train and the tape must not grow; the exit
//! code says whether they did.
#![no_std]
#![no_main]

use motion::assets;
use motion::job;
use motion::model::{FinetuneWorkspace, FINETUNE_PLAN};
use motion::samples::Stream;
use safegrad::session::Session;
use static_cell::ConstStaticCell;

use firmware::board::{self, entry, exit, per, ticks};

static WORKSPACE: ConstStaticCell<FinetuneWorkspace> =
    ConstStaticCell::new(FinetuneWorkspace::new());

#[entry]
fn main() -> ! {
    board::init();
    let mut session =
        match Session::from_checkpoint(WORKSPACE.take(), assets::PRETRAINED, FINETUNE_PLAN) {
            Ok(s) => s,
            Err(e) => {
                defmt::error!("soak: {}", e);
                exit(1)
            }
        };
    // SAFETY: UART0 is used by nothing else in this program.
    let uart = unsafe { board::uart::open() };
    let mut source = Stream::new(uart);
    let start = ticks();
    let report = job::soak(&mut session, &mut source);
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
