//! `aicsim._aicsim`: the simulator from Python, in the shape of Qualcomm's
//! `qaic.Session` (compile, then `session.run({name: ndarray})`) and FuriosaAI's queue
//! (`submit` / `recv`). The pure-Python package `aicsim` (`pysrc/aicsim`) wraps it with
//! the exception class, the asyncio form and the tables.
//!
//! Every call that runs the simulator releases the GIL; inputs are checked (names,
//! shapes, dtypes) before anything is queued, and a failed call leaves the session
//! usable. Benchmarks run in slices, so Ctrl-C stops one between slices.

use std::sync::Arc;
use std::time::Duration;

use aicsim_abi::container::{IoBinding, IoDType};
use aicsim_device::scheduler::ExecMode;
use aicsim_device::{DeviceConfig, Pacing};
use aicsim_driver::Device;
use aicsim_kmd::KmdConfig;
use aicsim_runtime::{
    Activation, AsyncQueue, Completion, HostModel, InferenceSet, Program, QueueConfig, RunLimit, RuntimeError,
};
use numpy::{PyArray1, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// An error of the simulated driver or device as the Python exception `aicsim.AicError`,
/// carrying the driver's errno name.
fn aic_error(py: Python<'_>, errno: &str, message: String) -> PyErr {
    match py.import("aicsim").and_then(|m| m.getattr("AicError")).and_then(|c| c.call1((errno, message.clone()))) {
        Ok(e) => PyErr::from_value(e),
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(format!("{errno}: {message}")),
    }
}

/// A runtime error as the Python exception a user expects: bad inputs as ValueError,
/// everything the driver or device says as `AicError` with its errno name.
fn runtime_error(py: Python<'_>, e: RuntimeError) -> PyErr {
    let errno = match &e {
        RuntimeError::InputSize { .. } | RuntimeError::InputCount { .. } => {
            return PyValueError::new_err(e.to_string())
        }
        RuntimeError::Driver(d) => format!("{:?}", d.errno()),
        RuntimeError::ProgramFault { .. } => "EIO".into(),
        RuntimeError::SubmitTimeout { .. } => "EAGAIN".into(),
        RuntimeError::ReadProgram { .. } => "ENOENT".into(),
        RuntimeError::BadContainer { .. } | RuntimeError::UnsupportedProgram { .. } | RuntimeError::Config(_) => {
            "EINVAL".into()
        }
    };
    aic_error(py, &errno, e.to_string())
}

fn dtype_name(d: IoDType) -> &'static str {
    match d {
        IoDType::F32 => "float32",
        IoDType::F16 => "float16",
        IoDType::I8 => "int8",
        IoDType::U8 => "uint8",
        IoDType::I32 => "int32",
        IoDType::I64 => "int64",
    }
}

/// Compiles a model as `aic-exec` does; each keyword is an aic-exec flag without its dash,
/// underscores for dashes (`aic_num_cores=2` is `-aic-num-cores=2`, `convert_to_fp16=True`
/// is `-convert-to-fp16`, `onnx_define_symbol={"batch_size": 1}` one `-onnx-define-symbol`
/// per item). Returns the program's path (`out_dir/programqpc.bin`).
#[pyfunction]
#[pyo3(signature = (model, out_dir, **options))]
fn compile(py: Python<'_>, model: &str, out_dir: &str, options: Option<&Bound<'_, PyDict>>) -> PyResult<String> {
    let mut argv = vec![format!("-m={model}"), format!("-aic-binary-dir={out_dir}"), "-compile-only".to_string()];
    if let Some(options) = options {
        for (k, v) in options.iter() {
            let key: String = k.extract()?;
            let flag = format!("-{}", key.replace('_', "-"));
            if let Ok(map) = v.cast::<PyDict>() {
                for (name, value) in map.iter() {
                    argv.push(format!("{flag}={},{}", name.str()?, value.str()?));
                }
            } else if let Ok(b) = v.extract::<bool>() {
                if b {
                    argv.push(flag);
                }
            } else if let Ok(list) = v.cast::<PyList>() {
                for item in list.iter() {
                    argv.push(format!("{flag}={}", item.str()?));
                }
            } else {
                argv.push(format!("{flag}={}", v.str()?));
            }
        }
    }
    let args = match aicsim::exec::parse_exec_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => return Err(PyValueError::new_err("help was asked for; nothing compiled")),
        Err(e) => return Err(PyValueError::new_err(e)),
    };
    let dir = py
        .detach(|| aicsim::exec::run(&args))
        .map_err(|e| aic_error(py, "EINVAL", e))?
        .ok_or_else(|| PyValueError::new_err("nothing compiled"))?;
    Ok(dir.join("programqpc.bin").display().to_string())
}

