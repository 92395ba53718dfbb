//! Why a credential was refused: precise for the audit log, uniform for the
//! client.
//!
//! Every bad token gets the same 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"` and the same description,
//! so a client cannot probe which check failed; the [`AuthFailure`] reason
//! goes to the audit event.

use std::time::Duration;

use palisade_core::Rejection;
use palisade_core::rejection::{BearerError, Challenge};

/// Why a request's credential was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No credential where one is required.
    Missing,
    /// More than one credential (two `Authorization` headers, or a header
    /// and a cookie).
    MultipleCredentials,
    /// The credential is not readable (not UTF-8, wrong scheme syntax).
    MalformedRequest,
    /// The token is longer than the configured maximum.
    TooLarge,
    /// The token is not three base64url parts with JSON header and claims.
    Malformed,
    /// The header names a `kid` longer than the configured maximum.
    KidTooLong,
    /// The header carries `crit` parameters, which nothing here understands.
    CriticalHeader,
    /// The header's `alg` is not one we verify (`none` included).
    UnsupportedAlgorithm,
    /// The header's `alg` differs from the algorithm its key is bound to.
    AlgorithmMismatch,
    /// The token's `iss` is not a configured issuer.
    UnknownIssuer,
    /// No key of the issuer matches the token's `kid`.
    UnknownKey,
    /// A well-formed API key that no record matches.
    UnknownApiKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is missing.
    MissingExpiry,
    /// `sub` (or the configured subject claim) is missing or not a string.
    MissingSubject,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway), or missing where a maximum
    /// age or lifetime needs it.
    BadIssuedAt,
    /// `iat` is older than the configured maximum age.
    TooOld,
    /// `exp - iat` is longer than the configured maximum lifetime.
    LifetimeTooLong,
    /// The audience does not include a configured one.
    WrongAudience,
    /// The header's `typ` is not the required one.
    WrongType,
    /// The token's `jti` is on the deny-list.
    Revoked,
    /// The subject signed out everywhere after the token was issued.
    SignedOut,
    /// A WebSocket ticket is unknown, used or expired.
    InvalidTicket,
    /// A cookie credential on a cross-site WebSocket handshake or unsafe
    /// request.
    OriginNotAllowed,
    /// The issuer's keys have not loaded yet (identity provider down).
    KeysUnavailable,
    /// The revocation store did not answer and the policy is fail-closed.
    RevocationUnavailable,
    /// A client certificate, or a trusted proxy's report of one, that gives
    /// no usable identity (unreadable, several SPIFFE ids, none required).
    CertificateRefused,
}

impl AuthFailure {
    /// A stable name for logs and audit events.
    pub const fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "credential_missing",
            AuthFailure::MultipleCredentials => "multiple_credentials",
            AuthFailure::MalformedRequest => "credential_unreadable",
            AuthFailure::TooLarge => "token_too_large",
            AuthFailure::Malformed => "token_malformed",
            AuthFailure::KidTooLong => "kid_too_long",
            AuthFailure::CriticalHeader => "critical_header",
            AuthFailure::UnsupportedAlgorithm => "algorithm_unsupported",
            AuthFailure::AlgorithmMismatch => "algorithm_mismatch",
            AuthFailure::UnknownIssuer => "issuer_unknown",
            AuthFailure::UnknownKey => "key_unknown",
            AuthFailure::UnknownApiKey => "api_key_unknown",
            AuthFailure::BadSignature => "signature_invalid",
            AuthFailure::MissingExpiry => "exp_missing",
            AuthFailure::MissingSubject => "sub_missing",
            AuthFailure::Expired => "token_expired",
            AuthFailure::NotYetValid => "token_not_yet_valid",
            AuthFailure::BadIssuedAt => "iat_invalid",
            AuthFailure::TooOld => "token_too_old",
            AuthFailure::LifetimeTooLong => "lifetime_too_long",
            AuthFailure::WrongAudience => "audience_mismatch",
            AuthFailure::WrongType => "typ_mismatch",
            AuthFailure::Revoked => "token_revoked",
            AuthFailure::SignedOut => "subject_signed_out",
            AuthFailure::InvalidTicket => "ticket_invalid",
            AuthFailure::OriginNotAllowed => "origin_not_allowed",
            AuthFailure::KeysUnavailable => "keys_unavailable",
            AuthFailure::RevocationUnavailable => "revocation_unavailable",
            AuthFailure::CertificateRefused => "certificate_refused",
        }
    }

    /// Whether the failure is ours (keys or stores unavailable) rather than
    /// the client's: answered with 503, not 401.
    pub const fn is_unavailable(self) -> bool {
        matches!(
            self,
            AuthFailure::KeysUnavailable | AuthFailure::RevocationUnavailable
        )
    }

    /// The refusal the client sees, with a challenge in `realm`.
    pub fn rejection(self, realm: Option<&str>) -> Rejection {
        if self.is_unavailable() {
            return Rejection::unavailable(UNAVAILABLE_RETRY)
                .with_detail("Authentication is temporarily unavailable.");
        }
        if self == AuthFailure::OriginNotAllowed {
            return Rejection::forbidden()
                .with_detail("This credential cannot be used from another site.");
        }
        let mut challenge = Challenge::bearer();
        if let Some(realm) = realm {
            challenge = challenge.realm(realm);
        }
        if matches!(
            self,
            AuthFailure::MultipleCredentials | AuthFailure::MalformedRequest
        ) {
            // RFC 6750 §3.1: a malformed request is 400, not 401.
            let detail = "The request must carry exactly one readable credential.";
            return Rejection::bad_request()
                .with_challenge(
                    &challenge
                        .error(BearerError::InvalidRequest)
                        .error_description(detail),
                )
                .with_detail(detail);
        }
        let (challenge, detail) = match self {
            // RFC 6750 §3.1: no error code when the request had no credential.
            AuthFailure::Missing => (challenge, "A bearer token is required."),
            AuthFailure::CertificateRefused => {
                (challenge, "The client certificate is not accepted.")
            }
            _ => (
                challenge
                    .error(BearerError::InvalidToken)
                    .error_description(INVALID_TOKEN),
                INVALID_TOKEN,
            ),
        };
        Rejection::unauthenticated()
            .with_challenge(&challenge)
            .with_detail(detail)
    }
}

const INVALID_TOKEN: &str = "The access token is invalid.";
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn every_token_failure_looks_the_same_to_the_client() {
        let expired = AuthFailure::Expired.rejection(Some("api"));
        let forged = AuthFailure::BadSignature.rejection(Some("api"));
        assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(expired.detail(), forged.detail());
        assert_eq!(
            expired.header("www-authenticate"),
            forged.header("www-authenticate")
        );
        let challenge = expired
            .header("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("Bearer realm=\"api\""), "{challenge}");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }

    #[test]
    fn missing_credential_has_no_error_code_and_outages_are_503() {
        let missing = AuthFailure::Missing.rejection(None);
        assert_eq!(missing.header("www-authenticate").unwrap(), "Bearer");
        let down = AuthFailure::KeysUnavailable.rejection(None);
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.retry_after_secs(), Some(5));
    }
}
