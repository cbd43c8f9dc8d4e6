//! Gradient checks of the convolutional ops and layers, in three parts:
//!
//! 1. Finite differences in `f64` (proptest) over random geometries: channels, groups,
//!    kernels, strides, paddings, dilations and lengths. Each op's values against a plain
//!    reference written here from PyTorch's definitions (signed indices, the padding read as
//!    zero or skipped), and its gradients against central differences of that reference.
//! 2. A whole CNN on a tape: the gradients of every parameter and of the input against
//!    central differences of the tape's own forward pass.
//! 3. Strong zeros: an `inf` in an input lane whose outputs a mask zeroes sends back exactly
//!    0, through every new op.
//!
//! Expected values come from formulas written in this file, never from the code under test.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use safegrad::nn::{
    AvgPool1d, BatchNorm1d, Build, Conv1d, DepthwiseConv1d, Flatten, GlobalAvgPool1d, Init, Linear,
    MaxPool1d, Module, Relu, Unflatten,
};
use safegrad::ops::batch_norm::{batch_norm, batch_norm_grad, fold_into_conv};
use safegrad::ops::conv::{conv1d, conv1d_grad, Conv1dShape};
use safegrad::ops::pool::{
    avg_pool1d, avg_pool1d_grad, global_avg_pool, global_avg_pool_grad, max_pool1d,
    max_pool1d_grad, Pool1dShape,
};
use safegrad::{Cap, Tape, Tensor, Var};

type Res = Result<(), TestCaseError>;

/// Central-difference step, relative to `max(|x|, 1)`.
const STEP: f64 = 1e-6;
/// Gradient tolerance, as in `gradients.rs`.
const ATOL: f64 = 3e-7;
const RTOL: f64 = 3e-6;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= ATOL + RTOL * a.abs().max(b.abs())
}

/// Central difference of `f` with respect to `x[lane]`.
fn central(x: &[f64], lane: usize, f: &dyn Fn(&[f64]) -> f64) -> f64 {
    let mut xs = x.to_vec();
    let h = STEP * x[lane].abs().max(1.0);
    xs[lane] = x[lane] + h;
    let up = (xs[lane], f(&xs));
    xs[lane] = x[lane] - h;
    let down = (xs[lane], f(&xs));
    (up.1 - down.1) / (up.0 - down.0)
}

fn weighted(u: &[f64], y: &[f64]) -> f64 {
    u.iter().zip(y).map(|(a, b)| a * b).sum()
}