/// One point of a sweep, predicted: compiles `model` (a zoo name, or an ONNX file's
/// bytes named `name`) for the job's configuration and predicts its deployment. A pure
/// function of its arguments — what each Ray task of `aicsim.sweep` runs. Returns JSON:
/// `{"ok": prediction}` or `{"error": reason}`.
#[pyfunction]
#[pyo3(signature = (name, model, job))]
fn evaluate_job(py: Python<'_>, name: &str, model: Option<Vec<u8>>, job: &str) -> PyResult<String> {
    use aicsim::configurator::{evaluate_job, PointJob};
    let job: PointJob = serde_json::from_str(job).map_err(|e| PyValueError::new_err(format!("job: {e}")))?;
    let outcome = py.detach(|| {
        let source = match &model {
            Some(bytes) => aicsim_compiler::Source::from_bytes(name, bytes),
            None => aicsim_compiler::Source::load(name),
        };
        evaluate_job(source.map_err(|e| e.to_string())?, &job)
    });
    Ok(match outcome {
        Ok(p) => serde_json::json!({ "ok": p }),
        Err(e) => serde_json::json!({ "error": e }),
    }
    .to_string())
}

/// A round of a search evaluated by a Python callable: it takes the points' jobs (JSON
/// strings) and returns one result (JSON, as [`evaluate_job`]) per job.
struct PythonRound<'a> {
    problem: &'a aicsim::configurator::Problem,
    evaluate: Py<PyAny>,
}

impl aicsim::configurator::RoundEvaluator for PythonRound<'_> {
    fn evaluate_round(
        &self,
        points: &[aicsim::configurator::Config],
    ) -> Vec<Result<aicsim::predict::Prediction, String>> {
        use aicsim::configurator::PointJob;
        let jobs: Vec<String> =
            points.iter().map(|c| serde_json::to_string(&PointJob::of(self.problem, c)).expect("plain JSON")).collect();
        let answers: Result<Vec<String>, String> = Python::attach(|py| {
            self.evaluate.call1(py, (jobs,)).and_then(|r| r.extract::<Vec<String>>(py)).map_err(|e| e.to_string())
        });
        let answers = match answers {
            Ok(a) if a.len() == points.len() => a,
            Ok(a) => {
                return points.iter().map(|_| Err(format!("{} results for {} points", a.len(), points.len()))).collect()
            }
            Err(e) => return points.iter().map(|_| Err(format!("the round's evaluator failed: {e}"))).collect(),
        };
        answers
            .iter()
            .map(|a| {
                let v: serde_json::Value = serde_json::from_str(a).map_err(|e| format!("a result is not JSON: {e}"))?;
                match (v.get("ok"), v.get("error")) {
                    (Some(p), _) => serde_json::from_value(p.clone()).map_err(|e| format!("a prediction: {e}")),
                    (None, Some(e)) => Err(e.as_str().unwrap_or("failed").to_string()),
                    _ => Err(format!("a result with neither ok nor error: {a}")),
                }
            })
            .collect()
    }
}

/// Searches `model` as `aic-configurator` does: `search` is a search file's JSON (either
/// spelling), `options` the compile options (JSON, see `SweepOptions`). Each round of
/// points is evaluated by `evaluate_round` when given (e.g. on Ray), else on `threads`
/// threads here. Returns the result as JSON.
#[pyfunction]
#[pyo3(signature = (model, search, options, evaluate_round=None, threads=None))]
fn search(
    py: Python<'_>,
    model: &str,
    search: &str,
    options: &str,
    evaluate_round: Option<Py<PyAny>>,
    threads: Option<usize>,
) -> PyResult<String> {
    use aicsim::configurator::{search_distributed, search_with, SearchSpec, SweepOptions};
    let options: SweepOptions =
        serde_json::from_str(options).map_err(|e| PyValueError::new_err(format!("options: {e}")))?;
    let spec =
        SearchSpec::parse(search, options.set_size).map_err(|e| PyValueError::new_err(format!("search: {e}")))?;
    let source = py
        .detach(|| aicsim_compiler::Source::load(model))
        .map_err(|e| aic_error(py, "ENOENT", format!("{model}: {e}")))?;
    let problem = options.problem(source);
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let quiet = |_: &aicsim::configurator::Evaluation| {};
    let result = match evaluate_round {
        Some(evaluate) => {
            let round = PythonRound { problem: &problem, evaluate };
            py.detach(|| search_distributed(&problem, &spec, &round, &quiet))
        }
        None => py.detach(|| search_with(&problem, &spec, threads, &quiet)),
    };
    Ok(result.to_json(spec.objective).to_string())
}

