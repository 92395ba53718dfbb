//! Durations on the command line: `30s`, `15m`, `12h`, `7d`, `2w`, and
//! sums of them (`1h30m`).

use std::time::Duration;

const HELP: &str =
    "use a number and a unit (s, m, h, d, w): 30s, 15m, 12h, 7d, or a sum such as 1h30m";

/// Parses a duration such as `15m` or `1d12h`.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; {HELP}"));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{text}` is not a duration; {HELP}"));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let seconds_per_unit: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            "" => return Err(format!("`{text}` has a number without a unit; {HELP}")),
            other => return Err(format!("`{other}` is not a unit; {HELP}")),
        };
        let part = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds_per_unit))
            .and_then(|seconds| total.checked_add(seconds));
        total = part.ok_or_else(|| format!("`{text}` is too long a duration"))?;
        rest = after;
    }
    Ok(Duration::from_secs(total))
}

/// A duration written back in the largest exact units (`7d`, `1h30m`).
pub(crate) fn display(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

/// A time as RFC 3339 (`2026-05-01T12:00:00Z`).
pub(crate) fn timestamp(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// A unix time as RFC 3339, and the seconds as stored.
pub(crate) fn unix_timestamp(unix: u64) -> String {
    match i64::try_from(unix)
        .ok()
        .and_then(|seconds| time::OffsetDateTime::from_unix_timestamp(seconds).ok())
    {
        Some(at) => format!("{} ({unix})", timestamp(at)),
        None => unix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_sums_parse_to_seconds() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse("2w"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_refused_with_the_expected_form() {
        for bad in [
            "",
            "15",
            "m",
            "15x",
            "1.5h",
            "-3d",
            "3 d",
            "99999999999999999999s",
        ] {
            let error = parse(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(parse("15x").unwrap_err().contains("30s, 15m, 12h, 7d"));
        assert!(parse(&format!("{}w", u64::MAX / 2)).is_err());
    }

    #[test]
    fn durations_display_in_exact_units() {
        assert_eq!(display(Duration::from_secs(604_800)), "7d");
        assert_eq!(display(Duration::from_secs(5400)), "1h30m");
        assert_eq!(display(Duration::from_secs(61)), "1m1s");
        assert_eq!(display(Duration::ZERO), "0s");
    }
}
