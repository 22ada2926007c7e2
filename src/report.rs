//! One self-contained HTML page per run (`aic-runner --report`) or search
//! (`aic-configurator --report`): the figures as tables and the plots as inline SVG
//! drawn with plotters. Nothing is fetched when the page opens: no script, no font, no
//! style sheet from anywhere else.

use std::fmt::Write as _;

use aicsim_abi::container::ProgramImage;
use aicsim_device::nsp::{Engine, ENGINES};
use aicsim_driver::RunProfile;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::profiling::layer_activity;
use crate::stats;

const WIDTH: u32 = 900;
const BLUE: RGBColor = RGBColor(52, 101, 164);
const ORANGE: RGBColor = RGBColor(230, 126, 34);
const GREEN: RGBColor = RGBColor(39, 174, 96);
const PURPLE: RGBColor = RGBColor(142, 68, 173);
const GREY: RGBColor = RGBColor(150, 150, 150);
const MARKS: [RGBColor; 3] = [GREEN, ORANGE, RGBColor(192, 57, 43)];

/// Escapes text for HTML (names come from models and command lines).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws one SVG plot into a string.
fn svg(height: u32, draw: impl FnOnce(&Area<'_>) -> Result<(), String>) -> String {
    let mut out = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    match result {
        Ok(()) => out,
        // Drawing into a string only fails on a bug in the plot; say so on the page.
        Err(e) => format!("<p class=\"error\">plot not drawn: {}</p>", escape(&e)),
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A histogram of `values` (ms), the given percentiles marked.
pub fn histogram_svg(values: &[f64], marks: &[(&str, f64)]) -> String {
    let (lo, hi) = bounds(values);
    let bins = 40usize;
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u32; bins];
    for &v in values {
        let i = (((v - lo) / width) as usize).min(bins - 1);
        counts[i] += 1;
    }
    let top = f64::from(counts.iter().copied().max().unwrap_or(1).max(1)) * 1.1;
    svg(320, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Latency histogram (totalRoundtripTime)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(lo..hi, 0f64..top)
            .map_err(err)?;
        chart.configure_mesh().x_desc("ms").y_desc("inferences").draw().map_err(err)?;
        chart
            .draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, f64::from(c))], BLUE.filled())
            }))
            .map_err(err)?;
        draw_marks(&mut chart, marks, top)?;
        Ok(())
    })
}

/// The cumulative distribution of `sorted` (ms), the given percentiles marked.
pub fn cdf_svg(sorted: &[f64], marks: &[(&str, f64)]) -> String {
    let (lo, hi) = bounds(sorted);
    let n = sorted.len().max(1) as f64;
    // At most one point per pixel column.
    let step = (sorted.len() / WIDTH as usize).max(1);
    let points: Vec<(f64, f64)> =
        sorted.iter().enumerate().step_by(step).map(|(i, &v)| (v, (i + 1) as f64 / n)).collect();
    svg(320, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Latency CDF (totalRoundtripTime)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(lo..hi, 0f64..1.0)
            .map_err(err)?;
        chart.configure_mesh().x_desc("ms").y_desc("fraction of inferences").draw().map_err(err)?;
        chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2))).map_err(err)?;
        draw_marks(&mut chart, marks, 1.0)?;
        Ok(())
    })
}

type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Vertical lines at the percentiles, with a legend.
fn draw_marks(chart: &mut Chart<'_>, marks: &[(&str, f64)], top: f64) -> Result<(), String> {
    for (k, &(name, at)) in marks.iter().enumerate() {
        let color = MARKS[k % MARKS.len()];
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(at, 0.0), (at, top)], color.stroke_width(2))))
            .map_err(err)?
            .label(format!("{name} {at:.3} ms"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

/// Horizontal bars, one per `(label, value)`, with the value written beside each.
pub fn bars_svg(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.35;
    let n = bars.len().max(1) as f64;
    svg(70 + 28 * bars.len().max(1) as u32, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(10)
            .build_cartesian_2d(0f64..top, 0f64..n)
            .map_err(err)?;
        chart.configure_mesh().disable_y_mesh().y_labels(0).x_desc(unit).draw().map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let y = n - i as f64;
                Rectangle::new([(0.0, y - 0.8), (*v, y - 0.2)], ORANGE.filled())
            }))
            .map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (label, v))| {
                let y = n - i as f64 - 0.35;
                Text::new(format!("{label}: {v:.3}"), (*v + top * 0.01, y), ("sans-serif", 13))
            }))
            .map_err(err)?;
        Ok(())
    })
}

