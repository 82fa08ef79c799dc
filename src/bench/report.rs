//! What a bench run reports: a table (Markdown, readable in a terminal and pasteable
//! into `benches/RESULTS.md`), the same as JSON, and a latency-percentile plot (SVG).

use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::{target::Kind, BenchArgs, Scenario};

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Better {
    More,
    Less,
    Info,
}

/// One measured number.
pub(crate) struct Figure {
    pub(crate) key: &'static str,
    pub(crate) label: &'static str,
    pub(crate) value: f64,
    pub(crate) better: Better,
}

impl Figure {
    pub(crate) fn more(key: &'static str, label: &'static str, value: f64) -> Figure {
        Figure {
            key,
            label,
            value,
            better: Better::More,
        }
    }
    pub(crate) fn less(key: &'static str, label: &'static str, value: f64) -> Figure {
        Figure {
            key,
            label,
            value,
            better: Better::Less,
        }
    }
    pub(crate) fn info(key: &'static str, label: &'static str, value: f64) -> Figure {
        Figure {
            key,
            label,
            value,
            better: Better::Info,
        }
    }
}

/// The outcome against one server.
#[derive(Default)]
pub(crate) struct Run {
    pub(crate) figures: Vec<Figure>,
    /// Microseconds.
    pub(crate) latency: Option<Histogram<u64>>,
    pub(crate) latency_label: &'static str,
    /// Calls or streams that failed.
    pub(crate) failed: u64,
    /// Events that never arrived, or were skipped.
    pub(crate) lost: u64,
    /// Events that arrived again after a resume (at least once: allowed, counted).
    pub(crate) redelivered: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) notes: Vec<String>,
    /// Budgets the run exceeded (soak: --max-growth); the run is not clean.
    pub(crate) over_budget: Vec<String>,
    /// Server RSS over the run: (seconds since the first round, bytes).
    pub(crate) rss: Vec<(f64, u64)>,
    /// When measuring started (the end of warm-up), seconds since the first round.
    pub(crate) measured_from: Option<f64>,
}

/// Quantiles reported for every latency histogram.
const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99_9", 0.999),
    ("max", 1.0),
];

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A whole run: the scenario against the hub and, with `--baseline`, the baseline.
pub(crate) struct Report {
    pub(crate) scenario: Scenario,
    pub(crate) shape: String,
    /// The sizes and flags the run used.
    pub(crate) settings: Value,
    pub(crate) runs: Vec<(Kind, Run)>,
}

impl Report {
    pub(crate) fn new(scenario: Scenario, shape: String, settings: Value) -> Report {
        Report {
            scenario,
            shape,
            settings,
            runs: Vec::new(),
        }
    }

    fn name(&self) -> String {
        use clap::ValueEnum;
        self.scenario
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// Nothing failed, nothing was lost and no budget was exceeded.
    pub(crate) fn clean(&self) -> bool {
        self.correct() && self.over_budget().is_empty()
    }

    /// Nothing failed and nothing was lost.
    pub(crate) fn correct(&self) -> bool {
        self.runs.iter().all(|(_, r)| r.failed == 0 && r.lost == 0)
    }

    /// The budgets exceeded, each naming its server.
    pub(crate) fn over_budget(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|(k, r)| r.over_budget.iter().map(move |o| format!("{}: {o}", k.name())))
            .collect()
    }

    /// Prints the table (or JSON) and writes the files asked for.
    pub(crate) fn emit(&self, args: &BenchArgs) -> Result<(), String> {
        let json = self.json();
        if args.json {
            out!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        } else {
            out!("{}", self.table().trim_end());
        }
        if let Some(path) = &args.out {
            let text = serde_json::to_string_pretty(&json).unwrap_or_default();
            std::fs::write(path, text + "\n").map_err(|e| format!("--out {}: {e}", path.display()))?;
        }
        if let Some(path) = &args.plot {
            self.plot(path)
                .map_err(|e| format!("--plot {}: {e}", path.display()))?;
            if !args.quiet {
                let what = match self.scenario {
                    Scenario::Soak => "server RSS plot",
                    _ => "latency plot",
                };
                eprintln!("{what} written to {}", path.display());
            }
        }
        Ok(())
    }

