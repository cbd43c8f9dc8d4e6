//! The fine-tuning `Session`, against references built in this file:
//!
//! 1. Fine-tuning the last layer of a checkpoint: the frozen parameters, read in place, keep
//!    the checkpoint's bits (decoded here from its bytes); the trained parameters equal, bit
//!    for bit, those of the same schedule run by hand on a second tape with the primitives
//!    `Session::fit_observed` documents (`train::epoch` over a `Shuffle`, a
//!    `DivergenceGuard`, snapshot and restore on divergence, the learning rate halved),
//!    with and without divergences.
//! 2. Refusals: damaged checkpoints (a flipped bit, a wrong magic, truncated, another
//!    model's) are refused by `from_checkpoint` with the variant naming the failed check,
//!    and by `load` with the parameters unchanged bit for bit; no rows, more rows than the
//!    workspace holds, and a snapshot too small for the trainable scalars are refused with
//!    their `StepError`.
//! 3. The schedule: `max_steps` takes exactly that many rows (the rows of the shuffled
//!    epochs stepped through one by one by hand give the same bits); `epochs(0)` changes
//!    nothing; a learning rate far too large is rolled back and halved each time.
//! 4. The validation gate: training on mislabelled rows makes the model worse on the true
//!    labels, and the parameters from before come back bit for bit; training on the true
//!    labels improves it, and nothing is restored.
//! 5. `fit_observed`: the observer sees epochs 1..=n, and its probe counts what
//!    `Session::correct` counts.
//! 6. Saving to A/B slots on a NOR flash written here (erase to `0xFF`, writes clear bits):
//!    the newest slot is found, and its bytes loaded into a fresh session reproduce the CRC
//!    and the parameters.
//! 7. `include_checkpoint!`: an 8-byte aligned copy of the file's bytes.
//! 8. A new class: `imprint_class` against the mean body output computed in `f64` here;
//!    `fit_head_full_batch` at a point where central differences of the objective, in
//!    `f64`, vanish; the gate with an imprint before each fit against the folds and the
//!    committed fit by hand, and, when it does not commit, the model put back bit for bit.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use safegrad::checkpoint::{self, CheckpointError};
use safegrad::nn::{sizes, Build, Init, InitScheme, Linear, Module, Plan, Relu, Sizes};
use safegrad::optim::{Optimizer, Sgd};
use safegrad::session::{FitReport, Schedule, Session, Workspace};
use safegrad::store::{Slots, SLOT_HEADER};
use safegrad::tape::Capacity;
use safegrad::train::{
    epoch, record_loss, step, DivergenceGuard, Samples, Shuffle, StepConfig, StepError,
};
use safegrad::{Cap, Error, Tape, Var};

type Model = (Linear<2, 8>, Relu, Linear<8, 2>);
type Work = safegrad::workspace!(f32, Model, Plan::LastLayer);
type WorkAll = safegrad::workspace!(f32, Model, Plan::All);
/// The tape of the fits written by hand: one step of `Model` under `Plan::LastLayer`, the
/// frozen layer read in place, sized from the type as the session's workspace is.
type HandTape = safegrad::tape_for!(f32, Model, Plan::LastLayer);
/// The tape `initial_checkpoint` builds any model on: a tape generic over the model cannot
/// take its sizes from the type on stable Rust, so this one has room for the small models
/// below.
type Big = Tape<f32, Cap<64, 4096>>;
type Row = ([f32; 2], usize);

/// Parameters of `Model`: `2 x 8 + 8` in the first layer, `8 x 2 + 2` in the second.
const PARAMETERS: usize = 2 * 8 + 8 + 8 * 2 + 2;
/// Scalars trained under `Plan::LastLayer`: the second layer.
const HEAD: usize = 8 * 2 + 2;
/// Scalars of the first layer, frozen under `Plan::LastLayer`.
const BODY: usize = 2 * 8 + 8;

/// `n` points of the plane (a low-discrepancy sequence in `[-1, 1]^2`), the class saying on
/// which side of the line `x0 + 0.5 x1 = 0` each lies (flipped with `flip`).
fn rows(n: usize, start: usize, flip: bool) -> Vec<Row> {
    (start..start + n)
        .map(|i| {
            let i = i as f32 + 1.0;
            let x = [
                2.0 * (i * 0.618_034).fract() - 1.0,
                2.0 * (i * 0.754_878).fract() - 1.0,
            ];
            let class = usize::from(x[0] + 0.5 * x[1] > 0.0);
            (x, if flip { 1 - class } else { class })
        })
        .collect()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `bytes` at a 4-byte aligned address that lives as long as the program (like flash).
fn leak_aligned(bytes: &[u8]) -> &'static [u8] {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    let words: &'static [u32] = Vec::leak(words);
    &bytemuck::cast_slice::<u32, u8>(words)[..bytes.len()]
}

/// The checkpoint of a model of type `M` initialised from `seed`, not trained.
fn initial_checkpoint<M: Build<f32>>(seed: u64) -> &'static [u8] {
    let mut tape = Box::new(Big::new());
    M::build(&mut *tape, &mut Init::new(seed)).expect("build");
    let mut bytes = vec![0u8; checkpoint::encoded_len(&*tape)];
    checkpoint::save(&*tape, &mut bytes).expect("save");
    leak_aligned(&bytes)
}

/// A checkpoint of `Model` trained (every layer) on the true labels until it classifies
/// every validation row correctly.
fn pretrained() -> &'static [u8] {
    let mut work = Box::new(WorkAll::new());
    let mut session = Session::<Model, _, _>::new(&mut work, Init::new(3)).expect("session");
    let train = rows(48, 0, false);
    let mut schedule = Schedule::new(Sgd::new(0.1f32)).epochs(40).seed(1);
    session.fit(&train[..], &mut schedule).expect("fit");
    let valid = rows(16, 100, false);
    assert_eq!(
        session.correct(&valid[..]).expect("correct"),
        valid.len(),
        "pre-training"
    );
    let mut bytes = vec![0u8; session.checkpoint_len()];
    session.write_checkpoint(&mut bytes).expect("write");
    leak_aligned(&bytes)
}

