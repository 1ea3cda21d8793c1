//! Project names and distribution file names, as PEP 503, 508 and 427 and
//! the sdist naming rules have them.

/// A project name as PEP 503 normalizes it: runs of `-`, `_` and `.` become
/// one `-`, and letters are lowercase.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
            continue;
        }
        if dash && !out.is_empty() {
            out.push('-');
        }
        dash = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Whether two spellings name one version, as PEP 440 compares them
/// (`1.0` and `1.0.0`, `1.0_rc1` and `1.0rc1`, but not `1.0` and `10`);
/// versions PEP 440 cannot read must be spelled the same (case aside).
pub fn same_version(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<pep440_rs::Version>(), b.parse::<pep440_rs::Version>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

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
    /// A built distribution (`.whl`).
    Wheel,
    /// A source distribution (`.tar.gz`, `.zip`...).
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
    /// Wheel or sdist.
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

/// Why a wheel's tags (PEP 425) are not ones any installer matches, if
/// they are not: `py3-none-anything` would be listed and never installed.
pub fn wheel_tags_problem(filename: &str) -> Option<String> {
    let stem = filename.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    let [python, abi, platform] = parts[parts.len().saturating_sub(3)..] else { return None };
    let word = |t: &str| {
        !t.is_empty()
            && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let interpreter = |t: &str| {
        ["py", "cp", "pp", "ip", "jy", "graalpy"].iter().any(|p| {
            t.strip_prefix(p)
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit() || b == b'_'))
        })
    };
    let abi_ok = |t: &str| {
        t == "none"
            || t.starts_with("abi")
            || ["cp", "pp", "pypy", "graalpy", "ip", "jy"].iter().any(|p| t.starts_with(p))
    };
    const PLATFORMS: [&str; 16] = [
        "linux_",
        "manylinux",
        "musllinux_",
        "macosx_",
        "win32",
        "win_",
        "android_",
        "ios_",
        "emscripten_",
        "pyodide_",
        "freebsd_",
        "netbsd_",
        "openbsd_",
        "solaris_",
        "cygwin_",
        "aix_",
    ];
    let platform_ok = |t: &str| t == "any" || PLATFORMS.iter().any(|p| t.starts_with(p));
    let bad = |kind: &str, tag: &str| {
        Some(format!("`{tag}` is not a valid {kind} tag of a wheel (PEP 425)"))
    };
    for t in python.split('.') {
        if !(word(t) && interpreter(t)) {
            return bad("python", t);
        }
    }
    for t in abi.split('.') {
        if !(word(t) && abi_ok(t)) {
            return bad("ABI", t);
        }
    }
    for t in platform.split('.') {
        if !(word(t) && platform_ok(t)) {
            return bad("platform", t);
        }
    }
    None
}

/// Takes apart a legacy binary distribution PyPI still lists, an egg
/// (`name-version[-pyX.Y[-platform]].egg`) or a Windows installer
/// (`name-version.platform[-pyX.Y].exe` or `.msi`): the project, normalized,
/// and the version. Such files are listed and proxied as upstreams list
/// them, never taken as uploads.
pub fn parse_legacy(filename: &str) -> Option<(String, String)> {
    if filename.starts_with('.') || filename.contains(['/', '\\', '\0']) || filename.len() > 255 {
        return None;
    }
    let (name, version) = if let Some(stem) = filename.strip_suffix(".egg") {
        let mut parts = stem.split('-');
        (parts.next()?, parts.next()?)
    } else {
        let stem = filename.strip_suffix(".exe").or_else(|| filename.strip_suffix(".msi"))?;
        let stem = match stem.rsplit_once("-py") {
            Some((rest, py)) if py.bytes().all(|b| b.is_ascii_digit() || b == b'.') => rest,
            _ => stem,
        };
        let split = stem
            .char_indices()
            .filter(|(i, c)| *c == '-' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .map(|(i, _)| i)
            .next()?;
        let (name, rest) = (&stem[..split], &stem[split + 1..]);
        let version = [".win", ".linux", ".macosx", ".cygwin"]
            .iter()
            .filter_map(|p| rest.find(p))
            .min()
            .map_or(rest, |end| &rest[..end]);
        (name, version)
    };
    (is_valid_project(name) && valid_version(version))
        .then(|| (normalize(name), version.to_string()))
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

    #[test]
    fn wheel_tags() {
        for good in [
            "a-1.0-py3-none-any.whl",
            "a-1.0-py2.py3-none-any.whl",
            "a-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "a-1.0-cp39-abi3-macosx_10_9_universal2.whl",
            "a-1.0-cp312-cp312-win_amd64.whl",
            "a-1.0-pp310-pypy310_pp73-win32.whl",
            "a-1.0-1build-cp313-cp313t-musllinux_1_2_aarch64.whl",
        ] {
            assert_eq!(wheel_tags_problem(good), None, "{good}");
        }
        for bad in [
            "a-1.0-py3-none-anything.whl",
            "a-1.0-python3-none-any.whl",
            "a-1.0-py3-nothing-any.whl",
        ] {
            assert!(wheel_tags_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn legacy_filenames() {
        let check = |filename: &str, expected: Option<(&str, &str)>| {
            let got = parse_legacy(filename);
            let got = got.as_ref().map(|(p, v)| (p.as_str(), v.as_str()));
            assert_eq!(got, expected, "{filename}");
        };
        check("pydantic_core-0.1-py3.9.egg", Some(("pydantic-core", "0.1")));
        check("setuptools-0.6c11-py2.7.egg", Some(("setuptools", "0.6c11")));
        check("simplejson-2.1.0.egg", Some(("simplejson", "2.1.0")));
        check("numpy-1.0.win32-py2.4.exe", Some(("numpy", "1.0")));
        check("pywin32-214.win-amd64-py2.6.exe", Some(("pywin32", "214")));
        check("lxml-2.3.win32-py2.7.msi", Some(("lxml", "2.3")));
        check("Twisted-8.2.0.win32.exe", Some(("twisted", "8.2.0")));
        check("evil.exe", None);
        check("../evil-1.0.egg", None);
    }

    #[test]
    fn versions_compare_as_pep_440_says() {
        for (a, b) in [
            ("1.0", "1.0"),
            ("1.0", "1.0.0"),
            ("1.0.0rc1", "1.0.0_rc1"),
            ("1.0rc1", "1.0.0-rc.1"),
            ("v1.0", "1.0"),
            ("1.0.post1", "1.0-1"),
            ("1.0+Local.7", "1.0+local-7"),
        ] {
            assert!(same_version(a, b), "{a} {b}");
        }
        for (a, b) in [("1.0", "10"), ("1.1.0", "11.0"), ("1.0", "1.1"), ("1.0", "1.0.post1")] {
            assert!(!same_version(a, b), "{a} {b}");
        }
    }
}
