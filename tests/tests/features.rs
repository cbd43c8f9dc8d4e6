//! IMU features against an independent `f64` computation written here, their behaviour
//! under rotations of the device (`rotate_imu`), and the refusal of non-finite samples.

// The references are plain index loops on purpose, like the textbook formulas.
#![allow(clippy::needless_range_loop)]

use motion::features::{imu_features, rotate_imu, FeatureError, IMU_CHANNELS, IMU_FEATURES};
use safegrad::Scalar;

const L: usize = 64;
type Window<T> = [[T; L]; IMU_CHANNELS];

/// A synthetic window: sines on every axis, gravity (9.81) on the accelerometer's z axis.
fn window() -> Window<f64> {
    let tau = std::f64::consts::TAU;
    let mut w = [[0.0; L]; IMU_CHANNELS];
    for t in 0..L {
        let s = t as f64;
        w[0][t] = 0.8 * (tau * s / 16.0).sin() + 0.1;
        w[1][t] = 0.5 * (tau * s / 10.0 + 0.3).cos();
        w[2][t] = 9.81 + 0.3 * (tau * s / 8.0).sin();
        w[3][t] = 1.2 * (tau * s / 32.0 + 1.0).sin();
        w[4][t] = -0.4 + 0.6 * (tau * s / 12.0).cos();
        w[5][t] = 0.9 * (tau * s / 20.0 + 0.5).sin() * (tau * s / 50.0).cos();
    }
    w
}

fn to_f32(w: &Window<f64>) -> Window<f32> {
    w.map(|ch| ch.map(|v| v as f32))
}

fn widen(w: &Window<f32>) -> Window<f64> {
    w.map(|ch| ch.map(f64::from))
}

/// Mean and population standard deviation in two passes.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mut mean = 0.0;
    for &x in v {
        mean += x;
    }
    mean /= n;
    let mut var = 0.0;
    for &x in v {
        var += (x - mean) * (x - mean);
    }
    (mean, (var / n).sqrt())
}

/// The 16 features as documented: (mean, std) of each channel, then of |a| and of |g|.
fn features_ref(w: &Window<f64>) -> Vec<f64> {
    let mut out = Vec::with_capacity(IMU_FEATURES);
    for ch in w {
        let (m, s) = mean_std(ch);
        out.push(m);
        out.push(s);
    }
    for sensor in [0, 3] {
        let mut magnitude = [0.0; L];
        for t in 0..L {
            let (x, y, z) = (w[sensor][t], w[sensor + 1][t], w[sensor + 2][t]);
            magnitude[t] = (x * x + y * y + z * z).sqrt();
        }
        let (m, s) = mean_std(&magnitude);
        out.push(m);
        out.push(s);
    }
    out
}

/// Rotation by `angle` about the unit vector along `axis` (Rodrigues' formula).
fn rotation(axis: [f64; 3], angle: f64) -> [[f64; 3]; 3] {
    let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
    let u = axis.map(|v| v / n);
    let (c, s) = (angle.cos(), angle.sin());
    let cross = [[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]];
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let identity = if i == j { 1.0 } else { 0.0 };
            r[i][j] = c * identity + s * cross[i][j] + (1.0 - c) * u[i] * u[j];
        }
    }
    r
}

fn transpose(r: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut t = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            t[i][j] = r[j][i];
        }
    }
    t
}

/// Each sample of each sensor multiplied by `r`, in plain loops.
fn rotate_ref(w: &Window<f64>, r: &[[f64; 3]; 3]) -> Window<f64> {
    let mut out = *w;
    for sensor in [0, 3] {
        for t in 0..L {
            for i in 0..3 {
                let mut acc = 0.0;
                for j in 0..3 {
                    acc += r[i][j] * w[sensor + j][t];
                }
                out[sensor + i][t] = acc;
            }
        }
    }
    out
}

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

fn features<T: Scalar>(w: &Window<T>) -> Vec<f64> {
    imu_features(w)
        .expect("finite window")
        .as_slice()
        .iter()
        .map(|v| v.to_f64())
        .collect()
}

fn flat(w: &Window<f64>) -> Vec<f64> {
    w.iter().flatten().copied().collect()
}

fn axis_angle() -> [[f64; 3]; 3] {
    rotation([1.0, 2.0, 2.0], 0.7)
}

