//! aic-configurator: searches cores, mos, ols, batch size and instances for the best
//! predicted throughput (or lowest latency) of a model on the simulated card.
//!
//! aic-configurator model.onnx onnx -onnx-define-symbol-batch-size=batch_size
//!     [-onnx-define-symbol=name,value]... -multicast-weights -convert-to-fp16
//!     -optimized-config-search=search.json [-max-compilation-threads=N] [-time=S]
//!     [-device-id=0] [-set-size N]

fn main() {
    aicsim::configurator::cli::main()
}
