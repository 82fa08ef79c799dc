//! The `activity-hub` binary: `serve` parses the configuration, installs logging and
//! metrics, binds, and hands over to [`activity_hub::server::run`]; every other
//! subcommand is a client command run by `activity_hub_client::cli`, and `bench` runs
//! the load tool installed beside this binary.

use std::process::ExitCode;

use activity_hub::config::{Cli, Command, ServeConfig};
use activity_hub_client::cli as c;
use clap::{CommandFactory as _, Parser};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(config) => {
            // A bad value is a bad command line (exit 2), like clap's own refusals.
            if let Err(e) = config.validate() {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            match runtime.block_on(serve(*config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Client(cmd) => runtime.block_on(c::run(*cmd)),
        Command::Bench { args } => bench(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "activity-hub", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// Runs the server on a validated `config`.
async fn serve(mut config: ServeConfig) -> Result<(), Box<dyn std::error::Error>> {
    let telemetry = activity_hub::telemetry::init(&config)?;
    let node = config.node().to_string();
    config.node_id = Some(node.clone());
    if config.metrics_listen != "off" {
        let addr: std::net::SocketAddr = config.metrics_listen.parse()?;
        // The bound address (port 0 picks one) is what the startup line names.
        config.metrics_listen = activity_hub::metrics::serve(addr, &node).await?.to_string();
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", config.listen))?;
    let result = activity_hub::server::run(config, listener, shutdown_signal()).await;
    // Flushing exports over the runtime's own connections: block elsewhere, not on a worker.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result?;
    Ok(())
}

/// `activity-hub bench ARGS`: runs `activity-hub-bench ARGS` from this binary's folder
/// (where `cargo build` and `cargo install` put both), so the load tool's plotting and
/// histogram dependencies stay out of the server. Its exit status is passed on.
fn bench(args: Vec<std::ffi::OsString>) -> ExitCode {
    let tool = std::env::current_exe()
        .map(|me| me.with_file_name(format!("activity-hub-bench{}", std::env::consts::EXE_SUFFIX)));
    let tool = match tool {
        Ok(t) if t.is_file() => t,
        Ok(t) => {
            eprintln!(
                "error: the load tool is not installed beside this binary ({}): build it with \
                 `cargo build --release -p activity-hub-bench`, or run it directly",
                t.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: cannot find this binary's folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::process::Command::new(&tool).args(args).status() {
        Ok(s) => ExitCode::from(s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {}: {e}", tool.display());
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
