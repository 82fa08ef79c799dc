//! The tonic edge: the three gRPC services and the protobuf conversions. The only layer
//! below [`crate::server`] that speaks prost.
//!
//! Each handler authenticates ([`crate::auth::Auth`]), asks [`crate::auth::policy`],
//! turns the request into domain values (`convert`, with `From`/`TryFrom` where a type
//! maps onto another), calls [`crate::users::Users`] or [`crate::hub::Hub`], and converts
//! the result or the stream of results back to protobuf; errors become statuses in
//! [`crate::error`]. No business rule lives here.
//!
//! - [`users`] serves `user.v1.UserService`, including the hub's UserActivity stream;
//! - [`auth`] serves `auth.v1.AuthService/Login`;
//! - [`activity`] serves `activity.v1.ActivityService`.

pub mod activity;
pub mod auth;
pub mod users;
