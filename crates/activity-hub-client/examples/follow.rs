//! A standalone application on `activity-hub-client` alone (no server code compiled in):
//! log in, then follow the user's own events on a durable consumer, printing and
//! acknowledging each one. Stop it and start it again: it resumes after the last event
//! it acknowledged, with nothing lost.
//!
//! ```text
//! cargo run -p activity-hub-client --example follow -- http://127.0.0.1:50051 alice@example.com
//! ```
//! The password is read from `HUB_PASSWORD`.

use activity_hub_client::{Client, ClientConfig, Delivery, SubscribeOptions};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(server), Some(login)) = (args.next(), args.next()) else {
        return Err("usage: follow SERVER_URL EMAIL (password in HUB_PASSWORD)".into());
    };
    let password = std::env::var("HUB_PASSWORD").map_err(|_| "set HUB_PASSWORD")?;

    // Several URLs may be given: calls are balanced and fail over between them.
    let client = Client::connect(ClientConfig::new(server.split(','))).await?;
    // A session: the client refreshes its access token by itself, so this can run for
    // longer than the token's TTL.
    client.use_session(&client.login_session(&login, &password).await?);

    let mut events = client.subscribe(SubscribeOptions::consumer("follow-example"));
    while let Some(item) = events.next().await {
        let event = match item? {
            Delivery::Event(event) => event,
            Delivery::Pruned(gap) => {
                eprintln!(
                    "warning: {} events were pruned before this consumer read them",
                    gap.count()
                );
                continue;
            }
        };
        println!(
            "{:>6} {:<20} {}",
            event.seq,
            event.r#type,
            String::from_utf8_lossy(&event.payload)
        );
        // Acks are cumulative: everything up to this seq is done.
        events.ack(event.seq);
    }
    Ok(())
}