fn check_grad(name: &str, got: &[f64], x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Res {
    prop_assert_eq!(got.len(), x.len());
    for (lane, &g) in got.iter().enumerate() {
        let numeric = central(x, lane, f);
        prop_assert!(
            close(g, numeric),
            "{}: gradient[{}] = {} but central differences give {}",
            name,
            lane,
            g,
            numeric
        );
    }
    Ok(())
}

fn check_values(name: &str, got: &[f64], expected: &[f64]) -> Res {
    prop_assert_eq!(got.len(), expected.len());
    for (k, (&g, &e)) in got.iter().zip(expected).enumerate() {
        prop_assert!(
            g == e || (g - e).abs() <= 1e-12 * e.abs().max(1.0),
            "{}: value[{}] = {} but the reference gives {}",
            name,
            k,
            g,
            e
        );
    }
    Ok(())
}

/// PyTorch's output length, in signed arithmetic.
fn out_len(l_in: usize, k: usize, s: usize, p: usize, d: usize) -> i64 {
    (l_in as i64 + 2 * p as i64 - d as i64 * (k as i64 - 1) - 1).div_euclid(s as i64) + 1
}

// ---------------------------------------------------------------------------------------------
// Part 1: the ops against references

/// A convolution's geometry and values: `(shape, x, w, b, u)`, `u` the upstream weights
/// (exact zeros about a quarter of the time).
fn conv_case() -> impl Strategy<Value = (Conv1dShape, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
    (
        1usize..=3,
        1usize..=3,
        1usize..=3,
        // Up to 9 taps: the tiled kernels take up to 8.
        1usize..=9,
        1usize..=3,
        0usize..=2,
        1usize..=3,
        // Long enough for several tiles of 4 outputs and an overlapping last one.
        0usize..=24,
    )
        .prop_filter_map(
            "an output of at least one value",
            |(per_in, per_out, groups, k, s, p, d, extra)| {
                let span = d * (k - 1) + 1;
                let l_in = (span.saturating_sub(2 * p)).max(1) + extra;
                (out_len(l_in, k, s, p, d) >= 1).then_some((
                    per_in * groups,
                    l_in,
                    per_out * groups,
                    k,
                    s,
                    p,
                    d,
                    groups,
                ))
            },
        )
        .prop_flat_map(|(c_in, l_in, c_out, k, s, p, d, g)| {
            let shape = Conv1dShape::new(c_in, l_in, c_out, k, s, p, d, g);
            assert_eq!(shape.l_out as i64, out_len(l_in, k, s, p, d));
            (
                Just(shape),
                vec(-2.0f64..2.0, c_in * l_in),
                vec(-2.0f64..2.0, c_out * (c_in / g) * k),
                vec(-2.0f64..2.0, c_out),
                vec(
                    prop_oneof![1 => Just(0.0), 3 => -2.0f64..2.0],
                    c_out * shape.l_out,
                ),
            )
        })
}

/// `nn.Conv1d` written from its definition.
fn reference_conv(s: &Conv1dShape, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let l_out = out_len(s.l_in, s.kernel, s.stride, s.padding, s.dilation) as usize;
    let (per, outs) = (s.c_in / s.groups, s.c_out / s.groups);
    let mut y = vec![0.0; s.c_out * l_out];
    for o in 0..s.c_out {
        for t in 0..l_out {
            let mut acc = b[o];
            for i in 0..per {
                let channel = (o / outs) * per + i;
                for k in 0..s.kernel {
                    let at = (t * s.stride + k * s.dilation) as i64 - s.padding as i64;
                    if at >= 0 && (at as usize) < s.l_in {
                        acc += w[(o * per + i) * s.kernel + k] * x[channel * s.l_in + at as usize];
                    }
                }
            }
            y[o * l_out + t] = acc;
        }
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn conv1d_values_and_gradients((shape, x, w, b, u) in conv_case()) {
        let mut y = vec![0.0; shape.c_out * shape.l_out];
        conv1d(&shape, &x, &w, &b, &mut y);
        // The reference adds the same terms in the same order (the bias, each input channel,
        // each tap): the tiled kernel must give the same bits.
        let reference = reference_conv(&shape, &x, &w, &b);
        for (k, (g, e)) in y.iter().zip(&reference).enumerate() {
            prop_assert_eq!(g.to_bits(), e.to_bits(), "conv1d value[{}]: {} vs {}", k, g, e);
        }

        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; b.len()]);
        conv1d_grad(&shape, &x, &w, &u, &mut dx, &mut dw, &mut db);
        check_grad("conv1d dx", &dx, &x, &|x| weighted(&u, &reference_conv(&shape, x, &w, &b)))?;
        check_grad("conv1d dw", &dw, &w, &|w| weighted(&u, &reference_conv(&shape, &x, w, &b)))?;
        check_grad("conv1d db", &db, &b, &|b| weighted(&u, &reference_conv(&shape, &x, &w, b)))?;
    }
}

/// A pooling geometry and values: `(shape, x, u)`; `dilated` allows a dilation above 1.
fn pool_case(dilated: bool) -> impl Strategy<Value = (Pool1dShape, Vec<f64>, Vec<f64>)> {
    let max_d = if dilated { 3 } else { 1 };
    (
        1usize..=3,
        1usize..=4,
        1usize..=3,
        0usize..=2,
        1usize..=max_d,
        0usize..=6,
    )
        .prop_filter_map("a valid pooling", |(c, k, s, p, d, extra)| {
            let span = d * (k - 1) + 1;
            let l_in = (span.saturating_sub(2 * p)).max(1) + extra;
            let l_out = out_len(l_in, k, s, p, d);
            // Every window must read an input element, not only padding.
            let reads = |t: i64| {
                (0..k as i64)
                    .any(|j| (0..l_in as i64).contains(&(t * s as i64 + j * d as i64 - p as i64)))
            };
            (2 * p <= k && l_out >= 1 && (0..l_out).all(reads)).then_some((c, l_in, k, s, p, d))
        })
        .prop_flat_map(|(c, l_in, k, s, p, d)| {
            let shape = Pool1dShape::new(c, l_in, k, s, p, d);
            assert_eq!(shape.l_out as i64, out_len(l_in, k, s, p, d));
            (
                Just(shape),
                vec(-2.0f64..2.0, c * l_in),
                vec(
                    prop_oneof![1 => Just(0.0), 3 => -2.0f64..2.0],
                    c * shape.l_out,
                ),
            )
        })
}

