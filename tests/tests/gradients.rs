//! Gradient checks for every differentiable op of the tape, in four parts:
//!
//! 1. Finite differences in `f64` (proptest): each op's tape gradient of
//!    `f = sum(w * op(inputs))`, for random fixed weights `w`, against central differences of
//!    an independent plain-Rust reference of the op written here (a fresh-tape forward is
//!    used only for the composite network at the end of the part). `row_max` is checked on
//!    rows without ties, `layer_norm_eps` and `nn::LayerNorm::with_eps` with epsilons far
//!    from the default.
//! 2. Strong zeros (proptest): with inputs that include `inf`, `-inf` and `nan`, every input
//!    lane that receives only a zero upstream gradient gets exactly `0.0`. For the ops whose
//!    output lanes each depend on a whole row (`softmax`, `layer_norm`) the unit is the row;
//!    `gather` and `row_max` send exactly zero to every lane they do not take.
//! 3. Memory reuse and error paths: constant node and scalar counts over 1000 steps, capacity
//!    errors that change nothing, stale handles, out-of-range labels and indices,
//!    accumulation; the tie rule of `row_max` (the first largest value takes the gradient);
//!    `nn::Linear::from_pytorch` against `x W^T + b` in plain loops and against
//!    `from_tensors` with the transpose.
//! 4. Closed forms of softmax cross-entropy and log-sum-exp at logits of `+-1e4` (f32, f64).
//!
//! Expected values come from formulas written in this file, never from the code under test.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use safegrad::nn::{Build, Init, LayerNorm, Linear, Module, Train};
use safegrad::{Cap, Scalar, Tape, TapeError, Tensor, Var};

/// The tape used by the property tests: room for every graph below.
type Tp = Tape<f64, Cap<32, 512>>;
type Res = Result<(), TestCaseError>;

/// Central-difference step, relative to `max(|x|, 1)`.
const STEP: f64 = 1e-6;
/// Gradient tolerance: `|tape - numeric| <= ATOL + RTOL * max(|tape|, |numeric|)`. Measured
/// central-difference noise on these domains is up to ~3e-8 absolute (at 20000 cases per
/// test, 1e-7 + 1e-6 never failed and 1e-8 + 1e-7 did); this keeps a 10x margin and still
/// catches a relative error of 1e-5 in a local derivative.
const ATOL: f64 = 3e-7;
const RTOL: f64 = 3e-6;
/// Forward values against the references (libm against std, or another summation order).
const VALUE_RTOL: f64 = 1e-12;
/// The safe ops' documented default guard.
const DEFAULT_EPS: f64 = 1e-6;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fail(e: TapeError) -> TestCaseError {
    TestCaseError::fail(format!("tape error: {e}"))
}

fn tensor<const R: usize, const C: usize>(v: &[f64]) -> Tensor<f64, R, C> {
    Tensor::from_slice(v).unwrap_or_else(|| panic!("expected {} values, got {}", R * C, v.len()))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "weights and outputs differ in length");
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// `n` values uniform in `[lo, hi)`.
fn uniform(n: usize, lo: f64, hi: f64) -> impl Strategy<Value = Vec<f64>> {
    vec(lo..hi, n)
}

/// `n` values with magnitude in `[lo, hi)` and a random sign.
fn signed(n: usize, lo: f64, hi: f64) -> impl Strategy<Value = Vec<f64>> {
    vec(
        (lo..hi, any::<bool>()).prop_map(|(m, negative)| if negative { -m } else { m }),
        n,
    )
}

/// `n` values in `{0, 1}`.
fn bits(n: usize) -> impl Strategy<Value = Vec<f64>> {
    vec(any::<bool>().prop_map(f64::from), n)
}

/// Fixed random weights of the objective.
fn weights(n: usize) -> impl Strategy<Value = Vec<f64>> {
    vec(-2.0f64..2.0, n)
}

/// Finite values mixed with `inf`, `-inf`, `nan` and signed zeros.
fn special() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -10.0f64..10.0,
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(f64::NAN),
        1 => Just(0.0),
        1 => Just(-0.0),
    ]
}

fn specials(n: usize) -> impl Strategy<Value = Vec<f64>> {
    vec(special(), n)
}

/// Upstream gradient lanes: exactly zero (either sign) about half the time.
fn seed_lanes(n: usize) -> impl Strategy<Value = Vec<f64>> {
    vec(
        prop_oneof![2 => Just(0.0), 1 => Just(-0.0), 3 => -2.0f64..2.0],
        n,
    )
}

// ---------------------------------------------------------------------------------------------
// Part 1: finite differences

/// How the weights `w` enter the objective `sum(w * out)`.
#[derive(Clone, Copy, Debug)]
enum Upstream {
    /// `backward_with_seed(out, w)`.
    Seed,
    /// `backward(sum(mul(out, constant(w))))`.
    WeightedSum,
}

fn upstream() -> impl Strategy<Value = Upstream> {
    prop_oneof![Just(Upstream::Seed), Just(Upstream::WeightedSum)]
}

fn pull_back<const R: usize, const C: usize>(
    tape: &mut Tp,
    out: Var<R, C>,
    w: &[f64],
    mode: Upstream,
) -> Result<(), TapeError> {
    let w = tensor::<R, C>(w);
    match mode {
        Upstream::Seed => tape.backward_with_seed(out, &w),
        Upstream::WeightedSum => {
            let wv = tape.constant(&w)?;
            let weighted = tape.mul(out, wv)?;
            let loss = tape.sum(weighted)?;
            tape.backward(loss)
        }
    }
}

/// Central difference of `objective` with respect to `inputs[which][lane]`.
fn central_difference(
    inputs: &[Vec<f64>],
    which: usize,
    lane: usize,
    objective: &dyn Fn(&[Vec<f64>]) -> f64,
) -> f64 {
    let mut xs = inputs.to_vec();
    let x0 = inputs[which][lane];
    let h = STEP * x0.abs().max(1.0);
    xs[which][lane] = x0 + h;
    let (x_up, f_up) = (xs[which][lane], objective(&xs));
    xs[which][lane] = x0 - h;
    let (x_down, f_down) = (xs[which][lane], objective(&xs));
    (f_up - f_down) / (x_up - x_down)
}

fn check_values(name: &str, tape: &[f64], reference: &[f64]) -> Res {
    prop_assert_eq!(tape.len(), reference.len());
    for (k, (&v, &e)) in tape.iter().zip(reference).enumerate() {
        prop_assert!(
            (v - e).abs() <= VALUE_RTOL * e.abs().max(1.0),
            "{}: value[{}] = {} but the reference gives {}",
            name,
            k,
            v,
            e
        );
    }
    Ok(())
}

/// Compares every lane of every input's tape gradient with a central difference of
/// `objective`; inputs marked not differentiable must get exactly zero.
fn check_gradients(
    name: &str,
    inputs: &[Vec<f64>],
    analytic: &[Vec<f64>],
    differentiable: &[bool],
    objective: &dyn Fn(&[Vec<f64>]) -> f64,
) -> Res {
    prop_assert_eq!(inputs.len(), analytic.len());
    prop_assert_eq!(inputs.len(), differentiable.len());
    for (i, ((x, g), &diff)) in inputs.iter().zip(analytic).zip(differentiable).enumerate() {
        prop_assert_eq!(x.len(), g.len());
        for (k, &a) in g.iter().enumerate() {
            if !diff {
                prop_assert!(
                    a == 0.0,
                    "{}: input {} takes no gradient, but lane {} got {}",
                    name,
                    i,
                    k,
                    a
                );
                continue;
            }
            let n = central_difference(inputs, i, k, objective);
            prop_assert!(
                a.is_finite() && (a - n).abs() <= ATOL + RTOL * a.abs().max(n.abs()),
                "{}: d f / d input{}[{}]: tape {:e}, central difference {:e} (inputs {:?})",
                name,
                i,
                k,
                a,
                n,
                inputs
            );
        }
    }
    Ok(())
}

fn check_unary<const R: usize, const C: usize, const RO: usize, const CO: usize>(
    name: &str,
    x: &[f64],
    w: &[f64],
    mode: Upstream,
    record: impl Fn(&mut Tp, Var<R, C>) -> Result<Var<RO, CO>, TapeError>,
    reference: impl Fn(&[f64]) -> Vec<f64>,
) -> Res {
    let mut tape = Tp::new();
    let xv = tape.variable(&tensor::<R, C>(x)).map_err(fail)?;
    let out = record(&mut tape, xv).map_err(fail)?;
    let value = tape.value(out).map_err(fail)?;
    pull_back(&mut tape, out, w, mode).map_err(fail)?;
    let gx = tape.grad(xv).map_err(fail)?;
    check_values(name, value.as_slice(), &reference(x))?;
    check_gradients(
        name,
        &[x.to_vec()],
        &[gx.as_slice().to_vec()],
        &[true],
        &|xs: &[Vec<f64>]| dot(w, &reference(&xs[0])),
    )
}

#[allow(clippy::too_many_arguments)]
fn check_binary<
    const RA: usize,
    const CA: usize,
    const RB: usize,
    const CB: usize,
    const RO: usize,
    const CO: usize,
>(
    name: &str,
    a: &[f64],
    b: &[f64],
    w: &[f64],
    mode: Upstream,
    record: impl Fn(&mut Tp, Var<RA, CA>, Var<RB, CB>) -> Result<Var<RO, CO>, TapeError>,
    reference: impl Fn(&[f64], &[f64]) -> Vec<f64>,
) -> Res {
    let mut tape = Tp::new();
    let av = tape.variable(&tensor::<RA, CA>(a)).map_err(fail)?;
    let bv = tape.variable(&tensor::<RB, CB>(b)).map_err(fail)?;
    let out = record(&mut tape, av, bv).map_err(fail)?;
    let value = tape.value(out).map_err(fail)?;
    pull_back(&mut tape, out, w, mode).map_err(fail)?;
    let ga = tape.grad(av).map_err(fail)?;
    let gb = tape.grad(bv).map_err(fail)?;
    check_values(name, value.as_slice(), &reference(a, b))?;
    check_gradients(
        name,
        &[a.to_vec(), b.to_vec()],
        &[ga.as_slice().to_vec(), gb.as_slice().to_vec()],
        &[true, true],
        &|xs: &[Vec<f64>]| dot(w, &reference(&xs[0], &xs[1])),
    )
}

