//! The domain audit, three ways:
//!
//! 1. The corpus (`host_sim::audit_corpus`): every graph gets exactly the findings it lists
//!    (the safe members none), its values contain the problem it is about, and the run-time
//!    NaN provenance points at a node the audit flagged.
//! 2. The audit's rules one by one, on tiny graphs written here: `exp` is positive, `x * x`
//!    is non-negative, `a + eps` is positive, a select keeps what both branches have,
//!    declared inputs, what counts as masking afterwards, the report's capacity and its text.
//! 3. NaN provenance (`first_non_finite`): the first producing node, its op, the lane and
//!    the operands, for `0 / 0`, `ln` of a negative, `exp` overflow, a `nan` sample, and a
//!    clean graph.
//!
//! Expected findings, domains, lanes and operand values are written here from the graphs'
//! definitions, not read back from the code under test.

use std::collections::{BTreeMap, HashSet};

use host_sim::audit_corpus::{corpus, CorpusCase, CorpusTape};
use safegrad::audit::{
    audit, domains, first_non_finite, Audit, AuditError, FindingKind, Provenance, Severity,
};
use safegrad::ops::{ArithmeticOp, ElementwiseOp, GuardedOp};
use safegrad::{Cap, Domain, NodeId, Op, Tape, TapeError, Tensor};

/// The tape of the rule tests.
type Small = Tape<f32, Cap<32, 128>>;

fn check(tape: &Small) -> Audit<8> {
    audit::<_, _, 8>(tape).expect("fits the report")
}

fn kinds<const F: usize>(report: &Audit<F>) -> Vec<FindingKind> {
    report.findings().iter().map(|f| f.kind).collect()
}

fn row<const C: usize>(values: [f32; C]) -> Tensor<f32, 1, C> {
    Tensor::new([values])
}

// -- 1. the corpus ---------------------------------------------------------------------------

fn build(case: &CorpusCase) -> Box<CorpusTape> {
    let mut tape = Box::new(CorpusTape::new());
    (case.build)(&mut tape).unwrap_or_else(|e| panic!("{}: records: {e}", case.name));
    tape
}

/// A corpus graph's output: its last recorded node.
fn output(tape: &CorpusTape) -> NodeId {
    NodeId(tape.nodes().len() - 1)
}

fn audit_case(case: &CorpusCase, tape: &CorpusTape) -> Audit<16> {
    audit::<_, _, 16>(tape).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

/// The operand a finding is about: the denominator of a division, the argument of `ln` or
/// `sqrt`.
fn questioned_operand(op: &Op<f32>) -> Option<NodeId> {
    match *op {
        Op::Arithmetic(ArithmeticOp::Div { den, .. })
        | Op::Guarded(GuardedOp::SafeDiv { den, .. }) => Some(den),
        Op::Elementwise(ElementwiseOp::Ln { x } | ElementwiseOp::Sqrt { x })
        | Op::Guarded(GuardedOp::SafeLn { x, .. } | GuardedOp::SafeSqrt { x, .. }) => Some(x),
        _ => None,
    }
}

/// `true` when some value of the operand is outside what the op needs.
fn out_of_domain(op: &Op<f32>, operand: &[f32]) -> bool {
    operand.iter().any(|&v| match op {
        Op::Arithmetic(ArithmeticOp::Div { .. }) => v == 0.0 || !v.is_finite(),
        Op::Elementwise(ElementwiseOp::Ln { .. } | ElementwiseOp::Sqrt { .. }) => {
            v.is_nan() || v <= 0.0
        }
        Op::Guarded(
            GuardedOp::SafeDiv { .. } | GuardedOp::SafeLn { .. } | GuardedOp::SafeSqrt { .. },
        ) => v.is_nan() || v < 0.0,
        _ => false,
    })
}

#[test]
fn corpus_has_at_least_20_pairs_of_one_unsafe_and_one_safe_member() {
    let cases = corpus();
    let mut names = HashSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate name {}", c.name);
        let suffix = if c.safe { "_safe" } else { "_unsafe" };
        assert_eq!(c.name, format!("{}{suffix}", c.pair), "name of {}", c.name);
        assert!(c.source.len() > 40, "{}: source too short", c.name);
        assert_eq!(
            c.safe,
            c.expected.is_empty(),
            "{}: a safe member expects no finding, an unsafe one at least one",
            c.name
        );
    }
    let mut pairs: BTreeMap<&str, Vec<&CorpusCase>> = BTreeMap::new();
    for c in &cases {
        pairs.entry(c.pair).or_default().push(c);
    }
    assert!(pairs.len() >= 20, "{} pairs", pairs.len());
    assert_eq!(cases.len(), 2 * pairs.len());
    for (pair, members) in &pairs {
        assert_eq!(members.len(), 2, "{pair}");
        assert_eq!(members.iter().filter(|c| c.safe).count(), 1, "{pair}");
        assert_eq!(members[0].source, members[1].source, "{pair}: one source");
    }
}

