//! The service-level error and the one place it becomes a `tonic::Status`.
//!
//! Shared by the layers above the store (users, auth, hub and the edge), not part of the
//! edge: it imports only [`crate::model`] and [`crate::store`], whose errors
//! ([`Invalid`], [`StoreError`]) convert into it. Handlers return [`ApiError`] with `?`.
//! Internal details (SQL, file paths, driver messages) are logged here once and never
//! sent to clients.

use std::borrow::Cow;

use tonic::{Code, Status};

use crate::{model::Invalid, store::StoreError};

pub use activity_hub_proto::RETRY_AFTER_MS;

/// What went wrong, in the terms of the spec's error table.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is invalid; the message names the field.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The offending field, as named in the proto.
        field: Cow<'static, str>,
        /// What is wrong with it.
        reason: Cow<'static, str>,
    },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(Cow<'static, str>),
    /// A unique value is taken.
    #[error("{0}")]
    AlreadyExists(Cow<'static, str>),
    /// Missing or invalid credentials.
    #[error("{0}")]
    Unauthenticated(Cow<'static, str>),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    PermissionDenied(Cow<'static, str>),
    /// A rate or size limit was hit.
    #[error("{0}")]
    ResourceExhausted(Cow<'static, str>),
    /// A rate limit refused the call; the status carries `retry-after-ms` metadata.
    #[error("rate limited: {what}; retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited {
        /// Which limit, in words.
        what: &'static str,
        /// When a retry may succeed.
        retry_after: std::time::Duration,
    },
    /// The system is not in a state to perform the call.
    #[error("{0}")]
    FailedPrecondition(Cow<'static, str>),
    /// The call was ended in favour of another (e.g. a newer stream).
    #[error("{0}")]
    Aborted(Cow<'static, str>),
    /// Shutting down or the store is unreachable; retry elsewhere or later.
    #[error("{0}")]
    Unavailable(Cow<'static, str>),
    /// The deadline passed.
    #[error("{0}")]
    DeadlineExceeded(Cow<'static, str>),
    /// A bug or an unexpected failure; the source is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// INVALID_ARGUMENT naming `field`.
    pub fn invalid(field: impl Into<Cow<'static, str>>, reason: impl Into<Cow<'static, str>>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::ResourceExhausted(_) | ApiError::RateLimited { .. } => Code::ResourceExhausted,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::InvalidArgument {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("not found".into()),
            StoreError::UniqueViolation => ApiError::AlreadyExists("already exists".into()),
            StoreError::Unavailable(src) => {
                tracing::warn!(error = %src, "store unavailable");
                ApiError::Unavailable("the store is unavailable; retry later".into())
            }
            StoreError::CommitUnknown(src) => {
                tracing::warn!(error = %src, "store went away during a commit");
                ApiError::Unavailable("the store went away during the write; its outcome is unknown".into())
            }
            StoreError::Full(src) => {
                tracing::warn!(error = %src, "store full");
                ApiError::ResourceExhausted("the store is full; retry once space is freed".into())
            }
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = e.code();
        let message = e.to_string();
        match e {
            ApiError::Internal(src) => {
                tracing::error!(error = %src, "internal error");
                Status::new(Code::Internal, "internal error")
            }
            ApiError::RateLimited { retry_after, .. } => {
                let mut status = Status::new(code, message);
                let ms = retry_after.as_millis().max(1).to_string();
                if let Ok(v) = ms.parse() {
                    status.metadata_mut().insert(RETRY_AFTER_MS, v);
                }
                status
            }
            _ => Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_source() {
        let e = ApiError::Internal("SELECT secret FROM /var/lib/x.db failed".into());
        let s = Status::from(e);
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error");
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let s = Status::from(ApiError::invalid("email", "is required"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "email: is required");
    }
}
