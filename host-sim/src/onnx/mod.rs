//! ONNX models on the host: read a model exported from PyTorch (or any ONNX writer), run it
//! through safegrad's kernels ([`eval`]), audit it for unguarded domains ([`audit`]).
//!
//! The file is parsed with `onnx-protobuf`, the ONNX protocol-buffer messages generated for
//! the `protobuf` runtime and nothing else. The raw messages are what the audit needs: every
//! node keeps its ONNX name and op type, and no pass renames, fuses or folds a node before the
//! audit sees it. (burn's `onnx-ir` re-exports the same messages, but it brings burn's tensor
//! crates, about a hundred more crates to build, for a graph processing that is not used.)
//!
//! [`load`] checks the whole graph before anything runs: an op outside [`SUPPORTED`], a
//! value defined twice or read before it is defined, a tensor of another type than `float`,
//! `double`, `int64`, `int32` or `bool` is refused with an error naming the node. An
//! attribute's value is checked where the op reads it.

pub mod audit;
pub mod commands;
pub mod eval;
pub mod import;
pub mod tensor;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{AttributeProto, Message, ModelProto, TensorProto};
use protobuf::Enum;

/// The ONNX messages (`onnx-protobuf`), for code that edits a model before or after import.
pub use onnx_protobuf as proto;
pub use tensor::Tensor;

/// The ONNX ops safegrad reads, by ONNX op type.
pub const SUPPORTED: &[&str] = &[
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Tanh",
    "Sigmoid",
    "Conv",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "LayerNormalization",
    "Softmax",
    "Where",
    "Equal",
    "Not",
    "Greater",
    "Less",
    "Constant",
    "Log",
    "Sqrt",
    "Abs",
    "Neg",
];

/// The attribute that marks a `Softmax` of opset 12 or older (over the flattened axes from
/// `axis` on).
pub(crate) const SOFTMAX_2D: &str = "safegrad.softmax_2d";

/// Why a model cannot be read or run.
#[derive(Clone, Debug, PartialEq)]
pub enum OnnxError {
    /// The file could not be read.
    Io(String),
    /// The bytes are not an ONNX model.
    Parse(String),
    /// Nodes whose ops safegrad does not import: each op type with the first node using it.
    UnsupportedOps(Vec<(String, String)>),
    /// Something else about a node is not supported or not consistent.
    Node {
        /// The node's name.
        node: String,
        /// The ONNX op type.
        op_type: String,
        /// What is wrong.
        message: String,
    },
    /// Something about the graph as a whole (its inputs, outputs or initialisers).
    Graph(String),
}

impl fmt::Display for OnnxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(m) => write!(f, "cannot read the model: {m}"),
            Self::Parse(m) => write!(f, "not an ONNX model: {m}"),
            Self::UnsupportedOps(ops) => {
                let list: Vec<String> = ops
                    .iter()
                    .map(|(op, node)| format!("`{op}` (node `{node}`)"))
                    .collect();
                write!(
                    f,
                    "unsupported ONNX op{} {}; safegrad imports {}",
                    if ops.len() == 1 { "" } else { "s" },
                    list.join(", "),
                    SUPPORTED.join(", ")
                )
            }
            Self::Node {
                node,
                op_type,
                message,
            } => write!(f, "node `{node}` ({op_type}): {message}"),
            Self::Graph(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for OnnxError {}

/// An attribute's value, as the supported ops use them.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOAT`.
    Float(f32),
    /// `FLOATS`.
    Floats(Vec<f32>),
    /// `STRING`.
    Str(String),
    /// `TENSOR`.
    Tensor(Tensor),
}

/// One node of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The node's ONNX name, or `OpType_i` (its op type and index) if the file gives none.
    pub name: String,
    /// The ONNX op type.
    pub op_type: String,
    /// The names of its inputs (an empty name is an omitted optional input).
    pub inputs: Vec<String>,
    /// The names of its outputs.
    pub outputs: Vec<String>,
    /// Its attributes by name.
    pub attrs: HashMap<String, Attr>,
}

impl Node {
    /// An error about this node.
    pub fn error(&self, message: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: self.name.clone(),
            op_type: self.op_type.clone(),
            message: message.into(),
        }
    }

    /// An integer attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, OnnxError> {
        match self.attrs.get(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(other) => Err(self.error(format!("attribute `{name}` is {other:?}, not an int"))),
        }
    }

    /// A float attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> Result<f32, OnnxError> {
        match self.attrs.get(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(other) => Err(self.error(format!("attribute `{name}` is {other:?}, not a float"))),
        }
    }

    /// An integer-list attribute, if present.
    pub fn ints(&self, name: &str) -> Result<Option<&[i64]>, OnnxError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(other) => Err(self.error(format!("attribute `{name}` is {other:?}, not ints"))),
        }
    }

    /// The `i`-th input's name, if given (not omitted).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|n| !n.is_empty())
    }

    /// The `i`-th input's name, or an error saying it is missing.
    pub fn required(&self, i: usize) -> Result<&str, OnnxError> {
        self.input(i)
            .ok_or_else(|| self.error(format!("input {i} is missing")))
    }
}

