//! Sizes from types: what a model records, as constants of its type.
//!
//! Every layer describes itself as a [`LayerShape`] ([`Footprint::LAYERS`]); a tuple model's
//! list is its layers' in order. From that list and a training [`Plan`], [`sizes`] computes,
//! at compile time, the parameters, the trainable scalars, and the nodes, values and
//! gradients one training step records (forward, softmax cross-entropy, backward): the
//! capacities of the tape ([`tape_for!`](crate::tape_for)), the rollback snapshot and the
//! checkpoint's size.
//!
//! ```
//! use safegrad::nn::{sizes, Footprint, Linear, Plan, Relu};
//!
//! type Model = (Linear<8, 16>, Relu, Linear<16, 16>, Relu, Linear<16, 3>);
//! const S: safegrad::nn::Sizes = sizes::<Model>(Plan::LastLayer);
//! assert_eq!(Model::PARAMETERS, 8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3);
//! assert_eq!(S.trainable, 16 * 3 + 3);
//! // The frozen body is read in place: the tape holds the last layer and one step.
//! assert_eq!(S.values, 51 + 8 + 16 + 16 + 16 + 16 + 3 + 1 + (1 + 3));
//! ```

use super::Train;

/// The most layers a model's [`Layers`] list holds (nested tuples flatten into it).
pub const MAX_LAYERS: usize = 32;

/// What of a model trains, layer by layer: each layer with parameters takes the next entry
/// (a [`Standardize`](super::Standardize) layer, whose statistics never train, takes none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Plan<'a> {
    /// Every layer trains.
    #[default]
    All,
    /// Only the last layer with parameters trains: the body is frozen.
    LastLayer,
    /// The last `k` layers with parameters train; the ones before are frozen.
    /// `LastLayers(1)` is [`Plan::LastLayer`], `LastLayers(0)` is [`Plan::Frozen`].
    LastLayers(usize),
    /// Only the biases train (TinyTL); every weight is frozen.
    BiasOnly,
    /// The last `k` layers with parameters train whole, and the biases of the layers
    /// before them (TinyTL's biases plus a trained head). `BiasesAndLastLayers(0)` is
    /// [`Plan::BiasOnly`].
    BiasesAndLastLayers(usize),
    /// Nothing trains.
    Frozen,
    /// Entry `i` for the `i`-th layer with parameters; layers past the end train
    /// everything.
    Layers(&'a [Train]),
}

impl Plan<'_> {
    /// What the `index`-th of `layers` layers with parameters trains.
    ///
    /// ```
    /// use safegrad::nn::{Plan, Train};
    ///
    /// let of_three = |plan: Plan<'_>| [0, 1, 2].map(|i| plan.train(i, 3));
    /// assert_eq!(of_three(Plan::LastLayers(2)), [Train::Frozen, Train::All, Train::All]);
    /// assert_eq!(
    ///     of_three(Plan::BiasesAndLastLayers(1)),
    ///     [Train::BiasOnly, Train::BiasOnly, Train::All]
    /// );
    /// ```
    #[allow(
        clippy::indexing_slicing,
        reason = "the index is checked on the line before"
    )]
    pub const fn train(&self, index: usize, layers: usize) -> Train {
        match *self {
            Plan::All => Train::All,
            Plan::LastLayer => {
                if index + 1 == layers {
                    Train::All
                } else {
                    Train::Frozen
                }
            }
            Plan::LastLayers(k) => {
                if index.saturating_add(k) >= layers {
                    Train::All
                } else {
                    Train::Frozen
                }
            }
            Plan::BiasOnly => Train::BiasOnly,
            Plan::BiasesAndLastLayers(k) => {
                if index.saturating_add(k) >= layers {
                    Train::All
                } else {
                    Train::BiasOnly
                }
            }
            Plan::Frozen => Train::Frozen,
            Plan::Layers(plan) => {
                if index < plan.len() {
                    plan[index]
                } else {
                    Train::All
                }
            }
        }
    }
}

