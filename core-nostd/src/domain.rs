//! The domain audit: an abstract interpretation of the recorded graph on the [`Domain`]
//! lattice, and the findings it leads to.
//!
//! Each node's domain follows from its inputs' by a rule per op (`exp` is positive, `x * x`
//! is non-negative, `a + eps` is positive when `a` is non-negative, a signed safe division
//! is finite, a masked-denominator division is finite when its mask is `not_zero` of its
//! denominator, a select keeps what both branches have, `select(not_zero(x), x, ..)` knows
//! `x` is not zero where it is taken, and so on). Leaves start from what was declared: parameters are finite, constants are what
//! their values are, inputs are unknown unless declared with
//! [`Tape::input_in`](crate::Tape::input_in). The audit then reports every raw division,
//! logarithm or square root whose operand is not proven safe, and every guarded op used
//! outside the domain its guard assumes.
//!
//! The domains are those of real arithmetic: a finite sum that overflows, or an `exp` that
//! underflows to 0, is outside what the audit proves; the run-time check
//! ([`first_non_finite`]) catches those when they happen.
//!
//! ```
//! use safegrad::domain::{audit, FindingKind};
//! use safegrad::{Tape, Tensor};
//!
//! // PyTorch's note: divide, then select the lanes where the denominator was not zero.
//! let mut tape = Tape::<f32, 16, 64>::new();
//! let x = tape.input(&Tensor::new([[1.0, 1.0]]))?;
//! let den = tape.input(&Tensor::new([[0.0, 1.0]]))?;
//! let q = tape.div(x, den)?;
//! let keep = tape.not_zero(den)?;
//! let zero = tape.constant(&Tensor::zeros())?;
//! let out = tape.select(keep, q, zero)?;
//! let report = audit::<_, 16, 64, 64, 8>(&tape)?;
//! assert_eq!(report.findings().len(), 1);
//! assert_eq!(report.findings()[0].kind, FindingKind::DivideThenMask);
//!
//! // The fix: mask the denominator before dividing.
//! let mut tape = Tape::<f32, 16, 64>::new();
//! let x = tape.input(&Tensor::new([[1.0, 1.0]]))?;
//! let den = tape.input(&Tensor::new([[0.0, 1.0]]))?;
//! let keep = tape.not_zero(den)?;
//! let out = tape.masked_div(x, den, keep)?;
//! assert!(audit::<_, 16, 64, 64, 8>(&tape)?.is_clean());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

use heapless::Vec;

use crate::graph::{Domain, Node, NodeId, Op};
use crate::scalar::Scalar;
use crate::tape::Tape;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Severity {
    /// The forward is safe but a gradient can be infinite.
    Warning,
    /// A value or a gradient can be `nan` or infinite for inputs the graph accepts.
    Error,
}

impl Severity {
    /// `"warning"` or `"error"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FindingKind {
    /// A raw `div` whose denominator is not proven non-zero.
    UnguardedDivision,
    /// A raw `div`, `ln` or `sqrt` outside its domain whose result is then masked or selected
    /// away: "divide, then mask". The forward looks fine; the backward still differentiates
    /// the undefined lane.
    DivideThenMask,
    /// `safe_div` whose denominator is not proven non-negative: at `den = -eps` it divides by
    /// zero.
    SafeDivNegative,
    /// `safe_ln` or `safe_sqrt` of a value not proven non-negative: at `x <= -eps` it is
    /// undefined.
    SafeGuardNegative,
    /// Raw `ln` of a value not proven positive.
    LnNotPositive,
    /// Raw `sqrt` of a value not proven positive: its gradient is infinite at 0.
    SqrtNotPositive,
}

