//! The domain audit of an ONNX graph: the core's audit ([`safegrad::audit`]) on the nodes of
//! a model as exported, before any import, with findings named by ONNX node and fixes
//! proposed as PyTorch code.
//!
//! Every value gets a [`Domain`] (finite, non-negative, non-zero) by one rule per op, from
//! what is known of the graph's leaves: initialisers and constants are what their values are,
//! inputs are finite (`predict` refuses a non-finite input). `Where` keeps what both branches
//! have, each branch knowing what its condition says where it is taken: in
//! `Where(Not(Equal(d, 0)), d, 1)` the `d` is not zero, in `Where(Greater(x, 0), x, 1)` it
//! is positive. A `Div` whose denominator is not proven non-zero, a `Log` of a value not
//! proven positive and a `Sqrt` of a value not proven positive are findings; when the raw
//! result then flows into a `Where` branch, the finding is "divide, then mask": the forward
//! hides the bad lanes, but the backward still differentiates them (`0 * inf = nan`).

use std::collections::HashMap;
use std::fmt;

use safegrad::audit::{FindingKind, Severity};
use safegrad::Domain;

use super::{Graph, Node, Tensor};

/// A finding of the audit on an ONNX node.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxFinding {
    /// The node's ONNX name.
    pub node: String,
    /// Its ONNX op type.
    pub op_type: String,
    /// What the finding is.
    pub kind: FindingKind,
    /// How bad.
    pub severity: Severity,
    /// What was proven of the operand in question.
    pub operand: Domain,
    /// The `Where` that masks the result, for [`FindingKind::DivideThenMask`].
    pub masked_by: Option<String>,
}

impl OnnxFinding {
    /// The PyTorch idiom that fixes it.
    pub fn suggestion(&self) -> &'static str {
        match (self.kind, self.op_type.as_str()) {
            (FindingKind::DivideThenMask, "Div") => {
                "mask the denominator before dividing: torch.where(m, x / torch.where(m, d, 1), 0) (the masked lanes then take a zero gradient, not nan)"
            }
            (FindingKind::DivideThenMask, "Log") => {
                "mask the operand before the log: torch.where(m, torch.log(torch.where(m, x, 1)), 0)"
            }
            (FindingKind::DivideThenMask, _) => {
                "mask the operand before the square root: torch.where(m, torch.sqrt(torch.where(m, x, 1)), 0)"
            }
            (FindingKind::UnguardedDivision, _) => {
                "mask the denominator first, x / torch.where(d != 0, d, 1), or add a sign-aware eps, x / (d + torch.where(d < 0, -eps, eps))"
            }
            (FindingKind::LnNotPositive, _) => {
                "keep the operand positive: torch.log(x.abs() + eps), or mask it first, torch.log(torch.where(x > 0, x, 1))"
            }
            (FindingKind::SqrtNotPositive, _) => {
                "add an eps inside the root, torch.sqrt(v + eps) for v >= 0 (the gradient 1 / (2 sqrt(v)) is infinite at 0), or mask it first, torch.sqrt(torch.where(v > 0, v, 1))"
            }
            _ => self.kind.suggestion(),
        }
    }
}

impl fmt::Display for OnnxFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: node `{}` ({}): {} (proven: {})",
            self.severity.name(),
            self.node,
            self.op_type,
            self.kind.unproven(),
            self.operand
        )?;
        if let Some(m) = &self.masked_by {
            write!(f, "; masked afterwards by `{m}`")?;
        }
        Ok(())
    }
}

/// What the audit knows of the graph's values.
struct Facts<'g> {
    graph: &'g Graph,
    domains: HashMap<&'g str, Domain>,
    /// The values of initialisers and constants.
    constants: HashMap<&'g str, &'g Tensor>,
    /// The node producing each value.
    producers: HashMap<&'g str, &'g Node>,
}

impl<'g> Facts<'g> {
    fn domain(&self, value: &str) -> Domain {
        self.domains.get(value).copied().unwrap_or(Domain::UNKNOWN)
    }

