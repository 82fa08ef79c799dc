//! `auth.v1.AuthService` and the bearer token every authenticated request carries.
//!
//! Input: `[rpc, flags, caller, body...]`. rpc % 2: 0 Login (body = LoginRequest), 1 the
//! access token of the `authorization` metadata (body = the token text): it is verified
//! as is, and a token issued to `caller` is verified with the body appended. With the
//! high bit of rpc, a LoginRequest is built field by field. flags are unused.
#![no_main]

use std::{sync::OnceLock, time::Duration};

use activity_hub::{
    api::auth::credentials,
    auth::token::Tokens,
    model::{sample_user, Role, Roles, User},
    proto::auth::v1::{login_request::Identifier, LoginRequest},
    store::UserKey,
};
use activity_hub_fuzz::{refused, Input};
use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::split(data) else {
        return;
    };
    match input.rpc % 2 {
        0 => {
            if let Ok(req) = LoginRequest::decode(&*input.unary(build_login)) {
                login(req);
            }
        }
        _ => token(&input),
    }
});

fn build_login(u: &mut Unstructured<'_>) -> Result<LoginRequest> {
    let identifier = match u.int_in_range(0..=2)? {
        0 => None,
        1 => Some(Identifier::Email(u.arbitrary()?)),
        _ => Some(Identifier::Username(u.arbitrary()?)),
    };
    Ok(LoginRequest {
        identifier,
        password: u.arbitrary()?,
    })
}

fn login(req: LoginRequest) {
    let wire = req.clone();
    match credentials(req) {
        Ok((key, password)) => {
            assert!(!password.is_empty() && password == wire.password);
            match (key, wire.identifier) {
                (UserKey::Email(k), Some(Identifier::Email(w)))
                | (UserKey::Username(k), Some(Identifier::Username(w))) => {
                    assert!(!k.is_empty() && k == w)
                }
                (k, w) => panic!("key {k:?} from identifier {w:?}"),
            }
        }
        Err(e) => {
            let named = match &wire.identifier {
                Some(Identifier::Email(s) | Identifier::Username(s)) => !s.is_empty(),
                None => false,
            };
            assert!(
                !named || wire.password.is_empty(),
                "refused a complete login: {e}"
            );
            refused(e, &[Code::InvalidArgument]);
        }
    }
}

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| Tokens::new(b"fuzz-secret-fuzz-secret-fuzz-sec", Duration::from_secs(3600)))
}

fn token(input: &Input<'_>) {
    let Ok(text) = std::str::from_utf8(input.body) else {
        return;
    };
    // Nobody but this server can sign: an arbitrary text is refused, unless it is a
    // token this target issued itself (ids 1-255) and remembered.
    match tokens().verify(text) {
        Ok(v) => assert!(
            (1..=255).contains(&v.user_id) && *v.session_id == *format!("s{}", v.user_id),
            "a forged token named user {} session {}",
            v.user_id,
            v.session_id
        ),
        Err(e) => refused(e, &[Code::Unauthenticated]),
    }
    let id = input.caller_id();
    let session = format!("s{id}");
    let (issued, _) = tokens().issue(&user(id), &session).expect("a token");
    let got = tokens().verify(&issued).expect("its own token");
    assert_eq!((got.user_id, &*got.session_id), (id, session.as_str()));
    if !text.is_empty() {
        let longer = format!("{issued}{text}");
        if let Ok(got) = tokens().verify(&longer) {
            panic!(
                "a signed token with {text:?} appended was accepted as user {}",
                got.user_id
            );
        }
    }
}

fn user(id: u64) -> User {
    User {
        roles: Roles::only(Role::Publisher),
        ..sample_user(id, 1)
    }
}
