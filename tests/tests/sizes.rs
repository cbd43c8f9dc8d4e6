//! `nn::sizes` (the capacities a model's type gives) against what a tape records.
//!
//! For six models (a plain MLP; a standardised MLP of fused `LinearRelu` layers; a model
//! with `LayerNorm`, `Tanh` and `Sigmoid`; a nested tuple; two 1-D CNNs with every
//! convolution, pooling and view layer) and every kind of plan (`All`,
//! `LastLayer`, `LastLayers`, `BiasOnly`, `BiasesAndLastLayers`, `Frozen`, `Layers`), each
//! test:
//!
//! 1. builds the model on a large tape with every parameter held in it, records one training
//!    step exactly as `train::record_loss` does, and compares the tape's own counts (nodes,
//!    values, gradients, trainable and parameter scalars) with `Sizes` (`values_held`);
//! 2. does the same with the frozen parameters read in place from the model's checkpoint,
//!    in the order `Session::from_checkpoint` uses, and compares with `values`;
//! 3. builds the model on a tape of exactly the `tape_for!` capacities (and on one of the
//!    held capacities), records the step (and takes it when something trains), and finds
//!    the tape exactly full;
//! 4. on tapes with one node, one value or one gradient fewer, finds the step refused with
//!    the `TapeError` naming that capacity, the tape holding what it held before the
//!    refused op.
//!
//! The reference is always the recording itself: nothing here restates the formula of
//! `sizes`.

use safegrad::checkpoint;
use safegrad::nn::{
    sizes, AvgPool1d, BatchNorm1d, Build, Conv1d, DepthwiseConv1d, Flatten, GlobalAvgPool1d, Init,
    InitScheme, LayerNorm, Linear, LinearRelu, MaxPool1d, Module, Plan, PointwiseConv1d, Relu,
    Sigmoid, Sizes, Standardize, Tanh, Train, Unflatten,
};
use safegrad::optim::Sgd;
use safegrad::tape::Capacity;
use safegrad::train::{record_loss, step, StepConfig};
use safegrad::{Cap, Tape, TapeError, Tensor, Var};

/// Room for any of the models below.
type Big = Tape<f32, Cap<256, 65536>>;

type Mlp = (Linear<8, 16>, Relu, Linear<16, 16>, Relu, Linear<16, 3>);
type Standardized = (
    Standardize<16>,
    LinearRelu<16, 32>,
    LinearRelu<32, 32>,
    Linear<32, 4>,
);
type Normed = (
    Linear<6, 8>,
    LayerNorm<8>,
    Tanh,
    Linear<8, 8>,
    Sigmoid,
    Linear<8, 3>,
);
type Nested = ((Linear<4, 8>, Relu), Linear<8, 2>);
/// Every convolutional layer: a sample row read as 2 x 12, a convolution, max pooling, a
/// depthwise convolution with padding, frozen batch normalisation, a pointwise
/// convolution, average pooling that leaves the last position out, a flattened dense head.
type Cnn = (
    (
        Unflatten<2, 12>,
        Conv1d<2, 12, 4, 10, 3>,
        Relu,
        MaxPool1d<4, 10, 5, 2>,
        DepthwiseConv1d<4, 5, 5, 3, 1, 1>,
        BatchNorm1d<4>,
    ),
    (
        PointwiseConv1d<4, 6, 5>,
        Relu,
        AvgPool1d<6, 5, 2, 2>,
        Flatten<12>,
        Linear<12, 3>,
    ),
);
/// Strided, padded, dilated and grouped convolutions under global average pooling.
type GlobalCnn = (
    (
        Unflatten<3, 16>,
        Conv1d<3, 16, 4, 8, 3, 2, 1>,
        Relu,
        Conv1d<4, 8, 4, 4, 3, 2, 2, 2, 2>,
    ),
    (Relu, GlobalAvgPool1d<4>, Linear<4, 3>),
);

/// What a tape holds, by its own account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    nodes: usize,
    values: usize,
    gradients: usize,
    trainable: usize,
    parameters: usize,
}

