//! Layered configuration: built-in defaults < `~/.config/larder/config.toml` <
//! `./.larder/config.toml` < `LARDER_*` environment variables < flags.
//!
//! Every effective value remembers where it came from, so `larder config` can
//! say why a value is what it is.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::env::Environment;
use crate::error::{Error, ErrorKind};
use crate::remote::RemoteConfig;
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
    /// What larder takes from the environment besides its settings:
    /// credentials and defaults for remotes, `HOME`, `SHELL`.
    pub env: Environment,
    /// Remote tiers behind the local store, in order (`[[remote]]`).
    pub remotes: Vec<crate::remote::RemoteConfig>,
    /// Every key with its effective value and origin, in a fixed order.
    pub settings: Vec<Setting>,
    /// `LARDER_*` environment variables that name no setting (likely typos).
    pub unknown_env: Vec<String>,
    /// Folders holding `sources/<name>/source.conf`, first definition first.
    pub pool_roots: Vec<PathBuf>,
    /// Where holders and pools are coordinated: empty for the SQLite
    /// database in the home (one host), else the URL of a Redis that every
    /// host sharing directories and pools points at (see [`crate::coord::open`]).
    pub coordinator: String,
    /// How long a hold or grant at a Redis coordinator lasts unless its host
    /// renews it: how soon the holds of a host that died or was cut off end.
    pub coordinator_lease: std::time::Duration,
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
    /// The other variables larder reads (see [`crate::env`]).
    pub environment: Environment,
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
            environment: Environment::from_process(),
            flags: Vec::new(),
        })
    }

    /// Adds a flag's value (flags win over everything else).
    pub fn flag(mut self, key: &'static str, value: impl Into<String>, flag: &str) -> Sources {
        self.flags.push((key, value.into(), flag.to_string()));
        self
    }
}

/// One setting: its key, what a config file may write for it, how its text
/// is read into the configuration, its default, and how `larder config`
/// shows it. [`Config::load`] runs down this table.
struct Key {
    name: &'static str,
    /// What a config file may give besides text.
    takes: Takes,
    /// Reads `text` into `config`; relative paths are relative to `base`.
    /// `Err` says what is wrong with the value.
    set: fn(&mut Config, text: &str, base: &Path) -> Result<(), String>,
    /// Sets the value used when nothing sets it.
    default: fn(&mut Config, &Sources) -> Result<(), Error>,
    /// The effective value, as text.
    show: fn(&Config) -> String,
}

/// What a config file may write for a key besides a string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Text,
    /// A whole number (bytes, seconds, retries).
    Number,
    /// `true` or `false`.
    Bool,
    /// A list of strings (joined with `:`).
    List,
}

impl Takes {
    fn describe(self) -> &'static str {
        match self {
            Takes::Text => "text",
            Takes::Number => "a number or text",
            Takes::Bool => "true, false or text",
            Takes::List => "a list of folders or text",
        }
    }
}