/// The parameters a checkpoint stores, decoded from its bytes (little-endian `f32` after
/// the 16-byte header).
fn stored_parameters(bytes: &[u8]) -> Vec<f32> {
    bytes[16..bytes.len() - 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The values of the first layer (frozen, read in place) as the tape gives them.
fn body_values<Mem: Capacity>(tape: &Tape<f32, Mem>, model: &Model) -> Vec<f32> {
    let mut v = tape
        .value(model.0.weight)
        .expect("weight")
        .as_slice()
        .to_vec();
    v.extend_from_slice(tape.value(model.0.bias).expect("bias").as_slice());
    v
}

/// `M` on `tape` with the frozen parameters read in place from `bytes` and the trainable
/// ones loaded from it, in the order `Session::from_checkpoint` documents.
fn build_in_place<M: Build<f32>, Mem: Capacity>(
    tape: &mut Tape<f32, Mem>,
    bytes: &'static [u8],
    plan: Plan<'_>,
) -> M {
    let params = checkpoint::parameters_in_place::<f32>(bytes).expect("parameters in place");
    tape.read_frozen_in_place(params).expect("read in place");
    let mut init = Init::new(0).with_scheme(InitScheme::Zeros).with_plan(plan);
    let model = M::build(tape, &mut init).expect("build");
    checkpoint::load(tape, bytes).expect("load");
    model
}

/// What the fit by hand did.
#[derive(Debug, PartialEq)]
struct ByHand {
    epochs: usize,
    steps: usize,
    rollbacks: usize,
    final_loss: f32,
    learning_rate: f32,
}

/// The loop `Session::fit_observed` documents, written with the primitives: shuffle, one
/// guarded epoch at a time, snapshot after a good epoch, restore, halve the learning rate
/// and reset the guard after a divergence.
fn fit_by_hand<M, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<f32, Mem>,
    model: &M,
    data: &[([f32; IN], usize)],
    sgd: &mut Sgd<f32>,
    epochs: usize,
    clip_norm: Option<f32>,
    seed: u64,
) -> ByHand
where
    M: Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    let mut order = vec![0usize; data.len()];
    let mut shuffle = Shuffle::new(&mut order, data.len(), seed).expect("shuffle");
    let mut rollback = vec![0.0f32; tape.trainable_len()];
    tape.snapshot_trainable(&mut rollback).expect("snapshot");
    let config = StepConfig {
        clip_norm,
        ..StepConfig::default()
    };
    let mut guard = DivergenceGuard::default();
    let mut done = ByHand {
        epochs: 0,
        steps: 0,
        rollbacks: 0,
        final_loss: 0.0,
        learning_rate: sgd.learning_rate(),
    };
    for n in 1..=epochs {
        let out = epoch(
            tape,
            model,
            sgd,
            data,
            &mut shuffle,
            &config,
            Some(&mut guard),
        )
        .expect("epoch");
        done.epochs = n;
        done.steps += out.steps;
        done.final_loss = out.mean_loss;
        if out.divergence.is_some() {
            tape.restore_trainable(&rollback).expect("restore");
            sgd.scale_learning_rate(0.5);
            guard.reset();
            done.rollbacks += 1;
        } else {
            tape.snapshot_trainable(&mut rollback).expect("snapshot");
        }
    }
    done.learning_rate = sgd.learning_rate();
    done
}

/// What a session's fit did.
struct Fitted {
    report: FitReport<f32>,
    /// The learning rate at the end.
    learning_rate: f32,
    /// The trainable parameters at the end.
    trained: Vec<f32>,
    /// For each epoch, as the observer saw it: did it diverge, the learning rate after it.
    epochs: Vec<(bool, f32)>,
}

/// Fine-tunes the last layer of `bytes` with a session and by hand with the same schedule;
/// checks the frozen layer and that both give the same bits. Returns what the session did.
fn session_against_hand(
    bytes: &'static [u8],
    data: &[Row],
    lr: f32,
    epochs: usize,
    clip_norm: Option<f32>,
) -> Fitted {
    let stored = stored_parameters(bytes);
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let model = *session.model();
    let tape = session.tape_ref();
    assert!(tape.is_in_place(&tape.nodes()[0]) && tape.is_in_place(&tape.nodes()[1]));
    assert!(!tape.is_in_place(&tape.nodes()[2]) && !tape.is_in_place(&tape.nodes()[3]));
    assert_eq!(bits(&body_values(tape, &model)), bits(&stored[..BODY]));
    assert_eq!(
        bits(tape.parameters()),
        bits(&stored[BODY..]),
        "the head loaded"
    );

    let mut schedule = Schedule::new(Sgd::new(lr)).epochs(epochs).seed(5);
    schedule.clip_norm = clip_norm;
    let mut epochs_seen = Vec::new();
    let report = session
        .fit_observed(data, &mut schedule, &mut |end, _| {
            epochs_seen.push((end.divergence.is_some(), end.learning_rate))
        })
        .expect("fit");
    let tape = session.tape_ref();
    assert_eq!(
        bits(&body_values(tape, &model)),
        bits(&stored[..BODY]),
        "the frozen layer, read in place, is the checkpoint's"
    );
    let trained = tape.parameters().to_vec();

    let mut by_hand_tape = Box::new(HandTape::new());
    let by_hand_model = build_in_place::<Model, _>(&mut by_hand_tape, bytes, Plan::LastLayer);
    let mut sgd = Sgd::new(lr);
    let done = fit_by_hand(
        &mut *by_hand_tape,
        &by_hand_model,
        data,
        &mut sgd,
        epochs,
        clip_norm,
        5,
    );
    assert_eq!(
        bits(by_hand_tape.parameters()),
        bits(&trained),
        "session and hand-written loop"
    );
    assert_eq!(
        session.checkpoint_crc32(),
        checkpoint::checksum(&*by_hand_tape)
    );
    let reported = ByHand {
        epochs: report.epochs,
        steps: report.steps,
        rollbacks: report.rollbacks,
        final_loss: report.final_loss,
        learning_rate: schedule.optimizer.learning_rate(),
    };
    assert_eq!(reported, done);
    Fitted {
        report,
        learning_rate: schedule.optimizer.learning_rate(),
        trained,
        epochs: epochs_seen,
    }
}

#[test]
fn fine_tuning_the_last_layer_matches_the_loop_written_by_hand() {
    let bytes = initial_checkpoint::<Model>(7);
    let data = rows(40, 0, false);
    let fitted = session_against_hand(bytes, &data, 0.2, 6, Some(1.0));
    let report = fitted.report;
    assert_eq!((report.epochs, report.steps, report.rollbacks), (6, 240, 0));
    assert_eq!(fitted.learning_rate, 0.2);
    assert_ne!(
        bits(&fitted.trained),
        bits(&stored_parameters(bytes)[BODY..]),
        "the head trained"
    );
}

#[test]
fn a_learning_rate_far_too_large_is_rolled_back_and_halved_each_time() {
    let bytes = pretrained();
    // Every fifth label flipped: no head fits them all, the loss stays large, and steps of
    // this size overflow to non-finite values, which the guard counts.
    let mut data = rows(40, 0, false);
    for row in data.iter_mut().step_by(5) {
        row.1 = 1 - row.1;
    }
    let lr = 1e38f32;
    let fitted = session_against_hand(bytes, &data, lr, 8, None);
    let report = fitted.report;
    assert!(report.rollbacks > 0, "{report:?}");
    assert!(report.last_divergence.is_some(), "{report:?}");
    // Each epoch that diverged halved the rate (exactly, in binary floating point), the
    // others kept it.
    let mut expected = lr;
    for &(diverged, rate) in &fitted.epochs {
        if diverged {
            expected *= 0.5;
        }
        assert_eq!(rate, expected, "{:?}", fitted.epochs);
    }
    let diverged = fitted.epochs.iter().filter(|e| e.0).count();
    assert_eq!(diverged, report.rollbacks);
    assert_eq!(
        fitted.learning_rate,
        lr * 0.5f32.powi(report.rollbacks as i32)
    );
    assert!(
        fitted.trained.iter().all(|p| p.is_finite()),
        "{:?}",
        fitted.trained
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals

/// `bytes` changed by `damage`, at an aligned address.
fn damaged(bytes: &[u8], damage: impl FnOnce(&mut Vec<u8>)) -> &'static [u8] {
    let mut v = bytes.to_vec();
    damage(&mut v);
    leak_aligned(&v)
}

/// The checks a damaged checkpoint fails, by name.
fn check_refusal(name: &str, err: Error, bytes: &[u8], original: &[u8], other: &[u8]) {
    let ok = match (name, err) {
        ("flipped bit", Error::Checkpoint(CheckpointError::Crc { stored, computed })) => {
            stored == le_u32(original, original.len() - 4) && computed != stored
        }
        ("magic", Error::Checkpoint(CheckpointError::Magic { found })) => found == *b"SGCX",
        ("one byte short", Error::Checkpoint(CheckpointError::Length { expected, found })) => {
            (expected, found) == (original.len(), original.len() - 1)
        }
        ("header only", Error::Checkpoint(CheckpointError::Truncated { len })) => len == 12,
        ("same count", Error::Checkpoint(CheckpointError::ShapeSignature { found, expected })) => {
            (found, expected) == (le_u32(other, 8), le_u32(original, 8))
        }
        (
            "fewer parameters" | "more parameters",
            Error::Checkpoint(CheckpointError::ParameterCount { found, expected }),
        ) => (found as usize, expected as usize) == (le_u32(bytes, 12) as usize, PARAMETERS),
        _ => false,
    };
    assert!(ok, "{name}: {err:?}");
}

/// The damaged checkpoints, by name, each with the checkpoint whose header its refusal
/// names (the undamaged one, or the other model's).
fn damaged_checkpoints(good: &'static [u8]) -> Vec<(&'static str, &'static [u8], &'static [u8])> {
    // 5 x 5 + 5 + 5 x 2 + 2 = 42 parameters, as many as `Model`, of other shapes.
    let same_count = initial_checkpoint::<(Linear<5, 5>, Relu, Linear<5, 2>)>(1);
    let fewer = initial_checkpoint::<(Linear<2, 4>, Relu, Linear<4, 2>)>(1);
    let more = initial_checkpoint::<(Linear<2, 16>, Relu, Linear<16, 2>)>(1);
    assert_eq!(le_u32(same_count, 12) as usize, PARAMETERS);
    vec![
        (
            "flipped bit",
            damaged(good, |v| v[16 + 4 * 3 + 1] ^= 0x20),
            good,
        ),
        ("magic", damaged(good, |v| v[3] = b'X'), good),
        (
            "one byte short",
            damaged(good, |v| v.truncate(v.len() - 1)),
            good,
        ),
        ("header only", damaged(good, |v| v.truncate(12)), good),
        ("same count", same_count, same_count),
        ("fewer parameters", fewer, fewer),
        ("more parameters", more, more),
    ]
}

#[test]
fn from_checkpoint_refuses_a_damaged_checkpoint_naming_the_check() {
    let good = pretrained();
    for (name, bytes, other) in damaged_checkpoints(good) {
        let mut work = Box::new(Work::new());
        let refused = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer);
        let err = refused.err().unwrap_or_else(|| panic!("{name}: accepted"));
        check_refusal(name, err, bytes, good, other);
    }
    // The undamaged one is accepted.
    let mut work = Box::new(Work::new());
    assert!(Session::<Model, _, _>::from_checkpoint(&mut work, good, Plan::LastLayer).is_ok());
}

