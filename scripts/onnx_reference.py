#!/usr/bin/env python3
"""Reference outputs for aicsim's compiler tests, computed by onnxruntime (CPU).

    onnx_reference.py MODEL OUT_DIR [--seed N] [--keep-weights]

Writes OUT_DIR/model.onnx (the model, with every weight produced by a ConstantOfShape
node replaced by a seeded random initializer of the same shape unless --keep-weights),
OUT_DIR/input_<i>.bin (float32, little-endian: arange(n) / n in the input's shape; an
integer input is int64 or int32 as the model declares it: an attention mask is ones with
the last quarter of each row zero, token type ids are 0 then 1 by halves, other ids are
(7 i) mod 100),
OUT_DIR/output_<i>.bin (onnxruntime's outputs) and OUT_DIR/meta.json (names, shapes);
with --keep-weights also OUT_DIR/package_output_<i>.bin, the expected output the onnx
package ships next to the model (MODEL_output_<i>.pb).

The bundled light models carry their weights as ConstantOfShape(0.02), which makes
every class score equal and the reference output uniform; random weights make the
comparison meaningful. Weights are scaled so activations stay in a sane range (also in
f16, through ResNet-50's 16 residual sums):
He-initialised convolution weights, 1/sqrt(fan_in) dense weights, batch-norm scales
0.2-0.6 and positive variances.
"""
import argparse
import json
import os

import numpy as np
import onnx
from onnx import numpy_helper


def role(model, name):
    """(op_type, input index) of the first node that reads `name`."""
    for node in model.graph.node:
        for i, inp in enumerate(node.input):
            if inp == name:
                return node, i
    return None, None


def random_weight(rng, model, name, shape):
    node, index = role(model, name)
    op = node.op_type if node is not None else ""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else max(int(shape[0]) if shape else 1, 1)
    if op == "Conv" and index == 1:
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if op in ("Gemm", "MatMul") and index == 1:
        trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        fan = shape[1] if trans_b else shape[0]
        return rng.normal(0.0, np.sqrt(1.0 / fan), shape)
    if op == "BatchNormalization":
        if index in (1, 4):  # scale, variance: positive
            return rng.uniform(0.5, 1.5, shape) if index == 4 else rng.uniform(0.2, 0.6, shape)
        return rng.normal(0.0, 0.1, shape)
    return rng.normal(0.0, 0.05, shape)


def randomize(model, seed):
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep = []
    added = []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = [int(d) for d in inits[node.input[0]]]
            value = random_weight(rng, model, node.output[0], shape).astype(np.float32)
            added.append(numpy_helper.from_array(value, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    live = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live + added)
    inputs = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-weights", action="store_true")
    ap.add_argument("--time", type=int, default=0, help="also time N inferences; prints 'ort_seconds_per_inference S'")
    args = ap.parse_args()
    import onnxruntime as ort

    model = onnx.load(args.model)
    if not args.keep_weights:
        model = randomize(model, args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "model.onnx")
    onnx.save(model, path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    if args.time > 0:
        # Timing: onnxruntime's own graph optimisations (fusion, layout) on, as users run it.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feeds = {}
    meta = {"inputs": [], "outputs": []}
    for i, inp in enumerate(sess.get_inputs()):
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        n = int(np.prod(shape))
        if inp.type in ("tensor(int64)", "tensor(int32)"):
            dtype = np.int64 if inp.type == "tensor(int64)" else np.int32
            row = shape[-1]
            col = np.arange(n) % row
            if "mask" in inp.name:
                x = (col < row - row // 4).astype(dtype)
            elif "type" in inp.name:
                x = (col >= row // 2).astype(dtype)
            else:
                x = (np.arange(n) * 7 % 100).astype(dtype)
            x = x.reshape(shape)
            x.astype("<i8" if dtype == np.int64 else "<i4").tofile(os.path.join(args.out_dir, f"input_{i}.bin"))
        else:
            x = (np.arange(n, dtype=np.float32) / np.float32(n)).reshape(shape)
            x.astype("<f4").tofile(os.path.join(args.out_dir, f"input_{i}.bin"))
        feeds[inp.name] = x
        meta["inputs"].append({"name": inp.name, "shape": shape, "type": inp.type})
    outs = sess.run(None, feeds)
    if args.time > 0:
        import time

        t = time.perf_counter()
        for _ in range(args.time):
            sess.run(None, feeds)
        print(f"ort_seconds_per_inference {(time.perf_counter() - t) / args.time:.6f}")
    for i, (o, y) in enumerate(zip(sess.get_outputs(), outs)):
        np.asarray(y, dtype=np.float32).astype("<f4").tofile(os.path.join(args.out_dir, f"output_{i}.bin"))
        meta["outputs"].append({"name": o.name, "shape": list(np.shape(y))})
    if args.keep_weights:
        # The package's own expected outputs, next to the model.
        base = os.path.splitext(args.model)[0]
        for i in range(len(outs)):
            pb = f"{base}_output_{i}.pb"
            if os.path.exists(pb):
                t = onnx.TensorProto()
                with open(pb, "rb") as f:
                    t.ParseFromString(f.read())
                numpy_helper.to_array(t).astype("<f4").tofile(os.path.join(args.out_dir, f"package_output_{i}.bin"))
    with open(os.path.join(args.out_dir, "meta.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