impl<'a> From<&'a [Train]> for Plan<'a> {
    fn from(plan: &'a [Train]) -> Self {
        Plan::Layers(plan)
    }
}

impl<'a, const L: usize> From<&'a [Train; L]> for Plan<'a> {
    fn from(plan: &'a [Train; L]) -> Self {
        Plan::Layers(plan)
    }
}

/// What one layer records, as its type gives it (widths per sample, that is per row of a
/// batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    /// Parameter scalars trained only when the whole layer trains (weights).
    pub weights: usize,
    /// Parameter scalars trained when the layer or its biases train (biases, shifts).
    pub biases: usize,
    /// Parameter scalars that never train (statistics).
    pub fixed: usize,
    /// Parameter nodes.
    pub parameter_nodes: usize,
    /// `true` if the layer takes an entry of the training [`Plan`].
    pub planned: bool,
    /// Width of its input, if its type fixes it.
    pub input: Option<usize>,
    /// Width of its output, if its type fixes it (otherwise its input's).
    pub output: Option<usize>,
    /// Nodes one forward records, each as wide as the output.
    pub nodes: usize,
    /// Of those, the last ones that depend on the weights.
    pub after_weights: usize,
    /// Of those, the last ones that depend on the biases.
    pub after_biases: usize,
    /// Gradient slots per value of a node with a gradient (2 for a fused linear and ReLU).
    pub grad_factor: usize,
    /// Nodes that read their input in another shape (views): nodes without values or
    /// gradients of their own.
    pub views: usize,
}

impl LayerShape {
    /// A layer without parameters that keeps its input's width and records `nodes` nodes
    /// (an activation).
    pub const fn elementwise(nodes: usize) -> Self {
        Self {
            weights: 0,
            biases: 0,
            fixed: 0,
            parameter_nodes: 0,
            planned: false,
            input: None,
            output: None,
            nodes,
            after_weights: 0,
            after_biases: 0,
            grad_factor: 1,
            views: 0,
        }
    }

    /// Parameter scalars.
    pub const fn parameters(&self) -> usize {
        self.weights + self.biases + self.fixed
    }
}

/// A model's layers, in order: a list of at most [`MAX_LAYERS`] that tuple models
/// concatenate at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layers {
    len: usize,
    items: [LayerShape; MAX_LAYERS],
}

impl Layers {
    /// A list of one layer.
    #[allow(clippy::indexing_slicing, reason = "MAX_LAYERS is above 0")]
    pub const fn one(layer: LayerShape) -> Self {
        let mut items = [LayerShape::elementwise(0); MAX_LAYERS];
        items[0] = layer;
        Self { len: 1, items }
    }

    /// The lists one after the other. More than [`MAX_LAYERS`] layers in all does not
    /// compile (a constant that fails to evaluate).
    #[allow(
        clippy::indexing_slicing,
        clippy::panic,
        reason = "evaluated at compile time: a model of too many layers fails the build"
    )]
    pub const fn chain(parts: &[Layers]) -> Self {
        let mut out = Self {
            len: 0,
            items: [LayerShape::elementwise(0); MAX_LAYERS],
        };
        let mut p = 0;
        while p < parts.len() {
            let part = &parts[p];
            let mut i = 0;
            while i < part.len {
                assert!(
                    out.len < MAX_LAYERS,
                    "a model has at most MAX_LAYERS layers"
                );
                out.items[out.len] = part.items[i];
                out.len += 1;
                i += 1;
            }
            p += 1;
        }
        out
    }

    /// The layers, in order.
    pub fn as_slice(&self) -> &[LayerShape] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    /// Number of layers.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// `true` without layers.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Layers that take an entry of a training plan.
    #[allow(clippy::indexing_slicing, reason = "i < len <= MAX_LAYERS")]
    pub const fn planned(&self) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.len {
            if self.items[i].planned {
                n += 1;
            }
            i += 1;
        }
        n
    }

    /// Parameter scalars of every layer.
    #[allow(clippy::indexing_slicing, reason = "i < len <= MAX_LAYERS")]
    pub const fn parameters(&self) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.len {
            n += self.items[i].parameters();
            i += 1;
        }
        n
    }

    /// Width of the model's input: the first width a layer's type fixes.
    #[allow(clippy::indexing_slicing, reason = "i < len <= MAX_LAYERS")]
    pub const fn input(&self) -> usize {
        let mut i = 0;
        while i < self.len {
            if let Some(w) = self.items[i].input {
                return w;
            }
            if let Some(w) = self.items[i].output {
                return w;
            }
            i += 1;
        }
        0
    }

    /// Width of the model's output.
    #[allow(clippy::indexing_slicing, reason = "i < len <= MAX_LAYERS")]
    pub const fn output(&self) -> usize {
        let mut width = self.input();
        let mut i = 0;
        while i < self.len {
            if let Some(w) = self.items[i].output {
                width = w;
            }
            i += 1;
        }
        width
    }
}

