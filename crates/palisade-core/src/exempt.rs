//! Requests a layer does not apply to: methods (CORS preflights) and paths
//! (health checks), shared by the rate-limit and concurrency layers.
//!
//! ```
//! use http::Method;
//! use palisade_core::exempt::Exemptions;
//!
//! let mut exempt = Exemptions::default();
//! exempt.add_path("/health");
//! exempt.add_path("/static/*");
//! exempt.add_method(Method::OPTIONS);
//! assert!(exempt.matches(&Method::GET, "/static/app.js"));
//! assert!(!exempt.matches(&Method::GET, "/health/deep"));
//! ```

use http::{Method, Uri};

use crate::ConfigError;

/// A method as configuration writes it (`options` or `OPTIONS`), as requests
/// carry it (`OPTIONS`); `field` names the option in the error.
pub fn method_from_config(field: &'static str, name: &str) -> Result<Method, ConfigError> {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes())
        .map_err(|_| ConfigError::invalid(field, format!("`{name}` is not a method")))
}

/// An exempt path as configuration writes it, refused when it could never
/// match: it starts with `/`, and `*` only ends it (`/static/*`).
pub fn path_from_config<'p>(field: &'static str, path: &'p str) -> Result<&'p str, ConfigError> {
    let pattern = path.strip_suffix('*').unwrap_or(path);
    if !path.starts_with('/') || pattern.contains('*') {
        return Err(ConfigError::invalid(
            field,
            format!("`{path}` is not a path (`/health`) or a prefix (`/static/*`)"),
        ));
    }
    Ok(path)
}

/// Exempt methods and paths, fixed at build time.
#[derive(Clone, Debug, Default)]
pub struct Exemptions {
    methods: Vec<Method>,
    /// Exact paths, or prefixes when written with a trailing `*`.
    paths: Vec<PathMatch>,
}

#[derive(Clone, Debug)]
enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl Exemptions {
    /// Exempts a method.
    pub fn add_method(&mut self, method: Method) {
        self.methods.push(method);
    }

    /// `/health` exempts that path; `/static/*` every path under `/static/`.
    pub fn add_path(&mut self, path: impl Into<String>) {
        let path = path.into();
        // Split once here so the request path does not re-parse the pattern.
        self.paths.push(match path.strip_suffix('*') {
            Some(prefix) => PathMatch::Prefix(prefix.to_owned()),
            None => PathMatch::Exact(path),
        });
    }

    /// Whether a request with this method and URI is exempt. The path is
    /// read from the URI only when a path is exempt: layers ask this on
    /// every request, and most exempt nothing or methods only.
    #[inline]
    pub fn matches_request(&self, method: &Method, uri: &Uri) -> bool {
        self.methods.iter().any(|m| m == method)
            || (!self.paths.is_empty() && self.matches_path(uri.path()))
    }

    fn matches_path(&self, path: &str) -> bool {
        self.paths.iter().any(|p| match p {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        })
    }

    /// Whether a request with this method and path is exempt.
    #[inline]
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods.iter().any(|m| m == method) || self.matches_path(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_paths_prefixes_and_methods_are_exempt_and_nothing_else() {
        let mut exempt = Exemptions::default();
        exempt.add_method(Method::OPTIONS);
        exempt.add_path("/health");
        exempt.add_path("/static/*");
        assert!(exempt.matches(&Method::GET, "/health"));
        assert!(!exempt.matches(&Method::GET, "/health/deep"));
        assert!(exempt.matches(&Method::GET, "/static/app.js"));
        assert!(exempt.matches(&Method::OPTIONS, "/api"));
        assert!(!exempt.matches(&Method::GET, "/api"));
    }

    #[test]
    fn a_request_is_exempt_by_its_method_or_its_uri_path() {
        let mut exempt = Exemptions::default();
        let uri = |u: &'static str| Uri::from_static(u);
        assert!(!exempt.matches_request(&Method::GET, &uri("/health")));
        exempt.add_method(Method::OPTIONS);
        assert!(exempt.matches_request(&Method::OPTIONS, &uri("/api?x=1")));
        assert!(!exempt.matches_request(&Method::GET, &uri("/health")));
        exempt.add_path("/health");
        exempt.add_path("/static/*");
        assert!(exempt.matches_request(&Method::GET, &uri("/health?full=1")));
        assert!(exempt.matches_request(&Method::GET, &uri("http://a.example/static/app.js")));
        assert!(!exempt.matches_request(&Method::GET, &uri("/health/deep")));
    }

    #[test]
    fn configuration_is_read_as_written_and_never_matching_paths_are_refused() {
        assert_eq!(method_from_config("m", "options"), Ok(Method::OPTIONS));
        assert_eq!(method_from_config("m", "GET"), Ok(Method::GET));
        assert!(method_from_config("m", "GE T").is_err());
        for good in ["/health", "/static/*", "/"] {
            assert_eq!(path_from_config("p", good), Ok(good));
        }
        for bad in ["health", "/a/*/b", "*", ""] {
            assert!(path_from_config("p", bad).is_err(), "{bad}");
        }
    }
}
