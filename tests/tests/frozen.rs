//! Gradient memory only where a gradient is needed: frozen parameters, data inputs and
//! constants carry none, and neither do activations computed from them alone.

use safegrad::{Cap, Tape, TapeError, Tensor};

/// A two-layer body (frozen) and a head (trainable), batch 1: `x (1x4) -> 4x3 -> relu -> 3x2`.
fn fine_tune_tape<const G: usize>() -> Result<(Tape<f64, Cap<32, 256, G>>, f64), TapeError> {
    let mut tape = Tape::<f64, Cap<32, 256, G>>::new();
    let w1 = tape.frozen_parameter(&Tensor::<f64, 4, 3>::from_fn(|r, c| {
        0.3 * (r as f64) - 0.2 * (c as f64) + 0.1
    }))?;
    let b1 = tape.frozen_parameter(&Tensor::new([[0.1, -0.1, 0.05]]))?;
    let w2 = tape.parameter(&Tensor::<f64, 3, 2>::from_fn(|r, c| {
        if (r + c) % 2 == 0 {
            0.5
        } else {
            -0.25
        }
    }))?;
    let b2 = tape.parameter(&Tensor::new([[0.0, 0.2]]))?;
    let x = tape.input(&Tensor::new([[1.0, -0.5, 2.0, 0.25]]))?;
    let h = tape.matmul(x, w1)?;
    let h = tape.add_row(h, b1)?;
    let h = tape.relu(h)?;
    let z = tape.matmul(h, w2)?;
    let z = tape.add_row(z, b2)?;
    let loss = tape.softmax_cross_entropy(z, &[1])?;
    tape.backward(loss)?;
    let l = tape.scalar(loss)?;

    // Frozen parameters and everything computed from them alone carry no gradient.
    assert_eq!(
        tape.grad(w1),
        Err(TapeError::NoGradient { node: w1.node().0 })
    );
    assert_eq!(
        tape.grad(x),
        Err(TapeError::NoGradient { node: x.node().0 })
    );
    assert_eq!(
        tape.grad(h),
        Err(TapeError::NoGradient { node: h.node().0 })
    );
    // The head's gradient, from the closed form d loss / d z = softmax(z) - onehot(1).
    let hv = tape.value(h)?;
    let zv = tape.value(z)?;
    let (z0, z1) = (zv.as_slice()[0], zv.as_slice()[1]);
    let p1 = 1.0 / (1.0 + (z0 - z1).exp());
    let dz = [1.0 - p1, p1 - 1.0];
    let gw2 = tape.grad(w2)?;
    for r in 0..3 {
        for (c, dzc) in dz.iter().enumerate() {
            let expected = hv.as_slice()[r] * dzc;
            let got = gw2.get(r, c).unwrap_or(f64::NAN);
            assert!(
                (got - expected).abs() < 1e-12,
                "w2[{r}][{c}]: {got} vs {expected}"
            );
        }
    }
    Ok((tape, l))
}

#[test]
fn a_frozen_body_takes_no_gradient_memory() {
    let (tape, _) = fine_tune_tape::<64>().unwrap();
    // Trainable: w2 (6) + b2 (2). Activations with a gradient: z = h w2 (2), z + b2 (2),
    // the loss (1). Nothing of the body (x, h: 4 + 3 + 3 + 3 values) has one.
    assert_eq!(tape.trainable_len(), 8);
    assert_eq!(tape.gradients_used(), 8 + 2 + 2 + 1);
    assert_eq!(tape.parameters().len(), 12 + 3 + 6 + 2);
}

#[test]
fn the_gradient_buffer_can_be_smaller_than_the_value_buffer() {
    // 13 gradient slots are exactly enough; 12 are not, and the error says so.
    assert!(fine_tune_tape::<13>().is_ok());
    let err = fine_tune_tape::<12>().err();
    assert_eq!(
        err,
        Some(TapeError::GradientCapacity {
            capacity: 12,
            used: 12,
            requested: 1
        })
    );
}

#[test]
fn frozen_parameters_stay_bit_identical_through_training() {
    let mut tape = Tape::<f32, Cap<16, 64>>::new();
    let frozen = tape
        .frozen_parameter(&Tensor::new([[0.3f32, -1.7]]))
        .unwrap();
    let w = tape.parameter(&Tensor::new([[0.5f32, 0.25]])).unwrap();
    let before = tape.value(frozen).unwrap();
    for _ in 0..50 {
        tape.clear_activations();
        tape.zero_grad();
        let x = tape.input(&Tensor::new([[1.0f32, 2.0]])).unwrap();
        let a = tape.mul(x, frozen).unwrap();
        let b = tape.mul(a, w).unwrap();
        let loss = tape.sum(b).unwrap();
        let loss = tape.mul(loss, loss).unwrap();
        tape.backward(loss).unwrap();
        tape.update_parameters(|_, p, g| *p -= 0.01 * g);
    }
    let after = tape.value(frozen).unwrap();
    let bits = |t: &Tensor<f32, 1, 2>| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&before), bits(&after));
    // ... while the trainable one moved.
    assert_ne!(tape.value(w).unwrap(), Tensor::new([[0.5, 0.25]]));
}

#[test]
fn backward_from_a_node_without_gradient_is_an_error() {
    let mut tape = Tape::<f32, Cap<8, 16>>::new();
    let x = tape.input(&Tensor::new([[1.0f32]])).unwrap();
    let y = tape.exp(x).unwrap();
    assert_eq!(tape.backward(y), Err(TapeError::NoGradient { node: 1 }));
}
