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

/// Parses a duration: `90s`, `10m`, `2h`, `1d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, crate::Error> {
    let bad = || {
        crate::Error::new(
            crate::ErrorKind::InvalidInput,
            format!(
                "malformed duration `{text}`: write a number and s, m, h or d, like 90s or 10m"
            ),
        )
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n.checked_mul(60).ok_or_else(bad)?,
        "h" => n.checked_mul(3600).ok_or_else(bad)?,
        "d" => n.checked_mul(86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(std::time::Duration::from_secs(secs))
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
        check("1.5h", None);
        check("h", None);
        check("10y", None);
    }
}
