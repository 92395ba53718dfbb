//! [`SecurityHeaders`]: the header set of a [`SecurityHeadersLayer`], its
//! presets and its typed values.

use std::sync::Arc;

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_REPORT_ONLY, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_DNS_PREFETCH_CONTROL, X_FRAME_OPTIONS, X_XSS_PROTECTION,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use palisade_core::ConfigError;
use palisade_core::client_ip::ClientIpResolver;

use crate::csp::ContentSecurityPolicy;
use crate::hsts::{Hsts, HttpsDetection};
use crate::layer::{NoncePolicy, SecurityHeadersLayer, Shared};
use crate::permissions::PermissionsPolicy;

/// `cross-origin-opener-policy`.
pub const CROSS_ORIGIN_OPENER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-opener-policy");
/// `cross-origin-embedder-policy`.
pub const CROSS_ORIGIN_EMBEDDER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-embedder-policy");
/// `cross-origin-resource-policy`.
pub const CROSS_ORIGIN_RESOURCE_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-resource-policy");
/// `origin-agent-cluster`.
pub const ORIGIN_AGENT_CLUSTER: HeaderName = HeaderName::from_static("origin-agent-cluster");
/// `x-download-options`.
pub const X_DOWNLOAD_OPTIONS: HeaderName = HeaderName::from_static("x-download-options");
/// `x-permitted-cross-domain-policies`.
pub const X_PERMITTED_CROSS_DOMAIN_POLICIES: HeaderName =
    HeaderName::from_static("x-permitted-cross-domain-policies");
/// `permissions-policy`.
pub const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
/// `reporting-endpoints`.
pub const REPORTING_ENDPOINTS: HeaderName = HeaderName::from_static("reporting-endpoints");

/// Headers that tell an attacker what runs behind the server: `Server`,
/// `X-Powered-By` and the rest of the OWASP Secure Headers Project's remove
/// list (as of its 2024-09 update). Stripped from every response by default.
pub const LEAKY_HEADERS: &[&str] = &[
    "$wsep",
    "host-header",
    "k-proxy-request",
    "liferay-portal",
    "oraclecommercecloud-version",
    "pega-host",
    "powered-by",
    "product",
    "server",
    "sourcemap",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-atmosphere-error",
    "x-atmosphere-first-request",
    "x-atmosphere-tracking-id",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-spanid",
    "x-b3-traceid",
    "x-beserver",
    "x-calculatedbetarget",
    "x-cf-powered-by",
    "x-cms",
    "x-cocoon-version",
    "x-content-encoded-by",
    "x-diaginfo",
    "x-dtagentid",
    "x-dthealthcheck",
    "x-dtinjectedservlet",
    "x-envoy-attempt-count",
    "x-envoy-external-address",
    "x-envoy-internal",
    "x-envoy-original-dst-host",
    "x-envoy-upstream-service-time",
    "x-feserver",
    "x-framework",
    "x-generated-by",
    "x-generator",
    "x-jitsi-release",
    "x-joomla-version",
    "x-kubernetes-pf-flowschema-ui",
    "x-kubernetes-pf-prioritylevel-uid",
    "x-litespeed-cache",
    "x-litespeed-cache-control",
    "x-litespeed-purge",
    "x-litespeed-tag",
    "x-litespeed-vary",
    "x-mod-pagespeed",
    "x-nextjs-cache",
    "x-nextjs-matched-path",
    "x-nextjs-page",
    "x-nextjs-redirect",
    "x-old-content-length",
    "x-oneagent-js-injection",
    "x-owa-version",
    "x-page-speed",
    "x-php-version",
    "x-powered-by",
    "x-powered-by-plesk",
    "x-powered-cms",
    "x-redirect-by",
    "x-ruxit-js-agent",
    "x-server-powered-by",
    "x-sourcefiles",
    "x-sourcemap",
    "x-turbo-charged-by",
    "x-umbraco-version",
    "x-varnish-backend",
    "x-varnish-server",
];

macro_rules! header_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The header value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }

            const fn header_value(self) -> HeaderValue {
                HeaderValue::from_static(self.as_str())
            }
        }
    };
}