#[test]
fn corpus_required_topics_are_present() {
    let pairs: HashSet<&str> = corpus().iter().map(|c| c.pair).collect();
    for pair in [
        "pytorch_div_then_where",
        "jax_where_log",
        "masked_mean_empty",
        "normalise_constant_vector",
        "cosine_similarity_zero_vector",
        "distance_identical_points",
        "naive_log_softmax",
        "log_of_softmax_probability",
        "precision_ratio_of_sums",
        "standardise_zero_std",
        "torchlean_mask_after_div",
        "safe_div_negative_denominator",
    ] {
        assert!(pairs.contains(pair), "{pair} missing");
    }
}

#[test]
fn every_corpus_case_gets_exactly_its_expected_findings() {
    let mut failures = Vec::new();
    for case in corpus() {
        let tape = build(&case);
        let report = audit_case(&case, &tape);
        let got = kinds(&report);
        if got != case.expected {
            failures.push(format!(
                "{}: expected {:?}, got {:?}\n{report}",
                case.name, case.expected, got
            ));
        }
        assert_eq!(case.safe, report.is_clean(), "{}", case.name);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_corpus_finding_names_a_node_of_its_kind() {
    for case in corpus().iter().filter(|c| !c.safe) {
        let tape = build(case);
        for f in audit_case(case, &tape).findings() {
            let op = tape.node(f.node).expect("recorded").op().name();
            assert_eq!(f.op, op, "{}", case.name);
            let allowed: &[&str] = match f.kind {
                FindingKind::UnguardedDivision => &["div"],
                FindingKind::LnNotPositive => &["ln"],
                FindingKind::SqrtNotPositive => &["sqrt"],
                FindingKind::SafeDivNegative => &["safe_div"],
                FindingKind::SafeGuardNegative => &["safe_ln", "safe_sqrt"],
                FindingKind::DivideThenMask => &["div", "ln", "sqrt"],
            };
            assert!(allowed.contains(&op), "{}: {:?} on {op}", case.name, f.kind);
            let masker = f
                .masked_by
                .map(|m| tape.node(m).expect("recorded").op().name());
            match f.kind {
                FindingKind::DivideThenMask => {
                    assert!(
                        matches!(masker, Some("select" | "mask" | "mul")),
                        "{}: masked by {masker:?}",
                        case.name
                    );
                    assert!(f.masked_by.is_some_and(|m| m > f.node), "{}", case.name);
                }
                _ => assert_eq!(f.masked_by, None, "{}", case.name),
            }
        }
    }
}

#[test]
fn unsafe_corpus_values_contain_the_problem() {
    for case in corpus().iter().filter(|c| !c.safe) {
        let tape = build(case);
        let report = audit_case(case, &tape);
        let witnessed = report.findings().iter().any(|f| {
            let node = tape.node(f.node).expect("recorded");
            let operand = questioned_operand(node.op()).expect("a guarded or raw op");
            let operand = tape.node(operand).expect("recorded");
            out_of_domain(node.op(), tape.values_of(operand))
        });
        assert!(
            witnessed,
            "{}: no flagged operand is out of its domain in the recorded values",
            case.name
        );
    }
}

#[test]
fn corpus_nan_provenance_points_at_a_flagged_node_and_safe_members_stay_finite() {
    for case in corpus() {
        let tape = build(&case);
        let report = audit_case(&case, &tape);
        if case.safe {
            let all_finite = tape
                .nodes()
                .iter()
                .all(|n| tape.values_of(n).iter().all(|v| v.is_finite()));
            assert!(all_finite, "{}: the fix must run finite", case.name);
            continue;
        }
        let provenance = first_non_finite(&*tape, output(&tape));
        let gradient_only = case
            .expected
            .iter()
            .all(|&k| k == FindingKind::SqrtNotPositive);
        if gradient_only {
            // sqrt(0) = 0: the forward is finite, the derivative 1 / (2 sqrt(0)) is not.
            assert_eq!(provenance, None, "{}", case.name);
            continue;
        }
        let p = provenance.unwrap_or_else(|| panic!("{}: forward is finite", case.name));
        if case.name == "naive_log_softmax_unsafe" {
            // exp(100) overflows f32 before the flagged ln: an overflow is outside the
            // audit's real-arithmetic domains, the run-time check is what sees it.
            assert_eq!((p.op, p.index, p.value), ("exp", 0, f32::INFINITY));
            assert_eq!(p.inputs, [Some(100.0), None, None]);
            continue;
        }
        assert!(
            report.findings().iter().any(|f| f.node == p.node),
            "{}: the first non-finite value is at {} ({}), not at a flagged node",
            case.name,
            p.node,
            p.op
        );
    }
}

#[test]
fn corpus_pytorch_pair_divides_by_the_zero_it_masks() {
    let cases = corpus();
    let unsafe_case = cases
        .iter()
        .find(|c| c.name == "pytorch_div_then_where_unsafe")
        .expect("present");
    let tape = build(unsafe_case);
    let report = audit_case(unsafe_case, &tape);
    // x = #0, div = #1, x / div = #2, not_zero = #3, zeros = #4, select = #5.
    let f = report.findings()[0];
    assert_eq!((f.node, f.op), (NodeId(2), "div"));
    assert_eq!(f.masked_by, Some(NodeId(5)));
    assert_eq!(f.severity, Severity::Error);
    let q = tape.node(NodeId(2)).expect("recorded");
    assert_eq!(tape.values_of(q), [f32::INFINITY, 1.0]);
    let out = tape.node(NodeId(5)).expect("recorded");
    assert_eq!(tape.values_of(out), [0.0, 1.0]);
}

// -- 2. the rules ----------------------------------------------------------------------------

#[test]
fn exp_is_positive_so_ln_of_exp_is_clean() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([-3.0, 0.0, 2.0]))?;
    let e = t.exp(x)?;
    t.ln(e)?;
    assert!(check(&t).is_clean(), "{}", check(&t));
    // Unknown input: positive, but not proven finite.
    let expected = Domain {
        finite: false,
        non_negative: true,
        non_zero: true,
    };
    assert_eq!(domains(&t)[e.node().0], expected);

    let mut t = Small::new();
    let x = t.input_in(&row([-3.0, 0.0, 2.0]), Domain::FINITE)?;
    let e = t.exp(x)?;
    t.ln(e)?;
    assert_eq!(domains(&t)[e.node().0], Domain::POSITIVE);
    assert!(check(&t).is_clean());

    // Without the exp, the same ln is flagged.
    let mut t = Small::new();
    let x = t.input(&row([-3.0, 0.0, 2.0]))?;
    let l = t.ln(x)?;
    let report = check(&t);
    assert_eq!(kinds(&report), [FindingKind::LnNotPositive]);
    assert_eq!(report.findings()[0].node, l.node());
    Ok(())
}

