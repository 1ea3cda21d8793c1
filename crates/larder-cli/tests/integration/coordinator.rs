//! Coordination through a real Redis: the host agent that larder starts
//! detached to renew this host's leases.

use std::path::Path;
use std::time::{Duration, Instant};

use larder::coord::{
    Coordinator, Holder, HostAgent, NewDir, RedisCoordinator, RedisOptions, now_ms,
};
use larder::holder::ProcessId;
use larder::testing::RedisServer;

use crate::util::{LARDER, TestDir};

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of `larder coordinator-agent` processes of the home `home`.
fn agents_of(home: &Path) -> Vec<u32> {
    let wanted = format!("LARDER_HOME={}", home.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let is_agent = cmdline.split(|&b| b == 0).any(|a| a == b"coordinator-agent");
        let of_home = environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes());
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')));
        if is_agent && of_home && !zombie {
            found.push(pid);
        }
    }
    found
}

/// When the lease of `holder`'s hold on `a` ends (server time, ms).
fn lease_end(server: &RedisServer, holder: &Holder) -> Option<i64> {
    server.query(&["ZSCORE", "larder:{dir:a}:leases", &holder.key()]).expect("zscore")
}

#[test]
fn the_host_agent_starts_detached_renews_holds_and_exits_when_nothing_is_held() {
    let t = TestDir::new();
    std::fs::create_dir_all(&t.home).expect("home");
    let server = RedisServer::start();
    let options = RedisOptions {
        lease: Duration::from_millis(300),
        home: Some(t.home.clone()),
        agent: HostAgent::Command(vec![LARDER.into(), "coordinator-agent".into()]),
        ..RedisOptions::default()
    };
    let coord = RedisCoordinator::connect(&server.url(), options.clone()).expect("connect");
    let mut shell = std::process::Command::new("sleep").arg("600").spawn().expect("sleep");
    let holder = Holder::process(ProcessId::of_pid(shell.id()).expect("running"));
    let new = NewDir { path: t.path().join("a").display().to_string(), ..NewDir::default() };
    coord.attach("a", &holder, &new).expect("attach");
    let first = lease_end(&server, &holder).expect("a lease");

    // Holding something, this host gets one agent, which renews the hold.
    wait_until("an agent runs", || agents_of(&t.home).len() == 1);
    wait_until("the agent renewed the hold", || {
        lease_end(&server, &holder).is_some_and(|end| end > first + 300)
    });
    // Another hold finds the agent running and starts no other.
    let token = Holder::Token { id: "t".into(), expires_at: now_ms() + 600_000 };
    coord.attach("a", &token, &new).expect("attach");
    assert_eq!(agents_of(&t.home).len(), 1);

    // An agent killed while its host holds something is started again by
    // the next larder process of this host that reaches the coordinator.
    let killed = agents_of(&t.home)[0];
    std::process::Command::new("kill").args(["-9", &killed.to_string()]).status().expect("kill");
    wait_until("the agent died", || !agents_of(&t.home).contains(&killed));
    let again = RedisCoordinator::connect(&server.url(), options.clone()).expect("connect");
    wait_until("another agent runs", || agents_of(&t.home).len() == 1);
    drop(again);

    // The holder dies: the agent releases its hold and, with nothing of
    // this host held, exits.
    shell.kill().expect("kill");
    shell.wait().expect("wait");
    wait_until("the agent exited", || agents_of(&t.home).is_empty());
    let record = coord.get("a").expect("get").expect("record");
    assert_eq!(record.holders.len(), 1, "only the token holds it: {:?}", record.holders);
}

impl TestDir {
    /// Writes the user's config file with `body`.
    fn user_config(&self, body: &str) {
        self.file("user/.config/larder/config.toml", body);
    }
}

/// The names of the directory records a Redis holds.
fn redis_dirs(server: &RedisServer) -> Vec<String> {
    let mut names: Vec<String> = server.query(&["HKEYS", "larder:{coord}:dirs"]).expect("hkeys");
    names.sort();
    names
}

