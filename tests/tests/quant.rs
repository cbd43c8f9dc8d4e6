//! `int8` quantisation: requantisation against hand-computed values (rounding ties,
//! saturation) and against exact rational arithmetic, the integer kernels against plain
//! reference loops written here, and quantise-then-dequantise within half a step.

use proptest::prelude::*;
use safegrad::ops::conv::Conv1dShape;
use safegrad::ops::pool::Pool1dShape;
use safegrad::quant::{
    dot_i8, dot_i8_portable, fold_input_zero_point, qavg_pool1d, qconv1d, qglobal_avg_pool,
    qlinear, qmax_pool1d, quantize_bias, quantize_per_channel, requantize, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul, QuantParams, Requant,
};

#[test]
fn a_shift_out_of_range_counts_as_the_nearer_end() {
    let m = 1 << 30; // 0.5 * 2^(shift + 1 - 1)
    let at = |shift: i32| Requant {
        multiplier: m,
        shift,
    };
    for x in [0, 1, -1, 5, -5, 1000, i32::MAX, i32::MIN] {
        assert_eq!(at(i32::MIN).apply(x), at(-31).apply(x), "{x}");
        assert_eq!(at(-40).apply(x), at(-31).apply(x), "{x}");
        assert_eq!(at(31).apply(x), at(30).apply(x), "{x}");
        assert_eq!(at(i32::MAX).apply(x), at(30).apply(x), "{x}");
    }
    // 1 * 2^30 * 0.5 = 2^29; 3 * 2^30 saturates to 2^31 - 1 before the halving (and -3 *
    // 2^30 to -2^31), which rounds to 2^30.
    assert_eq!(at(30).apply(1), 1 << 29);
    assert_eq!(at(30).apply(3), 1 << 30);
    assert_eq!(at(30).apply(-3), -(1 << 30));
}

#[test]
fn multipliers_by_hand() {
    // 0.75 = 0.75 * 2^0: 0.75 * 2^31 = 1610612736.
    assert_eq!(
        Requant::from_scale(0.75),
        Some(Requant {
            multiplier: 1_610_612_736,
            shift: 0
        })
    );
    // 1.5 = 0.75 * 2^1.
    assert_eq!(
        Requant::from_scale(1.5),
        Some(Requant {
            multiplier: 1_610_612_736,
            shift: 1
        })
    );
    // 2^-3.
    assert_eq!(
        Requant::from_scale(0.125),
        Some(Requant {
            multiplier: 1 << 30,
            shift: -2
        })
    );
    // A mantissa that rounds up to 2^31 moves to the next power of two: 1 - 2^-40.
    let r = Requant::from_scale(1.0 - 2f64.powi(-40)).unwrap();
    assert_eq!(
        r,
        Requant {
            multiplier: 1 << 30,
            shift: 1
        }
    );
    assert_eq!(Requant::from_scale(-1.0), None);
    assert_eq!(Requant::from_scale(f64::NAN), None);
    assert_eq!(Requant::from_scale(2f64.powi(31)), None);
    // Below 2^-32: a zero multiplier.
    assert_eq!(Requant::from_scale(1e-12), Some(Requant::default()));
}

#[test]
fn requantisation_by_hand_with_its_ties() {
    let half = Requant::from_scale(0.5).unwrap();
    let quarter = Requant::from_scale(0.25).unwrap();
    let three_quarters = Requant::from_scale(0.75).unwrap();
    // x * 0.5 in one rounding, ties upward: 0.5 -> 1, -0.5 -> 0, 1.5 -> 2, -1.5 -> -1.
    assert_eq!([1, -1, 3, -3, 4].map(|x| half.apply(x)), [1, 0, 2, -1, 2]);
    // x * 0.25: x / 2 rounded (ties upward), then halved (ties away from zero).
    // 2 -> 1 -> 0.5 -> 1; -2 -> -1 -> -0.5 -> -1; 5 -> 2.5 -> 3 -> 1.5 -> 2 (the exact
    // 1.25 would give 1: two roundings); 6 -> 3 -> 2; -7 -> -3.5 -> -3 -> -1.5 -> -2.
    assert_eq!(
        [2, -2, 5, 6, -7].map(|x| quarter.apply(x)),
        [1, -1, 2, 2, -2]
    );
    // x * 0.75: 1.5 -> 2, -1.5 -> -1, 3 -> 3, 56.25 -> 56.
    assert_eq!(
        [2, -2, 4, 75].map(|x| three_quarters.apply(x)),
        [2, -1, 3, 56]
    );
    // x * 3 (a shift to the left): exact.
    let three = Requant::from_scale(3.0).unwrap();
    assert_eq!([5, -7].map(|x| three.apply(x)), [15, -21]);
}

