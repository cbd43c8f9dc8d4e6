//! Optimisers with state arrays sized at compile time, and gradient clipping.
//!
//! An optimiser updates one trainable scalar at a time: [`Optimizer::update`] gets the
//! scalar's index `i` (into its state), the value and the gradient. Drive it with
//! [`Tape::update_parameters`](crate::Tape::update_parameters), or let
//! [`train::step`](crate::train::step) do it with the checks around it. A new rule is a
//! type that implements [`Optimizer`]; the step knows [`Sgd`] by its type and updates a
//! weight trained on one sample at a time without forming its gradient.
//!
//! ```
//! use safegrad::optim::{Adam, Optimizer};
//!
//! // One Adam step on f(p) = p^2 at p = 1 (gradient 2): the first step moves by lr.
//! let mut adam = Adam::<f64, 1>::new(0.1);
//! let mut p = 1.0;
//! adam.begin_step();
//! adam.update(0, &mut p, 2.0);
//! assert!((p - 0.9).abs() < 1e-7);
//! ```

use crate::scalar::Scalar;

/// A rule that updates trainable scalars from their gradients. [`train::step`](crate::train::step)
/// takes optimisers that own their state (`'static`).
pub trait Optimizer<T: Scalar> {
    /// How many scalars the state can hold (`usize::MAX` for stateless rules).
    fn capacity(&self) -> usize;

    /// Called once before the updates of a step.
    fn begin_step(&mut self);

    /// Updates the scalar `i` from its gradient `g`. `i < capacity()`; an index beyond the
    /// state leaves the value unchanged.
    fn update(&mut self, i: usize, value: &mut T, g: T);

    /// Scalars of optimiser state per trainable scalar (0 for SGD, 2 for Adam).
    fn state_scalars_per_parameter(&self) -> usize;

    /// Multiplies the learning rate by `factor` (a divergence guard lowers it).
    fn scale_learning_rate(&mut self, factor: T);

    /// The learning rate.
    fn learning_rate(&self) -> T;
}

/// Plain gradient descent: `p -= lr * g`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd<T> {
    /// Learning rate.
    pub lr: T,
}

impl<T: Scalar> Sgd<T> {
    /// SGD with learning rate `lr`.
    pub const fn new(lr: T) -> Self {
        Self { lr }
    }
}

impl<T: Scalar> Optimizer<T> for Sgd<T> {
    fn capacity(&self) -> usize {
        usize::MAX
    }
    fn begin_step(&mut self) {}
    fn update(&mut self, _: usize, value: &mut T, g: T) {
        *value -= self.lr * g;
    }
    fn state_scalars_per_parameter(&self) -> usize {
        0
    }
    fn scale_learning_rate(&mut self, factor: T) {
        self.lr *= factor;
    }
    fn learning_rate(&self) -> T {
        self.lr
    }
}

/// SGD with momentum, PyTorch's form: `v = mu * v + g`, `p -= lr * v`, for up to `P`
/// trainable scalars.
#[derive(Clone, Debug, PartialEq)]
pub struct Momentum<T, const P: usize> {
    /// Learning rate.
    pub lr: T,
    /// Momentum factor `mu`.
    pub momentum: T,
    velocity: [T; P],
}

impl<T: Scalar, const P: usize> Momentum<T, P> {
    /// Momentum SGD with zero initial velocity.
    pub fn new(lr: T, momentum: T) -> Self {
        Self {
            lr,
            momentum,
            velocity: [T::ZERO; P],
        }
    }

    /// The velocity of every scalar.
    pub fn velocity(&self) -> &[T; P] {
        &self.velocity
    }
}

impl<T: Scalar, const P: usize> Optimizer<T> for Momentum<T, P> {
    fn capacity(&self) -> usize {
        P
    }
    fn begin_step(&mut self) {}
    fn update(&mut self, i: usize, value: &mut T, g: T) {
        if let Some(v) = self.velocity.get_mut(i) {
            *v = self.momentum * *v + g;
            *value -= self.lr * *v;
        }
    }
    fn state_scalars_per_parameter(&self) -> usize {
        1
    }
    fn scale_learning_rate(&mut self, factor: T) {
        self.lr *= factor;
    }
    fn learning_rate(&self) -> T {
        self.lr
    }
}

/// Adam (Kingma and Ba, 2015) with bias correction, PyTorch's update:
/// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
/// `p -= lr * m_hat / (sqrt(v_hat) + eps)` with `m_hat = m / (1 - b1^t)`,
/// `v_hat = v / (1 - b2^t)`; for up to `P` trainable scalars.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam<T, const P: usize> {
    /// Learning rate.
    pub lr: T,
    /// Decay of the first moment, 0.9 by default.
    pub beta1: T,
    /// Decay of the second moment, 0.999 by default.
    pub beta2: T,
    /// Guard of the denominator, 1e-8 by default.
    pub eps: T,
    m: [T; P],
    v: [T; P],
    beta1_t: T,
    beta2_t: T,
    steps: u32,
}

