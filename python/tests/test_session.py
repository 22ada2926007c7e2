"""The aicsim Python package against its promises: compile with aic-exec's options, a
qaic-style Session whose functional outputs equal onnxruntime's, the batch and async
forms, the queue under many submitters, the runner's figures, errors mapped to Python
exceptions raised before anything is queued, and nothing left behind after close."""

import asyncio
import gc
import os
import subprocess
import sys
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicsim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small CNN (conv, relu, pool, matmul) with seeded weights, and its program."""
    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (8, 4)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = str(d / "tiny.onnx")
    onnx.save(model, path)
    qpc = aicsim.compile(path, str(d / "qpc"), aic_num_cores=2, onnx_define_symbol={"batch": 2})
    return path, qpc


def inputs(seed=1, batch=2):
    return {"x": np.random.default_rng(seed).normal(size=(batch, 3, 8, 8)).astype(np.float32)}


def reference(path, feed):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_compile_takes_aic_exec_options_as_keywords(tiny, tmp_path):
    path, qpc = tiny
    assert qpc.endswith("programqpc.bin") and os.path.exists(qpc)
    fp16 = aicsim.compile(path, str(tmp_path / "fp16"), convert_to_fp16=True, onnx_define_symbol={"batch": 1})
    assert os.path.exists(fp16)
    with pytest.raises(ValueError, match="unknown flag '-no-such-flag"):
        aicsim.compile(path, str(tmp_path / "bad"), no_such_flag=3)
    with pytest.raises(aicsim.AicError) as e:
        aicsim.compile(str(tmp_path / "missing.onnx"), str(tmp_path / "m"))
    assert e.value.errno == "EINVAL" and "missing.onnx" in e.value.message
    assert not os.path.exists(tmp_path / "m" / "programqpc.bin")


def test_a_session_describes_its_program_and_runs_it_like_onnxruntime(tiny):
    path, qpc = tiny
    with aicsim.Session(qpc) as s:
        assert s.input_names == ["x"] and s.output_names == ["y"]
        assert s.input_shapes == [[2, 3, 8, 8]] and s.output_shapes == [[2, 4]]
        assert s.input_dtypes == ["float32"] and s.output_dtypes == ["float32"]
        assert s.batch_size == 2
        for seed in range(3):
            feed = inputs(seed)
            got = s.run(feed)["y"]
            assert got.shape == (2, 4) and got.dtype == np.float32
            np.testing.assert_allclose(got, reference(path, feed), rtol=1e-4, atol=1e-5)
        # A strided (non-contiguous) array is read too.
        big = np.random.default_rng(9).normal(size=(2, 3, 8, 16)).astype(np.float32)
        view = big[:, :, :, ::2]
        assert not view.flags["C_CONTIGUOUS"]
        np.testing.assert_allclose(s.run({"x": view})["y"], reference(path, {"x": np.ascontiguousarray(view)}),
                                   rtol=1e-4, atol=1e-5)


def test_run_batch_and_run_async_give_what_run_gives(tiny):
    _, qpc = tiny
    with aicsim.Session(qpc, num_activations=3) as s:
        feeds = [inputs(seed) for seed in range(7)]
        one_by_one = [s.run(f)["y"] for f in feeds]
        batch = s.run_batch(feeds)
        assert len(batch) == 7
        for a, b in zip(one_by_one, batch):
            np.testing.assert_array_equal(a, b["y"])

        async def many():
            return await asyncio.gather(*(s.run_async(f) for f in feeds))

        for a, b in zip(one_by_one, asyncio.run(many())):
            np.testing.assert_array_equal(a, b["y"])


def test_the_queue_serves_many_concurrent_submitters_each_result_with_its_context(tiny):
    path, qpc = tiny
    feeds = [inputs(seed) for seed in range(4)]
    want = [reference(path, f) for f in feeds]
    with aicsim.Session(qpc, num_activations=2, set_size=4) as s:
        def submitter(k):
            for i in range(25):
                s.submit(feeds[(k + i) % 4], context=(k, i, (k + i) % 4))

        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        got = []
        for _ in range(200):
            context, out = s.recv(timeout=30)
            got.append(context)
            np.testing.assert_allclose(out["y"], want[context[2]], rtol=1e-4, atol=1e-5)
        for t in threads:
            t.join()
        assert sorted(got) == sorted((k, i, (k + i) % 4) for k in range(8) for i in range(25))
        with pytest.raises(TimeoutError):
            s.recv(timeout=0.05)


def test_benchmark_reports_the_runners_figures_on_the_simulated_clock(tiny):
    _, qpc = tiny
    with aicsim.Session(qpc, num_activations=2, set_size=4) as s:
        a = s.benchmark(num_iter=100)
        b = s.benchmark(num_iter=100)
    assert a.inferences == 100 and a.batch_size == 2
    assert a.inf_per_sec > 0 and a.latency_p50_ms <= a.latency_p90_ms <= a.latency_p99_ms <= a.latency_max_ms
    assert [name for name, _ in a.stages_ms][:2] == ["enqueue", "preProc"]
    assert 0 < a.device_exec_mean_ms < a.latency_mean_ms
    # The simulated clock: the same run gives the same figures.
    assert a.inf_per_sec == b.inf_per_sec and a.latency_p99_ms == b.latency_p99_ms
    d = a.to_dict()
    assert d["inferences"] == 100 and d["stage_preProc_ms"] > 0
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="to_dict gives the same figures"):
            a.to_dataframe()
    else:
        assert a.to_dataframe()["inf_per_sec"][0] == a.inf_per_sec


def test_the_profile_of_an_inference_comes_as_tables(tiny):
    """`benchmark(profile_iter=k)`: the k-th inference's device profile, per core and op
    class (as aic-runner's stats files) and per ONNX node, as lists of dicts and as
    pandas DataFrames."""
    _, qpc = tiny
    with aicsim.Session(qpc) as s:
        stats = s.benchmark(num_iter=20, profile_iter=10)
        assert s.benchmark(num_iter=5).profile is None
        with pytest.raises(ValueError, match="profile_iter=5 is past the run's 5 inferences"):
            s.benchmark(num_iter=5, profile_iter=5)
    p = stats.profile
    assert p.inference == 10 and p.cycles > 0 and p.clock_mhz > 0
    ops = {(r["op"], r["engine"]) for r in p.ops}
    assert ("aicconvolution", "HMX") in ops and ("aiccopytovtcm", "DMAIssue") in ops, ops
    assert all(0 <= r["busy_percent"] <= 100 for r in p.ops)
    layers = [r["op_type"] for r in p.layers]
    assert layers[0] == "Conv" and "MatMul" in layers, layers
    conv = p.layers[0]
    assert conv["hmx_cycles"] > 0 and conv["span_us"] > 0 and conv["dtypes"]
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=".layers and .ops are the same rows"):
            p.to_dataframe()
    else:
        df = p.to_dataframe()
        assert list(df["op_type"]) == layers
        assert len(p.to_dataframe("ops")) == len(p.ops)
    with pytest.raises(ValueError, match="table 'cores'"):
        p.to_dataframe("cores")


def test_the_wall_clock_benchmark_measures_this_host(tiny):
    import time

    _, qpc = tiny
    with aicsim.Session(qpc, num_activations=2, set_size=4, clock="wall") as s:
        t0 = time.perf_counter()
        w = s.benchmark(num_iter=400)
        took = time.perf_counter() - t0
    with aicsim.Session(qpc, num_activations=2, set_size=4) as s:
        sim = s.benchmark(num_iter=400)
    assert (w.clock, sim.clock) == ("wall", "simulated")
    assert w.inferences == 400 and w.inf_per_sec > 0 and w.latency_p50_ms > 0
    # The run's length is this host's time, within the call's.
    assert 0 < w.elapsed_s <= took
    # The device is the same model on either clock: the same device time per inference.
    assert abs(w.device_exec_mean_ms / sim.device_exec_mean_ms - 1) < 0.25, (w, sim)
    with pytest.raises(ValueError, match="clock 'host'"):
        aicsim.Session(qpc, clock="host")


def test_bad_input_raises_before_anything_is_queued_and_the_session_goes_on(tiny):
    path, qpc = tiny
    s = aicsim.Session(qpc)
    x = inputs()["x"]
    with pytest.raises(KeyError, match="no input 'z'"):
        s.run({"z": x})
    with pytest.raises(KeyError, match="input 'x' is missing"):
        s.run({})
    with pytest.raises(ValueError, match=r"has shape \[1, 3, 8, 8\]; the program takes \[2, 3, 8, 8\]"):
        s.run({"x": x[:1]})
    with pytest.raises(TypeError, match="is float64; the program takes float32"):
        s.run({"x": x.astype(np.float64)})
    with pytest.raises(TypeError, match="must be a numpy array of float32"):
        s.run({"x": x.tolist()})
    with pytest.raises(TypeError):
        s.submit({"x": x.astype(np.int32)}, context="bad")
    # Still usable: nothing bad reached the device.
    np.testing.assert_allclose(s.run({"x": x})["y"], reference(path, {"x": x}), rtol=1e-4, atol=1e-5)
    s.close()
    assert s.closed
    with pytest.raises(ValueError, match="the session is closed"):
        s.run({"x": x})
    s.close()
    with pytest.raises(ValueError, match="set_size=0"):
        aicsim.Session(qpc, set_size=0)
    with pytest.raises(ValueError, match="mode 'fast'"):
        aicsim.Session(qpc, mode="fast")
    with pytest.raises(aicsim.AicError) as e:
        aicsim.Session(os.path.join(os.path.dirname(qpc), "nothing-here.bin"))
    assert e.value.errno == "ENOENT"


def test_a_device_fault_is_an_aic_error_with_the_drivers_errno(tmp_path):
    """A token id past the vocabulary faults the run on the device (a Gather index out of
    the table): EIO, naming the layer; the session serves the next request."""
    model = str(tmp_path / "bert.onnx")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_bert.py"), model, "--exported"], check=True)
    qpc = aicsim.compile(model, str(tmp_path / "qpc"), onnx_define_symbol={"batch_size": 1})
    with aicsim.Session(qpc) as s:
        assert s.input_dtypes == ["int64", "int64", "int64"]
        ok = {n: np.ones((1, 32), np.int64) for n in s.input_names}
        want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, ok)[0]
        np.testing.assert_allclose(s.run(ok)[s.output_names[0]], want, rtol=1e-3, atol=1e-4)
        bad = dict(ok, input_ids=np.full((1, 32), 1000, np.int64))
        with pytest.raises(aicsim.AicError) as e:
            s.run(bad)
        assert e.value.errno == "EIO" and "(Gather)" in e.value.message and "outside the table" in e.value.message
        np.testing.assert_allclose(s.run(ok)[s.output_names[0]], want, rtol=1e-3, atol=1e-4)


def open_fds():
    """This process's open file descriptors and what each refers to."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the descriptor listdir itself used, closed by now
    return fds


def threads():
    return set(os.listdir("/proc/self/task"))


def test_closing_or_dropping_a_session_leaves_no_threads_or_shared_memory(tiny):
    _, qpc = tiny
    gc.collect()
    fds, tasks = open_fds(), threads()
    for _ in range(3):
        s = aicsim.Session(qpc, num_activations=2)
        s.submit(inputs())
        s.recv(timeout=30)
        s.run(inputs())
        s.close()
    s = aicsim.Session(qpc)
    s.run(inputs())
    del s
    gc.collect()
    # What the sessions opened must be closed and what they started must have ended;
    # descriptors and threads of earlier tests (a notebook kernel's sockets) may close
    # or end meanwhile, which is not the sessions' doing.
    left = {fd: target for fd, target in open_fds().items() if fds.get(fd) != target}
    assert not left, f"a session's shared-memory region or files stayed open: {left}"
    assert not threads() - tasks, "a session's device or queue threads outlived it"


def test_device_status_is_aic_util_q():
    status = aicsim.device_status()
    assert status["status"] == "Ready"
    assert status["nsp_total"] == status["nsp_free"] > 0
    assert status["vtcm_kib_per_nsp"] == 8192
    assert status["programs_loaded"] == 0 and status["active_channels"] == []


def test_ctrl_c_stops_a_long_benchmark_cleanly(tiny):
    """SIGINT during a benchmark of a billion inferences: the run stops taking requests,
    what is in flight completes, KeyboardInterrupt reaches Python, the session still runs."""
    import signal
    import time

    _, qpc = tiny
    code = f"""
import numpy as np, aicsim, sys
s = aicsim.Session({qpc!r})
print("ready", flush=True)
try:
    s.benchmark(num_iter=10**9)
except KeyboardInterrupt:
    out = s.run({{"x": np.ones((2, 3, 8, 8), np.float32)}})["y"]
    print("interrupted", out.shape, flush=True)
    sys.exit(0)
sys.exit(1)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and "interrupted (2, 4)" in out, out