#[test]
fn load_refuses_a_bad_checkpoint_and_changes_nothing() {
    let good = pretrained();
    let mut work = Box::new(Work::new());
    let mut session =
        Session::<Model, _, _>::from_checkpoint(&mut work, good, Plan::LastLayer).expect("session");
    // Move the head away from the checkpoint, so that a load that wrote anything shows.
    let data = rows(40, 0, true);
    let mut schedule = Schedule::new(Sgd::new(0.5f32)).epochs(2);
    session.fit(&data[..], &mut schedule).expect("fit");
    let model = *session.model();
    let before = bits(session.tape_ref().parameters());
    let body = bits(&body_values(session.tape_ref(), &model));
    let crc = session.checkpoint_crc32();
    assert_ne!(before, bits(&stored_parameters(good)[BODY..]));

    for (name, bytes, other) in damaged_checkpoints(good) {
        let err = session.load(bytes).expect_err(name);
        // `load` checks the shapes before the count.
        let name = if name == "more parameters" || name == "fewer parameters" {
            "same count"
        } else {
            name
        };
        check_refusal(name, err, bytes, good, other);
        assert_eq!(bits(session.tape_ref().parameters()), before, "{name}");
        assert_eq!(session.checkpoint_crc32(), crc, "{name}");
    }
    // A checkpoint of the same model whose frozen layer holds other values: the layer read
    // in place cannot take them.
    let other_body = initial_checkpoint::<Model>(99);
    let err = session.load(other_body).expect_err("other body");
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::InPlaceMismatch { index }) if index < BODY),
        "{err:?}"
    );
    assert_eq!(bits(session.tape_ref().parameters()), before);
    assert_eq!(bits(&body_values(session.tape_ref(), &model)), body);

    // The good one loads: the head goes back to the checkpoint's values.
    session.load(good).expect("load");
    assert_eq!(
        bits(session.tape_ref().parameters()),
        bits(&stored_parameters(good)[BODY..])
    );
}

#[test]
fn fit_refuses_no_rows_and_more_rows_than_the_workspace_holds() {
    let bytes = pretrained();
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let before = bits(session.tape_ref().parameters());
    let mut schedule = Schedule::new(Sgd::new(0.1f32)).epochs(3);
    let none: [Row; 0] = [];
    assert_eq!(
        session.fit(&none[..], &mut schedule),
        Err(Error::Step(StepError::NoSamples))
    );
    assert_eq!(bits(session.tape_ref().parameters()), before);

    type Four = safegrad::workspace!(f32, Model, Plan::LastLayer, samples = 4);
    let mut work = Box::new(Four::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let five = rows(5, 0, false);
    assert_eq!(
        session.fit(&five[..], &mut schedule),
        Err(Error::Step(StepError::SampleCapacity {
            capacity: 4,
            rows: 5
        }))
    );
    assert_eq!(bits(session.tape_ref().parameters()), before);
    // Four rows fit.
    let report = session.fit(&five[..4], &mut schedule).expect("fit");
    assert_eq!(report.steps, 3 * 4);
}

#[test]
fn a_snapshot_smaller_than_the_trainable_scalars_is_refused() {
    const S: Sizes = sizes::<Model>(Plan::LastLayer);
    assert_eq!(S.trainable, HEAD);
    type Short =
        Workspace<Model, f32, Cap<{ S.nodes }, { S.values }, { S.gradients }>, { HEAD - 1 }>;
    let refused = StepError::SnapshotCapacity {
        capacity: HEAD - 1,
        needed: HEAD,
    };
    let bytes = pretrained();
    let mut work = Box::new(Short::new());
    let err = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer).err();
    assert_eq!(err, Some(Error::Step(refused)));
    let mut work = Box::new(Short::new());
    let init = Init::new(1).with_plan(Plan::LastLayer);
    let err = Session::<Model, _, _>::new(&mut work, init).err();
    assert_eq!(err, Some(Error::Step(refused)));
    // One more scalar is enough.
    type Enough = Workspace<Model, f32, Cap<{ S.nodes }, { S.values }, { S.gradients }>, HEAD>;
    let mut work = Box::new(Enough::new());
    assert!(Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer).is_ok());
}

// ---------------------------------------------------------------------------------------------
// The schedule

#[test]
fn max_steps_takes_exactly_that_many_rows() {
    let bytes = pretrained();
    let data = rows(8, 0, true);
    let (seed, lr, budget) = (13, 0.3f32, 13);
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let mut schedule = Schedule::new(Sgd::new(lr))
        .epochs(10)
        .max_steps(budget)
        .seed(seed);
    let mut epochs_seen = Vec::new();
    let report = session
        .fit_observed(&data[..], &mut schedule, &mut |end, _| {
            epochs_seen.push((end.epoch, end.steps))
        })
        .expect("fit");
    assert_eq!((report.steps, report.epochs), (budget, 2));
    assert_eq!(epochs_seen, [(1, 8), (2, 5)]);

    // By hand: the rows of the shuffled epochs in order, one step each, the first 13.
    let mut tape = Box::new(HandTape::new());
    let model = build_in_place::<Model, _>(&mut tape, bytes, Plan::LastLayer);
    let mut order = vec![0usize; data.len()];
    let mut shuffle = Shuffle::new(&mut order, data.len(), seed).expect("shuffle");
    let mut sgd = Sgd::new(lr);
    let mut taken = 0;
    while taken < budget {
        let visit = shuffle.next_epoch().to_vec();
        for i in visit.into_iter().take(budget - taken) {
            let (x, label) = data[i];
            let loss = record_loss(&mut *tape, &model, &x, label).expect("record");
            step(&mut *tape, loss, &mut sgd, &StepConfig::default()).expect("step");
            taken += 1;
        }
    }
    assert_eq!(
        bits(session.tape_ref().parameters()),
        bits(tape.parameters())
    );
    // One step more or fewer gives other parameters: the count is what the bits show.
    let (x, label) = data[shuffle.next_epoch()[0]];
    let loss = record_loss(&mut *tape, &model, &x, label).expect("record");
    step(&mut *tape, loss, &mut sgd, &StepConfig::default()).expect("step");
    assert_ne!(
        bits(session.tape_ref().parameters()),
        bits(tape.parameters())
    );
}

