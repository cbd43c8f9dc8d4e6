//! The hand-written baseline: the same step in plain Rust, fixed-size arrays, explicit
//! loops, no allocation, no tape, no checks. Same math as safegrad: `x W + b`, ReLU, stable
//! softmax cross-entropy (`ln(sum(exp(z - m))) - (z_t - m)`, `m = max(z)`) averaged over
//! the batch, plain SGD.

use crate::workload::{Batch, Weights, HIDDEN, LR, OUT};

/// `out = x W + b` for every row of `x`.
fn linear<const B: usize, const I: usize, const O: usize>(
    x: &[[f32; I]; B],
    w: &[[f32; O]; I],
    b: &[f32; O],
    out: &mut [[f32; O]; B],
) {
    for (x_row, out_row) in x.iter().zip(out.iter_mut()) {
        *out_row = [0.0; O];
        for (&x_i, w_row) in x_row.iter().zip(w) {
            for (o, &w_ij) in out_row.iter_mut().zip(w_row) {
                *o += x_i * w_ij;
            }
        }
        for (o, &b_j) in out_row.iter_mut().zip(b) {
            *o += b_j;
        }
    }
}

/// `a = max(z, 0)`.
fn relu<const B: usize, const C: usize>(z: &[[f32; C]; B], a: &mut [[f32; C]; B]) {
    for (z_row, a_row) in z.iter().zip(a.iter_mut()) {
        for (a, &z) in a_row.iter_mut().zip(z_row) {
            *a = if z > 0.0 { z } else { 0.0 };
        }
    }
}

/// Weight and bias gradients of `out = x W + b` from `d_out`: `dW = x^T d_out`,
/// `db = sum of the rows of d_out`.
fn linear_param_grads<const B: usize, const I: usize, const O: usize>(
    x: &[[f32; I]; B],
    d_out: &[[f32; O]; B],
    dw: &mut [[f32; O]; I],
    db: &mut [f32; O],
) {
    *dw = [[0.0; O]; I];
    *db = [0.0; O];
    for (x_row, d_row) in x.iter().zip(d_out) {
        for (&x_i, dw_row) in x_row.iter().zip(dw.iter_mut()) {
            for (g, &d) in dw_row.iter_mut().zip(d_row) {
                *g += x_i * d;
            }
        }
        for (g, &d) in db.iter_mut().zip(d_row) {
            *g += d;
        }
    }
}

/// Gradient of the pre-activation below a layer: `dz = (d_out W^T) * (z > 0)`.
fn linear_input_grad_relu<const B: usize, const I: usize, const O: usize>(
    d_out: &[[f32; O]; B],
    w: &[[f32; O]; I],
    z: &[[f32; I]; B],
    dz: &mut [[f32; I]; B],
) {
    for ((d_row, z_row), dz_row) in d_out.iter().zip(z).zip(dz.iter_mut()) {
        for ((g, w_row), &z_i) in dz_row.iter_mut().zip(w).zip(z_row) {
            let mut s = 0.0;
            for (&d, &w_ij) in d_row.iter().zip(w_row) {
                s += d * w_ij;
            }
            *g = if z_i > 0.0 { s } else { 0.0 };
        }
    }
}

/// `p -= lr * g`.
fn sgd<const R: usize, const C: usize>(p: &mut [[f32; C]; R], g: &[[f32; C]; R]) {
    for (p_row, g_row) in p.iter_mut().zip(g) {
        sgd_row(p_row, g_row);
    }
}

fn sgd_row<const C: usize>(p: &mut [f32; C], g: &[f32; C]) {
    for (p, &g) in p.iter_mut().zip(g) {
        *p -= LR * g;
    }
}

/// The parameters, the activations and the gradients of one batch size, all in place.
pub struct Baseline<const B: usize> {
    pub weights: Weights,
    grads: Weights,
    z1: [[f32; HIDDEN]; B],
    a1: [[f32; HIDDEN]; B],
    z2: [[f32; HIDDEN]; B],
    a2: [[f32; HIDDEN]; B],
    z3: [[f32; OUT]; B],
    dz3: [[f32; OUT]; B],
    dz2: [[f32; HIDDEN]; B],
    dz1: [[f32; HIDDEN]; B],
}

impl<const B: usize> Baseline<B> {
    pub fn new(weights: &Weights) -> Self {
        Self {
            weights: weights.clone(),
            grads: weights.clone(),
            z1: [[0.0; HIDDEN]; B],
            a1: [[0.0; HIDDEN]; B],
            z2: [[0.0; HIDDEN]; B],
            a2: [[0.0; HIDDEN]; B],
            z3: [[0.0; OUT]; B],
            dz3: [[0.0; OUT]; B],
            dz2: [[0.0; HIDDEN]; B],
            dz1: [[0.0; HIDDEN]; B],
        }
    }

    /// One step: forward, loss, backward, update. Returns the loss before the update.
    pub fn step(&mut self, batch: &Batch<B>) -> f32 {
        let w = &mut self.weights;
        let g = &mut self.grads;
        // Forward.
        linear(&batch.x, &w.w1, &w.b1, &mut self.z1);
        relu(&self.z1, &mut self.a1);
        linear(&self.a1, &w.w2, &w.b2, &mut self.z2);
        relu(&self.z2, &mut self.a2);
        linear(&self.a2, &w.w3, &w.b3, &mut self.z3);
        // Loss and its gradient with respect to the logits: (softmax(z) - onehot(t)) / B.
        let inv_b = 1.0 / B as f32;
        let mut total = 0.0;
        for ((z, d), &t) in self.z3.iter().zip(self.dz3.iter_mut()).zip(&batch.y) {
            let m = z
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            let mut e = [0.0; OUT];
            let mut s = 0.0;
            for (e, &v) in e.iter_mut().zip(z) {
                *e = (v - m).exp();
                s += *e;
            }
            total += s.ln() - (z[t] - m);
            for (j, (d, &e)) in d.iter_mut().zip(&e).enumerate() {
                let p = e / s;
                *d = if j == t { p - 1.0 } else { p } * inv_b;
            }
        }
        let loss = total / B as f32;
        // Backward.
        linear_param_grads(&self.a2, &self.dz3, &mut g.w3, &mut g.b3);
        linear_input_grad_relu(&self.dz3, &w.w3, &self.z2, &mut self.dz2);
        linear_param_grads(&self.a1, &self.dz2, &mut g.w2, &mut g.b2);
        linear_input_grad_relu(&self.dz2, &w.w2, &self.z1, &mut self.dz1);
        linear_param_grads(&batch.x, &self.dz1, &mut g.w1, &mut g.b1);
        // Update.
        sgd(&mut w.w1, &g.w1);
        sgd_row(&mut w.b1, &g.b1);
        sgd(&mut w.w2, &g.w2);
        sgd_row(&mut w.b2, &g.b2);
        sgd(&mut w.w3, &g.w3);
        sgd_row(&mut w.b3, &g.b3);
        loss
    }
}
