//! Training, end to end, against references written in this file:
//!
//! 1. A small MLP `(Linear<4, 5>, Relu, Linear<5, 3>)` with weights from closed formulas, a
//!    fixed batch and softmax cross-entropy: the loss, every parameter gradient and the
//!    parameters after 1, 10 and 100 SGD steps and after 3 Adam steps, against a plain-loop
//!    `f64` implementation (forward, stable softmax cross-entropy, manual backprop, SGD and
//!    PyTorch's Adam). The library runs in `f64` (tight tolerance) and in `f32` (loose).
//! 2. The optimisers' formulas on `f(p) = p0^2 + 3 p1` against values computed by hand.
//! 3. Gradient clipping: `global_norm`, `clip_factor`, and `train::step` applying them.
//! 4. Partial fine-tuning plans: frozen parameters bit-identical, trainable ones following
//!    the reference, memory counts from the shapes.
//! 5. The guarded step: non-finite forward values and gradients are refused, naming the node,
//!    with the parameters and the optimiser state unchanged bit for bit.
//! 6. Losses and layer normalisation against closed forms and central differences.
//! 7. One sample per step, the weight gradients held as outer products: parameters against
//!    the reference for `LinearRelu` and for `Linear` + `Relu` (bit-identical to each
//!    other), the gradients a step consumes (`GradientConsumed`) and a backward computes
//!    again, the exact norm of gradients whose squares underflow, and an outer product that
//!    overflows.
//!
//! Expected values come from formulas, hand arithmetic or plain loops written here, never
//! from the code under test.

// The references are written as plain index loops on purpose: they mirror the textbook
// formulas, not the library's iterator code.
#![allow(clippy::needless_range_loop)]

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use safegrad::nn::loss::{masked_mean, mse};
use safegrad::nn::{
    last_layer_only, Build, Init, LayerNorm, Linear, LinearRelu, Module, Relu, Standardize, Train,
};
use safegrad::optim::{clip_factor, global_norm, Adam, Momentum, Optimizer, Sgd};
use safegrad::train::{step, NonFinite, Phase, StepConfig, StepError};
use safegrad::{Cap, NodeId, Scalar, Tape, TapeError, Tensor, Var};

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// `|got - expected| <= atol + rtol * |expected|` for every lane, with a message naming it.
#[track_caller]
fn assert_close(what: &str, got: &[f64], expected: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths differ");
    for (k, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let diff = (g - e).abs();
        assert!(
            g.is_finite() && diff <= atol + rtol * e.abs(),
            "{what}[{k}]: got {g:e}, expected {e:e} (difference {diff:e})"
        );
    }
}

fn to_f64<T: Scalar>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn bits<T: Scalar>(v: &[T]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits_u64()).collect()
}

/// A tensor from row-major `f64` values, rounded to `T`.
fn tensor_from<T: Scalar, const R: usize, const C: usize>(v: &[f64]) -> Tensor<T, R, C> {
    assert_eq!(v.len(), R * C, "expected {} values", R * C);
    Tensor::from_fn(|r, c| T::from_f64(v[r * C + c]))
}

// ---------------------------------------------------------------------------------------------
// Part 1: the MLP against a plain-loop f64 reference

type Mlp = (Linear<4, 5>, Relu, Linear<5, 3>);
type MlpTape<T> = Tape<T, Cap<16, 512>>;

const BATCH: usize = 6;
const LABELS: [usize; BATCH] = [0, 1, 2, 1, 0, 2];

// Flat parameter layout, in recording order: W1 (4x5), b1 (1x5), W2 (5x3), b2 (1x3).
const W1: usize = 0;
const B1: usize = 20;
const W2: usize = 25;
const B2: usize = 40;
const P: usize = 43;

/// Weights from closed formulas (no RNG).
fn initial_parameters() -> Vec<f64> {
    let mut p = vec![0.0; P];
    for i in 0..4 {
        for j in 0..5 {
            p[W1 + i * 5 + j] = 0.5 * (i as f64 + 2.0 * j as f64 + 1.0).sin();
        }
    }
    for j in 0..5 {
        p[B1 + j] = 0.1 * (3.0 * j as f64).cos();
    }
    for j in 0..5 {
        for c in 0..3 {
            p[W2 + j * 3 + c] = 0.4 * (2.0 * j as f64 - c as f64 + 0.5).cos();
        }
    }
    for c in 0..3 {
        p[B2 + c] = 0.05 * c as f64 - 0.05;
    }
    p
}

fn batch_inputs() -> [[f64; 4]; BATCH] {
    let mut x = [[0.0; 4]; BATCH];
    for b in 0..BATCH {
        for k in 0..4 {
            x[b][k] = (1.3 * b as f64 + 0.7 * k as f64 + 0.2).cos() * (1.0 + 0.25 * k as f64);
        }
    }
    x
}

struct Reference {
    loss: f64,
    grad: Vec<f64>,
    /// The smallest `|pre-activation|` of the hidden layer: how far the batch is from a
    /// ReLU kink (where `f32` and `f64` could disagree on the mask).
    min_abs_preactivation: f64,
}

/// Forward, mean stable softmax cross-entropy and manual backprop, in plain loops.
fn reference(p: &[f64], x: &[[f64; 4]], labels: &[usize]) -> Reference {
    let batch = x.len();
    let mut loss = 0.0;
    let mut grad = vec![0.0; P];
    let mut min_abs_preactivation = f64::INFINITY;
    for b in 0..batch {
        let mut pre = [0.0; 5];
        let mut h = [0.0; 5];
        for j in 0..5 {
            let mut acc = 0.0;
            for k in 0..4 {
                acc += x[b][k] * p[W1 + k * 5 + j];
            }
            pre[j] = acc + p[B1 + j];
            h[j] = if pre[j] > 0.0 { pre[j] } else { 0.0 };
            min_abs_preactivation = min_abs_preactivation.min(pre[j].abs());
        }
        let mut z = [0.0; 3];
        for c in 0..3 {
            let mut acc = 0.0;
            for j in 0..5 {
                acc += h[j] * p[W2 + j * 3 + c];
            }
            z[c] = acc + p[B2 + c];
        }
        let m = z[0].max(z[1]).max(z[2]);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        let t = labels[b];
        loss += s.ln() - (z[t] - m);
        // d loss / d z = (softmax(z) - onehot(t)) / batch
        let mut dz = [0.0; 3];
        for c in 0..3 {
            let onehot = if c == t { 1.0 } else { 0.0 };
            dz[c] = ((z[c] - m).exp() / s - onehot) / batch as f64;
        }
        for c in 0..3 {
            grad[B2 + c] += dz[c];
            for j in 0..5 {
                grad[W2 + j * 3 + c] += h[j] * dz[c];
            }
        }
        for j in 0..5 {
            let mut dh = 0.0;
            for c in 0..3 {
                dh += dz[c] * p[W2 + j * 3 + c];
            }
            if pre[j] <= 0.0 {
                dh = 0.0;
            }
            grad[B1 + j] += dh;
            for k in 0..4 {
                grad[W1 + k * 5 + j] += x[b][k] * dh;
            }
        }
    }
    Reference {
        loss: loss / batch as f64,
        grad,
        min_abs_preactivation,
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|g| g * g).sum::<f64>().sqrt()
}

/// Which of the 43 scalars a plan trains, from the plan's documented meaning.
fn trainable_mask(plan: [Train; 2]) -> Vec<bool> {
    let mut mask = vec![false; P];
    let layers = [(W1, B1, B1 + 5), (W2, B2, B2 + 3)];
    for (&(w_start, b_start, b_end), train) in layers.iter().zip(plan) {
        let (weight, bias) = match train {
            Train::All => (true, true),
            Train::BiasOnly => (false, true),
            Train::Frozen => (false, false),
        };
        for m in &mut mask[w_start..b_start] {
            *m = weight;
        }
        for m in &mut mask[b_start..b_end] {
            *m = bias;
        }
    }
    mask
}

/// `steps` reference SGD steps on the trainable scalars; returns the smallest distance to a
/// ReLU kink seen on the way.
fn reference_sgd(p: &mut [f64], steps: usize, lr: f64, mask: &[bool]) -> f64 {
    let x = batch_inputs();
    let mut min_pre = f64::INFINITY;
    for _ in 0..steps {
        let r = reference(p, &x, &LABELS);
        min_pre = min_pre.min(r.min_abs_preactivation);
        for i in 0..P {
            if mask[i] {
                p[i] -= lr * r.grad[i];
            }
        }
    }
    min_pre
}

/// Reference Adam state: PyTorch's update with bias correction.
struct RefAdam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

/// One reference Adam step (beta1 0.9, beta2 0.999, eps 1e-8) on the trainable scalars,
/// whose state is indexed in order of appearance among them.
fn reference_adam_step(p: &mut [f64], state: &mut RefAdam, lr: f64, mask: &[bool]) {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let r = reference(p, &batch_inputs(), &LABELS);
    state.t += 1;
    let mut slot = 0;
    for i in 0..P {
        if !mask[i] {
            continue;
        }
        let g = r.grad[i];
        state.m[slot] = b1 * state.m[slot] + (1.0 - b1) * g;
        state.v[slot] = b2 * state.v[slot] + (1.0 - b2) * g * g;
        let m_hat = state.m[slot] / (1.0 - b1.powi(state.t));
        let v_hat = state.v[slot] / (1.0 - b2.powi(state.t));
        p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        slot += 1;
    }
}

fn build_mlp<T: Scalar>(plan: &[Train]) -> (MlpTape<T>, Mlp) {
    let mut tape = MlpTape::<T>::new();
    let model = Mlp::build(&mut tape, &mut Init::new(12345).with_plan(plan)).expect("build");
    let p = initial_parameters();
    tape.set_parameter(model.0.weight, &tensor_from(&p[W1..B1]))
        .expect("set W1");
    tape.set_parameter(model.0.bias, &tensor_from(&p[B1..W2]))
        .expect("set b1");
    tape.set_parameter(model.2.weight, &tensor_from(&p[W2..B2]))
        .expect("set W2");
    tape.set_parameter(model.2.bias, &tensor_from(&p[B2..P]))
        .expect("set b2");
    (tape, model)
}

/// Records the batch's forward pass and loss on a cleared tape.
fn record_batch<T: Scalar>(tape: &mut MlpTape<T>, model: &Mlp) -> Var<1, 1> {
    tape.clear_activations();
    let flat: Vec<f64> = batch_inputs().iter().flatten().copied().collect();
    let x = tape
        .input(&tensor_from::<T, BATCH, 4>(&flat))
        .expect("input");
    let z = model.forward(tape, x).expect("forward");
    tape.softmax_cross_entropy(z, &LABELS).expect("loss")
}