#[test]
fn a_square_is_non_negative_so_sqrt_of_it_is_only_a_warning() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input_in(&row([-2.0, 0.0, 3.0]), Domain::FINITE)?;
    let sq = t.mul(x, x)?;
    let r = t.sqrt(sq)?;
    assert_eq!(domains(&t)[sq.node().0], Domain::NON_NEGATIVE);
    let report = check(&t);
    assert_eq!(report.findings().len(), 1);
    let f = report.findings()[0];
    assert_eq!(f.kind, FindingKind::SqrtNotPositive);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!((f.node, f.op), (r.node(), "sqrt"));
    assert_eq!(f.operand, Domain::NON_NEGATIVE);
    assert_eq!(f.masked_by, None);
    assert!(report.first_error().is_none());

    // The guarded root of the same square: clean.
    let mut t = Small::new();
    let x = t.input_in(&row([-2.0, 0.0, 3.0]), Domain::FINITE)?;
    let sq = t.mul(x, x)?;
    t.safe_sqrt(sq)?;
    assert!(check(&t).is_clean());

    // An unknown input's square may be infinite or nan: the raw root is an error.
    let mut t = Small::new();
    let x = t.input(&row([-2.0, 0.0, 3.0]))?;
    let sq = t.mul(x, x)?;
    t.sqrt(sq)?;
    let report = check(&t);
    assert_eq!(kinds(&report), [FindingKind::SqrtNotPositive]);
    assert_eq!(report.findings()[0].severity, Severity::Error);

    // x * y of two nodes with equal values is not a square.
    let mut t = Small::new();
    let x = t.input_in(&row([-2.0, 3.0]), Domain::FINITE)?;
    let y = t.input_in(&row([-2.0, 3.0]), Domain::FINITE)?;
    let xy = t.mul(x, y)?;
    t.safe_sqrt(xy)?;
    assert_eq!(kinds(&check(&t)), [FindingKind::SafeGuardNegative]);
    Ok(())
}

