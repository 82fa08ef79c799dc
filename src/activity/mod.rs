//! `activity.v1.ActivityService`: the wire edge of the [`crate::hub`]. The service
//! authenticates, asks the auth policy, validates requests into hub types and converts
//! results back; the actors do the rest.

pub mod convert;
pub mod service;
