//! Ctrl-C. The first asks the run to wind down: publishers stop sending, timed phases
//! end, readers stop waiting once their streams go quiet, and the run reports what it
//! measured over the part that ran (marked interrupted) and removes the users it made
//! on a `--server` hub. A second Ctrl-C quits at once (exit 130).

use std::sync::OnceLock;

use tokio::sync::watch;

fn flag() -> &'static watch::Sender<bool> {
    static STOP: OnceLock<watch::Sender<bool>> = OnceLock::new();
    STOP.get_or_init(|| watch::channel(false).0)
}

/// Whether Ctrl-C asked the run to stop.
pub(crate) fn requested() -> bool {
    *flag().borrow()
}

/// Resolves once Ctrl-C asked the run to stop.
pub(crate) async fn wait() {
    let mut rx = flag().subscribe();
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Asks the run to stop (what the first Ctrl-C does).
pub(crate) fn request() {
    flag().send_replace(true);
}

/// Listens for Ctrl-C for the rest of the process.
pub(crate) fn install(quiet: bool) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        if !quiet {
            eprintln!(
                "\ninterrupted: finishing with a partial report and removing the bench's users \
                 (Ctrl-C again to quit at once)"
            );
        }
        request();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}
