//! `aic-configurator`: searches compile and run parameters (cores, mos, ols, batch size,
//! instances) for the best predicted throughput or the lowest predicted latency.
//!
//! Every evaluation compiles the model with the candidate's compile parameters (cached:
//! the same cores/mos/ols/batch is compiled once) and predicts the deployment with
//! [`crate::predict`] — the real scheduler on the real instruction streams, unpaced.
//! The search is a parallel hill climb from every initial value of the search file: each
//! step evaluates all neighbours of the current point at once across host threads and
//! moves to the best, until no neighbour improves or the evaluation budget is spent.

pub mod cli;

pub mod ray;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use aicsim_compiler::{CompileOptions, Source};

use crate::predict::{predict, predict_generation, Deployment, DeviceModel, HostModel, Measure, Prediction, Workload};

/// The most cores per instance among the measured rows the timing model is calibrated
/// against (`../shared/reference/calibration.md`, docs/calibration.md): wider programs
/// are predicted by extrapolation.
pub const CALIBRATED_CORES: u32 = 7;

/// What the search optimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// `max-throughput` in the newer search files.
    #[default]
    #[serde(alias = "max-throughput")]
    MaximizeInfRate,
    #[serde(alias = "min-latency")]
    MinimizeLatency,
    /// A language model's tokens per second (`-generate`), under the time-per-token bound
    /// if there is one.
    MaximizeTokenRate,
}

/// One point of the search space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct Config {
    pub cores: u32,
    pub mos: u32,
    pub ols: u32,
    pub bs: u32,
    pub instances: u32,
    /// In-flight inferences per instance (`aic-runner -S`).
    pub set_size: u32,
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cores={},mos={},ols={},bs={},instances={},set_size={}",
            self.cores, self.mos, self.ols, self.bs, self.instances, self.set_size
        )
    }
}

impl Config {
    /// The point as the card's configurator logs it:
    /// `(cores=2, mos=[1], ols=1, batchSize=4, instances=7, setSize=10)`.
    pub fn seed_form(&self) -> String {
        format!(
            "(cores={}, mos=[{}], ols={}, batchSize={}, instances={}, setSize={})",
            self.cores, self.mos, self.ols, self.bs, self.instances, self.set_size
        )
    }

    /// Its compiler parameters, as logged: `(cores=2, mos=[1], ols=1, batchSize=4)`.
    pub fn compiler_params(&self) -> String {
        format!("(cores={}, mos=[{}], ols={}, batchSize={})", self.cores, self.mos, self.ols, self.bs)
    }
}

/// Inclusive bounds of one parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u32,
    pub max: u32,
}

/// The JSON search file.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpec {
    pub max_func_eval: usize,
    pub objective: Objective,
    pub cores: Range,
    pub mos: Range,
    pub ols: Range,
    /// Powers of two between the bounds.
    pub bs: Range,
    pub instances: Range,
    /// In-flight inferences per instance: searched when the file gives bounds
    /// (`set-size`), else held at the command line's value.
    pub set_size: Range,
    pub initial_values: Vec<Config>,
    /// Parameters held fixed (any of the five names), applied over every point.
    pub static_params: Vec<(String, u32)>,
}

const PARAMS: [&str; 6] = ["cores", "mos", "ols", "bs", "instances", "set_size"];

fn get(c: &Config, name: &str) -> u32 {
    match name {
        "cores" => c.cores,
        "mos" => c.mos,
        "ols" => c.ols,
        "bs" => c.bs,
        "instances" => c.instances,
        _ => c.set_size,
    }
}

fn set(c: &mut Config, name: &str, v: u32) {
    match name {
        "cores" => c.cores = v,
        "mos" => c.mos = v,
        "ols" => c.ols = v,
        "bs" => c.bs = v,
        "instances" => c.instances = v,
        _ => c.set_size = v,
    }
}

/// A parameter value: an integer of at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Positive(u32);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Positive, D::Error> {
        let v = serde_json::Number::deserialize(d)?;
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n >= 1)
            .map(Positive)
            .ok_or_else(|| D::Error::custom(format!("must be a positive integer, got {v}")))
    }
}

