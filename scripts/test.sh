#!/usr/bin/env bash
# Runs aicsim's whole test suite: unit, property, integration and end-to-end tests,
# plus a smoke run of every benchmark, a million-inference fault campaign and 45 s of
# coverage-guided fuzzing per fuzz target, and ends with one summary line.
#
# It sets up what the tests need by itself: a local virtualenv (.venv) with the `onnx`
# and `onnxruntime` packages from PyPI (and maturin and pytest for the Python package), Chromium from the distribution's packages (for
# the HTML reports), and cargo-fuzz from crates.io. The compiler's reader is checked against `onnx`
# on its bundled models (onnx/backend/test/data/light), and compiled programs against
# onnxruntime's outputs on the same models.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import onnx, onnxruntime" 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "onnx>=1.16,<2" "onnxruntime>=1.17,<2"
fi
AICSIM_PYTHON="$(pwd)/.venv/bin/python"
AICSIM_ONNX_MODELS="$("$AICSIM_PYTHON" -c 'import os, onnx; print(os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light"))')"
export AICSIM_PYTHON AICSIM_ONNX_MODELS
export AICSIM_REQUIRE_ONNX=1

# The HTML reports are checked in a real headless browser: Chromium from the
# distribution's packages, installed here where missing.
if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q chromium >/dev/null 2>&1 ||
        { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi
AICSIM_CHROMIUM="$(command -v chromium)"
export AICSIM_CHROMIUM AICSIM_REQUIRE_CHROMIUM=1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets 2>&1 | tee "$log"
# The Python package (`python/`: PyO3, built by maturin into the virtualenv), its pytest
# suite and the notebooks under examples/notebooks (executed by nbclient).
# Ray (from PyPI) runs the sweeps on a cluster the tests start on this machine.
if [ ! -x .venv/bin/maturin ] || ! .venv/bin/python -c "import pytest, nbclient, nbformat, ipykernel, ray" 2>/dev/null; then
    .venv/bin/pip install --quiet --disable-pip-version-check "maturin>=1.7,<2" "pytest>=7" \
        "nbclient>=0.10" "nbformat>=5" "ipykernel>=6" "ray>=2.9,<3"
fi
(cd python && VIRTUAL_ENV="$(cd .. && pwd)/.venv" PATH="$(cd .. && pwd)/.venv/bin:$PATH" \
    CARGO_TARGET_DIR="$(cd .. && pwd)/target/python" maturin develop --release --quiet)
# The sweep tests compare with aic-configurator (release, as the release tests below use).
cargo build --release --bin aic-configurator
AICSIM_BIN_DIR="$(pwd)/target/release" RAY_USAGE_STATS_ENABLED=0 \
    .venv/bin/python -m pytest python/tests -q -p no:cacheprovider 2>&1 | tee -a "$log"
# The calibration against the hardware measurements, the configurator's searches and
# the full-size exported BERT-base and the seed notebooks' command lines run in release
# (they simulate thousands of ResNet-50 inferences, and BERT-base is 90 GMAC per
# inference); in debug builds they skip themselves.
cargo test --release --test calibration --test configurator --test transformers --test seed_notebooks -- --nocapture 2>&1 | tee -a "$log"
# The fault campaign: a million inferences through the whole driver stack under every
# fault, each completing once with its own output or failing once with a named error
# (it exits non-zero otherwise). `cargo bench --bench fault_campaign` runs ten million.
cargo bench --bench fault_campaign -- --inferences 1000000 2>&1 | tee -a "$log"
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of the program container through the
# validator and a functional run, the ONNX reader, request elements and control
# requests: 45 s per target from the committed seeds (fuzz/corpus). It installs
# cargo-fuzz if needed and fails on the first crash or failed check.
bash scripts/fuzz.sh 45 2>&1 | tee -a "$log"
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     /^[0-9]+ (passed|failed|skipped).* in [0-9.]+s/ {
         for (i = 1; i < NF; i++) {
             if ($(i + 1) ~ /^passed/) passed += $i
             if ($(i + 1) ~ /^failed/) failed += $i
             if ($(i + 1) ~ /^skipped/) ignored += $i
         }
     }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored; exit (failed > 0 || passed == 0) }' "$log"
