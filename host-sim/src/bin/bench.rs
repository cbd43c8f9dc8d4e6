//! `bench`: the host benchmark of one training step of the canonical MLP.
//!
//! The workload (`bench-steps`, shared with the device benchmark): MLP 16 -> 32 -> 32 -> 4,
//! ReLU after both hidden layers, `f32`, softmax cross-entropy against an integer class
//! (mean over the batch), plain SGD with lr 0.01; one step is forward + loss + backward +
//! update. Batch 1 and batch 32. The weights (Kaiming-uniform, small non-zero biases) and
//! the 8 batches the timed loops cycle through come from SplitMix64 and are the same for
//! every implementation:
//!
//! - `baseline`: the step written by hand in plain Rust (fixed-size arrays, loops, no
//!   allocation, no tape, no checks): `bench_steps::baseline`, the one the device benchmark
//!   times too;
//! - `safegrad`: `(LinearRelu<16, 32>, LinearRelu<32, 32>, Linear<32, 4>)` on a boxed tape,
//!   each step `clear_activations`, `input`, `forward`, `softmax_cross_entropy`,
//!   `train::step` with `Sgd` and the default `StepConfig` (`bench_steps::on_tape`);
//! - `dfdx` 0.13 on its CPU device, single-threaded (`RAYON_NUM_THREADS=1`), only with
//!   `--features peers`.
//!
//! First the loss of the first steps (and the parameters after them) must agree with the
//! baseline within 1e-5, or the run stops with exit code 1. Then each implementation is
//! timed with `std::time::Instant`: a warm-up, then repetitions of about `--ms` each, every
//! repetition starting from the initial weights (each step is one dynamic call, the same
//! for every implementation); the median time per step is reported with
//! steps per second, GFLOP/s (a batch-1 step counted as 13,448 FLOPs, as the performance
//! issue counts it, times the batch) and the ratio to the baseline's time.
//!
//! Then the convolution step (`bench/conv.rs`): the two convolutions of `MotionCnn`,
//! forward and backward, by hand, with safegrad's kernels and with burn 0.19 (with `--features
//! peers`); their gradients must agree with the baseline's within a relative 1e-4 first.
//!
//! ```sh
//! cargo run --release -p host-sim --features peers --bin bench [-- --json]
//! ```

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[cfg(feature = "peers")]
#[path = "bench/burn_conv.rs"]
mod burn_conv;
#[path = "bench/conv.rs"]
mod conv;
#[cfg(feature = "peers")]
#[path = "bench/dfdx_mlp.rs"]
mod dfdx_mlp;
#[path = "bench/safegrad_mlp.rs"]
mod safegrad_mlp;

use bench_steps::baseline::Baseline;
use bench_steps::{Batch, Weights, BATCHES, FLOPS_PER_SAMPLE};
use safegrad::tensor::kernels::{allow_avx2, avx2};

/// Host benchmark of one training step of the canonical MLP: safegrad, a hand-written
/// baseline, and dfdx (with `--features peers`).
#[derive(Parser)]
#[command(name = "bench", about)]
struct Cli {
    /// Print the results as one JSON object (the last line).
    #[arg(long)]
    json: bool,
    /// Length of one timed repetition, milliseconds.
    #[arg(long, default_value_t = 200)]
    ms: u64,
    /// Timed repetitions per implementation and batch size (the median is reported).
    #[arg(long, default_value_t = 11)]
    reps: usize,
    /// Warm-up before the repetitions, milliseconds.
    #[arg(long, default_value_t = 200)]
    warmup_ms: u64,
    /// Time only these implementations (`baseline`, `safegrad`, `safegrad-sse2`, `dfdx`,
    /// `burn`; all by default).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Time only this batch size (1 or 32; both by default).
    #[arg(long)]
    batch: Option<usize>,
    /// Instead of timing, run this many steps of each selected implementation and exit (for
    /// a profiler or an instruction counter such as `valgrind --tool=callgrind`).
    #[arg(long)]
    profile_steps: Option<usize>,
}