/// `aic-util -q` as a dict: cores, memory, firmware version, programs and channels.
#[pyfunction]
fn device_status(py: Python<'_>) -> PyResult<Py<PyDict>> {
    let report = py
        .detach(|| Device::open_simulated(KmdConfig::default()).and_then(|d| d.status()))
        .map_err(|e| aic_error(py, &format!("{:?}", e.errno()), e.to_string()))?;
    let d = PyDict::new(py);
    d.set_item("status", "Ready")?;
    d.set_item("nsp_total", report.nsp_total)?;
    d.set_item("nsp_free", report.nsp_free)?;
    d.set_item("vtcm_kib_per_nsp", DeviceConfig::default().vtcm_bytes / 1024)?;
    d.set_item("ddr_total_mib", report.ddr_total >> 20)?;
    d.set_item("ddr_free_mib", report.ddr_free >> 20)?;
    let v = report.fw_version;
    d.set_item("firmware_version", format!("{}.{}.{}", v >> 16, (v >> 8) & 0xFF, v & 0xFF))?;
    d.set_item("programs_loaded", report.programs_loaded)?;
    let channels: Vec<u32> = (0..32).filter(|b| report.active_channels >> b & 1 == 1).collect();
    d.set_item("active_channels", channels)?;
    Ok(d.unbind())
}

/// What a session holds while open. Calls take clones of these under the lock and run
/// without it (and without the GIL): a thread waiting for the lock while it holds the
/// GIL would otherwise deadlock with one that holds the lock and waits for the GIL.
struct Live {
    activations: Arc<Vec<Activation>>,
    next: usize,
    queue: Option<Arc<AsyncQueue<Py<PyAny>>>>,
    device: Arc<Device>,
}

/// A program on the simulated card, as `qaic.Session`: `num_activations` activations of
/// it, `set_size` inferences in flight each for the queue and benchmarks; `mode` is
/// "functional" (real outputs) or "timing" (device time only, outputs unspecified).
#[pyclass(module = "aicsim._aicsim", subclass)]
struct Session {
    program: Program,
    live: Mutex<Option<Live>>,
    /// Set while one thread starts the queue; the others wait for it.
    starting_queue: std::sync::atomic::AtomicBool,
    num_activations: usize,
    set_size: usize,
    mode: ExecMode,
    /// `benchmark`'s clock: the card's (simulated) or this host's (wall).
    wall_clock: bool,
}

fn closed() -> PyErr {
    PyValueError::new_err("the session is closed")
}

impl Session {
    /// `inputs` (name -> ndarray) as the program's input buffers, in its order, each
    /// checked for name, shape and dtype. A C-contiguous array of the right dtype is read
    /// in place (the bytes the driver copies into the buffer object), anything else is
    /// an error naming the input.
    fn host_inputs(&self, inputs: &Bound<'_, PyDict>) -> PyResult<Vec<Vec<u8>>> {
        let bindings = self.program.inputs();
        for key in inputs.keys() {
            let name: String = key.extract()?;
            if !bindings.iter().any(|b| b.name == name) {
                let names: Vec<&str> = bindings.iter().map(|b| b.name.as_str()).collect();
                return Err(PyKeyError::new_err(format!(
                    "no input '{name}' (the program's inputs: {})",
                    names.join(", ")
                )));
            }
        }
        let mut out = Vec::with_capacity(bindings.len());
        for b in &bindings {
            let value = inputs
                .get_item(&b.name)?
                .ok_or_else(|| PyKeyError::new_err(format!("input '{}' is missing", b.name)))?;
            out.push(array_bytes(&value, b)?);
        }
        Ok(out)
    }

