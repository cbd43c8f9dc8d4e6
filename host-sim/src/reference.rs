//! The reference that fine-tuning is measured against: a multinomial logistic-regression
//! head refit from zero on the frozen body's features (the last layer's input) of the same
//! fine-tuning recordings, in `f64`, to convergence; and `host-sim shifts`, which runs the
//! fine-tuning job and the reference over many simulated installations.
//!
//! The head minimises the mean cross-entropy plus `1 / (2 C n)` times the squared weights
//! (the biases are not penalised), `C = 1`: scikit-learn's `LogisticRegression()` objective
//! divided by `C n`. Gradient descent with a backtracking line search, from zero, until
//! the largest partial derivative is below `1e-9` or 20,000 iterations have run.

use safegrad::nn::{Build, Headed, Init, Module};
use safegrad::session::Session;
use safegrad::{TapeError, Tensor, Var};

use crate::finetune::{self, FinetuneConfig, FinetuneReport, MotionCnn, MotionNet, Progress};
use crate::model::{new_workspace, HostTape};
use crate::shift::Shift;
use motion::features::IMU_FEATURES;
use motion::model::MotionModel;
use motion::samples::WINDOW_VALUES;

/// Rows of features in `f64`, each with its class.
pub type Features = Vec<(Vec<f64>, usize)>;

/// Inverse regularisation strength, scikit-learn's `C`.
pub const C: f64 = 1.0;
/// Convergence: the largest partial derivative of the objective.
const TOLERANCE: f64 = 1e-9;
/// Iterations at most.
const MAX_ITERATIONS: usize = 20_000;

/// A linear head: `scores = W x + b`, one row of `W` per class.
#[derive(Clone, Debug, PartialEq)]
pub struct LogisticHead {
    /// `classes x features`.
    pub weights: Vec<Vec<f64>>,
    /// One per class.
    pub bias: Vec<f64>,
    /// Iterations run.
    pub iterations: usize,
}

impl LogisticHead {
    /// Class scores of one row.
    fn scores(&self, x: &[f64]) -> Vec<f64> {
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| b + w.iter().zip(x).map(|(a, v)| a * v).sum::<f64>())
            .collect()
    }

    /// The class of one row (the first of equal scores).
    pub fn predict(&self, x: &[f64]) -> usize {
        let s = self.scores(x);
        let mut best = 0;
        for (k, &v) in s.iter().enumerate() {
            if v > s[best] {
                best = k;
            }
        }
        best
    }

    /// Fraction of `rows` classified correctly.
    pub fn accuracy(&self, rows: &[(Vec<f64>, usize)]) -> f64 {
        let right = rows.iter().filter(|(x, y)| self.predict(x) == *y).count();
        right as f64 / rows.len().max(1) as f64
    }
}

/// The objective and its gradient (weights then biases) at `head`.
pub fn objective(
    head: &LogisticHead,
    rows: &[(Vec<f64>, usize)],
    lambda: f64,
) -> (f64, LogisticHead) {
    let n = rows.len().max(1) as f64;
    let mut grad = LogisticHead {
        weights: vec![vec![0.0; head.weights[0].len()]; head.weights.len()],
        bias: vec![0.0; head.bias.len()],
        iterations: 0,
    };
    let mut loss = 0.0;
    for (x, y) in rows {
        let s = head.scores(x);
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|v| (v - max).exp()).sum();
        loss += z.ln() + max - s[*y];
        for (k, &v) in s.iter().enumerate() {
            let p = (v - max).exp() / z - if k == *y { 1.0 } else { 0.0 };
            grad.bias[k] += p / n;
            for (g, xv) in grad.weights[k].iter_mut().zip(x) {
                *g += p * xv / n;
            }
        }
    }
    let mut penalty = 0.0;
    for (g, w) in grad.weights.iter_mut().zip(&head.weights) {
        for (g, w) in g.iter_mut().zip(w) {
            *g += lambda * w;
            penalty += w * w;
        }
    }
    (loss / n + 0.5 * lambda * penalty, grad)
}

