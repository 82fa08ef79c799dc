//! The load tool's scenarios as a cargo bench, at the sizes `benches/RESULTS.md` reports
//! (the shapes users live with: one recipient per event over 10,000 recipients, per-user
//! fan-out; `broadcast` is the one-event-to-everyone shape; `benches/issue13.sh` adds the
//! store ceiling, JetStream and a prefilled store):
//! each runs `activity-hub bench <scenario> ... --baseline` on the release binary (which
//! hands over to the `activity-hub-bench` beside it), so the hub and the bare tonic
//! baseline are measured back to back in one run.
//!
//! ```text
//! cargo build --release -p activity-hub-bench   # once: the load tool itself
//! cargo bench --bench hub                  # every scenario
//! cargo bench --bench hub -- fanout        # the scenarios whose name starts with "fanout"
//! cargo bench --bench hub -- latency --rate 20000   # flags after the name go to the tool
//! ```

use std::process::{Command, ExitCode};

/// (name, the tool's arguments).
const RUNS: &[(&str, &[&str])] = &[
    ("get-user", &["get-user", "--duration", "10s"]),
    ("publish", &["publish", "--events", "200000"]),
    ("fanout", &["fanout", "--subscribers", "1000", "--events", "200"]),
    (
        "fanout-none",
        &[
            "fanout",
            "--subscribers",
            "1000",
            "--events",
            "200",
            "--ack",
            "none",
        ],
    ),
    (
        "fanout-10k",
        &["fanout", "--subscribers", "10000", "--events", "50"],
    ),
    (
        "broadcast",
        &["broadcast", "--subscribers", "1000", "--events", "200"],
    ),
    (
        "latency",
        &[
            "latency",
            "--subscribers",
            "1000",
            "--rate",
            "10000",
            "--duration",
            "10s",
        ],
    ),
    ("idle", &["idle", "--subscribers", "10000", "--duration", "2s"]),
    (
        "reconnect-storm",
        &["reconnect-storm", "--subscribers", "1000", "--events", "20"],
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let (only, extra) = match args.first() {
        Some(a) if !a.starts_with('-') => (Some(a.as_str()), &args[1..]),
        _ => (None, &args[..]),
    };
    let chosen: Vec<_> = RUNS
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| name.starts_with(o)))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = RUNS.iter().map(|r| r.0).collect();
        eprintln!("no scenario starts with {only:?}; one of {names:?}");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for (name, run) in chosen {
        eprintln!("== {name}: activity-hub bench {} --baseline", run.join(" "));
        let status = Command::new(env!("CARGO_BIN_EXE_activity-hub"))
            .arg("bench")
            .args(*run)
            .arg("--baseline")
            .args(extra)
            .status();
        failed |= !status.is_ok_and(|s| s.success());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