#[test]
fn reference_gradient_matches_its_own_finite_differences() {
    // The reference's backprop is checked once against central differences of its forward,
    // so the library is compared with something known to be right.
    let p = initial_parameters();
    let x = batch_inputs();
    let r = reference(&p, &x, &LABELS);
    for i in 0..P {
        let h = 1e-6;
        let (mut up, mut down) = (p.clone(), p.clone());
        up[i] += h;
        down[i] -= h;
        let fd =
            (reference(&up, &x, &LABELS).loss - reference(&down, &x, &LABELS).loss) / (2.0 * h);
        assert!(
            (fd - r.grad[i]).abs() < 1e-8,
            "reference gradient {i}: backprop {:e}, central difference {fd:e}",
            r.grad[i]
        );
    }
    assert!(
        r.min_abs_preactivation > 1e-2,
        "the batch sits near a ReLU kink"
    );
}

#[test]
fn mlp_loss_and_gradients_match_reference_f64() {
    let p = initial_parameters();
    let r = reference(&p, &batch_inputs(), &LABELS);
    let (mut tape, model) = build_mlp::<f64>(&[]);
    assert_eq!(
        tape.parameters(),
        &p[..],
        "the closed-form weights were set"
    );
    let loss = record_batch(&mut tape, &model);
    tape.backward(loss).expect("backward");
    let l = tape.scalar(loss).expect("loss");
    assert_close("loss", &[l], &[r.loss], 1e-14, 0.0);
    assert_close(
        "gradients",
        tape.parameter_grads().expect("gradients"),
        &r.grad,
        1e-12,
        1e-16,
    );
    // The same through the handles.
    let by_handle = [
        tape.grad(model.0.weight).expect("W1").as_slice().to_vec(),
        tape.grad(model.0.bias).expect("b1").as_slice().to_vec(),
        tape.grad(model.2.weight).expect("W2").as_slice().to_vec(),
        tape.grad(model.2.bias).expect("b2").as_slice().to_vec(),
    ]
    .concat();
    assert_close("gradients by handle", &by_handle, &r.grad, 1e-12, 1e-16);
    assert_eq!(tape.trainable_len(), P);
}

#[test]
fn mlp_sgd_1_10_100_steps_match_reference_f64() {
    let lr = 0.2;
    let (mut tape, model) = build_mlp::<f64>(&[]);
    let mut sgd = Sgd::new(lr);
    let config = StepConfig::default();
    let mut expected = initial_parameters();
    let all = vec![true; P];
    let x = batch_inputs();
    let mut done = 0;
    let mut first_loss = None;
    for target in [1, 10, 100] {
        while done < target {
            let r = reference(&expected, &x, &LABELS);
            // Pre-activations cross zero during training (the closest pass is about 2e-5
            // away); both f64 runs must see the same side of every one.
            assert!(r.min_abs_preactivation > 1e-9, "step {done} at a ReLU kink");
            let loss = record_batch(&mut tape, &model);
            let report = step(&mut tape, loss, &mut sgd, &config).expect("step");
            assert_close("loss", &[report.loss], &[r.loss], 1e-12, 0.0);
            assert_close(
                "grad norm",
                &[report.grad_norm],
                &[norm(&r.grad)],
                1e-12,
                0.0,
            );
            assert_eq!(report.clip_factor, 1.0, "no clipping configured");
            first_loss.get_or_insert(r.loss);
            reference_sgd(&mut expected, 1, lr, &all);
            done += 1;
        }
        assert_close(
            &format!("parameters after {target} SGD steps"),
            tape.parameters(),
            &expected,
            1e-12,
            1e-15,
        );
    }
    let last = reference(&expected, &x, &LABELS).loss;
    assert!(
        last < 0.5 * first_loss.unwrap_or(f64::NAN),
        "100 steps of SGD should fit the batch: {first_loss:?} -> {last}"
    );
}

#[test]
fn mlp_adam_3_steps_match_reference_f64() {
    let lr = 0.01;
    let (mut tape, model) = build_mlp::<f64>(&[]);
    let mut adam = Adam::<f64, P>::new(lr);
    let config = StepConfig::default();
    let mut expected = initial_parameters();
    let mut state = RefAdam {
        m: vec![0.0; P],
        v: vec![0.0; P],
        t: 0,
    };
    let all = vec![true; P];
    for k in 1..=3 {
        let loss = record_batch(&mut tape, &model);
        step(&mut tape, loss, &mut adam, &config).expect("step");
        reference_adam_step(&mut expected, &mut state, lr, &all);
        assert_eq!(adam.steps(), k);
        let what = format!("parameters after {k} Adam steps");
        assert_close(&what, tape.parameters(), &expected, 1e-12, 1e-15);
        let (m, v) = adam.moments();
        assert_close("first moments", m, &state.m, 1e-12, 1e-18);
        assert_close("second moments", v, &state.v, 1e-12, 1e-20);
    }
}

#[test]
fn mlp_f32_matches_f64_reference_loosely() {
    let p = initial_parameters();
    let x = batch_inputs();
    // f32 rounds the closed-form weights and inputs first; the reference uses those
    // rounded values, so what is compared is f32 arithmetic against f64 arithmetic.
    let p32: Vec<f64> = p.iter().map(|&v| f64::from(v as f32)).collect();
    let x32 = x.map(|row| row.map(|v| f64::from(v as f32)));
    let r = reference(&p32, &x32, &LABELS);
    let (mut tape, model) = build_mlp::<f32>(&[]);
    assert_eq!(to_f64(tape.parameters()), p32);
    let loss = record_batch(&mut tape, &model);
    tape.backward(loss).expect("backward");
    let l = f64::from(tape.scalar(loss).expect("loss"));
    assert_close("f32 loss", &[l], &[r.loss], 1e-6, 0.0);
    assert_close(
        "f32 gradients",
        &to_f64(tape.parameter_grads().expect("gradients")),
        &r.grad,
        1e-5,
        1e-7,
    );

    let lr = 0.1;
    let mut sgd = Sgd::new(lr as f32);
    let config = StepConfig::default();
    // (The reference steps use the unrounded inputs: a 1e-8 relative difference, far below
    // the tolerance.)
    let mut expected = p32.clone();
    let all = vec![true; P];
    let mut done = 0;
    for target in [1, 10, 100] {
        while done < target {
            let loss = record_batch(&mut tape, &model);
            step(&mut tape, loss, &mut sgd, &config).expect("step");
            let min_pre = reference_sgd(&mut expected, 1, lr, &all);
            assert!(
                min_pre > 1e-4,
                "step {done}: f32 could take another ReLU branch"
            );
            done += 1;
        }
        let what = format!("f32 parameters after {target} SGD steps");
        assert_close(&what, &to_f64(tape.parameters()), &expected, 1e-5, 1e-6);
    }
}

// ---------------------------------------------------------------------------------------------
// Part 2: the optimisers against hand-computed values on f(p) = p0^2 + 3 p1

type QuadTape<T> = Tape<T, Cap<8, 16>>;

/// Two trainable `1 x 1` parameters `p0 = 1`, `p1 = 2`.
fn quad<T: Scalar>() -> (QuadTape<T>, Var<1, 1>, Var<1, 1>) {
    let mut tape = QuadTape::<T>::new();
    let p0 = tape.parameter(&Tensor::new([[T::ONE]])).expect("p0");
    let p1 = tape
        .parameter(&Tensor::new([[T::from_f64(2.0)]]))
        .expect("p1");
    (tape, p0, p1)
}

/// One guarded step on `f(p) = p0^2 + 3 p1`; returns the gradient used and the new values.
fn quad_step<T: Scalar, O: Optimizer<T> + 'static>(
    tape: &mut QuadTape<T>,
    (p0, p1): (Var<1, 1>, Var<1, 1>),
    optimizer: &mut O,
) -> ([f64; 2], [f64; 2]) {
    tape.clear_activations();
    let sq = tape.mul(p0, p0).expect("mul");
    let lin = tape.scale(p1, T::from_f64(3.0)).expect("scale");
    let loss = tape.add(sq, lin).expect("add");
    step(tape, loss, optimizer, &StepConfig::default()).expect("step");
    let g = to_f64(tape.parameter_grads().expect("gradients"));
    let values = [
        tape.scalar(p0).expect("p0").to_f64(),
        tape.scalar(p1).expect("p1").to_f64(),
    ];
    ([g[0], g[1]], values)
}

#[test]
fn sgd_by_hand() {
    // lr = 0.1, p = (1, 2), grad = (2 p0, 3):
    // step 1: g = (2, 3)    -> p = (1 - 0.2, 2 - 0.3)      = (0.8, 1.7)
    // step 2: g = (1.6, 3)  -> p = (0.8 - 0.16, 1.7 - 0.3) = (0.64, 1.4)
    // step 3: g = (1.28, 3) -> p = (0.64 - 0.128, 1.4 - 0.3) = (0.512, 1.1)
    let expected = [
        ([2.0, 3.0], [0.8, 1.7]),
        ([1.6, 3.0], [0.64, 1.4]),
        ([1.28, 3.0], [0.512, 1.1]),
    ];
    let (mut tape, p0, p1) = quad::<f64>();
    let mut sgd = Sgd::new(0.1);
    for (k, (g, p)) in expected.iter().enumerate() {
        let (got_g, got_p) = quad_step(&mut tape, (p0, p1), &mut sgd);
        assert_close(&format!("f64 SGD gradient {k}"), &got_g, g, 1e-15, 0.0);
        assert_close(&format!("f64 SGD step {k}"), &got_p, p, 1e-15, 0.0);
    }
    let (mut tape, p0, p1) = quad::<f32>();
    let mut sgd = Sgd::new(0.1f32);
    for (k, (g, p)) in expected.iter().enumerate() {
        let (got_g, got_p) = quad_step(&mut tape, (p0, p1), &mut sgd);
        assert_close(&format!("f32 SGD gradient {k}"), &got_g, g, 1e-6, 0.0);
        assert_close(&format!("f32 SGD step {k}"), &got_p, p, 1e-6, 0.0);
    }
}

