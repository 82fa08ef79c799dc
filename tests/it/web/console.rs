//! The web console in a real browser: Debian's Chromium, headless, driven by Playwright
//! through `tests/browser/console.mjs` (one JSON command per line on its stdin, one JSON
//! answer per line on its stdout). Logging in through the form; the feed following live
//! across two server restarts on the same port, nothing lost, nothing repeated, the page's
//! acks reaching the hub (the first restart resumed by EventSource itself with
//! Last-Event-ID, the second, with the token-signing secret rotated, by the page after a
//! refused reconnection and a token refresh); publishing through the form.
//!
//! Skipped, saying so, where Chromium, node or `tests/browser/node_modules` (`npm ci` in
//! tests/browser) is missing; CI installs all three.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::{
    activity::dsl::{numbered, Server},
    helpers::{skip_without_tool, Backend, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD},
};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A token-signing secret other than the one the store's servers generated: tokens signed
/// before are refused after a restart with it.
const ROTATED_SECRET: &str = "a-rotated-token-signing-secret-of-32-bytes-or-more";

/// How long one command of the driver may take (its own waits are shorter).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// The tool this machine lacks for the test, if any.
fn missing_tool() -> Option<&'static str> {
    if !std::path::Path::new(CHROMIUM).exists() {
        return Some("chromium");
    }
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node");
    }
    if !browser_dir()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Some("playwright-core");
    }
    None
}

/// The driver and, through it, the browser. Killed when dropped (a failed test): the
/// browser exits when the driver's pipe to it closes.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    started: Instant,
}

impl Browser {
    /// Starts the driver on the console at `base` and waits for the browser to be up.
    async fn launch(base: &str) -> Browser {
        let dir = browser_dir();
        let mut child = Command::new("node")
            .arg(dir.join("console.mjs"))
            .arg(base)
            .arg(CHROMIUM)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        // The driver's log (the page's console, failed requests), shown with --nocapture.
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = log.next_line().await {
                eprintln!("[browser] {line}");
            }
        });
        let mut b = Browser {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
            child,
            next_id: 1,
            started: Instant::now(),
        };
        // The browser's start is the slowest step, most of all on a busy machine.
        let ready = b.answer_within(0, Duration::from_secs(60)).await;
        eprintln!("[browser +{:.2?}] up: {ready}", b.started.elapsed());
        b
    }

    /// Runs `cmd` with `args` in the page and returns its result; the test fails with the
    /// driver's error and the page's state if it fails.
    async fn call(&mut self, cmd: &str, args: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = args;
        msg["id"] = json!(id);
        msg["cmd"] = json!(cmd);
        self.stdin
            .write_all(format!("{msg}\n").as_bytes())
            .await
            .expect("the driver reads commands");
        self.stdin.flush().await.expect("flush");
        let answer = self.answer(id).await;
        eprintln!(
            "[browser +{:.2?}] {cmd}: {}",
            self.started.elapsed(),
            brief(&answer)
        );
        answer
    }

    async fn answer(&mut self, id: u64) -> Value {
        self.answer_within(id, COMMAND_TIMEOUT).await
    }

    async fn answer_within(&mut self, id: u64, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser driver did not answer command {id} within {within:?}"))
            .expect("read the driver's answer")
            .unwrap_or_else(|| {
                panic!("the browser driver exited before answering command {id} (its log is above)")
            });
        let a: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("the driver answered {line:?}: {e}"));
        assert_eq!(a["id"], id, "answers come in order: {a}");
        assert_eq!(
            a["ok"], true,
            "browser command {id} failed: {}\nthe page: {:#}",
            a["error"], a["state"]
        );
        a["result"].clone()
    }

    /// Closes the browser and waits (bounded) for the driver to exit.
    async fn close(mut self) {
        self.call("close", json!({})).await;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the driver exits within 10 s of close")
            .expect("driver status");
        assert!(status.success(), "the driver exited with {status}");
    }
}

/// An answer without the parts that are long and rarely interesting.
fn brief(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("user");
        o.remove("subscribed");
        o.remove("publishResult");
    }
    v.to_string()
}

/// The seqs the page's feed shows, in page order.
fn seqs(state: &Value) -> Vec<u64> {
    feed(state)
        .iter()
        .map(|e| e["seq"].as_u64().expect("a numeric seq"))
        .collect()
}

fn feed(state: &Value) -> &Vec<Value> {
    state["feed"].as_array().expect("the feed")
}

