//! The ONNX reader against the reference implementation, on the real models the `onnx`
//! package ships (onnx/backend/test/data/light): for every model, the same summary —
//! opsets, nodes (type, name, inputs, outputs, attribute names), initializers (name,
//! dims, type), graph inputs and outputs with their symbolic or fixed dimensions.
//!
//! `scripts/test.sh` installs the package and sets `AICSIM_ONNX_MODELS` and
//! `AICSIM_PYTHON`; without them (plain `cargo test`) the test says so and does nothing,
//! unless `AICSIM_REQUIRE_ONNX` is set.

use std::path::PathBuf;
use std::process::Command;

use aicsim_compiler::onnx::{parse_model, Dim, ValueInfo};
use serde_json::{json, Value};

fn dims(v: &ValueInfo) -> Value {
    match &v.shape {
        None => Value::Null,
        Some(d) => d
            .iter()
            .map(|d| match d {
                Dim::Value(x) => json!(x),
                Dim::Param(p) => json!(p),
                Dim::Unknown => Value::Null,
            })
            .collect(),
    }
}

fn ours(path: &std::path::Path) -> Value {
    let m = parse_model(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let g = &m.graph;
    json!({
        "ir_version": m.ir_version,
        "opset": m.opset_imports.iter().map(|o| json!([o.domain, o.version])).collect::<Vec<_>>(),
        "graph": g.name,
        "nodes": g.nodes.iter().map(|n| {
            let mut attrs: Vec<&str> = n.attributes.iter().map(|a| a.name.as_str()).collect();
            attrs.sort();
            json!([n.op_type, n.name, n.inputs, n.outputs, attrs])
        }).collect::<Vec<_>>(),
        "initializers": g.initializers.iter().map(|t| json!([t.name, t.dims, t.data_type])).collect::<Vec<_>>(),
        "inputs": g.inputs.iter().map(|v| json!([v.name, v.elem_type, dims(v)])).collect::<Vec<_>>(),
        "outputs": g.outputs.iter().map(|v| json!([v.name, v.elem_type, dims(v)])).collect::<Vec<_>>(),
    })
}

/// The bundled light models and the Python to run reference scripts with; `None` (and
/// a note) when the environment does not provide them and does not require them.
fn light_models() -> Option<(Vec<PathBuf>, String)> {
    let (Ok(models), Ok(python)) = (std::env::var("AICSIM_ONNX_MODELS"), std::env::var("AICSIM_PYTHON")) else {
        assert!(
            std::env::var("AICSIM_REQUIRE_ONNX").is_err(),
            "AICSIM_REQUIRE_ONNX is set but the onnx models are not"
        );
        eprintln!("skipped: run scripts/test.sh, which installs the onnx package, to check against it");
        return None;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "light models in {models}: {files:?}");
    Some((files, python))
}

/// Runs one of our reference scripts on a model and parses its JSON.
fn reference<T: serde::de::DeserializeOwned>(python: &str, script: &str, model: &std::path::Path) -> T {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(script);
    let out = Command::new(python).arg(&script).arg(model).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_reader_agrees_with_the_reference_on_every_light_model() {
    let Some((files, python)) = light_models() else { return };
    for path in &files {
        let reference: Value = reference(&python, "onnx_summary.py", path);
        let mine = ours(path);
        assert_eq!(mine, reference, "{}", path.display());
        assert!(mine["nodes"].as_array().unwrap().len() > 10, "{}: a real network", path.display());
    }
}

#[test]
fn shape_inference_agrees_with_the_reference_on_every_light_model() {
    use aicsim_compiler::shapes::Shapes;
    let Some((files, python)) = light_models() else { return };
    for path in &files {
        let reference: std::collections::HashMap<String, Vec<i64>> = reference(&python, "onnx_shapes.py", path);
        let model = parse_model(&std::fs::read(path).unwrap()).unwrap();
        let shapes = Shapes::infer(&model.graph, model.opset().unwrap_or(0), &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut checked = 0;
        for node in &model.graph.nodes {
            let name = &node.outputs[0];
            if let Some(want) = reference.get(name) {
                assert_eq!(shapes.dims.get(name), Some(want), "{}: tensor '{name}' ({})", path.display(), node.op_type);
                checked += 1;
            }
        }
        assert!(
            checked * 10 >= model.graph.nodes.len() * 9,
            "{}: compared {checked} of {} node outputs",
            path.display(),
            model.graph.nodes.len()
        );
    }
}

#[test]
fn symbolic_dimensions_need_a_value_and_unsupported_operators_are_named() {
    use aicsim_compiler::onnx::{Graph, Node, ValueInfo};
    use aicsim_compiler::shapes::{ShapeError, Shapes};
    let graph = Graph {
        inputs: vec![ValueInfo {
            name: "x".into(),
            elem_type: 1,
            shape: Some(vec![Dim::Param("batch_size".into()), Dim::Value(8)]),
        }],
        nodes: vec![Node {
            name: "n0".into(),
            op_type: "Relu".into(),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = Shapes::infer(&graph, 13, &Default::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input 'x' has symbolic dimension 'batch_size'; give it a value (-onnx-define-symbol=batch_size,N)"
    );
    let symbols = [("batch_size".to_string(), 4)].into_iter().collect();
    assert_eq!(Shapes::infer(&graph, 13, &symbols).unwrap().dims["y"], vec![4, 8]);
    let mut g2 = graph.clone();
    g2.nodes[0].op_type = "NonMaxSuppression".into();
    assert_eq!(
        Shapes::infer(&g2, 13, &symbols).unwrap_err(),
        ShapeError::Unsupported { op_type: "NonMaxSuppression".into(), node: "n0".into(), opset: 13 }
    );
}
