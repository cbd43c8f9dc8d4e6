//! The BugZoo cases with asserted values. Expected numbers are closed forms written here
//! (and, for the IEEE column, the values PyTorch and JAX document), not outputs of the code
//! under test.

use host_sim::bugzoo::{self, Case, EPS};

fn case(name: &str) -> Case {
    bugzoo::all()
        .expect("every case records")
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("case {name} missing"))
}

fn grad<'a>(c: &'a Case, input: &str) -> &'a [f32] {
    c.grad(input)
        .unwrap_or_else(|| panic!("{}: no gradient for {input}", c.name))
}

fn reference<'a>(c: &'a Case, input: &str) -> &'a [f32] {
    let r = c.reference.as_ref().expect("case has an IEEE reference");
    &r.grads.iter().find(|(n, _)| *n == input).expect("input").1
}

#[test]
fn pytorch_doc_unsafe_gives_zero_where_pytorch_gives_nan() {
    let c = case("pytorch_doc_unsafe");
    assert_eq!(c.forward, [0.0, 1.0]);
    assert_eq!(grad(&c, "x"), [0.0, 1.0]);
    // PyTorch documents [nan, 1] for this graph.
    let ieee = reference(&c, "x");
    assert!(ieee[0].is_nan());
    assert_eq!(ieee[1], 1.0);
}

#[test]
fn pytorch_doc_fixed_masks_the_denominator_first() {
    let c = case("pytorch_doc_fixed");
    assert_eq!(c.forward, [0.0, 1.0]);
    assert_eq!(grad(&c, "x"), [0.0, 1.0]);
    // d/d div of x/div at x = 1, div = 1 is -1; the masked lane gets exactly 0.
    assert_eq!(grad(&c, "div"), [0.0, -1.0]);
}

#[test]
fn mask_after_safe_div_is_finite() {
    let c = case("mask_after_safe_div");
    let d = 1.0f64 + f64::from(EPS);
    assert_eq!(c.forward[0], 0.0);
    assert!((f64::from(c.forward[1]) - 1.0 / d).abs() < 1e-7);
    assert!((f64::from(grad(&c, "num")[1]) - 1.0 / d).abs() < 1e-7);
    assert!((f64::from(grad(&c, "den")[1]) + 1.0 / (d * d)).abs() < 1e-7);
    assert_eq!(grad(&c, "num")[0], 0.0);
    assert_eq!(grad(&c, "den")[0], 0.0);
    for (_, g) in &c.grads {
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }
}

#[test]
fn unsafe_div_then_mask_has_nan_in_the_forward() {
    let c = case("unsafe_div_then_mask");
    // 0 * (1 / 0) = 0 * inf = nan in the masked lane.
    assert!(c.forward[0].is_nan());
    assert_eq!(c.forward[1], 1.0);
    // Strong zeros keep the backward finite even so.
    assert_eq!(grad(&c, "num"), [0.0, 1.0]);
    assert_eq!(grad(&c, "den"), [0.0, -1.0]);
}

#[test]
fn safe_div_fails_at_minus_eps_and_the_signed_form_does_not() {
    let c = case("safe_div_negative_eps");
    assert_eq!(c.forward[0], f32::INFINITY);
    // 1 / (-eps - eps) = -1 / (2 eps) = -5e5.
    let expected = -1.0 / (2.0 * f64::from(EPS));
    assert!((f64::from(c.forward[1]) - expected).abs() / expected.abs() < 1e-6);
    assert!(grad(&c, "num_safe_div")[0].is_infinite());
    let d = -2.0 * f64::from(EPS);
    let g_num = grad(&c, "num_safe_div_signed")[0];
    let g_den = grad(&c, "den_safe_div_signed")[0];
    assert!((f64::from(g_num) - 1.0 / d).abs() / (1.0 / d).abs() < 1e-6);
    assert!((f64::from(g_den) + 1.0 / (d * d)).abs() / (1.0 / (d * d)) < 1e-6);
}

#[test]
fn strong_zero_mask_sends_exact_zeros() {
    let c = case("strong_zero_mask");
    assert_eq!(c.forward, [0.0]);
    assert_eq!(grad(&c, "num"), [0.0]);
    assert_eq!(grad(&c, "den"), [0.0]);
    // The IEEE chain rule forms 0 * -inf here.
    assert_eq!(reference(&c, "num"), [0.0]);
    assert!(reference(&c, "den")[0].is_nan());
}

#[test]
fn jax_where_log_gives_zero_where_jax_gives_nan() {
    let c = case("jax_where_log");
    assert_eq!(c.forward[0], 0.0);
    assert!((c.forward[1] - std::f32::consts::LN_2).abs() < 1e-7);
    assert_eq!(grad(&c, "x"), [0.0, 0.5]);
    assert!(reference(&c, "x")[0].is_nan());
}

#[test]
fn json_spells_non_finite_values_as_strings() {
    let c = case("unsafe_div_then_mask");
    let j = c.to_json();
    assert_eq!(j["name"], "unsafe_div_then_mask");
    assert_eq!(j["forward"][0], "nan");
    assert_eq!(j["forward"][1], 1.0);
    assert_eq!(j["grad"]["den"][1], -1.0);
    let j = case("pytorch_doc_unsafe").to_json();
    assert_eq!(j["pytorch"]["grad"]["x"][0], "nan");
    assert_eq!(j["grad"]["x"][0], 0.0);
    let j = case("safe_div_negative_eps").to_json();
    assert_eq!(j["forward"][0], "inf");
    assert_eq!(j["grad"]["den_safe_div"][0], "-inf");
}
