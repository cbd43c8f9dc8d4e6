//! The audit corpus: small graphs drawn from commonly reported `nan` and `inf` problems, each
//! as a pair of an unsafe member (the code as it was reported) and a safe member (the
//! documented or usual fix), with the findings the domain audit
//! ([`safegrad::audit::audit`]) must report for each.
//!
//! Every graph records realistic small values, so it also runs forward: the unsafe members
//! contain the zero denominator, the zero under a logarithm or square root, or the overflow
//! they are about, and the safe members stay finite on the same values. Data is recorded with
//! [`Tape::input`](safegrad::Tape::input) (unknown domain) unless the quantity is known to be
//! non-negative (counts, masks, probabilities, areas, variances: `input_in` with
//! [`Domain::NON_NEGATIVE`]); what a model predicts and the loss is differentiated for is a
//! [`variable`](safegrad::Tape::variable).
//!
//! The pairs (each as `<pair>_unsafe` and `<pair>_safe`), with what the unsafe member is
//! flagged for:
//!
//! | pair | the problem | unsafe member's findings |
//! | --- | --- | --- |
//! | `pytorch_div_then_where` | `where(div != 0, x / div, 0)` | divide then mask |
//! | `jax_where_log` | `where(x > 0, log(x), 0)` | divide then mask |
//! | `masked_mean_empty` | `sum(mask * x) / sum(mask)`, empty mask | unguarded division |
//! | `normalise_constant_vector` | `(x - mean) / std`, std = 0 | sqrt, division |
//! | `cosine_similarity_zero_vector` | `a.b / (‖a‖ ‖b‖)`, `a = 0` | sqrt, sqrt, division |
//! | `distance_identical_points` | `sqrt(sum((x - y)²))`, `x = y` | sqrt |
//! | `naive_log_softmax` | `ln(exp(z) / sum(exp(z)))`, large logits | ln |
//! | `naive_cross_entropy` | `-sum(onehot * ln(softmax(z)))` | divide then mask |
//! | `log_of_softmax_probability` | `-sum(y * ln(p))`, `p` underflows to 0 | ln |
//! | `bce_on_sigmoid` | `y ln p + (1 - y) ln(1 - p)`, saturated sigmoid | ln, ln |
//! | `focal_loss_log_p` | `-(1 - p)² ln p` | ln |
//! | `precision_ratio_of_sums` | `sum(y ŷ) / sum(ŷ)`, no positive predictions | division |
//! | `standardise_zero_std` | `(x - mean) / std` per feature, a constant feature | division |
//! | `torchlean_mask_after_div` | `mask * (num / den)` | divide then mask |
//! | `safe_div_negative_denominator` | `safe_div` on a signed denominator | safe_div negative |
//! | `relative_error_zero_target` | `abs(a - b) / abs(b)`, `b = 0` | division |
//! | `iou_empty_boxes` | `inter / union` of two empty boxes | division |
//! | `uncertainty_weighting` | `L / (2σ²) + ln σ²`, learned σ at 0 | division, ln |
//! | `gaussian_nll_sample_variance` | Gaussian NLL with the variance of identical samples | ln, division |
//! | `geometric_mean_zero` | `exp(mean(ln x))` with a zero | ln |
//! | `f1_harmonic_mean` | `2PR / (P + R)`, `P = R = 0` | division |
//! | `entropy_zero_probability` | `-sum(p ln p)`, a zero probability | ln |
//! | `kl_divergence_zero_bins` | `sum(p ln(p / q))`, zero bins | division, ln |
//! | `histogram_normalise_empty` | `h / sum(h)`, empty histogram | division |
//! | `grad_norm_clipping_zero` | `max_norm / ‖g‖`, `g = 0` | sqrt, division |
//! | `wgan_gp_zero_gradient` | `(‖∇D‖ - 1)²`, `∇D = 0` | sqrt |
//!
//! The tape has no broadcast op: a `1 x 1` value is spread over a row with a `mul_row` by a
//! constant column of ones and a transpose, which keeps the value's domain.

use safegrad::audit::FindingKind::{
    self, DivideThenMask, LnNotPositive, SafeDivNegative, SqrtNotPositive, UnguardedDivision,
};
use safegrad::{Cap, Domain, Tape, TapeError, Tensor, Var};

/// The tape every corpus graph is recorded on: 64 nodes, 512 scalars.
pub type CorpusTape = Tape<f32, Cap<64, 512>>;

/// One graph of the corpus.
#[derive(Clone, Copy, Debug)]
pub struct CorpusCase {
    /// Stable identifier: the pair's name followed by `_unsafe` or `_safe`.
    pub name: &'static str,
    /// The pair's name, shared by its two members.
    pub pair: &'static str,
    /// `true` for the fixed member.
    pub safe: bool,
    /// Where the problem (and its fix) is reported, in words.
    pub source: &'static str,
    /// The kinds the audit must report, one per finding, in recording order (empty for the
    /// safe member).
    pub expected: &'static [FindingKind],
    /// Records the graph on a fresh tape.
    pub build: fn(&mut CorpusTape) -> Result<(), TapeError>,
}

type Built = Result<(), TapeError>;

fn row<const C: usize>(values: [f32; C]) -> Tensor<f32, 1, C> {
    Tensor::new([values])
}

fn scalar(t: &mut CorpusTape, value: f32) -> Result<Var<1, 1>, TapeError> {
    t.constant(&Tensor::new([[value]]))
}

