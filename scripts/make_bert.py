#!/usr/bin/env python3
"""Writes a small BERT-like encoder as ONNX, the way torch.onnx / optimum export one.

    make_bert.py OUT.onnx [--layers 2] [--hidden 128] [--heads 4] [--seq 32] [--seed 3]

Input `hidden_states` [batch_size, seq, hidden] (the embedded sequence; batch_size is a
symbolic dimension). With --exported, the inputs are as a PyTorch / optimum export of
BERT has them: int64 `input_ids`, `attention_mask` and `token_type_ids` [batch_size, seq];
word, position and token-type embeddings by Gather (positions sliced from a constant
`position_ids` by the sequence length, as exported), their sum layer-normalised, and the
mask turned into an additive bias through Unsqueeze / Cast / Sub / Mul. Every construct of an exported encoder is there: reshape targets
computed from Shape/Gather/Unsqueeze/Concat, an additive attention mask built with
ConstantOfShape/Equal/Where/Expand/Cast, Q/K/V projections, scaled dot-product
attention with Softmax, layer normalisation both decomposed (ReduceMean, Sub, Pow,
Sqrt, Div) and as the LayerNormalization operator, GELU in its Erf form, a Tanh pooler.
Weights are seeded random (std 0.05).
"""
import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--exported", action="store_true", help="token-id inputs and embeddings, as exported")
    ap.add_argument("--vocab", type=int, default=100)
    ap.add_argument("--opset", type=int, default=17, help="11 to 17; below 13 Unsqueeze takes its axes as an attribute, "
                    "below 17 every layer norm is decomposed")
    ap.add_argument("--symbolic-seq", action="store_true", help="the sequence dimension is the symbol sequence_length")
    ap.add_argument(
        "--constant-weights",
        action="store_true",
        help="weights as ConstantOfShape nodes (a small file for timing runs of full-size models)",
    )
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    H, S, NH = a.hidden, a.seq, a.heads
    SEQ = "sequence_length" if a.symbolic_seq else S
    D = H // NH
    nodes, inits = [], []
    counter = [0]

    def name(p):
        counter[0] += 1
        return f"{p}_{counter[0]}"

    def const(p, value):
        n = name(p)
        value = np.asarray(value)
        if a.constant_weights and value.dtype == np.float32 and value.size > 64:
            # One value repeated, as the onnx package's light models carry their weights.
            shape = numpy_helper.from_array(np.array(value.shape, dtype=np.int64), n + "_shape")
            inits.append(shape)
            fill = helper.make_tensor("value", TensorProto.FLOAT, [1], [float(value.flat[0])])
            nodes.append(helper.make_node("ConstantOfShape", [shape.name], [n], name=n, value=fill))
            return n
        inits.append(numpy_helper.from_array(value, n))
        return n

    def node(op, inputs, **attrs):
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def dense(x, k, n):
        w = const("w", rng.normal(0, 0.05, (k, n)).astype(np.float32))
        b = const("b", rng.normal(0, 0.02, (n,)).astype(np.float32))
        return node("Add", [node("MatMul", [x, w]), b])

    def unsqueeze(x, axes):
        if a.opset < 13:
            return node("Unsqueeze", [x], axes=axes)
        return node("Unsqueeze", [x, const("ax", np.array(axes, dtype=np.int64))])

    def dim(x, i):
        s = node("Shape", [x])
        g = node("Gather", [s, const("i", np.array(i, dtype=np.int64))], axis=0)
        return unsqueeze(g, [0])

    def layer_norm_decomposed(x):
        mean = node("ReduceMean", [x], axes=[-1], keepdims=1)
        d = node("Sub", [x, mean])
        var = node("ReduceMean", [node("Pow", [d, const("two", np.array(2.0, dtype=np.float32))])], axes=[-1], keepdims=1)
        std = node("Sqrt", [node("Add", [var, const("eps", np.array(1e-12, dtype=np.float32))])])
        n = node("Div", [d, std])
        g = const("g", rng.uniform(0.8, 1.2, (H,)).astype(np.float32))
        b = const("beta", rng.normal(0, 0.02, (H,)).astype(np.float32))
        return node("Add", [node("Mul", [n, g]), b])

    def layer_norm_op(x):
        if a.opset < 17:
            return layer_norm_decomposed(x)
        g = const("g", rng.uniform(0.8, 1.2, (H,)).astype(np.float32))
        b = const("beta", rng.normal(0, 0.02, (H,)).astype(np.float32))
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=1e-12)

    if a.exported:
        ids, mask_in, types = "input_ids", "attention_mask", "token_type_ids"
        word = node("Gather", [const("word_embeddings", rng.normal(0, 0.5, (a.vocab, H)).astype(np.float32)), ids])
        # Positions: a constant buffer sliced to the sequence length, as exported.
        seq_len = node("Gather", [node("Shape", [ids]), const("one", np.array(1, dtype=np.int64))], axis=0)
        pos_ids = node("Slice", [const("position_ids", np.arange(512, dtype=np.int64)[None, :]),
                                 const("zero", np.array([0], dtype=np.int64)),
                                 unsqueeze(seq_len, [0]),
                                 const("axis1", np.array([1], dtype=np.int64))])
        pos = node("Gather", [const("position_embeddings", rng.normal(0, 0.5, (512, H)).astype(np.float32)), pos_ids])
        typ = node("Gather", [const("token_type_embeddings", rng.normal(0, 0.5, (2, H)).astype(np.float32)), types])
        x = layer_norm_decomposed(node("Add", [node("Add", [word, pos]), typ]))
        m = unsqueeze(unsqueeze(mask_in, [1]), [2])
        m = node("Cast", [m], to=TensorProto.FLOAT)
        additive = node("Mul", [node("Sub", [const("one_f", np.array(1.0, dtype=np.float32)), m]),
                                const("neg", np.array(-10000.0, dtype=np.float32))])
        inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch_size", SEQ]) for n in (ids, mask_in, types)]
    else:
        x = node("Cast", ["hidden_states"], to=TensorProto.FLOAT)
        # Additive mask: the last quarter of the sequence is padding.
        ones = node("ConstantOfShape", [const("mshape", np.array([1, S], dtype=np.int64))],
                    value=helper.make_tensor("v", TensorProto.INT64, [1], [1]))
        keep = np.ones((1, S), dtype=np.int64)
        keep[0, S - S // 4:] = 0
        mask = node("Mul", [ones, const("keep", keep)])
        is_pad = node("Equal", [mask, const("zero", np.array(0, dtype=np.int64))])
        additive = node("Where", [is_pad, const("neg", np.array(-10000.0, dtype=np.float32)),
                                  const("nil", np.array(0.0, dtype=np.float32))])
        additive = unsqueeze(unsqueeze(additive, [1]), [1])
        additive = node("Cast", [node("Expand", [additive, const("eshape", np.array([1, 1, 1, S], dtype=np.int64))])],
                        to=TensorProto.FLOAT)
        inputs = [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, ["batch_size", SEQ, H])]
    for layer in range(a.layers):
        batch, seq = dim(x, 0), dim(x, 1)
        heads_shape = node("Concat", [batch, seq, const("nh", np.array([NH, D], dtype=np.int64))], axis=0)

        def heads(t, perm):
            return node("Transpose", [node("Reshape", [t, heads_shape])], perm=perm)

        q = heads(dense(x, H, H), [0, 2, 1, 3])
        k = heads(dense(x, H, H), [0, 2, 3, 1])
        v = heads(dense(x, H, H), [0, 2, 1, 3])
        s = node("Div", [node("MatMul", [q, k]), const("sqrt_d", np.array(np.sqrt(D), dtype=np.float32))])
        p = node("Softmax", [node("Add", [s, additive])], axis=-1)
        c = node("Transpose", [node("MatMul", [p, v])], perm=[0, 2, 1, 3])
        merged = node("Concat", [batch, seq, const("h", np.array([H], dtype=np.int64))], axis=0)
        c = node("Reshape", [c, merged])
        r = node("Add", [dense(c, H, H), x])
        h = layer_norm_decomposed(r) if layer % 2 == 0 else layer_norm_op(r)
        f = dense(h, H, 4 * H)
        gelu = node("Mul", [node("Mul", [f, node("Add", [node("Erf", [node("Div", [f, const("r2", np.array(np.sqrt(2.0), dtype=np.float32))])]),
                                                        const("one", np.array(1.0, dtype=np.float32))])]),
                            const("half", np.array(0.5, dtype=np.float32))])
        r = node("Add", [dense(gelu, 4 * H, H), h])
        x = layer_norm_decomposed(r) if layer % 2 == 1 else layer_norm_op(r)
    pooled = node("Tanh", [dense(x, H, H)])
    graph = helper.make_graph(
        nodes, "bert_encoder",
        inputs,
        [helper.make_tensor_value_info(pooled, TensorProto.FLOAT, ["batch_size", SEQ, H])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", a.opset)], producer_name="aicsim-make-bert")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, a.out)


if __name__ == "__main__":
    main()