#[test]
fn the_fixed_point_steps_by_hand() {
    // 2 a b / 2^32 for a = 3, b = 2^30: 1.5 -> 2; -1.5 -> -1 (ties upward).
    assert_eq!(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
    assert_eq!(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
    assert_eq!(saturating_rounding_doubling_high_mul(-5, 1 << 30), -2); // -2.5
    assert_eq!(
        saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
        i32::MAX
    );
    assert_eq!(
        saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
        -i32::MAX
    );
    assert_eq!(rounding_divide_by_pot(3, 1), 2);
    assert_eq!(rounding_divide_by_pot(-3, 1), -2);
    assert_eq!(rounding_divide_by_pot(-6, 2), -2); // -1.5
    assert_eq!(rounding_divide_by_pot(-5, 2), -1); // -1.25
    assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
}

#[test]
fn saturation_at_both_ends_and_the_relu_floor() {
    let one = Requant::from_scale(1.0).unwrap();
    assert_eq!(requantize(127, one, 0, -128), 127);
    assert_eq!(requantize(128, one, 0, -128), 127);
    assert_eq!(requantize(-128, one, 0, -128), -128);
    assert_eq!(requantize(-129, one, 0, -128), -128);
    assert_eq!(requantize(i32::MAX, one, 100, -128), 127);
    assert_eq!(requantize(i32::MIN, one, -100, -128), -128);
    // The zero point moves the range: 120 + 10 saturates, -130 + 10 does not.
    assert_eq!(requantize(120, one, 10, -128), 127);
    assert_eq!(requantize(-130, one, 10, -128), -120);
    // A fused ReLU floors at the output's zero point.
    assert_eq!(requantize(-50, one, -20, -20), -20);
}

/// `x * m * 2^(shift - 31)` in exact rational arithmetic, rounded half away from zero.
fn exact(x: i32, r: Requant) -> i128 {
    let num = i128::from(x) * i128::from(r.multiplier);
    let e = 31 - r.shift; // divide by 2^e (e >= 1 here)
    let den = 1i128 << e;
    let q = num / den;
    let rem = (num % den).abs() * 2;
    if rem >= den {
        q + num.signum()
    } else {
        q
    }
}

/// Values in `[-127, 127]` from a xorshift stream seeded by `seed`.
fn xorshift(seed: u64) -> impl FnMut() -> i32 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 255) as i32 - 127
    }
}