/// `s` spread over a `1 x C` row: `transpose(ones(C x 1) * s)`, keeping the domain of `s`.
fn broadcast<const C: usize>(t: &mut CorpusTape, s: Var<1, 1>) -> Result<Var<1, C>, TapeError> {
    let ones = t.constant(&Tensor::<f32, C, 1>::full(1.0))?;
    let column = t.mul_row(ones, s)?;
    t.transpose(column)
}

/// `|x| = relu(x) + relu(-x)`.
fn abs<const R: usize, const C: usize>(
    t: &mut CorpusTape,
    x: Var<R, C>,
) -> Result<Var<R, C>, TapeError> {
    let pos = t.relu(x)?;
    let minus = t.neg(x)?;
    let neg = t.relu(minus)?;
    t.add(pos, neg)
}

/// `x - mean(x)` over a row.
fn centred<const C: usize>(t: &mut CorpusTape, x: Var<1, C>) -> Result<Var<1, C>, TapeError> {
    let mu = t.mean(x)?;
    let mu_row = broadcast::<C>(t, mu)?;
    t.sub(x, mu_row)
}

/// `exp(z) / sum(exp(z))`, the softmax written out.
fn naive_softmax<const C: usize>(t: &mut CorpusTape, z: Var<1, C>) -> Result<Var<1, C>, TapeError> {
    let e = t.exp(z)?;
    let total = t.sum(e)?;
    let total_row = broadcast::<C>(t, total)?;
    t.div(e, total_row)
}

/// `softplus(-z) = -ln(sigmoid(z))` in the stable form `relu(-z) + ln(1 + exp(-|z|))`.
fn neg_log_sigmoid<const C: usize>(
    t: &mut CorpusTape,
    z: Var<1, C>,
) -> Result<Var<1, C>, TapeError> {
    let minus = t.neg(z)?;
    let hinge = t.relu(minus)?;
    let log1p_exp = log1p_exp_neg_abs(t, z)?;
    t.add(hinge, log1p_exp)
}

/// `ln(1 + exp(-|z|))`: the argument is at least 1.
fn log1p_exp_neg_abs<const C: usize>(
    t: &mut CorpusTape,
    z: Var<1, C>,
) -> Result<Var<1, C>, TapeError> {
    let a = abs(t, z)?;
    let minus_a = t.neg(a)?;
    let e = t.exp(minus_a)?;
    let one = t.constant(&Tensor::<f32, 1, C>::full(1.0))?;
    let arg = t.add(one, e)?;
    t.ln(arg)
}

// -- PyTorch: divide, then where -------------------------------------------------------------

fn pytorch_div_then_where_unsafe(t: &mut CorpusTape) -> Built {
    let x = t.variable(&row([1.0, 1.0]))?;
    let div = t.input(&row([0.0, 1.0]))?;
    let y = t.div(x, div)?;
    let keep = t.not_zero(div)?;
    let zero = t.constant(&Tensor::zeros())?;
    let out = t.select(keep, y, zero)?;
    t.sum(out)?;
    Ok(())
}

fn pytorch_div_then_where_safe(t: &mut CorpusTape) -> Built {
    let x = t.variable(&row([1.0, 1.0]))?;
    let div = t.input(&row([0.0, 1.0]))?;
    let keep = t.not_zero(div)?;
    let out = t.masked_div(x, div, keep)?;
    t.sum(out)?;
    Ok(())
}

// -- JAX: where(x > 0, log(x), 0) ------------------------------------------------------------

/// `relu(x)` is `x` where `x > 0` and `0` elsewhere, so `not_zero(relu(x))` is `x > 0`.
fn jax_where_log(t: &mut CorpusTape, guarded: bool) -> Built {
    let x = t.variable(&row([-1.0, 0.0, 2.0]))?;
    let pos = t.relu(x)?;
    let keep = t.not_zero(pos)?;
    let log = if guarded { t.safe_ln(pos)? } else { t.ln(pos)? };
    let zero = t.constant(&Tensor::zeros())?;
    let out = t.select(keep, log, zero)?;
    t.sum(out)?;
    Ok(())
}

fn jax_where_log_unsafe(t: &mut CorpusTape) -> Built {
    jax_where_log(t, false)
}

fn jax_where_log_safe(t: &mut CorpusTape) -> Built {
    jax_where_log(t, true)
}

// -- masked mean over an empty mask ----------------------------------------------------------

fn masked_mean_parts(t: &mut CorpusTape) -> Result<(Var<1, 1>, Var<1, 1>), TapeError> {
    let h = t.variable(&row([0.5, -1.0, 2.0, 3.0]))?;
    let mask = t.input_in(&row([0.0, 0.0, 0.0, 0.0]), Domain::NON_NEGATIVE)?;
    let kept = t.mul(mask, h)?;
    let total = t.sum(kept)?;
    let count = t.sum(mask)?;
    Ok((total, count))
}

fn masked_mean_empty_unsafe(t: &mut CorpusTape) -> Built {
    let (total, count) = masked_mean_parts(t)?;
    t.div(total, count)?;
    Ok(())
}

fn masked_mean_empty_safe(t: &mut CorpusTape) -> Built {
    let (total, count) = masked_mean_parts(t)?;
    let any = t.not_zero(count)?;
    t.masked_div(total, count, any)?;
    Ok(())
}

// -- normalisation of a constant vector ------------------------------------------------------

fn normalise_constant_vector(t: &mut CorpusTape, guarded: bool) -> Built {
    let x = t.variable(&row([3.0, 3.0, 3.0, 3.0]))?;
    let d = centred(t, x)?;
    let sq = t.mul(d, d)?;
    let var = t.mean(sq)?;
    let var = if guarded {
        let eps = scalar(t, 1e-5)?;
        t.add(var, eps)?
    } else {
        var
    };
    let std = t.sqrt(var)?;
    let std_row = broadcast::<4>(t, std)?;
    let z = t.div(d, std_row)?;
    t.sum(z)?;
    Ok(())
}