impl FindingKind {
    /// A stable name, e.g. `"divide_then_mask"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnguardedDivision => "unguarded_division",
            Self::DivideThenMask => "divide_then_mask",
            Self::SafeDivNegative => "safe_div_negative",
            Self::SafeGuardNegative => "safe_guard_negative",
            Self::LnNotPositive => "ln_not_positive",
            Self::SqrtNotPositive => "sqrt_not_positive",
        }
    }

    /// What the audit could not prove.
    pub const fn unproven(self) -> &'static str {
        match self {
            Self::UnguardedDivision => "the denominator is not proven non-zero",
            Self::DivideThenMask => {
                "the operand is not proven safe, and the result is masked afterwards"
            }
            Self::SafeDivNegative => "the denominator is not proven non-negative",
            Self::SafeGuardNegative => "the operand is not proven non-negative",
            Self::LnNotPositive => "the operand is not proven positive",
            Self::SqrtNotPositive => "the operand is not proven positive",
        }
    }

    /// The suggested fix.
    pub const fn suggestion(self) -> &'static str {
        match self {
            Self::UnguardedDivision => {
                "use safe_div_signed, or masked_div if a mask excludes the zero denominators"
            }
            Self::DivideThenMask => {
                "guard before the operation, not after: masked_div (the denominator masked before dividing), safe_div_signed, safe_ln or safe_sqrt"
            }
            Self::SafeDivNegative => {
                "use safe_div_signed (the guard takes the denominator's sign), or declare the denominator non-negative"
            }
            Self::SafeGuardNegative => "make the operand non-negative first (e.g. a square or relu)",
            Self::LnNotPositive => "use safe_ln on a non-negative value, or declare the operand positive",
            Self::SqrtNotPositive => "use safe_sqrt on a non-negative value (finite gradient at 0)",
        }
    }
}

/// One reported problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Finding {
    /// The node.
    pub node: NodeId,
    /// Its op's name.
    pub op: &'static str,
    /// What the finding is.
    pub kind: FindingKind,
    /// How bad.
    pub severity: Severity,
    /// What was proven about the operand in question.
    pub operand: Domain,
    /// The select or mask that hides the lane, for [`FindingKind::DivideThenMask`].
    pub masked_by: Option<NodeId>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: node {} ({}): {}",
            self.severity.name(),
            self.node,
            self.op,
            self.kind.unproven()
        )?;
        if let Some(m) = self.masked_by {
            write!(f, " by node {m}")?;
        }
        write!(
            f,
            " (proven: {}); fix: {}",
            self.operand,
            self.kind.suggestion()
        )
    }
}

/// Why the audit could not report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AuditError {
    /// More findings than the report holds.
    FindingCapacity {
        /// The report's capacity `F`.
        capacity: usize,
        /// Findings there were.
        found: usize,
    },
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FindingCapacity { capacity, found } => {
                write!(f, "{found} findings, the report holds F = {capacity}")
            }
        }
    }
}

impl core::error::Error for AuditError {}

/// The audit of a graph: its findings, in recording order.
#[derive(Clone, Debug, PartialEq)]
pub struct Audit<const F: usize> {
    findings: Vec<Finding, F>,
}

impl<const F: usize> Audit<F> {
    /// The findings, in recording order.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// `true` without findings.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The first error-level finding, if any.
    pub fn first_error(&self) -> Option<&Finding> {
        self.findings.iter().find(|f| f.severity == Severity::Error)
    }
}

impl<const F: usize> fmt::Display for Audit<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.findings.is_empty() {
            return write!(f, "clean: every guarded domain is proven");
        }
        for (i, finding) in self.findings.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
}

