use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    fn sources(&self) -> Sources {
        Sources {
            user_file: Some(self.dir.path().join("user/larder/config.toml")),
            project_file: Some(self.dir.path().join("proj/.larder/config.toml")),
            default_home: Some(PathBuf::from("/default/home")),
            cwd: self.dir.path().join("proj"),
            env: Vec::new(),
            environment: Environment::default(),
            flags: Vec::new(),
        }
    }
}

/// Renders the effective settings as `key=value <- origin` lines, with the
/// fixture's folder shown as `$T`.
fn render(fixture: &Fixture, result: Result<Config, Error>) -> String {
    let root = fixture.dir.path().display().to_string();
    match result {
        Ok(config) => config
            .settings
            .iter()
            .map(|s| format!("{}={} <- {}", s.key, s.value, s.origin))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(&root, "$T"),
        Err(e) => format!("error: {e}").replace(&root, "$T"),
    }
}

fn check(fixture: &Fixture, sources: Sources, expected: &str) {
    let got = render(fixture, Config::load(&sources));
    assert_eq!(got.trim(), expected.trim(), "\n--- got ---\n{got}\n");
}

#[test]
fn defaults_when_nothing_is_set() {
    let f = Fixture::new();
    check(
        &f,
        f.sources(),
        "home=/default/home <- default\ncapacity=20.0 GiB (21474836480 bytes) <- default\nlog=warn <- default\nverify_reads=false <- default\ndirs=/default/home/dirs <- default\nhttp_timeout=30s <- default\nhttp_retries=4 <- default\n\
         coordinator=sqlite (/default/home/state-v1.sqlite) <- default\ncoordinator_lease=30s <- default",
    );
}

#[test]
fn each_layer_overrides_the_one_below() {
    let f = Fixture::new();
    f.write("user/larder/config.toml", "capacity = \"1GiB\"\nlog = \"info\"\nhome = \"data\"\n");
    f.write("proj/.larder/config.toml", "# project\n\ncapacity = 4096\n");
    let mut s = f.sources();
    check(
        &f,
        s.clone(),
        "home=$T/user/larder/data <- $T/user/larder/config.toml:3\n\
         capacity=4.0 KiB (4096 bytes) <- $T/proj/.larder/config.toml:3\n\
         log=info <- $T/user/larder/config.toml:2\n\
         verify_reads=false <- default\n\
         dirs=$T/user/larder/data/dirs <- default\nhttp_timeout=30s <- default\nhttp_retries=4 <- default\n\
         coordinator=sqlite ($T/user/larder/data/state-v1.sqlite) <- default\ncoordinator_lease=30s <- default",
    );
    s.env.push(("LARDER_CAPACITY".into(), "10GB".into()));
    s.env.push(("LARDER_HOME".into(), "h".into()));
    check(
        &f,
        s.clone(),
        "home=$T/proj/h <- env LARDER_HOME\n\
         capacity=9.3 GiB (10000000000 bytes) <- env LARDER_CAPACITY\n\
         log=info <- $T/user/larder/config.toml:2\n\
         verify_reads=false <- default\n\
         dirs=$T/proj/h/dirs <- default\nhttp_timeout=30s <- default\nhttp_retries=4 <- default\n\
         coordinator=sqlite ($T/proj/h/state-v1.sqlite) <- default\ncoordinator_lease=30s <- default",
    );
    let s = s.flag("capacity", "1MiB", "--capacity");
    check(
        &f,
        s,
        "home=$T/proj/h <- env LARDER_HOME\n\
         capacity=1.0 MiB (1048576 bytes) <- flag --capacity\n\
         log=info <- $T/user/larder/config.toml:2\n\
         verify_reads=false <- default\n\
         dirs=$T/proj/h/dirs <- default\nhttp_timeout=30s <- default\nhttp_retries=4 <- default\n\
         coordinator=sqlite ($T/proj/h/state-v1.sqlite) <- default\ncoordinator_lease=30s <- default",
    );
}

#[test]
fn project_relative_home_is_relative_to_the_project() {
    let f = Fixture::new();
    f.write("proj/.larder/config.toml", "home = \"cache\"\n");
    check(
        &f,
        f.sources(),
        "home=$T/proj/cache <- $T/proj/.larder/config.toml:1\n\
         capacity=20.0 GiB (21474836480 bytes) <- default\nlog=warn <- default\nverify_reads=false <- default\n\
         dirs=$T/proj/cache/dirs <- default\nhttp_timeout=30s <- default\nhttp_retries=4 <- default\n\
         coordinator=sqlite ($T/proj/cache/state-v1.sqlite) <- default\ncoordinator_lease=30s <- default",
    );
}