fn normalise_constant_vector_unsafe(t: &mut CorpusTape) -> Built {
    normalise_constant_vector(t, false)
}

fn normalise_constant_vector_safe(t: &mut CorpusTape) -> Built {
    normalise_constant_vector(t, true)
}

// -- cosine similarity with a zero vector ----------------------------------------------------

type CosineParts = (Var<1, 1>, Var<1, 1>, Var<1, 1>);

fn cosine_parts(t: &mut CorpusTape) -> Result<CosineParts, TapeError> {
    let a = t.variable(&row([0.0, 0.0, 0.0]))?;
    let b = t.input(&row([1.0, 2.0, 2.0]))?;
    let ab = t.mul(a, b)?;
    let dot = t.sum(ab)?;
    let aa = t.mul(a, a)?;
    let w1 = t.sum(aa)?;
    let bb = t.mul(b, b)?;
    let w2 = t.sum(bb)?;
    Ok((dot, w1, w2))
}

fn cosine_similarity_zero_vector_unsafe(t: &mut CorpusTape) -> Built {
    let (dot, w1, w2) = cosine_parts(t)?;
    let n1 = t.sqrt(w1)?;
    let n2 = t.sqrt(w2)?;
    let den = t.mul(n1, n2)?;
    t.div(dot, den)?;
    Ok(())
}

fn cosine_similarity_zero_vector_safe(t: &mut CorpusTape) -> Built {
    let (dot, w1, w2) = cosine_parts(t)?;
    let w12 = t.mul(w1, w2)?;
    let eps2 = scalar(t, 1e-16)?; // eps = 1e-8, squared
    let clamped = t.add(w12, eps2)?;
    let den = t.sqrt(clamped)?;
    t.div(dot, den)?;
    Ok(())
}

// -- the distance of identical points --------------------------------------------------------

fn squared_distance(t: &mut CorpusTape) -> Result<Var<1, 1>, TapeError> {
    let x = t.variable(&row([1.0, 2.0]))?;
    let y = t.input(&row([1.0, 2.0]))?;
    let d = t.sub(x, y)?;
    let sq = t.mul(d, d)?;
    t.sum(sq)
}

fn distance_identical_points_unsafe(t: &mut CorpusTape) -> Built {
    let s = squared_distance(t)?;
    t.sqrt(s)?;
    Ok(())
}

fn distance_identical_points_safe(t: &mut CorpusTape) -> Built {
    let s = squared_distance(t)?;
    t.safe_sqrt(s)?;
    Ok(())
}

// -- softmax written naively -----------------------------------------------------------------

fn naive_log_softmax_unsafe(t: &mut CorpusTape) -> Built {
    let z = t.variable(&row([100.0, 20.0, 0.0]))?;
    let p = naive_softmax(t, z)?;
    t.ln(p)?;
    Ok(())
}

fn naive_log_softmax_safe(t: &mut CorpusTape) -> Built {
    let z = t.variable(&row([100.0, 20.0, 0.0]))?;
    let lse = t.log_sum_exp(z)?;
    let minus = t.neg(lse)?;
    let minus_row = broadcast::<3>(t, minus)?;
    t.add(z, minus_row)?;
    Ok(())
}

fn naive_cross_entropy_unsafe(t: &mut CorpusTape) -> Built {
    let z = t.variable(&row([5.0, 0.0, -120.0]))?;
    let onehot = t.constant(&row([1.0, 0.0, 0.0]))?;
    let p = naive_softmax(t, z)?;
    let logp = t.ln(p)?;
    let picked = t.mul(onehot, logp)?;
    let total = t.sum(picked)?;
    t.neg(total)?;
    Ok(())
}

fn naive_cross_entropy_safe(t: &mut CorpusTape) -> Built {
    let z = t.variable(&row([5.0, 0.0, -120.0]))?;
    t.softmax_cross_entropy(z, &[0])?;
    Ok(())
}

fn log_of_softmax_probability(t: &mut CorpusTape, guarded: bool) -> Built {
    let z = t.variable(&row([3.0, 1.0, -150.0]))?;
    let y = t.input_in(&row([1.0, 0.0, 0.0]), Domain::NON_NEGATIVE)?;
    let p = naive_softmax(t, z)?;
    let logp = if guarded { t.safe_ln(p)? } else { t.ln(p)? };
    let weighted = t.mul(y, logp)?;
    let total = t.sum(weighted)?;
    t.neg(total)?;
    Ok(())
}

fn log_of_softmax_probability_unsafe(t: &mut CorpusTape) -> Built {
    log_of_softmax_probability(t, false)
}

fn log_of_softmax_probability_safe(t: &mut CorpusTape) -> Built {
    log_of_softmax_probability(t, true)
}

// -- binary cross-entropy and focal loss on a sigmoid ----------------------------------------

fn bce_on_sigmoid_unsafe(t: &mut CorpusTape) -> Built {
    let z = t.variable(&row([-120.0, 0.5, 30.0]))?;
    let y = t.input_in(&row([1.0, 0.0, 0.0]), Domain::NON_NEGATIVE)?;
    let p = t.sigmoid(z)?;
    let log_p = t.ln(p)?;
    let one = t.constant(&Tensor::full(1.0))?;
    let q = t.sub(one, p)?;
    let log_q = t.ln(q)?;
    let not_y = t.sub(one, y)?;
    let a = t.mul(y, log_p)?;
    let b = t.mul(not_y, log_q)?;
    let ll = t.add(a, b)?;
    let mean = t.mean(ll)?;
    t.neg(mean)?;
    Ok(())
}

