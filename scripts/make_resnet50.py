#!/usr/bin/env python3
"""Writes ResNet-50 as ONNX the way the seed notebook's export has it.

    make_resnet50.py OUT.onnx [--seed 7] [--classes 1000] [--depths 3,4,6,3]

`optimum-cli export onnx --model microsoft/resnet-50 --opset 11 --task image-classification`
gives a graph with input `pixel_values` [batch_size, num_channels, height, width] (all four
symbolic), output `logits` [batch_size, 1000], batch norms folded into the convolutions'
weights and biases (initializers named `onnx::Conv_<n>`), and node names after the module
path (`/resnet/encoder/stages.0/layers.0/layer/layer.1/convolution/Conv`). This script
writes that layout with seeded random weights (He-scaled), no download: the structure,
names and symbols are the export's; the numbers are not the trained model's.
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--depths", default="3,4,6,3", help="bottleneck layers per stage")
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    depths = [int(d) for d in a.depths.split(",")]
    nodes, inits = [], []
    counter = [400]

    def weight(value):
        counter[0] += 1
        t = numpy_helper.from_array(value.astype(np.float32), f"onnx::Conv_{counter[0]}")
        inits.append(t)
        return t.name

    def conv(prefix, x, cin, cout, k, stride, relu):
        fan_in = cin * k * k
        w = weight(rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin, k, k)))
        b = weight(rng.normal(0, 0.01, (cout,)))
        out = f"{prefix}/convolution/Conv_output_0"
        nodes.append(helper.make_node(
            "Conv", [x, w, b], [out], name=f"{prefix}/convolution/Conv",
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, dilations=[1, 1], group=1))
        if not relu:
            return out
        r = f"{prefix}/activation/Relu_output_0"
        nodes.append(helper.make_node("Relu", [out], [r], name=f"{prefix}/activation/Relu"))
        return r

    x = conv("/resnet/embedder/embedder", "pixel_values", 3, 64, 7, 2, True)
    pooled = "/resnet/embedder/pooler/MaxPool_output_0"
    nodes.append(helper.make_node("MaxPool", [x], [pooled], name="/resnet/embedder/pooler/MaxPool",
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = pooled, 64
    for s, depth in enumerate(depths):
        mid, cout = 64 << s, 256 << s
        for i in range(depth):
            p = f"/resnet/encoder/stages.{s}/layers.{i}"
            stride = 2 if (i == 0 and s > 0) else 1
            if i == 0:
                shortcut = conv(f"{p}/shortcut", x, cin, cout, 1, stride, False)
            else:
                shortcut = x
            h = conv(f"{p}/layer/layer.0", x, cin, mid, 1, 1, True)
            h = conv(f"{p}/layer/layer.1", h, mid, mid, 3, stride, True)
            h = conv(f"{p}/layer/layer.2", h, mid, cout, 1, 1, False)
            added = f"{p}/Add_output_0"
            nodes.append(helper.make_node("Add", [h, shortcut], [added], name=f"{p}/Add"))
            x = f"{p}/activation/Relu_output_0"
            nodes.append(helper.make_node("Relu", [added], [x], name=f"{p}/activation/Relu"))
            cin = cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["/resnet/pooler/GlobalAveragePool_output_0"],
                                  name="/resnet/pooler/GlobalAveragePool"))
    nodes.append(helper.make_node("Flatten", ["/resnet/pooler/GlobalAveragePool_output_0"],
                                  ["/classifier/classifier.0/Flatten_output_0"], name="/classifier/classifier.0/Flatten",
                                  axis=1))
    fc_w = numpy_helper.from_array(rng.normal(0, np.sqrt(1.0 / cin), (a.classes, cin)).astype(np.float32),
                                   "classifier.1.weight")
    fc_b = numpy_helper.from_array(np.zeros(a.classes, np.float32), "classifier.1.bias")
    inits += [fc_w, fc_b]
    nodes.append(helper.make_node("Gemm", ["/classifier/classifier.0/Flatten_output_0", fc_w.name, fc_b.name],
                                  ["logits"], name="/classifier/classifier.1/Gemm", alpha=1.0, beta=1.0, transB=1))
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT,
                                       ["batch_size", "num_channels", "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", a.classes])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="pytorch")
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, a.out)


if __name__ == "__main__":
    main()
