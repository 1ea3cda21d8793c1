//! Content digests: `sha256:<64 hex>`, the name every blob is stored under.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::{Error, ErrorKind};

/// The SHA-256 digest of a blob. Displays as `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

const PREFIX: &str = "sha256:";

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut hasher = Hasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The digest of everything `reader` yields, and how many bytes that
    /// was, read a MiB at a time (memory stays flat whatever the size).
    pub fn of_reader(mut reader: impl std::io::Read) -> std::io::Result<(Digest, u64)> {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((hasher.finish(), size))
    }

    /// The 64 lowercase hex digits, without the algorithm prefix.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    /// Whether `text` looks like an attempt at a digest (so it must parse as one,
    /// rather than be taken as a key).
    pub fn looks_like_digest(text: &str) -> bool {
        text.starts_with(PREFIX)
            || (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = Error;

    /// Accepts `sha256:<64 hex>` and, as cloud-manager did, the bare 64 hex digits.
    fn from_str(text: &str) -> Result<Digest, Error> {
        let hex = text.strip_prefix(PREFIX).unwrap_or(text);
        let malformed = || {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "malformed digest `{text}`: expected `sha256:` followed by 64 hex digits, as `larder put` prints"
                ),
            )
        };
        if hex.len() != 64 {
            return Err(malformed());
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(malformed)?;
            let lo = hex_value(pair[1]).ok_or_else(malformed)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Digest(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Incremental SHA-256.
#[derive(Clone, Default)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher(sha2::Sha256::new())
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let out = self.0.finalize();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&out);
        Digest(bytes)
    }
}

/// In JSON and TOML, a digest is its text (`sha256:…`).
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = input.parse::<Digest>().map(|d| d.to_string()).map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got:?} lacks {want:?}"),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parse() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        check(empty, Ok(empty));
        check(&empty[7..], Ok(empty));
        check(&empty.to_uppercase().replace("SHA256:", "sha256:"), Ok(empty));
        check("sha256:abc", Err("malformed digest `sha256:abc`"));
        check(&format!("{}g", &empty[..70]), Err("64 hex digits"));
        check("md5:abc", Err("malformed digest"));
    }

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