/// The domain of one op's output from its inputs' domains (`d` gives an input's domain) and
/// the op's recorded facts (`same` tells whether two inputs are the same node).
fn rule<T: Scalar>(
    op: &Op<T>,
    d: &dyn Fn(NodeId) -> Domain,
    op_of: &dyn Fn(NodeId) -> Option<Op<T>>,
) -> Domain {
    let finite_if = |c: bool| Domain {
        finite: c,
        non_negative: false,
        non_zero: false,
    };
    match *op {
        Op::Parameter | Op::Input | Op::Constant => Domain::UNKNOWN,
        Op::Add { a, b } | Op::AddRow { x: a, row: b } => {
            let (a, b) = (d(a), d(b));
            let non_negative = a.non_negative && b.non_negative;
            Domain {
                finite: a.finite && b.finite,
                non_negative,
                non_zero: non_negative && (a.is_positive() || b.is_positive()),
            }
        }
        Op::Sub { a, b } => finite_if(d(a).finite && d(b).finite),
        Op::Mul { a, b } | Op::MulRow { x: a, row: b } => {
            let (da, db) = (d(a), d(b));
            Domain {
                finite: da.finite && db.finite,
                non_negative: a == b || (da.non_negative && db.non_negative),
                non_zero: da.non_zero && db.non_zero,
            }
        }
        Op::Neg { x } => {
            let x = d(x);
            Domain {
                finite: x.finite,
                non_negative: false,
                non_zero: x.non_zero,
            }
        }
        Op::Scale { x, factor } => {
            let x = d(x);
            let positive_factor = factor > T::ZERO;
            Domain {
                finite: x.finite && factor.is_finite(),
                non_negative: x.non_negative && factor >= T::ZERO,
                non_zero: x.non_zero
                    && factor != T::ZERO
                    && factor.is_finite()
                    && (positive_factor || factor < T::ZERO),
            }
        }
        Op::MatMul { a, b } => {
            let (a, b) = (d(a), d(b));
            Domain {
                finite: a.finite && b.finite,
                non_negative: a.non_negative && b.non_negative,
                non_zero: false,
            }
        }
        Op::Linear { x, weight, bias } => {
            let (x, w, b) = (d(x), d(weight), d(bias));
            let non_negative = x.non_negative && w.non_negative && b.non_negative;
            Domain {
                finite: x.finite && w.finite && b.finite,
                non_negative,
                non_zero: non_negative && b.is_positive(),
            }
        }
        Op::LinearRelu { x, weight, bias } => Domain {
            finite: d(x).finite && d(weight).finite && d(bias).finite,
            non_negative: true,
            non_zero: false,
        },
        Op::Transpose { x } => d(x),
        Op::Relu { x } => Domain {
            finite: d(x).finite,
            non_negative: true,
            non_zero: false,
        },
        Op::Tanh { x } | Op::LogSumExp { x } | Op::LayerNorm { x, .. } => finite_if(d(x).finite),
        Op::Sigmoid { x } => Domain {
            finite: d(x).finite,
            non_negative: true,
            non_zero: false,
        },
        Op::Exp { x } => Domain {
            finite: d(x).finite,
            non_negative: true,
            non_zero: true,
        },
        Op::Ln { x } => finite_if(d(x).is_positive()),
        Op::Sqrt { x } => {
            let x = d(x);
            Domain {
                finite: x.finite && x.non_negative,
                non_negative: true,
                non_zero: x.is_positive(),
            }
        }
        Op::SafeLn { x, eps } => finite_if(d(x).finite && d(x).non_negative && eps > T::ZERO),
        Op::SafeSqrt { x, eps } => {
            let x = d(x);
            let shifted = x.non_negative && eps > T::ZERO;
            Domain {
                finite: shifted && x.finite,
                non_negative: true,
                non_zero: shifted,
            }
        }
        Op::Sum { x } | Op::Mean { x } => {
            let x = d(x);
            Domain {
                finite: x.finite,
                non_negative: x.non_negative,
                non_zero: x.is_positive(),
            }
        }
        Op::SoftmaxCrossEntropy { logits, .. } => Domain {
            finite: d(logits).finite,
            non_negative: true,
            non_zero: false,
        },
        Op::Div { num, den } => {
            let (n, q) = (d(num), d(den));
            Domain {
                finite: n.finite && q.non_zero,
                non_negative: n.non_negative && q.non_negative,
                non_zero: n.non_zero && q.finite,
            }
        }
        Op::SafeDiv { num, den, eps } => {
            let (n, q) = (d(num), d(den));
            let guarded = q.non_negative && eps > T::ZERO;
            Domain {
                finite: n.finite && guarded,
                non_negative: n.non_negative && guarded,
                non_zero: n.non_zero && guarded && q.finite,
            }
        }
        Op::SafeDivSigned { num, den, eps } => {
            let (n, q) = (d(num), d(den));
            Domain {
                finite: n.finite && q.finite && eps > T::ZERO,
                non_negative: false,
                non_zero: n.non_zero && q.finite,
            }
        }
        Op::MaskedDiv { num, den, mask } => {
            finite_if(d(num).finite && masked_division_guarded(den, mask, d, op_of))
        }
        Op::Mask { weight, x } => {
            let (w, x) = (d(weight), d(x));
            Domain {
                finite: w.finite && x.finite,
                non_negative: w.non_negative && x.non_negative,
                non_zero: false,
            }
        }
        Op::Select {
            cond,
            on_true,
            on_false,
        } => {
            // select(not_zero(x), x, ..): where the branch is taken, x is not zero.
            let mut taken = d(on_true);
            if matches!(op_of(cond), Some(Op::NotZero { x }) if x == on_true) {
                taken.non_zero = true;
            }
            taken.meet(d(on_false))
        }
        Op::NotZero { .. } => Domain::NON_NEGATIVE,
    }
}

