//! `fastmath-error`: the largest error of `safegrad::fastmath` (micromath's `exp`, `ln` and
//! `sqrt`, what the `fast-math` feature computes with) over every `f32` of the ranges the
//! losses use, against `f64` `libm` evaluated at the same argument.
//!
//! - `exp` on `[-87, 0]`: softmax cross-entropy and log-sum-exp take `exp(z - max z)`; the
//!   sigmoid takes `exp(-|x|)`.
//! - `ln` on `[1, 4]`: softmax cross-entropy over 4 classes takes the log of a sum of
//!   exponentials in `[1, C]`.
//! - `ln` on `[1e-6, 1)`: the log of a probability (`safe_ln` of a sigmoid output).
//! - `sqrt` on every positive normal `f32`: norms and standard deviations.
//!
//! Every `f32` of each range is evaluated, on all cores; the printed figures are maxima
//! (relative error for `exp` and `sqrt`, absolute for `ln`), with the argument where they
//! occur.
//!
//! ```sh
//! cargo run --release -p host-sim --bin fastmath-error [-- --json]
//! ```

use std::thread;

use clap::Parser;
use serde_json::json;

/// Largest error of safegrad's fast-math functions on the losses' ranges.
#[derive(Parser)]
#[command(name = "fastmath-error", about)]
struct Cli {
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

/// How an error is measured.
#[derive(Clone, Copy)]
enum Error {
    Relative,
    Absolute,
}

struct Range {
    function: &'static str,
    use_: &'static str,
    lo: f32,
    hi: f32,
    fast: fn(f32) -> f32,
    exact: fn(f64) -> f64,
    error: Error,
}

/// The largest error over every `f32` in `[lo, hi]` (one sign), and where.
fn max_error(r: &Range) -> (f64, f32) {
    let (a, b) = (
        r.lo.to_bits().min(r.hi.to_bits()),
        r.lo.to_bits().max(r.hi.to_bits()),
    );
    let threads = thread::available_parallelism().map_or(1, usize::from) as u32;
    let chunk = (b - a) / threads + 1;
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let start = a.saturating_add(t * chunk);
                let end = start.saturating_add(chunk).min(b.saturating_add(1));
                s.spawn(move || {
                    let mut worst = (0.0f64, f32::NAN);
                    for bits in start..end {
                        let x = f32::from_bits(bits);
                        let exact = (r.exact)(f64::from(x));
                        let diff = (f64::from((r.fast)(x)) - exact).abs();
                        let e = match r.error {
                            Error::Relative => diff / exact.abs(),
                            Error::Absolute => diff,
                        };
                        if e > worst.0 || e.is_nan() {
                            worst = (e, x);
                        }
                    }
                    worst
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().ok())
            .fold((0.0, f32::NAN), |m, w| {
                if w.0 > m.0 || w.0.is_nan() {
                    w
                } else {
                    m
                }
            })
    })
}

/// A value as `-87` or `1.1754944e-38`, whichever is shorter.
fn number(x: f32) -> String {
    let plain = format!("{x}");
    let exponent = format!("{x:e}");
    if plain.len() <= exponent.len() {
        plain
    } else {
        exponent
    }
}

fn main() {
    let cli = Cli::parse();
    let ranges = [
        Range {
            function: "exp",
            use_: "softmax cross-entropy, log-sum-exp, sigmoid: exp of a value <= 0",
            lo: -87.0,
            hi: -0.0,
            fast: safegrad::fastmath::exp,
            exact: libm::exp,
            error: Error::Relative,
        },
        Range {
            function: "ln",
            use_: "softmax cross-entropy, 4 classes: ln of a sum in [1, 4]",
            lo: 1.0,
            hi: 4.0,
            fast: safegrad::fastmath::ln,
            exact: libm::log,
            error: Error::Absolute,
        },
        Range {
            function: "ln",
            use_: "log of a probability: ln on [1e-6, 1)",
            lo: 1e-6,
            hi: 0.99999994,
            fast: safegrad::fastmath::ln,
            exact: libm::log,
            error: Error::Absolute,
        },
        Range {
            function: "sqrt",
            use_: "norms, standard deviations: every positive normal f32",
            lo: f32::MIN_POSITIVE,
            hi: f32::MAX,
            fast: safegrad::fastmath::sqrt,
            exact: libm::sqrt,
            error: Error::Relative,
        },
    ];
    let results: Vec<_> = ranges.iter().map(|r| (r, max_error(r))).collect();
    if cli.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(r, (e, at))| {
                json!({
                    "function": r.function,
                    "range": [r.lo, r.hi],
                    "use": r.use_,
                    "error": match r.error { Error::Relative => "relative", Error::Absolute => "absolute" },
                    "max_error": e,
                    "at": at,
                })
            })
            .collect();
        println!("{}", json!({ "fast_math_max_error": rows }));
    } else {
        println!("| function | range | used by | max error | at |");
        println!("| --- | --- | --- | ---: | ---: |");
        for (r, (e, at)) in &results {
            let kind = match r.error {
                Error::Relative => "relative",
                Error::Absolute => "absolute",
            };
            println!(
                "| {} | [{}, {}] | {} | {e:.2e} ({kind}) | {} |",
                r.function,
                number(r.lo),
                number(r.hi),
                r.use_,
                number(*at)
            );
        }
    }
}
