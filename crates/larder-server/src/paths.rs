//! What a request path names: a blob by digest (Bazel's `cas/`), or a key
//! (everything else, Bazel's `ac/` included), or a folder of keys (WebDAV).

use larder::Digest;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `/`.
    Root,
    /// `[/<instance>]/cas/<sha256>`: a blob, checked against its digest.
    Blob(Digest),
    /// Any other path, without its leading `/`: a key. Bazel's
    /// `/ac/<sha256>` is the key `ac/<sha256>`, and `/<instance>/ac/<sha256>`
    /// the key `<instance>/ac/<sha256>`: instances do not share results.
    Key(String),
    /// A path ending in `/`: the keys under it, as a WebDAV collection.
    Folder(String),
}

/// Reads a request path; `Err` carries why it is refused (a 400).
pub fn classify(raw: &str) -> Result<Resource, String> {
    let path = String::from_utf8(larder::percent::decode(raw))
        .ok()
        .ok_or("the path is not valid UTF-8 after decoding")?;
    if path.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the path must start with /".into());
    };
    if rest.is_empty() {
        return Ok(Resource::Root);
    }
    let (rest, folder) = match rest.strip_suffix('/') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    for s in &segments {
        match *s {
            "" => return Err("the path has an empty segment (`//`)".into()),
            "." | ".." => return Err(format!("the path has a `{s}` segment")),
            _ => {}
        }
    }
    if folder {
        return Ok(Resource::Folder(format!("{rest}/")));
    }
    if let [instance @ .., kind @ ("ac" | "cas"), name] = segments.as_slice() {
        // Bazel's paths: the digest in either case is the same digest, and
        // anything else under `ac/` or `cas/` is a client's mistake.
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`{kind}/{name}` is not a Bazel cache path: it must end in the 64 hex digits of a sha256"
            ));
        }
        let hex = name.to_ascii_lowercase();
        if *kind == "cas" {
            let digest =
                format!("sha256:{hex}").parse().map_err(|e: larder::Error| e.to_string())?;
            return Ok(Resource::Blob(digest));
        }
        // Instance names partition the action cache; the CAS is shared.
        return Ok(Resource::Key(match instance {
            [] => format!("ac/{hex}"),
            _ => format!("{}/ac/{hex}", instance.join("/")),
        }));
    }
    larder::validate_key(rest).map_err(|e| e.to_string())?;
    Ok(Resource::Key(rest.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: &str) {
        let got = match classify(path) {
            Ok(Resource::Root) => "root".to_string(),
            Ok(Resource::Blob(d)) => format!("blob {d}"),
            Ok(Resource::Key(k)) => format!("key {k}"),
            Ok(Resource::Folder(f)) => format!("folder {f}"),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "{path}");
    }

    #[test]
    fn paths() {
        let hex = "a".repeat(64);
        check("/", "root");
        check(&format!("/cas/{hex}"), &format!("blob sha256:{hex}"));
        check(&format!("/main/cas/{hex}"), &format!("blob sha256:{hex}"));
        check(&format!("/ac/{hex}"), &format!("key ac/{hex}"));
        check(&format!("/my/instance/ac/{hex}"), &format!("key my/instance/ac/{hex}"));
        check(&format!("/ac/{}", "B".repeat(64)), &format!("key ac/{}", "b".repeat(64)));
        check("/ab/cdef0123", "key ab/cdef0123");
        check("/cache/x%20y", "key cache/x y");
        check(&format!("/cas/{}", "A".repeat(64)), &format!("blob sha256:{hex}"));
        check(
            "/cas/abc",
            "error: `cas/abc` is not a Bazel cache path: it must end in the 64 hex digits of a sha256",
        );
        check(
            "/main/ac/xyz",
            "error: `ac/xyz` is not a Bazel cache path: it must end in the 64 hex digits of a sha256",
        );
        check("/9/6/e/", "folder 9/6/e/");
        check("/a/../b", "error: the path has a `..` segment");
        check("/a/%2e%2e/b", "error: the path has a `..` segment");
        check("/a/%2E%2E", "error: the path has a `..` segment");
        check("/a//b", "error: the path has an empty segment (`//`)");
        check("/a/%00", "error: the path contains a NUL byte");
        check("/%ff", "error: the path is not valid UTF-8 after decoding");
        check("relative", "error: the path must start with /");
    }
}
