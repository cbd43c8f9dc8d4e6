//! The ops, one file per family: each file holds its ops as recorded (an enum the graph's
//! [`Op`](crate::Op) carries), the [`Tape`](crate::Tape) methods that record them, their
//! forward and backward formulas, and their rule in the domain audit.
//!
//! | family | ops |
//! | --- | --- |
//! | [`elementwise`] | `neg`, `scale`, `relu`, `tanh`, `sigmoid`, `exp`, raw `ln` and `sqrt`, `not_zero` |
//! | [`arithmetic`] | `add`, `sub`, `mul`, raw `div`, `add_row`, `mul_row` |
//! | [`guarded`] | `safe_div`, `safe_div_signed`, `masked_div`, `safe_ln`, `safe_sqrt`, `mask` |
//! | [`select`](mod@select) | `select`, `gather` |
//! | [`linear`] | `matmul`, `linear`, `linear_relu`, `transpose` |
//! | [`reduce`] | `sum`, `mean`, `row_max`, `log_sum_exp` |
//! | [`layer_norm`](mod@layer_norm) | `layer_norm` |
//! | [`cross_entropy`] | `softmax`, `softmax_cross_entropy` |
//! | `view` | `reshape` |
//! | `conv` | `conv1d` (strided, padded, dilated, grouped: depthwise and pointwise) |
//! | `pool` | `max_pool1d`, `avg_pool1d`, `global_avg_pool` |
//! | `batch_norm` | `batch_norm` (evaluation mode, frozen statistics) |
//!
//! The last four (feature `conv`, on by default) are the families of convolutional models; a
//! firmware of dense models turns the feature off and links none of their code.
//!
//! The formulas are public functions on scalars or flat row-major slices (re-exported here),
//! so that a test (or a firmware kernel) can run one op without a tape. Every backward formula multiplies the
//! upstream gradient `g` into the local derivative with [`strong_mul`](crate::scalar::strong_mul),
//! so `g == 0` always contributes exactly `0`.
//!
//! ```
//! use safegrad::ops::arithmetic::div_grad;
//!
//! // PyTorch's autograd note: x / 0, masked afterwards. The masked lane's upstream gradient
//! // is 0; IEEE would form 0 * inf = nan, strong zeros give 0.
//! let (d_num, d_den) = div_grad(0.0f32, 1.0, 0.0);
//! assert_eq!((d_num, d_den), (0.0, 0.0));
//! ```
//!
//! Adding an op to a family means adding its variant, its `Tape` method and its arms in that
//! family's file; a new family adds one variant to [`Op`](crate::Op) and one arm to the
//! dispatch in `graph.rs`.

pub mod arithmetic;
#[cfg(feature = "conv")]
pub mod batch_norm;
#[cfg(feature = "conv")]
pub mod conv;
pub mod cross_entropy;
pub mod elementwise;
pub mod guarded;
pub mod layer_norm;
pub mod linear;
#[cfg(feature = "conv")]
pub mod pool;
pub mod reduce;
pub mod select;
#[cfg(feature = "conv")]
pub mod view;

pub use arithmetic::{div_grad, ArithmeticOp};
#[cfg(feature = "conv")]
pub use batch_norm::BatchNormOp;
#[cfg(feature = "conv")]
pub use conv::ConvOp;
pub use cross_entropy::CrossEntropyOp;
pub use cross_entropy::{
    softmax, softmax_cross_entropy, softmax_cross_entropy_grad, softmax_cross_entropy_grad_from,
    softmax_cross_entropy_with_softmax, softmax_grad,
};
pub use elementwise::ElementwiseOp;
pub use elementwise::{
    exp_grad, ln_grad, not_zero, relu, relu_grad, sigmoid, sigmoid_grad, sqrt_grad, tanh_grad,
};
pub use guarded::GuardedOp;
pub use guarded::{
    guard_sign, mask, mask_grad, masked_div, masked_div_grad, safe_div, safe_div_grad,
    safe_div_signed, safe_div_signed_grad, safe_ln, safe_ln_grad, safe_sqrt,
};
pub use layer_norm::LayerNormOp;
pub use layer_norm::{layer_norm, layer_norm_grad, mean_and_inv_std};
pub use linear::LinearOp;
pub use linear::{matmul_grad_a, matmul_grad_b};
#[cfg(feature = "conv")]
pub use pool::PoolOp;
pub use reduce::ReduceOp;
pub use reduce::{log_sum_exp, log_sum_exp_grad, row_argmax};
pub use select::SelectOp;
pub use select::{select, select_grad};
#[cfg(feature = "conv")]
pub use view::ViewOp;

use crate::audit::{Facts, Unproven};
use crate::graph::{Domain, NodeId};
use crate::scalar::Scalar;
use crate::tape::sweep::Backward;

/// What the domain audit follows through an op when it looks for a raw op whose lanes a
/// mask hides afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A raw op outside whose domain a lane may be undefined (`div`, `ln`, `sqrt`).
    Raw,
    /// A function of one operand, lane by lane: a lane of the output is that lane of `x`
    /// transformed.
    Through(NodeId),
    /// Neither.
    Other,
}

/// What every op family implements: the op's vocabulary, its backward and its audit rule.
pub(crate) trait OpFamily<T: Scalar> {
    /// A short, stable name of the op.
    fn name(&self) -> &'static str;

    /// The nodes the op reads, in operand order.
    fn inputs(&self) -> [Option<NodeId>; 3];

    /// The inputs that receive a gradient.
    fn differentiable_inputs(&self) -> [Option<NodeId>; 3] {
        self.inputs()
    }

    /// Adds the op's contribution to its inputs' gradients.
    fn backward(&self, sweep: &mut Backward<'_, '_, T>);

    /// What is known of the op's values from what is known of its inputs'.
    fn domain(&self, facts: &Facts<'_, T>) -> Domain;

    /// What the audit reports about the op, if anything.
    fn finding(&self, _facts: &Facts<'_, T>) -> Option<Unproven> {
        None
    }

    /// The operands whose lanes the op can zero or discard (a select's branches, a mask's
    /// operand), for the "divide, then mask" finding.
    fn masked_operands(&self, _facts: &Facts<'_, T>) -> [Option<NodeId>; 2] {
        [None, None]
    }

    /// What the audit follows through the op (see [`Lane`]).
    fn lane(&self) -> Lane {
        Lane::Other
    }
}
