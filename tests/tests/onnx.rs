//! ONNX models exported from PyTorch (`tests/fixtures/onnx/`, made by
//! `tests/fixtures/onnx/make_onnx.py`): safegrad's forward against onnxruntime's outputs, the
//! domain audit against a corpus of hazard/fix pairs, and the refusal of what is not
//! supported. CI reads the committed files and needs neither PyTorch nor onnxruntime.

use std::path::{Path, PathBuf};

use host_sim::onnx::audit::audit;
use host_sim::onnx::commands::{predict, predict_file, read_inputs};
use host_sim::onnx::{load, parse, OnnxError};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/onnx")
}

fn outputs(path: &Path) -> Vec<Vec<f64>> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("expected outputs"))
        .expect("JSON");
    v["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_f64().expect("a number"))
                .collect()
        })
        .collect()
}

/// Every model's outputs within 1e-5 relative or 1e-6 absolute of onnxruntime's.
#[test]
fn predict_matches_onnxruntime() {
    for name in ["mlp", "cnn", "pool_modes", "bn_head", "ops"] {
        let models = dir().join("models");
        let got = predict_file(
            &models.join(format!("{name}.onnx")),
            &models.join(format!("{name}.inputs.json")),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = outputs(&models.join(format!("{name}.expected.json")));
        assert_eq!(got.len(), want.len(), "{name}: number of outputs");
        assert!(!want.is_empty(), "{name}: no cases");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len(), "{name} input {k}: output length");
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                let err = (f64::from(g) - w).abs();
                assert!(
                    err <= 1e-6 || err <= 1e-5 * w.abs(),
                    "{name} input {k} output {i}: safegrad {g}, onnxruntime {w}"
                );
            }
        }
    }
}

/// Every hazard of the corpus is flagged, with the expected kind at the expected node, and
/// no fixed graph is.
#[test]
fn audit_flags_every_hazard_and_no_fix() {
    let corpus_dir = dir().join("audit");
    let corpus: Value = serde_json::from_str(
        &std::fs::read_to_string(corpus_dir.join("corpus.json")).expect("the corpus"),
    )
    .expect("JSON");
    let cases = corpus.as_array().expect("a list");
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let (mut hazards, mut fixes) = (0, 0);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (_, graph) = load(&corpus_dir.join(case["file"].as_str().expect("file")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut found: Vec<(String, String, String)> = audit(&graph)
            .iter()
            .map(|f| (f.kind.name().to_string(), f.op_type.clone(), f.node.clone()))
            .collect();
        let mut expected: Vec<(String, String, String)> = case["expected"]
            .as_array()
            .expect("expected")
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().expect(k).to_string();
                (s("kind"), s("op_type"), s("node"))
            })
            .collect();
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "{name}: {}", case["source"]);
        if case["safe"].as_bool().expect("safe") {
            assert!(found.is_empty(), "{name} is a fix");
            fixes += 1;
        } else {
            assert!(!found.is_empty(), "{name} is a hazard");
            hazards += 1;
        }
    }
    assert_eq!(hazards, fixes, "pairs");
}

/// The models the predict test runs have nothing to report.
#[test]
fn the_predict_models_audit_clean() {
    for name in ["mlp", "cnn", "pool_modes", "bn_head", "ops"] {
        let (_, graph) = load(&dir().join(format!("models/{name}.onnx"))).expect(name);
        let findings = audit(&graph);
        assert!(findings.is_empty(), "{name}: {findings:?}");
    }
}

/// An LSTM is refused, naming the op and its node, with every other unsupported op.
#[test]
fn an_unsupported_op_is_refused_by_name() {
    let err = load(&dir().join("lstm.onnx")).expect_err("an LSTM is not supported");
    let OnnxError::UnsupportedOps(ref ops) = err else {
        panic!("{err}");
    };
    assert!(
        ops.iter()
            .any(|(op, node)| op == "LSTM" && node == "/lstm/LSTM"),
        "{ops:?}"
    );
    let message = err.to_string();
    assert!(message.contains("`LSTM` (node `/lstm/LSTM`)"), "{message}");
}

