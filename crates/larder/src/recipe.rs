//! Recipes: how a shared directory is built, in shared-cache's syntax. A
//! recipe is a list of steps; a *loader* starts a file and the *transforms*
//! after it apply to that file, so several loaders make several files:
//!
//! ```text
//! http:https://example.org/a.tar.gz md5:7b9d54095bd53e27615c96e7b7318af7 tar
//! https://example.org/b.csv sha256:… file:/data/c.zip unzip
//! ```
//!
//! This module only parses and names recipes; building them is elsewhere.

use std::fmt;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};

/// A parsed recipe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipe {
    /// One entry per loader, with the transforms that follow it.
    pub sources: Vec<Source>,
}

/// A loader and the transforms applied to what it loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where the file comes from.
    pub loader: Loader,
    /// What is done to it, in order.
    pub transforms: Vec<Transform>,
}

/// Where a file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loader {
    /// An `http://` or `https://` URL (`http:URL`, or the URL alone).
    Http(String),
    /// A local file (`file:PATH`).
    File(PathBuf),
    /// An object in S3-compatible storage (`s3://BUCKET/KEY`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The object's key.
        key: String,
    },
    /// A blob of the store (`larder:sha256:…`).
    Larder(Digest),
    /// A DIRAC logical file name, fetched with `dirac-dms-get-file` (`dirac:LFN`).
    Dirac(String),
    /// What a shell command writes to standard output (`exec:COMMAND`).
    Exec(String),
}

/// What is done to a loaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Check the file against a checksum.
    Check(Checksum),
    /// Extract a tar archive (gzip, bzip2, xz and zstd detected).
    Tar,
    /// Extract a zip archive.
    Unzip,
    /// Decompress gzip.
    Gunzip,
    /// Decompress xz.
    Unxz,
    /// Decompress zstd.
    Unzstd,
}

/// An expected checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The expected digest, lowercase hex.
    pub hex: String,
}

/// Checksum algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5, as shared-cache used.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// BLAKE3.
    Blake3,
}

impl Algorithm {
    const ALL: [Algorithm; 5] =
        [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3];

    /// Its name in recipes.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Blake3 => "blake3",
        }
    }

    /// How many hex digits its digests have.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 | Algorithm::Blake3 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

const KNOWN: &str = "loaders http:URL, https://URL, file:PATH, s3://BUCKET/KEY, larder:DIGEST, dirac:LFN, exec:COMMAND; transforms md5:, sha1:, sha256:, sha512:, blake3:, tar, unzip, gunzip, unxz, unzstd";

impl Recipe {
    /// Parses recipe steps as given on the command line. Errors name the step
    /// by its position and text.
    pub fn parse<S: AsRef<str>>(steps: &[S]) -> Result<Recipe> {
        let mut sources: Vec<Source> = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let step = step.as_ref();
            let bad = |why: String| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("recipe step {} `{step}`: {why}", i + 1),
                )
            };
            match parse_step(step).map_err(bad)? {
                Step::Loader(loader) => sources.push(Source { loader, transforms: Vec::new() }),
                Step::Transform(t) => match sources.last_mut() {
                    Some(source) => {
                        check_order(source, &t).map_err(|why| bad(why.to_string()))?;
                        source.transforms.push(t);
                    }
                    None => {
                        return Err(bad(
                            "is a transform, but a recipe starts with a loader such as http:URL or file:PATH"
                                .to_string(),
                        ));
                    }
                },
            }
        }
        Ok(Recipe { sources })
    }

    /// Whether the recipe has no steps (a scratch directory).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// A name for what the recipe builds: the same steps, the same hash.
    pub fn hash(&self) -> String {
        Digest::of(self.to_string().as_bytes()).to_string()
    }
}