/// `true` when a masked division cannot divide by zero: its denominator is proven non-zero,
/// or its mask is `not_zero` of that very denominator.
fn masked_division_guarded<T>(
    den: NodeId,
    mask: NodeId,
    d: &dyn Fn(NodeId) -> Domain,
    op_of: &dyn Fn(NodeId) -> Option<Op<T>>,
) -> bool {
    d(den).non_zero || matches!(op_of(mask), Some(Op::NotZero { x }) if x == den)
}

/// The domain of every node of `tape`, in recording order: declared for leaves, derived by
/// the op's rule for the others.
pub fn domains<T: Scalar, const N: usize, const S: usize, const G: usize>(
    tape: &Tape<T, N, S, G>,
) -> [Domain; N] {
    let mut out = [Domain::UNKNOWN; N];
    for (i, node) in tape.nodes().iter().enumerate() {
        let domain = match node.op() {
            Op::Parameter | Op::Input | Op::Constant => node.declared(),
            op => rule(
                op,
                &|id: NodeId| out.get(id.0).copied().unwrap_or(Domain::UNKNOWN),
                &|id: NodeId| tape.nodes().get(id.0).map(|n| *n.op()),
            ),
        };
        if let Some(slot) = out.get_mut(i) {
            *slot = domain;
        }
    }
    out
}

/// `true` for a node that zeroes lanes when used as a multiplier: a `not_zero` condition, or
/// a constant whose values are all 0 or 1 with at least one 0.
fn is_mask_like<T: Scalar, const N: usize, const S: usize, const G: usize>(
    tape: &Tape<T, N, S, G>,
    node: &Node<T>,
) -> bool {
    match node.op() {
        Op::NotZero { .. } => true,
        Op::Constant => {
            let v = tape.values_of(node);
            v.iter().all(|&x| x == T::ZERO || x == T::ONE) && v.contains(&T::ZERO)
        }
        _ => false,
    }
}

/// The raw `div`, `ln` or `sqrt` that `id` is, or comes from through single-operand
/// elementwise ops (a scale, a negation, an activation).
fn raw_source<T>(nodes: &[Node<T>], mut id: NodeId) -> Option<NodeId> {
    for _ in 0..8 {
        let node = nodes.get(id.0)?;
        match *node.op() {
            Op::Div { .. } | Op::Ln { .. } | Op::Sqrt { .. } => return Some(id),
            Op::Scale { x, .. }
            | Op::Neg { x }
            | Op::Relu { x }
            | Op::Tanh { x }
            | Op::Sigmoid { x }
            | Op::Exp { x } => id = x,
            _ => return None,
        }
    }
    None
}

