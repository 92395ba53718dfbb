//! Revocation, refresh-token families and WebSocket tickets in a real
//! `redis-server` started by the test: shared by two instances, and the
//! failure policy when Redis dies.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_auth::refresh::{RefreshError, RefreshTokens};
use palisade_auth::revocation::{RedisRevocationStore, RevocationFailure, RevocationStore};
use palisade_auth::ticket::WsTickets;
use palisade_auth::{AuthFailure, JwtVerifier, RedisRefreshStore, RedisTicketStore};
use palisade_core::principal::Principal;
use palisade_redis::testing::RedisServer;
use palisade_redis::{RedisConfig, RedisConnection};

fn connection(server: &RedisServer) -> RedisConnection {
    let config = RedisConfig::standalone(server.url()).call_timeout(Duration::from_millis(100));
    RedisConnection::connect_lazy(&config).expect("connection")
}

fn verifier(
    store: RedisRevocationStore,
    policy: RevocationFailure,
    issuer: &palisade_auth::issue::TokenIssuer,
) -> JwtVerifier {
    JwtVerifier::builder()
        .issuer(issuer.verifying_issuer())
        .revocation(store)
        .on_revocation_failure(policy)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_is_seen_by_the_other_at_once() {
    init();
    let server = RedisServer::start().expect("redis-server");
    let clock = clock_now();
    let issuer = issuer_with(rsa_key("k"), ISSUER, AUDIENCE, &clock);
    let store_a = RedisRevocationStore::new(connection(&server), "pal").unwrap();
    let store_b = RedisRevocationStore::new(connection(&server), "pal").unwrap();
    let a = verifier(store_a.clone(), RevocationFailure::FailClosed, &issuer);
    let b = verifier(store_b, RevocationFailure::FailClosed, &issuer);

    let token = issuer.mint("u1").sign().unwrap();
    assert!(a.verify(&token.token).await.is_ok());
    assert!(b.verify(&token.token).await.is_ok());
    store_a
        .revoke_token(&token.jti, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(b.verify(&token.token).await, Err(AuthFailure::Revoked));
    assert_eq!(a.verify(&token.token).await, Err(AuthFailure::Revoked));

    let other = issuer.mint("u2").sign().unwrap();
    let now = palisade_core::clock::Clock::unix_time(&clock).as_secs();
    store_a
        .revoke_subject("u2", now + 1, Duration::from_secs(3600))
        .await
        .unwrap();
    // An earlier sign-out time does not move it back.
    store_a
        .revoke_subject("u2", now - 100, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(b.verify(&other.token).await, Err(AuthFailure::SignedOut));
    let stored: String = connection(&server)
        .query(redis::cmd("GET").arg("pal:signout:{u2}"))
        .await
        .unwrap();
    assert_eq!(stored, (now + 1).to_string(), "kept as integer text");
    let ttl = server.command(&["PTTL", "pal:signout:{u2}"]).unwrap();
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl > 3_000_000, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_fails_closed_or_open_as_configured_without_hanging() {
    init();
    let mut server = RedisServer::start().expect("redis-server");
    let clock = clock_now();
    let issuer = issuer_with(rsa_key("k"), ISSUER, AUDIENCE, &clock);
    let closed = verifier(
        RedisRevocationStore::new(connection(&server), "pal").unwrap(),
        RevocationFailure::FailClosed,
        &issuer,
    );
    let open = verifier(
        RedisRevocationStore::new(connection(&server), "pal").unwrap(),
        RevocationFailure::FailOpen,
        &issuer,
    );
    let token = issuer.mint("u1").sign().unwrap().token;
    assert!(closed.verify(&token).await.is_ok());
    server.kill();

    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            closed.verify(&token).await,
            Err(AuthFailure::RevocationUnavailable)
        );
        assert!(open.verify(&token).await.is_ok());
    }
    // 40 checks, each bounded by the 100 ms call timeout (reconnects may
    // fail faster); a hang would take far longer.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        AuthFailure::RevocationUnavailable.rejection(None).status()
            == http::StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(closed.stats().revocation_errors, 20);
    assert_eq!(open.stats().revocation_failed_open, 20);

    server.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match closed.verify(&token).await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                assert_eq!(error, AuthFailure::RevocationUnavailable);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("not recovered: {error:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reuse_on_another_instance_revokes_the_family() {
    init();
    let server = RedisServer::start().expect("redis-server");
    let a = RefreshTokens::new(RedisRefreshStore::new(connection(&server), "pal").unwrap());
    let b = RefreshTokens::new(RedisRefreshStore::new(connection(&server), "pal").unwrap());
    let first = a.issue("u1").await.unwrap();
    let second = b.rotate(&first).await.unwrap();
    assert_eq!(second.subject, "u1");
    let third = a.rotate(&second.refresh_token).await.unwrap();
    assert_eq!(
        b.rotate(&first).await.unwrap_err(),
        RefreshError::Reused {
            subject: "u1".into()
        }
    );
    assert_eq!(
        a.rotate(&third.refresh_token).await.unwrap_err(),
        RefreshError::Invalid
    );
    // Nothing but hashes in Redis.
    let raw = connection(&server);
    let keys: Vec<String> = raw.query(redis::cmd("KEYS").arg("pal:rt:*")).await.unwrap();
    assert_eq!(keys.len(), 1);
    let stored: Vec<String> = raw
        .query(redis::cmd("HGETALL").arg(&keys[0]))
        .await
        .unwrap();
    let secret = first.rsplit('.').next().unwrap();
    assert!(
        stored.iter().all(|value| !value.contains(secret)),
        "{stored:?}"
    );
    assert!(stored.contains(&"1".to_owned()), "revoked: {stored:?}");

    // Revoking a family that does not exist leaves no key behind, and a
    // family is revoked only with its current token.
    let unknown = "rt_AAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBB";
    assert_eq!(a.revoke(unknown).await.unwrap_err(), RefreshError::Invalid);
    let keys: Vec<String> = raw.query(redis::cmd("KEYS").arg("pal:rt:*")).await.unwrap();
    assert_eq!(keys.len(), 1);
    let live = a.issue("u2").await.unwrap();
    let (family, _) = live.split_once('.').unwrap();
    let guessed = format!("{family}.CCCCCCCCCCCCCCCCCCCCCC");
    assert_eq!(b.revoke(&guessed).await.unwrap_err(), RefreshError::Invalid);
    b.revoke(&live).await.unwrap();
    assert_eq!(a.rotate(&live).await.unwrap_err(), RefreshError::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_works_once_across_instances_and_expires() {
    init();
    let server = RedisServer::start().expect("redis-server");
    let a = WsTickets::new(RedisTicketStore::new(connection(&server), "pal").unwrap());
    let b = WsTickets::new(RedisTicketStore::new(connection(&server), "pal").unwrap())
        .ttl(Duration::from_millis(200));
    let principal = Principal::builder("u1")
        .tenant("acme")
        .roles(["viewer"])
        .method(palisade_core::principal::AuthMethod::Jwt {
            issuer: ISSUER.into(),
            kid: None,
        })
        .build();
    let ticket = a.mint(&principal).await.unwrap();
    let redeemed = b.redeem(&ticket).await.unwrap();
    assert_eq!(
        (redeemed.subject(), redeemed.tenant()),
        ("u1", Some("acme"))
    );
    assert_eq!(a.redeem(&ticket).await, Err(AuthFailure::InvalidTicket));

    let short = b.mint(&principal).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.redeem(&short).await, Err(AuthFailure::InvalidTicket));
}
