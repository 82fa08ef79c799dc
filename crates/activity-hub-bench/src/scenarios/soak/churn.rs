//! One soak round after another: open the round's subscriptions, publish its events
//! as planned, read and check every one, close it all, and the logins beside it.

use std::collections::HashMap;

use super::*;
use activity_hub_client::proto::activity::v1::PublishResponse;

/// The users and where each one's stream stands.
pub(super) struct Churn<'a> {
    pub(super) t: &'a Target,
    pub(super) a: &'a BenchArgs,
    pub(super) users: Arc<Vec<u64>>,
    pub(super) index: HashMap<u64, usize>,
    /// `users[..durable]` are durable consumers.
    pub(super) durable: usize,
    /// The last seq each user has been sent (by index).
    pub(super) last: Vec<u64>,
    pub(super) events: u64,
    pub(super) base: Instant,
    pub(super) first: FirstError,
    /// Progress: rounds done and events received, over the whole run.
    pub(super) rounds: Arc<AtomicU64>,
    pub(super) received: Arc<AtomicU64>,
    /// The round (counted from 1) that failed or lost events, if one did.
    pub(super) broken: Option<u64>,
}

impl Churn<'_> {
    /// Rounds until `until` (the round under way finishes), one per `slot` at most; stops
    /// early after a round that failed or lost events (later rounds would build on a
    /// broken state).
    pub(super) async fn phase(
        &mut self,
        until: Instant,
        slot: Duration,
        next: &mut Instant,
        tally: &mut Tally,
    ) -> Result<(), String> {
        loop {
            let now = Instant::now();
            if now >= until || self.broken.is_some() || crate::stop::requested() {
                return Ok(());
            }
            if *next > now {
                tokio::select! {
                    _ = tokio::time::sleep_until((*next).min(until).into()) => {}
                    _ = crate::stop::wait() => {}
                }
                continue;
            }
            // A round that takes longer than a slot is followed at once, with no
            // catching up on the rounds it delayed.
            *next = now + slot;
            let round = self.rounds.load(Ordering::Relaxed);
            let (failed, lost) = (tally.failed, tally.lost);
            self.round(round, tally).await?;
            tally.rounds += 1;
            self.rounds.fetch_add(1, Ordering::Relaxed);
            if (tally.failed, tally.lost) != (failed, lost) {
                self.broken = Some(self.rounds.load(Ordering::Relaxed));
            }
        }
    }

    /// One round: open, publish, read, close, plus the logins.
    pub(super) async fn round(&mut self, round: u64, tally: &mut Tally) -> Result<(), String> {
        let (t, a) = (self.t, self.a);
        let n = self.users.len();
        let channels = t
            .channels(a.connections.unwrap_or(n.div_ceil(a.streams_per_connection)))
            .await?;
        let plain_mode = match a.ack {
            Acks::Explicit => AckMode::Explicit,
            Acks::None => AckMode::None,
        };
        let (index, durable) = (&self.index, self.durable);
        let start = |user_id: u64| {
            if index[&user_id] < durable {
                Start {
                    user_id,
                    consumer_id: CONSUMER.into(),
                    ack_mode: AckMode::Explicit as i32,
                    start_from: StartFrom::Cursor as i32,
                    ..Default::default()
                }
            } else {
                Start {
                    user_id,
                    ack_mode: plain_mode as i32,
                    start_from: StartFrom::Latest as i32,
                    ..Default::default()
                }
            }
        };
        let subs = open_subs(t, a, &channels, &self.users, start, OPEN_BURST, None).await?;

        // Event j of this round goes to user (offset + j) % n, so that rounds of fewer
        // events than users still reach every user in turn.
        let offset = (round.wrapping_mul(self.events) % n as u64) as usize;
        let mut until = self.last.clone();
        let plan: Vec<(u64, u64)> = (0..self.events as usize)
            .map(|j| {
                let i = (offset + j) % n;
                until[i] += 1;
                (self.users[i], until[i])
            })
            .collect();

        let mut readers = JoinSet::new();
        // Events each one gets again after resuming (its last acks overtaken by the close).
        let mut again = vec![0u64; n];
        for sub in subs {
            let i = self.index[&sub.user];
            let after = sub.subscribed.resume_after;
            if after > self.last[i] {
                // It starts past events it never received.
                tally.lost += after - self.last[i];
                self.first.set(|| {
                    format!(
                        "user {}: resumed after seq {after}, but had received up to {}",
                        sub.user, self.last[i]
                    )
                });
            } else {
                again[i] = self.last[i] - after;
                tally.redelivered += again[i];
            }
            let ack = (i < durable || a.ack == Acks::Explicit).then_some(a.ack_every);
            readers.spawn(read_until(
                sub,
                until[i],
                ack,
                self.base,
                a.stall_timeout,
                self.received.clone(),
            ));
        }
        let publishing = publish_plan(t, a, plan, self.base, &self.first);
        let logins = t.create_and_login(&channels[0], super::super::logins(a));
        let (published, (login_failures, login_error), seen) =
            tokio::join!(publishing, logins, join_all(readers));
        let (ok, refused) = published?;
        tally.published += ok;
        tally.failed += refused.values().sum::<u64>() + login_failures;
        tally.logins += super::super::logins(a) as u64;
        if let Some(e) = login_error {
            self.first.set(|| e);
        }
        for s in seen? {
            let i = self.index[&s.sub.user];
            // Publishes refused (or answered off plan) never reached the stream: the
            // subscriber waits for them in vain, but they are failures, not lost events.
            let due = until[i] - refused.get(&s.sub.user).copied().unwrap_or(0);
            let short = until[i].saturating_sub(s.last);
            tally.lost += s.lost - short + due.saturating_sub(s.last);
            tally.redelivered += s.redelivered;
            tally.delivered += s.got.saturating_sub(again[i]);
            for v in s.samples.iter().skip(again[i] as usize) {
                let _ = tally.latency.record((*v).max(1));
            }
            if let Some(e) = s.error {
                tally.failed += 1;
                self.first.set(|| e);
            } else if s.last != until[i] {
                tally.failed += 1;
                self.first.set(|| {
                    format!(
                        "user {}: received up to seq {}, but was sent up to {}",
                        s.sub.user, s.last, until[i]
                    )
                });
            }
        }
        self.last = until;
        // Dropping the readers' subscriptions and the connections closes them.
        Ok(())
    }
}

