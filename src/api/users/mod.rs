//! `user.v1.UserService`: the handlers ([`service`]) and the wire <-> domain conversions
//! with the keyset page token format ([`convert`]).

pub mod convert;
pub mod service;
