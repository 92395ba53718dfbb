//! Where a request's token is read from.
//!
//! - `Authorization: Bearer <token>` (the scheme in any case); more than one
//!   `Authorization` header is refused.
//! - A named cookie, for browser dashboards.
//! - For WebSocket upgrades only, since browsers cannot set headers there:
//!   a `Sec-WebSocket-Protocol` entry `base64url.bearer.<base64url(token)>`,
//!   and a query parameter. Both are removed from the request before the
//!   inner service (and any log inside this layer) sees it; the inner
//!   service chooses among the other offered subprotocols and echoes that
//!   one, never the credential.
//!
//! A request carrying a token in more than one place is refused.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderValue, Request, Uri};

use crate::failure::AuthFailure;

/// The places a token is looked for.
#[derive(Clone, Debug)]
pub struct TokenSources {
    bearer: bool,
    cookie: Option<String>,
    cookie_origins: Vec<String>,
    websocket_protocol: Option<String>,
    websocket_query: Option<String>,
}

impl Default for TokenSources {
    /// `Authorization: Bearer` only.
    fn default() -> Self {
        Self {
            bearer: true,
            cookie: None,
            cookie_origins: Vec::new(),
            websocket_protocol: None,
            websocket_query: None,
        }
    }
}

/// Where a token was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Header,
    Cookie,
    Protocol,
    Query,
}

pub(crate) enum Found<'a> {
    Nothing,
    Token(Cow<'a, str>, Origin),
    Refused(AuthFailure),
}

impl TokenSources {
    /// No source at all; add the ones you want.
    pub fn none() -> Self {
        Self {
            bearer: false,
            ..Self::default()
        }
    }

    /// Reads `Authorization: Bearer` (on by default).
    pub fn bearer(mut self, on: bool) -> Self {
        self.bearer = on;
        self
    }

    /// Reads the cookie of this name. Browsers send cookies with
    /// requests other sites start, so a cookie credential on a WebSocket
    /// handshake or an unsafe method (POST, PUT, PATCH, DELETE) is refused
    /// when the request's `Origin` is not one of
    /// [`cookie_origins`](Self::cookie_origins) (none by default). Requests
    /// without `Origin` (not from a browser) are not affected. Prefer a
    /// `__Host-` cookie name: no sibling subdomain can set it.
    pub fn cookie(mut self, name: impl Into<String>) -> Self {
        self.cookie = Some(name.into());
        self
    }

    /// The origins (`https://app.example.com`) whose pages may use the
    /// cookie credential on WebSocket handshakes and unsafe methods.
    pub fn cookie_origins<I, T>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.cookie_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// On WebSocket upgrades, reads the `Sec-WebSocket-Protocol` entry
    /// `base64url.bearer.<base64url(token)>`.
    pub fn websocket_protocol(mut self) -> Self {
        self.websocket_protocol = Some(PROTOCOL_PREFIX.to_owned());
        self
    }

    /// On WebSocket upgrades, reads the query parameter `name` (for example
    /// `access_token`).
    pub fn websocket_query(mut self, name: impl Into<String>) -> Self {
        self.websocket_query = Some(name.into());
        self
    }

