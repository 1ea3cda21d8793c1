//! Configuration layers, `larder config`, and errors in config files.

use crate::util::TestDir;

fn squeeze(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn config_shows_each_value_and_its_origin() {
    let t = TestDir::new();
    t.file("user/.config/larder/config.toml", "capacity = \"5GiB\"\nlog = \"info\"\n");
    t.file("work/.larder/config.toml", "# for this project\ncapacity = \"1GiB\"\n");
    let out = t.run_with(t.command().arg("config").env("LARDER_LOG", "debug")).ok();
    // Column widths depend on the test folder's name; compare with runs of spaces squeezed.
    insta::assert_snapshot!(squeeze(&out), @r"
    KEY VALUE FROM
    home $T/home env LARDER_HOME
    capacity 1.0 GiB (1073741824 bytes) $T/work/.larder/config.toml:2
    log debug env LARDER_LOG
    verify_reads false default
    dirs $T/home/dirs default
    http_timeout 30s default
    http_retries 4 default
    coordinator sqlite ($T/home/state-v1.sqlite) default
    coordinator_lease 30s default
    ");
    let out = t.run(&["--capacity", "3MB", "config"]).ok();
    assert!(squeeze(&out).contains("2.9 MiB (3000000 bytes) flag --capacity"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&t.run(&["config", "--json"]).ok()).expect("json");
    assert_eq!(json[1]["key"], "capacity");
    assert_eq!(json[1]["origin"], "$T/work/.larder/config.toml:2");
}

#[test]
fn capacity_from_the_environment_is_enforced() {
    let t = TestDir::new();
    let f = t.file("f", vec![0u8; 2000]);
    let err = t
        .run_with(
            t.command().args(["put", f.to_str().expect("utf-8")]).env("LARDER_CAPACITY", "1000"),
        )
        .fails(4);
    assert!(err.contains("larger than the store's whole capacity (1000 B)"), "{err}");
}

#[test]
fn default_home_is_the_xdg_cache_folder() {
    let t = TestDir::new();
    let out = t.run_with(t.command().arg("config").env_remove("LARDER_HOME")).ok();
    assert!(squeeze(&out).contains("home $T/user/.cache/larder default"), "{out}");
    let out = t
        .run_with(
            t.command()
                .arg("config")
                .env_remove("LARDER_HOME")
                .env("XDG_CACHE_HOME", t.path().join("xdg")),
        )
        .ok();
    assert!(out.contains("$T/xdg/larder"), "{out}");
}

#[test]
fn an_unknown_key_names_the_file_and_line() {
    let t = TestDir::new();
    t.file("work/.larder/config.toml", "capacity = \"1GiB\"\ncapasity = \"2GiB\"\n");
    let err = t.run(&["stats"]).fails(2);
    insta::assert_snapshot!(err, @"larder: error: $T/work/.larder/config.toml:2: unknown key `capasity` (did you mean `capacity`?); known keys are home, capacity, log, verify_reads, dirs, http_timeout, http_retries, coordinator, coordinator_lease and [[remote]] tables");
    assert!(!t.home.exists(), "a bad config touches nothing");
}

#[test]
fn malformed_sizes_are_errors() {
    let t = TestDir::new();
    let err = t.run(&["stats", "--capacity", "lots"]).fails(2);
    assert_eq!(
        err,
        "larder: error: capacity (flag --capacity): malformed size `lots`: write a number and a unit, like 20GiB, 10GB, 512MiB or 4096\n"
    );
    let err = t.run(&["gc", "--to", "12XB"]).fails(2);
    assert!(err.contains("malformed size `12XB`"), "{err}");
}

#[test]
fn a_misspelt_environment_variable_is_warned_about() {
    let t = TestDir::new();
    let run = t.run_with(t.command().arg("stats").env("LARDER_CAPACTY", "1GiB"));
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("LARDER_CAPACTY is not a larder setting and is ignored (known: LARDER_HOME, LARDER_CAPACITY, LARDER_LOG, LARDER_VERIFY_READS, LARDER_DIRS, LARDER_HTTP_TIMEOUT, LARDER_HTTP_RETRIES, LARDER_COORDINATOR, LARDER_COORDINATOR_LEASE)"),
        "{run:#?}"
    );
}
