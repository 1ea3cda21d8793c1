//! Sources as crcache defines them: `sources/<name>/source.conf`, an INI file
//! with a `[DEFAULT]` section, under a search path where the first definition
//! of a name wins; and an implicit `local` source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// What kind of machine a source makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// This host: one instance, named after the source.
    Local,
    /// A host reached with the system `ssh`: one instance, named after the source.
    Ssh {
        /// The host, or an alias of the user's ssh configuration.
        host: String,
        /// An ssh configuration file to use instead of the user's (`ssh -F`).
        config: Option<PathBuf>,
    },
    /// Instances made, used and thrown away by shell commands (VMs,
    /// containers), as testrepository's instance_provision/execute/dispose.
    Command {
        /// Makes the instance `$INSTANCE`.
        provision: Option<String>,
        /// Runs `"$@"` on `$INSTANCE`.
        run: String,
        /// Throws `$INSTANCE` away.
        discard: Option<String>,
    },
    /// Instances of other sources, taken from the least loaded.
    Pool {
        /// The member sources, in the order written.
        members: Vec<String>,
    },
}

impl SourceKind {
    /// The name of the type as `source.conf` writes it.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::Local => "local",
            SourceKind::Ssh { .. } => "ssh",
            SourceKind::Command { .. } => "command",
            SourceKind::Pool { .. } => "pool",
        }
    }
}

/// One source: its definition and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConf {
    /// Its name (the folder under `sources/`).
    pub name: String,
    /// What it makes.
    pub kind: SourceKind,
    /// Released instances are kept (cached) while the source has at most
    /// this many.
    pub reserve: u32,
    /// Never more instances than this; 0 means no limit.
    pub maximum: u32,
    /// The concurrency reported for its instances; 0 means probe (`nproc`).
    pub concurrency: u32,
    /// How long provisioning, probing, hooks and discarding may take.
    pub timeout: Duration,
    /// The folder holding `source.conf`, `provision.d` and `discard.d`;
    /// `None` for the implicit `local`.
    pub dir: Option<PathBuf>,
}

/// How long provisioning and discarding may take unless `timeout=` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

impl SourceConf {
    /// The implicit `local` source: this host, one instance.
    pub fn implicit_local() -> SourceConf {
        SourceConf {
            name: "local".into(),
            kind: SourceKind::Local,
            reserve: 0,
            maximum: 1,
            concurrency: 0,
            timeout: DEFAULT_TIMEOUT,
            dir: None,
        }
    }

    /// Where it is defined, for messages.
    pub fn origin(&self) -> String {
        match &self.dir {
            Some(dir) => dir.join("source.conf").display().to_string(),
            None => "the implicit local source".into(),
        }
    }

    /// Whether it makes at most one instance, named after itself.
    pub fn is_single(&self) -> bool {
        matches!(self.kind, SourceKind::Local | SourceKind::Ssh { .. })
    }
}

/// Every source, by name, checked: members exist and no pool contains itself.
/// A source whose definition is wrong is set aside with its error, so that
/// the others still work.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    by_name: BTreeMap<String, SourceConf>,
    /// Sources that cannot be used, with why (one line, naming the file).
    broken: BTreeMap<String, String>,
}

/// The keys `source.conf` may set, each with the one type of source it is
/// for (`None`: every type).
const KEYS: [(&str, Option<&str>); 11] = [
    ("type", None),
    ("reserve", None),
    ("maximum", None),
    ("concurrency", None),
    ("sources", Some("pool")),
    ("ssh_host", Some("ssh")),
    ("ssh_config", Some("ssh")),
    ("provision", Some("command")),
    ("run", Some("command")),
    ("discard", Some("command")),
    ("timeout", None),
];

/// The types of source.
const TYPES: [&str; 4] = ["local", "ssh", "pool", "command"];

