//! A typed Content-Security-Policy builder.
//!
//! Directives hold typed [`Source`]s: keywords are quoted by the builder
//! (`Source::SelfOrigin` is written `'self'`), hosts, schemes, hashes and
//! reporting names are checked when the policy is rendered, at build time,
//! so that no value can close a directive (`;`), start a list (`,`) or
//! smuggle a keyword. A policy with [`Source::Nonce`] gets a fresh nonce on
//! every response (see [`CspNonce`](crate::CspNonce)).
//!
//! ```
//! use palisade_headers::csp::{ContentSecurityPolicy, Source};
//!
//! let policy = ContentSecurityPolicy::new()
//!     .default_src([Source::SelfOrigin])
//!     .script_src([Source::SelfOrigin, Source::Nonce, Source::host("cdn.example.com")])
//!     .object_src([Source::None])
//!     .report_to("csp");
//! assert!(policy.uses_nonce());
//!
//! let fixed = ContentSecurityPolicy::new().default_src([Source::None]);
//! assert_eq!(fixed.to_header_value()?, "default-src 'none'");
//! # Ok::<(), palisade_core::ConfigError>(())
//! ```

use std::fmt;

use base64::Engine as _;
use http::HeaderValue;
use palisade_core::ConfigError;

/// A fetch or navigation directive that takes a list of sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Directive {
    /// `default-src`: the fallback of every fetch directive.
    DefaultSrc,
    /// `script-src`.
    ScriptSrc,
    /// `script-src-elem`.
    ScriptSrcElem,
    /// `script-src-attr`.
    ScriptSrcAttr,
    /// `style-src`.
    StyleSrc,
    /// `style-src-elem`.
    StyleSrcElem,
    /// `style-src-attr`.
    StyleSrcAttr,
    /// `img-src`.
    ImgSrc,
    /// `font-src`.
    FontSrc,
    /// `connect-src`.
    ConnectSrc,
    /// `media-src`.
    MediaSrc,
    /// `object-src`.
    ObjectSrc,
    /// `frame-src`.
    FrameSrc,
    /// `child-src`.
    ChildSrc,
    /// `worker-src`.
    WorkerSrc,
    /// `manifest-src`.
    ManifestSrc,
    /// `frame-ancestors`: who may embed the page (hosts, schemes, `'self'`
    /// or `'none'` only).
    FrameAncestors,
    /// `base-uri`.
    BaseUri,
    /// `form-action`.
    FormAction,
}

impl Directive {
    /// The directive's name as written in the header.
    pub const fn name(self) -> &'static str {
        match self {
            Directive::DefaultSrc => "default-src",
            Directive::ScriptSrc => "script-src",
            Directive::ScriptSrcElem => "script-src-elem",
            Directive::ScriptSrcAttr => "script-src-attr",
            Directive::StyleSrc => "style-src",
            Directive::StyleSrcElem => "style-src-elem",
            Directive::StyleSrcAttr => "style-src-attr",
            Directive::ImgSrc => "img-src",
            Directive::FontSrc => "font-src",
            Directive::ConnectSrc => "connect-src",
            Directive::MediaSrc => "media-src",
            Directive::ObjectSrc => "object-src",
            Directive::FrameSrc => "frame-src",
            Directive::ChildSrc => "child-src",
            Directive::WorkerSrc => "worker-src",
            Directive::ManifestSrc => "manifest-src",
            Directive::FrameAncestors => "frame-ancestors",
            Directive::BaseUri => "base-uri",
            Directive::FormAction => "form-action",
        }
    }
}

