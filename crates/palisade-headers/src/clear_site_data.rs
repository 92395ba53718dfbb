//! `Clear-Site-Data` for logout responses.
//!
//! ```
//! use palisade_headers::{ClearSiteData, clear_site_data};
//!
//! let value = clear_site_data(&[ClearSiteData::Cookies, ClearSiteData::Storage]);
//! assert_eq!(value, r#""cookies", "storage""#);
//! // In an axum handler: ([(http::header::HeaderName::from_static("clear-site-data"), value)], "bye")
//! ```

use http::{HeaderName, HeaderValue};

/// The header's name, `clear-site-data`.
pub const CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");

/// What a browser is told to clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClearSiteData {
    /// `"cache"`: the HTTP cache (and, in some browsers, back/forward cache).
    Cache,
    /// `"cookies"`: cookies of the site and its subdomains, and HTTP auth credentials.
    Cookies,
    /// `"storage"`: localStorage, IndexedDB, service workers and other DOM storage.
    Storage,
    /// `"executionContexts"`: reload every browsing context of the origin.
    ExecutionContexts,
    /// `"clientHints"`: stored client hints.
    ClientHints,
    /// `"prefetchCache"`: speculation-rules prefetches.
    PrefetchCache,
    /// `"prerenderCache"`: speculation-rules prerenders.
    PrerenderCache,
    /// `"*"`: everything.
    All,
}

impl ClearSiteData {
    /// What a logout usually clears: cache, cookies and storage (the OWASP
    /// Secure Headers Project's value).
    pub const LOGOUT: &'static [ClearSiteData] = &[
        ClearSiteData::Cache,
        ClearSiteData::Cookies,
        ClearSiteData::Storage,
    ];

    /// The quoted directive.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClearSiteData::Cache => "\"cache\"",
            ClearSiteData::Cookies => "\"cookies\"",
            ClearSiteData::Storage => "\"storage\"",
            ClearSiteData::ExecutionContexts => "\"executionContexts\"",
            ClearSiteData::ClientHints => "\"clientHints\"",
            ClearSiteData::PrefetchCache => "\"prefetchCache\"",
            ClearSiteData::PrerenderCache => "\"prerenderCache\"",
            ClearSiteData::All => "\"*\"",
        }
    }
}

/// The `Clear-Site-Data` value for `kinds`, each once, in the order given.
/// An empty slice gives an empty value, which browsers ignore.
pub fn clear_site_data(kinds: &[ClearSiteData]) -> HeaderValue {
    let mut value = String::with_capacity(kinds.len() * 12);
    for (index, kind) in kinds.iter().enumerate() {
        if kinds[..index].contains(kind) {
            continue;
        }
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(kind.as_str());
    }
    // Only the quoted ASCII words above: always a valid value.
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_deduplicated_and_ordered() {
        assert_eq!(
            clear_site_data(ClearSiteData::LOGOUT),
            r#""cache", "cookies", "storage""#
        );
        assert_eq!(
            clear_site_data(&[
                ClearSiteData::All,
                ClearSiteData::All,
                ClearSiteData::ExecutionContexts
            ]),
            r#""*", "executionContexts""#
        );
        assert_eq!(clear_site_data(&[]), "");
    }
}
