//! Every finite `f32` denominator through `safe_div_signed`, then a mask.
//!
//! With mask 0 the forward must be exactly 0 and every gradient exactly 0; with mask 1 the
//! forward and the gradients must be finite for numerators up to `|num| = 1e20`. The
//! gradient's magnitude grows with `|num|` (`|d den| = |num| / d^2`, a monotone function
//! even after rounding), so the extremes `±1e20` cover the range; `1` and `0` are checked
//! too.
//!
//! About 4.3 billion denominators: run it optimised, on every core:
//! `cargo test --release -p safegrad-tests --test exhaustive -- --ignored`
//! (or `cargo xtask exhaustive`).

use safegrad::ops::{mask, mask_grad, safe_div_signed, safe_div_signed_grad};
use safegrad::{Cap, Tape, Tensor};

const EPS: f32 = 1e-6;
const NUMERATORS: [f32; 4] = [1e20, -1e20, 1.0, 0.0];

/// Checks one denominator; returns a description of the first violation.
fn check(den: f32) -> Result<(), String> {
    for num in NUMERATORS {
        let q = safe_div_signed(num, den, EPS);
        // Mask 0: exactly zero forward and gradients.
        let out = mask(0.0, q);
        let (_, g_q) = mask_grad(1.0, 0.0, q);
        let (g_num, g_den) = safe_div_signed_grad(g_q, num, den, EPS);
        if out != 0.0 || g_q != 0.0 || g_num != 0.0 || g_den != 0.0 {
            return Err(format!(
                "mask 0, num {num:e}, den {den:e} ({:#010x}): out {out}, d num {g_num}, d den {g_den}",
                den.to_bits()
            ));
        }
        // Mask 1: finite forward and gradients.
        let out = mask(1.0, q);
        let (_, g_q) = mask_grad(1.0, 1.0, q);
        let (g_num, g_den) = safe_div_signed_grad(g_q, num, den, EPS);
        if !(out.is_finite() && g_num.is_finite() && g_den.is_finite()) {
            return Err(format!(
                "mask 1, num {num:e}, den {den:e} ({:#010x}): out {out}, d num {g_num}, d den {g_den}",
                den.to_bits()
            ));
        }
    }
    Ok(())
}

/// Checks the bit patterns `lo..hi`; returns the number of finite denominators checked.
fn check_range(lo: u64, hi: u64) -> Result<u64, String> {
    let mut checked = 0;
    for bits in lo..hi {
        let den = f32::from_bits(bits as u32);
        if den.is_finite() {
            check(den)?;
            checked += 1;
        }
    }
    Ok(checked)
}

#[test]
#[ignore = "4.3e9 denominators: run with --release -- --ignored (cargo xtask exhaustive)"]
fn every_finite_f32_denominator() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let total = 1u64 << 32;
    let chunk = total.div_ceil(threads);
    let start = std::time::Instant::now();
    let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(total));
                s.spawn(move || check_range(lo, hi))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("worker panicked".into())))
            .collect()
    });
    let mut checked = 0;
    for r in results {
        checked += r.unwrap_or_else(|e| panic!("{e}"));
    }
    // Finite f32 values: all patterns but the 2 * 2^23 with an all-ones exponent.
    assert_eq!(checked, (1u64 << 32) - (1u64 << 24));
    eprintln!(
        "checked {checked} finite denominators x {} numerators in {:.1} s on {threads} threads",
        NUMERATORS.len(),
        start.elapsed().as_secs_f64()
    );
}

/// The exhaustive check runs the op functions directly; the tape calls the same functions.
/// This samples denominators around the dangerous region through a recorded graph, so a
/// tape that wired the ops differently would fail here.
#[test]
fn tape_agrees_with_the_op_functions_near_zero() {
    let dens = [
        -2.0 * EPS,
        -EPS,
        -0.5 * EPS,
        -0.0,
        0.0,
        0.5 * EPS,
        EPS,
        f32::MIN_POSITIVE,
    ];
    for den0 in dens {
        for (w0, num0) in [(0.0f32, 1e20f32), (1.0, 1e20), (1.0, -1e20)] {
            let mut t = Tape::<f32, Cap<8, 16>>::new();
            let w = t.variable(&Tensor::new([[w0]])).unwrap();
            let num = t.variable(&Tensor::new([[num0]])).unwrap();
            let den = t.variable(&Tensor::new([[den0]])).unwrap();
            let q = t.safe_div_signed(num, den).unwrap();
            let out = t.mask(w, q).unwrap();
            let loss = t.sum(out).unwrap();
            t.backward(loss).unwrap();
            let (_, g_q) = mask_grad(1.0, w0, safe_div_signed(num0, den0, EPS));
            let (g_num, g_den) = safe_div_signed_grad(g_q, num0, den0, EPS);
            assert_eq!(t.grad(num).unwrap().as_slice(), &[g_num]);
            assert_eq!(t.grad(den).unwrap().as_slice(), &[g_den]);
            assert!(g_num.is_finite() && g_den.is_finite());
            if w0 == 0.0 {
                assert_eq!((g_num, g_den), (0.0, 0.0));
            }
        }
    }
}
