//! The forward pass of an ONNX graph, node by node, through safegrad's kernels: the fully
//! connected product of `Gemm` and `MatMul` is [`kernels::linear`], a convolution
//! [`ops::conv::conv1d`](safegrad::ops::conv::conv1d), pooling, batch and layer
//! normalisation and softmax the core's own formulas, and the elementwise functions the
//! core's scalars. A model imported as safegrad layers therefore computes the same values
//! here as on the device.
//!
//! Shapes are ONNX's: `[N, C, L]` for 1-D convolution and pooling, `[N, F]` for fully
//! connected layers, numpy broadcasting for the elementwise ops.

use std::collections::HashMap;

use safegrad::ops::batch_norm::batch_norm;
use safegrad::ops::conv::{conv1d, Conv1dShape};
use safegrad::ops::pool::{avg_pool1d, global_avg_pool, Pool1dShape};
use safegrad::ops::{layer_norm, relu, sigmoid, softmax};
use safegrad::tensor::kernels;
use safegrad::Scalar;

use super::tensor::{select, zip_with, Tensor};
use super::{Graph, Node, OnnxError};

/// Runs `graph` on `feeds` (one tensor per graph input, in order) and returns its outputs.
pub fn run(graph: &Graph, feeds: &[Tensor]) -> Result<Vec<Tensor>, OnnxError> {
    if feeds.len() != graph.inputs.len() {
        return Err(OnnxError::Graph(format!(
            "the model takes {} inputs, {} given",
            graph.inputs.len(),
            feeds.len()
        )));
    }
    let mut values: HashMap<&str, Tensor> = HashMap::new();
    for (input, feed) in graph.inputs.iter().zip(feeds) {
        let fits = input.dims.len() == feed.shape.len()
            && input
                .dims
                .iter()
                .zip(&feed.shape)
                .all(|(d, &f)| d.is_none_or(|d| d == f));
        if !fits {
            return Err(OnnxError::Graph(format!(
                "input `{}` has shape {:?}; the model expects {}",
                input.name,
                feed.shape,
                dims_text(&input.dims)
            )));
        }
        if let Some(i) = feed.data.iter().position(|v| !v.is_finite()) {
            return Err(OnnxError::Graph(format!(
                "input `{}` value {i} is {}, not finite",
                input.name, feed.data[i]
            )));
        }
        values.insert(&input.name, feed.clone());
    }
    for (name, t) in &graph.initializers {
        values.insert(name, t.clone());
    }
    for node in &graph.nodes {
        let out = step(node, &values)?;
        let Some(name) = node.outputs.first() else {
            return Err(node.error("has no output"));
        };
        values.insert(name, out);
    }
    graph
        .outputs
        .iter()
        .map(|o| {
            values
                .get(o.as_str())
                .cloned()
                .ok_or_else(|| OnnxError::Graph(format!("output `{o}` is never computed")))
        })
        .collect()
}

fn dims_text(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("N".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn get<'a>(
    node: &Node,
    values: &'a HashMap<&str, Tensor>,
    i: usize,
) -> Result<&'a Tensor, OnnxError> {
    let name = node.required(i)?;
    values
        .get(name)
        .ok_or_else(|| node.error(format!("input `{name}` has no value")))
}

fn get_opt<'a>(
    node: &Node,
    values: &'a HashMap<&str, Tensor>,
    i: usize,
) -> Result<Option<&'a Tensor>, OnnxError> {
    match node.input(i) {
        None => Ok(None),
        Some(_) => get(node, values, i).map(Some),
    }
}

fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Tensor {
    Tensor::new(x.shape.clone(), x.data.iter().map(|&v| f(v)).collect())
}

fn binary(
    node: &Node,
    values: &HashMap<&str, Tensor>,
    f: impl Fn(f32, f32) -> f32,
) -> Result<Tensor, OnnxError> {
    let a = get(node, values, 0)?;
    let b = get(node, values, 1)?;
    zip_with(a, b, f).ok_or_else(|| {
        node.error(format!(
            "shapes {:?} and {:?} do not broadcast",
            a.shape, b.shape
        ))
    })
}

