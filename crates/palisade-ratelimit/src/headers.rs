//! The rate-limit response fields: IETF `RateLimit-Policy` and `RateLimit`
//! (structured-field lists, one member per policy), and the legacy
//! `X-RateLimit-Limit` / `-Remaining` / `-Reset` for the most restrictive
//! policy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use smallvec::SmallVec;

use crate::gcra::{Decision, Quota};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit`.
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Which rate-limit fields go on responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct HeaderOptions {
    /// `RateLimit-Policy` and `RateLimit` on allowed responses too (default
    /// true; refusals always carry them).
    pub on_allowed: bool,
    /// The legacy `X-RateLimit-*` fields as well (default false).
    pub legacy: bool,
}

impl Default for HeaderOptions {
    fn default() -> Self {
        Self {
            on_allowed: true,
            legacy: false,
        }
    }
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

/// The most policy members kept for the life of the process; see
/// [`policy_member`].
const INTERNED_MAX: usize = 1_024;

/// Policy members made so far, by text.
static INTERNED: Mutex<BTreeMap<String, &'static HeaderValue>> = Mutex::new(BTreeMap::new());

/// The member of a policy that has none (an unlimited tier; never reported).
static NO_MEMBER: HeaderValue = HeaderValue::from_static("");

/// Stands in for a member that could not be made (unreachable: policy names
/// are validated when the policy is built).
static INVALID_MEMBER: HeaderValue = HeaderValue::from_static("\"policy\"");

/// A policy member `"name";q=100;w=60`, as responses carry it.
///
/// Every allowed response carries a copy of its policies' members, so a
/// member is interned: made once, kept for the life of the process, shared
/// by every layer built with the same policy. Carrying one is then copying
/// a pointer, and writing it on a response copies a `'static` value, where
/// a shared buffer would take an atomic reference count up and down on
/// every request (contended writes to one cache line when many cores serve
/// one policy). Rebuilding a layer with the same policies finds its members
/// again; past [`INTERNED_MAX`] distinct members (policies made at run time
/// by the thousand), members are reference counted instead, so nothing
/// grows without bound.
#[derive(Clone, Debug)]
pub(crate) enum Member {
    Interned(&'static HeaderValue),
    Counted(Arc<HeaderValue>),
}

impl Member {
    /// The member as a field value.
    #[inline]
    pub(crate) fn value(&self) -> &HeaderValue {
        match self {
            Member::Interned(value) => value,
            Member::Counted(value) => value,
        }
    }

    /// The member of a policy that has none.
    pub(crate) fn none() -> Self {
        Member::Interned(&NO_MEMBER)
    }
}

/// The member `"name";q=100;w=60` of a policy (or tier), made when the
/// layer is built.
pub(crate) fn policy_member(name: &str, quota: &Quota) -> Member {
    let text = format!(
        "\"{name}\";q={};w={}",
        quota.count(),
        ceil_secs(quota.period()).max(1)
    );
    // Names are validated to letters, digits, - and _, so the text is
    // always visible ASCII, what `from_static` below requires; anything else
    // would be refused here rather than panic there.
    if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Member::Interned(&INVALID_MEMBER);
    }
    let Ok(counted) = HeaderValue::from_str(&text) else {
        return Member::Interned(&INVALID_MEMBER);
    };
    let mut interned = INTERNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(value) = interned.get(&text) {
        return Member::Interned(value);
    }
    if interned.len() >= INTERNED_MAX {
        return Member::Counted(Arc::new(counted));
    }
    // Visible ASCII (checked above), so `from_static` cannot panic; a
    // `'static` value is what makes its copies free of reference counts.
    let value: &'static HeaderValue = Box::leak(Box::new(HeaderValue::from_static(Box::leak(
        text.clone().into_boxed_str(),
    ))));
    interned.insert(text, value);
    Member::Interned(value)
}

/// One policy's part of a request's fields.
pub(crate) struct Reported<'a> {
    pub(crate) policy_member: &'a HeaderValue,
    pub(crate) name: &'a str,
    pub(crate) quota: Quota,
    pub(crate) decision: Decision,
}

/// The fields of a refusal: the two IETF fields, and the legacy ones when
/// asked for. (Allowed responses write theirs from a few numbers when the
/// response arrives; see the layer.)
#[derive(Default)]
pub(crate) struct Fields {
    policy: Option<HeaderValue>,
    state: Option<HeaderValue>,
    legacy: Option<Box<[(HeaderName, HeaderValue); 3]>>,
}

impl Fields {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn into_pairs(self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        self.policy
            .map(|v| (RATELIMIT_POLICY.clone(), v))
            .into_iter()
            .chain(self.state.map(|v| (RATELIMIT.clone(), v)))
            .chain(self.legacy.into_iter().flat_map(|legacy| *legacy))
    }
}