/// The settings, in the order `larder config` prints them. `dirs` comes
/// after `home`, whose default it uses.
const TABLE: [Key; 9] = [
    Key {
        name: "home",
        takes: Takes::Text,
        set: |c, text, base| {
            if text.trim().is_empty() {
                return Err(
                    "it is empty; set it to a folder, or unset it to use the default".into()
                );
            }
            c.home = resolve_path(text, base, &c.env);
            Ok(())
        },
        default: |c, sources| {
            c.home = sources.default_home.clone().ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    "no home folder is known (HOME is unset); set LARDER_HOME to a folder for larder's data",
                )
            })?;
            Ok(())
        },
        show: |c| c.home.display().to_string(),
    },
    Key {
        name: "capacity",
        takes: Takes::Number,
        set: |c, text, _| {
            c.capacity = parse_size(text).map_err(|e| e.to_string())?;
            Ok(())
        },
        default: |c, _| {
            c.capacity = DEFAULT_CAPACITY;
            Ok(())
        },
        show: |c| format!("{} ({} bytes)", format_size(c.capacity), c.capacity),
    },
    Key {
        name: "log",
        takes: Takes::Text,
        set: |c, text, _| {
            c.log = text.to_string();
            Ok(())
        },
        default: |c, _| {
            c.log = "warn".into();
            Ok(())
        },
        show: |c| c.log.clone(),
    },
    Key {
        name: "verify_reads",
        takes: Takes::Bool,
        set: |c, text, _| {
            c.verify_reads = parse_bool(text).ok_or(format!("`{text}` is not true or false"))?;
            Ok(())
        },
        default: |c, _| {
            c.verify_reads = false;
            Ok(())
        },
        show: |c| c.verify_reads.to_string(),
    },
    Key {
        name: "dirs",
        takes: Takes::List,
        set: |c, text, base| {
            c.dirs = text
                .split(':')
                .filter(|d| !d.trim().is_empty())
                .map(|d| resolve_path(d.trim(), base, &c.env))
                .collect();
            if c.dirs.is_empty() {
                return Err("it names no folder; give folders separated by `:`".into());
            }
            Ok(())
        },
        default: |c, _| {
            c.dirs = vec![c.home.join("dirs")];
            Ok(())
        },
        show: |c| c.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":"),
    },
    Key {
        name: "http_timeout",
        takes: Takes::Number,
        set: |c, text, _| {
            c.http.timeout = crate::time::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or(format!("`{text}` is not a duration; write it like 30s or 2m"))?;
            Ok(())
        },
        default: |c, _| {
            c.http.timeout = crate::http::HttpOptions::default().timeout;
            Ok(())
        },
        show: |c| format!("{}s", c.http.timeout.as_secs_f64()),
    },
    Key {
        name: "http_retries",
        takes: Takes::Number,
        set: |c, text, _| {
            c.http.retries = text
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a number of retries, like 4"))?;
            Ok(())
        },
        default: |c, _| {
            c.http.retries = crate::http::HttpOptions::default().retries;
            Ok(())
        },
        show: |c| c.http.retries.to_string(),
    },
    Key {
        name: "coordinator",
        takes: Takes::Text,
        set: |c, text, _| {
            let text = text.trim();
            if text.is_empty() || text == "sqlite" {
                c.coordinator = String::new();
                return Ok(());
            }
            if !crate::coord::redis::is_redis_url(text) {
                // Never the value itself: it may carry a password.
                return Err(format!(
                    "`{}` is neither `sqlite` nor a Redis URL; write redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://… for TLS or redis+unix:///PATH",
                    crate::coord::redis::redact(text)
                ));
            }
            c.coordinator = text.to_string();
            Ok(())
        },
        default: |c, _| {
            c.coordinator = String::new();
            Ok(())
        },
        show: |c| crate::coord::describe(&c.coordinator, &c.home),
    },
    Key {
        name: "coordinator_lease",
        takes: Takes::Number,
        set: |c, text, _| {
            c.coordinator_lease =
                crate::time::parse_duration(text)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or(format!("`{text}` is not a duration; write it like 30s or 2m"))?;
            Ok(())
        },
        default: |c, _| {
            c.coordinator_lease = crate::coord::redis::DEFAULT_LEASE;
            Ok(())
        },
        show: |c| format!("{}s", c.coordinator_lease.as_secs_f64()),
    },
];

/// The keys larder knows, in the order `larder config` prints them.
pub const KEYS: [&str; 9] = {
    let mut keys = [""; 9];
    let mut i = 0;
    while i < TABLE.len() {
        keys[i] = TABLE[i].name;
        i += 1;
    }
    keys
};

/// A value before it is read, with where it came from and what relative
/// paths in it are relative to.
struct Raw {
    value: String,
    origin: Origin,
    base: PathBuf,
}

/// The `[[remote]]` tables of a config file, each with where it starts.
#[derive(Deserialize)]
struct FileRemotes {
    #[serde(default)]
    remote: Vec<Spanned<RemoteConfig>>,
}

/// What one config file sets.
struct FileValues {
    raw: Vec<(usize, Raw)>,
    /// `None` if the file lists no remotes (those of a file before stay).
    remotes: Option<Vec<(RemoteConfig, Origin)>>,
}