/// Audits the graph recorded on `tape` (see the module documentation). `F` is the number of
/// findings the report holds; more is an [`AuditError::FindingCapacity`].
pub fn audit<T: Scalar, const N: usize, const S: usize, const G: usize, const F: usize>(
    tape: &Tape<T, N, S, G>,
) -> Result<Audit<F>, AuditError> {
    let nodes = tape.nodes();
    let dom = domains(tape);
    let d = |id: NodeId| dom.get(id.0).copied().unwrap_or(Domain::UNKNOWN);

    // Which raw nodes are masked away afterwards, and by what.
    let mut masked_by: [Option<NodeId>; N] = [None; N];
    for (i, node) in nodes.iter().enumerate() {
        let candidates: [Option<NodeId>; 2] = match *node.op() {
            Op::Select {
                on_true, on_false, ..
            } => [Some(on_true), Some(on_false)],
            Op::Mask { x, .. } => [Some(x), None],
            Op::Mul { a, b } => {
                let mask = |id: NodeId| nodes.get(id.0).is_some_and(|n| is_mask_like(tape, n));
                [mask(a).then_some(b), mask(b).then_some(a)]
            }
            _ => [None, None],
        };
        for raw in candidates
            .iter()
            .flatten()
            .filter_map(|&c| raw_source(nodes, c))
        {
            if let Some(slot) = masked_by.get_mut(raw.0) {
                slot.get_or_insert(NodeId(i));
            }
        }
    }

    let mut findings = Vec::<Finding, F>::new();
    let mut found = 0usize;
    for (i, node) in nodes.iter().enumerate() {
        let masked = masked_by.get(i).copied().flatten();
        let raw = |operand: Domain, safe: bool, kind: FindingKind, severity: Severity| {
            let reported = match masked {
                Some(_) => (FindingKind::DivideThenMask, Severity::Error, operand),
                None => (kind, severity, operand),
            };
            (!safe).then_some(reported)
        };
        let finding = match *node.op() {
            Op::Div { den, .. } => raw(
                d(den),
                d(den).non_zero,
                FindingKind::UnguardedDivision,
                Severity::Error,
            ),
            Op::Ln { x } => raw(
                d(x),
                d(x).is_positive(),
                FindingKind::LnNotPositive,
                Severity::Error,
            ),
            Op::Sqrt { x } => {
                let severity = if d(x).non_negative && d(x).finite {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                raw(
                    d(x),
                    d(x).is_positive(),
                    FindingKind::SqrtNotPositive,
                    severity,
                )
            }
            Op::MaskedDiv { den, mask, .. } => {
                let op_of = |id: NodeId| nodes.get(id.0).map(|n| *n.op());
                (!masked_division_guarded(den, mask, &d, &op_of)).then_some((
                    FindingKind::UnguardedDivision,
                    Severity::Error,
                    d(den),
                ))
            }
            Op::SafeDiv { den, .. } => (!d(den).non_negative).then_some((
                FindingKind::SafeDivNegative,
                Severity::Error,
                d(den),
            )),
            Op::SafeLn { x, .. } | Op::SafeSqrt { x, .. } => (!d(x).non_negative).then_some((
                FindingKind::SafeGuardNegative,
                Severity::Error,
                d(x),
            )),
            _ => None,
        };
        if let Some((kind, severity, operand)) = finding {
            found += 1;
            let f = Finding {
                node: NodeId(i),
                op: node.op().name(),
                kind,
                severity,
                operand,
                masked_by: if kind == FindingKind::DivideThenMask {
                    masked
                } else {
                    None
                },
            };
            // Past the capacity, keep counting for the error.
            let _ = findings.push(f);
        }
    }
    if found > F {
        return Err(AuditError::FindingCapacity { capacity: F, found });
    }
    Ok(Audit { findings })
}

/// Where a non-finite value first appeared, with what fed it: the NaN-provenance check.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Provenance<T> {
    /// The node that produced it from finite inputs (recording order).
    pub node: NodeId,
    /// Its op's name.
    pub op: &'static str,
    /// The first non-finite position in the node's values (row-major).
    pub index: usize,
    /// The value there.
    pub value: T,
    /// The inputs' values at the same position, for inputs of the node's shape (an
    /// elementwise op's operands); `None` for other inputs.
    pub inputs: [Option<T>; 3],
}

