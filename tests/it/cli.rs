//! The command-line client, run as the real binary against a real server: login saves a
//! token, user CRUD, publish/subscribe/events, `--json`, and exit codes.

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::{
    crash::spawn_server_on,
    helpers::{Backend, TestDb, ADMIN_EMAIL, ADMIN_PASSWORD},
};

struct Cli {
    server: String,
    home: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-hub"));
        c.args(args)
            .env("HUB_SERVER", &self.server)
            .env("XDG_CONFIG_HOME", self.home.path())
            .env_remove("HUB_TOKEN")
            .env_remove("HUB_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = self.command(args).spawn().expect("binary runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let o = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("the command finishes")
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_with_stdin(args, "").await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert_eq!(o.code, 0, "{args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a).await).expect("--json prints JSON")
    }

    /// Creates user `bob` (bob@example.com); the table printed.
    async fn create_bob(&self) -> String {
        self.ok(&[
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--username",
            "bob",
            "--password",
            "bob-password-1",
        ])
        .await
    }

    /// Publishes a `note` with `payload` to user 1 (the admin); the JSON response.
    async fn note_to_admin(&self, payload: &str) -> Value {
        self.json(&["publish", "--to", "1", "--type", "note", "--payload", payload])
            .await
    }

    async fn login(&self) {
        let o = self
            .run_with_stdin(&["login", ADMIN_EMAIL], &format!("{ADMIN_PASSWORD}\n"))
            .await;
        assert_eq!(o.code, 0, "login: {}", o.stderr);
    }
}

async fn setup() -> (TestDb, tokio::process::Child, Cli) {
    setup_with(&[]).await
}

/// A server (the real binary, `flags` added) and a CLI with an empty config folder.
async fn setup_with(flags: &[&str]) -> (TestDb, tokio::process::Child, Cli) {
    let db = TestDb::new(Backend::Sqlite).await;
    let port = crate::crash::free_port();
    let listen = format!("127.0.0.1:{port}");
    let (child, _) = spawn_server_on(port, &db, flags, Stdio::inherit()).await;
    let cli = Cli {
        server: format!("http://{listen}"),
        home: tempfile::tempdir().unwrap(),
    };
    (db, child, cli)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_user_crud_and_exit_codes() {
    let (_db, _server, cli) = setup().await;
    assert!(cli.ok(&["health"]).await.contains("SERVING"));

    let o = cli.run(&["user", "list"]).await;
    assert_eq!(o.code, 4, "not logged in: {}", o.stderr);
    assert!(
        o.stderr.contains("activity-hub login"),
        "says what to do: {}",
        o.stderr
    );

    cli.login().await;
    let token_file = cli.home.path().join("activity-hub/token");
    assert!(token_file.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token is private to its owner");
    }

    let table = cli.create_bob().await;
    assert!(table.starts_with("ID"), "a table: {table}");
    assert!(table.contains("bob@example.com"));
    let bob = cli.json(&["user", "get", "bob"]).await;
    assert_eq!(bob["username"], "bob");
    let id = bob["id"].as_u64().unwrap().to_string();
    let updated = cli.json(&["user", "update", &id, "--first-name", "Bobby"]).await;
    assert_eq!(updated["first_name"], "Bobby");
    let list = cli.json(&["user", "list", "--search", "bob"]).await;
    assert_eq!(list["users"][0]["email"], "bob@example.com");

    let o = cli.run(&["user", "get", "nobody-here"]).await;
    assert_eq!(o.code, 3, "not found: {}", o.stderr);
    let o = cli
        .run(&[
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--username",
            "bob2",
            "--password",
            "bob-password-1",
        ])
        .await;
    assert_eq!(o.code, 6, "already exists: {}", o.stderr);
    assert!(o.stderr.contains("AlreadyExists"), "{}", o.stderr);

    cli.ok(&["user", "delete", &id]).await;
    assert_eq!(cli.run(&["user", "get", &id]).await.code, 3);

    let o = cli.run(&["health", "--server", "http://127.0.0.1:1"]).await;
    assert_eq!(o.code, 5, "unreachable: {}{}", o.stdout, o.stderr);
    assert_eq!(cli.run(&["user", "frobnicate"]).await.code, 2, "bad command line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_follow_and_events_list() {
    let (_db, _server, cli) = setup().await;
    cli.login().await;
    // Follows until it has 3 events; a consumer without a cursor starts at the beginning.
    let follower = cli
        .command(&["subscribe", "--consumer", "cli", "--count", "3", "--json"])
        .spawn()
        .unwrap();
    for i in 1..=3 {
        let r = cli.note_to_admin(&format!("hello-{i}")).await;
        assert_eq!(r["deliveries"][0]["seq"], i);
    }
    let o = tokio::time::timeout(Duration::from_secs(30), follower.wait_with_output())
        .await
        .expect("subscribe --count 3 ends")
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, ev) in lines.iter().enumerate() {
        assert_eq!(ev["seq"], i as u64 + 1);
        // No JSON content type: base64, labelled.
        assert_eq!(ev["payload_encoding"], "base64");
        let text = format!("hello-{}", i + 1);
        use base64::Engine as _;
        assert_eq!(
            ev["payload"],
            base64::engine::general_purpose::STANDARD.encode(&text)
        );
    }
    // The consumer's cursor kept the acks: the next subscribe resumes after seq 3.
    cli.ok(&["publish", "--to", "1", "--type", "note", "--payload", "hello-4"])
        .await;
    let next = cli.ok(&["subscribe", "--consumer", "cli", "--count", "1"]).await;
    assert!(next.starts_with("4  note"), "{next}");

    let page = cli.json(&["events", "list"]).await;
    assert_eq!(page["events"].as_array().unwrap().len(), 4);
    assert_eq!(page["head_seq"], 4);
    let table = cli.ok(&["events", "list", "--after", "2"]).await;
    assert!(
        table.contains("hello-3") && table.contains("hello-4") && !table.contains("hello-2"),
        "{table}"
    );

    assert_eq!(
        cli.run(&["publish", "--to", "999999", "--type", "note"])
            .await
            .code,
        3
    );
    assert_eq!(cli.run(&["subscribe", "--from", "yesterday"]).await.code, 2);
}

/// `subscribe` on a consumer whose events retention pruned: a warning on stderr naming
/// the lost seqs, the remaining events on stdout, and exit code 7 (EXIT_CODES).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_says_when_events_were_pruned_and_exits_7() {
    let flags = [
        "--retention-max-events",
        "2",
        "--retention-max-age",
        "1h",
        "--retention-interval",
        "50ms",
    ];
    let (_db, _server, cli) = setup_with(&flags).await;
    cli.login().await;
    for i in 1..=5 {
        cli.note_to_admin(&format!("n{i}")).await;
    }
    // Retention runs every 50 ms; wait until it kept only the newest 2.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cli.json(&["events", "list"]).await["events"]
        .as_array()
        .unwrap()
        .len()
        > 2
    {
        assert!(tokio::time::Instant::now() < deadline, "retention ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = cli.run(&["subscribe", "--consumer", "dev", "--count", "2"]).await;
    assert_eq!(o.code, 7, "lost events are an error: {}", o.stderr);
    assert!(
        o.stderr.contains("3 event(s) (seq 1..=3) were pruned"),
        "the warning names what was lost: {}",
        o.stderr
    );
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", o.stdout);
    assert!(lines[0].starts_with("4  note") && lines[1].starts_with("5  note"));
    // --json: the gap is a line of its own, so scripts see it too.
    let o = cli
        .run(&["subscribe", "--consumer", "ci", "--count", "1", "--json"])
        .await;
    assert_eq!(o.code, 7);
    let first: Value = serde_json::from_str(o.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["pruned"]["count"], 3);
    assert!(cli.ok(&["--help"]).await.contains("7 events were lost"));
}

/// The saved session: `whoami`, a refresh by itself once the access token expired (the
/// rotated refresh token saved, so the next command works too), `password change`, and
/// `logout`, after which the old access token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_whoami_refresh_password_and_logout() {
    let (_db, _server, cli) = setup_with(&["--token-ttl", "1s"]).await;
    cli.login().await;
    let token_file = cli.home.path().join("activity-hub/token");
    let saved = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(saved.lines().count(), 2, "access and refresh token saved");
    assert_eq!(cli.json(&["whoami"]).await["username"], "admin");

    // Past the access token's life and the server's leeway.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(cli.json(&["whoami"]).await["username"], "admin");
    let rotated = std::fs::read_to_string(&token_file).unwrap();
    assert_ne!(rotated, saved, "the refreshed session was saved");
    assert_ne!(rotated.lines().nth(1), saved.lines().nth(1));
    assert_eq!(cli.json(&["whoami"]).await["username"], "admin");

    let o = cli
        .run_with_stdin(&["password", "change"], &format!("{ADMIN_PASSWORD}\nshort\n"))
        .await;
    assert_eq!(o.code, 6, "too short: {}", o.stderr);
    assert!(o.stderr.contains("new_password"), "{}", o.stderr);
    let o = cli
        .run_with_stdin(
            &["password", "change"],
            &format!("{ADMIN_PASSWORD}\nanother-password-1\n"),
        )
        .await;
    assert_eq!(o.code, 0, "{}", o.stderr);

    let access = std::fs::read_to_string(&token_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    cli.ok(&["logout"]).await;
    assert!(!token_file.exists(), "logout forgets the session");
    let o = cli.run(&["whoami", "--token", &access]).await;
    assert_eq!(o.code, 4, "the ended session's token is refused: {}", o.stderr);
}

/// Names wherever an id goes, `HOST:PORT` without a scheme, JSON payloads embedded as
/// JSON, `cursor get`, `user watch`, completions, and a bad `serve` value exiting 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_bare_addresses_faithful_json_cursor_and_watch() {
    let (_db, _server, mut cli) = setup().await;
    cli.server = cli.server.trim_start_matches("http://").to_string();
    cli.login().await;
    cli.create_bob().await;
    let bob = cli
        .json(&["user", "update", "bob", "--first-name", "Bobby"])
        .await;
    assert_eq!(bob["first_name"], "Bobby");
    let r = cli
        .json(&[
            "publish",
            "--to",
            "bob",
            "--type",
            "order.filled",
            "--content-type",
            "application/json",
            "--payload",
            r#"{"id":42}"#,
        ])
        .await;
    assert_eq!(r["deliveries"][0]["user_id"], bob["id"]);
    cli.ok(&[
        "publish",
        "--to",
        "bob@example.com",
        "--type",
        "note",
        "--payload",
        "hi",
    ])
    .await;
    let page = cli.json(&["events", "list", "--user", "bob"]).await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(
        events[0]["payload"],
        serde_json::json!({"id": 42}),
        "JSON stays JSON"
    );
    assert_eq!(events[0]["payload_encoding"], "json");
    assert_eq!(events[1]["payload"], "aGk=", "anything else is base64");
    assert_eq!(events[1]["payload_encoding"], "base64");

    cli.ok(&["subscribe", "--user", "bob", "--consumer", "tv", "--count", "2"])
        .await;
    let cursor = cli
        .json(&["cursor", "get", "--consumer", "tv", "--user", "bob"])
        .await;
    assert_eq!(
        (cursor["acked_seq"].as_u64(), cursor["head_seq"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(cli.run(&["cursor", "get", "--user", "bob"]).await.code, 2);

    // `user watch` prints the change it sees; updates repeat until it has one.
    let watcher = cli
        .command(&["user", "watch", "bob", "--count", "1", "--json"])
        .spawn()
        .unwrap();
    let watched = tokio::spawn(watcher.wait_with_output());
    let mut n = 0;
    while !watched.is_finished() {
        n += 1;
        cli.ok(&["user", "update", "bob", "--bio", &format!("bio {n}")])
            .await;
        assert!(n < 100, "user watch saw an update");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let o = watched.await.unwrap().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let change: Value = serde_json::from_slice(&o.stdout).expect("one JSON line");
    assert_eq!(change["kind"], "updated");
    assert_eq!(change["user"]["username"], "bob");

    cli.ok(&["user", "delete", "bob"]).await;
    assert_eq!(cli.run(&["user", "get", "bob"]).await.code, 3);

    let bash = cli.ok(&["completions", "bash"]).await;
    assert!(
        bash.contains("activity-hub") && bash.contains("complete"),
        "{bash}"
    );
    let o = cli.run(&["serve", "--heartbeat-interval", "1ms"]).await;
    assert_eq!(o.code, 2, "a bad serve value is a bad command line: {}", o.stderr);
    assert!(o.stderr.contains("--heartbeat-interval"), "{}", o.stderr);
}

/// `subscribe` to a server that is not there says so as it retries and gives up after
/// --connect-timeout with exit code 5, instead of waiting silently for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_an_absent_server_reports_and_gives_up() {
    let cli = Cli {
        server: format!("127.0.0.1:{}", crate::crash::free_port()),
        home: tempfile::tempdir().unwrap(),
    };
    let o = cli
        .run(&["subscribe", "--token", "t", "--connect-timeout", "2s"])
        .await;
    assert_eq!(o.code, 5, "{}", o.stderr);
    assert!(o.stderr.contains("retrying (attempt 1)"), "{}", o.stderr);
    assert!(o.stderr.contains("is the server running"), "{}", o.stderr);
}

/// A password typed at a terminal is not echoed: `login` under a pseudo-terminal
/// (util-linux `script`), the password typed after the prompt appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_typed_at_a_terminal_are_not_echoed() {
    use tokio::io::AsyncReadExt;
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        crate::helpers::skip_without_tool("cli::passwords_typed_at_a_terminal_are_not_echoed", "script");
        return;
    }
    let (_db, _server, cli) = setup().await;
    let mut c = tokio::process::Command::new("script");
    c.args([
        "-qefc",
        &format!("{} login {ADMIN_EMAIL}", env!("CARGO_BIN_EXE_activity-hub")),
        "/dev/null",
    ])
    .env("HUB_SERVER", &cli.server)
    .env("XDG_CONFIG_HOME", cli.home.path())
    .env_remove("HUB_PASSWORD")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .kill_on_drop(true);
    let mut child = c.spawn().expect("script runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("password:") {
        let n = tokio::time::timeout(Duration::from_secs(20), stdout.read(&mut buf))
            .await
            .expect("the prompt appears")
            .unwrap();
        assert!(
            n > 0,
            "output ended before the prompt: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // Typed like a person, a moment after the prompt (the prompt is printed just before
    // the terminal's echo is switched off).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{ADMIN_PASSWORD}\r").as_bytes())
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stdout.read_to_end(&mut rest))
        .await
        .expect("login finishes")
        .unwrap();
    seen.extend_from_slice(&rest);
    let screen = String::from_utf8_lossy(&seen);
    assert!(screen.contains("logged in"), "{screen}");
    assert!(
        !screen.contains(ADMIN_PASSWORD),
        "the password was echoed: {screen}"
    );
    drop(stdin);
}

/// Ctrl-C (SIGINT) on a following `subscribe` exits 130, not 0: a script can tell an
/// interrupted follow from one that finished its --count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_subscribe_exits_130() {
    use tokio::io::AsyncBufReadExt;
    let (_db, _server, cli) = setup().await;
    cli.login().await;
    let mut follower = cli.command(&["subscribe", "--consumer", "tail"]).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    cli.note_to_admin("first").await;
    // It is following once it printed the event.
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the event is printed")
        .unwrap()
        .expect("a line");
    assert!(line.contains("first"), "{line}");
    let pid = follower.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(30), follower.wait())
        .await
        .expect("it stops")
        .unwrap();
    assert_eq!(status.code(), Some(130));
}
