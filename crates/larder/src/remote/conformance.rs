//! The behaviour every [`Remote`] backend must have, as one suite that runs
//! against any of them: the file system and the in-memory double in the
//! library's tests, and a real
//! S3 server (Garage), WebDAV and a larder server in the integration tests.
//! It works under a fresh prefix of keys and with fresh blobs, so that it can
//! run against a remote that holds other things.

use std::io::{Read, Write};

use super::{GrowingUpload, Remote};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind};
use crate::store::Target;

/// Runs the suite, writing (and removing what it wrote) only with `write`
/// and if the remote can; `Err` says which expectation failed.
pub fn run(remote: &dyn Remote, write: bool) -> Result<(), Error> {
    let nonce = nonce();
    let prefix = format!("conformance-{nonce}/");
    let caps = remote.capabilities();
    let writable = caps.write && write;
    let small = format!("small blob {nonce}\n").into_bytes();
    let other = format!("another blob {nonce}\n").into_bytes();
    // Larger than a part of a multipart upload, and not a whole number of them.
    let large: Vec<u8> = (0..(40u64 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ nonce as u8)
        .collect();
    let (d_small, d_other, d_large) = (Digest::of(&small), Digest::of(&other), Digest::of(&large));

    // A miss is `None`, not an error.
    expect(remote.open(&Target::Digest(d_small)).map(|b| b.is_none()), "open of a missing blob")?;
    expect(remote.head(&Target::Digest(d_small)).map(|e| e.is_none()), "head of a missing blob")?;
    let missing_key = Target::Key(format!("{prefix}missing"));
    expect(remote.open(&missing_key).map(|b| b.is_none()), "open of a missing key")?;
    expect(remote.head(&missing_key).map(|e| e.is_none()), "head of a missing key")?;
    if !writable {
        return Ok(());
    }

    // Put if absent: the first upload sends, the second does not.
    expect(upload(remote, &small), "the first upload sends the bytes")?;
    expect(
        upload(remote, &small).map(|sent| !sent),
        "a second upload of the same blob is skipped",
    )?;
    let entry = remote.head(&Target::Digest(d_small))?;
    check(entry.and_then(|e| e.size), Some(small.len() as u64), "head's size of a blob")?;
    check(
        read(remote, &Target::Digest(d_small))?,
        Some((small.clone(), Some(d_small))),
        "a blob read back",
    )?;

    // Large blobs stream both ways.
    expect(upload(remote, &large), "the upload of a large blob")?;
    match read(remote, &Target::Digest(d_large))? {
        Some((bytes, _)) if bytes == large => {}
        Some((bytes, _)) => {
            return Err(unexpected(format!(
                "a large blob came back as {} other bytes",
                bytes.len()
            )));
        }
        None => return Err(unexpected("a large blob uploaded is not there")),
    }

    // A remote that takes a blob's bytes as they are staged: fed in ranges,
    // it is there once finished, skipped if already there, and nothing if
    // dropped unfinished.
    if let Some(upload) = remote.begin_upload()? {
        let grown: Vec<u8> = large[..(5 << 20) + 7].iter().map(|b| b ^ 0x5a).collect();
        let d_grown = Digest::of(&grown);
        let staged = staged(&grown)?;
        check(feed(upload, &staged, grown.len())?.finish(&d_grown)?, true, "a growing upload")?;
        check(
            read(remote, &Target::Digest(d_grown))?,
            Some((grown.clone(), Some(d_grown))),
            "a grown blob read back",
        )?;
        if let Some(again) = remote.begin_upload()? {
            let again = feed(again, &staged, grown.len())?;
            check(again.finish(&d_grown)?, false, "a growing upload of a blob the remote has")?;
        }
        if let Some(dropped) = remote.begin_upload()? {
            drop(feed(dropped, &staged, grown.len() / 2)?);
            let d_half = Digest::of(&grown[..grown.len() / 2]);
            expect(
                remote.head(&Target::Digest(d_half)).map(|e| e.is_none()),
                "a growing upload dropped unfinished",
            )?;
        }
        if caps.delete {
            remote.delete(&Target::Digest(d_grown))?;
        }
    }

    // Keys: bound, read with their digest, rebound, nested.
    let key = format!("{prefix}a");
    let nested = format!("{prefix}a/b");
    let deep = format!("{prefix}x/y/z.tar.gz");
    expect(upload(remote, &other).map(|_| true), "an upload")?;
    for (k, d) in [(&key, d_small), (&nested, d_other), (&deep, d_large)] {
        remote.bind(k, &d).map_err(|e| within(e, format!("binding {k}")))?;
    }
    check(
        read(remote, &Target::Key(key.clone()))?,
        Some((small.clone(), Some(d_small))),
        "a key read back",
    )?;
    check(
        read(remote, &Target::Key(nested.clone()))?,
        Some((other.clone(), Some(d_other))),
        "a key under a key's name read back",
    )?;
    let entry = remote.head(&Target::Key(deep.clone()))?;
    check(entry.and_then(|e| e.digest), Some(d_large), "head's digest of a key")?;
    remote.bind(&key, &d_other).map_err(|e| within(e, format!("rebinding {key}")))?;
    check(
        read(remote, &Target::Key(key.clone()))?,
        Some((other.clone(), Some(d_other))),
        "a rebound key read back",
    )?;

    if caps.list {
        let listed = remote.list(&prefix).map_err(|e| within(e, format!("listing {prefix}")))?;
        let mut want = vec![key.clone(), nested.clone(), deep.clone()];
        want.sort();
        check(listed, want, "the keys listed under the prefix")?;
        let listed = remote.list(&format!("{prefix}x/"))?;
        check(listed, vec![deep.clone()], "the keys listed under a folder")?;
        let listed = remote.list(&format!("{prefix}a/"))?;
        check(listed, vec![nested.clone()], "the keys under a key's name")?;
    }

    if caps.delete {
        // A key removed is a miss; so is a key whose blob was removed.
        check(remote.delete(&Target::Key(nested.clone()))?, true, "removing a key")?;
        expect(remote.open(&Target::Key(nested.clone())).map(|b| b.is_none()), "a removed key")?;
        check(remote.delete(&Target::Key(nested.clone()))?, false, "removing it again")?;
        check(remote.delete(&Target::Digest(d_large))?, true, "removing a blob")?;
        expect(remote.open(&Target::Digest(d_large)).map(|b| b.is_none()), "a removed blob")?;
        expect(
            remote.open(&Target::Key(deep.clone())).map(|b| b.is_none()),
            "a key whose blob was removed",
        )?;
        // Clean up what is left.
        for k in [&key, &deep] {
            remote.delete(&Target::Key(k.clone()))?;
        }
        for d in [d_small, d_other] {
            remote.delete(&Target::Digest(d))?;
        }
    }
    Ok(())
}

fn nonce() -> u64 {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    time ^ (u64::from(std::process::id()) << 32)
}

/// Uploads `bytes` through a temporary file; whether bytes were sent.
fn upload(remote: &dyn Remote, bytes: &[u8]) -> crate::Result<bool> {
    let mut file = tempfile_in_tmp()?;
    file.write_all(bytes).map_err(|e| crate::Error::new(crate::ErrorKind::Io, e.to_string()))?;
    let file = reopen(file)?;
    remote.upload(&Digest::of(bytes), file, bytes.len() as u64)
}

/// An unlinked file holding `bytes`, as a staged blob.
fn staged(bytes: &[u8]) -> crate::Result<std::fs::File> {
    let mut file = tempfile_in_tmp()?;
    file.write_all(bytes).map_err(|e| crate::Error::new(crate::ErrorKind::Io, e.to_string()))?;
    Ok(file)
}

/// Hands `upload` the first `len` bytes of `staged`, 2 MiB at a time.
fn feed(
    mut upload: Box<dyn GrowingUpload>,
    staged: &std::fs::File,
    len: usize,
) -> Result<Box<dyn GrowingUpload>, Error> {
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(2 << 20);
        upload
            .follow(staged, offset as u64, n)
            .map_err(|e| unexpected(format!("feeding a growing upload: {e}")))?;
        offset += n;
    }
    check(upload.covered(), len as u64, "the bytes a growing upload holds")?;
    Ok(upload)
}