/// The hash algorithm of a [`Source::Hash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl HashAlgorithm {
    const fn prefix(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    const fn len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

/// One source of a directive. Keywords are quoted when written; other
/// values are checked at build time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// `'self'`: the page's own origin.
    SelfOrigin,
    /// `'none'`: nothing; must be the directive's only source.
    None,
    /// `'unsafe-inline'`.
    UnsafeInline,
    /// `'unsafe-eval'`.
    UnsafeEval,
    /// `'unsafe-hashes'`.
    UnsafeHashes,
    /// `'strict-dynamic'`.
    StrictDynamic,
    /// `'wasm-unsafe-eval'`.
    WasmUnsafeEval,
    /// `'report-sample'`.
    ReportSample,
    /// `'nonce-…'` with the response's fresh nonce.
    Nonce,
    /// `'sha256-…'` and friends: the base64 digest of an inline script or
    /// style.
    Hash(HashAlgorithm, String),
    /// A scheme such as `https:` or `data:`.
    Scheme(String),
    /// A host source such as `cdn.example.com`, `*.example.com`,
    /// `https://api.example.com:8443/path/`.
    Host(String),
}

impl Source {
    /// A host source (checked at build time).
    pub fn host(host: impl Into<String>) -> Self {
        Source::Host(host.into())
    }

    /// A scheme source, with or without its trailing colon (checked at
    /// build time).
    pub fn scheme(scheme: impl Into<String>) -> Self {
        let scheme = scheme.into();
        Source::Scheme(scheme.trim().trim_end_matches(':').to_owned())
    }

    /// A SHA-256 hash source from the base64 digest (checked at build time).
    pub fn sha256(digest_base64: impl Into<String>) -> Self {
        Source::Hash(HashAlgorithm::Sha256, digest_base64.into())
    }

    /// A SHA-384 hash source from the base64 digest.
    pub fn sha384(digest_base64: impl Into<String>) -> Self {
        Source::Hash(HashAlgorithm::Sha384, digest_base64.into())
    }

    /// A SHA-512 hash source from the base64 digest.
    pub fn sha512(digest_base64: impl Into<String>) -> Self {
        Source::Hash(HashAlgorithm::Sha512, digest_base64.into())
    }

    fn keyword(&self) -> Option<&'static str> {
        Some(match self {
            Source::SelfOrigin => "'self'",
            Source::None => "'none'",
            Source::UnsafeInline => "'unsafe-inline'",
            Source::UnsafeEval => "'unsafe-eval'",
            Source::UnsafeHashes => "'unsafe-hashes'",
            Source::StrictDynamic => "'strict-dynamic'",
            Source::WasmUnsafeEval => "'wasm-unsafe-eval'",
            Source::ReportSample => "'report-sample'",
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Sources(Directive, Vec<Source>),
    UpgradeInsecureRequests,
    BlockAllMixedContent,
    ReportTo(String),
    ReportUri(Vec<String>),
}

impl Entry {
    fn same_kind(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Sources(a, _), Entry::Sources(b, _)) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// A Content-Security-Policy, written in the order its directives were
/// set. Setting a directive again replaces it in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentSecurityPolicy {
    entries: Vec<Entry>,
}

impl ContentSecurityPolicy {
    /// An empty policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// helmet 8's default policy: `default-src 'self'; base-uri 'self';
    /// font-src 'self' https: data:; form-action 'self'; frame-ancestors
    /// 'self'; img-src 'self' data:; object-src 'none'; script-src 'self';
    /// script-src-attr 'none'; style-src 'self' https: 'unsafe-inline';
    /// upgrade-insecure-requests`.
    pub fn helmet() -> Self {
        Self::new()
            .default_src([Source::SelfOrigin])
            .base_uri([Source::SelfOrigin])
            .font_src([
                Source::SelfOrigin,
                Source::scheme("https"),
                Source::scheme("data"),
            ])
            .form_action([Source::SelfOrigin])
            .frame_ancestors([Source::SelfOrigin])
            .img_src([Source::SelfOrigin, Source::scheme("data")])
            .object_src([Source::None])
            .script_src([Source::SelfOrigin])
            .directive(Directive::ScriptSrcAttr, [Source::None])
            .style_src([
                Source::SelfOrigin,
                Source::scheme("https"),
                Source::UnsafeInline,
            ])
            .upgrade_insecure_requests()
    }

    /// The OWASP Secure Headers Project's recommended policy: `default-src
    /// 'self'; form-action 'self'; object-src 'none'; frame-ancestors
    /// 'none'; upgrade-insecure-requests; block-all-mixed-content`.
    pub fn owasp() -> Self {
        Self::new()
            .default_src([Source::SelfOrigin])
            .form_action([Source::SelfOrigin])
            .object_src([Source::None])
            .frame_ancestors([Source::None])
            .upgrade_insecure_requests()
            .block_all_mixed_content()
    }

    /// The policy of a JSON API, which serves no documents:
    /// `default-src 'none'; frame-ancestors 'none'`.
    pub fn api() -> Self {
        Self::new()
            .default_src([Source::None])
            .frame_ancestors([Source::None])
    }

    fn set(mut self, entry: Entry) -> Self {
        match self.entries.iter_mut().find(|e| e.same_kind(&entry)) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
        self
    }

    /// Sets a directive's sources, replacing any it had.
    pub fn directive(
        self,
        directive: Directive,
        sources: impl IntoIterator<Item = Source>,
    ) -> Self {
        self.set(Entry::Sources(directive, sources.into_iter().collect()))
    }

    /// Removes a directive.
    pub fn without(mut self, directive: Directive) -> Self {
        self.entries
            .retain(|e| !matches!(e, Entry::Sources(d, _) if *d == directive));
        self
    }

    /// Sets `default-src`.
    pub fn default_src(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::DefaultSrc, sources)
    }

    /// Sets `script-src`.
    pub fn script_src(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::ScriptSrc, sources)
    }