#[test]
fn momentum_by_hand() {
    // PyTorch's form, lr = 0.1, mu = 0.9, p = (1, 2), v = 0:
    // step 1: g = (2, 3);    v = (2, 3);                          p = (0.8, 1.7)
    // step 2: g = (1.6, 3);  v = (0.9*2 + 1.6, 0.9*3 + 3) = (3.4, 5.7);
    //                        p = (0.8 - 0.34, 1.7 - 0.57)       = (0.46, 1.13)
    // step 3: g = (0.92, 3); v = (0.9*3.4 + 0.92, 0.9*5.7 + 3) = (3.98, 8.13);
    //                        p = (0.46 - 0.398, 1.13 - 0.813)   = (0.062, 0.317)
    let expected = [
        ([2.0, 3.0], [2.0, 3.0], [0.8, 1.7]),
        ([1.6, 3.0], [3.4, 5.7], [0.46, 1.13]),
        ([0.92, 3.0], [3.98, 8.13], [0.062, 0.317]),
    ];
    let (mut tape, p0, p1) = quad::<f64>();
    let mut opt = Momentum::<f64, 2>::new(0.1, 0.9);
    for (k, (g, v, p)) in expected.iter().enumerate() {
        let (got_g, got_p) = quad_step(&mut tape, (p0, p1), &mut opt);
        assert_close(&format!("momentum gradient {k}"), &got_g, g, 1e-14, 0.0);
        assert_close(
            &format!("momentum velocity {k}"),
            opt.velocity(),
            v,
            1e-14,
            0.0,
        );
        assert_close(&format!("momentum step {k}"), &got_p, p, 1e-13, 0.0);
    }
    let (mut tape, p0, p1) = quad::<f32>();
    let mut opt = Momentum::<f32, 2>::new(0.1, 0.9);
    for (k, (_, v, p)) in expected.iter().enumerate() {
        let (_, got_p) = quad_step(&mut tape, (p0, p1), &mut opt);
        assert_close(
            &format!("f32 velocity {k}"),
            &to_f64(opt.velocity()),
            v,
            1e-6,
            0.0,
        );
        assert_close(&format!("f32 momentum step {k}"), &got_p, p, 1e-5, 0.0);
    }
}

#[test]
fn adam_by_hand() {
    // lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, p = (1, 2):
    // step 1: g = (2, 3); m = 0.1 g = (0.2, 0.3); v = 0.001 g^2 = (0.004, 0.009);
    //   m_hat = m / 0.1 = (2, 3); v_hat = v / 0.001 = (4, 9);
    //   p0 = 1 - 0.1 * 2 / (2 + 1e-8) = 0.9000000004999999975...
    //   p1 = 2 - 0.1 * 3 / (3 + 1e-8) = 1.9000000003333333322...
    // step 2: g0 = 2 p0 = 1.800000000999999995, g1 = 3;
    //   m0 = 0.9 * 0.2 + 0.1 * g0 = 0.3600000000999999995, m1 = 0.9 * 0.3 + 0.3 = 0.57;
    //   v0 = 0.999 * 0.004 + 0.001 * g0^2 = 0.0072360000035999999830, v1 = 0.017991;
    //   m_hat0 = m0 / 0.19, v_hat0 = v0 / 0.001999 (1 - 0.9^2, 1 - 0.999^2);
    //   p0 = 0.9000000005 - 0.1 * m_hat0 / (sqrt(v_hat0) + 1e-8) = 0.80041222869179214523...
    //   m_hat1 = 0.57 / 0.19 = 3, v_hat1 = 0.017991 / 0.001999 = 9: the same step as before,
    //   p1 = 1.9000000003333333322 - 0.0999999996666666678 = 1.8000000006666666644...
    // (decimal values from exact rational arithmetic, written below rounded to f64.)
    let after = [
        (
            [0.2, 0.3],
            [0.004, 0.009],
            [0.900_000_000_5, 1.900_000_000_333_333_3],
        ),
        (
            [0.360_000_000_1, 0.57],
            [0.007_236_000_003_6, 0.017_991],
            [0.800_412_228_691_792_2, 1.800_000_000_666_666_8],
        ),
    ];
    let (mut tape, p0, p1) = quad::<f64>();
    let mut adam = Adam::<f64, 2>::new(0.1);
    for (k, (m, v, p)) in after.iter().enumerate() {
        let (_, got_p) = quad_step(&mut tape, (p0, p1), &mut adam);
        let (got_m, got_v) = adam.moments();
        assert_close(
            &format!("Adam m after step {}", k + 1),
            got_m,
            m,
            1e-15,
            0.0,
        );
        assert_close(
            &format!("Adam v after step {}", k + 1),
            got_v,
            v,
            1e-14,
            0.0,
        );
        assert_close(
            &format!("Adam p after step {}", k + 1),
            &got_p,
            p,
            4e-15,
            0.0,
        );
        assert_eq!(adam.steps() as usize, k + 1);
    }
    let (mut tape, p0, p1) = quad::<f32>();
    let mut adam = Adam::<f32, 2>::new(0.1);
    for (k, (m, v, p)) in after.iter().enumerate() {
        let (_, got_p) = quad_step(&mut tape, (p0, p1), &mut adam);
        let (got_m, got_v) = adam.moments();
        assert_close(&format!("f32 Adam m {k}"), &to_f64(got_m), m, 1e-6, 0.0);
        // 1 - 0.999 rounds to 0.000999987 in f32: v carries that relative error (1.3e-5).
        assert_close(&format!("f32 Adam v {k}"), &to_f64(got_v), v, 3e-5, 0.0);
        assert_close(&format!("f32 Adam p {k}"), &got_p, p, 1e-6, 0.0);
    }
}

#[test]
fn adam_with_chosen_hyperparameters_by_hand() {
    // beta1 = 0.5, beta2 = 0.75, eps = 0.5, lr = 1, one scalar, gradients 4 then 2:
    // step 1: m = 0.5 * 4 = 2, v = 0.25 * 16 = 4; m_hat = 2 / 0.5 = 4; v_hat = 4 / 0.25 = 16;
    //         p = 10 - 4 / (4 + 0.5) = 10 - 8/9
    // step 2: m = 0.5 * 2 + 0.5 * 2 = 2; v = 0.75 * 4 + 0.25 * 4 = 4;
    //         m_hat = 2 / (1 - 0.25) = 8/3; v_hat = 4 / (1 - 0.5625) = 64/7;
    //         p -= (8/3) / (8/sqrt(7) + 0.5)
    let mut adam = Adam::<f64, 1>::with_betas(1.0, 0.5, 0.75, 0.5);
    let mut p = 10.0;
    adam.begin_step();
    adam.update(0, &mut p, 4.0);
    assert_close("step 1", &[p], &[10.0 - 8.0 / 9.0], 1e-15, 0.0);
    adam.begin_step();
    adam.update(0, &mut p, 2.0);
    let expected = 10.0 - 8.0 / 9.0 - (8.0 / 3.0) / (8.0 / 7f64.sqrt() + 0.5);
    assert_close("step 2", &[p], &[expected], 1e-15, 0.0);
    assert_eq!(adam.moments(), (&[2.0], &[4.0]));
    // An index beyond the state leaves the value unchanged.
    let mut q = 3.0;
    adam.update(1, &mut q, 100.0);
    assert_eq!(q, 3.0);
}

// ---------------------------------------------------------------------------------------------
// Part 3: gradient clipping

#[test]
fn global_norm_examples() {
    assert_eq!(global_norm(&[3.0f32, 4.0]), 5.0);
    assert_eq!(global_norm(&[-3.0f64, 4.0]), 5.0);
    // Squares overflow f32 (1e20^2 = 1e40 > 3.4e38): the scaled form gives 2 * 1e20.
    assert_eq!(global_norm(&[1e20f32; 4]), 2.0 * 1e20f32);
    assert_close(
        "3e30, 4e30",
        &[f64::from(global_norm(&[3e30f32, 4e30]))],
        &[5e30],
        2e-7,
        0.0,
    );
    // f32::MAX alone is its own norm; twice it is beyond f32: inf is the right answer.
    assert_eq!(global_norm(&[0.0f32, f32::MAX, 0.0]), f32::MAX);
    assert_eq!(global_norm(&[f32::MAX, -f32::MAX]), f32::INFINITY);
    // Squares underflow f32 (9e-60 is below the smallest subnormal).
    assert_close(
        "3e-30, 4e-30",
        &[f64::from(global_norm(&[3e-30f32, -4e-30]))],
        &[5e-30],
        2e-7,
        0.0,
    );
    // Subnormals alone.
    let tiny = f32::from_bits(3); // 3 * 2^-149
    let tiny4 = f32::from_bits(4);
    assert_eq!(global_norm(&[tiny, tiny4]), f32::from_bits(5));
    // Zero, empty, negative zero.
    assert_eq!(global_norm(&[0.0f32; 7]), 0.0);
    assert_eq!(global_norm::<f32>(&[]), 0.0);
    assert_eq!(global_norm(&[-0.0f64, 0.0]), 0.0);
    // Non-finite: inf for an infinite gradient, nan for a nan anywhere.
    assert_eq!(global_norm(&[1.0f32, f32::NEG_INFINITY]), f32::INFINITY);
    assert!(global_norm(&[f32::INFINITY, f32::NAN, 1.0]).is_nan());
    assert!(global_norm(&[f64::NAN, f64::INFINITY]).is_nan());
}