fn tempfile_in_tmp() -> crate::Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!("larder-conformance-{}", nonce()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| crate::Error::new(crate::ErrorKind::Io, e.to_string()))?;
    // Unlinked at once: the open file is all that is needed.
    let _ = std::fs::remove_file(&path);
    Ok(file)
}

fn reopen(mut file: std::fs::File) -> crate::Result<std::fs::File> {
    use std::io::Seek;
    file.rewind().map_err(|e| crate::Error::new(crate::ErrorKind::Io, e.to_string()))?;
    Ok(file)
}

/// Bytes read back, with the digest the remote gave for them.
type ReadBack = Option<(Vec<u8>, Option<Digest>)>;

/// The bytes and the digest the remote gave for `target`.
fn read(remote: &dyn Remote, target: &Target) -> Result<ReadBack, Error> {
    let Some(mut blob) = remote.open(target)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    blob.reader.read_to_end(&mut bytes).map_err(|e| unexpected(format!("reading back: {e}")))?;
    Ok(Some((bytes, blob.digest)))
}

fn expect(got: crate::Result<bool>, what: &str) -> Result<(), Error> {
    match got {
        Ok(true) => Ok(()),
        Ok(false) => Err(unexpected(format!("{what}: not as expected"))),
        Err(e) => Err(within(e, what)),
    }
}

/// A remote that answered, but not as a remote must.
fn unexpected(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Io, message)
}

/// `err` while doing `what`, of the same kind (a refused password stays a
/// permission error, for the exit code).
fn within(err: Error, what: impl std::fmt::Display) -> Error {
    Error::new(err.kind(), format!("{what}: {err}"))
}

fn check<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), Error> {
    if got == want {
        Ok(())
    } else {
        let show = |v: &T| {
            let text = format!("{v:?}");
            if text.len() > 200 { format!("{}…", &text[..200]) } else { text }
        };
        Err(unexpected(format!("{what}: got {}, want {}", show(&got), show(&want))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_system_backend_conforms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = crate::remote::RemoteConfig {
            name: "fs".into(),
            url: format!("file://{}/remote", dir.path().display()),
            mode: crate::remote::RemoteMode::WriteThrough,
            endpoint: None,
            region: None,
        };
        let remote =
            crate::remote::open(&config, &Default::default(), &Default::default()).expect("open");
        run(remote.as_ref(), true).expect("conformance");
        // Nothing half-written is left in the folder.
        let tmp = dir.path().join("remote/.tmp");
        assert_eq!(std::fs::read_dir(tmp).expect("tmp").count(), 0);
    }

    #[test]
    fn the_in_memory_double_conforms() {
        let remote = crate::remote::InMemoryRemote::new();
        run(&remote, true).expect("conformance");
        assert_eq!(remote.blob_count(), 0, "the suite cleans up");
    }

    #[test]
    fn a_read_only_check_writes_nothing() {
        let remote = crate::remote::InMemoryRemote::new();
        run(&remote, false).expect("conformance");
        assert_eq!(remote.uploads(), 0);
    }
}