#[test]
fn unknown_key_names_file_and_line() {
    let f = Fixture::new();
    f.write("proj/.larder/config.toml", "capacity = \"1GiB\"\n\ncapasity = \"2GiB\"\n");
    check(
        &f,
        f.sources(),
        "error: $T/proj/.larder/config.toml:3: unknown key `capasity` (did you mean `capacity`?); known keys are home, capacity, log, verify_reads, dirs, http_timeout, http_retries, coordinator, coordinator_lease and [[remote]] tables",
    );
    // Nothing near: no guess.
    f.write("proj/.larder/config.toml", "colour = \"blue\"\n");
    check(
        &f,
        f.sources(),
        "error: $T/proj/.larder/config.toml:1: unknown key `colour`; known keys are home, capacity, log, verify_reads, dirs, http_timeout, http_retries, coordinator, coordinator_lease and [[remote]] tables",
    );
    f.write("proj/.larder/config.toml", "verify-reads = true\n");
    let got = render(&f, Config::load(&f.sources()));
    assert!(got.contains("(did you mean `verify_reads`?)"), "{got}");
}

#[test]
fn a_single_bracketed_remote_says_to_write_two() {
    let f = Fixture::new();
    f.write(
        "user/larder/config.toml",
        "capacity = \"1GiB\"\n\n[remote]\nname = \"team\"\nurl = \"http://cache:8000\"\n",
    );
    check(
        &f,
        f.sources(),
        "error: $T/user/larder/config.toml:3: `[remote]` is one table, but remotes are a list: write `[[remote]]`, with two brackets, above each remote",
    );
}

#[test]
fn values_of_the_wrong_kind_say_what_the_key_takes() {
    let f = Fixture::new();
    f.write("user/larder/config.toml", "log = 3\n");
    check(&f, f.sources(), "error: $T/user/larder/config.toml:1: log takes text, not integer");
    f.write("user/larder/config.toml", "verify_reads = 1\n");
    check(
        &f,
        f.sources(),
        "error: $T/user/larder/config.toml:1: verify_reads takes true, false or text, not integer",
    );
}

#[test]
fn what_remotes_take_from_the_environment_is_shown_without_secrets() {
    let f = Fixture::new();
    let mut s = f.sources();
    s.environment = Environment::from_vars([
        ("AWS_REGION", "eu-west-1".to_string()),
        ("LARDER_PASSWORD", "s3cret".to_string()),
        ("HOME", "/home/a".to_string()),
    ]);
    let config = Config::load(&s).expect("load");
    assert_eq!(config.env.aws_region(), Some("eu-west-1"));
    let got = render(&f, Ok(config));
    assert!(
        got.ends_with(
            "AWS_REGION=eu-west-1 <- env AWS_REGION\nLARDER_PASSWORD=(set) <- env LARDER_PASSWORD"
        ),
        "{got}"
    );
    assert!(!got.contains("s3cret") && !got.contains("/home/a"), "{got}");
    // `~/` in a path is the environment's HOME.
    s.env.push(("LARDER_DIRS".into(), "~/scratch".into()));
    let config = Config::load(&s).expect("load");
    assert_eq!(config.dirs, [PathBuf::from("/home/a/scratch")]);
}

#[test]
fn malformed_values_name_their_origin() {
    let f = Fixture::new();
    let mut s = f.sources();
    s.env.push(("LARDER_CAPACITY".into(), "lots".into()));
    check(
        &f,
        s,
        "error: capacity (env LARDER_CAPACITY): malformed size `lots`: write a number and a unit, like 20GiB, 10GB, 512MiB or 4096",
    );
    f.write("user/larder/config.toml", "capacity = [1]\n");
    let got = render(&f, Config::load(&f.sources()));
    assert!(got.starts_with("error: $T/user/larder/config.toml:1: "), "{got}");
    f.write("user/larder/config.toml", "verify_reads = \"sometimes\"\n");
    let got = render(&f, Config::load(&f.sources()));
    assert_eq!(
        got,
        "error: verify_reads ($T/user/larder/config.toml:1): `sometimes` is not true or false"
    );
    f.write("user/larder/config.toml", "dirs = [\"/a\", \"b\"]\n");
    let got = render(&f, Config::load(&f.sources()));
    assert!(got.contains("dirs=/a:$T/user/larder/b <- $T/user/larder/config.toml:1"), "{got}");
    f.write("user/larder/config.toml", "dirs = \":\"\n");
    let got = render(&f, Config::load(&f.sources()));
    assert!(got.contains("names no folder"), "{got}");
    f.write("user/larder/config.toml", "capacity = \n");
    let got = render(&f, Config::load(&f.sources()));
    assert!(got.starts_with("error: $T/user/larder/config.toml:1: "), "{got}");
}

