//! Servers sharing one PostgreSQL database tell each other's UserActivity watchers about
//! user changes (LISTEN/NOTIFY, `hub::notify`), whole when small and without the user's
//! free text when too large for a notification.

use std::{collections::HashMap, time::Duration};

use activity_hub::proto::user::v1::{
    user_activity_event::Kind, user_activity_request::Action, UpdateUserRequest, UserActivityEvent,
    UserActivityRequest,
};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::helpers::{authed, eventually, skip_without_pg, Backend, TestDb, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_changes_reach_watchers_on_other_servers() {
    if skip_without_pg("user_changes_reach_watchers_on_other_servers") {
        return;
    }
    let db = TestDb::new(Backend::Postgres).await;
    let a = TestServer::start(&db, &[]).await;
    let b = TestServer::start(&db, &[]).await;
    let admin = a.admin_token().await;
    let watch_all = UserActivityRequest {
        action: Action::SubscribeUserUpdates as i32,
        user_id: 0,
    };
    let mut on_a = a
        .users()
        .user_activity(authed(tokio_stream::iter([watch_all]), &admin))
        .await
        .expect("UserActivity opens")
        .into_inner()
        // The admin's own logins are reported too.
        .filter(|e| e.as_ref().map_or(true, |e| e.user_id != 1));
    let watches = || a.hub.stats().watches.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(5), "the watch is in place on A", || {
        watches() == 1
    })
    .await;

    let (erin, erin_token) = b.user_with_token("erin", &[]).await;
    let e = next(&mut on_a).await;
    assert_eq!((e.kind, e.user_id), (Kind::Created as i32, erin.id));
    assert_eq!(e.user.expect("the user snapshot").username, "erin");
    assert!(e.occurred_at.is_some());
    assert_eq!(next(&mut on_a).await.kind, Kind::LoggedIn as i32);

    // About 10 KB of preferences: too large for one NOTIFY, so the free text stays behind.
    let preferences: HashMap<String, String> = (0..10).map(|i| (format!("k{i}"), "x".repeat(1000))).collect();
    b.users()
        .update_user(authed(
            UpdateUserRequest {
                user_id: erin.id,
                first_name: Some("Erin".into()),
                bio: Some("short".into()),
                preferences,
                ..Default::default()
            },
            &erin_token,
        ))
        .await
        .expect("update on B");
    let e = next(&mut on_a).await;
    let user = e.user.expect("the user snapshot");
    assert_eq!((e.kind, user.first_name.as_str()), (Kind::Updated as i32, "Erin"));
    assert!(user.bio.is_empty() && user.preferences.is_empty(), "{user:?}");
    a.stop().await;
    b.stop().await;
}

async fn next(
    stream: &mut (impl Stream<Item = Result<UserActivityEvent, Status>> + Unpin),
) -> UserActivityEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a notification from the other server within 10s")
        .expect("stream open")
        .expect("stream healthy")
}
