//! The plots: latency by percentile (hub and baseline), and for the soak server RSS over
//! time.

use std::path::Path;

use super::{mib, number, percentile, Report};
use crate::Scenario;

impl Report {
    /// Latency by percentile, on the usual log scale of 1/(1 - quantile) (HdrHistogram's
    /// percentile distribution plot); for the soak, server RSS over time.
    pub(super) fn plot(&self, path: &Path) -> Result<(), String> {
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
