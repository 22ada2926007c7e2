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

#[test]
fn the_reader_agrees_with_the_reference_on_every_light_model() {
    let (Ok(models), Ok(python)) = (std::env::var("AICSIM_ONNX_MODELS"), std::env::var("AICSIM_PYTHON")) else {
        assert!(
            std::env::var("AICSIM_REQUIRE_ONNX").is_err(),
            "AICSIM_REQUIRE_ONNX is set but the onnx models are not"
        );
        eprintln!("skipped: run scripts/test.sh, which installs the onnx package, to check the reader against it");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/onnx_summary.py");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "light models in {models}: {files:?}");
    for path in &files {
        let out = Command::new(&python).arg(&script).arg(path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reference: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mine = ours(path);
        assert_eq!(mine, reference, "{}", path.display());
        assert!(mine["nodes"].as_array().unwrap().len() > 10, "{}: a real network", path.display());
    }
}
