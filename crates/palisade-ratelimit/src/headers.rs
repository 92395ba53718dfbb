//! The rate-limit response fields: IETF `RateLimit-Policy` and `RateLimit`
//! (structured-field lists, one member per policy), and the legacy
//! `X-RateLimit-Limit` / `-Remaining` / `-Reset` for the most restrictive
//! policy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, HeaderValue};
use palisade_core::clock::duration_to_nanos;
use smallvec::SmallVec;

use crate::gcra::{Decision, Quota};

/// `X-RateLimit-Limit`.
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

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

/// Nanoseconds in whole seconds, rounded up.
#[inline]
pub(crate) fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// The most policy members kept for the life of the process; see
/// [`policy_member`].
const INTERNED_MAX: usize = 1_024;

/// Policy members made so far, by text.
static INTERNED: Mutex<BTreeMap<String, &'static HeaderValue>> = Mutex::new(BTreeMap::new());

/// The member of a policy that has none (an unlimited tier; never reported).
static NO_MEMBER: HeaderValue = HeaderValue::from_static("");

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
        ceil_secs(duration_to_nanos(quota.period())).max(1)
    );
    // Names are validated to letters, digits, - and _ when the policy is
    // built, so neither early return is taken; they keep this function
    // total (`from_static` below panics on anything but visible ASCII).
    let Ok(counted) = HeaderValue::from_str(&text) else {
        return Member::none();
    };
    if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Member::Counted(Arc::new(counted));
    }
    let mut interned = INTERNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(value) = interned.get(&text) {
        return Member::Interned(value);
    }
    if interned.len() >= INTERNED_MAX {
        return Member::Counted(Arc::new(counted));
    }
    // A `'static` value is what makes its copies free of reference counts.
    let value: &'static HeaderValue = Box::leak(Box::new(HeaderValue::from_static(Box::leak(
        text.clone().into_boxed_str(),
    ))));
    interned.insert(text, value);
    Member::Interned(value)
}

/// One policy's part of a response's fields: its member and the numbers
/// its `RateLimit` member is written from. Built when the decision is made;
/// written when the response exists (after the inner service, for an
/// allowed request), so only these few words travel with the request.
pub(crate) struct Report {
    /// `"name";q=..;w=..`: usually a pointer to an interned value.
    member: Member,
    /// The policy name's length (at most 64): `"name"` is the member's
    /// first `name_len + 2` bytes, and starts the `RateLimit` member too.
    name_len: u8,
    limit: u32,
    remaining: u32,
    reset_secs: u64,
}

impl Report {
    #[inline]
    pub(crate) fn new(member: Member, name: &str, quota: &Quota, decision: &Decision) -> Self {
        Self {
            member,
            // Names are validated to at most 64 bytes.
            name_len: u8::try_from(name.len()).unwrap_or(u8::MAX),
            limit: quota.count(),
            remaining: decision.remaining(),
            reset_secs: ceil_secs(decision.reset_ns),
        }
    }

    /// `"name"`, the start of this policy's members in both fields.
    #[inline]
    fn quoted_name(&self) -> &[u8] {
        let member = self.member.value().as_bytes();
        &member[..(usize::from(self.name_len) + 2).min(member.len())]
    }

    /// Writes this policy's `RateLimit` member,
    /// `"name";r=<remaining>;t=<reset>`, backwards from the end of `buf`
    /// (the numbers' lengths need not be known first, and nothing grows);
    /// the member, a slice of `buf`.
    #[inline]
    fn write_state<'b>(&self, buf: &'b mut StateBuf) -> &'b [u8] {
        let end = buf.len();
        let start = write_back(buf, end, self.reset_secs)
            .and_then(|at| put_back(buf, at, b";t="))
            .and_then(|at| write_back(buf, at, u64::from(self.remaining)))
            .and_then(|at| put_back(buf, at, b";r="))
            .and_then(|at| put_back(buf, at, self.quoted_name()));
        // Names are at most 64 bytes, so the buffer always has room.
        start.map_or(&[], |at| &buf[at..])
    }
}

/// Room for one `RateLimit` member: `"name"` (at most 66 bytes), `;r=` and
/// 10 digits, `;t=` and 20.
const STATE_BUF: usize = 112;

