//! palisade-redis against real `redis-server` processes that the tests start
//! on free loopback ports: commands, scripts and NOSCRIPT reloads, timeouts,
//! a server killed mid-call and restarted, the breaker that stops asking a
//! server that keeps failing, and a 3-node cluster.

// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use palisade_redis::testing::{RedisCluster, RedisServer, must_finish};
use palisade_redis::{KeyNamer, RedisConfig, RedisConnection, RedisError, RedisScript};

const INCR_BOTH: &str = r"
local a = redis.call('INCR', KEYS[1])
local b = redis.call('INCRBY', KEYS[2], ARGV[1])
return {a, b}
";

#[tokio::test]
async fn commands_and_scripts_run_against_a_real_server() {
    let server = RedisServer::start().expect("redis-server");
    let connection = RedisConnection::connect(&RedisConfig::standalone(server.url()))
        .await
        .expect("connect");
    connection.ping().await.expect("ping");

    let names = KeyNamer::new("test").expect("prefix");
    let (a, b) = (names.key("a", "client-1"), names.key("b", "client-1"));
    let script = RedisScript::new(INCR_BOTH);
    let first: (i64, i64) = script
        .invoke(&connection, &[&a, &b], &[5])
        .await
        .expect("eval");
    let second: (i64, i64) = script
        .invoke(&connection, &[&a, &b], &[5])
        .await
        .expect("eval");
    assert_eq!(first, (1, 5));
    assert_eq!(second, (2, 10));
    let stored: i64 = connection
        .query(redis::cmd("GET").arg(&b))
        .await
        .expect("get");
    assert_eq!(stored, 10);
}

#[tokio::test]
async fn a_flushed_script_is_loaded_again_on_noscript() {
    let server = RedisServer::start().expect("redis-server");
    let connection = RedisConnection::connect(&RedisConfig::standalone(server.url()))
        .await
        .expect("connect");
    let script = RedisScript::new("return ARGV[1] * 2");
    let before: i64 = script.invoke(&connection, &[], &[21]).await.expect("eval");
    assert_eq!(before, 42);
    assert_eq!(server.command(&["SCRIPT", "FLUSH"]).expect("flush"), "+OK");
    let exists = server
        .command(&["SCRIPT", "EXISTS", script.hash()])
        .expect("exists");
    assert_eq!(exists, "*1", "an array of one");
    let after: i64 = script
        .invoke(&connection, &[], &[4])
        .await
        .expect("eval after flush");
    assert_eq!(after, 8);
}

#[tokio::test]
async fn a_paused_server_makes_calls_time_out_instead_of_hanging() {
    let server = RedisServer::start().expect("redis-server");
    let config = RedisConfig::standalone(server.url()).call_timeout(Duration::from_millis(50));
    let connection = RedisConnection::connect(&config).await.expect("connect");
    connection.ping().await.expect("ping");

    assert_eq!(
        server
            .command(&["CLIENT", "PAUSE", "3000", "ALL"])
            .expect("pause"),
        "+OK"
    );
    let result = must_finish("a call to a paused server", connection.ping()).await;
    assert!(
        matches!(result, Err(RedisError::Timeout(t)) if t == Duration::from_millis(50)),
        "{result:?}"
    );
    assert!(
        result
            .as_ref()
            .err()
            .is_some_and(RedisError::is_unavailable)
    );
}

