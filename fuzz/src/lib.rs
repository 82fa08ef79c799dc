//! What the fuzz targets share: the input layout, client streams as the server reads
//! them, and the checks every refused request must pass on its way to the client.
//!
//! Input of the request targets: `[rpc, flags, caller, message...]`. `rpc` picks the RPC
//! (modulo the service's count), `flags` and `caller` describe who calls and with which
//! server settings (each target documents its bits), and the rest is the request as it
//! arrives off the wire: one protobuf message for a unary call, length-delimited messages
//! for a client stream.
//!
//! When `rpc` has its high bit set, the rest is instead read field by field (with
//! `arbitrary`) into the request, which is then encoded and goes the same way. Byte-level
//! mutation of protobuf rarely keeps a length prefix right, so without this a string one
//! character past a limit is hard to reach; with it the fuzzer sets lengths directly.

use activity_hub::{
    auth::policy::{authorize, Call},
    error::ApiError,
    model::{Principal, Role, Roles},
};
use std::{borrow::Cow, collections::HashMap};

use arbitrary::{Result, Unstructured};
use prost::Message;
use tonic::Code;

/// Most messages a stream input is read into (each costs a validation pass).
pub const STREAM_MAX: usize = 256;

/// One fuzz input, split.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Which RPC (the target reduces it modulo its RPC count).
    pub rpc: u8,
    /// Target-specific settings bits.
    pub flags: u8,
    /// The caller's id byte.
    pub caller: u8,
    /// The request bytes.
    pub body: &'a [u8],
}