#[test]
fn adding_a_positive_constant_to_a_non_negative_value_makes_it_positive() -> Result<(), TapeError> {
    // ln(2 x^2 + 1): clean.
    let mut t = Small::new();
    let x = t.input(&row([-1.0, 0.0, 4.0]))?;
    let sq = t.mul(x, x)?;
    let scaled = t.scale(sq, 2.0)?;
    let one = t.constant(&row([1.0, 1.0, 1.0]))?;
    let arg = t.add(scaled, one)?;
    t.ln(arg)?;
    assert!(check(&t).is_clean(), "{}", check(&t));
    let d = domains(&t)[arg.node().0];
    assert!(d.non_negative && d.non_zero);

    // Variants that lose it: no eps, a zero eps, a negative scale, an unknown base.
    fn flagged(f: impl Fn(&mut Small) -> Result<(), TapeError>) -> Vec<FindingKind> {
        let mut t = Small::new();
        f(&mut t).expect("records");
        kinds(&check(&t))
    }
    let ln_of_square = flagged(|t| {
        let x = t.input(&row([-1.0, 0.0, 4.0]))?;
        let sq = t.mul(x, x)?;
        t.ln(sq)?;
        Ok(())
    });
    let zero_eps = flagged(|t| {
        let x = t.input(&row([-1.0, 0.0, 4.0]))?;
        let sq = t.mul(x, x)?;
        let zero = t.constant(&row([0.0, 0.0, 0.0]))?;
        let arg = t.add(sq, zero)?;
        t.ln(arg)?;
        Ok(())
    });
    let negative_scale = flagged(|t| {
        let x = t.input(&row([-1.0, 0.0, 4.0]))?;
        let sq = t.mul(x, x)?;
        let scaled = t.scale(sq, -2.0)?;
        let one = t.constant(&row([1.0, 1.0, 1.0]))?;
        let arg = t.add(scaled, one)?;
        t.ln(arg)?;
        Ok(())
    });
    let unknown_base = flagged(|t| {
        let x = t.input(&row([-1.0, 0.0, 4.0]))?;
        let one = t.constant(&row([1.0, 1.0, 1.0]))?;
        let arg = t.add(x, one)?;
        t.ln(arg)?;
        Ok(())
    });
    for got in [ln_of_square, zero_eps, negative_scale, unknown_base] {
        assert_eq!(got, [FindingKind::LnNotPositive]);
    }
    Ok(())
}