/// Bytes that are not a model, an input of the wrong length and a non-finite input are
/// refused, each with what was wrong.
#[test]
fn bad_input_is_refused_with_a_reason() {
    let err = parse(b"not a protobuf").expect_err("garbage");
    assert!(err.to_string().starts_with("not an ONNX model"), "{err}");

    let (_, graph) = load(&dir().join("models/mlp.onnx")).expect("mlp");
    let err = predict(&graph, &[vec![0.5; 15]]).expect_err("15 values for 16");
    assert!(err.contains("holds 15 values; the model takes 16"), "{err}");
    let mut row = vec![0.5; 16];
    row[3] = f32::NAN;
    let err = predict(&graph, &[row]).expect_err("a nan");
    assert!(err.contains("value 3 is NaN"), "{err}");

    let bad = std::env::temp_dir().join("safegrad-onnx-bad-inputs.json");
    std::fs::write(&bad, r#"{"inputs": [[1, 2, "three"]]}"#).expect("write");
    let err = read_inputs(&bad).expect_err("a string");
    assert!(err.contains("input 0 value 2"), "{err}");
}

mod imported_mlp {
    include!("../fixtures/onnx/imported/mlp/model.rs");
}
mod imported_cnn {
    include!("../fixtures/onnx/imported/cnn/model.rs");
}
mod imported_basicmotions {
    include!("../fixtures/onnx/basicmotions/imported/model.rs");
}

/// The committed imports are what `host-sim import` writes today.
#[test]
fn the_committed_imports_are_current() {
    for (model, imported) in [
        ("models/mlp.onnx", "imported/mlp"),
        ("models/cnn.onnx", "imported/cnn"),
        ("basicmotions/cnn.onnx", "basicmotions/imported"),
    ] {
        let out = std::env::temp_dir().join(format!("safegrad-import-{}", model.replace('/', "-")));
        host_sim::onnx::commands::import_to(&dir().join(model), &out)
            .unwrap_or_else(|e| panic!("{e}"));
        for file in ["model.rs", "model.sgck", "import.json"] {
            let fresh = std::fs::read(out.join(file)).expect(file);
            let committed = std::fs::read(dir().join(imported).join(file)).expect(file);
            assert!(
                fresh == committed,
                "{imported}/{file} is stale: run host-sim import tests/fixtures/onnx/{model} --out tests/fixtures/onnx/{imported}"
            );
        }
    }
}

/// The imported model type, built and loaded from the imported checkpoint, gives the same
/// bits as `predict` (the same kernels), and onnxruntime's outputs within 1e-5. The tape's
/// capacity is `NODES`, `VALUES`, `GRADIENTS` (from the model's type, [`typed`]).
fn typed_model_matches<
    M,
    const NODES: usize,
    const VALUES: usize,
    const GRADIENTS: usize,
    const IN: usize,
    const OUT: usize,
>(
    name: &str,
) where
    M: safegrad::nn::Build<f32>
        + safegrad::nn::Module<f32, safegrad::Var<1, IN>, Output = safegrad::Var<1, OUT>>,
{
    use safegrad::nn::{Init, Train};
    use safegrad::{Cap, Tape, Tensor};
    let mut tape = Box::new(Tape::<f32, Cap<NODES, VALUES, GRADIENTS>>::new());
    let model = M::build(&mut tape, &mut Init::new(1).with_plan(&[Train::Frozen][..]))
        .expect("the model fits the tape");
    let bytes = std::fs::read(dir().join(format!("imported/{name}/model.sgck"))).expect("ckpt");
    safegrad::checkpoint::load(&mut *tape, &bytes).expect("the checkpoint fits the type");
    let models = dir().join("models");
    let inputs = read_inputs(&models.join(format!("{name}.inputs.json"))).expect("inputs");
    let (_, graph) = load(&models.join(format!("{name}.onnx"))).expect("model");
    let interpreted = predict(&graph, &inputs).expect("predict");
    let want = outputs(&models.join(format!("{name}.expected.json")));
    for (k, row) in inputs.iter().enumerate() {
        tape.clear_activations();
        let x = tape
            .input(&Tensor::<f32, 1, IN>::from_slice(row).expect("an input row"))
            .expect("input");
        let y = model.forward(&mut tape, x).expect("forward");
        let y = tape.value(y).expect("value");
        let y = y.as_slice();
        assert_eq!(
            y,
            interpreted[k].as_slice(),
            "{name} input {k}: typed vs predict"
        );
        for (i, (&g, &w)) in y.iter().zip(&want[k]).enumerate() {
            let err = (f64::from(g) - w).abs();
            assert!(
                err <= 1e-6 || err <= 1e-5 * w.abs(),
                "{name} input {k} output {i}: {g} vs onnxruntime {w}"
            );
        }
    }
}

/// [`typed_model_matches`] for a model type, its tape sized by `nn::sizes` for the type (every
/// layer trained: room for a step, more than a forward pass needs).
macro_rules! typed {
    ($model:ty, $in:expr, $out:expr, $name:expr) => {{
        const S: safegrad::nn::Sizes = safegrad::nn::sizes::<$model>(safegrad::nn::Plan::All);
        typed_model_matches::<$model, { S.nodes }, { S.values }, { S.gradients }, $in, $out>($name)
    }};
}

#[test]
fn imported_types_reproduce_the_onnx_models() {
    typed!(imported_mlp::Model, 16, 4, "mlp");
    typed!(imported_cnn::Model, 600, 4, "cnn");
}

/// A chain's checkpoint written back into the ONNX file: the exported model computes what
/// the checkpoint's parameters compute; a checkpoint of another model is refused.
#[test]
fn export_writes_a_checkpoint_back() {
    use host_sim::onnx::import::import;
    let path = dir().join("models/mlp.onnx");
    let (proto, graph) = load(&path).expect("mlp");
    let imported = import(&graph).expect("a chain");
    // A "fine-tuned" checkpoint: every parameter of the last layer moved.
    let mut changed = imported.clone();
    if let Some(host_sim::onnx::import::Layer::Linear { weight, bias, .. }) =
        changed.layers.last_mut()
    {
        weight.iter_mut().for_each(|w| *w *= 0.5);
        bias.iter_mut().for_each(|b| *b += 1.0);
    } else {
        panic!("the mlp ends in a Linear");
    }
    let ckpt = changed.checkpoint().expect("checkpoint");
    let exported = imported.export(&proto, &ckpt).expect("export");
    let bytes = host_sim::onnx::encode(&exported).expect("encode");
    let (_, exported_graph) = parse(&bytes).expect("the exported model parses");
    let inputs = read_inputs(&dir().join("models/mlp.inputs.json")).expect("inputs");
    let before = predict(&graph, &inputs).expect("before");
    let after = predict(&exported_graph, &inputs).expect("after");
    // The last layer computes W/2 h + b + 1: the outputs move, and equal the changed import's.
    assert_ne!(before, after);
    let reimported = import(&exported_graph).expect("a chain");
    assert_eq!(reimported.layers, changed.layers);
    // A checkpoint of the cnn does not fit the mlp.
    let (_, cnn) = load(&dir().join("models/cnn.onnx")).expect("cnn");
    let other = import(&cnn)
        .expect("a chain")
        .checkpoint()
        .expect("checkpoint");
    let err = imported.export(&proto, &other).expect_err("another model");
    assert!(err.contains("does not fit"), "{err}");
}

/// The MLP with its weights held in `Constant` nodes instead of initialisers (as some
/// exporters write them): export leaves an unchanged layer as it is and writes a changed one
/// into its `Constant`.
#[test]
fn export_writes_into_constant_nodes() {
    use host_sim::onnx::import::{import, Layer};
    use host_sim::onnx::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};
    let (mut proto, _) = load(&dir().join("models/mlp.onnx")).expect("mlp");
    let graph = proto.graph.as_mut().expect("a graph");
    let held = std::mem::take(&mut graph.initializer);
    assert!(!held.is_empty());
    let constants: Vec<NodeProto> = held
        .into_iter()
        .map(|t| {
            let mut value = AttributeProto::new();
            value.name = "value".into();
            value.type_ = AttributeType::TENSOR.into();
            let name = t.name.clone();
            value.t = Some(t).into();
            let mut node = NodeProto::new();
            node.op_type = "Constant".into();
            node.name = format!("const_{name}");
            node.output = vec![name];
            node.attribute = vec![value];
            node
        })
        .collect();
    let ops = std::mem::take(&mut graph.node);
    graph.node = constants.into_iter().chain(ops).collect();
    let bytes = host_sim::onnx::encode(&proto).expect("encode");
    let (proto, graph) = parse(&bytes).expect("the rewritten model parses");
    let imported = import(&graph).expect("a chain");
    // Unchanged: the exported model is the model.
    let same = imported
        .export(&proto, &imported.checkpoint().expect("checkpoint"))
        .expect("an unchanged export");
    assert_eq!(same, proto);
    // The last layer changed: written into its Constant, the first layers left alone.
    let mut changed = imported.clone();
    let Some(Layer::Linear { weight, bias, .. }) = changed.layers.last_mut() else {
        panic!("the mlp ends in a Linear");
    };
    weight.iter_mut().for_each(|w| *w *= 0.5);
    bias.iter_mut().for_each(|b| *b += 1.0);
    let exported = imported
        .export(&proto, &changed.checkpoint().expect("checkpoint"))
        .expect("export");
    let bytes = host_sim::onnx::encode(&exported).expect("encode");
    let (_, exported_graph) = parse(&bytes).expect("the exported model parses");
    assert_eq!(
        import(&exported_graph).expect("a chain").layers,
        changed.layers
    );
    let inputs = read_inputs(&dir().join("models/mlp.inputs.json")).expect("inputs");
    assert_ne!(
        predict(&graph, &inputs).expect("before"),
        predict(&exported_graph, &inputs).expect("after")
    );
}