/// Nothing the page did went wrong behind the test's back.
#[track_caller]
fn assert_clean(state: &Value) {
    assert_eq!(state["uncaught"], json!([]), "uncaught errors in the page");
    assert_eq!(state["csp"], json!([]), "Content-Security-Policy violations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_follows_the_feed_across_restarts_losing_and_repeating_nothing() {
    const TEST: &str = "web::console::console_follows_the_feed_across_restarts_losing_and_repeating_nothing";
    if let Some(tool) = missing_tool() {
        skip_without_tool(TEST, tool);
        return;
    }
    let s = Server::start(Backend::Sqlite).await;
    let (publisher, alice, _) = s.cast().await;
    let addr = s.addr;
    let mut page = Browser::launch(&format!("http://{addr}")).await;

    let st = page.call("open", json!({})).await;
    assert_eq!(st["loginVisible"], true, "the login form is shown first: {st}");
    let st = page
        .call(
            "login",
            json!({"identifier": "alice@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(st["status"], "live", "logged in, the feed is live: {st}");
    assert_eq!(st["user"]["id"], alice.id.to_string());
    assert_eq!(st["publishVisible"], false, "alice may not publish: no form");
    let consumer = st["consumerId"].as_str().expect("a consumer id").to_string();
    let first_token = st["tokenTail"].clone();
    assert!(consumer.starts_with("console-"), "{consumer}");

    s.publish_all(&publisher, numbered(alice.id, 2)).await;
    let st = page.call("waitFeed", json!({"count": 2})).await;
    assert_eq!(seqs(&st), [1, 2], "both events live, in order");

    // The server restarts on the same port under the open page: EventSource reconnects by
    // itself, sending Last-Event-ID.
    let db = s.db();
    s.stop().await;
    let s = Server::on_at(db, &[], addr).await;
    s.publish_all(&publisher, numbered(alice.id, 1)).await;
    let st = page.call("waitFeed", json!({"count": 3})).await;
    assert_eq!(
        seqs(&st),
        [1, 2, 3],
        "the event published after the restart, once: {st:#}"
    );
    assert_eq!(
        st["subscribed"]["resumeAfter"], "2",
        "resumed after the last event seen"
    );

    // Again, with the token-signing secret rotated: the reconnection is refused (401),
    // EventSource gives up, and the page refreshes its token and opens a new stream after
    // the last event it saw.
    let db = s.db();
    s.stop().await;
    let s = Server::on_at(db, &["--auth-secret", ROTATED_SECRET], addr).await;
    let publisher = s.login("pub@example.com", PASSWORD).await;
    let alice_token = s.login("alice@example.com", PASSWORD).await;
    s.publish_all(&publisher, numbered(alice.id, 1)).await;
    page.call("waitFeed", json!({"count": 4})).await;
    // The page acks what it shows; once the hub has stored 4, everything up to 4 has
    // arrived, so a repeat would show now.
    s.cursor_reaches(&alice_token, 0, &consumer, 4, "the page's acks reach the hub")
        .await;
    let st = page.call("waitAcked", json!({"seq": 4})).await;
    assert_eq!(
        seqs(&st),
        [1, 2, 3, 4],
        "each event once, in order, across both restarts: {st:#}"
    );
    let payloads: Vec<&str> = feed(&st).iter().map(|e| e["payload"].as_str().unwrap()).collect();
    assert_eq!(payloads, ["0", "1", "0", "0"], "text payloads shown as text");
    assert_eq!(
        st["subscribed"]["resumeAfter"], "3",
        "resumed after the last event seen"
    );
    assert_ne!(st["tokenTail"], first_token, "the page refreshed its token");
    assert_eq!(st["status"], "live");
    assert_eq!(st["truncated"], Value::Null, "nothing was lost: no warning");
    assert_clean(&st);

    // Publishing through the form, as the admin.
    let st = page.call("logout", json!({})).await;
    assert_eq!(st["feed"], json!([]), "logging out clears the feed");
    let st = page
        .call(
            "login",
            json!({"identifier": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(st["status"], "live", "{st}");
    assert_eq!(st["publishVisible"], true, "the admin may publish");
    let admin_id = st["user"]["id"].as_str().expect("the admin's id").to_string();
    let text = "héllo ✓ from the console";
    let st = page
        .call(
            "publish",
            json!({"recipients": format!("{}, {admin_id}", alice.id), "type": "console.note", "payload": text}),
        )
        .await;
    let result = &st["publishResult"];
    assert_eq!(result["state"], "done", "{result}");
    let mut deliveries = result["deliveries"]
        .as_array()
        .expect("the deliveries shown")
        .clone();
    deliveries.sort_by_key(|d| d["userId"] != admin_id);
    assert_eq!(
        deliveries,
        [
            json!({"userId": admin_id, "seq": "1"}),
            json!({"userId": alice.id.to_string(), "seq": "5"})
        ],
        "one delivery per recipient, shown"
    );
    // The admin's own feed shows it live, its UTF-8 intact both ways.
    let st = page.call("waitFeed", json!({"count": 1})).await;
    assert_eq!(feed(&st)[0]["seq"], 1);
    assert_eq!(feed(&st)[0]["type"], "console.note");
    assert_eq!(feed(&st)[0]["payload"], text);
    let stored = s
        .history(&alice_token)
        .await
        .events
        .pop()
        .expect("alice's history");
    assert_eq!((stored.seq, stored.r#type.as_str()), (5, "console.note"));
    assert_eq!(stored.payload, text.as_bytes(), "the payload is stored as UTF-8");
    assert_eq!(stored.content_type, "text/plain");

    // The server's error is shown.
    let st = page
        .call(
            "publish",
            json!({"recipients": "999999", "type": "console.note", "payload": "x"}),
        )
        .await;
    let result = &st["publishResult"];
    assert_eq!(result["state"], "error", "{result}");
    assert!(
        result["text"].as_str().unwrap().contains("999999"),
        "the hub's message names the missing recipient: {result}"
    );
    assert_clean(&st);

    page.close().await;
    s.stop().await;
}