/// The input indices window `t` reads (padding skipped).
fn window(s: &Pool1dShape, t: usize) -> Vec<usize> {
    (0..s.kernel)
        .map(|k| (t * s.stride + k * s.dilation) as i64 - s.padding as i64)
        .filter(|&at| at >= 0 && (at as usize) < s.l_in)
        .map(|at| at as usize)
        .collect()
}

/// `nn.MaxPool1d`: the maximum of each window.
fn reference_max(s: &Pool1dShape, x: &[f64]) -> Vec<f64> {
    let mut y = Vec::new();
    for c in 0..s.channels {
        for t in 0..s.l_out {
            let row = &x[c * s.l_in..];
            y.push(
                window(s, t)
                    .iter()
                    .map(|&i| row[i])
                    .fold(f64::NEG_INFINITY, f64::max),
            );
        }
    }
    y
}

/// `nn.AvgPool1d(count_include_pad=True)`: the window's sum over the kernel length.
fn reference_avg(s: &Pool1dShape, x: &[f64]) -> Vec<f64> {
    let mut y = Vec::new();
    for c in 0..s.channels {
        for t in 0..s.l_out {
            let row = &x[c * s.l_in..];
            y.push(window(s, t).iter().map(|&i| row[i]).sum::<f64>() / s.kernel as f64);
        }
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn max_pool_values_and_gradients((shape, x, u) in pool_case(true)) {
        let mut y = vec![0.0; shape.channels * shape.l_out];
        let mut at = vec![0; y.len()];
        max_pool1d(&shape, &x, &mut y, &mut at);
        check_values("max_pool1d", &y, &reference_max(&shape, &x))?;
        let mut dx = vec![0.0; x.len()];
        max_pool1d_grad(&shape, &x, &u, &mut dx);
        check_grad("max_pool1d dx", &dx, &x, &|x| weighted(&u, &reference_max(&shape, x)))?;
    }

    #[test]
    fn avg_pool_values_and_gradients((shape, x, u) in pool_case(false)) {
        let mut y = vec![0.0; shape.channels * shape.l_out];
        avg_pool1d(&shape, &x, &mut y);
        check_values("avg_pool1d", &y, &reference_avg(&shape, &x))?;
        let mut dx = vec![0.0; x.len()];
        avg_pool1d_grad(&shape, &u, &mut dx);
        check_grad("avg_pool1d dx", &dx, &x, &|x| weighted(&u, &reference_avg(&shape, x)))?;
    }

    #[test]
    fn global_avg_pool_values_and_gradients(
        (c, len) in (1usize..=4, 1usize..=9),
        seed in any::<u64>(),
    ) {
        let x: Vec<f64> = (0..c * len).map(|i| ((seed ^ i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0).collect();
        let u: Vec<f64> = (0..c).map(|i| i as f64 - 1.5).collect();
        let reference = |x: &[f64]| -> Vec<f64> {
            (0..c).map(|ch| x[ch * len..(ch + 1) * len].iter().sum::<f64>() / len as f64).collect()
        };
        let mut y = vec![0.0; c];
        global_avg_pool(&x, len, &mut y);
        check_values("global_avg_pool", &y, &reference(&x))?;
        let mut dx = vec![0.0; x.len()];
        global_avg_pool_grad(&u, len, &mut dx);
        check_grad("global_avg_pool dx", &dx, &x, &|x| weighted(&u, &reference(x)))?;
    }

    #[test]
    fn batch_norm_values_and_gradients(
        (c, len) in (1usize..=4, 1usize..=6),
        values in vec(-2.0f64..2.0, 40),
        variances in vec(0.01f64..4.0, 4),
        eps in prop_oneof![Just(1e-5), Just(0.1), Just(0.0)],
    ) {
        let x = values[..c * len].to_vec();
        // gamma, beta, mean, variance
        let mut stats = vec![0.0; 4 * c];
        for ch in 0..c {
            stats[ch] = values[30 + ch] * 1.5;
            stats[c + ch] = values[34 + ch];
            stats[2 * c + ch] = values[25 + ch];
            stats[3 * c + ch] = variances[ch];
        }
        let u: Vec<f64> = (0..c * len).map(|i| values[(i * 7) % 40]).collect();
        let reference = |x: &[f64]| -> Vec<f64> {
            (0..c * len)
                .map(|i| {
                    let ch = i / len;
                    (x[i] - stats[2 * c + ch]) / (stats[3 * c + ch] + eps).sqrt() * stats[ch] + stats[c + ch]
                })
                .collect()
        };
        let mut y = vec![0.0; c * len];
        batch_norm(&x, len, &stats, eps, &mut y);
        for (k, (&g, &e)) in y.iter().zip(&reference(&x)).enumerate() {
            prop_assert!((g - e).abs() <= 1e-12 * e.abs().max(1.0), "batch_norm value[{}] {} vs {}", k, g, e);
        }
        let mut dx = vec![0.0; x.len()];
        batch_norm_grad(&u, len, &stats, eps, &mut dx);
        check_grad("batch_norm dx", &dx, &x, &|x| weighted(&u, &reference(x)))?;
    }

    /// Folding the normalisation into the convolution before it changes the values by
    /// rounding only.
    #[test]
    fn batch_norm_folds_into_the_convolution(
        (shape, x, w, b, _) in conv_case(),
        raw in vec(-2.0f64..2.0, 64),
    ) {
        let c = shape.c_out;
        let mut stats = vec![0.0; 4 * c];
        for ch in 0..c {
            stats[ch] = raw[ch % 64];
            stats[c + ch] = raw[(ch + 16) % 64];
            stats[2 * c + ch] = raw[(ch + 32) % 64];
            stats[3 * c + ch] = raw[(ch + 48) % 64].abs() + 0.05;
        }
        let eps = 1e-5;
        let conv = reference_conv(&shape, &x, &w, &b);
        let mut two_steps = vec![0.0; conv.len()];
        batch_norm(&conv, shape.l_out, &stats, eps, &mut two_steps);
        let (mut wf, mut bf) = (w.clone(), b.clone());
        fold_into_conv(&shape, &mut wf, &mut bf, &stats, eps).unwrap();
        let folded = reference_conv(&shape, &x, &wf, &bf);
        for (k, (&a, &e)) in folded.iter().zip(&two_steps).enumerate() {
            prop_assert!((a - e).abs() <= 1e-9 * e.abs().max(1.0), "folded[{}] {} vs {}", k, a, e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 2: a whole CNN on a tape

type Cnn = (
    (
        Unflatten<2, 14>,
        Conv1d<2, 14, 4, 7, 3, 2, 1>,
        Relu,
        DepthwiseConv1d<4, 7, 5, 3, 1, 1, 2>,
        BatchNorm1d<4>,
    ),
    (
        MaxPool1d<4, 5, 2, 2>,
        Conv1d<4, 2, 4, 2, 1, 1, 0, 1, 2>,
        Flatten<8>,
        Linear<8, 3>,
    ),
);
/// What a step of [`Cnn`] records with every parameter held and trained.
const CNN_SIZES: safegrad::nn::Sizes = safegrad::nn::sizes::<Cnn>(safegrad::nn::Plan::All);
/// Its tape, from its type: the input recorded as a variable takes gradients too.
type Big = Tape<
    f64,
    Cap<{ CNN_SIZES.nodes }, { CNN_SIZES.values_held }, { CNN_SIZES.gradients + CNN_SIZES.input }>,
>;

/// `sum(u * model(x))` with the parameters `params` (all of them, in recording order).
fn cnn_objective(params: &[f64], x: &[f64], u: &[f64]) -> f64 {
    let mut tape = Big::new();
    let model = Cnn::build(&mut tape, &mut Init::new(5)).unwrap();
    tape.parameters_mut().copy_from_slice(params);
    let x = tape
        .input(&Tensor::<f64, 1, 28>::from_slice(x).unwrap())
        .unwrap();
    let y = model.forward(&mut tape, x).unwrap();
    weighted(u, tape.value(y).unwrap().as_slice())
}

#[test]
fn a_cnn_on_the_tape_matches_finite_differences() {
    let mut tape = Big::new();
    let model = Cnn::build(&mut tape, &mut Init::new(5)).unwrap();
    // Statistics away from the identity, so the normalisation is exercised.
    let bn = model.0 .4;
    tape.set_parameter(
        bn.stats,
        &Tensor::new([
            [1.5, -0.5, 2.0, 0.7],
            [0.1, 0.2, -0.3, 0.4],
            [0.05, -0.1, 0.2, 0.0],
            [0.5, 2.0, 1.0, 0.25],
        ]),
    )
    .unwrap();
    let params = tape.parameters().to_vec();
    let x: Vec<f64> = (0..28)
        .map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0)
        .collect();
    let u = [0.7, -1.3, 0.4];
    let xv = tape
        .variable(&Tensor::<f64, 1, 28>::from_slice(&x).unwrap())
        .unwrap();
    let y = model.forward(&mut tape, xv).unwrap();
    tape.backward_with_seed(y, &Tensor::new([u])).unwrap();

    let dx = tape.grad(xv).unwrap();
    for lane in 0..x.len() {
        let numeric = central(&x, lane, &|x| cnn_objective(&params, x, &u));
        assert!(
            close(dx.as_slice()[lane], numeric),
            "dx[{lane}] {} vs {numeric}",
            dx.as_slice()[lane]
        );
    }
    // Every trainable parameter, in recording order: each layer's kernel (or weights)
    // and bias; the statistics are frozen.
    let mut grads = Vec::new();
    grads.extend_from_slice(tape.flat_grad(model.0 .1.weight).unwrap());
    grads.extend_from_slice(tape.grad(model.0 .1.bias).unwrap().as_slice());
    grads.extend_from_slice(tape.flat_grad(model.0 .3.weight).unwrap());
    grads.extend_from_slice(tape.grad(model.0 .3.bias).unwrap().as_slice());
    let stats_at = grads.len();
    grads.extend_from_slice(&[0.0; 16]);
    grads.extend_from_slice(tape.flat_grad(model.1 .1.weight).unwrap());
    grads.extend_from_slice(tape.grad(model.1 .1.bias).unwrap().as_slice());
    grads.extend_from_slice(tape.grad(model.1 .3.weight).unwrap().as_slice());
    grads.extend_from_slice(tape.grad(model.1 .3.bias).unwrap().as_slice());
    assert_eq!(grads.len(), params.len());
    for (lane, &g) in grads.iter().enumerate() {
        if (stats_at..stats_at + 16).contains(&lane) {
            continue;
        }
        let numeric = central(&params, lane, &|p| cnn_objective(p, &x, &u));
        assert!(close(g, numeric), "parameter {lane}: {g} vs {numeric}");
    }
}

// ---------------------------------------------------------------------------------------------
// Part 3: strong zeros

/// The forward pass of a layer built on the tape before the input is recorded.
type Forward<const R: usize, const C: usize> = Box<dyn Fn(&mut Big, Var<4, 8>) -> Var<R, C>>;

/// Builds a layer with `build`, runs it on a `4 x 8` variable with `special` (`inf`, `-inf`
/// or `nan`) at row 1, column 3, masks the outputs `masked` marks, and returns the input's
/// gradient and the loss.
fn masked_pass<const R: usize, const C: usize>(
    special: f64,
    build: &dyn Fn(&mut Big) -> Forward<R, C>,
    masked: &dyn Fn(usize, usize) -> bool,
) -> (Vec<f64>, f64) {
    let mut tape = Big::new();
    let op = build(&mut tape);
    let mut x =
        Tensor::<f64, 4, 8>::from_slice(&(0..32).map(|i| i as f64 * 0.1 - 1.0).collect::<Vec<_>>())
            .unwrap();
    x.as_mut_slice()[8 + 3] = special;
    let xv = tape.variable(&x).unwrap();
    let y = op(&mut tape, xv);
    let mut keep = Tensor::<f64, R, C>::zeros();
    for r in 0..R {
        for c in 0..C {
            keep.as_mut_slice()[r * C + c] = if masked(r, c) { 0.0 } else { 1.0 };
        }
    }
    let keep = tape.constant(&keep).unwrap();
    let masked_y = tape.mask(keep, y).unwrap();
    let loss = tape.sum(masked_y).unwrap();
    tape.backward(loss).unwrap();
    (
        tape.grad(xv).unwrap().as_slice().to_vec(),
        tape.scalar(loss).unwrap(),
    )
}

/// A layer without parameters as a [`Forward`].
fn stateless<L, const R: usize, const C: usize>(layer: L) -> Forward<R, C>
where
    L: Module<f64, Var<4, 8>, Output = Var<R, C>> + Copy + 'static,
{
    Box::new(move |t, x| layer.forward(t, x).unwrap())
}

/// A layer built with seed 2 as a [`Forward`].
fn built<L, const R: usize, const C: usize>(tape: &mut Big) -> Forward<R, C>
where
    L: Build<f64> + Module<f64, Var<4, 8>, Output = Var<R, C>> + Copy + 'static,
{
    let layer = L::build(tape, &mut Init::new(2)).unwrap();
    Box::new(move |t, x| layer.forward(t, x).unwrap())
}

fn assert_strong_zero(name: &str, (dx, loss): (Vec<f64>, f64)) {
    assert!(loss.is_finite(), "{name}: the masked loss is {loss}");
    assert!(dx.iter().all(|g| g.is_finite()), "{name}: {dx:?}");
    assert_eq!(
        dx[8 + 3].to_bits(),
        0.0f64.to_bits(),
        "{name}: the special lane's gradient"
    );
}

#[test]
fn strong_zeros_hold_through_every_new_op() {
    for special in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN] {
        // Conv1d<4, 8, 2, 6, 3>: output t reads inputs t..t+2 of every channel.
        let conv = masked_pass(special, &built::<Conv1d<4, 8, 2, 6, 3>, 2, 6>, &|_, c| {
            (1..=3).contains(&c)
        });
        assert_strong_zero("conv1d", conv);
        // Depthwise: only channel 1 reads the special lane.
        let depthwise = masked_pass(
            special,
            &built::<DepthwiseConv1d<4, 8, 6, 3>, 4, 6>,
            &|r, c| r == 1 && (1..=3).contains(&c),
        );
        assert_strong_zero("depthwise conv1d", depthwise);
        let max = masked_pass(special, &|_| stateless(MaxPool1d::<4, 8, 4, 2>), &|r, c| {
            r == 1 && c == 1
        });
        assert_strong_zero("max_pool1d", max);
        // Windows [-1, 1], [1, 3], [3, 5], [5, 7]: the middle two read column 3.
        let avg = masked_pass(
            special,
            &|_| stateless(AvgPool1d::<4, 8, 4, 3, 2, 1>),
            &|r, c| r == 1 && (c == 1 || c == 2),
        );
        assert_strong_zero("avg_pool1d", avg);
        let global = masked_pass(special, &|_| stateless(GlobalAvgPool1d::<4>), &|_, c| {
            c == 1
        });
        assert_strong_zero("global_avg_pool", global);
        let bn = masked_pass(special, &built::<BatchNorm1d<4>, 4, 8>, &|r, c| {
            r == 1 && c == 3
        });
        assert_strong_zero("batch_norm", bn);
        let flat = masked_pass(special, &|_| stateless(Flatten::<32>), &|_, c| c == 11);
        assert_strong_zero("flatten", flat);
    }
}

/// Geometries that PyTorch refuses, or whose windows read only padding, are refused.
#[test]
fn inconsistent_geometries_are_refused() {
    let pool = |l_in, k, s, p, d| Pool1dShape::new(1, l_in, k, s, p, d).problem();
    assert_eq!(pool(1, 2, 1, 1, 2), Some("a window reads only padding"));
    assert_eq!(
        pool(8, 2, 2, 2, 1),
        Some("the padding must be at most half the kernel")
    );
    assert_eq!(
        pool(2, 4, 1, 0, 1),
        Some("the window is longer than the padded input")
    );
    assert_eq!(
        pool(8, 2, 0, 0, 1),
        Some("kernel, stride and dilation must be at least 1")
    );
    assert_eq!(pool(8, 2, 2, 1, 1), None);
    let conv = |c_in, c_out, g| Conv1dShape::new(c_in, 8, c_out, 3, 1, 0, 1, g).problem();
    assert_eq!(
        conv(4, 6, 4),
        Some("the channels in and out must be multiples of the groups")
    );
    assert_eq!(
        conv(0, 6, 1),
        Some("a convolution needs at least one channel in and out")
    );
    assert_eq!(conv(4, 8, 4), None);
}

/// Where the mask keeps an output that reads the special lane, the gradient there is not
/// zero: the strong-zero test above can fail.
#[test]
fn an_unmasked_special_lane_does_get_a_gradient() {
    let (dx, _) = masked_pass(
        f64::INFINITY,
        &|_| stateless(MaxPool1d::<4, 8, 4, 2>),
        &|_, _| false,
    );
    assert_eq!(dx[8 + 3], 1.0);
}
