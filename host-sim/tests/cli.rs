//! The command-line tool as a user runs it.

use std::process::Command;

fn host_sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_host-sim"))
        .args(args)
        .output()
        .expect("host-sim runs")
}

#[test]
fn bugzoo_json_is_one_array_with_the_required_cases() {
    let out = host_sim(&["bugzoo", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let cases = v.as_array().expect("an array");
    for name in [
        "pytorch_doc_unsafe",
        "pytorch_doc_fixed",
        "mask_after_safe_div",
        "unsafe_div_then_mask",
        "safe_div_negative_eps",
        "strong_zero_mask",
    ] {
        let c = cases
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(c["forward"].is_array(), "{name}: forward");
        assert!(c["grad"].is_object(), "{name}: grad");
    }
    let doc = cases
        .iter()
        .find(|c| c["name"] == "pytorch_doc_unsafe")
        .expect("case");
    assert_eq!(doc["grad"]["x"], serde_json::json!([0.0, 1.0]));
    assert_eq!(doc["pytorch"]["grad"]["x"], serde_json::json!(["nan", 1.0]));
}

#[test]
fn bugzoo_table_is_readable() {
    let out = host_sim(&["bugzoo"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("pytorch_doc_unsafe"));
    assert!(text.contains("ieee d/dx"));
}

#[test]
fn unknown_subcommand_is_one_clear_error() {
    let out = host_sim(&["no-such-command"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(err.contains("no-such-command"), "{err}");
}

#[test]
fn audit_json_flags_every_unsafe_graph_and_no_safe_one() {
    let out = host_sim(&["audit", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let graphs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(graphs.len() >= 40, "{} graphs", graphs.len());
    for g in &graphs {
        let findings = g["findings"].as_array().expect("findings");
        let safe = g["safe"].as_bool().expect("safe");
        assert_eq!(findings.is_empty(), safe, "{}", g["name"]);
        for f in findings {
            for key in ["node", "op", "kind", "severity", "message"] {
                assert!(f.get(key).is_some(), "{key} in {f}");
            }
        }
    }
}

/// The refusal of `args`: no success, one error naming `flag` and saying `says`, and
/// nothing on standard output (nothing was run).
fn refused(args: &[&str], flag: &str, says: &str) {
    let out = host_sim(args);
    assert!(!out.status.success(), "{args:?} was accepted");
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(err.contains(flag), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?} ran: {:?}", out.stdout);
}

#[test]
fn finetune_refuses_bad_shifts_and_counts_up_front_naming_the_flag() {
    refused(
        &["finetune", "--per-class", "0"],
        "--per-class",
        "at least 1 recording",
    );
    refused(
        &["finetune", "--per-class", "-2"],
        "-2",
        "unexpected argument",
    );
    refused(
        &["plans", "--per-class", "0"],
        "--per-class",
        "at least 1 recording",
    );
    refused(
        &["finetune", "--rotation", "nan"],
        "--rotation",
        "not a finite angle",
    );
    refused(
        &["finetune", "--rotation", "inf"],
        "--rotation",
        "not a finite angle",
    );
    refused(
        &["finetune", "--rotation", "left"],
        "--rotation",
        "not a number",
    );
    refused(
        &["finetune", "--shift", "rot-x:nan"],
        "--shift",
        "rot-x:nan",
    );
    refused(
        &["finetune", "--shift", "rot-z:90+tilt:3"],
        "--shift",
        "tilt:3",
    );
    refused(
        &["finetune", "--shift", "gain:1,inf"],
        "--shift",
        "not finite",
    );
    refused(&["finetune", "--shift", "noise:-1"], "--shift", "negative");
    refused(
        &["finetune", "--shift", "rot:0,0,0:10"],
        "--shift",
        "no direction",
    );
    refused(
        &["finetune", "--shift", "rot-z:10", "--rotation", "10"],
        "--shift",
        "--rotation",
    );
    refused(
        &["finetune", "--anchor", "-0.5"],
        "--anchor",
        "not a finite weight",
    );
    refused(
        &["finetune", "--anchor", "nan"],
        "--anchor",
        "not a finite weight",
    );
    refused(
        &["finetune", "--finetune-lr", "0"],
        "--finetune-lr",
        "not a finite learning rate",
    );
    refused(
        &["finetune", "--finetune-lr", "inf"],
        "--finetune-lr",
        "not a finite learning rate",
    );
    refused(
        &["finetune", "--replay", "2", "--mode", "bias-only"],
        "--replay",
        "last layer only",
    );
    refused(
        &["finetune", "--replay", "11"],
        "--replay 11",
        "recordings of class",
    );
    refused(
        &["finetune", "--new-class", "4"],
        "--new-class",
        "not a class: 0 to 3",
    );
    refused(
        &["finetune", "--new-class", "walking"],
        "--new-class",
        "not a class",
    );
    refused(
        &["finetune", "--fit", "full-batch", "--mode", "all"],
        "--fit full-batch",
        "last layer only",
    );
    refused(&["finetune", "--fit", "newton"], "--fit", "newton");
    refused(
        &["finetune", "--shift", "none+rot-z:90"],
        "--shift",
        "`none` alone",
    );
}

#[test]
fn more_recordings_per_class_than_the_split_has_are_refused_with_how_many_there_are() {
    let out = host_sim(&["finetune", "--per-class", "1000"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(err.contains("--per-class 1000"), "{err}");
    // BasicMotions' training split holds 10 recordings of each class.
    assert!(err.contains("has 10 recordings of class"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_device_new_class_assets_and_stream_refuse_what_the_firmware_cannot_teach() {
    let out = std::env::temp_dir().join("safegrad-cli-new-class-assets");
    let out = out.to_string_lossy();
    refused(
        &[
            "device-assets",
            "--new-class",
            "3",
            "--model",
            "cnn",
            "--out",
            &out,
        ],
        "--model cnn",
        "mlp only",
    );
    refused(
        &["device-assets", "--new-class", "4", "--out", &out],
        "--new-class 4",
        "the classes are 0 to 3",
    );
    refused(
        &["device-stream", "--new-class", "4", "--out", &out],
        "--new-class 4",
        "the classes are 0 to 3",
    );
    refused(
        &[
            "device-stream",
            "--new-class",
            "1",
            "--soak",
            "5",
            "--out",
            &out,
        ],
        "--soak",
        "cannot be used with",
    );
}
