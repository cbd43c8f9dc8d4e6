//! The divergence guard: refused samples, a loss that runs away, the rollback.

use safegrad::checkpoint;
use safegrad::nn::{Build, Init, Linear, Plan, Relu};
use safegrad::optim::{Optimizer, Sgd};
use safegrad::rng::{Draw, SeedableRng, SplitMix64};
use safegrad::train::{epoch, Divergence, DivergenceGuard, Shuffle, StepConfig};

type Model = (Linear<2, 8>, Relu, Linear<8, 2>);
type SmallTape = safegrad::tape_for!(f32, Model, Plan::All);

/// Two classes on either side of the line x0 = x1.
fn data() -> Vec<([f32; 2], usize)> {
    let mut rng = SplitMix64::seed_from_u64(3);
    (0..32)
        .map(|_| {
            let x = [rng.uniform(-1.0, 1.0) as f32, rng.uniform(-1.0, 1.0) as f32];
            (x, usize::from(x[0] > x[1]))
        })
        .collect()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn a_loss_that_runs_away_is_caught_and_rolled_back() {
    let mut tape = Box::new(SmallTape::new());
    let model = Model::build(&mut tape, &mut Init::new(1)).unwrap();
    let data = data();
    let mut order = vec![0usize; data.len()];
    let mut shuffle = Shuffle::new(&mut order, data.len(), 9).unwrap();
    let config = StepConfig::default();
    let mut guard = DivergenceGuard::default();
    let mut sgd = Sgd::new(0.1f32);
    let mut snapshot = vec![0u8; checkpoint::encoded_len(&*tape)];
    // Healthy epochs: no divergence, the loss goes down.
    let mut losses = Vec::new();
    for _ in 0..5 {
        let out = epoch(
            &mut tape,
            &model,
            &mut sgd,
            &data[..],
            &mut shuffle,
            &config,
            Some(&mut guard),
        )
        .unwrap();
        assert_eq!(out.divergence, None);
        assert_eq!(out.steps, data.len());
        losses.push(out.mean_loss);
        checkpoint::save(&*tape, &mut snapshot).unwrap();
    }
    assert!(losses[4] < losses[0], "{losses:?}");
    let good = bits(tape.parameters());
    // A learning rate far too large: the epoch's loss rises above the bound.
    sgd.scale_learning_rate(2000.0);
    let out = epoch(
        &mut tape,
        &model,
        &mut sgd,
        &data[..],
        &mut shuffle,
        &config,
        Some(&mut guard),
    )
    .unwrap();
    let Some(Divergence::LossRise { loss, average }) = out.divergence else {
        panic!("no divergence: {out:?}");
    };
    assert!(loss > 3.0 * average && loss > 1.0, "{loss} vs {average}");
    // The caller's rollback: the last good parameters, bit for bit, and half the rate.
    checkpoint::load(&mut *tape, &snapshot).unwrap();
    sgd.scale_learning_rate(0.5);
    guard.reset();
    assert_eq!(bits(tape.parameters()), good);
    assert_eq!(sgd.learning_rate(), 0.1 * 2000.0 * 0.5);
}

#[test]
fn non_finite_samples_in_a_row_are_a_divergence_and_change_nothing() {
    let mut tape = Box::new(SmallTape::new());
    let model = Model::build(&mut tape, &mut Init::new(1)).unwrap();
    let before = bits(tape.parameters());
    let bad: Vec<([f32; 2], usize)> = vec![
        ([f32::NAN, 0.0], 0),
        ([0.0, f32::INFINITY], 1),
        ([f32::NAN, f32::NAN], 0),
        ([f32::NEG_INFINITY, 1.0], 1),
    ];
    let mut order = vec![0usize; bad.len()];
    let mut shuffle = Shuffle::new(&mut order, bad.len(), 1).unwrap();
    let mut guard = DivergenceGuard::default();
    let mut sgd = Sgd::new(0.1f32);
    let out = epoch(
        &mut tape,
        &model,
        &mut sgd,
        &bad[..],
        &mut shuffle,
        &StepConfig::default(),
        Some(&mut guard),
    )
    .unwrap();
    assert_eq!(out.steps, 0);
    assert_eq!(out.rejected, 3);
    assert_eq!(out.divergence, Some(Divergence::Rejections { count: 3 }));
    assert_eq!(bits(tape.parameters()), before);
}

#[test]
fn an_occasional_bad_sample_is_skipped_without_a_divergence() {
    let mut tape = Box::new(SmallTape::new());
    let model = Model::build(&mut tape, &mut Init::new(1)).unwrap();
    let mut data = data();
    data[5].0[0] = f32::NAN;
    data[17].0[1] = f32::NEG_INFINITY;
    let mut order = vec![0usize; data.len()];
    let mut shuffle = Shuffle::new(&mut order, data.len(), 2).unwrap();
    let mut guard = DivergenceGuard::default();
    let mut sgd = Sgd::new(0.1f32);
    let out = epoch(
        &mut tape,
        &model,
        &mut sgd,
        &data[..],
        &mut shuffle,
        &StepConfig::default(),
        Some(&mut guard),
    )
    .unwrap();
    assert_eq!((out.steps, out.rejected, out.divergence), (30, 2, None));
    assert!(tape.parameters().iter().all(|p| p.is_finite()));
}
