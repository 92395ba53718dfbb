//! API keys in a TOML or JSON file of hashed records, reloadable without a
//! restart.
//!
//! ```toml
//! [[keys]]
//! id = "key_4fJ9aQ2xLm7p"
//! hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! display_prefix = "pal_live_AbC1"
//! last4 = "x9Zq"
//! owner = "ci-bot"
//! roles = ["operator"]
//! created_at = 1795400000
//! ```
//!
//! The file holds no secret: only hashes (with a pepper, even a leaked file
//! cannot be brute-forced offline). Writes (`insert`, `revoke`, `expire`)
//! replace the file atomically (a temporary file, then a rename).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade_core::ConfigError;

use super::memory::MemoryApiKeyStore;
use super::record::ApiKeyRecord;
use super::store::{ApiKeyStore, KeyLookup};
use crate::revocation::{RevocationError as StoreError, StoreFuture};

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    keys: Vec<ApiKeyRecord>,
}

/// The file's format, from its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
}

/// API keys read from a file; lookups are served from memory.
#[derive(Clone)]
pub struct FileApiKeyStore {
    path: Arc<PathBuf>,
    format: Format,
    keys: MemoryApiKeyStore,
    modified: Arc<Mutex<Option<SystemTime>>>,
    // Held across read-modify-write, so two edits in this process cannot
    // lose each other's changes.
    writing: Arc<Mutex<()>>,
}

impl std::fmt::Debug for FileApiKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileApiKeyStore")
            .field("path", &self.path)
            .field("keys", &self.keys)
            .finish()
    }
}

fn read_error(path: &Path, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid("api_key_file", format!("{}: {reason}", path.display()))
}

impl FileApiKeyStore {
    /// Opens a `.toml` or `.json` file; a missing file is an empty store
    /// (the first `insert` creates it).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let path = path.into();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Format::Toml,
            Some("json") => Format::Json,
            _ => return Err(read_error(&path, "the file must end in .toml or .json")),
        };
        let store = Self {
            path: Arc::new(path),
            format,
            keys: MemoryApiKeyStore::new(),
            modified: Arc::new(Mutex::new(None)),
            writing: Arc::new(Mutex::new(())),
        };
        store.reload()?;
        Ok(store)
    }

    /// Reads the file again; returns the number of keys. On error the keys
    /// read before stay in force.
    pub fn reload(&self) -> Result<usize, ConfigError> {
        let modified = std::fs::metadata(&*self.path)
            .and_then(|m| m.modified())
            .ok();
        let document = match std::fs::read_to_string(&*self.path) {
            Ok(text) => self.parse(&text)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Document::default(),
            Err(error) => return Err(read_error(&self.path, error)),
        };
        let count = document.keys.len();
        self.keys.replace_all(document.keys);
        *self
            .modified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = modified;
        Ok(count)
    }

    fn parse(&self, text: &str) -> Result<Document, ConfigError> {
        match self.format {
            Format::Toml => {
                toml::from_str(text).map_err(|e| read_error(&self.path, e.message().to_owned()))
            }
            Format::Json => serde_json::from_str(text).map_err(|e| read_error(&self.path, e)),
        }
    }

    /// Reloads whenever the file's modification time changes, checking
    /// every `interval`, until the store is dropped. Needs a tokio runtime.
    pub fn watch(&self, interval: Duration) {
        let weak = Arc::downgrade(&self.modified);
        let store = Self {
            path: self.path.clone(),
            format: self.format,
            keys: self.keys.clone(),
            modified: Arc::new(Mutex::new(None)),
            writing: self.writing.clone(),
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("FileApiKeyStore::watch needs a tokio runtime; not watching");
            return;
        };
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(modified) = weak.upgrade() else { return };
                let now = std::fs::metadata(&*store.path).and_then(|m| m.modified()).ok();
                let before = *modified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if now != before {
                    match store.reload() {
                        Ok(count) => {
                            *modified.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = now;
                            tracing::info!(keys = count, path = %store.path.display(), "API keys reloaded");
                        }
                        // Loud: a revocation written with a typo is not in
                        // force until the file reads again.
                        Err(error) => tracing::error!(%error, "API key file unreadable; keeping the keys read before"),
                    }
                }
            }
        });
    }

    /// Every record.
    pub fn records(&self) -> Vec<ApiKeyRecord> {
        self.keys.records()
    }

    /// The records on disk now (another process may have written since we
    /// read), or the ones in memory when the file is gone.
    fn current(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        match std::fs::read_to_string(&*self.path) {
            Ok(text) => self
                .parse(&text)
                .map(|document| document.keys)
                .map_err(|e| StoreError::Unavailable(e.to_string())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(self.keys.records()),
            Err(error) => Err(StoreError::Unavailable(format!(
                "{}: {error}",
                self.path.display()
            ))),
        }
    }

    /// Reads the file, applies `change`, writes it back atomically: a
    /// temporary file of our own (owner-only permissions), then a rename.
    fn modify<R>(&self, change: impl FnOnce(&mut Vec<ApiKeyRecord>) -> R) -> Result<R, StoreError> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut records = self.current()?;
        let result = change(&mut records);
        records.sort_by(|a, b| a.id.cmp(&b.id));
        let document = Document { keys: records };
        let text = match self.format {
            Format::Toml => toml::to_string_pretty(&document)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            Format::Json => serde_json::to_string_pretty(&document)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        };
        let failed =
            |e: std::io::Error| StoreError::Unavailable(format!("{}: {e}", self.path.display()));
        let temporary = temporary_path(&self.path)
            .ok_or_else(|| StoreError::Unavailable("random source failed".into()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&temporary).and_then(|mut file| {
            use std::io::Write;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        if let Err(error) = written.and_then(|()| std::fs::rename(&temporary, &*self.path)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(failed(error));
        }
        self.keys.replace_all(document.keys);
        Ok(result)
    }

    fn edit(&self, id: &str, f: impl Fn(&mut ApiKeyRecord)) -> Result<bool, StoreError> {
        self.modify(|records| match records.iter_mut().find(|r| r.id == id) {
            Some(record) => {
                f(record);
                true
            }
            None => false,
        })
    }
}

/// `.<name>.<random>.tmp` beside the file: never shared with another
/// writer.
fn temporary_path(path: &Path) -> Option<PathBuf> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).ok()?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let name = path.file_name()?.to_string_lossy();
    Some(path.with_file_name(format!(".{name}.{suffix}.tmp")))
}

impl ApiKeyStore for FileApiKeyStore {
    #[inline]
    fn find(&self, hash: &[u8; 32]) -> KeyLookup {
        self.keys.find(hash)
    }

    fn insert(&self, record: ApiKeyRecord) -> StoreFuture<()> {
        let result = self.modify(|records| {
            records.retain(|r| r.id != record.id);
            records.push(record);
        });
        Box::pin(std::future::ready(result))
    }

    fn revoke(&self, id: &str) -> StoreFuture<bool> {
        Box::pin(std::future::ready(self.edit(id, |r| r.revoked = true)))
    }

    fn expire(&self, id: &str, at: u64) -> StoreFuture<bool> {
        Box::pin(std::future::ready(self.edit(id, |r| {
            r.expires_at = Some(r.expires_at.map_or(at, |current| current.min(at)));
        })))
    }

    fn get(&self, id: &str) -> StoreFuture<Option<ApiKeyRecord>> {
        self.keys.get(id)
    }
}