#[test]
fn zero_epochs_change_nothing() {
    let bytes = pretrained();
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let before = bits(session.tape_ref().parameters());
    let crc = session.checkpoint_crc32();
    let data = rows(20, 0, true);
    let valid = rows(16, 100, false);
    let mut calls = 0;
    let mut schedule = Schedule::new(Sgd::new(0.5f32))
        .epochs(0)
        .validate(&valid[..]);
    let report = session
        .fit_observed(&data[..], &mut schedule, &mut |_, _| calls += 1)
        .expect("fit");
    assert_eq!(calls, 0);
    assert_eq!((report.epochs, report.steps, report.rollbacks), (0, 0, 0));
    assert_eq!(report.validation, Some((valid.len(), valid.len())));
    assert!(!report.restored);
    assert_eq!(bits(session.tape_ref().parameters()), before);
    assert_eq!(session.checkpoint_crc32(), crc);
    assert_eq!(
        crc,
        le_u32(bytes, bytes.len() - 4),
        "the checkpoint's own CRC"
    );
}

// ---------------------------------------------------------------------------------------------
// The validation gate

#[test]
fn a_fit_that_makes_validation_worse_is_undone_bit_for_bit() {
    let bytes = pretrained();
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let valid = rows(16, 100, false);
    let mislabelled = rows(40, 0, true);
    let before = session.correct(&valid[..]).expect("correct");
    assert_eq!(before, valid.len());
    let params = bits(session.tape_ref().parameters());

    let mut schedule = Schedule::new(Sgd::new(0.2f32))
        .epochs(10)
        .seed(3)
        .validate(&valid[..]);
    let mut during = Vec::new();
    let report = session
        .fit_observed(&mislabelled[..], &mut schedule, &mut |_, probe| {
            during.push(probe.correct(&valid[..]).expect("probe"))
        })
        .expect("fit");
    // The model did get worse while it trained.
    assert!(*during.last().expect("epochs") < before, "{during:?}");
    assert!(report.restored, "{report:?}");
    assert_eq!(report.validation, Some((before, before)));
    assert_eq!(bits(session.tape_ref().parameters()), params);
    assert_eq!(session.correct(&valid[..]).expect("correct"), before);
}

#[test]
fn a_fit_that_improves_validation_is_kept() {
    let bytes = initial_checkpoint::<Model>(21);
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let valid = rows(16, 100, false);
    let train = rows(40, 0, false);
    let before = session.correct(&valid[..]).expect("correct");
    let params = bits(session.tape_ref().parameters());
    let mut schedule = Schedule::new(Sgd::new(0.2f32))
        .epochs(15)
        .seed(3)
        .validate(&valid[..]);
    let report = session.fit(&train[..], &mut schedule).expect("fit");
    let after = session.correct(&valid[..]).expect("correct");
    assert!(after > before, "{before} -> {after}");
    assert!(!report.restored);
    assert_eq!(report.validation, Some((before, after)));
    assert_ne!(bits(session.tape_ref().parameters()), params);
}

// ---------------------------------------------------------------------------------------------
// The cross-validated gate, the anchor and the plateau

/// `n` rows of the plane whose even rows carry the true class and odd rows the other one:
/// whatever a model learns from one fold of two, the other contradicts.
fn contradicting(n: usize) -> Vec<Row> {
    rows(n, 300, false)
        .into_iter()
        .enumerate()
        .map(|(i, (x, class))| (x, if i % 2 == 1 { 1 - class } else { class }))
        .collect()
}

#[test]
fn a_gated_fit_on_rows_that_contradict_each_other_is_not_committed() {
    let bytes = pretrained();
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let data = contradicting(24);
    let params = bits(session.tape_ref().parameters());
    let crc = session.checkpoint_crc32();
    // The pre-trained model is right on the true half of the rows.
    assert_eq!(session.correct(&data[..]).expect("correct"), 12);
    let mut schedule = Schedule::new(Sgd::new(0.2f32)).epochs(20).seed(5);
    let gate = session
        .fit_gated(&data[..], &mut schedule, 2)
        .expect("gate");
    assert!(!gate.committed, "{gate:?}");
    assert!(gate.fit.is_none());
    assert_eq!((gate.before.correct, gate.before.rows), (12, 24));
    assert_eq!(gate.after.rows, 24);
    // Each fold's model learnt the other fold's labels: it is worse on the held-out rows.
    assert!(gate.after.correct < gate.before.correct, "{gate:?}");
    assert_eq!(bits(session.tape_ref().parameters()), params);
    assert_eq!(session.checkpoint_crc32(), crc);
}

#[test]
fn a_gated_fit_that_helps_is_committed_and_is_the_fit_on_every_row() {
    let bytes = initial_checkpoint::<Model>(21);
    let data = rows(24, 0, false);
    let schedule = || Schedule::new(Sgd::new(0.2f32)).epochs(15).seed(3);

    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let gate = session
        .fit_gated(&data[..], &mut schedule(), 3)
        .expect("gate");
    assert!(gate.committed, "{gate:?}");
    assert!(gate.after.correct > gate.before.correct, "{gate:?}");

    // The same schedule run once on every row, from the same checkpoint.
    let mut plain_work = Box::new(Work::new());
    let mut plain =
        Session::<Model, _, _>::from_checkpoint(&mut plain_work, bytes, Plan::LastLayer)
            .expect("session");
    let fit = plain.fit(&data[..], &mut schedule()).expect("fit");
    assert_eq!(gate.fit, Some(fit));
    assert_eq!(
        bits(session.tape_ref().parameters()),
        bits(plain.tape_ref().parameters())
    );

    // The cross-validated score, by hand: fit on two folds of three, score the third.
    let mut after = (0, 0.0f32);
    for fold in 0..3 {
        let rest: Vec<Row> = (0..24).filter(|i| i % 3 != fold).map(|i| data[i]).collect();
        let held: Vec<Row> = (0..24).filter(|i| i % 3 == fold).map(|i| data[i]).collect();
        let mut w = Box::new(Work::new());
        let mut s = Session::<Model, _, _>::from_checkpoint(&mut w, bytes, Plan::LastLayer)
            .expect("session");
        s.fit(&rest[..], &mut schedule()).expect("fit");
        let (tape, model) = s.parts();
        let score = safegrad::train::score(tape, model, &held[..]).expect("score");
        after.0 += score.correct;
        after.1 += score.loss;
    }
    assert_eq!(
        (gate.after.correct, gate.after.loss.to_bits()),
        (after.0, after.1.to_bits())
    );
}

#[test]
fn a_gate_over_too_few_or_too_many_folds_is_refused_and_changes_nothing() {
    let bytes = pretrained();
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let data = rows(6, 0, true);
    let params = bits(session.tape_ref().parameters());
    for folds in [0, 1, 7] {
        let mut schedule = Schedule::new(Sgd::new(0.2f32)).epochs(5);
        let err = session
            .fit_gated(&data[..], &mut schedule, folds)
            .expect_err("refused");
        assert_eq!(err, Error::Step(StepError::Folds { folds, rows: 6 }));
        assert!(err.to_string().contains("folds"), "{err}");
        assert_eq!(bits(session.tape_ref().parameters()), params);
    }
}