#[test]
fn clip_factor_examples() {
    // PyTorch's clip_grad_norm_: min(1, max_norm / (norm + 1e-6)).
    assert_eq!(clip_factor(10.0f64, 1.0), 1.0 / (10.0 + 1e-6));
    assert_eq!(clip_factor(2.0f64, 0.5), 0.5 / (2.0 + 1e-6));
    assert_eq!(clip_factor(0.5f64, 1.0), 1.0);
    assert_eq!(clip_factor(0.0f64, 1.0), 1.0);
    // At norm == max_norm the guard makes the factor just below 1, as in PyTorch.
    assert_eq!(clip_factor(1.0f64, 1.0), 1.0 / (1.0 + 1e-6));
    assert_eq!(clip_factor(f64::INFINITY, 1.0), 0.0);
    assert_eq!(clip_factor(1e20f32, 1.0), 1.0 / (1e20f32 + 1e-6));
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn f32_spread() -> impl Strategy<Value = f32> {
    (1.0f64..10.0, -40i32..36, any::<bool>()).prop_map(|(m, e, negative)| {
        let v = (m * 10f64.powi(e)) as f32;
        if negative {
            -v
        } else {
            v
        }
    })
}

proptest! {
    #![proptest_config(config(512))]

    // Against sqrt(sum(g^2)) in f64, where no square of an f32 overflows or underflows.
    #[test]
    fn global_norm_matches_f64_reference(g in vec(f32_spread(), 0..16)) {
        let expected = g.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        let got = f64::from(global_norm(&g));
        prop_assert!(
            (got - expected).abs() <= 2e-6 * expected,
            "global_norm({:?}) = {:e}, expected {:e}", g, got, expected
        );
    }
}

#[test]
fn clipped_step_scales_the_update() {
    let lr = 0.2;
    let p = initial_parameters();
    let r = reference(&p, &batch_inputs(), &LABELS);
    let n = norm(&r.grad);
    for max_norm in [0.1 * n, 0.5 * n] {
        let (mut tape, model) = build_mlp::<f64>(&[]);
        let loss = record_batch(&mut tape, &model);
        let config = StepConfig {
            clip_norm: Some(max_norm),
            ..StepConfig::default()
        };
        let report = step(&mut tape, loss, &mut Sgd::new(lr), &config).expect("step");
        let factor = max_norm / (n + 1e-6);
        assert_close("grad norm", &[report.grad_norm], &[n], 1e-13, 0.0);
        assert_close("clip factor", &[report.clip_factor], &[factor], 1e-13, 0.0);
        let expected: Vec<f64> = p
            .iter()
            .zip(&r.grad)
            .map(|(&w, &g)| w - lr * g * factor)
            .collect();
        assert_close("clipped update", tape.parameters(), &expected, 1e-13, 1e-16);
        // The update's norm is max_norm * lr (up to the 1e-6 guard).
        let moved: Vec<f64> = tape
            .parameters()
            .iter()
            .zip(&p)
            .map(|(a, b)| a - b)
            .collect();
        assert_close("update norm", &[norm(&moved)], &[lr * max_norm], 1e-5, 0.0);
    }
    // A bound above the norm changes nothing: factor exactly 1, a plain SGD step.
    let (mut tape, model) = build_mlp::<f64>(&[]);
    let loss = record_batch(&mut tape, &model);
    let config = StepConfig {
        clip_norm: Some(2.0 * n),
        ..StepConfig::default()
    };
    let report = step(&mut tape, loss, &mut Sgd::new(lr), &config).expect("step");
    assert_eq!(report.clip_factor, 1.0);
    let expected: Vec<f64> = p.iter().zip(&r.grad).map(|(&w, &g)| w - lr * g).collect();
    assert_close(
        "unclipped update",
        tape.parameters(),
        &expected,
        1e-13,
        1e-16,
    );
}

// ---------------------------------------------------------------------------------------------
// Part 4: partial fine-tuning

/// `(trainable scalars, gradient slots in use)` after recording a batch of `batch` rows,
/// from the shapes: a node carries a gradient when a trainable parameter is upstream of it.
fn expected_counts(plan: [Train; 2], batch: usize) -> (usize, usize) {
    let trains = |t: Train| match t {
        Train::All => (true, true),
        Train::BiasOnly => (false, true),
        Train::Frozen => (false, false),
    };
    let ((w1, b1), (w2, b2)) = (trains(plan[0]), trains(plan[1]));
    let trainable =
        usize::from(w1) * 20 + usize::from(b1) * 5 + usize::from(w2) * 15 + usize::from(b2) * 3;
    // x (data) -> linear (W1, b1) -> relu -> linear (W2, b2) -> loss
    let linear1 = w1 || b1;
    let relu = linear1;
    let linear2 = relu || w2 || b2;
    let loss = linear2;
    let activations = usize::from(linear1) * batch * 5
        + usize::from(relu) * batch * 5
        + usize::from(linear2) * batch * 3
        + usize::from(loss);
    (trainable, trainable + activations)
}

#[test]
fn partial_fine_tuning_plans() {
    assert_eq!(last_layer_only::<2>(), [Train::Frozen, Train::All]);
    let plans = [
        [Train::All, Train::All],
        last_layer_only::<2>(),
        [Train::BiasOnly, Train::BiasOnly],
        [Train::All, Train::Frozen],
        [Train::BiasOnly, Train::All],
        [Train::Frozen, Train::BiasOnly],
    ];
    let lr = 0.2;
    for plan in plans {
        let mask = trainable_mask(plan);
        let (mut tape, model) = build_mlp::<f64>(&plan);
        let initial = tape.parameters().to_vec();
        let (trainable, grads) = expected_counts(plan, BATCH);
        assert_eq!(
            tape.trainable_len(),
            trainable,
            "{plan:?}: trainable scalars"
        );
        assert_eq!(tape.trainable_len(), mask.iter().filter(|&&m| m).count());

        // The first gradient: the reference's, restricted to the trainable scalars.
        let loss = record_batch(&mut tape, &model);
        assert_eq!(tape.gradients_used(), grads, "{plan:?}: gradient slots");
        tape.backward(loss).expect("backward");
        let r = reference(&initial, &batch_inputs(), &LABELS);
        let trained: Vec<f64> = r
            .grad
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| m)
            .map(|(&g, _)| g)
            .collect();
        assert_close(
            &format!("{plan:?}: gradients"),
            tape.parameter_grads().expect("gradients"),
            &trained,
            1e-12,
            1e-16,
        );

        let mut sgd = Sgd::new(lr);
        for _ in 0..50 {
            let loss = record_batch(&mut tape, &model);
            step(&mut tape, loss, &mut sgd, &StepConfig::default()).expect("step");
            assert_eq!(tape.gradients_used(), grads, "{plan:?}: memory is reused");
        }
        let mut expected = initial.clone();
        reference_sgd(&mut expected, 50, lr, &mask);
        assert_close(
            &format!("{plan:?}: after 50 steps"),
            tape.parameters(),
            &expected,
            1e-12,
            1e-15,
        );
        for (i, (&now, &before)) in tape.parameters().iter().zip(&initial).enumerate() {
            if !mask[i] {
                assert_eq!(
                    now.to_bits(),
                    before.to_bits(),
                    "{plan:?}: frozen scalar {i} moved"
                );
            }
        }
        // Every trainable tensor moved.
        for (start, end) in [(W1, B1), (B1, W2), (W2, B2), (B2, P)] {
            if mask[start] {
                assert!(
                    (start..end).any(|i| tape.parameters()[i] != initial[i]),
                    "{plan:?}: trainable tensor at {start} did not move"
                );
            }
        }
        // Frozen tensors carry no gradient.
        let handles = [
            (model.0.weight.node(), plan[0] == Train::All),
            (model.0.bias.node(), plan[0] != Train::Frozen),
            (model.2.weight.node(), plan[1] == Train::All),
            (model.2.bias.node(), plan[1] != Train::Frozen),
        ];
        for (node, trained) in handles {
            let n = tape.node(node).expect("node");
            assert_eq!(n.requires_grad(), trained, "{plan:?}: node {node} gradient");
        }
        if plan[0] != Train::All {
            assert_eq!(
                tape.grad(model.0.weight),
                Err(TapeError::NoGradient {
                    node: model.0.weight.node().0
                })
            );
        }
    }
}

#[test]
fn bias_only_adam_state_is_indexed_over_trainable_scalars() {
    // b1 (5) and b2 (3) train: an Adam of exactly 8 scalars is enough, 7 is refused.
    let plan = [Train::BiasOnly, Train::BiasOnly];
    let mask = trainable_mask(plan);
    let (mut tape, model) = build_mlp::<f64>(&plan);
    let before = bits(tape.parameters());
    let loss = record_batch(&mut tape, &model);
    let mut small = Adam::<f64, 7>::new(0.01);
    assert_eq!(
        step(&mut tape, loss, &mut small, &StepConfig::default()),
        Err(StepError::OptimizerCapacity {
            capacity: 7,
            needed: 8
        })
    );
    assert_eq!(bits(tape.parameters()), before);
    assert_eq!(small.steps(), 0);

    let lr = 0.01;
    let mut adam = Adam::<f64, 8>::new(lr);
    let mut expected = initial_parameters();
    let mut state = RefAdam {
        m: vec![0.0; 8],
        v: vec![0.0; 8],
        t: 0,
    };
    for _ in 0..3 {
        let loss = record_batch(&mut tape, &model);
        step(&mut tape, loss, &mut adam, &StepConfig::default()).expect("step");
        reference_adam_step(&mut expected, &mut state, lr, &mask);
    }
    assert_close("bias-only Adam", tape.parameters(), &expected, 1e-12, 1e-15);
    assert_close("bias-only Adam m", adam.moments().0, &state.m, 1e-12, 1e-18);
    assert_close("bias-only Adam v", adam.moments().1, &state.v, 1e-12, 1e-20);
}

#[test]
fn standardize_is_frozen_and_takes_no_plan_entry() {
    // (Standardize<4>, MLP): the plan's entries go to the two Linear layers only.
    type Standardized = (Standardize<4>, Linear<4, 5>, Relu, Linear<5, 3>);
    for (plan, trainable) in [
        (last_layer_only::<2>(), 15 + 3),
        ([Train::BiasOnly, Train::BiasOnly], 5 + 3),
        ([Train::All, Train::All], P),
    ] {
        let mut tape = MlpTape::<f64>::new();
        let model =
            Standardized::build(&mut tape, &mut Init::new(1).with_plan(&plan)).expect("build");
        assert_eq!(tape.parameters().len(), 4 + 4 + P, "{plan:?}");
        assert_eq!(tape.trainable_len(), trainable, "{plan:?}");
        for node in [model.0.shift.node(), model.0.scale.node()] {
            assert!(!tape.node(node).expect("node").requires_grad(), "{plan:?}");
        }
        // (x - mean) / std per feature; a spread below min_std only centres.
        let (mean, std) = ([1.0, -2.0, 0.5, 3.0], [2.0, 0.5, 1e-9, 4.0]);
        model
            .0
            .set_statistics(&mut tape, &Tensor::new([mean]), &Tensor::new([std]), 1e-6)
            .expect("statistics");
        let x = [[3.0, -1.0, 0.75, -5.0], [1.0, -2.0, 0.5, 3.0]];
        let xv = tape.input(&Tensor::new(x)).expect("x");
        let y = model.0.forward(&mut tape, xv).expect("forward");
        let expected: Vec<f64> = x
            .iter()
            .flat_map(|row| {
                (0..4).map(move |k| {
                    let scale = if std[k] > 1e-6 { 1.0 / std[k] } else { 1.0 };
                    (row[k] - mean[k]) * scale
                })
            })
            .collect();
        assert_close(
            "standardized",
            tape.value(y).expect("y").as_slice(),
            &expected,
            1e-15,
            0.0,
        );
    }
}

