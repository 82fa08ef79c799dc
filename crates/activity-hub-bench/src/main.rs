//! `activity-hub-bench` (also run as `activity-hub bench`): the load tool, in the spirit
//! of `nats bench` and `ghz`.
//!
//! Each scenario drives a hub with one traffic shape and reports throughput, latency
//! (an HdrHistogram of microseconds) and correctness counters (errors, events lost).
//! By default the hub is started from the `activity-hub` binary beside this one on a
//! temporary SQLite file, so a run needs nothing else; `--server` measures a hub that is
//! already running.
//! `--baseline` runs the same shape against a bare tonic server (the same services with
//! nothing behind them: no store, no auth, no acks, no windows) in the same run and
//! prints hub/baseline ratios, which travel between machines better than absolutes.
//!
//! - [`args`]: the command line.
//! - [`target`]: starting, reaching and inspecting the server under test.
//! - [`bare`]: the baseline server (`activity-hub-bench serve-baseline`).
//! - [`scenarios`]: the traffic shapes.
//! - [`store`]: `--prefill` and the `--ceiling` store writer (SQL on the hub's schema).
//! - [`nats`]: `--peer nats`, the same shapes against NATS JetStream.
//! - [`report`]: the summary table, JSON and the latency-percentile plot.
//! - [`ui`]: progress bars.

use std::process::ExitCode;

/// `println!` for command output that ignores a closed standard output (`... | head`)
/// instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use clap::Parser;

mod args;
mod bare;
mod nats;
mod report;
mod scenarios;
mod stop;
mod store;
mod target;
mod ui;

use args::{Acks, BenchArgs, Scenario};

/// activity-hub-bench: measure an activity-hub server under load - throughput, latency,
/// memory - against a hub it starts (the `activity-hub` binary beside this one) or
/// --server.
#[derive(Debug, Parser)]
#[command(name = "activity-hub-bench", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(cli.args)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one bench; the exit status says whether the run was clean.
async fn run(mut args: BenchArgs) -> ExitCode {
    // `HOST:PORT` as the client commands take it.
    if let Some(s) = args.server.as_mut().filter(|s| !s.contains("://")) {
        *s = format!("http://{s}");
    }
    if let Err(e) = args.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if args.scenario == Scenario::ServeBaseline {
        return match bare::serve(args.listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: --listen {}: {e}", args.listen);
                ExitCode::FAILURE
            }
        };
    }
    // Ctrl-C winds the run down to a partial report (see `stop`).
    stop::install(args.quiet);
    let outcome = scenarios::run(&args).await;
    if stop::requested() {
        if let Ok(report) = &outcome {
            if let Err(e) = report.emit(&args) {
                eprintln!("error: {e}");
            }
        }
        eprintln!("interrupted: the figures above cover only the part of the run before Ctrl-C");
        return ExitCode::from(130);
    }
    match outcome {
        Ok(report) => {
            if let Err(e) = report.emit(&args) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let over = report.over_budget();
            for o in &over {
                eprintln!("error: {o}");
            }
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                if !report.correct() {
                    eprintln!("error: the run had failed calls or lost events (see the report)");
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
