//! What `host-sim predict` and `host-sim audit MODEL.onnx` do, as functions the tests call.

use std::path::Path;

use serde_json::{json, Value};

use super::audit::{audit, OnnxFinding};
use super::{eval, load, Graph, Tensor};

/// The input vectors of an `INPUTS.json` file, `{"inputs": [[...], ...]}`.
pub fn read_inputs(path: &Path) -> Result<Vec<Vec<f32>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let Some(rows) = value.get("inputs").and_then(Value::as_array) else {
        return Err(format!(
            "{}: expected {{\"inputs\": [[...], ...]}}",
            path.display()
        ));
    };
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let Some(row) = row.as_array() else {
                return Err(format!("{}: input {i} is not an array", path.display()));
            };
            row.iter()
                .enumerate()
                .map(|(j, v)| match v.as_f64() {
                    Some(v) if v.is_finite() => Ok(v as f32),
                    _ => Err(format!(
                        "{}: input {i} value {j} is {v}, not a finite number",
                        path.display()
                    )),
                })
                .collect()
        })
        .collect()
}

/// The class labels of an `INPUTS.json` file that has them (`"labels": [...]`, one per
/// input), for `predict` to report its accuracy.
pub fn read_labels(path: &Path) -> Result<Option<Vec<usize>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let Some(labels) = value.get("labels") else {
        return Ok(None);
    };
    let Some(labels) = labels.as_array() else {
        return Err(format!("{}: \"labels\" is not an array", path.display()));
    };
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.as_u64()
                .map(|l| l as usize)
                .ok_or_else(|| format!("{}: label {i} is {l}, not a class index", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The share of outputs whose largest value (the first, on a tie) is at the label's index.
pub fn accuracy(outputs: &[Vec<f32>], labels: &[usize]) -> f64 {
    let right = outputs
        .iter()
        .zip(labels)
        .filter(|(o, &label)| {
            let mut best = 0;
            for (i, &v) in o.iter().enumerate() {
                if v > o[best] {
                    best = i;
                }
            }
            best == label
        })
        .count();
    right as f64 / labels.len().max(1) as f64
}

/// Runs `graph` on each flattened input vector: the vector is the graph's inputs one after
/// the other, each in ONNX's row-major order with a symbolic (batch) dimension of 1.
pub fn predict(graph: &Graph, inputs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, String> {
    let want: usize = graph.inputs.iter().map(|i| i.sample_len()).sum();
    inputs
        .iter()
        .enumerate()
        .map(|(k, row)| {
            if row.len() != want {
                let shapes: Vec<String> = graph
                    .inputs
                    .iter()
                    .map(|i| format!("`{}` {:?}", i.name, i.sample_shape()))
                    .collect();
                return Err(format!(
                    "input {k} holds {} values; the model takes {want} ({})",
                    row.len(),
                    shapes.join(", ")
                ));
            }
            let mut at = 0;
            let feeds: Vec<Tensor> = graph
                .inputs
                .iter()
                .map(|i| {
                    let len = i.sample_len();
                    let t = Tensor::new(i.sample_shape(), row[at..at + len].to_vec());
                    at += len;
                    t
                })
                .collect();
            let outs = eval::run(graph, &feeds).map_err(|e| format!("input {k}: {e}"))?;
            Ok(outs.into_iter().flat_map(|t| t.data).collect())
        })
        .collect()
}

/// `host-sim predict`: the outputs of the model at `model` for the inputs in `inputs`.
pub fn predict_file(model: &Path, inputs: &Path) -> Result<Vec<Vec<f32>>, String> {
    let (_, graph) = load(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let rows = read_inputs(inputs)?;
    predict(&graph, &rows)
}

/// One finding as JSON: the fields of `host-sim audit --json`'s findings, the node named by
/// its ONNX name.
pub fn finding_json(f: &OnnxFinding) -> Value {
    json!({
        "node": f.node,
        "op": f.op_type,
        "kind": f.kind.name(),
        "severity": f.severity.name(),
        "message": f.to_string(),
        "masked_by": f.masked_by,
        "suggestion": f.suggestion(),
    })
}

/// `host-sim audit MODEL.onnx`: the model's findings.
pub fn audit_file(model: &Path) -> Result<Vec<OnnxFinding>, String> {
    let (_, graph) = load(model).map_err(|e| format!("{}: {e}", model.display()))?;
    Ok(audit(&graph))
}

/// `host-sim import MODEL --out DIR`: writes `model.rs`, `model.sgck` and `import.json` into
/// `out` (created if missing) and returns the summary.
pub fn import_to(model: &Path, out: &Path) -> Result<Value, String> {
    let (_, graph) = load(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let imported =
        super::import::import(&graph).map_err(|e| format!("{}: {e}", model.display()))?;
    let checkpoint = imported.checkpoint()?;
    let source = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let summary = json!({
        "source": source,
        "type": imported.type_expr(),
        "layers": imported.layers.iter().map(|l| l.type_name()).collect::<Vec<_>>(),
        "parameters": imported.parameter_len(),
        "input_len": imported.input_len,
        "output_len": imported.output_len,
        "checkpoint_bytes": checkpoint.len(),
        "notes": imported.notes,
    });
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    write("model.rs", imported.rust_file(&source).as_bytes())?;
    write("model.sgck", &checkpoint)?;
    let mut text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    text.push('\n');
    write("import.json", text.as_bytes())?;
    Ok(summary)
}

/// `host-sim export`: the ONNX model at `onnx` with the parameters of `checkpoint` (a
/// checkpoint of its import), written to `out`.
pub fn export_to(onnx: &Path, checkpoint: &Path, out: &Path) -> Result<(), String> {
    let (proto, graph) = load(onnx).map_err(|e| format!("{}: {e}", onnx.display()))?;
    let imported = super::import::import(&graph).map_err(|e| format!("{}: {e}", onnx.display()))?;
    let bytes = std::fs::read(checkpoint).map_err(|e| format!("{}: {e}", checkpoint.display()))?;
    let exported = imported
        .export(&proto, &bytes)
        .map_err(|e| format!("{}: {e}", checkpoint.display()))?;
    let data = super::encode(&exported).map_err(|e| e.to_string())?;
    std::fs::write(out, data).map_err(|e| format!("{}: {e}", out.display()))
}