#[test]
fn a_select_keeps_only_what_both_branches_have() -> Result<(), TapeError> {
    let mut t = Small::new();
    let c = t.input(&row([1.0, 0.0]))?;
    let x = t.input_in(&row([0.5, -7.0]), Domain::FINITE)?;
    let e = t.exp(x)?;
    let ones = t.constant(&row([1.0, 1.0]))?;
    let zeros = t.constant(&row([0.0, 0.0]))?;
    let positive = t.select(c, e, ones)?;
    let non_negative = t.select(c, e, zeros)?;
    let finite_only = t.select(c, x, ones)?;
    t.ln(positive)?;
    let flagged = t.ln(non_negative)?;
    let d = domains(&t);
    assert_eq!(d[positive.node().0], Domain::POSITIVE);
    assert_eq!(d[non_negative.node().0], Domain::NON_NEGATIVE);
    assert_eq!(d[finite_only.node().0], Domain::FINITE);
    let report = check(&t);
    assert_eq!(kinds(&report), [FindingKind::LnNotPositive]);
    assert_eq!(report.findings()[0].node, flagged.node());
    assert_eq!(report.findings()[0].operand, Domain::NON_NEGATIVE);
    Ok(())
}

#[test]
fn declared_inputs_decide_the_guards() -> Result<(), TapeError> {
    // safe_div on a declared non-negative denominator: clean.
    let mut t = Small::new();
    let num = t.input(&row([1.0, 2.0]))?;
    let den = t.input_in(&row([0.0, 3.0]), Domain::NON_NEGATIVE)?;
    t.safe_div(num, den)?;
    assert!(check(&t).is_clean());

    // The same on an unknown denominator: it may be -eps.
    let mut t = Small::new();
    let num = t.input(&row([1.0, 2.0]))?;
    let den = t.input(&row([0.0, 3.0]))?;
    let q = t.safe_div(num, den)?;
    let report = check(&t);
    assert_eq!(kinds(&report), [FindingKind::SafeDivNegative]);
    let f = report.findings()[0];
    assert_eq!(
        (f.node, f.op, f.severity),
        (q.node(), "safe_div", Severity::Error)
    );
    assert_eq!(f.operand, Domain::UNKNOWN);

    // safe_div_signed takes any sign.
    let mut t = Small::new();
    let num = t.input(&row([1.0, 2.0]))?;
    let den = t.input(&row([-1e-6, 3.0]))?;
    t.safe_div_signed(num, den)?;
    assert!(check(&t).is_clean());

    // A raw division needs non-zero: positive is enough, non-negative is not.
    let mut t = Small::new();
    let num = t.input(&row([1.0, 2.0]))?;
    let den = t.input_in(&row([0.5, 3.0]), Domain::POSITIVE)?;
    t.div(num, den)?;
    assert!(check(&t).is_clean());
    let mut t = Small::new();
    let num = t.input(&row([1.0, 2.0]))?;
    let den = t.input_in(&row([0.0, 3.0]), Domain::NON_NEGATIVE)?;
    t.div(num, den)?;
    assert_eq!(kinds(&check(&t)), [FindingKind::UnguardedDivision]);
    Ok(())
}

