//! Crash durability: the real binary as a child process, killed with SIGKILL mid-stream,
//! restarted on the same store, several times in one test.

use std::{collections::HashMap, process::Stdio, time::Duration};

use activity_hub::proto::{
    activity::v1::{ListEventsRequest, PublishResponse, Start, StartFrom},
    auth::v1::{auth_service_client::AuthServiceClient, login_request::Identifier, LoginRequest},
};
use tokio::{process::Child, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::{
    activity::dsl::{client, event_req, Sub},
    helpers::{args_with, authed, Backend, TestDb, ADMIN_EMAIL, ADMIN_PASSWORD},
};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn spawn_server(db: &TestDb) -> (Child, Channel) {
    spawn_server_with(db, &[]).await
}

/// The real binary on `db`, with `extra` flags replacing or adding to the test defaults.
pub async fn spawn_server_with(db: &TestDb, extra: &[&str]) -> (Child, Channel) {
    spawn_server_logging(db, extra, Stdio::inherit()).await
}

/// [`spawn_server_with`], its log (stderr) going to `stderr`.
pub async fn spawn_server_logging(db: &TestDb, extra: &[&str], stderr: Stdio) -> (Child, Channel) {
    spawn_server_on(free_port(), db, extra, stderr).await
}

/// The real binary listening on `port`.
pub async fn spawn_server_on(port: u16, db: &TestDb, extra: &[&str], stderr: Stdio) -> (Child, Channel) {
    let mut args = vec![
        "serve".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(args_with(db, extra));
    if !extra.contains(&"--log-level") {
        args.extend(["--log-level".to_string(), "warn".into()]);
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_activity-hub"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("server binary starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            return (child, ch);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not come up in 30s"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the server exited at start: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn admin(ch: &Channel) -> (String, u64) {
    let r = AuthServiceClient::new(ch.clone())
        .login(LoginRequest {
            identifier: Some(Identifier::Email(ADMIN_EMAIL.into())),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .expect("admin login")
        .into_inner();
    (r.access_token, r.user.unwrap().id)
}

crate::dual!(kill_9_loses_no_acknowledged_publish);

async fn kill_9_loses_no_acknowledged_publish(b: Backend) {
    let db = TestDb::new(b).await;
    let mut acknowledged: Vec<PublishResponse> = Vec::new();
    let mut acked_by_device = 0u64;
    for round in 0..3 {
        let (mut child, ch) = spawn_server(&db).await;
        let (token, me) = admin(&ch).await;
        // The durable consumer resumes where its stored ack says, never beyond.
        let mut device = Sub::open(
            &ch,
            &token,
            Start {
                consumer_id: "device".into(),
                start_from: StartFrom::Cursor as i32,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(
            device.subscribed.resume_after <= acked_by_device,
            "round {round}: resumed after {} but only {acked_by_device} was acked",
            device.subscribed.resume_after
        );
        let mut expect = device.subscribed.resume_after + 1;
        let head = device.subscribed.head_seq;
        while expect <= head {
            let e = device.event().await;
            assert_eq!(e.seq, expect, "round {round}: resumed delivery has no gap");
            device.ack(e.seq).await;
            acked_by_device = e.seq;
            expect += 1;
        }
        // Publish continuously, and kill -9 while requests are in flight.
        let (tx, rx) = mpsc::channel(256);
        let feeder = tokio::spawn(async move {
            for i in 0u64.. {
                if tx
                    .send(event_req(&[me], "crash.test", format!("{round}:{i}")))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut answers = client(&ch)
            .publish_stream(authed(ReceiverStream::new(rx), &token))
            .await
            .unwrap()
            .into_inner();
        let mut got = 0;
        while let Ok(Some(a)) = answers.message().await {
            acknowledged.push(a);
            got += 1;
            if got == 300 {
                child.start_kill().expect("SIGKILL");
            }
        }
        assert!(got >= 300, "round {round}: {got} answers before the kill");
        feeder.abort();
        let _ = child.wait().await;
    }
    // After the last crash: every acknowledged publish is stored, and the log has no gap.
    let (_child, ch) = spawn_server(&db).await;
    let (token, _) = admin(&ch).await;
    let mut stored: HashMap<u64, String> = HashMap::new();
    let mut after = 0;
    loop {
        let page = client(&ch)
            .list_events(authed(
                ListEventsRequest {
                    after_seq: after,
                    limit: 1000,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        for e in &page.events {
            assert_eq!(e.seq, after + 1, "no gap in the stored log");
            after = e.seq;
            stored.insert(e.seq, e.event_id.clone());
        }
        if !page.has_more {
            assert_eq!(after, page.head_seq);
            break;
        }
    }
    for a in &acknowledged {
        let seq = a.deliveries[0].seq;
        assert_eq!(
            stored.get(&seq),
            Some(&a.event_id),
            "acknowledged publish at seq {seq} survived kill -9"
        );
    }
    let mut device = Sub::open(
        &ch,
        &token,
        Start {
            consumer_id: "device".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(device.subscribed.resume_after <= acked_by_device);
    let first = device.event().await;
    assert_eq!(
        first.seq,
        device.subscribed.resume_after + 1,
        "delivered on resume"
    );
}