/// One node's output.
fn step(node: &Node, values: &HashMap<&str, Tensor>) -> Result<Tensor, OnnxError> {
    let x = || get(node, values, 0);
    Ok(match node.op_type.as_str() {
        "Add" => binary(node, values, |a, b| a + b)?,
        "Sub" => binary(node, values, |a, b| a - b)?,
        "Mul" => binary(node, values, |a, b| a * b)?,
        "Div" => binary(node, values, |a, b| a / b)?,
        "Equal" => binary(node, values, |a, b| f32::from(a == b))?,
        "Greater" => binary(node, values, |a, b| f32::from(a > b))?,
        "Less" => binary(node, values, |a, b| f32::from(a < b))?,
        "Not" => map(x()?, |v| f32::from(v == 0.0)),
        "Relu" => map(x()?, relu),
        "Sigmoid" => map(x()?, sigmoid),
        "Tanh" => map(x()?, Scalar::tanh),
        "Log" => map(x()?, Scalar::ln),
        "Sqrt" => map(x()?, Scalar::sqrt),
        "Abs" => map(x()?, Scalar::abs),
        "Neg" => map(x()?, |v| -v),
        "Where" => {
            let (c, a, b) = (x()?, get(node, values, 1)?, get(node, values, 2)?);
            select(c, a, b).ok_or_else(|| {
                node.error(format!(
                    "shapes {:?}, {:?} and {:?} do not broadcast",
                    c.shape, a.shape, b.shape
                ))
            })?
        }
        "Constant" => run_constant(node)?,
        "Gemm" => gemm(node, values)?,
        "MatMul" => matmul(node, x()?, get(node, values, 1)?)?,
        "Conv" => conv(node, values)?,
        "BatchNormalization" => batch_norm_node(node, values)?,
        "MaxPool" => pool(node, x()?, true)?,
        "AveragePool" => pool(node, x()?, false)?,
        "GlobalAveragePool" => global_average(node, x()?)?,
        "ReduceMean" => reduce_mean(node, values)?,
        "Flatten" => flatten(node, x()?)?,
        "Reshape" => reshape(node, x()?, get(node, values, 1)?)?,
        "LayerNormalization" => layer_norm_node(node, values)?,
        "Softmax" => softmax_node(node, x()?)?,
        other => {
            return Err(OnnxError::UnsupportedOps(vec![(
                other.to_string(),
                node.name.clone(),
            )]))
        }
    })
}

/// The value of a `Constant` node.
pub(crate) fn run_constant(node: &Node) -> Result<Tensor, OnnxError> {
    use super::Attr;
    match (
        node.attrs.get("value"),
        node.attrs.get("value_float"),
        node.attrs.get("value_floats"),
        node.attrs.get("value_int"),
        node.attrs.get("value_ints"),
    ) {
        (Some(Attr::Tensor(t)), ..) => Ok(t.clone()),
        (_, Some(Attr::Float(v)), ..) => Ok(Tensor::new(vec![], vec![*v])),
        (_, _, Some(Attr::Floats(v)), ..) => Ok(Tensor::new(vec![v.len()], v.clone())),
        (_, _, _, Some(Attr::Int(v)), _) => Ok(Tensor::new(vec![], vec![*v as f32])),
        (_, _, _, _, Some(Attr::Ints(v))) => Ok(Tensor::new(
            vec![v.len()],
            v.iter().map(|&i| i as f32).collect(),
        )),
        _ => Err(node.error("a Constant needs a value, value_float(s) or value_int(s) attribute")),
    }
}

