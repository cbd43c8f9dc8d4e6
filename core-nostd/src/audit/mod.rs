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
//! use safegrad::audit::{audit, FindingKind};
//! use safegrad::{Cap, Tape, Tensor};
//!
//! // PyTorch's note: divide, then select the lanes where the denominator was not zero.
//! let mut tape = Tape::<f32, Cap<16, 64>>::new();
//! let x = tape.input(&Tensor::new([[1.0, 1.0]]))?;
//! let den = tape.input(&Tensor::new([[0.0, 1.0]]))?;
//! let q = tape.div(x, den)?;
//! let keep = tape.not_zero(den)?;
//! let zero = tape.constant(&Tensor::zeros())?;
//! let out = tape.select(keep, q, zero)?;
//! let report = audit::<_, _, 8>(&tape)?;
//! assert_eq!(report.findings().len(), 1);
//! assert_eq!(report.findings()[0].kind, FindingKind::DivideThenMask);
//!
//! // The fix: mask the denominator before dividing.
//! let mut tape = Tape::<f32, Cap<16, 64>>::new();
//! let x = tape.input(&Tensor::new([[1.0, 1.0]]))?;
//! let den = tape.input(&Tensor::new([[0.0, 1.0]]))?;
//! let keep = tape.not_zero(den)?;
//! let out = tape.masked_div(x, den, keep)?;
//! assert!(audit::<_, _, 8>(&tape)?.is_clean());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;

use heapless::Vec;

use crate::graph::{by_family, Domain, Node, NodeId, Op};
use crate::ops::{Lane, OpFamily};
use crate::scalar::Scalar;
use crate::tape::{Capacity, Tape, Values};

mod provenance;

pub use provenance::{first_non_finite, Provenance};

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

/// What an op's rule sees of the graph: the domains derived so far, the recorded ops, and
/// the values of constants.
pub(crate) struct Facts<'a, T> {
    domains: &'a [Domain],
    nodes: &'a [Node<T>],
    values: Values<'a, T>,
}

impl<T: Scalar> Facts<'_, T> {
    /// The domain of node `id` (unknown past those derived).
    pub(crate) fn domain(&self, id: NodeId) -> Domain {
        self.domains.get(id.0).copied().unwrap_or(Domain::UNKNOWN)
    }

    /// The values of node `id` as recorded (those of a frozen parameter are its values for
    /// every input; empty for an unknown node).
    #[cfg(feature = "conv")]
    pub(crate) fn values(&self, id: NodeId) -> &[T] {
        self.nodes
            .get(id.0)
            .and_then(|n| self.values.get(n.slots()))
            .unwrap_or(&[])
    }

    /// The op of node `id`.
    pub(crate) fn op(&self, id: NodeId) -> Option<Op<T>> {
        self.nodes.get(id.0).map(|n| n.op)
    }

    /// `true` for a node that zeroes lanes when used as a multiplier: a `not_zero`
    /// condition, or a constant whose values are all 0 or 1 with at least one 0.
    pub(crate) fn is_mask_like(&self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get(id.0) else {
            return false;
        };
        match node.op {
            Op::Elementwise(crate::ops::ElementwiseOp::NotZero { .. }) => true,
            Op::Constant => {
                let v = self.values.get(node.slots()).unwrap_or(&[]);
                v.iter().all(|&x| x == T::ZERO || x == T::ONE) && v.contains(&T::ZERO)
            }
            _ => false,
        }
    }
}

/// What an op's rule reports: the finding's kind and severity, and what was proven of the
/// operand in question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unproven {
    pub(crate) kind: FindingKind,
    pub(crate) severity: Severity,
    pub(crate) operand: Domain,
    /// A raw op (`div`, `ln`, `sqrt`): if a mask hides its lanes afterwards, the finding is
    /// [`FindingKind::DivideThenMask`].
    pub(crate) raw: bool,
}

impl Unproven {
    /// A finding about a raw op.
    pub(crate) const fn raw(kind: FindingKind, severity: Severity, operand: Domain) -> Self {
        Self {
            kind,
            severity,
            operand,
            raw: true,
        }
    }

    /// A finding about a guarded op used outside the domain its guard assumes.
    pub(crate) const fn guarded(kind: FindingKind, severity: Severity, operand: Domain) -> Self {
        Self {
            kind,
            severity,
            operand,
            raw: false,
        }
    }
}

/// The domain of every node of `tape`, in recording order: declared for leaves, derived by
/// the op's rule for the others.
/// One per node the tape can hold; past those recorded, [`Domain::UNKNOWN`].
pub fn domains<T: Scalar, Mem: Capacity>(tape: &Tape<T, Mem>) -> Mem::PerNode<Domain> {
    let mut out = Mem::per_node(Domain::UNKNOWN);
    for (i, node) in tape.nodes().iter().enumerate() {
        let domain = {
            let facts = Facts {
                domains: &out,
                nodes: tape.nodes(),
                values: tape.view(),
            };
            by_family!(&node.op, op => op.domain(&facts), leaf => node.declared())
        };
        if let Some(slot) = out.get_mut(i) {
            *slot = domain;
        }
    }
    out
}

/// The raw `div`, `ln` or `sqrt` that `id` is, or comes from through single-operand
/// elementwise ops (a scale, a negation, an activation).
fn raw_source<T: Scalar>(nodes: &[Node<T>], mut id: NodeId) -> Option<NodeId> {
    for _ in 0..8 {
        let node = nodes.get(id.0)?;
        let lane = by_family!(&node.op, op => OpFamily::<T>::lane(op), leaf => Lane::Other);
        match lane {
            Lane::Raw => return Some(id),
            Lane::Through(x) => id = x,
            Lane::Other => return None,
        }
    }
    None
}

/// Audits the graph recorded on `tape` (see the module documentation). `F` is the number of
/// findings the report holds; more is an [`AuditError::FindingCapacity`].
pub fn audit<T: Scalar, Mem: Capacity, const F: usize>(
    tape: &Tape<T, Mem>,
) -> Result<Audit<F>, AuditError> {
    let nodes = tape.nodes();
    let domains = domains(tape);
    let facts = Facts {
        domains: &domains,
        nodes,
        values: tape.view(),
    };

    // Which raw nodes are masked away afterwards, and by what.
    let mut masked_by = Mem::per_node::<Option<NodeId>>(None);
    for (i, node) in nodes.iter().enumerate() {
        let candidates =
            by_family!(&node.op, op => op.masked_operands(&facts), leaf => [None, None]);
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
        let Some(unproven) = by_family!(&node.op, op => op.finding(&facts), leaf => None) else {
            continue;
        };
        let masked = masked_by.get(i).copied().flatten().filter(|_| unproven.raw);
        let (kind, severity) = match masked {
            Some(_) => (FindingKind::DivideThenMask, Severity::Error),
            None => (unproven.kind, unproven.severity),
        };
        found += 1;
        // Past the capacity, keep counting for the error.
        let _ = findings.push(Finding {
            node: NodeId(i),
            op: node.op.name(),
            kind,
            severity,
            operand: unproven.operand,
            masked_by: masked,
        });
    }
    if found > F {
        return Err(AuditError::FindingCapacity { capacity: F, found });
    }
    Ok(Audit { findings })
}
