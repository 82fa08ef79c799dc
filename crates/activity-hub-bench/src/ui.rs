//! Progress on the terminal: spinners and counting bars (indicatif), silent with
//! `--quiet` or `--json`.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Phase lines and progress bars on stderr (bars only on a terminal).
pub(crate) struct Ui {
    /// No phase lines and no bars.
    pub(crate) quiet: bool,
    /// Whose run this is (hub or baseline), prefixed to phase lines.
    pub(crate) who: &'static str,
}

/// A progress bar; [`Bar::done`] clears it.
pub(crate) struct Bar {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Bar {
    pub(crate) fn done(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

impl Ui {
    /// A phase line on stderr.
    pub(crate) fn say(&self, msg: &str) {
        if !self.quiet {
            eprintln!("[{}] {msg}", self.who);
        }
    }

    /// A bar following `counter` up to `total`.
    pub(crate) fn count(&self, what: &str, total: u64, counter: Arc<AtomicU64>) -> Bar {
        self.say(what);
        let bar = self.bar(
            total,
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec}",
        );
        bar.set_prefix(self.who);
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                b.set_position(counter.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Bar { bar, ticker }
    }

    /// A bar over `length` of time, with `counter` in its message.
    pub(crate) fn timed(&self, what: &str, length: Duration, counter: Arc<AtomicU64>) -> Bar {
        let start = Instant::now();
        self.timed_with(what, length, move || {
            let n = counter.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            format!("{n} done, {:.0}/s", n as f64 / secs)
        })
    }

    /// A bar over `length` of time with the message `msg()` says.
    pub(crate) fn timed_with(
        &self,
        what: &str,
        length: Duration,
        msg: impl Fn() -> String + Send + 'static,
    ) -> Bar {
        self.say(what);
        let bar = self.bar(
            length.as_millis() as u64,
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {msg}",
        );
        bar.set_prefix(self.who);
        let b = bar.clone();
        let start = Instant::now();
        let ticker = tokio::spawn(async move {
            loop {
                b.set_position(start.elapsed().as_millis() as u64);
                b.set_message(msg());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Bar { bar, ticker }
    }

    pub(crate) fn bar(&self, len: u64, template: &str) -> ProgressBar {
        let target = if self.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr_with_hz(10)
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar
    }
}