    /// Sets `style-src`.
    pub fn style_src(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::StyleSrc, sources)
    }

    /// Sets `img-src`.
    pub fn img_src(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::ImgSrc, sources)
    }

    /// Sets `font-src`.
    pub fn font_src(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::FontSrc, sources)
    }

    /// Sets `connect-src`.
    pub fn connect_src(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::ConnectSrc, sources)
    }

    /// Sets `object-src`.
    pub fn object_src(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::ObjectSrc, sources)
    }

    /// Sets `frame-ancestors`.
    pub fn frame_ancestors(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::FrameAncestors, sources)
    }

    /// Sets `base-uri`.
    pub fn base_uri(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::BaseUri, sources)
    }

    /// Sets `form-action`.
    pub fn form_action(self, sources: impl IntoIterator<Item = Source>) -> Self {
        self.directive(Directive::FormAction, sources)
    }

    /// Adds `upgrade-insecure-requests`.
    pub fn upgrade_insecure_requests(self) -> Self {
        self.set(Entry::UpgradeInsecureRequests)
    }

    /// Adds `block-all-mixed-content` (deprecated, still in OWASP's list).
    pub fn block_all_mixed_content(self) -> Self {
        self.set(Entry::BlockAllMixedContent)
    }

    /// Sends violation reports to the Reporting API endpoint `group`
    /// (declare it with
    /// [`SecurityHeaders::reporting_endpoint`](crate::SecurityHeaders::reporting_endpoint)).
    pub fn report_to(self, group: impl Into<String>) -> Self {
        self.set(Entry::ReportTo(group.into()))
    }

    /// Sends violation reports to `uri` (deprecated `report-uri`, for
    /// browsers without the Reporting API). Repeated calls add URIs.
    pub fn report_uri(mut self, uri: impl Into<String>) -> Self {
        let uri = uri.into();
        match self
            .entries
            .iter_mut()
            .find(|e| matches!(e, Entry::ReportUri(_)))
        {
            Some(Entry::ReportUri(uris)) => uris.push(uri),
            _ => self.entries.push(Entry::ReportUri(vec![uri])),
        }
        self
    }

    /// Reads a policy written as in the header (for configuration files):
    /// keywords quoted (`'self'`), `'nonce'` for the per-request nonce,
    /// hashes as `'sha256-…'`, schemes as `https:`, anything else a host.
    /// Every value is then checked as if set through the builder, by
    /// [`to_header_value`](Self::to_header_value) or at build.
    ///
    /// ```
    /// use palisade_headers::csp::{ContentSecurityPolicy, Source};
    ///
    /// let policy = ContentSecurityPolicy::parse("default-src 'self'; script-src 'self' 'nonce' cdn.example.com; upgrade-insecure-requests")?;
    /// assert_eq!(
    ///     policy,
    ///     ContentSecurityPolicy::new()
    ///         .default_src([Source::SelfOrigin])
    ///         .script_src([Source::SelfOrigin, Source::Nonce, Source::host("cdn.example.com")])
    ///         .upgrade_insecure_requests()
    /// );
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut policy = Self::new();
        for directive in text.split(';') {
            let mut tokens = directive.split_ascii_whitespace();
            let Some(name) = tokens.next() else { continue };
            let name = name.to_ascii_lowercase();
            let values: Vec<&str> = tokens.collect();
            let no_values = |policy: Self, entry: Entry| {
                if values.is_empty() {
                    Ok(policy.set(entry))
                } else {
                    Err(invalid(format!("{name} takes no value")))
                }
            };
            policy = match name.as_str() {
                "upgrade-insecure-requests" => no_values(policy, Entry::UpgradeInsecureRequests)?,
                "block-all-mixed-content" => no_values(policy, Entry::BlockAllMixedContent)?,
                "report-to" => match values.as_slice() {
                    [group] => policy.report_to(*group),
                    _ => return Err(invalid("report-to takes one group".into())),
                },
                "report-uri" => values.iter().fold(policy, |p, uri| p.report_uri(*uri)),
                _ => {
                    let directive = DIRECTIVES
                        .iter()
                        .copied()
                        .find(|d| d.name() == name)
                        .ok_or_else(|| invalid(format!("unknown directive {name:?}")))?;
                    policy.directive(directive, values.iter().map(|v| parse_source(v)))
                }
            };
        }
        Ok(policy)
    }

    /// Whether a directive has [`Source::Nonce`].
    pub fn uses_nonce(&self) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Sources(_, sources) => sources.contains(&Source::Nonce),
            _ => false,
        })
    }

    /// Whether violations are reported somewhere (`report-to` or `report-uri`).
    pub fn reports(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::ReportTo(_) | Entry::ReportUri(_)))
    }

    /// The header value of a policy without nonces, validated.
    pub fn to_header_value(&self) -> Result<HeaderValue, ConfigError> {
        let template = self.render()?;
        if template.parts.len() > 1 {
            return Err(ConfigError::invalid(
                "csp",
                "a policy with nonces has no fixed value: use it in SecurityHeaders",
            ));
        }
        template.fixed_value()
    }

    /// Validates and writes the policy, split around nonces.
    pub(crate) fn render(&self) -> Result<CspTemplate, ConfigError> {
        if self.entries.is_empty() {
            return Err(ConfigError::invalid("csp", "the policy has no directive"));
        }
        let mut parts = Vec::new();
        let mut current = String::with_capacity(256);
        for (index, entry) in self.entries.iter().enumerate() {
            if index > 0 {
                current.push_str("; ");
            }
            match entry {
                Entry::Sources(directive, sources) => {
                    validate_sources(*directive, sources)?;
                    current.push_str(directive.name());
                    for source in sources {
                        current.push(' ');
                        if let Some(keyword) = source.keyword() {
                            current.push_str(keyword);
                            continue;
                        }
                        match source {
                            Source::Nonce => {
                                current.push_str("'nonce-");
                                parts.push(std::mem::take(&mut current));
                                current.push('\'');
                            }
                            Source::Hash(algorithm, digest) => {
                                current.push('\'');
                                current.push_str(algorithm.prefix());
                                current.push('-');
                                current.push_str(digest.trim());
                                current.push('\'');
                            }
                            Source::Scheme(scheme) => {
                                current.push_str(scheme.trim().trim_end_matches(':'));
                                current.push(':');
                            }
                            Source::Host(host) => current.push_str(host.trim()),
                            _ => {}
                        }
                    }
                }
                Entry::UpgradeInsecureRequests => current.push_str("upgrade-insecure-requests"),
                Entry::BlockAllMixedContent => current.push_str("block-all-mixed-content"),
                Entry::ReportTo(group) => {
                    validate_token("report-to", group)?;
                    current.push_str("report-to ");
                    current.push_str(group);
                }
                Entry::ReportUri(uris) => {
                    current.push_str("report-uri");
                    for uri in uris {
                        validate_report_uri(uri)?;
                        current.push(' ');
                        current.push_str(uri.trim());
                    }
                }
            }
        }
        parts.push(current);
        let template = CspTemplate { parts };
        // Checks every byte once here so that joining with a base64 nonce
        // at request time always makes a valid header value.
        HeaderValue::try_from(template.parts.concat())
            .map_err(|_| ConfigError::invalid("csp", "the policy is not a valid header value"))?;
        Ok(template)
    }
}

