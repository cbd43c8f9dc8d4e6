//! The reverse sweep: each op adds its contribution to the gradients of its inputs. Every
//! product of an upstream gradient and a local derivative goes through
//! [`strong_mul`](crate::scalar::strong_mul) (directly or in [`ops`]).

use core::ops::Range;

use super::Values;
use crate::graph::{Node, NodeId, Op};
use crate::ops;
use crate::scalar::{strong_mul, Scalar};
use crate::tensor::kernels;

/// Value slots of a node, or an empty range for an impossible id.
fn slots_of<T>(nodes: &[Node<T>], id: NodeId) -> Range<usize> {
    nodes.get(id.0).map_or(0..0, Node::slots)
}

/// Gradient slots of a node; an empty range for a node without gradient, so that nothing
/// is accumulated into it.
fn grad_slots_of<T>(nodes: &[Node<T>], id: NodeId) -> Range<usize> {
    nodes.get(id.0).and_then(Node::grad_slots).unwrap_or(0..0)
}

/// The output's gradient (read) and an input's gradient (written). Inputs are recorded
/// before their output, so their gradient slots lie before the output's.
fn split_grads<'g, T>(
    grads: &'g mut [T],
    out: &Range<usize>,
    input: Range<usize>,
) -> (&'g [T], &'g mut [T]) {
    let (before, after) = grads.split_at_mut(out.start.min(grads.len()));
    let g_out: &[T] = after.get(..out.len()).unwrap_or(&[]);
    let g_in = before.get_mut(input).unwrap_or(&mut []);
    (g_out, g_in)
}

/// Adds `f(g, p, q, r)` to each gradient of `target`, lane by lane. The local derivative
/// is called through a `dyn` reference: one copy of the loop serves every elementwise op.
fn accumulate<T: Scalar>(
    grads: &mut [T],
    out: &Range<usize>,
    target: Range<usize>,
    (p, q, r): (&[T], &[T], &[T]),
    f: &dyn Fn(T, T, T, T) -> T,
) {
    let (g_out, g_in) = split_grads(grads, out, target);
    for ((((gi, &g), &pv), &qv), &rv) in g_in.iter_mut().zip(g_out).zip(p).zip(q).zip(r) {
        *gi += f(g, pv, qv, rv);
    }
}

/// The parameters of a [`Op::Linear`] (or [`Op::LinearRelu`]) node whose gradients its
/// backward leaves alone: the caller knows the node is their only user and takes their
/// gradients from the node's input and output gradient later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Defer {
    pub(super) weight: bool,
    pub(super) bias: bool,
}

impl Defer {
    /// Every gradient computed in the sweep.
    pub(super) const NOTHING: Self = Self {
        weight: false,
        bias: false,
    };
}