/// `BCEWithLogitsLoss`: `relu(z) - z y + ln(1 + exp(-|z|))`.
fn bce_on_sigmoid_safe(t: &mut CorpusTape) -> Built {
    let z = t.variable(&row([-120.0, 0.5, 30.0]))?;
    let y = t.input_in(&row([1.0, 0.0, 0.0]), Domain::NON_NEGATIVE)?;
    let hinge = t.relu(z)?;
    let zy = t.mul(z, y)?;
    let linear = t.sub(hinge, zy)?;
    let log1p_exp = log1p_exp_neg_abs(t, z)?;
    let loss = t.add(linear, log1p_exp)?;
    t.mean(loss)?;
    Ok(())
}

fn focal_weight(t: &mut CorpusTape, z: Var<1, 2>) -> Result<Var<1, 2>, TapeError> {
    let p = t.sigmoid(z)?;
    let one = t.constant(&Tensor::full(1.0))?;
    let q = t.sub(one, p)?;
    t.mul(q, q)
}

fn focal_loss_log_p_unsafe(t: &mut CorpusTape) -> Built {
    let z = t.variable(&row([-120.0, 2.0]))?; // logits of two positives
    let w = focal_weight(t, z)?;
    let p = t.sigmoid(z)?;
    let log_p = t.ln(p)?;
    let terms = t.mul(w, log_p)?;
    let total = t.sum(terms)?;
    t.neg(total)?;
    Ok(())
}

fn focal_loss_log_p_safe(t: &mut CorpusTape) -> Built {
    let z = t.variable(&row([-120.0, 2.0]))?;
    let w = focal_weight(t, z)?;
    let ce = neg_log_sigmoid(t, z)?;
    let terms = t.mul(w, ce)?;
    t.sum(terms)?;
    Ok(())
}

// -- a ratio of sums: precision without positive predictions ---------------------------------

fn precision_parts(t: &mut CorpusTape) -> Result<(Var<1, 1>, Var<1, 1>), TapeError> {
    let y = t.input_in(&row([1.0, 0.0, 1.0, 1.0]), Domain::NON_NEGATIVE)?;
    let predicted = t.input_in(&row([0.0, 0.0, 0.0, 0.0]), Domain::NON_NEGATIVE)?;
    let hits = t.mul(y, predicted)?;
    let tp = t.sum(hits)?;
    let positives = t.sum(predicted)?;
    Ok((tp, positives))
}

fn precision_ratio_of_sums_unsafe(t: &mut CorpusTape) -> Built {
    let (tp, positives) = precision_parts(t)?;
    t.div(tp, positives)?;
    Ok(())
}

fn precision_ratio_of_sums_safe(t: &mut CorpusTape) -> Built {
    let (tp, positives) = precision_parts(t)?;
    let any = t.not_zero(positives)?;
    t.masked_div(tp, positives, any)?;
    Ok(())
}

// -- division by a standard deviation: a constant feature ------------------------------------

fn standardise_parts(t: &mut CorpusTape) -> Result<(Var<3, 2>, Var<3, 2>), TapeError> {
    let x = t.input(&Tensor::new([[1.0, 0.5], [1.0, -1.5], [1.0, 2.5]]))?;
    let mean = t.input(&row([1.0, 0.5]))?;
    let std = t.input_in(&row([0.0, 2.0]), Domain::NON_NEGATIVE)?;
    let minus_mean = t.neg(mean)?;
    let d = t.add_row(x, minus_mean)?;
    let ones = t.constant(&Tensor::full(1.0))?;
    let std_rows = t.mul_row(ones, std)?;
    Ok((d, std_rows))
}

fn standardise_zero_std_unsafe(t: &mut CorpusTape) -> Built {
    let (d, std) = standardise_parts(t)?;
    t.div(d, std)?;
    Ok(())
}

fn standardise_zero_std_safe(t: &mut CorpusTape) -> Built {
    let (d, std) = standardise_parts(t)?;
    let scaled = t.not_zero(std)?;
    t.masked_div(d, std, scaled)?;
    Ok(())
}

// -- TorchLean: mask after a (safe) division -------------------------------------------------

fn torchlean_mask_after_div(t: &mut CorpusTape, guarded: bool) -> Built {
    let mask = t.constant(&row([0.0, 1.0]))?;
    let num = t.variable(&row([1.0, 1.0]))?;
    let den = t.input_in(&row([0.0, 1.0]), Domain::NON_NEGATIVE)?;
    let q = if guarded {
        t.safe_div(num, den)?
    } else {
        t.div(num, den)?
    };
    let out = t.mul(mask, q)?;
    t.sum(out)?;
    Ok(())
}

fn torchlean_mask_after_div_unsafe(t: &mut CorpusTape) -> Built {
    torchlean_mask_after_div(t, false)
}

fn torchlean_mask_after_div_safe(t: &mut CorpusTape) -> Built {
    torchlean_mask_after_div(t, true)
}

// -- safe_div on a signed denominator --------------------------------------------------------

fn slope_parts(t: &mut CorpusTape) -> Result<(Var<1, 2>, Var<1, 2>), TapeError> {
    let x1 = t.input(&row([0.0, 1.0]))?;
    let x2 = t.input(&row([-1e-6, 3.0]))?;
    let y1 = t.variable(&row([0.0, 1.0]))?;
    let y2 = t.variable(&row([1.0, 5.0]))?;
    let dy = t.sub(y2, y1)?;
    let dx = t.sub(x2, x1)?;
    Ok((dy, dx))
}

