//! What a request path names: a blob by digest (Bazel's `cas/`), or a key
//! (everything else, Bazel's `ac/` included), or a folder of keys (WebDAV).
//! Only a 64-hex-digit name after `ac/` or `cas/` is Bazel's: other clients
//! write `ac` and `cas` as folder names too (ccache's `subdirs` layout names
//! a folder by a key's first two characters, `ac` among them).

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
    if let [instance @ .., kind @ ("ac" | "cas"), name] = segments.as_slice()
        && name.len() == 64
        && name.bytes().all(|b| b.is_ascii_hexdigit())
    {
        // Bazel's paths: the digest in either case is the same digest.
        let hex = name.to_ascii_lowercase();
        if *kind == "cas" {
            let digest =
                format!("sha256:{hex}").parse().map_err(|e: larder::Error| e.to_string())?;
            return Ok(Resource::Blob(digest));
        }
        return ac_key(&instance.join("/"), &hex).map(Resource::Key);
    }
    larder::validate_key(rest).map_err(|e| e.to_string())?;
    Ok(Resource::Key(rest.to_string()))
}

/// The key of the action result `hex` under an instance name, for the HTTP
/// door (`/<instance>/ac/<hex>`) and gRPC's ActionCache alike: `ac/<hex>`
/// without an instance, `<instance>/ac/<hex>` with one. Instance names
/// partition the action cache (the CAS is shared); `Err` says why an
/// instance name is refused.
pub fn ac_key(instance: &str, hex: &str) -> Result<String, String> {
    if instance.is_empty() {
        return Ok(format!("ac/{hex}"));
    }
    for s in instance.split('/') {
        match s {
            "" => return Err(format!("the instance name `{instance}` has an empty segment")),
            "." | ".." => {
                return Err(format!("the instance name `{instance}` has a `{s}` segment"));
            }
            _ if s.contains('\0') => {
                return Err(format!(
                    "the instance name `{}` has a NUL byte",
                    instance.escape_debug()
                ));
            }
            _ => {}
        }
    }
    let key = format!("{instance}/ac/{hex}");
    larder::validate_key(&key).map_err(|e| e.to_string())?;
    Ok(key)
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
        // Regression: ccache's `subdirs` layout put a key whose first two
        // characters are `ac` at `…/ac/<rest>`, and it was refused as a bad
        // Bazel path (ccache counted a remote storage error, now and then).
        check(
            "/ccache-subdirs/ac/5kt3nl8odq0mh1v2b4c6e8g0i2k4m6oqR",
            "key ccache-subdirs/ac/5kt3nl8odq0mh1v2b4c6e8g0i2k4m6oqR",
        );
        check("/ac/0123abcdM", "key ac/0123abcdM");
        check("/cas/abc", "key cas/abc");
        check("/main/ac/xyz", "key main/ac/xyz");
        check(&format!("/ac/{}", "g".repeat(64)), &format!("key ac/{}", "g".repeat(64)));
        check("/9/6/e/", "folder 9/6/e/");
        check("/a/../b", "error: the path has a `..` segment");
        check("/a/%2e%2e/b", "error: the path has a `..` segment");
        check("/a/%2E%2E", "error: the path has a `..` segment");
        check("/a//b", "error: the path has an empty segment (`//`)");
        check("/a/%00", "error: the path contains a NUL byte");
        check("/%ff", "error: the path is not valid UTF-8 after decoding");
        check("relative", "error: the path must start with /");
    }

    #[test]
    fn instance_names_partition_the_action_cache() {
        let hex = "a".repeat(64);
        assert_eq!(ac_key("", &hex), Ok(format!("ac/{hex}")));
        assert_eq!(ac_key("main", &hex), Ok(format!("main/ac/{hex}")));
        assert_eq!(ac_key("a/b", &hex), Ok(format!("a/b/ac/{hex}")));
        assert!(ac_key("/a", &hex).is_err());
        assert!(ac_key("a/", &hex).is_err());
        assert!(ac_key("a/../b", &hex).is_err());
        assert!(ac_key("a\0b", &hex).is_err());
    }
}
