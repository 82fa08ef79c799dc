//! The domain's plain types, shared by every layer above: users, roles and statuses,
//! the authenticated principal, user change notifications, and the parameters and
//! products of an event subscription. Also the spec's validation rules for user fields,
//! whose failures are [`Invalid`].
//!
//! The leaf of the crate: it imports nothing else from it (a unit test in `lib.rs`
//! checks), holds no I/O, and knows nothing of protobuf, the store or the actors. The
//! event records themselves (`NewEvent`, `StoredEvent`) live with the store that writes
//! them ([`crate::store::events`]).

mod change;
mod subscription;
mod user;

use std::borrow::Cow;

pub use change::{ChangeKind, UserChange, WatchChange};
pub use subscription::{AckMode, StartFrom, SubInfo, SubscribeParams, Subscribed};
#[doc(hidden)]
pub use user::sample_user;
pub use user::{
    normalize_email, normalize_username, validate_avatar_url, validate_email, validate_password,
    validate_preferences, validate_text, validate_username, Principal, Role, Roles, Status, User,
};

/// A value that breaks one of the spec's rules: which field, and why. The edge reports it
/// as INVALID_ARGUMENT (`crate::error::ApiError` converts from it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The offending field, as named in the proto.
    pub field: Cow<'static, str>,
    /// What is wrong with it.
    pub reason: Cow<'static, str>,
}

impl Invalid {
    /// `field` is invalid because of `reason`.
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Invalid {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