/// A pooling whose padding is more than half its window (a window of padding alone) is
/// refused, as PyTorch refuses it.
#[test]
fn a_pooling_padded_past_half_its_window_is_refused() {
    let (mut proto, _) = load(&dir().join("models/pool_modes.onnx")).expect("pool_modes");
    let graph = proto.graph.as_mut().expect("a graph");
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.op_type == "MaxPool")
        .expect("a MaxPool");
    let name = node.name.clone();
    let pads = node
        .attribute
        .iter_mut()
        .find(|a| a.name == "pads")
        .expect("pads");
    pads.ints = vec![3, 3];
    let bytes = host_sim::onnx::encode(&proto).expect("encode");
    let (_, graph) = parse(&bytes).expect("parses");
    let inputs = read_inputs(&dir().join("models/pool_modes.inputs.json")).expect("inputs");
    let err = predict(&graph, &inputs).expect_err("refused").to_string();
    assert!(
        err.contains("at most half the window") && err.contains(&name),
        "{err}"
    );
}

fn accuracy(outputs: &[Vec<f32>], labels: &[usize]) -> f64 {
    let right = outputs
        .iter()
        .zip(labels)
        .filter(|(o, &label)| {
            let best =
                o.iter().enumerate().fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                );
            best.0 == label
        })
        .count();
    right as f64 / labels.len() as f64
}