    pub(crate) fn find<'a, B>(&self, request: &'a Request<B>) -> Found<'a> {
        let mut found: Option<(Cow<'a, str>, Origin)> = None;
        let mut take = |token: Cow<'a, str>, origin: Origin| -> Result<(), AuthFailure> {
            if found.is_some() {
                return Err(AuthFailure::MultipleCredentials);
            }
            found = Some((token, origin));
            Ok(())
        };
        let headers = request.headers();
        let result = (|| {
            if self.bearer
                && let Some(token) = bearer(headers)?
            {
                take(Cow::Borrowed(token), Origin::Header)?;
            }
            if let Some(name) = &self.cookie
                && let Some(token) = cookie(headers, name)?
            {
                self.check_cookie_origin(request)?;
                take(Cow::Borrowed(token), Origin::Cookie)?;
            }
            if is_websocket_upgrade(request) {
                if let Some(prefix) = &self.websocket_protocol
                    && let Some(token) = protocol_token(headers, prefix)?
                {
                    take(Cow::Owned(token), Origin::Protocol)?;
                }
                if let Some(name) = &self.websocket_query
                    && let Some(token) = query_token(request.uri(), name)?
                {
                    take(token, Origin::Query)?;
                }
            }
            Ok(())
        })();
        match result {
            Err(failure) => Found::Refused(failure),
            Ok(()) => match found {
                Some((token, origin)) => Found::Token(token, origin),
                None => Found::Nothing,
            },
        }
    }

    /// Cross-site request forgery and WebSocket hijacking: a browser sends
    /// the cookie with requests any page starts, and says which page in
    /// `Origin`.
    fn check_cookie_origin<B>(&self, request: &Request<B>) -> Result<(), AuthFailure> {
        let unsafe_method = !matches!(
            *request.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if !unsafe_method && !is_websocket_upgrade(request) {
            return Ok(());
        }
        match request.headers().get(http::header::ORIGIN) {
            None => Ok(()),
            Some(origin) => {
                let allowed = origin.to_str().is_ok_and(|origin| {
                    self.cookie_origins
                        .iter()
                        .any(|allowed| allowed.eq_ignore_ascii_case(origin))
                });
                if allowed {
                    Ok(())
                } else {
                    Err(AuthFailure::OriginNotAllowed)
                }
            }
        }
    }

    /// Removes a WebSocket credential from the request. For a subprotocol
    /// credential, returns the first other subprotocol the client offered:
    /// the one to echo if the inner service chooses none (browsers fail a
    /// handshake that offered subprotocols and got none back).
    pub(crate) fn strip<B>(&self, request: &mut Request<B>, origin: Origin) -> Option<HeaderValue> {
        match origin {
            Origin::Protocol => {
                let prefix = self.websocket_protocol.as_ref()?;
                let kept: Vec<String> = request
                    .headers()
                    .get_all(SEC_WEBSOCKET_PROTOCOL)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .flat_map(|value| value.split(','))
                    .map(str::trim)
                    .filter(|entry| !entry.is_empty() && !entry.starts_with(prefix.as_str()))
                    .map(str::to_owned)
                    .collect();
                let headers = request.headers_mut();
                headers.remove(SEC_WEBSOCKET_PROTOCOL);
                if !kept.is_empty()
                    && let Ok(value) = HeaderValue::from_str(&kept.join(", "))
                {
                    headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
                }
                kept.first()
                    .and_then(|first| HeaderValue::from_str(first).ok())
            }
            Origin::Query => {
                let name = self.websocket_query.as_ref()?;
                if let Some(uri) = without_query_param(request.uri(), name) {
                    *request.uri_mut() = uri;
                }
                None
            }
            Origin::Header | Origin::Cookie => None,
        }
    }
}

const PROTOCOL_PREFIX: &str = "base64url.bearer.";

fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, AuthFailure> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthFailure::MultipleCredentials);
    }
    let value = value.to_str().map_err(|_| AuthFailure::MalformedRequest)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, ApiKey): not ours to judge.
        return Ok(None);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return Err(AuthFailure::MalformedRequest);
    }
    Ok(Some(token))
}

fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Result<Option<&'a str>, AuthFailure> {
    // Other cookies may hold any bytes (a sibling app's UTF-8): only ours
    // must be readable.
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                continue;
            };
            if &pair[..eq] != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return Err(AuthFailure::MultipleCredentials);
            }
            let token =
                std::str::from_utf8(&pair[eq + 1..]).map_err(|_| AuthFailure::MalformedRequest)?;
            found = Some(token.trim_matches('"'));
        }
    }
    Ok(found.filter(|token| !token.is_empty()))
}

/// An HTTP/1.1 WebSocket handshake: `GET` with `Connection: upgrade` and
/// `Upgrade: websocket`. (HTTP/2 extended CONNECT handshakes carry no
/// `Upgrade` header; their credentials must come in `Authorization`.)
fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    let has = |name: http::header::HeaderName, token: &str| {
        request.headers().get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|item| item.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    request.method() == http::Method::GET
        && has(http::header::CONNECTION, "upgrade")
        && has(UPGRADE, "websocket")
}

fn protocol_token(headers: &http::HeaderMap, prefix: &str) -> Result<Option<String>, AuthFailure> {
    let mut found = None;
    for value in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else {
            return Err(AuthFailure::MalformedRequest);
        };
        for entry in value.split(',').map(str::trim) {
            if let Some(encoded) = entry.strip_prefix(prefix) {
                if found.is_some() {
                    return Err(AuthFailure::MultipleCredentials);
                }
                let bytes = URL_SAFE_NO_PAD
                    .decode(encoded.trim_end_matches('='))
                    .map_err(|_| AuthFailure::MalformedRequest)?;
                found = Some(String::from_utf8(bytes).map_err(|_| AuthFailure::MalformedRequest)?);
            }
        }
    }
    Ok(found)
}

fn query_token<'a>(uri: &'a Uri, name: &str) -> Result<Option<Cow<'a, str>>, AuthFailure> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            if found.is_some() {
                return Err(AuthFailure::MultipleCredentials);
            }
            let decoded = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| AuthFailure::MalformedRequest)?;
            found = Some(decoded);
        }
    }
    Ok(found.filter(|token| !token.is_empty()))
}

