//! The BugZoo cases: masked division and friends, where a naive autograd turns a masked-out
//! lane into `nan`, reproduced on safegrad's tape in `f32`.
//!
//! Each case records a small graph, runs the forward and the reverse sweep, and reports the
//! forward output and the gradient of each named input. Where the IEEE chain rule (what
//! PyTorch and JAX compute) gives a different gradient, the case also carries that result,
//! computed here by writing the chain rule out by hand with plain `f32` arithmetic, and the
//! published value where the framework documents one.

use safegrad::{Cap, Tape, TapeError, Tensor};
use serde_json::{json, Map, Value};

use crate::json::{numbers, show_all};

/// The guard every case uses, safegrad's default (TorchLean's `1e-6`).
pub const EPS: f32 = 1e-6;

/// A gradient of one named input.
pub type NamedGrad = (&'static str, Vec<f32>);

/// What a framework with IEEE semantics in the backward computes for a case.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// Which framework, and where its behaviour is documented.
    pub source: &'static str,
    /// Its gradients, by input name.
    pub grads: Vec<NamedGrad>,
}

/// One reproduced case.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// Stable identifier, e.g. `pytorch_doc_unsafe`.
    pub name: &'static str,
    /// The graph, in one line.
    pub graph: &'static str,
    /// The forward output of the graph (before the final sum).
    pub forward: Vec<f32>,
    /// safegrad's gradient of `sum(output)` for each named input.
    pub grads: Vec<NamedGrad>,
    /// The IEEE chain rule's result, where it differs in kind.
    pub reference: Option<Reference>,
}

impl Case {
    /// The gradient of the input `name`.
    pub fn grad(&self, name: &str) -> Option<&[f32]> {
        self.grads
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, g)| g.as_slice())
    }

    /// The case as one JSON object: `{"name", "graph", "forward", "grad": {input: [...]}}`,
    /// plus `"pytorch": {"source", "grad"}` where a reference exists. Non-finite values are
    /// the strings `"nan"`, `"inf"`, `"-inf"`.
    pub fn to_json(&self) -> Value {
        let grads = |gs: &[NamedGrad]| {
            let mut m = Map::new();
            for (name, g) in gs {
                m.insert((*name).to_string(), numbers(g));
            }
            Value::Object(m)
        };
        let mut obj = json!({
            "name": self.name,
            "graph": self.graph,
            "forward": numbers(&self.forward),
            "grad": grads(&self.grads),
        });
        if let (Some(r), Some(o)) = (&self.reference, obj.as_object_mut()) {
            o.insert(
                "pytorch".into(),
                json!({ "source": r.source, "grad": grads(&r.grads) }),
            );
        }
        obj
    }
}

type CaseTape = Tape<f32, Cap<32, 128>>;

fn row<const C: usize>(v: [f32; C]) -> Tensor<f32, 1, C> {
    Tensor::new([v])
}

/// PyTorch's autograd note: `y = x / div`, then `where(div != 0, y, 0)`. The masked lane
/// divides by zero; its upstream gradient is 0, and `0 * inf = nan` in IEEE arithmetic.
pub fn pytorch_doc_unsafe() -> Result<Case, TapeError> {
    let (x0, d0) = ([1.0f32, 1.0], [0.0f32, 1.0]);
    let mut t = CaseTape::new();
    let x = t.variable(&row(x0))?;
    let div = t.variable(&row(d0))?;
    let y = t.div(x, div)?;
    let keep = t.not_zero(div)?;
    let zero = t.constant(&Tensor::zeros())?;
    let out = t.select(keep, y, zero)?;
    let loss = t.sum(out)?;
    t.backward(loss)?;

    // The IEEE chain rule: d loss / d y = where(div != 0, 1, 0), then times d y / d x = 1/div.
    let ieee: Vec<f32> = x0
        .iter()
        .zip(d0)
        .map(|(_, d)| {
            let upstream = if d != 0.0 { 1.0f32 } else { 0.0 };
            upstream * (1.0 / d)
        })
        .collect();
    Ok(Case {
        name: "pytorch_doc_unsafe",
        graph: "x=[1,1], div=[0,1]: select(div != 0, div(x, div), 0)",
        forward: t.value(out)?.as_slice().to_vec(),
        grads: vec![("x", t.grad(x)?.as_slice().to_vec())],
        reference: Some(Reference {
            source: "PyTorch autograd notes (masking after division) document [nan, 1]; \
                     recomputed here with the IEEE chain rule",
            grads: vec![("x", ieee)],
        }),
    })
}