fn safe_div_negative_denominator_unsafe(t: &mut CorpusTape) -> Built {
    let (dy, dx) = slope_parts(t)?;
    t.safe_div(dy, dx)?;
    Ok(())
}

fn safe_div_negative_denominator_safe(t: &mut CorpusTape) -> Built {
    let (dy, dx) = slope_parts(t)?;
    t.safe_div_signed(dy, dx)?;
    Ok(())
}

// -- relative error with a zero target -------------------------------------------------------

fn relative_error_parts(t: &mut CorpusTape) -> Result<(Var<1, 2>, Var<1, 2>), TapeError> {
    let prediction = t.variable(&row([1.0, 2.5]))?;
    let target = t.input(&row([0.0, 2.0]))?;
    let diff = t.sub(prediction, target)?;
    let err = abs(t, diff)?;
    let scale = abs(t, target)?;
    Ok((err, scale))
}

fn relative_error_zero_target_unsafe(t: &mut CorpusTape) -> Built {
    let (err, scale) = relative_error_parts(t)?;
    let rel = t.div(err, scale)?;
    t.mean(rel)?;
    Ok(())
}

fn relative_error_zero_target_safe(t: &mut CorpusTape) -> Built {
    let (err, scale) = relative_error_parts(t)?;
    let rel = t.safe_div(err, scale)?;
    t.mean(rel)?;
    Ok(())
}

// -- IoU of empty boxes ----------------------------------------------------------------------

fn iou_parts(t: &mut CorpusTape) -> Result<(Var<1, 2>, Var<1, 2>), TapeError> {
    // Two box pairs: 2x2 boxes overlapping by 1, and two empty (zero-area) boxes.
    let predicted = t.variable_in(&row([4.0, 0.0]), Domain::NON_NEGATIVE)?;
    let truth = t.input_in(&row([4.0, 0.0]), Domain::NON_NEGATIVE)?;
    let inter = t.variable_in(&row([1.0, 0.0]), Domain::NON_NEGATIVE)?;
    let both = t.add(predicted, truth)?;
    let union = t.sub(both, inter)?;
    Ok((inter, union))
}

fn iou_empty_boxes_unsafe(t: &mut CorpusTape) -> Built {
    let (inter, union) = iou_parts(t)?;
    t.div(inter, union)?;
    Ok(())
}

fn iou_empty_boxes_safe(t: &mut CorpusTape) -> Built {
    let (inter, union) = iou_parts(t)?;
    let nonempty = t.not_zero(union)?;
    t.masked_div(inter, union, nonempty)?;
    Ok(())
}

// -- uncertainty weighting with a learned variance -------------------------------------------

fn uncertainty_weighting_unsafe(t: &mut CorpusTape) -> Built {
    let losses = t.input_in(&row([0.3, 1.2]), Domain::NON_NEGATIVE)?;
    let sigma = t.variable(&row([0.0, 0.5]))?;
    let var = t.mul(sigma, sigma)?;
    let weighted = t.div(losses, var)?;
    let weighted = t.scale(weighted, 0.5)?;
    let log_var = t.ln(var)?;
    let reg = t.scale(log_var, 0.5)?;
    let total = t.add(weighted, reg)?;
    t.sum(total)?;
    Ok(())
}

/// Kendall et al.'s form: the network predicts `s = ln σ²`, the weight is `exp(-s)`.
fn uncertainty_weighting_safe(t: &mut CorpusTape) -> Built {
    let losses = t.input_in(&row([0.3, 1.2]), Domain::NON_NEGATIVE)?;
    let s = t.variable(&row([-2.0, 0.0]))?;
    let minus_s = t.neg(s)?;
    let precision = t.exp(minus_s)?;
    let weighted = t.mul(losses, precision)?;
    let weighted = t.scale(weighted, 0.5)?;
    let reg = t.scale(s, 0.5)?;
    let total = t.add(weighted, reg)?;
    t.sum(total)?;
    Ok(())
}

// -- Gaussian NLL with the variance of the data ----------------------------------------------

fn gaussian_nll_sample_variance(t: &mut CorpusTape, guarded: bool) -> Built {
    let samples = t.variable(&row([2.0, 2.0, 2.0]))?;
    let target = t.input(&Tensor::new([[2.5]]))?;
    let mu = t.mean(samples)?;
    let d = centred(t, samples)?;
    let sq = t.mul(d, d)?;
    let var = t.mean(sq)?;
    let var = if guarded {
        let eps = scalar(t, 1e-6)?;
        t.add(var, eps)?
    } else {
        var
    };
    let r = t.sub(target, mu)?;
    let r2 = t.mul(r, r)?;
    let log_var = t.ln(var)?;
    let quad = t.div(r2, var)?;
    let both = t.add(log_var, quad)?;
    t.scale(both, 0.5)?;
    Ok(())
}

fn gaussian_nll_sample_variance_unsafe(t: &mut CorpusTape) -> Built {
    gaussian_nll_sample_variance(t, false)
}

fn gaussian_nll_sample_variance_safe(t: &mut CorpusTape) -> Built {
    gaussian_nll_sample_variance(t, true)
}

// -- geometric mean --------------------------------------------------------------------------

fn geometric_mean_zero(t: &mut CorpusTape, guarded: bool) -> Built {
    let x = t.input_in(&row([0.0, 4.0, 16.0]), Domain::NON_NEGATIVE)?;
    let log = if guarded { t.safe_ln(x)? } else { t.ln(x)? };
    let mean = t.mean(log)?;
    t.exp(mean)?;
    Ok(())
}

fn geometric_mean_zero_unsafe(t: &mut CorpusTape) -> Built {
    geometric_mean_zero(t, false)
}

