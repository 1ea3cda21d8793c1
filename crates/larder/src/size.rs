//! Sizes as people write them: `20GiB`, `10GB`, `512M`, `1.5TiB`, `4096`;
//! and counts of things as they read them (`1 blob`, `2 blobs`).

use crate::error::{Error, ErrorKind};

/// Parses a size. Units are case-insensitive; `KB`/`MB`/`GB`/`TB`/`PB` are
/// powers of 1000, `KiB`…`PiB` and the bare `K`/`M`/`G`/`T`/`P` (as `du` and
/// `ls -h` write them) are powers of 1024; no unit means bytes.
pub fn parse_size(text: &str) -> Result<u64, Error> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!(
                "malformed size `{text}`: write a number and a unit, like 20GiB, 10GB, 512MiB or 4096"
            ),
        )
    };
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "pb" => 1000u64.pow(5),
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        _ => return Err(bad()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(bad);
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// A count of things in English: `1 blob`, `2 blobs`, `0 misses`, `3 entries`.
pub fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        return format!("1 {noun}");
    }
    let mut letters = noun.chars().rev();
    match (letters.next(), letters.next()) {
        (Some('y'), Some(before)) if !"aeiou".contains(before) => {
            format!("{count} {}ies", &noun[..noun.len() - 1])
        }
        _ if ["s", "x", "sh", "ch"].iter().any(|end| noun.ends_with(end)) => {
            format!("{count} {noun}es")
        }
        _ => format!("{count} {noun}s"),
    }
}

/// Formats a byte count for people: `0 B`, `4.0 KiB`, `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_english() {
        assert_eq!(plural(1, "request"), "1 request");
        assert_eq!(plural(0, "request"), "0 requests");
        assert_eq!(plural(2, "miss"), "2 misses");
        assert_eq!(plural(3, "entry"), "3 entries");
        assert_eq!(plural(2, "day"), "2 days");
    }

    fn check(input: &str, expected: Option<u64>) {
        assert_eq!(parse_size(input).ok(), expected, "{input:?}");
    }

    #[test]
    fn sizes() {
        check("20GiB", Some(20 << 30));
        check("10GB", Some(10_000_000_000));
        check("512m", Some(512 << 20));
        check("1.5 GiB", Some(3 << 29));
        check("4096", Some(4096));
        check("0", Some(0));
        check("1PB", Some(1_000_000_000_000_000));
        check("2PiB", Some(2 << 50));
        check("7 B", Some(7));
        check("GiB", None);
        check("ten", None);
        check("10XB", None);
        check("-1", None);
        check("99999999999999999999TiB", None);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(20 << 30), "20.0 GiB");
    }
}