impl Config {
    /// Loads the layered configuration.
    pub fn load(sources: &Sources) -> Result<Config, Error> {
        let mut raw: Vec<Option<Raw>> = TABLE.iter().map(|_| None).collect();
        // The remotes of the last file that lists any, with where each was.
        let mut remotes: Vec<(RemoteConfig, Origin)> = Vec::new();
        for path in [&sources.user_file, &sources.project_file].into_iter().flatten() {
            let Some(file) = read_file(path)? else { continue };
            for (i, value) in file.raw {
                raw[i] = Some(value);
            }
            if let Some(list) = file.remotes {
                remotes = list;
            }
        }
        let mut unknown_env = Vec::new();
        for (name, value) in &sources.env {
            let key = name.trim_start_matches("LARDER_").to_ascii_lowercase();
            match TABLE.iter().position(|k| k.name == key) {
                Some(i) => {
                    raw[i] = Some(Raw {
                        value: value.clone(),
                        origin: Origin::Env(name.clone()),
                        base: sources.cwd.clone(),
                    });
                }
                None if !OTHER_ENV.contains(&name.as_str()) => unknown_env.push(name.clone()),
                None => {}
            }
        }
        for (key, value, flag) in &sources.flags {
            if let Some(i) = TABLE.iter().position(|k| k.name == *key) {
                raw[i] = Some(Raw {
                    value: value.clone(),
                    origin: Origin::Flag(flag.clone()),
                    base: sources.cwd.clone(),
                });
            }
        }

        let mut config = Config {
            home: PathBuf::new(),
            capacity: DEFAULT_CAPACITY,
            log: String::new(),
            verify_reads: false,
            dirs: Vec::new(),
            http: crate::http::HttpOptions::default(),
            env: sources.environment.clone(),
            remotes: Vec::new(),
            settings: Vec::new(),
            unknown_env,
            pool_roots: pool_roots(sources),
            coordinator: String::new(),
            coordinator_lease: crate::coord::redis::DEFAULT_LEASE,
        };
        for (key, raw) in TABLE.iter().zip(raw) {
            let origin = match raw {
                Some(raw) => {
                    (key.set)(&mut config, &raw.value, &raw.base).map_err(|why| {
                        Error::new(
                            ErrorKind::Config,
                            format!("{} ({}): {why}", key.name, raw.origin),
                        )
                    })?;
                    raw.origin
                }
                None => {
                    (key.default)(&mut config, sources)?;
                    Origin::Default
                }
            };
            config.settings.push(Setting { key: key.name, value: (key.show)(&config), origin });
        }
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
            config.settings.push(Setting {
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
        config.remotes = remotes.into_iter().map(|(r, _)| r).collect();
        // What larder took from the environment for remotes, secrets hidden.
        for (name, value) in config.env.shown() {
            if !matches!(name, "HOME" | "SHELL") {
                let origin = Origin::Env(name.to_string());
                config.settings.push(Setting { key: name, value: value.to_string(), origin });
            }
        }
        Ok(config)
    }
}

/// Reads one config file; `None` if there is none.
fn read_file(path: &Path) -> Result<Option<FileValues>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read config file", path, e)),
    };
    let base = config_base(path);
    let at =
        |offset: usize| Origin::File { path: path.to_path_buf(), line: line_of(&text, offset) };
    let bad = |offset: usize, why: String| {
        Error::new(ErrorKind::Config, format!("{}: {why}", at(offset)))
    };
    let syntax = |e: toml::de::Error| bad(e.span().map_or(0, |s| s.start), tidy(e.message()));
    let table: BTreeMap<String, Spanned<toml::Value>> = toml::from_str(&text).map_err(syntax)?;
    let mut raw = Vec::new();
    let mut remotes = None;
    for (key, value) in &table {
        let start = value.span().start;
        if key == "remote" {
            if !value.get_ref().is_array() {
                // The key's own line: the value of `[remote]` starts after it.
                let line_start = text[..start].rfind("[remote]").unwrap_or(start);
                return Err(bad(
                    line_start,
                    "`[remote]` is one table, but remotes are a list: write `[[remote]]`, with two brackets, above each remote".into(),
                ));
            }
            let file: FileRemotes = toml::from_str(&text).map_err(syntax)?;
            remotes = Some(
                file.remote
                    .into_iter()
                    .map(|r| {
                        let origin = at(r.span().start);
                        (r.into_inner(), origin)
                    })
                    .collect(),
            );
            continue;
        }
        let Some(i) = TABLE.iter().position(|k| k.name == key) else {
            let mut why = format!("unknown key `{key}`");
            if let Some(near) = nearest(key, KEYS.iter().copied().chain(["remote"])) {
                why.push_str(&format!(" (did you mean `{near}`?)"));
            }
            why.push_str(&format!("; known keys are {} and [[remote]] tables", KEYS.join(", ")));
            // The key's line: its value may start on a later one.
            let key_start = text[..start].rfind(key.as_str()).unwrap_or(start);
            return Err(bad(key_start, why));
        };
        let takes = TABLE[i].takes;
        let value_text = match (value.get_ref(), takes) {
            (toml::Value::String(s), _) => s.clone(),
            (toml::Value::Integer(n), Takes::Number) if *n >= 0 => n.to_string(),
            (toml::Value::Boolean(b), Takes::Bool) => b.to_string(),
            (toml::Value::Array(items), Takes::List) => {
                let folders: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
                folders
                    .ok_or_else(|| bad(start, format!("{key} takes {}", takes.describe())))?
                    .join(":")
            }
            (other, _) => {
                return Err(bad(
                    start,
                    format!("{key} takes {}, not {}", takes.describe(), other.type_str()),
                ));
            }
        };
        raw.push((i, Raw { value: value_text, origin: at(start), base: base.clone() }));
    }
    Ok(Some(FileValues { raw, remotes }))
}

/// A TOML error's message on one line.
fn tidy(message: &str) -> String {
    message.trim_end_matches('\n').replace('\n', " ")
}

/// The candidate closest to `word`, if it is close enough to be what was
/// meant: for "did you mean" hints.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
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

fn resolve_path(value: &str, base: &Path, env: &Environment) -> PathBuf {
    if let Some(rest) = value.strip_prefix("~/")
        && let Some(home) = env.home_dir()
    {
        return home.join(rest);
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