impl Sources {
    /// Reads `sources/*/source.conf` under each of `roots`, in order; the
    /// first definition of a name wins. `local` is implicit unless defined.
    /// `~/` in their paths is `home_dir`.
    pub fn load(roots: &[PathBuf], home_dir: Option<&Path>) -> Result<Sources> {
        let mut by_name = BTreeMap::new();
        let mut broken = BTreeMap::new();
        for root in roots {
            let dir = root.join("sources");
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(Error::io("read", &dir, e)),
            };
            let mut names: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            names.sort();
            for path in names {
                let file = path.join("source.conf");
                if !file.is_file() {
                    continue;
                }
                let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string)
                else {
                    continue;
                };
                if by_name.contains_key(&name) || broken.contains_key(&name) {
                    continue;
                }
                let parsed = std::fs::read_to_string(&file)
                    .map_err(|e| Error::io("read", &file, e))
                    .and_then(|text| parse(&name, &path, &file, &text, home_dir));
                match parsed {
                    Ok(conf) => {
                        by_name.insert(name, conf);
                    }
                    Err(e) => {
                        broken.insert(name, e.to_string());
                    }
                }
            }
        }
        if !broken.contains_key("local") {
            by_name.entry("local".into()).or_insert_with(SourceConf::implicit_local);
        }
        let mut sources = Sources { by_name, broken };
        sources.set_aside_broken_pools();
        Ok(sources)
    }

    /// The sources that cannot be used, with why.
    pub fn broken(&self) -> impl Iterator<Item = (&str, &str)> {
        self.broken.iter().map(|(name, why)| (name.as_str(), why.as_str()))
    }

    /// Sources built by hand (tests, library users).
    pub fn from_list(list: Vec<SourceConf>) -> Result<Sources> {
        let mut by_name: BTreeMap<String, SourceConf> =
            list.into_iter().map(|s| (s.name.clone(), s)).collect();
        by_name.entry("local".into()).or_insert_with(SourceConf::implicit_local);
        let mut sources = Sources { by_name, broken: BTreeMap::new() };
        sources.set_aside_broken_pools();
        match sources.broken.values().next() {
            Some(why) => Err(Error::new(ErrorKind::Config, why.clone())),
            None => Ok(sources),
        }
    }

    /// The source `name`, or an error: why its definition is wrong, or
    /// which sources there are.
    pub fn get(&self, name: &str) -> Result<&SourceConf> {
        if let Some(why) = self.broken.get(name) {
            return Err(Error::new(ErrorKind::Config, why.clone()));
        }
        self.by_name.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "no source named `{name}` (sources: {}); define it in \
                     sources/{name}/source.conf under ~/.config/larder or ./.larder",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// Whether `name` is a source.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every source name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Every source, by name.
    pub fn iter(&self) -> impl Iterator<Item = &SourceConf> {
        self.by_name.values()
    }

    /// The effective maximum of `name`: a single-machine source has one; a
    /// pool without its own is the sum of its members' (unlimited if any
    /// member is). 0 means no limit.
    pub fn maximum(&self, name: &str) -> u32 {
        let Some(conf) = self.by_name.get(name) else { return 0 };
        if conf.is_single() {
            return 1;
        }
        if conf.maximum > 0 {
            return conf.maximum;
        }
        match &conf.kind {
            SourceKind::Pool { members } => {
                let mut sum = 0u32;
                for m in members {
                    match self.maximum(m) {
                        0 => return 0,
                        n => sum = sum.saturating_add(n),
                    }
                }
                sum
            }
            _ => 0,
        }
    }

    /// The paths from `name` down to each leaf source under it (a leaf's only
    /// path is itself), members in the order written.
    pub fn paths(&self, name: &str) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut path = vec![name.to_string()];
        self.walk(&mut path, &mut out);
        out
    }

    fn walk(&self, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let Some(last) = path.last() else { return };
        match self.by_name.get(last).map(|c| &c.kind) {
            Some(SourceKind::Pool { members }) => {
                for m in members.clone() {
                    path.push(m);
                    self.walk(path, out);
                    path.pop();
                }
            }
            Some(_) => out.push(path.clone()),
            None => {}
        }
    }

    /// The pools that list `name` as a member.
    pub fn pools_of(&self, name: &str) -> Vec<&str> {
        self.by_name
            .values()
            .filter(|c| matches!(&c.kind, SourceKind::Pool { members } if members.iter().any(|m| m == name)))
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Sets aside each pool that lists a source that is not there (or is
    /// set aside itself) or that contains itself, until none is left.
    fn set_aside_broken_pools(&mut self) {
        while let Some((name, why)) = self.first_broken_pool() {
            self.by_name.remove(&name);
            self.broken.insert(name, why);
        }
    }

    fn first_broken_pool(&self) -> Option<(String, String)> {
        for conf in self.by_name.values() {
            if let SourceKind::Pool { members } = &conf.kind {
                for m in members {
                    if let Some(why) = self.broken.get(m) {
                        let why = format!(
                            "{}: pool `{}` lists `{m}`, which cannot be used ({why})",
                            conf.origin(),
                            conf.name
                        );
                        return Some((conf.name.clone(), why));
                    }
                    if !self.by_name.contains_key(m) {
                        let why = format!(
                            "{}: pool `{}` lists `{m}`, which is no source (sources: {}); \
                             fix sources= or define sources/{m}/source.conf",
                            conf.origin(),
                            conf.name,
                            self.names().collect::<Vec<_>>().join(", ")
                        );
                        return Some((conf.name.clone(), why));
                    }
                }
                let mut chain = vec![conf.name.clone()];
                if let Err(e) = self.check_cycle(&mut chain, conf) {
                    return Some((conf.name.clone(), e.to_string()));
                }
            }
        }
        None
    }

    fn check_cycle(&self, chain: &mut Vec<String>, conf: &SourceConf) -> Result<()> {
        let Some(SourceKind::Pool { members }) =
            chain.last().and_then(|l| self.by_name.get(l)).map(|c| &c.kind)
        else {
            return Ok(());
        };
        for m in members {
            if chain.contains(m) {
                chain.push(m.clone());
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{}: pool `{}` contains itself ({}); remove one of them from sources=",
                        conf.origin(),
                        conf.name,
                        chain.join(" → ")
                    ),
                ));
            }
            chain.push(m.clone());
            self.check_cycle(chain, conf)?;
            chain.pop();
        }
        Ok(())
    }
}