#[allow(clippy::too_many_arguments)]
fn check_ternary<const R: usize, const C: usize>(
    name: &str,
    inputs: [&[f64]; 3],
    differentiable: [bool; 3],
    w: &[f64],
    mode: Upstream,
    record: impl Fn(&mut Tp, Var<R, C>, Var<R, C>, Var<R, C>) -> Result<Var<R, C>, TapeError>,
    reference: impl Fn(&[f64], &[f64], &[f64]) -> Vec<f64>,
) -> Res {
    let mut tape = Tp::new();
    let v0 = tape.variable(&tensor::<R, C>(inputs[0])).map_err(fail)?;
    let v1 = tape.variable(&tensor::<R, C>(inputs[1])).map_err(fail)?;
    let v2 = tape.variable(&tensor::<R, C>(inputs[2])).map_err(fail)?;
    let out = record(&mut tape, v0, v1, v2).map_err(fail)?;
    let value = tape.value(out).map_err(fail)?;
    pull_back(&mut tape, out, w, mode).map_err(fail)?;
    let grads = [
        grad_of(&tape, v0)?,
        grad_of(&tape, v1)?,
        grad_of(&tape, v2)?,
    ];
    check_values(
        name,
        value.as_slice(),
        &reference(inputs[0], inputs[1], inputs[2]),
    )?;
    check_gradients(
        name,
        &inputs.map(<[f64]>::to_vec),
        &grads,
        &differentiable,
        &|xs: &[Vec<f64>]| dot(w, &reference(&xs[0], &xs[1], &xs[2])),
    )
}

/// Reference of an elementwise unary op.
fn map_ref(f: impl Fn(f64) -> f64) -> impl Fn(&[f64]) -> Vec<f64> {
    move |x| x.iter().map(|&v| f(v)).collect()
}

/// Reference of an elementwise binary op.
fn zip_ref(f: impl Fn(f64, f64) -> f64) -> impl Fn(&[f64], &[f64]) -> Vec<f64> {
    move |a, b| a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

/// Reference of an elementwise ternary op.
fn zip3_ref(f: impl Fn(f64, f64, f64) -> f64) -> impl Fn(&[f64], &[f64], &[f64]) -> Vec<f64> {
    move |a, b, c| {
        a.iter()
            .zip(b)
            .zip(c)
            .map(|((&x, &y), &z)| f(x, y, z))
            .collect()
    }
}

/// `a (rows x inner) * b (inner x cols)`, row-major, plain loops.
fn matmul_ref(a: &[f64], b: &[f64], rows: usize, inner: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[i * cols + j] = (0..inner).map(|k| a[i * inner + k] * b[k * cols + j]).sum();
        }
    }
    out
}

/// `x (rows x inner) * w (inner x cols) + b`, each output from its bias, over `k` in order,
/// terms with a zero `x` left out (strong zeros); with `relu`, negative values and zeros
/// become `+0` (`nan` stays).
fn linear_ref(x: &[f64], w: &[f64], b: &[f64], inner: usize, relu: bool) -> Vec<f64> {
    let cols = b.len();
    let rows = x.len() / inner;
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for (j, &bj) in b.iter().enumerate() {
            let mut acc = bj;
            for k in 0..inner {
                let xv = x[r * inner + k];
                if xv != 0.0 {
                    acc += xv * w[k * cols + j];
                }
            }
            out.push(if relu && acc <= 0.0 { 0.0 } else { acc });
        }
    }
    out
}

/// The gradient check of `linear` (or `linear_relu`) with `R` rows, 3 inputs and 4 outputs.
fn check_linear<const R: usize>(
    relu: bool,
    [x, w, b]: [&[f64]; 3],
    weights: &[f64],
    mode: Upstream,
) -> Res {
    let name = if relu { "linear_relu" } else { "linear" };
    if relu {
        // Finite differences need a margin from the kink.
        let pre = linear_ref(x, w, b, 3, false);
        prop_assume!(pre.iter().all(|v| v.abs() > 1e-3));
    }
    let mut tape = Tp::new();
    let xv = tape.variable(&tensor::<R, 3>(x)).map_err(fail)?;
    let wv = tape.variable(&tensor::<3, 4>(w)).map_err(fail)?;
    let bv = tape.variable(&tensor::<1, 4>(b)).map_err(fail)?;
    let out = if relu {
        tape.linear_relu(xv, wv, bv)
    } else {
        tape.linear(xv, wv, bv)
    }
    .map_err(fail)?;
    let value = tape.value(out).map_err(fail)?;
    pull_back(&mut tape, out, weights, mode).map_err(fail)?;
    let grads = [
        grad_of(&tape, xv)?,
        grad_of(&tape, wv)?,
        grad_of(&tape, bv)?,
    ];
    let reference = |xs: &[Vec<f64>]| linear_ref(&xs[0], &xs[1], &xs[2], 3, relu);
    let inputs = [x.to_vec(), w.to_vec(), b.to_vec()];
    check_values(name, value.as_slice(), &reference(&inputs))?;
    check_gradients(name, &inputs, &grads, &[true; 3], &|xs| {
        dot(weights, &reference(xs))
    })
}

fn transpose_ref(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| x[r * cols + c]))
        .collect()
}

/// `ln(sum(exp(row)))` of each row, naively (the inputs here are moderate).
fn log_sum_exp_ref(x: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .map(|row| row.iter().map(|v| v.exp()).sum::<f64>().ln())
        .collect()
}

/// Mean over rows of `-ln(softmax(row)[label])`, naively.
fn softmax_cross_entropy_ref(z: &[f64], cols: usize, labels: &[usize]) -> f64 {
    let rows = z.len() / cols;
    let total: f64 = z
        .chunks(cols)
        .zip(labels)
        .map(|(row, &t)| {
            let denominator: f64 = row.iter().map(|v| v.exp()).sum();
            -(row[t].exp() / denominator).ln()
        })
        .sum();
    total / rows as f64
}

/// `exp(row) / sum(exp(row))` of each row, naively (the inputs here are moderate).
fn softmax_ref(x: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|row| {
            let denominator: f64 = row.iter().map(|v| v.exp()).sum();
            row.iter().map(move |v| v.exp() / denominator)
        })
        .collect()
}

/// `x[r][index[r]]` of each row.
fn gather_ref(x: &[f64], cols: usize, index: &[usize]) -> Vec<f64> {
    x.chunks(cols).zip(index).map(|(row, &i)| row[i]).collect()
}

/// The position a row's maximum is taken from: the first `nan` if there is one, else the
/// first of the largest values.
fn first_largest(row: &[f64]) -> usize {
    if let Some(i) = row.iter().position(|v| v.is_nan()) {
        return i;
    }
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// The largest value of each row (`nan` if the row holds one).
fn row_max_ref(x: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols).map(|row| row[first_largest(row)]).collect()
}

/// `(x - mean) / sqrt(var + eps)` of each row, the mean and then the variance (the mean of
/// squared deviations) in two passes.
fn layer_norm_ref(x: &[f64], cols: usize, eps: f64) -> Vec<f64> {
    let n = cols as f64;
    x.chunks(cols)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / n;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            row.iter().map(move |v| (v - mean) / (var + eps).sqrt())
        })
        .collect()
}

/// The gap between the largest and the second largest value of each row: finite
/// differences need it well above their step.
fn smallest_top_gap(x: &[f64], cols: usize) -> f64 {
    x.chunks(cols)
        .map(|row| {
            let top = first_largest(row);
            row.iter()
                .enumerate()
                .filter(|&(i, _)| i != top)
                .map(|(_, v)| row[top] - v)
                .fold(f64::INFINITY, f64::min)
        })
        .fold(f64::INFINITY, f64::min)
}

