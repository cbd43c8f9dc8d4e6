//! A first program: fine-tune a model you already have on the device.
//!
//! The model is a digits classifier, pre-trained on the host (`host-sim example-assets`),
//! and the device's camera is not the one it was trained with: half the contrast, a
//! brighter background. The program fine-tunes the last layer on 50 images from the new
//! camera, measures 200 others before and after, and saves the model to the A/B slots of
//! the data flash. `cargo run --release --example quickstart` (in `firmware/`) boots it on
//! QEMU; `cargo xtask example --json` runs it and reports.
//!
//! The lines between `safegrad: begin` and `safegrad: end` are all it takes of safegrad;
//! the rest is the board.
#![no_std]
#![no_main]

use firmware::board::{self, entry, exit, storage};
use static_cell::ConstStaticCell;

// safegrad: begin
use safegrad::prelude::*;

type Model = (Linear<64, 32>, Relu, Linear<32, 10>);
type Work = safegrad::workspace!(f32, Model, Plan::LastLayer);
static WORK: ConstStaticCell<Work> = ConstStaticCell::new(Work::new());
static MODEL: &[u8] = safegrad::include_checkpoint!("assets/digits.sgck");

fn fine_tune(flash: &mut storage::Flash) -> Result<[usize; 4], Error> {
    let train = Dataset::<f32, 64>::parse(include_bytes!("assets/digits-train.sgds"))?;
    let eval = Dataset::<f32, 64>::parse(include_bytes!("assets/digits-eval.sgds"))?;
    let mut session = Session::from_checkpoint(WORK.take(), MODEL, Plan::LastLayer)?;
    let before = session.correct(&eval)?;
    let report = session.fit(&train, &mut Schedule::new(Sgd::new(0.05)).epochs(30))?;
    let after = session.correct(&eval)?;
    session.save(flash, &Slots::new(0, 16384))?;
    // safegrad: end
    Ok([before, after, eval.len(), report.steps])
}

#[entry]
fn main() -> ! {
    board::init();
    let Some(mut flash) = storage::take() else {
        exit(1)
    };
    match fine_tune(&mut flash) {
        Ok([before, after, total, steps]) => {
            defmt::info!(
                "quickstart: correct before {=usize}/{=usize}, after {=usize}/{=usize}, steps {=usize}",
                before,
                total,
                after,
                total,
                steps
            );
            exit(0)
        }
        Err(e) => {
            defmt::error!("quickstart: {}", e);
            exit(1)
        }
    }
}