/// A matrix transposed: `rows x cols` to `cols x rows`.
pub(crate) fn transposed(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// `alpha * A' B' + beta * C`: with `alpha = beta = 1` and a bias per column (PyTorch's
/// `nn.Linear`), the core's fully connected kernel, bias first, as a `Linear` layer.
fn gemm(node: &Node, values: &HashMap<&str, Tensor>) -> Result<Tensor, OnnxError> {
    let a = get(node, values, 0)?;
    let b = get(node, values, 1)?;
    let c = get_opt(node, values, 2)?;
    let (alpha, beta) = (node.float("alpha", 1.0)?, node.float("beta", 1.0)?);
    let (trans_a, trans_b) = (node.int("transA", 0)? != 0, node.int("transB", 0)? != 0);
    let [ar, ac] = two_d(node, a, "A")?;
    let [br, bc] = two_d(node, b, "B")?;
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != kb {
        return Err(node.error(format!(
            "A is {m} x {k} and B is {kb} x {n}: the inner dimensions differ"
        )));
    }
    let a_rows = if trans_a {
        transposed(&a.data, ar, ac)
    } else {
        a.data.clone()
    };
    let w = if trans_b {
        transposed(&b.data, br, bc)
    } else {
        b.data.clone()
    };
    let row_bias = c.filter(|c| c.len() == n && c.shape.iter().rev().skip(1).all(|&d| d == 1));
    let mut out = vec![0.0f32; m * n];
    if alpha == 1.0 && beta == 1.0 && (row_bias.is_some() || c.is_none()) {
        kernels::linear(
            &a_rows,
            &w,
            row_bias.map(|c| c.data.as_slice()),
            &mut out,
            k,
            n,
        );
        return Ok(Tensor::new(vec![m, n], out));
    }
    kernels::matmul(&a_rows, &w, &mut out, k, n);
    let mut y = Tensor::new(vec![m, n], out.iter().map(|&v| alpha * v).collect());
    if let Some(c) = c {
        y = zip_with(&y, c, |v, c| v + beta * c).ok_or_else(|| {
            node.error(format!(
                "C of shape {:?} does not broadcast to [{m}, {n}]",
                c.shape
            ))
        })?;
    }
    Ok(y)
}

fn two_d(node: &Node, t: &Tensor, what: &str) -> Result<[usize; 2], OnnxError> {
    match t.shape.as_slice() {
        &[r, c] => Ok([r, c]),
        other => Err(node.error(format!("{what} has shape {other:?}; Gemm takes matrices"))),
    }
}

/// `A B` as numpy's `matmul`: `A` of shape `[..., M, K]`, `B` a `K x N` matrix (the
/// leading axes of `A` are rows) or `[..., K, N]` with leading axes that broadcast
/// against `A`'s; a vector `A` (`[K]`) is one row.
fn matmul(node: &Node, a: &Tensor, b: &Tensor) -> Result<Tensor, OnnxError> {
    let mismatch = || {
        node.error(format!(
            "A has shape {:?} and B {:?}: they do not multiply",
            a.shape, b.shape
        ))
    };
    let (&k, &n) = match b.shape.as_slice() {
        [.., k, n] => (k, n),
        _ => return Err(mismatch()),
    };
    if a.shape.last() != Some(&k) {
        return Err(mismatch());
    }
    if b.shape.len() == 2 {
        let rows: usize = a.shape[..a.shape.len() - 1].iter().product();
        let mut out = vec![0.0f32; rows * n];
        kernels::matmul(&a.data, &b.data, &mut out, k, n);
        let mut shape = a.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        return Ok(Tensor::new(shape, out));
    }
    // Batched: the leading axes broadcast, each pair of matrices multiplied by the kernel.
    let a_shape: Vec<usize> = if a.shape.len() == 1 {
        vec![1, k]
    } else {
        a.shape.clone()
    };
    let m = a_shape[a_shape.len() - 2];
    let (a_lead, b_lead) = (&a_shape[..a_shape.len() - 2], &b.shape[..b.shape.len() - 2]);
    let lead = super::tensor::broadcast_shape(a_lead, b_lead).ok_or_else(mismatch)?;
    let ia = super::tensor::broadcast_indices(a_lead, &lead);
    let ib = super::tensor::broadcast_indices(b_lead, &lead);
    let mut out = vec![0.0f32; ia.len() * m * n];
    for ((&i, &j), o) in ia.iter().zip(&ib).zip(out.chunks_exact_mut((m * n).max(1))) {
        kernels::matmul(
            &a.data[i * m * k..(i + 1) * m * k],
            &b.data[j * k * n..(j + 1) * k * n],
            o,
            k,
            n,
        );
    }
    let mut shape = lead;
    if a.shape.len() > 1 {
        shape.push(m);
    }
    shape.push(n);
    Ok(Tensor::new(shape, out))
}

/// The largest kernel, stride, dilation, padding or group count accepted: larger ones are
/// refused rather than overflowing the geometry's arithmetic.
const LIMIT: i64 = 1 << 20;

/// A `[N, C, L]` tensor's dimensions, none of them zero.
fn ncl(node: &Node, x: &Tensor) -> Result<[usize; 3], OnnxError> {
    match x.shape.as_slice() {
        &[n, c, l] if n > 0 && c > 0 && l > 0 => Ok([n, c, l]),
        other => Err(node.error(format!(
            "input of shape {other:?}; safegrad runs 1-D convolution and pooling on [N, C, L]"
        ))),
    }
}

/// One of a 1-D op's `kernel_shape`, `strides`, `dilations` (length 1), or `default`.
pub(crate) fn one_of(node: &Node, name: &str, default: usize) -> Result<usize, OnnxError> {
    match node.ints(name)? {
        None => Ok(default),
        Some(&[v]) if (0..=LIMIT).contains(&v) => Ok(v as usize),
        Some(v) => Err(node.error(format!(
            "`{name}` is {v:?}; safegrad supports 1-D ops (one value)"
        ))),
    }
}

/// The padding before and after (`pads`), refusing `auto_pad` other than `NOTSET`.
pub(crate) fn pads_of(node: &Node) -> Result<(usize, usize), OnnxError> {
    if let Some(super::Attr::Str(mode)) = node.attrs.get("auto_pad") {
        if mode != "NOTSET" {
            return Err(node.error(format!(
                "auto_pad {mode} is not supported; export with explicit pads"
            )));
        }
    }
    match node.ints("pads")? {
        None => Ok((0, 0)),
        Some(&[b, e]) if (0..=LIMIT).contains(&b) && (0..=LIMIT).contains(&e) => {
            Ok((b as usize, e as usize))
        }
        Some(v) => Err(node.error(format!(
            "pads {v:?}: safegrad supports 1-D pads [begin, end]"
        ))),
    }
}

fn conv(node: &Node, values: &HashMap<&str, Tensor>) -> Result<Tensor, OnnxError> {
    let x = get(node, values, 0)?;
    let w = get(node, values, 1)?;
    let [n, c_in, l_in] = ncl(node, x)?;
    let (c_out, per_group, kernel) = match w.shape.as_slice() {
        &[o, i, k] => (o, i, k),
        other => {
            return Err(node.error(format!(
                "weight of shape {other:?}; safegrad's Conv is 1-D ([C_out, C_in / groups, K])"
            )))
        }
    };
    if one_of(node, "kernel_shape", kernel)? != kernel {
        return Err(node.error(format!(
            "kernel_shape differs from the weight's {kernel} taps"
        )));
    }
    let stride = one_of(node, "strides", 1)?;
    let dilation = one_of(node, "dilations", 1)?;
    let groups = node.int("group", 1)?.clamp(1, LIMIT) as usize;
    let (pad_begin, pad_end) = pads_of(node)?;
    if pad_begin != pad_end {
        return Err(node.error(format!(
            "pads [{pad_begin}, {pad_end}]: safegrad's Conv1d pads both ends alike"
        )));
    }
    if per_group * groups != c_in {
        return Err(node.error(format!(
            "the weight takes {per_group} channels per group, {groups} groups, but the input has {c_in}"
        )));
    }
    let shape = Conv1dShape::new(
        c_in, l_in, c_out, kernel, stride, pad_begin, dilation, groups,
    );
    if let Some(problem) = shape.problem() {
        return Err(node.error(problem));
    }
    let bias = match get_opt(node, values, 2)? {
        Some(b) if b.len() == c_out => b.data.clone(),
        Some(b) => {
            return Err(node.error(format!("bias of {} values for {c_out} channels", b.len())))
        }
        None => vec![0.0; c_out],
    };
    let l_out = shape.l_out;
    let mut y = vec![0.0f32; n * c_out * l_out];
    for (xs, ys) in x
        .data
        .chunks_exact(c_in * l_in)
        .zip(y.chunks_exact_mut(c_out * l_out))
    {
        conv1d(&shape, xs, &w.data, &bias, ys);
    }
    Ok(Tensor::new(vec![n, c_out, l_out], y))
}

fn batch_norm_node(node: &Node, values: &HashMap<&str, Tensor>) -> Result<Tensor, OnnxError> {
    let x = get(node, values, 0)?;
    let eps = node.float("epsilon", 1e-5)?;
    if node.int("training_mode", 0)? != 0 {
        return Err(node.error("training_mode is not supported: export the model in eval mode"));
    }
    let (n, c) = match x.shape.as_slice() {
        &[n, c, ..] if !x.is_empty() => (n, c),
        other => return Err(node.error(format!("input of shape {other:?}; expected [N, C, ...]"))),
    };
    let len = x.len() / (n * c).max(1);
    // The core's statistics: gamma, beta, mean, var, one row of C each.
    let mut stats = Vec::with_capacity(4 * c);
    for i in 1..=4 {
        let t = get(node, values, i)?;
        if t.len() != c {
            return Err(node.error(format!(
                "input {i} holds {} values for {c} channels",
                t.len()
            )));
        }
        stats.extend_from_slice(&t.data);
    }
    let mut y = vec![0.0f32; x.len()];
    for (xs, ys) in x
        .data
        .chunks_exact(c * len)
        .zip(y.chunks_exact_mut(c * len))
    {
        batch_norm(xs, len, &stats, eps, ys);
    }
    Ok(Tensor::new(x.shape.clone(), y))
}

/// Max or average pooling over `[N, C, L]`, PyTorch's geometry: `ceil_mode` keeps a last
/// window that starts inside the input or the padding before it; average pooling divides by
/// the window (`count_include_pad`) or by the input elements in it.
fn pool(node: &Node, x: &Tensor, max: bool) -> Result<Tensor, OnnxError> {
    let [n, c, l_in] = ncl(node, x)?;
    let kernel = one_of(node, "kernel_shape", 0)?;
    let stride = one_of(node, "strides", 1)?;
    let dilation = one_of(node, "dilations", 1)?;
    let (pad_begin, pad_end) = pads_of(node)?;
    let ceil = node.int("ceil_mode", 0)? != 0;
    let count_pad = node.int("count_include_pad", 0)? != 0;
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(node.error("kernel, stride and dilation must be at least 1"));
    }
    let span = dilation * (kernel - 1) + 1;
    // As PyTorch: a window that is padding only has no maximum (nor elements to average).
    if 2 * pad_begin.max(pad_end) > span {
        return Err(node.error(format!(
            "pads [{pad_begin}, {pad_end}]: a padding must be at most half the window ({span})"
        )));
    }
    let padded = l_in + pad_begin + pad_end;
    if padded < span {
        return Err(node.error(format!(
            "the window ({span}) is longer than the padded input ({padded})"
        )));
    }
    let mut l_out = if ceil {
        (padded - span).div_ceil(stride) + 1
    } else {
        (padded - span) / stride + 1
    };
    if ceil && (l_out - 1) * stride >= l_in + pad_begin {
        l_out -= 1;
    }
    // The core's kernel where its geometry is this one: symmetric padding, the padding
    // counted, no window past the padded end.
    let exact = (padded - span) % stride == 0 || !ceil;
    if !max && pad_begin == pad_end && (count_pad || pad_begin == 0) && exact && dilation == 1 {
        let shape = Pool1dShape::new(c, l_in, kernel, stride, pad_begin, 1);
        if shape.problem().is_none() && shape.l_out == l_out {
            let mut y = vec![0.0f32; n * c * l_out];
            for (xs, ys) in x
                .data
                .chunks_exact(c * l_in)
                .zip(y.chunks_exact_mut(c * l_out))
            {
                avg_pool1d(&shape, xs, ys);
            }
            return Ok(Tensor::new(vec![n, c, l_out], y));
        }
    }
    let mut y = Vec::with_capacity(n * c * l_out);
    for row in x.data.chunks_exact(l_in) {
        for t in 0..l_out {
            let start = (t * stride) as isize - pad_begin as isize;
            let mut best = f32::NEG_INFINITY;
            let mut sum = 0.0f32;
            let mut count = 0usize;
            let mut window = 0usize;
            for k in 0..kernel {
                let at = start + (k * dilation) as isize;
                // Positions in the padding before or after count towards `count_include_pad`
                // only up to the padded end.
                if at < l_in as isize + pad_end as isize {
                    window += 1;
                }
                if at < 0 || at >= l_in as isize {
                    continue;
                }
                let v = row[at as usize];
                // A nan wins, as in PyTorch and the core's max pooling.
                if v > best || v.is_nan() {
                    best = v;
                }
                sum += v;
                count += 1;
            }
            y.push(if max {
                best
            } else {
                let divisor = if count_pad { window } else { count };
                sum / divisor.max(1) as f32
            });
        }
    }
    Ok(Tensor::new(vec![n, c, l_out], y))
}

