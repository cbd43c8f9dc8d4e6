//! Frozen parameters read in place (from a checkpoint in flash, on a device): the same
//! training as with the parameters copied into the tape, bit for bit, without their value
//! slots; checkpoints that disagree with them are refused.

use safegrad::checkpoint::{self, parameters_in_place, CheckpointError};
use safegrad::nn::{last_layer_only, Build, Init};
use safegrad::nn::{Linear, LinearRelu};
use safegrad::optim::Sgd;
use safegrad::train::{record_loss, step, StepConfig};
use safegrad::{Cap, Tape, TapeError, Tensor};

type Model = (LinearRelu<4, 8>, LinearRelu<8, 8>, Linear<8, 3>);
type Big = Tape<f32, Cap<32, 512>>;
type Small = Tape<f32, Cap<32, 128>>;

/// Parameters: 4*8+8 + 8*8+8 + 8*3+3.
const PARAMS: usize = 40 + 72 + 27;
const CHECKPOINT: usize = 16 + PARAMS * 4 + 4;

/// Memory that stays for the whole program (like flash), aligned for `f32`.
#[repr(C, align(4))]
struct Flash([u8; 1024]);

fn flash(bytes: &[u8]) -> &'static [u8] {
    let f: &'static mut Flash = Box::leak(Box::new(Flash([0; 1024])));
    f.0[..bytes.len()].copy_from_slice(bytes);
    &f.0[..bytes.len()]
}

/// The checkpoint of `Model` initialised from `seed`.
fn checkpoint_of(seed: u64) -> Vec<u8> {
    let mut tape = Box::new(Big::new());
    Model::build(&mut *tape, &mut Init::new(seed)).unwrap();
    let mut out = vec![0u8; CHECKPOINT];
    assert_eq!(checkpoint::save(&*tape, &mut out).unwrap(), CHECKPOINT);
    out
}

fn sample(i: usize) -> ([f32; 4], usize) {
    let x = [
        (i as f32 * 0.37).sin(),
        (i as f32 * 0.11).cos(),
        0.25 * (i % 5) as f32 - 0.5,
        (i as f32 * 0.07).sin() * 2.0,
    ];
    (x, i % 3)
}

#[test]
fn training_with_frozen_layers_in_place_matches_training_with_them_held_bit_for_bit() {
    let stored = flash(&checkpoint_of(11));
    let plan = last_layer_only::<3>();

    let mut held = Box::new(Big::new());
    let held_model = Model::build(&mut *held, &mut Init::new(1).with_plan(&plan)).unwrap();
    checkpoint::load(&mut *held, stored).unwrap();

    let mut in_place = Box::new(Small::new());
    in_place
        .read_frozen_in_place(parameters_in_place(stored).unwrap())
        .unwrap();
    let model = Model::build(&mut *in_place, &mut Init::new(1).with_plan(&plan)).unwrap();
    // Frozen layers read in place draw no initial values but advance the generator as if
    // they did: the trainable head starts from the same values either way.
    let mut fresh = Box::new(Big::new());
    Model::build(&mut *fresh, &mut Init::new(1).with_plan(&plan)).unwrap();
    assert_eq!(in_place.parameters(), &fresh.parameters()[PARAMS - 27..]);
    assert!(in_place.parameters().iter().any(|&v| v != 0.0));
    checkpoint::load(&mut *in_place, stored).unwrap();

    // Only the trainable head takes value slots.
    assert_eq!(in_place.parameters().len(), 27);
    assert_eq!(in_place.parameter_len(), PARAMS);
    assert_eq!(held.parameters().len(), PARAMS);
    assert_eq!(in_place.trainable_len(), held.trainable_len());

    let config = StepConfig {
        clip_norm: Some(1.0),
        ..StepConfig::default()
    };
    let (mut sgd_a, mut sgd_b) = (Sgd::new(0.1f32), Sgd::new(0.1f32));
    for i in 0..40 {
        let (x, label) = sample(i);
        let la = record_loss(&mut *held, &held_model, &x, label).unwrap();
        let lb = record_loss(&mut *in_place, &model, &x, label).unwrap();
        let ra = step(&mut *held, la, &mut sgd_a, &config).unwrap();
        let rb = step(&mut *in_place, lb, &mut sgd_b, &config).unwrap();
        assert_eq!(ra.loss.to_bits(), rb.loss.to_bits(), "step {i}");
        assert_eq!(
            held.scalars_used() - in_place.scalars_used(),
            PARAMS - 27,
            "the frozen values are not copied"
        );
    }
    let (mut a, mut b) = (vec![0u8; CHECKPOINT], vec![0u8; CHECKPOINT]);
    checkpoint::save(&*held, &mut a).unwrap();
    checkpoint::save(&*in_place, &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        checkpoint::checksum(&*in_place),
        checkpoint::checksum(&*held)
    );
    assert_ne!(&a[..], stored, "the head was trained");

    // The trained checkpoint (same frozen body) loads into a fresh in-place tape.
    let mut resumed = Box::new(Small::new());
    resumed
        .read_frozen_in_place(parameters_in_place(stored).unwrap())
        .unwrap();
    Model::build(&mut *resumed, &mut Init::new(1).with_plan(&plan)).unwrap();
    checkpoint::load(&mut *resumed, &b).unwrap();
    assert_eq!(resumed.parameters(), in_place.parameters());
}