#[tokio::test]
async fn a_server_killed_mid_call_fails_the_call_and_a_restarted_one_is_reconnected() {
    let mut server = RedisServer::start().expect("redis-server");
    // A long call timeout, so that the kill (not the timeout) ends the call.
    let config = RedisConfig::standalone(server.url()).call_timeout(Duration::from_secs(5));
    let connection = RedisConnection::connect(&config).await.expect("connect");
    connection.ping().await.expect("ping");

    // Park a call on the server, then kill the server under it.
    assert_eq!(
        server
            .command(&["CLIENT", "PAUSE", "10000", "ALL"])
            .expect("pause"),
        "+OK"
    );
    let pending = tokio::spawn({
        let connection = connection.clone();
        async move { connection.ping().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();
    let result = must_finish("a call whose server died", pending)
        .await
        .expect("task");
    assert!(
        matches!(result, Err(RedisError::Connection(_))),
        "{result:?}"
    );

    // While it is down, calls fail without hanging.
    let down = must_finish("a call to a dead server", connection.ping()).await;
    assert!(
        down.as_ref().err().is_some_and(RedisError::is_unavailable),
        "{down:?}"
    );

    // Restarted on the same port: the same connection object recovers.
    server.restart().expect("restart");
    must_finish("reconnecting", async {
        loop {
            if connection.ping().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let value: i64 = connection
        .query(redis::cmd("INCR").arg("after-restart"))
        .await
        .expect("incr");
    assert_eq!(value, 1, "a fresh server");
}

#[tokio::test]
async fn a_lazy_connection_builds_while_redis_is_down_and_works_once_it_is_up() {
    let mut server = RedisServer::start().expect("redis-server");
    server.kill();
    let connection = RedisConnection::connect_lazy(&RedisConfig::standalone(server.url()))
        .expect("builds without a server");
    let down = must_finish("a call before the server exists", connection.ping()).await;
    assert!(
        down.as_ref().err().is_some_and(RedisError::is_unavailable),
        "{down:?}"
    );
    server.restart().expect("start");
    must_finish("first connection", async {
        while connection.ping().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_redis_that_keeps_timing_out_is_not_asked_until_a_probe_finds_it_back() {
    let server = RedisServer::start().expect("redis-server");
    let config = RedisConfig::standalone(server.url())
        .call_timeout(Duration::from_millis(50))
        .breaker_cooldown(Duration::from_millis(200));
    let connection = RedisConnection::connect(&config).await.expect("connect");
    connection.ping().await.expect("ping");
    assert!(!connection.is_breaker_open());

    // A stalled server (for 1.5 s): calls time out, three in a row open
    // the breaker.
    assert_eq!(
        server
            .command(&["CLIENT", "PAUSE", "1500", "ALL"])
            .expect("pause"),
        "+OK"
    );
    // Three in a row open the breaker (the documented threshold).
    for _ in 0..3 {
        let result = must_finish("a call to a stalled server", connection.ping()).await;
        assert!(matches!(result, Err(RedisError::Timeout(_))), "{result:?}");
    }
    assert!(connection.is_breaker_open());
    // Now calls are not sent at all (clones share the breaker), and they
    // still read as "unavailable" to every failure policy.
    let refused = connection.clone().ping().await;
    assert!(
        matches!(refused, Err(RedisError::RecentlyUnavailable)),
        "{refused:?}"
    );
    assert!(
        refused
            .as_ref()
            .err()
            .is_some_and(RedisError::is_unavailable)
    );

    // The server comes back when its pause ends: after a cooldown one call
    // probes, finds it, and closes the breaker for everyone.
    must_finish("recovering", async {
        while connection.ping().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!connection.is_breaker_open());
}

#[tokio::test]
async fn a_connection_without_a_breaker_asks_every_time() {
    let server = RedisServer::start().expect("redis-server");
    let config = RedisConfig::standalone(server.url())
        .call_timeout(Duration::from_millis(50))
        .breaker_cooldown(Duration::ZERO);
    let connection = RedisConnection::connect(&config).await.expect("connect");
    server
        .command(&["CLIENT", "PAUSE", "1000", "ALL"])
        .expect("pause");
    for _ in 0..5 {
        let result = must_finish("a call to a stalled server", connection.ping()).await;
        assert!(matches!(result, Err(RedisError::Timeout(_))), "{result:?}");
    }
    assert!(!connection.is_breaker_open());
}

#[tokio::test]
async fn an_eager_connection_to_a_dead_server_fails_fast() {
    let mut server = RedisServer::start().expect("redis-server");
    server.kill();
    let result = must_finish(
        "connecting to nothing",
        RedisConnection::connect(&RedisConfig::standalone(server.url())),
    )
    .await;
    assert!(
        result
            .as_ref()
            .err()
            .is_some_and(RedisError::is_unavailable),
        "{result:?}"
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_before_connecting() {
    let no_url = RedisConfig {
        urls: vec![],
        ..RedisConfig::default()
    };
    assert!(matches!(
        RedisConnection::connect(&no_url).await,
        Err(RedisError::Config(_))
    ));
    let bad_prefix = RedisConfig::standalone("redis://127.0.0.1:1").key_prefix("a{b}");
    assert!(matches!(
        RedisConnection::connect(&bad_prefix).await,
        Err(RedisError::Config(_))
    ));
    let two = RedisConfig {
        urls: vec!["redis://a".into(), "redis://b".into()],
        ..RedisConfig::default()
    };
    assert!(matches!(
        RedisConnection::connect(&two).await,
        Err(RedisError::Config(_))
    ));
    let endless = RedisConfig::standalone("redis://127.0.0.1:1")
        .breaker_cooldown(Duration::from_secs(2 * 3_600));
    assert!(matches!(
        RedisConnection::connect(&endless).await,
        Err(RedisError::Config(_))
    ));
}

#[tokio::test]
async fn a_cluster_runs_scripts_on_hash_tagged_keys_spread_over_its_nodes() {
    let cluster = RedisCluster::start().expect("3-node cluster");
    let connection = must_finish(
        "cluster connect",
        RedisConnection::connect(&RedisConfig::cluster(cluster.urls())),
    )
    .await
    .expect("connect");
    assert!(connection.is_cluster());
    let names = KeyNamer::new("test").expect("prefix");
    let script = RedisScript::new(INCR_BOTH);

    for client in 0..60 {
        let client = format!("ip:198.51.100.{client}");
        let (a, b) = (names.key("a", &client), names.key("b", &client));
        let result: (i64, i64) =
            must_finish("cluster eval", script.invoke(&connection, &[&a, &b], &[3]))
                .await
                .expect("two keys of one client share a slot");
        assert_eq!(result, (1, 3));
    }
    // The clients' keys are spread over every node.
    for node in cluster.nodes() {
        let size = node.command(&["DBSIZE"]).expect("dbsize");
        let keys: u64 = size.trim_start_matches(':').parse().expect("integer reply");
        assert!(keys > 0, "node {} holds none of 120 keys", node.port());
    }
    // NOSCRIPT on every node: loaded again where needed.
    for node in cluster.nodes() {
        assert_eq!(node.command(&["SCRIPT", "FLUSH"]).expect("flush"), "+OK");
    }
    let (a, b) = (
        names.key("a", "ip:198.51.100.0"),
        names.key("b", "ip:198.51.100.0"),
    );
    let again: (i64, i64) = script
        .invoke(&connection, &[&a, &b], &[3])
        .await
        .expect("eval");
    assert_eq!(again, (2, 6));
}
