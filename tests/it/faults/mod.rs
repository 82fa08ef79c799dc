//! Store faults injected deterministically under load, on both stores: a full store
//! (SQLite's `max_page_count`; on PostgreSQL a deferred trigger that fails COMMIT with
//! `disk_full`), a store that goes away (SQLite's write lock held by another process's
//! connection; PostgreSQL behind a TCP proxy the test cuts and refuses), and retention
//! running every 100 ms under full publish load.
//!
//! Each test keeps a ledger of every publish the server acknowledged and then proves:
//! nothing acknowledged is lost, no seq is given twice, nothing unacknowledged was
//! stored (no phantom), every recipient's history is 1..=head with the head readers see,
//! a live subscriber saw the same events gap-free, and the same after a restart. Failed
//! publishes must carry RESOURCE_EXHAUSTED or UNAVAILABLE, nothing else.

//!
//! - `load`: the publishers, the ledger, the live watcher and the verification.
//! - `full`: a full store and a full disk.
//! - `away`: a store that goes away and comes back.
//! - `retention`: retention every 100 ms under publish load.

mod away;
mod full;
mod load;
mod retention;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use activity_hub::proto::activity::v1::{
    subscribe_response, AckMode, ListEventsRequest, PublishRequest, PublishResponse, Start, StartFrom,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::{transport::Channel, Code};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    activity::dsl::{client, event_req, Sub},
    helpers::{authed, bulk_users, Backend, TestDb, TestServer},
};

/// What the publishers saw: every acknowledged answer and the codes of the failures.
use load::*;