#[test]
fn masking_afterwards_is_recognised_through_select_mask_and_a_constant_mask(
) -> Result<(), TapeError> {
    // select(keep, 2 * (x / d), 0): the scale does not hide the division.
    let mut t = Small::new();
    let x = t.input(&row([1.0, 1.0]))?;
    let d = t.input(&row([0.0, 1.0]))?;
    let q = t.div(x, d)?;
    let q2 = t.scale(q, 2.0)?;
    let keep = t.not_zero(d)?;
    let zero = t.constant(&row([0.0, 0.0]))?;
    let s = t.select(keep, q2, zero)?;
    let report = check(&t);
    assert_eq!(kinds(&report), [FindingKind::DivideThenMask]);
    assert_eq!(report.findings()[0].node, q.node());
    assert_eq!(report.findings()[0].masked_by, Some(s.node()));

    // mask(w, ln(x)).
    let mut t = Small::new();
    let w = t.input(&row([0.0, 1.0]))?;
    let x = t.input(&row([0.0, 1.0]))?;
    let l = t.ln(x)?;
    let m = t.mask(w, l)?;
    let report = check(&t);
    assert_eq!(kinds(&report), [FindingKind::DivideThenMask]);
    assert_eq!(report.findings()[0].masked_by, Some(m.node()));

    // A 0/1 constant times a raw sqrt.
    let mut t = Small::new();
    let x = t.input(&row([-1.0, 4.0]))?;
    let r = t.sqrt(x)?;
    let keep = t.constant(&row([0.0, 1.0]))?;
    let m = t.mul(r, keep)?;
    let report = check(&t);
    assert_eq!(kinds(&report), [FindingKind::DivideThenMask]);
    assert_eq!(report.findings()[0].masked_by, Some(m.node()));

    // Not masks: an all-ones constant, a data input.
    let mut t = Small::new();
    let x = t.input(&row([1.0, 1.0]))?;
    let d = t.input(&row([0.0, 1.0]))?;
    let q = t.div(x, d)?;
    let ones = t.constant(&row([1.0, 1.0]))?;
    t.mul(ones, q)?;
    let data_mask = t.input_in(&row([0.0, 1.0]), Domain::NON_NEGATIVE)?;
    t.mul(data_mask, q)?;
    let report = check(&t);
    assert_eq!(kinds(&report), [FindingKind::UnguardedDivision]);
    assert_eq!(report.findings()[0].masked_by, None);

    // The documented fix: masked_div, clean.
    let mut t = Small::new();
    let x = t.input(&row([1.0, 1.0]))?;
    let d = t.input(&row([0.0, 1.0]))?;
    let keep = t.not_zero(d)?;
    t.masked_div(x, d, keep)?;
    assert!(check(&t).is_clean());
    Ok(())
}

#[test]
fn too_many_findings_is_a_capacity_error() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([1.0, -1.0]))?;
    let d = t.input(&row([0.0, 2.0]))?;
    t.div(x, d)?;
    t.ln(x)?;
    t.sqrt(x)?;
    let err = audit::<_, _, 2>(&t).expect_err("3 findings do not fit in 2");
    assert_eq!(
        err,
        AuditError::FindingCapacity {
            capacity: 2,
            found: 3
        }
    );
    assert_eq!(err.to_string(), "3 findings, the report holds F = 2");
    let report = audit::<_, _, 3>(&t).expect("fits");
    assert_eq!(
        kinds(&report),
        [
            FindingKind::UnguardedDivision,
            FindingKind::LnNotPositive,
            FindingKind::SqrtNotPositive
        ]
    );
    assert!(audit::<_, _, 0>(&Small::new()).is_ok());
    Ok(())
}

#[test]
fn a_finding_reads_with_its_node_op_and_fix() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([1.0, 1.0]))?; // #0
    let d = t.input_in(&row([0.0, 1.0]), Domain::NON_NEGATIVE)?; // #1
    t.div(x, d)?; // #2
    let report = check(&t);
    assert_eq!(
        report.findings()[0].to_string(),
        "error: node #2 (div): the denominator is not proven non-zero (proven: non-negative); \
         fix: use safe_div_signed, or masked_div if a mask excludes the zero denominators"
    );
    assert_eq!(report.to_string(), report.findings()[0].to_string());

    let mut t = Small::new();
    let x = t.input(&row([0.0, 2.0]))?; // #0
    let keep = t.not_zero(x)?; // #1
    let l = t.ln(x)?; // #2
    let zero = t.constant(&row([0.0, 0.0]))?; // #3
    t.select(keep, l, zero)?; // #4
    let text = check(&t).findings()[0].to_string();
    assert!(text.starts_with("error: node #2 (ln): "), "{text}");
    assert!(
        text.contains("masked afterwards by node #4 (proven: unknown)"),
        "{text}"
    );
    assert!(text.contains("masked_div"), "{text}");
    assert!(text.contains("safe_ln"), "{text}");

    let mut t = Small::new();
    let x = t.input_in(&row([1.0, 4.0]), Domain::NON_NEGATIVE)?; // #0
    t.sqrt(x)?; // #1
    let text = check(&t).findings()[0].to_string();
    assert!(text.starts_with("warning: node #1 (sqrt): "), "{text}");
    assert!(text.contains("safe_sqrt"), "{text}");

    let mut t = Small::new();
    let x = t.input(&row([1.0, 4.0]))?;
    t.exp(x)?;
    assert_eq!(
        check(&t).to_string(),
        "clean: every guarded domain is proven"
    );
    Ok(())
}