#[test]
fn nothing_to_train_is_refused() {
    let plan = [Train::Frozen, Train::Frozen];
    let (mut tape, model) = build_mlp::<f64>(&plan);
    let before = bits(tape.parameters());
    let loss = record_batch(&mut tape, &model);
    assert_eq!(tape.trainable_len(), 0);
    assert_eq!(tape.gradients_used(), expected_counts(plan, BATCH).1);
    assert_eq!(tape.gradients_used(), 0);
    assert_eq!(
        step(&mut tape, loss, &mut Sgd::new(0.1), &StepConfig::default()),
        Err(StepError::Tape(TapeError::NoGradient {
            node: loss.node().0
        }))
    );
    assert_eq!(bits(tape.parameters()), before);
}

// ---------------------------------------------------------------------------------------------
// Part 5: the guarded step

struct Recorded {
    x: Var<1, 4>,
    matmul: Var<1, 5>,
    loss: Var<1, 1>,
}

/// Records one sample through the MLP, by hand, keeping the handles of interest.
fn record_one(tape: &mut MlpTape<f32>, model: &Mlp, x: [f32; 4], label: usize) -> Recorded {
    tape.clear_activations();
    let xv = tape.input(&Tensor::new([x])).expect("input");
    let matmul = tape.matmul(xv, model.0.weight).expect("matmul");
    let h = tape.add_row(matmul, model.0.bias).expect("add_row");
    let h = tape.relu(h).expect("relu");
    let z = model.2.forward(tape, h).expect("head");
    let loss = tape.softmax_cross_entropy(z, &[label]).expect("loss");
    Recorded {
        x: xv,
        matmul,
        loss,
    }
}

/// Everything a refused step must leave alone.
#[derive(Debug, PartialEq)]
struct Snapshot {
    parameters: Vec<u64>,
    m: Vec<u64>,
    v: Vec<u64>,
    steps: u32,
}

fn snapshot<const A: usize>(tape: &MlpTape<f32>, adam: &Adam<f32, A>) -> Snapshot {
    let (m, v) = adam.moments();
    Snapshot {
        parameters: bits(tape.parameters()),
        m: bits(m),
        v: bits(v),
        steps: adam.steps(),
    }
}

const GOOD: [([f32; 4], usize); 3] = [
    ([0.5, -0.2, 0.1, 0.3], 0),
    ([-1.0, 0.4, 0.8, -0.3], 2),
    ([0.2, 0.9, -0.6, 1.1], 1),
];

#[test]
fn non_finite_forward_is_refused_and_changes_nothing() {
    let (mut tape, model) = build_mlp::<f32>(&[]);
    let mut adam = Adam::<f32, P>::new(0.01);
    let config = StepConfig::default();
    // A twin that takes only the good steps.
    let (mut twin, twin_model) = build_mlp::<f32>(&[]);
    let mut twin_adam = Adam::<f32, P>::new(0.01);
    for &(x, label) in &GOOD[..2] {
        let rec = record_one(&mut tape, &model, x, label);
        step(&mut tape, rec.loss, &mut adam, &config).expect("good step");
        let rec = record_one(&mut twin, &twin_model, x, label);
        step(&mut twin, rec.loss, &mut twin_adam, &config).expect("twin step");
    }
    let before = snapshot(&tape, &adam);
    assert!(before.m.iter().any(|&m| m != 0), "the moments are in use");

    // A nan in a sample: the input node produced it.
    let rec = record_one(&mut tape, &model, [0.5, f32::NAN, 0.1, 0.3], 0);
    let err = step(&mut tape, rec.loss, &mut adam, &config);
    assert_eq!(
        err,
        Err(StepError::NonFinite(NonFinite {
            node: rec.x.node(),
            op: "input",
            phase: Phase::Forward
        }))
    );
    assert_eq!(snapshot(&tape, &adam), before, "nan sample");

    // An infinity in a sample.
    let rec = record_one(&mut tape, &model, [f32::NEG_INFINITY, 0.0, 0.0, 0.0], 1);
    assert_eq!(
        step(&mut tape, rec.loss, &mut adam, &config),
        Err(StepError::NonFinite(NonFinite {
            node: rec.x.node(),
            op: "input",
            phase: Phase::Forward
        }))
    );
    assert_eq!(snapshot(&tape, &adam), before, "inf sample");

    // A finite sample whose first matrix product overflows: x_k = MAX * sign(W1[k][0]),
    // so hidden unit 0 sums |W1[k][0]| * MAX > MAX. The matmul produced the infinity.
    let w1 = tape.value(model.0.weight).expect("W1");
    let column: Vec<f32> = (0..4).map(|k| w1.get(k, 0).unwrap_or(f32::NAN)).collect();
    let total: f64 = column.iter().map(|&w| f64::from(w).abs()).sum();
    assert!(
        total > 1.0,
        "column 0 of W1 must sum above 1 in magnitude ({total})"
    );
    let x = [0, 1, 2, 3].map(|k| {
        if column[k] >= 0.0 {
            f32::MAX
        } else {
            -f32::MAX
        }
    });
    let rec = record_one(&mut tape, &model, x, 2);
    assert!(tape.value(rec.x).expect("x").is_finite());
    assert_eq!(
        step(&mut tape, rec.loss, &mut adam, &config),
        Err(StepError::NonFinite(NonFinite {
            node: rec.matmul.node(),
            op: "matmul",
            phase: Phase::Forward
        }))
    );
    assert_eq!(snapshot(&tape, &adam), before, "matmul overflow");
    // The error says so.
    let message = StepError::NonFinite(NonFinite {
        node: rec.matmul.node(),
        op: "matmul",
        phase: Phase::Forward,
    })
    .to_string();
    assert!(
        message.contains("matmul") && message.contains("value"),
        "{message}"
    );

    // After the refusals, a good step gives exactly what the twin gets.
    let (x, label) = GOOD[2];
    let rec = record_one(&mut tape, &model, x, label);
    step(&mut tape, rec.loss, &mut adam, &config).expect("good step");
    let rec = record_one(&mut twin, &twin_model, x, label);
    step(&mut twin, rec.loss, &mut twin_adam, &config).expect("twin step");
    assert_eq!(snapshot(&tape, &adam), snapshot(&twin, &twin_adam));
}

#[test]
fn overflowing_gradient_is_refused_and_changes_nothing() {
    // W1 = 1e-3 everywhere, b1 = 0, W2 = +10 in column 0 and -10 elsewhere, b2 = 0.
    // For x = (1e38, 0, 0, 0), label 1:
    //   h_j = 1e38 * 1e-3 = 1e35 (relu passes), z = (5e36, -5e36, -5e36): finite,
    //   loss = ln(1 + 2 e^-1e37) - (z_1 - z_0) = 1e37: finite,
    //   dz = softmax - onehot = (1, -1, 0), dh_j = 10 * 1 + (-10) * (-1) = 20,
    //   dW1[0][j] = x_0 * dh_j = 2e39 > f32::MAX: the gradient of W1 overflows.
    let (mut tape, model) = build_mlp::<f32>(&[]);
    tape.set_parameter(model.0.weight, &Tensor::full(1e-3))
        .expect("W1");
    tape.set_parameter(model.0.bias, &Tensor::zeros())
        .expect("b1");
    let w2 = Tensor::<f32, 5, 3>::from_fn(|_, c| if c == 0 { 10.0 } else { -10.0 });
    tape.set_parameter(model.2.weight, &w2).expect("W2");
    tape.set_parameter(model.2.bias, &Tensor::zeros())
        .expect("b2");
    let mut adam = Adam::<f32, P>::new(0.01);
    let config = StepConfig::default();
    let rec = record_one(&mut tape, &model, GOOD[0].0, GOOD[0].1);
    step(&mut tape, rec.loss, &mut adam, &config).expect("good step");
    let before = snapshot(&tape, &adam);

    // Put the weights back to the exact values of the derivation (the good step moved them
    // by about lr); the snapshot is taken after that, since set_parameter is not a step.
    tape.set_parameter(model.0.weight, &Tensor::full(1e-3))
        .expect("W1");
    tape.set_parameter(model.0.bias, &Tensor::zeros())
        .expect("b1");
    tape.set_parameter(model.2.weight, &w2).expect("W2");
    tape.set_parameter(model.2.bias, &Tensor::zeros())
        .expect("b2");
    let before = Snapshot {
        parameters: bits(tape.parameters()),
        ..before
    };

    let rec = record_one(&mut tape, &model, [1e38, 0.0, 0.0, 0.0], 1);
    let loss = tape.scalar(rec.loss).expect("loss");
    assert!(loss.is_finite(), "the forward is finite: loss {loss}");
    assert_close("loss", &[f64::from(loss)], &[1e37], 1e-5, 0.0);
    assert_eq!(
        step(&mut tape, rec.loss, &mut adam, &config),
        Err(StepError::NonFinite(NonFinite {
            node: model.0.weight.node(),
            op: "parameter",
            phase: Phase::Backward
        }))
    );
    assert_eq!(snapshot(&tape, &adam), before, "gradient overflow");
}

/// `p = (1, 1)` trainable, `loss = sum(p * (3e38, -3e38)) = 0`: a finite loss and finite
/// gradients `(3e38, -3e38)` whose Euclidean norm, `4.24e38`, is beyond `f32::MAX`.
fn overflowing_norm_tape() -> (Tape<f32, Cap<8, 16>>, Var<1, 1>) {
    let mut tape = Tape::<f32, Cap<8, 16>>::new();
    let p = tape.parameter(&Tensor::new([[1.0, 1.0]])).expect("p");
    let c = tape.constant(&Tensor::new([[3e38, -3e38]])).expect("c");
    let y = tape.mul(p, c).expect("mul");
    let loss = tape.sum(y).expect("sum");
    (tape, loss)
}

#[test]
fn overflowing_norm_of_finite_gradients_changes_nothing() {
    // Whatever the step decides about a norm beyond f32 (refuse, or clip), it must not
    // write a non-finite parameter or touch the state on refusal.
    let (mut tape, loss) = overflowing_norm_tape();
    assert_eq!(tape.scalar(loss), Ok(0.0));
    let mut adam = Adam::<f32, 2>::new(0.1);
    let config = StepConfig {
        clip_norm: Some(1.0),
        ..StepConfig::default()
    };
    let result = step(&mut tape, loss, &mut adam, &config);
    assert_eq!(
        tape.parameter_grads().expect("gradients"),
        &[3e38, -3e38],
        "finite gradients"
    );
    match result {
        Ok(_) => assert!(tape.parameters().iter().all(|p| p.is_finite())),
        Err(_) => {
            assert_eq!(tape.parameters(), &[1.0, 1.0]);
            assert_eq!(adam.steps(), 0);
        }
    }
}

