//! Recording and differentiating a training step allocates nothing: counted by a global
//! allocator that records every allocation made while a step runs on this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use safegrad::{Cap, Tape, TapeError, Tensor};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    // Per thread: tests run side by side, and another test's allocations are not this one's.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get) - before, r)
}

type Mlp = Tape<f32, Cap<32, 2048>>;

/// One SGD step of a 4-8-3 MLP with ReLU and softmax cross-entropy.
fn step(
    tape: &mut Mlp,
    params: (
        safegrad::Var<4, 8>,
        safegrad::Var<1, 8>,
        safegrad::Var<8, 3>,
        safegrad::Var<1, 3>,
    ),
    x: &Tensor<f32, 2, 4>,
    labels: &[usize; 2],
) -> Result<f32, TapeError> {
    let (w1, b1, w2, b2) = params;
    tape.clear_activations();
    tape.zero_grad();
    let x = tape.input(x)?;
    let h = tape.matmul(x, w1)?;
    let h = tape.add_row(h, b1)?;
    let h = tape.relu(h)?;
    let z = tape.matmul(h, w2)?;
    let z = tape.add_row(z, b2)?;
    let loss = tape.softmax_cross_entropy(z, labels)?;
    tape.backward(loss)?;
    tape.update_parameters(|_, p, g| *p -= 0.05 * g);
    tape.scalar(loss)
}

#[test]
fn a_training_step_allocates_nothing_and_reuses_the_tape() {
    let mut tape = Box::new(Mlp::new());
    let w1 = tape
        .parameter(&Tensor::from_fn(|r, c| {
            ((r * 8 + c) as f32 * 0.37).sin() * 0.5
        }))
        .unwrap();
    let b1 = tape.parameter(&Tensor::zeros()).unwrap();
    let w2 = tape
        .parameter(&Tensor::from_fn(|r, c| {
            ((r * 3 + c) as f32 * 0.91).cos() * 0.5
        }))
        .unwrap();
    let b2 = tape.parameter(&Tensor::zeros()).unwrap();
    let x = Tensor::new([[0.5, -1.0, 2.0, 0.1], [1.5, 0.3, -0.7, 0.9]]);
    let labels = [2, 0];

    let first = step(&mut tape, (w1, b1, w2, b2), &x, &labels).unwrap();
    let (nodes, scalars) = (tape.nodes().len(), tape.scalars_used());
    let (count, last) = allocations_in(|| {
        let mut last = first;
        for _ in 0..200 {
            last = step(&mut tape, (w1, b1, w2, b2), &x, &labels).unwrap();
            assert_eq!((tape.nodes().len(), tape.scalars_used()), (nodes, scalars));
        }
        last
    });
    assert_eq!(count, 0, "a training step allocated");
    // The steps trained: the loss on this batch went down.
    assert!(last < first * 0.5, "loss {first} -> {last}");
}

#[test]
fn a_guarded_one_sample_step_with_fused_layers_allocates_nothing() {
    use safegrad::nn::{Build, Init, Linear, LinearRelu, Module};
    use safegrad::optim::Sgd;
    use safegrad::train::{step, StepConfig};

    type Model = (LinearRelu<4, 8>, LinearRelu<8, 8>, Linear<8, 3>);
    let mut tape = Box::new(Mlp::new());
    let model = Model::build(&mut tape, &mut Init::new(11)).unwrap();
    let mut sgd = Sgd::new(0.05f32);
    let samples = [([0.5, -1.0, 2.0, 0.1], 2), ([1.5, 0.3, -0.7, 0.9], 0)];
    let mut one_step = |tape: &mut Mlp, i: usize| {
        let (x, label) = samples[i % 2];
        tape.clear_activations();
        let x = tape.input(&Tensor::new([x])).unwrap();
        let z = model.forward(tape, x).unwrap();
        let loss = tape.softmax_cross_entropy(z, &[label]).unwrap();
        step(tape, loss, &mut sgd, &StepConfig::default())
            .unwrap()
            .loss
    };
    let first = one_step(&mut tape, 0) + one_step(&mut tape, 1);
    let (count, last) = allocations_in(|| {
        let mut last = first;
        for i in 0..200 {
            last = one_step(&mut tape, 2 * i) + one_step(&mut tape, 2 * i + 1);
        }
        last
    });
    assert_eq!(count, 0, "a guarded step allocated");
    assert!(last < first * 0.5, "loss {first} -> {last}");
}

#[test]
fn the_counter_sees_allocations() {
    let (count, v) = allocations_in(|| vec![1u8; 64]);
    assert!(count >= 1);
    assert_eq!(v.len(), 64);
}
