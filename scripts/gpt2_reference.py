#!/usr/bin/env python3
"""Greedy generation with onnxruntime on a model of scripts/make_gpt2.py: the reference
the simulator's prefill + decode programs are checked against.

    gpt2_reference.py MODEL.onnx OUT.json --prompt 3,14,15 --generate 16 --ctx 64

The cache starts as zeros [1, heads, ctx, head_dim]; the prompt runs at positions
0..P-1, then each generated token at the next position, the `_RetainedState` outputs
fed back as the next step's cache. OUT.json: {"tokens": [...], "logits": [[...], ...]}
(the last position's logits of every step).
"""
import argparse
import json

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--generate", type=int, default=16)
    ap.add_argument("--ctx", type=int, required=True)
    a = ap.parse_args()
    s = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    feed = {}
    for i in s.get_inputs():
        if i.name.startswith("past_"):
            feed[i.name] = np.zeros((1, i.shape[1], a.ctx, i.shape[3]), np.float32)
    prompt = [int(t) for t in a.prompt.split(",")]
    feed["input_ids"] = np.array([prompt], np.int64)
    feed["position_ids"] = np.arange(len(prompt), dtype=np.int64)[None]
    names = [o.name for o in s.get_outputs()]
    tokens, logits, n = [], [], len(prompt)
    for _ in range(a.generate):
        out = dict(zip(names, s.run(None, feed)))
        last = out["logits"][0, -1]
        logits.append([float(v) for v in last])
        t = int(last.argmax())
        tokens.append(t)
        for k in list(feed):
            if k.startswith("past_"):
                feed[k] = out[k + "_RetainedState"]
        feed["input_ids"] = np.array([[t]], np.int64)
        feed["position_ids"] = np.array([[n]], np.int64)
        n += 1
    with open(a.out, "w") as f:
        json.dump({"tokens": tokens, "logits": logits}, f)


if __name__ == "__main__":
    main()