    /// Rows: (label, value per run, whether hub/baseline means something).
    fn rows(&self) -> Vec<(String, Vec<f64>, bool)> {
        let mut rows: Vec<(String, Vec<f64>, bool)> = Vec::new();
        let Some((_, first)) = self.runs.first() else {
            return rows;
        };
        for (i, f) in first.figures.iter().enumerate() {
            let values = self
                .runs
                .iter()
                .map(|(_, r)| r.figures.get(i).map(|f| f.value).unwrap_or(f64::NAN))
                .collect();
            rows.push((f.label.to_string(), values, f.better != Better::Info));
        }
        if first.latency.as_ref().is_some_and(|h| !h.is_empty()) {
            for (name, q) in QUANTILES {
                let values = self
                    .runs
                    .iter()
                    .map(|(_, r)| r.latency.as_ref().map(|h| quantile_ms(h, q)).unwrap_or(f64::NAN))
                    .collect();
                let label = format!("{} {}, ms", first.latency_label, name.replace('_', "."));
                rows.push((label, values, true));
            }
        }
        let delivers = matches!(
            self.scenario,
            Scenario::Fanout | Scenario::Latency | Scenario::ReconnectStorm | Scenario::Soak
        );
        let resumes = matches!(self.scenario, Scenario::ReconnectStorm | Scenario::Soak);
        for (label, get, shown) in [
            (
                "failed calls or streams",
                (|r: &Run| r.failed) as fn(&Run) -> u64,
                true,
            ),
            ("events lost", |r: &Run| r.lost, delivers),
            (
                "events redelivered after resume",
                |r: &Run| r.redelivered,
                resumes,
            ),
        ] {
            if !shown {
                continue;
            }
            let values = self.runs.iter().map(|(_, r)| get(r) as f64).collect();
            rows.push((label.into(), values, false));
        }
        rows
    }

    fn table(&self) -> String {
        let mut out = format!("\nactivity-hub bench {}: {}\n\n", self.name(), self.shape);
        let both = self.runs.len() == 2;
        out.push_str("| |");
        for (k, _) in &self.runs {
            out.push_str(&format!(" {} |", k.name()));
        }
        out.push_str(if both {
            " hub/baseline |\n|---|---:|---:|---:|\n"
        } else {
            "\n|---|---:|\n"
        });
        for (label, values, comparable) in self.rows() {
            out.push_str(&format!("| {label} |"));
            for v in &values {
                out.push_str(&format!(" {} |", number(*v)));
            }
            if both {
                let ratio = values[0] / values[1];
                if comparable && ratio.is_finite() {
                    out.push_str(&format!(" {ratio:.2} |"));
                } else {
                    out.push_str(" |");
                }
            }
            out.push('\n');
        }
        for (k, r) in &self.runs {
            if let Some(e) = &r.first_error {
                out.push_str(&format!("\n{}: first failure: {e}", k.name()));
            }
            for n in &r.notes {
                out.push_str(&format!("\n{}: {n}", k.name()));
            }
            for o in &r.over_budget {
                out.push_str(&format!("\n{}: OVER BUDGET: {o}", k.name()));
            }
        }
        out.push('\n');
        out
    }

