//! Where blobs and keys live in an object store or a file system behind
//! larder: blobs by digest, sharded like the local store; keys as small
//! objects that hold the digest they name.
//!
//! A key's last segment ends in `.k` and every folder before it in `.d`, so
//! the keys `a` and `a/b` (a file and a folder of the same name on a file
//! system) never collide: `keys/a.k` and `keys/a.d/b.k`.

use crate::digest::Digest;

/// The folder of blobs.
pub const BLOBS: &str = "cas/sha256/";

/// The folder of keys.
pub const KEYS: &str = "keys/";

/// The path of the blob `digest`.
pub fn blob_path(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{BLOBS}{}/{hex}", &hex[..2])
}

/// The path of the object that holds what `key` names.
pub fn key_path(key: &str) -> String {
    let mut path = String::from(KEYS);
    let mut segments = key.split('/').peekable();
    while let Some(segment) = segments.next() {
        path.push_str(segment);
        path.push_str(if segments.peek().is_some() { ".d/" } else { ".k" });
    }
    path
}

/// The folder that holds the keys starting with `prefix` (the part of it
/// up to its last `/`), as a path to list.
pub fn key_folder(prefix: &str) -> String {
    match prefix.rsplit_once('/') {
        Some((folders, _)) => {
            let mut path = String::from(KEYS);
            for segment in folders.split('/') {
                path.push_str(segment);
                path.push_str(".d/");
            }
            path
        }
        None => KEYS.to_string(),
    }
}

/// The key whose object is at `path`, if it is one.
pub fn key_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix(KEYS)?;
    let (folders, last) = match rest.rsplit_once('/') {
        Some((f, l)) => (Some(f), l),
        None => (None, rest),
    };
    let mut key = String::new();
    if let Some(folders) = folders {
        for segment in folders.split('/') {
            key.push_str(segment.strip_suffix(".d")?);
            key.push('/');
        }
    }
    key.push_str(last.strip_suffix(".k")?);
    Some(key)
}

/// The content of a key's object.
pub fn key_content(digest: &Digest) -> String {
    format!("{digest}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(key: &str, path: &str) {
        assert_eq!(key_path(key), path);
        assert_eq!(key_of(path).as_deref(), Some(key));
    }

    #[test]
    fn keys_and_their_paths() {
        check("a", "keys/a.k");
        check("a/b", "keys/a.d/b.k");
        check("a.k/b.d", "keys/a.k.d/b.d.k");
        check("ac/0123", "keys/ac.d/0123.k");
        assert_eq!(key_of("keys/a.d/b"), None);
        assert_eq!(key_of("keys/a/b.k"), None);
        assert_eq!(key_of("cas/sha256/ab/cd"), None);
        assert_eq!(key_folder("pypi/x"), "keys/pypi.d/");
        assert_eq!(key_folder("pypi/"), "keys/pypi.d/");
        assert_eq!(key_folder("py"), "keys/");
        let d = Digest::of(b"x");
        assert!(blob_path(&d).starts_with(&format!("cas/sha256/{}/", &d.hex()[..2])));
    }
}