#[test]
fn a_checkpoint_with_other_frozen_values_is_refused_and_changes_nothing() {
    let stored = flash(&checkpoint_of(11));
    let mut tape = Box::new(Small::new());
    tape.read_frozen_in_place(parameters_in_place(stored).unwrap())
        .unwrap();
    Model::build(
        &mut *tape,
        &mut Init::new(1).with_plan(&last_layer_only::<3>()),
    )
    .unwrap();
    checkpoint::load(&mut *tape, stored).unwrap();
    let before = tape.parameters().to_vec();

    // Another model of the same shapes: its first frozen value differs.
    let other = checkpoint_of(12);
    assert_eq!(
        checkpoint::load(&mut *tape, &other),
        Err(CheckpointError::InPlaceMismatch { index: 0 })
    );
    assert_eq!(tape.parameters(), &before[..]);

    // One frozen value changed (the last bias of the second layer), CRC made good again.
    let mut edited = stored.to_vec();
    let at = 16 + (40 + 72 - 1) * 4;
    edited[at..at + 4].copy_from_slice(&1.5f32.to_le_bytes());
    let crc = safegrad::crc32::CRC32.checksum(&edited[..CHECKPOINT - 4]);
    edited[CHECKPOINT - 4..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        checkpoint::verify(&*tape, &edited),
        Err(CheckpointError::InPlaceMismatch { index: 40 + 72 - 1 })
    );
    assert_eq!(tape.parameters(), &before[..]);
}

#[test]
fn parameters_in_place_checks_the_checkpoint_and_its_alignment() {
    let bytes = checkpoint_of(3);
    let stored = flash(&bytes);
    let params = parameters_in_place::<f32>(stored).unwrap();
    assert_eq!(params.len(), PARAMS);
    for (i, v) in params.iter().enumerate() {
        let at = 16 + 4 * i;
        assert_eq!(v.to_le_bytes(), stored[at..at + 4]);
    }

    // One byte further: the values are not aligned for f32.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&bytes);
    let shifted = flash(&shifted);
    assert_eq!(
        parameters_in_place::<f32>(&shifted[1..]),
        Err(CheckpointError::NotInPlace)
    );

    // Damage is refused like by `load`.
    let mut damaged = bytes.clone();
    damaged[40] ^= 0x04;
    assert!(matches!(
        parameters_in_place::<f32>(flash(&damaged)),
        Err(CheckpointError::Crc { .. })
    ));
    assert!(matches!(
        parameters_in_place::<f32>(flash(&bytes[..CHECKPOINT - 8])),
        Err(CheckpointError::Length { .. })
    ));
}

#[test]
fn in_place_values_are_refused_when_misused() {
    static VALUES: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    static NAN: [f32; 3] = [1.0, f32::NAN, 0.0];

    let mut tape = Tape::<f32, Cap<8, 16>>::new();
    assert_eq!(
        tape.read_frozen_in_place(&NAN),
        Err(TapeError::InPlaceNonFinite { index: 1 })
    );
    tape.parameter(&Tensor::new([[0.0f32]])).unwrap();
    assert_eq!(
        tape.read_frozen_in_place(&VALUES),
        Err(TapeError::InPlaceAfterParameters)
    );

    let mut tape = Tape::<f32, Cap<8, 16>>::new();
    tape.read_frozen_in_place(&VALUES).unwrap();
    let w = tape
        .frozen_parameter(&Tensor::<f32, 1, 4>::zeros())
        .unwrap();
    assert_eq!(tape.value(w).unwrap(), Tensor::new([[1.0, 2.0, 3.0, 4.0]]));
    assert_eq!(
        tape.set_parameter(w, &Tensor::zeros()),
        Err(TapeError::ReadOnly { node: w.node().0 })
    );
    // Values 4..7 are needed and only 6 are there; nothing is recorded.
    assert_eq!(
        tape.frozen_parameter(&Tensor::<f32, 1, 3>::zeros()),
        Err(TapeError::InPlaceRange {
            needed: 7,
            available: 6
        })
    );
    assert_eq!(tape.nodes().len(), 1);
    let b = tape
        .frozen_parameter(&Tensor::<f32, 1, 2>::zeros())
        .unwrap();
    assert_eq!(tape.value(b).unwrap(), Tensor::new([[5.0, 6.0]]));
    assert_eq!((tape.scalars_used(), tape.parameter_len()), (0, 6));

    // Read in place, used as an input: its values take part, its storage is untouched.
    let x = tape.input(&Tensor::new([[1.0f32], [1.0]])).unwrap();
    let y = tape.matmul(b, x).unwrap();
    assert_eq!(tape.scalar(y).unwrap(), 11.0);
}
