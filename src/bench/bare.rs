//! The baseline: `activity.v1` and the user calls the bench makes, served by bare tonic
//! from memory. No store, no authentication, no acknowledgement windows, unbounded
//! outboxes: what remains is the cost of gRPC itself and of the bench client, which is
//! what the hub's figures are divided by.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use dashmap::DashMap;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::UnboundedReceiverStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::proto::{
    activity::v1::{
        self as apb,
        activity_service_server::{ActivityService, ActivityServiceServer},
        subscribe_request, subscribe_response, StartFrom,
    },
    user::v1::{
        self as upb,
        user_service_server::{UserService, UserServiceServer},
    },
};

type Outbox = mpsc::UnboundedSender<Result<apb::SubscribeResponse, Status>>;

/// One recipient's stream: history, consumers' cursors, live subscribers.
#[derive(Default)]
struct Log {
    events: Vec<apb::Event>,
    cursors: HashMap<String, u64>,
    live: Vec<Outbox>,
}

#[derive(Clone, Default)]
struct Bare {
    logs: Arc<DashMap<u64, Log>>,
    users: Arc<DashMap<u64, upb::User>>,
    next_user: Arc<AtomicU64>,
    next_event: Arc<AtomicU64>,
}

fn event_msg(e: apb::Event) -> Result<apb::SubscribeResponse, Status> {
    Ok(apb::SubscribeResponse {
        msg: Some(subscribe_response::Msg::Event(e)),
    })
}

fn absent(what: &str) -> Status {
    Status::failed_precondition(format!("the bench baseline does not serve {what}"))
}

impl Bare {
    fn publish_one(&self, r: apb::PublishRequest) -> apb::PublishResponse {
        let event_id = (self.next_event.fetch_add(1, Ordering::Relaxed) + 1).to_string();
        let mut deliveries = Vec::with_capacity(r.recipient_ids.len());
        for &user_id in &r.recipient_ids {
            let mut log = self.logs.entry(user_id).or_default();
            let seq = log.events.len() as u64 + 1;
            let ev = apb::Event {
                user_id,
                seq,
                event_id: event_id.clone(),
                r#type: r.r#type.clone(),
                payload: r.payload.clone(),
                ..Default::default()
            };
            log.live.retain(|tx| tx.send(event_msg(ev.clone())).is_ok());
            log.events.push(ev);
            deliveries.push(apb::Delivery { user_id, seq });
        }
        apb::PublishResponse {
            event_id,
            deliveries,
            duplicate: false,
        }
    }

    fn user(&self, id: u64) -> Result<upb::User, Status> {
        self.users
            .get(&id)
            .map(|u| u.clone())
            .ok_or_else(|| Status::not_found(format!("no user {id}")))
    }