/// The search file as written (every key optional but `params` and `initial_values`),
/// in either of the card's spellings: `params` / `initial_values` / `bs`, or the newer
/// `search-parameters` / `initial-values` / `batch-size` with `"search-mode":
/// "optimized"` and a searchable `set-size`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchFile {
    #[serde(default)]
    #[serde(rename = "search-mode")]
    search_mode: Option<String>,
    #[serde(default = "SearchFile::default_evaluations", alias = "max-func-eval")]
    max_func_eval: Positive,
    #[serde(default)]
    objective: Objective,
    #[serde(alias = "search-parameters")]
    params: Params,
    #[serde(alias = "initial-values")]
    initial_values: Vec<Partial>,
    #[serde(default, alias = "static-params")]
    static_params: Partial,
}

impl SearchFile {
    fn default_evaluations() -> Positive {
        Positive(200)
    }
}

/// The bounds of each searched parameter; a parameter not given is held at its default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    cores: Option<Bounds>,
    mos: Option<Bounds>,
    ols: Option<Bounds>,
    #[serde(alias = "batch-size")]
    bs: Option<Bounds>,
    instances: Option<Bounds>,
    #[serde(alias = "set-size")]
    set_size: Option<Bounds>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bounds {
    min: Positive,
    max: Positive,
}

/// Some of a point's parameters (an initial value, or the parameters held fixed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Partial {
    cores: Option<Positive>,
    mos: Option<Positive>,
    ols: Option<Positive>,
    #[serde(alias = "batch-size")]
    bs: Option<Positive>,
    instances: Option<Positive>,
    #[serde(alias = "set-size")]
    set_size: Option<Positive>,
}

impl Partial {
    /// The parameters given, by name.
    fn given(&self) -> Vec<(String, u32)> {
        let all = [
            ("cores", self.cores),
            ("mos", self.mos),
            ("ols", self.ols),
            ("bs", self.bs),
            ("instances", self.instances),
            ("set_size", self.set_size),
        ];
        all.into_iter().filter_map(|(k, v)| Some((k.to_string(), v?.0))).collect()
    }

    /// `base` with the parameters given here.
    fn over(&self, base: Config) -> Config {
        let pick = |v: Option<Positive>, d: u32| v.map_or(d, |p| p.0);
        Config {
            cores: pick(self.cores, base.cores),
            mos: pick(self.mos, base.mos),
            ols: pick(self.ols, base.ols),
            bs: pick(self.bs, base.bs),
            instances: pick(self.instances, base.instances),
            set_size: pick(self.set_size, base.set_size),
        }
    }
}

fn range(name: &str, bounds: &Option<Bounds>, default: Range) -> Result<Range, String> {
    let Some(b) = bounds else { return Ok(default) };
    let (min, max) = (b.min.0, b.max.0);
    if min > max {
        return Err(format!("params.{name}: min {min} is above max {max}"));
    }
    Ok(Range { min, max })
}

