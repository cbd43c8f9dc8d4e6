//! ONNX to safegrad layers: a graph that is a chain of layers becomes a model type
//! (`type Model = (...)`, for a firmware to include) and a safegrad checkpoint of its
//! parameters.
//!
//! | ONNX | safegrad layer | parameters, as the checkpoint holds them |
//! | --- | --- | --- |
//! | input `[N, C, L]` | `Unflatten<C, L>` (a sample is a row of `C * L` values, channel after channel) | |
//! | `Conv` (1-D, grouped) | `Conv1d<C_IN, L_IN, C_OUT, L_OUT, K, S, P, D, G>` | kernel `[C_OUT, C_IN / G, K]` as PyTorch's, bias |
//! | `BatchNormalization` after a `Conv` | folded into the convolution | |
//! | `BatchNormalization` on `[N, C, L]` | `BatchNorm1d<C>` (frozen) | `4 x C`: gamma, beta, mean, variance |
//! | `Relu`, `Tanh`, `Sigmoid` | `Relu`, `Tanh`, `Sigmoid`; `Gemm` then `Relu` is `LinearRelu` | |
//! | `MaxPool`, `AveragePool` | `MaxPool1d`, `AvgPool1d` | |
//! | `GlobalAveragePool` (and the `Flatten` after it) | `GlobalAvgPool1d<C>` | |
//! | `Flatten` | `Flatten<C * L>` | |
//! | `Gemm`, `MatMul` + `Add` | `Linear<IN, OUT>` | weight `IN x OUT` (PyTorch's `[OUT, IN]` transposed), bias |
//! | `LayerNormalization` | `LayerNorm<C>` | gamma, beta |
//! | a final `Softmax` | dropped: the model gives logits, as training needs | |
//!
//! A graph with anything else (a `Where`, a `Div`, a branch) is not a chain of layers:
//! `predict` and `audit` run it, `import` says which node it cannot place.

use std::fmt::Write as _;

use safegrad::checkpoint;
use safegrad::ops::batch_norm::fold_into_conv;
use safegrad::ops::conv::Conv1dShape;
use safegrad::ops::pool::Pool1dShape;
use safegrad::{Cap, Tape};

use super::{Graph, Node, OnnxError, Tensor};

/// One imported layer, with its parameters in safegrad's layout.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `Unflatten<C, L>`.
    Unflatten { c: usize, l: usize },
    /// `BatchNorm1d<C>`: gamma, beta, mean, variance.
    BatchNorm { c: usize, stats: Vec<f32> },
    /// `Conv1d<...>`.
    Conv {
        shape: Conv1dShape,
        weight: Vec<f32>,
        bias: Vec<f32>,
        /// The ONNX initialisers of the kernel and the bias (`None` if a batch
        /// normalisation was folded in).
        source: Option<(String, String)>,
    },
    /// `Relu`.
    Relu,
    /// `Tanh`.
    Tanh,
    /// `Sigmoid`.
    Sigmoid,
    /// `MaxPool1d<...>`.
    MaxPool(Pool1dShape),
    /// `AvgPool1d<...>`.
    AvgPool(Pool1dShape),
    /// `GlobalAvgPool1d<C>`.
    GlobalAvgPool { c: usize },
    /// `Flatten<N>`.
    Flatten { n: usize },
    /// `Linear<IN, OUT>` or `LinearRelu<IN, OUT>`: the weight `IN x OUT`.
    Linear {
        inputs: usize,
        outputs: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
        relu: bool,
        /// The ONNX initialisers of the weight and bias, and whether the weight is stored
        /// `[OUT, IN]` (`Gemm` with `transB`).
        source: (String, String, bool),
    },
    /// `LayerNorm<C>`.
    LayerNorm {
        c: usize,
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
}

