//! Keys fetched from a JWKS URL or found through OIDC discovery.
//!
//! - The current key set lives in an `ArcSwap`: a request reads it without a
//!   lock, and no request ever waits on a lock held during I/O.
//! - A background task refreshes on an interval, or sooner when the JWKS
//!   response says `Cache-Control: max-age`; a failed refresh keeps the last
//!   good keys and retries with exponential backoff.
//! - A token naming an unknown `kid` triggers one refresh at a time, and no
//!   more often than the minimum interval, so a flood of random `kid`s cannot
//!   make us hammer the identity provider.
//! - Until the first set loads (identity provider down at start-up),
//!   requests are refused with 503, and the task keeps retrying.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use palisade_core::ConfigError;
use palisade_core::audit::AuditEvent;
use palisade_core::clock::Clock;

use crate::key::{JwksOrigin, KeySet};

/// How remote keys are fetched and refreshed.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    pub(crate) refresh_interval: Duration,
    pub(crate) min_refresh_interval: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_document_bytes: usize,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) allow_http: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_document_bytes: 512 * 1024,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            allow_http: false,
        }
    }
}

impl RemoteOptions {
    /// The longest time between refreshes (default 5 minutes); a shorter
    /// `Cache-Control: max-age` wins, down to the minimum interval.
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// The shortest time between two fetches caused by unknown `kid`s
    /// (default 30 s).
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// The connect timeout of a fetch (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The total timeout of a fetch (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The first and the longest wait between retries after a failed fetch
    /// (default 1 s, doubling up to 60 s).
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self
    }

    /// The largest JWKS or discovery document accepted (default 512 KiB).
    pub fn max_document_bytes(mut self, bytes: usize) -> Self {
        self.max_document_bytes = bytes;
        self
    }

    /// Allows `http://` URLs. Keys fetched in clear text can be replaced by
    /// anyone on the path: for tests on loopback only.
    pub fn allow_insecure_http_for_tests(mut self) -> Self {
        self.allow_http = true;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // A zero backoff would retry a dead provider in a hot loop.
        if self.retry_initial < Duration::from_millis(10) {
            return Err(ConfigError::invalid(
                "retry_backoff",
                "must be at least 10 ms",
            ));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ConfigError::invalid("timeout", "must be positive"));
        }
        if self.refresh_interval < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "refresh_interval",
                "must be at least 1 s",
            ));
        }
        Ok(())
    }

    fn check_url(&self, url: &str, field: &'static str) -> Result<(), ConfigError> {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") || (self.allow_http && lower.starts_with("http://")) {
            Ok(())
        } else {
            Err(ConfigError::invalid(
                field,
                format!("{url:?} is not an https:// URL"),
            ))
        }
    }
}

#[derive(Debug)]
enum Target {
    Jwks(String),
    Discovery { issuer: String },
}

/// One issuer's remote key set.
#[derive(Debug)]
pub(crate) struct RemoteKeys {
    target: Target,
    options: RemoteOptions,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
    keys: ArcSwapOption<KeySet>,
    generation: AtomicU64,
    discovered_jwks: Mutex<Option<String>>,
    // Monotonic nanoseconds + 1 of the last fetch's start; 0 = never.
    last_fetch: AtomicU64,
    fetching: AtomicBool,
    started: AtomicBool,
    fetches: AtomicU64,
    updates: tokio::sync::watch::Sender<u64>,
}