impl SearchSpec {
    /// Parses the search file's JSON text; every problem is named, with where it is.
    /// Unless the file searches the set size, it is held at `set_size` (by default 10
    /// for throughput, 1 for latency and generation).
    pub fn parse(text: &str, set_size: Option<u32>) -> Result<SearchSpec, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        if !value.is_object() {
            // Checked here: a derived struct would also take a list of its fields.
            return Err("the search file must be a JSON object".into());
        }
        let file: SearchFile = serde_path_to_error::deserialize(value).map_err(|e| {
            let (path, why) = (e.path().to_string(), e.into_inner().to_string());
            // An unknown key's path ends in that key, which the message names already.
            let at =
                if why.starts_with("unknown field") { path.rsplit_once('.').map(|(p, _)| p) } else { Some(&*path) };
            match at {
                Some(at) if at != "." => format!("{at}: {why}"),
                _ => why,
            }
        })?;
        if let Some(mode) = file.search_mode.as_deref().filter(|m| *m != "optimized") {
            return Err(format!("search-mode: \"{mode}\" is not supported (only \"optimized\")"));
        }
        let one = Range { min: 1, max: 1 };
        let set_size = set_size.unwrap_or(if file.objective == Objective::MaximizeInfRate { 10 } else { 1 });
        let p = &file.params;
        let bs = range("bs", &p.bs, one)?;
        if !bs.min.is_power_of_two() || !bs.max.is_power_of_two() {
            return Err(format!("params.bs bounds must be powers of two, got {}..{}", bs.min, bs.max));
        }
        let mut spec = SearchSpec {
            max_func_eval: file.max_func_eval.0 as usize,
            objective: file.objective,
            cores: range("cores", &p.cores, Range { min: 1, max: 14 })?,
            mos: range("mos", &p.mos, one)?,
            ols: range("ols", &p.ols, one)?,
            bs,
            instances: range("instances", &p.instances, one)?,
            set_size: range("set_size", &p.set_size, Range { min: set_size, max: set_size })?,
            initial_values: Vec::new(),
            static_params: file.static_params.given(),
        };
        if file.initial_values.is_empty() {
            return Err("\"initial_values\" is empty: the search needs a starting point".into());
        }
        for (i, v) in file.initial_values.iter().enumerate() {
            let start = Config { cores: 1, mos: 1, ols: 1, bs: 1, instances: 1, set_size: spec.set_size.min };
            let c = spec.fix(v.over(start));
            if let Some(why) = spec.invalid(&c, u32::MAX) {
                return Err(format!("initial_values[{i}] ({c}): {why}"));
            }
            spec.initial_values.push(c);
        }
        Ok(spec)
    }

    /// Applies the static parameters.
    fn fix(&self, mut c: Config) -> Config {
        for (k, v) in &self.static_params {
            set(&mut c, k, *v);
        }
        c
    }

    fn range(&self, name: &str) -> Range {
        match name {
            "cores" => self.cores,
            "mos" => self.mos,
            "ols" => self.ols,
            "bs" => self.bs,
            "instances" => self.instances,
            _ => self.set_size,
        }
    }

    /// Why `c` is outside the space (or does not fit a device of `nsp` cores).
    pub fn invalid(&self, c: &Config, nsp: u32) -> Option<String> {
        for name in PARAMS {
            let (v, r) = (get(c, name), self.range(name));
            let fixed = self.static_params.iter().any(|(k, _)| k == name);
            if !fixed && (v < r.min || v > r.max) {
                return Some(format!("{name} {v} is outside {}..={}", r.min, r.max));
            }
        }
        if !c.bs.is_power_of_two() {
            return Some(format!("bs {} is not a power of two", c.bs));
        }
        if u64::from(c.cores) * u64::from(c.instances) > u64::from(nsp) {
            return Some(format!("{} instances x {} cores exceed the device's {nsp} cores", c.instances, c.cores));
        }
        None
    }

    /// The points one step away from `c`: each parameter up or down (batch size by a
    /// factor of two); a change of cores also tries the instance count that fills the
    /// device (throughput) or keeps one instance (latency).
    fn neighbours(&self, c: &Config, nsp: u32) -> Vec<Config> {
        let mut out = Vec::new();
        for name in PARAMS {
            let v = get(c, name);
            let steps = if name == "bs" { [v / 2, v * 2] } else { [v.saturating_sub(1), v + 1] };
            for s in steps {
                let mut n = *c;
                set(&mut n, name, s);
                out.push(n);
                if name == "cores" && s > 0 {
                    let mut fill = n;
                    fill.instances = match self.objective {
                        Objective::MaximizeInfRate | Objective::MaximizeTokenRate => {
                            (nsp / s).clamp(self.instances.min, self.instances.max)
                        }
                        Objective::MinimizeLatency => self.instances.min,
                    };
                    out.push(fill);
                }
            }
        }
        let mut out: Vec<Config> =
            out.into_iter().map(|n| self.fix(n)).filter(|n| n != c && self.invalid(n, nsp).is_none()).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The model and fixed options every evaluation compiles with.
pub struct Problem {
    pub source: Source,
    /// Symbols, fp16, multicast; cores, mos, ols and batch size are set per point.
    pub base: CompileOptions,
    /// The ONNX symbol that is the batch dimension, if any.
    pub batch_symbol: Option<String>,
    pub device: DeviceModel,
    pub host: HostModel,
    /// Inferences per instance the prediction measures (after warm-up).
    pub measured: u32,
    /// A language model generating: each evaluation predicts sequences of it.
    pub generation: Option<GenerationGoal>,
}

/// What a generation search measures and bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerationGoal {
    pub prompt_len: usize,
    pub tokens: u32,
    /// Sequences per instance each evaluation runs.
    pub sequences: u32,
    /// The mean time per output token a configuration may take, ms.
    pub max_time_per_token_ms: Option<f64>,
}