/// Publishes one event per `plan` entry (recipient, the seq it must get) over one
/// PublishStream on a connection of its own, checking each answer against the plan;
/// returns how many were answered as planned, and per recipient how many were not.
async fn publish_plan(
    t: &Target,
    a: &BenchArgs,
    plan: Vec<(u64, u64)>,
    base: Instant,
    first: &FirstError,
) -> Result<(u64, HashMap<u64, u64>), String> {
    let mut client = ActivityServiceClient::new(t.channel().await?);
    let recipients: Vec<u64> = plan.iter().map(|p| p.0).collect();
    let size = a.payload_size;
    let reqs = recipients.into_iter().map(move |u| PublishRequest {
        recipient_ids: vec![u],
        r#type: "bench.soak".into(),
        payload: stamped(base.elapsed().as_micros() as u64, size),
        ..Default::default()
    });
    let mut ok = 0u64;
    let mut as_plan = vec![false; plan.len()];
    match client.publish_stream(t.req(tokio_stream::iter(reqs))).await {
        Ok(out) => {
            let mut out = out.into_inner();
            let mut expected = plan.iter().enumerate();
            loop {
                let Ok(answer) = tokio::time::timeout(a.stall_timeout, out.message()).await else {
                    first.set(|| {
                        format!(
                            "PublishStream: no answer for {:?} after {ok} of {} publishes",
                            a.stall_timeout,
                            plan.len()
                        )
                    });
                    break;
                };
                match answer {
                    Ok(Some(r)) => {
                        let Some((j, &(user, seq))) = expected.next() else {
                            first.set(|| format!("PublishStream answered more than asked: {r:?}"));
                            break;
                        };
                        if as_planned(&r, user, seq) {
                            ok += 1;
                            as_plan[j] = true;
                        } else {
                            first.set(|| format!("publish to user {user} (seq {seq} due) answered {r:?}"));
                        }
                    }
                    Ok(None) => break,
                    Err(s) => {
                        first.set(|| format!("PublishStream: {}", status_text(&s)));
                        break;
                    }
                }
            }
        }
        Err(s) => first.set(|| format!("PublishStream: {}", status_text(&s))),
    }
    let mut refused = HashMap::new();
    for (&(user, _), _) in plan.iter().zip(&as_plan).filter(|(_, &fine)| !fine) {
        *refused.entry(user).or_default() += 1;
    }
    Ok((ok, refused))
}

fn as_planned(r: &PublishResponse, user: u64, seq: u64) -> bool {
    !r.duplicate && matches!(r.deliveries.as_slice(), [d] if d.user_id == user && d.seq == seq)
}
