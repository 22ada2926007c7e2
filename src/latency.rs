//! The latency profile (`aic-profiling-program-<p>-latency.txt`): a short `#` header,
//! then CSV with one row per sampled inference. Times are in microseconds, in the
//! columns whose names end in `Us`.

use std::fmt::Write as _;

use aicsim_runtime::Completion;

use crate::stats;

/// The CSV columns, in order.
pub const COLUMNS: [&str; 16] = [
    "Sample",
    "devInfPerSec",
    "devExecUs",
    "devInWaitTimeUs",
    "devOutWaitTimeUs",
    "hostRoundTripUs",
    "enqTimeUs",
    "preProcTimeUs",
    "submitTimeUs",
    "execTotalUs",
    "exectoVcUs",
    "execToCompleteUs",
    "postProcUs",
    "totalRoundtripTimeUs",
    "queueDepth",
    "numInfInQueue",
];

/// Columns the summary leaves out.
pub const NOT_SUMMARISED: [&str; 3] = ["Sample", "queueDepth", "numInfInQueue"];

/// One sampled inference's row.
pub fn row(sample: u64, done: &Completion<'_>, batch_size: u32) -> [f64; 16] {
    let t = &done.timestamps;
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let (dev_rate, exec, in_wait, out_wait) = match done.device {
        Some(d) if !d.exec.is_zero() => {
            (f64::from(batch_size) / d.exec.as_secs_f64(), us(d.exec), us(d.input_wait), us(d.output_wait))
        }
        Some(d) => (0.0, 0.0, us(d.input_wait), us(d.output_wait)),
        None => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    };
    [
        sample as f64,
        dev_rate,
        exec,
        in_wait,
        out_wait,
        us(t.host_round_trip()),
        us(t.enqueue_time()),
        us(t.pre_proc_time()),
        us(t.submit_time()),
        us(t.exec_total()),
        us(t.exec_to_vc()),
        us(t.exec_to_complete()),
        us(t.post_proc_time()),
        us(t.total_round_trip()),
        done.queue_depth as f64,
        done.in_flight_total as f64,
    ]
}

/// The file's text.
pub fn render(program: &str, activations: usize, set_size: usize, batch_size: u32, rows: &[[f64; 16]]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# aicsim latency profile");
    let _ = writeln!(
        out,
        "# program: {program}, activations: {activations}, set size: {set_size}, batch size: {batch_size}, samples: {}",
        rows.len()
    );
    let _ = writeln!(out, "# times in microseconds (columns ending in Us)");
    let _ = writeln!(out, "{}", COLUMNS.join(","));
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| match i {
                0 | 14 | 15 => format!("{}", *v as u64),
                _ if v.is_nan() => String::from("nan"),
                _ => format!("{v:.3}"),
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}

/// A parsed latency file: column names and rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

/// Parses a latency file; errors name the line.
pub fn parse(text: &str) -> Result<Table, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty());
    let Some((_, header)) = lines.next() else { return Err(String::from("no CSV header line")) };
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    let mut rows = Vec::new();
    for (n, line) in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != columns.len() {
            return Err(format!("line {}: {} fields, the header has {}", n + 1, cells.len(), columns.len()));
        }
        let row = cells
            .iter()
            .map(|c| c.trim().parse::<f64>().map_err(|_| format!("line {}: '{}' is not a number", n + 1, c.trim())))
            .collect::<Result<Vec<f64>, String>>()?;
        rows.push(row);
    }
    Ok(Table { columns, rows })
}

/// The summary's percentile columns.
pub const SUMMARY_COLUMNS: [&str; 8] = ["mean", "min", "50%", "75%", "90%", "95%", "99%", "max"];

/// Per metric (in the files' column order): its display name (microsecond columns in
/// milliseconds, without the `Us` suffix) and mean, min, 50, 75, 90, 95, 99, max.
pub fn summarise(tables: &[Table], keep_percent: Option<f64>) -> Result<Vec<(String, [f64; 8])>, String> {
    let Some(first) = tables.first() else { return Err(String::from("no files")) };
    let mut out = Vec::new();
    for name in &first.columns {
        if NOT_SUMMARISED.contains(&name.as_str()) {
            continue;
        }
        let mut values = Vec::new();
        for t in tables {
            let Some(i) = t.columns.iter().position(|n| n == name) else {
                return Err(format!("a file has no column {name}"));
            };
            values.extend(t.rows.iter().map(|r| r[i]).filter(|v| !v.is_nan()));
        }
        let (display, scale) = match name.strip_suffix("Us") {
            Some(base) => (base.to_string(), 1e-3),
            None => (name.clone(), 1.0),
        };
        let values: Vec<f64> = values.into_iter().map(|v| v * scale).collect();
        let sorted = match keep_percent {
            Some(k) => stats::keep_middle(&values, k),
            None => {
                let mut v = values;
                v.sort_by(f64::total_cmp);
                v
            }
        };
        if sorted.is_empty() {
            out.push((display, [f64::NAN; 8]));
            continue;
        }
        let p = |q| stats::percentile(&sorted, q);
        out.push((
            display,
            [stats::mean(&sorted), sorted[0], p(0.5), p(0.75), p(0.9), p(0.95), p(0.99), sorted[sorted.len() - 1]],
        ));
    }
    Ok(out)
}

/// The summary table as `aic-latency-stats` prints it, under `heading`.
pub fn render_summary(heading: &str, summary: &[(String, [f64; 8])]) -> String {
    let mut out = format!("{heading}\n");
    let _ = write!(out, "{:<22}", "");
    for c in SUMMARY_COLUMNS {
        let _ = write!(out, "{c:>14}");
    }
    out.push('\n');
    for (name, v) in summary {
        let _ = write!(out, "{name:<22}");
        for x in v {
            let _ = write!(out, "{x:>14.4}");
        }
        out.push('\n');
    }
    out
}