fn geometric_mean_zero_safe(t: &mut CorpusTape) -> Built {
    geometric_mean_zero(t, true)
}

// -- F1: a harmonic mean ---------------------------------------------------------------------

fn f1_parts(t: &mut CorpusTape) -> Result<(Var<1, 2>, Var<1, 2>), TapeError> {
    let precision = t.variable_in(&row([0.0, 0.5]), Domain::NON_NEGATIVE)?;
    let recall = t.variable_in(&row([0.0, 0.8]), Domain::NON_NEGATIVE)?;
    let pr = t.mul(precision, recall)?;
    let num = t.scale(pr, 2.0)?;
    let den = t.add(precision, recall)?;
    Ok((num, den))
}

fn f1_harmonic_mean_unsafe(t: &mut CorpusTape) -> Built {
    let (num, den) = f1_parts(t)?;
    t.div(num, den)?;
    Ok(())
}

fn f1_harmonic_mean_safe(t: &mut CorpusTape) -> Built {
    let (num, den) = f1_parts(t)?;
    t.safe_div(num, den)?;
    Ok(())
}

// -- entropy ---------------------------------------------------------------------------------

fn entropy_zero_probability(t: &mut CorpusTape, guarded: bool) -> Built {
    let p = t.input_in(&row([0.0, 0.5, 0.5]), Domain::NON_NEGATIVE)?;
    let log = if guarded { t.safe_ln(p)? } else { t.ln(p)? };
    let plogp = t.mul(p, log)?;
    let total = t.sum(plogp)?;
    t.neg(total)?;
    Ok(())
}

fn entropy_zero_probability_unsafe(t: &mut CorpusTape) -> Built {
    entropy_zero_probability(t, false)
}

fn entropy_zero_probability_safe(t: &mut CorpusTape) -> Built {
    entropy_zero_probability(t, true)
}

// -- KL divergence ---------------------------------------------------------------------------

fn kl_inputs(t: &mut CorpusTape) -> Result<(Var<1, 3>, Var<1, 3>), TapeError> {
    let p = t.input_in(&row([0.0, 0.5, 0.5]), Domain::NON_NEGATIVE)?;
    let q = t.input_in(&row([0.25, 0.75, 0.0]), Domain::NON_NEGATIVE)?;
    Ok((p, q))
}

fn kl_divergence_zero_bins_unsafe(t: &mut CorpusTape) -> Built {
    let (p, q) = kl_inputs(t)?;
    let ratio = t.div(p, q)?;
    let log = t.ln(ratio)?;
    let terms = t.mul(p, log)?;
    t.sum(terms)?;
    Ok(())
}

fn kl_divergence_zero_bins_safe(t: &mut CorpusTape) -> Built {
    let (p, q) = kl_inputs(t)?;
    let log_p = t.safe_ln(p)?;
    let log_q = t.safe_ln(q)?;
    let log_ratio = t.sub(log_p, log_q)?;
    let terms = t.mul(p, log_ratio)?;
    t.sum(terms)?;
    Ok(())
}

// -- normalising a histogram -----------------------------------------------------------------

fn histogram_parts(t: &mut CorpusTape) -> Result<(Var<1, 4>, Var<1, 4>), TapeError> {
    let counts = t.input_in(&row([0.0, 0.0, 0.0, 0.0]), Domain::NON_NEGATIVE)?;
    let total = t.sum(counts)?;
    let total_row = broadcast::<4>(t, total)?;
    Ok((counts, total_row))
}

fn histogram_normalise_empty_unsafe(t: &mut CorpusTape) -> Built {
    let (counts, total) = histogram_parts(t)?;
    t.div(counts, total)?;
    Ok(())
}

fn histogram_normalise_empty_safe(t: &mut CorpusTape) -> Built {
    let (counts, total) = histogram_parts(t)?;
    t.safe_div(counts, total)?;
    Ok(())
}

// -- gradient-norm clipping ------------------------------------------------------------------

fn squared_norm(t: &mut CorpusTape, g: Var<1, 3>) -> Result<Var<1, 1>, TapeError> {
    let sq = t.mul(g, g)?;
    t.sum(sq)
}

/// `g * min(1, coef)`, the minimum written `1 - relu(1 - coef)`.
fn apply_clip(t: &mut CorpusTape, g: Var<1, 3>, coef: Var<1, 1>) -> Built {
    let one = scalar(t, 1.0)?;
    let excess = t.sub(one, coef)?;
    let cut = t.relu(excess)?;
    let factor = t.sub(one, cut)?;
    let factor_row = broadcast::<3>(t, factor)?;
    t.mul(g, factor_row)?;
    Ok(())
}

fn grad_norm_clipping_zero_unsafe(t: &mut CorpusTape) -> Built {
    let g = t.variable(&row([0.0, 0.0, 0.0]))?;
    let max_norm = scalar(t, 1.0)?;
    let s = squared_norm(t, g)?;
    let norm = t.sqrt(s)?;
    let coef = t.div(max_norm, norm)?;
    apply_clip(t, g, coef)
}

fn grad_norm_clipping_zero_safe(t: &mut CorpusTape) -> Built {
    let g = t.variable(&row([0.0, 0.0, 0.0]))?;
    let max_norm = scalar(t, 1.0)?;
    let s = squared_norm(t, g)?;
    let norm = t.safe_sqrt_eps(s, 1e-12)?;
    let coef = t.safe_div_eps(max_norm, norm, 1e-6)?;
    apply_clip(t, g, coef)
}

// -- WGAN-GP gradient penalty ----------------------------------------------------------------