/// A layer or model whose type says what it records: its layers' shapes, from which
/// [`sizes`] computes a training step's.
pub trait Footprint {
    /// The layers, in order.
    const LAYERS: Layers;
    /// Parameter scalars, trainable and frozen: what a checkpoint stores.
    const PARAMETERS: usize = Self::LAYERS.parameters();
    /// Width of the input.
    const INPUT: usize = Self::LAYERS.input();
    /// Width of the output (the classes of a classifier).
    const OUTPUT: usize = Self::LAYERS.output();
}

/// What one training step of a model records under a plan (batch 1, softmax cross-entropy):
/// see [`sizes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Parameter scalars, trainable and frozen (what a checkpoint stores).
    pub parameters: usize,
    /// Trainable scalars: the gradients of the parameters, an optimiser's state per scalar,
    /// a rollback snapshot.
    pub trainable: usize,
    /// Nodes of the tape: the parameters and one step's graph.
    pub nodes: usize,
    /// Values of the tape with the frozen parameters read in place (from a checkpoint in
    /// flash): the trainable parameters and one step's activations.
    pub values: usize,
    /// Values of the tape with every parameter held in it.
    pub values_held: usize,
    /// Gradients of the tape: the trainable parameters' and those of the activations that
    /// depend on them.
    pub gradients: usize,
    /// Values of one step besides the parameters: the input, the activations, the labels,
    /// the loss and the softmax its backward keeps.
    pub activations: usize,
    /// Width of the input.
    pub input: usize,
    /// Classes: width of the output.
    pub classes: usize,
}

impl Sizes {
    /// The same step on a batch of `rows` samples: the loss is one scalar for the batch,
    /// every other activation and its gradient is recorded once per row; the parameters and
    /// the nodes do not change.
    ///
    /// ```
    /// use safegrad::nn::{sizes, Linear, LinearRelu, Plan};
    ///
    /// type Mlp = (LinearRelu<16, 32>, LinearRelu<32, 32>, Linear<32, 4>);
    /// let one = sizes::<Mlp>(Plan::All);
    /// assert_eq!(one.batch(1), one);
    /// // Counted by hand: 1,732 parameters; per row the input (16), both hidden layers (32
    /// // each), the logits (4), the label and the softmax (4); and the loss.
    /// let s = one.batch(32);
    /// assert_eq!(s.values_held, 1732 + 32 * (16 + 32 + 32 + 4 + 1 + 4) + 1);
    /// // Per row the gradients of both hidden layers' two nodes and of the logits.
    /// assert_eq!(s.gradients, 1732 + 32 * (2 * 32 + 2 * 32 + 4) + 1);
    /// ```
    pub const fn batch(&self, rows: usize) -> Sizes {
        // The loss's value, and its gradient when anything upstream of it trains.
        let loss_grad = if self.gradients > self.trainable {
            1
        } else {
            0
        };
        let per_row = self.activations.saturating_sub(1);
        let grads_per_row = self.gradients.saturating_sub(self.trainable + loss_grad);
        let activations = per_row * rows + 1;
        Sizes {
            values: self.values - self.activations + activations,
            values_held: self.values_held - self.activations + activations,
            gradients: self.trainable + grads_per_row * rows + loss_grad,
            activations,
            ..*self
        }
    }

