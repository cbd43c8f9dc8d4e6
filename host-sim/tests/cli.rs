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