/// Largest difference allowed between an implementation's loss (or parameter) and the
/// baseline's.
const TOLERANCE: f32 = 1e-5;
/// Steps compared before timing: the first step's loss checks the forward pass, the next
/// ones (and the parameters after them) check the backward pass and the update.
const CHECK_STEPS: usize = 3;

/// One implementation of the step, holding its own copy of the batches.
trait Trainer {
    fn name(&self) -> &'static str;
    /// Restores the initial weights (and whatever state the step keeps).
    fn reset(&mut self, w: &Weights) -> Result<(), String>;
    /// One step on batch `k`; the loss before the update.
    fn step(&mut self, k: usize) -> Result<f32, String>;
    /// Every parameter, in the order of [`Weights::flat`].
    fn parameters(&self) -> Vec<f32>;
}

struct BaselineTrainer<const B: usize> {
    inner: Baseline<B>,
    data: [Batch<B>; BATCHES],
}

impl<const B: usize> Trainer for BaselineTrainer<B> {
    fn name(&self) -> &'static str {
        "baseline"
    }
    fn reset(&mut self, w: &Weights) -> Result<(), String> {
        self.inner.weights = w.clone();
        Ok(())
    }
    fn step(&mut self, k: usize) -> Result<f32, String> {
        Ok(self.inner.step(&self.data[k]))
    }
    fn parameters(&self) -> Vec<f32> {
        self.inner.weights.flat().collect()
    }
}

impl<const B: usize> Trainer for safegrad_mlp::SafegradMlp<B> {
    fn name(&self) -> &'static str {
        "safegrad"
    }
    fn reset(&mut self, w: &Weights) -> Result<(), String> {
        self.set_weights(w)
    }
    fn step(&mut self, k: usize) -> Result<f32, String> {
        safegrad_mlp::SafegradMlp::step(self, k)
    }
    fn parameters(&self) -> Vec<f32> {
        safegrad_mlp::SafegradMlp::parameters(self)
    }
}

/// An implementation run with safegrad's AVX2 kernel instances turned off
/// ([`safegrad::tensor::kernels::allow_avx2`]): the SSE2 code of the default x86-64 target.
/// Its results must be the same bits as the implementation's with them.
struct Sse2Only<T>(T);

impl<T: Trainer> Trainer for Sse2Only<T> {
    fn name(&self) -> &'static str {
        "safegrad-sse2"
    }
    fn reset(&mut self, w: &Weights) -> Result<(), String> {
        self.0.reset(w)
    }
    fn step(&mut self, k: usize) -> Result<f32, String> {
        allow_avx2(false);
        let loss = self.0.step(k);
        allow_avx2(true);
        loss
    }
    fn parameters(&self) -> Vec<f32> {
        self.0.parameters()
    }
}

#[cfg(feature = "peers")]
impl<const B: usize> Trainer for dfdx_mlp::DfdxMlp<B> {
    fn name(&self) -> &'static str {
        "dfdx"
    }
    fn reset(&mut self, w: &Weights) -> Result<(), String> {
        self.set_weights(w);
        Ok(())
    }
    fn step(&mut self, k: usize) -> Result<f32, String> {
        dfdx_mlp::DfdxMlp::step(self, k)
    }
    fn parameters(&self) -> Vec<f32> {
        dfdx_mlp::DfdxMlp::parameters(self)
    }
}

/// The implementations built into this binary, for batch `B`, from the initial weights.
fn trainers<const B: usize>(w: &Weights) -> Result<Vec<Box<dyn Trainer>>, String> {
    let data = bench_steps::batches::<B>();
    let list: Vec<Box<dyn Trainer>> = vec![
        Box::new(BaselineTrainer {
            inner: Baseline::<B>::new(w),
            data,
        }),
        Box::new(safegrad_mlp::SafegradMlp::<B>::new(w, &data)?),
        Box::new(Sse2Only(safegrad_mlp::SafegradMlp::<B>::new(w, &data)?)),
        #[cfg(feature = "peers")]
        Box::new(dfdx_mlp::DfdxMlp::<B>::new(w, &data)),
    ];
    Ok(list)
}