/// Fits the head on `rows` (features, class) from zero.
pub fn fit_logistic(rows: &[(Vec<f64>, usize)], classes: usize) -> LogisticHead {
    let features = rows.first().map_or(0, |(x, _)| x.len());
    let lambda = 1.0 / (C * rows.len().max(1) as f64);
    let mut head = LogisticHead {
        weights: vec![vec![0.0; features]; classes],
        bias: vec![0.0; classes],
        iterations: 0,
    };
    let mut step = 1.0;
    for it in 0..MAX_ITERATIONS {
        head.iterations = it;
        let (j, g) = objective(&head, rows, lambda);
        let flat = |h: &LogisticHead| -> Vec<f64> {
            h.weights.iter().flatten().chain(&h.bias).copied().collect()
        };
        let gv = flat(&g);
        let largest = gv.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if largest < TOLERANCE {
            break;
        }
        let g2: f64 = gv.iter().map(|v| v * v).sum();
        // Backtracking (Armijo) from a step a little longer than the last one taken.
        step *= 2.0;
        loop {
            let mut trial = head.clone();
            for (w, gw) in trial.weights.iter_mut().zip(&g.weights) {
                for (w, gw) in w.iter_mut().zip(gw) {
                    *w -= step * gw;
                }
            }
            for (b, gb) in trial.bias.iter_mut().zip(&g.bias) {
                *b -= step * gb;
            }
            if objective(&trial, rows, lambda).0 <= j - 0.5 * step * g2 || step < 1e-12 {
                head.weights = trial.weights;
                head.bias = trial.bias;
                break;
            }
            step *= 0.5;
        }
    }
    head
}

/// The frozen body's output for one input row of the MLP: its second hidden layer (the
/// last layer's input).
pub fn mlp_features(
    tape: &mut HostTape,
    model: &MotionModel,
    x: &[f32; IMU_FEATURES],
) -> Result<Vec<f64>, TapeError> {
    tape.clear_activations();
    let input = tape.input(&Tensor::new([*x]))?;
    let h = model.0.forward(tape, input)?;
    let h = model.1.forward(tape, h)?;
    let h = model.2.forward(tape, h)?;
    Ok(tape
        .value(h)?
        .as_slice()
        .iter()
        .map(|&v| f64::from(v))
        .collect())
}

/// Held-out accuracy of the logistic head refit on the pre-trained MLP's frozen features of
/// the report's fine-tuning recordings, on its shifted held-out recordings.
pub fn mlp_reference_accuracy(report: &FinetuneReport) -> Result<f64, String> {
    let (head, test) = mlp_reference(report)?;
    Ok(head.accuracy(&test))
}

/// The logistic head refit on the pre-trained MLP's frozen features of the report's
/// fine-tuning recordings, and the features of its held-out recordings.
pub fn mlp_reference(report: &FinetuneReport) -> Result<(LogisticHead, Features), String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let mut work = new_workspace::<MotionModel>();
    let mut session =
        Session::<MotionModel, _, _>::new(&mut *work, Init::new(1)).map_err(|x| e(&x))?;
    session
        .load(&report.pretrained_checkpoint)
        .map_err(|x| e(&x))?;
    let (tape, model) = session.parts();
    let mut features = |rows: &[(Vec<f32>, usize)]| -> Result<Vec<(Vec<f64>, usize)>, String> {
        finetune::rows_of::<IMU_FEATURES>(rows)?
            .iter()
            .map(|(x, y)| Ok((mlp_features(tape, model, x).map_err(|x| e(&x))?, *y)))
            .collect()
    };
    let train = features(&report.finetune_rows)?;
    let test = features(&report.shifted_eval_rows)?;
    Ok((fit_logistic(&train, motion::model::CLASSES), test))
}

/// The logistic head refit on the latents of any headed model `M` (its body's output for
/// each of the report's fine-tuning rows, [`Session::latents`]) from the report's
/// pre-trained checkpoint, and the latents of its held-out rows.
pub fn reference_on<M, const IN: usize, const F: usize>(
    report: &FinetuneReport,
) -> Result<(LogisticHead, Features), String>
where
    M: Build<f32> + Headed<f32, Var<1, IN>, Latent = Var<1, F>>,
    M::Head: Module<f32, Var<1, F>, Output = M::Output>,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let mut work = new_workspace::<M>();
    let mut session = Session::<M, _, _>::new(&mut *work, Init::new(1)).map_err(|x| e(&x))?;
    session
        .load(&report.pretrained_checkpoint)
        .map_err(|x| e(&x))?;
    let mut features = |rows: &[(Vec<f32>, usize)]| -> Result<Features, String> {
        let rows = finetune::rows_of::<IN>(rows)?;
        let mut out = vec![([0.0f32; F], 0usize); rows.len()];
        session.latents(&rows[..], &mut out).map_err(|x| e(&x))?;
        Ok(out
            .iter()
            .map(|(x, y)| (x.iter().map(|&v| f64::from(v)).collect(), *y))
            .collect())
    };
    let train = features(&report.finetune_rows)?;
    let test = features(&report.shifted_eval_rows)?;
    Ok((fit_logistic(&train, motion::model::CLASSES), test))
}