impl<T: fmt::Display> fmt::Display for Provenance<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} ({}) produced {} at position {} from finite inputs",
            self.node, self.op, self.value, self.index
        )?;
        let mut first = true;
        for v in self.inputs.iter().flatten() {
            write!(f, "{}{v}", if first { ": operands " } else { ", " })?;
            first = false;
        }
        Ok(())
    }
}

/// The first node, in recording order, among those `output` depends on (itself included),
/// with a non-finite value whose inputs are all finite; `None` if all their values are
/// finite. One pass over the nodes and their values: cheap enough to run after every
/// forward on the device.
///
/// ```
/// use safegrad::domain::first_non_finite;
/// use safegrad::{Tape, Tensor};
///
/// let mut tape = Tape::<f32, 8, 32>::new();
/// let x = tape.input(&Tensor::new([[1.0, 0.0]]))?;
/// let y = tape.input(&Tensor::new([[2.0, 0.0]]))?;
/// let q = tape.div(x, y)?; // 0 / 0 in the second lane
/// let e = tape.exp(q)?;
/// let p = first_non_finite(&tape, e.node()).unwrap();
/// assert_eq!((p.node, p.op, p.index), (q.node(), "div", 1));
/// assert_eq!(p.inputs, [Some(0.0), Some(0.0), None]);
/// # Ok::<(), safegrad::TapeError>(())
/// ```
pub fn first_non_finite<T: Scalar, const N: usize, const S: usize, const G: usize>(
    tape: &Tape<T, N, S, G>,
    output: NodeId,
) -> Option<Provenance<T>> {
    let nodes = tape.nodes();
    // The nodes `output` depends on: marked backwards from it.
    let mut feeds = [false; N];
    if let Some(f) = feeds.get_mut(output.0) {
        *f = true;
    }
    for i in (0..nodes.len().min(output.0 + 1)).rev() {
        if !feeds.get(i).copied().unwrap_or(false) {
            continue;
        }
        let inputs = nodes.get(i).map_or([None; 3], |n| n.op().inputs());
        for id in inputs.iter().flatten() {
            if let Some(f) = feeds.get_mut(id.0) {
                *f = true;
            }
        }
    }
    let all_finite = |n: &Node<T>| tape.values_of(n).iter().all(|v| v.is_finite());
    for (i, node) in nodes.iter().enumerate() {
        if !feeds.get(i).copied().unwrap_or(false) {
            continue;
        }
        let values = tape.values_of(node);
        let Some(index) = values.iter().position(|v| !v.is_finite()) else {
            continue;
        };
        let inputs = node.op().inputs();
        let inputs_finite = inputs
            .iter()
            .flatten()
            .all(|id| nodes.get(id.0).is_some_and(all_finite));
        if !inputs_finite {
            continue;
        }
        let at = |id: Option<NodeId>| {
            let n = nodes.get(id?.0)?;
            (n.shape() == node.shape()).then(|| tape.values_of(n).get(index).copied())?
        };
        return Some(Provenance {
            node: NodeId(i),
            op: node.op().name(),
            index,
            value: values.get(index).copied().unwrap_or(T::ZERO),
            inputs: [at(inputs[0]), at(inputs[1]), at(inputs[2])],
        });
    }
    None
}