impl RemoteKeys {
    pub(crate) fn jwks(
        url: String,
        options: RemoteOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ConfigError> {
        options.validate()?;
        options.check_url(&url, "jwks_url")?;
        Self::new(Target::Jwks(url), options, clock)
    }

    pub(crate) fn discovery(
        issuer: &str,
        options: RemoteOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ConfigError> {
        options.validate()?;
        options.check_url(issuer, "issuer")?;
        Self::new(
            Target::Discovery {
                issuer: issuer.to_owned(),
            },
            options,
            clock,
        )
    }

    fn new(
        target: Target,
        options: RemoteOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, ConfigError> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .https_only(!options.allow_http)
            .redirect(reqwest::redirect::Policy::limited(3))
            .no_proxy()
            .build()
            .map_err(|error| ConfigError::invalid("http_client", error.to_string()))?;
        let (updates, _) = tokio::sync::watch::channel(0);
        let this = Arc::new(Self {
            target,
            options,
            client,
            clock,
            keys: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            discovered_jwks: Mutex::new(None),
            last_fetch: AtomicU64::new(0),
            fetching: AtomicBool::new(false),
            started: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            updates,
        });
        this.ensure_started();
        Ok(this)
    }

    /// The current keys, or `None` before the first successful fetch.
    #[inline]
    pub(crate) fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Bumped each time the set of keys changes.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Fetches started so far.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Starts the refresh task when a tokio runtime is at hand (at build
    /// time, or on the first request when the layer was built outside one).
    #[inline]
    pub(crate) fn ensure_started(self: &Arc<Self>) {
        if self.started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // The guard is part of the task from the start, so even a task
            // dropped before its first poll marks the refresher stopped.
            let running = Running(Arc::downgrade(self));
            let remote = Arc::downgrade(self);
            runtime.spawn(async move {
                let _running = running;
                refresh_loop(remote).await;
            });
        }
    }

    /// On an unknown `kid`: a future that completes when a fetch started now
    /// (or already running) ends, or `None` when the minimum interval since
    /// the last fetch has not passed.
    pub(crate) fn refresh_for_unknown_kid(
        self: &Arc<Self>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let mut updates = self.updates.subscribe();
        let wait = self.options.timeout + self.options.connect_timeout;
        if !self.fetching.load(Ordering::Acquire) {
            let now = self.clock.now().as_u64().saturating_add(1);
            let last = self.last_fetch.load(Ordering::Acquire);
            let min =
                u64::try_from(self.options.min_refresh_interval.as_nanos()).unwrap_or(u64::MAX);
            if last != 0 && now.saturating_sub(last) < min {
                return None;
            }
            let this = self.clone();
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            runtime.spawn(async move {
                this.fetch_once(true).await;
            });
        }
        Some(async move {
            let _ = tokio::time::timeout(wait, updates.changed()).await;
        })
    }

    /// Fetches once unless a fetch is running (or, for a fetch caused by an
    /// unknown `kid`, unless one started within the minimum interval);
    /// returns the `max-age` the server gave, or the error.
    async fn fetch_once(&self, on_unknown_kid: bool) -> Option<Result<Option<Duration>, String>> {
        if self
            .fetching
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let now = self.clock.now().as_u64().saturating_add(1);
        let last = self.last_fetch.load(Ordering::Acquire);
        let min = u64::try_from(self.options.min_refresh_interval.as_nanos()).unwrap_or(u64::MAX);
        // From here the flag is cleared and waiters woken however this ends,
        // even when the task is dropped mid-fetch (its runtime shut down).
        let _done = FetchDone(self);
        if on_unknown_kid && last != 0 && now.saturating_sub(last) < min {
            return None;
        }
        self.last_fetch.store(now, Ordering::Release);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch().await;
        match &result {
            Ok((set, _)) => self.install(set.clone()),
            Err(error) => {
                tracing::warn!(target: palisade_core::audit::TARGET, %error, "fetching remote keys failed; keeping the last good keys");
            }
        }
        Some(result.map(|(_, max_age)| max_age))
    }

    fn install(&self, set: Arc<KeySet>) {
        let changed = match self.keys.load().as_deref() {
            Some(old) => !old.same_keys(&set),
            None => true,
        };
        if changed {
            self.keys.store(Some(set));
            self.generation.fetch_add(1, Ordering::AcqRel);
            AuditEvent::state_changed("jwt", "keys_loaded").emit();
        }
    }

    async fn fetch(&self) -> Result<(Arc<KeySet>, Option<Duration>), String> {
        let url = self.jwks_url().await?;
        let (body, max_age) = self.get(&url).await?;
        let set = KeySet::parse_jwks(&body, JwksOrigin::Remote).map_err(|e| e.to_string())?;
        if set.is_empty() {
            return Err("the JWKS has no usable key".to_owned());
        }
        Ok((Arc::new(set), max_age))
    }

    async fn jwks_url(&self) -> Result<String, String> {
        let issuer = match &self.target {
            Target::Jwks(url) => return Ok(url.clone()),
            Target::Discovery { issuer } => issuer,
        };
        if let Some(url) = self.discovered().clone() {
            return Ok(url);
        }
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&url).await?;
        let document: Discovery = serde_json::from_slice(&body)
            .map_err(|_| "the discovery document is not valid JSON".to_owned())?;
        if document.issuer != *issuer {
            return Err(format!(
                "the discovery document names issuer {:?}, not {issuer:?}",
                document.issuer
            ));
        }
        self.options
            .check_url(&document.jwks_uri, "jwks_uri")
            .map_err(|e| e.to_string())?;
        *self.discovered() = Some(document.jwks_uri.clone());
        Ok(document.jwks_uri)
    }

    fn discovered(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Held for a clone or a store, never across an await; a poisoned lock
        // only means a panic elsewhere mid-assignment of an Option.
        self.discovered_jwks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        let mut response = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", without_url(&e)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        let max_age = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", without_url(&e)))?
        {
            if body.len() + chunk.len() > self.options.max_document_bytes {
                return Err(format!("GET {url}: the document is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(source) = std::error::Error::source(error) {
        text = format!("{text}: {source}");
    }
    text
}

/// `max-age` from a `Cache-Control` value, unless `no-store`/`no-cache`.
pub(crate) fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            age = value
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// Ends a fetch: clears the flag and wakes the requests waiting for it.
struct FetchDone<'a>(&'a RemoteKeys);

impl Drop for FetchDone<'_> {
    fn drop(&mut self) {
        self.0.fetching.store(false, Ordering::Release);
        self.0.updates.send_modify(|version| *version += 1);
    }
}

/// Marks the refresh task stopped when it ends, including when its runtime
/// shuts down and drops it, so the next request on a live runtime starts a
/// new one.
struct Running(Weak<RemoteKeys>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(remote) = self.0.upgrade() {
            remote.started.store(false, Ordering::Release);
        }
    }
}