proptest! {
    /// TFLite's two roundings stay within 1 of the exactly rounded product.
    #[test]
    fn requantisation_is_within_one_of_exact(
        x in -(1i32 << 24)..(1 << 24),
        scale in 1e-6f64..8.0,
    ) {
        let r = Requant::from_scale(scale).unwrap();
        let got = i128::from(r.apply(x));
        let want = exact(x, r);
        prop_assert!((got - want).abs() <= 1, "{x} * {scale}: {got} vs {want}");
        // The multiplier stands for the scale within a 2^-31 relative error.
        prop_assert!((r.scale() - scale).abs() <= scale * 2f64.powi(-30));
    }

    /// Quantise, then dequantise: within half a step of the value, for values in range.
    #[test]
    fn quantise_dequantise_within_half_a_step(
        lo in -50.0f32..0.0,
        width in 0.01f32..100.0,
        t in 0.0f32..=1.0,
    ) {
        let p = QuantParams::from_range(lo, lo + width);
        let (min, max) = (p.dequantize(-128), p.dequantize(127));
        let x = min + t * (max - min);
        let back = p.dequantize(p.quantize(x));
        prop_assert!((back - x).abs() <= 0.5 * p.scale * (1.0 + 1e-4), "{x} -> {back}, scale {}", p.scale);
        // 0 is a code exactly.
        prop_assert_eq!(p.dequantize(p.quantize(0.0)), 0.0);
    }

    /// Per-channel weights: within half a step of each channel's scale.
    #[test]
    fn weights_within_half_their_channel_step(
        w in proptest::collection::vec(-3.0f32..3.0, 12),
    ) {
        let mut q = [0i8; 12];
        let mut scales = [0.0f32; 3];
        quantize_per_channel(&w, &mut q, &mut scales);
        for (c, (w_row, q_row)) in w.chunks(4).zip(q.chunks(4)).enumerate() {
            for (&v, &code) in w_row.iter().zip(q_row) {
                prop_assert!((f32::from(code) * scales[c] - v).abs() <= 0.5 * scales[c] * (1.0 + 1e-4));
                prop_assert!(code >= -127);
            }
        }
    }

    #[test]
    fn dot_matches_the_plain_loop(
        pairs in proptest::collection::vec((any::<i8>(), any::<i8>()), 0..70),
    ) {
        let (a, b): (Vec<i8>, Vec<i8>) = pairs.into_iter().unzip();
        let want: i64 = a.iter().zip(&b).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
        prop_assert_eq!(i64::from(dot_i8(&a, &b)), want);
        prop_assert_eq!(i64::from(dot_i8_portable(&a, &b)), want);
    }

    /// A fully connected layer against `requantize(b + sum (x - zp) w)` written out, over
    /// input lengths that take the widened path in pairs of rows and alone (up to 256, with
    /// a tail of 1 to 3) and the plain one (fewer than 4, more than 256).
    #[test]
    fn qlinear_matches_the_plain_loop(
        inputs in 1usize..=300,
        outputs in 1usize..=5,
        seed in any::<u64>(),
        zp in -128i32..=127,
        out_zp in -128i32..=127,
        scale in 1e-5f64..0.01,
        relu in any::<bool>(),
    ) {
        let mut next = xorshift(seed);
        let x: Vec<i8> = (0..inputs).map(|_| (next() - 1).max(-128) as i8).collect();
        let w: Vec<i8> = (0..inputs * outputs).map(|_| next() as i8).collect();
        let bias: Vec<i32> = (0..outputs).map(|_| next() * 40).collect();
        let r = Requant::from_scale(scale).unwrap();
        let min = if relu { out_zp as i8 } else { -128 };
        let mut folded = vec![0i32; outputs];
        fold_input_zero_point(&bias, &w, zp, &mut folded);
        let mut y = vec![0i8; outputs];
        qlinear(&x, &w, &folded, &vec![r; outputs], out_zp, min, &mut y);
        for o in 0..outputs {
            let mut acc = i64::from(bias[o]);
            for i in 0..inputs {
                acc += (i64::from(x[i]) - i64::from(zp)) * i64::from(w[o * inputs + i]);
            }
            let v = i64::from(r.apply(acc as i32)) + i64::from(out_zp);
            let want = v.clamp(i64::from(min), 127) as i8;
            prop_assert_eq!(y[o], want, "output {}", o);
        }
    }

    /// A convolution over random geometries against the definition written out: padding
    /// is the real 0, groups split the channels; windows of fewer than 4 values, of up to
    /// 128 (two at a time, widened) and of more (a tap row at a time), odd and even output
    /// lengths.
    #[test]
    fn qconv1d_matches_the_plain_loop(
        groups in 1usize..=2,
        per_group_in in 1usize..=30,
        per_group_out in 1usize..=3,
        l_in in 4usize..=20,
        kernel in 1usize..=6,
        stride in 1usize..=2,
        padding in 0usize..=1,
        dilation in 1usize..=2,
        seed in any::<u64>(),
        zp in -20i32..=20,
        out_zp in -10i32..=10,
    ) {
        let (c_in, c_out) = (groups * per_group_in, groups * per_group_out);
        let shape = Conv1dShape::new(c_in, l_in, c_out, kernel, stride, padding, dilation, groups);
        prop_assume!(shape.problem().is_none());
        let mut next = xorshift(seed);
        let x: Vec<i8> = (0..c_in * l_in).map(|_| next() as i8).collect();
        let w: Vec<i8> = (0..c_out * per_group_in * kernel).map(|_| next() as i8).collect();
        let bias: Vec<i32> = (0..c_out).map(|_| next() * 40).collect();
        let r = Requant::from_scale(0.003).unwrap();
        let requant = vec![r; c_out];
        let mut y = vec![0i8; c_out * shape.l_out];
        qconv1d(&shape, &x, zp, &w, &bias, &requant, out_zp, -128, &mut y);
        for c in 0..c_out {
            let g = c / per_group_out;
            for t in 0..shape.l_out {
                let mut acc = i64::from(bias[c]);
                for i in 0..per_group_in {
                    for k in 0..kernel {
                        let pos = (t * stride + k * dilation) as i64 - padding as i64;
                        if pos < 0 || pos >= l_in as i64 {
                            continue;
                        }
                        let xv = i64::from(x[(g * per_group_in + i) * l_in + pos as usize]);
                        acc += i64::from(w[(c * per_group_in + i) * kernel + k]) * (xv - i64::from(zp));
                    }
                }
                let v = (i64::from(r.apply(acc as i32)) + i64::from(out_zp)).clamp(-128, 127);
                prop_assert_eq!(i64::from(y[c * shape.l_out + t]), v, "channel {} position {}", c, t);
            }
        }
    }
}