impl<'a> Input<'a> {
    /// `None` for inputs shorter than the header.
    pub fn split(data: &'a [u8]) -> Option<Input<'a>> {
        match data {
            [rpc, flags, caller, body @ ..] => Some(Input {
                rpc: *rpc,
                flags: *flags,
                caller: *caller,
                body,
            }),
            _ => None,
        }
    }

    /// Whether the body is read field by field (see the crate docs).
    pub fn structured(&self) -> bool {
        self.rpc & 0x80 != 0
    }

    /// The bytes of one request: the body, or a message built from it and encoded.
    pub fn unary<M: Message>(&self, build: fn(&mut Unstructured<'a>) -> Result<M>) -> Cow<'a, [u8]> {
        if !self.structured() {
            return Cow::Borrowed(self.body);
        }
        let mut u = Unstructured::new(self.body);
        Cow::Owned(build(&mut u).map(|m| m.encode_to_vec()).unwrap_or_default())
    }

    /// The bytes of a client stream: the body, or messages built from it and encoded
    /// length-delimited.
    pub fn stream<M: Message>(&self, build: fn(&mut Unstructured<'a>) -> Result<M>) -> Cow<'a, [u8]> {
        if !self.structured() {
            return Cow::Borrowed(self.body);
        }
        let mut u = Unstructured::new(self.body);
        let mut out = Vec::new();
        while !u.is_empty() {
            match build(&mut u) {
                Ok(m) => m.encode_length_delimited(&mut out).expect("a Vec grows"),
                Err(_) => break,
            }
        }
        Cow::Owned(out)
    }

    /// The caller's user id: never 0 (tokens name existing users).
    pub fn caller_id(&self) -> u64 {
        u64::from(self.caller).max(1)
    }

    /// Roles from four bits (`bits & 1` = USER, 2 = ADMIN, 4 = MODERATOR, 8 = PUBLISHER,
    /// as on the wire: role number n is bit n of the mask).
    pub fn roles(bits: u8) -> Roles {
        Roles(u32::from(bits & 0x0f) << 1)
    }
}

/// A client stream as the server reads it: length-delimited messages (the gRPC framing
/// already removed) until the bytes end or one fails to decode, which breaks the stream
/// with a status (`broken`). At most [`STREAM_MAX`] messages.
pub fn stream<M: Message + Default>(mut body: &[u8]) -> (Vec<M>, bool) {
    let mut out = Vec::new();
    while !body.is_empty() && out.len() < STREAM_MAX {
        match M::decode_length_delimited(&mut body) {
            Ok(m) => out.push(m),
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// A refused request: its code is one of `codes`, an INVALID_ARGUMENT names a field
/// first, and the status the client receives carries the same code and message and
/// encodes into HTTP/2 trailers.
pub fn refused(e: ApiError, codes: &[Code]) {
    let code = e.code();
    assert!(codes.contains(&code), "unexpected code {code:?} for {e}");
    let message = e.to_string();
    if let ApiError::InvalidArgument { field, .. } = &e {
        assert!(!field.is_empty(), "INVALID_ARGUMENT without a field: {message}");
        assert!(
            message.starts_with(&format!("{field}: ")),
            "message does not start with its field: {message}"
        );
    }
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), code);
    assert_eq!(status.message(), message);
    let http = status.into_http::<()>();
    let sent = http
        .headers()
        .get("grpc-status")
        .expect("a status header")
        .to_str()
        .expect("an ASCII status");
    assert_eq!(sent, (code as i32).to_string());
}

/// The principal a target's flags describe, or `None` for an anonymous call.
pub fn principal(authenticated: bool, input: &Input<'_>, role_bits: u8) -> Option<Principal> {
    authenticated.then(|| Principal {
        user_id: input.caller_id(),
        roles: Input::roles(role_bits),
        session_id: "fuzz".into(),
    })
}

/// [`authorize`], checked against the spec's table: admins may do everything; anonymous
/// callers only sign up as plain users when sign-up is open; everyone else reads and
/// changes only their own things (staff read and watch everyone, publishers publish).
/// A refusal is UNAUTHENTICATED for an anonymous caller, PERMISSION_DENIED otherwise.
pub fn authorized(caller: Option<&Principal>, call: Call, open_signup: bool) -> bool {
    let result = authorize(caller, call, open_signup);
    let expected = match caller {
        None => matches!(call, Call::CreateUser { elevated: false }) && open_signup,
        Some(p) if p.roles.has(Role::Admin) => true,
        Some(p) => {
            let me = p.user_id;
            let staff = p.roles.has(Role::Moderator);
            match call {
                Call::CreateUser { elevated } => open_signup && !elevated,
                Call::BulkCreateUsers => false,
                Call::GetUser { target } => staff || target == Some(me),
                Call::UpdateUser {
                    target,
                    sets_status,
                    sets_roles,
                } => target == me && !sets_status && !sets_roles,
                Call::DeleteUser { target } => target == Some(me),
                Call::ListUsers => staff,
                Call::WatchUser { target } => staff || target == me,
                Call::Publish => p.roles.has(Role::Publisher),
                Call::ReadEvents { recipient } => recipient == me,
                Call::OwnAccount => true,
                Call::EndSession { owner } => owner == me,
                Call::SetPassword => false,
            }
        }
    };
    match result {
        Ok(()) => {
            assert!(
                expected,
                "{call:?} allowed for {caller:?} (open sign-up {open_signup})"
            );
            true
        }
        Err(e) => {
            assert!(
                !expected,
                "{call:?} refused for {caller:?} (open sign-up {open_signup}): {e}"
            );
            let code = match (caller, call) {
                (None, Call::CreateUser { elevated: true }) if open_signup => Code::PermissionDenied,
                (None, _) => Code::Unauthenticated,
                (Some(_), _) => Code::PermissionDenied,
            };
            refused(e, &[code]);
            false
        }
    }
}

/// An enum field: mostly a small number (the defined values and a few past them),
/// sometimes any `i32`.
pub fn enum_value(u: &mut Unstructured<'_>) -> Result<i32> {
    let b: u8 = u.arbitrary()?;
    if b < 0xf0 {
        Ok(i32::from(b % 8))
    } else {
        u.arbitrary()
    }
}

/// A user id: mostly small (so it can match the caller), sometimes any `u64`.
pub fn user_id(u: &mut Unstructured<'_>) -> Result<u64> {
    let b: u8 = u.arbitrary()?;
    if b < 0xf0 {
        Ok(u64::from(b % 16))
    } else {
        u.arbitrary()
    }
}

/// Up to `max` items built by `item`.
pub fn list<'a, T>(
    u: &mut Unstructured<'a>,
    max: usize,
    mut item: impl FnMut(&mut Unstructured<'a>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| item(u)).collect()
}

/// A string map of up to `max` entries.
pub fn map(u: &mut Unstructured<'_>, max: usize) -> Result<HashMap<String, String>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| Ok((u.arbitrary()?, u.arbitrary()?))).collect()
}