#[test]
fn the_head_fitted_on_latents_is_the_fit_on_the_rows_bit_for_bit() {
    let bytes = pretrained();
    let data = rows(24, 0, true);
    let schedule = || {
        Schedule::new(Sgd::new(0.2f32))
            .epochs(12)
            .seed(9)
            .anchor(0.05)
            .until_converged(safegrad::session::Plateau {
                window: 3,
                tolerance: 0.01,
                halvings: 2,
            })
    };
    let mut work = Box::new(Work::new());
    let mut whole = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let fit = whole.fit(&data[..], &mut schedule()).expect("fit");
    let gate = whole
        .fit_gated(&data[..], &mut schedule(), 3)
        .expect("gate");

    let mut head_work = Box::new(Work::new());
    let mut head = Session::<Model, _, _>::from_checkpoint(&mut head_work, bytes, Plan::LastLayer)
        .expect("session");
    let mut latents = vec![([0.0f32; 8], 0usize); 24];
    assert_eq!(head.latents(&data[..], &mut latents).expect("latents"), 24);
    // The latent is the ReLU of the first layer: 8 values, none negative.
    assert!(latents.iter().flat_map(|(x, _)| x).all(|&v| v >= 0.0));
    let head_fit = head.fit_head(&latents[..], &mut schedule()).expect("fit");
    let head_gate = head
        .fit_head_gated_observed(&latents[..], &mut schedule(), 3, &mut |_, _| {})
        .expect("gate");
    assert_eq!(head_fit, fit);
    assert_eq!(head_gate, gate);
    assert_eq!(head.checkpoint_crc32(), whole.checkpoint_crc32());
    assert_eq!(
        bits(head.tape_ref().parameters()),
        bits(whole.tape_ref().parameters())
    );
    // Too little room for the latents is refused.
    let err = head
        .latents(&data[..], &mut latents[..10])
        .expect_err("refused");
    assert_eq!(
        err,
        Error::Step(StepError::SampleCapacity {
            capacity: 10,
            rows: 24
        })
    );
}