    fn constant(&self, value: &str) -> Option<&'g Tensor> {
        self.constants.get(value).copied()
    }

    /// `true` if `value` is a constant whose every value satisfies `p`.
    fn constant_all(&self, value: &str, p: impl Fn(f32) -> bool) -> bool {
        self.constant(value)
            .is_some_and(|t| !t.data.is_empty() && t.data.iter().all(|&v| p(v)))
    }

    /// What is known of `value` where the condition `cond` is `holds` (through at most
    /// 16 `Not`s).
    fn refine(&self, value: &str, cond: &str, holds: bool) -> Domain {
        self.refine_within(value, cond, holds, 16)
    }

    fn refine_within(&self, value: &str, cond: &str, holds: bool, depth: usize) -> Domain {
        let d = self.domain(value);
        let Some(node) = self.producers.get(cond).filter(|_| depth > 0) else {
            return d;
        };
        let (a, b) = (node.input(0).unwrap_or(""), node.input(1).unwrap_or(""));
        let non_zero = Domain {
            non_zero: true,
            ..d
        };
        let positive = Domain {
            non_negative: true,
            non_zero: true,
            ..d
        };
        match (node.op_type.as_str(), holds) {
            ("Not", _) => self.refine_within(value, a, !holds, depth - 1),
            // value != 0
            ("Equal", false)
                if (a == value && self.constant_all(b, |v| v == 0.0))
                    || (b == value && self.constant_all(a, |v| v == 0.0)) =>
            {
                non_zero
            }
            // value > c >= 0, or value < c <= 0
            ("Greater", true) if a == value && self.domain(b).is_non_negative() => positive,
            ("Greater", true) if b == value && self.constant_all(a, |v| v <= 0.0) => non_zero,
            ("Less", true) if b == value && self.domain(a).is_non_negative() => positive,
            ("Less", true) if a == value && self.constant_all(b, |v| v <= 0.0) => non_zero,
            // not (value > c), c < 0: value <= c < 0; not (value < c), c > 0: value >= c > 0
            ("Greater", false) if a == value && self.constant_all(b, |v| v < 0.0) => non_zero,
            ("Less", false) if a == value && self.constant_all(b, |v| v > 0.0) => positive,
            ("Greater", false) if b == value && self.constant_all(a, |v| v > 0.0) => positive,
            ("Less", false) if b == value && self.constant_all(a, |v| v < 0.0) => non_zero,
            _ => d,
        }
    }
}

/// The raw op a node is, if its operand is outside its domain: the finding's kind, severity
/// and the operand's domain.
fn unproven(node: &Node, facts: &Facts<'_>) -> Option<(FindingKind, Severity, Domain)> {
    let operand = |i| facts.domain(node.input(i).unwrap_or(""));
    match node.op_type.as_str() {
        "Div" => {
            let d = operand(1);
            (!d.is_non_zero()).then_some((FindingKind::UnguardedDivision, Severity::Error, d))
        }
        "Log" => {
            let d = operand(0);
            (!d.is_positive()).then_some((FindingKind::LnNotPositive, Severity::Error, d))
        }
        "Sqrt" => {
            let d = operand(0);
            // A non-negative operand's forward is fine; only the gradient at 0 is not.
            let severity = if d.non_negative && d.finite {
                Severity::Warning
            } else {
                Severity::Error
            };
            (!d.is_positive()).then_some((FindingKind::SqrtNotPositive, severity, d))
        }
        _ => None,
    }
}

