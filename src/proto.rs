//! The wire types: the messages and client stubs of `activity-hub-proto`, plus the service
//! traits this package generates on top of them (`build.rs`) and the descriptors that
//! reflection serves. Only the tonic edge converts between these and domain types.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

pub use activity_hub_proto::{LeanCodec, CODEC_BUFFER_BYTES};

/// `user.v1`
pub mod user {
    /// `user.v1`
    pub mod v1 {
        pub use activity_hub_proto::user::v1::*;
        tonic::include_proto!("user.v1");
    }
}

/// `auth.v1`
pub mod auth {
    /// `auth.v1`
    pub mod v1 {
        pub use activity_hub_proto::auth::v1::*;
        tonic::include_proto!("auth.v1");
    }
}

/// `activity.v1`
pub mod activity {
    /// `activity.v1`
    pub mod v1 {
        pub use activity_hub_proto::activity::v1::*;
        tonic::include_proto!("activity.v1");
    }
}

/// Encoded descriptors of all three packages, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("activity_hub_descriptor");
