//! Rate limits: per user, and per Login address + identifier.

use super::*;

fn retry_after_ms(s: &tonic::Status) -> u64 {
    s.metadata()
        .get("retry-after-ms")
        .unwrap_or_else(|| panic!("no retry-after-ms on {s:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_user_is_limited_while_another_is_not() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--user-rate-limit", "5", "--user-rate-burst", "5"]).await;
    let (flooder, flood_token) = s.user_with_token("flooder", &[]).await;
    let (calm, calm_token) = s.user_with_token("calm", &[]).await;
    let mut users = s.users();
    let mut limited = None;
    for _ in 0..20 {
        match users
            .get_user(authed(crate::helpers::by_id(flooder.id), &flood_token))
            .await
        {
            Ok(_) => {}
            Err(e) => {
                limited = Some(e);
                break;
            }
        }
    }
    let e = limited.expect("20 calls at once exceed a burst of 5");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("rate limited"), "{e:?}");
    let wait = retry_after_ms(&e);
    assert!(
        wait > 0 && wait <= 200,
        "5/s refills a token within 200 ms: {wait}"
    );
    // The other user is not affected.
    for _ in 0..5 {
        users
            .get_user(authed(crate::helpers::by_id(calm.id), &calm_token))
            .await
            .expect("another user is not limited");
    }
    // The hint is honest: after waiting it, the flooder gets through again.
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    users
        .get_user(authed(crate::helpers::by_id(flooder.id), &flood_token))
        .await
        .expect("after retry-after-ms the call succeeds");
    s.stop().await;
}

fn login_req(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        identifier: Some(Identifier::Email(email.into())),
        password: password.into(),
    }
}

async fn channel_from(s: &TestServer, local: &str) -> Channel {
    Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .local_address(Some(local.parse::<IpAddr>().unwrap()))
        .connect()
        .await
        .expect("connect from a second loopback address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_guessing_is_limited_per_address_and_identifier() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = TestServer::start(&db, &["--login-rate-limit", "3", "--login-rate-burst", "3"]).await;
    let (victim, _) = s.user_with_token("victim", &[]).await;
    let mut auth = AuthServiceClient::new(channel_from(&s, "127.0.0.3").await);
    for _ in 0..3 {
        assert_status(
            auth.login(login_req(&victim.email, "guess-guess")).await,
            Code::Unauthenticated,
            "invalid credentials",
        );
    }
    // Even the right password is refused now, from this address, for this account.
    let e = auth.login(login_req(&victim.email, PASSWORD)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("login attempts"), "{e:?}");
    let wait = retry_after_ms(&e);
    assert!(
        wait > 10_000 && wait <= 20_000,
        "3/min refills one attempt in 20 s: {wait}"
    );
    // The same address may still log in to another account ...
    auth.login(login_req(ADMIN_EMAIL, crate::helpers::ADMIN_PASSWORD))
        .await
        .expect("another identifier is not limited");
    // ... and the account owner, from another address, is not locked out.
    AuthServiceClient::new(channel_from(&s, "127.0.0.4").await)
        .login(login_req(&victim.email, PASSWORD))
        .await
        .expect("another address is not limited");
    s.stop().await;
}
