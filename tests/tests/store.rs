//! The A/B checkpoint store under power loss and bit flips, on the simulated NOR flash.

use embedded_storage::nor_flash::NorFlash;
use host_sim::faults::{self, slots};
use nor_sim::{FlashError, SimFlash, ERASE};
use safegrad::store::{SlotState, StoreError};
use safegrad::Cap;

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn no_power_cut_loses_a_checkpoint_and_every_flip_is_detected() {
    // Lengths that are not multiples of the word size exercise the padded last word.
    let (a, b, c) = (payload(301, 1), payload(517, 2), payload(299, 3));
    let r = faults::run(&a, &b, &c);
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!(r.recovered_old + r.recovered_new, r.cut_points);
    // Each save: 2 sector erases, the payload bytes (padded to words), 24 header bytes and
    // the 4 commit bytes are the cut points.
    let events = |len: usize| 2 + len.div_ceil(4) * 4 + 24 + 4;
    assert_eq!(r.cut_points, (events(517) + events(299)) as u64);
    assert_eq!(r.bitflips_tried, ((32 + 517) * 8) as u64);
    assert_eq!(r.bitflips_detected, r.bitflips_tried);
}

#[test]
fn the_simulated_flash_keeps_nor_rules() {
    let mut image = vec![0xFF; 2 * ERASE];
    let mut f = SimFlash::new(&mut image);
    f.write(0, &[0x0F, 0xFF, 0xFF, 0xFF]).unwrap();
    assert_eq!(
        f.write(0, &[0xFF, 0xFF, 0xFF, 0xFF]),
        Err(FlashError::NotErased { offset: 0 })
    );
    assert_eq!(f.write(1, &[0; 4]), Err(FlashError::NotAligned));
    assert_eq!(f.erase(0, 100), Err(FlashError::NotAligned));
    f.cut_after(2);
    assert_eq!(f.write(4, &[0; 4]), Err(FlashError::PowerCut));
    assert_eq!(
        &f.image()[4..8],
        &[0, 0, 0xFF, 0xFF],
        "two bytes got through"
    );
    assert_eq!(
        f.write(8, &[0; 4]),
        Err(FlashError::PowerCut),
        "no power, no writes"
    );
}

#[test]
fn a_torn_newest_slot_is_never_chosen_to_be_overwritten_before_the_valid_one() {
    // Slot A valid (seq 1), slot B torn (a save cut short): the next save must go to B,
    // keeping A until the new one is committed. Each boot is a new flash over the image
    // the last one left.
    let (a, b, c) = (payload(100, 1), payload(100, 2), payload(100, 3));
    let mut image = vec![0xFF; 4 * ERASE];
    slots().save(&mut SimFlash::new(&mut image), &a, 0).unwrap();
    let mut torn = SimFlash::new(&mut image);
    torn.cut_after(50);
    assert!(matches!(
        slots().save(&mut torn, &b, 0),
        Err(StoreError::Flash(FlashError::PowerCut))
    ));
    let mut f = SimFlash::new(&mut image);
    assert!(matches!(
        slots().inspect(&mut f, 0).unwrap(),
        SlotState::Valid { seq: 1, .. }
    ));
    // The header was never written: the slot counts as empty (it has no committed record).
    assert_eq!(slots().inspect(&mut f, 1).unwrap(), SlotState::Empty);
    let mut g = SimFlash::new(&mut image);
    g.cut_after(10);
    let _ = slots().save(&mut g, &c, 0);
    let mut buf = vec![0u8; 200];
    let mut g = SimFlash::new(&mut image);
    let (len, seq) = slots().load(&mut g, &mut buf).unwrap().unwrap();
    assert_eq!((&buf[..len], seq), (&a[..], 1));
}

#[test]
fn sequence_numbers_wrap() {
    let mut image = vec![0xFF; 4 * ERASE];
    let mut f = SimFlash::new(&mut image);
    let mut last = 0;
    for i in 0..5u8 {
        last = slots().save(&mut f, &payload(40, i), 0).unwrap();
    }
    assert_eq!(last, 5);
    let mut buf = vec![0u8; 64];
    let (len, seq) = slots().load(&mut f, &mut buf).unwrap().unwrap();
    assert_eq!((&buf[..len], seq), (&payload(40, 4)[..], 5));
}