/// The L2 distance of the session's trainable parameters from `start`.
fn distance(values: &[f32], start: &[f32]) -> f64 {
    values
        .iter()
        .zip(start)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn a_stronger_anchor_keeps_the_fit_closer_to_where_it_started() {
    let bytes = pretrained();
    let data = rows(30, 0, true);
    let mut distances = Vec::new();
    for strength in [0.0f32, 0.5, 4.0] {
        let mut work = Box::new(Work::new());
        let mut session =
            Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
                .expect("session");
        let start = session.tape_ref().parameters().to_vec();
        let mut schedule = Schedule::new(Sgd::new(0.1f32)).epochs(10).seed(2);
        if strength > 0.0 {
            schedule = schedule.anchor(strength);
        }
        session.fit(&data[..], &mut schedule).expect("fit");
        distances.push(distance(session.tape_ref().parameters(), &start));
    }
    assert!(
        distances[0] > distances[1] && distances[1] > distances[2] && distances[2] > 0.0,
        "{distances:?}"
    );
}

#[test]
fn a_fit_until_converged_stops_where_the_losses_it_saw_say() {
    let bytes = initial_checkpoint::<Model>(8);
    let data = rows(24, 0, false);
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let plateau = safegrad::session::Plateau {
        window: 4,
        tolerance: 0.05f32,
        halvings: 3,
    };
    let mut schedule = Schedule::new(Sgd::new(0.2f32))
        .epochs(500)
        .seed(4)
        .until_converged(plateau);
    let mut seen = Vec::new();
    let report = session
        .fit_observed(&data[..], &mut schedule, &mut |end, _| {
            seen.push((end.mean_loss, end.learning_rate))
        })
        .expect("fit");
    assert!(report.converged && report.epochs < 500, "{report:?}");
    assert_eq!(seen.len() % 4, 0, "it stops at the end of a window");
    // The criterion, replayed on the losses the observer saw, four epochs at a time.
    let (mut best, mut halvings, mut lr) = (None::<f32>, 0, 0.2f32);
    for (n, &(_, rate)) in seen.iter().enumerate() {
        if n % 4 == 3 {
            let window = seen[n - 3..=n].iter().map(|&(l, _)| l).sum::<f32>() / 4.0;
            if best.is_none_or(|b| window < b - b * 0.05) {
                best = Some(window);
            } else {
                halvings += 1;
                if halvings < 3 {
                    lr *= 0.5;
                }
            }
        }
        assert_eq!(rate, lr, "epoch {}", n + 1);
        assert_eq!(halvings >= 3, n + 1 == seen.len(), "epoch {}", n + 1);
    }
}

// ---------------------------------------------------------------------------------------------
// fit_observed

#[test]
fn the_observer_sees_every_epoch_and_its_probe_counts_as_the_session_does() {
    let bytes = initial_checkpoint::<Model>(4);
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let train = rows(24, 0, false);
    let eval = rows(16, 100, false);
    let mut schedule = Schedule::new(Sgd::new(0.1f32)).epochs(7).seed(2);
    let mut seen = Vec::new();
    let report = session
        .fit_observed(&train[..], &mut schedule, &mut |end, probe| {
            let correct = probe.correct(&eval[..]).expect("probe");
            seen.push((
                end.epoch,
                end.steps,
                end.mean_loss,
                end.learning_rate,
                correct,
            ));
        })
        .expect("fit");
    let epochs: Vec<usize> = seen.iter().map(|s| s.0).collect();
    assert_eq!(epochs, (1..=7).collect::<Vec<_>>());
    assert!(seen.iter().all(|s| s.1 == train.len() && s.3 == 0.1));
    let last = seen.last().expect("epochs");
    assert_eq!(last.2.to_bits(), report.final_loss.to_bits());
    assert_eq!(last.4, session.correct(&eval[..]).expect("correct"));
    assert_eq!(report.steps, 7 * train.len());
}

// ---------------------------------------------------------------------------------------------
// A/B slots

/// NOR flash over a `Vec<u8>`: erasing sets whole sectors to `0xFF`, writing clears bits
/// (`old & new`), both aligned.
struct Nor {
    bytes: Vec<u8>,
}

const SECTOR: usize = 256;

impl ErrorType for Nor {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Nor {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, out: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        let src = self
            .bytes
            .get(at..at + out.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl NorFlash for Nor {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let (from, to) = (from as usize, to as usize);
        if !from.is_multiple_of(SECTOR) || !to.is_multiple_of(SECTOR) || from > to {
            return Err(NorFlashErrorKind::NotAligned);
        }
        self.bytes
            .get_mut(from..to)
            .ok_or(NorFlashErrorKind::OutOfBounds)?
            .fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        if !at.is_multiple_of(Self::WRITE_SIZE) || !data.len().is_multiple_of(Self::WRITE_SIZE) {
            return Err(NorFlashErrorKind::NotAligned);
        }
        let dst = self
            .bytes
            .get_mut(at..at + data.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        for (d, s) in dst.iter_mut().zip(data) {
            *d &= *s;
        }
        Ok(())
    }
}

#[test]
fn saved_slots_reload_into_a_fresh_session() {
    let bytes = pretrained();
    let slots = Slots::new(0, 2 * SECTOR as u32);
    let mut flash = Nor {
        bytes: vec![0xFF; 4 * SECTOR],
    };
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let train = rows(24, 0, true);
    let mut schedule = Schedule::new(Sgd::new(0.2f32)).epochs(1);
    session.fit(&train[..], &mut schedule).expect("fit");
    let first = (
        session.checkpoint_crc32(),
        session.tape_ref().parameters().to_vec(),
    );
    assert_eq!(session.save(&mut flash, &slots), Ok(1));
    session.fit(&train[..], &mut schedule).expect("fit");
    let second = (
        session.checkpoint_crc32(),
        session.tape_ref().parameters().to_vec(),
    );
    assert_ne!(first.0, second.0);
    assert_eq!(session.save(&mut flash, &slots), Ok(2));

    let located = slots.locate(&mut flash).expect("locate").expect("a slot");
    assert_eq!(located.seq, 2);
    assert_eq!(located.len, session.checkpoint_len());
    assert_eq!(located.offset as usize, 2 * SECTOR + SLOT_HEADER, "slot B");
    let payload = |offset: usize| flash.bytes[offset..offset + located.len].to_vec();
    let newest = payload(located.offset as usize);
    let older = payload(SLOT_HEADER);
    assert_eq!(&newest[..4], b"SGCK");
    assert_eq!(le_u32(&newest, newest.len() - 4), second.0);
    assert_eq!(
        bits(&stored_parameters(&newest)[BODY..]),
        bits(&second.1),
        "the payload stores the head"
    );

    for (payload, (crc, params)) in [(newest, second), (older, first)] {
        let mut work = Box::new(Work::new());
        let mut fresh = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
            .expect("session");
        assert_ne!(fresh.checkpoint_crc32(), crc);
        fresh.load(&payload).expect("load");
        assert_eq!(fresh.checkpoint_crc32(), crc);
        assert_eq!(bits(fresh.tape_ref().parameters()), bits(&params));
    }
}

// ---------------------------------------------------------------------------------------------
// include_checkpoint!

static INCLUDED: &[u8] = safegrad::include_checkpoint!("../../motion/assets/pretrained.sgck");

#[test]
fn include_checkpoint_gives_the_file_aligned_to_8_bytes() {
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../motion/assets/pretrained.sgck"
    ))
    .expect("read the file");
    assert_eq!(INCLUDED.as_ptr() as usize % 8, 0);
    assert_eq!(&INCLUDED[..4], b"SGCK");
    assert_eq!(INCLUDED, &file[..]);
    // Aligned, its parameters can be read in place.
    let params = checkpoint::parameters_in_place::<f32>(INCLUDED).expect("in place");
    assert_eq!(params.len(), le_u32(INCLUDED, 12) as usize);
    assert_eq!(params.as_ptr() as usize, INCLUDED.as_ptr() as usize + 16);
}

/// The rows the tests above train on hold both classes in fair numbers (the tests would
/// prove little on one class).
#[test]
fn the_data_has_both_classes() {
    for (data, flip) in [(rows(40, 0, false), false), (rows(40, 0, true), true)] {
        let ones = (0..Samples::len(&data[..]))
            .filter(|&i| data[..].row(i).expect("row").1 == 1)
            .count();
        assert!((10..=30).contains(&ones), "flip {flip}: {ones} of 40");
    }
}

// A new class: a three-class model pre-trained on two of them, its third output imprinted
// and fitted to convergence on the body's outputs.

type Model3 = (Linear<2, 8>, Relu, Linear<8, 3>);
type Work3 = safegrad::workspace!(f32, Model3, Plan::LastLayer);
type WorkAll3 = safegrad::workspace!(f32, Model3, Plan::All);

/// `n` points around three centres in turn (class `i % 3`), spread by a low-discrepancy
/// sequence.
fn clusters(n: usize, start: usize) -> Vec<Row> {
    let centres = [[1.0f32, 0.0], [-1.0, 0.6], [0.1, -1.1]];
    (start..start + n)
        .map(|i| {
            let class = i % 3;
            let j = i as f32 + 1.0;
            let c = centres[class];
            let x = [
                c[0] + 0.8 * ((j * 0.618_034).fract() - 0.5),
                c[1] + 0.8 * ((j * 0.754_878).fract() - 0.5),
            ];
            (x, class)
        })
        .collect()
}

/// `Model3` trained (every layer) on classes 0 and 1 only: class 2 never seen.
fn pretrained_without_class_2() -> &'static [u8] {
    let mut work = Box::new(WorkAll3::new());
    let mut session = Session::<Model3, _, _>::new(&mut work, Init::new(4)).expect("session");
    let seen: Vec<Row> = clusters(60, 0).into_iter().filter(|r| r.1 != 2).collect();
    let mut schedule = Schedule::new(Sgd::new(0.1f32)).epochs(30).seed(2);
    session.fit(&seen[..], &mut schedule).expect("fit");
    let mut bytes = vec![0u8; session.checkpoint_len()];
    session.write_checkpoint(&mut bytes).expect("write");
    leak_aligned(&bytes)
}

/// The body's output of `x` in `f64`, from the first layer's weights as the tape holds
/// them: `relu(x W + b)`.
fn body_f64(w: &[f32], b: &[f32], x: &[f32; 2]) -> Vec<f64> {
    (0..8)
        .map(|j| {
            let v = f64::from(b[j])
                + f64::from(x[0]) * f64::from(w[j])
                + f64::from(x[1]) * f64::from(w[8 + j]);
            v.max(0.0)
        })
        .collect()
}

#[test]
fn imprinting_sets_the_new_output_from_the_mean_body_output_and_nothing_else() {
    let bytes = pretrained_without_class_2();
    let mut work = Box::new(Work3::new());
    let mut session = Session::<Model3, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let mut data = clusters(30, 200);
    // A class-2 row with a NaN is left out of the mean.
    data.push(([f32::NAN, 0.0], 2));
    let (w1, b1, w2, b2) = {
        let tape = session.tape_ref();
        let m = session.model();
        (
            tape.value(m.0.weight).expect("w").as_slice().to_vec(),
            tape.value(m.0.bias).expect("b").as_slice().to_vec(),
            tape.value(m.2.weight).expect("w").as_slice().to_vec(),
            tape.value(m.2.bias).expect("b").as_slice().to_vec(),
        )
    };

    // Refusals change nothing.
    let crc = session.checkpoint_crc32();
    assert_eq!(
        session.imprint_class(&data[..], 3),
        Err(Error::Step(StepError::ClassOutOfRange {
            class: 3,
            classes: 3
        }))
    );
    let without: Vec<Row> = data.iter().copied().filter(|r| r.1 != 2).collect();
    let err = session.imprint_class(&without[..], 2).expect_err("no rows");
    assert_eq!(err, Error::Step(StepError::NoRowsOfClass { class: 2 }));
    assert!(err.to_string().contains("class 2"), "{err}");
    assert_eq!(session.checkpoint_crc32(), crc);

    assert_eq!(session.imprint_class(&data[..], 2).expect("imprint"), 10);

    // By hand, in f64: the mean body output of the finite class-2 rows, scaled to the mean
    // norm of the other two outputs' weights (columns 0 and 1 of the 8 x 3 weights); the
    // bias the mean of the other two.
    let mut mean = vec![0.0f64; 8];
    let class_2: Vec<&Row> = data
        .iter()
        .filter(|r| r.1 == 2 && r.0.iter().all(|v| v.is_finite()))
        .collect();
    for (x, _) in &class_2 {
        for (m, h) in mean.iter_mut().zip(body_f64(&w1, &b1, x)) {
            *m += h / class_2.len() as f64;
        }
    }
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let column = |j: usize| -> Vec<f64> { (0..8).map(|i| f64::from(w2[i * 3 + j])).collect() };
    let target = (norm(&column(0)) + norm(&column(1))) / 2.0;
    let expected: Vec<f64> = mean.iter().map(|m| m * target / norm(&mean)).collect();

    let tape = session.tape_ref();
    let m = session.model();
    let w = tape.value(m.2.weight).expect("w");
    let b = tape.value(m.2.bias).expect("b");
    for i in 0..8 {
        let got = f64::from(w.as_slice()[i * 3 + 2]);
        assert!(
            (got - expected[i]).abs() <= 1e-5 * (1.0 + expected[i].abs()),
            "weight {i}: {got} against {}",
            expected[i]
        );
        // The other outputs keep their bits.
        for j in 0..2 {
            assert_eq!(w.as_slice()[i * 3 + j].to_bits(), w2[i * 3 + j].to_bits());
        }
    }
    let bias = (f64::from(b2[0]) + f64::from(b2[1])) / 2.0;
    assert!((f64::from(b.as_slice()[2]) - bias).abs() < 1e-6);
    assert_eq!(bits(&b.as_slice()[..2]), bits(&b2[..2]));
    // The body, read in place, is untouched.
    assert_eq!(
        bits(tape.value(m.0.weight).expect("w").as_slice()),
        bits(&w1)
    );
}

/// The head's objective in `f64`: mean cross-entropy over `rows` plus `penalty / (2 n)`
/// times the squared distance of the weights (the first 24 values of `theta`, then the 3
/// biases) from `start`.
fn head_objective(theta: &[f64], start: &[f64], rows: &[([f32; 8], usize)], penalty: f64) -> f64 {
    let mut loss = 0.0;
    for (x, y) in rows {
        let logits: Vec<f64> = (0..3)
            .map(|j| {
                theta[24 + j]
                    + (0..8)
                        .map(|i| f64::from(x[i]) * theta[i * 3 + j])
                        .sum::<f64>()
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln() + max;
        loss += lse - logits[*y];
    }
    let distance: f64 = theta[..24]
        .iter()
        .zip(start)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    (loss + 0.5 * penalty * distance) / rows.len() as f64
}

#[test]
fn the_full_batch_head_fit_reaches_the_minimum_of_its_objective() {
    use safegrad::train::HeadFit;
    let bytes = pretrained_without_class_2();
    let mut work = Box::new(Work3::new());
    let mut session = Session::<Model3, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let data = clusters(30, 400);
    let mut latents = vec![([0.0f32; 8], 0usize); 30];
    session.latents(&data[..], &mut latents).expect("latents");
    session.imprint_class(&data[..], 2).expect("imprint");
    let start: Vec<f64> = session.tape_ref().parameters()[..]
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let fit = HeadFit {
        penalty: 1.0,
        tolerance: 1e-4,
        iterations: 20_000,
    };

    // A label the head has no output for is refused, and nothing changes.
    let mut bad = latents.clone();
    bad[4].1 = 3;
    let crc = session.checkpoint_crc32();
    let err = session
        .fit_head_full_batch(&bad[..], &fit)
        .expect_err("refused");
    assert!(err.to_string().contains("label 3"), "{err}");
    assert_eq!(session.checkpoint_crc32(), crc);

    for (bad, name) in [
        (
            HeadFit {
                penalty: -1.0,
                ..fit
            },
            "penalty",
        ),
        (
            HeadFit {
                penalty: f32::NAN,
                ..fit
            },
            "penalty",
        ),
        (
            HeadFit {
                penalty: f32::INFINITY,
                ..fit
            },
            "penalty",
        ),
        (
            HeadFit {
                tolerance: f32::NAN,
                ..fit
            },
            "tolerance",
        ),
        (
            HeadFit {
                tolerance: -1e-3,
                ..fit
            },
            "tolerance",
        ),
    ] {
        let err = session
            .fit_head_full_batch(&latents[..], &bad)
            .expect_err("refused");
        assert_eq!(err, Error::Step(StepError::HeadFitSetting { name }));
        assert!(err.to_string().contains(name), "{err}");
        assert_eq!(session.checkpoint_crc32(), crc);
    }

    let report = session
        .fit_head_full_batch(&latents[..], &fit)
        .expect("fit");
    assert!(report.converged, "{report:?}");
    let theta: Vec<f64> = session
        .tape_ref()
        .parameters()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let weights_start = &start[..24];
    let f = |t: &[f64]| head_objective(t, weights_start, &latents, 1.0);
    assert!(f(&theta) < f(&start), "the fit lowered nothing");
    // The objective it reports is the one where it stopped.
    assert!(
        (f64::from(report.final_loss) - f(&theta)).abs() < 1e-5,
        "{} against {}",
        report.final_loss,
        f(&theta)
    );
    // At the minimum every partial derivative vanishes: central differences in f64.
    let h = 1e-5;
    for k in 0..theta.len() {
        let (mut a, mut b) = (theta.clone(), theta.clone());
        a[k] += h;
        b[k] -= h;
        let d = (f(&a) - f(&b)) / (2.0 * h);
        assert!(d.abs() < 5e-4, "d/dtheta[{k}] = {d}");
    }
    assert_eq!(session.correct(&data[..]).expect("correct"), 30);

    // A row with a NaN is left out: the same fit, bit for bit, as without it.
    let mut with_nan = latents.clone();
    with_nan.insert(7, ([f32::NAN; 8], 1));
    let mut other_work = Box::new(Work3::new());
    let mut other =
        Session::<Model3, _, _>::from_checkpoint(&mut other_work, bytes, Plan::LastLayer)
            .expect("session");
    other.imprint_class(&data[..], 2).expect("imprint");
    let again = other.fit_head_full_batch(&with_nan[..], &fit).expect("fit");
    assert_eq!((again.rejected, report.rejected), (1, 0));
    assert_eq!(other.checkpoint_crc32(), session.checkpoint_crc32());

    // A head read in place (only the biases train) is refused by both, and nothing
    // changes.
    let mut bias_work = Box::new(Work3::new());
    let mut biases = Session::<Model3, _, _>::from_checkpoint(
        &mut bias_work,
        bytes,
        Plan::BiasesAndLastLayers(0),
    )
    .expect("session");
    let crc = biases.checkpoint_crc32();
    let err = biases.imprint_class(&data[..], 2).expect_err("refused");
    assert!(
        matches!(
            err,
            Error::Step(StepError::Tape(safegrad::TapeError::ReadOnly { .. }))
        ),
        "{err}"
    );
    assert_eq!(
        biases.fit_head_full_batch(&latents[..], &fit),
        Err(Error::Step(StepError::NotHeadOnly {
            trainable: 8 + 3,
            head: 8 * 3 + 3
        }))
    );
    assert_eq!(biases.checkpoint_crc32(), crc);

    // More than the head training is refused.
    let mut all_work = Box::new(WorkAll3::new());
    let mut all =
        Session::<Model3, _, _>::from_checkpoint(&mut all_work, bytes, Plan::All).expect("session");
    assert_eq!(
        all.fit_head_full_batch(&latents[..], &fit),
        Err(Error::Step(StepError::NotHeadOnly {
            trainable: 8 * 3 + 3 + 2 * 8 + 8,
            head: 8 * 3 + 3
        }))
    );
}

/// The tape of a session of `Model3` under `Plan::LastLayer`.
type Tape3 = Tape<f32, Cap3>;
/// Scalars of `Model3`'s head.
const HEAD3: usize = 8 * 3 + 3;

/// A fresh session of `Model3` from `bytes`, the last layer trained, and the latents of
/// `rows`.
fn head_session<'w>(
    work: &'w mut Work3,
    bytes: &'static [u8],
    rows: &[Row],
) -> (Session<'w, Model3, f32, Cap3>, Vec<Latent3Row>) {
    let mut session =
        Session::<Model3, _, _>::from_checkpoint(work, bytes, Plan::LastLayer).expect("session");
    let mut latents = vec![([0.0f32; 8], 0usize); rows.len()];
    session.latents(rows, &mut latents).expect("latents");
    (session, latents)
}

/// A latent row of `Model3`: the body's 8 outputs and the class.
type Latent3Row = ([f32; 8], usize);

/// The capacities of `Tape3`.
type Cap3 = Cap<
    { sizes::<Model3>(Plan::LastLayer).nodes },
    { sizes::<Model3>(Plan::LastLayer).values },
    { sizes::<Model3>(Plan::LastLayer).gradients },
>;

#[test]
fn a_gate_teaching_a_new_class_imprints_before_each_fit_and_is_the_fits_by_hand() {
    use safegrad::session::Prepare;
    use safegrad::train::{imprint_class, score, HeadFit, Score};
    let bytes = pretrained_without_class_2();
    let data = clusters(24, 600);
    let fit = HeadFit {
        penalty: 1.0,
        tolerance: 1e-4,
        iterations: 3_000,
    };
    let mut work = Box::new(Work3::new());
    let (mut session, latents) = head_session(&mut work, bytes, &data);
    let before = {
        let (tape, model) = session.parts();
        score(tape, &model.2, &latents[..]).expect("score")
    };
    let mut seen = Vec::new();
    let mut keep = [0.0f32; HEAD3];
    let mut imprint = |tape: &mut Tape3, head: &Linear<8, 3>, rows: &dyn Samples<f32, 8>| {
        seen.push(rows.len());
        imprint_class(tape, head, rows, 2)?;
        Ok(())
    };
    let gate = session
        .fit_head_full_batch_gated(
            &latents[..],
            &fit,
            4,
            Some((&mut imprint as &mut Prepare<'_, _, _, _, 8>, &mut keep[..])),
        )
        .expect("gate");
    // The model's own score is taken unprepared; four folds of 18 training rows (row `i`
    // held out in fold `i % 4`, each fold with rows of every class) are prepared, then
    // every row.
    assert_eq!(gate.before, before);
    assert_eq!(seen, vec![18, 18, 18, 18, 24]);
    assert!(gate.committed, "{gate:?}");
    assert!(gate.after.correct > gate.before.correct, "{gate:?}");

    // The folds by hand: imprint on the training rows, fit, score the held-out ones.
    let mut after = Score::zero();
    for fold in 0..4 {
        let rest: Vec<_> = (0..24)
            .filter(|i| i % 4 != fold)
            .map(|i| latents[i])
            .collect();
        let held: Vec<_> = (0..24)
            .filter(|i| i % 4 == fold)
            .map(|i| latents[i])
            .collect();
        let mut w = Box::new(Work3::new());
        let (mut s, _) = head_session(&mut w, bytes, &data);
        let (tape, model) = s.parts();
        imprint_class(tape, &model.2, &rest[..], 2).expect("imprint");
        s.fit_head_full_batch(&rest[..], &fit).expect("fit");
        let (tape, model) = s.parts();
        after = after.plus(score(tape, &model.2, &held[..]).expect("score"));
    }
    assert_eq!(gate.after, after);
    // The committed model by hand: imprint on every row, fit.
    let mut w = Box::new(Work3::new());
    let (mut s, _) = head_session(&mut w, bytes, &data);
    s.imprint_class(&data[..], 2).expect("imprint");
    let report = s.fit_head_full_batch(&latents[..], &fit).expect("fit");
    assert_eq!(gate.fit, Some(report));
    assert_eq!(session.checkpoint_crc32(), s.checkpoint_crc32());
    // It knows the new class.
    let fresh = clusters(30, 900);
    let class_2: Vec<Row> = fresh.iter().copied().filter(|r| r.1 == 2).collect();
    assert_eq!(
        session.correct(&class_2[..]).expect("correct"),
        class_2.len()
    );
}

#[test]
fn a_prepared_gate_that_does_not_commit_puts_the_model_back_as_it_was() {
    use safegrad::session::Prepare;
    use safegrad::train::{imprint_class, HeadFit};
    type HeadTape = safegrad::tape_for!(f32, Model, Plan::LastLayer);
    let bytes = pretrained();
    let mut work = Box::new(Work::new());
    let mut session = Session::<Model, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let data = contradicting(24);
    let mut latents = vec![([0.0f32; 8], 0usize); 24];
    session.latents(&data[..], &mut latents).expect("latents");
    let params = bits(session.tape_ref().parameters());
    let fit = HeadFit {
        penalty: 1.0,
        tolerance: 1e-4,
        iterations: 2_000,
    };
    let mut calls = 0;
    let mut imprint = |tape: &mut HeadTape, head: &Linear<8, 2>, rows: &dyn Samples<f32, 8>| {
        calls += 1;
        imprint_class(tape, head, rows, 1)?;
        Ok(())
    };
    // Room for fewer scalars than the head trains is refused, and nothing changes.
    let mut small = [0.0f32; HEAD - 1];
    let err = session
        .fit_head_full_batch_gated(
            &latents[..],
            &fit,
            2,
            Some((&mut imprint as &mut Prepare<'_, _, _, _, 8>, &mut small[..])),
        )
        .expect_err("refused");
    assert_eq!(
        err,
        Error::Step(StepError::SnapshotCapacity {
            capacity: HEAD - 1,
            needed: HEAD
        })
    );
    assert_eq!(bits(session.tape_ref().parameters()), params);

    let mut keep = [0.0f32; HEAD];
    let gate = session
        .fit_head_full_batch_gated(
            &latents[..],
            &fit,
            2,
            Some((&mut imprint as &mut Prepare<'_, _, _, _, 8>, &mut keep[..])),
        )
        .expect("gate");
    assert!(!gate.committed, "{gate:?}");
    assert!(gate.after.correct < gate.before.correct, "{gate:?}");
    // Both folds' fits started from an imprinted head (the refused call made none); the
    // model is the one from before.
    assert_eq!(calls, 2);
    assert_eq!(bits(session.tape_ref().parameters()), params);
}

#[test]
fn the_sgd_gate_of_the_whole_model_prepares_each_fit_too() {
    use safegrad::session::Prepare;
    use safegrad::train::imprint_class;
    let bytes = pretrained_without_class_2();
    let data = clusters(24, 700);
    let schedule = || Schedule::new(Sgd::new(0.05f32)).epochs(20).seed(4);
    let mut work = Box::new(Work3::new());
    let mut session = Session::<Model3, _, _>::from_checkpoint(&mut work, bytes, Plan::LastLayer)
        .expect("session");
    let before = session.correct(&data[..]).expect("correct");
    let mut seen = Vec::new();
    let mut imprint = |tape: &mut Tape3, model: &Model3, rows: &dyn Samples<f32, 2>| {
        seen.push(rows.len());
        imprint_class(tape, model, rows, 2)?;
        Ok(())
    };
    let mut keep = [0.0f32; HEAD3];
    let gate = session
        .fit_gated_prepared(
            &data[..],
            &mut schedule(),
            4,
            &mut imprint as &mut Prepare<'_, _, _, _, 2>,
            &mut keep,
            &mut |_, _| {},
        )
        .expect("gate");
    assert_eq!(seen, vec![18, 18, 18, 18, 24]);
    assert_eq!(gate.before.correct, before);
    assert!(gate.committed, "{gate:?}");
    // The committed model by hand: imprint on every row, then the same schedule.
    let mut w = Box::new(Work3::new());
    let mut s =
        Session::<Model3, _, _>::from_checkpoint(&mut w, bytes, Plan::LastLayer).expect("session");
    s.imprint_class(&data[..], 2).expect("imprint");
    let fit = s.fit(&data[..], &mut schedule()).expect("fit");
    assert_eq!(gate.fit, Some(fit));
    assert_eq!(session.checkpoint_crc32(), s.checkpoint_crc32());
}