#[test]
fn overflowing_norm_is_not_blamed_on_a_finite_gradient() {
    // StepError::NonFinite is documented as "the loss or a gradient is nan or infinite", and
    // NonFinite's node as "the first node in the reverse sweep whose gradient is
    // non-finite". Here no value and no gradient is non-finite; only global_norm's result
    // (correctly) exceeds f32::MAX. A NonFinite error must name a node whose gradient is
    // really non-finite.
    let (mut tape, loss) = overflowing_norm_tape();
    let config = StepConfig {
        clip_norm: Some(1.0),
        ..StepConfig::default()
    };
    let result = step(&mut tape, loss, &mut Sgd::new(0.1f32), &config);
    assert!(tape
        .parameter_grads()
        .expect("gradients")
        .iter()
        .all(|g| g.is_finite()));
    // Every gradient is finite, so the step goes through, clipped to norm 1 in scaled form.
    let report = result.expect("finite gradients are trained on");
    assert_eq!(report.grad_norm, f32::INFINITY);
    assert!(tape.parameters().iter().all(|p| p.is_finite()));
    let expected = 1.0 / (3e38f64 * 2f64.sqrt());
    assert!((f64::from(report.clip_factor) - expected).abs() / expected < 1e-5);
    if let Err(StepError::NonFinite(nf)) = result {
        let node = tape.node(nf.node).expect("named node");
        let grads = tape.grads_of(node);
        assert!(
            grads.iter().any(|g| !g.is_finite()),
            "{nf:?} names node {} ({}) whose gradient {grads:?} is finite, as are all others",
            nf.node,
            nf.op
        );
    }
}

#[test]
fn too_small_optimiser_is_refused() {
    let (mut tape, model) = build_mlp::<f32>(&[]);
    let before = bits(tape.parameters());
    let rec = record_one(&mut tape, &model, GOOD[0].0, GOOD[0].1);
    let mut adam = Adam::<f32, 42>::new(0.01);
    assert_eq!(
        step(&mut tape, rec.loss, &mut adam, &StepConfig::default()),
        Err(StepError::OptimizerCapacity {
            capacity: 42,
            needed: P
        })
    );
    assert_eq!(bits(tape.parameters()), before);
    assert_eq!(adam.steps(), 0);
    assert!(adam
        .moments()
        .0
        .iter()
        .chain(adam.moments().1)
        .all(|&v| v == 0.0));
    let mut momentum = Momentum::<f32, 10>::new(0.1, 0.9);
    assert_eq!(
        step(&mut tape, rec.loss, &mut momentum, &StepConfig::default()),
        Err(StepError::OptimizerCapacity {
            capacity: 10,
            needed: P
        })
    );
    assert_eq!(bits(tape.parameters()), before);
    // Exactly enough state is accepted.
    let mut adam = Adam::<f32, P>::new(0.01);
    step(&mut tape, rec.loss, &mut adam, &StepConfig::default()).expect("exact capacity");
    assert_eq!(adam.steps(), 1);
}

// ---------------------------------------------------------------------------------------------
// Part 6: losses and layer normalisation

type LossTape = Tape<f64, Cap<32, 512>>;

#[test]
fn mse_value_and_gradients() {
    // d = p - t = (0.5, -1, 2, 0, -0.25, 1.5): loss = sum(d^2) / 6 = 7.5625 / 6,
    // d loss / d p = 2 d / 6 = d / 3, d loss / d t = -d / 3.
    let p = [[1.5, 0.0, 2.0], [-1.0, 0.75, 3.5]];
    let t = [[1.0, 1.0, 0.0], [-1.0, 1.0, 2.0]];
    let d = [0.5, -1.0, 2.0, 0.0, -0.25, 1.5];
    let mut tape = LossTape::new();
    let pv = tape.variable(&Tensor::new(p)).expect("p");
    let tv = tape.variable(&Tensor::new(t)).expect("t");
    let loss = mse(&mut tape, pv, tv).expect("mse");
    tape.backward(loss).expect("backward");
    assert_close(
        "mse",
        &[tape.scalar(loss).expect("loss")],
        &[7.5625 / 6.0],
        1e-15,
        0.0,
    );
    let gp: Vec<f64> = d.iter().map(|v| v / 3.0).collect();
    let gt: Vec<f64> = d.iter().map(|v| -v / 3.0).collect();
    assert_close(
        "d mse / d p",
        tape.grad(pv).expect("p").as_slice(),
        &gp,
        1e-15,
        0.0,
    );
    assert_close(
        "d mse / d t",
        tape.grad(tv).expect("t").as_slice(),
        &gt,
        1e-15,
        0.0,
    );
}

#[test]
fn masked_mean_value_and_gradients() {
    // L = sum(m x) / S, S = sum(m): dL/dx_i = m_i / S, dL/dm_i = x_i / S - L / S.
    let x = [1.0, -2.0, 4.0, 0.5, 3.0, -1.5];
    let m = [1.0, 0.0, 0.5, 2.0, 0.0, 1.0];
    let s: f64 = m.iter().sum();
    let l: f64 = x.iter().zip(&m).map(|(a, b)| a * b).sum::<f64>() / s;
    let mut tape = LossTape::new();
    let xv = tape.variable(&tensor_from::<f64, 2, 3>(&x)).expect("x");
    let mv = tape.variable(&tensor_from::<f64, 2, 3>(&m)).expect("m");
    let loss = masked_mean(&mut tape, xv, mv).expect("masked_mean");
    tape.backward(loss).expect("backward");
    assert_close(
        "masked mean",
        &[tape.scalar(loss).expect("loss")],
        &[l],
        1e-15,
        0.0,
    );
    let gx: Vec<f64> = m.iter().map(|w| w / s).collect();
    let gm: Vec<f64> = x.iter().map(|v| v / s - l / s).collect();
    assert_close(
        "dL/dx",
        tape.grad(xv).expect("x").as_slice(),
        &gx,
        1e-15,
        0.0,
    );
    assert_close(
        "dL/dm",
        tape.grad(mv).expect("m").as_slice(),
        &gm,
        1e-14,
        1e-16,
    );
}

#[test]
fn masked_mean_ignores_non_finite_masked_lanes() {
    // Masked-out lanes hold inf and nan; the mean is over the others: (2 * 1 + 1 * 3) / 3.
    let mut tape = LossTape::new();
    let x = tape
        .variable(&Tensor::new([[2.0, f64::INFINITY, 3.0, f64::NAN]]))
        .expect("x");
    let m = tape
        .constant(&Tensor::new([[2.0, 0.0, 1.0, 0.0]]))
        .expect("m");
    let loss = masked_mean(&mut tape, x, m).expect("masked_mean");
    tape.backward(loss).expect("backward");
    assert_close(
        "loss",
        &[tape.scalar(loss).expect("loss")],
        &[7.0 / 3.0],
        1e-15,
        0.0,
    );
    let g = tape.grad(x).expect("x");
    assert_close(
        "dL/dx",
        g.as_slice(),
        &[2.0 / 3.0, 0.0, 1.0 / 3.0, 0.0],
        1e-15,
        0.0,
    );
    assert_eq!(g.get(0, 1), Some(0.0));
    assert_eq!(g.get(0, 3), Some(0.0));
}

#[test]
fn masked_mean_with_all_zero_mask_is_exactly_zero() {
    for x in [
        [[f64::INFINITY, f64::NAN], [f64::NEG_INFINITY, 1.0]],
        [[f64::NAN, f64::NAN], [f64::NAN, f64::NAN]],
        [[1.0, 2.0], [3.0, 4.0]],
    ] {
        let mut tape = LossTape::new();
        let xv = tape.variable(&Tensor::new(x)).expect("x");
        // The mask as a variable too: its gradient must be exactly zero as well.
        let mv = tape.variable(&Tensor::<f64, 2, 2>::zeros()).expect("m");
        let loss = masked_mean(&mut tape, xv, mv).expect("masked_mean");
        tape.backward(loss).expect("backward");
        let l = tape.scalar(loss).expect("loss");
        assert_eq!(l.to_bits(), 0.0f64.to_bits(), "loss {l} for {x:?}");
        for (what, v) in [("x", xv), ("mask", mv)] {
            let g = tape.grad(v).expect("grad");
            assert!(
                g.as_slice().iter().all(|&v| v == 0.0),
                "d loss / d {what} = {g:?} for {x:?}"
            );
        }
    }
    // The same in f32 with a constant mask.
    let mut tape = Tape::<f32, Cap<16, 64>>::new();
    let xv = tape
        .variable(&Tensor::new([[f32::INFINITY, f32::NAN, -3.0]]))
        .expect("x");
    let mv = tape.constant(&Tensor::<f32, 1, 3>::zeros()).expect("m");
    let loss = masked_mean(&mut tape, xv, mv).expect("masked_mean");
    tape.backward(loss).expect("backward");
    assert_eq!(tape.scalar(loss), Ok(0.0));
    assert_eq!(tape.grad(xv), Ok(Tensor::zeros()));
}

const LN_EPS: f64 = 1e-5;

/// Layer normalisation of each row of `cols` values, two passes: mean, then the mean of
/// squared deviations.
fn layer_norm_ref(x: &[f64], cols: usize, eps: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let n = cols as f64;
        let mut mean = 0.0;
        for &v in row {
            mean += v;
        }
        mean /= n;
        let mut var = 0.0;
        for &v in row {
            var += (v - mean) * (v - mean);
        }
        var /= n;
        for &v in row {
            out.push((v - mean) / (var + eps).sqrt());
        }
    }
    out
}

