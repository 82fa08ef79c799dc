//! Generated protobuf and gRPC code, one module per package. The rest of the crate
//! converts to domain types at the service edge.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// `user.v1`
pub mod user {
    /// `user.v1`
    pub mod v1 {
        tonic::include_proto!("user.v1");
    }
}

/// `auth.v1`
pub mod auth {
    /// `auth.v1`
    pub mod v1 {
        tonic::include_proto!("auth.v1");
    }
}

/// `activity.v1`
pub mod activity {
    /// `activity.v1`
    pub mod v1 {
        tonic::include_proto!("activity.v1");
    }
}

/// Encoded descriptors of all three packages, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("activity_hub_descriptor");
