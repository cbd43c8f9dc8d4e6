//! `host-sim`: safegrad's command-line tool on the host.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use host_sim::digits::{self, DigitsConfig};
use host_sim::finetune::{self, FinetuneConfig, FinetuneMode, MotionNet, Progress};
use host_sim::plans;
use host_sim::plot::{self, Series};
use host_sim::reference;
use host_sim::shift::Shift;

/// safegrad on the host: the fine-tuning job, training, and the reference cases.
#[derive(Parser)]
#[command(name = "host-sim", version, about)]
struct Cli {
    /// Run safegrad's SSE2 kernels even on a CPU with AVX2 (the results are the same bits;
    /// for timing both).
    #[arg(long, global = true)]
    no_avx2: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dataset {
    /// The handwritten digits (8x8, 10 classes).
    Digits,
}

#[derive(Subcommand)]
enum Command {
    /// Pre-train on BasicMotions, shift the held-out data (the watch worn rotated), then
    /// fine-tune a frozen model on a few shifted recordings and report the accuracies.
    Finetune {
        /// Print the result as one JSON object (the last line).
        #[arg(long)]
        json: bool,
        /// The model: mlp (16 hand-made features, MLP 16-32-32-4) or cnn (the raw 6 x 100
        /// window, a 1-D CNN).
        #[arg(long, default_value = "mlp")]
        model: MotionNet,
        /// Seed of initialisation and shuffling.
        #[arg(long, default_value_t = FinetuneConfig::default().seed)]
        seed: u64,
        /// How the watch is worn after pre-training: one part or several joined by `+`,
        /// applied in order: rot-x:DEG, rot-y:DEG, rot-z:DEG (about the watch's axes, z out
        /// of its face), rot:AX,AY,AZ:DEG (any axis), mirror[:x|y|z] (the other wrist),
        /// gain:ACC,GYRO, offset:X,Y,Z (accelerometer), noise:STD (seeded). Default rot-z:90.
        #[arg(long, value_name = "SPEC", conflicts_with = "rotation")]
        shift: Option<Shift>,
        /// Shorthand for `--shift rot-z:DEG`.
        #[arg(long, value_name = "DEG", allow_negative_numbers = true, value_parser = finite_degrees)]
        rotation: Option<f64>,
        /// Shifted training recordings per class used for fine-tuning (at least 1, at most
        /// the training split's recordings of a class).
        #[arg(long, default_value_t = FinetuneConfig::default().per_class, value_parser = recordings)]
        per_class: usize,
        /// What fine-tuning trains: all, last-layer, last-K-layers, bias-only (TinyTL),
        /// biases-last-layer or biases-last-K-layers (TinyTL's biases and the last K layers).
        #[arg(long, default_value = "last-layer")]
        mode: FinetuneMode,
        /// Pre-training epochs.
        #[arg(long, default_value_t = FinetuneConfig::default().pretrain_epochs)]
        pretrain_epochs: usize,
        /// Pre-training sees each recording this many more times, each time worn as a
        /// random rigid installation (the other wrist half of the time, a random rotation),
        /// so that the body's features hold however the watch is worn (0 for none; not used
        /// with --pretrained).
        #[arg(long, value_name = "N", default_value_t = FinetuneConfig::default().augment)]
        augment: usize,
        /// Most fine-tuning epochs (fine-tuning stops earlier once its loss has converged).
        #[arg(long, default_value_t = FinetuneConfig::default().finetune_epochs)]
        finetune_epochs: usize,
        /// Fine-tuning learning rate (SGD).
        #[arg(long, default_value_t = FinetuneConfig::default().finetune_lr, value_parser = positive_rate)]
        finetune_lr: f32,
        /// L2-SP: the weight of a penalty on the fine-tuned parameters' distance from the
        /// pre-trained ones (0 for none).
        #[arg(long, default_value_t = motion::model::ANCHOR, allow_negative_numbers = true, value_parser = penalty)]
        anchor: f32,
        /// Keep the fine-tuned model even if, cross-validated over the fine-tuning
        /// recordings, it does not beat the pre-trained one (the validation gate off).
        #[arg(long)]
        no_gate: bool,
        /// Latent replay: keep this many unshifted training recordings per class as the
        /// frozen body's outputs in 8 bits, and train the last layer on them next to the
        /// shifted ones, so that it still serves the original installation (0 for none).
        #[arg(long, value_name = "N", default_value_t = 0)]
        replay: usize,
        /// How the last layer is fitted: sgd (the schedule's epochs of batch-1 SGD) or
        /// full-batch (gradient descent with a line search on its L2-SP loss over the
        /// frozen body's outputs). Default: full-batch with --new-class in last-layer mode,
        /// sgd otherwise.
        #[arg(long, value_name = "HOW")]
        fit: Option<HeadFitting>,
        /// Teach a new class on the device: pre-train without class K (0 standing, 1
        /// running, 2 walking, 3 badminton), then set up the head's output for it from its
        /// fine-tuning recordings and fine-tune. The watch is worn as in training unless
        /// --shift or --rotation says otherwise.
        #[arg(long, value_name = "K", value_parser = class_index)]
        new_class: Option<usize>,
        /// Write the loss and accuracy curves to this PNG (and a CSV beside it).
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// Write the pre-trained model's checkpoint to this file.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// Quantise the frozen body after pre-training: `int8` (per-channel weights,
        /// activations calibrated on the training split; the last layer fine-tuned in float
        /// over the int8 body's outputs).
        #[arg(long, value_name = "TYPE")]
        quantize: Option<Quantization>,
        /// Write the fine-tuned model's checkpoint (what the gate committed) to this file;
        /// `host-sim export` writes it back into an imported ONNX model.
        #[arg(long, value_name = "FILE")]
        save: Option<PathBuf>,
        /// Start from this pre-trained checkpoint instead of pre-training (e.g.
        /// motion/assets/pretrained.sgck, what the device starts from).
        #[arg(long, value_name = "FILE")]
        pretrained: Option<PathBuf>,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Fine-tune with every training plan (bias-only, last layer, last layers, biases and
    /// the last layers, all), several seeds each, and print each plan's memory and the
    /// accuracy it recovers after the shift as a Markdown table.
    Plans {
        /// Print one JSON array, one object per plan.
        #[arg(long)]
        json: bool,
        /// The model: mlp or cnn.
        #[arg(long, default_value = "mlp")]
        model: MotionNet,
        /// Seeds 1 to this.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// How the watch is worn after pre-training: one part or several joined by `+`,
        /// applied in order: rot-x:DEG, rot-y:DEG, rot-z:DEG (about the watch's axes, z out
        /// of its face), rot:AX,AY,AZ:DEG (any axis), mirror[:x|y|z] (the other wrist),
        /// gain:ACC,GYRO, offset:X,Y,Z (accelerometer), noise:STD (seeded). Default rot-z:90.
        #[arg(long, value_name = "SPEC", conflicts_with = "rotation")]
        shift: Option<Shift>,
        /// Shorthand for `--shift rot-z:DEG`.
        #[arg(long, value_name = "DEG", allow_negative_numbers = true, value_parser = finite_degrees)]
        rotation: Option<f64>,
        /// Shifted training recordings per class used for fine-tuning (at least 1, at most
        /// the training split's recordings of a class).
        #[arg(long, default_value_t = FinetuneConfig::default().per_class, value_parser = recordings)]
        per_class: usize,
        /// Pre-training's turned copies of each recording (as `finetune --augment`).
        #[arg(long, value_name = "N", default_value_t = FinetuneConfig::default().augment)]
        augment: usize,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// The MLP on hand-made features and the CNN on raw windows side by side: each
    /// pre-trained, shifted and fine-tuned (the last layer) over several seeds, with the
    /// memory of a fine-tuning step, as a Markdown table.
    Compare {
        /// Print one JSON array, one object per model.
        #[arg(long)]
        json: bool,
        /// Seeds 1 to this.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// Pre-training's turned copies of each recording (as `finetune --augment`).
        #[arg(long, value_name = "N", default_value_t = FinetuneConfig::default().augment)]
        augment: usize,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Fine-tune the MLP's last layer under many simulated installations (rotations about
    /// every axis, the other wrist, gains, offsets and noise), several seeds each, next to
    /// a logistic-regression head refit on the same frozen features, as a Markdown table.
    Shifts {
        /// Print one JSON array, one object per shift.
        #[arg(long)]
        json: bool,
        /// Seeds 1 to this.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// The shifts (as `finetune --shift`); the built-in list by default.
        #[arg(long, value_name = "SPEC")]
        shift: Vec<Shift>,
        /// Add this many rigid installations drawn at random (always the same ones: a
        /// rotation about a random axis, every third on the other wrist).
        #[arg(long, value_name = "N", default_value_t = 0)]
        random: usize,
        /// Latent replay of this many unshifted recordings per class (as `finetune
        /// --replay`).
        #[arg(long, value_name = "N", default_value_t = 0)]
        replay: usize,
        /// Pre-training sees each recording this many more times, worn as a random rigid
        /// installation (as `finetune --augment`).
        #[arg(long, value_name = "N", default_value_t = FinetuneConfig::default().augment)]
        augment: usize,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Teach a model each class in turn as a new one (pre-trained without it, then its
    /// head's output set up and fitted on a few recordings of every class), several seeds
    /// each, next to a logistic-regression head refit on the same frozen features, as a
    /// Markdown table.
    NewClass {
        /// Print one JSON array, one object per class.
        #[arg(long)]
        json: bool,
        /// The model: mlp or cnn (as `finetune --model`).
        #[arg(long, default_value = "mlp")]
        model: MotionNet,
        /// Seeds 1 to this.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// Training recordings per class used for fine-tuning, the new class's included.
        #[arg(long, default_value_t = FinetuneConfig::default().per_class, value_parser = recordings)]
        per_class: usize,
        /// How the last layer is fitted (as `finetune --fit`).
        #[arg(long, value_name = "HOW", default_value = "full-batch")]
        fit: HeadFitting,
        /// Pre-training's turned copies of each recording (as `finetune --augment`).
        #[arg(long, value_name = "N", default_value_t = FinetuneConfig::default().augment)]
        augment: usize,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Train a model on a data set and report its held-out accuracy.
    Train {
        /// The data set.
        #[arg(long, value_enum)]
        data: Dataset,
        /// Print the result as one JSON object (the last line).
        #[arg(long)]
        json: bool,
        /// Seed of the split, initialisation and shuffling.
        #[arg(long, default_value_t = DigitsConfig::default().seed)]
        seed: u64,
        /// Passes over the training split.
        #[arg(long, default_value_t = DigitsConfig::default().epochs)]
        epochs: usize,
        /// Write the loss and accuracy curves to this PNG (and a CSV beside it).
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// Write the trained model's checkpoint to this file.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write what the firmware embeds: the pre-trained checkpoint, the shifted fine-tuning
    /// and evaluation sets (features, or raw windows for the CNN), and the host's results
    /// to compare with.
    DeviceAssets {
        /// The model: mlp (features; written to motion/assets) or cnn (raw windows; written
        /// to motion/assets/cnn).
        #[arg(long, default_value = "mlp")]
        model: MotionNet,
        /// Instead, the assets of the firmware that teaches class K as new
        /// (`finetune-new-class`, the MLP; written to motion/assets/new-class): the model
        /// pre-trained without it, and the unshifted recordings of every class.
        #[arg(long, value_name = "K")]
        new_class: Option<usize>,
        /// The folder to write into, instead of the model's.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write what the firmware's first program embeds (firmware/examples/quickstart.rs): a
    /// digits classifier pre-trained here, and images from a new camera (half the contrast,
    /// a brighter background) to fine-tune on and to evaluate.
    ExampleAssets {
        /// The folder to write into.
        #[arg(long, value_name = "DIR", default_value = "firmware/examples/assets")]
        out: PathBuf,
        /// Print the host's run of the program's fine-tuning as one JSON object.
        #[arg(long)]
        json: bool,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write the rotated recordings as the device's UART stream: `motion::wire` frames,
    /// each after a 0x00, training recordings, then held-out ones, then the end.
    DeviceStream {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Instead: this many training frames drawn from the fine-tuning recordings, one in
        /// `--fault-every` damaged on purpose (the injected faults are printed).
        #[arg(long)]
        soak: Option<u64>,
        /// With `--soak`: one frame in this many carries a fault.
        #[arg(long, default_value_t = 25)]
        fault_every: u64,
        /// Instead of the shifted recordings, those that teach class K as new
        /// (`finetune --new-class K`): every class's, the watch worn as in training.
        #[arg(long, value_name = "K", conflicts_with = "soak")]
        new_class: Option<usize>,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Cut the power at every byte program and sector erase of a checkpoint save, and flip
    /// every bit of a stored slot; report what the next boot loads.
    Faults {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Stream windows as wire frames with faults injected on purpose, one training step per
    /// good frame, and check that nothing grows and only the injected faults are refused.
    Soak {
        /// Training steps to take.
        #[arg(long, default_value_t = 100_000)]
        steps: u64,
        /// One frame in this many carries a fault (0: none).
        #[arg(long, default_value_t = 50)]
        fault_every: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Audit an ONNX model for unguarded domains (division, log, square root), or, without
    /// MODEL, the corpus of unsafe/safe graph pairs (masked division and friends, from real
    /// reports); report each graph's findings.
    Audit {
        /// An ONNX model to audit, node by node, as exported.
        model: Option<PathBuf>,
        /// Print one JSON object per graph, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Import an ONNX model that is a chain of layers: write the safegrad model type
    /// (DIR/model.rs), its checkpoint (DIR/model.sgck) and a summary (DIR/import.json).
    Import {
        /// The ONNX model.
        model: PathBuf,
        /// The folder to write into.
        #[arg(long)]
        out: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a checkpoint of an imported model (fine-tuned, say) back into its ONNX file's
    /// initialisers, for PyTorch or onnxruntime to evaluate.
    Export {
        /// The ONNX model the checkpoint's model was imported from.
        #[arg(long)]
        onnx: PathBuf,
        /// The checkpoint (`.sgck`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The ONNX file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the fine-tuning job of the MLP and of the CNN with a float body and with
    /// `--quantize int8`, and compare accuracy (before the shift, after it, after
    /// fine-tuning) and the body's bytes.
    Quantize {
        /// Print one JSON array, one object per model.
        #[arg(long)]
        json: bool,
        /// The job's seed.
        #[arg(long, default_value_t = motion::model::SEED)]
        seed: u64,
        /// Pre-training's turned copies of each recording (as `finetune --augment`).
        #[arg(long, value_name = "N", default_value_t = FinetuneConfig::default().augment)]
        augment: usize,
        /// Folder of the data sets.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Run an ONNX model through safegrad's kernels on the input vectors of a JSON file,
    /// `{"inputs": [[...], ...]}`, each flattened in ONNX's row-major order.
    Predict {
        /// The ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// The inputs, `{"inputs": [[...], ...]}`.
        #[arg(long)]
        inputs: PathBuf,
        /// Print `{"outputs": [[...], ...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Reproduce the BugZoo cases (masked division and friends) and print forward values and
    /// gradients, next to what the IEEE chain rule gives.
    Bugzoo {
        /// Print one JSON array, one object per case.
        #[arg(long)]
        json: bool,
    },
}

fn run_plans(json: bool, config: &FinetuneConfig, seeds: &[u64], dir: &Path) -> Result<(), String> {
    let modes = FinetuneMode::all_for(config.model);
    let runs = bar(seeds.len() * modes.len(), "plans", json);
    let rows = plans::run(dir, config, seeds, &modes, &mut |done, _| {
        runs.set_position(done as u64)
    })?;
    runs.finish_and_clear();
    let stats = |xs: Vec<f64>| {
        let mean = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        let worst = xs.iter().copied().fold(f64::INFINITY, f64::min);
        (mean, worst)
    };
    if json {
        let objects: Vec<_> = rows
            .iter()
            .map(|row| {
                json!({
                    "mode": row.mode.name(),
                    "trainable_params": row.trainable,
                    "gradient_bytes": row.gradient_bytes,
                    "adam_bytes": row.adam_bytes,
                    "value_bytes": row.value_bytes,
                    "rollback_bytes": row.rollback_bytes,
                    "sgd_bytes": row.sgd_bytes(),
                    "seeds": seeds,
                    "shifted_accuracy_after": row.after().collect::<Vec<_>>(),
                    "drop_recovered": row.reports.iter().map(|r| r.drop_recovered()).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(objects));
        return Ok(());
    }
    let first = rows.first().ok_or("no plans")?;
    let (pre, pre_worst) = stats(first.reports.iter().map(|r| r.pretrain_accuracy).collect());
    let (before, before_worst) = stats(
        first
            .reports
            .iter()
            .map(|r| r.shifted_accuracy_before)
            .collect(),
    );
    println!(
        "{}{}, seeds 1-{}: pre-trained {} (worst {}), {} before fine-tuning {} (worst {})",
        config.model.name(),
        pretraining(config.augment),
        seeds.len(),
        percent(pre),
        percent(pre_worst),
        match config.shift.rotation_z_degrees() {
            Some(d) => format!("rotated {d:.0} deg"),
            None => format!("shifted ({})", config.shift),
        },
        percent(before),
        percent(before_worst),
    );
    println!();
    println!(
        "| plan | trainable | gradients | + Adam moments | tape values | rollback | RAM, SGD | after, mean | after, worst | seeds recovering 90% of the drop |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in &rows {
        let (mean, worst) = stats(row.after().collect());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            row.mode.name(),
            row.trainable,
            row.gradient_bytes,
            row.adam_bytes,
            row.value_bytes,
            row.rollback_bytes,
            row.sgd_bytes(),
            percent(mean),
            percent(worst),
            row.recovering(0.9),
            seeds.len(),
        );
    }
    Ok(())
}

/// How pre-training saw the recordings, for a table's caption.
fn pretraining(augment: usize) -> String {
    if augment == 0 {
        ", pre-trained without augmentation".to_string()
    } else {
        format!(", pre-trained on each recording and {augment} turned copies")
    }
}

fn run_shifts(
    json: bool,
    shifts: Vec<Shift>,
    replay: usize,
    augment: usize,
    seeds: &[u64],
    dir: &Path,
) -> Result<(), String> {
    let shifts = if shifts.is_empty() {
        reference::SHIFTS
            .iter()
            .map(|s| s.parse::<Shift>())
            .collect::<Result<Vec<_>, _>>()?
    } else {
        shifts
    };
    let runs = bar(shifts.len() * seeds.len(), "shifts", json);
    let base = FinetuneConfig {
        replay,
        augment,
        ..FinetuneConfig::default()
    };
    let rows = reference::shifts_with(dir, &base, &shifts, seeds, &mut |d| {
        runs.set_position(d as u64)
    })?;
    runs.finish_and_clear();
    let of = |row: &reference::ShiftRow, f: fn(&finetune::FinetuneReport) -> f64| -> Vec<f64> {
        row.reports.iter().map(f).collect()
    };
    if json {
        let objects: Vec<_> = rows
            .iter()
            .map(|row| {
                json!({
                    "shift": row.shift,
                    "seeds": seeds,
                    "pretrain_accuracy": of(row, |r| r.pretrain_accuracy),
                    "shifted_accuracy_before": of(row, |r| r.shifted_accuracy_before),
                    "shifted_accuracy_after": of(row, |r| r.shifted_accuracy_after),
                    "original_accuracy_after": of(row, |r| r.original_accuracy_after),
                    "committed": row.reports.iter().map(|r| r.committed()).collect::<Vec<_>>(),
                    "reference_accuracy": row.reference,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(objects));
        return Ok(());
    }
    println!(
        "mlp{}, last layer, 3 recordings per class (SGD at {}, L2-SP {}, until converged, validation gate{}), seeds 1-{}; reference: a logistic-regression head refit on the frozen features of the same recordings",
        pretraining(augment),
        motion::model::LEARNING_RATE,
        motion::model::ANCHOR,
        if replay > 0 {
            format!(
                ", latent replay of {replay} unshifted recordings per class in 8 bits ({} bytes each)",
                safegrad::train::Latent8::<32>::BYTES
            )
        } else {
            String::new()
        },
        seeds.len()
    );
    println!();
    println!(
        "| shift | pre-trained | before | after, mean | after, worst | reference, mean | reference, worst | after - reference | committed | unshifted, after |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let (mut at_least, mut above_85, mut committed) = (0, 0, 0);
    for row in &rows {
        let after = of(row, |r| r.shifted_accuracy_after);
        let kept = row.reports.iter().filter(|r| r.committed()).count();
        at_least += usize::from(mean(&after) >= mean(&row.reference));
        above_85 += usize::from(worst(&after) >= 0.85);
        committed += kept;
        println!(
            "| `{}` | {} | {} | {} | {} | {} | {} | {:+.1} | {}/{} | {} |",
            row.shift,
            percent(mean(&of(row, |r| r.pretrain_accuracy))),
            percent(mean(&of(row, |r| r.shifted_accuracy_before))),
            percent(mean(&after)),
            percent(worst(&after)),
            percent(mean(&row.reference)),
            percent(worst(&row.reference)),
            100.0 * (mean(&after) - mean(&row.reference)),
            kept,
            row.reports.len(),
            percent(mean(&of(row, |r| r.original_accuracy_after))),
        );
    }
    println!();
    println!(
        "mean at least the reference's on {at_least} of {} shifts; worst seed at least 85% on {above_85}; fine-tuned model committed in {committed} of {} runs",
        rows.len(),
        rows.len() * seeds.len()
    );
    // Forgetting: the unshifted held-out accuracy lost, per shift (the mean over seeds).
    let lost: Vec<f64> = rows
        .iter()
        .map(|row| {
            mean(&of(row, |r| r.pretrain_accuracy)) - mean(&of(row, |r| r.original_accuracy_after))
        })
        .collect();
    println!(
        "unshifted held-out accuracy lost to fine-tuning: {:.1} points on average over the shifts, {:.1} at most",
        100.0 * mean(&lost),
        100.0 * lost.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    );
    Ok(())
}

fn run_new_class(
    json: bool,
    model: MotionNet,
    per_class: usize,
    fit: HeadFitting,
    augment: usize,
    seeds: &[u64],
    dir: &Path,
) -> Result<(), String> {
    let classes = motion::model::CLASSES;
    let runs = bar(classes * seeds.len(), "new class", json);
    let base = FinetuneConfig {
        shift: Shift::none(),
        per_class,
        head_fit: (fit == HeadFitting::FullBatch).then_some(motion::model::HEAD_FIT),
        augment,
        ..FinetuneConfig::for_model(model)
    };
    let rows = reference::new_classes(dir, &base, seeds, &mut |d| runs.set_position(d as u64))?;
    runs.finish_and_clear();
    let of = |row: &reference::NewClassRow, f: fn(&finetune::NewClassReport) -> f64| -> Vec<f64> {
        row.reports
            .iter()
            .filter_map(|r| r.new_class.as_ref().map(f))
            .collect()
    };
    let committed = |row: &reference::NewClassRow| -> Vec<bool> {
        row.reports.iter().map(|r| r.committed()).collect()
    };
    if json {
        let objects: Vec<_> = rows
            .iter()
            .map(|row| {
                json!({
                    "new_class": row.class,
                    "seeds": seeds,
                    "old_classes_accuracy_before": of(row, |n| n.old_accuracy_before),
                    "old_classes_accuracy_after": of(row, |n| n.old_accuracy_after),
                    "new_class_accuracy_after": of(row, |n| n.new_accuracy_after),
                    "committed": committed(row),
                    "reference_old_classes_accuracy": row.reference_old,
                    "reference_new_class_accuracy": row.reference_new,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(objects));
        return Ok(());
    }
    let how = match fit {
        HeadFitting::FullBatch => format!(
            "fitted by full-batch gradient descent ({} steps at most, L2-SP {} against the summed loss)",
            motion::model::HEAD_FIT.iterations,
            motion::model::HEAD_FIT.penalty
        ),
        HeadFitting::Sgd => format!(
            "SGD at {}, L2-SP {}, until converged",
            motion::model::LEARNING_RATE,
            motion::model::ANCHOR
        ),
    };
    println!(
        "{}, pre-trained without the new class{}; its head output imprinted, then the last layer {how}, on {per_class} recordings of every class, behind the validation gate; seeds 1-{}; reference: a logistic-regression head refit on the frozen features of the same recordings",
        model.name(),
        if augment == 0 {
            String::new()
        } else {
            format!(" on each recording and {augment} turned copies")
        },
        seeds.len()
    );
    println!();
    println!(
        "| new class | other classes, pre-trained | other classes, after | new class, mean | new class, worst | reference: other classes | reference: new class, mean | reference: new class, worst | committed |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let (mut all, mut reference_all) = (0.0, 0.0);
    for row in &rows {
        let new = of(row, |n| n.new_accuracy_after);
        let old = of(row, |n| n.old_accuracy_after);
        let kept = committed(row).iter().filter(|&&c| c).count();
        all += mean(&old) * (classes - 1) as f64 + mean(&new);
        reference_all += mean(&row.reference_old) * (classes - 1) as f64 + mean(&row.reference_new);
        println!(
            "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            row.class,
            motion::model::CLASS_NAMES
                .get(row.class)
                .copied()
                .unwrap_or("?"),
            percent(mean(&of(row, |n| n.old_accuracy_before))),
            percent(mean(&old)),
            percent(mean(&new)),
            percent(worst(&new)),
            percent(mean(&row.reference_old)),
            percent(mean(&row.reference_new)),
            percent(worst(&row.reference_new)),
            kept,
            row.reports.len(),
        );
    }
    println!();
    let n = (rows.len() * classes).max(1) as f64;
    println!(
        "held-out accuracy over every class (each class weighted alike), mean over the new classes and seeds: {} after fine-tuning, reference {}",
        percent(all / n),
        percent(reference_all / n)
    );
    Ok(())
}

fn run_compare(json: bool, augment: usize, seeds: &[u64], dir: &Path) -> Result<(), String> {
    let models = [MotionNet::Mlp, MotionNet::Cnn];
    let runs = bar(seeds.len() * models.len(), "compare", json);
    let mut done = 0;
    let mut rows = Vec::new();
    for model in models {
        let config = FinetuneConfig {
            augment,
            ..FinetuneConfig::for_model(model)
        };
        let mut found = plans::run(
            dir,
            &config,
            seeds,
            &[FinetuneMode::LAST_LAYER],
            &mut |d, _| runs.set_position((done + d) as u64),
        )?;
        done += seeds.len();
        rows.push((model, found.pop().ok_or("no plan")?));
    }
    runs.finish_and_clear();
    let of = |row: &plans::PlanRow, f: fn(&finetune::FinetuneReport) -> f64| -> Vec<f64> {
        row.reports.iter().map(f).collect()
    };
    if json {
        let objects: Vec<_> = rows
            .iter()
            .map(|(model, row)| {
                let sizes = model.sizes(row.mode);
                json!({
                    "model": model.name(),
                    "mode": row.mode.name(),
                    "seeds": seeds,
                    "pretrain_accuracy": of(row, |r| r.pretrain_accuracy),
                    "shifted_accuracy_before": of(row, |r| r.shifted_accuracy_before),
                    "shifted_accuracy_after": of(row, |r| r.shifted_accuracy_after),
                    "drop_recovered": of(row, |r| r.drop_recovered()),
                    "parameters": sizes.parameters,
                    "trainable_params": row.trainable,
                    "train_state_bytes": row.gradient_bytes,
                    "sgd_bytes": row.sgd_bytes(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(objects));
        return Ok(());
    }
    println!(
        "seeds 1-{}{}, rotated 90 deg, fine-tuning the last layer on 3 recordings per class (SGD at {}, L2-SP {}, until converged, validation gate)",
        seeds.len(),
        pretraining(augment),
        motion::model::LEARNING_RATE,
        motion::model::ANCHOR
    );
    println!();
    println!("| model | input | parameters | pre-trained | rotated, before | after fine-tuning | after, worst seed | drop recovered | trainable | training state | RAM, SGD |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (model, row) in &rows {
        let input = match model {
            MotionNet::Mlp => "16 features",
            MotionNet::Cnn => "6 x 100 raw window",
        };
        println!(
            "| {} | {input} | {} | {} | {} | {} | {} | {} | {} | {} B | {} B |",
            model.name(),
            model.sizes(row.mode).parameters,
            percent(mean(&of(row, |r| r.pretrain_accuracy))),
            percent(mean(&of(row, |r| r.shifted_accuracy_before))),
            percent(mean(&of(row, |r| r.shifted_accuracy_after))),
            percent(worst(&of(row, |r| r.shifted_accuracy_after))),
            percent(mean(&of(row, |r| r.drop_recovered()))),
            row.trainable,
            row.gradient_bytes,
            row.sgd_bytes(),
        );
    }
    Ok(())
}

/// A progress bar on stderr, hidden when the output is for a machine or not a terminal.
fn bar(len: usize, prefix: &'static str, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64).with_prefix(prefix);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} epochs  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

/// The mean of `xs` (0 for none).
fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// The smallest of `xs` (infinity for none).
fn worst(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

#[allow(clippy::too_many_arguments)]
fn run_finetune(
    json: bool,
    config: FinetuneConfig,
    plot_path: Option<PathBuf>,
    (export, save): (Option<PathBuf>, Option<PathBuf>),
    data_dir: PathBuf,
) -> Result<(), String> {
    let pre = bar(config.pretrain_epochs, "pretrain", json);
    let fine = bar(config.finetune_epochs, "finetune", json);
    let report = finetune::run(&data_dir, &config, &mut |p| match p {
        Progress::Pretrain(s, _) => {
            pre.set_position(s.epoch as u64);
            pre.set_message(format!(
                "loss {:.4}  held-out {}",
                s.loss,
                percent(s.accuracy)
            ));
        }
        Progress::Finetune(s, _) => {
            pre.finish_and_clear();
            fine.set_position(s.epoch as u64);
            fine.set_message(format!(
                "loss {:.4}  shifted {}",
                s.loss,
                percent(s.accuracy)
            ));
        }
    })?;
    fine.finish_and_clear();
    if let Some(path) = &plot_path {
        plot::write(
            path,
            "BasicMotions: pre-training (held-out) and fine-tuning (shifted held-out)",
            &[
                Series {
                    name: "pretrain",
                    points: &report.pretrain_curve,
                },
                Series {
                    name: "finetune",
                    points: &report.finetune_curve,
                },
            ],
        )?;
    }
    // A quantised model's checkpoints carry its int8 body (format version 2).
    let (pretrained, finetuned) = match &report.int8_checkpoints {
        Some((before, after)) => (before, after),
        None => (&report.pretrained_checkpoint, &report.finetuned_checkpoint),
    };
    if let Some(path) = &export {
        write_file(path, pretrained)?;
    }
    if let Some(path) = &save {
        write_file(path, finetuned)?;
    }
    let recovered = report.drop_recovered();
    if json {
        let object = json!({
            "pretrain_accuracy": report.pretrain_accuracy,
            "shifted_accuracy_before": report.shifted_accuracy_before,
            "shifted_accuracy_after": report.shifted_accuracy_after,
            "original_accuracy_after": report.original_accuracy_after,
            "drop_recovered": recovered,
            "finetune_steps": report.finetune_steps,
            "finetune_epochs": report.finetune_curve.len(),
            "committed": report.committed(),
            "validation_accuracy_before": report.gate.map(|g| g.before.correct as f64 / g.before.rows.max(1) as f64),
            "validation_accuracy_after": report.gate.map(|g| g.after.correct as f64 / g.after.rows.max(1) as f64),
            "finetune_samples": report.finetune_samples,
            "replay_samples": report.replay_samples,
            "new_class": report.new_class.map(|n| n.class),
            "old_classes_accuracy_before": report.new_class.map(|n| n.old_accuracy_before),
            "old_classes_accuracy_after": report.new_class.map(|n| n.old_accuracy_after),
            "new_class_accuracy_before": report.new_class.map(|n| n.new_accuracy_before),
            "new_class_accuracy_after": report.new_class.map(|n| n.new_accuracy_after),
            "trainable_params": report.trainable_params,
            "train_state_bytes": report.train_state_bytes,
            "audit": audit_json(&report.audit),
            "pretrain_audit": audit_json(&report.pretrain_audit),
            "model_bytes": report.model_bytes,
            "mode": config.mode.name(),
            "model": config.model.name(),
            "quantize": config.quantize.then_some("int8"),
            "rotation_degrees": config.shift.rotation_z_degrees(),
            "shift": config.shift.to_string(),
            "seed": config.seed,
            "augment": config.augment_used(),
            "finetuned_checkpoint_crc32": format!("{:#010x}", report.finetuned_crc32()),
        });
        println!("{object}");
    } else {
        let model = match config.model {
            MotionNet::Mlp => "MLP 16-32-32-4 on IMU features",
            MotionNet::Cnn => "1-D CNN on raw 6 x 100 IMU windows",
        };
        let body = if config.quantize {
            ", the frozen body in int8"
        } else {
            ""
        };
        println!("BasicMotions, {model}{body} (seed {})", config.seed);
        let how = match config.head_fit {
            Some(_) => "full-batch fit",
            None => "SGD",
        };
        if let Some(n) = &report.new_class {
            let name = motion::model::CLASS_NAMES
                .get(n.class)
                .copied()
                .unwrap_or("?");
            println!(
                "  new class {} ({name}): pre-trained without it, taught from {} of its recordings",
                n.class, config.per_class
            );
            println!(
                "  held-out accuracy on the other classes, pre-trained   {}",
                percent(n.old_accuracy_before)
            );
            println!(
                "  after fine-tuning ({}, {how}, {} recordings, {} steps):",
                config.mode.name(),
                report.finetune_samples,
                report.finetune_steps,
            );
            println!("    the other classes   {}", percent(n.old_accuracy_after));
            println!(
                "    {name:19} {} (before: {})",
                percent(n.new_accuracy_after),
                percent(n.new_accuracy_before)
            );
            println!(
                "    every class         {}",
                percent(report.shifted_accuracy_after)
            );
        } else {
            println!(
                "  held-out accuracy, watch worn as in training   {}",
                percent(report.pretrain_accuracy)
            );
            println!(
                "  held-out accuracy, watch {}     {}",
                shifted(&config.shift),
                percent(report.shifted_accuracy_before)
            );
            println!(
                "  after fine-tuning ({}, {how}, {} recordings, {} steps)  {}",
                config.mode.name(),
                report.finetune_samples,
                report.finetune_steps,
                percent(report.shifted_accuracy_after)
            );
            println!(
                "  drop recovered                                 {}",
                percent(recovered)
            );
        }
        if let Some(g) = &report.gate {
            let verdict = if g.committed {
                "beats the pre-trained model: committed".to_string()
            } else {
                "does not beat the pre-trained model: kept the pre-trained model".to_string()
            };
            println!(
                "  validation gate: fine-tuning, cross-validated on the {} recordings, {}/{} correct (loss {:.3}), pre-trained {}/{} (loss {:.3}): {verdict}",
                g.before.rows,
                g.after.correct,
                g.after.rows,
                g.after.loss / g.after.rows.max(1) as f32,
                g.before.correct,
                g.before.rows,
                g.before.loss / g.before.rows.max(1) as f32,
            );
        }
        println!(
            "  trainable parameters {}, training state {} bytes, model {} bytes",
            report.trainable_params, report.train_state_bytes, report.model_bytes
        );
        println!(
            "  domain audit of the pre-training step: {}",
            report.pretrain_audit
        );
        println!("  domain audit of the fine-tuning step: {}", report.audit);
        if let Some(path) = &plot_path {
            println!(
                "  curves: {} and {}",
                path.display(),
                path.with_extension("csv").display()
            );
        }
        if let Some(path) = &export {
            println!("  pre-trained checkpoint: {}", path.display());
        }
    }
    Ok(())
}

fn run_train(
    json: bool,
    config: DigitsConfig,
    plot_path: Option<PathBuf>,
    export: Option<PathBuf>,
    data_dir: PathBuf,
) -> Result<(), String> {
    let progress = bar(config.epochs, "train", json);
    let report = digits::run(&data_dir, &config, &mut |s| {
        progress.set_position(s.epoch as u64);
        progress.set_message(format!(
            "loss {:.4}  held-out {}",
            s.loss,
            percent(s.accuracy)
        ));
    })?;
    progress.finish_and_clear();
    if let Some(path) = &plot_path {
        plot::write(
            path,
            "digits: training loss and held-out accuracy",
            &[Series {
                name: "train",
                points: &report.curve,
            }],
        )?;
    }
    if let Some(path) = &export {
        write_file(path, &report.checkpoint)?;
    }
    if json {
        let object = json!({
            "data": "digits",
            "test_accuracy": report.test_accuracy,
            "train_samples": report.train_samples,
            "test_samples": report.test_samples,
            "steps": report.steps,
            "trainable_params": report.trainable_params,
            "seed": config.seed,
            "audit": audit_json(&report.audit),
        });
        println!("{object}");
    } else {
        println!(
            "digits, MLP 64-64-10: {} training / {} held-out images (seed {})",
            report.train_samples, report.test_samples, config.seed
        );
        println!(
            "  held-out accuracy {} after {} steps ({} epochs)",
            percent(report.test_accuracy),
            report.steps,
            config.epochs
        );
        println!("  domain audit of the training step: {}", report.audit);
        if let Some(path) = &export {
            println!("  checkpoint: {}", path.display());
        }
    }
    Ok(())
}

fn run_device_assets(model: MotionNet, out: &Path, data_dir: &Path) -> Result<(), String> {
    let config = FinetuneConfig::for_model(model);
    let report = finetune::run(data_dir, &config, &mut |_| {})?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write_file(&out.join("pretrained.sgck"), &report.pretrained_checkpoint)?;
    let encode = |rows: &[(Vec<f32>, usize)]| match model {
        MotionNet::Mlp => encode_rows::<{ motion::features::IMU_FEATURES }>(rows),
        MotionNet::Cnn => encode_rows::<{ motion::samples::WINDOW_VALUES }>(rows),
    };
    write_file(&out.join("finetune.sgds"), &encode(&report.finetune_rows)?)?;
    write_file(&out.join("eval.sgds"), &encode(&report.shifted_eval_rows)?)?;
    let expected = json!({
        "pretrain_accuracy": report.pretrain_accuracy,
        "shifted_accuracy_before": report.shifted_accuracy_before,
        "shifted_accuracy_after": report.shifted_accuracy_after,
        "finetune_steps": report.finetune_steps,
        "finetune_epochs": report.finetune_curve.len(),
        "committed": report.committed(),
        "validation_correct_before": report.gate.map(|g| g.before.correct),
        "validation_correct_after": report.gate.map(|g| g.after.correct),
        "finetuned_checkpoint_crc32": format!("{:#010x}", report.finetuned_crc32()),
        "seed": config.seed,
        "max_finetune_epochs": config.finetune_epochs,
        "anchor": config.anchor,
        "finetune_lr": config.finetune_lr,
        "clip_norm": config.clip_norm,
    });
    let mut expected = expected;
    if model != MotionNet::Mlp {
        expected["model"] = json!(model.name());
    }
    // The same job with the body quantised (`--quantize int8`): its checkpoint (the float
    // head and the int8 body) and what its fine-tuning gives.
    let quantized = finetune::run(
        data_dir,
        &FinetuneConfig {
            quantize: true,
            ..config.clone()
        },
        &mut |_| {},
    )?;
    let (int8_pretrained, _) = quantized
        .int8_checkpoints
        .as_ref()
        .ok_or("the quantised job wrote no int8 checkpoint")?;
    write_file(&out.join("int8.sgck"), int8_pretrained)?;
    expected["int8_shifted_accuracy_before"] = json!(quantized.shifted_accuracy_before);
    expected["int8_shifted_accuracy_after"] = json!(quantized.shifted_accuracy_after);
    expected["int8_committed"] = json!(quantized.committed());
    expected["int8_finetuned_checkpoint_crc32"] =
        json!(format!("{:#010x}", quantized.finetuned_crc32()));
    if model == MotionNet::Mlp {
        // The job with latent replay (`--replay 3`): the replay buffer a device keeps in
        // flash, the held-out recordings as pre-training saw them, and what it gives.
        let replayed = finetune::run(
            data_dir,
            &FinetuneConfig {
                replay: DEVICE_REPLAY,
                ..config
            },
            &mut |_| {},
        )?;
        write_file(&out.join("replay.sgrb"), &replayed.replay_buffer)?;
        write_file(
            &out.join("original.sgds"),
            &encode(&replayed.original_eval_rows)?,
        )?;
        expected["replay_per_class"] = json!(DEVICE_REPLAY);
        expected["replay_committed"] = json!(replayed.committed());
        expected["replay_shifted_accuracy_after"] = json!(replayed.shifted_accuracy_after);
        expected["replay_original_accuracy_after"] = json!(replayed.original_accuracy_after);
        expected["replay_finetuned_checkpoint_crc32"] =
            json!(format!("{:#010x}", replayed.finetuned_crc32()));
        expected["original_accuracy_after"] = json!(report.original_accuracy_after);
    }
    let text = serde_json::to_string_pretty(&expected).map_err(|e| e.to_string())? + "\n";
    write_file(&out.join("expected.json"), text.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Recordings of each class whose latents the MLP's device assets keep for replay
/// (`replay.sgrb`, `finetune --replay 3`).
const DEVICE_REPLAY: usize = 3;

/// The assets of the firmware that teaches `class` as new: the MLP pre-trained without it,
/// the recordings to teach it from and to evaluate on (features, unshifted), and the host's
/// results.
fn run_new_class_assets(
    model: MotionNet,
    class: usize,
    out: &Path,
    data_dir: &Path,
) -> Result<(), String> {
    if model != MotionNet::Mlp {
        return Err(format!(
            "device-assets --new-class: the firmware teaches a new class to the mlp only, not --model {}",
            model.name()
        ));
    }
    let config = FinetuneConfig::teaching(model, class);
    let report = finetune::run(data_dir, &config, &mut |_| {})?;
    let taught = report
        .new_class
        .ok_or("the new-class job reported no new class")?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write_file(&out.join("pretrained.sgck"), &report.pretrained_checkpoint)?;
    let encode = encode_rows::<{ motion::features::IMU_FEATURES }>;
    write_file(&out.join("finetune.sgds"), &encode(&report.finetune_rows)?)?;
    write_file(&out.join("eval.sgds"), &encode(&report.shifted_eval_rows)?)?;
    let expected = json!({
        "new_class": class,
        "old_classes_accuracy_before": taught.old_accuracy_before,
        "old_classes_accuracy_after": taught.old_accuracy_after,
        "new_class_accuracy_before": taught.new_accuracy_before,
        "new_class_accuracy_after": taught.new_accuracy_after,
        "accuracy_after": report.shifted_accuracy_after,
        "finetune_steps": report.finetune_steps,
        "committed": report.committed(),
        "validation_correct_before": report.gate.map(|g| g.before.correct),
        "validation_correct_after": report.gate.map(|g| g.after.correct),
        "finetuned_checkpoint_crc32": format!("{:#010x}", report.finetuned_crc32()),
        "seed": config.seed,
    });
    let text = serde_json::to_string_pretty(&expected).map_err(|e| e.to_string())? + "\n";
    write_file(&out.join("expected.json"), text.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}

fn run_example_assets(out: &Path, json: bool, data_dir: &Path) -> Result<(), String> {
    let assets = host_sim::example::make(data_dir)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    write_file(&out.join("digits.sgck"), &assets.pretrained)?;
    let encode = |rows: &[host_sim::example::Row]| -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; safegrad::dataset::encoded_len::<f32, 64>(rows.len())];
        let classes = host_sim::data::DIGIT_CLASSES as u16;
        let n = safegrad::dataset::encode(rows, classes, &mut buf).map_err(|e| e.to_string())?;
        buf.truncate(n);
        Ok(buf)
    };
    write_file(&out.join("digits-train.sgds"), &encode(&assets.finetune)?)?;
    write_file(&out.join("digits-eval.sgds"), &encode(&assets.eval)?)?;
    let summary = json!({
        "pretrain_accuracy": assets.pretrain_accuracy,
        "shifted_accuracy_before": assets.shifted_before,
        "shifted_accuracy_after": assets.shifted_after,
        "finetune_samples": assets.finetune.len(),
        "eval_samples": assets.eval.len(),
        "steps": assets.steps,
    });
    if json {
        println!("{summary}");
    } else {
        println!(
            "wrote {}: pre-trained {}, new camera {} before fine-tuning, {} after ({} steps on {} images, on the host)",
            out.display(),
            percent(assets.pretrain_accuracy),
            percent(assets.shifted_before),
            percent(assets.shifted_after),
            assets.steps,
            assets.finetune.len()
        );
    }
    Ok(())
}

fn run_device_stream(out: &Path, data_dir: &Path, config: &FinetuneConfig) -> Result<(), String> {
    use motion::wire::{encode_frame, Kind};
    if let Some(class) = config
        .new_class
        .filter(|&c| c >= host_sim::data::MOTION_CLASSES)
    {
        return Err(format!(
            "--new-class {class}: the classes are 0 to {}",
            host_sim::data::MOTION_CLASSES - 1
        ));
    }
    let (train, eval) = finetune::shifted_windows(data_dir, config)?;
    let mut bytes = Vec::new();
    let mut frame = vec![0u8; 8192];
    let mut seq: u16 = 0;
    let items = train
        .iter()
        .map(|s| (Kind::Train, s))
        .chain(eval.iter().map(|s| (Kind::Eval, s)));
    for (kind, (window, label)) in items {
        let values: Vec<f32> = window.iter().flatten().copied().collect();
        let n = encode_frame(kind, seq, *label as u8, &values, &mut frame)
            .ok_or("a window does not fit a frame")?;
        bytes.push(0);
        bytes.extend_from_slice(&frame[..n]);
        seq = seq.wrapping_add(1);
    }
    let n = encode_frame(Kind::End, seq, 0, &[], &mut frame).ok_or("end frame")?;
    bytes.push(0);
    bytes.extend_from_slice(&frame[..n]);
    write_file(out, &bytes)?;
    println!(
        "wrote {}: {} training and {} held-out windows, {} bytes",
        out.display(),
        train.len(),
        eval.len(),
        bytes.len()
    );
    Ok(())
}

fn run_soak_stream(
    out: &Path,
    data_dir: &Path,
    frames: u64,
    fault_every: u64,
) -> Result<(), String> {
    let (bytes, injected) = host_sim::soak::stream(data_dir, frames, fault_every)?;
    write_file(out, &bytes)?;
    println!(
        "{}",
        json!({
            "frames": frames,
            "injected": {
                "corrupted": injected.corrupted,
                "nan": injected.nan,
                "out_of_range": injected.out_of_range,
                "bad_label": injected.bad_label,
                "truncated": injected.truncated,
            },
            "bytes": bytes.len(),
        })
    );
    Ok(())
}

fn encode_rows<const N: usize>(rows: &[(Vec<f32>, usize)]) -> Result<Vec<u8>, String> {
    let rows = finetune::rows_of::<N>(rows)?;
    let rows = rows.as_slice();
    let mut buf = vec![0u8; safegrad::dataset::encoded_len::<f32, N>(rows.len())];
    let classes = host_sim::data::MOTION_CLASSES as u16;
    let n = safegrad::dataset::encode(rows, classes, &mut buf).map_err(|e| e.to_string())?;
    buf.truncate(n);
    Ok(buf)
}

/// An audit report as JSON: `{"clean", "findings": [{"node", "op", "kind", "severity",
/// "message"}]}`.
fn audit_json<const F: usize>(audit: &safegrad::audit::Audit<F>) -> serde_json::Value {
    let findings: Vec<_> = audit.findings().iter().map(finding_json).collect();
    json!({ "clean": audit.is_clean(), "findings": findings })
}

fn finding_json(f: &safegrad::audit::Finding) -> serde_json::Value {
    json!({
        "node": f.node.0,
        "op": f.op,
        "kind": f.kind.name(),
        "severity": f.severity.name(),
        "message": f.to_string(),
    })
}

fn run_faults(json: bool, data_dir: &Path) -> Result<(), String> {
    // Three real checkpoints: pre-trained, fine-tuned, fine-tuned from another seed.
    let first = finetune::run(data_dir, &FinetuneConfig::default(), &mut |_| {})?;
    let other = FinetuneConfig {
        seed: FinetuneConfig::default().seed + 1,
        ..FinetuneConfig::default()
    };
    let second = finetune::run(data_dir, &other, &mut |_| {})?;
    let r = host_sim::faults::run(
        &first.pretrained_checkpoint,
        &first.finetuned_checkpoint,
        &second.finetuned_checkpoint,
    );
    if json {
        println!(
            "{}",
            json!({
                "cut_points": r.cut_points,
                "recovered_old": r.recovered_old,
                "recovered_new": r.recovered_new,
                "lost": r.lost,
                "bitflips_tried": r.bitflips_tried,
                "bitflips_detected": r.bitflips_detected,
            })
        );
    } else {
        println!("power cut at every byte program and sector erase of two saves:");
        println!(
            "  {} cut points: {} booted the previous checkpoint, {} the new one, {} lost",
            r.cut_points, r.recovered_old, r.recovered_new, r.lost
        );
        println!(
            "every single-bit flip of the newest slot: {} of {} detected",
            r.bitflips_detected, r.bitflips_tried
        );
    }
    if r.lost == 0 && r.bitflips_detected == r.bitflips_tried {
        Ok(())
    } else {
        Err("a checkpoint was lost or a bit flip went undetected".into())
    }
}

fn run_soak(steps: u64, fault_every: u64, json: bool, data_dir: &Path) -> Result<(), String> {
    let r = host_sim::soak::run(data_dir, steps, fault_every)?;
    let refused =
        r.refused_crc + r.refused_cobs + r.refused_nan + r.refused_range + r.refused_label;
    if json {
        println!(
            "{}",
            json!({
                "steps": r.steps,
                "frames": r.frames,
                "injected": {
                    "corrupted": r.injected.corrupted,
                    "nan": r.injected.nan,
                    "out_of_range": r.injected.out_of_range,
                    "bad_label": r.injected.bad_label,
                    "truncated": r.injected.truncated,
                },
                "refused": {
                    "crc": r.refused_crc,
                    "cobs": r.refused_cobs,
                    "nan": r.refused_nan,
                    "out_of_range": r.refused_range,
                    "bad_label": r.refused_label,
                    "other": r.refused_other,
                },
                "step_errors": r.step_errors,
                "tape": {"nodes": r.tape_sizes.0, "values": r.tape_sizes.1, "gradients": r.tape_sizes.2},
                "grew": r.grew,
                "final_accuracy": r.final_accuracy,
            })
        );
    } else {
        println!(
            "{} streamed training steps from {} frames; {} faults injected, {} frames refused ({} CRC, {} framing, {} NaN, {} out of range, {} bad label, {} other)",
            r.steps, r.frames, r.injected.total(), refused, r.refused_crc, r.refused_cobs,
            r.refused_nan, r.refused_range, r.refused_label, r.refused_other
        );
        println!(
            "tape: {} nodes, {} values, {} gradients after every step ({}); held-out accuracy at the end {}",
            r.tape_sizes.0,
            r.tape_sizes.1,
            r.tape_sizes.2,
            if r.grew { "it GREW" } else { "no growth" },
            percent(r.final_accuracy)
        );
    }
    // Every good frame trained on, every typed fault refused as what it is; a damaged or cut
    // frame is refused once, or twice when the damage put a 0x00 inside it (two fragments).
    let damaged = r.injected.corrupted + r.injected.truncated;
    let framing = r.refused_crc + r.refused_cobs;
    let expected = r.steps == r.frames - r.injected.total()
        && r.injected.nan == r.refused_nan
        && r.injected.out_of_range == r.refused_range
        && r.injected.bad_label == r.refused_label
        && (damaged..=2 * damaged).contains(&framing)
        && r.refused_other == 0
        && r.step_errors == 0
        && !r.grew;
    if expected {
        Ok(())
    } else {
        Err("soak: a good frame lost, a refusal other than the injected faults, a refused step, or growth".into())
    }
}

fn run_audit(json: bool) -> Result<(), String> {
    use host_sim::audit_corpus::{corpus, CorpusTape};
    let cases = corpus();
    let mut mismatches = Vec::new();
    for case in &cases {
        let mut tape = Box::new(CorpusTape::new());
        (case.build)(&mut tape).map_err(|e| format!("{}: {e}", case.name))?;
        let report = safegrad::audit::audit::<_, _, 16>(&*tape)
            .map_err(|e| format!("{}: {e}", case.name))?;
        let kinds: Vec<_> = report.findings().iter().map(|f| f.kind).collect();
        if kinds != case.expected {
            mismatches.push(case.name);
        }
        if json {
            let findings: Vec<_> = report.findings().iter().map(finding_json).collect();
            println!(
                "{}",
                json!({
                    "name": case.name,
                    "pair": case.pair,
                    "safe": case.safe,
                    "source": case.source,
                    "findings": findings,
                })
            );
        } else {
            let verdict = if report.is_clean() {
                "clean"
            } else {
                "flagged"
            };
            println!(
                "{:<40} {:<6} {verdict}",
                case.name,
                if case.safe { "safe" } else { "unsafe" }
            );
            for f in report.findings() {
                println!("    {f}");
            }
        }
    }
    if !json {
        let pairs = cases.len() / 2;
        println!(
            "\n{pairs} pairs, {} graphs: {} as expected (every unsafe graph flagged with its finding, no safe graph flagged)",
            cases.len(),
            if mismatches.is_empty() { "all" } else { "NOT all" }
        );
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "audit: unexpected findings for {}",
            mismatches.join(", ")
        ))
    }
}

fn run_audit_onnx(model: &Path, json: bool) -> Result<(), String> {
    use host_sim::onnx::commands::{audit_file, finding_json};
    let findings = audit_file(model)?;
    let name = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if json {
        let list: Vec<_> = findings.iter().map(finding_json).collect();
        println!(
            "{}",
            json!({
                "name": name,
                "model": model.display().to_string(),
                "safe": findings.is_empty(),
                "findings": list,
            })
        );
    } else {
        println!(
            "{name}: {}",
            if findings.is_empty() {
                "clean"
            } else {
                "flagged"
            }
        );
        for f in &findings {
            println!("    {f}\n      fix: {}", f.suggestion());
        }
    }
    Ok(())
}

fn run_import(model: &Path, out: &Path, json: bool) -> Result<(), String> {
    let summary = host_sim::onnx::commands::import_to(model, out)?;
    if json {
        println!("{summary}");
    } else {
        println!(
            "{}: {} layers, {} parameters, {} values in, {} out",
            model.display(),
            summary["layers"].as_array().map_or(0, Vec::len),
            summary["parameters"],
            summary["input_len"],
            summary["output_len"]
        );
        println!(
            "type Model = {};",
            summary["type"].as_str().unwrap_or_default()
        );
        for note in summary["notes"].as_array().into_iter().flatten() {
            println!("note: {}", note.as_str().unwrap_or_default());
        }
        println!(
            "wrote {}, {} and {}",
            out.join("model.rs").display(),
            out.join("model.sgck").display(),
            out.join("import.json").display()
        );
    }
    Ok(())
}

fn run_quantize(json: bool, seed: u64, augment: usize, dir: &Path) -> Result<(), String> {
    let mut rows = Vec::new();
    for model in [MotionNet::Mlp, MotionNet::Cnn] {
        rows.push(host_sim::quantized::measure(dir, model, seed, augment)?);
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "model": r.model,
                    "float": r.float,
                    "int8": r.int8,
                    "body_bytes_float": r.body_bytes.0,
                    "body_bytes_int8": r.body_bytes.1,
                })
            })
            .collect();
        println!("{}", json!(list));
        return Ok(());
    }
    println!("| model | body | before the shift | after it | after fine-tuning | body bytes |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        for (name, acc, bytes) in [
            ("float", r.float, r.body_bytes.0),
            ("int8", r.int8, r.body_bytes.1),
        ] {
            println!(
                "| {} | {name} | {:.1}% | {:.1}% | {:.1}% | {bytes} |",
                r.model,
                100.0 * acc[0],
                100.0 * acc[1],
                100.0 * acc[2]
            );
        }
    }
    Ok(())
}

fn run_export(onnx: &Path, checkpoint: &Path, out: &Path) -> Result<(), String> {
    host_sim::onnx::commands::export_to(onnx, checkpoint, out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn run_predict(model: &Path, inputs: &Path, json: bool) -> Result<(), String> {
    use host_sim::onnx::commands::{accuracy, predict_file, read_labels};
    let outputs = predict_file(model, inputs)?;
    let labels = read_labels(inputs)?;
    if let Some(labels) = &labels {
        if labels.len() != outputs.len() {
            return Err(format!(
                "{}: {} labels for {} inputs",
                inputs.display(),
                labels.len(),
                outputs.len()
            ));
        }
    }
    let accuracy = labels.as_ref().map(|l| accuracy(&outputs, l));
    if json {
        let mut object = json!({ "outputs": outputs });
        if let Some(a) = accuracy {
            object["accuracy"] = json!(a);
        }
        println!("{object}");
    } else {
        for (i, row) in outputs.iter().enumerate() {
            let text: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
            println!("{i}: [{}]", text.join(", "));
        }
        if let Some(a) = accuracy {
            println!(
                "accuracy {:.1}% ({} labelled inputs)",
                100.0 * a,
                outputs.len()
            );
        }
    }
    Ok(())
}

fn run_bugzoo(json: bool) -> Result<(), String> {
    let cases = host_sim::bugzoo::all().map_err(|e| format!("bugzoo: {e}"))?;
    if json {
        let array: Vec<_> = cases.iter().map(|c| c.to_json()).collect();
        println!("{}", serde_json::Value::Array(array));
    } else {
        print!("{}", host_sim::bugzoo::table(&cases));
    }
    Ok(())
}

/// The shift of `--shift` or `--rotation` (clap refuses both), `rot-z:90` by default.
fn shift_of(shift: Option<Shift>, rotation: Option<f64>) -> Shift {
    shift
        .or(rotation.map(Shift::rotation_z))
        .unwrap_or_default()
}

/// What `finetune --quantize` quantises the frozen body to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Quantization {
    /// 8-bit integers, TFLite's scheme.
    Int8,
}

/// How `finetune` fits the last layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum HeadFitting {
    /// The schedule's epochs of batch-1 SGD.
    Sgd,
    /// Full-batch gradient descent with a line search.
    FullBatch,
}

/// A class of BasicMotions, by its index.
fn class_index(text: &str) -> Result<usize, String> {
    let names = motion::model::CLASS_NAMES;
    match text.parse::<usize>() {
        Ok(k) if k < names.len() => Ok(k),
        _ => Err(format!(
            "`{text}` is not a class: 0 to {} ({})",
            names.len() - 1,
            names.join(", ")
        )),
    }
}

/// A number of recordings of at least 1, or the refusal of `--per-class`.
fn recordings(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("fine-tuning needs at least 1 recording per class".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// A learning rate: a finite number above 0.
fn positive_rate(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err(format!("`{text}` is not a finite learning rate above 0")),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// A penalty's weight: a finite number, 0 or more.
fn penalty(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err(format!("`{text}` is not a finite weight of 0 or more")),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// An angle that is a finite number of degrees, or the refusal of `--rotation`.
fn finite_degrees(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("`{text}` is not a finite angle")),
        Err(_) => Err(format!("`{text}` is not a number of degrees")),
    }
}

/// How the report names the shift: `rotated  90.0 deg` for a rotation about z, else the
/// spec.
fn shifted(shift: &Shift) -> String {
    match shift.rotation_z_degrees() {
        Some(d) => format!("rotated {d:>5.1} deg"),
        None => format!("shifted ({shift})"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    safegrad::tensor::kernels::allow_avx2(!cli.no_avx2);
    let result = match cli.command {
        Command::Finetune {
            json,
            model,
            seed,
            shift,
            rotation,
            per_class,
            mode,
            pretrain_epochs,
            augment,
            finetune_epochs,
            finetune_lr,
            anchor,
            no_gate,
            replay,
            fit,
            new_class,
            plot,
            export,
            quantize,
            save,
            pretrained,
            data_dir,
        } => {
            let pretrained = match pretrained
                .map(|p| std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display())))
            {
                Some(Err(e)) => {
                    eprintln!("host-sim: {e}");
                    return ExitCode::FAILURE;
                }
                Some(Ok(bytes)) => Some(bytes),
                None => None,
            };
            // A new class is taught on the installation pre-training saw, unless told.
            let shift = match (new_class, &shift, rotation) {
                (Some(_), None, None) => Shift::none(),
                _ => shift_of(shift, rotation),
            };
            let config = FinetuneConfig {
                pretrained,
                seed,
                shift,
                new_class,
                head_fit: match fit {
                    Some(HeadFitting::FullBatch) => Some(motion::model::HEAD_FIT),
                    Some(HeadFitting::Sgd) => None,
                    None => new_class
                        .filter(|_| mode == FinetuneMode::LAST_LAYER)
                        .map(|_| motion::model::HEAD_FIT),
                },
                per_class,
                pretrain_epochs,
                augment,
                finetune_epochs,
                finetune_lr,
                anchor: (anchor > 0.0).then_some(anchor),
                gate: !no_gate,
                replay,
                mode,
                quantize: quantize == Some(Quantization::Int8),
                ..FinetuneConfig::for_model(model)
            };
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            run_finetune(json, config, plot, (export, save), dir)
        }
        Command::Plans {
            json,
            model,
            seeds,
            shift,
            rotation,
            per_class,
            augment,
            data_dir,
        } => {
            let config = FinetuneConfig {
                shift: shift_of(shift, rotation),
                per_class,
                augment,
                ..FinetuneConfig::for_model(model)
            };
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            let seeds: Vec<u64> = (1..=seeds).collect();
            run_plans(json, &config, &seeds, &dir)
        }
        Command::Compare {
            json,
            seeds,
            augment,
            data_dir,
        } => {
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            let seeds: Vec<u64> = (1..=seeds).collect();
            run_compare(json, augment, &seeds, &dir)
        }
        Command::Shifts {
            json,
            seeds,
            mut shift,
            random,
            replay,
            augment,
            data_dir,
        } => {
            if random > 0 && shift.is_empty() {
                shift = host_sim::reference::SHIFTS
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .collect();
            }
            shift.extend(host_sim::reference::random_shifts(random));
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            let seeds: Vec<u64> = (1..=seeds).collect();
            run_shifts(json, shift, replay, augment, &seeds, &dir)
        }
        Command::NewClass {
            json,
            model,
            seeds,
            per_class,
            fit,
            augment,
            data_dir,
        } => {
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            let seeds: Vec<u64> = (1..=seeds).collect();
            run_new_class(json, model, per_class, fit, augment, &seeds, &dir)
        }
        Command::Train {
            data: Dataset::Digits,
            json,
            seed,
            epochs,
            plot,
            export,
            data_dir,
        } => {
            let config = DigitsConfig {
                seed,
                epochs,
                ..DigitsConfig::default()
            };
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            run_train(json, config, plot, export, dir)
        }
        Command::DeviceAssets {
            model,
            new_class,
            out,
            data_dir,
        } => {
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            let out = out.unwrap_or_else(|| match (model, new_class) {
                (_, Some(_)) => PathBuf::from("motion/assets/new-class"),
                (MotionNet::Mlp, None) => PathBuf::from("motion/assets"),
                (MotionNet::Cnn, None) => PathBuf::from("motion/assets/cnn"),
            });
            match new_class {
                Some(class) => run_new_class_assets(model, class, &out, &dir),
                None => run_device_assets(model, &out, &dir),
            }
        }
        Command::ExampleAssets {
            out,
            json,
            data_dir,
        } => {
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            run_example_assets(&out, json, &dir)
        }
        Command::DeviceStream {
            out,
            soak,
            fault_every,
            new_class,
            data_dir,
        } => {
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            let config = match new_class {
                Some(class) => FinetuneConfig::teaching(MotionNet::Mlp, class),
                None => FinetuneConfig::default(),
            };
            match soak {
                Some(frames) => run_soak_stream(&out, &dir, frames, fault_every),
                None => run_device_stream(&out, &dir, &config),
            }
        }
        Command::Faults { json, data_dir } => {
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            run_faults(json, &dir)
        }
        Command::Audit { model: None, json } => run_audit(json),
        Command::Audit {
            model: Some(model),
            json,
        } => run_audit_onnx(&model, json),
        Command::Import { model, out, json } => run_import(&model, &out, json),
        Command::Quantize {
            json,
            seed,
            augment,
            data_dir,
        } => run_quantize(
            json,
            seed,
            augment,
            &data_dir.unwrap_or_else(host_sim::data::default_dir),
        ),
        Command::Export {
            onnx,
            checkpoint,
            out,
        } => run_export(&onnx, &checkpoint, &out),
        Command::Predict {
            model,
            inputs,
            json,
        } => run_predict(&model, &inputs, json),
        Command::Soak {
            steps,
            fault_every,
            json,
            data_dir,
        } => {
            let dir = data_dir.unwrap_or_else(host_sim::data::default_dir);
            run_soak(steps, fault_every, json, &dir)
        }
        Command::Bugzoo { json } => run_bugzoo(json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
