//! activity-hub's wire types, for servers and clients alike: the protobuf messages and
//! gRPC client stubs of `user.v1`, `auth.v1` and `activity.v1` (generated from the
//! workspace's `proto/` folder), the codec every stub uses ([`LeanCodec`]), and the
//! metadata keys and limits the contract (`API.md`) names.
//!
//! It holds no behaviour: the client library is `activity-hub-client`, the server the
//! `activity-hub` package, which generates its service traits on top of these messages.
#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms, unreachable_pub)]

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{prost::Message, ProstDecoder, ProstEncoder};

/// Response metadata key: milliseconds after which a rate-limited or shed call may
/// succeed.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Request and response metadata key of the request id: a client may set it; the server
/// answers with the one it used (the client's, or a new one) and logs it.
pub const REQUEST_ID: &str = "x-request-id";

/// Request metadata key of the bearer token (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// The largest `Start.window` a server accepts (unacked events in flight per stream).
pub const MAX_WINDOW: u32 = 10_000;

/// Bytes each call or stream reserves up front to encode, and to decode, messages.
pub const CODEC_BUFFER_BYTES: usize = 1024;

/// The prost codec of every generated client and server, with [`CODEC_BUFFER_BYTES`]
/// buffers instead of tonic's 8 KiB ones. A subscription holds both buffers for as long
/// as it is open, so at tens of thousands of idle streams the default costs memory for
/// nothing: this service's messages are mostly well under 1 KiB, and a buffer grows when
/// a message needs more.
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

/// `user.v1`: accounts, and the UserActivity stream of user lifecycle events.
pub mod user {
    /// `user.v1`
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        tonic::include_proto!("user.v1");
    }
}

/// `auth.v1`: Login.
pub mod auth {
    /// `auth.v1`
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        tonic::include_proto!("auth.v1");
    }
}

/// `activity.v1`: publishing, subscribing and history.
pub mod activity {
    /// `activity.v1`
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
        tonic::include_proto!("activity.v1");
    }
}