    /// Output buffers as name -> ndarray of each output's host shape and dtype.
    fn outputs_dict(&self, py: Python<'_>, outputs: &[Vec<u8>]) -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        for (b, bytes) in self.program.outputs().iter().zip(outputs) {
            let shape: Vec<usize> = b.shape.iter().map(|&x| x as usize).collect();
            let array = match b.host.dtype {
                IoDType::F32 => PyArray1::from_vec(py, floats(bytes)).reshape(shape)?.into_any(),
                IoDType::I64 => {
                    let v: Vec<i64> =
                        bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect();
                    PyArray1::from_vec(py, v).reshape(shape)?.into_any()
                }
                IoDType::I32 => {
                    let v: Vec<i32> =
                        bytes.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4"))).collect();
                    PyArray1::from_vec(py, v).reshape(shape)?.into_any()
                }
                IoDType::I8 => {
                    PyArray1::from_vec(py, bytes.iter().map(|&x| x as i8).collect()).reshape(shape)?.into_any()
                }
                IoDType::U8 => PyArray1::from_vec(py, bytes.clone()).reshape(shape)?.into_any(),
                IoDType::F16 => {
                    let v: Vec<f32> =
                        bytes.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect();
                    PyArray1::from_vec(py, v).reshape(shape)?.into_any()
                }
            };
            d.set_item(&b.name, array)?;
        }
        Ok(d.unbind())
    }

    /// The asynchronous queue, started by the first caller (`num_activations` workers with
    /// activations of their own, `set_size` in flight each); the others wait for it.
    fn queue(&self, py: Python<'_>) -> PyResult<Arc<AsyncQueue<Py<PyAny>>>> {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let device = {
                let guard = self.live.lock();
                let live = guard.as_ref().ok_or_else(closed)?;
                if let Some(q) = &live.queue {
                    return Ok(q.clone());
                }
                live.device.clone()
            };
            if self.starting_queue.swap(true, SeqCst) {
                py.detach(|| std::thread::sleep(Duration::from_millis(1)));
                py.check_signals()?;
                continue;
            }
            let config = QueueConfig {
                activations: self.num_activations,
                set_size: self.set_size,
                input_capacity: 1024,
                output_capacity: 1024,
            };
            let program = self.program.clone();
            let started = py.detach(|| AsyncQueue::new(device, &program, config));
            let result = started.map_err(|e| runtime_error(py, e)).and_then(|q| {
                let mut guard = self.live.lock();
                let live = guard.as_mut().ok_or_else(closed)?;
                Ok(live.queue.insert(Arc::new(q)).clone())
            });
            self.starting_queue.store(false, SeqCst);
            return result;
        }
    }

    fn open_device(mode: ExecMode, pacing: Pacing) -> Result<Arc<Device>, aicsim_driver::DriverError> {
        let config = KmdConfig {
            device: DeviceConfig { mode, pacing, ..DeviceConfig::default() },
            control_timeout: Duration::from_secs(120),
            ..KmdConfig::default()
        };
        Ok(Arc::new(Device::open_simulated(config)?))
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = (h >> 10) & 0x1f;
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(i32::from(e) - 15),
    }
}

/// The bytes of one input in its binding's host format, checked.
fn array_bytes(value: &Bound<'_, PyAny>, b: &IoBinding) -> PyResult<Vec<u8>> {
    let want = dtype_name(b.host.dtype);
    let array = value.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "input '{}' must be a numpy array of {want} with shape {:?}, not {}",
            b.name,
            b.shape,
            value.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    let got = array.dtype().str()?.to_string();
    let shape: Vec<u32> = array.shape().iter().map(|&d| d as u32).collect();
    if shape != b.shape {
        return Err(PyValueError::new_err(format!(
            "input '{}' has shape {shape:?}; the program takes {:?}",
            b.name, b.shape
        )));
    }
    let dtype_ok = match b.host.dtype {
        IoDType::F32 => array.cast::<numpy::PyArrayDyn<f32>>().is_ok(),
        IoDType::I64 => array.cast::<numpy::PyArrayDyn<i64>>().is_ok(),
        IoDType::I32 => array.cast::<numpy::PyArrayDyn<i32>>().is_ok(),
        IoDType::I8 => array.cast::<numpy::PyArrayDyn<i8>>().is_ok(),
        IoDType::U8 => array.cast::<numpy::PyArrayDyn<u8>>().is_ok(),
        IoDType::F16 => false,
    };
    if !dtype_ok {
        return Err(PyTypeError::new_err(format!("input '{}' is {got}; the program takes {want}", b.name)));
    }
    macro_rules! bytes_of {
        ($t:ty) => {{
            let a = array.cast::<numpy::PyArrayDyn<$t>>().expect("checked above").readonly();
            match a.as_slice() {
                // Contiguous: read where it is.
                Ok(s) => s.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                Err(_) => a.as_array().iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            }
        }};
    }
    Ok(match b.host.dtype {
        IoDType::F32 => bytes_of!(f32),
        IoDType::I64 => bytes_of!(i64),
        IoDType::I32 => bytes_of!(i32),
        IoDType::I8 => bytes_of!(i8),
        IoDType::U8 => bytes_of!(u8),
        IoDType::F16 => unreachable!("refused above"),
    })
}

/// The figures of a benchmark, as `aic-runner` reports them (simulated clock).
#[pyclass(module = "aicsim._aicsim", get_all)]
struct Stats {
    inferences: u64,
    batch_size: u32,
    elapsed_s: f64,
    inf_per_sec: f64,
    /// `totalRoundtripTime` percentiles, ms.
    latency_p50_ms: f64,
    latency_p90_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    latency_mean_ms: f64,
    /// Mean per stage, ms (enqueue, preProc, submit, exectoVc, device exec, queue/DMA/
    /// interrupt, postProc), as `aic-runner`'s report.
    stages_ms: Vec<(String, f64)>,
    device_exec_mean_ms: f64,
    /// "simulated" (the card's figures) or "wall" (this host's).
    clock: &'static str,
    /// The profiled inference's device profile (`benchmark(profile_iter=k)`).
    profile: Option<Py<Profile>>,
}