impl Layer {
    /// The layer's Rust type.
    pub fn type_name(&self) -> String {
        match self {
            Self::Unflatten { c, l } => format!("Unflatten<{c}, {l}>"),
            Self::BatchNorm { c, .. } => format!("BatchNorm1d<{c}>"),
            Self::Conv { shape: s, .. } => format!(
                "Conv1d<{}, {}, {}, {}, {}, {}, {}, {}, {}>",
                s.c_in,
                s.l_in,
                s.c_out,
                s.l_out,
                s.kernel,
                s.stride,
                s.padding,
                s.dilation,
                s.groups
            ),
            Self::Relu => "Relu".into(),
            Self::Tanh => "Tanh".into(),
            Self::Sigmoid => "Sigmoid".into(),
            Self::MaxPool(s) => format!(
                "MaxPool1d<{}, {}, {}, {}, {}, {}, {}>",
                s.channels, s.l_in, s.l_out, s.kernel, s.stride, s.padding, s.dilation
            ),
            Self::AvgPool(s) => format!(
                "AvgPool1d<{}, {}, {}, {}, {}, {}>",
                s.channels, s.l_in, s.l_out, s.kernel, s.stride, s.padding
            ),
            Self::GlobalAvgPool { c } => format!("GlobalAvgPool1d<{c}>"),
            Self::Flatten { n } => format!("Flatten<{n}>"),
            Self::Linear {
                inputs,
                outputs,
                relu,
                ..
            } => format!(
                "{}<{inputs}, {outputs}>",
                if *relu { "LinearRelu" } else { "Linear" }
            ),
            Self::LayerNorm { c, .. } => format!("LayerNorm<{c}>"),
        }
    }

    /// The layer's parameter nodes in recording order: `(rows, columns, values)`.
    pub fn parameters(&self) -> Vec<(usize, usize, &[f32])> {
        match self {
            Self::BatchNorm { c, stats } => vec![(4, *c, stats)],
            Self::Conv {
                shape,
                weight,
                bias,
                ..
            } => vec![
                (shape.c_out, shape.weights() / shape.c_out.max(1), weight),
                (1, shape.c_out, bias),
            ],
            Self::Linear {
                inputs,
                outputs,
                weight,
                bias,
                ..
            } => vec![(*inputs, *outputs, weight), (1, *outputs, bias)],
            Self::LayerNorm { c, gamma, beta } => vec![(1, *c, gamma), (1, *c, beta)],
            _ => Vec::new(),
        }
    }
}

/// What the chain's current value is, in safegrad's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    /// A row of `n` features (`[N, n]` in ONNX).
    Dense(usize),
    /// `c x l` (`[N, C, L]`).
    Seq(usize, usize),
    /// The `1 x c` of a global average pooling (`[N, C, 1]` in ONNX).
    Pooled(usize),
}

/// An imported model: its layers, and what the import noted.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// The layers in order.
    pub layers: Vec<Layer>,
    /// Values of one input sample.
    pub input_len: usize,
    /// Values of one output (the logits).
    pub output_len: usize,
    /// What changed on the way (folds, a dropped softmax).
    pub notes: Vec<String>,
}