fn sigmoid_ref(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The signed guard of `safe_div_signed`: `+1` for `den >= 0`, else `-1`.
fn guard_sign_ref(den: f64) -> f64 {
    if den >= 0.0 {
        1.0
    } else {
        -1.0
    }
}

/// Values in `[0, 10)` with exact zeros mixed in (for ops guarded by a large epsilon).
fn nonnegative_with_zeros(n: usize) -> impl Strategy<Value = Vec<f64>> {
    vec(prop_oneof![1 => Just(0.0), 3 => 0.0f64..10.0], n)
}

// Network of the composite check: x (2x3) -> tanh(x W1 + b1) (2x4) -> h W2 + b2 (2x3)
// -> softmax cross-entropy + 0.01 * sum(h * h).
type MlpVars = (
    Var<1, 1>,
    Var<3, 4>,
    Var<1, 4>,
    Var<4, 3>,
    Var<1, 3>,
    Var<2, 3>,
);

fn record_mlp(tape: &mut Tp, p: &[Vec<f64>], labels: &[usize; 2]) -> Result<MlpVars, TapeError> {
    let w1 = tape.parameter(&tensor::<3, 4>(&p[0]))?;
    let b1 = tape.parameter(&tensor::<1, 4>(&p[1]))?;
    let w2 = tape.parameter(&tensor::<4, 3>(&p[2]))?;
    let b2 = tape.parameter(&tensor::<1, 3>(&p[3]))?;
    let x = tape.variable(&tensor::<2, 3>(&p[4]))?;
    let h = tape.matmul(x, w1)?;
    let h = tape.add_row(h, b1)?;
    let h = tape.tanh(h)?;
    let z = tape.matmul(h, w2)?;
    let z = tape.add_row(z, b2)?;
    let ce = tape.softmax_cross_entropy(z, labels)?;
    let hh = tape.mul(h, h)?;
    let activity = tape.sum(hh)?;
    let activity = tape.scale(activity, 0.01)?;
    let loss = tape.add(ce, activity)?;
    Ok((loss, w1, b1, w2, b2, x))
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn fd_add(
        a in uniform(6, -3.0, 3.0),
        b in uniform(6, -3.0, 3.0),
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|x, y| x + y);
        check_binary::<2, 3, 2, 3, 2, 3>("add", &a, &b, &w, m, |t, a, b| t.add(a, b), reference)?;
    }

    #[test]
    fn fd_sub(
        a in uniform(6, -3.0, 3.0),
        b in uniform(6, -3.0, 3.0),
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|x, y| x - y);
        check_binary::<2, 3, 2, 3, 2, 3>("sub", &a, &b, &w, m, |t, a, b| t.sub(a, b), reference)?;
    }

    #[test]
    fn fd_mul(
        a in uniform(6, -3.0, 3.0),
        b in uniform(6, -3.0, 3.0),
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|x, y| x * y);
        check_binary::<2, 3, 2, 3, 2, 3>("mul", &a, &b, &w, m, |t, a, b| t.mul(a, b), reference)?;
    }

    #[test]
    fn fd_neg(x in uniform(6, -3.0, 3.0), w in weights(6), m in upstream()) {
        check_unary::<2, 3, 2, 3>("neg", &x, &w, m, |t, x| t.neg(x), map_ref(|v| -v))?;
    }

    #[test]
    fn fd_scale(
        x in uniform(6, -3.0, 3.0),
        factor in -3.0f64..3.0,
        w in weights(6),
        m in upstream(),
    ) {
        let reference = map_ref(|v| factor * v);
        check_unary::<2, 3, 2, 3>("scale", &x, &w, m, |t, x| t.scale(x, factor), reference)?;
    }

    #[test]
    fn fd_add_row(
        x in uniform(12, -3.0, 3.0),
        row in uniform(4, -3.0, 3.0),
        w in weights(12),
        m in upstream(),
    ) {
        let reference = |x: &[f64], r: &[f64]| -> Vec<f64> {
            x.iter().enumerate().map(|(k, v)| v + r[k % 4]).collect()
        };
        let record = |t: &mut Tp, x, r| t.add_row(x, r);
        check_binary::<3, 4, 1, 4, 3, 4>("add_row", &x, &row, &w, m, record, reference)?;
    }

    #[test]
    fn fd_linear(
        x in uniform(6, -3.0, 3.0),
        w in uniform(12, -3.0, 3.0),
        b in uniform(4, -3.0, 3.0),
        weights in weights(8),
        m in upstream(),
    ) {
        check_linear::<2>(false, [&x, &w, &b], &weights, m)?;
        check_linear::<1>(false, [&x[..3], &w, &b], &weights[..4], m)?;
    }

    #[test]
    fn fd_linear_relu(
        x in uniform(6, -3.0, 3.0),
        w in uniform(12, -3.0, 3.0),
        b in uniform(4, -3.0, 3.0),
        weights in weights(8),
        m in upstream(),
    ) {
        check_linear::<2>(true, [&x, &w, &b], &weights, m)?;
        check_linear::<1>(true, [&x[..3], &w, &b], &weights[..4], m)?;
    }

    #[test]
    fn fd_matmul(
        a in uniform(6, -3.0, 3.0),
        b in uniform(12, -3.0, 3.0),
        w in weights(8),
        m in upstream(),
    ) {
        let reference = |a: &[f64], b: &[f64]| matmul_ref(a, b, 2, 3, 4);
        let record = |t: &mut Tp, a, b| t.matmul(a, b);
        check_binary::<2, 3, 3, 4, 2, 4>("matmul", &a, &b, &w, m, record, reference)?;
    }

    #[test]
    fn fd_transpose(x in uniform(6, -3.0, 3.0), w in weights(6), m in upstream()) {
        let reference = |x: &[f64]| transpose_ref(x, 2, 3);
        check_unary::<2, 3, 3, 2>("transpose", &x, &w, m, |t, x| t.transpose(x), reference)?;
    }

    // |x| >= 1e-3, far from the kink compared with the step.
    #[test]
    fn fd_relu(x in signed(6, 1e-3, 3.0), w in weights(6), m in upstream()) {
        let reference = map_ref(|v| if v > 0.0 { v } else { 0.0 });
        check_unary::<2, 3, 2, 3>("relu", &x, &w, m, |t, x| t.relu(x), reference)?;
    }

    #[test]
    fn fd_tanh(x in uniform(6, -4.0, 4.0), w in weights(6), m in upstream()) {
        check_unary::<2, 3, 2, 3>("tanh", &x, &w, m, |t, x| t.tanh(x), map_ref(f64::tanh))?;
    }

    #[test]
    fn fd_sigmoid(x in uniform(6, -8.0, 8.0), w in weights(6), m in upstream()) {
        let reference = map_ref(sigmoid_ref);
        check_unary::<2, 3, 2, 3>("sigmoid", &x, &w, m, |t, x| t.sigmoid(x), reference)?;
    }

    #[test]
    fn fd_exp(x in uniform(6, -5.0, 5.0), w in weights(6), m in upstream()) {
        check_unary::<2, 3, 2, 3>("exp", &x, &w, m, |t, x| t.exp(x), map_ref(f64::exp))?;
    }

    #[test]
    fn fd_ln(x in uniform(6, 0.05, 10.0), w in weights(6), m in upstream()) {
        check_unary::<2, 3, 2, 3>("ln", &x, &w, m, |t, x| t.ln(x), map_ref(f64::ln))?;
    }

    #[test]
    fn fd_sqrt(x in uniform(6, 0.05, 10.0), w in weights(6), m in upstream()) {
        check_unary::<2, 3, 2, 3>("sqrt", &x, &w, m, |t, x| t.sqrt(x), map_ref(f64::sqrt))?;
    }

    #[test]
    fn fd_safe_ln(x in uniform(6, 0.05, 10.0), w in weights(6), m in upstream()) {
        let reference = map_ref(|v| (v + DEFAULT_EPS).ln());
        check_unary::<2, 3, 2, 3>("safe_ln", &x, &w, m, |t, x| t.safe_ln(x), reference)?;
    }

    // A large epsilon makes a backward that ignores it fail, and allows x = 0 exactly.
    #[test]
    fn fd_safe_ln_eps(
        x in nonnegative_with_zeros(6),
        eps in 0.01f64..1.0,
        w in weights(6),
        m in upstream(),
    ) {
        let reference = map_ref(|v| (v + eps).ln());
        let record = |t: &mut Tp, x| t.safe_ln_eps(x, eps);
        check_unary::<2, 3, 2, 3>("safe_ln_eps", &x, &w, m, record, reference)?;
    }

    #[test]
    fn fd_safe_sqrt(x in uniform(6, 0.05, 10.0), w in weights(6), m in upstream()) {
        let reference = map_ref(|v| (v + DEFAULT_EPS).sqrt());
        check_unary::<2, 3, 2, 3>("safe_sqrt", &x, &w, m, |t, x| t.safe_sqrt(x), reference)?;
    }

    #[test]
    fn fd_safe_sqrt_eps(
        x in nonnegative_with_zeros(6),
        eps in 0.01f64..1.0,
        w in weights(6),
        m in upstream(),
    ) {
        let reference = map_ref(|v| (v + eps).sqrt());
        let record = |t: &mut Tp, x| t.safe_sqrt_eps(x, eps);
        check_unary::<2, 3, 2, 3>("safe_sqrt_eps", &x, &w, m, record, reference)?;
    }

    #[test]
    fn fd_sum(x in uniform(12, -3.0, 3.0), w in weights(1), m in upstream()) {
        let reference = |x: &[f64]| vec![x.iter().sum()];
        check_unary::<3, 4, 1, 1>("sum", &x, &w, m, |t, x| t.sum(x), reference)?;
    }

    #[test]
    fn fd_mean(x in uniform(12, -3.0, 3.0), w in weights(1), m in upstream()) {
        let reference = |x: &[f64]| vec![x.iter().sum::<f64>() / 12.0];
        check_unary::<3, 4, 1, 1>("mean", &x, &w, m, |t, x| t.mean(x), reference)?;
    }

    #[test]
    fn fd_log_sum_exp(x in uniform(12, -5.0, 5.0), w in weights(3), m in upstream()) {
        let reference = |x: &[f64]| log_sum_exp_ref(x, 4);
        let record = |t: &mut Tp, x| t.log_sum_exp(x);
        check_unary::<3, 4, 3, 1>("log_sum_exp", &x, &w, m, record, reference)?;
    }

    #[test]
    fn fd_softmax_cross_entropy(
        z in uniform(12, -5.0, 5.0),
        labels in proptest::array::uniform3(0usize..4),
        w in weights(1),
        m in upstream(),
    ) {
        let reference = |z: &[f64]| vec![softmax_cross_entropy_ref(z, 4, &labels)];
        let record = |t: &mut Tp, z| t.softmax_cross_entropy(z, &labels);
        check_unary::<3, 4, 1, 1>("softmax_cross_entropy", &z, &w, m, record, reference)?;
    }

    #[test]
    fn fd_softmax(x in uniform(12, -5.0, 5.0), w in weights(12), m in upstream()) {
        let reference = |x: &[f64]| softmax_ref(x, 4);
        check_unary::<3, 4, 3, 4>("softmax", &x, &w, m, |t, x| t.softmax(x), reference)?;
    }

    // The indices take no gradient (they are not a node one can differentiate).
    #[test]
    fn fd_gather(
        x in uniform(12, -3.0, 3.0),
        index in proptest::array::uniform3(0usize..4),
        w in weights(3),
        m in upstream(),
    ) {
        let reference = |x: &[f64]| gather_ref(x, 4, &index);
        let record = |t: &mut Tp, x| t.gather(x, &index);
        check_unary::<3, 4, 3, 1>("gather", &x, &w, m, record, reference)?;
    }

    // No ties: the largest value of each row is at least 1e-3 above the others, far from a
    // tie compared with the step (the tie rule is checked on its own in part 3).
    #[test]
    fn fd_row_max(x in uniform(12, -3.0, 3.0), w in weights(3), m in upstream()) {
        prop_assume!(smallest_top_gap(&x, 4) > 1e-3);
        let reference = |x: &[f64]| row_max_ref(x, 4);
        check_unary::<3, 4, 3, 1>("row_max", &x, &w, m, |t, x| t.row_max(x), reference)?;
    }

    // A large epsilon makes a backward (or a forward) that ignores it fail.
    #[test]
    fn fd_layer_norm_eps(
        x in uniform(12, -3.0, 3.0),
        eps in 0.01f64..1.0,
        w in weights(12),
        m in upstream(),
    ) {
        let reference = |x: &[f64]| layer_norm_ref(x, 4, eps);
        let record = |t: &mut Tp, x| t.layer_norm_eps(x, eps);
        check_unary::<3, 4, 3, 4>("layer_norm_eps", &x, &w, m, record, reference)?;
    }

    // nn::LayerNorm with a chosen epsilon: gamma * layer_norm_eps(x) + beta, the gradients
    // of x, gamma and beta.
    #[test]
    fn fd_layer_norm_module_with_eps(
        x in uniform(8, -3.0, 3.0),
        gamma in uniform(4, -2.0, 2.0),
        beta in uniform(4, -1.0, 1.0),
        eps in 0.01f64..1.0,
        w in weights(8),
        m in upstream(),
    ) {
        let reference = |xs: &[Vec<f64>]| -> Vec<f64> {
            layer_norm_ref(&xs[0], 4, eps)
                .iter()
                .enumerate()
                .map(|(k, y)| xs[1][k % 4] * y + xs[2][k % 4])
                .collect()
        };
        let mut tape = Tp::new();
        let layer = LayerNorm::<4>::build(&mut tape, &mut Init::new(0)).map_err(fail)?;
        let layer = layer.with_eps(eps);
        tape.set_parameter(layer.gamma, &tensor(&gamma)).map_err(fail)?;
        tape.set_parameter(layer.beta, &tensor(&beta)).map_err(fail)?;
        let xv = tape.variable(&tensor::<2, 4>(&x)).map_err(fail)?;
        let y = layer.forward(&mut tape, xv).map_err(fail)?;
        let value = tape.value(y).map_err(fail)?;
        pull_back(&mut tape, y, &w, m).map_err(fail)?;
        let grads = [
            grad_of(&tape, xv)?,
            grad_of(&tape, layer.gamma)?,
            grad_of(&tape, layer.beta)?,
        ];
        let inputs = [x.clone(), gamma.clone(), beta.clone()];
        check_values("LayerNorm::with_eps", value.as_slice(), &reference(&inputs))?;
        check_gradients("LayerNorm::with_eps", &inputs, &grads, &[true; 3], &|xs| {
            dot(&w, &reference(xs))
        })?;
    }

    #[test]
    fn fd_div(
        num in uniform(6, -5.0, 5.0),
        den in signed(6, 0.1, 10.0),
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|n, d| n / d);
        let record = |t: &mut Tp, n, d| t.div(n, d);
        check_binary::<2, 3, 2, 3, 2, 3>("div", &num, &den, &w, m, record, reference)?;
    }

    #[test]
    fn fd_safe_div(
        num in uniform(6, -5.0, 5.0),
        den in uniform(6, 0.1, 10.0),
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|n, d| n / (d + DEFAULT_EPS));
        let record = |t: &mut Tp, n, d| t.safe_div(n, d);
        check_binary::<2, 3, 2, 3, 2, 3>("safe_div", &num, &den, &w, m, record, reference)?;
    }

    // safe_div is documented safe for den >= 0; a large epsilon allows den = 0 exactly.
    #[test]
    fn fd_safe_div_eps(
        num in uniform(6, -5.0, 5.0),
        den in nonnegative_with_zeros(6),
        eps in 0.05f64..1.0,
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|n, d| n / (d + eps));
        let record = |t: &mut Tp, n, d| t.safe_div_eps(n, d, eps);
        check_binary::<2, 3, 2, 3, 2, 3>("safe_div_eps", &num, &den, &w, m, record, reference)?;
    }

    #[test]
    fn fd_safe_div_signed(
        num in uniform(6, -5.0, 5.0),
        den in signed(6, 0.1, 10.0),
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|n, d| n / (d + DEFAULT_EPS * guard_sign_ref(d)));
        let record = |t: &mut Tp, n, d| t.safe_div_signed(n, d);
        check_binary::<2, 3, 2, 3, 2, 3>("safe_div_signed", &num, &den, &w, m, record, reference)?;
    }

    #[test]
    fn fd_safe_div_signed_eps(
        num in uniform(6, -5.0, 5.0),
        den in signed(6, 0.1, 10.0),
        eps in 0.05f64..1.0,
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|n, d| n / (d + eps * guard_sign_ref(d)));
        let record = |t: &mut Tp, n, d| t.safe_div_signed_eps(n, d, eps);
        let name = "safe_div_signed_eps";
        check_binary::<2, 3, 2, 3, 2, 3>(name, &num, &den, &w, m, record, reference)?;
    }

    // Masked lanes may hold a zero denominator: they must not divide. The mask takes no
    // gradient (it must come back exactly zero).
    #[test]
    fn fd_masked_div(
        num in uniform(6, -5.0, 5.0),
        den in signed(6, 0.1, 10.0),
        zero_den in vec(any::<bool>(), 6),
        mask in bits(6),
        w in weights(6),
        m in upstream(),
    ) {
        let den: Vec<f64> = den
            .iter()
            .zip(&zero_den)
            .zip(&mask)
            .map(|((&d, &z), &k)| if z && k == 0.0 { 0.0 } else { d })
            .collect();
        let reference = zip3_ref(|n, d, k| if k != 0.0 { n / d } else { 0.0 });
        let record = |t: &mut Tp, n, d, k| t.masked_div(n, d, k);
        let inputs: [&[f64]; 3] = [&num, &den, &mask];
        check_ternary::<2, 3>("masked_div", inputs, [true, true, false], &w, m, record, reference)?;
    }

    // Numeric weights, a third of them exactly zero: d/dweight is x even there.
    #[test]
    fn fd_mask(
        weight in vec(prop_oneof![1 => Just(0.0), 2 => -3.0f64..3.0], 6),
        x in uniform(6, -3.0, 3.0),
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip_ref(|k, x| k * x);
        let record = |t: &mut Tp, k, x| t.mask(k, x);
        check_binary::<2, 3, 2, 3, 2, 3>("mask", &weight, &x, &w, m, record, reference)?;
    }

    // Conditions are 0 or away from 0 (a nonzero condition is "true" whatever its sign); the
    // condition takes no gradient.
    #[test]
    fn fd_select(
        cond in vec(prop_oneof![Just(0.0), Just(1.0), Just(-2.5), Just(0.5)], 6),
        a in uniform(6, -3.0, 3.0),
        b in uniform(6, -3.0, 3.0),
        w in weights(6),
        m in upstream(),
    ) {
        let reference = zip3_ref(|c, a, b| if c != 0.0 { a } else { b });
        let record = |t: &mut Tp, c, a, b| t.select(c, a, b);
        let inputs: [&[f64]; 3] = [&cond, &a, &b];
        check_ternary::<2, 3>("select", inputs, [false, true, true], &w, m, record, reference)?;
    }

    // The same node used for two operands: both contributions must accumulate.
    #[test]
    fn fd_aliased_operands(
        x in uniform(6, 0.5, 3.0),
        w4 in weights(4),
        w in weights(6),
        m in upstream(),
    ) {
        let square = map_ref(|v| v * v);
        check_unary::<2, 3, 2, 3>("mul(x, x)", &x, &w, m, |t, x| t.mul(x, x), &square)?;
        check_unary::<2, 3, 2, 3>("mask(x, x)", &x, &w, m, |t, x| t.mask(x, x), &square)?;
        let double = map_ref(|v| v + v);
        check_unary::<2, 3, 2, 3>("add(x, x)", &x, &w, m, |t, x| t.add(x, x), double)?;
        let zero = map_ref(|_| 0.0);
        check_unary::<2, 3, 2, 3>("sub(x, x)", &x, &w, m, |t, x| t.sub(x, x), zero)?;
        let one = map_ref(|_| 1.0);
        check_unary::<2, 3, 2, 3>("div(x, x)", &x, &w, m, |t, x| t.div(x, x), one)?;
        let gram = |x: &[f64]| matmul_ref(x, &transpose_ref(x, 2, 3), 2, 3, 2);
        let record = |t: &mut Tp, x| {
            let xt = t.transpose(x)?;
            t.matmul(x, xt)
        };
        check_unary::<2, 3, 2, 2>("matmul(x, x^T)", &x, &w4, m, record, gram)?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    // Composite graph with parameters: the reference forward is a fresh tape (forward only).
    #[test]
    fn fd_composite_network(
        w1 in uniform(12, -1.0, 1.0),
        b1 in uniform(4, -0.5, 0.5),
        w2 in uniform(12, -1.0, 1.0),
        b2 in uniform(3, -0.5, 0.5),
        x in uniform(6, -2.0, 2.0),
        labels in proptest::array::uniform2(0usize..3),
    ) {
        let inputs = vec![w1, b1, w2, b2, x];
        let mut tape = Tp::new();
        let (loss, w1, b1, w2, b2, x) = record_mlp(&mut tape, &inputs, &labels).map_err(fail)?;
        tape.backward(loss).map_err(fail)?;
        let analytic = vec![
            grad_of(&tape, w1)?,
            grad_of(&tape, b1)?,
            grad_of(&tape, w2)?,
            grad_of(&tape, b2)?,
            grad_of(&tape, x)?,
        ];
        // The parameter gradients are also exposed flat, in recording order.
        let flat: Vec<f64> = analytic[..4].concat();
        prop_assert_eq!(tape.parameter_grads().expect("gradients"), &flat[..]);
        let objective = |xs: &[Vec<f64>]| {
            let mut fresh = Tp::new();
            let (loss, ..) = record_mlp(&mut fresh, xs, &labels).expect("records");
            fresh.scalar(loss).expect("scalar")
        };
        check_gradients("network", &inputs, &analytic, &[true; 5], &objective)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Part 2: strong zeros

/// How a per-lane upstream gradient reaches the op's output.
#[derive(Clone, Copy, Debug)]
enum Delivery {
    /// `backward_with_seed(out, seed)`.
    Seed,
    /// `backward(sum(mask(constant(seed), out)))`: zero weights in front of the sum.
    ZeroWeightMask,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![Just(Delivery::Seed), Just(Delivery::ZeroWeightMask)]
}

fn deliver<const R: usize, const C: usize>(
    tape: &mut Tp,
    out: Var<R, C>,
    seed: &[f64],
    how: Delivery,
) -> Result<(), TapeError> {
    let s = tensor::<R, C>(seed);
    match how {
        Delivery::Seed => tape.backward_with_seed(out, &s),
        Delivery::ZeroWeightMask => {
            let weight = tape.constant(&s)?;
            let masked = tape.mask(weight, out)?;
            let loss = tape.sum(masked)?;
            tape.backward(loss)
        }
    }
}

/// The gradient of `v` as a flat vector.
fn grad_of<const R: usize, const C: usize>(
    tape: &Tp,
    v: Var<R, C>,
) -> Result<Vec<f64>, TestCaseError> {
    let g = tape.grad(v).map_err(fail)?;
    Ok(g.as_slice().to_vec())
}

/// Every lane `k` of every gradient whose upstream `seed[k]` is zero must be exactly `0.0`.
fn check_zero_lanes(name: &str, seed: &[f64], grads: &[(&str, Vec<f64>)]) -> Res {
    for (input, g) in grads {
        prop_assert_eq!(g.len(), seed.len());
        for (k, (&s, &gk)) in seed.iter().zip(g).enumerate() {
            if s == 0.0 {
                prop_assert!(
                    gk == 0.0,
                    "{}: d {}[{}] = {} although its upstream gradient is {}",
                    name,
                    input,
                    k,
                    gk,
                    s
                );
            }
        }
    }
    Ok(())
}

fn check_all_zero(name: &str, grads: &[(&str, Vec<f64>)]) -> Res {
    for (input, g) in grads {
        for (k, &gk) in g.iter().enumerate() {
            prop_assert!(
                gk == 0.0,
                "{}: d {}[{}] = {} under an all-zero upstream gradient",
                name,
                input,
                k,
                gk
            );
        }
    }
    Ok(())
}

type Reduction<'a> = &'a dyn Fn(&mut Tp, Var<3, 4>) -> Result<Var<1, 1>, TapeError>;
type UnaryRef<'a> = &'a dyn Fn(&mut Tp, Var<2, 3>) -> Result<Var<2, 3>, TapeError>;
type Unary = fn(&mut Tp, Var<2, 3>) -> Result<Var<2, 3>, TapeError>;
type Unary34 = fn(&mut Tp, Var<3, 4>) -> Result<Var<3, 4>, TapeError>;
type Binary = fn(&mut Tp, Var<2, 3>, Var<2, 3>) -> Result<Var<2, 3>, TapeError>;
type Ternary = fn(&mut Tp, Var<2, 3>, Var<2, 3>, Var<2, 3>) -> Result<Var<2, 3>, TapeError>;

const UNARY: [(&str, Unary); 10] = [
    ("neg", |t, x| t.neg(x)),
    ("relu", |t, x| t.relu(x)),
    ("tanh", |t, x| t.tanh(x)),
    ("sigmoid", |t, x| t.sigmoid(x)),
    ("exp", |t, x| t.exp(x)),
    ("ln", |t, x| t.ln(x)),
    ("sqrt", |t, x| t.sqrt(x)),
    ("safe_ln", |t, x| t.safe_ln(x)),
    ("safe_ln_eps", |t, x| t.safe_ln_eps(x, 0.5)),
    ("safe_sqrt", |t, x| t.safe_sqrt(x)),
];

const BINARY: [(&str, Binary); 9] = [
    ("add", |t, a, b| t.add(a, b)),
    ("sub", |t, a, b| t.sub(a, b)),
    ("mul", |t, a, b| t.mul(a, b)),
    ("div", |t, a, b| t.div(a, b)),
    ("safe_div", |t, a, b| t.safe_div(a, b)),
    ("safe_div_eps", |t, a, b| t.safe_div_eps(a, b, 0.5)),
    ("safe_div_signed", |t, a, b| t.safe_div_signed(a, b)),
    ("safe_div_signed_eps", |t, a, b| {
        t.safe_div_signed_eps(a, b, 0.5)
    }),
    ("mask", |t, a, b| t.mask(a, b)),
];

const TERNARY: [(&str, Ternary); 2] = [
    ("masked_div", |t, a, b, c| t.masked_div(a, b, c)),
    ("select", |t, a, b, c| t.select(a, b, c)),
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn strong_zero_elementwise(
        a in specials(6),
        b in specials(6),
        c in specials(6),
        factor in special(),
        seed in seed_lanes(6),
        how in delivery(),
    ) {
        let run_unary = |name: &str, op: UnaryRef<'_>| -> Res {
            let mut tape = Tp::new();
            let x = tape.variable(&tensor::<2, 3>(&a)).map_err(fail)?;
            let out = op(&mut tape, x).map_err(fail)?;
            deliver(&mut tape, out, &seed, how).map_err(fail)?;
            check_zero_lanes(name, &seed, &[("x", grad_of(&tape, x)?)])
        };
        for (name, op) in UNARY {
            run_unary(name, &op)?;
        }
        run_unary("scale", &|t, x| t.scale(x, factor))?;
        run_unary("safe_sqrt_eps", &|t, x| t.safe_sqrt_eps(x, 0.5))?;

        for (name, op) in BINARY {
            let mut tape = Tp::new();
            let x = tape.variable(&tensor::<2, 3>(&a)).map_err(fail)?;
            let y = tape.variable(&tensor::<2, 3>(&b)).map_err(fail)?;
            let out = op(&mut tape, x, y).map_err(fail)?;
            deliver(&mut tape, out, &seed, how).map_err(fail)?;
            check_zero_lanes(name, &seed, &[
                ("a", grad_of(&tape, x)?),
                ("b", grad_of(&tape, y)?),
            ])?;
        }

        for (name, op) in TERNARY {
            let mut tape = Tp::new();
            let x = tape.variable(&tensor::<2, 3>(&a)).map_err(fail)?;
            let y = tape.variable(&tensor::<2, 3>(&b)).map_err(fail)?;
            let z = tape.variable(&tensor::<2, 3>(&c)).map_err(fail)?;
            let out = op(&mut tape, x, y, z).map_err(fail)?;
            deliver(&mut tape, out, &seed, how).map_err(fail)?;
            check_zero_lanes(name, &seed, &[
                ("first", grad_of(&tape, x)?),
                ("second", grad_of(&tape, y)?),
                ("third", grad_of(&tape, z)?),
            ])?;
        }
    }

    // transpose: output lane (c, r) feeds input lane (r, c).
    #[test]
    fn strong_zero_transpose(x in specials(6), seed in seed_lanes(6), how in delivery()) {
        let mut tape = Tp::new();
        let xv = tape.variable(&tensor::<2, 3>(&x)).map_err(fail)?;
        let out = tape.transpose(xv).map_err(fail)?;
        deliver(&mut tape, out, &seed, how).map_err(fail)?;
        // The seed as seen from the input's lanes.
        let seed_in_x = transpose_ref(&seed, 3, 2);
        check_zero_lanes("transpose", &seed_in_x, &[("x", grad_of(&tape, xv)?)])?;
    }

    // add_row: lane (r, c) feeds x (r, c) and row c; row c is zero when its whole column is.
    #[test]
    fn strong_zero_add_row(
        x in specials(12),
        row in specials(4),
        seed in seed_lanes(12),
        zero_cols in vec(any::<bool>(), 4),
        how in delivery(),
    ) {
        let seed: Vec<f64> = seed.iter().enumerate()
            .map(|(k, &s)| if zero_cols[k % 4] { 0.0 } else { s })
            .collect();
        let mut tape = Tp::new();
        let xv = tape.variable(&tensor::<3, 4>(&x)).map_err(fail)?;
        let rv = tape.variable(&tensor::<1, 4>(&row)).map_err(fail)?;
        let out = tape.add_row(xv, rv).map_err(fail)?;
        deliver(&mut tape, out, &seed, how).map_err(fail)?;
        check_zero_lanes("add_row", &seed, &[("x", grad_of(&tape, xv)?)])?;
        let column_seed: Vec<f64> = (0..4)
            .map(|c| if (0..3).all(|r| seed[r * 4 + c] == 0.0) { 0.0 } else { 1.0 })
            .collect();
        check_zero_lanes("add_row", &column_seed, &[("row", grad_of(&tape, rv)?)])?;
    }

    // matmul: a zero seed row i gives a zero row i of dA; a zero seed column j gives a zero
    // column j of dB; an all-zero seed gives all-zero gradients.
    #[test]
    fn strong_zero_matmul(
        a in specials(6),
        b in specials(12),
        seed in seed_lanes(8),
        zero_rows in vec(any::<bool>(), 2),
        zero_cols in vec(any::<bool>(), 4),
        all_zero in any::<bool>(),
        how in delivery(),
    ) {
        let seed: Vec<f64> = seed.iter().enumerate()
            .map(|(k, &s)| if all_zero || zero_rows[k / 4] || zero_cols[k % 4] { 0.0 } else { s })
            .collect();
        let mut tape = Tp::new();
        let av = tape.variable(&tensor::<2, 3>(&a)).map_err(fail)?;
        let bv = tape.variable(&tensor::<3, 4>(&b)).map_err(fail)?;
        let out = tape.matmul(av, bv).map_err(fail)?;
        deliver(&mut tape, out, &seed, how).map_err(fail)?;
        let ga = grad_of(&tape, av)?;
        let gb = grad_of(&tape, bv)?;
        // Upstream as seen by each lane of A (row i) and of B (column j).
        let seed_a: Vec<f64> = (0..6)
            .map(|k| if (0..4).all(|j| seed[(k / 3) * 4 + j] == 0.0) { 0.0 } else { 1.0 })
            .collect();
        let seed_b: Vec<f64> = (0..12)
            .map(|k| if (0..2).all(|i| seed[i * 4 + k % 4] == 0.0) { 0.0 } else { 1.0 })
            .collect();
        check_zero_lanes("matmul", &seed_a, &[("a", ga.clone())])?;
        check_zero_lanes("matmul", &seed_b, &[("b", gb.clone())])?;
        if all_zero {
            check_all_zero("matmul", &[("a", ga), ("b", gb)])?;
        }
    }

    // linear, linear_relu: a zero input contributes nothing to the value, whatever its
    // weight; a zero seed row i gives a zero row i of dx, a zero seed column j a zero column j
    // of dW and a zero db[j]; for linear_relu, so does a pre-activation that is not positive.
    #[test]
    fn strong_zero_linear(
        x in specials(6),
        w in specials(12),
        b in specials(4),
        seed in seed_lanes(8),
        zero_rows in vec(any::<bool>(), 2),
        zero_cols in vec(any::<bool>(), 4),
        relu in any::<bool>(),
        how in delivery(),
    ) {
        let name = if relu { "linear_relu" } else { "linear" };
        let seed: Vec<f64> = seed.iter().enumerate()
            .map(|(k, &s)| if zero_rows[k / 4] || zero_cols[k % 4] { 0.0 } else { s })
            .collect();
        let mut tape = Tp::new();
        let xv = tape.variable(&tensor::<2, 3>(&x)).map_err(fail)?;
        let wv = tape.variable(&tensor::<3, 4>(&w)).map_err(fail)?;
        let bv = tape.variable(&tensor::<1, 4>(&b)).map_err(fail)?;
        let out = if relu { tape.linear_relu(xv, wv, bv) } else { tape.linear(xv, wv, bv) }
            .map_err(fail)?;
        let value = tape.value(out).map_err(fail)?;
        for (k, (&v, e)) in value.as_slice().iter().zip(linear_ref(&x, &w, &b, 3, relu)).enumerate() {
            prop_assert!(v == e || (v.is_nan() && e.is_nan()), "{}: value[{}] = {} but {}", name, k, v, e);
        }
        deliver(&mut tape, out, &seed, how).map_err(fail)?;
        // The upstream each output lane passes on: zero where the seed is, and for
        // linear_relu where the pre-activation is not positive.
        let pre = linear_ref(&x, &w, &b, 3, false);
        let through: Vec<f64> = seed.iter().zip(&pre)
            .map(|(&s, &p)| if s == 0.0 || (relu && (p <= 0.0 || p.is_nan())) { 0.0 } else { 1.0 })
            .collect();
        let seed_x: Vec<f64> = (0..6)
            .map(|k| if (0..4).all(|j| through[(k / 3) * 4 + j] == 0.0) { 0.0 } else { 1.0 })
            .collect();
        let seed_w: Vec<f64> = (0..12)
            .map(|k| if (0..2).all(|i| through[i * 4 + k % 4] == 0.0) { 0.0 } else { 1.0 })
            .collect();
        check_zero_lanes(name, &seed_x, &[("x", grad_of(&tape, xv)?)])?;
        check_zero_lanes(name, &seed_w, &[("weight", grad_of(&tape, wv)?)])?;
        check_zero_lanes(name, &seed_w[..4], &[("bias", grad_of(&tape, bv)?)])?;
    }

    // log_sum_exp: a zero seed for row r gives a zero gradient row r.
    #[test]
    fn strong_zero_log_sum_exp(x in specials(12), seed in seed_lanes(3), how in delivery()) {
        let mut tape = Tp::new();
        let xv = tape.variable(&tensor::<3, 4>(&x)).map_err(fail)?;
        let out = tape.log_sum_exp(xv).map_err(fail)?;
        deliver(&mut tape, out, &seed, how).map_err(fail)?;
        let seed_in_x: Vec<f64> = (0..12).map(|k| seed[k / 4]).collect();
        check_zero_lanes("log_sum_exp", &seed_in_x, &[("x", grad_of(&tape, xv)?)])?;
    }

    // softmax and layer_norm_eps: each output lane depends on its whole row, so a lane's
    // zero upstream does not make its own gradient zero; a row whose upstream is all zero
    // gives an exactly zero gradient row, whatever `inf` or `nan` the row holds.
    #[test]
    fn strong_zero_row_ops(
        x in specials(12),
        seed in seed_lanes(12),
        zero_rows in vec(any::<bool>(), 3),
        how in delivery(),
    ) {
        let seed: Vec<f64> = seed.iter().enumerate()
            .map(|(k, &s)| if zero_rows[k / 4] { 0.0 } else { s })
            .collect();
        let seed_rows: Vec<f64> = (0..12)
            .map(|k| if (0..4).all(|c| seed[(k / 4) * 4 + c] == 0.0) { 0.0 } else { 1.0 })
            .collect();
        let ops: [(&str, Unary34); 3] = [
            ("softmax", |t, x| t.softmax(x)),
            ("layer_norm_eps", |t, x| t.layer_norm_eps(x, 0.5)),
            ("layer_norm", |t, x| t.layer_norm(x)),
        ];
        for (name, op) in ops {
            let mut tape = Tp::new();
            let xv = tape.variable(&tensor::<3, 4>(&x)).map_err(fail)?;
            let out = op(&mut tape, xv).map_err(fail)?;
            deliver(&mut tape, out, &seed, how).map_err(fail)?;
            check_zero_lanes(name, &seed_rows, &[("x", grad_of(&tape, xv)?)])?;
        }
    }

    // gather: the lanes not gathered get exactly zero whatever they hold, the gathered lane
    // of row r exactly the upstream of row r (zero included).
    #[test]
    fn strong_zero_gather(
        x in specials(12),
        index in proptest::array::uniform3(0usize..4),
        seed in seed_lanes(3),
        how in delivery(),
    ) {
        let mut tape = Tp::new();
        let xv = tape.variable(&tensor::<3, 4>(&x)).map_err(fail)?;
        let out = tape.gather(xv, &index).map_err(fail)?;
        let value = tape.value(out).map_err(fail)?;
        for (r, (&v, e)) in value.as_slice().iter().zip(gather_ref(&x, 4, &index)).enumerate() {
            prop_assert!(v == e || (v.is_nan() && e.is_nan()), "gather: value[{}] = {} but {}", r, v, e);
        }
        deliver(&mut tape, out, &seed, how).map_err(fail)?;
        let expected: Vec<f64> = (0..12)
            .map(|k| if k % 4 == index[k / 4] { seed[k / 4] } else { 0.0 })
            .collect();
        let g = grad_of(&tape, xv)?;
        prop_assert_eq!(&g, &expected, "gather: index {:?}, x {:?}", index, x);
    }

    // row_max: the gradient of each row goes to the lane its value is taken from (the first
    // `nan`, else the first largest value) and is exactly the row's upstream (zero
    // included); every other lane gets exactly zero, whatever it holds.
    #[test]
    fn strong_zero_row_max(x in specials(12), seed in seed_lanes(3), how in delivery()) {
        let mut tape = Tp::new();
        let xv = tape.variable(&tensor::<3, 4>(&x)).map_err(fail)?;
        let out = tape.row_max(xv).map_err(fail)?;
        let value = tape.value(out).map_err(fail)?;
        for (r, (&v, e)) in value.as_slice().iter().zip(row_max_ref(&x, 4)).enumerate() {
            prop_assert!(v == e || (v.is_nan() && e.is_nan()), "row_max: value[{}] = {} but {}", r, v, e);
        }
        deliver(&mut tape, out, &seed, how).map_err(fail)?;
        let expected: Vec<f64> = (0..12)
            .map(|k| {
                let r = k / 4;
                if k % 4 == first_largest(&x[r * 4..r * 4 + 4]) { seed[r] } else { 0.0 }
            })
            .collect();
        let g = grad_of(&tape, xv)?;
        prop_assert_eq!(&g, &expected, "row_max: x {:?}", x);
    }

    // Reductions to 1x1 with a zero upstream gradient: every input gradient is exactly zero.
    #[test]
    fn strong_zero_reductions(
        x in specials(12),
        zero in prop_oneof![Just(0.0), Just(-0.0)],
        labels in proptest::array::uniform3(0usize..4),
        how in delivery(),
    ) {
        let reductions: [(&str, Reduction<'_>); 3] = [
            ("sum", &|t, x| t.sum(x)),
            ("mean", &|t, x| t.mean(x)),
            ("softmax_cross_entropy", &|t, x| t.softmax_cross_entropy(x, &labels)),
        ];
        for (name, op) in reductions {
            let mut tape = Tp::new();
            let xv = tape.variable(&tensor::<3, 4>(&x)).map_err(fail)?;
            let out = op(&mut tape, xv).map_err(fail)?;
            deliver(&mut tape, out, &[zero], how).map_err(fail)?;
            check_all_zero(name, &[("x", grad_of(&tape, xv)?)])?;
        }
    }

    // A chain of raw ops on a parameter: lanes masked at the end stay exactly zero all the way
    // back, through ln(0), sqrt(-1), 1/0, and the parameter's accumulated gradient.
    #[test]
    fn strong_zero_chain(
        x in specials(6),
        den in specials(6),
        seed in seed_lanes(6),
        how in delivery(),
    ) {
        let mut tape = Tp::new();
        let p = tape.parameter(&tensor::<2, 3>(&x)).map_err(fail)?;
        let d = tape.variable(&tensor::<2, 3>(&den)).map_err(fail)?;
        let y = tape.ln(p).map_err(fail)?;
        let y = tape.sqrt(y).map_err(fail)?;
        let y = tape.div(y, d).map_err(fail)?;
        let y = tape.exp(y).map_err(fail)?;
        let y = tape.mul(y, p).map_err(fail)?;
        let y = tape.tanh(y).map_err(fail)?;
        deliver(&mut tape, y, &seed, how).map_err(fail)?;
        check_zero_lanes("chain", &seed, &[
            ("p", grad_of(&tape, p)?),
            ("den", grad_of(&tape, d)?),
        ])?;
    }
}

// ---------------------------------------------------------------------------------------------
// Part 3: memory reuse and error paths

type StepTape = Tape<f64, Cap<16, 128>>;

const W0: [[f64; 4]; 3] = [
    [0.5, -0.25, 0.75, 0.1],
    [-0.3, 0.2, 0.6, -0.8],
    [0.9, -0.4, 0.05, 0.3],
];
const B0: [[f64; 4]; 1] = [[0.1, -0.2, 0.0, 0.3]];

/// One training step's graph: `sce(tanh(x W + b), labels)`.
fn record_step(
    tape: &mut StepTape,
    w: Var<3, 4>,
    b: Var<1, 4>,
    step: usize,
) -> Result<(Var<1, 1>, Var<2, 3>), TapeError> {
    let s = step as f64;
    let x = tape.variable(&Tensor::from_fn(|r, c| {
        ((s + 1.0) * 0.37 + r as f64 * 1.3 - c as f64 * 0.7).sin()
    }))?;
    let h = tape.matmul(x, w)?;
    let h = tape.add_row(h, b)?;
    let h = tape.tanh(h)?;
    let loss = tape.softmax_cross_entropy(h, &[step % 4, (step / 4) % 4])?;
    Ok((loss, x))
}

fn bits_of(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn a_thousand_steps_reuse_the_same_nodes_and_scalars() -> Result<(), TapeError> {
    // Nodes: W, b | x, matmul, add_row, tanh, labels, loss.
    const NODES: usize = 2 + 6;
    // Scalars: W 3x4, b 1x4 | x 2x3, matmul 2x4, add_row 2x4, tanh 2x4, labels 2x1, loss 1
    // and the softmax it keeps for its backward 2x4.
    const SCALARS: usize = 12 + 4 + 6 + 8 + 8 + 8 + 2 + 1 + 8;
    let mut tape = StepTape::new();
    let w = tape.parameter(&Tensor::new(W0))?;
    let b = tape.parameter(&Tensor::new(B0))?;
    for step in 0..1000 {
        tape.clear_activations();
        tape.zero_grad();
        let (loss, x) = record_step(&mut tape, w, b, step)?;
        tape.backward(loss)?;
        assert_eq!(
            (tape.nodes().len(), tape.scalars_used()),
            (NODES, SCALARS),
            "step {step}"
        );

        // The reused tape computes exactly what a fresh tape computes.
        let mut fresh = StepTape::new();
        let fw = fresh.parameter(&tape.value(w)?)?;
        let fb = fresh.parameter(&tape.value(b)?)?;
        let (fresh_loss, fresh_x) = record_step(&mut fresh, fw, fb, step)?;
        fresh.backward(fresh_loss)?;
        assert_eq!(
            tape.scalar(loss)?.to_bits(),
            fresh.scalar(fresh_loss)?.to_bits(),
            "step {step}"
        );
        assert_eq!(
            bits_of(tape.parameter_grads().expect("gradients")),
            bits_of(fresh.parameter_grads().expect("gradients")),
            "step {step}"
        );
        assert_eq!(
            bits_of(tape.grad(x)?.as_slice()),
            bits_of(fresh.grad(fresh_x)?.as_slice()),
            "step {step}"
        );
        assert!(tape.scalar(loss)?.is_finite());

        // An SGD step, so the parameters (which persist) change from step to step.
        tape.update_parameters(|_, v, g| *v -= 0.05 * g);
    }
    assert_ne!(tape.value(w)?, Tensor::new(W0), "the parameters trained");
    Ok(())
}

/// Everything observable about a tape's recorded values and gradients, bit for bit.
fn snapshot<const N: usize, const S: usize>(
    tape: &Tape<f64, Cap<N, S>>,
    vars: &[Var<2, 3>],
) -> (usize, usize, Vec<u64>) {
    let mut bits = Vec::new();
    for &v in vars {
        bits.extend(bits_of(tape.value(v).expect("value").as_slice()));
        bits.extend(bits_of(tape.grad(v).expect("grad").as_slice()));
    }
    (tape.nodes().len(), tape.scalars_used(), bits)
}

#[test]
fn node_capacity_is_an_error_that_changes_nothing() -> Result<(), TapeError> {
    let full = TapeError::NodeCapacity { capacity: 4 };
    let mut tape = Tape::<f64, Cap<4, 64>>::new();
    let p = tape.parameter(&Tensor::new([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))?;
    let x = tape.variable(&Tensor::new([[0.5, -1.0, 2.0], [1.5, 0.25, -3.0]]))?;
    let y = tape.mul(p, x)?;
    let z = tape.exp(y)?;
    tape.backward_with_seed(z, &Tensor::full(1.0))?;
    let before = snapshot(&tape, &[p, x, y, z]);
    assert_eq!((before.0, before.1), (4, 24));

    assert_eq!(tape.exp(z), Err(full));
    assert_eq!(tape.add(x, y), Err(full));
    assert_eq!(tape.variable(&Tensor::<f64, 2, 3>::zeros()), Err(full));
    assert_eq!(tape.sum(z), Err(full));
    assert_eq!(tape.softmax_cross_entropy(z, &[0, 1]), Err(full));
    assert_eq!(snapshot(&tape, &[p, x, y, z]), before);
    // The expected values are independent of the tape: exp(p * x).
    let expected = [0.5f64, -2.0, 6.0, 6.0, 1.25, -18.0].map(f64::exp);
    for (v, e) in tape.value(z)?.as_slice().iter().zip(expected) {
        assert!((v - e).abs() <= 1e-12 * e, "exp(p * x): {v} vs {e}");
    }

    // A two-node op with room for one node records neither of them.
    let mut tape = Tape::<f64, Cap<3, 64>>::new();
    let z = tape.variable(&Tensor::new([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))?;
    let e = tape.exp(z)?;
    let before = snapshot(&tape, &[z, e]);
    assert_eq!(
        tape.softmax_cross_entropy(z, &[0, 2]),
        Err(TapeError::NodeCapacity { capacity: 3 })
    );
    assert_eq!(snapshot(&tape, &[z, e]), before);
    assert_eq!(tape.nodes().len(), 2);
    Ok(())
}

#[test]
fn scalar_capacity_is_an_error_that_changes_nothing() -> Result<(), TapeError> {
    let mut tape = Tape::<f64, Cap<16, 14>>::new();
    let x = tape.variable(&Tensor::new([[0.5, 1.0, 1.5], [2.0, 2.5, 3.0]]))?; // 6
    let y = tape.exp(x)?; // 12
    tape.backward_with_seed(y, &Tensor::full(2.0))?;
    let before = snapshot(&tape, &[x, y]);
    assert_eq!(
        tape.exp(y),
        Err(TapeError::ScalarCapacity {
            capacity: 14,
            used: 12,
            requested: 6
        })
    );
    assert_eq!(snapshot(&tape, &[x, y]), before);
    // The gradient of 2 * exp is still there: 2 * e^x.
    for (g, v) in tape
        .grad(x)?
        .as_slice()
        .iter()
        .zip([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    {
        assert!((g - 2.0 * f64::exp(v)).abs() <= 1e-12 * g.abs());
    }

    let s = tape.sum(y)?; // 13 used.

    // Softmax cross-entropy needs its labels (2), its value (1) and the softmax of the
    // logits (6): 9 slots, 1 left.
    assert_eq!(
        tape.softmax_cross_entropy(y, &[0, 1]),
        Err(TapeError::ScalarCapacity {
            capacity: 14,
            used: 13,
            requested: 9
        })
    );
    assert_eq!((tape.nodes().len(), tape.scalars_used()), (3, 13));
    // Exactly one slot fits.
    let m = tape.mean(y)?;
    assert_eq!(tape.scalars_used(), 14);
    assert_eq!(
        tape.sum(x),
        Err(TapeError::ScalarCapacity {
            capacity: 14,
            used: 14,
            requested: 1
        })
    );
    let expected: f64 = [0.5f64, 1.0, 1.5, 2.0, 2.5, 3.0]
        .iter()
        .map(|v| v.exp())
        .sum();
    assert!((tape.scalar(s)? - expected).abs() <= 1e-12 * expected);
    assert!((tape.scalar(m)? - expected / 6.0).abs() <= 1e-12 * expected);
    Ok(())
}

#[test]
fn stale_handles_are_rejected_after_clear_activations() -> Result<(), TapeError> {
    let mut tape = Tape::<f64, Cap<8, 64>>::new();
    let p = tape.parameter(&Tensor::new([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))?;
    let x = tape.variable(&Tensor::new([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]))?;
    let y = tape.mul(p, x)?;
    let loss = tape.sum(y)?;
    tape.backward(loss)?;
    tape.clear_activations();

    assert_eq!(tape.value(x), Err(TapeError::StaleVar { node: 1 }));
    assert_eq!(tape.grad(y), Err(TapeError::StaleVar { node: 2 }));
    assert_eq!(tape.scalar(loss), Err(TapeError::StaleVar { node: 3 }));
    assert_eq!(tape.exp(x), Err(TapeError::StaleVar { node: 1 }));
    assert_eq!(tape.backward(loss), Err(TapeError::StaleVar { node: 3 }));
    assert_eq!((tape.nodes().len(), tape.scalars_used()), (1, 6));

    // A new node at the same index does not revive the old handle.
    let x2 = tape.variable(&Tensor::new([[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]]))?;
    assert_eq!(x2.node(), x.node());
    assert_eq!(tape.value(x), Err(TapeError::StaleVar { node: 1 }));
    assert_eq!(tape.mul(p, x), Err(TapeError::StaleVar { node: 1 }));
    assert_eq!(tape.value(x2)?, Tensor::full(3.0));
    // Parameters survive, with their gradient (= x of the cleared step).
    assert_eq!(
        tape.value(p)?,
        Tensor::new([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    );
    assert_eq!(
        tape.grad(p)?,
        Tensor::new([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    );
    Ok(())
}

// After clear_activations a parameter may be recorded again; it takes the index of the first
// cleared activation, and the stale activation handle must not name it.
#[test]
fn stale_handle_does_not_alias_a_parameter_recorded_after_clear() -> Result<(), TapeError> {
    let mut tape = Tape::<f64, Cap<8, 64>>::new();
    let _p = tape.parameter(&Tensor::new([[1.0, 2.0]]))?;
    let x = tape.variable(&Tensor::new([[10.0, 20.0]]))?;
    tape.clear_activations();
    let q = tape.parameter(&Tensor::new([[7.0, 8.0]]))?;
    assert_eq!(q.node(), x.node());
    assert_eq!(tape.value(x), Err(TapeError::StaleVar { node: 1 }));
    assert_eq!(tape.exp(x), Err(TapeError::StaleVar { node: 1 }));
    Ok(())
}

#[test]
fn out_of_range_label_is_rejected_and_records_nothing() -> Result<(), TapeError> {
    let mut tape = Tape::<f64, Cap<8, 64>>::new();
    let z = tape.variable(&Tensor::new([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]))?;
    let before = (tape.nodes().len(), tape.scalars_used());
    assert_eq!(
        tape.softmax_cross_entropy(z, &[1, 4]),
        Err(TapeError::LabelOutOfRange {
            row: 1,
            label: 4,
            classes: 4
        })
    );
    assert_eq!(
        tape.softmax_cross_entropy(z, &[usize::MAX, 0]),
        Err(TapeError::LabelOutOfRange {
            row: 0,
            label: usize::MAX,
            classes: 4
        })
    );
    assert_eq!((tape.nodes().len(), tape.scalars_used()), before);
    // The last valid label still works.
    let loss = tape.softmax_cross_entropy(z, &[3, 3])?;
    let expected = softmax_cross_entropy_ref(&[1.0, 2.0, 3.0, 4.0, 4.0, 3.0, 2.0, 1.0], 4, &[3, 3]);
    assert!((tape.scalar(loss)? - expected).abs() <= 1e-12);
    Ok(())
}

// The documented subgradient of relu at 0 is 0 (for both signed zeros); the finite-difference
// check above stays away from the kink.
#[test]
fn relu_gradient_at_the_kink_is_zero() -> Result<(), TapeError> {
    let mut tape = Tape::<f64, Cap<4, 32>>::new();
    let x = tape.variable(&Tensor::new([[0.0, -0.0, 1e-300], [-1e-300, 2.0, -2.0]]))?;
    let y = tape.relu(x)?;
    tape.backward_with_seed(y, &Tensor::full(3.0))?;
    assert_eq!(
        tape.grad(x)?,
        Tensor::new([[0.0, 0.0, 3.0], [0.0, 3.0, 0.0]])
    );
    assert_eq!(
        tape.value(y)?,
        Tensor::new([[0.0, 0.0, 1e-300], [0.0, 2.0, 0.0]])
    );
    Ok(())
}

#[test]
fn parameter_gradients_accumulate_until_zero_grad() -> Result<(), TapeError> {
    let xs = [[0.5, -1.0, 2.0], [1.5, 0.25, -3.0]];
    let mut tape = Tape::<f64, Cap<8, 64>>::new();
    let p = tape.parameter(&Tensor::new([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))?;
    let x = tape.variable(&Tensor::new(xs))?;
    let y = tape.mul(p, x)?;
    let loss = tape.sum(y)?;
    // d loss / d p = x, d loss / d x = p.
    tape.backward(loss)?;
    assert_eq!(tape.grad(p)?, Tensor::new(xs));
    tape.backward(loss)?;
    assert_eq!(
        tape.grad(p)?,
        Tensor::new(xs).scale(2.0),
        "parameters accumulate"
    );
    assert_eq!(
        tape.grad(x)?,
        Tensor::new([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        "activations are overwritten"
    );
    // Across clear_activations too.
    tape.clear_activations();
    let x = tape.variable(&Tensor::new(xs))?;
    let y = tape.mul(p, x)?;
    let loss = tape.sum(y)?;
    tape.backward(loss)?;
    assert_eq!(tape.grad(p)?, Tensor::new(xs).scale(3.0));
    tape.zero_grad();
    assert_eq!(tape.grad(p)?, Tensor::zeros());
    assert_eq!(tape.parameter_grads().expect("gradients"), &[0.0; 6]);
    tape.backward(loss)?;
    assert_eq!(tape.grad(p)?, Tensor::new(xs));
    Ok(())
}

// The tie rule of row_max: the whole gradient of a row goes to the first of its largest
// values (as `torch.max(x, dim=1)` picks one index). PyTorch's `amax` would split it evenly
// between the tied values instead; this checks the first-index rule, which the finite
// differences above stay away from.
#[test]
fn row_max_gives_a_tied_row_gradient_to_the_first_largest_value() -> Result<(), TapeError> {
    let mut tape = Tape::<f64, Cap<8, 64>>::new();
    let x = tape.variable(&Tensor::new([
        [1.0, 3.0, 3.0, -2.0],
        [5.0, 5.0, 5.0, 5.0],
        [-1.0, 0.5, -1.0, 0.5],
        [
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ],
    ]))?;
    let m = tape.row_max(x)?;
    assert_eq!(
        tape.value(m)?,
        Tensor::new([[3.0], [5.0], [0.5], [f64::NEG_INFINITY]])
    );
    tape.backward_with_seed(m, &Tensor::new([[2.0], [-1.5], [0.25], [4.0]]))?;
    assert_eq!(
        tape.grad(x)?,
        Tensor::new([
            [0.0, 2.0, 0.0, 0.0],
            [-1.5, 0.0, 0.0, 0.0],
            [0.0, 0.25, 0.0, 0.0],
            [4.0, 0.0, 0.0, 0.0],
        ])
    );
    Ok(())
}

#[test]
fn gather_refuses_an_index_outside_the_row_and_records_nothing() -> Result<(), TapeError> {
    let mut tape = Tape::<f64, Cap<8, 64>>::new();
    let x = tape.variable(&Tensor::new([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))?;
    let before = (
        tape.nodes().len(),
        tape.scalars_used(),
        tape.gradients_used(),
    );
    assert_eq!(
        tape.gather(x, &[2, 3]),
        Err(TapeError::IndexOutOfRange {
            row: 1,
            index: 3,
            columns: 3
        })
    );
    assert_eq!(
        (
            tape.nodes().len(),
            tape.scalars_used(),
            tape.gradients_used()
        ),
        before
    );
    // The last column is in range: the index node and the gathered values.
    let g = tape.gather(x, &[2, 0])?;
    assert_eq!(tape.value(g)?, Tensor::new([[3.0], [4.0]]));
    assert_eq!(tape.nodes().len(), before.0 + 2);
    Ok(())
}

/// `x W^T + b` for PyTorch's `[out, in]` weight, plain loops, each output from its bias
/// over the inputs in order.
fn torch_linear_ref(x: &[f64], weight: &[f64], bias: &[f64], inputs: usize) -> Vec<f64> {
    let outputs = bias.len();
    let mut out = Vec::new();
    for row in x.chunks(inputs) {
        for j in 0..outputs {
            let mut acc = bias[j];
            for (k, &xk) in row.iter().enumerate() {
                acc += xk * weight[j * inputs + k];
            }
            out.push(acc);
        }
    }
    out
}

#[test]
fn linear_from_pytorch_computes_x_w_transposed_plus_b() -> Result<(), TapeError> {
    // nn.Linear(4, 3): weight [3, 4], bias [3].
    let torch_weight: Vec<f64> = (0..12).map(|i| ((i as f64) * 0.73 - 2.1).sin()).collect();
    let bias = [0.25, -0.5, 1.0];
    let x: Vec<f64> = (0..8)
        .map(|i| ((i as f64) * 1.37 + 0.4).cos() * 2.0)
        .collect();
    // The transpose, [in, out], by index.
    let mut transposed = vec![0.0; 12];
    for j in 0..3 {
        for k in 0..4 {
            transposed[k * 3 + j] = torch_weight[j * 4 + k];
        }
    }

    let mut tape = Tape::<f64, Cap<16, 128>>::new();
    let torch = Linear::<4, 3>::from_pytorch(
        &mut tape,
        &tensor::<3, 4>(&torch_weight),
        &tensor(&bias),
        Train::All,
    )?;
    let ours = Linear::<4, 3>::from_tensors(
        &mut tape,
        &tensor::<4, 3>(&transposed),
        &tensor(&bias),
        Train::All,
    )?;
    // Trained as `train` says: only the bias of this one.
    let bias_only = Linear::<4, 3>::from_pytorch(
        &mut tape,
        &tensor::<3, 4>(&torch_weight),
        &tensor(&bias),
        Train::BiasOnly,
    )?;
    assert_eq!(tape.trainable_len(), 2 * (12 + 3) + 3);
    for layer in [torch, bias_only] {
        assert_eq!(tape.value(layer.weight)?.as_slice(), &transposed[..]);
        assert_eq!(tape.value(layer.bias)?.as_slice(), &bias[..]);
    }
    let xv = tape.input(&tensor::<2, 4>(&x))?;
    let y_torch = torch.forward(&mut tape, xv)?;
    let y_ours = ours.forward(&mut tape, xv)?;
    let expected = torch_linear_ref(&x, &torch_weight, &bias, 4);
    let got = tape.value(y_torch)?;
    for (k, (&v, &e)) in got.as_slice().iter().zip(&expected).enumerate() {
        assert!(
            (v - e).abs() <= 1e-12 * e.abs().max(1.0),
            "y[{k}] = {v}, x W^T + b = {e}"
        );
    }
    assert_eq!(
        bits_of(got.as_slice()),
        bits_of(tape.value(y_ours)?.as_slice()),
        "from_pytorch and from_tensors with the transpose"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Part 4: closed forms at logits of +-1e4

fn close(actual: f64, expected: f64, tol: f64) -> bool {
    (actual - expected).abs() <= tol
}

fn all_finite(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Loss and logit gradient of softmax cross-entropy on a fresh tape, widened to f64.
fn sce_with_grad<T: Scalar, const R: usize, const C: usize>(
    logits: [[f64; C]; R],
    targets: [usize; R],
) -> Result<(f64, Vec<f64>), TapeError> {
    let mut tape = Tape::<T, Cap<8, 64>>::new();
    let z = tape.variable(&Tensor::new(logits.map(|row| row.map(T::from_f64))))?;
    let loss = tape.softmax_cross_entropy(z, &targets)?;
    tape.backward(loss)?;
    let grad = tape
        .grad(z)?
        .as_slice()
        .iter()
        .map(|g| g.to_f64())
        .collect();
    Ok((tape.scalar(loss)?.to_f64(), grad))
}

fn lse_with_grad<T: Scalar, const C: usize>(row: [f64; C]) -> Result<(f64, Vec<f64>), TapeError> {
    let mut tape = Tape::<T, Cap<8, 64>>::new();
    let x = tape.variable(&Tensor::new([row.map(T::from_f64)]))?;
    let lse = tape.log_sum_exp(x)?;
    tape.backward(lse)?;
    let grad = tape
        .grad(x)?
        .as_slice()
        .iter()
        .map(|g| g.to_f64())
        .collect();
    Ok((tape.scalar(lse)?.to_f64(), grad))
}

fn assert_vec_close(name: &str, actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{name}");
    assert!(
        actual.iter().zip(expected).all(|(&a, &e)| close(a, e, tol)),
        "{name}: got {actual:?}, expected {expected:?}"
    );
}

/// `lse_tol` is the absolute tolerance of a value near `1e4` (a few ulps of the type).
fn closed_forms<T: Scalar>(lse_tol: f64) -> Result<(), TapeError> {
    let ln2 = std::f64::consts::LN_2;
    let ty = std::any::type_name::<T>();

    // Tied logits: softmax [1/2, 1/2], loss ln 2, gradient softmax - onehot.
    for (target, grad) in [(0, [-0.5, 0.5]), (1, [0.5, -0.5])] {
        let (loss, g) = sce_with_grad::<T, 1, 2>([[1e4, 1e4]], [target])?;
        assert!(close(loss, ln2, 1e-6), "{ty}: tied loss {loss}");
        assert_vec_close(
            &format!("{ty}: tied grad, target {target}"),
            &g,
            &grad,
            1e-6,
        );
    }
    let (loss, g) = sce_with_grad::<T, 1, 2>([[-1e4, -1e4]], [1])?;
    assert!(close(loss, ln2, 1e-6), "{ty}: tied negative loss {loss}");
    assert_vec_close(&format!("{ty}: tied negative grad"), &g, &[0.5, -0.5], 1e-6);

    // Separated logits: softmax [1, e^-2e4 = 0].
    let (loss, g) = sce_with_grad::<T, 1, 2>([[1e4, -1e4]], [0])?;
    assert!(close(loss, 0.0, 1e-6), "{ty}: confident right loss {loss}");
    assert_vec_close(
        &format!("{ty}: confident right grad"),
        &g,
        &[0.0, 0.0],
        1e-6,
    );
    let (loss, g) = sce_with_grad::<T, 1, 2>([[1e4, -1e4]], [1])?;
    assert!(
        close(loss, 2e4, 1e-6 * 2e4),
        "{ty}: confident wrong loss {loss}"
    );
    assert_vec_close(
        &format!("{ty}: confident wrong grad"),
        &g,
        &[1.0, -1.0],
        1e-6,
    );

    // Three classes, two tied at the top.
    let (loss, g) = sce_with_grad::<T, 1, 3>([[1e4, -1e4, 1e4]], [2])?;
    assert!(close(loss, ln2, 1e-6), "{ty}: three-class loss {loss}");
    assert_vec_close(
        &format!("{ty}: three-class grad"),
        &g,
        &[0.5, 0.0, -0.5],
        1e-6,
    );

    // A batch of two rows: the loss and the gradient are divided by the number of rows.
    let (loss, g) = sce_with_grad::<T, 2, 2>([[1e4, 1e4], [1e4, -1e4]], [0, 1])?;
    assert!(
        close(loss, (ln2 + 2e4) / 2.0, 1e-6 * 1e4),
        "{ty}: batch loss {loss}"
    );
    assert_vec_close(
        &format!("{ty}: batch grad"),
        &g,
        &[-0.25, 0.25, 0.5, -0.5],
        1e-6,
    );
    let (loss, g) = sce_with_grad::<T, 2, 2>([[1e4, 1e4], [1e4, -1e4]], [0, 0])?;
    assert!(close(loss, ln2 / 2.0, 1e-6), "{ty}: batch loss {loss}");
    assert_vec_close(
        &format!("{ty}: batch grad"),
        &g,
        &[-0.25, 0.25, 0.0, 0.0],
        1e-6,
    );
    assert!(all_finite(&g) && loss.is_finite());

    // log-sum-exp: 1e4 + ln 2.
    for (row, expected) in [
        ([1e4, 1e4], 1e4 + ln2),
        ([1e4, -1e4], 1e4),
        ([-1e4, -1e4], -1e4 + ln2),
    ] {
        let (lse, g) = lse_with_grad::<T, 2>(row)?;
        assert!(close(lse, expected, lse_tol), "{ty}: lse{row:?} = {lse}");
        assert!(all_finite(&g), "{ty}: lse{row:?} gradient {g:?}");
    }
    Ok(())
}

#[test]
fn softmax_cross_entropy_closed_forms_at_1e4_f32() -> Result<(), TapeError> {
    // f32 spacing near 1e4 is 2^-10 ~ 9.8e-4.
    closed_forms::<f32>(1e-3)
}

#[test]
fn softmax_cross_entropy_closed_forms_at_1e4_f64() -> Result<(), TapeError> {
    closed_forms::<f64>(1e-9)
}

/// The gradient of log-sum-exp is the softmax: `[1/2, 1/2]` for tied logits, `[1, 0]` for
/// logits `2e4` apart, whatever their magnitude (as for softmax cross-entropy above).
fn log_sum_exp_gradient_closed_forms<T: Scalar>() -> Result<(), TapeError> {
    let ty = std::any::type_name::<T>();
    for (row, expected) in [
        ([1e4, 1e4], [0.5, 0.5]),
        ([-1e4, -1e4], [0.5, 0.5]),
        ([1e4, -1e4], [1.0, 0.0]),
        ([-1e4, 1e4], [0.0, 1.0]),
    ] {
        let (_, g) = lse_with_grad::<T, 2>(row)?;
        assert_vec_close(&format!("{ty}: d lse{row:?}"), &g, &expected, 1e-6);
    }
    Ok(())
}

#[test]
fn log_sum_exp_gradient_at_1e4_f64() -> Result<(), TapeError> {
    log_sum_exp_gradient_closed_forms::<f64>()
}

// A backward that formed exp(x - lse) from the rounded lse would give 0.4998939 for 0.5 in
// f32 at |x| = 1e4 (spacing 2^-10).
#[test]
fn log_sum_exp_gradient_at_1e4_f32() -> Result<(), TapeError> {
    log_sum_exp_gradient_closed_forms::<f32>()
}