#[test]
fn layer_norm_forward_matches_two_pass_reference() {
    let x = [0.3, -1.2, 2.5, 0.0, 1.1, -4.0, 7.5, 0.25, -0.5, 3.0];
    let mut tape = LossTape::new();
    let xv = tape.input(&tensor_from::<f64, 2, 5>(&x)).expect("x");
    let y = tape.layer_norm(xv).expect("layer_norm");
    let expected = layer_norm_ref(&x, 5, LN_EPS);
    assert_close(
        "layer_norm",
        tape.value(y).expect("y").as_slice(),
        &expected,
        1e-14,
        1e-15,
    );
    let y = tape.layer_norm_eps(xv, 0.5).expect("layer_norm_eps");
    let expected = layer_norm_ref(&x, 5, 0.5);
    assert_close(
        "layer_norm eps",
        tape.value(y).expect("y").as_slice(),
        &expected,
        1e-14,
        1e-15,
    );

    // In f32, rows with a large mean and a small spread: a one-pass E[x^2] - E[x]^2 would
    // lose every digit of the variance (x^2 ~ 1e6, ulp 0.06, variance ~ 0.03).
    let x32: [f32; 5] = [1000.1, 1000.2, 999.7, 1000.05, 999.95];
    let mut tape = Tape::<f32, Cap<8, 64>>::new();
    let xv = tape.input(&Tensor::new([x32])).expect("x");
    let y = tape.layer_norm(xv).expect("layer_norm");
    let expected = layer_norm_ref(&to_f64(&x32), 5, LN_EPS);
    assert_close(
        "f32 layer_norm at offset 1000",
        &to_f64(tape.value(y).expect("y").as_slice()),
        &expected,
        1e-4,
        1e-5,
    );
}

#[test]
fn layer_norm_of_a_constant_row_is_zero_with_finite_gradients() {
    // Row 0 constant: y = 0, and d/dx = inv_std * (w - mean(w)) with inv_std = 1/sqrt(eps).
    let x = [2.0, 2.0, 2.0, 2.0, 2.0, -1.0, 0.0, 1.0, 2.0, 3.0];
    let w = [0.5, -1.0, 2.0, 0.0, 1.5, 1.0, 1.0, -1.0, 0.5, 0.25];
    let mut tape = LossTape::new();
    let xv = tape.variable(&tensor_from::<f64, 2, 5>(&x)).expect("x");
    let y = tape.layer_norm(xv).expect("layer_norm");
    tape.backward_with_seed(y, &tensor_from(&w))
        .expect("backward");
    let yv = tape.value(y).expect("y");
    assert!(yv.as_slice()[..5].iter().all(|&v| v == 0.0), "{yv:?}");
    let g = tape.grad(xv).expect("grad");
    assert!(g.as_slice().iter().all(|v| v.is_finite()), "{g:?}");
    let inv_std = 1.0 / LN_EPS.sqrt();
    let mean_w = w[..5].iter().sum::<f64>() / 5.0;
    let expected: Vec<f64> = w[..5].iter().map(|&wi| inv_std * (wi - mean_w)).collect();
    assert_close(
        "constant row gradient",
        &g.as_slice()[..5],
        &expected,
        1e-12,
        1e-12,
    );

    // nn::LayerNorm on a constant row: gamma * 0 + beta = beta.
    let mut tape = LossTape::new();
    let layer = LayerNorm::<5>::build(&mut tape, &mut Init::new(0)).expect("build");
    let beta = [0.1, 0.2, 0.3, 0.4, 0.5];
    tape.set_parameter(layer.beta, &Tensor::new([beta]))
        .expect("beta");
    let xv = tape.variable(&Tensor::new([[7.0; 5]])).expect("x");
    let out = layer.forward(&mut tape, xv).expect("forward");
    let loss = tape.sum(out).expect("sum");
    tape.backward(loss).expect("backward");
    assert_eq!(tape.value(out).expect("out"), Tensor::new([beta]));
    for g in [
        tape.grad(xv).expect("x").as_slice().to_vec(),
        tape.grad(layer.gamma).expect("gamma").as_slice().to_vec(),
        tape.grad(layer.beta).expect("beta").as_slice().to_vec(),
    ] {
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }
}

type Res = Result<(), TestCaseError>;

fn fail(e: TapeError) -> TestCaseError {
    TestCaseError::fail(format!("tape error: {e}"))
}

/// Central difference of `f` with respect to lane `k` of `xs[i]`.
fn central(xs: &[Vec<f64>], i: usize, k: usize, f: &dyn Fn(&[Vec<f64>]) -> f64) -> f64 {
    let mut v = xs.to_vec();
    let x0 = xs[i][k];
    let h = 1e-6 * x0.abs().max(1.0);
    v[i][k] = x0 + h;
    let (up, f_up) = (v[i][k], f(&v));
    v[i][k] = x0 - h;
    let (down, f_down) = (v[i][k], f(&v));
    (f_up - f_down) / (up - down)
}

/// Every lane of every input's gradient against central differences (the house tolerance:
/// 3e-7 absolute + 3e-6 relative).
fn check_fd(
    name: &str,
    xs: &[Vec<f64>],
    grads: &[Vec<f64>],
    f: &dyn Fn(&[Vec<f64>]) -> f64,
) -> Res {
    for (i, g) in grads.iter().enumerate() {
        for (k, &a) in g.iter().enumerate() {
            let n = central(xs, i, k, f);
            prop_assert!(
                a.is_finite() && (a - n).abs() <= 3e-7 + 3e-6 * a.abs().max(n.abs()),
                "{}: d f / d input{}[{}]: tape {:e}, central difference {:e} ({:?})",
                name,
                i,
                k,
                a,
                n,
                xs
            );
        }
    }
    Ok(())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fd_layer_norm(
        x in vec(-3.0f64..3.0, 15),
        w in vec(-2.0f64..2.0, 15),
        eps in prop_oneof![Just(LN_EPS), 0.01f64..1.0],
    ) {
        let mut tape = LossTape::new();
        let xv = tape.variable(&tensor_from::<f64, 3, 5>(&x)).map_err(fail)?;
        let y = tape.layer_norm_eps(xv, eps).map_err(fail)?;
        let value = tape.value(y).map_err(fail)?;
        tape.backward_with_seed(y, &tensor_from(&w)).map_err(fail)?;
        let g = tape.grad(xv).map_err(fail)?.as_slice().to_vec();
        let expected = layer_norm_ref(&x, 5, eps);
        for (k, (&a, &e)) in value.as_slice().iter().zip(&expected).enumerate() {
            prop_assert!((a - e).abs() <= 1e-12 * e.abs().max(1.0), "value {}: {} vs {}", k, a, e);
        }
        let objective = |xs: &[Vec<f64>]| dot(&w, &layer_norm_ref(&xs[0], 5, eps));
        check_fd("layer_norm", std::slice::from_ref(&x), &[g], &objective)?;
    }

    #[test]
    fn fd_mul_row(
        x in vec(-3.0f64..3.0, 12),
        row in vec(-3.0f64..3.0, 4),
        w in vec(-2.0f64..2.0, 12),
    ) {
        let reference = |x: &[f64], r: &[f64]| -> Vec<f64> {
            x.iter().enumerate().map(|(k, v)| v * r[k % 4]).collect()
        };
        let mut tape = LossTape::new();
        let xv = tape.variable(&tensor_from::<f64, 3, 4>(&x)).map_err(fail)?;
        let rv = tape.variable(&tensor_from::<f64, 1, 4>(&row)).map_err(fail)?;
        let y = tape.mul_row(xv, rv).map_err(fail)?;
        let value = tape.value(y).map_err(fail)?;
        prop_assert_eq!(value.as_slice(), &reference(&x, &row)[..]);
        tape.backward_with_seed(y, &tensor_from(&w)).map_err(fail)?;
        let gx = tape.grad(xv).map_err(fail)?.as_slice().to_vec();
        let gr = tape.grad(rv).map_err(fail)?.as_slice().to_vec();
        let objective = |xs: &[Vec<f64>]| dot(&w, &reference(&xs[0], &xs[1]));
        check_fd("mul_row", &[x.clone(), row.clone()], &[gx, gr], &objective)?;
    }

    // nn::LayerNorm = gamma * layer_norm(x) + beta: gradients of x, gamma and beta.
    #[test]
    fn fd_layer_norm_module(
        x in vec(-3.0f64..3.0, 10),
        gamma in vec(-2.0f64..2.0, 5),
        beta in vec(-1.0f64..1.0, 5),
        w in vec(-2.0f64..2.0, 10),
    ) {
        let reference = |x: &[f64], gamma: &[f64], beta: &[f64]| -> Vec<f64> {
            layer_norm_ref(x, 5, LN_EPS)
                .iter()
                .enumerate()
                .map(|(k, y)| gamma[k % 5] * y + beta[k % 5])
                .collect()
        };
        let mut tape = LossTape::new();
        let layer = LayerNorm::<5>::build(&mut tape, &mut Init::new(3)).map_err(fail)?;
        prop_assert_eq!(tape.parameters(), &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0][..]);
        tape.set_parameter(layer.gamma, &tensor_from(&gamma)).map_err(fail)?;
        tape.set_parameter(layer.beta, &tensor_from(&beta)).map_err(fail)?;
        let xv = tape.variable(&tensor_from::<f64, 2, 5>(&x)).map_err(fail)?;
        let y = layer.forward(&mut tape, xv).map_err(fail)?;
        let value = tape.value(y).map_err(fail)?;
        let expected = reference(&x, &gamma, &beta);
        for (k, (&a, &e)) in value.as_slice().iter().zip(&expected).enumerate() {
            prop_assert!((a - e).abs() <= 1e-12 * e.abs().max(1.0), "value {}: {} vs {}", k, a, e);
        }
        tape.backward_with_seed(y, &tensor_from(&w)).map_err(fail)?;
        let grads = [
            tape.grad(xv).map_err(fail)?.as_slice().to_vec(),
            tape.grad(layer.gamma).map_err(fail)?.as_slice().to_vec(),
            tape.grad(layer.beta).map_err(fail)?.as_slice().to_vec(),
        ];
        check_fd(
            "LayerNorm",
            &[x.clone(), gamma.clone(), beta.clone()],
            &grads,
            &|xs| dot(&w, &reference(&xs[0], &xs[1], &xs[2])),
        )?;
    }
}

#[test]
fn node_ids_are_what_the_errors_name() {
    // The parameters of the MLP are nodes 0..4 in recording order; the input follows.
    let (mut tape, model) = build_mlp::<f32>(&[]);
    assert_eq!(model.0.weight.node(), NodeId(0));
    assert_eq!(model.0.bias.node(), NodeId(1));
    assert_eq!(model.2.weight.node(), NodeId(2));
    assert_eq!(model.2.bias.node(), NodeId(3));
    let rec = record_one(&mut tape, &model, GOOD[0].0, GOOD[0].1);
    assert_eq!(rec.x.node(), NodeId(4));
    assert_eq!(rec.matmul.node(), NodeId(5));
}