/// The URI without the parameter `name`, or `None` when it had none.
pub(crate) fn without_query_param(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(key, _)| key) != name)
        .collect();
    let mut path_and_query = uri.path().to_owned();
    if !kept.is_empty() {
        path_and_query.push('?');
        path_and_query.push_str(&kept.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(
        sources: &TokenSources,
        request: &Request<()>,
    ) -> Result<Option<(String, Origin)>, AuthFailure> {
        match sources.find(request) {
            Found::Nothing => Ok(None),
            Found::Token(token, origin) => Ok(Some((token.into_owned(), origin))),
            Found::Refused(failure) => Err(failure),
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_two_headers_are_refused() {
        let sources = TokenSources::default();
        let request = Request::builder()
            .header("authorization", "bEaReR a.b.c")
            .body(())
            .unwrap();
        assert_eq!(
            find(&sources, &request),
            Ok(Some(("a.b.c".into(), Origin::Header)))
        );
        let request = Request::builder()
            .header("authorization", "Bearer a.b.c")
            .header("authorization", "Bearer d.e.f")
            .body(())
            .unwrap();
        assert_eq!(
            find(&sources, &request),
            Err(AuthFailure::MultipleCredentials)
        );
        let request = Request::builder()
            .header("authorization", "Basic dTpw")
            .body(())
            .unwrap();
        assert_eq!(find(&sources, &request), Ok(None));
        let request = Request::builder()
            .header(
                "authorization",
                HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
            )
            .body(())
            .unwrap();
        assert_eq!(find(&sources, &request), Err(AuthFailure::MalformedRequest));
        let request = Request::builder()
            .header("authorization", "Bearer ")
            .body(())
            .unwrap();
        assert_eq!(find(&sources, &request), Err(AuthFailure::MalformedRequest));
    }

    #[test]
    fn other_cookies_may_hold_any_bytes_and_cross_site_unsafe_uses_are_refused() {
        let sources = TokenSources::default()
            .cookie("session")
            .cookie_origins(["https://app.example"]);
        let request = Request::builder()
            .header(
                "cookie",
                HeaderValue::from_bytes(b"name=Jos\xc3\xa9; session=x.y.z").unwrap(),
            )
            .body(())
            .unwrap();
        assert_eq!(
            find(&sources, &request),
            Ok(Some(("x.y.z".into(), Origin::Cookie)))
        );
        let forged = Request::builder()
            .method("POST")
            .header("cookie", "session=x.y.z")
            .header("origin", "https://evil.example")
            .body(())
            .unwrap();
        assert_eq!(find(&sources, &forged), Err(AuthFailure::OriginNotAllowed));
        let own = Request::builder()
            .method("POST")
            .header("cookie", "session=x.y.z")
            .header("origin", "https://app.example")
            .body(())
            .unwrap();
        assert!(find(&sources, &own).is_ok());
        let hijack = Request::builder()
            .header("cookie", "session=x.y.z")
            .header("origin", "https://evil.example")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .body(())
            .unwrap();
        assert_eq!(find(&sources, &hijack), Err(AuthFailure::OriginNotAllowed));
    }

    #[test]
    fn cookie_and_header_together_are_refused() {
        let sources = TokenSources::default().cookie("session");
        let request = Request::builder()
            .header("cookie", "a=1; session=x.y.z")
            .body(())
            .unwrap();
        assert_eq!(
            find(&sources, &request),
            Ok(Some(("x.y.z".into(), Origin::Cookie)))
        );
        let request = Request::builder()
            .header("cookie", "session=x.y.z")
            .header("authorization", "Bearer a.b.c")
            .body(())
            .unwrap();
        assert_eq!(
            find(&sources, &request),
            Err(AuthFailure::MultipleCredentials)
        );
    }

    #[test]
    fn websocket_sources_count_only_on_upgrades_and_are_stripped() {
        let sources = TokenSources::none()
            .websocket_protocol()
            .websocket_query("access_token");
        let encoded = URL_SAFE_NO_PAD.encode("h.p.s");
        let mut request = Request::builder()
            .uri("/ws?room=1&access_token=q.r.s&x=2")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header(
                "sec-websocket-protocol",
                format!("chat.v1, base64url.bearer.{encoded}"),
            )
            .body(())
            .unwrap();
        assert_eq!(
            find(&sources, &request),
            Err(AuthFailure::MultipleCredentials)
        );
        let echo = sources.strip(&mut request, Origin::Protocol);
        assert_eq!(request.headers()["sec-websocket-protocol"], "chat.v1");
        assert_eq!(echo.unwrap(), "chat.v1");
        assert_eq!(
            find(&sources, &request),
            Ok(Some(("q.r.s".into(), Origin::Query)))
        );
        sources.strip(&mut request, Origin::Query);
        assert_eq!(request.uri(), "/ws?room=1&x=2");

        let plain = Request::builder()
            .uri("/api?access_token=q.r.s")
            .body(())
            .unwrap();
        assert_eq!(find(&sources, &plain), Ok(None));
        let only = Uri::from_static("/ws?access_token=1");
        assert_eq!(without_query_param(&only, "access_token").unwrap(), "/ws");
    }
}