/// A buffer of [`STATE_BUF`] bytes.
type StateBuf = [u8; STATE_BUF];

/// Puts `bytes` just before `end` in `buf`; the new start.
#[inline]
fn put_back(buf: &mut [u8], end: usize, bytes: &[u8]) -> Option<usize> {
    let start = end.checked_sub(bytes.len())?;
    buf.get_mut(start..end)?.copy_from_slice(bytes);
    Some(start)
}

/// Writes the decimal digits of `n` just before `end` in `buf`, two at a
/// time from the last; the new start.
#[inline]
fn write_back(buf: &mut [u8], mut end: usize, mut n: u64) -> Option<usize> {
    while n >= 100 {
        let at = (n % 100) as usize * 2;
        n /= 100;
        end = put_back(buf, end, &PAIRS[at..at + 2])?;
    }
    if n >= 10 {
        let at = n as usize * 2;
        put_back(buf, end, &PAIRS[at..at + 2])
    } else {
        put_back(buf, end, &[b'0' + n as u8])
    }
}

/// Appends `RateLimit-Policy` (the policies' members) and `RateLimit` for
/// these policies, and the legacy `X-RateLimit-*` fields when asked: on
/// allowed responses and refusals alike. Appended: when an inner layer or
/// the handler already wrote items, ours form another field line of the
/// same list, so a client sees every policy of every stacked layer.
///
/// `RateLimit` is written into a stack buffer and copied out once, into
/// the one allocation of an allowed request.
pub(crate) fn write_fields(reports: &[Report], legacy: bool, headers: &mut HeaderMap) {
    let (policy, state) = match reports {
        [] => return,
        // The usual case: the member itself (interned: a plain copy), and
        // one member of `RateLimit`.
        [only] => (
            only.member.value().clone(),
            value_from(only.write_state(&mut [0; STATE_BUF])),
        ),
        reports => joined(reports),
    };
    if legacy {
        write_legacy(reports, headers);
    }
    // By value, made at compile time: no reference count, no copy call.
    headers.append(
        const { HeaderName::from_static("ratelimit-policy") },
        policy,
    );
    headers.append(const { HeaderName::from_static("ratelimit") }, state);
}

/// Both fields' values for several policies (kept out of the one-policy
/// path, whose stack frame it would grow).
#[inline(never)]
fn joined(reports: &[Report]) -> (HeaderValue, HeaderValue) {
    let mut policy: SmallVec<[u8; 128]> = SmallVec::new();
    let mut state: SmallVec<[u8; 128]> = SmallVec::new();
    let mut buf: StateBuf = [0; STATE_BUF];
    for (i, report) in reports.iter().enumerate() {
        if i > 0 {
            policy.extend_from_slice(b", ");
            state.extend_from_slice(b", ");
        }
        policy.extend_from_slice(report.member.value().as_bytes());
        state.extend_from_slice(report.write_state(&mut buf));
    }
    (value_from(&policy), value_from(&state))
}

/// The legacy `X-RateLimit-*` fields, for the policy with the fewest
/// requests left. Single-valued: the inner (more specific) values win.
#[inline(never)]
fn write_legacy(reports: &[Report], headers: &mut HeaderMap) {
    let Some(tightest) = reports.iter().min_by_key(|r| r.remaining) else {
        return;
    };
    for (name, value) in [
        (&X_RATELIMIT_LIMIT, tightest.limit.into()),
        (&X_RATELIMIT_REMAINING, tightest.remaining.into()),
        (&X_RATELIMIT_RESET, tightest.reset_secs.into()),
    ] {
        if !headers.contains_key(name) {
            headers.insert(name, value);
        }
    }
}

