//! Recording: one method per op. Each checks its handles, computes the op's value into the
//! free slots, and only then appends the node, so a failed call records nothing.

use super::{Leaf, Result, Tape, Var};
use crate::error::TapeError;
use crate::graph::Op;
use crate::ops;
use crate::scalar::Scalar;
use crate::tensor::{kernels, Tensor};

impl<T: Scalar, const N: usize, const S: usize, const G: usize> Tape<T, N, S, G> {
    fn map<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        x: Var<R, C>,
        f: impl Fn(T) -> T,
    ) -> Result<Var<R, C>> {
        let xs = self.resolve(x)?.slots();
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        let xv = before.get(xs).unwrap_or(&[]);
        for (o, &v) in out.iter_mut().zip(xv) {
            *o = f(v);
        }
        self.commit_op(op)
    }

    fn zip<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        a: Var<R, C>,
        b: Var<R, C>,
        f: impl Fn(T, T) -> T,
    ) -> Result<Var<R, C>> {
        let (sa, sb) = (self.resolve(a)?.slots(), self.resolve(b)?.slots());
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        let (av, bv) = (before.get(sa).unwrap_or(&[]), before.get(sb).unwrap_or(&[]));
        for ((o, &x), &y) in out.iter_mut().zip(av).zip(bv) {
            *o = f(x, y);
        }
        self.commit_op(op)
    }

    fn zip3<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        (a, b, c): (Var<R, C>, Var<R, C>, Var<R, C>),
        f: impl Fn(T, T, T) -> T,
    ) -> Result<Var<R, C>> {
        let (sa, sb, sc) = (
            self.resolve(a)?.slots(),
            self.resolve(b)?.slots(),
            self.resolve(c)?.slots(),
        );
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        let av = before.get(sa).unwrap_or(&[]);
        let bv = before.get(sb).unwrap_or(&[]);
        let cv = before.get(sc).unwrap_or(&[]);
        for (((o, &x), &y), &z) in out.iter_mut().zip(av).zip(bv).zip(cv) {
            *o = f(x, y, z);
        }
        self.commit_op(op)
    }

    // -- elementwise ------------------------------------------------------------------------

    /// `a + b`.
    pub fn add<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.zip(
            Op::Add {
                a: a.node,
                b: b.node,
            },
            a,
            b,
            |x, y| x + y,
        )
    }

    /// `a - b`.
    pub fn sub<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.zip(
            Op::Sub {
                a: a.node,
                b: b.node,
            },
            a,
            b,
            |x, y| x - y,
        )
    }

    /// `a * b` elementwise, IEEE semantics in the forward (`0 * inf = nan`); use
    /// [`mask`](Self::mask) to zero lanes.
    pub fn mul<const R: usize, const C: usize>(
        &mut self,
        a: Var<R, C>,
        b: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.zip(
            Op::Mul {
                a: a.node,
                b: b.node,
            },
            a,
            b,
            |x, y| x * y,
        )
    }

    /// `-x`.
    pub fn neg<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Neg { x: x.node }, x, |v| -v)
    }

    /// `factor * x`.
    pub fn scale<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        factor: T,
    ) -> Result<Var<R, C>> {
        self.map(Op::Scale { x: x.node, factor }, x, |v| factor * v)
    }

    /// `max(x, 0)`.
    pub fn relu<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Relu { x: x.node }, x, ops::relu)
    }

    /// `tanh(x)`.
    pub fn tanh<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Tanh { x: x.node }, x, T::tanh)
    }

    /// Logistic sigmoid.
    pub fn sigmoid<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Sigmoid { x: x.node }, x, ops::sigmoid)
    }

    /// `e^x`.
    pub fn exp<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Exp { x: x.node }, x, T::exp)
    }

    /// Raw `ln(x)`, recorded as raw: right when `x > 0` is known.
    pub fn ln<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Ln { x: x.node }, x, T::ln)
    }

    /// Raw `sqrt(x)`, recorded as raw: its gradient is infinite at 0.
    pub fn sqrt<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::Sqrt { x: x.node }, x, T::sqrt)
    }

    /// `ln(x + eps)` with the default epsilon: finite with a finite gradient for `x >= 0`.
    pub fn safe_ln<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.safe_ln_eps(x, T::DEFAULT_EPS)
    }

    /// `ln(x + eps)` with a chosen epsilon.
    pub fn safe_ln_eps<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        self.map(Op::SafeLn { x: x.node, eps }, x, |v| ops::safe_ln(v, eps))
    }

    /// `sqrt(x + eps)` with the default epsilon: finite gradient for `x >= 0`.
    pub fn safe_sqrt<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.safe_sqrt_eps(x, T::DEFAULT_EPS)
    }

    /// `sqrt(x + eps)` with a chosen epsilon.
    pub fn safe_sqrt_eps<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        self.map(Op::SafeSqrt { x: x.node, eps }, x, |v| {
            ops::safe_sqrt(v, eps)
        })
    }

    // -- division, masks, selection ---------------------------------------------------------

    /// Raw `num / den`, recorded as raw: right when `den != 0` is known.
    pub fn div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>> {
        let op = Op::Div {
            num: num.node,
            den: den.node,
        };
        self.zip(op, num, den, |a, b| a / b)
    }

    /// `num / (den + eps)` with the default epsilon (TorchLean's `safedivSpec`). Safe only
    /// for `den >= 0`; for a denominator of either sign use
    /// [`safe_div_signed`](Self::safe_div_signed).
    pub fn safe_div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.safe_div_eps(num, den, T::DEFAULT_EPS)
    }

    /// [`safe_div`](Self::safe_div) with a chosen epsilon.
    pub fn safe_div_eps<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        let op = Op::SafeDiv {
            num: num.node,
            den: den.node,
            eps,
        };
        self.zip(op, num, den, |a, b| ops::safe_div(a, b, eps))
    }

    /// `num / (den + eps * s(den))`, `s = +1` for `den >= 0` (including `-0.0`) else `-1`:
    /// finite for every finite `den`. Default epsilon.
    pub fn safe_div_signed<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.safe_div_signed_eps(num, den, T::DEFAULT_EPS)
    }

    /// [`safe_div_signed`](Self::safe_div_signed) with a chosen epsilon.
    pub fn safe_div_signed_eps<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        let op = Op::SafeDivSigned {
            num: num.node,
            den: den.node,
            eps,
        };
        self.zip(op, num, den, |a, b| ops::safe_div_signed(a, b, eps))
    }

    /// `num / den` where `mask != 0`, else `0`, with the denominator masked *before* the
    /// division (PyTorch's documented fix): masked lanes never divide.
    pub fn masked_div<const R: usize, const C: usize>(
        &mut self,
        num: Var<R, C>,
        den: Var<R, C>,
        mask: Var<R, C>,
    ) -> Result<Var<R, C>> {
        let op = Op::MaskedDiv {
            num: num.node,
            den: den.node,
            mask: mask.node,
        };
        self.zip3(op, (num, den, mask), ops::masked_div)
    }

    /// `weight * x` with strong zeros: exactly 0, with exactly 0 gradient to `x`, where
    /// `weight == 0`, even for `x = inf` or `nan`.
    pub fn mask<const R: usize, const C: usize>(
        &mut self,
        weight: Var<R, C>,
        x: Var<R, C>,
    ) -> Result<Var<R, C>> {
        let op = Op::Mask {
            weight: weight.node,
            x: x.node,
        };
        self.zip(op, weight, x, ops::mask)
    }

    /// `on_true` where `cond != 0`, else `on_false`; the branch not taken gets exactly zero
    /// gradient, the condition none.
    pub fn select<const R: usize, const C: usize>(
        &mut self,
        cond: Var<R, C>,
        on_true: Var<R, C>,
        on_false: Var<R, C>,
    ) -> Result<Var<R, C>> {
        let op = Op::Select {
            cond: cond.node,
            on_true: on_true.node,
            on_false: on_false.node,
        };
        self.zip3(op, (cond, on_true, on_false), ops::select)
    }

    /// `1` where `x != 0`, else `0`: a condition or mask derived from data (no gradient).
    pub fn not_zero<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<R, C>> {
        self.map(Op::NotZero { x: x.node }, x, ops::not_zero)
    }

    // -- shapes and reductions --------------------------------------------------------------

    /// `x + row`, the `1 x C` row added to every row of `x` (a bias).
    pub fn add_row<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        row: Var<1, C>,
    ) -> Result<Var<R, C>> {
        let (sx, sr) = (self.resolve(x)?.slots(), self.resolve(row)?.slots());
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::add_row(
            before.get(sx).unwrap_or(&[]),
            before.get(sr).unwrap_or(&[]),
            out,
        );
        self.commit_op(Op::AddRow {
            x: x.node,
            row: row.node,
        })
    }

    /// `x * row`, the `1 x C` row multiplied into every row of `x` (a per-feature scale).
    pub fn mul_row<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        row: Var<1, C>,
    ) -> Result<Var<R, C>> {
        let (sx, sr) = (self.resolve(x)?.slots(), self.resolve(row)?.slots());
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::mul_row(
            before.get(sx).unwrap_or(&[]),
            before.get(sr).unwrap_or(&[]),
            out,
        );
        self.commit_op(Op::MulRow {
            x: x.node,
            row: row.node,
        })
    }

    /// Normalises each row to zero mean and unit variance, `(x - mean) / sqrt(var + eps)`,
    /// with the default layer-norm epsilon `1e-5` (TorchLean's and PyTorch's).
    pub fn layer_norm<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, C>> {
        self.layer_norm_eps(x, T::from_f64(1e-5))
    }

    /// [`layer_norm`](Self::layer_norm) with a chosen epsilon.
    pub fn layer_norm_eps<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
        eps: T,
    ) -> Result<Var<R, C>> {
        let sx = self.resolve(x)?.slots();
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        let xv = before.get(sx).unwrap_or(&[]);
        if C > 0 {
            for (x_row, y_row) in xv.chunks_exact(C).zip(out.chunks_exact_mut(C)) {
                ops::layer_norm(x_row, eps, y_row);
            }
        }
        self.commit_op(Op::LayerNorm { x: x.node, eps })
    }

    /// Matrix product `a (R x K) * b (K x C)`.
    ///
    /// ```compile_fail
    /// use safegrad::{Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, 8, 64>::new();
    /// let a = tape.input(&Tensor::<f32, 2, 3>::zeros()).unwrap();
    /// let b = tape.input(&Tensor::<f32, 2, 3>::zeros()).unwrap();
    /// let _ = tape.matmul(a, b); // inner dimensions 3 and 2 differ
    /// ```
    pub fn matmul<const R: usize, const K: usize, const C: usize>(
        &mut self,
        a: Var<R, K>,
        b: Var<K, C>,
    ) -> Result<Var<R, C>> {
        let (sa, sb) = (self.resolve(a)?.slots(), self.resolve(b)?.slots());
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::matmul(
            before.get(sa).unwrap_or(&[]),
            before.get(sb).unwrap_or(&[]),
            out,
            K,
            C,
        );
        self.commit_op(Op::MatMul {
            a: a.node,
            b: b.node,
        })
    }

    /// A fully connected layer, `x (R x K) * weight (K x C) + bias`, the `1 x C` bias added
    /// to every row: one node (what [`nn::Linear`](crate::nn::Linear) records). Each output
    /// starts from its bias and accumulates over `K` in increasing order.
    ///
    /// ```
    /// use safegrad::{Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, 8, 32>::new();
    /// let w = tape.parameter(&Tensor::new([[1.0, 2.0], [3.0, 4.0]]))?;
    /// let b = tape.parameter(&Tensor::new([[0.5, -0.5]]))?;
    /// let x = tape.input(&Tensor::new([[1.0, 1.0]]))?;
    /// let y = tape.linear(x, w, b)?;
    /// assert_eq!(tape.value(y)?, Tensor::new([[4.5, 5.5]]));
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn linear<const R: usize, const K: usize, const C: usize>(
        &mut self,
        x: Var<R, K>,
        weight: Var<K, C>,
        bias: Var<1, C>,
    ) -> Result<Var<R, C>> {
        let (sx, sw, sb) = (
            self.resolve(x)?.slots(),
            self.resolve(weight)?.slots(),
            self.resolve(bias)?.slots(),
        );
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::linear(
            before.get(sx).unwrap_or(&[]),
            before.get(sw).unwrap_or(&[]),
            Some(before.get(sb).unwrap_or(&[])),
            out,
            K,
            C,
        );
        self.commit_op(Op::Linear {
            x: x.node,
            weight: weight.node,
            bias: bias.node,
        })
    }

    /// A fully connected layer with a ReLU, `max(x (R x K) * weight (K x C) + bias, 0)`, as one
    /// node (what [`nn::LinearRelu`](crate::nn::LinearRelu) records): the same values and
    /// gradients as [`linear`](Self::linear) followed by [`relu`](Self::relu), without the
    /// pre-activation's values or a second node. Its gradient slots hold the output's
    /// gradient and then the pre-activation's (so it takes `2 R C` of them).
    ///
    /// ```
    /// use safegrad::{Tape, Tensor};
    ///
    /// let mut tape = Tape::<f32, 8, 32>::new();
    /// let w = tape.parameter(&Tensor::new([[1.0, -2.0], [3.0, 4.0]]))?;
    /// let b = tape.parameter(&Tensor::new([[0.5, -5.5]]))?;
    /// let x = tape.input(&Tensor::new([[1.0, 1.0]]))?;
    /// let y = tape.linear_relu(x, w, b)?;
    /// assert_eq!(tape.value(y)?, Tensor::new([[4.5, 0.0]]));
    /// let loss = tape.sum(y)?;
    /// tape.backward(loss)?;
    /// assert_eq!(tape.grad(w)?, Tensor::new([[1.0, 0.0], [1.0, 0.0]]));
    /// # Ok::<(), safegrad::TapeError>(())
    /// ```
    pub fn linear_relu<const R: usize, const K: usize, const C: usize>(
        &mut self,
        x: Var<R, K>,
        weight: Var<K, C>,
        bias: Var<1, C>,
    ) -> Result<Var<R, C>> {
        let (sx, sw, sb) = (
            self.resolve(x)?.slots(),
            self.resolve(weight)?.slots(),
            self.resolve(bias)?.slots(),
        );
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::linear_relu(
            before.get(sx).unwrap_or(&[]),
            before.get(sw).unwrap_or(&[]),
            Some(before.get(sb).unwrap_or(&[])),
            out,
            K,
            C,
        );
        self.commit_op(Op::LinearRelu {
            x: x.node,
            weight: weight.node,
            bias: bias.node,
        })
    }

    /// Transpose.
    pub fn transpose<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<C, R>> {
        let sx = self.resolve(x)?.slots();
        self.reserve(R * C)?;
        let (before, out) = self.split_for_output(R * C)?;
        kernels::transpose(before.get(sx).unwrap_or(&[]), out, R, C);
        self.commit_op(Op::Transpose { x: x.node })
    }

    fn reduce<const R: usize, const C: usize>(
        &mut self,
        op: Op<T>,
        x: Var<R, C>,
        f: impl Fn(&[T]) -> T,
    ) -> Result<Var<1, 1>> {
        let sx = self.resolve(x)?.slots();
        self.reserve(1)?;
        let (before, out) = self.split_for_output(1)?;
        let value = f(before.get(sx).unwrap_or(&[]));
        out.iter_mut().for_each(|o| *o = value);
        self.commit_op(op)
    }

    /// Sum of all values.
    pub fn sum<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<1, 1>> {
        self.reduce(Op::Sum { x: x.node }, x, kernels::sum)
    }

    /// Mean of all values.
    pub fn mean<const R: usize, const C: usize>(&mut self, x: Var<R, C>) -> Result<Var<1, 1>> {
        let n = T::from_usize(R * C);
        self.reduce(Op::Mean { x: x.node }, x, |v| kernels::sum(v) / n)
    }

    /// Stable log-sum-exp of each row.
    pub fn log_sum_exp<const R: usize, const C: usize>(
        &mut self,
        x: Var<R, C>,
    ) -> Result<Var<R, 1>> {
        let sx = self.resolve(x)?.slots();
        self.reserve(R)?;
        let (before, out) = self.split_for_output(R)?;
        let xv = before.get(sx).unwrap_or(&[]);
        if C > 0 {
            for (o, row) in out.iter_mut().zip(xv.chunks_exact(C)) {
                *o = ops::log_sum_exp(row);
            }
        } else {
            out.iter_mut().for_each(|o| *o = T::NEG_INFINITY);
        }
        self.commit_op(Op::LogSumExp { x: x.node })
    }

    /// Mean over the `R` rows of the softmax cross-entropy of each row of `logits` against
    /// its class in `targets`, in the stable form `ln(sum(exp(z - m))) - (z_t - m)`.
    /// A label outside `0..C` is rejected before anything is recorded.
    pub fn softmax_cross_entropy<const R: usize, const C: usize>(
        &mut self,
        logits: Var<R, C>,
        targets: &[usize; R],
    ) -> Result<Var<1, 1>> {
        let logits_node = self.resolve(logits)?;
        let (sz, with_grad) = (logits_node.slots(), logits_node.requires_grad());
        if let Some((row, &label)) = targets.iter().enumerate().find(|(_, &t)| t >= C) {
            return Err(TapeError::LabelOutOfRange {
                row,
                label,
                classes: C,
            });
        }
        // Labels are recorded as a constant node (class indices are exact in f32 up to
        // 2^24), followed by the loss node, whose value is followed by the softmax of each
        // row (`R * C` values its backward reads instead of computing the exponentials again).
        if self.nodes.len() + 2 > N {
            return Err(TapeError::NodeCapacity { capacity: N });
        }
        self.reserve(R + 1 + R * C)?;
        if with_grad {
            self.reserve_grad(1)?;
        }
        let labels = Tensor::<T, R, 1>::from_fn(|r, _| {
            T::from_usize(targets.get(r).copied().unwrap_or_default())
        });
        let t = self.leaf(Leaf::Constant, &labels, crate::graph::Domain::UNKNOWN)?;
        let (before, out) = self.split_for_output(1 + R * C)?;
        let zv = before.get(sz).unwrap_or(&[]);
        let (loss, probabilities) = out.split_at_mut(1);
        let mut total = T::ZERO;
        if C > 0 {
            let rows = zv.chunks_exact(C).zip(probabilities.chunks_exact_mut(C));
            for ((row, p), &target) in rows.zip(targets) {
                total += ops::softmax_cross_entropy_with_softmax(row, target, p).unwrap_or(T::ZERO);
            }
        }
        loss.iter_mut().for_each(|o| *o = total / T::from_usize(R));
        let v = self.commit_op(Op::SoftmaxCrossEntropy {
            logits: logits.node,
            targets: t.node,
        })?;
        self.used += R * C;
        Ok(v)
    }
}