fn wgan_gp_zero_gradient(t: &mut CorpusTape, guarded: bool) -> Built {
    let grad = t.variable(&row([0.0, 0.0]))?;
    let sq = t.mul(grad, grad)?;
    let s = t.sum(sq)?;
    let s = if guarded {
        let eps = scalar(t, 1e-12)?;
        t.add(s, eps)?
    } else {
        s
    };
    let norm = t.sqrt(s)?;
    let one = scalar(t, 1.0)?;
    let gap = t.sub(norm, one)?;
    t.mul(gap, gap)?;
    Ok(())
}

fn wgan_gp_zero_gradient_unsafe(t: &mut CorpusTape) -> Built {
    wgan_gp_zero_gradient(t, false)
}

fn wgan_gp_zero_gradient_safe(t: &mut CorpusTape) -> Built {
    wgan_gp_zero_gradient(t, true)
}

// -- the corpus ------------------------------------------------------------------------------

/// The two members of a pair: `<pair>_unsafe` with its findings, `<pair>_safe` clean.
macro_rules! pair {
    ($pair:literal, $source:expr, [$($kind:expr),+ $(,)?], $flagged:path, $fixed:path $(,)?) => {
        [
            CorpusCase {
                name: concat!($pair, "_unsafe"),
                pair: $pair,
                safe: false,
                source: $source,
                expected: &[$($kind),+],
                build: $flagged,
            },
            CorpusCase {
                name: concat!($pair, "_safe"),
                pair: $pair,
                safe: true,
                source: $source,
                expected: &[],
                build: $fixed,
            },
        ]
    };
}

