//! JSON output conventions shared by the subcommands.

use serde_json::Value;

/// A number as JSON; non-finite values become the strings `"nan"`, `"inf"` and `"-inf"`
/// (JSON has no literal for them).
///
/// ```
/// use host_sim::json::number;
///
/// assert_eq!(number(1.5), serde_json::json!(1.5));
/// assert_eq!(number(f64::NAN), serde_json::json!("nan"));
/// assert_eq!(number(f64::NEG_INFINITY), serde_json::json!("-inf"));
/// ```
pub fn number(x: f64) -> Value {
    if x.is_nan() {
        Value::from("nan")
    } else if x == f64::INFINITY {
        Value::from("inf")
    } else if x == f64::NEG_INFINITY {
        Value::from("-inf")
    } else {
        Value::from(x)
    }
}

/// A slice of `f32` as a JSON array, values widened exactly to `f64`.
pub fn numbers(xs: &[f32]) -> Value {
    Value::Array(xs.iter().map(|&x| number(f64::from(x))).collect())
}

/// A number for a table: shortest round-trip form, `nan`/`inf`/`-inf` spelled out.
pub fn show(x: f32) -> String {
    format!("{x:?}")
}

/// A slice for a table: `[a, b, ...]`.
pub fn show_all(xs: &[f32]) -> String {
    let parts: Vec<String> = xs.iter().map(|&x| show(x)).collect();
    format!("[{}]", parts.join(", "))
}
