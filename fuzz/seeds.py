"""Writes the ONNX seeds of the `onnx` fuzz target (fuzz/corpus/onnx).

Small models with seeded random weights, one for each family of operators the
compiler lowers, built with onnx's helper API. Run with the project's virtualenv:
`.venv/bin/python fuzz/seeds.py`; scripts/fuzz.sh then compiles them into the
container seeds. The files are committed; rerun only to change the seeds.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "onnx")
rng = np.random.RandomState(7)


def weight(name, *shape):
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.1, name)


def io(name, *shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def save(name, nodes, inputs, outputs, inits, opset=13):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="aicsim-seeds")
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(OUT, name + ".onnx"))


os.makedirs(OUT, exist_ok=True)
save(
    "conv_relu_pool",
    [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["y"]),
    ],
    [io("x", 1, 3, 8, 8)],
    [io("y", 1, 4)],
    [weight("w", 4, 3, 3, 3), weight("b", 4)],
)
save(
    "gemm_softmax",
    [
        helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
        helper.make_node("Softmax", ["g"], ["y"], axis=-1),
    ],
    [io("x", 2, 16)],
    [io("y", 2, 8)],
    [weight("w", 8, 16), weight("b", 8)],
)
save(
    "matmul_gelu_residual",
    [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Erf", ["a"], ["e"]),
        helper.make_node("Mul", ["e", "a"], ["g"]),
        helper.make_node("Add", ["g", "x"], ["y"]),
    ],
    [io("x", 1, 4, 16)],
    [io("y", 1, 4, 16)],
    [weight("w", 16, 16), weight("b", 16)],
)
save(
    "layout",
    [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["t", "shape"], ["r"]),
        helper.make_node("Concat", ["r", "r"], ["c"], axis=1),
        helper.make_node("ReduceMean", ["c"], ["y"], axes=[1], keepdims=1),
    ],
    [io("x", 1, 4, 6)],
    [io("y", 1, 1)],
    [numpy_helper.from_array(np.array([1, 24], dtype=np.int64), "shape")],
)
save(
    "elementwise",
    [
        helper.make_node("Sub", ["x", "k"], ["s"]),
        helper.make_node("Pow", ["s", "two"], ["p"]),
        helper.make_node("Sqrt", ["p"], ["q"]),
        helper.make_node("Clip", ["q", "lo", "hi"], ["c"]),
        helper.make_node("Tanh", ["c"], ["t"]),
        helper.make_node("Max", ["t", "x"], ["y"]),
    ],
    [io("x", 1, 32)],
    [io("y", 1, 32)],
    [
        weight("k", 32),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "lo"),
        numpy_helper.from_array(np.array(1.5, dtype=np.float32), "hi"),
    ],
)
save(
    "symbolic_batch",
    [helper.make_node("Gemm", ["x", "w"], ["y"])],
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    [weight("w", 8, 4)],
    opset=11,
)

def scalar(name, value, dtype):
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


# Int8 in QDQ form (as onnxruntime's static quantiser writes it) and in QOperator form.
w_q = (rng.standard_normal((4, 3, 3, 3)) * 40).round().clip(-127, 127).astype(np.int8)


def qdq_conv_pool_gemm(name, bits):
    """The QDQ seed with 8-bit activations, or 16-bit ones (int16 / uint16 zero points,
    steps 256 times finer, the bias in units of the finer sums; opset 21)."""
    k = 256 if bits == 16 else 1
    s8, u8 = (np.int16, np.uint16) if bits == 16 else (np.int8, np.uint8)
    save(
        name,
        [
            helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
            helper.make_node("DequantizeLinear", ["bq", "bs"], ["bd"], axis=0),
            helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("QuantizeLinear", ["c", "cs", "cz"], ["cq"]),
            helper.make_node("DequantizeLinear", ["cq", "cs", "cz"], ["cd"]),
            helper.make_node("MaxPool", ["cd"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("QuantizeLinear", ["p", "cs", "cz"], ["pq"]),
            helper.make_node("DequantizeLinear", ["pq", "cs", "cz"], ["pd"]),
            helper.make_node("Add", ["pd", "pd"], ["s"]),
            helper.make_node("Flatten", ["s"], ["f"]),
            helper.make_node("QuantizeLinear", ["f", "fs", "fz"], ["fq"]),
            helper.make_node("DequantizeLinear", ["fq", "fs", "fz"], ["fd"]),
            helper.make_node("DequantizeLinear", ["gq", "gs", "gz"], ["gd"]),
            helper.make_node("Gemm", ["fd", "gd"], ["y"], transB=1),
        ],
        [io("x", 1, 3, 8, 8)],
        [io("y", 1, 5)],
        [
            scalar("xs", 0.02 / k, np.float32),
            scalar("xz", 3 * k, s8),
            numpy_helper.from_array(w_q, "wq"),
            numpy_helper.from_array(np.array([0.01, 0.02, 0.015, 0.01], dtype=np.float32), "ws"),
            numpy_helper.from_array(np.zeros(4, dtype=np.int8), "wz"),
            numpy_helper.from_array(np.array([100, -50, 0, 7], dtype=np.int32) * k, "bq"),
            numpy_helper.from_array(np.array([0.0002, 0.0004, 0.0003, 0.0002], dtype=np.float32) / k, "bs"),
            scalar("cs", 0.05 / k, np.float32),
            scalar("cz", 128 * k, u8),
            scalar("fs", 0.1 / k, np.float32),
            scalar("fz", 0, s8),
            numpy_helper.from_array((rng.standard_normal((5, 64)) * 30).round().clip(-127, 127).astype(np.int8), "gq"),
            scalar("gs", 0.01, np.float32),
            scalar("gz", 0, np.int8),
        ],
        opset=21 if bits == 16 else 13,
    )


qdq_conv_pool_gemm("qdq_conv_pool_gemm", 8)
save(
    "qlinear_conv_matmul",
    [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node(
            "QLinearConv", ["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz"], ["cq"], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Flatten", ["cq"], ["fq"]),
        helper.make_node("QLinearMatMul", ["fq", "ys", "yz", "mq", "ms", "mz", "os", "oz"], ["oq"]),
        helper.make_node("DequantizeLinear", ["oq", "os", "oz"], ["y"]),
    ],
    [io("x", 1, 3, 4, 4)],
    [io("y", 1, 6)],
    [
        scalar("xs", 0.02, np.float32),
        scalar("xz", 128, np.uint8),
        numpy_helper.from_array(w_q.view(np.uint8).astype(np.uint8) // 2, "wq"),
        scalar("ws", 0.01, np.float32),
        scalar("wz", 0, np.uint8),
        scalar("ys", 0.05, np.float32),
        scalar("yz", 128, np.uint8),
        numpy_helper.from_array(rng.randint(0, 255, (64, 6)).astype(np.uint8), "mq"),
        scalar("ms", 0.01, np.float32),
        scalar("mz", 128, np.uint8),
        scalar("os", 0.2, np.float32),
        scalar("oz", 128, np.uint8),
    ],
)
print("wrote", len(os.listdir(OUT)), "ONNX seeds to", OUT)

# A GPT-style decoder with a KV cache (ScatterND cache updates, position masks, a
# runtime Slice) is written by scripts/make_gpt2.py:
#   .venv/bin/python scripts/make_gpt2.py fuzz/corpus/onnx/kv_cache_gpt.onnx \
#       --layers 1 --embed 8 --heads 2 --vocab 11 --positions 16

# 16-bit activations (A16W8, -quantization-precision=Int16), drawn last so the seeds
# above keep their bytes.
qdq_conv_pool_gemm("qdq16_conv_pool_gemm", 16)
