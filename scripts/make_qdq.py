#!/usr/bin/env python3
"""Quantised (QDQ) test models for aicsim's int8 path, with onnxruntime's outputs.

    make_qdq.py OUT_DIR [--seed N] [--activations int8|uint8|int16|uint16] [--per-channel]
                [--calibration minmax|entropy|percentile] [--samples N] [--model FLOAT.onnx]

Writes a small residual CNN (seeded random weights, onnx helper API: no framework
download) as OUT_DIR/float.onnx — or, with --model, that model (one float input; weights
given as ConstantOfShape, as the onnx package's light models carry them, are replaced by
seeded random ones as scripts/onnx_reference.py does) — quantises it with onnxruntime's static quantiser in QDQ
form (QuantizeLinear / DequantizeLinear around Conv, Add, MaxPool, GlobalAveragePool,
Gemm; calibrated on N seeded random inputs; 16-bit activations make it an opset 21
model, weights stay int8) to OUT_DIR/model.onnx, and writes a held-back
input (not among the calibration samples) as OUT_DIR/input_0.bin, onnxruntime's output
of the QDQ model for it (the graph's own semantics: optimisations off) as
OUT_DIR/output_0.bin (float32, little-endian) and
OUT_DIR/meta.json: names, shapes and `step`, the output's quantisation step (the scale
of the DequantizeLinear that produces it).
"""
import argparse
import json
import os

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper, numpy_helper

SHAPE = [1, 3, 16, 16]


def cnn(rng):
    """conv3x3+relu -> conv3x3/2+relu -> [conv1x1 + skip] -> relu -> maxpool -> gap -> gemm."""
    inits = []

    def weight(name, shape, fan_in):
        inits.append(numpy_helper.from_array(rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32), name))
        return name

    def bias(name, n):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, [n]).astype(np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", weight("w1", [8, 3, 3, 3], 27), bias("b1", 8)], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node(
            "Conv", ["r1", weight("w2", [16, 8, 3, 3], 72), bias("b2", 16)], ["c2"], "conv2", pads=[1, 1, 1, 1], strides=[2, 2]
        ),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Conv", ["r2", weight("w3", [16, 16, 1, 1], 16), bias("b3", 16)], ["c3"], "conv3"),
        helper.make_node("Add", ["c3", "r2"], ["s"], "add"),
        helper.make_node("Relu", ["s"], ["r3"], "relu3"),
        helper.make_node("MaxPool", ["r3"], ["p"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", weight("w4", [24, 16, 3, 3], 144), bias("b4", 24)], ["c4"], "conv4", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c4"], ["r4"], "relu4"),
        helper.make_node("GlobalAveragePool", ["r4"], ["g"], "gap"),
        helper.make_node("Flatten", ["g"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", weight("w5", [10, 24], 24), bias("b5", 10)], ["y"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--activations", choices=["int8", "uint8", "int16", "uint16"], default="int8")
    ap.add_argument("--per-channel", action="store_true")
    ap.add_argument("--calibration", choices=["minmax", "entropy", "percentile"], default="minmax")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--model", help="a float model to quantise instead of the built-in CNN")
    ap.add_argument(
        "--format",
        choices=["qdq", "qoperator"],
        default="qdq",
        help="qoperator: QLinearConv / QLinearMatMul nodes (only Conv and MatMul quantised: the other "
        "QOperator kernels are onnxruntime's own domain)",
    )
    args = ap.parse_args()
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    float_path = os.path.join(args.out_dir, "float.onnx")
    if args.model:
        import sys

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from onnx_reference import randomize

        model = randomize(onnx.load(args.model), args.seed)
        # Old light models are IR 3 (initializers must be graph inputs) and opset 8; the
        # quantiser wants opset 13 or later.
        initialised = {t.name for t in model.graph.initializer}
        keep = [i for i in model.graph.input if i.name not in initialised]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = 8
        model = onnx.version_converter.convert_version(model, 13)
    else:
        model = cnn(rng)
    onnx.save(model, float_path)
    initialised = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in initialised]
    in_name = inp.name
    shape = [d.dim_value or 1 for d in inp.type.tensor_type.shape.dim]
    out_name = model.graph.output[0].name
    samples = [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(args.samples)]
    held_back = rng.uniform(-1, 1, shape).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {in_name: x}

    if args.model:
        # onnxruntime's pre-processing (shape inference, graph optimisation: batch norms
        # folded into their convolutions), as its quantisation guide asks.
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre_path = os.path.join(args.out_dir, "float-pre.onnx")
        quant_pre_process(float_path, pre_path, skip_symbolic_shape=True)
        float_path = pre_path
    path = os.path.join(args.out_dir, "model.onnx")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[args.calibration]
    quantize_static(
        float_path,
        path,
        Reader(),
        quant_format=QuantFormat.QDQ if args.format == "qdq" else QuantFormat.QOperator,
        op_types_to_quantize=None if args.format == "qdq" else ["Conv", "MatMul"],
        per_channel=args.per_channel,
        activation_type={
            "int8": QuantType.QInt8,
            "uint8": QuantType.QUInt8,
            "int16": QuantType.QInt16,
            "uint16": QuantType.QUInt16,
        }[args.activations],
        weight_type=QuantType.QInt8,
        calibrate_method=method,
    )
    model = onnx.load(path)

    def run(level):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = level
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return sess.run(None, {in_name: held_back})[0]

    # The reference is the QDQ graph's own semantics (dequantise, float op, quantise),
    # which onnxruntime evaluates with its graph optimisations off. With them on it fuses
    # the pattern into integer kernels (QLinearConv, ...) whose rounding differs: measured
    # several steps apart from its own reference on this model, as each layer's one-step
    # rounding differences carry into the next.
    y = run(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    fused = run(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    held_back.astype("<f4").tofile(os.path.join(args.out_dir, "input_0.bin"))
    np.asarray(y, dtype=np.float32).astype("<f4").tofile(os.path.join(args.out_dir, "output_0.bin"))
    # The output's quantisation step: the scale of the DequantizeLinear producing it.
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    step = None
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] == out_name:
            step = float(inits[node.input[1]])
    if step is None:
        # A float output (its last layer not quantised): the step of the last quantised
        # tensor, which bounds the rounding the output inherits only loosely.
        steps = [float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits and inits[n.input[1]].size == 1]
        step = steps[-1] if steps else None
    meta = {
        "inputs": [{"name": in_name, "shape": shape}],
        "outputs": [{"name": out_name, "shape": list(np.shape(y))}],
        "step": step,
        "fused_kernels_steps_apart": float(np.max(np.abs(fused - y)) / step) if step else None,
        "ops": sorted({n.op_type for n in model.graph.node}),
    }
    with open(os.path.join(args.out_dir, "meta.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