/// The same with the denominator masked first (PyTorch's documented fix), as safegrad's
/// `masked_div` node.
pub fn pytorch_doc_fixed() -> Result<Case, TapeError> {
    let mut t = CaseTape::new();
    let x = t.variable(&row([1.0, 1.0]))?;
    let div = t.variable(&row([0.0, 1.0]))?;
    let keep = t.not_zero(div)?;
    let out = t.masked_div(x, div, keep)?;
    let loss = t.sum(out)?;
    t.backward(loss)?;
    Ok(Case {
        name: "pytorch_doc_fixed",
        graph: "x=[1,1], div=[0,1]: masked_div(x, div, div != 0)",
        forward: t.value(out)?.as_slice().to_vec(),
        grads: vec![
            ("x", t.grad(x)?.as_slice().to_vec()),
            ("div", t.grad(div)?.as_slice().to_vec()),
        ],
        reference: None,
    })
}

/// TorchLean's pair, protected side: `mask * safe_div(num, den)` with plain multiplication
/// (TorchLean's `mulSpec`).
pub fn mask_after_safe_div() -> Result<Case, TapeError> {
    masked_quotient("mask_after_safe_div", true)
}

/// TorchLean's pair, unprotected side: `mask * (num / den)`: `0 * inf = nan` in the forward.
pub fn unsafe_div_then_mask() -> Result<Case, TapeError> {
    masked_quotient("unsafe_div_then_mask", false)
}

fn masked_quotient(name: &'static str, guarded: bool) -> Result<Case, TapeError> {
    let mut t = CaseTape::new();
    let mask = t.variable(&row([0.0, 1.0]))?;
    let num = t.variable(&row([1.0, 1.0]))?;
    let den = t.variable(&row([0.0, 1.0]))?;
    let q = if guarded {
        t.safe_div(num, den)?
    } else {
        t.div(num, den)?
    };
    let out = t.mul(mask, q)?;
    let loss = t.sum(out)?;
    t.backward(loss)?;
    Ok(Case {
        name,
        graph: if guarded {
            "mask=[0,1], num=[1,1], den=[0,1]: mul(mask, safe_div(num, den))"
        } else {
            "mask=[0,1], num=[1,1], den=[0,1]: mul(mask, div(num, den))"
        },
        forward: t.value(out)?.as_slice().to_vec(),
        grads: vec![
            ("num", t.grad(num)?.as_slice().to_vec()),
            ("den", t.grad(den)?.as_slice().to_vec()),
        ],
        reference: None,
    })
}

/// `safe_div(1, -eps)` divides by exactly zero (TorchLean's guard assumes `den >= 0`);
/// `safe_div_signed(1, -eps)` shifts away from zero and stays finite. Forward is
/// `[safe_div, safe_div_signed]`.
pub fn safe_div_negative_eps() -> Result<Case, TapeError> {
    let mut t = CaseTape::new();
    let num_a = t.variable(&row([1.0]))?;
    let den_a = t.variable(&row([-EPS]))?;
    let num_b = t.variable(&row([1.0]))?;
    let den_b = t.variable(&row([-EPS]))?;
    let a = t.safe_div(num_a, den_a)?;
    let b = t.safe_div_signed(num_b, den_b)?;
    let loss = t.add(a, b)?;
    t.backward(loss)?;
    Ok(Case {
        name: "safe_div_negative_eps",
        graph: "[safe_div(1, -eps), safe_div_signed(1, -eps)], eps = 1e-6",
        forward: vec![t.scalar(a)?, t.scalar(b)?],
        grads: vec![
            ("num_safe_div", t.grad(num_a)?.as_slice().to_vec()),
            ("den_safe_div", t.grad(den_a)?.as_slice().to_vec()),
            ("num_safe_div_signed", t.grad(num_b)?.as_slice().to_vec()),
            ("den_safe_div_signed", t.grad(den_b)?.as_slice().to_vec()),
        ],
        reference: None,
    })
}