impl fmt::Display for ContentSecurityPolicy {
    /// The policy as written, with `{nonce}` where nonces go; `<invalid>`
    /// if it does not validate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.render() {
            Ok(template) => f.write_str(&template.parts.join("{nonce}")),
            Err(_) => f.write_str("<invalid>"),
        }
    }
}

/// A rendered policy, split where the nonce goes.
#[derive(Clone, Debug)]
pub(crate) struct CspTemplate {
    pub(crate) parts: Vec<String>,
}

impl CspTemplate {
    pub(crate) fn fixed_value(&self) -> Result<HeaderValue, ConfigError> {
        HeaderValue::try_from(self.parts.concat())
            .map_err(|_| ConfigError::invalid("csp", "the policy is not a valid header value"))
    }
}

const DIRECTIVES: &[Directive] = &[
    Directive::DefaultSrc,
    Directive::ScriptSrc,
    Directive::ScriptSrcElem,
    Directive::ScriptSrcAttr,
    Directive::StyleSrc,
    Directive::StyleSrcElem,
    Directive::StyleSrcAttr,
    Directive::ImgSrc,
    Directive::FontSrc,
    Directive::ConnectSrc,
    Directive::MediaSrc,
    Directive::ObjectSrc,
    Directive::FrameSrc,
    Directive::ChildSrc,
    Directive::WorkerSrc,
    Directive::ManifestSrc,
    Directive::FrameAncestors,
    Directive::BaseUri,
    Directive::FormAction,
];