/// Whether `next` may follow the transforms `source` has so far.
fn check_order(source: &Source, next: &Transform) -> std::result::Result<(), &'static str> {
    if matches!(source.transforms.last(), Some(Transform::Tar | Transform::Unzip)) {
        return Err(
            "follows an unpacked archive, which is a folder: start another source with a loader, or move it before tar/unzip",
        );
    }
    let only_checks = source.transforms.iter().all(|t| matches!(t, Transform::Check(_)));
    if *next == Transform::Unzip && !only_checks {
        return Err(
            "unzip reads the loaded file itself (zip needs the whole file), so it comes right after the loader and its checksums",
        );
    }
    Ok(())
}

enum Step {
    Loader(Loader),
    Transform(Transform),
}

fn parse_step(step: &str) -> std::result::Result<Step, String> {
    let transform = match step {
        "tar" => Some(Transform::Tar),
        "unzip" => Some(Transform::Unzip),
        "gunzip" => Some(Transform::Gunzip),
        "unxz" => Some(Transform::Unxz),
        "unzstd" => Some(Transform::Unzstd),
        _ => None,
    };
    if let Some(t) = transform {
        return Ok(Step::Transform(t));
    }
    if step.starts_with("http://") || step.starts_with("https://") {
        return http(step).map(Step::Loader);
    }
    if let Some(rest) = step.strip_prefix("s3://") {
        return match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                Ok(Step::Loader(Loader::S3 { bucket: bucket.to_string(), key: key.to_string() }))
            }
            _ => Err("an S3 object is s3://BUCKET/KEY".to_string()),
        };
    }
    let Some((word, value)) = step.split_once(':') else {
        return Err(format!("unknown loader or transform; known are {KNOWN}"));
    };
    if let Some(algorithm) =
        Algorithm::ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(word))
    {
        let hex = value.to_ascii_lowercase();
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{} needs {} hex digits", algorithm.name(), algorithm.hex_len()));
        }
        return Ok(Step::Transform(Transform::Check(Checksum { algorithm, hex })));
    }
    let nonempty = |what: &str| {
        if value.is_empty() { Err(format!("{word}: needs {what} after the colon")) } else { Ok(()) }
    };
    let loader = match word {
        "http" | "https" => http(value)?,
        "file" => {
            nonempty("a path")?;
            Loader::File(PathBuf::from(value))
        }
        "larder" => Loader::Larder(value.parse().map_err(|e: Error| e.to_string())?),
        "dirac" => {
            nonempty("a logical file name")?;
            Loader::Dirac(value.to_string())
        }
        "exec" => {
            nonempty("a command")?;
            Loader::Exec(value.to_string())
        }
        _ => return Err(format!("unknown loader or transform `{word}:`; known are {KNOWN}")),
    };
    Ok(Step::Loader(loader))
}

/// Checks an http(s) URL's shape: a scheme, a host, no spaces.
fn http(url: &str) -> std::result::Result<Loader, String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(h) if !h.is_empty() && !url.contains(char::is_whitespace) => {
            Ok(Loader::Http(url.to_string()))
        }
        _ => Err("not an http:// or https:// URL with a host".to_string()),
    }
}

