#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo fuzz (libFuzzer) of the parsers and protocol ends
# a driver engineer cannot trust blindly: the program container through the device's
# validator and a functional run, the compiler's ONNX reader, DMA Bridge Channel
# request elements, and control requests. Targets are in fuzz/fuzz_targets, seeds in
# fuzz/corpus; what a run finds beyond the seeds stays in a temporary directory.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 45 s, every target)
#
# A crash or a failed check stops with the input saved under fuzz/artifacts/TARGET/
# and the command that replays it. scripts/test.sh runs every target for 45 s.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-45}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(container onnx elements control)
fi
case "$secs" in
    '' | *[!0-9]*) echo "fuzz.sh: seconds per target must be a whole number, not '$secs'" >&2; exit 2 ;;
esac

# libFuzzer's instrumentation needs unstable compiler flags: the nightly toolchain if
# this machine has one, otherwise the stable one with RUSTC_BOOTSTRAP (a stable
# toolchain cannot be fetched here; this works on stable compilers from 1.70 on).
if rustup run nightly rustc --version >/dev/null 2>&1; then
    toolchain=(+nightly)
    echo "fuzz.sh: $(rustup run nightly rustc --version)"
else
    toolchain=()
    export RUSTC_BOOTSTRAP=1
    echo "fuzz.sh: $(rustc --version) with RUSTC_BOOTSTRAP=1 (no nightly toolchain here)"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz@0.13.2
fi

# Seeds that follow the code: programs compiled from the ONNX seeds (one core in f32,
# four in fp16) and the element and control sequences of the targets' own device.
cargo build --quiet --release --bin aic-exec
qpc=$(mktemp -d)
trap 'rm -rf "$qpc"' EXIT
for model in fuzz/corpus/onnx/*.onnx; do
    name=$(basename "$model" .onnx)
    case "$name" in
    # A model the compiler must refuse (a fuzzer's find): an ONNX seed only.
    refused_*)
        if ./target/release/aic-exec -m="$model" -aic-binary-dir="$qpc/refused" -compile-only >/dev/null 2>&1; then
            echo "fuzz.sh: $model compiled, but the compiler must refuse it" >&2
            exit 1
        fi
        continue ;;
    symbolic_*) define=(-onnx-define-symbol=batch,2) ;;
    # One container of two entries (prefill and decode) sharing the cache as state.
    kv_cache_*)
        printf '%s' '{"specializations": [{"batch_size": 1, "seq_len": 3, "ctx_len": 8}, {"batch_size": 1, "seq_len": 1, "ctx_len": 8}]}' \
            >"$qpc/specializations.json"
        define=(-retained-state -network-specialization-config="$qpc/specializations.json") ;;
    *) define=() ;;
    esac
    ./target/release/aic-exec -m="$model" "${define[@]}" -aic-binary-dir="$qpc/$name-1core" -compile-only >/dev/null
    ./target/release/aic-exec -m="$model" "${define[@]}" -aic-num-cores=4 -convert-to-fp16 \
        -aic-binary-dir="$qpc/$name-4cores-fp16" -compile-only >/dev/null
done
mkdir -p fuzz/corpus/container
for dir in "$qpc"/*/; do
    cp "$dir/programqpc.bin" "fuzz/corpus/container/$(basename "$dir").qpc"
done
cargo run --quiet -p aicsim-device --example fuzz_seeds -- fuzz/corpus

(cd fuzz && cargo "${toolchain[@]}" fuzz build)
for target in "${targets[@]}"; do
    found=$(mktemp -d)
    log=$(mktemp)
    echo "fuzz.sh: $target for ${secs}s"
    if ! (cd fuzz && cargo "${toolchain[@]}" fuzz run "$target" "$found" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz.sh: $target FAILED; replay with: (cd fuzz && cargo ${toolchain[*]} fuzz run $target artifacts/$target/<file>)" >&2
        rm -rf "$found"
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -E '^#[0-9]+.*DONE' "$log" | sed -E 's/.*cov: ([0-9]+).*/\1/' | tail -n 1)
    echo "fuzz.sh: $target ok: ${runs:-?} inputs in ${secs}s, ${cov:-?} coverage points, $(ls "$found" | wc -l) new corpus entries"
    rm -rf "$found" "$log"
done