/// The domain of a node's output.
fn rule(node: &Node, facts: &Facts<'_>) -> Domain {
    let inputs: Vec<&str> = node.inputs.iter().map(String::as_str).collect();
    let d = |i: usize| facts.domain(inputs.get(i).copied().unwrap_or(""));
    let all_finite = inputs
        .iter()
        .filter(|n| !n.is_empty())
        .all(|n| facts.domain(n).is_finite());
    match node.op_type.as_str() {
        "Constant" => match super::eval::run_constant(node) {
            Ok(t) => Domain::of_values(&t.data),
            Err(_) => Domain::UNKNOWN,
        },
        "Add" => {
            let (a, b) = (d(0), d(1));
            let non_negative = a.non_negative && b.non_negative;
            Domain {
                finite: a.finite && b.finite,
                non_negative,
                non_zero: non_negative && (a.non_zero || b.non_zero),
            }
        }
        "Mul" => {
            let (a, b) = (d(0), d(1));
            if inputs.first() == inputs.get(1) {
                Domain {
                    finite: a.finite,
                    non_negative: true,
                    non_zero: a.non_zero,
                }
            } else {
                Domain {
                    finite: a.finite && b.finite,
                    non_negative: a.non_negative && b.non_negative,
                    non_zero: a.non_zero && b.non_zero,
                }
            }
        }
        "Div" => {
            let (a, b) = (d(0), d(1));
            if b.is_non_zero() {
                Domain {
                    finite: a.finite && b.finite,
                    non_negative: a.non_negative && b.non_negative,
                    non_zero: a.non_zero,
                }
            } else {
                Domain::UNKNOWN
            }
        }
        "Neg" => Domain {
            finite: d(0).finite,
            non_negative: false,
            non_zero: d(0).non_zero,
        },
        "Abs" => Domain {
            non_negative: true,
            ..d(0)
        },
        "Relu" => Domain {
            finite: d(0).finite,
            non_negative: true,
            non_zero: false,
        },
        "Tanh" => Domain {
            finite: true,
            ..d(0)
        },
        // Positive in real arithmetic, but either underflows to 0 in f32 (a sigmoid at -104,
        // a softmax lane 104 below the largest), as the core's rules say.
        "Sigmoid" | "Softmax" => Domain::NON_NEGATIVE,
        "Log" => Domain::finite_if(d(0).is_positive()),
        "Sqrt" => {
            let a = d(0);
            Domain {
                finite: a.finite && a.non_negative,
                non_negative: a.non_negative,
                non_zero: a.non_negative && a.non_zero,
            }
        }
        "Equal" | "Greater" | "Less" | "Not" => Domain::NON_NEGATIVE,
        "Where" => {
            let cond = inputs.first().copied().unwrap_or("");
            let a = facts.refine(inputs.get(1).copied().unwrap_or(""), cond, true);
            let b = facts.refine(inputs.get(2).copied().unwrap_or(""), cond, false);
            a.meet(b)
        }
        "MaxPool" | "Flatten" | "Reshape" => d(0),
        "AveragePool" | "GlobalAveragePool" | "ReduceMean" => {
            let a = d(0);
            Domain {
                finite: a.finite,
                non_negative: a.non_negative,
                non_zero: a.is_positive(),
            }
        }
        // Products and sums of finite values, normalisations whose guard is inside the op.
        _ => Domain::finite_if(all_finite),
    }
}

/// Audits `graph`: its findings, in node order.
pub fn audit(graph: &Graph) -> Vec<OnnxFinding> {
    let mut facts = Facts {
        graph,
        domains: HashMap::new(),
        constants: HashMap::new(),
        producers: HashMap::new(),
    };
    for input in &graph.inputs {
        facts.domains.insert(&input.name, Domain::FINITE);
    }
    for (name, t) in &graph.initializers {
        facts.domains.insert(name, Domain::of_values(&t.data));
        facts.constants.insert(name, t);
    }
    let mut raw = Vec::new();
    for node in &graph.nodes {
        if let Some((kind, severity, operand)) = unproven(node, &facts) {
            raw.push((node, kind, severity, operand));
        }
        let domain = rule(node, &facts);
        for out in &node.outputs {
            facts.domains.insert(out, domain);
            facts.producers.insert(out, node);
        }
        if node.op_type == "Constant" {
            if let (Some(out), Some(super::Attr::Tensor(t))) =
                (node.outputs.first(), node.attrs.get("value"))
            {
                facts.constants.insert(out, t);
            }
        }
    }
    raw.into_iter()
        .map(|(node, kind, severity, operand)| {
            let masked_by = masking_where(facts.graph, node);
            let (kind, severity) = match masked_by {
                Some(_) => (FindingKind::DivideThenMask, Severity::Error),
                None => (kind, severity),
            };
            OnnxFinding {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                kind,
                severity,
                operand,
                masked_by,
            }
        })
        .collect()
}

/// The first `Where` that `node`'s result reaches as a branch (not as the condition),
/// through any chain of nodes.
fn masking_where(graph: &Graph, node: &Node) -> Option<String> {
    let mut reached: Vec<&str> = node.outputs.iter().map(String::as_str).collect();
    for later in graph
        .nodes
        .iter()
        .skip_while(|n| !std::ptr::eq(*n, node))
        .skip(1)
    {
        let reads = |i: usize| later.input(i).is_some_and(|n| reached.contains(&n));
        if later.op_type == "Where" && (reads(1) || reads(2)) {
            return Some(later.name.clone());
        }
        if (0..later.inputs.len()).any(reads) {
            reached.extend(later.outputs.iter().map(String::as_str));
        }
    }
    None
}