async fn refresh_loop(remote: Weak<RemoteKeys>) {
    let mut backoff = None::<Duration>;
    loop {
        let Some(this) = remote.upgrade() else { return };
        let options = this.options.clone();
        let wait = match this.fetch_once(false).await {
            // Another fetch was running: look again shortly.
            None => options.min_refresh_interval.max(Duration::from_millis(100)),
            Some(Ok(max_age)) => {
                backoff = None;
                max_age.unwrap_or(options.refresh_interval).clamp(
                    options.min_refresh_interval,
                    options.refresh_interval.max(options.min_refresh_interval),
                )
            }
            Some(Err(_)) => {
                let next =
                    backoff.map_or(options.retry_initial, |b| (b * 2).min(options.retry_max));
                backoff = Some(next);
                next
            }
        };
        drop(this);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read_and_no_store_means_zero() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("Max-Age=\"30\""), Some(Duration::from_secs(30)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }

    #[test]
    fn urls_must_be_https_unless_insecure_is_spelled_out() {
        let options = RemoteOptions::default();
        assert!(
            options
                .check_url("https://id.example.com/jwks", "u")
                .is_ok()
        );
        assert!(options.check_url("http://127.0.0.1/jwks", "u").is_err());
        assert!(
            options
                .allow_insecure_http_for_tests()
                .check_url("http://127.0.0.1/jwks", "u")
                .is_ok()
        );
    }
}