impl fmt::Display for Recipe {
    /// The canonical form: one space between steps, loaders written with
    /// their prefix, checksums in lowercase.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            if !std::mem::take(&mut first) {
                f.write_str(" ")?;
            }
            Ok::<(), fmt::Error>(())
        };
        for source in &self.sources {
            sep(f)?;
            write!(f, "{}", source.loader)?;
            for t in &source.transforms {
                sep(f)?;
                write!(f, "{t}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loader::Http(url) => write!(f, "http:{url}"),
            Loader::File(path) => write!(f, "file:{}", path.display()),
            Loader::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Loader::Larder(d) => write!(f, "larder:{d}"),
            Loader::Dirac(lfn) => write!(f, "dirac:{lfn}"),
            Loader::Exec(cmd) => write!(f, "exec:{cmd}"),
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Check(c) => write!(f, "{}:{}", c.algorithm.name(), c.hex),
            Transform::Tar => f.write_str("tar"),
            Transform::Unzip => f.write_str("unzip"),
            Transform::Gunzip => f.write_str("gunzip"),
            Transform::Unxz => f.write_str("unxz"),
            Transform::Unzstd => f.write_str("unzstd"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` (steps separated by spaces) and compares the canonical
    /// form, or the error.
    fn check(input: &str, expected: &str) {
        let steps: Vec<&str> = input.split_whitespace().collect();
        let got = match Recipe::parse(&steps) {
            Ok(r) => r.to_string(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "{input}");
    }

    #[test]
    fn the_shared_cache_example() {
        check(
            "http:https://github.com/pigay/vsg/archive/vsg-0.2.0.tar.gz md5:7b9d54095bd53e27615c96e7b7318af7 tar",
            "http:https://github.com/pigay/vsg/archive/vsg-0.2.0.tar.gz md5:7b9d54095bd53e27615c96e7b7318af7 tar",
        );
    }

    #[test]
    fn several_loaders_make_several_files() {
        let r =
            Recipe::parse(&["https://h/a.tgz", "tar", "file:/d/b.zip", "unzip", "exec:echo hi"])
                .expect("parse");
        assert_eq!(r.sources.len(), 3);
        assert_eq!(r.sources[0].loader, Loader::Http("https://h/a.tgz".into()));
        assert_eq!(r.sources[1].transforms, vec![Transform::Unzip]);
        assert_eq!(r.sources[2].loader, Loader::Exec("echo hi".into()));
    }

    #[test]
    fn canonical_forms_and_hashes() {
        check(
            "https://h/x SHA1:DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
            "http:https://h/x sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709",
        );
        let a = Recipe::parse(&["https://h/x", "tar"]).expect("parse");
        let b = Recipe::parse(&["http:https://h/x", "tar"]).expect("parse");
        let c = Recipe::parse(&["https://h/x", "unzip"]).expect("parse");
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        assert!(Recipe::parse::<&str>(&[]).expect("parse").is_empty());
    }

    #[test]
    fn bad_steps_point_at_the_word() {
        check(
            "md5:7b9d54095bd53e27615c96e7b7318af7",
            "error: recipe step 1 `md5:7b9d54095bd53e27615c96e7b7318af7`: is a transform, but a recipe starts with a loader such as http:URL or file:PATH",
        );
        check(
            "file:/a untar",
            &format!(
                "error: recipe step 2 `untar`: unknown loader or transform; known are {KNOWN}"
            ),
        );
        check(
            "ftp:x",
            &format!(
                "error: recipe step 1 `ftp:x`: unknown loader or transform `ftp:`; known are {KNOWN}"
            ),
        );
        check(
            "http:notaurl",
            "error: recipe step 1 `http:notaurl`: not an http:// or https:// URL with a host",
        );
        check(
            "https:///path",
            "error: recipe step 1 `https:///path`: not an http:// or https:// URL with a host",
        );
        check("file:/a md5:123", "error: recipe step 2 `md5:123`: md5 needs 32 hex digits");
        check("file:/a sha256:zz", "error: recipe step 2 `sha256:zz`: sha256 needs 64 hex digits");
        check("s3://bucket", "error: recipe step 1 `s3://bucket`: an S3 object is s3://BUCKET/KEY");
        check("file:", "error: recipe step 1 `file:`: file: needs a path after the colon");
        check(
            "file:/a.tgz tar md5:7b9d54095bd53e27615c96e7b7318af7",
            "error: recipe step 3 `md5:7b9d54095bd53e27615c96e7b7318af7`: follows an unpacked archive, which is a folder: start another source with a loader, or move it before tar/unzip",
        );
        check(
            "file:/a.zip.gz gunzip unzip",
            "error: recipe step 3 `unzip`: unzip reads the loaded file itself (zip needs the whole file), so it comes right after the loader and its checksums",
        );
        check(
            "file:/a.tar.xz unxz tar file:/b.zip unzip",
            "file:/a.tar.xz unxz tar file:/b.zip unzip",
        );
        check(
            "larder:sha256:12",
            "error: recipe step 1 `larder:sha256:12`: malformed digest `sha256:12`: expected `sha256:` followed by 64 hex digits, as `larder put` prints",
        );
    }
}
