//! Requests a limit does not apply to: methods (CORS preflights) and paths
//! (health checks), as in the rate-limit layer.

use http::Method;

/// Exempt methods and paths, fixed at build time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Exemptions {
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
    pub(crate) fn add_method(&mut self, method: Method) {
        self.methods.push(method);
    }

    /// `/health` exempts that path; `/static/*` every path under `/static/`.
    pub(crate) fn add_path(&mut self, path: String) {
        // Split once here so the request path does not re-parse the pattern.
        self.paths.push(match path.strip_suffix('*') {
            Some(prefix) => PathMatch::Prefix(prefix.to_owned()),
            None => PathMatch::Exact(path),
        });
    }

    #[inline]
    pub(crate) fn matches(&self, method: &Method, path: &str) -> bool {
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
        exempt.add_path("/health".into());
        exempt.add_path("/static/*".into());
        assert!(exempt.matches(&Method::GET, "/health"));
        assert!(!exempt.matches(&Method::GET, "/health/deep"));
        assert!(exempt.matches(&Method::GET, "/static/app.js"));
        assert!(exempt.matches(&Method::OPTIONS, "/api"));
        assert!(!exempt.matches(&Method::GET, "/api"));
    }
}
