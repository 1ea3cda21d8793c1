//! ByteStream resource names, as REAPI v2 defines them:
//!
//! - reads: `{instance}/blobs/{hash}/{size}` and
//!   `{instance}/compressed-blobs/zstd/{hash}/{size}`;
//! - writes: `{instance}/uploads/{uuid}/blobs/{hash}/{size}{/metadata}` and
//!   `{instance}/uploads/{uuid}/compressed-blobs/zstd/{hash}/{size}{/metadata}`.
//!
//! The instance name may have any number of segments but none of the
//! keywords; the CAS is shared, so it names nothing here.

use larder::Digest;

/// A blob a resource name names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobName {
    pub digest: Digest,
    /// Its size, uncompressed.
    pub size: u64,
    /// Whether its bytes travel zstd-compressed.
    pub compressed: bool,
}

/// Reads the name of a ByteStream read; `Err` says what is wrong with it.
pub fn read(name: &str) -> Result<BlobName, String> {
    let segments: Vec<&str> = name.split('/').collect();
    let at = segments.iter().position(|s| matches!(*s, "blobs" | "compressed-blobs"));
    let at = at.filter(|i| instance_name(&segments[..*i]));
    let blob = at.and_then(|i| blob(&segments[i..])).and_then(|(blob, rest)| {
        // A read names no metadata.
        rest.is_empty().then_some(blob)
    });
    blob.ok_or_else(|| malformed(name, "{instance}/blobs/{hash}/{size}"))?
}

/// Reads the name of a ByteStream write; `Err` says what is wrong with it.
pub fn write(name: &str) -> Result<BlobName, String> {
    let segments: Vec<&str> = name.split('/').collect();
    let at = segments.iter().position(|s| *s == "uploads");
    let at = at.filter(|i| instance_name(&segments[..*i]));
    let blob = at.and_then(|i| {
        segments.get(i + 1).filter(|uuid| !uuid.is_empty())?;
        // Anything after the size is metadata, which this server ignores.
        blob(segments.get(i + 2..)?).map(|(blob, _metadata)| blob)
    });
    blob.ok_or_else(|| malformed(name, "{instance}/uploads/{uuid}/blobs/{hash}/{size}"))?
}

fn malformed(name: &str, form: &str) -> String {
    format!(
        "the resource name `{}` is malformed: expected `{form}`, or `compressed-blobs/zstd/` for `blobs/`",
        name.escape_debug()
    )
}

/// `blobs/{hash}/{size}…` or `compressed-blobs/{compressor}/{hash}/{size}…`:
/// the blob (or why it cannot be served) and the segments after it; `None`
/// if the segments are not of that form.
fn blob<'a>(segments: &'a [&'a str]) -> Option<(Result<BlobName, String>, &'a [&'a str])> {
    let (compressed, rest) = match segments {
        ["blobs", rest @ ..] => (None, rest),
        ["compressed-blobs", compressor, rest @ ..] => (Some(*compressor), rest),
        _ => return None,
    };
    // The digest function is named only when it is not one the hash's length
    // implies; SHA-256 is this server's only one.
    let (function, rest) = match rest {
        [function, hash, size, rest @ ..]
            if !looks_like_hash(function) && looks_like_hash(hash) =>
        {
            (Some(*function), (*hash, *size, rest))
        }
        [hash, size, rest @ ..] => (None, (*hash, *size, rest)),
        _ => return None,
    };
    let (hash, size, rest) = rest;
    if let Some(function) = function
        && function != "sha256"
    {
        let why = format!("digest function `{function}` is not served here: only sha256 is");
        return Some((Err(why), rest));
    }
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let digest = format!("sha256:{hash}").parse::<Digest>().ok()?;
    let size = size.parse::<u64>().ok()?;
    let compressed = match compressed {
        None => false,
        Some("zstd") => true,
        Some(other) => {
            let why = format!("compressor `{other}` is not served here: only zstd is");
            return Some((Err(why), rest));
        }
    };
    Some((Ok(BlobName { digest, size, compressed }), rest))
}

/// Whether segments may be an instance name: none of REAPI's keywords.
fn instance_name(segments: &[&str]) -> bool {
    const KEYWORDS: [&str; 7] = [
        "blobs",
        "uploads",
        "actions",
        "actionResults",
        "operations",
        "capabilities",
        "compressed-blobs",
    ];
    !segments.iter().any(|s| KEYWORDS.contains(s))
}

fn looks_like_hash(segment: &str) -> bool {
    segment.len() >= 32 && segment.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex() -> String {
        "ab".repeat(32)
    }

    fn blob(size: u64, compressed: bool) -> Result<BlobName, String> {
        Ok(BlobName {
            digest: format!("sha256:{}", hex()).parse().expect("digest"),
            size,
            compressed,
        })
    }

    #[test]
    fn reads() {
        let h = hex();
        assert_eq!(read(&format!("blobs/{h}/12")), blob(12, false));
        assert_eq!(read(&format!("main/blobs/{h}/12")), blob(12, false));
        assert_eq!(read(&format!("a/b/c/blobs/{h}/0")), blob(0, false));
        assert_eq!(read(&format!("compressed-blobs/zstd/{h}/7")), blob(7, true));
        assert_eq!(read(&format!("x/compressed-blobs/zstd/{h}/7")), blob(7, true));
        assert_eq!(read(&format!("blobs/sha256/{h}/12")), blob(12, false));
        assert!(read(&format!("blobs/blake3/{h}/12")).expect_err("blake3").contains("blake3"));
        assert!(
            read(&format!("compressed-blobs/deflate/{h}/7"))
                .expect_err("deflate")
                .contains("deflate")
        );
        for bad in [
            format!("blobs/{h}"),
            format!("blobs/{h}/-1"),
            format!("blobs/{h}/12/extra"),
            format!("blobs/{}/12", &h[..63]),
            format!("blobs/{}x/12", &h[..63]),
            "blobs".to_string(),
            String::new(),
            format!("{h}/12"),
            format!("uploads/u/blobs/{h}/12"),
        ] {
            assert!(read(&bad).expect_err(&bad).contains("malformed"), "{bad}");
        }
    }

    #[test]
    fn writes() {
        let h = hex();
        let uuid = "3f1e2d4c-0000-4000-8000-000000000000";
        assert_eq!(write(&format!("uploads/{uuid}/blobs/{h}/12")), blob(12, false));
        assert_eq!(write(&format!("main/uploads/{uuid}/blobs/{h}/12")), blob(12, false));
        assert_eq!(write(&format!("uploads/{uuid}/blobs/{h}/12/some/metadata")), blob(12, false));
        assert_eq!(write(&format!("i/uploads/{uuid}/compressed-blobs/zstd/{h}/9")), blob(9, true));
        for bad in [
            format!("blobs/{h}/12"),
            format!("uploads/{uuid}/{h}/12"),
            format!("uploads//blobs/{h}/12"),
            format!("uploads/{uuid}/blobs/{h}/size"),
        ] {
            assert!(write(&bad).expect_err(&bad).contains("malformed"), "{bad}");
        }
    }
}