    fn json(&self) -> Value {
        let mut runs = Map::new();
        for (k, r) in &self.runs {
            let figures: Map<String, Value> =
                r.figures.iter().map(|f| (f.key.into(), json!(f.value))).collect();
            let latency = r.latency.as_ref().map(|h| {
                let mut m = Map::new();
                m.insert("what".into(), json!(r.latency_label));
                m.insert("count".into(), json!(h.len()));
                m.insert("mean".into(), json!(h.mean() / 1000.0));
                m.insert("min".into(), json!(h.min() as f64 / 1000.0));
                for (name, q) in QUANTILES {
                    m.insert(name.into(), json!(quantile_ms(h, q)));
                }
                Value::Object(m)
            });
            let mut run = json!({
                "figures": figures,
                "latency_ms": latency,
                "failed": r.failed,
                "lost": r.lost,
                "redelivered": r.redelivered,
                "first_error": r.first_error,
                "notes": r.notes,
                "over_budget": r.over_budget,
            });
            if !r.rss.is_empty() {
                let series: Vec<Value> = r
                    .rss
                    .iter()
                    .map(|&(t, b)| json!([(t * 10.0).round() / 10.0, (mib(b) * 100.0).round() / 100.0]))
                    .collect();
                run["rss_mib_over_time"] = Value::Array(series);
                run["measured_from_s"] = json!(r.measured_from);
            }
            runs.insert(k.name().into(), run);
        }
        let mut ratios = Map::new();
        if let [(_, hub), (_, base)] = &self.runs[..] {
            for (h, b) in hub.figures.iter().zip(&base.figures) {
                if h.better != Better::Info && b.value != 0.0 {
                    ratios.insert(h.key.into(), json!(h.value / b.value));
                }
            }
            if let (Some(h), Some(b)) = (&hub.latency, &base.latency) {
                for (name, q) in QUANTILES {
                    let bv = quantile_ms(b, q);
                    if bv > 0.0 {
                        ratios.insert(format!("latency_{name}"), json!(quantile_ms(h, q) / bv));
                    }
                }
            }
        }
        json!({
            "scenario": self.name(),
            "shape": self.shape,
            "settings": self.settings,
            "runs": runs,
            "ratios_hub_over_baseline": ratios,
            "clean": self.clean(),
        })
    }

    /// Latency by percentile, on the usual log scale of 1/(1 - quantile) (HdrHistogram's
    /// percentile distribution plot); for the soak, server RSS over time.
    fn plot(&self, path: &Path) -> Result<(), String> {
        if self.scenario == Scenario::Soak {
            return self.plot_rss(path);
        }
        use plotters::prelude::*;
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let mut series = Vec::new();
        for (k, r) in &self.runs {
            let Some(h) = r.latency.as_ref().filter(|h| !h.is_empty()) else {
                continue;
            };
            // The last point (quantile 1) sits where one sample in `len` would.
            let last = (h.len() as f64).max(100.0);
            let points: Vec<(f64, f64)> = h
                .iter_quantiles(5)
                .map(|v| {
                    let x = (1.0 / (1.0 - v.quantile_iterated_to()).max(1e-9)).min(last);
                    (x, (v.value_iterated_to() as f64 / 1000.0).max(0.001))
                })
                .collect();
            series.push((k.name(), points));
        }
        if series.is_empty() {
            return Err("this run recorded no latencies".into());
        }
        let all = series.iter().flat_map(|(_, p)| p.iter());
        let max_x = all.clone().map(|p| p.0).fold(100.0, f64::max);
        let max_y = all.map(|p| p.1).fold(0.01, f64::max) * 1.1;
        let label = self
            .runs
            .first()
            .map(|(_, r)| r.latency_label)
            .unwrap_or("latency");
        let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("activity-hub bench {}: {label}", self.name()),
                ("sans-serif", 24),
            )
            .margin(16)
            .margin_right(48)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((1f64..max_x).log_scale(), 0f64..max_y)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("milliseconds")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .x_label_formatter(&|x| percentile(*x))
            .y_label_formatter(&|y| number(*y))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, points)) in series.into_iter().enumerate() {
            let color = [RED, BLUE][i % 2];
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 17))
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}

