//! What a bench run reports: a table (Markdown, readable in a terminal and pasteable
//! into `benches/RESULTS.md`), the same as JSON, and a latency-percentile plot (SVG).

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::{target::Kind, BenchArgs, Scenario};

mod plot;

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
            Scenario::Fanout
                | Scenario::Broadcast
                | Scenario::Latency
                | Scenario::ReconnectStorm
                | Scenario::Soak
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
        if crate::stop::requested() {
            out.push_str("INTERRUPTED (Ctrl-C): partial figures, over the part of the run before it\n\n");
        }
        // Beside the hub's column and each other's: hub/other for each other run.
        let others: Vec<&str> = self.runs.iter().skip(1).map(|(k, _)| k.name()).collect();
        out.push_str("| |");
        for (k, _) in &self.runs {
            out.push_str(&format!(" {} |", k.name()));
        }
        for o in &others {
            out.push_str(&format!(" hub/{o} |"));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.runs.len() + others.len()));
        out.push('\n');
        for (label, values, comparable) in self.rows() {
            out.push_str(&format!("| {label} |"));
            for v in &values {
                out.push_str(&format!(" {} |", number(*v)));
            }
            for other in &values[1..] {
                let ratio = values[0] / other;
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
        let mut all_ratios = Map::new();
        if let Some(((_, hub), rest)) = self.runs.split_first() {
            for (kind, other) in rest {
                let mut ratios = Map::new();
                for (h, b) in hub.figures.iter().zip(&other.figures) {
                    if h.better != Better::Info && b.value != 0.0 {
                        ratios.insert(h.key.into(), json!(h.value / b.value));
                    }
                }
                if let (Some(h), Some(b)) = (&hub.latency, &other.latency) {
                    for (name, q) in QUANTILES {
                        let bv = quantile_ms(b, q);
                        if bv > 0.0 {
                            ratios.insert(format!("latency_{name}"), json!(quantile_ms(h, q) / bv));
                        }
                    }
                }
                all_ratios.insert(kind.name().into(), Value::Object(ratios));
            }
        }
        let ratios = all_ratios.get("baseline").cloned().unwrap_or_else(|| json!({}));
        json!({
            "scenario": self.name(),
            "shape": self.shape,
            "settings": self.settings,
            "runs": runs,
            "ratios_hub_over_baseline": ratios,
            "ratios_hub_over": all_ratios,
            "clean": self.clean(),
            "interrupted": crate::stop::requested(),
        })
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