/// A graph input: its name and shape (a symbolic dimension, such as a batch axis, is `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// The input's name.
    pub name: String,
    /// Its dimensions.
    pub dims: Vec<Option<usize>>,
}

impl Input {
    /// The number of values of one sample: the product of the dimensions, a symbolic one
    /// (the batch) counted as 1.
    pub fn sample_len(&self) -> usize {
        self.dims
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(d.unwrap_or(1)))
            .unwrap_or(usize::MAX)
    }

    /// The shape of one sample (symbolic dimensions as 1).
    pub fn sample_shape(&self) -> Vec<usize> {
        self.dims.iter().map(|d| d.unwrap_or(1)).collect()
    }
}

/// A model's graph: inputs, initialisers, nodes in order, outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// The inputs a caller feeds (initialisers listed as inputs are not among them).
    pub inputs: Vec<Input>,
    /// The names of the outputs.
    pub outputs: Vec<String>,
    /// The initialisers (weights) by name, in the file's order.
    pub initializers: Vec<(String, Tensor)>,
    /// The nodes, in topological order.
    pub nodes: Vec<Node>,
    /// The opset version of the default domain.
    pub opset: i64,
}

impl Graph {
    /// The initialiser `name`.
    pub fn initializer(&self, name: &str) -> Option<&Tensor> {
        self.initializers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    /// The node that produces `value`, with its index.
    pub fn producer(&self, value: &str) -> Option<(usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.outputs.iter().any(|o| o == value))
    }
}

/// Reads and checks the model at `path` (see [`parse`]).
pub fn load(path: &Path) -> Result<(ModelProto, Graph), OnnxError> {
    let bytes =
        std::fs::read(path).map_err(|e| OnnxError::Io(format!("{}: {e}", path.display())))?;
    parse(&bytes)
}

/// The bytes of an ONNX model (to write a file).
pub fn encode(model: &ModelProto) -> Result<Vec<u8>, OnnxError> {
    model
        .write_to_bytes()
        .map_err(|e| OnnxError::Parse(e.to_string()))
}

/// Parses an ONNX model and checks that every node is supported; returns the message (to
/// write back updated initialisers) and the graph.
pub fn parse(bytes: &[u8]) -> Result<(ModelProto, Graph), OnnxError> {
    let model = ModelProto::parse_from_bytes(bytes).map_err(|e| OnnxError::Parse(e.to_string()))?;
    let graph = graph_of(&model)?;
    Ok((model, graph))
}

fn graph_of(model: &ModelProto) -> Result<Graph, OnnxError> {
    let Some(g) = model.graph.as_ref() else {
        return Err(OnnxError::Parse("the model has no graph".into()));
    };
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0);
    let mut initializers = Vec::new();
    for t in &g.initializer {
        let tensor =
            tensor_of(t).map_err(|m| OnnxError::Graph(format!("initialiser `{}`: {m}", t.name)))?;
        initializers.push((t.name.clone(), tensor));
    }
    let mut inputs = Vec::new();
    for vi in &g.input {
        if initializers.iter().any(|(n, _)| *n == vi.name) {
            continue;
        }
        let dims =
            input_dims(vi).map_err(|m| OnnxError::Graph(format!("input `{}`: {m}", vi.name)))?;
        inputs.push(Input {
            name: vi.name.clone(),
            dims,
        });
    }
    let mut nodes = Vec::new();
    let mut unsupported: Vec<(String, String)> = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        let name = if n.name.is_empty() {
            format!("{}_{i}", n.op_type)
        } else {
            n.name.clone()
        };
        let standard = n.domain.is_empty() || n.domain == "ai.onnx";
        if !standard || !SUPPORTED.contains(&n.op_type.as_str()) {
            let op = if standard {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            };
            if !unsupported.iter().any(|(o, _)| *o == op) {
                unsupported.push((op, name));
            }
            continue;
        }
        let mut attrs = HashMap::new();
        for a in &n.attribute {
            let value = attr_of(a).map_err(|m| OnnxError::Node {
                node: name.clone(),
                op_type: n.op_type.clone(),
                message: format!("attribute `{}`: {m}", a.name),
            })?;
            attrs.insert(a.name.clone(), value);
        }
        if n.op_type == "Softmax" && opset < 13 {
            // Before opset 13, Softmax flattens the axes from `axis` (default 1) into one.
            attrs.entry("axis".into()).or_insert(Attr::Int(1));
            attrs.insert(SOFTMAX_2D.into(), Attr::Int(1));
        }
        nodes.push(Node {
            name,
            op_type: n.op_type.clone(),
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs,
        });
    }
    if !unsupported.is_empty() {
        return Err(OnnxError::UnsupportedOps(unsupported));
    }
    let outputs = g.output.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    let graph = Graph {
        inputs,
        outputs,
        initializers,
        nodes,
        opset,
    };
    check_order(&graph)?;
    Ok(graph)
}

