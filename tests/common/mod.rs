//! What several integration tests share: finding the project's Python (with onnx and
//! onnxruntime), which `scripts/test.sh` installs and names in `AICSIM_PYTHON`.

/// The Python to run the model scripts with; `None` (the test skips itself, saying why)
/// outside `scripts/test.sh`, which sets `AICSIM_REQUIRE_ONNX` so that it cannot skip.
pub fn python() -> Option<String> {
    match std::env::var("AICSIM_PYTHON") {
        Ok(p) => Some(p),
        Err(_) => {
            assert!(
                std::env::var("AICSIM_REQUIRE_ONNX").is_err(),
                "AICSIM_REQUIRE_ONNX is set but AICSIM_PYTHON is not"
            );
            eprintln!("skipped: run scripts/test.sh, which installs onnx and onnxruntime");
            None
        }
    }
}

/// [`python`], for the tests that simulate full-size models: release builds only.
#[allow(dead_code)]
pub fn python_release() -> Option<String> {
    if cfg!(debug_assertions) {
        eprintln!("skipped in debug builds: scripts/test.sh runs it with --release");
        return None;
    }
    python()
}