/// The two-digit numbers 00 to 99, for writing numbers two digits at a time
/// (half the divisions of one at a time; each is a multiply and a shift).
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// A header value copied from bytes made of validated names, digits and
/// punctuation; never fails in practice, and degrades to an empty list.
pub(crate) fn value_from(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
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
            reset_ns: 11_200_000_000,
            retry_after_ns: 0,
        };
        let b = Decision {
            headroom_ns: 3,
            reset_ns: 2_000_000_000,
            ..a
        };
        let daily = Quota::per_day(5_000);
        let reports = [
            Report::new(policy_member("burst", &quota), "burst", &quota, &a),
            Report::new(policy_member("daily", &daily), "daily", &daily, &b),
        ];
        let mut fields = HeaderMap::new();
        write_fields(&reports, true, &mut fields);
        let get = |name: &str| fields.get(name).cloned();
        assert_eq!(
            get("ratelimit-policy").as_ref().map(|v| v.as_bytes()),
            Some(&b"\"burst\";q=100;w=60, \"daily\";q=5000;w=86400"[..])
        );
        assert_eq!(
            get("ratelimit").as_ref().map(|v| v.as_bytes()),
            Some(&b"\"burst\";r=37;t=12, \"daily\";r=3;t=2"[..])
        );
        assert_eq!(get("x-ratelimit-remaining"), Some(HeaderValue::from(3u32)));
        assert_eq!(get("x-ratelimit-limit"), Some(HeaderValue::from(5000u32)));
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1_000,
            65_536,
            999_999_999,
            1_000_000_000,
            u64::from(u32::MAX),
            10_000_000_000_000_000_000,
            u64::MAX,
        ] {
            let mut buf = [0; 20];
            let start = write_back(&mut buf, 20, n);
            assert_eq!(
                start.map(|at| buf[at..].to_vec()),
                Some(n.to_string().into_bytes()),
                "{n}"
            );
        }
    }

    fn report(name: &str, quota: Quota, remaining: u32, reset_secs: u64) -> Report {
        Report {
            member: policy_member(name, &quota),
            name_len: name.len() as u8,
            limit: quota.count(),
            remaining,
            reset_secs,
        }
    }

    #[test]
    fn fields_are_written_whole_and_appended() {
        let mut headers = HeaderMap::new();
        headers.append("ratelimit", HeaderValue::from_static("\"inner\";r=1;t=1"));
        let reports = [
            report("per_ip", Quota::per_minute(100), 0, 60),
            report("daily-64", Quota::per_day(5_000), u32::MAX, 86_400),
        ];
        let longest = "n".repeat(64);
        let longest = report(&longest, Quota::per_day(u32::MAX), u32::MAX, u64::MAX);
        for report in reports.iter().chain([&longest]) {
            let mut buf = [0; STATE_BUF];
            let state = report.write_state(&mut buf);
            let name =
                std::str::from_utf8(&report.quoted_name()[1..usize::from(report.name_len) + 1]);
            assert_eq!(
                state,
                format!(
                    "\"{}\";r={};t={}",
                    name.unwrap_or_default(),
                    report.remaining,
                    report.reset_secs
                )
                .into_bytes()
            );
        }
        write_fields(&reports, true, &mut headers);
        let values = |name: &str| -> Vec<&[u8]> {
            headers
                .get_all(name)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect()
        };
        assert_eq!(
            values("ratelimit-policy"),
            [&b"\"per_ip\";q=100;w=60, \"daily-64\";q=5000;w=86400"[..]]
        );
        // Appended after the inner layer's line: one list, every policy.
        assert_eq!(
            values("ratelimit"),
            [
                &b"\"inner\";r=1;t=1"[..],
                &b"\"per_ip\";r=0;t=60, \"daily-64\";r=4294967295;t=86400"[..]
            ]
        );
        assert_eq!(values("x-ratelimit-remaining"), [&b"0"[..]]);
        assert_eq!(values("x-ratelimit-limit"), [&b"100"[..]]);
        assert_eq!(values("x-ratelimit-reset"), [&b"60"[..]]);
    }

    #[test]
    fn one_policy_carries_its_member_itself() {
        let mut headers = HeaderMap::new();
        write_fields(
            &[report("burst", Quota::per_second(10), 3, 1)],
            false,
            &mut headers,
        );
        assert_eq!(
            headers.get("ratelimit-policy").map(HeaderValue::as_bytes),
            Some(&b"\"burst\";q=10;w=1"[..])
        );
        assert_eq!(
            headers.get("ratelimit").map(HeaderValue::as_bytes),
            Some(&b"\"burst\";r=3;t=1"[..])
        );
        assert!(!headers.contains_key("x-ratelimit-limit"));
    }
}
