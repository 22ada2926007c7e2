"""Print a JSON summary of an ONNX model as the reference `onnx` library reads it.

aicsim's Rust ONNX reader is checked against this (compiler/tests/light_models.rs).
"""
import json
import sys

import onnx


def dims(value_info):
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    out = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def summary(path):
    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    return {
        "ir_version": model.ir_version,
        "opset": [[o.domain, o.version] for o in model.opset_import],
        "graph": graph.name,
        "nodes": [[n.op_type, n.name, list(n.input), list(n.output), sorted(a.name for a in n.attribute)] for n in graph.node],
        "initializers": [[t.name, list(t.dims), t.data_type] for t in graph.initializer],
        "inputs": [[v.name, v.type.tensor_type.elem_type, dims(v)] for v in graph.input],
        "outputs": [[v.name, v.type.tensor_type.elem_type, dims(v)] for v in graph.output],
    }


if __name__ == "__main__":
    print(json.dumps(summary(sys.argv[1])))