/// The check of one implementation against the baseline.
struct Check {
    name: &'static str,
    losses: Vec<f32>,
    params: Vec<f32>,
    max_loss_diff: f32,
    max_param_diff: f32,
}

/// `true` when `diff` is at most [`TOLERANCE`] (`false` for `nan`).
fn within_tolerance(diff: f32) -> bool {
    diff <= TOLERANCE
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d > m || d.is_nan() { d } else { m })
}

/// The bit patterns of `values`.
fn bit_pattern(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Runs [`CHECK_STEPS`] steps of every implementation from the initial weights and compares
/// them with the baseline (the first entry).
fn check(list: &mut [Box<dyn Trainer>], w: &Weights) -> Result<Vec<Check>, String> {
    let mut runs = Vec::new();
    for t in list.iter_mut() {
        t.reset(w)?;
        let losses = (0..CHECK_STEPS)
            .map(|k| t.step(k % BATCHES))
            .collect::<Result<Vec<_>, _>>()?;
        runs.push((t.name(), losses, t.parameters()));
        t.reset(w)?;
    }
    let (_, base_losses, base_params) = runs
        .first()
        .cloned()
        .ok_or_else(|| "no implementation".to_string())?;
    Ok(runs
        .into_iter()
        .map(|(name, losses, params)| Check {
            name,
            max_loss_diff: max_abs_diff(&losses, &base_losses),
            max_param_diff: max_abs_diff(&params, &base_params),
            losses,
            params,
        })
        .collect())
}

/// Timing of one implementation at one batch size.
struct Timing {
    name: &'static str,
    batch: usize,
    steps_per_rep: usize,
    /// Nanoseconds per step of each repetition, sorted.
    ns: Vec<f64>,
}

impl Timing {
    fn median(&self) -> f64 {
        median(&self.ns)
    }
    fn gflops(&self) -> f64 {
        (FLOPS_PER_SAMPLE * self.batch) as f64 / self.median()
    }
}

/// The median of sorted values (`nan` for none).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}

/// Warm-up: how many steps of `t` take about `ms` milliseconds.
fn calibrate(t: &mut dyn Trainer, w: &Weights, ms: u64) -> Result<usize, String> {
    t.reset(w)?;
    let warmup = Duration::from_millis(ms.max(1));
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < warmup {
        for _ in 0..16 {
            black_box(t.step(done % BATCHES)?);
            done += 1;
        }
    }
    Ok(done)
}

/// One repetition of `steps` steps from the initial weights: nanoseconds per step.
fn repetition(t: &mut dyn Trainer, w: &Weights, steps: usize) -> Result<f64, String> {
    t.reset(w)?;
    let mut last = 0.0;
    let t0 = Instant::now();
    for i in 0..steps {
        last = black_box(t.step(i % BATCHES)?);
    }
    let elapsed = t0.elapsed();
    if !last.is_finite() {
        return Err(format!(
            "{}: the loss became {last} during timing",
            t.name()
        ));
    }
    Ok(elapsed.as_nanos() as f64 / steps as f64)
}

/// The CPU's model name, from `/proc/cpuinfo` where there is one.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Threads of this process, from `/proc/self/status` where there is one: rayon's pool, if
/// anything started it, shows here.
fn process_threads() -> Option<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Sets `RAYON_NUM_THREADS=1` unless already set (before anything starts rayon's pool) and
/// returns the value in effect.
#[cfg(feature = "peers")]
fn single_thread_rayon() -> String {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
}

struct Batches {
    checks: Vec<(usize, Vec<Check>)>,
    timings: Vec<Timing>,
}

fn run_batch<const B: usize>(w: &Weights, out: &mut Batches) -> Result<(), String> {
    let mut list = trainers::<B>(w)?;
    out.checks.push((B, check(&mut list, w)?));
    Ok(())
}

/// Warm-up, then `reps` rounds; in each round every implementation runs one repetition of
/// about `ms` from the initial weights, so that a change of clock speed during the run
/// affects all of them alike.
fn time_batch<const B: usize>(w: &Weights, cli: &Cli, out: &mut Batches) -> Result<(), String> {
    let mut list = trainers::<B>(w)?;
    list.retain(|t| cli.only.is_empty() || cli.only.iter().any(|n| n == t.name()));
    let mut timings = Vec::new();
    for t in &mut list {
        let done = calibrate(t.as_mut(), w, cli.warmup_ms)?;
        let steps = (done as f64 * cli.ms as f64 / cli.warmup_ms.max(1) as f64).round();
        timings.push(Timing {
            name: t.name(),
            batch: B,
            steps_per_rep: (steps as usize).max(1),
            ns: Vec::with_capacity(cli.reps),
        });
    }
    for _ in 0..cli.reps.max(1) {
        for (t, timing) in list.iter_mut().zip(&mut timings) {
            timing
                .ns
                .push(repetition(t.as_mut(), w, timing.steps_per_rep)?);
        }
    }
    for mut timing in timings {
        timing.ns.sort_by(f64::total_cmp);
        out.timings.push(timing);
    }
    Ok(())
}

/// `steps` steps of each selected implementation, untimed.
fn profile_batch<const B: usize>(w: &Weights, cli: &Cli, steps: usize) -> Result<(), String> {
    let mut list = trainers::<B>(w)?;
    list.retain(|t| cli.only.is_empty() || cli.only.iter().any(|n| n == t.name()));
    for t in &mut list {
        t.reset(w)?;
        let mut last = 0.0;
        for i in 0..steps {
            last = black_box(t.step(i % BATCHES)?);
        }
        eprintln!("{} B={B}: {steps} steps, last loss {last}", t.name());
    }
    Ok(())
}

/// The convolution step's implementations built into this binary, for `work`.
fn conv_steps(work: &conv::Workload) -> Vec<Box<dyn conv::ConvStep>> {
    vec![
        Box::new(conv::Baseline::new(work)),
        Box::new(conv::Safegrad::new(work)),
        Box::new(conv::Sse2Only(conv::Safegrad::new(work))),
        #[cfg(feature = "peers")]
        Box::new(burn_conv::BurnConv::new(work)),
    ]
}

/// Relative tolerance of the convolution step's gradients against the baseline's (the
/// implementations sum in different orders).
const CONV_TOLERANCE: f32 = 1e-4;

/// The convolution step of one implementation at one batch size.
struct ConvTiming {
    name: &'static str,
    batch: usize,
    /// Largest difference of a gradient from the baseline's, relative to `max(1, |baseline|)`.
    max_rel_diff: f32,
    /// Nanoseconds per step of each repetition, sorted.
    ns: Vec<f64>,
}

impl ConvTiming {
    fn median(&self) -> f64 {
        median(&self.ns)
    }
    fn gflops(&self) -> f64 {
        (conv::FLOPS_PER_SAMPLE * self.batch) as f64 / self.median()
    }
}

/// Checks the convolution step's gradients against the baseline's, then times each
/// implementation as the MLP's step is timed (interleaved repetitions after a warm-up).
fn conv_batch(batch: usize, cli: &Cli, out: &mut Vec<ConvTiming>) -> Result<(), String> {
    let work = conv::Workload::new(batch);
    let mut list = conv_steps(&work);
    let mut reference: Option<(f32, Vec<f32>)> = None;
    let mut wide: Option<Vec<u32>> = None;
    let mut timings = Vec::new();
    for s in &mut list {
        let loss = s.step();
        let grads = s.gradients();
        let bits = bit_pattern(&grads);
        match s.name() {
            "safegrad" => wide = Some(bits),
            "safegrad-sse2" if wide.as_ref() != Some(&bits) => {
                return Err(format!(
                    "conv step, B={batch}: safegrad's gradients with AVX2 are not the bits of its SSE2 code's"
                ));
            }
            _ => {}
        }
        let (base_loss, base) = reference.get_or_insert_with(|| (loss, grads.clone()));
        let rel = |a: f32, b: f32| (a - b).abs() / b.abs().max(1.0);
        let mut worst = if grads.len() == base.len() {
            grads
                .iter()
                .zip(base.iter())
                .map(|(&a, &b)| rel(a, b))
                .fold(0.0f32, |m, d| if d > m || d.is_nan() { d } else { m })
        } else {
            f32::INFINITY
        };
        let loss_diff = rel(loss, *base_loss);
        if loss_diff > worst || loss_diff.is_nan() {
            worst = loss_diff;
        }
        if worst.is_nan() || worst > CONV_TOLERANCE {
            return Err(format!(
                "conv step, B={batch}: {} differs from the baseline by {worst} (relative, > {CONV_TOLERANCE}); no timing",
                s.name()
            ));
        }
        timings.push(ConvTiming {
            name: s.name(),
            batch,
            max_rel_diff: worst,
            ns: Vec::new(),
        });
    }
    let selected = |name: &str| cli.only.is_empty() || cli.only.iter().any(|n| n == name);
    let mut plan = Vec::new();
    for (s, t) in list.iter_mut().zip(&timings) {
        if !selected(t.name) {
            plan.push(0);
            continue;
        }
        let warmup = Duration::from_millis(cli.warmup_ms.max(1));
        let start = Instant::now();
        let mut done = 0usize;
        while start.elapsed() < warmup {
            black_box(s.step());
            done += 1;
        }
        let steps = done as f64 * cli.ms as f64 / cli.warmup_ms.max(1) as f64;
        plan.push((steps.round() as usize).max(1));
    }
    for _ in 0..cli.reps.max(1) {
        for ((s, t), &steps) in list.iter_mut().zip(&mut timings).zip(&plan) {
            if steps == 0 {
                continue;
            }
            let t0 = Instant::now();
            for _ in 0..steps {
                black_box(s.step());
            }
            t.ns.push(t0.elapsed().as_nanos() as f64 / steps as f64);
        }
    }
    for mut t in timings {
        if t.ns.is_empty() {
            continue;
        }
        t.ns.sort_by(f64::total_cmp);
        out.push(t);
    }
    Ok(())
}

/// The convolution step at the selected batch sizes.
fn conv_bench(cli: &Cli) -> Result<Vec<ConvTiming>, String> {
    let mut out = Vec::new();
    for batch in [1, 32] {
        if cli.batch.is_none_or(|b| b == batch) {
            conv_batch(batch, cli, &mut out)?;
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    #[cfg(feature = "peers")]
    let rayon_threads = Some(single_thread_rayon());
    #[cfg(not(feature = "peers"))]
    let rayon_threads: Option<String> = None;
    let cli = Cli::parse();
    match run(&cli, rayon_threads) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli, rayon_threads: Option<String>) -> Result<ExitCode, String> {
    let w = Weights::initial();
    let mut out = Batches {
        checks: Vec::new(),
        timings: Vec::new(),
    };
    let dfdx_built = rayon_threads.is_some();

    // Correctness first.
    run_batch::<1>(&w, &mut out)?;
    run_batch::<32>(&w, &mut out)?;
    let mut failures = Vec::new();
    for (batch, checks) in &out.checks {
        for c in checks {
            let first = c.losses.first().copied().unwrap_or(f32::NAN);
            let base = checks
                .first()
                .and_then(|b| b.losses.first())
                .copied()
                .unwrap_or(f32::NAN);
            if !within_tolerance((first - base).abs()) {
                failures.push(format!(
                    "B={batch}: {} first-step loss {first} differs from the baseline's {base} by {} (> {TOLERANCE})",
                    c.name,
                    (first - base).abs()
                ));
            } else if !within_tolerance(c.max_loss_diff) {
                failures.push(format!(
                    "B={batch}: {} losses of the first {CHECK_STEPS} steps {:?} differ from the baseline's by up to {} (> {TOLERANCE})",
                    c.name, c.losses, c.max_loss_diff
                ));
            } else if !within_tolerance(c.max_param_diff) {
                failures.push(format!(
                    "B={batch}: {} parameters after {CHECK_STEPS} steps differ from the baseline's by up to {} (> {TOLERANCE})",
                    c.name, c.max_param_diff
                ));
            }
        }
    }
    for (batch, checks) in &out.checks {
        let bits = |name: &str| {
            checks
                .iter()
                .find(|c| c.name == name)
                .map(|c| (bit_pattern(&c.losses), bit_pattern(&c.params)))
        };
        if bits("safegrad") != bits("safegrad-sse2") {
            failures.push(format!(
                "B={batch}: safegrad's losses or parameters with AVX2 ({}) are not the bits of its SSE2 code's",
                if avx2() { "used" } else { "not used" }
            ));
        }
    }
    if !cli.json || !failures.is_empty() {
        print_checks(&out.checks);
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("bench: loss check FAILED: {f}");
        }
        eprintln!("bench: the implementations do not compute the same step; no timing");
        return Ok(ExitCode::FAILURE);
    }

    if let Some(steps) = cli.profile_steps {
        if cli.batch.is_none_or(|b| b == 1) {
            profile_batch::<1>(&w, cli, steps)?;
        }
        if cli.batch.is_none_or(|b| b == 32) {
            profile_batch::<32>(&w, cli, steps)?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Then timing.
    if cli.batch.is_none_or(|b| b == 1) {
        time_batch::<1>(&w, cli, &mut out)?;
    }
    if cli.batch.is_none_or(|b| b == 32) {
        time_batch::<32>(&w, cli, &mut out)?;
    }

    let conv_timings = conv_bench(cli)?;
    let conv_baseline_ns = |batch: usize| {
        conv_timings
            .iter()
            .find(|t| t.batch == batch && t.name == "baseline")
            .map_or(f64::NAN, ConvTiming::median)
    };

    let cpu = cpu_model();
    let threads = process_threads();
    let baseline_ns = |batch: usize| {
        out.timings
            .iter()
            .find(|t| t.batch == batch && t.name == "baseline")
            .map_or(f64::NAN, Timing::median)
    };
    if cli.json {
        let results: Vec<Value> = out
            .timings
            .iter()
            .map(|t| {
                json!({
                    "implementation": t.name,
                    "batch": t.batch,
                    "median_ns_per_step": t.median(),
                    "min_ns_per_step": t.ns.first(),
                    "max_ns_per_step": t.ns.last(),
                    "steps_per_second": 1e9 / t.median(),
                    "gflops": t.gflops(),
                    "time_ratio_to_baseline": t.median() / baseline_ns(t.batch),
                    "steps_per_repetition": t.steps_per_rep,
                })
            })
            .collect();
        let checks: Vec<Value> = out
            .checks
            .iter()
            .flat_map(|(batch, checks)| {
                checks.iter().map(move |c| {
                    json!({
                        "implementation": c.name,
                        "batch": batch,
                        "first_step_loss": c.losses.first(),
                        "losses": c.losses,
                        "max_loss_diff_to_baseline": c.max_loss_diff,
                        "max_param_diff_to_baseline": c.max_param_diff,
                    })
                })
            })
            .collect();
        let report = json!({
            "workload": "MLP 16-32-32-4, ReLU, f32, softmax cross-entropy (mean over the batch), SGD lr 0.01; step = forward + loss + backward + update",
            "flops_per_step_batch1": FLOPS_PER_SAMPLE,
            "flops_convention": "13,448 FLOPs per sample (the performance issue's count), times the batch",
            "cpu": cpu,
            "dfdx_built": dfdx_built,
            "safegrad_avx2": avx2(),
            "rayon_num_threads": rayon_threads,
            "process_threads_after_timing": threads,
            "warmup_ms": cli.warmup_ms,
            "ms_per_repetition": cli.ms,
            "repetitions": cli.reps.max(1),
            "loss_check_tolerance": 1e-5,
            "loss_check": checks,
            "results": results,
            "conv": {
                "workload": "MotionCnn's two convolutions (6x100 -> 16x48 -> 16x22, 5 taps, stride 2, biases): forward, then the gradients of sum(gy * y2) (the second one's input, kernel and bias, the first one's kernel and bias); no update",
                "flops_per_sample": conv::FLOPS_PER_SAMPLE,
                "gradient_check_relative_tolerance": CONV_TOLERANCE,
                "results": conv_timings.iter().map(|t| json!({
                    "implementation": t.name,
                    "batch": t.batch,
                    "median_ns_per_step": t.median(),
                    "min_ns_per_step": t.ns.first(),
                    "max_ns_per_step": t.ns.last(),
                    "gflops": t.gflops(),
                    "time_ratio_to_baseline": t.median() / conv_baseline_ns(t.batch),
                    "max_relative_gradient_diff_to_baseline": t.max_rel_diff,
                })).collect::<Vec<_>>(),
            },
        });
        println!("{report}");
    } else {
        println!();
        println!("CPU: {cpu}");
        println!(
            "safegrad: {} (`safegrad-sse2`: the same code with them off, the same bits)",
            if avx2() {
                "AVX2 kernel instances, chosen at run time"
            } else {
                "SSE2 kernels (this CPU has no AVX2)"
            }
        );
        match &rayon_threads {
            Some(n) if n == "1" => println!("dfdx 0.13 (CPU): built, RAYON_NUM_THREADS=1"),
            Some(n) => {
                println!("dfdx 0.13 (CPU): built, RAYON_NUM_THREADS={n} (NOT single-threaded)")
            }
            None => println!("dfdx: not built (build with `--features peers` to benchmark it)"),
        }
        if let Some(n) = threads {
            println!("threads of this process after timing: {n}");
        }
        println!(
            "timing: warm-up {} ms, then {} repetitions of about {} ms from the initial weights; median per step",
            cli.warmup_ms,
            cli.reps.max(1),
            cli.ms
        );
        println!(
            "FLOPs: {FLOPS_PER_SAMPLE} per step at batch 1 (the issue's count), times the batch"
        );
        println!();
        println!(
            "| implementation | batch | median ns/step | min - max ns/step | steps/s | GFLOP/s | time vs baseline |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for t in &out.timings {
            println!(
                "| {} | {} | {:.0} | {:.0} - {:.0} | {:.0} | {:.3} | {:.2}x |",
                t.name,
                t.batch,
                t.median(),
                t.ns.first().copied().unwrap_or(f64::NAN),
                t.ns.last().copied().unwrap_or(f64::NAN),
                1e9 / t.median(),
                t.gflops(),
                t.median() / baseline_ns(t.batch),
            );
        }
        println!();
        println!(
            "convolution step: MotionCnn's two convolutions (6 x 100 -> 16 x 48 -> 16 x 22, 5 taps, stride 2), forward and backward, no update; {} FLOPs per sample; gradients checked against the baseline (relative {CONV_TOLERANCE})",
            conv::FLOPS_PER_SAMPLE
        );
        println!();
        println!(
            "| implementation | batch | median us/step | min - max us/step | GFLOP/s | max gradient diff | time vs baseline |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for t in &conv_timings {
            println!(
                "| {} | {} | {:.1} | {:.1} - {:.1} | {:.2} | {:.1e} | {:.2}x |",
                t.name,
                t.batch,
                t.median() / 1e3,
                t.ns.first().copied().unwrap_or(f64::NAN) / 1e3,
                t.ns.last().copied().unwrap_or(f64::NAN) / 1e3,
                t.gflops(),
                t.max_rel_diff,
                t.median() / conv_baseline_ns(t.batch),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_checks(checks: &[(usize, Vec<Check>)]) {
    println!(
        "loss check: the first {CHECK_STEPS} steps from the same weights on the same batches, against the baseline (tolerance {TOLERANCE})"
    );
    for (batch, list) in checks {
        for c in list {
            let losses: Vec<String> = c.losses.iter().map(|l| format!("{l:.7}")).collect();
            println!(
                "  B={batch:<2} {:<9} losses [{}]  max loss diff {:.1e}  max parameter diff {:.1e}",
                c.name,
                losses.join(", "),
                c.max_loss_diff,
                c.max_param_diff
            );
        }
    }
}
