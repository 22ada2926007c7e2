//! `aic-configurator -ray-address=ADDR`: each round of the search is evaluated on a Ray
//! cluster. Ray has no Rust client, so the configurator drives a helper process
//! (`python -m aicsim.ray_sweep`, in the aicsim Python package) over its standard input
//! and output, one JSON line per round each way:
//!
//! ```text
//! helper -> {"ready": true, "cluster": "..."}                      once, after ray.init
//! us     -> {"jobs": [PointJob, ...]}                              a round
//! helper -> {"results": [{"ok": Prediction} | {"error": "..."}]}    in the same order
//! ```
//!
//! The helper ships the model's bytes to the cluster once and runs one Ray task per
//! point, each calling [`super::evaluate_job`] through the Python package: a pure
//! function of the model and the job, so the search takes the same path, and finds the
//! same best configuration, as on one machine.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use parking_lot::Mutex;
use serde::Deserialize;

use super::{Config, PointJob, Problem, RoundEvaluator};
use crate::predict::Prediction;

/// The Python that runs the helper: `AICSIM_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("AICSIM_PYTHON").unwrap_or_else(|_| "python3".into())
}

struct Pipe {
    child: Child,
    /// `None` once closed (which tells the helper to disconnect and exit).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// The helper process, connected to the cluster.
pub struct RayEvaluator<'a> {
    problem: &'a Problem,
    address: String,
    pipe: Mutex<Pipe>,
    /// Where the helper's (and Ray's) messages go; removed at the end.
    log: std::path::PathBuf,
}

/// The last line of the helper's log: what it said before it stopped.
fn last_words(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().rev().find(|l| !l.trim().is_empty()).map_or_else(String::new, |l| format!(": {}", l.trim()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Outcome {
    Ok(Prediction),
    Error(String),
}

#[derive(Deserialize)]
struct Results {
    results: Vec<Outcome>,
}

#[derive(Deserialize)]
struct Ready {
    ready: bool,
    #[serde(default)]
    cluster: String,
}

impl<'a> RayEvaluator<'a> {
    /// Starts the helper for `model` (a path or `zoo:NAME`) and waits until it is
    /// connected to the cluster at `address` (`auto`, `ray://host:port`, `host:port`, or
    /// `local` for a Ray instance of its own). Returns the evaluator and the cluster's
    /// description.
    pub fn start(problem: &'a Problem, address: &str, model: &str) -> Result<(RayEvaluator<'a>, String), String> {
        if let Some(what) = PointJob::unsupported(problem) {
            return Err(format!("-ray-address: {what} runs on one machine only (leave out -ray-address)"));
        }
        let python = python();
        let log = std::env::temp_dir().join(format!("aicsim-ray-helper-{}.log", std::process::id()));
        let stderr = std::fs::File::create(&log)
            .map_err(|e| format!("-ray-address={address}: cannot create {}: {e}", log.display()))?;
        let mut child = Command::new(&python)
            .args(["-m", "aicsim.ray_sweep", "--address", address, "--model", model])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                let _ = std::fs::remove_file(&log);
                format!("-ray-address={address}: cannot start {python} -m aicsim.ray_sweep: {e}")
            })?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let ready: Option<Ready> = serde_json::from_str(line.trim()).ok();
        match (read, ready) {
            (Ok(n), Some(r)) if n > 0 && r.ready => {
                let pipe = Mutex::new(Pipe { child, stdin: Some(stdin), stdout });
                Ok((RayEvaluator { problem, address: address.to_string(), pipe, log }, r.cluster))
            }
            _ => {
                let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let said = last_words(&log);
                let _ = std::fs::remove_file(&log);
                Err(format!(
                    "-ray-address={address}: the Ray helper ({python} -m aicsim.ray_sweep) did not connect ({status}{said}); \
                     it needs the aicsim Python package and ray (scripts/test.sh installs both into .venv)"
                ))
            }
        }
    }

    fn round(&self, points: &[Config]) -> Result<Vec<Result<Prediction, String>>, String> {
        let jobs: Vec<PointJob> = points.iter().map(|c| PointJob::of(self.problem, c)).collect();
        let request = serde_json::json!({ "jobs": jobs }).to_string();
        let mut pipe = self.pipe.lock();
        let gone = |e: std::io::Error| format!("the Ray helper for {} is gone: {e}", self.address);
        let stdin = pipe.stdin.as_mut().ok_or_else(|| format!("the Ray helper for {} was closed", self.address))?;
        writeln!(stdin, "{request}").and_then(|()| stdin.flush()).map_err(gone)?;
        let mut line = String::new();
        if pipe.stdout.read_line(&mut line).map_err(gone)? == 0 {
            return Err(format!("the Ray helper for {} exited{}", self.address, last_words(&self.log)));
        }
        let results: Results =
            serde_json::from_str(line.trim()).map_err(|e| format!("the Ray helper's answer is not a result: {e}"))?;
        if results.results.len() != points.len() {
            return Err(format!("the Ray helper answered {} of {} points", results.results.len(), points.len()));
        }
        Ok(results
            .results
            .into_iter()
            .map(|o| match o {
                Outcome::Ok(p) => Ok(p),
                Outcome::Error(e) => Err(e),
            })
            .collect())
    }
}

impl RoundEvaluator for RayEvaluator<'_> {
    fn evaluate_round(&self, points: &[Config]) -> Vec<Result<Prediction, String>> {
        match self.round(points) {
            Ok(r) => r,
            Err(e) => points.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}

impl Drop for RayEvaluator<'_> {
    fn drop(&mut self) {
        let pipe = self.pipe.get_mut();
        drop(pipe.stdin.take());
        let _ = pipe.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