/// The installations `host-sim shifts` simulates: rotations about each axis and about an
/// oblique one, by several angles; the other wrist, alone and turned; and one that is not
/// rigid.
pub const SHIFTS: [&str; 12] = [
    "rot-z:90",
    "rot-z:45",
    "rot-z:180",
    "rot-x:90",
    "rot-x:-45",
    "rot-y:90",
    "rot-y:150",
    "rot:1,1,1:120",
    "rot:1,-2,0.5:70",
    "mirror",
    "mirror+rot-z:30",
    "gain:1.2,0.8+offset:0.5,0,-0.5+noise:0.05",
];

/// `n` rigid installations drawn at random (a fixed generator, so always the same ones):
/// a rotation by 20 to 180 degrees about an axis drawn from the cube `[-1, 1]^3`, every
/// third one on the other wrist as well (`mirror+rot:AX,AY,AZ:DEG`).
pub fn random_shifts(n: usize) -> Vec<Shift> {
    let mut state = 12345u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (a, b, c) = (
            uniform() * 2.0 - 1.0,
            uniform() * 2.0 - 1.0,
            uniform() * 2.0 - 1.0,
        );
        let degrees = 20.0 + uniform() * 160.0;
        let mirror = if out.len() % 3 == 2 { "mirror+" } else { "" };
        // An axis that rounds to zero has no direction: draw again.
        if let Ok(shift) = format!("{mirror}rot:{a:.2},{b:.2},{c:.2}:{degrees:.0}").parse() {
            out.push(shift);
        }
    }
    out
}

/// One installation over the seeds: the fine-tuning job's reports and the reference's
/// accuracies.
pub struct ShiftRow {
    /// The spec.
    pub shift: String,
    /// One report per seed.
    pub reports: Vec<FinetuneReport>,
    /// The reference's held-out accuracy per seed.
    pub reference: Vec<f64>,
}

/// Runs the MLP's fine-tuning job (its default settings, the last layer) and the reference
/// for every shift of `shifts` and every seed; `done` is told how many runs are done.
pub fn shifts(
    dir: &std::path::Path,
    shifts: &[Shift],
    seeds: &[u64],
    done: &mut dyn FnMut(usize),
) -> Result<Vec<ShiftRow>, String> {
    shifts_with(dir, &FinetuneConfig::default(), shifts, seeds, done)
}