/// One source as written in a policy; left to validation when it is none
/// of the known forms (a quoted unknown keyword stays a host and is refused).
fn parse_source(text: &str) -> Source {
    let keyword = match text.to_ascii_lowercase().as_str() {
        "'self'" => Some(Source::SelfOrigin),
        "'none'" => Some(Source::None),
        "'unsafe-inline'" => Some(Source::UnsafeInline),
        "'unsafe-eval'" => Some(Source::UnsafeEval),
        "'unsafe-hashes'" => Some(Source::UnsafeHashes),
        "'strict-dynamic'" => Some(Source::StrictDynamic),
        "'wasm-unsafe-eval'" => Some(Source::WasmUnsafeEval),
        "'report-sample'" => Some(Source::ReportSample),
        "'nonce'" => Some(Source::Nonce),
        _ => None,
    };
    if let Some(keyword) = keyword {
        return keyword;
    }
    if let Some(hash) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        for (prefix, algorithm) in [
            ("sha256-", HashAlgorithm::Sha256),
            ("sha384-", HashAlgorithm::Sha384),
            ("sha512-", HashAlgorithm::Sha512),
        ] {
            if let Some(digest) = hash.strip_prefix(prefix) {
                return Source::Hash(algorithm, digest.to_owned());
            }
        }
    }
    let is_scheme = text.strip_suffix(':').is_some_and(|scheme| {
        scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    if is_scheme {
        Source::scheme(text)
    } else {
        Source::Host(text.to_owned())
    }
}

const KEYWORDS: &[&str] = &[
    "self",
    "none",
    "unsafe-inline",
    "unsafe-eval",
    "unsafe-hashes",
    "strict-dynamic",
    "wasm-unsafe-eval",
    "report-sample",
    "unsafe-allow-redirects",
    "inline-speculation-rules",
];

fn invalid(reason: String) -> ConfigError {
    ConfigError::invalid("csp", reason)
}

fn validate_sources(directive: Directive, sources: &[Source]) -> Result<(), ConfigError> {
    let name = directive.name();
    if sources.is_empty() {
        return Err(invalid(format!(
            "{name} has no source: write Source::None to allow nothing"
        )));
    }
    if sources.contains(&Source::None) && sources.len() > 1 {
        return Err(invalid(format!(
            "{name}: 'none' must be the only source (browsers ignore it beside others)"
        )));
    }
    for source in sources {
        if directive == Directive::FrameAncestors
            && !matches!(
                source,
                Source::SelfOrigin | Source::None | Source::Host(_) | Source::Scheme(_)
            )
        {
            return Err(invalid(format!(
                "frame-ancestors takes only hosts, schemes, 'self' and 'none', not {source:?}"
            )));
        }
        match source {
            Source::Host(host) => validate_host(name, host)?,
            Source::Scheme(scheme) => validate_scheme(name, scheme)?,
            Source::Hash(algorithm, digest) => validate_hash(name, *algorithm, digest)?,
            _ => {}
        }
    }
    Ok(())
}

/// Characters of a host source: host, port, path, wildcards. No quote,
/// whitespace, `;` or `,`, so a source can never end its directive or
/// the policy.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/*%@!$&+=[]".contains(&b)
}