/// Every node reads values defined before it, and every output is defined.
fn check_order(graph: &Graph) -> Result<(), OnnxError> {
    let mut defined: std::collections::HashSet<&str> = graph
        .inputs
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializers.iter().map(|(n, _)| n.as_str()))
        .collect();
    for node in &graph.nodes {
        for input in node.inputs.iter().filter(|n| !n.is_empty()) {
            if !defined.contains(input.as_str()) {
                return Err(node.error(format!(
                    "reads `{input}`, which no input, initialiser or earlier node defines"
                )));
            }
        }
        for output in &node.outputs {
            // ONNX defines every value once.
            if !defined.insert(output.as_str()) {
                return Err(node.error(format!("defines `{output}` a second time")));
            }
        }
    }
    for out in &graph.outputs {
        if !defined.contains(out.as_str()) {
            return Err(OnnxError::Graph(format!(
                "output `{out}` is never computed"
            )));
        }
    }
    if graph.inputs.is_empty() {
        return Err(OnnxError::Graph("the graph has no input".into()));
    }
    Ok(())
}

fn input_dims(vi: &onnx_protobuf::ValueInfoProto) -> Result<Vec<Option<usize>>, String> {
    use onnx_protobuf::tensor_shape_proto::dimension::Value;
    use onnx_protobuf::type_proto::Value as TypeValue;
    let Some(TypeValue::TensorType(t)) = vi.type_.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err("is not a tensor".into());
    };
    if t.elem_type != DataType::FLOAT as i32 {
        return Err(format!(
            "has element type {}, safegrad reads float inputs",
            type_name(t.elem_type)
        ));
    }
    let Some(shape) = t.shape.as_ref() else {
        return Err("has no shape".into());
    };
    shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(v)) => usize::try_from(*v)
                .map(Some)
                .map_err(|_| format!("has a negative dimension {v}")),
            _ => Ok(None),
        })
        .collect()
}

fn type_name(t: i32) -> String {
    match DataType::from_i32(t) {
        Some(d) => format!("{d:?}"),
        None => format!("#{t}"),
    }
}

/// A tensor initialiser or constant: `float` kept, `int64`, `int32`, `double` and `bool`
/// converted to `f32` (exactly, for the small integers of shapes and axes).
pub fn tensor_of(t: &TensorProto) -> Result<Tensor, String> {
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    let len = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= 1 << 28)
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if !t.external_data.is_empty() {
        return Err("its data is stored outside the file (external data is not supported)".into());
    }
    let raw = &t.raw_data;
    let data: Vec<f32> = match DataType::from_i32(t.data_type) {
        Some(DataType::FLOAT) if !raw.is_empty() => {
            chunks::<4>(raw)?.map(f32::from_le_bytes).collect()
        }
        Some(DataType::FLOAT) => t.float_data.clone(),
        Some(DataType::DOUBLE) if !raw.is_empty() => chunks::<8>(raw)?
            .map(|b| f64::from_le_bytes(b) as f32)
            .collect(),
        Some(DataType::DOUBLE) => t.double_data.iter().map(|&v| v as f32).collect(),
        Some(DataType::INT64) if !raw.is_empty() => chunks::<8>(raw)?
            .map(|b| i64::from_le_bytes(b) as f32)
            .collect(),
        Some(DataType::INT64) => t.int64_data.iter().map(|&v| v as f32).collect(),
        Some(DataType::INT32) if !raw.is_empty() => chunks::<4>(raw)?
            .map(|b| i32::from_le_bytes(b) as f32)
            .collect(),
        Some(DataType::INT32) => t.int32_data.iter().map(|&v| v as f32).collect(),
        Some(DataType::BOOL) if !raw.is_empty() => raw.iter().map(|&b| f32::from(b != 0)).collect(),
        Some(DataType::BOOL) => t.int32_data.iter().map(|&v| f32::from(v != 0)).collect(),
        _ => {
            return Err(format!(
                "element type {} is not supported (float, double, int64, int32 or bool)",
                type_name(t.data_type)
            ))
        }
    };
    if data.len() != len {
        return Err(format!(
            "holds {} values for shape {shape:?} ({len} values)",
            data.len()
        ));
    }
    Ok(Tensor::new(shape, data))
}