/// A zero point outside the `int8` range (a caller's, not a body's) takes the tap-by-tap
/// path and still computes the definition.
#[test]
fn qconv1d_with_a_wide_zero_point() {
    let shape = Conv1dShape::new(2, 6, 1, 3, 1, 1, 1, 1);
    let x: Vec<i8> = vec![5, -7, 9, 120, -128, 3, 1, 2, 3, 4, 5, 6];
    let w: Vec<i8> = vec![1, -2, 3, -4, 5, -6];
    let r = Requant::from_scale(1.0 / 1024.0).unwrap();
    for zp in [-40_000, -129, 128, 40_000] {
        let mut y = vec![0i8; shape.l_out];
        qconv1d(&shape, &x, zp, &w, &[0], &[r], 0, -128, &mut y);
        for (t, &got) in y.iter().enumerate() {
            let mut acc = 0i64;
            for i in 0..2 {
                for k in 0..3 {
                    let pos = t as i64 + k as i64 - 1;
                    if (0..6).contains(&pos) {
                        let xv = i64::from(x[i * 6 + pos as usize]) - i64::from(zp);
                        acc += i64::from(w[i * 3 + k]) * xv;
                    }
                }
            }
            let want = i64::from(r.apply(acc as i32)).clamp(-128, 127);
            assert_eq!(i64::from(got), want, "zero point {zp}, position {t}");
        }
    }
}

#[test]
fn pooling_on_codes_by_hand() {
    // Max: windows [1, -5, 9], [9, 2, -128] of 2 x 5, kernel 3, stride 2.
    let shape = Pool1dShape::new(1, 5, 3, 2, 0, 1);
    let mut y = [0i8; 2];
    qmax_pool1d(&shape, &[1, -5, 9, 2, -128], &mut y);
    assert_eq!(y, [9, 9]);
    // Average around zero point 10: (1 - 10) + (-5 - 10) + (9 - 10) = -25, / 3 = -8.33 -> -8.
    qavg_pool1d(&shape, &[1, -5, 9, 2, -128], 10, &mut y);
    assert_eq!(y[0], 10 - 8);
    // (9 - 10) + (2 - 10) + (-128 - 10) = -147, / 3 = -49 -> 10 - 49 = -39.
    assert_eq!(y[1], -39);
    // Padding counts as the real 0: window [pad, 4, 6] at zero point 0 gives 10 / 3 -> 3.
    let padded = Pool1dShape::new(1, 4, 3, 1, 1, 1);
    let mut y = [0i8; 4];
    qavg_pool1d(&padded, &[4, 6, 1, 1], 0, &mut y);
    assert_eq!(y, [3, 4, 3, 1]); // 10/3, 11/3, 8/3, 2/3
                                 // Global: (1 + 2) / 2 = 1.5 -> 2; (-1 - 2) / 2 = -1.5 -> -2.
    let mut g = [0i8; 2];
    qglobal_avg_pool(&[1, 2, -1, -2], 2, 0, &mut g);
    assert_eq!(g, [2, -2]);
}