fn global_average(node: &Node, x: &Tensor) -> Result<Tensor, OnnxError> {
    let [n, c, l] = ncl(node, x)?;
    let mut y = vec![0.0f32; n * c];
    global_avg_pool(&x.data, l, &mut y);
    Ok(Tensor::new(vec![n, c, 1], y))
}

/// The axes of a reduction or normalisation, made non-negative.
fn axes_of(node: &Node, rank: usize, axes: &[i64]) -> Result<Vec<usize>, OnnxError> {
    let mut out = Vec::new();
    for &a in axes {
        let axis = if a < 0 { a + rank as i64 } else { a };
        if axis < 0 || axis >= rank as i64 {
            return Err(node.error(format!("axis {a} is out of range for rank {rank}")));
        }
        out.push(axis as usize);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The mean over `axes` (all if none), each output's terms summed in index order.
fn reduce_mean(node: &Node, values: &HashMap<&str, Tensor>) -> Result<Tensor, OnnxError> {
    let x = get(node, values, 0)?;
    let rank = x.shape.len();
    let listed = match (node.ints("axes")?, get_opt(node, values, 1)?) {
        (Some(a), _) => Some(a.to_vec()),
        (None, Some(t)) => Some(
            t.as_ints()
                .ok_or_else(|| node.error("axes are not integers"))?,
        ),
        (None, None) => None,
    };
    let axes = match listed {
        Some(a) if !a.is_empty() => axes_of(node, rank, &a)?,
        _ if node.int("noop_with_empty_axes", 0)? != 0 => return Ok(x.clone()),
        _ => (0..rank).collect(),
    };
    let keep = node.int("keepdims", 1)? != 0;
    let out_shape_kept: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let out_len: usize = out_shape_kept.iter().product();
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    let mut sums = vec![0.0f32; out_len];
    // Visit the input in row-major order: each output's terms arrive in index order.
    let mut pos = vec![0usize; rank];
    for &v in &x.data {
        let mut o = 0;
        for (i, &p) in pos.iter().enumerate() {
            let p = if axes.contains(&i) { 0 } else { p };
            o = o * out_shape_kept[i] + p;
        }
        sums[o] += v;
        for axis in (0..rank).rev() {
            pos[axis] += 1;
            if pos[axis] < x.shape[axis] {
                break;
            }
            pos[axis] = 0;
        }
    }
    let data = sums.iter().map(|&s| s / count.max(1) as f32).collect();
    let shape = if keep {
        out_shape_kept
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    Ok(Tensor::new(shape, data))
}

fn flatten(node: &Node, x: &Tensor) -> Result<Tensor, OnnxError> {
    let rank = x.shape.len() as i64;
    let axis = node.int("axis", 1)?;
    let axis = if axis < 0 { axis + rank } else { axis };
    if axis < 0 || axis > rank {
        return Err(node.error(format!("axis {axis} is out of range for rank {rank}")));
    }
    let outer: usize = x.shape[..axis as usize].iter().product();
    Ok(Tensor::new(
        vec![outer, x.len() / outer.max(1)],
        x.data.clone(),
    ))
}

fn reshape(node: &Node, x: &Tensor, shape: &Tensor) -> Result<Tensor, OnnxError> {
    let wanted = shape
        .as_ints()
        .ok_or_else(|| node.error("the shape is not integers"))?;
    let allow_zero = node.int("allowzero", 0)? != 0;
    let mut dims = Vec::with_capacity(wanted.len());
    let mut infer = None;
    for (i, &d) in wanted.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            0 if !allow_zero => dims.push(*x.shape.get(i).ok_or_else(|| {
                node.error(format!(
                    "dimension {i} copies an input dimension that does not exist"
                ))
            })?),
            d if d >= 0 => dims.push(d as usize),
            _ => return Err(node.error(format!("shape {wanted:?} is not a valid shape"))),
        }
    }
    let known = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| node.error(format!("shape {wanted:?} is too large")))?;
    if let Some(i) = infer {
        if known == 0 || !x.len().is_multiple_of(known) {
            return Err(node.error(format!("{} values do not fit shape {wanted:?}", x.len())));
        }
        dims[i] = x.len() / known;
    } else if known != x.len() {
        return Err(node.error(format!("{} values do not fit shape {wanted:?}", x.len())));
    }
    Ok(Tensor::new(dims, x.data.clone()))
}

