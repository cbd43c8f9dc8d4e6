//! The training jobs, run as a user runs them (the binary) and through the library with
//! reduced settings.

use std::path::PathBuf;
use std::process::Command;

use host_sim::data::default_dir;
use host_sim::finetune::{self, FinetuneConfig, FinetuneMode, MotionModel};
use safegrad::checkpoint;
use safegrad::nn::Init;
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

fn reduced() -> FinetuneConfig {
    FinetuneConfig {
        pretrain_epochs: 25,
        finetune_epochs: 15,
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
        mode: FinetuneMode::BiasOnly,
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
        "finetune_steps",
        "trainable_params",
        "train_state_bytes",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
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
