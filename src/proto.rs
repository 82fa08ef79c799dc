//! Generated protobuf and gRPC code, one module per package. The rest of the crate
//! converts to domain types at the service edge.
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{prost::Message, ProstDecoder, ProstEncoder};

/// Bytes each call or stream reserves up front to encode, and to decode, messages.
pub const CODEC_BUFFER_BYTES: usize = 1024;

/// The prost codec of every generated client and server (`codec_path` in `build.rs`),
/// with [`CODEC_BUFFER_BYTES`] buffers instead of tonic's 8 KiB ones. A subscription
/// holds both buffers for as long as it is open, so at tens of thousands of idle streams
/// the default costs memory for nothing: this service's messages are mostly well under
/// 1 KiB, and a buffer grows when a message needs more.
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

fn lean() -> BufferSettings {
    // 32 KiB: tonic's default for when an encoder yields to let others run.
    BufferSettings::new(CODEC_BUFFER_BYTES, 32 * 1024)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(lean())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(lean())
    }
}

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