/// [`shifts`] with the job's settings from `base` (its seed and shift replaced).
pub fn shifts_with(
    dir: &std::path::Path,
    base: &FinetuneConfig,
    shifts: &[Shift],
    seeds: &[u64],
    done: &mut dyn FnMut(usize),
) -> Result<Vec<ShiftRow>, String> {
    let mut out = Vec::new();
    let mut runs = 0;
    for shift in shifts {
        let mut row = ShiftRow {
            shift: shift.to_string(),
            reports: Vec::new(),
            reference: Vec::new(),
        };
        for &seed in seeds {
            let config = FinetuneConfig {
                seed,
                shift: shift.clone(),
                ..base.clone()
            };
            let report = finetune::run(dir, &config, &mut |_: Progress<'_>| {})?;
            row.reference.push(mlp_reference_accuracy(&report)?);
            row.reports.push(report);
            runs += 1;
            done(runs);
        }
        out.push(row);
    }
    Ok(out)
}

/// One class taught as new, over the seeds: the job's reports and the reference's held-out
/// accuracies on the other classes and on the new one.
pub struct NewClassRow {
    /// The new class.
    pub class: usize,
    /// One report per seed.
    pub reports: Vec<FinetuneReport>,
    /// The reference's held-out accuracy on the other classes, per seed.
    pub reference_old: Vec<f64>,
    /// The reference's held-out accuracy on the new class, per seed.
    pub reference_new: Vec<f64>,
}

/// Runs the fine-tuning job with `base`'s settings (its model), each class in turn as the new one
/// ([`FinetuneConfig::new_class`]), for every seed, and the reference on the same
/// recordings; `done` is told how many runs are done.
pub fn new_classes(
    dir: &std::path::Path,
    base: &FinetuneConfig,
    seeds: &[u64],
    done: &mut dyn FnMut(usize),
) -> Result<Vec<NewClassRow>, String> {
    let mut out = Vec::new();
    let mut runs = 0;
    for class in 0..motion::model::CLASSES {
        let mut row = NewClassRow {
            class,
            reports: Vec::new(),
            reference_old: Vec::new(),
            reference_new: Vec::new(),
        };
        for &seed in seeds {
            let config = FinetuneConfig {
                seed,
                new_class: Some(class),
                ..base.clone()
            };
            let report = finetune::run(dir, &config, &mut |_: Progress<'_>| {})?;
            let (head, test) = match base.model {
                MotionNet::Mlp => mlp_reference(&report)?,
                // The body's output, the pooled 16 channels (the bound checks it).
                MotionNet::Cnn => reference_on::<MotionCnn, WINDOW_VALUES, 16>(&report)?,
            };
            let (old, new): (Vec<_>, Vec<_>) = test.into_iter().partition(|(_, y)| *y != class);
            row.reference_old.push(head.accuracy(&old));
            row.reference_new.push(head.accuracy(&new));
            row.reports.push(report);
            runs += 1;
            done(runs);
        }
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_separates_separable_classes_and_its_gradient_vanishes() {
        // Three clusters in two dimensions.
        let mut rows = Vec::new();
        for (k, (cx, cy)) in [(0.0, 0.0), (3.0, 0.0), (0.0, 3.0)].into_iter().enumerate() {
            for j in 0..5 {
                let d = j as f64 * 0.1 - 0.2;
                rows.push((vec![cx + d, cy - d], k));
            }
        }
        let head = fit_logistic(&rows, 3);
        assert_eq!(head.accuracy(&rows), 1.0);
        assert!(head.iterations < MAX_ITERATIONS, "did not converge");
        // At the optimum every partial derivative is zero: check against central
        // differences of the objective, computed independently of its gradient.
        let lambda = 1.0 / (C * rows.len() as f64);
        let f = |h: &LogisticHead| objective(h, &rows, lambda).0;
        let h = 1e-5;
        for k in 0..3 {
            for i in 0..2 {
                let (mut a, mut b) = (head.clone(), head.clone());
                a.weights[k][i] += h;
                b.weights[k][i] -= h;
                let d = (f(&a) - f(&b)) / (2.0 * h);
                assert!(d.abs() < 1e-6, "d/dw[{k}][{i}] = {d}");
            }
        }
    }

    #[test]
    fn the_gradient_matches_central_differences_away_from_the_optimum() {
        let rows = vec![
            (vec![0.5, -1.0, 2.0], 0),
            (vec![1.5, 0.3, -0.7], 1),
            (vec![-0.2, 0.8, 0.1], 2),
            (vec![0.9, 0.9, 0.9], 1),
        ];
        let head = LogisticHead {
            weights: vec![
                vec![0.1, -0.2, 0.3],
                vec![0.0, 0.5, -0.4],
                vec![-0.3, 0.2, 0.1],
            ],
            bias: vec![0.05, -0.1, 0.2],
            iterations: 0,
        };
        let lambda = 0.25;
        let (_, g) = objective(&head, &rows, lambda);
        let h = 1e-6;
        for k in 0..3 {
            for i in 0..3 {
                let (mut a, mut b) = (head.clone(), head.clone());
                a.weights[k][i] += h;
                b.weights[k][i] -= h;
                let d =
                    (objective(&a, &rows, lambda).0 - objective(&b, &rows, lambda).0) / (2.0 * h);
                assert!(
                    (d - g.weights[k][i]).abs() < 1e-7,
                    "w[{k}][{i}]: {d} vs {}",
                    g.weights[k][i]
                );
            }
            let (mut a, mut b) = (head.clone(), head.clone());
            a.bias[k] += h;
            b.bias[k] -= h;
            let d = (objective(&a, &rows, lambda).0 - objective(&b, &rows, lambda).0) / (2.0 * h);
            assert!((d - g.bias[k]).abs() < 1e-7, "b[{k}]: {d} vs {}", g.bias[k]);
        }
    }
}