fn validate_host(name: &str, host: &str) -> Result<(), ConfigError> {
    let host = host.trim();
    if host.is_empty() {
        return Err(invalid(format!("{name}: empty host source")));
    }
    let bare = host.trim_matches(|c| c == '\'' || c == '"');
    if let Some(keyword) = KEYWORDS.iter().find(|k| bare.eq_ignore_ascii_case(k)) {
        return Err(invalid(format!(
            "{name}: {host:?} is the keyword '{keyword}', not a host: use the Source keyword variant"
        )));
    }
    let starts_with = |prefix: &str| {
        bare.len() > prefix.len()
            && bare.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    if ["nonce-", "sha256-", "sha384-", "sha512-"]
        .into_iter()
        .any(starts_with)
    {
        return Err(invalid(format!(
            "{name}: {host:?} is a nonce or hash: use Source::Nonce or Source::sha256"
        )));
    }
    if let Some(bad) = host.bytes().find(|b| !is_host_byte(*b)) {
        return Err(invalid(format!(
            "{name}: host source {host:?} has the character {:?}, which a host source cannot hold",
            char::from(bad)
        )));
    }
    Ok(())
}

fn validate_scheme(name: &str, scheme: &str) -> Result<(), ConfigError> {
    let scheme = scheme.trim().trim_end_matches(':');
    let mut bytes = scheme.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !valid {
        return Err(invalid(format!("{name}: {scheme:?} is not a scheme")));
    }
    Ok(())
}

fn validate_hash(name: &str, algorithm: HashAlgorithm, digest: &str) -> Result<(), ConfigError> {
    let digest = digest.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(digest)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(digest));
    match decoded {
        Ok(bytes) if bytes.len() == algorithm.len() => Ok(()),
        _ => Err(invalid(format!(
            "{name}: {digest:?} is not the base64 of a {} digest",
            algorithm.prefix()
        ))),
    }
}

fn validate_token(field: &str, token: &str) -> Result<(), ConfigError> {
    let valid = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field}: {token:?} is not a token (letters, digits, '-', '_', '.')"
        )))
    }
}

