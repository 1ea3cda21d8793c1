//! Times as people read them.

/// Formats seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn format_utc(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

/// Formats seconds since the Unix epoch as RFC 3339 in UTC (`2026-11-23T10:00:00Z`).
pub fn format_rfc3339(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Parses a duration as [`human_duration`] writes it: numbers each followed
/// by a unit, largest first (`90s`, `10m`, `1h30m`, `2d12h`, `250ms`), or a
/// bare number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, crate::Error> {
    let bad = || {
        crate::Error::new(
            crate::ErrorKind::InvalidInput,
            format!(
                "malformed duration `{text}`: write numbers with d, h, m, s or ms, like 90s, 10m or 1h30m"
            ),
        )
    };
    const UNITS: [(&str, u64); 5] =
        [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| bad())?;
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut rest = t;
    let mut millis: u64 = 0;
    // Units must come largest first, each once: `1h30m`, not `30m1h`.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let letters = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit = &rest[..letters];
        let at = UNITS[next_unit..].iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        let (_, scale) = UNITS[next_unit + at];
        next_unit += at + 1;
        millis = n.checked_mul(scale).and_then(|m| m.checked_add(millis)).ok_or_else(bad)?;
        rest = rest[letters..].trim_start();
    }
    if t.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_millis(millis))
}

/// Parses how long a hold lasts unless renewed (`--ttl`): a duration, and
/// not zero, which would make a hold that is over before it begins.
pub fn parse_ttl(text: &str) -> Result<std::time::Duration, crate::Error> {
    let ttl = parse_duration(text)?;
    if ttl.is_zero() {
        return Err(crate::Error::new(
            crate::ErrorKind::InvalidInput,
            format!("a TTL of `{text}` ends the hold as it begins; give one like 90s, 10m or 1h"),
        ));
    }
    Ok(ttl)
}

fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A duration as people write it: `250ms`, `30s`, `10m`, `2h`, `1h30m`.
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn times() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_utc(1_795_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn durations() {
        let check = |text: &str, secs: Option<u64>| {
            assert_eq!(super::parse_duration(text).ok().map(|d| d.as_secs()), secs, "{text}");
        };
        check("90s", Some(90));
        check("10m", Some(600));
        check("2h", Some(7200));
        check("1d", Some(86_400));
        check("45", Some(45));
        check("1h30m", Some(5400));
        check("2d12h", Some(216_000));
        check("1h 30m 5s", Some(5405));
        check("1.5h", None);
        check("h", None);
        check("10y", None);
        check("", None);
        check("30m1h", None);
        check("1m1m", None);
        check("5", Some(5));
        check("-5s", None);
        assert_eq!(super::parse_duration("250ms").ok(), Some(Duration::from_millis(250)));
    }

    /// Regression: `human_duration` printed `1h30m`, which the parser refused,
    /// so a value larder suggested could not be given back to it.
    #[test]
    fn what_is_printed_parses_back() {
        for d in [250, 1000, 90_000, 5_400_000, 7_200_000, 86_400_000, 90_061_000] {
            let d = Duration::from_millis(d);
            let text = super::human_duration(d);
            assert_eq!(super::parse_duration(&text).ok(), Some(d), "{text}");
        }
    }

    #[test]
    fn a_zero_ttl_is_refused() {
        assert!(super::parse_ttl("0s").is_err());
        assert!(super::parse_ttl("0").is_err());
        assert_eq!(super::parse_ttl("90s").ok(), Some(Duration::from_secs(90)));
    }
}