impl Imported {
    /// Parameter scalars, in every layer.
    pub fn parameter_len(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.parameters())
            .map(|(r, c, _)| r * c)
            .sum()
    }

    /// The model's Rust type, layers grouped into tuples of at most four.
    pub fn type_expr(&self) -> String {
        let names: Vec<String> = self.layers.iter().map(Layer::type_name).collect();
        nest(&names)
    }

    /// The generated Rust file: the imports and `pub type Model`.
    pub fn rust_file(&self, source: &str) -> String {
        let mut used: Vec<&str> = Vec::new();
        for l in &self.layers {
            let name = l.type_name();
            let base = name.split('<').next().unwrap_or_default().to_string();
            let base = KNOWN.iter().find(|k| **k == base).copied();
            if let Some(b) = base {
                if !used.contains(&b) {
                    used.push(b);
                }
            }
        }
        used.sort_unstable();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "// Generated by `host-sim import {source}`: the model as safegrad layers.\n// Its parameters are in the checkpoint written beside this file (model.sgck).\n"
        );
        let _ = writeln!(out, "use safegrad::nn::{{{}}};\n", used.join(", "));
        let _ = writeln!(
            out,
            "/// The imported model: a sample of {} values in, {} logits out, {} parameters.",
            self.input_len,
            self.output_len,
            self.parameter_len()
        );
        let _ = writeln!(out, "pub type Model = {};", self.type_expr());
        out
    }

    /// The checkpoint of every parameter, as `safegrad::checkpoint::save` writes it for
    /// the model's tape.
    pub fn checkpoint(&self) -> Result<Vec<u8>, String> {
        let mut tape = Box::new(ImportTape::new());
        for layer in &self.layers {
            for (rows, cols, values) in layer.parameters() {
                let v = tape
                    .flat_parameter(rows, cols, false)
                    .map_err(|e| format!("the model does not fit the importer's tape: {e}"))?;
                tape.set_flat_parameter(v, values)
                    .map_err(|e| format!("{}: {e}", layer.type_name()))?;
            }
        }
        let mut buf = vec![0u8; checkpoint::encoded_len(&*tape)];
        checkpoint::save(&*tape, &mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    }
}

/// The importer's tape: parameters only, up to 256 nodes and 262,144 scalars (1 MiB). The
/// model's type is what the import writes, not a type this program knows, so its capacity
/// cannot come from `nn::sizes`: a fixed bound, and a model past it is refused.
type ImportTape = Tape<f32, Cap<256, 262_144, 1>>;

/// The layer types a generated file imports.
const KNOWN: &[&str] = &[
    "AvgPool1d",
    "BatchNorm1d",
    "Conv1d",
    "Flatten",
    "GlobalAvgPool1d",
    "LayerNorm",
    "Linear",
    "LinearRelu",
    "MaxPool1d",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Unflatten",
];

/// Layers as nested tuples: at most four to a tuple (safegrad's tuples take up to six).
fn nest(names: &[String]) -> String {
    if names.len() == 1 {
        return names[0].clone();
    }
    if names.len() <= 4 {
        return format!("({})", names.join(", "));
    }
    let groups: Vec<String> = names
        .chunks(names.len().div_ceil(4).max(4))
        .map(nest)
        .collect();
    if groups.len() == 1 {
        return groups[0].clone();
    }
    nest(&groups)
}

/// The tensor named `name` to write a parameter into: an initialiser, or the `value` of the
/// `Constant` node that outputs it.
fn tensor_named<'g>(
    graph: &'g mut onnx_protobuf::GraphProto,
    name: &str,
) -> Result<&'g mut onnx_protobuf::TensorProto, String> {
    if let Some(i) = graph.initializer.iter().position(|t| t.name == name) {
        return Ok(&mut graph.initializer[i]);
    }
    graph
        .node
        .iter_mut()
        .filter(|n| n.op_type == "Constant" && n.output.iter().any(|o| o == name))
        .flat_map(|n| n.attribute.iter_mut())
        .find(|a| a.name == "value")
        .map(|a| a.t.mut_or_insert_default())
        .ok_or_else(|| {
            format!("`{name}` is neither an initialiser nor a Constant's tensor in the model")
        })
}

/// An initialiser (or `Constant` output) by name.
fn constant<'g>(graph: &'g Graph, name: &str) -> Option<&'g Tensor> {
    if let Some(t) = graph.initializer(name) {
        return Some(t);
    }
    let (_, node) = graph.producer(name)?;
    match (node.op_type.as_str(), node.attrs.get("value")) {
        ("Constant", Some(super::Attr::Tensor(t))) => Some(t),
        _ => None,
    }
}

