//! The demo gateway's page in a real browser: headless Chromium (Debian's
//! `chromium`, started here with a fresh profile) loads it; the inline
//! script carrying the response's CSP nonce runs, the one without it is
//! blocked and reported to the gateway's CSP report endpoint.
#![cfg(all(feature = "axum", feature = "headers"))]
// A failed expectation in a test is a failing test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[path = "../examples/gateway.rs"]
#[allow(dead_code)]
mod gateway;

use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nonce_script_runs_and_the_other_is_blocked_and_reported() {
    let config = gateway::Config {
        port: 0,
        rate_per_minute: 1_000,
        demo_password: "open sesame".to_owned(),
        redis_url: None,
        instances: std::num::NonZeroU32::MIN,
        trusted_proxies: Vec::new(),
        admin_networks: vec!["127.0.0.0/8".parse().unwrap()].into(),
        cors_origins: Vec::new(),
        token_ttl: Duration::from_secs(900),
        oidc_issuer: None,
        oidc_audience: None,
        api_key_pepper: None,
        concurrency_per_ip: 64,
        breaker_open: Duration::from_secs(5),
    };
    let built = gateway::gateway(&config).await.expect("gateway");
    let reports = built.csp_reports.clone();
    let addr = common::spawn_axum(built.router).await;
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}/");

    // The flags keep Chromium off the network (this machine has none beyond
    // loopback) and give it time to run the page's scripts.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=3000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .expect("chromium runs (scripts/test installs Debian's chromium)");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains(r#"<p id="nonce">the script with the nonce ran</p>"#),
        "the nonce script did not run: {dom}"
    );
    assert!(
        dom.contains(r#"<p id="inline">the script without a nonce did not run</p>"#),
        "the script without a nonce ran: {dom}"
    );

    // The violation report arrives at the gateway.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = reports.all().into_iter().find(|report| {
            report
                .pointer("/csp-report/blocked-uri")
                .and_then(|v| v.as_str())
                == Some("inline")
        });
        if let Some(report) = found {
            let directive = report
                .pointer("/csp-report/effective-directive")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            assert!(directive.starts_with("script-src"), "{report}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CSP report arrived: {:?}",
            reports.all()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