#[test]
fn a_payload_larger_than_a_slot_is_refused() {
    let mut image = vec![0xFF; 4 * ERASE];
    let mut f = SimFlash::new(&mut image);
    let big = payload(slots().capacity() + 1, 0);
    assert!(matches!(
        slots().save(&mut f, &big, 0),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(f.image().iter().all(|&b| b == 0xFF), "nothing written");
}

#[test]
fn a_streamed_save_writes_what_a_whole_save_writes_and_locate_finds_it() {
    // A checkpoint produced a piece at a time by its encoder, against the same checkpoint
    // saved from a buffer: the two flash images are the same byte for byte.
    let mut tape = safegrad::Tape::<f32, Cap<8, 512>>::new();
    tape.parameter(&safegrad::Tensor::<f32, 13, 7>::from_fn(|r, c| {
        (r * 7 + c) as f32 * 0.25 - 3.0
    }))
    .unwrap();
    let len = safegrad::checkpoint::encoded_len(&tape);
    let mut whole = vec![0u8; len];
    safegrad::checkpoint::save(&tape, &mut whole).unwrap();
    let signature = safegrad::checkpoint::shape_signature(&tape);

    let mut from_buffer_image = vec![0xFF; 4 * ERASE];
    let mut from_buffer = SimFlash::new(&mut from_buffer_image);
    slots().save(&mut from_buffer, &whole, signature).unwrap();
    let mut streamed_image = vec![0xFF; 4 * ERASE];
    let mut streamed = SimFlash::new(&mut streamed_image);
    let mut encoder = safegrad::checkpoint::Encoder::new(&tape);
    let seq = slots()
        .save_from(&mut streamed, len, signature, |out| encoder.fill(out))
        .unwrap();
    assert_eq!(seq, 1);
    assert_eq!(streamed.image(), from_buffer.image());

    // The payload in place, where `locate` says it is.
    let slot = slots().locate(&mut streamed).unwrap().unwrap();
    assert_eq!((slot.len, slot.seq), (len, 1));
    let at = slot.offset as usize;
    let stored = &streamed.image()[at..at + len];
    assert_eq!(stored, &whole[..]);
    assert_eq!(
        u32::from_le_bytes(whole[len - 4..].try_into().unwrap()),
        safegrad::checkpoint::checksum(&tape)
    );
}

#[test]
fn a_streamed_payload_that_ends_early_is_not_committed() {
    let (a, b) = (payload(300, 1), payload(300, 2));
    let mut image = vec![0xFF; 4 * ERASE];
    let mut f = SimFlash::new(&mut image);
    slots().save(&mut f, &a, 0).unwrap();
    // The source gives 200 of the 300 bytes it announced.
    let mut given = 0;
    let err = slots()
        .save_from(&mut f, 300, 0, |out| {
            let n = out.len().min(200 - given);
            out[..n].copy_from_slice(&b[given..given + n]);
            given += n;
            n
        })
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::ShortPayload {
            expected: 300,
            produced: 200
        }
    );
    // The first save is still the one that loads.
    let mut back = vec![0u8; 512];
    let (len, seq) = slots().load(&mut f, &mut back).unwrap().unwrap();
    assert_eq!((&back[..len], seq), (&a[..], 1));
    assert_eq!(slots().states(&mut f).unwrap()[1], SlotState::Empty);
}

#[test]
fn recorded_samples_parse_in_place_for_every_row_count_and_nothing_before_finish() {
    use safegrad::dataset::{Dataset, RecordError, Recorder};

    let row = |i: usize| -> ([f32; 3], usize) {
        ([i as f32, -(i as f32) * 0.5, 1.0 / (i as f32 + 1.0)], i % 4)
    };
    // 2 + 3 * 4 = 14 bytes a row: the last piece holds every length from 0 to 31 bytes.
    for n in 0..40 {
        let mut image = vec![0xFF; 2 * ERASE];
        let mut f = SimFlash::new(&mut image);
        let mut rec = Recorder::<f32, 3>::new(&mut f, ERASE as u32, ERASE, 4).unwrap();
        for i in 0..n {
            let (x, label) = row(i);
            rec.push(&mut f, &x, label).unwrap();
        }
        assert_eq!(rec.len(), n);
        // Before `finish` the region is no data set.
        let unfinished = &f.image()[ERASE..ERASE + 16 + 14 * n + 4];
        assert!(Dataset::<f32, 3>::parse(unfinished).is_err(), "{n} rows");
        let len = rec.finish(&mut f).unwrap();
        assert_eq!(len, safegrad::dataset::encoded_len::<f32, 3>(n));
        let set = Dataset::<f32, 3>::parse(&f.image()[ERASE..ERASE + len]).unwrap();
        assert_eq!(set.len(), n);
        assert!(set.iter().eq((0..n).map(row)), "{n} rows");
        assert!(
            f.image()[..ERASE].iter().all(|&b| b == 0xFF),
            "outside the region"
        );
    }

    // Refusals write nothing; a full region says so.
    let mut image = vec![0xFF; ERASE];
    let mut f = SimFlash::new(&mut image);
    let mut rec = Recorder::<f32, 3>::new(&mut f, 0, ERASE, 4).unwrap();
    assert_eq!(
        rec.push(&mut f, &[0.0, f32::INFINITY, 0.0], 1),
        Err(RecordError::NonFinite { feature: 1 })
    );
    assert_eq!(
        rec.push(&mut f, &[0.0; 3], 4),
        Err(RecordError::Label {
            label: 4,
            classes: 4
        })
    );
    // A row given as values where they lie must have the set's width.
    assert_eq!(
        rec.push_values(&mut f, [1.0f32, 2.0].into_iter(), 0),
        Err(RecordError::Width { found: 2 })
    );
    assert_eq!(
        rec.push_values(&mut f, [1.0f32, 2.0, 3.0, 4.0].into_iter(), 0),
        Err(RecordError::Width { found: 4 })
    );
    assert_eq!(
        rec.push_values(&mut f, [1.0f32, f32::NAN, 3.0].into_iter(), 0),
        Err(RecordError::NonFinite { feature: 1 })
    );
    assert!(f.image().iter().all(|&b| b == 0xFF));
    assert_eq!(
        rec.push_values(&mut f, [1.0f32, 2.0, 3.0].into_iter(), 2),
        Ok(())
    );
    let mut same = vec![0xFF; ERASE];
    let mut g = SimFlash::new(&mut same);
    let mut other = Recorder::<f32, 3>::new(&mut g, 0, ERASE, 4).unwrap();
    other.push(&mut g, &[1.0, 2.0, 3.0], 2).unwrap();
    let (a, b) = (rec.finish(&mut f).unwrap(), other.finish(&mut g).unwrap());
    assert_eq!(
        f.image()[..a],
        g.image()[..b],
        "push_values writes what push writes"
    );
    let mut image = vec![0xFF; ERASE];
    let mut f = SimFlash::new(&mut image);
    let mut rec = Recorder::<f32, 3>::new(&mut f, 0, ERASE, 4).unwrap();
    let max = rec.max_rows();
    assert!(max * 14 + 16 + 4 <= ERASE);
    for i in 0..max {
        let (x, label) = row(i);
        rec.push(&mut f, &x, label).unwrap();
    }
    assert_eq!(
        rec.push(&mut f, &[0.0; 3], 0),
        Err(RecordError::Full { rows: max })
    );
    let len = rec.finish(&mut f).unwrap();
    assert_eq!(
        Dataset::<f32, 3>::parse(&f.image()[..len]).unwrap().len(),
        max
    );
    assert_eq!(
        Recorder::<f32, 3>::new(&mut f, 100, ERASE, 4).unwrap_err(),
        RecordError::Region
    );
}
