//! Fault injection on the A/B checkpoint store (`safegrad::store`): power cut at every byte
//! program and sector erase of a save, and every single-bit flip of a stored slot.

use safegrad::store::{Slots, SLOT_HEADER};

use nor_sim::{SimFlash, ERASE};

/// What the fault injection found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// Saves cut short (one per byte program and sector erase of each save tried).
    pub cut_points: u64,
    /// Boots after a cut that loaded the previous checkpoint, complete.
    pub recovered_old: u64,
    /// Boots after a cut that loaded the new checkpoint, complete.
    pub recovered_new: u64,
    /// Boots that loaded nothing, or something that was neither (must be 0).
    pub lost: u64,
    /// Single-bit flips tried in a stored slot (its header and payload).
    pub bitflips_tried: u64,
    /// Flips after which the damaged slot was refused (and the other one loaded).
    pub bitflips_detected: u64,
}

/// The slots: two of 8 KiB (two sectors each), room for a 7 KiB checkpoint.
pub fn slots() -> Slots {
    Slots::new(0, 2 * ERASE as u32)
}

/// What a boot on a copy of `image` loads: the newest complete checkpoint, if any.
fn load(image: &[u8]) -> Option<Vec<u8>> {
    let mut image = image.to_vec();
    let mut f = SimFlash::new(&mut image);
    let mut buf = vec![0u8; slots().capacity()];
    match slots().load(&mut f, &mut buf) {
        Ok(Some((len, _))) => {
            buf.truncate(len);
            Some(buf)
        }
        _ => None,
    }
}

/// Cuts the power at every point of saving `new` over a flash image `start` holding `old`
/// (as the newest slot), and counts what the next boot loads.
fn cut_every_point(start: &[u8], old: &[u8], new: &[u8], report: &mut FaultReport) {
    let mut dry = start.to_vec();
    let mut f = SimFlash::new(&mut dry);
    slots()
        .save(&mut f, new, 0)
        .expect("an uncut save succeeds");
    let operations = f.operations();
    for cut in 0..operations {
        let mut image = start.to_vec();
        let mut f = SimFlash::new(&mut image);
        f.cut_after(cut);
        let result = slots().save(&mut f, new, 0);
        assert!(
            result.is_err(),
            "the save was cut at operation {cut} of {operations}"
        );
        report.cut_points += 1;
        match load(&image) {
            Some(got) if got == old => report.recovered_old += 1,
            Some(got) if got == new => report.recovered_new += 1,
            _ => report.lost += 1,
        }
    }
}

/// Runs the whole fault injection with three checkpoints (`a` saved first, then `b`, then
/// `c`): cuts during the save of `b` (slot B, slot A holding `a`) and of `c` (slot A again,
/// slot B holding `b`), then flips every bit of the newest slot.
pub fn run(a: &[u8], b: &[u8], c: &[u8]) -> FaultReport {
    let mut report = FaultReport::default();
    let size = 4 * ERASE;

    let mut image = vec![0xFF; size];
    let mut flash = SimFlash::new(&mut image);
    slots().save(&mut flash, a, 0).expect("save a");
    cut_every_point(flash.image(), a, b, &mut report);
    slots().save(&mut flash, b, 0).expect("save b");
    cut_every_point(flash.image(), b, c, &mut report);

    // Flip every bit of the newest slot (slot B, holding b): the damaged slot must be
    // refused and slot A (holding a) loaded instead.
    let bits = (SLOT_HEADER + b.len()) * 8;
    let base = slots().offset(1) as usize * 8;
    for bit in 0..bits {
        let mut damaged = flash.image().to_vec();
        SimFlash::new(&mut damaged)
            .flip_bit(base + bit)
            .expect("the bit is inside the image");
        report.bitflips_tried += 1;
        if load(&damaged).as_deref() == Some(a) {
            report.bitflips_detected += 1;
        }
    }
    report
}
