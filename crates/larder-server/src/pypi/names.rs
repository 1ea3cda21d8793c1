//! Project names and distribution file names, as PEP 503, 508 and 427 and
//! the sdist naming rules have them.

pub use larder::wheels::normalize_project as normalize;

/// Whether `name` is a valid project name (PEP 508): letters, digits, `.`,
/// `_` and `-`, starting and ending with a letter or digit.
pub fn is_valid_project(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 200
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// What kind of distribution a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Wheel,
    Sdist,
}

impl Kind {
    /// The file its core metadata is in.
    pub fn metadata_file(self) -> &'static str {
        match self {
            Kind::Wheel => "METADATA",
            Kind::Sdist => "PKG-INFO",
        }
    }

    /// Its name in uploads' `filetype` field.
    pub fn filetype(self) -> &'static str {
        match self {
            Kind::Wheel => "bdist_wheel",
            Kind::Sdist => "sdist",
        }
    }
}

/// A distribution file's name, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistName {
    /// The project, normalized.
    pub project: String,
    /// The version, as written.
    pub version: String,
    pub kind: Kind,
}

const SDIST_SUFFIXES: [&str; 4] = [".tar.gz", ".zip", ".tar.bz2", ".tgz"];

/// Takes apart `name-version[-build]-py-abi-plat.whl` or `name-version.tar.gz`
/// (and `.zip`); `None` if it is neither, or carries path separators.
pub fn parse_filename(filename: &str) -> Option<DistName> {
    if filename.is_empty()
        || filename.len() > 255
        || filename.starts_with('.')
        || filename.contains(['/', '\\', '\0'])
        || filename.chars().any(char::is_control)
    {
        return None;
    }
    if let Some(stem) = filename.strip_suffix(".whl") {
        let parts: Vec<&str> = stem.split('-').collect();
        if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        if !is_valid_project(parts[0]) || !valid_version(parts[1]) {
            return None;
        }
        return Some(DistName {
            project: normalize(parts[0]),
            version: parts[1].to_string(),
            kind: Kind::Wheel,
        });
    }
    let stem = SDIST_SUFFIXES.iter().find_map(|s| filename.strip_suffix(s))?;
    // The version is what follows the last `-` that is followed by a digit.
    let split = stem
        .char_indices()
        .filter(|(i, c)| *c == '-' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        .map(|(i, _)| i)
        .next_back()?;
    let (name, version) = (&stem[..split], &stem[split + 1..]);
    if !is_valid_project(name) || !valid_version(version) {
        return None;
    }
    Some(DistName { project: normalize(name), version: version.to_string(), kind: Kind::Sdist })
}

/// Loosely, a PEP 440 version: digits first, then letters, digits, `.`,
/// `+`, `!`, `_` and `-` (sdists may write local versions with `-`).
fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 100
        && v.starts_with(|c: char| c.is_ascii_digit())
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+!".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize("Friendly-Bard"), "friendly-bard");
        assert_eq!(normalize("FRIENDLY.._BARD"), "friendly-bard");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert!(is_valid_project("zope.interface"));
        assert!(!is_valid_project("-bad"));
        assert!(!is_valid_project("bad/name"));
        assert!(!is_valid_project(""));
    }

    fn check(filename: &str, expected: Option<(&str, &str, Kind)>) {
        let got = parse_filename(filename);
        let got = got.as_ref().map(|d| (d.project.as_str(), d.version.as_str(), d.kind));
        assert_eq!(got, expected, "{filename}");
    }

    #[test]
    fn filenames() {
        check("holy_grail-1.0-py3-none-any.whl", Some(("holy-grail", "1.0", Kind::Wheel)));
        check(
            "numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
            Some(("numpy", "2.1.0", Kind::Wheel)),
        );
        check("pkg-1.0-1build-py3-none-any.whl", Some(("pkg", "1.0", Kind::Wheel)));
        check("holy-grail-1.0.tar.gz", Some(("holy-grail", "1.0", Kind::Sdist)));
        check("zope.interface-6.0rc1.zip", Some(("zope-interface", "6.0rc1", Kind::Sdist)));
        check("pkg-1.0.exe", None);
        check("../evil-1.0.tar.gz", None);
        check("a/b-1.0.tar.gz", None);
        check("pkg.tar.gz", None);
        check("pkg-1.0-py3.whl", None);
        check(".hidden-1.0.tar.gz", None);
    }
}