header_enum!(
    /// `Referrer-Policy`.
    ReferrerPolicy {
        /// `no-referrer`.
        NoReferrer => "no-referrer",
        /// `no-referrer-when-downgrade`.
        NoReferrerWhenDowngrade => "no-referrer-when-downgrade",
        /// `origin`.
        Origin => "origin",
        /// `origin-when-cross-origin`.
        OriginWhenCrossOrigin => "origin-when-cross-origin",
        /// `same-origin`.
        SameOrigin => "same-origin",
        /// `strict-origin`.
        StrictOrigin => "strict-origin",
        /// `strict-origin-when-cross-origin`.
        StrictOriginWhenCrossOrigin => "strict-origin-when-cross-origin",
        /// `unsafe-url`.
        UnsafeUrl => "unsafe-url",
    }
);

header_enum!(
    /// `X-Frame-Options`.
    FrameOptions {
        /// `DENY`.
        Deny => "DENY",
        /// `SAMEORIGIN`.
        SameOrigin => "SAMEORIGIN",
    }
);

header_enum!(
    /// `Cross-Origin-Opener-Policy`.
    CrossOriginOpenerPolicy {
        /// `same-origin`.
        SameOrigin => "same-origin",
        /// `same-origin-allow-popups`.
        SameOriginAllowPopups => "same-origin-allow-popups",
        /// `noopener-allow-popups`.
        NoopenerAllowPopups => "noopener-allow-popups",
        /// `unsafe-none`.
        UnsafeNone => "unsafe-none",
    }
);

header_enum!(
    /// `Cross-Origin-Embedder-Policy`.
    CrossOriginEmbedderPolicy {
        /// `require-corp`.
        RequireCorp => "require-corp",
        /// `credentialless`.
        Credentialless => "credentialless",
        /// `unsafe-none`.
        UnsafeNone => "unsafe-none",
    }
);

header_enum!(
    /// `Cross-Origin-Resource-Policy`.
    CrossOriginResourcePolicy {
        /// `same-origin`.
        SameOrigin => "same-origin",
        /// `same-site`.
        SameSite => "same-site",
        /// `cross-origin`.
        CrossOrigin => "cross-origin",
    }
);

/// The header set of a [`SecurityHeadersLayer`], built from a preset or
/// from nothing. Values are validated and rendered once, by
/// [`build`](Self::build).
///
/// ```
/// use palisade_headers::SecurityHeaders;
/// use palisade_headers::csp::{ContentSecurityPolicy, Source};
///
/// let layer = SecurityHeaders::helmet()
///     .csp(ContentSecurityPolicy::helmet().script_src([Source::SelfOrigin, Source::Nonce]))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SecurityHeaders {
    csp: Option<ContentSecurityPolicy>,
    csp_report_only: Option<ContentSecurityPolicy>,
    permissions: Option<PermissionsPolicy>,
    hsts: Option<Hsts>,
    fixed: Vec<(HeaderName, HeaderValue)>,
    reporting_endpoints: Vec<(String, String)>,
    strip: Vec<HeaderName>,
    override_handler_headers: bool,
    https: HttpsDetection,
}

impl Default for SecurityHeaders {
    /// No header, the leaky headers stripped.
    fn default() -> Self {
        Self {
            csp: None,
            csp_report_only: None,
            permissions: None,
            hsts: None,
            fixed: Vec::new(),
            reporting_endpoints: Vec::new(),
            strip: LEAKY_HEADERS
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            override_handler_headers: false,
            https: HttpsDetection::default(),
        }
    }
}

impl SecurityHeaders {
    /// No header yet; the leaky headers are stripped.
    pub fn new() -> Self {
        Self::default()
    }

