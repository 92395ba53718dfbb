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

use http::Method;

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

    /// Whether nothing is exempt (callers skip reading the path).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.paths.is_empty()
    }

    /// Whether a request with this method and path is exempt.
    #[inline]
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.methods.iter().any(|m| m == method)
            || self.paths.iter().any(|p| match p {
                PathMatch::Exact(exact) => path == exact,
                PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
            })
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
}
