//! How aic-runner runs: on the simulated clock (the default), with a side thread that
//! reports progress on long runs, or paced to the wall clock.

use super::*;

/// Prints the live report on the simulated clock: at each period boundary of simulated
/// time that an inference's return crosses, the rate over the period just ended.
pub(super) struct LiveReport {
    period_ns: u64,
    batch: u32,
    /// (end of the current period, inferences counted at its start), ns on the run's clock.
    window: Option<(u64, u64)>,
    started: Instant,
    start_ns: u64,
}

impl LiveReport {
    pub(super) fn tick(&mut self, returned_ns: u64, completed: u64) {
        let (end, count_at_start) = *self.window.get_or_insert((returned_ns + self.period_ns, completed - 1));
        if returned_ns < end {
            return;
        }
        let rate = (completed - count_at_start) as f64 * f64::from(self.batch) * 1e9 / self.period_ns as f64;
        let simulated = (returned_ns - self.start_ns.min(returned_ns)) as f64 / 1e9;
        let speed = simulated / self.started.elapsed().as_secs_f64().max(1e-9);
        println!("Live: InferenceCnt {completed} Inf/Sec {rate:.3} (simulated; {speed:.2}x real time)");
        self.window = Some((end + self.period_ns * ((returned_ns - end) / self.period_ns + 1), completed));
    }
}

/// What a run works with, whichever clock it runs on.
#[derive(Clone, Copy)]
pub(super) struct Run<'a> {
    pub(super) args: &'a Args,
    pub(super) set: &'a InferenceSet,
    /// Host input sets, in the host format.
    pub(super) inputs: &'a [Vec<Vec<u8>>],
    pub(super) collector: &'a Collector,
    /// Whether the device still records every instruction of every run: only until the
    /// sampled inferences are in (recording costs host time on every run).
    pub(super) tracing: &'a AtomicBool,
}

impl Run<'_> {
    /// Records a finished inference, and stops the device's tracing once every sampled
    /// inference has been recorded.
    fn record(&self, done: &Completion<'_>) {
        let set = self.set;
        self.collector
            .record(done, || set.activations()[done.activation].run_profile(done.seq).map_err(|e| e.to_string()));
        if self.tracing.load(Ordering::Relaxed)
            && self.collector.samples_complete()
            && self.tracing.swap(false, Ordering::Relaxed)
        {
            for a in set.activations() {
                // Best effort: tracing left on only costs time.
                let _ = a.set_trace(false);
            }
        }
    }
}

/// Runs on the simulated clock; a side thread reports progress on stderr for long runs.
pub(super) fn run_simulated(run: &Run<'_>, limit: RunLimit) -> Result<RunSummary, String> {
    let Run { args, set, inputs, collector, .. } = *run;
    let batch = set.program().batch_size();
    let device_inputs: Vec<Vec<Vec<u8>>> = inputs
        .iter()
        .map(|set_| set.program().device_inputs(set_))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let latest_ns = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let started = Instant::now();
    let live = parking_lot::Mutex::new(LiveReport {
        period_ns: args.live_period_ms * 1_000_000,
        batch,
        window: None,
        started,
        start_ns: 0,
    });
    let on_complete = |done: &Completion<'_>| {
        run.record(done);
        latest_ns.fetch_max(done.timestamps.returned, Ordering::Relaxed);
        if args.live {
            live.lock().tick(done.timestamps.returned, collector.completed());
        }
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            progress_on_stderr(&finished, started, || collector.completed(), || latest_ns.load(Ordering::Relaxed))
        });
        let result = set.run_simulated(limit, &HostModel::default(), &device_inputs, on_complete);
        finished.store(true, Ordering::Relaxed);
        result
    })
    .map_err(|e| e.to_string())
}

/// Every few seconds of a long run: how far it got (on stderr, not part of the figures).
pub(super) fn progress_on_stderr(
    finished: &AtomicBool,
    started: Instant,
    completed: impl Fn() -> u64,
    simulated_ns: impl Fn() -> u64,
) {
    let mut next = Duration::from_secs(3);
    while !finished.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if started.elapsed() < next {
            continue;
        }
        next += Duration::from_secs(3);
        eprintln!(
            "aic-runner: {} inferences, {:.3} s simulated in {:.0} s",
            completed(),
            simulated_ns() as f64 / 1e9,
            started.elapsed().as_secs_f64()
        );
    }
}

/// Runs on the wall clock, with the live report on wall-clock periods.
pub(super) fn run_wall(run: &Run<'_>, limit: RunLimit) -> Result<RunSummary, String> {
    let Run { args, set, inputs, collector, .. } = *run;
    let batch = set.program().batch_size();
    let fill = |index: u64, dst: &mut [Vec<u8>]| {
        for (d, s) in dst.iter_mut().zip(&inputs[index as usize % inputs.len()]) {
            d.copy_from_slice(s);
        }
    };
    let finished = AtomicBool::new(false);
    let on_complete = |done: &Completion<'_>| run.record(done);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let period = if args.live { Duration::from_millis(args.live_period_ms) } else { Duration::from_secs(3) };
            let start = Instant::now();
            let mut last = (Instant::now(), 0u64);
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10).min(period));
                if last.0.elapsed() < period {
                    continue;
                }
                let n = collector.completed();
                let rate = (n - last.1) as f64 / last.0.elapsed().as_secs_f64() * f64::from(batch);
                if args.live {
                    println!("Live: InferenceCnt {n} Inf/Sec {rate:.3}");
                } else {
                    eprintln!("aic-runner: {:.0} s, {n} inferences, {rate:.1} inf/s", start.elapsed().as_secs_f64());
                }
                last = (Instant::now(), n);
            }
        });
        let summary = set.run(limit, fill, on_complete);
        finished.store(true, Ordering::Relaxed);
        summary
    })
    .map_err(|e| e.to_string())
}