/// Maps `graph` to safegrad layers, or says which node is not a layer of a chain.
pub fn import(graph: &Graph) -> Result<Imported, OnnxError> {
    let [input] = graph.inputs.as_slice() else {
        return Err(OnnxError::Graph(format!(
            "import takes a model of one input; this one has {}",
            graph.inputs.len()
        )));
    };
    let [output] = graph.outputs.as_slice() else {
        return Err(OnnxError::Graph(format!(
            "import takes a model of one output; this one has {}",
            graph.outputs.len()
        )));
    };
    let dims = input.sample_shape();
    let mut layers = Vec::new();
    let mut notes = Vec::new();
    let mut value = match dims.as_slice() {
        &[1, f] => Value::Dense(f),
        &[1, c, l] => {
            layers.push(Layer::Unflatten { c, l });
            Value::Seq(c, l)
        }
        other => {
            return Err(OnnxError::Graph(format!(
                "input `{}` has shape {other:?}; import takes [1, F] or [1, C, L]",
                input.name
            )))
        }
    };
    let mut current = input.name.clone();
    let nodes: Vec<&Node> = graph
        .nodes
        .iter()
        .filter(|n| n.op_type != "Constant")
        .collect();
    let mut i = 0;
    while i < nodes.len() {
        let node = nodes[i];
        if node.input(0) != Some(current.as_str()) {
            return Err(node.error(format!(
                "does not read the previous layer's output `{current}`: import takes a chain of layers (predict and audit run any graph)"
            )));
        }
        let next = nodes.get(i + 1).copied();
        let weight = |k: usize| -> Result<&Tensor, OnnxError> {
            let name = node.required(k)?;
            constant(graph, name)
                .ok_or_else(|| node.error(format!("input `{name}` is not an initialiser")))
        };
        let here = match value {
            Value::Dense(n) | Value::Pooled(n) => format!("a row of {n} features"),
            Value::Seq(c, l) => format!("{c} channels x {l} samples"),
        };
        let not_here = |what: &str| {
            node.error(format!(
                "{what} on {here} is not a safegrad layer; predict and audit run it, import takes chains of layers"
            ))
        };
        let mut consumed = 1;
        match (node.op_type.as_str(), value) {
            ("Conv", Value::Seq(c, l)) => {
                let w = weight(1)?;
                let &[c_out, per_group, k] = w.shape.as_slice() else {
                    return Err(node.error(format!("weight of shape {:?} is not 1-D", w.shape)));
                };
                let groups = node.int("group", 1)?.clamp(1, 1 << 20) as usize;
                let (pad_b, pad_e) = super::eval::pads_of(node)?;
                if pad_b != pad_e || per_group * groups != c {
                    return Err(node.error("asymmetric padding or inconsistent groups"));
                }
                let shape = Conv1dShape::new(
                    c,
                    l,
                    c_out,
                    k,
                    super::eval::one_of(node, "strides", 1)?,
                    pad_b,
                    super::eval::one_of(node, "dilations", 1)?,
                    groups,
                );
                if let Some(p) = shape.problem() {
                    return Err(node.error(p));
                }
                let mut weight_values = w.data.clone();
                let (mut bias, bias_name) = match node.input(2) {
                    Some(b) => (weight(2)?.data.clone(), b.to_string()),
                    None => (vec![0.0; c_out], String::new()),
                };
                let mut source = Some((node.required(1)?.to_string(), bias_name));
                let conv_out = node.outputs.first().map(String::as_str);
                if let Some(bn) =
                    next.filter(|n| n.op_type == "BatchNormalization" && n.input(0) == conv_out)
                {
                    let stats = bn_stats(graph, bn, c_out)?;
                    let eps = bn.float("epsilon", 1e-5)?;
                    fold_into_conv(&shape, &mut weight_values, &mut bias, &stats, eps)
                        .map_err(|e| bn.error(e.to_string()))?;
                    notes.push(format!("`{}` folded into `{}`", bn.name, node.name));
                    source = None;
                    consumed = 2;
                }
                layers.push(Layer::Conv {
                    shape,
                    weight: weight_values,
                    bias,
                    source,
                });
                value = Value::Seq(c_out, shape.l_out);
            }
            ("BatchNormalization", Value::Seq(c, l)) => {
                let eps = node.float("epsilon", 1e-5)?;
                if eps != 1e-5 {
                    return Err(node.error(format!(
                        "epsilon {eps}: safegrad's BatchNorm1d uses PyTorch's default 1e-5"
                    )));
                }
                layers.push(Layer::BatchNorm {
                    c,
                    stats: bn_stats(graph, node, c)?,
                });
                value = Value::Seq(c, l);
            }
            ("Relu", _) => {
                if let Some(Layer::Linear { relu, .. }) = layers
                    .last_mut()
                    .filter(|_| matches!(value, Value::Dense(_)))
                {
                    if !*relu {
                        *relu = true;
                    } else {
                        layers.push(Layer::Relu);
                    }
                } else {
                    layers.push(Layer::Relu);
                }
            }
            ("Tanh", _) => layers.push(Layer::Tanh),
            ("Sigmoid", _) => layers.push(Layer::Sigmoid),
            (op @ ("MaxPool" | "AveragePool"), Value::Seq(c, l)) => {
                let (pad_b, pad_e) = super::eval::pads_of(node)?;
                let max = op == "MaxPool";
                if pad_b != pad_e || node.int("ceil_mode", 0)? != 0 {
                    return Err(not_here("a pooling with ceil_mode or asymmetric padding"));
                }
                if !max && pad_b > 0 && node.int("count_include_pad", 0)? == 0 {
                    return Err(not_here("an average pooling that excludes the padding"));
                }
                let dilation = super::eval::one_of(node, "dilations", 1)?;
                if !max && dilation != 1 {
                    return Err(not_here("a dilated average pooling"));
                }
                let shape = Pool1dShape::new(
                    c,
                    l,
                    super::eval::one_of(node, "kernel_shape", 0)?,
                    super::eval::one_of(node, "strides", 1)?,
                    pad_b,
                    if max { dilation } else { 1 },
                );
                if let Some(p) = shape.problem() {
                    return Err(node.error(p));
                }
                layers.push(if max {
                    Layer::MaxPool(shape)
                } else {
                    Layer::AvgPool(shape)
                });
                value = Value::Seq(c, shape.l_out);
            }
            ("GlobalAveragePool", Value::Seq(c, _)) => {
                layers.push(Layer::GlobalAvgPool { c });
                value = Value::Pooled(c);
            }
            ("Flatten", _) if node.int("axis", 1)? != 1 => {
                return Err(not_here("a Flatten at another axis than 1"))
            }
            // A row is flat already: `nn.Flatten` in front of a fully connected model.
            ("Flatten", Value::Pooled(c) | Value::Dense(c)) => value = Value::Dense(c),
            ("Flatten", Value::Seq(c, l)) => {
                layers.push(Layer::Flatten { n: c * l });
                value = Value::Dense(c * l);
            }
            ("Gemm", Value::Dense(n)) => {
                let w = weight(1)?;
                let trans_b = node.int("transB", 0)? != 0;
                if node.int("transA", 0)? != 0
                    || node.float("alpha", 1.0)? != 1.0
                    || node.float("beta", 1.0)? != 1.0
                {
                    return Err(not_here("a Gemm with transA, alpha or beta"));
                }
                let &[r, c] = w.shape.as_slice() else {
                    return Err(node.error("the weight is not a matrix"));
                };
                let (inputs, outputs) = if trans_b { (c, r) } else { (r, c) };
                if inputs != n {
                    return Err(node.error(format!("takes {inputs} features, the value has {n}")));
                }
                let weight_values = if trans_b {
                    super::eval::transposed(&w.data, r, c)
                } else {
                    w.data.clone()
                };
                let (bias, bias_name) = match node.input(2) {
                    Some(b) => {
                        let t = weight(2)?;
                        if t.len() != outputs {
                            return Err(not_here("a Gemm whose C is not a bias per output"));
                        }
                        (t.data.clone(), b.to_string())
                    }
                    None => (vec![0.0; outputs], String::new()),
                };
                layers.push(Layer::Linear {
                    inputs,
                    outputs,
                    weight: weight_values,
                    bias,
                    relu: false,
                    source: (node.required(1)?.to_string(), bias_name, trans_b),
                });
                value = Value::Dense(outputs);
            }
            ("MatMul", Value::Dense(n)) => {
                let w = weight(1)?;
                let &[inputs, outputs] = w.shape.as_slice() else {
                    return Err(node.error("the weight is not a matrix"));
                };
                if inputs != n {
                    return Err(node.error(format!("takes {inputs} features, the value has {n}")));
                }
                let add = next
                    .filter(|a| {
                        a.op_type == "Add" && a.input(0) == node.outputs.first().map(String::as_str)
                    })
                    .ok_or_else(|| not_here("a MatMul not followed by the Add of a bias"))?;
                let bias_name = add.required(1)?;
                let bias = constant(graph, bias_name)
                    .filter(|b| b.len() == outputs)
                    .ok_or_else(|| {
                        add.error("the bias is not an initialiser of one value per output")
                    })?;
                layers.push(Layer::Linear {
                    inputs,
                    outputs,
                    weight: w.data.clone(),
                    bias: bias.data.clone(),
                    relu: false,
                    source: (node.required(1)?.to_string(), bias_name.to_string(), false),
                });
                value = Value::Dense(outputs);
                consumed = 2;
            }
            ("LayerNormalization", Value::Dense(n)) => {
                let eps = node.float("epsilon", 1e-5)?;
                if eps != 1e-5 || node.int("axis", -1)? != -1 && node.int("axis", -1)? != 1 {
                    return Err(not_here(
                        "a LayerNormalization with another epsilon or axis",
                    ));
                }
                let gamma = weight(1)?.data.clone();
                let beta = match node.input(2) {
                    Some(_) => weight(2)?.data.clone(),
                    None => vec![0.0; n],
                };
                if gamma.len() != n || beta.len() != n {
                    return Err(node.error("scale and bias must hold one value per feature"));
                }
                layers.push(Layer::LayerNorm { c: n, gamma, beta });
            }
            ("Softmax", Value::Dense(_)) if i + 1 == nodes.len() => {
                notes.push(format!(
                    "the final `{}` is dropped: the model gives logits, as training needs",
                    node.name
                ));
            }
            (op, _) => return Err(not_here(&format!("`{op}`"))),
        }
        let last = nodes[i + consumed - 1];
        current = last.outputs.first().cloned().unwrap_or_default();
        i += consumed;
    }
    if current != *output && !notes.iter().any(|n| n.contains("Softmax")) {
        return Err(OnnxError::Graph(format!(
            "the chain ends at `{current}`, not at the output `{output}`"
        )));
    }
    let output_len = match value {
        Value::Dense(n) | Value::Pooled(n) => n,
        Value::Seq(c, l) => c * l,
    };
    Ok(Imported {
        layers,
        input_len: input.sample_len(),
        output_len,
        notes,
    })
}