/// Adds one node's contribution to the gradients of its inputs (nothing for a node without
/// gradient, or into an input without one), but those of the parameters `defer` names.
#[cfg_attr(target_os = "none", inline(never))]
pub(super) fn backward_node<T: Scalar>(
    out: &Node<T>,
    nodes: &[Node<T>],
    values: &Values<'_, T>,
    grads: &mut [T],
    defer: Defer,
) {
    let val = |id: NodeId| values.get(slots_of(nodes, id)).unwrap_or(&[]);
    let y = values.get(out.slots()).unwrap_or(&[]);
    let s = |id: NodeId| grad_slots_of(nodes, id);
    let Some(ref og) = out.grad_slots() else {
        return;
    };
    match out.op {
        Op::Parameter | Op::Input | Op::Constant | Op::NotZero { .. } => {}
        Op::Add { a, b } => {
            accumulate(grads, og, s(a), (y, y, y), &|g, _, _, _| g);
            accumulate(grads, og, s(b), (y, y, y), &|g, _, _, _| g);
        }
        Op::Sub { a, b } => {
            accumulate(grads, og, s(a), (y, y, y), &|g, _, _, _| g);
            accumulate(grads, og, s(b), (y, y, y), &|g, _, _, _| -g);
        }
        Op::Mul { a, b } => {
            let (av, bv) = (val(a), val(b));
            accumulate(grads, og, s(a), (bv, y, y), &|g, b, _, _| strong_mul(g, b));
            accumulate(grads, og, s(b), (av, y, y), &|g, a, _, _| strong_mul(g, a));
        }
        Op::Neg { x } => accumulate(grads, og, s(x), (y, y, y), &|g, _, _, _| -g),
        Op::Scale { x, factor } => {
            accumulate(grads, og, s(x), (y, y, y), &|g, _, _, _| {
                strong_mul(g, factor)
            });
        }
        Op::Relu { x } => {
            let (g_out, g_x) = split_grads(grads, og, s(x));
            kernels::add_relu_grad(g_out, val(x), g_x);
        }
        Op::Tanh { x } => {
            accumulate(grads, og, s(x), (y, y, y), &|g, y, _, _| {
                ops::tanh_grad(g, y)
            });
        }
        Op::Sigmoid { x } => accumulate(grads, og, s(x), (y, y, y), &|g, y, _, _| {
            ops::sigmoid_grad(g, y)
        }),
        Op::Exp { x } => {
            accumulate(grads, og, s(x), (y, y, y), &|g, y, _, _| {
                ops::exp_grad(g, y)
            });
        }
        Op::Ln { x } => {
            accumulate(grads, og, s(x), (val(x), y, y), &|g, x, _, _| {
                ops::ln_grad(g, x)
            });
        }
        Op::Sqrt { x } | Op::SafeSqrt { x, .. } => {
            accumulate(grads, og, s(x), (y, y, y), &|g, y, _, _| {
                ops::sqrt_grad(g, y)
            });
        }
        Op::SafeLn { x, eps } => {
            accumulate(grads, og, s(x), (val(x), y, y), &|g, x, _, _| {
                ops::safe_ln_grad(g, x, eps)
            });
        }
        Op::Div { num, den } => {
            let args = (val(num), val(den), y);
            accumulate(grads, og, s(num), args, &|g, n, d, _| {
                ops::div_grad(g, n, d).0
            });
            accumulate(grads, og, s(den), args, &|g, n, d, _| {
                ops::div_grad(g, n, d).1
            });
        }
        Op::SafeDiv { num, den, eps } => {
            let args = (val(num), val(den), y);
            accumulate(grads, og, s(num), args, &|g, n, d, _| {
                ops::safe_div_grad(g, n, d, eps).0
            });
            accumulate(grads, og, s(den), args, &|g, n, d, _| {
                ops::safe_div_grad(g, n, d, eps).1
            });
        }
        Op::SafeDivSigned { num, den, eps } => {
            let args = (val(num), val(den), y);
            accumulate(grads, og, s(num), args, &|g, n, d, _| {
                ops::safe_div_signed_grad(g, n, d, eps).0
            });
            accumulate(grads, og, s(den), args, &|g, n, d, _| {
                ops::safe_div_signed_grad(g, n, d, eps).1
            });
        }
        Op::MaskedDiv { num, den, mask } => {
            let args = (val(num), val(den), val(mask));
            accumulate(grads, og, s(num), args, &|g, n, d, m| {
                ops::masked_div_grad(g, n, d, m).0
            });
            accumulate(grads, og, s(den), args, &|g, n, d, m| {
                ops::masked_div_grad(g, n, d, m).1
            });
        }
        Op::Mask { weight, x } => {
            let args = (val(weight), val(x), y);
            accumulate(grads, og, s(weight), args, &|g, w, x, _| {
                ops::mask_grad(g, w, x).0
            });
            accumulate(grads, og, s(x), args, &|g, w, x, _| {
                ops::mask_grad(g, w, x).1
            });
        }
        Op::Select {
            cond,
            on_true,
            on_false,
        } => {
            let args = (val(cond), y, y);
            accumulate(grads, og, s(on_true), args, &|g, c, _, _| {
                ops::select_grad(g, c).0
            });
            accumulate(grads, og, s(on_false), args, &|g, c, _, _| {
                ops::select_grad(g, c).1
            });
        }
        Op::AddRow { x, row } => {
            accumulate(grads, og, s(x), (y, y, y), &|g, _, _, _| g);
            let (g_out, g_row) = split_grads(grads, og, s(row));
            kernels::add_column_sums(g_out, g_row);
        }
        Op::MulRow { x, row } => {
            let (xv, rv) = (val(x), val(row));
            let (g_out, g_x) = split_grads(grads, og, s(x));
            if !rv.is_empty() {
                for (gx_row, g_row) in g_x
                    .chunks_exact_mut(rv.len())
                    .zip(g_out.chunks_exact(rv.len()))
                {
                    for ((gx, &g), &r) in gx_row.iter_mut().zip(g_row).zip(rv) {
                        *gx += strong_mul(g, r);
                    }
                }
            }
            let (g_out, g_row) = split_grads(grads, og, s(row));
            if !g_row.is_empty() {
                for (g_out_row, x_row) in g_out
                    .chunks_exact(g_row.len())
                    .zip(xv.chunks_exact(g_row.len()))
                {
                    for ((gr, &g), &xval) in g_row.iter_mut().zip(g_out_row).zip(x_row) {
                        *gr += strong_mul(g, xval);
                    }
                }
            }
        }
        Op::LayerNorm { x, eps } => {
            let cols = out.cols;
            let xv = val(x);
            let (g_out, g_x) = split_grads(grads, og, s(x));
            if cols > 0 {
                for ((g_row, x_row), (gx_row, y_row)) in g_out
                    .chunks_exact(cols)
                    .zip(xv.chunks_exact(cols))
                    .zip(g_x.chunks_exact_mut(cols).zip(y.chunks_exact(cols)))
                {
                    let (_, inv_std) = ops::mean_and_inv_std(x_row, eps);
                    ops::layer_norm_grad(g_row, y_row, inv_std, gx_row);
                }
            }
        }
        Op::Linear { x, weight, bias } | Op::LinearRelu { x, weight, bias } => {
            let (inner, cols) = (nodes.get(x.0).map_or(0, |n| n.cols), out.cols);
            // The gradient the inputs' follow from: the output's, or the pre-activation's,
            // written after it (the output's where the output is positive, else 0).
            let og = &match out.input_grad_slots() {
                Some(pre) if matches!(out.op, Op::LinearRelu { .. }) => {
                    let (before, after) = grads.split_at_mut(pre.start.min(grads.len()));
                    let g = before.get(og.clone()).unwrap_or(&[]);
                    kernels::relu_mask(g, y, after.get_mut(..pre.len()).unwrap_or(&mut []));
                    pre
                }
                _ => og.clone(),
            };
            let (g_out, g_x) = split_grads(grads, og, s(x));
            kernels::add_matmul_grad_a(g_out, val(weight), g_x, inner, cols);
            if !defer.weight {
                let (g_out, g_w) = split_grads(grads, og, s(weight));
                kernels::add_matmul_grad_b(g_out, val(x), g_w, inner, cols);
            }
            if !defer.bias {
                let (g_out, g_b) = split_grads(grads, og, s(bias));
                kernels::add_column_sums(g_out, g_b);
            }
        }
        Op::MatMul { a, b } => {
            let (inner, cols) = (nodes.get(a.0).map_or(0, |n| n.cols), out.cols);
            let (g_out, g_a) = split_grads(grads, og, s(a));
            ops::matmul_grad_a(g_out, val(b), g_a, inner, cols);
            let (g_out, g_b) = split_grads(grads, og, s(b));
            ops::matmul_grad_b(g_out, val(a), g_b, inner, cols);
        }
        Op::Transpose { x } => {
            // out is cols x rows of x; out[c][r] = x[r][c].
            let (x_rows, x_cols) = (out.cols, out.rows);
            let (g_out, g_x) = split_grads(grads, og, s(x));
            if x_cols > 0 {
                for (r, g_row) in g_x.chunks_exact_mut(x_cols).enumerate().take(x_rows) {
                    for (c, gx) in g_row.iter_mut().enumerate() {
                        *gx += g_out.get(c * x_rows + r).copied().unwrap_or(T::ZERO);
                    }
                }
            }
        }
        Op::Sum { x } | Op::Mean { x } => {
            let n = T::from_usize(nodes.get(x.0).map_or(1, Node::len));
            let is_mean = matches!(out.op, Op::Mean { .. });
            let (g_out, g_x) = split_grads(grads, og, s(x));
            let g = g_out.first().copied().unwrap_or(T::ZERO);
            let g = if is_mean {
                strong_mul(g, T::ONE / n)
            } else {
                g
            };
            g_x.iter_mut().for_each(|gx| *gx += g);
        }
        Op::LogSumExp { x } => {
            let cols = nodes.get(x.0).map_or(0, |n| n.cols);
            let xv = val(x);
            let (g_out, g_x) = split_grads(grads, og, s(x));
            if cols > 0 {
                for ((g_row, x_row), &g) in g_x
                    .chunks_exact_mut(cols)
                    .zip(xv.chunks_exact(cols))
                    .zip(g_out)
                {
                    ops::log_sum_exp_grad(g, x_row, g_row);
                }
            }
        }
        Op::SoftmaxCrossEntropy { logits, targets } => {
            let (rows, cols) = nodes.get(logits.0).map_or((0, 0), Node::shape);
            let (zv, tv) = (val(logits), val(targets));
            let (g_out, g_z) = split_grads(grads, og, s(logits));
            let g = g_out.first().copied().unwrap_or(T::ZERO);
            let g = strong_mul(g, T::ONE / T::from_usize(rows));
            // The forward left the softmax of each row after the loss value.
            let softmax = values.get(out.offset + 1..out.offset + 1 + rows * cols);
            if cols > 0 {
                let mut p_rows = softmax.unwrap_or(&[]).chunks_exact(cols);
                for ((g_row, z_row), &t) in g_z
                    .chunks_exact_mut(cols)
                    .zip(zv.chunks_exact(cols))
                    .zip(tv)
                {
                    let target = (0..cols).find(|&j| T::from_usize(j) == t).unwrap_or(cols);
                    match p_rows.next() {
                        Some(p) => ops::softmax_cross_entropy_grad_from(g, p, target, g_row),
                        None => ops::softmax_cross_entropy_grad(g, z_row, target, g_row),
                    }
                }
            }
        }
    }
}