fn validate_report_uri(uri: &str) -> Result<(), ConfigError> {
    let uri = uri.trim();
    let valid = !uri.is_empty()
        && uri
            .bytes()
            .all(|b| is_host_byte(b) || b == b'?' || b == b'#');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "report-uri: {uri:?} is not a URI without spaces, quotes, ';' or ','"
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keywords_are_quoted_and_directives_kept_in_order() {
        let policy = ContentSecurityPolicy::new()
            .default_src([Source::SelfOrigin])
            .script_src([
                Source::SelfOrigin,
                Source::StrictDynamic,
                Source::host("cdn.example.com"),
            ])
            .img_src([Source::SelfOrigin, Source::scheme("data:")])
            .report_to("csp-endpoint");
        assert_eq!(
            policy.to_header_value().unwrap(),
            "default-src 'self'; script-src 'self' 'strict-dynamic' cdn.example.com; img-src 'self' data:; report-to csp-endpoint"
        );
    }

    #[test]
    fn setting_a_directive_again_replaces_it_in_place() {
        let policy = ContentSecurityPolicy::helmet().script_src([Source::None]);
        assert_eq!(
            policy.to_header_value().unwrap(),
            "default-src 'self'; base-uri 'self'; font-src 'self' https: data:; form-action 'self'; frame-ancestors 'self'; img-src 'self' data:; object-src 'none'; script-src 'none'; script-src-attr 'none'; style-src 'self' https: 'unsafe-inline'; upgrade-insecure-requests"
        );
    }

    #[test]
    fn bare_keywords_written_as_hosts_are_refused() {
        for host in ["self", "'self'", "NONE", "unsafe-inline", "'nonce-abc'"] {
            let policy = ContentSecurityPolicy::new().script_src([Source::host(host)]);
            assert!(policy.to_header_value().is_err(), "{host}");
        }
    }

    #[test]
    fn injection_attempts_are_refused() {
        for host in [
            "a.com; script-src *",
            "a.com, b",
            "a.com 'unsafe-inline'",
            "a\r\nb",
            "é.com",
            "",
        ] {
            let policy = ContentSecurityPolicy::new().script_src([Source::host(host)]);
            assert!(policy.to_header_value().is_err(), "{host:?}");
        }
        assert!(
            ContentSecurityPolicy::new()
                .report_to("a; b")
                .to_header_value()
                .is_err()
        );
        assert!(
            ContentSecurityPolicy::new()
                .report_uri("/r x")
                .to_header_value()
                .is_err()
        );
        assert!(
            ContentSecurityPolicy::new()
                .img_src([Source::scheme("ht tp")])
                .to_header_value()
                .is_err()
        );
    }

    #[test]
    fn none_must_stand_alone_and_lists_must_not_be_empty() {
        let both = ContentSecurityPolicy::new().default_src([Source::None, Source::SelfOrigin]);
        assert!(both.to_header_value().is_err());
        let empty = ContentSecurityPolicy::new().default_src([]);
        assert!(empty.to_header_value().is_err());
        assert!(ContentSecurityPolicy::new().to_header_value().is_err());
    }

    #[test]
    fn frame_ancestors_refuses_script_keywords() {
        for source in [Source::UnsafeInline, Source::Nonce, Source::StrictDynamic] {
            let policy = ContentSecurityPolicy::new().frame_ancestors([source]);
            assert!(policy.render().is_err());
        }
    }

    #[test]
    fn hashes_must_be_base64_digests_of_the_right_length() {
        let good = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let policy = ContentSecurityPolicy::new().script_src([Source::sha256(good)]);
        assert_eq!(
            policy.to_header_value().unwrap(),
            format!("script-src 'sha256-{good}'")
        );
        assert!(
            ContentSecurityPolicy::new()
                .script_src([Source::sha384(good)])
                .render()
                .is_err()
        );
        assert!(
            ContentSecurityPolicy::new()
                .script_src([Source::sha256("x'; y")])
                .render()
                .is_err()
        );
    }

    #[test]
    fn nonce_splits_the_policy_around_each_nonce() {
        let policy = ContentSecurityPolicy::new()
            .script_src([Source::Nonce, Source::StrictDynamic])
            .style_src([Source::SelfOrigin, Source::Nonce]);
        let template = policy.render().unwrap();
        assert_eq!(
            template.parts,
            [
                "script-src 'nonce-",
                "' 'strict-dynamic'; style-src 'self' 'nonce-",
                "'"
            ]
        );
        assert!(policy.to_header_value().is_err());
        assert_eq!(
            policy.to_string(),
            "script-src 'nonce-{nonce}' 'strict-dynamic'; style-src 'self' 'nonce-{nonce}'"
        );
    }

    #[test]
    fn written_policies_parse_into_the_same_typed_policy() {
        let helmet = ContentSecurityPolicy::helmet().to_header_value().unwrap();
        let parsed = ContentSecurityPolicy::parse(helmet.to_str().unwrap()).unwrap();
        assert_eq!(parsed, ContentSecurityPolicy::helmet());
        // helmet writes its policy without spaces after ';'.
        let compact = helmet.to_str().unwrap().replace("; ", ";");
        assert_eq!(
            ContentSecurityPolicy::parse(&compact).unwrap(),
            ContentSecurityPolicy::helmet()
        );
        let good = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let parsed = ContentSecurityPolicy::parse(&format!(
            "script-src 'nonce' 'sha256-{good}' 'strict-dynamic'; report-to csp; report-uri /r"
        ))
        .unwrap();
        assert!(parsed.uses_nonce());
        assert_eq!(
            parsed.to_string(),
            format!(
                "script-src 'nonce-{{nonce}}' 'sha256-{good}' 'strict-dynamic'; report-to csp; report-uri /r"
            )
        );
        assert!(ContentSecurityPolicy::parse("scripts-src 'self'").is_err());
        assert!(ContentSecurityPolicy::parse("upgrade-insecure-requests 'self'").is_err());
        let unknown_keyword =
            ContentSecurityPolicy::parse("script-src 'unsafe-everything'").unwrap();
        assert!(unknown_keyword.to_header_value().is_err());
    }

    /// The directive names of a rendered policy.
    fn directive_names(value: &str) -> Vec<String> {
        value
            .split(';')
            .map(|d| d.split_whitespace().next().unwrap_or_default().to_owned())
            .collect()
    }

    proptest! {
        #[test]
        fn no_source_value_can_add_a_directive_or_a_source(host in any::<String>(), scheme in any::<String>(), group in any::<String>(), uri in any::<String>()) {
            let policy = ContentSecurityPolicy::new()
                .script_src([Source::SelfOrigin, Source::host(host.clone())])
                .img_src([Source::scheme(scheme)])
                .report_uri(uri)
                .report_to(group);
            if let Ok(value) = policy.to_header_value() {
                let value = value.to_str().unwrap().to_owned();
                prop_assert_eq!(directive_names(&value), ["script-src", "img-src", "report-uri", "report-to"]);
                prop_assert!(!value.contains(','));
                let script = value.split(';').next().unwrap();
                // 'self' and exactly one host, never quoted.
                prop_assert_eq!(script.split_whitespace().count(), 3);
                prop_assert!(!script.split_whitespace().nth(2).unwrap().contains('\''));
            }
        }

        #[test]
        fn hostlike_values_of_safe_characters_are_accepted(host in "[a-z0-9][a-z0-9.-]{0,30}\\.example\\.com(:[0-9]{1,5})?") {
            let policy = ContentSecurityPolicy::new().connect_src([Source::host(host.clone())]);
            let expected = format!("connect-src {host}");
            prop_assert_eq!(policy.to_header_value().unwrap(), expected.as_str());
        }
    }
}