    /// Bytes of the model's checkpoint with `scalar_bytes`-byte scalars
    /// ([`checkpoint`](crate::checkpoint)'s header, the parameters and the CRC).
    pub const fn checkpoint_bytes(&self, scalar_bytes: usize) -> usize {
        crate::checkpoint::HEADER_LEN
            + self.parameters * scalar_bytes
            + crate::checkpoint::TRAILER_LEN
    }
}

/// The sizes of one training step of `M` under `plan` (see [`Sizes`]), at compile time. The
/// step records, after the parameters, the input, each layer's nodes, the labels and the
/// softmax cross-entropy (its value and the softmax its backward keeps). A node carries
/// gradients once a trainable parameter is upstream of it.
///
/// ```
/// use safegrad::nn::{sizes, Linear, LinearRelu, Plan, Standardize};
///
/// type Model = (Standardize<16>, LinearRelu<16, 32>, LinearRelu<32, 32>, Linear<32, 4>);
/// let s = sizes::<Model>(Plan::LastLayer);
/// assert_eq!((s.nodes, s.values, s.gradients), (16, 254, 137));
/// assert_eq!((s.parameters, s.trainable), (1764, 132));
/// ```
#[allow(clippy::indexing_slicing, reason = "i < len <= MAX_LAYERS")]
pub const fn sizes<M: Footprint>(plan: Plan<'_>) -> Sizes {
    let layers = &M::LAYERS;
    let planned = layers.planned();
    let (mut parameters, mut trainable, mut held_frozen) = (0, 0, 0);
    let (mut parameter_nodes, mut nodes, mut activations, mut gradients) = (0, 0, 0, 0);
    let mut width = layers.input();
    // The input.
    nodes += 1;
    activations += width;
    let mut entry = 0;
    let mut upstream = false;
    let mut i = 0;
    while i < layers.len {
        let layer = &layers.items[i];
        let train = if layer.planned {
            let t = plan.train(entry, planned);
            entry += 1;
            t
        } else {
            Train::Frozen
        };
        let (weights, biases) = match train {
            Train::All => (true, true),
            Train::BiasOnly => (false, true),
            Train::Frozen => (false, false),
        };
        let trained =
            (if weights { layer.weights } else { 0 }) + (if biases { layer.biases } else { 0 });
        parameters += layer.parameters();
        trainable += trained;
        held_frozen += layer.parameters() - trained;
        parameter_nodes += layer.parameter_nodes;
        if let Some(w) = layer.output {
            width = w;
        }
        let with_grad = if upstream {
            layer.nodes
        } else {
            let mut n = 0;
            if weights && layer.after_weights > n {
                n = layer.after_weights;
            }
            if biases && layer.after_biases > n {
                n = layer.after_biases;
            }
            n
        };
        nodes += layer.nodes + layer.views;
        activations += layer.nodes * width;
        gradients += with_grad * width * layer.grad_factor;
        upstream = upstream || with_grad > 0;
        i += 1;
    }
    // Labels, then the loss: its value and the softmax of the logits.
    nodes += 2;
    activations += 1 + 1 + width;
    if upstream {
        gradients += 1;
    }
    Sizes {
        parameters,
        trainable,
        nodes: parameter_nodes + nodes,
        values: trainable + activations,
        values_held: trainable + held_frozen + activations,
        gradients: trainable + gradients,
        activations,
        input: layers.input(),
        classes: width,
    }
}