/// ONNX's `LayerNormalization`: each row over the axes from `axis` normalised by the
/// core's formula, then scaled and shifted.
fn layer_norm_node(node: &Node, values: &HashMap<&str, Tensor>) -> Result<Tensor, OnnxError> {
    let x = get(node, values, 0)?;
    let scale = get(node, values, 1)?;
    let bias = get_opt(node, values, 2)?;
    let eps = node.float("epsilon", 1e-5)?;
    let rank = x.shape.len();
    let axis = axes_of(node, rank, &[node.int("axis", -1)?])?[0];
    let row: usize = x.shape[axis..].iter().product();
    if scale.len() != row || bias.is_some_and(|b| b.len() != row) {
        return Err(node.error(format!(
            "scale and bias must hold {row} values (the normalised axes)"
        )));
    }
    let mut y = vec![0.0f32; x.len()];
    for (xs, ys) in x
        .data
        .chunks_exact(row.max(1))
        .zip(y.chunks_exact_mut(row.max(1)))
    {
        layer_norm(xs, eps, ys);
        for (i, v) in ys.iter_mut().enumerate() {
            *v = *v * scale.data[i] + bias.map_or(0.0, |b| b.data[i]);
        }
    }
    Ok(Tensor::new(x.shape.clone(), y))
}

/// Softmax over one axis (opset 13 on; the last by default), or before opset 13 over the
/// axes from `axis` on flattened into one, by the core's formula.
fn softmax_node(node: &Node, x: &Tensor) -> Result<Tensor, OnnxError> {
    let rank = x.shape.len();
    let axis = axes_of(node, rank, &[node.int("axis", -1)?])?[0];
    let (len, inner) = if node.attrs.contains_key(super::SOFTMAX_2D) {
        (x.shape[axis..].iter().product(), 1)
    } else {
        (x.shape[axis], x.shape[axis + 1..].iter().product())
    };
    let outer: usize = x.shape[..axis].iter().product();
    let mut y = vec![0.0f32; x.len()];
    let mut lane = vec![0.0f32; len];
    let mut out = vec![0.0f32; len];
    for o in 0..outer {
        for i in 0..inner {
            for (k, v) in lane.iter_mut().enumerate() {
                *v = x.data[(o * len + k) * inner + i];
            }
            softmax(&lane, &mut out);
            for (k, &v) in out.iter().enumerate() {
                y[(o * len + k) * inner + i] = v;
            }
        }
    }
    Ok(Tensor::new(x.shape.clone(), y))
}