// ---------------------------------------------------------------------------------------------
// Part 7: one sample per step (weight gradients held as outer products)
//
// With one sample, a layer's weight gradient is the outer product of its input row and its
// output gradient; a step holds it so and updates from the factors unless asked to keep it.
// The fused `LinearRelu` layer and `Linear` followed by `Relu` are the same function.

type FusedMlp = (LinearRelu<4, 5>, Linear<5, 3>);

/// Any model of the layout `W1, b1, W2, b2` (4 -> 5 -> 3, ReLU between).
trait TwoLayer:
    Module<f64, Var<1, 4>, Output = Var<1, 3>> + Module<f32, Var<1, 4>, Output = Var<1, 3>>
{
    fn parameters(&self) -> (Var<4, 5>, Var<1, 5>, Var<5, 3>, Var<1, 3>);
}

impl TwoLayer for Mlp {
    fn parameters(&self) -> (Var<4, 5>, Var<1, 5>, Var<5, 3>, Var<1, 3>) {
        (self.0.weight, self.0.bias, self.2.weight, self.2.bias)
    }
}

impl TwoLayer for FusedMlp {
    fn parameters(&self) -> (Var<4, 5>, Var<1, 5>, Var<5, 3>, Var<1, 3>) {
        (self.0.weight, self.0.bias, self.1.weight, self.1.bias)
    }
}

/// A model on a fresh tape with the closed-form weights.
fn build_two_layer<T: Scalar, M>() -> (MlpTape<T>, M)
where
    M: TwoLayer + Build<T> + Module<T, Var<1, 4>, Output = Var<1, 3>>,
{
    let mut tape = MlpTape::<T>::new();
    let model = M::build(&mut tape, &mut Init::new(7)).expect("build");
    let p = initial_parameters();
    let (w1, b1, w2, b2) = model.parameters();
    tape.set_parameter(w1, &tensor_from(&p[W1..B1]))
        .expect("W1");
    tape.set_parameter(b1, &tensor_from(&p[B1..W2]))
        .expect("b1");
    tape.set_parameter(w2, &tensor_from(&p[W2..B2]))
        .expect("W2");
    tape.set_parameter(b2, &tensor_from(&p[B2..P])).expect("b2");
    (tape, model)
}

/// Records sample `i` of the batch on a cleared tape, its loss scaled by `scale`.
fn record_sample<T: Scalar, M>(tape: &mut MlpTape<T>, model: &M, i: usize, scale: f64) -> Var<1, 1>
where
    M: Module<T, Var<1, 4>, Output = Var<1, 3>>,
{
    tape.clear_activations();
    let x = tape
        .input(&tensor_from::<T, 1, 4>(&batch_inputs()[i]))
        .expect("input");
    let z = model.forward(tape, x).expect("forward");
    let loss = tape.softmax_cross_entropy(z, &[LABELS[i]]).expect("loss");
    if scale == 1.0 {
        loss
    } else {
        tape.scale(loss, T::from_f64(scale)).expect("scale")
    }
}

/// `steps` SGD steps of the reference, one sample each, cycling through the batch.
fn reference_one_sample_sgd(p: &mut [f64], steps: usize, lr: f64) {
    let x = batch_inputs();
    for s in 0..steps {
        let i = s % BATCH;
        let r = reference(p, &x[i..=i], &LABELS[i..=i]);
        assert!(
            r.min_abs_preactivation > 1e-3,
            "step {s} sits near a ReLU kink"
        );
        for (v, g) in p.iter_mut().zip(&r.grad) {
            *v -= lr * g;
        }
    }
}

/// `steps` guarded SGD steps of the library, one sample each, cycling through the batch.
fn one_sample_sgd<T: Scalar, M>(steps: usize, lr: f64, config: &StepConfig<T>) -> (MlpTape<T>, M)
where
    M: TwoLayer + Build<T> + Module<T, Var<1, 4>, Output = Var<1, 3>>,
{
    let (mut tape, model) = build_two_layer::<T, M>();
    let mut sgd = Sgd::new(T::from_f64(lr));
    for s in 0..steps {
        let loss = record_sample(&mut tape, &model, s % BATCH, 1.0);
        step(&mut tape, loss, &mut sgd, config).expect("step");
    }
    (tape, model)
}

#[test]
fn one_sample_steps_match_reference_fused_or_not() {
    let (steps, lr) = (18, 0.1);
    let mut expected = initial_parameters();
    reference_one_sample_sgd(&mut expected, steps, lr);
    let config = StepConfig::default();

    let (fused, _) = one_sample_sgd::<f64, FusedMlp>(steps, lr, &config);
    let (plain, _) = one_sample_sgd::<f64, Mlp>(steps, lr, &config);
    assert_close("fused, f64", fused.parameters(), &expected, 1e-12, 1e-15);
    assert_eq!(
        bits(fused.parameters()),
        bits(plain.parameters()),
        "fused and plain, f64"
    );

    let (fused, _) = one_sample_sgd::<f32, FusedMlp>(steps, lr, &StepConfig::default());
    let (plain, _) = one_sample_sgd::<f32, Mlp>(steps, lr, &StepConfig::default());
    assert_close(
        "fused, f32",
        &to_f64(fused.parameters()),
        &expected,
        1e-5,
        1e-6,
    );
    assert_eq!(
        bits(fused.parameters()),
        bits(plain.parameters()),
        "fused and plain, f32"
    );
}

#[test]
fn a_step_consumes_its_gradients_and_backward_computes_them_again() {
    let (steps, lr) = (5, 0.1);
    let mut p = initial_parameters();
    reference_one_sample_sgd(&mut p, steps, lr);
    let i = steps % BATCH;
    let r = reference(&p, &batch_inputs()[i..=i], &LABELS[i..=i]);

    let (mut tape, model) = one_sample_sgd::<f64, FusedMlp>(steps, lr, &StepConfig::default());
    let (w1, b1, w2, _) = model.parameters();

    // The step's norm is the reference's; the update consumed the weights' gradients, and
    // reading them says so.
    let loss = record_sample(&mut tape, &model, i, 1.0);
    let mut sgd = Sgd::new(lr);
    let report = step(&mut tape, loss, &mut sgd, &StepConfig::default()).expect("step");
    assert_close("loss", &[report.loss], &[r.loss], 1e-14, 0.0);
    assert_close("norm", &[report.grad_norm], &[norm(&r.grad)], 1e-12, 0.0);
    let consumed = |node: NodeId| Err::<(), _>(TapeError::GradientConsumed { node: node.0 });
    assert_eq!(tape.parameter_grads().map(|_| ()), consumed(w1.node()));
    assert_eq!(tape.grad(w1).map(|_| ()), consumed(w1.node()));
    assert_eq!(tape.grad(b1).map(|_| ()), consumed(b1.node()));
    assert_eq!(tape.grad(w2).map(|_| ()), consumed(w2.node()));
    let w1_node = tape.node(w1.node()).copied().expect("W1 node");
    assert!(tape.grads_of(&w1_node).is_empty());
    assert!(TapeError::GradientConsumed { node: 0 }
        .to_string()
        .contains("run backward"));

    // The next sweep starts afresh: a plain backward gives the gradients at the new values.
    let p_now = to_f64(tape.parameters());
    let next = reference(&p_now, &batch_inputs()[i..=i], &LABELS[i..=i]);
    let loss = record_sample(&mut tape, &model, i, 1.0);
    tape.zero_grad();
    assert!(tape
        .parameter_grads()
        .expect("zeroed")
        .iter()
        .all(|&g| g == 0.0));
    tape.backward(loss).expect("backward");
    assert_close(
        "after",
        tape.parameter_grads().expect("after"),
        &next.grad,
        1e-12,
        1e-16,
    );
}

#[test]
fn tiny_held_gradients_get_an_exact_norm() {
    // A loss scaled by 1e-30: gradients near 1e-31, whose squares underflow in f32. The
    // step's norm must still be the reference norm to f32 precision.
    let scale = 1e-30;
    let p = initial_parameters();
    let r = reference(&p, &batch_inputs()[..1], &LABELS[..1]);
    let (mut tape, model) = build_two_layer::<f32, FusedMlp>();
    let loss = record_sample(&mut tape, &model, 0, scale);
    let mut sgd = Sgd::new(0.1f32);
    let report = step(&mut tape, loss, &mut sgd, &StepConfig::default()).expect("step");
    let expected = norm(&r.grad) * scale;
    assert_close(
        "norm",
        &[f64::from(report.grad_norm)],
        &[expected],
        1e-5,
        0.0,
    );
    assert!(
        expected * expected < f64::from(f32::MIN_POSITIVE),
        "the squares underflow in f32"
    );
}

#[test]
fn overflowing_outer_product_is_refused_and_changes_nothing() {
    // The set-up of `overflowing_gradient_is_refused_and_changes_nothing`, through the fused
    // layers: the factors of W1's gradient, x = (1e38, 0, 0, 0) and dh = 20, are finite, their
    // product 2e39 is not.
    let (mut tape, model) = build_two_layer::<f32, FusedMlp>();
    let (w1, b1, w2, b2) = model.parameters();
    tape.set_parameter(w1, &Tensor::full(1e-3)).expect("W1");
    tape.set_parameter(b1, &Tensor::zeros()).expect("b1");
    let w2_value = Tensor::<f32, 5, 3>::from_fn(|_, c| if c == 0 { 10.0 } else { -10.0 });
    tape.set_parameter(w2, &w2_value).expect("W2");
    tape.set_parameter(b2, &Tensor::zeros()).expect("b2");
    let before = bits(tape.parameters());
    let mut sgd = Sgd::new(0.01f32);

    tape.clear_activations();
    let x = tape
        .input(&Tensor::new([[1e38, 0.0, 0.0, 0.0]]))
        .expect("input");
    let z = model.forward(&mut tape, x).expect("forward");
    let loss = tape.softmax_cross_entropy(z, &[1]).expect("loss");
    assert!(tape.scalar(loss).expect("loss").is_finite());
    assert_eq!(
        step(&mut tape, loss, &mut sgd, &StepConfig::default()),
        Err(StepError::NonFinite(NonFinite {
            node: w1.node(),
            op: "parameter",
            phase: Phase::Backward
        }))
    );
    assert_eq!(bits(tape.parameters()), before);
    // The refused step kept its gradients: W1's row 0 overflowed, W2's did not.
    let g1 = tape.grad(w1).expect("W1 gradient");
    assert!((0..5).all(|j| g1.get(0, j) == Some(f32::INFINITY)));
    assert!(tape.grad(w2).expect("W2 gradient").is_finite());
}