/// One evaluated point.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub config: Config,
    pub result: Result<Prediction, String>,
    /// Within the generation's time-per-token bound (true without one).
    pub within_bound: bool,
}

impl Evaluation {
    /// Higher is better; failures are worst.
    fn score(&self, objective: Objective) -> f64 {
        match (&self.result, objective) {
            (Ok(p), Objective::MaximizeInfRate) => p.inf_per_sec,
            (Ok(p), Objective::MinimizeLatency) => -p.host_round_trip.mean,
            // Over the bound: below every point within it, nearer it the better.
            (Ok(p), Objective::MaximizeTokenRate) if !self.within_bound => -p.host_round_trip.mean,
            (Ok(p), Objective::MaximizeTokenRate) => p.inf_per_sec,
            (Err(_), _) => f64::NEG_INFINITY,
        }
    }

    /// The objective as printed: inf/s, or the mean host round trip in ms.
    pub fn objective(&self, objective: Objective) -> Option<f64> {
        let p = self.result.as_ref().ok()?;
        Some(match objective {
            Objective::MaximizeInfRate | Objective::MaximizeTokenRate => p.inf_per_sec,
            Objective::MinimizeLatency => p.host_round_trip.mean,
        })
    }
}

/// What a search tells as it goes (every method is called from the thread doing the
/// work; the defaults do nothing).
pub trait SearchObserver: Sync {
    /// The climbs start from these points.
    fn starting(&self, _initial: &[Config]) {}
    /// A round evaluates these new points.
    fn round(&self, _points: &[Config]) {}
    /// A program is being compiled for `c`'s compiler parameters (once per program).
    fn compiling(&self, _c: &Config) {}
    /// `c`'s deployment is being predicted.
    fn running(&self, _c: &Config) {}
    /// An evaluation is done.
    fn evaluated(&self, _e: &Evaluation) {}
}

/// An observer that only hears of finished evaluations.
impl<F: Fn(&Evaluation) + Sync> SearchObserver for F {
    fn evaluated(&self, e: &Evaluation) {
        self(e)
    }
}

/// One program, compiled once by whichever thread asks first.
type ProgramCell = Arc<std::sync::OnceLock<Result<Arc<Workload>, String>>>;

/// Compiled programs and evaluations, shared by the search threads.
struct Cache {
    programs: Mutex<HashMap<(u32, u32, u32, u32), ProgramCell>>,
    evaluations: Mutex<HashMap<Config, Evaluation>>,
    compiles: std::sync::atomic::AtomicUsize,
}

impl Problem {
    /// The compile options of point `c`.
    pub fn options(&self, c: &Config) -> CompileOptions {
        let mut o = self.base.clone();
        o.cores = c.cores;
        o.mos = c.mos;
        o.ols = c.ols;
        o.batch_size = Some(c.bs);
        if let Some(sym) = &self.batch_symbol {
            o.symbols.insert(sym.clone(), i64::from(c.bs));
            // Each entry of a language model at this batch.
            for spec in &mut o.specializations {
                spec.insert(sym.clone(), i64::from(c.bs));
            }
        }
        o
    }

