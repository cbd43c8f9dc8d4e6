//! The training jobs, run as a user runs them (the binary) and through the library with
//! reduced settings.

use std::path::PathBuf;
use std::process::Command;

use host_sim::data::default_dir;
use host_sim::finetune::{self, FinetuneConfig, FinetuneMode, MotionModel, MotionNet};
use host_sim::plans;
use safegrad::checkpoint;
use safegrad::nn::{Init, Plan};
use safegrad::session::Session;

fn host_sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_host-sim"))
        .args(args)
        .output()
        .expect("host-sim runs")
}

fn last_json_line(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let last = text.lines().last().expect("a line of output");
    serde_json::from_str(last).expect("the last line is JSON")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("host-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// A short job on a body pre-trained without augmentation, which the rotation costs
/// accuracy.
fn reduced() -> FinetuneConfig {
    FinetuneConfig {
        pretrain_epochs: 25,
        finetune_epochs: 15,
        augment: 0,
        ..FinetuneConfig::default()
    }
}

#[test]
fn finetune_is_deterministic_and_beats_the_shifted_baseline() {
    let a = finetune::run(&default_dir(), &reduced(), &mut |_| {}).unwrap();
    let b = finetune::run(&default_dir(), &reduced(), &mut |_| {}).unwrap();
    assert_eq!(a, b, "same seed, same figures and checkpoints");
    assert!(a.pretrain_accuracy >= 0.85, "{a:?}");
    assert!(
        a.shifted_accuracy_before < a.pretrain_accuracy,
        "the rotation costs accuracy: {a:?}"
    );
    assert!(
        a.shifted_accuracy_after > a.shifted_accuracy_before,
        "fine-tuning recovers: {} -> {}",
        a.shifted_accuracy_before,
        a.shifted_accuracy_after
    );
    // Last layer of 32 -> 4: 32 * 4 + 4 trainable scalars.
    assert_eq!(a.trainable_params, 132);
    assert_eq!(a.finetune_steps, 15 * 4 * 3);
}

#[test]
fn bias_only_trains_only_the_biases() {
    let config = FinetuneConfig {
        mode: FinetuneMode::BIAS_ONLY,
        ..reduced()
    };
    let r = finetune::run(&default_dir(), &config, &mut |_| {}).unwrap();
    assert_eq!(r.trainable_params, 32 + 32 + 4);
    // The biases' gradients need the activations' gradients back to the first layer: more
    // training state per trainable scalar than the last layer needs.
    let last = finetune::run(&default_dir(), &reduced(), &mut |_| {}).unwrap();
    assert!(r.train_state_bytes > last.train_state_bytes);
    // Frozen weights: the fine-tuned checkpoint differs from the pre-trained one only in
    // the bias bytes. Weights of the first layer start after the header and the
    // standardisation (2 * 16 scalars).
    let header = checkpoint::HEADER_LEN;
    let w1 = header + 32 * 4..header + (32 + 16 * 32) * 4;
    assert_eq!(
        r.pretrained_checkpoint[w1.clone()],
        r.finetuned_checkpoint[w1]
    );
}

#[test]
fn finetune_json_has_the_required_fields_and_exports_a_loadable_checkpoint() {
    let export = scratch("motion.sgck");
    let out = host_sim(&[
        "finetune",
        "--json",
        "--pretrain-epochs",
        "20",
        "--finetune-epochs",
        "10",
        "--export",
        export.to_str().unwrap(),
    ]);
    let v = last_json_line(&out);
    for key in [
        "pretrain_accuracy",
        "shifted_accuracy_before",
        "shifted_accuracy_after",
        "original_accuracy_after",
        "finetune_steps",
        "trainable_params",
        "train_state_bytes",
        "augment",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["augment"], FinetuneConfig::default().augment);
    assert_eq!(v["finetune_steps"], 10 * 12);
    let bytes = std::fs::read(&export).unwrap();
    let mut work = host_sim::model::new_workspace();
    let mut session = Session::<MotionModel, _, _>::new(&mut *work, Init::new(1)).unwrap();
    session.load(&bytes).expect("the exported checkpoint loads");
}

#[test]
fn train_digits_reaches_95_percent_and_plots_its_curves() {
    let plot = scratch("digits.png");
    let out = host_sim(&[
        "train",
        "--data",
        "digits",
        "--json",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let v = last_json_line(&out);
    let accuracy = v["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.95, "held-out accuracy {accuracy}");
    let png = std::fs::read(&plot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let csv = std::fs::read_to_string(plot.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().next(), Some("phase,epoch,loss,accuracy"));
    assert_eq!(csv.lines().count(), 1 + 20);
}

#[test]
fn a_missing_data_folder_is_one_clear_error() {
    let out = host_sim(&["finetune", "--data-dir", "/no/such/folder"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: /no/such/folder/basicmotions_train.csv: cannot read"),
        "{err}"
    );
}

/// The parameter blocks of a `MotionModel` checkpoint, in scalars, in stored order: the
/// standardisation (mean and scale, 16 each), then each dense layer's weights before its
/// bias (16 -> 32 -> 32 -> 4). Counted from the layer sizes, not from the library.
const BLOCKS: [(&str, usize); 7] = [
    ("standardize", 2 * 16),
    ("w1", 16 * 32),
    ("b1", 32),
    ("w2", 32 * 32),
    ("b2", 32),
    ("w3", 32 * 4),
    ("b3", 4),
];

/// The blocks each plan trains, written out by hand.
fn trained_blocks(mode: FinetuneMode) -> &'static [&'static str] {
    match mode.name().as_str() {
        "bias-only" => &["b1", "b2", "b3"],
        "last-layer" => &["w3", "b3"],
        "biases-last-layer" => &["b1", "b2", "w3", "b3"],
        "last-2-layers" => &["w2", "b2", "w3", "b3"],
        "biases-last-2-layers" => &["b1", "w2", "b2", "w3", "b3"],
        "all" => &["w1", "b1", "w2", "b2", "w3", "b3"],
        other => panic!("no hand-written blocks for plan {other}"),
    }
}

#[test]
fn every_plan_trains_exactly_its_blocks_and_reports_what_the_job_reports() {
    // Without augmentation: the rotation costs the body accuracy, and every plan's
    // fine-tuning is committed.
    let config = FinetuneConfig {
        pretrain_epochs: 20,
        finetune_epochs: 8,
        augment: 0,
        ..FinetuneConfig::default()
    };
    let seed = 3;
    let modes = FinetuneMode::all_for_motion();
    let rows = plans::run(&default_dir(), &config, &[seed], &modes, &mut |_, _| {}).unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.mode.name()).collect();
    assert_eq!(
        names,
        [
            "bias-only",
            "last-layer",
            "biases-last-layer",
            "last-2-layers",
            "biases-last-2-layers",
            "all"
        ]
    );
    let header = checkpoint::HEADER_LEN;
    let scalars: usize = BLOCKS.iter().map(|b| b.1).sum();
    for row in &rows {
        let r = &row.reports[0];
        let trained = trained_blocks(row.mode);
        assert_eq!(
            r.finetuned_checkpoint.len(),
            header + scalars * 4 + checkpoint::TRAILER_LEN
        );
        let mut start = header;
        let mut count = 0;
        for (name, len) in BLOCKS {
            let bytes = start..start + len * 4;
            let (before, after) = (
                &r.pretrained_checkpoint[bytes.clone()],
                &r.finetuned_checkpoint[bytes],
            );
            if trained.contains(&name) {
                count += len;
                assert_ne!(before, after, "{}: {name} trains", row.mode.name());
            } else {
                assert_eq!(before, after, "{}: {name} is frozen", row.mode.name());
            }
            start += len * 4;
        }
        assert_eq!(row.trainable, count, "{}", row.mode.name());
        assert_eq!(r.trainable_params, count, "{}", row.mode.name());
        assert_eq!(r.train_state_bytes, row.gradient_bytes);
        // Adam keeps two moments per trainable scalar; the rollback two copies.
        assert_eq!(row.adam_bytes, 2 * 4 * count);
        assert_eq!(row.rollback_bytes, 2 * 4 * count);
    }
    // Each plan's figures are the job's for the same mode and seed: the shared pre-training
    // changes nothing.
    let middle = &rows[2];
    let alone = finetune::run(
        &default_dir(),
        &FinetuneConfig {
            seed,
            mode: middle.mode,
            ..config.clone()
        },
        &mut |_| {},
    )
    .unwrap();
    let shared = &middle.reports[0];
    assert!(shared.pretrained_checkpoint == alone.pretrained_checkpoint);
    assert!(shared.finetuned_checkpoint == alone.finetuned_checkpoint);
    assert_eq!(shared.finetune_curve, alone.finetune_curve);
    assert_eq!(
        (
            shared.pretrain_accuracy,
            shared.shifted_accuracy_before,
            shared.shifted_accuracy_after
        ),
        (
            alone.pretrain_accuracy,
            alone.shifted_accuracy_before,
            alone.shifted_accuracy_after
        )
    );
    // The session's workspace, sized from the model's type, holds at least the scalars
    // the table counts (its node records and shuffle order come on top).
    macro_rules! holds {
        ($name:expr, $plan:expr) => {{
            let row = rows.iter().find(|r| r.mode.name() == $name).unwrap();
            let size = std::mem::size_of::<safegrad::workspace!(f32, MotionModel, $plan)>();
            assert!(
                row.sgd_bytes() <= size,
                "{}: {} > {size}",
                $name,
                row.sgd_bytes()
            );
            assert!(size - row.sgd_bytes() < 4096, "{}: {size}", $name);
        }};
    }
    holds!("bias-only", Plan::BiasOnly);
    holds!("last-layer", Plan::LastLayer);
    holds!("biases-last-layer", Plan::BiasesAndLastLayers(1));
    holds!("last-2-layers", Plan::LastLayers(2));
    holds!("biases-last-2-layers", Plan::BiasesAndLastLayers(2));
    holds!("all", Plan::All);
    // More trained layers need more gradient slots.
    let last = |k| {
        rows.iter()
            .find(|r| r.mode == FinetuneMode::LastLayers(k))
            .unwrap()
    };
    assert!(last(1).gradient_bytes < last(2).gradient_bytes);
}

#[test]
fn the_mode_flag_names_what_it_refuses() {
    for (flag, expected) in [
        (
            "last-3-layers",
            "mode `last-3-layers`: the model has 3 layers with parameters",
        ),
        ("biases-last-0-layers", "K runs from 2 to 2"),
        (
            "last-x-layers",
            "unknown mode `last-x-layers`: expected all, last-layer",
        ),
        ("foo", "unknown mode `foo`"),
    ] {
        let out = host_sim(&["finetune", "--mode", flag]);
        assert!(!out.status.success(), "{flag} is refused");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("--mode"), "{flag}: {err}");
        assert!(err.contains(expected), "{flag}: {err}");
    }
    for mode in FinetuneMode::all_for_motion() {
        assert_eq!(mode.name().parse::<FinetuneMode>(), Ok(mode));
    }
}

#[test]
fn the_cnn_on_raw_windows_recovers_the_drop() {
    // Pre-trained without augmentation, so that the rotation costs accuracy.
    let out = host_sim(&["finetune", "--model", "cnn", "--json", "--augment", "0"]);
    let v = last_json_line(&out);
    assert_eq!(v["model"], "cnn");
    assert_eq!(v["mode"], "last-layer");
    let pre = v["pretrain_accuracy"].as_f64().unwrap();
    let before = v["shifted_accuracy_before"].as_f64().unwrap();
    let after = v["shifted_accuracy_after"].as_f64().unwrap();
    assert!(pre >= 0.9, "pre-trained {pre}");
    assert!(
        before < pre,
        "the rotation costs accuracy: {before} vs {pre}"
    );
    assert!(
        after - before >= 0.9 * (pre - before),
        "recovered {before} -> {after} of {pre}"
    );
    // The dense head of 16 pooled channels to 4 classes trains.
    assert_eq!(v["trainable_params"], 16 * 4 + 4);
    assert_eq!(v["audit"]["clean"], true);
    // The same keys as the MLP's, plus the model.
    let mlp = last_json_line(&host_sim(&[
        "finetune",
        "--json",
        "--pretrain-epochs",
        "2",
        "--finetune-epochs",
        "1",
    ]));
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&v), keys(&mlp));
    assert_eq!(mlp["model"], "mlp");
}

#[test]
fn a_plan_deeper_than_the_model_is_refused() {
    let config = FinetuneConfig {
        mode: FinetuneMode::LastLayers(3),
        ..FinetuneConfig::for_model(MotionNet::Cnn)
    };
    let err = finetune::run(&default_dir(), &config, &mut |_| {}).unwrap_err();
    assert_eq!(
        err,
        "mode `last-3-layers`: the cnn model has 3 layers with parameters"
    );
    let out = host_sim(&["finetune", "--model", "rnn"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unknown model `rnn`: expected mlp or cnn"),
        "{err}"
    );
}

#[test]
fn finetune_json_names_the_shift() {
    let args = |shift: &[&'static str]| {
        let mut a = vec![
            "finetune",
            "--json",
            "--pretrain-epochs",
            "2",
            "--finetune-epochs",
            "1",
        ];
        a.extend_from_slice(shift);
        a
    };
    let v = last_json_line(&host_sim(&args(&[])));
    assert_eq!(v["shift"], "rot-z:90");
    assert_eq!(v["rotation_degrees"], 90.0);
    let v = last_json_line(&host_sim(&args(&["--rotation", "-30"])));
    assert_eq!(v["shift"], "rot-z:-30");
    assert_eq!(v["rotation_degrees"], -30.0);
    let v = last_json_line(&host_sim(&args(&["--shift", "rot-y:45+mirror+noise:0.1"])));
    assert_eq!(v["shift"], "rot-y:45+mirror+noise:0.1");
    assert!(v["rotation_degrees"].is_null());
    // The shift is applied: a different shift, a different accuracy before fine-tuning or
    // a different fine-tuned model.
    let z = last_json_line(&host_sim(&args(&["--shift", "rot-z:90"])));
    let other = last_json_line(&host_sim(&args(&["--shift", "rot-x:90"])));
    assert_ne!(
        (
            &z["shifted_accuracy_before"],
            &z["finetuned_checkpoint_crc32"]
        ),
        (
            &other["shifted_accuracy_before"],
            &other["finetuned_checkpoint_crc32"]
        )
    );
}

#[test]
fn shifts_runs_the_job_and_the_reference_for_each_shift() {
    let out = host_sim(&[
        "shifts", "--json", "--seeds", "1", "--shift", "rot-z:90", "--shift", "mirror",
    ]);
    let v = last_json_line(&out);
    let rows = v.as_array().expect("an array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["shift"], "rot-z:90");
    assert_eq!(rows[1]["shift"], "mirror");
    // The shipped shift's run is the job's own: the same accuracies as `finetune --seed 1`.
    let job = last_json_line(&host_sim(&["finetune", "--json", "--seed", "1"]));
    for key in [
        "shifted_accuracy_before",
        "shifted_accuracy_after",
        "original_accuracy_after",
    ] {
        assert_eq!(rows[0][key][0], job[key], "{key}");
    }
    for row in rows {
        let r = row["reference_accuracy"][0].as_f64().expect("a number");
        assert!((0.0..=1.0).contains(&r), "{row}");
    }
}

/// The default job's model pre-trained without augmentation (`finetune --augment 0
/// --export`), written once: a body the rotation costs accuracy.
fn unaugmented() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = scratch("unaugmented.sgck");
        let path = path.to_str().expect("a UTF-8 path").to_string();
        let out = host_sim(&["finetune", "--augment", "0", "--export", &path]);
        assert!(out.status.success(), "{out:?}");
        path
    })
}

/// `finetune --json` from [`unaugmented`], with `extra` flags: its JSON.
fn finetune_pretrained(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["finetune", "--json", "--pretrained", unaugmented()];
    args.extend_from_slice(extra);
    last_json_line(&host_sim(&args))
}

#[test]
fn finetune_json_reports_the_gate_and_a_model_it_refuses_is_the_pre_trained_one() {
    let bytes = std::fs::read(unaugmented()).expect("the pre-trained model");
    let stored_crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    let run = finetune_pretrained;
    let rate = |v: &serde_json::Value, key: &str| v[key].as_f64().expect(key);

    // Turned 90 degrees: the pre-trained model gets half the fine-tuning recordings wrong,
    // fine-tuning wins on the held-out folds and is committed.
    let turned = run(&[]);
    assert_eq!(turned["committed"], true);
    assert!(
        rate(&turned, "validation_accuracy_after") > rate(&turned, "validation_accuracy_before")
    );
    assert_ne!(
        turned["finetuned_checkpoint_crc32"],
        format!("{stored_crc:#010x}")
    );

    // The other wrist: the pre-trained model already classifies every fine-tuning recording,
    // nothing beats it, and the model kept is the pre-trained one, bit for bit.
    let mirrored = run(&["--shift", "mirror"]);
    assert_eq!(mirrored["committed"], false);
    assert_eq!(rate(&mirrored, "validation_accuracy_before"), 1.0);
    assert_eq!(
        mirrored["finetuned_checkpoint_crc32"],
        format!("{stored_crc:#010x}")
    );
    assert_eq!(mirrored["finetune_steps"], 0);
    assert_eq!(
        mirrored["shifted_accuracy_after"],
        mirrored["shifted_accuracy_before"]
    );

    // Without the gate the same fine-tuning is kept, and nothing is validated.
    let ungated = run(&["--shift", "mirror", "--no-gate"]);
    assert_eq!(ungated["committed"], true);
    assert!(ungated["validation_accuracy_before"].is_null());
    assert_ne!(
        ungated["finetuned_checkpoint_crc32"],
        format!("{stored_crc:#010x}")
    );
}

#[test]
fn replay_trains_on_the_stored_latents_and_reports_them() {
    let run = finetune_pretrained;
    let plain = run(&[]);
    let replayed = run(&["--replay", "3"]);
    assert_eq!(plain["replay_samples"], 0);
    // Three recordings of each of the four classes.
    assert_eq!(replayed["replay_samples"], 12);
    // The replayed rows are trained on: another model, more steps per epoch.
    assert_ne!(
        plain["finetuned_checkpoint_crc32"],
        replayed["finetuned_checkpoint_crc32"]
    );
    let per_epoch = |v: &serde_json::Value| {
        v["finetune_steps"].as_f64().expect("steps")
            / v["finetune_epochs"].as_f64().expect("epochs")
    };
    assert_eq!(per_epoch(&plain), 12.0);
    assert_eq!(per_epoch(&replayed), 24.0);
}

#[test]
fn a_new_class_is_taught_from_a_few_recordings_and_the_others_are_kept() {
    let rate = |v: &serde_json::Value, key: &str| v[key].as_f64().expect(key);
    let run = |extra: &[&str]| {
        let mut args = vec!["finetune", "--json", "--new-class", "2", "--seed", "3"];
        args.extend_from_slice(extra);
        last_json_line(&host_sim(&args))
    };
    for v in [run(&[]), run(&["--fit", "sgd"]), run(&["--replay", "3"])] {
        assert_eq!(v["new_class"], 2);
        // The watch is worn as in training unless a shift is given.
        assert_eq!(v["shift"], "none");
        // Pre-trained without walking, the model never answers it, and its pre-training
        // accuracy is measured on the three other classes.
        assert_eq!(rate(&v, "new_class_accuracy_before"), 0.0);
        assert_eq!(
            rate(&v, "pretrain_accuracy"),
            rate(&v, "old_classes_accuracy_before")
        );
        // 10 held-out recordings of each class: 30 old, 10 new.
        for when in ["before", "after"] {
            let all = rate(&v, &format!("shifted_accuracy_{when}")) * 40.0;
            let parts = rate(&v, &format!("old_classes_accuracy_{when}")) * 30.0
                + rate(&v, &format!("new_class_accuracy_{when}")) * 10.0;
            assert!((all - parts).abs() < 1e-9, "{when}: {v}");
        }
        assert_eq!(v["committed"], true, "{v}");
        assert!(rate(&v, "new_class_accuracy_after") >= 0.6, "{v}");
        assert!(
            rate(&v, "old_classes_accuracy_after") >= rate(&v, "old_classes_accuracy_before") - 0.1,
            "{v}"
        );
        assert!(
            rate(&v, "validation_accuracy_after") > rate(&v, "validation_accuracy_before"),
            "{v}"
        );
    }
}

#[test]
fn new_class_runs_the_job_and_the_reference_for_each_class() {
    let v = last_json_line(&host_sim(&["new-class", "--json", "--seeds", "1"]));
    let rows = v.as_array().expect("an array");
    assert_eq!(rows.len(), 4);
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row["new_class"], k);
        // Each class's run is the job's own: the same accuracies as `finetune --new-class K`.
        let job = last_json_line(&host_sim(&[
            "finetune",
            "--json",
            "--seed",
            "1",
            "--new-class",
            &k.to_string(),
        ]));
        for key in [
            "old_classes_accuracy_before",
            "old_classes_accuracy_after",
            "new_class_accuracy_after",
            "committed",
        ] {
            assert_eq!(row[key][0], job[key], "class {k}: {key}");
        }
        for key in [
            "reference_old_classes_accuracy",
            "reference_new_class_accuracy",
        ] {
            let r = row[key][0].as_f64().expect("a number");
            assert!((0.0..=1.0).contains(&r), "{row}");
        }
    }
}

