#!/usr/bin/env python3
"""Writes a GPT-2-shaped decoder with a KV cache as ONNX, in the form models for
Cloud AI 100 are exported in (Qualcomm's efficient-transformers: a fixed-length cache
updated in place at the token positions, the retained state returned as
`<name>_RetainedState`).

    make_gpt2.py OUT.onnx [--layers 2] [--embed 64] [--heads 4] [--vocab 97]
                 [--positions 256] [--seed 5] [--constant-weights]

Inputs: int64 `input_ids` and `position_ids` [batch_size, seq_len]; per layer the cache
`past_key.L` and `past_value.L` [batch_size, heads, ctx_len, head_dim] (float). Outputs:
`logits` [batch_size, 1, vocab] of the last position, and per layer
`past_key.L_RetainedState` / `past_value.L_RetainedState`: the cache with this step's
keys and values written at `position_ids` by ScatterND (indices = Concat(batch grid,
head grid, Expand(Unsqueeze(position_ids)))). GPT-2's block: token and learned position
embeddings by Gather, pre-LayerNorm, Q/K/V projections, attention over the whole cache
with the causal mask made from the positions (cache slot c is visible to the token at
position p when c <= p: `scores + (allowed - 1) * 10000`, as GPT-2's `w*b - 1e4*(1-b)`),
GELU in its tanh form (`gelu_new`), residuals, a final LayerNorm, the last position's
hidden state sliced out and projected to the vocabulary. Weights seeded random.

A prompt of P tokens runs with seq_len = P and positions 0..P-1 (the prefill); each next
token with seq_len = 1 at position P, P+1, ... (a decode step); slots past the current
position hold stale or zero rows the mask hides.
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=97)
    ap.add_argument("--positions", type=int, default=256)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument(
        "--constant-weights",
        action="store_true",
        help="weights as ConstantOfShape nodes (a small file for timing runs of full-size models)",
    )
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    E, NH = a.embed, a.heads
    D = E // NH
    nodes, inits = [], []
    counter = [0]

    def name(p):
        counter[0] += 1
        return f"{p}_{counter[0]}"

    def const(p, value):
        n = name(p)
        value = np.asarray(value)
        if a.constant_weights and value.dtype == np.float32 and value.size > 64:
            shape = numpy_helper.from_array(np.array(value.shape, dtype=np.int64), n + "_shape")
            inits.append(shape)
            fill = helper.make_tensor("value", TensorProto.FLOAT, [1], [float(value.flat[0])])
            nodes.append(helper.make_node("ConstantOfShape", [shape.name], [n], name=n, value=fill))
            return n
        inits.append(numpy_helper.from_array(value, n))
        return n

    def i64(p, v):
        return const(p, np.array(v, dtype=np.int64))

    def f32(p, v):
        return const(p, np.array(v, dtype=np.float32))

    def node(op, inputs, out=None, **attrs):
        out = out or name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def dense(x, k, n, std=0.08):
        w = const("w", rng.normal(0, std, (k, n)).astype(np.float32))
        b = const("b", rng.normal(0, 0.02, (n,)).astype(np.float32))
        return node("Add", [node("MatMul", [x, w]), b])

    def layer_norm(x):
        g = const("ln_g", rng.uniform(0.8, 1.2, (E,)).astype(np.float32))
        b = const("ln_b", rng.normal(0, 0.02, (E,)).astype(np.float32))
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=1e-5)

    def dim(x, i):
        g = node("Gather", [node("Shape", [x]), i64("i", i)], axis=0)
        return node("Unsqueeze", [g, i64("ax", [0])])

    ids, pos = "input_ids", "position_ids"
    wte = const("wte", rng.normal(0, 0.5, (a.vocab, E)).astype(np.float32))
    wpe = const("wpe", rng.normal(0, 0.2, (a.positions, E)).astype(np.float32))
    x = node("Add", [node("Gather", [wte, ids]), node("Gather", [wpe, pos])])

    cache0 = "past_key.0"
    batch, seq, ctx = dim(ids, 0), dim(ids, 1), dim(cache0, 2)
    # Positions as [B, 1, S, 1]: the mask's rows, and the cache rows to write.
    pos4 = node("Unsqueeze", [pos, i64("axes", [1, 3])])
    ctx_range = node("Range", [i64("zero", 0), node("Squeeze", [ctx, i64("ax", [0])]), i64("one", 1)])
    slots = node("Reshape", [ctx_range, i64("shape", [1, 1, 1, -1])])
    allowed = node("Cast", [node("LessOrEqual", [slots, pos4])], to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [allowed, f32("one", 1.0)]), f32("big", 10000.0)])
    # Scatter indices: batch and head grids (shape arithmetic) and the positions.
    heads = i64("nh", [NH])
    grid = node("Concat", [batch, heads, seq, i64("one", [1])], axis=0)

    def iota(n, axes):
        r = node("Range", [i64("zero", 0), node("Squeeze", [n, i64("ax", [0])]), i64("one", 1)])
        return node("Expand", [node("Unsqueeze", [r, i64("axes", axes)]), grid])

    indices = node("Concat", [iota(batch, [1, 2, 3]), iota(heads, [0, 2, 3]), node("Expand", [pos4, grid])], axis=3)
    split_shape = node("Concat", [batch, seq, i64("hd", [NH, D])], axis=0)
    merge_shape = node("Concat", [batch, seq, i64("e", [E])], axis=0)

    def split_heads(t):
        return node("Transpose", [node("Reshape", [t, split_shape])], perm=[0, 2, 1, 3])

    inputs = [
        helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch_size", "seq_len"]),
        helper.make_tensor_value_info(pos, TensorProto.INT64, ["batch_size", "seq_len"]),
    ]
    outputs = []
    for layer in range(a.layers):
        h = layer_norm(x)
        q, k, v = (split_heads(dense(h, E, E)) for _ in range(3))
        presents = []
        for kind, new in (("key", k), ("value", v)):
            past = f"past_{kind}.{layer}"
            inputs.append(helper.make_tensor_value_info(past, TensorProto.FLOAT, ["batch_size", NH, "ctx_len", D]))
            present = node("ScatterND", [past, indices, new], out=f"{past}_RetainedState")
            outputs.append(helper.make_tensor_value_info(present, TensorProto.FLOAT, ["batch_size", NH, "ctx_len", D]))
            presents.append(present)
        kt = node("Transpose", [presents[0]], perm=[0, 1, 3, 2])
        s = node("Mul", [node("MatMul", [q, kt]), f32("scale", 1.0 / np.sqrt(D))])
        p = node("Softmax", [node("Add", [s, bias])], axis=-1)
        c = node("Reshape", [node("Transpose", [node("MatMul", [p, presents[1]])], perm=[0, 2, 1, 3]), merge_shape])
        x = node("Add", [x, dense(c, E, E)])
        f = dense(layer_norm(x), E, 4 * E)
        # gelu_new: 0.5 f (1 + tanh(sqrt(2/pi) (f + 0.044715 f^3)))
        inner = node("Mul", [node("Add", [f, node("Mul", [node("Pow", [f, f32("three", 3.0)]), f32("c", 0.044715)])]),
                             f32("k", np.sqrt(2.0 / np.pi))])
        g = node("Mul", [node("Mul", [f, f32("half", 0.5)]), node("Add", [node("Tanh", [inner]), f32("one", 1.0)])])
        x = node("Add", [x, dense(g, 4 * E, E)])
    last = node("Slice", [layer_norm(x), i64("start", [-1]), i64("end", [np.iinfo(np.int64).max]), i64("axis", [1])])
    logits = node("MatMul", [last, const("lm_head", rng.normal(0, 0.3, (E, a.vocab)).astype(np.float32))], out="logits")
    outputs.insert(0, helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch_size", 1, a.vocab]))
    graph = helper.make_graph(nodes, "gpt2_kv", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="aicsim-make-gpt2")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, a.out)


if __name__ == "__main__":
    main()