// -- conditions and masks the audit must read: double where, replaced zeros, masked_div -----

#[test]
fn double_where_on_a_non_negative_value_is_proven() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input_in(&row([0.0, 2.0]), Domain::NON_NEGATIVE)?;
    let keep = t.not_zero(x)?;
    let ones = t.constant(&row([1.0, 1.0]))?;
    let safe_x = t.select(keep, x, ones)?;
    let l = t.ln(safe_x)?;
    let zero = t.constant(&row([0.0, 0.0]))?;
    t.select(keep, l, zero)?;
    assert!(check(&t).is_clean(), "{}", check(&t));
    Ok(())
}

#[test]
fn a_denominator_replaced_where_zero_is_proven_non_zero() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([0.0, 3.0]))?;
    let std = t.input_in(&row([0.0, 2.0]), Domain::NON_NEGATIVE)?;
    let nonzero = t.not_zero(std)?;
    let ones = t.constant(&row([1.0, 1.0]))?;
    let scale = t.select(nonzero, std, ones)?;
    t.div(x, scale)?;
    assert!(check(&t).is_clean(), "{}", check(&t));
    Ok(())
}

#[test]
fn masked_div_with_a_mask_unrelated_to_the_denominator_is_flagged() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input_in(&row([1.0, 1.0]), Domain::FINITE)?;
    let den = t.input(&row([0.0, 1.0]))?;
    let everything = t.constant(&row([1.0, 1.0]))?;
    let q = t.masked_div(x, den, everything)?;
    // The forward does divide by zero ...
    let p = first_non_finite(&t, q.node()).expect("1 / 0");
    assert_eq!((p.node, p.op, p.index), (q.node(), "masked_div", 0));
    // ... and the audit should say so.
    assert!(!check(&t).is_clean());
    Ok(())
}

#[test]
fn safe_sqrt_of_a_non_negative_value_is_proven_non_zero() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([0.0, 3.0]))?;
    let sq = t.mul(x, x)?;
    let norm = t.safe_sqrt(sq)?;
    t.div(x, norm)?;
    assert!(check(&t).is_clean(), "{}", check(&t));
    Ok(())
}

// -- 3. NaN provenance -----------------------------------------------------------------------

#[test]
fn provenance_of_zero_over_zero_is_the_div() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([1.0, 0.0]))?; // #0
    let y = t.input(&row([2.0, 0.0]))?; // #1
    let q = t.div(x, y)?; // #2: [0.5, nan]
    let e = t.exp(q)?;
    let s = t.sum(e)?;
    let p: Provenance<f32> = first_non_finite(&t, s.node()).expect("0 / 0");
    assert_eq!((p.node, p.op, p.index), (NodeId(2), "div", 1));
    assert_eq!(p.node, q.node());
    assert!(p.value.is_nan());
    assert_eq!(p.inputs, [Some(0.0), Some(0.0), None]);
    assert_eq!(
        p.to_string(),
        "node #2 (div) produced NaN at position 1 from finite inputs: operands 0, 0"
    );
    Ok(())
}

#[test]
fn provenance_of_ln_of_a_negative_is_the_ln() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([4.0, -2.0, 1.0]))?; // #0
    let l = t.ln(x)?; // #1
    let out = t.scale(l, 2.0)?;
    let p = first_non_finite(&t, out.node()).expect("ln(-2)");
    assert_eq!((p.node, p.op, p.index), (NodeId(1), "ln", 1));
    assert_eq!(p.node, l.node());
    assert!(p.value.is_nan());
    assert_eq!(p.inputs, [Some(-2.0), None, None]);
    Ok(())
}

