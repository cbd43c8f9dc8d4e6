//! The convolutional ops against PyTorch: values and gradients on committed fixtures
//! (`tests/fixtures/conv_torch.json`, made by `tests/fixtures/conv_torch.py` from PyTorch in
//! float64). The cases include max-pooling ties (the first maximum takes the gradient),
//! windows that leave the last inputs out under a stride, padding, dilation and groups.

use safegrad::ops::batch_norm::{batch_norm, batch_norm_grad};
use safegrad::ops::conv::{conv1d, conv1d_grad, Conv1dShape};
use safegrad::ops::pool::{
    avg_pool1d, avg_pool1d_grad, global_avg_pool, global_avg_pool_grad, max_pool1d,
    max_pool1d_grad, Pool1dShape,
};
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/conv_torch.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the fixtures")).expect("JSON")
}

fn numbers(case: &Value, key: &str) -> Vec<f64> {
    case[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {case}"))
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

fn int(case: &Value, key: &str) -> usize {
    case[key].as_u64().unwrap_or_else(|| panic!("{key}")) as usize
}

/// PyTorch and safegrad sum in different orders: equal to 1e-12, relative.
fn assert_close(what: &str, got: &[f64], expected: &[f64]) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    for (k, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= 1e-12 * e.abs().max(1.0),
            "{what}: [{k}] = {g}, PyTorch gives {e}"
        );
    }
}

#[test]
fn conv1d_matches_pytorch() {
    let all = fixtures();
    let cases = all["conv1d"].as_array().unwrap();
    assert!(cases.len() >= 7);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let shape = Conv1dShape::new(
            int(case, "c_in"),
            int(case, "l_in"),
            int(case, "c_out"),
            int(case, "kernel"),
            int(case, "stride"),
            int(case, "padding"),
            int(case, "dilation"),
            int(case, "groups"),
        );
        assert_eq!(shape.l_out, int(case, "l_out"), "{name}: output length");
        assert_eq!(shape.problem(), None, "{name}");
        let (x, w, b, u) = (
            numbers(case, "x"),
            numbers(case, "weight"),
            numbers(case, "bias"),
            numbers(case, "u"),
        );
        let mut y = vec![0.0; shape.c_out * shape.l_out];
        conv1d(&shape, &x, &w, &b, &mut y);
        assert_close(&format!("{name}: y"), &y, &numbers(case, "y"));
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; b.len()]);
        conv1d_grad(&shape, &x, &w, &u, &mut dx, &mut dw, &mut db);
        assert_close(&format!("{name}: dx"), &dx, &numbers(case, "dx"));
        assert_close(&format!("{name}: dweight"), &dw, &numbers(case, "dweight"));
        assert_close(&format!("{name}: dbias"), &db, &numbers(case, "dbias"));
    }
}

#[test]
fn pooling_matches_pytorch_ties_and_partial_windows_included() {
    let all = fixtures();
    let cases = all["pool"].as_array().unwrap();
    let mut ties = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let shape = Pool1dShape::new(
            int(case, "channels"),
            int(case, "l_in"),
            int(case, "kernel"),
            int(case, "stride"),
            int(case, "padding"),
            int(case, "dilation"),
        );
        assert_eq!(shape.l_out, int(case, "l_out"), "{name}: output length");
        assert_eq!(shape.problem(), None, "{name}");
        let (x, u) = (numbers(case, "x"), numbers(case, "u"));
        let mut y = vec![0.0; shape.channels * shape.l_out];
        let mut dx = vec![0.0; x.len()];
        if case["kind"] == "max" {
            let mut at = vec![0; y.len()];
            max_pool1d(&shape, &x, &mut y, &mut at);
            max_pool1d_grad(&shape, &x, &u, &mut dx);
            // A maximum is exact. Its gradient goes to the same inputs (an input that takes
            // none is exactly 0 in both), summed in another order where windows overlap.
            assert_eq!(y, numbers(case, "y"), "{name}: y");
            let expected = numbers(case, "dx");
            assert_close(&format!("{name}: dx"), &dx, &expected);
            for (k, (&g, &e)) in dx.iter().zip(&expected).enumerate() {
                assert_eq!(g == 0.0, e == 0.0, "{name}: dx[{k}] routed elsewhere");
            }
            ties += usize::from(name.starts_with("ties"));
        } else {
            avg_pool1d(&shape, &x, &mut y);
            avg_pool1d_grad(&shape, &u, &mut dx);
            assert_close(&format!("{name}: y"), &y, &numbers(case, "y"));
            assert_close(&format!("{name}: dx"), &dx, &numbers(case, "dx"));
        }
        // Under a stride that leaves a remainder, the inputs after the last window take a
        // zero gradient, in PyTorch as here.
        if name.contains("partial") {
            let span = (shape.l_out - 1) * shape.stride + (shape.kernel - 1) * shape.dilation + 1;
            assert!(
                span < shape.l_in + shape.padding,
                "{name}: a partial last window"
            );
            for c in 0..shape.channels {
                assert_eq!(dx[c * shape.l_in + shape.l_in - 1], 0.0, "{name}");
            }
        }
    }
    assert_eq!(ties, 3, "the fixtures hold the tie cases");
}

#[test]
fn batch_norm_and_global_pooling_match_pytorch() {
    let all = fixtures();
    for case in all["batch_norm"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (len, eps) = (int(case, "length"), case["eps"].as_f64().unwrap());
        let (x, u, stats) = (
            numbers(case, "x"),
            numbers(case, "u"),
            numbers(case, "stats"),
        );
        let mut y = vec![0.0; x.len()];
        batch_norm(&x, len, &stats, eps, &mut y);
        assert_close(&format!("{name}: y"), &y, &numbers(case, "y"));
        let mut dx = vec![0.0; x.len()];
        batch_norm_grad(&u, len, &stats, eps, &mut dx);
        assert_close(&format!("{name}: dx"), &dx, &numbers(case, "dx"));
    }
    for case in all["global_avg_pool"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let len = int(case, "length");
        let (x, u) = (numbers(case, "x"), numbers(case, "u"));
        let mut y = vec![0.0; int(case, "channels")];
        global_avg_pool(&x, len, &mut y);
        assert_close(&format!("{name}: y"), &y, &numbers(case, "y"));
        let mut dx = vec![0.0; x.len()];
        global_avg_pool_grad(&u, len, &mut dx);
        assert_close(&format!("{name}: dx"), &dx, &numbers(case, "dx"));
    }
}