#[test]
fn download_settings() {
    let f = Fixture::new();
    f.write("user/larder/config.toml", "http_timeout = \"2m\"\nhttp_retries = 7\n");
    let config = Config::load(&f.sources()).expect("load");
    assert_eq!(config.http.timeout, std::time::Duration::from_secs(120));
    assert_eq!(config.http.retries, 7);
    let mut s = f.sources();
    s.env.push(("LARDER_HTTP_TIMEOUT".into(), "0s".into()));
    check(
        &f,
        s,
        "error: http_timeout (env LARDER_HTTP_TIMEOUT): `0s` is not a duration; write it like 30s or 2m",
    );
    let mut s = f.sources();
    s.env.push(("LARDER_HTTP_RETRIES".into(), "many".into()));
    check(
        &f,
        s,
        "error: http_retries (env LARDER_HTTP_RETRIES): `many` is not a number of retries, like 4",
    );
}

#[test]
fn remotes_are_tables_in_order() {
    let f = Fixture::new();
    f.write(
        "user/larder/config.toml",
        "[[remote]]\nname = \"team\"\nurl = \"http://alice@cache:8000\"\nmode = \"write-through\"\n\n[[remote]]\nname = \"mirror\"\nurl = \"https://mirror\"\nmode = \"read-only\"\n",
    );
    let config = Config::load(&f.sources()).expect("load");
    let names: Vec<&str> = config.remotes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["team", "mirror"]);
    assert_eq!(config.remotes[1].mode, crate::remote::RemoteMode::ReadOnly);
    let got = render(&f, Config::load(&f.sources()));
    assert!(
        got.contains(
            "remote=team http://alice@cache:8000 (write-through) <- $T/user/larder/config.toml:1"
        ),
        "{got}"
    );
    assert!(
        got.contains("remote=mirror https://mirror (read-only) <- $T/user/larder/config.toml:6"),
        "{got}"
    );
    f.write(
        "user/larder/config.toml",
        "[[remote]]\nname = \"a\"\nurl = \"http://x\"\nmode = \"sometimes\"\n",
    );
    let got = render(&f, Config::load(&f.sources()));
    assert!(
        got.starts_with("error: $T/user/larder/config.toml:4: unknown variant `sometimes`"),
        "{got}"
    );
    f.write("user/larder/config.toml", "[[remote]]\nname = \"a\"\nurl = \"http://x\"\n[[remote]]\nname = \"a\"\nurl = \"http://y\"\n");
    let got = render(&f, Config::load(&f.sources()));
    assert!(got.contains("a second remote named a; give each its own name"), "{got}");
}

#[test]
fn a_redis_coordinator_is_shown_without_its_password() {
    let f = Fixture::new();
    f.write(
        "proj/.larder/config.toml",
        "coordinator = \"redis://alice:s3cret@redis.internal:6379/0\"\ncoordinator_lease = \"2s\"\n",
    );
    let config = Config::load(&f.sources()).expect("load");
    assert_eq!(config.coordinator, "redis://alice:s3cret@redis.internal:6379/0");
    assert_eq!(config.coordinator_lease, std::time::Duration::from_secs(2));
    let shown: Vec<String> =
        config.settings.iter().map(|s| format!("{}={}", s.key, s.value)).collect();
    assert!(
        shown.contains(&"coordinator=redis://alice:***@redis.internal:6379/0".to_string()),
        "{shown:?}"
    );
    assert!(!format!("{shown:?}").contains("s3cret"));
    // A value that is not a coordinator is refused without repeating its password.
    let mut s = f.sources();
    s.env.push(("LARDER_COORDINATOR".into(), "http://bob:hunter2@redis.internal".into()));
    let err = Config::load(&s).expect_err("refused").to_string();
    assert!(
        err.contains("coordinator (env LARDER_COORDINATOR)") && !err.contains("hunter2"),
        "{err}"
    );
}
