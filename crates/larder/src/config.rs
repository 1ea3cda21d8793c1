//! Layered configuration: built-in defaults < `~/.config/larder/config.toml` <
//! `./.larder/config.toml` < `LARDER_*` environment variables < flags.
//!
//! Every effective value remembers where it came from, so `larder config` can
//! say why a value is what it is.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, ErrorKind};
use crate::size::{format_size, parse_size};

/// The default capacity of the local tier, as cloud-manager's example used.
pub const DEFAULT_CAPACITY: u64 = 20 << 30;

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the store and all state live.
    pub home: PathBuf,
    /// The local tier's capacity in bytes.
    pub capacity: u64,
    /// The log filter (`warn`, `info`, `larder=debug`, …).
    pub log: String,
    /// Re-hash every blob on every read, not only those whose file changed.
    pub verify_reads: bool,
    /// Where new shared directories go: the first with enough free space.
    pub dirs: Vec<PathBuf>,
    /// How larder talks HTTP to other servers: timeout and retries.
    pub http: crate::http::HttpOptions,
    /// Remote tiers behind the local store, in order (`[[remote]]`).
    pub remotes: Vec<crate::remote::RemoteConfig>,
    /// Every key with its effective value and origin, in a fixed order.
    pub settings: Vec<Setting>,
    /// `LARDER_*` environment variables that name no setting (likely typos).
    pub unknown_env: Vec<String>,
    /// Folders holding `sources/<name>/source.conf`, first definition first.
    pub pool_roots: Vec<PathBuf>,
}

/// One effective configuration value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Setting {
    /// The key as written in a config file.
    pub key: &'static str,
    /// The effective value, as text.
    pub value: String,
    /// Where it came from (as text in JSON: `default`, `FILE:LINE`, `env NAME`, `flag NAME`).
    #[serde(serialize_with = "as_text")]
    pub origin: Origin,
}