impl<T: Scalar, const P: usize> Adam<T, P> {
    /// Adam with PyTorch's defaults `beta1 = 0.9`, `beta2 = 0.999`, `eps = 1e-8`.
    pub fn new(lr: T) -> Self {
        Self::with_betas(lr, T::from_f64(0.9), T::from_f64(0.999), T::from_f64(1e-8))
    }

    /// Adam with chosen hyper-parameters.
    pub fn with_betas(lr: T, beta1: T, beta2: T, eps: T) -> Self {
        Self {
            lr,
            beta1,
            beta2,
            eps,
            m: [T::ZERO; P],
            v: [T::ZERO; P],
            beta1_t: T::ONE,
            beta2_t: T::ONE,
            steps: 0,
        }
    }

    /// Steps taken.
    pub const fn steps(&self) -> u32 {
        self.steps
    }

    /// First and second moments of every scalar.
    pub fn moments(&self) -> (&[T; P], &[T; P]) {
        (&self.m, &self.v)
    }
}

impl<T: Scalar, const P: usize> Optimizer<T> for Adam<T, P> {
    fn capacity(&self) -> usize {
        P
    }
    fn begin_step(&mut self) {
        self.steps = self.steps.saturating_add(1);
        self.beta1_t *= self.beta1;
        self.beta2_t *= self.beta2;
    }
    fn update(&mut self, i: usize, value: &mut T, g: T) {
        let (Some(m), Some(v)) = (self.m.get_mut(i), self.v.get_mut(i)) else {
            return;
        };
        *m = self.beta1 * *m + (T::ONE - self.beta1) * g;
        *v = self.beta2 * *v + (T::ONE - self.beta2) * g * g;
        let m_hat = *m / (T::ONE - self.beta1_t);
        let v_hat = *v / (T::ONE - self.beta2_t);
        *value -= self.lr * m_hat / (v_hat.sqrt() + self.eps);
    }
    fn state_scalars_per_parameter(&self) -> usize {
        2
    }
    fn scale_learning_rate(&mut self, factor: T) {
        self.lr *= factor;
    }
    fn learning_rate(&self) -> T {
        self.lr
    }
}

/// The Euclidean norm of `grads`, computed without overflow or underflow: scaled by the
/// largest magnitude first. `inf` if any gradient is infinite, `nan` if any is `nan`.
///
/// ```
/// use safegrad::optim::global_norm;
///
/// assert_eq!(global_norm(&[3.0f32, 4.0]), 5.0);
/// assert_eq!(global_norm(&[3e30f32, 4e30]), 5e30); // the squares would overflow f32
/// assert_eq!(global_norm::<f32>(&[]), 0.0);
/// ```
pub fn global_norm<T: Scalar>(grads: &[T]) -> T {
    let mut largest = T::ZERO;
    for &g in grads {
        let a = g.abs();
        if a.is_nan() {
            return a;
        }
        if a > largest {
            largest = a;
        }
    }
    if largest == T::ZERO || !largest.is_finite() {
        return largest;
    }
    let sum = grads.iter().fold(T::ZERO, |acc, &g| {
        let r = g / largest;
        acc + r * r
    });
    largest * sum.sqrt()
}

/// The factor that scales gradients of norm `norm` to at most `max_norm`, PyTorch's
/// `clip_grad_norm_`: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_factor<T: Scalar>(norm: T, max_norm: T) -> T {
    let coef = max_norm / (norm + T::DEFAULT_EPS);
    if coef < T::ONE {
        coef
    } else {
        T::ONE
    }
}

/// The clipping factor of [`clip_factor`] for the gradients `grads` themselves: also right
/// when their norm overflows the scalar type although every gradient is finite (the factor
/// is then computed in scaled form, `(max_norm / largest) / sqrt(sum((g / largest)^2))`).
///
/// ```
/// use safegrad::optim::clip_factor_of;
///
/// // Norm 5: scaled to 1.
/// assert!((clip_factor_of(&[3.0f32, 4.0], 1.0) - 0.2).abs() < 1e-6);
/// // Norm 4.2e38 overflows f32, the factor does not.
/// let f = clip_factor_of(&[3e38f32, -3e38], 1.0);
/// assert!(f > 0.0 && (f * 3e38 * core::f32::consts::SQRT_2 - 1.0).abs() < 1e-5);
/// ```
pub fn clip_factor_of<T: Scalar>(grads: &[T], max_norm: T) -> T {
    clip_factor_with_norm(grads, global_norm(grads), max_norm)
}

/// [`clip_factor_of`] with the gradients' [`global_norm`] already computed.
pub fn clip_factor_with_norm<T: Scalar>(grads: &[T], norm: T, max_norm: T) -> T {
    if norm.is_finite() {
        return clip_factor(norm, max_norm);
    }
    let largest = grads
        .iter()
        .fold(T::ZERO, |m, &g| if g.abs() > m { g.abs() } else { m });
    if !largest.is_finite() || largest == T::ZERO {
        return T::ONE;
    }
    let sum = grads.iter().fold(T::ZERO, |acc, &g| {
        let r = g / largest;
        acc + r * r
    });
    let coef = (max_norm / largest) / sum.sqrt();
    if coef < T::ONE {
        coef
    } else {
        T::ONE
    }
}
