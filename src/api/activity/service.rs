//! The `activity.v1.ActivityService` handlers: authenticate, authorize, validate, then
//! hand over to the hub's actors.

use futures_util::{stream::FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, PublishLimits};
use crate::{
    auth::{
        policy::{authorize, Call},
        Auth,
    },
    error::ApiError,
    hub::{forward_requests, ClientInput, Hub, StreamInput},
    lifecycle::{end_on_shutdown, ResponseStream},
    model::{AckMode, Principal},
    proto::activity::v1::{self as pb, activity_service_server::ActivityService, subscribe_request},
    store::events::PublishOutcome,
    users::Users,
};

/// Publishes one PublishStream may have in flight (queued for commit, not yet answered).
const PIPELINE_DEPTH: usize = 4096;

/// The ActivityService implementation.
#[derive(Clone)]
pub struct ActivityApi {
    hub: Hub,
    auth: Auth,
    users: Users,
    limits: PublishLimits,
}

impl ActivityApi {
    /// Serves `hub` to callers authenticated by `auth`.
    pub fn new(hub: Hub, auth: Auth, users: Users, limits: PublishLimits) -> ActivityApi {
        ActivityApi {
            hub,
            auth,
            users,
            limits,
        }
    }

    /// An authenticated caller allowed to publish.
    async fn publisher<T>(&self, req: &Request<T>) -> Result<Principal, ApiError> {
        let caller = self.auth.authenticate(req.metadata()).await?;
        authorize(caller.as_ref(), Call::Publish, false)?;
        caller.ok_or_else(|| ApiError::Unauthenticated("missing credentials".into()))
    }

    /// The recipient a read names (0 = the caller), after authorization; it must exist.
    async fn recipient(&self, caller: Option<&Principal>, user_id: u64) -> Result<u64, ApiError> {
        let recipient = if user_id == 0 {
            caller.map_or(0, |p| p.user_id)
        } else {
            user_id
        };
        authorize(caller, Call::ReadEvents { recipient }, false)?;
        if self.users.get(recipient).await?.is_none() {
            return Err(ApiError::NotFound(format!("user {recipient} not found").into()));
        }
        Ok(recipient)
    }
}

fn respond(outcome: PublishOutcome) -> Result<pb::PublishResponse, ApiError> {
    let deliveries = |d: Vec<(u64, u64)>| {
        d.into_iter()
            .map(|(user_id, seq)| pb::Delivery { user_id, seq })
            .collect()
    };
    match outcome {
        PublishOutcome::Committed { body, deliveries: d } => Ok(pb::PublishResponse {
            event_id: body.event_id.clone(),
            deliveries: deliveries(d),
            duplicate: false,
        }),
        PublishOutcome::Duplicate {
            event_id,
            deliveries: d,
        } => Ok(pb::PublishResponse {
            event_id,
            deliveries: deliveries(d),
            duplicate: true,
        }),
        PublishOutcome::MissingRecipient(id) => Err(ApiError::NotFound(
            format!("recipient_ids: user {id} not found").into(),
        )),
    }
}