#[test]
fn provenance_of_exp_overflow_is_the_exp_not_the_mul_after_it() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([1.0, 100.0]))?; // #0
    let e = t.exp(x)?; // #1: e^100 > f32::MAX
    let zero = t.constant(&row([0.0, 0.0]))?; // #2
    let m = t.mul(e, zero)?; // #3: 0 * inf = nan
    assert!(t.value(m)?.as_slice()[1].is_nan());
    let p = first_non_finite(&t, m.node()).expect("exp(100) in f32");
    assert_eq!((p.node, p.op, p.index), (NodeId(1), "exp", 1));
    assert_eq!(p.value, f32::INFINITY);
    assert_eq!(p.inputs, [Some(100.0), None, None]);
    Ok(())
}

#[test]
fn provenance_of_an_overflowing_product_is_the_mul() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([50.0, 1.0]))?; // #0
    let e = t.exp(x)?; // #1: e^50 ~ 5.2e21, finite
    let m = t.mul(e, e)?; // #2: ~ 2.7e43 > f32::MAX
    let p = first_non_finite(&t, m.node()).expect("overflow");
    assert_eq!((p.node, p.op, p.index), (NodeId(2), "mul", 0));
    assert_eq!(p.value, f32::INFINITY);
    let e50 = 50.0f32.exp();
    assert!(e50.is_finite() && e50 > 5.0e21 && e50 < 5.3e21);
    assert_eq!(p.inputs, [Some(e50), Some(e50), None]);
    Ok(())
}

#[test]
fn provenance_of_a_nan_sample_is_the_input_itself() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([1.0, f32::NAN, 3.0]))?; // #0
    let y = t.scale(x, 2.0)?;
    let out = t.ln(y)?;
    let p = first_non_finite(&t, out.node()).expect("nan sample");
    assert_eq!((p.node, p.op, p.index), (NodeId(0), "input", 1));
    assert!(p.value.is_nan());
    assert_eq!(p.inputs, [None, None, None]);
    Ok(())
}

#[test]
fn provenance_of_a_reduction_has_no_lane_operands() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([3.0e38, 3.0e38]))?; // #0
    let s = t.sum(x)?; // #1: 6e38 > f32::MAX
    let p = first_non_finite(&t, s.node()).expect("overflowing sum");
    assert_eq!((p.node, p.op, p.index), (NodeId(1), "sum", 0));
    assert_eq!(p.value, f32::INFINITY);
    assert_eq!(p.inputs, [None, None, None]);
    Ok(())
}

#[test]
fn provenance_of_a_finite_graph_is_none() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([0.0, -2.0, 5.0]))?;
    let d = t.input(&row([0.0, 4.0, -1e-6]))?;
    let sq = t.mul(x, x)?;
    let l = t.safe_ln(sq)?;
    let r = t.safe_sqrt(sq)?;
    let q = t.safe_div_signed(x, d)?;
    let keep = t.not_zero(d)?;
    let m = t.masked_div(x, d, keep)?;
    let s = t.add(l, r)?;
    let s = t.add(s, q)?;
    let s = t.add(s, m)?;
    let total = t.sum(s)?;
    assert_eq!(first_non_finite(&t, total.node()), None);
    assert!(check(&t).is_clean());
    Ok(())
}

#[test]
fn provenance_only_follows_what_the_output_depends_on() -> Result<(), TapeError> {
    let mut t = Small::new();
    let x = t.input(&row([-1.0, 2.0]))?; // #0
    let unused = t.ln(x)?; // #1: nan in lane 0, not used by the output
    let e = t.exp(x)?; // #2
    let out = t.sum(e)?; // #3
    assert_eq!(first_non_finite(&t, out.node()), None);
    let p = first_non_finite(&t, unused.node()).expect("ln(-1)");
    assert_eq!((p.node, p.op, p.index), (NodeId(1), "ln", 0));
    assert_eq!(p.inputs, [Some(-1.0), None, None]);
    Ok(())
}
