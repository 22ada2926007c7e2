//! The latency profile (`aic-profiling-program-<p>-latency.txt`): a header of
//! [`HEADER_LINES`] lines, then CSV with one row per sampled inference. Times are in
//! microseconds, in the columns whose names end in `Us`. The header has the length the
//! SDK's own summariser skips (four lines) so that pandas-based readers written for the
//! card read these files unchanged.

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

/// Lines before the CSV header.
pub const HEADER_LINES: usize = 4;

/// The file's text.
pub fn render(program: &str, activations: &str, set_size: usize, batch_size: u32, rows: &[[f64; 16]]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# aicsim latency profile");
    let _ = writeln!(
        out,
        "# program: {program}, {activations}, set size: {set_size}, batch size: {batch_size}, samples: {}",
        rows.len()
    );
    let _ = writeln!(out, "# times in microseconds (columns ending in Us)");
    let _ = writeln!(out, "# one row per sampled inference, in the order they completed");
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

impl Table {
    /// Only the middle `keep_percent` of the samples, in the order they were taken: the
    /// first and last ones (warm-up and drain) go.
    pub fn keep_middle(&self, keep_percent: f64) -> Table {
        let n = self.rows.len();
        let drop = ((n as f64) * (1.0 - keep_percent.clamp(0.0, 100.0) / 100.0) / 2.0).round() as usize;
        let rows = if 2 * drop >= n { Vec::new() } else { self.rows[drop..n - drop].to_vec() };
        Table { columns: self.columns.clone(), rows }
    }
}

/// Per metric (in the files' column order): its display name (microsecond columns in
/// milliseconds, without the `Us` suffix) and mean, min, 50, 75, 90, 95, 99, max.
pub fn summarise(tables: &[Table]) -> Result<Vec<(String, [f64; 8])>, String> {
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
        let mut sorted: Vec<f64> = values.into_iter().map(|v| v * scale).collect();
        sorted.sort_by(f64::total_cmp);
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

/// The summary table as `aic-latency-stats` prints it, under `heading`: a table in the
/// layout pandas prints (metric names left-aligned, each column right-aligned to its
/// widest cell, six decimals), as the SDK's summariser shows it.
pub fn render_summary(heading: &str, summary: &[(String, [f64; 8])]) -> String {
    let cells: Vec<Vec<String>> = summary.iter().map(|(_, v)| v.iter().map(|x| format!("{x:.6}")).collect()).collect();
    let name_width = summary.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let widths: Vec<usize> = SUMMARY_COLUMNS
        .iter()
        .enumerate()
        .map(|(c, h)| cells.iter().map(|r| r[c].len()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let mut out = format!("{heading}\n{:name_width$}", "");
    for (h, w) in SUMMARY_COLUMNS.iter().zip(&widths) {
        let _ = write!(out, "  {h:>w$}");
    }
    out.push('\n');
    for ((name, _), row) in summary.iter().zip(&cells) {
        let _ = write!(out, "{name:<name_width$}");
        for (x, w) in row.iter().zip(&widths) {
            let _ = write!(out, "  {x:>w$}");
        }
        out.push('\n');
    }
    out
}

/// The line the summary ends with: the mean total round trip, in milliseconds.
pub fn render_headline(summary: &[(String, [f64; 8])]) -> Option<String> {
    let (name, v) = summary.iter().find(|(n, _)| n == "totalRoundtripTime")?;
    Some(format!("{name}: percentile(mean) = {:.3} ms\n", v[0]))
}
