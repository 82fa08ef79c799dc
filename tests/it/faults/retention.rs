//! Retention every 100 ms under full publish load fails no publish.

use super::*;

crate::dual!(retention_every_100ms_fails_no_publish);

/// Retention deletes on every pass (at most 5 events kept per recipient) every 100 ms
/// while pipelined PublishStreams keep the store busy: not one publish may fail.
async fn retention_every_100ms_fails_no_publish(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(
        &db,
        &["--retention-interval", "100ms", "--retention-max-events", "5"],
    )
    .await;
    let admin = s.admin_token().await;
    let recipients = bulk_users(&s, &admin, "ret", 50).await;
    let mut streams = Vec::new();
    for t in 0..4usize {
        let (ch, token, rs) = (s.channel.clone(), admin.clone(), recipients.clone());
        streams.push(tokio::spawn(async move {
            let reqs: Vec<PublishRequest> = (0..3_000usize)
                .map(|i| event_req(&[rs[(t + i * 4) % rs.len()]], "ret.test", format!("{t}:{i}")))
                .collect();
            let mut answers = client(&ch)
                .publish_stream(authed(tokio_stream::iter(reqs), &token))
                .await
                .expect("publish stream opens")
                .into_inner();
            let mut n = 0;
            loop {
                match answers.message().await {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => return n,
                    Err(e) => panic!("stream {t}: publish {n} failed under retention: {e}"),
                }
            }
        }));
    }
    let mut total = 0;
    for t in streams {
        total += t.await.expect("publisher");
    }
    assert_eq!(total, 12_000, "every publish answered");
    // Retention really ran: each recipient ends with its 5 newest of 240 events.
    for &u in &recipients[..3] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (events, head) = history(&s.channel, &admin, u).await;
            assert_eq!(head, 240, "user {u}'s head counts every publish");
            assert_eq!(events.last().map(|(s, _, _)| *s), Some(240));
            if events.len() <= 5 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "user {u} still keeps {} events",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    s.stop().await;
}