#[test]
fn use_unuse_and_dir_ls_coordinate_at_the_redis_config_toml_names() {
    let t = TestDir::new();
    let server = RedisServer::start();
    t.user_config(&format!("coordinator = \"{}\"\n", server.url()));
    let out = t
        .script(
            r#"set -e
            p=$($L use --name shared)
            test -d "$p"
            $L -v dir ls
            $L config
            $L unuse --name shared
            test ! -e "$p" && echo gone"#,
        )
        .ok();
    assert!(out.contains(&format!("coordinator: {}", server.url())), "{out}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let row = out.lines().find(|l| l.starts_with("shared")).expect("a row for shared");
    assert!(row.contains(&format!("on {}", host.trim())), "the holder's host: {out}");
    assert!(
        out.lines().any(|l| l.starts_with("coordinator") && l.contains(&server.url())),
        "{out}"
    );
    assert!(out.ends_with("gone\n"), "{out}");
    assert!(redis_dirs(&server).is_empty());
    // Nothing was recorded in the home's own database.
    assert!(!t.home.join("state-v1.sqlite").exists());
}

#[test]
fn the_coordinator_from_the_environment_is_used_and_its_password_never_shown() {
    let t = TestDir::new();
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    let url = format!("{}?pass=s3cret-pw", server.url());
    let held = t.run_with(
        t.command().args(["use", "--name", "envdir", "--", "true"]).env("LARDER_COORDINATOR", &url),
    );
    assert_eq!(held.code, 0, "{held:?}");
    let config = t.run_with(t.command().arg("config").env("LARDER_COORDINATOR", &url)).ok();
    assert!(config.contains("coordinator") && config.contains("pass=***"), "{config}");
    assert!(!config.contains("s3cret-pw"), "{config}");

    // REDISCLI_AUTH gives the password a URL lacks; it is never shown.
    let config = t.run_with(
        t.command()
            .args(["-v", "dir", "ls"])
            .env("LARDER_COORDINATOR", server.url())
            .env("REDISCLI_AUTH", "s3cret-pw"),
    );
    assert_eq!(config.code, 0, "{config:?}");
    let shown = t.run_with(
        t.command().arg("config").env("LARDER_COORDINATOR", &url).env("REDISCLI_AUTH", "s3cret-pw"),
    );
    assert!(!shown.stdout.contains("s3cret-pw"), "{shown:?}");

    // A wrong password: refused, exit 5, and the password is not printed.
    let wrong = format!("{}?pass=wrong-pw", server.url());
    let refused =
        t.run_with(t.command().args(["dir", "ls"]).env("LARDER_COORDINATOR", &wrong)).fails(5);
    assert!(refused.contains("refused larder") && !refused.contains("wrong-pw"), "{refused}");
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");
}

#[test]
fn the_password_of_a_redis_over_tcp_comes_from_netrc() {
    let t = TestDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let _server = RedisServer::start_with(&[
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--requirepass",
        "from-netrc",
    ]);
    t.file("user/.netrc", "machine 127.0.0.1 login default password from-netrc\n");
    let url = format!("redis://default@127.0.0.1:{port}/0");
    let out = t.run_with(
        t.command().args(["use", "--name", "tcp", "--", "true"]).env("LARDER_COORDINATOR", &url),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("from-netrc"));
}

#[test]
fn a_redis_that_is_down_fails_coordinating_commands_with_exit_6_and_leaves_the_store_working() {
    let t = TestDir::new();
    let mut server = RedisServer::start();
    let url = format!("{}?pass=hidden-pw", server.url());
    server.kill();
    t.user_config(&format!("coordinator = \"{url}\"\n"));
    for args in [
        &["use", "--name", "down"][..],
        &["unuse", "--name", "down"],
        &["dir", "ls"],
        &["pool", "status"],
    ] {
        let err = t.run(args).fails(6);
        assert_eq!(err.trim().lines().count(), 1, "one line for {args:?}: {err}");
        assert!(err.contains("cannot reach the coordinator at unix://"), "{args:?}: {err}");
        assert!(err.contains("pass=***") && !err.contains("hidden-pw"), "{args:?}: {err}");
    }
    assert!(!t.home.join("dirs").join("down").exists(), "nothing was made");
    // The store needs no coordinator.
    let digest = t.put("blob", b"works without redis");
    let got = t.run(&["get", &digest]).ok();
    assert_eq!(got, "works without redis");
}

#[test]
fn a_redis_that_evicts_keys_is_refused_with_the_setting_to_change() {
    let t = TestDir::new();
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    t.user_config(&format!("coordinator = \"{}\"\n", server.url()));
    for args in [&["use", "--name", "evicted"][..], &["dir", "ls"], &["pool", "status"]] {
        let err = t.run(args).fails(2);
        assert_eq!(err.trim().lines().count(), 1, "one line for {args:?}: {err}");
        assert!(err.contains("maxmemory-policy allkeys-lru"), "{args:?}: {err}");
        assert!(err.contains("set maxmemory-policy to noeviction"), "{args:?}: {err}");
    }
    assert!(!t.home.join("dirs").join("evicted").exists(), "nothing was made");
    let keys: Vec<String> = server.query(&["KEYS", "*"]).expect("keys");
    assert!(keys.is_empty(), "nothing was written: {keys:?}");
}

/// A CA, and a certificate it signed for 127.0.0.1 with its key, made by
/// openssl in `t`'s folder.
fn ca_and_server_certificate(t: &TestDir) -> [std::path::PathBuf; 3] {
    let dir = t.path().join("tls");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl (the test command installs it)");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            .iter()
            .chain(&["-subj", "/CN=larder test CA", "-keyout", "ca.key", "-out", "ca.pem"])
            .copied()
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext",
        "-out",
        "server.pem",
    ]);
    [dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key")]
}

#[test]
fn a_redis_over_tls_coordinates_and_a_certificate_not_trusted_is_named() {
    let t = TestDir::new();
    let [ca, cert, key] = ca_and_server_certificate(&t);
    let port = crate::sshd::free_port().to_string();
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_string();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &port,
        "--tls-cert-file",
        &path(&cert),
        "--tls-key-file",
        &path(&key),
        "--tls-ca-cert-file",
        &path(&ca),
        "--tls-auth-clients",
        "no",
    ]);
    t.user_config(&format!("coordinator = \"rediss://127.0.0.1:{port}/0\"\n"));
    let trusting = |args: &[&str]| {
        let mut cmd = t.command();
        cmd.args(args).env("SSL_CERT_FILE", &ca);
        t.run_with(&mut cmd)
    };
    trusting(&["use", "--name", "over-tls", "--holder", "h"]).ok();
    let listed = trusting(&["dir", "ls", "--json"]).ok();
    assert!(listed.contains("over-tls"), "{listed}");
    let keys: Vec<String> = server.query(&["KEYS", "*over-tls*"]).expect("keys");
    assert!(!keys.is_empty(), "the record is in the Redis behind TLS");
    // Without its CA, the server's certificate is refused, saying what to do.
    let err = t.run(&["dir", "ls"]).fails(5);
    assert!(err.contains("TLS certificate this host does not trust"), "{err}");
    assert!(err.contains("SSL_CERT_FILE"), "{err}");
}
