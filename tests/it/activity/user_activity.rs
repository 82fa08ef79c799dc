//! UserActivity: watchers hear users being created, logging in, updated and deleted; a
//! plain user may watch only themself; unsubscribing and closing leave nothing behind.

use std::time::Duration;

use activity_hub::proto::user::v1::{
    get_user_request::Identifier, user_activity_event::Kind, user_activity_request::Action, GetUserRequest,
    UpdateUserRequest, UserActivityEvent, UserActivityRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use super::dsl::{stream_end, Server};
use crate::helpers::{authed, eventually, Backend, TestServer};

/// The next notification about someone other than the admin (whose own logins in the
/// test helpers are reported too).
async fn next(w: &mut Streaming<UserActivityEvent>) -> UserActivityEvent {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(10), w.message())
            .await
            .expect("a notification within 10s")
            .expect("stream healthy")
            .expect("stream open");
        if e.user_id != 1 {
            return e;
        }
    }
}

/// Opens UserActivity and asks to watch `user_id`; the sender takes further requests.
async fn open_watch(
    s: &TestServer,
    token: &str,
    user_id: u64,
) -> (mpsc::Sender<UserActivityRequest>, Streaming<UserActivityEvent>) {
    let (tx, rx) = mpsc::channel(8);
    tx.send(UserActivityRequest {
        action: Action::SubscribeUserUpdates as i32,
        user_id,
    })
    .await
    .unwrap();
    let stream = s
        .users()
        .user_activity(authed(ReceiverStream::new(rx), token))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_activity_reports_lifecycle_changes() {
    let s = Server::start(Backend::Sqlite).await;
    let admin = s.admin_token().await;
    let (tx, mut watch) = open_watch(&s, &admin, 0).await;
    let watches = || s.hub.stats().watches.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(5), "the watch is in place", || watches() == 1).await;
    let (carol, carol_token) = s.user_with_token("carol", &[]).await;
    let e = next(&mut watch).await;
    assert_eq!((e.kind, e.user_id), (Kind::Created as i32, carol.id));
    assert_eq!(e.user.unwrap().username, "carol");
    let e = next(&mut watch).await;
    assert_eq!((e.kind, e.user_id), (Kind::LoggedIn as i32, carol.id));
    s.users()
        .update_user(authed(
            UpdateUserRequest {
                user_id: carol.id,
                first_name: Some("Carol".into()),
                ..Default::default()
            },
            &carol_token,
        ))
        .await
        .unwrap();
    let e = next(&mut watch).await;
    assert_eq!(
        (e.kind, e.user.unwrap().first_name.as_str()),
        (Kind::Updated as i32, "Carol")
    );
    s.users()
        .delete_user(authed(
            GetUserRequest {
                identifier: Some(Identifier::UserId(carol.id)),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert_eq!(next(&mut watch).await.kind, Kind::Deleted as i32);
    // A plain user may watch only themself.
    let (_, dave_token) = s.user_with_token("dave", &[]).await;
    let (_tx2, mut denied) = open_watch(&s, &dave_token, 0).await;
    let end = stream_end(&mut denied).await;
    assert_eq!(end.code(), Code::PermissionDenied);
    // Unsubscribing removes the watch; closing the stream removes the watcher.
    tx.send(UserActivityRequest {
        action: Action::UnsubscribeUserUpdates as i32,
        user_id: 0,
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(5), "the watch is removed", || watches() == 0).await;
    drop(tx);
    drop(watch);
    let watchers = || s.hub.stats().watchers.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(10), "watcher actors stopped", || {
        watchers() == 0
    })
    .await;
    s.stop().await;
}