    fn workload(&self, cache: &Cache, c: &Config, observer: &dyn SearchObserver) -> Result<Arc<Workload>, String> {
        let key = (c.cores, c.mos, c.ols, c.bs);
        let cell = cache.programs.lock().entry(key).or_default().clone();
        // Threads that want the same program wait for the one compiling it.
        cell.get_or_init(|| {
            cache.compiles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            observer.compiling(c);
            let compiled = self.source.compile(&self.options(c)).map_err(|e| format!("compile: {e}"))?;
            Ok(Arc::new(Workload::from_compiled(&compiled).map_err(|e| e.to_string())?))
        })
        .clone()
    }

    /// Compiles (cached) and predicts one point.
    pub fn evaluate(&self, c: &Config) -> Evaluation {
        let cache = Cache { programs: Mutex::default(), evaluations: Mutex::default(), compiles: 0.into() };
        self.evaluate_cached(&cache, c, &|_: &Evaluation| {})
    }

    fn evaluate_cached(&self, cache: &Cache, c: &Config, observer: &dyn SearchObserver) -> Evaluation {
        if let Some(e) = cache.evaluations.lock().get(c) {
            return e.clone();
        }
        let set_size = c.set_size;
        let result = self.workload(cache, c, observer).inspect(|_| observer.running(c));
        let result = result.and_then(|w| match &self.generation {
            Some(g) => {
                predict_generation(&w, c.instances, g.prompt_len, g.tokens, g.sequences, &self.device, &self.host)
                    .map_err(|e| e.to_string())
            }
            None => predict(
                &w,
                Deployment { instances: c.instances, set_size },
                &self.device,
                &self.host,
                Measure::Window { warmup: 2, measured: self.measured },
            )
            .map_err(|e| e.to_string()),
        });
        self.record(cache, c, result)
    }

    /// `c`'s evaluation (judged against the time-per-token bound), kept in the cache.
    fn record(&self, cache: &Cache, c: &Config, result: Result<Prediction, String>) -> Evaluation {
        let bound = self.generation.and_then(|g| g.max_time_per_token_ms);
        let within_bound = match (&result, bound) {
            (Ok(p), Some(b)) => p.host_round_trip.mean <= b,
            _ => true,
        };
        let e = Evaluation { config: *c, result, within_bound };
        cache.evaluations.lock().insert(*c, e.clone());
        e
    }
}

/// One hill climb.
#[derive(Clone, Debug)]
pub struct Climb {
    pub initial: Config,
    /// Where it ended (the best point it saw).
    pub best: Evaluation,
    /// `converged` (no neighbour improves) or `budget` (evaluations ran out).
    pub status: &'static str,
}

/// The whole search.
#[derive(Clone, Debug)]
pub struct SearchResult {
    pub climbs: Vec<Climb>,
    pub best: Evaluation,
    /// Every point evaluated (distinct), in [`Config`] order.
    pub evaluated: Vec<Evaluation>,
    /// Distinct programs compiled.
    pub compiles: usize,
}

impl SearchResult {
    /// Distinct points evaluated.
    pub fn evaluations(&self) -> usize {
        self.evaluated.len()
    }

    /// The best point evaluated with at most `cores` cores per instance.
    pub fn best_within(&self, cores: u32, objective: Objective) -> Option<&Evaluation> {
        best_of(self.evaluated.iter().filter(|e| e.config.cores <= cores && e.result.is_ok()), objective)
    }
}

impl SearchResult {
    /// The `n` best points that were evaluated successfully, best first.
    pub fn ranked(&self, objective: Objective, n: usize) -> Vec<&Evaluation> {
        let mut ok: Vec<&Evaluation> = self.evaluated.iter().filter(|e| e.result.is_ok()).collect();
        ok.sort_by(|a, b| b.score(objective).total_cmp(&a.score(objective)).then(a.config.cmp(&b.config)));
        ok.truncate(n);
        ok
    }
}

/// The best of `points` for `objective` (failures last; ties to the smaller config).
fn best_of<'a>(points: impl Iterator<Item = &'a Evaluation>, objective: Objective) -> Option<&'a Evaluation> {
    points.max_by(|a, b| a.score(objective).total_cmp(&b.score(objective)).then(b.config.cmp(&a.config)))
}