#[test]
fn augmentation_turns_each_recording_rigidly_and_keeps_its_class() {
    let train = host_sim::data::load_motions(&default_dir(), "train").unwrap();
    let copies = finetune::augmented(&train, 2, 5).unwrap();
    assert_eq!(copies.len(), 2 * train.len());
    let norm = |w: &host_sim::data::MotionWindow, first: usize, t: usize| -> f64 {
        (first..first + 3)
            .map(|c| f64::from(w[c][t]).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    // acc(t) . gyro(t), summed over the window: an orthogonal map turning both sensors alike
    // keeps it, except that the gyroscope is a pseudo-vector, so on the other wrist (a
    // reflection) it changes sign.
    let mixed = |w: &host_sim::data::MotionWindow| -> f64 {
        (0..w[0].len())
            .map(|t| {
                (0..3)
                    .map(|c| f64::from(w[c][t]) * f64::from(w[c + 3][t]))
                    .sum::<f64>()
            })
            .sum()
    };
    let (mut moved, mut mirrored, mut kept) = (0, 0, 0);
    for (k, copy) in copies.iter().enumerate() {
        let original = &train[k % train.len()];
        assert_eq!(copy.label, original.label);
        let (a, b) = (mixed(&original.x), mixed(&copy.x));
        assert!(
            (a.abs() - b.abs()).abs() <= 1e-3 * a.abs().max(1.0),
            "{k}: acc . gyro {a} became {b}: the sensors were not turned alike"
        );
        if a.abs() > 1e-2 {
            if a.signum() == b.signum() {
                kept += 1;
            } else {
                mirrored += 1;
            }
        }
        // A rotation, and a reflection, keep the length of both sensors' vectors.
        for t in 0..original.x[0].len() {
            for first in [0, 3] {
                let (a, b) = (norm(&original.x, first, t), norm(&copy.x, first, t));
                assert!((a - b).abs() <= 1e-4 * a.max(1.0), "{k} at {t}: {a} vs {b}");
            }
        }
        if copy.x != original.x {
            moved += 1;
        }
    }
    assert!(
        moved > copies.len() * 9 / 10,
        "{moved} of {} turned",
        copies.len()
    );
    // Half of the copies on the other wrist.
    let share = f64::from(mirrored) / f64::from(mirrored + kept);
    assert!(
        (0.3..=0.7).contains(&share),
        "{mirrored} mirrored, {kept} not"
    );
    // The draws come from the seed.
    assert_eq!(copies, finetune::augmented(&train, 2, 5).unwrap());
    assert_ne!(copies, finetune::augmented(&train, 2, 6).unwrap());
}

#[test]
fn an_augmented_body_keeps_its_accuracy_under_a_turn_it_never_saw() {
    let run = |augment: usize| {
        let config = FinetuneConfig {
            augment,
            shift: "rot:1,-2,0.5:70".parse().unwrap(),
            ..FinetuneConfig::default()
        };
        finetune::run(&default_dir(), &config, &mut |_| {}).unwrap()
    };
    let (plain, augmented) = (run(0), run(6));
    assert!(
        plain.shifted_accuracy_before < 0.8,
        "the turn costs an unaugmented body accuracy: {}",
        plain.shifted_accuracy_before
    );
    assert!(
        augmented.shifted_accuracy_before >= 0.95 && augmented.shifted_accuracy_after >= 0.95,
        "augmented: {} before fine-tuning, {} after",
        augmented.shifted_accuracy_before,
        augmented.shifted_accuracy_after
    );
    assert!(augmented.original_accuracy_after >= 0.95);
}
