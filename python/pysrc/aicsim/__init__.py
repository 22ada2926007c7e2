"""aicsim: a simulated Cloud AI 100-class accelerator, from Python.

    import aicsim
    qpc = aicsim.compile("model.onnx", "out", aic_num_cores=2, convert_to_fp16=True)
    with aicsim.Session(qpc) as s:
        outputs = s.run({"input": x})

`compile` takes aic-exec's flags as keywords; `Session` is in the shape of
`qaic.Session` (names, shapes and dtypes as properties, `run`, `run_batch`), with
FuriosaAI's queue (`submit` / `recv`) and an awaitable `run_async`; `benchmark` gives
aic-runner's figures on the simulated clock; `device_status` is `aic-util -q`.
Errors of the driver and device raise `AicError` with the driver's errno name.
`sweep` searches configurations of many models as aic-configurator does, on this
machine or on a Ray cluster.
"""

import asyncio

from . import _aicsim
from ._aicsim import Stats, compile, device_status
from .sweep import connect as sweep_connect
from .sweep import sweep

__all__ = ["AicError", "Session", "Stats", "compile", "device_status", "sweep", "sweep_connect"]


class AicError(RuntimeError):
    """An error of the simulated driver or device: `errno` is the driver's errno name
    ("EIO", "EINVAL", "ETIMEDOUT", ...), `message` what it said."""

    def __init__(self, errno, message):
        super().__init__(f"{errno}: {message}")
        self.errno = errno
        self.message = message


class Session(_aicsim.Session):
    """A compiled program on the simulated card.

    Session(qpc_path, num_activations=1, set_size=10, mode="functional")
    """

    async def run_async(self, inputs):
        """`run` as a coroutine: the inference runs on a worker thread (the GIL is
        released while it runs), so other tasks go on meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.run, inputs)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