#[tonic::async_trait]
impl ActivityService for ActivityApi {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let caller = self.publisher(&req).await?;
        let event = convert::new_event(req.into_inner(), caller.user_id, self.limits)?;
        let outcome = self.hub.publish(event).await?;
        Ok(Response::new(respond(outcome)?))
    }

    type PublishStreamStream = ResponseStream<pb::PublishResponse>;

    async fn publish_stream(
        &self,
        req: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let caller = self.publisher(&req).await?;
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let hub = self.hub.clone();
        let limits = self.limits;
        tokio::spawn(async move {
            let mut in_flight = FuturesOrdered::new();
            let mut reading = true;
            let mut index: u64 = 0;
            // A broken request stream (e.g. an oversized message) ends the call with its
            // status once the publishes before it are answered.
            let mut broken = None;
            while reading || !in_flight.is_empty() {
                tokio::select! {
                    biased;
                    _ = tx.closed() => return,
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                        let answer: Result<pb::PublishResponse, ApiError> = done;
                        let failed = answer.is_err();
                        if tx.send(answer.map_err(Status::from)).await.is_err() || failed {
                            return;
                        }
                    }
                    msg = inbound.next(), if reading && in_flight.len() < PIPELINE_DEPTH => match msg {
                        Some(Ok(r)) => {
                            let i = index;
                            index += 1;
                            match convert::new_event(r, caller.user_id, limits) {
                                Ok(ev) => {
                                    let outcome = hub.enqueue(ev);
                                    let answer: Answer =
                                        Box::pin(async move { outcome.await.and_then(respond) });
                                    in_flight.push_back(answer);
                                }
                                Err(e) => {
                                    // Answer what came before, then end with this error.
                                    reading = false;
                                    let e = with_index(e, i);
                                    let answer: Answer = Box::pin(async move { Err(e) });
                                    in_flight.push_back(answer);
                                }
                            }
                        }
                        Some(Err(status)) => {
                            reading = false;
                            broken = Some(status);
                        }
                        None => reading = false,
                    },
                }
            }
            if let Some(status) = broken {
                let _ = tx.send(Err(status)).await;
            }
        });
        let token = self.hub.shutdown_token().clone();
        Ok(Response::new(end_on_shutdown(ReceiverStream::new(rx), token)))
    }

    type SubscribeStream = ResponseStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        req: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.auth.authenticate(req.metadata()).await?;
        let Some(principal) = caller else {
            authorize(None, Call::ReadEvents { recipient: 0 }, false)?;
            return Err(Status::unauthenticated("missing credentials"));
        };
        let mut inbound = req.into_inner();
        let start = first_start(inbound.next().await)?;
        let params = convert::start(start, principal.user_id, self.hub.config().default_window)?;
        self.recipient(Some(&principal), params.user_id).await?;
        let opened = self
            .hub
            .subscribe(params, |out| Ok(pb::SubscribeResponse::from(out)))
            .await?;
        let closed = opened.closed;
        forward_requests(
            inbound,
            async move { closed.closed().await },
            opened.handle,
            after_start,
        );
        Ok(Response::new(opened.stream))
    }

    type FollowStream = ResponseStream<pb::SubscribeResponse>;

    async fn follow(&self, req: Request<pb::FollowRequest>) -> Result<Response<Self::FollowStream>, Status> {
        let caller = self.auth.authenticate(req.metadata()).await?;
        let Some(principal) = caller else {
            authorize(None, Call::ReadEvents { recipient: 0 }, false)?;
            return Err(Status::unauthenticated("missing credentials"));
        };
        let start = req
            .into_inner()
            .start
            .ok_or_else(|| ApiError::invalid("start", "is required"))?;
        let params = convert::start(start, principal.user_id, self.hub.config().default_window)?;
        if params.ack_mode == AckMode::Explicit && params.consumer_id.is_none() {
            return Err(ApiError::invalid(
                "start.consumer_id",
                "is required with ACK_MODE_EXPLICIT (the default): Ack calls name the consumer",
            )
            .into());
        }
        self.recipient(Some(&principal), params.user_id).await?;
        let opened = self
            .hub
            .subscribe(params, |out| Ok(pb::SubscribeResponse::from(out)))
            .await?;
        // No request stream: the call lasts until the client goes or the stream ends.
        let (closed, handle) = (opened.closed, opened.handle);
        tokio::spawn(async move {
            closed.closed().await;
            handle.client_gone();
        });
        Ok(Response::new(opened.stream))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::Cursor>, Status> {
        let caller = self.auth.authenticate(req.metadata()).await?;
        let r = req.into_inner();
        convert::validate_consumer_id("consumer_id", &r.consumer_id)?;
        let recipient = self.recipient(caller.as_ref(), r.user_id).await?;
        let (acked_seq, head_seq) = self.hub.ack(recipient, &r.consumer_id, r.seq).await?;
        Ok(Response::new(pb::Cursor {
            user_id: recipient,
            consumer_id: r.consumer_id,
            acked_seq,
            head_seq,
        }))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let caller = self.auth.authenticate(req.metadata()).await?;
        let r = req.into_inner();
        let (limit, types) = convert::list_query(&r)?;
        let recipient = self.recipient(caller.as_ref(), r.user_id).await?;
        let (events, head_seq, has_more) = self
            .hub
            .list_events(recipient, r.after_seq, &types, limit)
            .await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(convert::event).collect(),
            head_seq,
            has_more,
        }))
    }

    async fn get_cursor(&self, req: Request<pb::GetCursorRequest>) -> Result<Response<pb::Cursor>, Status> {
        let caller = self.auth.authenticate(req.metadata()).await?;
        let r = req.into_inner();
        convert::validate_consumer_id("consumer_id", &r.consumer_id)?;
        let recipient = self.recipient(caller.as_ref(), r.user_id).await?;
        let (acked_seq, head_seq) = self.hub.cursor(recipient, &r.consumer_id).await?;
        Ok(Response::new(pb::Cursor {
            user_id: recipient,
            consumer_id: r.consumer_id,
            acked_seq,
            head_seq,
        }))
    }
}

/// The Start that must open a Subscribe stream.
#[doc(hidden)] // public for the fuzz targets
pub fn first_start(first: Option<Result<pb::SubscribeRequest, Status>>) -> Result<pb::Start, Status> {
    match first {
        Some(Ok(pb::SubscribeRequest {
            msg: Some(subscribe_request::Msg::Start(s)),
        })) => Ok(s),
        Some(Ok(_)) => {
            Err(ApiError::invalid("start", "the first message of a stream must be a Start").into())
        }
        Some(Err(s)) => Err(s),
        None => Err(ApiError::invalid("start", "the stream ended before its Start").into()),
    }
}

/// What a Subscribe message after the Start tells the subscription actor.
#[doc(hidden)] // public for the fuzz targets
pub fn after_start(r: pb::SubscribeRequest) -> ClientInput {
    match r.msg {
        Some(subscribe_request::Msg::Ack(a)) => ClientInput::Ack(a.seq),
        Some(subscribe_request::Msg::Start(_)) => ClientInput::Invalid(
            ApiError::invalid("start", "a stream takes exactly one Start; send Acks after it").into(),
        ),
        None => ClientInput::Invalid(ApiError::invalid("msg", "must be a Start or an Ack").into()),
    }
}

/// A publish's answer, resolved once its batch commits.
type Answer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<pb::PublishResponse, ApiError>> + Send>>;

/// Prefixes the position of the offending request in a PublishStream.
#[doc(hidden)] // public for the fuzz targets
pub fn with_index(e: ApiError, i: u64) -> ApiError {
    match e {
        ApiError::InvalidArgument { field, reason } => ApiError::InvalidArgument {
            field: format!("request {i}: {field}").into(),
            reason,
        },
        ApiError::ResourceExhausted(m) => ApiError::ResourceExhausted(format!("request {i}: {m}").into()),
        other => other,
    }
}