fn counts<Mem: Capacity>(tape: &Tape<f32, Mem>) -> Counts {
    Counts {
        nodes: tape.nodes().len(),
        values: tape.scalars_used(),
        gradients: tape.gradients_used(),
        trainable: tape.trainable_len(),
        parameters: tape.parameter_len(),
    }
}

/// The counts `sizes` promises, with `values` the held or the in-place figure.
fn promised(s: &Sizes, values: usize) -> Counts {
    Counts {
        nodes: s.nodes,
        values,
        gradients: s.gradients,
        trainable: s.trainable,
        parameters: s.parameters,
    }
}

/// A sample row of `IN` features and its class.
fn sample<const IN: usize, const OUT: usize>() -> ([f32; IN], usize) {
    let x = core::array::from_fn(|i| (i as f32 * 0.7 + 0.3).sin());
    (x, 1 % OUT)
}

/// `bytes` at a 4-byte aligned address that lives as long as the program (like flash).
fn leak_aligned(bytes: &[u8]) -> &'static [u8] {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    let words: &'static [u32] = Vec::leak(words);
    &bytemuck::cast_slice::<u32, u8>(words)[..bytes.len()]
}

/// The checkpoint of `M` with every parameter drawn from `seed`.
fn checkpoint_of<M: Build<f32>>(seed: u64) -> &'static [u8] {
    let mut tape = Box::new(Big::new());
    M::build(&mut *tape, &mut Init::new(seed)).expect("build");
    let mut bytes = vec![0u8; checkpoint::encoded_len(&*tape)];
    checkpoint::save(&*tape, &mut bytes).expect("save");
    leak_aligned(&bytes)
}

/// `M` on `tape`, every parameter held, drawn from a seed.
fn build_held<M: Build<f32>, Mem: Capacity>(tape: &mut Tape<f32, Mem>, plan: Plan<'_>) -> M {
    M::build(tape, &mut Init::new(5).with_plan(plan)).expect("build held")
}

/// `M` on `tape` with the frozen parameters read in place from `bytes` and the trainable
/// ones loaded from it: the sequence of `Session::from_checkpoint`.
fn build_in_place<M: Build<f32>, Mem: Capacity>(
    tape: &mut Tape<f32, Mem>,
    bytes: &'static [u8],
    plan: Plan<'_>,
) -> M {
    let params = checkpoint::parameters_in_place::<f32>(bytes).expect("parameters in place");
    tape.reset();
    tape.read_frozen_in_place(params).expect("read in place");
    let mut init = Init::new(0).with_scheme(InitScheme::Zeros).with_plan(plan);
    let model = M::build(tape, &mut init).expect("build in place");
    checkpoint::load(tape, bytes).expect("load");
    model
}

/// Records one training step and returns the tape's counts.
fn record_step<M, Mem: Capacity, const IN: usize, const OUT: usize>(
    tape: &mut Tape<f32, Mem>,
    model: &M,
) -> Counts
where
    M: Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    let (x, label) = sample::<IN, OUT>();
    record_loss(tape, model, &x, label).expect("record the step");
    counts(tape)
}

/// Parts 1 and 2: the counts of one recorded step against `sizes`, held and in place.
fn check_against_big_tape<M, const IN: usize, const OUT: usize>(
    bytes: &'static [u8],
    plan: Plan<'_>,
) where
    M: Build<f32> + Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    let s = sizes::<M>(plan);
    assert_eq!((s.input, s.classes), (IN, OUT), "widths");
    assert_eq!((M::INPUT, M::OUTPUT), (IN, OUT), "widths");
    assert_eq!(M::PARAMETERS, s.parameters);

    let mut tape = Box::new(Big::new());
    let model = build_held::<M, _>(&mut tape, plan);
    let held = record_step(&mut *tape, &model);
    assert_eq!(
        held,
        promised(&s, s.values_held),
        "parameters held ({plan:?})"
    );
    assert_eq!(
        tape.scalars_used() - tape.parameters().len(),
        s.activations,
        "activations, held ({plan:?})"
    );
    assert_eq!(tape.parameters().len(), s.parameters);

    let mut tape = Box::new(Big::new());
    let model = build_in_place::<M, _>(&mut tape, bytes, plan);
    let in_place = record_step(&mut *tape, &model);
    assert_eq!(in_place, promised(&s, s.values), "read in place ({plan:?})");
    assert_eq!(
        tape.scalars_used() - tape.parameters().len(),
        s.activations,
        "activations, in place ({plan:?})"
    );
    // In place, the tape holds exactly the trainable parameters.
    assert_eq!(tape.parameters().len(), s.trainable);
}