/// A batch normalisation's statistics in safegrad's layout: gamma, beta, mean, variance.
fn bn_stats(graph: &Graph, node: &Node, c: usize) -> Result<Vec<f32>, OnnxError> {
    if node.int("training_mode", 0)? != 0 {
        return Err(node.error("training_mode: export the model in eval mode"));
    }
    let mut stats = Vec::with_capacity(4 * c);
    for k in 1..=4 {
        let name = node.required(k)?;
        let t = constant(graph, name)
            .filter(|t| t.len() == c)
            .ok_or_else(|| node.error(format!("`{name}` is not an initialiser of {c} values")))?;
        stats.extend_from_slice(&t.data);
    }
    Ok(stats)
}

impl Imported {
    /// The importer's tape holding `checkpoint`'s parameters, after safegrad's checks (magic,
    /// CRC, the shape signature of these layers, finite values).
    fn load_checkpoint(&self, checkpoint_bytes: &[u8]) -> Result<Vec<f32>, String> {
        let mut tape = Box::new(ImportTape::new());
        for layer in &self.layers {
            for (rows, cols, _) in layer.parameters() {
                tape.flat_parameter(rows, cols, false)
                    .map_err(|e| format!("the model does not fit the importer's tape: {e}"))?;
            }
        }
        checkpoint::load(&mut *tape, checkpoint_bytes)
            .map_err(|e| format!("the checkpoint does not fit this model: {e}"))?;
        Ok(tape.parameters().to_vec())
    }