/// One inference's device profile, as tables: `ops` (each core's op statistics, as
/// aic-runner's stats files: cycles per op class and the waits on each engine) and
/// `layers` (each ONNX node's span and busy cycles per engine), each a list of dicts
/// (`to_dataframe` makes them pandas DataFrames).
#[pyclass(module = "aicsim._aicsim", get_all)]
struct Profile {
    /// Which inference of the run (from 0), on which activation.
    inference: u64,
    activation: usize,
    /// The run's device cycles and the clock, MHz.
    cycles: u64,
    clock_mhz: f64,
    ops: Py<PyList>,
    layers: Py<PyList>,
}

impl Profile {
    fn new(
        py: Python<'_>,
        image: &aicsim_abi::container::ProgramImage,
        run: &aicsim_driver::RunProfile,
        inference: u64,
        activation: usize,
    ) -> PyResult<Profile> {
        let clock_hz = DeviceConfig::default().clock_hz;
        let mut ops = Vec::new();
        for r in aicsim::profiling::op_rows(image, run) {
            let d = PyDict::new(py);
            d.set_item("core", r.core)?;
            d.set_item("op", r.op)?;
            d.set_item("engine", r.engine)?;
            d.set_item("memory", r.memory.trim())?;
            d.set_item("dtypes", r.dtypes.join(", "))?;
            d.set_item("ucycles", r.ucycles)?;
            d.set_item("pcycles", r.pcycles)?;
            d.set_item("count", r.count)?;
            d.set_item("out_kb", r.out_kb)?;
            d.set_item("busy_percent", r.ucycles as f64 * 100.0 / run.cycles().max(1) as f64)?;
            ops.push(d.unbind());
        }
        let mut layers = Vec::new();
        for a in aicsim::profiling::layer_activity(image, run) {
            use aicsim_device::nsp::Engine;
            let layer = &image.layers[a.layer];
            let d = PyDict::new(py);
            d.set_item("layer", &layer.name)?;
            d.set_item("op_type", &layer.op_type)?;
            d.set_item("span_us", a.span_cycles() as f64 * 1e6 / clock_hz as f64)?;
            d.set_item("dma_cycles", a.busy[Engine::Dma as usize])?;
            d.set_item("hmx_cycles", a.busy[Engine::Hmx as usize])?;
            d.set_item("hvx_cycles", a.busy[Engine::Hvx as usize])?;
            d.set_item("sync_cycles", a.busy[Engine::Sync as usize])?;
            d.set_item("out_kb", a.written_bytes as f64 / 1024.0)?;
            d.set_item("dtypes", a.dtypes.iter().map(|t| t.name()).collect::<Vec<_>>().join(", "))?;
            layers.push(d.unbind());
        }
        Ok(Profile {
            inference,
            activation,
            cycles: run.cycles(),
            clock_mhz: clock_hz as f64 / 1e6,
            ops: PyList::new(py, ops)?.unbind(),
            layers: PyList::new(py, layers)?.unbind(),
        })
    }
}

#[pymethods]
impl Profile {
    /// `table` ("layers" or "ops") as a pandas DataFrame (pandas must be installed; the
    /// lists of dicts are the same rows without it).
    #[pyo3(signature = (table="layers"))]
    fn to_dataframe(&self, py: Python<'_>, table: &str) -> PyResult<Py<PyAny>> {
        let rows = match table {
            "layers" => &self.layers,
            "ops" => &self.ops,
            other => return Err(PyValueError::new_err(format!("table '{other}': expected 'layers' or 'ops'"))),
        };
        let pandas = py.import("pandas").map_err(|_| {
            pyo3::exceptions::PyImportError::new_err("to_dataframe needs pandas; .layers and .ops are the same rows")
        })?;
        Ok(pandas.getattr("DataFrame")?.call1((rows.clone_ref(py),))?.unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "Profile(inference={}, activation={}, cycles={}, {} op rows, {} layers)",
            self.inference,
            self.activation,
            self.cycles,
            Python::attach(|py| self.ops.bind(py).len()),
            Python::attach(|py| self.layers.bind(py).len())
        )
    }
}