fn chunks<const N: usize>(raw: &[u8]) -> Result<impl Iterator<Item = [u8; N]> + '_, String> {
    if !raw.len().is_multiple_of(N) {
        return Err(format!(
            "raw data of {} bytes is not a whole number of {N}-byte values",
            raw.len()
        ));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| <[u8; N]>::try_from(c).unwrap_or([0; N])))
}

fn attr_of(a: &AttributeProto) -> Result<Attr, String> {
    use onnx_protobuf::attribute_proto::AttributeType;
    match a.type_.enum_value() {
        Ok(AttributeType::INT) => Ok(Attr::Int(a.i)),
        Ok(AttributeType::INTS) => Ok(Attr::Ints(a.ints.clone())),
        Ok(AttributeType::FLOAT) => Ok(Attr::Float(a.f)),
        Ok(AttributeType::FLOATS) => Ok(Attr::Floats(a.floats.clone())),
        Ok(AttributeType::STRING) => Ok(Attr::Str(String::from_utf8_lossy(&a.s).into_owned())),
        Ok(AttributeType::TENSOR) => match a.t.as_ref() {
            Some(t) => tensor_of(t).map(Attr::Tensor),
            None => Err("a tensor attribute without its tensor".into()),
        },
        Ok(other) => Err(format!("attributes of type {other:?} are not supported")),
        Err(v) => Err(format!("unknown attribute type {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::{GraphProto, NodeProto, OperatorSetIdProto, ValueInfoProto};

    fn float_input(name: &str, dims: &[i64]) -> ValueInfoProto {
        use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
        use onnx_protobuf::type_proto::{self, Value};
        use onnx_protobuf::{TensorShapeProto, TypeProto};
        let shape = TensorShapeProto {
            dim: dims
                .iter()
                .map(|&d| Dimension {
                    value: Some(dimension::Value::DimValue(d)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ValueInfoProto {
            name: name.into(),
            type_: Some(TypeProto {
                value: Some(Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::FLOAT as i32,
                    shape: Some(shape).into(),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: format!("/{op}_{output}"),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn model(nodes: Vec<NodeProto>, dims: &[i64], output: &str) -> Vec<u8> {
        let m = ModelProto {
            graph: Some(GraphProto {
                node: nodes,
                input: vec![float_input("x", dims)],
                output: vec![ValueInfoProto {
                    name: output.into(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .into(),
            opset_import: vec![OperatorSetIdProto {
                version: 17,
                ..Default::default()
            }],
            ..Default::default()
        };
        encode(&m).unwrap()
    }

    #[test]
    fn a_value_defined_twice_is_refused() {
        // `c = Not(x); c = Not(c)` would send the audit's `Where` reasoning in circles.
        let bytes = model(
            vec![node("Not", &["x"], "c"), node("Not", &["c"], "c")],
            &[1, 2],
            "c",
        );
        let err = parse(&bytes).unwrap_err();
        assert!(
            err.to_string().contains("defines `c` a second time"),
            "{err}"
        );
    }

    #[test]
    fn max_pooling_keeps_a_nan_and_empty_inputs_are_refused() {
        let mut pool = node("MaxPool", &["x"], "y");
        pool.attribute = vec![AttributeProto {
            name: "kernel_shape".into(),
            type_: onnx_protobuf::attribute_proto::AttributeType::INTS.into(),
            ints: vec![2],
            ..Default::default()
        }];
        let bytes = model(
            vec![node("Sqrt", &["x"], "s"), {
                let mut p = pool.clone();
                p.input = vec!["s".into()];
                p
            }],
            &[1, 1, 2],
            "y",
        );
        let (_, graph) = parse(&bytes).unwrap();
        // sqrt(-1) is nan: PyTorch's max pooling (and the core's) gives nan, not 2.
        let y = eval::run(&graph, &[Tensor::new(vec![1, 1, 2], vec![-1.0, 4.0])]).unwrap();
        assert!(y[0].data[0].is_nan(), "{:?}", y[0].data);
        // A pooling of an input of length 0 is an error, not a panic.
        let bytes = model(vec![pool], &[1, 1, 0], "y");
        let (_, graph) = parse(&bytes).unwrap();
        let err = eval::run(&graph, &[Tensor::new(vec![1, 1, 0], vec![])]).unwrap_err();
        assert!(err.to_string().contains("[1, 1, 0]"), "{err}");
    }
}