    /// The ONNX model `model` (the one this import read) with its initialisers set from a
    /// checkpoint of this model (fine-tuned, say): each layer's weights written back in
    /// ONNX's layout (a `Gemm` weight transposed back to `[OUT, IN]`), into its initialiser
    /// or the `Constant` node that holds it; a layer that did not change is left as it is.
    /// A parameter that changed but has no tensor of its own (a convolution with a batch
    /// normalisation folded in, a layer normalisation) is refused.
    pub fn export(
        &self,
        model: &onnx_protobuf::ModelProto,
        checkpoint_bytes: &[u8],
    ) -> Result<onnx_protobuf::ModelProto, String> {
        let values = self.load_checkpoint(checkpoint_bytes)?;
        let mut out = model.clone();
        let graph = out
            .graph
            .as_mut()
            .ok_or_else(|| "the model has no graph".to_string())?;
        let mut at = 0;
        for layer in &self.layers {
            let params = layer.parameters();
            let mut news: Vec<&[f32]> = Vec::new();
            for (rows, cols, old) in &params {
                let new = values
                    .get(at..at + rows * cols)
                    .ok_or_else(|| "the checkpoint is shorter than the model".to_string())?;
                at += rows * cols;
                let _ = old;
                news.push(new);
            }
            let changed = params
                .iter()
                .zip(&news)
                .any(|((_, _, old), new)| old != new);
            // The initialisers of the weight and the bias, and the weight in ONNX's layout.
            let target: Option<(&String, Vec<f32>, &String)> = match layer {
                Layer::Linear {
                    inputs,
                    outputs,
                    source: (w, b, trans_b),
                    ..
                } => {
                    let weight = if *trans_b {
                        super::eval::transposed(news[0], *inputs, *outputs)
                    } else {
                        news[0].to_vec()
                    };
                    Some((w, weight, b))
                }
                Layer::Conv {
                    source: Some((w, b)),
                    ..
                } => Some((w, news[0].to_vec(), b)),
                _ if changed => {
                    return Err(format!(
                        "{} changed, and it has no ONNX initialiser of its own to write back",
                        layer.type_name()
                    ))
                }
                _ => None,
            };
            let mut writes = Vec::new();
            if let Some((w, weight, b)) = target {
                writes.push((w.clone(), weight));
                if !b.is_empty() {
                    writes.push((b.clone(), news[1].to_vec()));
                } else if news[1].iter().any(|&x| x != 0.0) {
                    return Err(format!(
                        "{}: the bias was trained, but the ONNX layer has none",
                        layer.type_name()
                    ));
                }
            }
            // An unchanged layer keeps its tensors as they are, wherever they are held.
            if !changed {
                continue;
            }
            for (name, data) in writes {
                let t = tensor_named(graph, &name)?;
                t.float_data.clear();
                t.double_data.clear();
                t.int32_data.clear();
                t.int64_data.clear();
                t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                t.data_type = onnx_protobuf::tensor_proto::DataType::FLOAT as i32;
            }
        }
        if at != values.len() {
            return Err("the checkpoint is longer than the model".into());
        }
        Ok(out)
    }
}
