"""Print {tensor name: dims} for every tensor whose shape the reference `onnx` shape
inference knows fully. aicsim's shape inference is checked against this
(compiler/tests/light_models.rs)."""
import json
import sys

import onnx
from onnx import shape_inference


def main(path):
    model = shape_inference.infer_shapes(onnx.load(path, load_external_data=False))
    graph = model.graph
    out = {}
    for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if all(d is not None for d in dims):
            out[vi.name] = dims
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
