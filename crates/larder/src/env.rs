//! What larder takes from the environment besides its own `LARDER_*`
//! settings: credentials and defaults for remotes (`LARDER_PASSWORD`,
//! `NETRC`, `AWS_*`, `AZURE_*`), a Redis coordinator's password
//! (`REDISCLI_AUTH`), `HOME` and `SHELL`, and `PIP_INDEX_URL`. The process's
//! environment is read here and nowhere else: [`crate::config::Sources`]
//! takes an [`Environment`] once, the configuration carries it to what needs
//! it, `larder config` shows what was used, and tests build one by hand.
//! (Credentials that OpenDAL finds itself, such as `AWS_ACCESS_KEY_ID` or
//! `GOOGLE_APPLICATION_CREDENTIALS`, stay OpenDAL's.)

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The variables larder reads, and whether each is a secret (shown as
/// `(set)`, never its value).
pub const VARIABLES: [(&str, bool); 12] = [
    ("LARDER_PASSWORD", true),
    // The password of a Redis coordinator whose URL has none, as redis-cli
    // reads it.
    ("REDISCLI_AUTH", true),
    ("NETRC", false),
    ("AWS_ENDPOINT_URL", false),
    ("AWS_REGION", false),
    ("AWS_DEFAULT_REGION", false),
    ("AZURE_STORAGE_ACCOUNT", false),
    ("AZURE_STORAGE_KEY", true),
    ("AZURE_STORAGE_CONNECTION_STRING", true),
    ("HOME", false),
    ("SHELL", false),
    // The index pip uses without larder, where `curd install` falls back to;
    // it may carry a password.
    ("PIP_INDEX_URL", true),
];

/// The values of [`VARIABLES`] that are set (and not empty).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl Environment {
    /// The process's environment.
    pub fn from_process() -> Environment {
        Environment::from_vars(
            VARIABLES.iter().filter_map(|(name, _)| Some((*name, std::env::var(name).ok()?))),
        )
    }

    /// An environment with these variables; names larder does not read are
    /// left out.
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, String)>) -> Environment {
        let mut out = Environment::default();
        for (name, value) in vars {
            if let Some((known, _)) = VARIABLES.iter().find(|(n, _)| *n == name)
                && !value.is_empty()
            {
                out.vars.insert(known, value);
            }
        }
        out
    }

    /// A variable's value, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The variables set, secrets shown as `(set)`, for `larder config`.
    pub fn shown(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.vars.iter().map(|(name, value)| {
            let secret = VARIABLES.iter().any(|(n, s)| n == name && *s);
            (*name, if secret { "(set)" } else { value.as_str() })
        })
    }

    /// A larder server's password (`LARDER_PASSWORD`).
    pub fn password(&self) -> Option<&str> {
        self.get("LARDER_PASSWORD")
    }

    /// The password of a Redis coordinator whose URL has none
    /// (`REDISCLI_AUTH`, as `redis-cli` reads it).
    pub fn redis_password(&self) -> Option<&str> {
        self.get("REDISCLI_AUTH")
    }

    /// The user's home folder (`HOME`).
    pub fn home_dir(&self) -> Option<PathBuf> {
        self.get("HOME").map(PathBuf::from)
    }

    /// The netrc file: `NETRC`, else `~/.netrc`.
    pub fn netrc(&self) -> Option<PathBuf> {
        match self.get("NETRC") {
            Some(path) => Some(PathBuf::from(path)),
            None => self.home_dir().map(|h| h.join(".netrc")),
        }
    }

    /// The user's shell (`SHELL`, else `sh`), for `pool run` without a command.
    pub fn shell(&self) -> &str {
        self.get("SHELL").unwrap_or("sh")
    }

    /// The S3 region when a remote names none: `AWS_REGION`, then
    /// `AWS_DEFAULT_REGION`.
    pub fn aws_region(&self) -> Option<&str> {
        self.get("AWS_REGION").or_else(|| self.get("AWS_DEFAULT_REGION"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_larder_reads_is_kept_and_secrets_are_not_shown() {
        let env = Environment::from_vars([
            ("AWS_DEFAULT_REGION", "eu-west-1".to_string()),
            ("AZURE_STORAGE_KEY", "s3cret".to_string()),
            ("PATH", "/bin".to_string()),
            ("AWS_REGION", String::new()),
            ("HOME", "/home/a".to_string()),
        ]);
        assert_eq!(env.aws_region(), Some("eu-west-1"));
        assert_eq!(env.get("PATH"), None);
        assert_eq!(env.netrc(), Some(PathBuf::from("/home/a/.netrc")));
        assert_eq!(env.shell(), "sh");
        let shown: Vec<_> = env.shown().collect();
        assert!(shown.contains(&("AZURE_STORAGE_KEY", "(set)")), "{shown:?}");
        assert!(!format!("{env:?}").contains("s3cret"));
    }
}
