//! `activity.v1.ActivityService`: the wire edge of the [`crate::hub`]. The handlers
//! ([`service`]) authenticate, ask the auth policy, validate requests into hub types and
//! convert results back ([`convert`]); the actors do the rest.

pub mod convert;
pub mod service;
