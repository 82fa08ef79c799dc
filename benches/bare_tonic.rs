//! A bare tonic server serving only `grpc.health.v1.Health`: the baseline that external
//! load generators (h2load, `../shared/tools/h2load-unary.sh`) measure beside the hub in
//! the same run, so reported figures are ratios rather than lone absolutes.
//!
//! `cargo bench --bench bare_tonic -- 127.0.0.1:50778` serves until killed.

use tonic::transport::Server;

fn main() {
    let addr = std::env::args()
        .skip(1)
        .find(|a| a.contains(':'))
        .unwrap_or_else(|| "127.0.0.1:50778".into())
        .parse()
        .expect("HOST:PORT");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (health, service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        println!("bare tonic health server on {addr}");
        Server::builder()
            .tcp_nodelay(true)
            .add_service(service)
            .serve(addr)
            .await
            .unwrap();
    });
}