/// `mask(0, safe_div(1e30, 0))`: the quotient is huge but finite, its local derivative with
/// respect to `den` overflows to `-inf`, and the upstream gradient is 0. Strong zeros give
/// exactly 0; the IEEE chain rule gives `0 * -inf = nan`.
pub fn strong_zero_mask() -> Result<Case, TapeError> {
    let (w0, n0, d0) = (0.0f32, 1e30f32, 0.0f32);
    let mut t = CaseTape::new();
    let w = t.variable(&row([w0]))?;
    let num = t.variable(&row([n0]))?;
    let den = t.variable(&row([d0]))?;
    let q = t.safe_div(num, den)?;
    let out = t.mask(w, q)?;
    let loss = t.sum(out)?;
    t.backward(loss)?;

    // IEEE chain rule, as torch.mul(mask, num / (den + eps)) differentiates it.
    let d = d0 + EPS;
    let g_q = 1.0f32 * w0;
    let g_num = g_q * (1.0 / d);
    let g_den = -g_q * ((n0 / d) / d);
    Ok(Case {
        name: "strong_zero_mask",
        graph: "mask=0, num=1e30, den=0: mask(mask, safe_div(num, den))",
        forward: t.value(out)?.as_slice().to_vec(),
        grads: vec![
            ("num", t.grad(num)?.as_slice().to_vec()),
            ("den", t.grad(den)?.as_slice().to_vec()),
        ],
        reference: Some(Reference {
            source: "IEEE chain rule (PyTorch's torch.mul backward), computed here in f32",
            grads: vec![("num", vec![g_num]), ("den", vec![g_den])],
        }),
    })
}

/// JAX's FAQ: `where(x > 0, log(x), 0)` at `x = 0` has a `nan` gradient, because the
/// untaken branch's `1/x` meets a zero cotangent. Here as `select(x != 0, ln(x), 0)`.
pub fn jax_where_log() -> Result<Case, TapeError> {
    let x0 = [0.0f32, 2.0];
    let mut t = CaseTape::new();
    let x = t.variable(&row(x0))?;
    let keep = t.not_zero(x)?;
    let logx = t.ln(x)?;
    let zero = t.constant(&Tensor::zeros())?;
    let out = t.select(keep, logx, zero)?;
    let loss = t.sum(out)?;
    t.backward(loss)?;
    let ieee: Vec<f32> = x0
        .iter()
        .map(|&v| {
            let upstream = if v != 0.0 { 1.0f32 } else { 0.0 };
            upstream * (1.0 / v)
        })
        .collect();
    Ok(Case {
        name: "jax_where_log",
        graph: "x=[0,2]: select(x != 0, ln(x), 0)",
        forward: t.value(out)?.as_slice().to_vec(),
        grads: vec![("x", t.grad(x)?.as_slice().to_vec())],
        reference: Some(Reference {
            source: "JAX FAQ (gradients contain NaN where using where) documents nan; \
                     recomputed here with the IEEE chain rule",
            grads: vec![("x", ieee)],
        }),
    })
}

/// Every case, in a fixed order.
pub fn all() -> Result<Vec<Case>, TapeError> {
    Ok(vec![
        pytorch_doc_unsafe()?,
        pytorch_doc_fixed()?,
        mask_after_safe_div()?,
        unsafe_div_then_mask()?,
        safe_div_negative_eps()?,
        strong_zero_mask()?,
        jax_where_log()?,
    ])
}

/// The cases as a readable table.
pub fn table(cases: &[Case]) -> String {
    let mut out = String::new();
    for c in cases {
        out.push_str(&format!("{}\n  graph    {}\n", c.name, c.graph));
        out.push_str(&format!("  forward  {}\n", show_all(&c.forward)));
        for (name, g) in &c.grads {
            out.push_str(&format!("  d/d{name:<20} {}\n", show_all(g)));
        }
        if let Some(r) = &c.reference {
            for (name, g) in &r.grads {
                out.push_str(&format!("  ieee d/d{name:<15} {}\n", show_all(g)));
            }
            out.push_str(&format!("  ({})\n", r.source));
        }
        out.push('\n');
    }
    out
}
