//! Rate-limit checks per second through one multiplexed Redis connection,
//! beside a plain `SET` through the same connection, in one run against a
//! `redis-server` this program starts on a free loopback port.
//!
//! ```text
//! cargo run --release -p palisade-benches --bin redis_throughput
//! ```
//!
//! Many tasks share the connection, so commands are pipelined on it; the
//! ratio of the two rates is the cost of a GCRA script call relative to the
//! cheapest command Redis has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use palisade_core::key::{Key, KeyFn};
use palisade_ratelimit::{Quota, RedisStore};
use palisade_redis::testing::RedisServer;
use palisade_redis::{RedisConfig, RedisConnection};

const TASKS: usize = 64;
const RUN: Duration = Duration::from_secs(3);

async fn rate<F, Fut>(op: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|task| {
            let (op, done, stop) = (op.clone(), Arc::clone(&done), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut n = task;
                while !stop.load(Ordering::Relaxed) {
                    if op(n).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    n += TASKS as u64;
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

fn key(n: u64) -> Key {
    let mut request = http::Request::new(());
    request
        .headers_mut()
        .insert("x-client", http::HeaderValue::from(n % 100_000));
    KeyFn::header(http::HeaderName::from_static("x-client"))
        .ok()
        .and_then(|key_fn| key_fn.extract(&request))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = RedisServer::start()?;
    let config = RedisConfig::standalone(server.url()).call_timeout(Duration::from_secs(1));
    let connection = RedisConnection::connect(&config).await?;
    let store = RedisStore::builder(connection.clone()).build()?;
    let quota = Quota::per_second(1_000_000);

    let set = {
        let connection = connection.clone();
        move |n: u64| {
            let connection = connection.clone();
            async move {
                connection
                    .query::<()>(
                        redis::cmd("SET")
                            .arg(format!("plain:{}", n % 100_000))
                            .arg(n),
                    )
                    .await
                    .is_ok()
            }
        }
    };
    let check = move |n: u64| {
        let store = store.clone();
        async move { store.check("bench", &key(n), &quota, 1).await.is_ok() }
    };
    let set_rate = rate(set).await;
    let check_rate = rate(check).await;
    println!("{TASKS} tasks on one multiplexed connection, 100,000 keys, {RUN:?} each:");
    println!("  plain SET            {set_rate:>10.0} ops/s");
    println!("  palisade GCRA check  {check_rate:>10.0} checks/s");
    println!("  ratio check / SET    {:>10.2}", check_rate / set_rate);
    Ok(())
}
