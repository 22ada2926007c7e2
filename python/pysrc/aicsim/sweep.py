"""Configuration sweeps, on this machine or on a Ray cluster.

    import aicsim
    results = aicsim.sweep(["resnet50.onnx", "zoo:mobilenetv2"], "search.json",
                           convert_to_fp16=True, ray_address="auto")
    results["resnet50.onnx"]["best"]   # {"cores": 2, "batchSize": 4, "infPerSec": ...}

Each model is searched as `aic-configurator` searches it (the same hill climbs from the
same initial values). With `ray_address`, every round of points goes to the cluster as
one Ray task per point; a task compiles the model for its point and predicts the
deployment, a pure function of the model's bytes, the point and the seed — so the result
is the same on one machine and on many.
"""

import json
import os

from . import _aicsim

_TASK = None


def _evaluate(name, model, job):
    """One point, on whichever Ray worker runs it."""
    from aicsim import _aicsim as native

    return native.evaluate_job(name, model, job)


def _task():
    global _TASK
    if _TASK is None:
        import ray

        _TASK = ray.remote(_evaluate)
    return _TASK


def connect(address):
    """Connects to the Ray cluster at `address` (`"auto"`, `"host:port"`,
    `"ray://host:port"`), or starts a Ray instance of this process's own for `"local"`;
    does nothing if Ray is already initialised. Returns a description of the cluster."""
    import ray

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address == "local":
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    cpus = ray.cluster_resources().get("CPU", 0)
    return f"{len(ray.nodes())} node(s), {cpus:g} CPU(s)"


class RayRound:
    """Evaluates a round of points of one model on the Ray cluster: the model's bytes go
    to the object store once; each point is one task."""

    def __init__(self, model):
        import ray

        if model.startswith("zoo:"):
            self.name, data = model, None
        else:
            self.name = os.path.splitext(os.path.basename(model))[0]
            with open(model, "rb") as f:
                data = f.read()
        self.model = ray.put(data)

    def __call__(self, jobs):
        import ray

        task = _task()
        return ray.get([task.remote(self.name, self.model, job) for job in jobs])


def _search_text(search_space, objective):
    if isinstance(search_space, (str, os.PathLike)) and not str(search_space).lstrip().startswith("{"):
        with open(search_space) as f:
            spec = json.load(f)
    elif isinstance(search_space, str):
        spec = json.loads(search_space)
    else:
        spec = dict(search_space)
    if objective is not None:
        spec["objective"] = objective
    return json.dumps(spec)


def sweep(models, search_space, *, objective=None, ray_address=None, convert_to_fp16=False,
          multicast_weights=False, onnx_define_symbol=None, onnx_define_symbol_batch_size=None,
          set_size=None, seed=1, threads=None):
    """Searches every model of `models` (paths or `zoo:` names, or one of them) over
    `search_space` (a search file's path, its JSON text, or a dict; either of the card's
    spellings), as `aic-configurator` would with the same flags. `ray_address` evaluates
    on a Ray cluster (see `connect`); without it, on `threads` threads here. Returns
    `{model: result}`, each result a dict: `best` (the point and its figures), `climbs`
    (one per initial value), `evaluations` (every point, best first) and `compiles`."""
    if isinstance(models, (str, os.PathLike)):
        models = [models]
    options = json.dumps({
        "flags": {
            "symbols": dict(onnx_define_symbol or {}),
            "batchSymbol": onnx_define_symbol_batch_size,
            "fp16": bool(convert_to_fp16),
            "multicastWeights": bool(multicast_weights),
        },
        "setSize": set_size,
        "seed": seed,
    })
    spec = _search_text(search_space, objective)
    if ray_address is not None:
        connect(ray_address)
    results = {}
    for model in models:
        model = os.fspath(model)
        round_ = RayRound(model) if ray_address is not None else None
        results[model] = json.loads(_aicsim.search(model, spec, options, round_, threads))
    return results