/// Evaluates a round of points somewhere else (other processes, other machines): one
/// prediction (or the reason there is none) per point, in order. Each evaluation must be
/// a pure function of the point and the problem ([`PointJob`]), so the search takes the
/// same path wherever its points are evaluated.
pub trait RoundEvaluator: Sync {
    fn evaluate_round(&self, points: &[Config]) -> Vec<Result<Prediction, String>>;
}

/// The compile flags a sweep holds fixed (aic-configurator's).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SweepFlags {
    /// `-onnx-define-symbol` values.
    #[serde(default)]
    pub symbols: std::collections::BTreeMap<String, i64>,
    /// The ONNX symbol that is the batch dimension.
    #[serde(default)]
    pub batch_symbol: Option<String>,
    #[serde(default)]
    pub fp16: bool,
    #[serde(default)]
    pub multicast_weights: bool,
}

/// Everything one evaluation depends on besides the model's bytes: [`evaluate_job`]
/// gives the same prediction for the same job on any machine.
#[derive(Clone, Debug, PartialEq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PointJob {
    pub config: Config,
    #[serde(default)]
    pub flags: SweepFlags,
    /// Inferences per instance the prediction measures after warm-up.
    #[serde(default = "PointJob::default_measured")]
    pub measured: u32,
    /// The device's dispatch-jitter seed.
    #[serde(default = "PointJob::default_seed")]
    pub seed: u64,
}

impl PointJob {
    fn default_measured() -> u32 {
        6
    }

    fn default_seed() -> u64 {
        1
    }

    /// The job of point `c` of `problem` (which must be one [`PointJob`] can carry: no
    /// generation, no quantisation, no specialisations).
    pub fn of(problem: &Problem, c: &Config) -> PointJob {
        PointJob {
            config: *c,
            flags: SweepFlags {
                symbols: problem.base.symbols.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                batch_symbol: problem.batch_symbol.clone(),
                fp16: problem.base.fp16,
                multicast_weights: problem.base.multicast_weights,
            },
            measured: problem.measured,
            seed: problem.device.seed,
        }
    }

    /// Why `problem`'s points cannot travel as jobs, if they cannot.
    pub fn unsupported(problem: &Problem) -> Option<&'static str> {
        let b = &problem.base;
        (problem.generation.is_some() || !b.specializations.is_empty() || b.retained_state)
            .then_some("a generation search (specialisations, retained state)")
    }
}

impl SweepFlags {
    /// The problem of searching `source` with these flags on a 14-core card, predicting
    /// `measured` inferences per instance with dispatch-jitter seed `seed`.
    fn problem(&self, source: Source, measured: u32, seed: u64) -> Problem {
        let base = CompileOptions {
            symbols: self.symbols.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            fp16: self.fp16,
            multicast_weights: self.multicast_weights,
            ..CompileOptions::default()
        };
        let device = DeviceModel {
            seed,
            ..DeviceModel::from(&aicsim_device::DeviceConfig { num_nsp: 14, ..aicsim_device::DeviceConfig::default() })
        };
        Problem {
            source,
            base,
            batch_symbol: self.batch_symbol.clone(),
            device,
            host: HostModel::default(),
            measured,
            generation: None,
        }
    }
}

/// Compiles `source` for the job's point and predicts its deployment on a 14-core card:
/// a pure function of the model and the job.
pub fn evaluate_job(source: Source, job: &PointJob) -> Result<Prediction, String> {
    job.flags.problem(source, job.measured, job.seed).evaluate(&job.config).result
}