/// Part 3: a tape of capacities `Mem` records the step, and takes it when something trains,
/// and is then exactly full.
fn check_exact<M, Mem: Capacity, const IN: usize, const OUT: usize>(
    bytes: Option<&'static [u8]>,
    plan: Plan<'_>,
) where
    M: Build<f32> + Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    let mut tape = Box::new(Tape::<f32, Mem>::default());
    let model = match bytes {
        Some(bytes) => build_in_place::<M, _>(&mut tape, bytes, plan),
        None => build_held::<M, _>(&mut tape, plan),
    };
    let (x, label) = sample::<IN, OUT>();
    let loss = record_loss(&mut *tape, &model, &x, label).expect("the step fits");
    let full = (Mem::NODES, Mem::VALUES, Mem::GRADIENTS);
    assert_eq!(
        (
            tape.nodes().len(),
            tape.scalars_used(),
            tape.gradients_used()
        ),
        full,
        "exactly full ({plan:?}, in place: {})",
        bytes.is_some()
    );
    if tape.trainable_len() > 0 {
        let before = tape.parameters().to_vec();
        let mut sgd = Sgd::new(0.5f32);
        step(&mut *tape, loss, &mut sgd, &StepConfig::default()).expect("the step runs");
        assert_ne!(tape.parameters(), &before[..], "the step changed something");
        assert_eq!(
            (
                tape.nodes().len(),
                tape.scalars_used(),
                tape.gradients_used()
            ),
            full
        );
    }
}

/// Which capacity a tape is one short of.
#[derive(Clone, Copy, Debug)]
enum Short {
    Nodes,
    Values,
    Gradients,
}

/// Part 4: on a tape one capacity short (`Mem`), the step is refused with the error naming
/// that capacity, and the refused op records nothing.
fn check_one_short<M, Mem: Capacity, const IN: usize, const OUT: usize>(
    bytes: &'static [u8],
    plan: Plan<'_>,
    short: Short,
) where
    M: Build<f32> + Module<f32, Var<1, IN>, Output = Var<1, OUT>>,
{
    let mut tape = Box::new(Tape::<f32, Mem>::default());
    let model = build_in_place::<M, _>(&mut tape, bytes, plan);
    let (x, label) = sample::<IN, OUT>();
    // `record_loss` by hand, to see the tape just before the op that does not fit.
    tape.clear_activations();
    let input = tape.input(&Tensor::new([x])).expect("input");
    let logits = model.forward(&mut *tape, input).expect("forward");
    let before = counts(&tape);
    let err = tape
        .softmax_cross_entropy(logits, &[label])
        .expect_err("one capacity short");
    let named = match (short, err) {
        (Short::Nodes, TapeError::NodeCapacity { capacity }) => capacity == Mem::NODES,
        (
            Short::Values,
            TapeError::ScalarCapacity {
                capacity,
                used,
                requested,
            },
        ) => capacity == Mem::VALUES && used == before.values && used + requested > capacity,
        (
            Short::Gradients,
            TapeError::GradientCapacity {
                capacity,
                used,
                requested,
            },
        ) => capacity == Mem::GRADIENTS && used == before.gradients && used + requested > capacity,
        _ => false,
    };
    assert!(named, "{short:?} short ({plan:?}): {err:?}");
    assert_eq!(counts(&tape), before, "the refused op recorded nothing");
    // `record_loss` itself is refused the same way, and leaves the same tape.
    assert_eq!(record_loss(&mut *tape, &model, &x, label), Err(err));
    assert_eq!(counts(&tape), before);
}