/// Each core's engines over one run: a lane per core and engine, busy intervals
/// coloured by engine (merged where closer than a pixel).
pub fn timeline_svg(run: &RunProfile, clock_hz: u64, cores: usize) -> String {
    let lanes = cores * ENGINES;
    let us = |c: u64| c.saturating_sub(run.start_cycle) as f64 * 1e6 / clock_hz as f64;
    let end = us(run.end_cycle).max(1e-6);
    let pixel = end / f64::from(WIDTH);
    let mut busy: Vec<Vec<(f64, f64)>> = vec![Vec::new(); lanes];
    let mut events: Vec<_> = run.trace.iter().collect();
    events.sort_by_key(|e| e.start_cycle);
    for e in events {
        let lane = e.core as usize * ENGINES + e.engine as usize;
        let Some(spans) = busy.get_mut(lane) else { continue };
        let (from, to) = (us(e.start_cycle), us(e.end_cycle));
        match spans.last_mut() {
            Some(last) if from <= last.1 + pixel => last.1 = last.1.max(to),
            _ => spans.push((from, to)),
        }
    }
    let engine_name = |i: usize| ["DMA", "HMX", "HVX", "sync"][i % ENGINES];
    let color = |engine: usize| [BLUE, ORANGE, GREEN, GREY][engine % ENGINES];
    svg(80 + 22 * lanes as u32, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Per-core utilisation by engine (one sampled inference)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..end, 0f64..lanes as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(lanes.max(1) * 2 + 1)
            .y_label_formatter(&|y| {
                let lane = lanes as f64 - y;
                let i = lane.floor() as usize;
                if (lane - i as f64 - 0.5).abs() < 0.26 && i < lanes {
                    format!("c{} {}", i / ENGINES, engine_name(i))
                } else {
                    String::new()
                }
            })
            .x_desc("us")
            .draw()
            .map_err(err)?;
        for (lane, spans) in busy.iter().enumerate() {
            let y = lanes as f64 - lane as f64;
            let style = color(lane % ENGINES).filled();
            chart
                .draw_series(
                    spans.iter().map(|&(a, b)| Rectangle::new([(a, y - 0.85), (b.max(a + pixel), y - 0.15)], style)),
                )
                .map_err(err)?;
        }
        Ok(())
    })
}

/// `(min, max)` of `values`, widened when they are all equal.
fn bounds(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.02).max(hi.abs() * 1e-3).max(1e-6);
    (lo - pad, hi + pad)
}