fn as_text<S: serde::Serializer>(value: &impl fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built in.
    Default,
    /// A config file, at this line.
    File {
        /// The file.
        path: PathBuf,
        /// Its 1-based line.
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// The keys larder knows, in the order `larder config` prints them.
pub const KEYS: [&str; 7] =
    ["home", "capacity", "log", "verify_reads", "dirs", "http_timeout", "http_retries"];

/// `LARDER_*` variables that are not settings but mean something all the
/// same: a remote's password, the directory `larder use … -- CMD` gives, and
/// the instance pool commands and hooks run for.
pub const OTHER_ENV: [&str; 3] = ["LARDER_PASSWORD", "LARDER_DIR", "LARDER_INSTANCE"];

/// Everything configuration is read from. [`Sources::from_process`] fills it from
/// the real environment; tests build it by hand.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The user's config file (`~/.config/larder/config.toml`), if there is a home.
    pub user_file: Option<PathBuf>,
    /// The project's config file (`./.larder/config.toml`).
    pub project_file: Option<PathBuf>,
    /// The default home when nothing sets one (the XDG cache folder).
    pub default_home: Option<PathBuf>,
    /// The working directory, against which relative paths from the environment
    /// and flags are resolved.
    pub cwd: PathBuf,
    /// `LARDER_*` environment variables.
    pub env: Vec<(String, String)>,
    /// Flags: key, value, and the flag's name for `larder config`.
    pub flags: Vec<(&'static str, String, String)>,
}

impl Sources {
    /// Reads the process's environment and working directory.
    pub fn from_process() -> Result<Sources, Error> {
        let cwd = std::env::current_dir().map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot read the working directory: {e}"))
        })?;
        let strategy = etcetera::choose_base_strategy().ok();
        use etcetera::BaseStrategy as _;
        let user_file =
            strategy.as_ref().map(|s| s.config_dir().join("larder").join("config.toml"));
        let default_home = strategy.as_ref().map(|s| s.cache_dir().join("larder"));
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("LARDER_"))
            .collect();
        Ok(Sources {
            user_file,
            project_file: Some(cwd.join(".larder").join("config.toml")),
            default_home,
            cwd,
            env,
            flags: Vec::new(),
        })
    }

    /// Adds a flag's value (flags win over everything else).
    pub fn flag(mut self, key: &'static str, value: impl Into<String>, flag: &str) -> Sources {
        self.flags.push((key, value.into(), flag.to_string()));
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    home: Option<toml::Spanned<String>>,
    capacity: Option<toml::Spanned<SizeValue>>,
    log: Option<toml::Spanned<String>>,
    verify_reads: Option<toml::Spanned<BoolValue>>,
    dirs: Option<toml::Spanned<ListValue>>,
    http_timeout: Option<toml::Spanned<SizeValue>>,
    http_retries: Option<toml::Spanned<SizeValue>>,
    remote: Option<Vec<toml::Spanned<crate::remote::RemoteConfig>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ListValue {
    List(Vec<String>),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolValue {
    Bool(bool),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// A raw value before it is parsed, with where it came from and what relative
/// paths in it are relative to.
struct Raw {
    value: String,
    origin: Origin,
    base: PathBuf,
}

impl Config {
    /// Loads the layered configuration.
    pub fn load(sources: &Sources) -> Result<Config, Error> {
        let mut raw: [Option<Raw>; 7] = Default::default();
        // The remotes of the last file that lists any, with where each was.
        let mut remotes: Vec<(crate::remote::RemoteConfig, Origin)> = Vec::new();
        let slot = |key: &str| KEYS.iter().position(|k| *k == key);

        for path in [&sources.user_file, &sources.project_file].into_iter().flatten() {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read config file", path, e)),
            };
            let base = config_base(path);
            let file: FileConfig = toml::from_str(&text).map_err(|e| {
                let line = e.span().map(|s| line_of(&text, s.start)).unwrap_or(1);
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{}:{line}: {}; known keys are {} and [[remote]] tables",
                        path.display(),
                        e.message().trim_end_matches('\n'),
                        KEYS.join(", ")
                    ),
                )
            })?;
            let at = |span: std::ops::Range<usize>| Origin::File {
                path: path.clone(),
                line: line_of(&text, span.start),
            };
            if let Some(v) = file.home {
                raw[0] =
                    Some(Raw { origin: at(v.span()), value: v.into_inner(), base: base.clone() });
            }
            if let Some(v) = file.capacity {
                let origin = at(v.span());
                let value = match v.into_inner() {
                    SizeValue::Bytes(n) => n.to_string(),
                    SizeValue::Text(t) => t,
                };
                raw[1] = Some(Raw { value, origin, base: base.clone() });
            }
            if let Some(v) = file.log {
                raw[2] =
                    Some(Raw { origin: at(v.span()), value: v.into_inner(), base: base.clone() });
            }
            if let Some(v) = file.verify_reads {
                let origin = at(v.span());
                let value = match v.into_inner() {
                    BoolValue::Bool(b) => b.to_string(),
                    BoolValue::Text(t) => t,
                };
                raw[3] = Some(Raw { value, origin, base: base.clone() });
            }
            if let Some(v) = file.dirs {
                let origin = at(v.span());
                let value = match v.into_inner() {
                    ListValue::List(items) => items.join(":"),
                    ListValue::Text(t) => t,
                };
                raw[4] = Some(Raw { value, origin, base: base.clone() });
            }
            if let Some(list) = file.remote {
                remotes = list
                    .into_iter()
                    .map(|r| {
                        let origin = at(r.span());
                        (r.into_inner(), origin)
                    })
                    .collect();
            }
            for (i, v) in [(5, file.http_timeout), (6, file.http_retries)] {
                if let Some(v) = v {
                    let origin = at(v.span());
                    let value = match v.into_inner() {
                        SizeValue::Bytes(n) => n.to_string(),
                        SizeValue::Text(t) => t,
                    };
                    raw[i] = Some(Raw { value, origin, base: base.clone() });
                }
            }
        }
        let mut unknown_env = Vec::new();
        for (name, value) in &sources.env {
            let key = name.trim_start_matches("LARDER_").to_ascii_lowercase();
            if slot(&key).is_none() && !OTHER_ENV.contains(&name.as_str()) {
                unknown_env.push(name.clone());
            }
            if let Some(i) = slot(&key) {
                raw[i] = Some(Raw {
                    value: value.clone(),
                    origin: Origin::Env(name.clone()),
                    base: sources.cwd.clone(),
                });
            }
        }
        for (key, value, flag) in &sources.flags {
            if let Some(i) = slot(key) {
                raw[i] = Some(Raw {
                    value: value.clone(),
                    origin: Origin::Flag(flag.clone()),
                    base: sources.cwd.clone(),
                });
            }
        }

        let [home_raw, capacity_raw, log_raw, verify_raw, dirs_raw, timeout_raw, retries_raw] = raw;
        let (home, home_origin) = match home_raw {
            Some(r) if r.value.trim().is_empty() => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "home is empty ({}); set it to a folder, or unset it to use the default",
                        r.origin
                    ),
                ));
            }
            Some(r) => (resolve_path(&r.value, &r.base), r.origin),
            None => match &sources.default_home {
                Some(h) => (h.clone(), Origin::Default),
                None => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "no home folder is known (HOME is unset); set LARDER_HOME to a folder for larder's data",
                    ));
                }
            },
        };
        let (capacity, capacity_origin) = match capacity_raw {
            Some(r) => {
                let bytes = parse_size(&r.value).map_err(|e| {
                    Error::new(ErrorKind::Config, format!("capacity ({}): {e}", r.origin))
                })?;
                (bytes, r.origin)
            }
            None => (DEFAULT_CAPACITY, Origin::Default),
        };
        let (log, log_origin) = match log_raw {
            Some(r) => (r.value, r.origin),
            None => ("warn".to_string(), Origin::Default),
        };
        let (verify_reads, verify_origin) = match verify_raw {
            Some(r) => (
                parse_bool(&r.value).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        format!("verify_reads ({}): `{}` is not true or false", r.origin, r.value),
                    )
                })?,
                r.origin,
            ),
            None => (false, Origin::Default),
        };
        let (dirs, dirs_origin) = match dirs_raw {
            Some(r) => {
                let dirs: Vec<PathBuf> = r
                    .value
                    .split(':')
                    .filter(|d| !d.trim().is_empty())
                    .map(|d| resolve_path(d.trim(), &r.base))
                    .collect();
                if dirs.is_empty() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "dirs ({}) names no folder; give folders separated by `:`",
                            r.origin
                        ),
                    ));
                }
                (dirs, r.origin)
            }
            None => (vec![home.join("dirs")], Origin::Default),
        };
        let mut http = crate::http::HttpOptions::default();
        let timeout_origin = match timeout_raw {
            Some(r) => {
                http.timeout = crate::time::parse_duration(&r.value)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Config,
                            format!(
                                "http_timeout ({}): `{}` is not a duration; write it like 30s or 2m",
                                r.origin, r.value
                            ),
                        )
                    })?;
                r.origin
            }
            None => Origin::Default,
        };
        let retries_origin = match retries_raw {
            Some(r) => {
                http.retries = r.value.trim().parse().map_err(|_| {
                    Error::new(
                        ErrorKind::Config,
                        format!(
                            "http_retries ({}): `{}` is not a number of retries, like 4",
                            r.origin, r.value
                        ),
                    )
                })?;
                r.origin
            }
            None => Origin::Default,
        };
        for (i, (remote, origin)) in remotes.iter().enumerate() {
            if remotes[..i].iter().any(|(r, _)| r.name == remote.name) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{origin}: a second remote named {}; give each its own name",
                        remote.name
                    ),
                ));
            }
        }
        let mut settings = vec![
            Setting { key: "home", value: home.display().to_string(), origin: home_origin },
            Setting {
                key: "capacity",
                value: format!("{} ({capacity} bytes)", format_size(capacity)),
                origin: capacity_origin,
            },
            Setting { key: "log", value: log.clone(), origin: log_origin },
            Setting { key: "verify_reads", value: verify_reads.to_string(), origin: verify_origin },
            Setting {
                key: "dirs",
                value: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":"),
                origin: dirs_origin,
            },
            Setting {
                key: "http_timeout",
                value: format!("{}s", http.timeout.as_secs_f64()),
                origin: timeout_origin,
            },
            Setting {
                key: "http_retries",
                value: http.retries.to_string(),
                origin: retries_origin,
            },
        ];
        for (remote, origin) in &remotes {
            settings.push(Setting {
                key: "remote",
                value: format!(
                    "{} {} ({})",
                    remote.name,
                    crate::remote::redact(&remote.url),
                    remote.mode.name()
                ),
                origin: origin.clone(),
            });
        }
        let remotes: Vec<crate::remote::RemoteConfig> =
            remotes.into_iter().map(|(r, _)| r).collect();
        Ok(Config {
            home,
            capacity,
            log,
            verify_reads,
            dirs,
            http,
            remotes,
            settings,
            unknown_env,
            pool_roots: pool_roots(sources),
        })
    }
}

/// Where pool sources are looked up, first definition first: larder's user
/// and project folders, then crcache's (`~/.config/crcache`, `./.crcache`).
fn pool_roots(sources: &Sources) -> Vec<PathBuf> {
    let user = sources.user_file.as_deref().and_then(Path::parent);
    let project = sources.project_file.as_deref().and_then(Path::parent);
    let mut roots: Vec<PathBuf> =
        [user, project].into_iter().flatten().map(Path::to_path_buf).collect();
    if let Some(config_dir) = user.and_then(Path::parent) {
        roots.push(config_dir.join("crcache"));
    }
    roots.push(sources.cwd.join(".crcache"));
    roots
}

/// Relative paths in `~/.config/larder/config.toml` are relative to that folder;
/// in `./.larder/config.toml`, to the project folder holding `.larder`.
fn config_base(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if dir.file_name().is_some_and(|n| n == ".larder") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn resolve_path(value: &str, base: &Path) -> PathBuf {
    if let Some(rest) = value.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    base.join(value)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests;
