//! The device benchmark: the canonical training step (MLP 16-32-32-4, ReLU, softmax
//! cross-entropy, SGD, batch 1) on safegrad's tape and written by hand (`bench-steps`, the
//! host benchmark's workload and baseline), in the same firmware, timed with the board's
//! tick counter; the timed loops cycle through the workload's batch-1 samples. Under QEMU
//! with `-icount`, the counter advances with executed instructions, so the counts are exact
//! and repeatable (`cargo xtask bench-device`; `cargo xtask cores` on the other boards
//! whose RAM holds its tape).
#![no_std]
#![no_main]

use firmware::board::{self, entry, exit};
use static_cell::ConstStaticCell;

use bench_steps::baseline::Baseline;
use bench_steps::{batches, device, Weights, BATCHES, LR, MACS};
use safegrad::train::{step, StepConfig};
use safegrad::Tensor;

static TAPE: ConstStaticCell<device::BenchTape> = ConstStaticCell::new(device::BenchTape::new());
const STEPS: u32 = 100;

/// Ticks `f` takes (the board's tick counter: SysTick on the core clock on the Cortex-M
/// boards).
fn ticks(f: impl FnOnce()) -> u32 {
    let start = board::ticks();
    f();
    board::per(board::ticks() - start, 1)
}

/// Calls of a function [`per_call`] times.
const CALLS: u32 = 1000;

/// Ticks of [`CALLS`] calls of `f` at arguments spread over `(0, 1]`.
#[inline(never)]
fn per_call(f: fn(f32) -> f32) -> u32 {
    ticks(|| {
        for i in 1..=CALLS {
            core::hint::black_box(f(core::hint::black_box(i as f32 / CALLS as f32)));
        }
    })
}

// The functions as `per_call` calls them: scaled to their range, not inlined.
#[inline(never)]
fn scaled(v: f32) -> f32 {
    1e3 * v
}
#[inline(never)]
fn exp(v: f32) -> f32 {
    safegrad::Scalar::exp(-20.0 * v)
}
#[inline(never)]
fn ln(v: f32) -> f32 {
    safegrad::Scalar::ln(1.0 + 3.0 * v)
}
#[inline(never)]
fn sqrt(v: f32) -> f32 {
    safegrad::Scalar::sqrt(1e3 * v)
}

#[derive(PartialEq)]
enum Profile {
    Baseline,
    Safegrad,
}

/// The implementation named by a `profile=` semihosting argument.
fn profile_target() -> Option<Profile> {
    let args = semihosting::experimental::env::args::<64>().ok()?;
    for arg in &args {
        match arg {
            Ok("profile=baseline") => return Some(Profile::Baseline),
            Ok("profile=safegrad") => return Some(Profile::Safegrad),
            _ => {}
        }
    }
    None
}

#[entry]
fn main() -> ! {
    board::init();

    let tape = TAPE.take();
    let Ok(model) = device::build(tape) else {
        defmt::error!("bench: the model does not fit the tape");
        exit(1)
    };
    let mut sgd = safegrad::optim::Sgd::new(LR);
    let mut base = Baseline::new(&Weights::initial());
    let samples = batches::<1>();
    let inputs = samples.map(|s| Tensor::new(s.x));
    let sample = |i: u32| (i as usize) % BATCHES;
    // The first steps must agree before anything is timed.
    let a = device::baseline_step(&mut base, &samples[0]);
    let Ok(b) = device::train_step(tape, &model, &mut sgd, &inputs[0], &samples[0].y) else {
        exit(1)
    };
    if (a - b).abs() > 1e-5 * a.abs().max(1.0) {
        defmt::error!("bench: first-step losses differ: {=f32} vs {=f32}", a, b);
        exit(1)
    }
    defmt::info!(
        "bench: first-step loss {=f32} (baseline) and {=f32} (safegrad)",
        a,
        b
    );
    // With the semihosting argument `profile=safegrad` (or `profile=baseline`), only that
    // implementation's steps run: for an instruction profile of QEMU's execution log.
    if let Some(which) = profile_target() {
        for i in 0..STEPS {
            let k = sample(i);
            if which == Profile::Baseline {
                core::hint::black_box(device::baseline_step(&mut base, &samples[k]));
            } else if device::train_step(tape, &model, &mut sgd, &inputs[k], &samples[k].y).is_err()
            {
                exit(1)
            }
        }
        exit(0)
    }
    let baseline = ticks(|| {
        for i in 0..STEPS {
            core::hint::black_box(device::baseline_step(&mut base, &samples[sample(i)]));
        }
    });
    let mut failed = false;
    let safegrad = ticks(|| {
        for i in 0..STEPS {
            let k = sample(i);
            let r = device::train_step(tape, &model, &mut sgd, &inputs[k], &samples[k].y);
            failed |= r.is_err();
        }
    });
    if failed {
        exit(1)
    }
    // Where safegrad's step goes: recording the forward and the loss, then the guarded step
    // (sweep, checks, norm, update).
    let mut phases = [0u32; 2];
    for i in 0..STEPS {
        let [record, guarded] = &mut phases;
        let mut loss = None;
        let k = sample(i);
        *record += ticks(|| loss = device::record(tape, &model, &inputs[k], &samples[k].y).ok());
        let Some(loss) = loss else { exit(1) };
        let mut stepped = false;
        *guarded += ticks(|| {
            stepped = step(tape, loss, &mut sgd, &StepConfig::default()).is_ok();
        });
        if !stepped {
            exit(1)
        }
    }
    defmt::info!(
        "bench: safegrad phase ticks: record {=u32}, step {=u32}",
        phases[0] / STEPS,
        phases[1] / STEPS
    );
    // exp, ln and sqrt one call at a time (libm, or micromath with `fast-math`).
    // The loop and the argument alone, subtracted.
    let empty = per_call(scaled);
    let exp_ticks = per_call(exp).saturating_sub(empty);
    let ln_ticks = per_call(ln).saturating_sub(empty);
    let sqrt_ticks = per_call(sqrt).saturating_sub(empty);
    defmt::info!(
        "bench: function ticks per {=u32} calls: exp {=u32}, ln {=u32}, sqrt {=u32}",
        CALLS,
        exp_ticks,
        ln_ticks,
        sqrt_ticks
    );
    defmt::info!(
        "bench: ticks per step: baseline {=u32}, safegrad {=u32} ({=u32} steps each, {=usize} multiply-accumulates per step)",
        baseline / STEPS,
        safegrad / STEPS,
        STEPS,
        MACS
    );
    exit(0)
}
