//! The load tool's own command line, run as the real binary. (Every scenario is run
//! against real hubs by the server's integration tests, `tests/it/bench.rs`, through
//! `activity-hub bench`.)

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_activity-hub-bench"))
        .args(args)
        .env_remove("HUB_SERVER")
        .env_remove("HUB_TOKEN")
        .output()
        .expect("the binary runs")
}

#[test]
fn help_names_every_scenario() {
    let o = bench(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for scenario in [
        "get-user",
        "publish",
        "fanout",
        "broadcast",
        "latency",
        "idle",
        "reconnect-storm",
        "soak",
        "logins",
    ] {
        assert!(
            help.contains(scenario),
            "--help does not name {scenario}:\n{help}"
        );
    }
}

#[test]
fn a_hub_binary_that_does_not_exist_is_named_in_the_error() {
    let o = bench(&[
        "get-user",
        "--duration",
        "1s",
        "--hub-bin",
        "/nonexistent/activity-hub",
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot start the hub"), "{err}");
}

#[test]
fn an_unknown_scenario_is_a_usage_error() {
    let o = bench(&["warp-speed"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warp-speed"));
}

#[test]
fn flags_that_cannot_apply_are_usage_errors_naming_the_flag() {
    for (args, says) in [
        (
            &["publish", "--prefill", "10", "--server", "http://127.0.0.1:1"][..],
            "--prefill",
        ),
        (&["fanout", "--ceiling"][..], "--ceiling"),
        (&["idle", "--peer", "nats"][..], "--peer"),
        (&["get-user", "--prefill", "5"][..], "--prefill"),
    ] {
        let o = bench(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