#[test]
fn bias_scale_by_hand() {
    // 0.3 / (0.5 * 0.2) = 3; 0.35 / 0.1 = 3.5 -> 4 (ties away); -0.35 -> -4.
    assert_eq!(quantize_bias(0.3, 0.5, 0.2), 3);
    assert_eq!(quantize_bias(0.375, 0.5, 0.25), 3); // 0.375 / 0.125 = 3 exactly
    assert_eq!(quantize_bias(0.4375, 0.5, 0.25), 4); // 3.5
    assert_eq!(quantize_bias(-0.4375, 0.5, 0.25), -4);
    assert_eq!(quantize_bias(1e30, 1e-10, 1e-10), i32::MAX);
}

/// The job with the frozen body in `int8` against float, on BasicMotions: at most one
/// point of held-out accuracy lost before the shift and after fine-tuning, for both
/// models, with the body in under half the bytes.
#[test]
fn the_int8_body_loses_at_most_a_point() {
    use host_sim::finetune::MotionNet;
    for model in [MotionNet::Mlp, MotionNet::Cnn] {
        let augment = host_sim::finetune::FinetuneConfig::default().augment;
        let r = host_sim::quantized::measure(&host_sim::data::default_dir(), model, 7, augment)
            .expect("the jobs");
        for (i, what) in [(0, "before the shift"), (2, "after fine-tuning")] {
            assert!(
                r.int8[i] >= r.float[i] - 0.01,
                "{} {what}: int8 {} against float {}",
                r.model,
                r.int8[i],
                r.float[i]
            );
        }
        // Everything the int8 body keeps in flash (weights, biases, scales,
        // requantisations, the prefix, the records) against the float parameters.
        assert!(
            2 * r.body_bytes.1 < r.body_bytes.0,
            "{}: {:?}",
            r.model,
            r.body_bytes
        );
    }
}

/// The `int8` body's outputs against the float body's, on the training rows it was
/// calibrated on: within a few quantisation steps.
#[test]
fn the_int8_body_follows_the_float_body() {
    use host_sim::finetune::{featurize, run, FinetuneConfig};
    use host_sim::quantized::{split_mlp, QuantBody};
    let dir = host_sim::data::default_dir();
    let report = run(&dir, &FinetuneConfig::default(), &mut |_| {}).expect("the job");
    let split = split_mlp(&report.pretrained_checkpoint).expect("split");
    let train = host_sim::data::load_motions(&dir, "train").expect("data");
    let rows: Vec<Vec<f32>> = featurize(&train, None)
        .expect("features")
        .iter()
        .map(|(x, _)| x.to_vec())
        .collect();
    let body = QuantBody::calibrate(&split.prefix, &split.body, &rows).expect("calibration");
    let (mut err, mut size) = (0.0f64, 0.0f64);
    for x in &rows {
        let mut float = split.prefix.apply(x);
        for l in &split.body {
            float = l.forward(&float);
        }
        for (a, b) in body.forward(x).expect("forward").iter().zip(&float) {
            err += f64::from((a - b).abs());
            size += f64::from(b.abs());
        }
    }
    assert!(
        err < 0.05 * size,
        "mean error {err} against mean size {size}"
    );
    assert!(
        err > 0.0,
        "an int8 body that reproduces float exactly is not quantised"
    );
}
