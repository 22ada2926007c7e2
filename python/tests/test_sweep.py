"""Configuration sweeps: `aicsim.sweep` and `aic-configurator -ray-address` on a Ray
cluster started here give exactly what the search gives on one machine."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicsim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("AICSIM_BIN_DIR", os.path.join(ROOT, "target", "release"))
RAY = os.path.join(os.path.dirname(sys.executable), "ray")

SEARCH = {
    "max_func_eval": 10,
    "objective": "maximize_inf_rate",
    "params": {"cores": {"min": 1, "max": 4}, "bs": {"min": 1, "max": 4}, "instances": {"min": 1, "max": 14}},
    "initial_values": [{"cores": 2, "bs": 1, "instances": 7}],
}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A small CNN with a symbolic batch, seeded weights, as an ONNX file."""
    path = str(tmp_path_factory.mktemp("sweep") / "cnn.onnx")
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (16, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.2, (16, 10)).astype(np.float32), "fc")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("MatMul", ["f", "fc"], ["y"]),
        ],
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch_size", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch_size", 10])],
        [w, fc],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.fixture(scope="module")
def ray_instance():
    """Ray in this process (its own local instance), shut down after the module."""
    ray = pytest.importorskip("ray")
    yield aicsim.sweep_connect("local")
    ray.shutdown()


def test_a_sweep_on_ray_equals_the_sweep_on_this_machine(cnn, ray_instance):
    models = [cnn, "zoo:mobilenetv2"]
    kw = dict(convert_to_fp16=True, onnx_define_symbol_batch_size="batch_size")
    here = aicsim.sweep(models, SEARCH, threads=2, **kw)
    there = aicsim.sweep(models, SEARCH, ray_address="auto", **kw)
    assert set(here) == set(models)
    for m in models:
        # Every evaluation, to the last bit: each is a pure function of the model's
        # bytes, the point and the seed, wherever it runs.
        assert there[m] == here[m], m
        best = here[m]["best"]
        assert best["status"] == "OK" and best["infPerSec"] > 0
        assert best["cores"] * best["instances"] <= 14
        assert len(here[m]["evaluations"]) <= SEARCH["max_func_eval"]
    # A different seed is a different dispatch jitter: still a valid search.
    other = aicsim.sweep(cnn, SEARCH, threads=2, seed=7, **kw)
    assert other[cnn]["best"]["status"] == "OK"


def test_the_sweep_finds_what_aic_configurator_finds(cnn, tmp_path):
    exe = os.path.join(BIN, "aic-configurator")
    if not os.path.exists(exe):
        pytest.skip(f"{exe} is not built (scripts/test.sh builds it)")
    spec = tmp_path / "search.json"
    spec.write_text(json.dumps(SEARCH))
    out = tmp_path / "out"
    subprocess.run([exe, cnn, "onnx", f"-optimized-config-search={spec}", "-convert-to-fp16",
                    "-onnx-define-symbol-batch-size=batch_size", f"-output-dir={out}", "-compiled-models=0"],
                   check=True, capture_output=True)
    cli = json.loads((out / "results.json").read_text())
    swept = aicsim.sweep(cnn, str(spec), convert_to_fp16=True, onnx_define_symbol_batch_size="batch_size")[cnn]
    assert swept["best"] == cli["best"]
    assert swept["evaluations"] == cli["evaluations"]


def test_aic_configurator_on_a_ray_cluster_finds_what_it_finds_alone(cnn, tmp_path):
    """`ray start --head` makes a cluster; the configurator's -ray-address=auto evaluates
    every round on it, through the aicsim package's helper."""
    pytest.importorskip("ray")
    exe = os.path.join(BIN, "aic-configurator")
    if not os.path.exists(exe):
        pytest.skip(f"{exe} is not built (scripts/test.sh builds it)")
    spec = tmp_path / "search.json"
    spec.write_text(json.dumps(SEARCH))
    env = dict(os.environ, AICSIM_PYTHON=sys.executable, RAY_USAGE_STATS_ENABLED="0")

    def configurator(out, *extra):
        return subprocess.run([exe, cnn, "onnx", f"-optimized-config-search={spec}", "-convert-to-fp16",
                               "-onnx-define-symbol-batch-size=batch_size", f"-output-dir={out}",
                               "-compiled-models=1", *extra],
                              capture_output=True, text=True, env=env, timeout=600)

    alone = configurator(tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr
    subprocess.run([RAY, "start", "--head", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, capture_output=True, env=env, timeout=300)
    try:
        cluster = configurator(tmp_path / "cluster", "-ray-address=auto")
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=300)
    assert cluster.returncode == 0, cluster.stderr
    assert "[INFO]: Evaluating on the Ray cluster at auto: 1 node(s)" in cluster.stdout, cluster.stdout
    a = json.loads((tmp_path / "alone" / "results.json").read_text())
    b = json.loads((tmp_path / "cluster" / "results.json").read_text())
    assert b["best"] == a["best"] and b["evaluations"] == a["evaluations"]
    best_line = [line for line in alone.stdout.splitlines() if line.startswith("Best configuration:")]
    assert best_line and best_line[0] in cluster.stdout
    # The best program was compiled from the cluster's search too, and is the same program.
    progs = [os.path.join(root, f) for d in ("alone", "cluster")
             for root, _, files in os.walk(tmp_path / d) for f in files if f == "programqpc.bin"]
    assert len(progs) == 2 and open(progs[0], "rb").read() == open(progs[1], "rb").read()


def test_bad_sweeps_are_refused_by_name(cnn, tmp_path):
    with pytest.raises(aicsim.AicError, match="missing.onnx"):
        aicsim.sweep(str(tmp_path / "missing.onnx"), SEARCH)
    with pytest.raises(ValueError, match="search"):
        aicsim.sweep(cnn, {"params": {}, "initial_values": []})
    with pytest.raises(ValueError, match="unknown field"):
        aicsim.sweep(cnn, dict(SEARCH, gpus=4))
    exe = os.path.join(BIN, "aic-configurator")
    if os.path.exists(exe) and shutil.which("true"):
        spec = tmp_path / "s.json"
        spec.write_text(json.dumps(SEARCH))
        # A Python without the package: one line naming what is missing, exit 2.
        r = subprocess.run([exe, cnn, "onnx", f"-optimized-config-search={spec}", f"-output-dir={tmp_path / 'o'}",
                            "-ray-address=auto"], capture_output=True, text=True,
                           env=dict(os.environ, AICSIM_PYTHON="/nonexistent/python3"))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "-ray-address=auto" in r.stderr and "/nonexistent/python3" in r.stderr
        assert r.stdout == ""