/// Every graph of the corpus, unsafe member first in each pair, in a fixed order.
pub fn corpus() -> Vec<CorpusCase> {
    let pairs = [
        pair!(
            "pytorch_div_then_where",
            "PyTorch issue #4132 (x.grad is nan after x/0 even where masked) and #10729 \
             (torch.where): y = x / div, then where(div != 0, y, 0); the fix masks the \
             denominator before dividing",
            [DivideThenMask],
            pytorch_div_then_where_unsafe,
            pytorch_div_then_where_safe,
        ),
        pair!(
            "jax_where_log",
            "JAX FAQ, 'Gradients contain NaN where using where': where(x > 0, log(x), 0) at \
             x <= 0 (here x > 0 is not_zero(relu(x))); fixed by guarding the log itself",
            [DivideThenMask],
            jax_where_log_unsafe,
            jax_where_log_safe,
        ),
        pair!(
            "masked_mean_empty",
            "masked mean pooling sum(h * mask) / sum(mask) over an all-padding sequence: 0/0 \
             (sentence-transformers' mean pooling clamps the count; masked_div gives 0)",
            [UnguardedDivision],
            masked_mean_empty_unsafe,
            masked_mean_empty_safe,
        ),
        pair!(
            "normalise_constant_vector",
            "Keras issue #2960 (K.std gives nan for a constant input; use sqrt(var + eps)) \
             and the LayerNorm formula (x - mean) / sqrt(var + eps)",
            [SqrtNotPositive, UnguardedDivision],
            normalise_constant_vector_unsafe,
            normalise_constant_vector_safe,
        ),
        pair!(
            "cosine_similarity_zero_vector",
            "cosine similarity a.b / (|a| |b|) with a zero embedding is 0/0 (optax PR #946, \
             ntxent); PyTorch's cosine_similarity (<= 1.11) divides by \
             sqrt(clamp_min(w1 * w2, eps^2))",
            [SqrtNotPositive, SqrtNotPositive, UnguardedDivision],
            cosine_similarity_zero_vector_unsafe,
            cosine_similarity_zero_vector_safe,
        ),
        pair!(
            "distance_identical_points",
            "PyTorch issue #2421 (gradient of a zero norm is nan): sqrt(sum((x - y)^2)) at \
             x = y has an infinite derivative; guard the square root",
            [SqrtNotPositive],
            distance_identical_points_unsafe,
            distance_identical_points_safe,
        ),
        pair!(
            "naive_log_softmax",
            "PyTorch's softmax documentation: use log_softmax rather than log(softmax(x)); \
             exp(100) overflows f32 and small probabilities underflow to 0",
            [LnNotPositive],
            naive_log_softmax_unsafe,
            naive_log_softmax_safe,
        ),
        pair!(
            "naive_cross_entropy",
            "cross-entropy written -sum(onehot * log(softmax(z))): a non-target probability \
             underflows to 0 and 0 * log(0) = nan; the fused, log-sum-exp form \
             (F.cross_entropy, softmax_cross_entropy_with_logits) is the fix",
            [DivideThenMask],
            naive_cross_entropy_unsafe,
            naive_cross_entropy_safe,
        ),
        pair!(
            "log_of_softmax_probability",
            "Stack Overflow 'Tensorflow NaN bug?' (33712178): -sum(y_ * log(y_conv)) is nan \
             once a probability is 0; answers clip the probability inside the log",
            [LnNotPositive],
            log_of_softmax_probability_unsafe,
            log_of_softmax_probability_safe,
        ),
        pair!(
            "bce_on_sigmoid",
            "PyTorch's BCELoss documentation (log(0) = -inf, so BCELoss clamps the log) and \
             BCEWithLogitsLoss (more stable than Sigmoid then BCELoss, log-sum-exp trick)",
            [LnNotPositive, LnNotPositive],
            bce_on_sigmoid_unsafe,
            bce_on_sigmoid_safe,
        ),
        pair!(
            "focal_loss_log_p",
            "focal-loss-keras issue #17 ('Nan problem for LOG'): -(1 - p)^2 log(p) with a \
             saturated sigmoid; torchvision's sigmoid_focal_loss takes the cross-entropy \
             from the logits",
            [LnNotPositive],
            focal_loss_log_p_unsafe,
            focal_loss_log_p_safe,
        ),
        pair!(
            "precision_ratio_of_sums",
            "scikit-learn precision_score: no predicted positives makes TP / (TP + FP) \
             undefined (UndefinedMetricWarning, zero_division); masked_div gives 0",
            [UnguardedDivision],
            precision_ratio_of_sums_unsafe,
            precision_ratio_of_sums_safe,
        ),
        pair!(
            "standardise_zero_std",
            "standardising by a per-feature standard deviation that is 0 for a constant \
             feature (scikit-learn's StandardScaler leaves such features unscaled); \
             masked_div gives 0 there",
            [UnguardedDivision],
            standardise_zero_std_unsafe,
            standardise_zero_std_safe,
        ),
        pair!(
            "torchlean_mask_after_div",
            "TorchLean's masked quotient: mask * (num / den) with plain multiplication gives \
             0 * inf = nan; mask * safe_div(num, den) on a non-negative den is finite",
            [DivideThenMask],
            torchlean_mask_after_div_unsafe,
            torchlean_mask_after_div_safe,
        ),
        pair!(
            "safe_div_negative_denominator",
            "TorchLean's safedivSpec num / (den + eps) assumes den >= 0: a slope dy / dx \
             with dx = -eps divides by exactly 0; safe_div_signed takes the sign",
            [SafeDivNegative],
            safe_div_negative_denominator_unsafe,
            safe_div_negative_denominator_safe,
        ),
        pair!(
            "relative_error_zero_target",
            "scikit-learn's mean_absolute_percentage_error: |y - y_hat| / |y| is infinite \
             for y = 0, so it divides by max(|y|, eps)",
            [UnguardedDivision],
            relative_error_zero_target_unsafe,
            relative_error_zero_target_safe,
        ),
        pair!(
            "iou_empty_boxes",
            "IoU = inter / union of two empty (zero-area) boxes is 0/0 in box-regression \
             losses (YOLOv5's bbox_iou adds eps to the union); masked_div gives 0",
            [UnguardedDivision],
            iou_empty_boxes_unsafe,
            iou_empty_boxes_safe,
        ),
        pair!(
            "uncertainty_weighting",
            "Kendall, Gal and Cipolla, 'Multi-Task Learning Using Uncertainty to Weigh \
             Losses' (2018): predict s = log sigma^2 instead of sigma, which avoids any \
             division by zero",
            [UnguardedDivision, LnNotPositive],
            uncertainty_weighting_unsafe,
            uncertainty_weighting_safe,
        ),
        pair!(
            "gaussian_nll_sample_variance",
            "Gaussian log-likelihood with the variance of identical samples (0): \
             torch.nn.GaussianNLLLoss clamps var to eps = 1e-6 'for stability' (here var + \
             eps)",
            [LnNotPositive, UnguardedDivision],
            gaussian_nll_sample_variance_unsafe,
            gaussian_nll_sample_variance_safe,
        ),
        pair!(
            "geometric_mean_zero",
            "geometric mean as exp(mean(log x)) (scipy.stats.gmean) with a zero entry: \
             'divide by zero encountered in log'",
            [LnNotPositive],
            geometric_mean_zero_unsafe,
            geometric_mean_zero_safe,
        ),
        pair!(
            "f1_harmonic_mean",
            "F1 = 2PR / (P + R) is 0/0 when precision and recall are 0 (scikit-learn's \
             f1_score zero_division; soft-F1 losses add eps to the denominator)",
            [UnguardedDivision],
            f1_harmonic_mean_unsafe,
            f1_harmonic_mean_safe,
        ),
        pair!(
            "entropy_zero_probability",
            "entropy -sum(p log p) is nan at p = 0 (0 * -inf); torch.distributions.Categorical \
             clamps the logits and scipy.special.entr defines 0 log 0 = 0",
            [LnNotPositive],
            entropy_zero_probability_unsafe,
            entropy_zero_probability_safe,
        ),
        pair!(
            "kl_divergence_zero_bins",
            "KL divergence sum(p log(p / q)) with empty bins (nan at p = 0, inf at q = 0); \
             torch.nn.KLDivLoss works on log-probabilities, here smoothed logs",
            [UnguardedDivision, LnNotPositive],
            kl_divergence_zero_bins_unsafe,
            kl_divergence_zero_bins_safe,
        ),
        pair!(
            "histogram_normalise_empty",
            "normalising a histogram by its total, h / sum(h), for an empty selection \
             (numpy.histogram(density=True): 'invalid value encountered in divide')",
            [UnguardedDivision],
            histogram_normalise_empty_unsafe,
            histogram_normalise_empty_safe,
        ),
        pair!(
            "grad_norm_clipping_zero",
            "gradient-norm clipping max_norm / |g| with an all-zero gradient; \
             torch.nn.utils.clip_grad_norm_ divides by total_norm + 1e-6",
            [SqrtNotPositive, UnguardedDivision],
            grad_norm_clipping_zero_unsafe,
            grad_norm_clipping_zero_safe,
        ),
        pair!(
            "wgan_gp_zero_gradient",
            "WGAN-GP gradient penalty (|grad D| - 1)^2: the norm's square root has an \
             infinite derivative at a zero gradient; implementations compute \
             sqrt(sum(g^2) + 1e-12)",
            [SqrtNotPositive],
            wgan_gp_zero_gradient_unsafe,
            wgan_gp_zero_gradient_safe,
        ),
    ];
    pairs.into_iter().flatten().collect()
}
