//! The fine-tuning schedule's settings against the reference over many installations: the
//! measurement behind `motion::model`'s constants. It prints one line per shift and a
//! summary (shifts where the mean is at least the reference's, shifts whose worst seed is at
//! least 85%, the mean accuracy, the runs the gate committed).
//!
//! `cargo run --release -p host-sim --example schedules -- LR ANCHOR CLIP GATE RANDOM FULL
//! AUGMENT`, for example `-- 0.1 0.01 0 1 24 0 3` (learning rate 0.1, L2-SP 0.01, no
//! clipping, the gate on, the 12 built-in shifts and 24 random ones, SGD, pre-training on
//! each recording and 3 turned copies; `AUGMENT` defaults to the job's). `ANCHOR` or
//! `CLIP` 0 for none, `GATE` 0 for off; `FULL` above 0 fits the last layer by full-batch
//! gradient descent instead (`motion::model::HEAD_FIT` with this L2-SP penalty), and the
//! SGD settings are not used.

use host_sim::finetune::FinetuneConfig;
use host_sim::reference::{random_shifts, shifts_with, SHIFTS};
use host_sim::shift::Shift;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| -> Result<f64, String> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse::<f64>()
                .map_err(|e| format!("argument {}: `{a}`: {e}", i + 1))
        })
    };
    let (lr, anchor, clip) = (
        arg(0, 0.1)? as f32,
        arg(1, 0.01)? as f32,
        arg(2, 0.0)? as f32,
    );
    let (gate, random) = (arg(3, 1.0)? != 0.0, arg(4, 24.0)? as usize);
    let head_fit = arg(5, 0.0)?;
    let augment = arg(6, FinetuneConfig::default().augment as f64)?;
    if augment < 0.0 || augment.fract() != 0.0 {
        return Err(format!(
            "argument 7: AUGMENT must be a whole number of copies, not {augment}"
        ));
    }
    let augment = augment as usize;
    let mut shifts: Vec<Shift> = SHIFTS.iter().filter_map(|s| s.parse().ok()).collect();
    shifts.extend(random_shifts(random));
    let base = FinetuneConfig {
        finetune_lr: lr,
        anchor: (anchor > 0.0).then_some(anchor),
        clip_norm: (clip > 0.0).then_some(clip),
        gate,
        head_fit: (head_fit > 0.0).then_some(safegrad::train::HeadFit {
            penalty: head_fit as f32,
            ..motion::model::HEAD_FIT
        }),
        augment,
        ..FinetuneConfig::default()
    };
    let seeds: Vec<u64> = (1..=10).collect();
    let rows = shifts_with(
        &host_sim::data::default_dir(),
        &base,
        &shifts,
        &seeds,
        &mut |_| {},
    )?;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let worst = |xs: &[f64]| xs.iter().copied().fold(1.0, f64::min);
    let (mut at_least, mut above_85, mut total, mut committed) = (0, 0, 0.0, 0);
    for row in &rows {
        let after: Vec<f64> = row
            .reports
            .iter()
            .map(|r| r.shifted_accuracy_after)
            .collect();
        let kept = row
            .reports
            .iter()
            .filter(|r| r.gate.is_none_or(|g| g.committed))
            .count();
        println!(
            "{:36} after {:5.1}% (worst {:5.1}%)  reference {:5.1}% (worst {:5.1}%)  committed {kept}/{}",
            row.shift,
            100.0 * mean(&after),
            100.0 * worst(&after),
            100.0 * mean(&row.reference),
            100.0 * worst(&row.reference),
            row.reports.len()
        );
        at_least += usize::from(mean(&after) >= mean(&row.reference));
        above_85 += usize::from(worst(&after) >= 0.85);
        total += mean(&after);
        committed += kept;
    }
    println!(
        "lr {lr}, anchor {anchor}, clip {clip}, gate {gate}: mean at least the reference's on {at_least} of {} shifts, worst seed at least 85% on {above_85}, mean {:.2}%, committed {committed} of {} runs",
        rows.len(),
        100.0 * total / rows.len().max(1) as f64,
        rows.len() * seeds.len()
    );
    Ok(())
}