impl Evaluation {
    /// The point and its figures, as `results.json` and the Python package give them.
    pub fn to_json(&self) -> serde_json::Value {
        let c = self.config;
        let mut v = serde_json::json!({
            "cores": c.cores, "mos": c.mos, "ols": c.ols, "batchSize": c.bs, "instances": c.instances,
            "setSize": c.set_size,
        });
        match &self.result {
            Ok(p) => {
                v["status"] = "OK".into();
                v["infPerSec"] = p.inf_per_sec.into();
                v["latencyMeanMs"] = p.host_round_trip.mean.into();
                v["latencyP99Ms"] = p.host_round_trip.p99.into();
                v["deviceExecMs"] = p.device_exec.mean.into();
            }
            Err(why) => {
                v["status"] = "FAILED".into();
                v["error"] = why.as_str().into();
            }
        }
        v
    }
}

impl SearchResult {
    /// The whole search as JSON: the best point, each climb's end, every evaluation (best
    /// first, then the failed ones) and the programs compiled.
    pub fn to_json(&self, objective: Objective) -> serde_json::Value {
        serde_json::json!({
            "objective": objective.name(),
            "best": self.best.to_json(),
            "climbs": self.climbs.iter().map(|c| serde_json::json!({
                "initial": c.initial, "status": c.status, "best": c.best.to_json(),
            })).collect::<Vec<_>>(),
            "evaluations": self.ranked(objective, usize::MAX).into_iter()
                .chain(self.evaluated.iter().filter(|e| e.result.is_err()))
                .map(Evaluation::to_json).collect::<Vec<_>>(),
            "compiles": self.compiles,
        })
    }
}

impl Objective {
    /// Its name in the search file.
    pub fn name(self) -> &'static str {
        match self {
            Objective::MaximizeInfRate => "maximize_inf_rate",
            Objective::MinimizeLatency => "minimize_latency",
            Objective::MaximizeTokenRate => "maximize_token_rate",
        }
    }
}

/// What a sweep compiles with, besides each point's parameters (the Python package's
/// `aicsim.sweep` options).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SweepOptions {
    #[serde(default)]
    pub flags: SweepFlags,
    /// The set size when the search file does not search it.
    #[serde(default)]
    pub set_size: Option<u32>,
    #[serde(default)]
    pub seed: Option<u64>,
}

impl SweepOptions {
    /// The problem of sweeping `source` with these options (a 14-core card).
    pub fn problem(&self, source: Source) -> Problem {
        self.flags.problem(source, PointJob::default_measured(), self.seed.unwrap_or_else(PointJob::default_seed))
    }
}

/// Runs `threads` evaluations at a time.
fn evaluate_all(
    problem: &Problem,
    cache: &Cache,
    points: &[Config],
    threads: usize,
    remote: Option<&dyn RoundEvaluator>,
    observer: &dyn SearchObserver,
) -> Vec<Evaluation> {
    if !points.is_empty() {
        observer.round(points);
    }
    if let Some(remote) = remote {
        return evaluate_remotely(problem, cache, points, remote, observer);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = Mutex::new(vec![None; points.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, points.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(c) = points.get(i) else { break };
                let e = problem.evaluate_cached(cache, c, observer);
                observer.evaluated(&e);
                results.lock()[i] = Some(e);
            });
        }
    });
    results.into_inner().into_iter().map(|e| e.expect("every point evaluated")).collect()
}

/// [`evaluate_all`] by `remote`: the points not evaluated yet go out as one round.
fn evaluate_remotely(
    problem: &Problem,
    cache: &Cache,
    points: &[Config],
    remote: &dyn RoundEvaluator,
    observer: &dyn SearchObserver,
) -> Vec<Evaluation> {
    let fresh: Vec<Config> = {
        let seen = cache.evaluations.lock();
        points.iter().filter(|c| !seen.contains_key(c)).copied().collect()
    };
    for c in &fresh {
        let key = (c.cores, c.mos, c.ols, c.bs);
        let mut programs = cache.programs.lock();
        if let std::collections::hash_map::Entry::Vacant(e) = programs.entry(key) {
            e.insert(ProgramCell::default());
            cache.compiles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            observer.compiling(c);
        }
        observer.running(c);
    }
    let results = remote.evaluate_round(&fresh);
    for (c, result) in
        fresh.iter().zip(results.into_iter().chain(std::iter::repeat_with(|| {
            Err("the remote evaluator returned fewer results than points".to_string())
        })))
    {
        observer.evaluated(&problem.record(cache, c, result));
    }
    let seen = cache.evaluations.lock();
    points.iter().map(|c| seen[c].clone()).collect()
}

