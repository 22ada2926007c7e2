#!/usr/bin/env bash
# Runs aicsim's whole test suite: unit, property, integration and end-to-end tests,
# plus a smoke run of every benchmark, and ends with one summary line. Needs only the
# Rust toolchain today; suites that need Python packages will set them up here, in a
# local virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets 2>&1 | tee "$log"
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored; exit (failed > 0 || passed == 0) }' "$log"