/// One test per plan: parts 1 to 4 for `$model` (`$in` features, `$out` classes).
macro_rules! size_tests {
    ($module:ident, $model:ty, $in:literal, $out:literal, { $($test:ident => $plan:expr,)+ }) => {
        mod $module {
            use super::*;
            $(
                #[test]
                fn $test() {
                    const PLAN: Plan<'static> = $plan;
                    const S: Sizes = sizes::<$model>(PLAN);
                    let bytes = checkpoint_of::<$model>(11);
                    check_against_big_tape::<$model, $in, $out>(bytes, PLAN);

                    type Exact = safegrad::tape_for!(f32, $model, PLAN);
                    let tape = Exact::new();
                    assert_eq!(capacities(&tape), (S.nodes, S.values, S.gradients));
                    drop(tape);
                    check_exact::<$model, Cap<{ S.nodes }, { S.values }, { S.gradients }>, $in, $out>(
                        Some(bytes),
                        PLAN,
                    );
                    check_exact::<$model, Cap<{ S.nodes }, { S.values_held }, { S.gradients }>, $in, $out>(
                        None,
                        PLAN,
                    );

                    check_one_short::<$model, Cap<{ S.nodes - 1 }, { S.values }, { S.gradients }>, $in, $out>(
                        bytes,
                        PLAN,
                        Short::Nodes,
                    );
                    check_one_short::<$model, Cap<{ S.nodes }, { S.values - 1 }, { S.gradients }>, $in, $out>(
                        bytes,
                        PLAN,
                        Short::Values,
                    );
                    if S.gradients > 0 {
                        check_one_short::<
                            $model,
                            Cap<{ S.nodes }, { S.values }, { S.gradients.saturating_sub(1) }>,
                            $in,
                            $out,
                        >(bytes, PLAN, Short::Gradients);
                    }
                }
            )+
        }
    };
}

/// The capacities of a tape's type.
fn capacities<Mem: Capacity>(_: &Tape<f32, Mem>) -> (usize, usize, usize) {
    (Mem::NODES, Mem::VALUES, Mem::GRADIENTS)
}

size_tests!(mlp, Mlp, 8, 3, {
    all => Plan::All,
    last_layer => Plan::LastLayer,
    last_two_layers => Plan::LastLayers(2),
    last_five_layers => Plan::LastLayers(5),
    biases_and_last_layer => Plan::BiasesAndLastLayers(1),
    biases_and_last_two_layers => Plan::BiasesAndLastLayers(2),
    bias_only => Plan::BiasOnly,
    frozen => Plan::Frozen,
    layers => Plan::Layers(&[Train::Frozen, Train::BiasOnly, Train::All]),
});

size_tests!(standardized, Standardized, 16, 4, {
    all => Plan::All,
    last_layer => Plan::LastLayer,
    last_two_layers => Plan::LastLayers(2),
    biases_and_last_layer => Plan::BiasesAndLastLayers(1),
    bias_only => Plan::BiasOnly,
    frozen => Plan::Frozen,
    // Shorter than the model: the last layer trains everything.
    layers => Plan::Layers(&[Train::BiasOnly, Train::Frozen]),
});

size_tests!(normed, Normed, 6, 3, {
    all => Plan::All,
    last_layer => Plan::LastLayer,
    // The last two are `Linear<8, 3>` and the `Linear<8, 8>` before it: LayerNorm is frozen.
    last_two_layers => Plan::LastLayers(2),
    last_three_layers => Plan::LastLayers(3),
    biases_and_last_layer => Plan::BiasesAndLastLayers(1),
    bias_only => Plan::BiasOnly,
    frozen => Plan::Frozen,
    layers => Plan::Layers(&[Train::Frozen, Train::BiasOnly, Train::Frozen, Train::All]),
    layers_norm_only => Plan::Layers(&[Train::Frozen, Train::All, Train::Frozen, Train::Frozen]),
});