#[pymethods]
impl Stats {
    /// The figures as a dict (stages as `stage_<name>_ms`).
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        d.set_item("inferences", self.inferences)?;
        d.set_item("batch_size", self.batch_size)?;
        d.set_item("elapsed_s", self.elapsed_s)?;
        d.set_item("inf_per_sec", self.inf_per_sec)?;
        d.set_item("latency_mean_ms", self.latency_mean_ms)?;
        d.set_item("latency_p50_ms", self.latency_p50_ms)?;
        d.set_item("latency_p90_ms", self.latency_p90_ms)?;
        d.set_item("latency_p99_ms", self.latency_p99_ms)?;
        d.set_item("latency_max_ms", self.latency_max_ms)?;
        d.set_item("device_exec_mean_ms", self.device_exec_mean_ms)?;
        d.set_item("clock", self.clock)?;
        for (stage, ms) in &self.stages_ms {
            d.set_item(format!("stage_{}_ms", stage.replace([' ', ','], "_")), ms)?;
        }
        Ok(d.unbind())
    }

    /// The figures as a one-row pandas DataFrame (pandas must be installed).
    fn to_dataframe(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let pandas = py.import("pandas").map_err(|_| {
            pyo3::exceptions::PyImportError::new_err("to_dataframe needs pandas; to_dict gives the same figures")
        })?;
        let row = PyList::new(py, [self.to_dict(py)?])?;
        Ok(pandas.getattr("DataFrame")?.call1((row,))?.unbind())
    }

    fn __repr__(&self) -> String {
        format!(
            "Stats(inferences={}, inf_per_sec={:.1}, latency_p50_ms={:.3}, latency_p99_ms={:.3})",
            self.inferences, self.inf_per_sec, self.latency_p50_ms, self.latency_p99_ms
        )
    }
}