/// The page around the sections.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 960px; }}\n\
         h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; margin-top: 28px; }}\n\
         table {{ border-collapse: collapse; margin: 8px 0; }}\n\
         td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}\n\
         td:first-child, th:first-child {{ text-align: left; }}\n\
         code {{ background: #f4f4f4; padding: 1px 4px; }} .best {{ font-weight: bold; background: #eef7ee; }}\n\
         .error {{ color: #b00; }}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>], best: Option<usize>) {
    out.push_str("<table>\n<tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for (i, row) in rows.iter().enumerate() {
        let class = if Some(i) == best { " class=\"best\"" } else { "" };
        let _ = write!(out, "<tr{class}>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

/// What `aic-runner --report` shows.
pub struct RunnerReport<'a> {
    pub command: String,
    /// The `---- Stats ----` figures and the device metrics, as label and value.
    pub summary: Vec<(String, String)>,
    /// `totalRoundtripTime` of every inference, ms, sorted.
    pub round_trips_ms: &'a [f64],
    /// Mean time of each host and device stage, ms.
    pub stages: Vec<(String, f64)>,
    /// One traced inference of the program, for the timeline and the layers.
    pub traced: Option<(&'a ProgramImage, &'a RunProfile)>,
    pub clock_hz: u64,
}

/// The runner's page.
pub fn runner_html(r: &RunnerReport<'_>) -> String {
    let mut body = String::new();
    let _ = writeln!(body, "<h1>aic-runner report</h1>\n<p><code>{}</code></p>", escape(&r.command));
    body.push_str("<h2>Stats</h2>\n");
    let rows: Vec<Vec<String>> = r.summary.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect();
    table(&mut body, &["figure", "value"], &rows, None);
    if !r.round_trips_ms.is_empty() {
        let marks: Vec<(&str, f64)> = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
            .iter()
            .map(|&(n, q)| (n, stats::percentile(r.round_trips_ms, q)))
            .collect();
        body.push_str("<h2>Latency</h2>\n");
        body.push_str(&histogram_svg(r.round_trips_ms, &marks));
        body.push_str(&cdf_svg(r.round_trips_ms, &marks));
    }
    if !r.stages.is_empty() {
        body.push_str("<h2>Where an inference's time goes</h2>\n");
        body.push_str(&bars_svg("Mean time per stage", "ms", &r.stages));
    }
    if let Some((image, run)) = r.traced {
        body.push_str("<h2>Device timeline</h2>\n");
        body.push_str(&timeline_svg(run, r.clock_hz, image.cores.len()));
        let mut layers = layer_activity(image, run);
        if !layers.is_empty() {
            layers.sort_by_key(|a| std::cmp::Reverse(a.span_cycles()));
            layers.truncate(15);
            let us = |c: u64| c as f64 * 1e6 / r.clock_hz as f64;
            let bars: Vec<(String, f64)> = layers
                .iter()
                .map(|a| {
                    (format!("{} ({})", image.layers[a.layer].name, image.layers[a.layer].op_type), us(a.span_cycles()))
                })
                .collect();
            body.push_str("<h2>Top layers by device time</h2>\n");
            body.push_str(&bars_svg("Layer span (first start to last end), one inference", "us", &bars));
            let rows: Vec<Vec<String>> = layers
                .iter()
                .map(|a| {
                    let l = &image.layers[a.layer];
                    let mut row = vec![l.name.clone(), l.op_type.clone(), format!("{:.2}", us(a.span_cycles()))];
                    row.extend(
                        [Engine::Hmx, Engine::Hvx, Engine::Dma, Engine::Sync].map(|e| a.busy[e as usize].to_string()),
                    );
                    row
                })
                .collect();
            table(
                &mut body,
                &["layer", "op", "us", "HMX cycles", "HVX cycles", "DMA cycles", "sync cycles"],
                &rows,
                None,
            );
        }
    }
    page("aic-runner report", &body)
}

/// One evaluated configuration, for the configurator's page.
pub struct Explored {
    pub label: String,
    pub cores: u32,
    pub bs: u32,
    pub instances: u32,
    /// The objective (inf/s, or latency in ms), `None` if the evaluation failed.
    pub value: Option<f64>,
    pub detail: String,
}

/// The configurator's page: every configuration explored, plotted against cores per
/// instance and coloured by batch size, the best marked.
pub fn configurator_html(command: &str, unit: &str, explored: &[Explored], best: usize) -> String {
    let ok: Vec<&Explored> = explored.iter().filter(|e| e.value.is_some()).collect();
    let top = ok.iter().filter_map(|e| e.value).fold(0.0, f64::max).max(1e-9) * 1.15;
    let max_cores = explored.iter().map(|e| e.cores).max().unwrap_or(1).max(1);
    let mut batches: Vec<u32> = ok.iter().map(|e| e.bs).collect();
    batches.sort_unstable();
    batches.dedup();
    let palette = [BLUE, ORANGE, GREEN, PURPLE, RGBColor(192, 57, 43), GREY];
    // Points of one core count spread a little by instances, to see them all.
    let x_of = |e: &Explored| f64::from(e.cores) + (f64::from(e.instances % 7) - 3.0) * 0.04;
    let plot = svg(380, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Configurations explored: {unit} against cores per instance"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(65)
            .build_cartesian_2d(0.5f64..f64::from(max_cores) + 0.5, 0f64..top)
            .map_err(err)?;
        chart.configure_mesh().x_desc("cores per instance").y_desc(unit).draw().map_err(err)?;
        for (k, &bs) in batches.iter().enumerate() {
            let color = palette[k % palette.len()];
            let points = ok.iter().filter(|e| e.bs == bs).map(|e| (x_of(e), e.value.unwrap_or(0.0)));
            chart
                .draw_series(points.map(move |p| Circle::new(p, 4, color.filled())))
                .map_err(err)?
                .label(format!("batch {bs}"))
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
        if let Some(b) = explored.get(best).filter(|b| b.value.is_some()) {
            let at = (x_of(b), b.value.unwrap_or(0.0));
            chart
                .draw_series(std::iter::once(Circle::new(at, 9, BLACK.stroke_width(2))))
                .map_err(err)?
                .label(format!("best: {}", b.label))
                .legend(|(x, y)| Circle::new((x + 10, y), 6, BLACK.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)
    });
    let mut body = String::new();
    let _ = writeln!(body, "<h1>aic-configurator report</h1>\n<p><code>{}</code></p>", escape(command));
    if let Some(b) = explored.get(best) {
        let _ = writeln!(body, "<p>Best: <b>{}</b> — {}</p>", escape(&b.label), escape(&b.detail));
    }
    body.push_str(&plot);
    body.push_str("<h2>Every configuration evaluated</h2>\n");
    let rows: Vec<Vec<String>> = explored
        .iter()
        .map(|e| {
            vec![e.label.clone(), e.value.map_or_else(|| "failed".into(), |v| format!("{v:.3}")), e.detail.clone()]
        })
        .collect();
    table(&mut body, &["configuration", unit, "detail"], &rows, Some(best));
    page("aic-configurator report", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_models_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn plots_are_svg_with_their_parts() {
        let values: Vec<f64> = (0..500).map(|i| 1.0 + (i % 37) as f64 * 0.01).collect();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let h = histogram_svg(&values, &[("p50", 1.18), ("p99", 1.35)]);
        assert!(h.starts_with("<svg") && h.contains("<rect") && h.contains("p99 1.350 ms"), "{h}");
        let c = cdf_svg(&sorted, &[("p90", 1.3)]);
        assert!(c.contains("<polyline") || c.contains("<path"), "{c}");
        let b = bars_svg("stages", "ms", &[("submit".into(), 0.1), ("device".into(), 1.0)]);
        assert!(b.contains("device: 1.000") && b.matches("<rect").count() >= 2, "{b}");
        // One value only: the axes still have a range.
        assert!(histogram_svg(&[2.0], &[]).contains("<rect"));
    }
}