impl Report {
    /// Server RSS (MiB) over minutes, the end of warm-up marked, and the --max-growth
    /// line above the start figure when the settings carry it.
    fn plot_rss(&self, path: &Path) -> Result<(), String> {
        use plotters::prelude::*;
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let Some((_, run)) = self.runs.iter().find(|(_, r)| !r.rss.is_empty()) else {
            return Err("this run has no RSS samples (the server is not a process on this machine)".into());
        };
        let points: Vec<(f64, f64)> = run.rss.iter().map(|&(t, b)| (t / 60.0, mib(b))).collect();
        let from = run.measured_from.map(|s| s / 60.0);
        let start = from.and_then(|f| points.iter().find(|p| p.0 >= f)).map(|p| p.1);
        let limit = start
            .zip(self.settings["max_growth_pct"].as_f64())
            .map(|(s, g)| s * (1.0 + g / 100.0));
        let max_x = points.iter().map(|p| p.0).fold(1e-3, f64::max);
        let max_y = points.iter().map(|p| p.1).chain(limit).fold(1.0, f64::max) * 1.1;
        let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("activity-hub bench {}: server RSS", self.name()),
                ("sans-serif", 24),
            )
            .margin(16)
            .margin_right(48)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_x, 0f64..max_y)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc("MiB")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .y_label_formatter(&|y| number(*y))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(points, RED.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("server RSS")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        if let Some(f) = from {
            chart
                .draw_series(LineSeries::new([(f, 0.0), (f, max_y)], BLACK.mix(0.5)))
                .map_err(|e| err(&e))?
                .label("end of warm-up")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
        }
        if let (Some(f), Some(l)) = (from, limit) {
            chart
                .draw_series(LineSeries::new([(f, l), (max_x, l)], BLUE.stroke_width(1)))
                .map_err(|e| err(&e))?
                .label("start + --max-growth")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(1)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 17))
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}

/// Bytes in MiB.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `x` = 1/(1 - q) as a percentile: 10 -> "90%", 1000 -> "99.9%".
fn percentile(x: f64) -> String {
    let p = (1.0 - 1.0 / x.max(1.0)) * 100.0;
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Readable numbers: whole above 100, three significant digits below.
fn number(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile(1.0), "0%");
        assert_eq!(percentile(10.0), "90%");
        assert_eq!(percentile(100.0), "99%");
        assert_eq!(percentile(1000.0), "99.9%");
        assert_eq!(percentile(2.0), "50%");
    }

    #[test]
    fn ratios_compare_like_figures_and_latencies() {
        let mut hub = Run::default();
        hub.figures.push(Figure::more("events_per_sec", "events/s", 50.0));
        hub.figures.push(Figure::info("events", "events", 500.0));
        let mut h = Histogram::new(3).unwrap();
        h.record(2000).unwrap();
        hub.latency = Some(h);
        let mut base = Run::default();
        base.figures
            .push(Figure::more("events_per_sec", "events/s", 200.0));
        base.figures.push(Figure::info("events", "events", 500.0));
        let mut h = Histogram::new(3).unwrap();
        h.record(1000).unwrap();
        base.latency = Some(h);
        let mut r = Report::new(Scenario::Publish, "shape".into(), Value::Null);
        r.runs.push((Kind::Hub, hub));
        r.runs.push((Kind::Baseline, base));
        let j = r.json();
        let ratios = &j["ratios_hub_over_baseline"];
        assert_eq!(ratios["events_per_sec"], json!(0.25));
        assert!(ratios.get("events").is_none(), "counts are not ratios");
        assert!((ratios["latency_p50"].as_f64().unwrap() - 2.0).abs() < 0.01);
        assert_eq!(j["clean"], json!(true));
        let table = r.table();
        assert!(table.contains("| events/s | 50 | 200 | 0.25 |"), "{table}");
        r.runs[0].1.lost = 1;
        assert!(!r.clean());
    }

    #[test]
    fn a_budget_exceeded_makes_the_run_unclean_and_says_so() {
        let mut run = Run::default();
        run.over_budget.push("server RSS grew 40.0%".into());
        let mut r = Report::new(Scenario::Soak, "shape".into(), Value::Null);
        r.runs.push((Kind::Hub, run));
        assert!(r.correct(), "nothing failed or was lost");
        assert!(!r.clean());
        assert_eq!(r.over_budget(), ["hub: server RSS grew 40.0%"]);
        assert!(r.table().contains("hub: OVER BUDGET: server RSS grew 40.0%"));
        assert_eq!(
            r.json()["runs"]["hub"]["over_budget"][0],
            json!("server RSS grew 40.0%")
        );
        assert_eq!(r.json()["clean"], json!(false));
    }
}