#[derive(Default)]
struct Collected {
    round_trips_ms: Vec<f64>,
    stage_sums_ms: [f64; 7],
    device_ms: Vec<f64>,
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (qpc_path, num_activations=1, set_size=10, mode="functional", clock="simulated"))]
    fn new(
        py: Python<'_>,
        qpc_path: &str,
        num_activations: usize,
        set_size: usize,
        mode: &str,
        clock: &str,
    ) -> PyResult<Session> {
        let wall_clock = match clock {
            "simulated" => false,
            "wall" => true,
            other => return Err(PyValueError::new_err(format!("clock '{other}': expected 'simulated' or 'wall'"))),
        };
        let mode = match mode {
            "functional" => ExecMode::Functional,
            "timing" => ExecMode::Timing,
            other => return Err(PyValueError::new_err(format!("mode '{other}': expected 'functional' or 'timing'"))),
        };
        if num_activations == 0 || set_size == 0 {
            return Err(PyValueError::new_err(format!(
                "num_activations={num_activations}, set_size={set_size}: both must be at least 1"
            )));
        }
        let path = std::path::PathBuf::from(qpc_path);
        let (program, device, activations) = py
            .detach(|| -> Result<_, RuntimeError> {
                let program = Program::from_path(&path)?;
                let device = Session::open_device(mode, DeviceConfig::default().pacing)?;
                let set = InferenceSet::new(device.clone(), &program, num_activations, 1)?;
                Ok((program, device, set.into_activations()))
            })
            .map_err(|e| runtime_error(py, e))?;
        let activations: Vec<Activation> =
            activations.into_iter().map(|a| a.with_wait_timeout(Duration::from_secs(600))).collect();
        Ok(Session {
            program,
            live: Mutex::new(Some(Live { activations: Arc::new(activations), next: 0, queue: None, device })),
            starting_queue: false.into(),
            num_activations,
            set_size,
            mode,
            wall_clock,
        })
    }

    #[getter]
    fn input_names(&self) -> Vec<String> {
        self.program.inputs().iter().map(|b| b.name.clone()).collect()
    }

    #[getter]
    fn input_shapes(&self) -> Vec<Vec<u32>> {
        self.program.inputs().iter().map(|b| b.shape.clone()).collect()
    }

    #[getter]
    fn input_dtypes(&self) -> Vec<&'static str> {
        self.program.inputs().iter().map(|b| dtype_name(b.host.dtype)).collect()
    }

    #[getter]
    fn output_names(&self) -> Vec<String> {
        self.program.outputs().iter().map(|b| b.name.clone()).collect()
    }

    #[getter]
    fn output_shapes(&self) -> Vec<Vec<u32>> {
        self.program.outputs().iter().map(|b| b.shape.clone()).collect()
    }

    #[getter]
    fn output_dtypes(&self) -> Vec<&'static str> {
        self.program.outputs().iter().map(|b| dtype_name(b.host.dtype)).collect()
    }

    #[getter]
    fn batch_size(&self) -> u32 {
        self.program.batch_size()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.live.lock().is_none()
    }

    /// One inference: `{name: ndarray}` in, `{name: ndarray}` out. The GIL is released
    /// while it runs.
    fn run(&self, py: Python<'_>, inputs: &Bound<'_, PyDict>) -> PyResult<Py<PyDict>> {
        let data = self.host_inputs(inputs)?;
        let (activations, a) = {
            let mut guard = self.live.lock();
            let live = guard.as_mut().ok_or_else(closed)?;
            let a = live.next % live.activations.len();
            live.next += 1;
            (live.activations.clone(), a)
        };
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let outputs = py.detach(|| activations[a].run(&refs)).map_err(|e| runtime_error(py, e))?;
        self.outputs_dict(py, &outputs)
    }

    /// Many inferences, spread over the activations (one thread each, the GIL released);
    /// the results in the order of the inputs. Every input set is checked first.
    fn run_batch(&self, py: Python<'_>, inputs: &Bound<'_, PyList>) -> PyResult<Vec<Py<PyDict>>> {
        let sets: Vec<Vec<Vec<u8>>> =
            inputs.iter().map(|d| self.host_inputs(d.cast::<PyDict>()?)).collect::<PyResult<_>>()?;
        let activations = self.live.lock().as_ref().ok_or_else(closed)?.activations.clone();
        let results = {
            let n = activations.len();
            py.detach(|| {
                let mut results: Vec<Option<aicsim_runtime::Result<Vec<Vec<u8>>>>> =
                    (0..sets.len()).map(|_| None).collect();
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..n)
                        .map(|a| {
                            let (sets, activation) = (&sets, &activations[a]);
                            s.spawn(move || {
                                (a..sets.len())
                                    .step_by(n)
                                    .map(|i| {
                                        let refs: Vec<&[u8]> = sets[i].iter().map(Vec::as_slice).collect();
                                        (i, activation.run(&refs))
                                    })
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    for h in handles {
                        for (i, r) in h.join().expect("a run thread panicked") {
                            results[i] = Some(r);
                        }
                    }
                });
                results
            })
        };
        results
            .into_iter()
            .map(|r| {
                let outputs = r.expect("every set ran").map_err(|e| runtime_error(py, e))?;
                self.outputs_dict(py, &outputs)
            })
            .collect()
    }

    /// Queues an inference on the asynchronous queue (started on first use:
    /// `num_activations` workers, `set_size` in flight each); `context` comes back with
    /// its result from `recv`. Inputs are checked before anything is queued.
    #[pyo3(signature = (inputs, context=None))]
    fn submit(&self, py: Python<'_>, inputs: &Bound<'_, PyDict>, context: Option<Py<PyAny>>) -> PyResult<()> {
        let data = self.host_inputs(inputs)?;
        let queue = self.queue(py)?;
        let context = context.unwrap_or_else(|| py.None());
        py.detach(|| queue.submit(context, data)).map_err(|e| runtime_error(py, e))
    }

    /// The next finished queued inference as `(context, outputs)`; waits at most
    /// `timeout` seconds (forever if None): TimeoutError when nothing finished. A failed
    /// inference raises its error (the context is its `context` attribute).
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<(Py<PyAny>, Py<PyDict>)> {
        let wait = match timeout {
            Some(t) if !(t.is_finite() && t >= 0.0) => {
                return Err(PyValueError::new_err(format!("timeout={t}: expected seconds >= 0")))
            }
            Some(t) => Duration::from_secs_f64(t),
            None => Duration::from_secs(u64::MAX / 4),
        };
        let queue = self.queue(py)?;
        // Waits in slices so Ctrl-C is seen.
        let start = std::time::Instant::now();
        loop {
            let slice = (wait.saturating_sub(start.elapsed())).min(Duration::from_millis(100));
            if let Some((context, outcome)) = py.detach(|| queue.recv_timeout(slice)) {
                return match outcome {
                    Ok(outputs) => Ok((context, self.outputs_dict(py, &outputs)?)),
                    Err(e) => {
                        let err = runtime_error(py, e);
                        let _ = err.value(py).setattr("context", context);
                        Err(err)
                    }
                };
            }
            py.check_signals()?;
            if start.elapsed() >= wait {
                return Err(PyTimeoutError::new_err(format!("no inference finished within {} s", wait.as_secs_f64())));
            }
        }
    }

    /// Runs the program as `aic-runner -a num_activations -S set_size -n num_iter`
    /// (timing mode) on the session's clock (the card's simulated one by default, or this
    /// host's wall clock) and returns its figures; with `profile_iter=k`, also the device
    /// profile of the run's k-th inference (`Stats.profile`). Ctrl-C stops it: nothing
    /// more is taken up, what is in flight completes, KeyboardInterrupt is raised.
    #[pyo3(signature = (num_iter=200, profile_iter=None))]
    fn benchmark(&self, py: Python<'_>, num_iter: u64, profile_iter: Option<u64>) -> PyResult<Stats> {
        if let Some(k) = profile_iter.filter(|&k| k >= num_iter) {
            return Err(PyValueError::new_err(format!("profile_iter={k} is past the run's {num_iter} inferences")));
        }
        if num_iter == 0 {
            return Err(PyValueError::new_err("num_iter=0: nothing to run"));
        }
        if self.live.lock().is_none() {
            return Err(closed());
        }
        let (program, activations, set_size) = (self.program.clone(), self.num_activations, self.set_size);
        let wall = self.wall_clock;
        let pacing = if wall { Pacing::Wall } else { Pacing::Simulated };
        let device = py
            .detach(|| Session::open_device(ExecMode::Timing, pacing))
            .map_err(|e| aic_error(py, &format!("{:?}", e.errno()), e.to_string()))?;
        let set = py
            .detach(|| -> Result<InferenceSet, RuntimeError> {
                let set = InferenceSet::new(device, &program, activations, set_size)?;
                if profile_iter.is_some() {
                    for a in set.activations() {
                        a.set_trace(true)?;
                    }
                }
                Ok(set)
            })
            .map_err(|e| runtime_error(py, e))?;
        let collected = Mutex::new(Collected::default());
        let profiled = Mutex::new(None);
        let record = |c: &Completion<'_>| {
            if Some(c.index) == profile_iter {
                let run = set.activations()[c.activation].run_profile(c.seq);
                *profiled.lock() = Some((run, c.index, c.activation));
            }
            let stages = aicsim::runner::stage_times(c);
            let mut s = collected.lock();
            s.round_trips_ms.push(c.timestamps.total_round_trip().as_secs_f64() * 1e3);
            for (sum, d) in s.stage_sums_ms.iter_mut().zip(stages) {
                *sum += d.as_secs_f64() * 1e3;
            }
            // The device-exec stage.
            s.device_ms.push(stages[4].as_secs_f64() * 1e3);
        };
        // The run goes on a thread of its own; this one looks for Ctrl-C meanwhile and,
        // when it comes, stops the run from taking up more (what is in flight completes).
        let stop = set.stop_handle();
        let (summary, interrupted) = py.detach(|| {
            std::thread::scope(|s| {
                let run = s.spawn(|| match wall {
                    true => set.run(RunLimit::Count(num_iter), |_, _| {}, record),
                    false => set.run_simulated(RunLimit::Count(num_iter), &HostModel::default(), &[], record),
                });
                let mut interrupted = None;
                while !run.is_finished() {
                    std::thread::sleep(Duration::from_millis(20));
                    if interrupted.is_none() {
                        if let Err(e) = Python::attach(|py| py.check_signals()) {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                            interrupted = Some(e);
                        }
                    }
                }
                (run.join().expect("the benchmark thread panicked"), interrupted)
            })
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        let summary = summary.map_err(|e| runtime_error(py, e))?;
        let profile = match profiled.into_inner() {
            Some((Ok(run), index, activation)) => {
                Some(Py::new(py, Profile::new(py, program.image(), &run, index, activation)?)?)
            }
            Some((Err(e), ..)) => return Err(runtime_error(py, e)),
            None => None,
        };
        let (done, elapsed) = (summary.inferences, summary.elapsed.as_secs_f64());
        let mut c = collected.into_inner();
        c.round_trips_ms.sort_by(f64::total_cmp);
        let n = c.round_trips_ms.len().max(1) as f64;
        let pct = |q: f64| aicsim::stats::percentile(&c.round_trips_ms, q);
        let batch = program.batch_size();
        Ok(Stats {
            inferences: done,
            batch_size: batch,
            elapsed_s: elapsed,
            inf_per_sec: done as f64 * f64::from(batch) / elapsed.max(1e-12),
            latency_p50_ms: pct(0.5),
            latency_p90_ms: pct(0.9),
            latency_p99_ms: pct(0.99),
            latency_max_ms: c.round_trips_ms.last().copied().unwrap_or(f64::NAN),
            latency_mean_ms: c.round_trips_ms.iter().sum::<f64>() / n,
            stages_ms: aicsim::runner::STAGES
                .iter()
                .zip(c.stage_sums_ms)
                .map(|(s, v)| (s.to_string(), v / n))
                .collect(),
            device_exec_mean_ms: c.device_ms.iter().sum::<f64>() / n,
            clock: if wall { "wall" } else { "simulated" },
            profile,
        })
    }

    /// Releases the activations and the queue (finishing what was submitted); the
    /// session is unusable after. Closing twice does nothing.
    fn close(&self, py: Python<'_>) {
        let live = self.live.lock().take();
        if let Some(mut live) = live {
            let queue = live.queue.take();
            py.detach(move || {
                // Everything submitted finishes; a call still using the queue keeps it
                // until it returns.
                if let Some(q) = queue.and_then(|q| Arc::try_unwrap(q).ok()) {
                    drop(q.close());
                }
                drop(live);
            });
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "Session('{}', inputs={:?}, outputs={:?}, mode={:?}{})",
            self.program.name(),
            self.input_names(),
            self.output_names(),
            self.mode,
            if self.closed() { ", closed" } else { "" }
        )
    }
}

#[pymodule]
fn _aicsim(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(device_status, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_job, m)?)?;
    m.add_function(wrap_pyfunction!(search, m)?)?;
    m.add_class::<Session>()?;
    m.add_class::<Stats>()?;
    m.add_class::<Profile>()?;
    m.add("__doc__", "The simulated Cloud AI 100 card from Python (see the aicsim package).")?;
    Ok(())
}