    fn create(&self, r: upb::CreateUserRequest) -> upb::User {
        let id = self.next_user.fetch_add(1, Ordering::Relaxed) + 1;
        let u = upb::User {
            id,
            email: r.email,
            username: r.username,
            first_name: r.first_name,
            last_name: r.last_name,
            status: upb::UserStatus::Active as i32,
            roles: vec![upb::UserRole::User as i32],
            ..Default::default()
        };
        self.users.insert(id, u.clone());
        u
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ActivityService for Bare {
    async fn publish(
        &self,
        req: Request<apb::PublishRequest>,
    ) -> Result<Response<apb::PublishResponse>, Status> {
        Ok(Response::new(self.publish_one(req.into_inner())))
    }

    type PublishStreamStream = BoxStream<apb::PublishResponse>;
    async fn publish_stream(
        &self,
        req: Request<Streaming<apb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let me = self.clone();
        let out = req.into_inner().map(move |r| r.map(|r| me.publish_one(r)));
        Ok(Response::new(Box::pin(out)))
    }

    type SubscribeStream = UnboundedReceiverStream<Result<apb::SubscribeResponse, Status>>;
    async fn subscribe(
        &self,
        req: Request<Streaming<apb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = req.into_inner();
        let Some(Ok(apb::SubscribeRequest {
            msg: Some(subscribe_request::Msg::Start(s)),
        })) = inbound.next().await
        else {
            return Err(Status::invalid_argument(
                "start: the first message must be a Start",
            ));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        {
            // Replay and joining the live set happen under the log's lock: no seam.
            let mut log = self.logs.entry(s.user_id).or_default();
            let head = log.events.len() as u64;
            let after = match StartFrom::try_from(s.start_from).unwrap_or_default() {
                StartFrom::Earliest => 0,
                StartFrom::Seq => s.after_seq.min(head),
                StartFrom::Latest => head,
                StartFrom::Cursor | StartFrom::Unspecified if !s.consumer_id.is_empty() => {
                    log.cursors.get(&s.consumer_id).copied().unwrap_or(0)
                }
                _ => head,
            };
            let _ = tx.send(Ok(apb::SubscribeResponse {
                msg: Some(subscribe_response::Msg::Subscribed(apb::Subscribed {
                    user_id: s.user_id,
                    consumer_id: s.consumer_id.clone(),
                    resume_after: after,
                    head_seq: head,
                    earliest_seq: 1,
                    truncated: false,
                })),
            }));
            for e in &log.events[after as usize..] {
                let _ = tx.send(event_msg(e.clone()));
            }
            log.live.push(tx);
        }
        let logs = self.logs.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                if let (Some(subscribe_request::Msg::Ack(a)), false) = (m.msg, s.consumer_id.is_empty()) {
                    if let Some(mut log) = logs.get_mut(&s.user_id) {
                        let c = log.cursors.entry(s.consumer_id.clone()).or_default();
                        *c = (*c).max(a.seq);
                    }
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn list_events(
        &self,
        req: Request<apb::ListEventsRequest>,
    ) -> Result<Response<apb::ListEventsResponse>, Status> {
        let r = req.into_inner();
        let log = self.logs.get(&r.user_id);
        let all = log.as_ref().map(|l| &l.events[..]).unwrap_or(&[]);
        let from = (r.after_seq as usize).min(all.len());
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let events: Vec<apb::Event> = all[from..].iter().take(limit).cloned().collect();
        Ok(Response::new(apb::ListEventsResponse {
            has_more: from + events.len() < all.len(),
            head_seq: all.len() as u64,
            events,
        }))
    }

    async fn get_cursor(&self, req: Request<apb::GetCursorRequest>) -> Result<Response<apb::Cursor>, Status> {
        let r = req.into_inner();
        let log = self.logs.get(&r.user_id);
        Ok(Response::new(apb::Cursor {
            acked_seq: log
                .as_ref()
                .and_then(|l| l.cursors.get(&r.consumer_id).copied())
                .unwrap_or(0),
            head_seq: log.as_ref().map(|l| l.events.len() as u64).unwrap_or(0),
            user_id: r.user_id,
            consumer_id: r.consumer_id,
        }))
    }
}

#[tonic::async_trait]
impl UserService for Bare {
    async fn get_user(&self, req: Request<upb::GetUserRequest>) -> Result<Response<upb::User>, Status> {
        match req.into_inner().identifier {
            Some(upb::get_user_request::Identifier::UserId(id)) => Ok(Response::new(self.user(id)?)),
            _ => Err(absent("GetUser by email or username")),
        }
    }
    async fn create_user(&self, req: Request<upb::CreateUserRequest>) -> Result<Response<upb::User>, Status> {
        Ok(Response::new(self.create(req.into_inner())))
    }
    async fn update_user(&self, _: Request<upb::UpdateUserRequest>) -> Result<Response<upb::User>, Status> {
        Err(absent("UpdateUser"))
    }
    async fn delete_user(&self, _: Request<upb::GetUserRequest>) -> Result<Response<()>, Status> {
        Err(absent("DeleteUser"))
    }
    async fn list_users(
        &self,
        _: Request<upb::ListUsersRequest>,
    ) -> Result<Response<upb::ListUsersResponse>, Status> {
        Err(absent("ListUsers"))
    }
    type StreamUsersStream = BoxStream<upb::User>;
    async fn stream_users(
        &self,
        _: Request<upb::ListUsersRequest>,
    ) -> Result<Response<Self::StreamUsersStream>, Status> {
        Err(absent("StreamUsers"))
    }
    async fn bulk_create_users(
        &self,
        req: Request<Streaming<upb::CreateUserRequest>>,
    ) -> Result<Response<upb::BulkCreateUsersResponse>, Status> {
        let mut inbound = req.into_inner();
        let mut out = upb::BulkCreateUsersResponse::default();
        while let Some(r) = inbound.next().await {
            out.users.push(self.create(r?));
        }
        out.created = out.users.len() as u32;
        Ok(Response::new(out))
    }
    type UserActivityStream = BoxStream<upb::UserActivityEvent>;
    async fn user_activity(
        &self,
        _: Request<Streaming<upb::UserActivityRequest>>,
    ) -> Result<Response<Self::UserActivityStream>, Status> {
        Err(absent("UserActivity"))
    }
}

/// Serves the baseline on `addr` until the process ends. User 1 exists from the start,
/// so external load generators (h2load) can GetUser it.
pub async fn serve(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let bare = Bare::default();
    bare.create(upb::CreateUserRequest {
        email: "baseline@bench.test".into(),
        username: "baseline".into(),
        ..Default::default()
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(2048))
        .add_service(health_service)
        .add_service(ActivityServiceServer::new(bare.clone()))
        .add_service(UserServiceServer::new(bare))
        .serve(addr)
        .await?;
    Ok(())
}
