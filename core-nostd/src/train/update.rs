//! How a step's update reaches an optimiser. Plain SGD needs no gradient per weight: the
//! weights of a layer trained on one sample at a time are updated straight from the two
//! factors of their outer-product gradient (about a third of a step's work on a small MLP).
//! That fast path is private to the crate: the public [`Optimizer`] trait only updates one
//! scalar at a time, and the step recognises [`Sgd`] by its type.

use core::any::Any;

use crate::optim::{Optimizer, Sgd};
use crate::scalar::Scalar;
use crate::tape::held::{Factors, Update};
use crate::tensor::kernels;

/// An optimiser as the tape's update sees it.
pub(super) struct Rule<'o, O>(pub(super) &'o mut O);

impl<O: 'static> Rule<'_, O> {
    /// The learning rate, if the optimiser is plain SGD (known at compile time: the type
    /// comparison folds away).
    fn sgd_rate<T: Scalar>(&self) -> Option<T> {
        let any: &dyn Any = &*self.0;
        any.downcast_ref::<Sgd<T>>().map(|sgd| sgd.lr)
    }
}

impl<T: Scalar, O: Optimizer<T> + 'static> Update<T> for Rule<'_, O> {
    fn slice(&mut self, first: usize, values: &mut [T], grads: &[T], factor: T) {
        if let Some(lr) = self.sgd_rate() {
            kernels::sgd_update(values, grads, lr, factor);
            return;
        }
        for (k, (v, &g)) in values.iter_mut().zip(grads).enumerate() {
            self.0.update(first + k, v, g * factor);
        }
    }

    fn outer(
        &mut self,
        first: usize,
        values: &mut [T],
        grads: &mut [T],
        factors: Factors<'_, T>,
        factor: T,
    ) -> bool {
        let Factors { x, g, finite } = factors;
        if let Some(lr) = self.sgd_rate() {
            // `p -= x[k] * (lr * g[j])`: the same update as from the gradient `x[k] * g[j]`
            // in exact arithmetic, with one rounding fewer, and no gradient written.
            kernels::sgd_outer(values, x, g, finite, lr, factor);
            return false;
        }
        kernels::set_matmul_grad_b(g, x, grads, x.len(), g.len());
        self.slice(first, values, grads, factor);
        true
    }
}