#[test]
fn the_references_are_sound() {
    // The rotation is orthonormal with determinant 1, and the reference features of a
    // constant window are its value with zero spread.
    let r = axis_angle();
    for i in 0..3 {
        for j in 0..3 {
            let dot: f64 = (0..3).map(|k| r[i][k] * r[j][k]).sum();
            let identity = if i == j { 1.0 } else { 0.0 };
            assert!((dot - identity).abs() < 1e-15, "R R^T [{i}][{j}] = {dot}");
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    assert!((det - 1.0).abs() < 1e-15);
    let mut w = [[0.0; L]; IMU_CHANNELS];
    w[2] = [9.81; L];
    let f = features_ref(&w);
    assert!((f[4] - 9.81).abs() < 1e-13, "{}", f[4]);
    assert!(f[5] < 1e-13, "{}", f[5]);
}

#[test]
fn features_match_independent_f64() {
    let w = window();
    let expected = features_ref(&w);
    assert_eq!(IMU_FEATURES, 16);
    assert_close("f64 features", &features(&w), &expected, 1e-13, 1e-14);
    // Sanity of the synthetic signal: gravity dominates |a|.
    assert!((expected[4] - 9.81).abs() < 0.05 && (expected[12] - 9.8).abs() < 0.1);

    // f32 against f64 arithmetic on the same (rounded) samples.
    let w32 = to_f32(&w);
    let expected = features_ref(&widen(&w32));
    assert_close("f32 features", &features(&w32), &expected, 1e-5, 2e-5);
}

#[test]
fn a_single_sample_has_zero_spread_and_an_empty_window_is_refused() {
    let mut w = [[0.0f32; 1]; IMU_CHANNELS];
    w[0] = [3.0];
    w[1] = [4.0];
    w[5] = [-2.0];
    let f: Vec<f32> = imu_features(&w).expect("features").as_slice().to_vec();
    let mut expected = [0.0f32; 16];
    expected[0] = 3.0;
    expected[2] = 4.0;
    expected[10] = -2.0;
    expected[12] = 5.0; // |(3, 4, 0)|
    expected[14] = 2.0; // |(0, 0, -2)|
    assert_eq!(f, expected);
    let empty = [[0.0f32; 0]; IMU_CHANNELS];
    assert_eq!(imu_features(&empty), Err(FeatureError::Empty));
}

#[test]
fn magnitudes_are_invariant_under_rotation_and_axes_are_not() {
    let w = window();
    let r = axis_angle();
    let before = features(&w);

    let mut rotated = w;
    rotate_imu(&mut rotated, &r);
    assert_close(
        "rotated samples",
        &flat(&rotated),
        &flat(&rotate_ref(&w, &r)),
        1e-14,
        1e-14,
    );
    let after = features(&rotated);
    assert_close(
        "magnitude features",
        &after[12..16],
        &before[12..16],
        1e-13,
        1e-13,
    );

    // Means are linear: the rotated means are R times the means, for each sensor.
    for sensor in [0, 3] {
        for i in 0..3 {
            let expected: f64 = (0..3).map(|j| r[i][j] * before[2 * (sensor + j)]).sum();
            let got = after[2 * (sensor + i)];
            assert!(
                (got - expected).abs() < 1e-12,
                "mean of channel {}: {got} vs R * means {expected}",
                sensor + i
            );
        }
    }
    // ... and they move: gravity leaves the z axis.
    let moved = (0..6)
        .map(|ch| (after[2 * ch] - before[2 * ch]).abs())
        .fold(0.0f64, f64::max);
    assert!(moved > 1.0, "per-axis means barely moved ({moved})");
    assert!(
        (after[4] - before[4]).abs() > 0.5,
        "mean of az: {} -> {}",
        before[4],
        after[4]
    );
    let std_moved = (0..6)
        .map(|ch| (after[2 * ch + 1] - before[2 * ch + 1]).abs())
        .fold(0.0f64, f64::max);
    assert!(
        std_moved > 1e-2,
        "per-axis spreads barely moved ({std_moved})"
    );

    // In f32, up to rounding.
    let w32 = to_f32(&w);
    let r32 = r.map(|row| row.map(|v| v as f32));
    let before32 = features(&w32);
    let mut rotated32 = w32;
    rotate_imu(&mut rotated32, &r32);
    let after32 = features(&rotated32);
    assert_close(
        "f32 magnitude features",
        &after32[12..16],
        &before32[12..16],
        1e-5,
        1e-5,
    );
}

#[test]
fn quarter_turn_about_z_permutes_features_exactly() {
    // x' = -y, y' = x, z' = z for both sensors: every product with 0 or 1 is exact, so
    // the features permute (and the means of the new x axes change sign) bit for bit.
    let w = window();
    let r = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
    let f = features(&w);
    let mut rotated = w;
    rotate_imu(&mut rotated, &r);
    let g = features(&rotated);
    let mut expected = f.clone();
    for sensor in [0, 6] {
        expected[sensor] = -f[sensor + 2]; // mean x' = -mean y
        expected[sensor + 1] = f[sensor + 3]; // std x' = std y
        expected[sensor + 2] = f[sensor]; // mean y' = mean x
        expected[sensor + 3] = f[sensor + 1];
    }
    assert_eq!(g, expected);
    assert_eq!(&g[12..16], &f[12..16]);

    // The same in f32, and the README's rotation really changes the per-axis features.
    let w32 = to_f32(&w);
    let r32 = r.map(|row| row.map(|v| v as f32));
    let f32s = features(&w32);
    let mut rotated32 = w32;
    rotate_imu(&mut rotated32, &r32);
    let g32 = features(&rotated32);
    assert_eq!(&g32[12..16], &f32s[12..16]);
    assert_eq!(g32[0], -f32s[2]);
    assert_eq!(g32[2], f32s[0]);
    assert!((g32[0] - f32s[0]).abs() > 0.05);
}

#[test]
fn rotating_back_restores_the_window() {
    let w = window();
    let r = axis_angle();
    let rt = transpose(&r);
    let mut round_trip = w;
    rotate_imu(&mut round_trip, &r);
    assert_ne!(flat(&round_trip), flat(&w));
    rotate_imu(&mut round_trip, &rt);
    assert_close("R^T R w", &flat(&round_trip), &flat(&w), 0.0, 1e-14);

    let w32 = to_f32(&w);
    let (r32, rt32) = (
        r.map(|row| row.map(|v| v as f32)),
        rt.map(|row| row.map(|v| v as f32)),
    );
    let mut round_trip = w32;
    rotate_imu(&mut round_trip, &r32);
    rotate_imu(&mut round_trip, &rt32);
    // |samples| <= 10.2: a few f32 roundings of that size.
    assert_close(
        "f32 R^T R w",
        &flat(&widen(&round_trip)),
        &flat(&widen(&w32)),
        0.0,
        1e-5,
    );
}

/// A corrupted sample: channel, time index, value.
type Bad = (usize, usize, f32);

#[test]
fn non_finite_samples_are_refused_with_their_position() {
    let w = to_f32(&window());
    // (samples to corrupt as (channel, index, value), the position the error must name)
    let cases: [(&[Bad], (usize, usize)); 5] = [
        (&[(3, 17, f32::NAN)], (3, 17)),
        (&[(0, 63, f32::NEG_INFINITY)], (0, 63)),
        (&[(5, 0, f32::INFINITY)], (5, 0)),
        // The first in channel-major order is named.
        (&[(5, 0, f32::INFINITY), (2, 40, f32::NAN)], (2, 40)),
        (&[(1, 30, f32::NAN), (1, 7, f32::INFINITY)], (1, 7)),
    ];
    for (bad, (channel, index)) in cases {
        let mut v = w;
        for &(ch, i, value) in bad {
            v[ch][i] = value;
        }
        assert_eq!(
            imu_features(&v),
            Err(FeatureError::NonFinite { channel, index }),
            "{bad:?}"
        );
    }
    let message = FeatureError::NonFinite {
        channel: 2,
        index: 40,
    }
    .to_string();
    assert!(
        message.contains("40") && message.contains("channel 2"),
        "{message}"
    );
    // f64 too, at the extremes of the window.
    let mut v = window();
    v[4][L - 1] = f64::NAN;
    assert_eq!(
        imu_features(&v),
        Err(FeatureError::NonFinite {
            channel: 4,
            index: L - 1
        })
    );
    // A large but finite sample within the documented bound is accepted; beyond it, refused.
    let mut v = w;
    v[0][0] = 1e15;
    assert!(imu_features(&v).is_ok());
    v[0][0] = 1e18;
    assert_eq!(
        imu_features(&v),
        Err(FeatureError::OutOfRange {
            channel: 0,
            index: 0
        })
    );
}

#[test]
fn finite_samples_give_finite_features() {
    // The module refuses non-finite samples so that no nan reaches the model; a finite
    // sample of 2e19 m/s^2 still gives |a| = sqrt(4e38) = inf (the mean of |a|) and
    // inf - inf = nan (its standard deviation), returned as Ok.
    let mut w = [[0.0f32; 4]; IMU_CHANNELS];
    w[0] = [2e19, 0.0, 0.0, 0.0];
    match imu_features(&w) {
        Ok(f) => assert!(
            f.as_slice().iter().all(|v| v.is_finite()),
            "finite samples gave the features {:?}",
            f.as_slice()
        ),
        Err(e) => assert_eq!(
            e,
            FeatureError::OutOfRange {
                channel: 0,
                index: 0
            },
            "{e}"
        ),
    }
}