/// Searches from every initial value of `spec`.
pub fn search(problem: &Problem, spec: &SearchSpec, threads: usize) -> SearchResult {
    search_with(problem, spec, threads, &|_: &Evaluation| {})
}

/// [`search`], telling `observer` what it does as it goes.
pub fn search_with(
    problem: &Problem,
    spec: &SearchSpec,
    threads: usize,
    observer: &dyn SearchObserver,
) -> SearchResult {
    search_inner(problem, spec, threads, None, observer)
}

/// [`search_with`], each round of points evaluated by `remote` (the same climbs, so the
/// same result, as long as `remote` predicts what [`Problem::evaluate`] would).
pub fn search_distributed(
    problem: &Problem,
    spec: &SearchSpec,
    remote: &dyn RoundEvaluator,
    observer: &dyn SearchObserver,
) -> SearchResult {
    search_inner(problem, spec, 1, Some(remote), observer)
}

fn search_inner(
    problem: &Problem,
    spec: &SearchSpec,
    threads: usize,
    remote: Option<&dyn RoundEvaluator>,
    observer: &dyn SearchObserver,
) -> SearchResult {
    let cache = Cache { programs: Mutex::default(), evaluations: Mutex::default(), compiles: 0.into() };
    let nsp = problem.device.num_nsp;
    let objective = spec.objective;
    let budget_left = |cache: &Cache| spec.max_func_eval.saturating_sub(cache.evaluations.lock().len());
    // The initial values first, all at once.
    let starts: Vec<Config> = spec.initial_values.iter().filter(|c| spec.invalid(c, nsp).is_none()).copied().collect();
    let mut first = starts.clone();
    first.truncate(spec.max_func_eval);
    observer.starting(&spec.initial_values);
    evaluate_all(problem, &cache, &first, threads, remote, observer);
    let mut climbs = Vec::new();
    for initial in &spec.initial_values {
        let Some(mut here) = cache.evaluations.lock().get(initial).cloned() else {
            let why = spec.invalid(initial, nsp).unwrap_or_else(|| "not evaluated: budget spent".into());
            climbs.push(Climb {
                initial: *initial,
                best: Evaluation { config: *initial, result: Err(why), within_bound: true },
                status: "skipped",
            });
            continue;
        };
        let status = loop {
            let fresh: Vec<Config> = {
                let seen = cache.evaluations.lock();
                spec.neighbours(&here.config, nsp).into_iter().filter(|n| !seen.contains_key(n)).collect()
            };
            let left = budget_left(&cache);
            let mut todo = fresh;
            let over = todo.len() > left;
            todo.truncate(left);
            evaluate_all(problem, &cache, &todo, threads, remote, observer);
            let best_neighbour = {
                let seen = cache.evaluations.lock();
                spec.neighbours(&here.config, nsp)
                    .iter()
                    .filter_map(|n| seen.get(n).cloned())
                    .max_by(|a, b| a.score(objective).total_cmp(&b.score(objective)))
            };
            match best_neighbour {
                Some(n) if n.score(objective) > here.score(objective) => here = n,
                _ if over => break "budget",
                _ => break "converged",
            }
            if budget_left(&cache) == 0 {
                break "budget";
            }
        };
        climbs.push(Climb { initial: *initial, best: here, status });
    }
    let mut evaluated: Vec<Evaluation> = cache.evaluations.lock().values().cloned().collect();
    evaluated.sort_by_key(|e| e.config);
    let best = best_of(evaluated.iter(), objective).cloned().unwrap_or(Evaluation {
        config: spec.initial_values[0],
        result: Err("nothing was evaluated".into()),
        within_bound: true,
    });
    let compiles = cache.compiles.load(std::sync::atomic::Ordering::Relaxed);
    SearchResult { climbs, best, evaluated, compiles }
}