/// Parses one `source.conf` (`file`, in the folder `dir`) of the source `name`.
pub fn parse(
    name: &str,
    dir: &Path,
    file: &Path,
    text: &str,
    home_dir: Option<&Path>,
) -> Result<SourceConf> {
    let bad = |line: usize, why: String| {
        Error::new(ErrorKind::Config, format!("{}:{line}: {why}", file.display()))
    };
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || name.starts_with('.')
    {
        return Err(bad(
            1,
            format!(
                "source name `{}` may use only letters, digits, `_`, `-` and `.`; rename its folder",
                name.escape_debug()
            ),
        ));
    }
    let mut values: BTreeMap<&'static str, (String, usize)> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut last_key: Option<&'static str> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        // An indented line continues the value above it, as ConfigParser reads it.
        if raw.starts_with([' ', '\t'])
            && let Some(key) = last_key
            && let Some((value, _)) = values.get_mut(key)
        {
            value.push('\n');
            value.push_str(trimmed);
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(bad(
                    line,
                    format!("`{trimmed}` opens a section but does not close it with `]`"),
                ));
            };
            section = Some(name.trim().to_string());
            last_key = None;
            continue;
        }
        let Some(at) = trimmed.find(['=', ':']) else {
            return Err(bad(line, format!("expected key=value, found `{trimmed}`")));
        };
        if section.as_deref() != Some("DEFAULT") {
            return Err(bad(
                line,
                match &section {
                    None => "settings must follow a [DEFAULT] line, as crcache writes them".into(),
                    Some(s) => format!("section [{s}] is not read; put settings under [DEFAULT]"),
                },
            ));
        }
        let key = trimmed[..at].trim().to_ascii_lowercase();
        let value = trimmed[at + 1..].trim().to_string();
        let Some(&(known, _)) = KEYS.iter().find(|(k, _)| *k == key) else {
            let names = KEYS.map(|(k, _)| k);
            let hint = crate::config::nearest(&key, names)
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default();
            return Err(bad(
                line,
                format!("unknown key `{key}`{hint}; known keys are {}", names.join(", ")),
            ));
        };
        values.insert(known, (value, line));
        last_key = Some(known);
    }
    let number = |key: &str| -> Result<u32> {
        match values.get(key) {
            None => Ok(0),
            Some((v, line)) => v.parse::<u32>().map_err(|_| {
                bad(*line, format!("{key} must be a whole number of at least 0, not `{v}`"))
            }),
        }
    };
    let text_of = |key: &str| values.get(key).map(|(v, _)| v.clone()).filter(|v| !v.is_empty());
    let line_of = |key: &str| values.get(key).map_or(1, |(_, l)| *l);
    let (type_name, type_line) = match values.get("type") {
        Some((t, l)) => (t.as_str(), *l),
        None => {
            return Err(bad(
                1,
                "no type=; write type=local, ssh, pool or command under [DEFAULT]".into(),
            ));
        }
    };
    if !TYPES.contains(&type_name) {
        return Err(bad(
            type_line,
            format!("unknown type `{type_name}`; use local, ssh, pool or command"),
        ));
    }
    // Keys for another type of source are mistakes, not options to ignore.
    for (key, owner) in KEYS {
        if let (Some(owner), Some((_, line))) = (owner, values.get(key))
            && owner != type_name
        {
            return Err(bad(
                *line,
                format!("{key} is only for {owner} sources, and this one is type={type_name}"),
            ));
        }
    }
    let kind = match type_name {
        "ssh" => {
            let host = text_of("ssh_host").ok_or_else(|| {
                bad(
                    type_line,
                    "an ssh source needs ssh_host=HOST (a name or an alias of ~/.ssh/config)"
                        .into(),
                )
            })?;
            if host.starts_with('-') || host.chars().any(char::is_whitespace) {
                return Err(bad(
                    line_of("ssh_host"),
                    format!("ssh_host `{host}` is not a host name"),
                ));
            }
            let config = text_of("ssh_config").map(|c| dir.join(expand_home(&c, home_dir)));
            SourceKind::Ssh { host, config }
        }
        "command" => {
            let run = text_of("run").ok_or_else(|| {
                bad(
                    type_line,
                    "a command source needs run=, a shell command that runs \"$@\" on $INSTANCE"
                        .into(),
                )
            })?;
            SourceKind::Command {
                provision: text_of("provision"),
                run,
                discard: text_of("discard"),
            }
        }
        "pool" => {
            let members: Vec<String> = text_of("sources")
                .unwrap_or_default()
                .split([',', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if members.is_empty() {
                return Err(bad(type_line, "a pool needs sources=NAME,NAME,…".into()));
            }
            if members.iter().any(|m| m == name) {
                return Err(bad(
                    line_of("sources"),
                    format!("pool `{name}` contains itself; remove `{name}` from sources="),
                ));
            }
            SourceKind::Pool { members }
        }
        // `local`, the one type left of those checked above.
        _ => SourceKind::Local,
    };
    let maximum = number("maximum")?;
    if matches!(kind, SourceKind::Local | SourceKind::Ssh { .. }) && maximum > 1 {
        return Err(bad(
            line_of("maximum"),
            format!(
                "a {} source is one machine, so one instance; set concurrency= for how many jobs it runs at once",
                kind.type_name()
            ),
        ));
    }
    let timeout = match values.get("timeout") {
        None => DEFAULT_TIMEOUT,
        Some((v, l)) => {
            crate::time::parse_duration(v).map_err(|e| bad(*l, format!("timeout: {e}")))?
        }
    };
    Ok(SourceConf {
        name: name.to_string(),
        kind,
        reserve: number("reserve")?,
        maximum,
        concurrency: number("concurrency")?,
        timeout,
        dir: Some(dir.to_path_buf()),
    })
}

fn expand_home(path: &str, home_dir: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~/"), home_dir) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as the source `name` and compares the outcome (the
    /// source's debug form, or the error) with `expected`.
    fn check(name: &str, text: &str, expected: &str) {
        let dir = Path::new("/c/sources").join(name);
        let got = match parse(name, &dir, &dir.join("source.conf"), text, None) {
            Ok(conf) => format!(
                "{} reserve={} maximum={} concurrency={} timeout={}s {:?}",
                conf.kind.type_name(),
                conf.reserve,
                conf.maximum,
                conf.concurrency,
                conf.timeout.as_secs(),
                conf.kind
            ),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expected, "for {text:?}");
    }

    #[test]
    fn reads_crcache_files() {
        check(
            "pool",
            "[DEFAULT]\n; a pool\ntype=pool\nreserve=1\nmaximum=3\nsources=a, b\n",
            r#"pool reserve=1 maximum=3 concurrency=0 timeout=600s Pool { members: ["a", "b"] }"#,
        );
        check(
            "h",
            "[DEFAULT]\ntype = ssh\nssh_host = build1\nconcurrency: 4\n",
            r#"ssh reserve=0 maximum=0 concurrency=4 timeout=600s Ssh { host: "build1", config: None }"#,
        );
        check(
            "vm",
            "[DEFAULT]\ntype=command\nprovision=mkdir -p /m/$INSTANCE\nrun=cd /m/$INSTANCE &&\n  \"$@\"\ntimeout=30s\n",
            r#"command reserve=0 maximum=0 concurrency=0 timeout=30s Command { provision: Some("mkdir -p /m/$INSTANCE"), run: "cd /m/$INSTANCE &&\n\"$@\"", discard: None }"#,
        );
        check(
            "l",
            "[DEFAULT]\ntype=local\n",
            "local reserve=0 maximum=0 concurrency=0 timeout=600s Local",
        );
    }

    #[test]
    fn bad_files_name_the_file_and_line() {
        check(
            "p",
            "[DEFAULT]\ntype=[local|pool|ssh]\n",
            "/c/sources/p/source.conf:2: unknown type `[local|pool|ssh]`; use local, ssh, pool or command",
        );
        check(
            "p",
            "[DEFAULT]\ntype=pool\nreserve=int\nsources=a\n",
            "/c/sources/p/source.conf:3: reserve must be a whole number of at least 0, not `int`",
        );
        check(
            "p",
            "type=local\n",
            "/c/sources/p/source.conf:1: settings must follow a [DEFAULT] line, as crcache writes them",
        );
        check(
            "p",
            "[DEFAULT]\ntype=local\njunk\n",
            "/c/sources/p/source.conf:3: expected key=value, found `junk`",
        );
        check(
            "p",
            "[DEFAULT]\ntype=local\nmaxmum=2\n",
            "/c/sources/p/source.conf:3: unknown key `maxmum` (did you mean `maximum`?); known keys are type, reserve, maximum, concurrency, sources, ssh_host, ssh_config, provision, run, discard, timeout",
        );
        check(
            "p",
            "[DEFAULT]\ntype=pool\nsources=p,q\n",
            "/c/sources/p/source.conf:3: pool `p` contains itself; remove `p` from sources=",
        );
        check(
            "h",
            "[DEFAULT]\ntype=ssh\n",
            "/c/sources/h/source.conf:2: an ssh source needs ssh_host=HOST (a name or an alias of ~/.ssh/config)",
        );
        check(
            "h",
            "[DEFAULT]\ntype=ssh\nssh_host=a\nmaximum=2\n",
            "/c/sources/h/source.conf:4: a ssh source is one machine, so one instance; set concurrency= for how many jobs it runs at once",
        );
        check(
            "v",
            "[DEFAULT]\ntype=command\n",
            "/c/sources/v/source.conf:2: a command source needs run=, a shell command that runs \"$@\" on $INSTANCE",
        );
        check(
            "v",
            "[DEFAULT]\ntype=local\nssh_host=x\n",
            "/c/sources/v/source.conf:3: ssh_host is only for ssh sources, and this one is type=local",
        );
        check(
            "v",
            "[DEFAULT]\n",
            "/c/sources/v/source.conf:1: no type=; write type=local, ssh, pool or command under [DEFAULT]",
        );
        check(
            "v",
            "[DEFAULT]\ntype=local\ntimeout=soon\n",
            "/c/sources/v/source.conf:3: timeout: malformed duration `soon`: write numbers with d, h, m, s or ms, like 90s, 10m or 1h30m",
        );
    }

    fn source(name: &str, kind: SourceKind, maximum: u32) -> SourceConf {
        SourceConf { name: name.into(), kind, maximum, ..SourceConf::implicit_local() }
    }

    fn pool(name: &str, members: &[&str]) -> SourceConf {
        let members = members.iter().map(|m| m.to_string()).collect();
        source(name, SourceKind::Pool { members }, 0)
    }

    fn vm(name: &str, maximum: u32) -> SourceConf {
        let kind = SourceKind::Command { provision: None, run: "\"$@\"".into(), discard: None };
        source(name, kind, maximum)
    }

    #[test]
    fn pools_that_contain_themselves_are_refused() {
        let err = Sources::from_list(vec![pool("a", &["b"]), pool("b", &["c", "a"]), vm("c", 1)])
            .expect_err("a cycle");
        assert!(err.to_string().contains("pool `a` contains itself (a → b → a)"), "{err}");
        let err = Sources::from_list(vec![pool("a", &["nope"])]).expect_err("unknown member");
        assert!(err.to_string().contains("pool `a` lists `nope`, which is no source"), "{err}");
    }

    #[test]
    fn maxima_and_paths() {
        let s = Sources::from_list(vec![
            pool("all", &["vms", "local"]),
            pool("vms", &["a", "b"]),
            vm("a", 2),
            vm("b", 3),
            vm("free", 0),
            pool("loose", &["a", "free"]),
        ])
        .expect("valid");
        assert_eq!(s.maximum("vms"), 5);
        assert_eq!(s.maximum("all"), 6);
        assert_eq!(s.maximum("loose"), 0);
        assert_eq!(s.maximum("local"), 1);
        assert_eq!(
            s.paths("all"),
            vec![vec!["all", "vms", "a"], vec!["all", "vms", "b"], vec!["all", "local"]]
        );
        assert_eq!(s.pools_of("a"), vec!["loose", "vms"]);
    }
}