size_tests!(nested, Nested, 4, 2, {
    all => Plan::All,
    last_layer => Plan::LastLayer,
    last_two_layers => Plan::LastLayers(2),
    biases_and_last_layer => Plan::BiasesAndLastLayers(1),
    bias_only => Plan::BiasOnly,
    frozen => Plan::Frozen,
    layers => Plan::Layers(&[Train::Frozen]),
    layers_bias_then_frozen => Plan::Layers(&[Train::BiasOnly, Train::Frozen]),
});

size_tests!(cnn, Cnn, 24, 3, {
    all => Plan::All,
    last_layer => Plan::LastLayer,
    last_two_layers => Plan::LastLayers(2),
    last_three_layers => Plan::LastLayers(3),
    biases_and_last_layer => Plan::BiasesAndLastLayers(1),
    bias_only => Plan::BiasOnly,
    frozen => Plan::Frozen,
    layers => Plan::Layers(&[Train::BiasOnly, Train::Frozen, Train::All, Train::Frozen]),
});

size_tests!(global_cnn, GlobalCnn, 48, 3, {
    all => Plan::All,
    last_layer => Plan::LastLayer,
    last_two_layers => Plan::LastLayers(2),
    biases_and_last_layer => Plan::BiasesAndLastLayers(1),
    bias_only => Plan::BiasOnly,
    frozen => Plan::Frozen,
});

/// The sizes the documentation states for the standardised model, recomputed by hand from
/// its layers: a check that the doc example and the recorded counts agree.
#[test]
fn hand_count_of_the_standardized_model_under_last_layer() {
    // Parameters: 8 nodes; the input, 2 standardisation nodes, 3 layer nodes, labels, loss.
    let nodes = 8 + 1 + 2 + 3 + 2;
    let trainable = 32 * 4 + 4;
    // In place: the head, then x (16), shift and scale (16 + 16), two fused layers
    // (32 + 32), the logits (4), the label (1), the loss (1) and its softmax (4).
    let values = trainable + 16 + 32 + 32 + 32 + 4 + 1 + 1 + 4;
    // The head's parameters, the logits' gradient and the loss's.
    let gradients = trainable + 4 + 1;
    let s = sizes::<Standardized>(Plan::LastLayer);
    assert_eq!(
        (s.nodes, s.values, s.gradients, s.trainable),
        (nodes, values, gradients, trainable)
    );
    let bytes = checkpoint_of::<Standardized>(3);
    let mut tape = Box::new(Big::new());
    let model = build_in_place::<Standardized, _>(&mut tape, bytes, Plan::LastLayer);
    let c = record_step(&mut *tape, &model);
    assert_eq!(
        (c.nodes, c.values, c.gradients, c.trainable),
        (nodes, values, gradients, trainable)
    );
}

/// The counted plans name the same entries as the lists written out.
#[test]
fn counted_plans_match_their_lists() {
    use Train::{All, BiasOnly, Frozen};
    let cases: [(Plan<'static>, [Train; 4]); 8] = [
        (Plan::LastLayer, [Frozen, Frozen, Frozen, All]),
        (Plan::LastLayers(0), [Frozen, Frozen, Frozen, Frozen]),
        (Plan::LastLayers(1), [Frozen, Frozen, Frozen, All]),
        (Plan::LastLayers(3), [Frozen, All, All, All]),
        (Plan::LastLayers(usize::MAX), [All, All, All, All]),
        (
            Plan::BiasesAndLastLayers(0),
            [BiasOnly, BiasOnly, BiasOnly, BiasOnly],
        ),
        (Plan::BiasesAndLastLayers(2), [BiasOnly, BiasOnly, All, All]),
        (Plan::BiasesAndLastLayers(9), [All, All, All, All]),
    ];
    for (plan, expected) in cases {
        assert_eq!([0, 1, 2, 3].map(|i| plan.train(i, 4)), expected, "{plan:?}");
    }
}