/// The fields for these policies, to add to a response. Built by hand into
/// one buffer each (no formatting machinery): this runs on every allowed
/// request.
pub(crate) fn fields(reported: &[Reported<'_>], options: HeaderOptions) -> Fields {
    let mut fields = Fields::new();
    let Some(first) = reported.first() else {
        return fields;
    };
    let policy = if reported.len() == 1 {
        first.policy_member.clone()
    } else {
        let mut joined = Vec::with_capacity(reported.len() * 32);
        for (i, report) in reported.iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(report.policy_member.as_bytes());
        }
        value(joined)
    };
    // On the stack for the usual one or two policies; one copy into the value.
    let mut state: SmallVec<[u8; 96]> = SmallVec::new();
    let mut numbers = itoa::Buffer::new();
    for (i, report) in reported.iter().enumerate() {
        if i > 0 {
            state.extend_from_slice(b", ");
        }
        state.push(b'"');
        state.extend_from_slice(report.name.as_bytes());
        state.extend_from_slice(b"\";r=");
        state.extend_from_slice(numbers.format(report.decision.remaining()).as_bytes());
        state.extend_from_slice(b";t=");
        state.extend_from_slice(numbers.format(ceil_secs(report.decision.reset)).as_bytes());
    }
    fields.policy = Some(policy);
    fields.state =
        Some(HeaderValue::from_bytes(&state).unwrap_or_else(|_| HeaderValue::from_static("")));
    if options.legacy
        && let Some(tightest) = reported.iter().min_by_key(|r| r.decision.remaining())
    {
        fields.legacy = Some(Box::new([
            (
                X_RATELIMIT_LIMIT.clone(),
                HeaderValue::from(tightest.quota.count()),
            ),
            (
                X_RATELIMIT_REMAINING.clone(),
                HeaderValue::from(tightest.decision.remaining()),
            ),
            (
                X_RATELIMIT_RESET.clone(),
                HeaderValue::from(ceil_secs(tightest.decision.reset)),
            ),
        ]));
    }
    fields
}

/// A header value copied from bytes made of validated names, digits and
/// punctuation; never fails in practice, and degrades to an empty list.
pub(crate) fn value_from(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// [`value_from`], taking the bytes.
pub(crate) fn value(bytes: Vec<u8>) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(bytes))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_interned_once_per_text_and_bounded() {
        let quota = Quota::per_minute(7);
        let (Member::Interned(a), Member::Interned(b)) = (
            policy_member("interned-once", &quota),
            policy_member("interned-once", &quota),
        ) else {
            panic!("a first member is interned");
        };
        assert!(std::ptr::eq(a, b), "the same text is made once");
        assert_eq!(a.as_bytes(), b"\"interned-once\";q=7;w=60");
        // Past the bound, members are reference counted, not kept forever.
        // (This fills the process's table: later members in this test
        // binary are counted, which no other test depends on.)
        let mut counted = None;
        for i in 0..=INTERNED_MAX {
            if let Member::Counted(value) = policy_member(&format!("many-{i}"), &quota) {
                counted = Some(value);
                break;
            }
        }
        let counted = counted.unwrap_or_else(|| panic!("the table is bounded"));
        assert!(counted.as_bytes().starts_with(b"\"many-"));
        assert!(INTERNED.lock().map_or(0, |t| t.len()) <= INTERNED_MAX);
    }

    #[test]
    fn fields_are_structured_lists_with_one_member_per_policy() {
        let quota = Quota::per_minute(100);
        let a = Decision {
            allowed: true,
            tat: 0,
            headroom_ns: 37,
            emission_ns: 1,
            reset: Duration::from_millis(11_200),
            retry_after: Duration::ZERO,
        };
        let b = Decision {
            headroom_ns: 3,
            reset: Duration::from_secs(2),
            ..a
        };
        let member_a = policy_member("burst", &quota);
        let member_b = policy_member("daily", &Quota::per_day(5_000));
        let (member_a, member_b) = (member_a.value(), member_b.value());
        let reported = [
            Reported {
                policy_member: member_a,
                name: "burst",
                quota,
                decision: a,
            },
            Reported {
                policy_member: member_b,
                name: "daily",
                quota: Quota::per_day(5_000),
                decision: b,
            },
        ];
        let fields: Vec<_> = fields(
            &reported,
            HeaderOptions {
                on_allowed: true,
                legacy: true,
            },
        )
        .into_pairs()
        .collect();
        let get = |name: &HeaderName| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(&RATELIMIT_POLICY).as_ref().map(|v| v.as_bytes()),
            Some(&b"\"burst\";q=100;w=60, \"daily\";q=5000;w=86400"[..])
        );
        assert_eq!(
            get(&RATELIMIT).as_ref().map(|v| v.as_bytes()),
            Some(&b"\"burst\";r=37;t=12, \"daily\";r=3;t=2"[..])
        );
        assert_eq!(get(&X_RATELIMIT_REMAINING), Some(HeaderValue::from(3u32)));
        assert_eq!(get(&X_RATELIMIT_LIMIT), Some(HeaderValue::from(5000u32)));
    }
}
