//! The fine-tuning job of the 1-D CNN on raw windows, on the device: loads the pre-trained
//! `motion::model::MotionCnn` embedded at build time (its frozen convolutions read in place
//! from flash), fine-tunes its dense head on the shifted recordings built into flash as raw
//! `6 x 100` windows, with the host simulator's schedule (`motion::job::run_model`), saves
//! the fine-tuned model to the data flash, logs with `defmt` over semihosting and exits
//! with its verdict. Built with the `cnn` feature (`cargo xtask parity` builds it).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use motion::assets::cnn;
use motion::job;
use motion::model::{CnnFinetuneWorkspace, MotionCnn, CNN_FINETUNE_SIZES, FINETUNE_PLAN};
use motion::samples::WINDOW_VALUES;
use safegrad::dataset::Dataset;
use safegrad::session::Session;
use safegrad::store::Slots;
use safegrad::Error;
use static_cell::ConstStaticCell;

use firmware::board::storage;
use firmware::board::{self, exit, stack, ticks};

/// The checkpoint's two slots (A and B), two 4 KiB sectors each, at the start of the data
/// flash.
const SLOTS: Slots = Slots::new(0, 8192);

/// The session's memory, sized from the model's type, in a static initialised at compile
/// time (zero bytes: `.bss`).
static WORKSPACE: ConstStaticCell<CnnFinetuneWorkspace> =
    ConstStaticCell::new(CnnFinetuneWorkspace::new());

#[inline(never)]
fn run() -> Result<(), Error> {
    let Some(mut flash) = storage::take() else {
        exit(1)
    };
    let Some(work) = WORKSPACE.try_take() else {
        exit(1)
    };
    let mut session =
        Session::<MotionCnn, f32, _>::from_checkpoint(work, cnn::PRETRAINED, FINETUNE_PLAN)?;
    let train = Dataset::<f32, WINDOW_VALUES>::parse(cnn::FINETUNE_SET)?;
    let eval = Dataset::<f32, WINDOW_VALUES>::parse(cnn::EVAL_SET)?;
    defmt::info!(
        "samples: {=usize} raw windows to fine-tune on, {=usize} to evaluate (built into flash, read in place)",
        train.len(),
        eval.len()
    );
    let r = job::run_model(&mut session, CNN_FINETUNE_SIZES, &train, &eval, &mut ticks)?;
    firmware::log::job(&r);
    match session.save(&mut flash, &SLOTS) {
        Ok(seq) => defmt::info!("checkpoint saved to flash (save {=u32})", seq),
        Err(e) => defmt::error!("saving the checkpoint failed: {}", e),
    }
    Ok(())
}

#[entry]
fn main() -> ! {
    board::init();
    defmt::info!("safegrad firmware: fine-tuning the CNN on raw windows on the device");
    let result = run();
    let used = stack::high_water();
    defmt::info!(
        "stack high-water mark {=usize} bytes of a {=usize}-byte budget (stack region {=usize} bytes below the statics)",
        used,
        stack::BUDGET,
        stack::region()
    );
    if used > stack::BUDGET {
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