/// A 1-D CNN trained in PyTorch on BasicMotions (`basicmotions/train_cnn.py`), imported,
/// fine-tuned after the shift (on the host here; `cargo xtask parity` fine-tunes it on QEMU
/// and checks the bits), exported back to ONNX: the exported model, run by `predict`, has
/// the accuracy the fine-tuning reported; the import has onnxruntime's accuracy.
#[test]
fn end_to_end_a_pytorch_cnn_imported_fine_tuned_and_exported() {
    use host_sim::finetune::{run, FinetuneConfig, MotionNet};
    use std::any::TypeId;

    let bm = dir().join("basicmotions");
    // The imported type is the firmware's CNN, so the device job runs it as it is.
    assert_eq!(
        TypeId::of::<imported_basicmotions::Model>(),
        TypeId::of::<motion::model::MotionCnn>()
    );
    let (proto, graph) = load(&bm.join("cnn.onnx")).expect("the model");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(bm.join("reference.json")).expect("ref"))
            .expect("JSON");
    let test: Value = serde_json::from_str(
        &std::fs::read_to_string(bm.join("test_windows.json")).expect("test windows"),
    )
    .expect("JSON");
    let labels: Vec<usize> = test["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_u64().expect("a label") as usize)
        .collect();
    let windows = read_inputs(&bm.join("test_windows.json")).expect("windows");
    let imported_accuracy = accuracy(&predict(&graph, &windows).expect("predict"), &labels);
    let onnxruntime = reference["test_accuracy"].as_f64().expect("test_accuracy");
    assert_eq!(
        imported_accuracy, onnxruntime,
        "safegrad vs onnxruntime, test split"
    );

    let pretrained = std::fs::read(bm.join("imported/model.sgck")).expect("checkpoint");
    let config = FinetuneConfig {
        pretrained: Some(pretrained),
        ..FinetuneConfig::for_model(MotionNet::Cnn)
    };
    let report = run(&host_sim::data::default_dir(), &config, &mut |_| {}).expect("fine-tuning");
    assert_eq!(
        report.pretrain_accuracy, onnxruntime,
        "the job's own evaluation"
    );
    assert!(
        report.shifted_accuracy_after > report.shifted_accuracy_before,
        "fine-tuning recovers: {} -> {}",
        report.shifted_accuracy_before,
        report.shifted_accuracy_after
    );

    let imported = host_sim::onnx::import::import(&graph).expect("a chain");
    let exported = imported
        .export(&proto, &report.finetuned_checkpoint)
        .expect("export");
    let bytes = host_sim::onnx::encode(&exported).expect("encode");
    let (_, exported) = parse(&bytes).expect("the exported model parses");
    let (rows, labels): (Vec<Vec<f32>>, Vec<usize>) =
        report.shifted_eval_rows.iter().cloned().unzip();
    let exported_accuracy = accuracy(&predict(&exported, &rows).expect("predict"), &labels);
    assert_eq!(
        exported_accuracy, report.shifted_accuracy_after,
        "the exported model's accuracy on the shifted evaluation set"
    );
    // The fine-tuned head moved: the exported model is not the one imported.
    assert_ne!(
        predict(&exported, &rows).expect("after"),
        predict(&graph, &rows).expect("before")
    );
}