    /// helmet 8's defaults: its Content-Security-Policy
    /// ([`ContentSecurityPolicy::helmet`]), `Cross-Origin-Opener-Policy:
    /// same-origin`, `Cross-Origin-Resource-Policy: same-origin`,
    /// `Origin-Agent-Cluster: ?1`, `Referrer-Policy: no-referrer`,
    /// `Strict-Transport-Security: max-age=31536000; includeSubDomains`
    /// (HTTPS only), `X-Content-Type-Options: nosniff`,
    /// `X-DNS-Prefetch-Control: off`, `X-Download-Options: noopen`,
    /// `X-Frame-Options: SAMEORIGIN`, `X-Permitted-Cross-Domain-Policies:
    /// none`, `X-XSS-Protection: 0`, and `X-Powered-By` removed (with the
    /// other leaky headers).
    pub fn helmet() -> Self {
        Self::new()
            .csp(ContentSecurityPolicy::helmet())
            .cross_origin_opener_policy(CrossOriginOpenerPolicy::SameOrigin)
            .cross_origin_resource_policy(CrossOriginResourcePolicy::SameOrigin)
            .header(ORIGIN_AGENT_CLUSTER, HeaderValue::from_static("?1"))
            .referrer_policy(ReferrerPolicy::NoReferrer)
            .hsts(Hsts::default())
            .header(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
            .header(X_DNS_PREFETCH_CONTROL, HeaderValue::from_static("off"))
            .header(X_DOWNLOAD_OPTIONS, HeaderValue::from_static("noopen"))
            .frame_options(FrameOptions::SameOrigin)
            .header(
                X_PERMITTED_CROSS_DOMAIN_POLICIES,
                HeaderValue::from_static("none"),
            )
            .header(X_XSS_PROTECTION, HeaderValue::from_static("0"))
    }

    /// The OWASP Secure Headers Project's recommended values (its 2024-09
    /// list): `Cache-Control: no-store, max-age=0`, its
    /// Content-Security-Policy ([`ContentSecurityPolicy::owasp`]),
    /// `Cross-Origin-Embedder-Policy: require-corp`,
    /// `Cross-Origin-Opener-Policy: same-origin`,
    /// `Cross-Origin-Resource-Policy: same-origin`, its Permissions-Policy
    /// ([`PermissionsPolicy::owasp`]), `Referrer-Policy: no-referrer`,
    /// `Strict-Transport-Security: max-age=31536000; includeSubDomains`
    /// (HTTPS only), `X-Content-Type-Options: nosniff`, `X-Frame-Options:
    /// deny`, `X-Permitted-Cross-Domain-Policies: none`. Its
    /// `Clear-Site-Data` belongs on logout responses only: see
    /// [`clear_site_data`](crate::clear_site_data).
    pub fn owasp_strict() -> Self {
        Self::new()
            .header(
                CACHE_CONTROL,
                HeaderValue::from_static("no-store, max-age=0"),
            )
            .csp(ContentSecurityPolicy::owasp())
            .cross_origin_embedder_policy(CrossOriginEmbedderPolicy::RequireCorp)
            .cross_origin_opener_policy(CrossOriginOpenerPolicy::SameOrigin)
            .cross_origin_resource_policy(CrossOriginResourcePolicy::SameOrigin)
            .permissions_policy(PermissionsPolicy::owasp())
            .referrer_policy(ReferrerPolicy::NoReferrer)
            .hsts(Hsts::default())
            .header(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
            // OWASP writes it in lowercase; browsers read it either way.
            .header(X_FRAME_OPTIONS, HeaderValue::from_static("deny"))
            .header(
                X_PERMITTED_CROSS_DOMAIN_POLICIES,
                HeaderValue::from_static("none"),
            )
    }

    /// For JSON APIs, which serve no documents: `Content-Security-Policy:
    /// default-src 'none'; frame-ancestors 'none'`, `Cache-Control:
    /// no-store`, `Strict-Transport-Security: max-age=31536000;
    /// includeSubDomains` (HTTPS only), `X-Content-Type-Options: nosniff`,
    /// `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` (the OWASP
    /// REST Security Cheat Sheet's set).
    pub fn api() -> Self {
        Self::new()
            .csp(ContentSecurityPolicy::api())
            .header(CACHE_CONTROL, HeaderValue::from_static("no-store"))
            .hsts(Hsts::default())
            .header(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
            .frame_options(FrameOptions::Deny)
            .referrer_policy(ReferrerPolicy::NoReferrer)
    }

    /// Sets a header to a fixed value, replacing what the set had for it.
    /// (`Content-Security-Policy`, `Permissions-Policy` and
    /// `Strict-Transport-Security` have their own typed setters; setting
    /// them here replaces the typed value.)
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self = self.without(&name);
        self.fixed.push((name, value));
        self
    }

    /// Removes a header from the set (handlers may still set it).
    pub fn without(mut self, name: &HeaderName) -> Self {
        if name == CONTENT_SECURITY_POLICY {
            self.csp = None;
        } else if name == CONTENT_SECURITY_POLICY_REPORT_ONLY {
            self.csp_report_only = None;
        } else if name == PERMISSIONS_POLICY {
            self.permissions = None;
        } else if name == http::header::STRICT_TRANSPORT_SECURITY {
            self.hsts = None;
        } else if name == REPORTING_ENDPOINTS {
            self.reporting_endpoints.clear();
        }
        self.fixed.retain(|(n, _)| n != name);
        self
    }

    /// Sets the enforced Content-Security-Policy.
    pub fn csp(mut self, policy: ContentSecurityPolicy) -> Self {
        self = self.without(&CONTENT_SECURITY_POLICY);
        self.csp = Some(policy);
        self
    }

    /// Sets a report-only Content-Security-Policy
    /// (`Content-Security-Policy-Report-Only`), beside or instead of the
    /// enforced one. It must report somewhere (`report-to` or
    /// `report-uri`), or it does nothing: refused at build.
    pub fn csp_report_only(mut self, policy: ContentSecurityPolicy) -> Self {
        self = self.without(&CONTENT_SECURITY_POLICY_REPORT_ONLY);
        self.csp_report_only = Some(policy);
        self
    }

    /// Declares a Reporting API endpoint (`Reporting-Endpoints: name="url"`)
    /// for the policy's `report-to`.
    pub fn reporting_endpoint(mut self, name: impl Into<String>, url: impl Into<String>) -> Self {
        self.fixed.retain(|(n, _)| n != REPORTING_ENDPOINTS);
        self.reporting_endpoints.push((name.into(), url.into()));
        self
    }

    /// Sets the Permissions-Policy.
    pub fn permissions_policy(mut self, policy: PermissionsPolicy) -> Self {
        self = self.without(&PERMISSIONS_POLICY);
        self.permissions = Some(policy);
        self
    }

    /// Sets Strict-Transport-Security, sent on HTTPS requests only.
    pub fn hsts(mut self, hsts: Hsts) -> Self {
        self = self.without(&http::header::STRICT_TRANSPORT_SECURITY);
        self.hsts = Some(hsts);
        self
    }

    /// Sets `Referrer-Policy`.
    pub fn referrer_policy(self, policy: ReferrerPolicy) -> Self {
        self.header(REFERRER_POLICY, policy.header_value())
    }

    /// Sets `X-Frame-Options`.
    pub fn frame_options(self, options: FrameOptions) -> Self {
        self.header(X_FRAME_OPTIONS, options.header_value())
    }

    /// Sets `Cross-Origin-Opener-Policy`.
    pub fn cross_origin_opener_policy(self, policy: CrossOriginOpenerPolicy) -> Self {
        self.header(CROSS_ORIGIN_OPENER_POLICY, policy.header_value())
    }

    /// Sets `Cross-Origin-Embedder-Policy`.
    pub fn cross_origin_embedder_policy(self, policy: CrossOriginEmbedderPolicy) -> Self {
        self.header(CROSS_ORIGIN_EMBEDDER_POLICY, policy.header_value())
    }

    /// Sets `Cross-Origin-Resource-Policy`.
    pub fn cross_origin_resource_policy(self, policy: CrossOriginResourcePolicy) -> Self {
        self.header(CROSS_ORIGIN_RESOURCE_POLICY, policy.header_value())
    }

    /// Also strips `name` from every response.
    pub fn strip(mut self, name: HeaderName) -> Self {
        if !self.strip.contains(&name) {
            self.strip.push(name);
        }
        self
    }

    /// Lets `name` through although it is on the strip list.
    pub fn keep(mut self, name: &HeaderName) -> Self {
        self.strip.retain(|n| n != name);
        self
    }

    /// Strips nothing.
    pub fn strip_nothing(mut self) -> Self {
        self.strip.clear();
        self
    }

    /// Replaces the headers a handler set itself with the set's values. By
    /// default a handler's own value is kept (a route that must be
    /// embeddable sets its own `X-Frame-Options`).
    pub fn override_handler_headers(mut self) -> Self {
        self.override_handler_headers = true;
        self
    }

    /// Believes `X-Forwarded-Proto` from these proxies (and only from
    /// them) when deciding whether a request came over HTTPS.
    pub fn trust_proxies(mut self, proxies: ClientIpResolver) -> Self {
        self.https.proxies = Some(proxies);
        self
    }

    /// Every request came over HTTPS (TLS terminated in this process, no
    /// plain listener).
    pub fn assume_https(mut self) -> Self {
        self.https.assume_https = true;
        self
    }

    /// Validates every value and renders it once.
    pub fn build(self) -> Result<SecurityHeadersLayer, ConfigError> {
        let mut fixed = Vec::with_capacity(self.fixed.len() + 4);
        let mut nonce_policies = Vec::new();
        for (name, policy) in [
            (CONTENT_SECURITY_POLICY, &self.csp),
            (CONTENT_SECURITY_POLICY_REPORT_ONLY, &self.csp_report_only),
        ] {
            let Some(policy) = policy else { continue };
            if name == CONTENT_SECURITY_POLICY_REPORT_ONLY && !policy.reports() {
                return Err(ConfigError::invalid(
                    "csp_report_only",
                    "a report-only policy needs report-to or report-uri, or it does nothing",
                ));
            }
            let template = policy.render()?;
            if template.parts.len() > 1 {
                nonce_policies.push(NoncePolicy::new(name, template));
            } else {
                fixed.push((name, template.fixed_value()?));
            }
        }
        if let Some(permissions) = &self.permissions {
            fixed.push((PERMISSIONS_POLICY, permissions.to_header_value()?));
        }
        if !self.reporting_endpoints.is_empty() {
            fixed.push((
                REPORTING_ENDPOINTS,
                reporting_endpoints(&self.reporting_endpoints)?,
            ));
        }
        fixed.extend(self.fixed);
        let hsts = self.hsts.map(|hsts| hsts.to_header_value()).transpose()?;
        let mut strip = self.strip;
        strip.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut strip_first_bytes = [0u64; 4];
        for name in &strip {
            if let Some(&first) = name.as_str().as_bytes().first() {
                strip_first_bytes[usize::from(first >> 6)] |= 1u64 << (first & 63);
            }
        }
        let mut base = HeaderMap::with_capacity(fixed.len() + 1);
        for (name, value) in fixed {
            base.insert(name, value);
        }
        let mut base_https = base.clone();
        if let Some(hsts) = &hsts {
            base_https.insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        // Empty slots for the per-request policies, so that filling them
        // never grows the map.
        for policy in &nonce_policies {
            for map in [&mut base, &mut base_https] {
                map.insert(policy.name().clone(), HeaderValue::from_static(""));
            }
        }
        let content_type_slot = !base.contains_key(http::header::CONTENT_TYPE);
        if content_type_slot {
            for map in [&mut base, &mut base_https] {
                map.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(""));
            }
        }
        Ok(SecurityHeadersLayer::from_shared(Arc::new(Shared {
            base,
            base_https,
            has_hsts: hsts.is_some(),
            content_type_slot,
            nonce_policies: nonce_policies.into_boxed_slice(),
            strip: strip.into_boxed_slice(),
            strip_first_bytes,
            overriding: self.override_handler_headers,
            https: self.https,
        })))
    }
}

fn reporting_endpoints(endpoints: &[(String, String)]) -> Result<HeaderValue, ConfigError> {
    let mut value = String::new();
    for (name, url) in endpoints {
        let name_ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
        if !name_ok {
            return Err(ConfigError::invalid(
                "reporting_endpoint",
                format!("{name:?} is not a key (lowercase letters, digits, '_', '-', '.', '*')"),
            ));
        }
        let url_ok = url
            .parse::<http::Uri>()
            .is_ok_and(|uri| uri.scheme().is_some() && uri.authority().is_some())
            && url
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !url_ok {
            return Err(ConfigError::invalid(
                "reporting_endpoint",
                format!("{url:?} is not an absolute URL"),
            ));
        }
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(name);
        value.push_str("=\"");
        value.push_str(url);
        value.push('"');
    }
    HeaderValue::try_from(value)
        .map_err(|_| ConfigError::invalid("reporting_endpoint", "not a valid header value"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    #[test]
    fn presets_build_and_shortcuts_match_them() {
        let request = http::Request::get("https://example.com/").body(()).unwrap();
        for (shortcut, preset) in [
            (SecurityHeadersLayer::helmet(), SecurityHeaders::helmet()),
            (
                SecurityHeadersLayer::owasp_strict(),
                SecurityHeaders::owasp_strict(),
            ),
            (SecurityHeadersLayer::api(), SecurityHeaders::api()),
        ] {
            assert_eq!(
                shortcut.headers_for(&request),
                preset.build().unwrap().headers_for(&request)
            );
        }
    }

    #[test]
    fn every_leaky_name_is_a_header_name_and_the_list_is_sorted() {
        assert_eq!(SecurityHeaders::new().strip.len(), LEAKY_HEADERS.len());
        assert!(LEAKY_HEADERS.windows(2).all(|w| w[0] < w[1]));
    }
}
