//! A folder per test, with a larder home inside, and a way to run the real
//! binary in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const LARDER: &str = env!("CARGO_BIN_EXE_larder");

/// A test's own folder: `home/` (LARDER_HOME), `user/` (HOME), `work/` (cwd).
pub struct TestDir {
    dir: tempfile::TempDir,
    pub home: PathBuf,
}

/// What a run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "expected success, got {self:#?}");
        self.stdout
    }

    /// Asserts the exit code and returns stderr.
    #[track_caller]
    pub fn fails(self, code: i32) -> String {
        assert_eq!(self.code, code, "expected exit {code}, got {self:#?}");
        assert_eq!(self.stderr.lines().count(), 1, "errors are one line: {self:#?}");
        self.stderr
    }
}

impl TestDir {
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new().prefix("larder-test").tempdir().expect("tempdir");
        let home = dir.path().join("home");
        for sub in ["user", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        TestDir { dir, home }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The real path of a path the binary printed (`$T/…`).
    pub fn real(&self, printed: &str) -> PathBuf {
        PathBuf::from(printed.trim().replace("$T", &self.path().display().to_string()))
    }

    pub fn work(&self) -> PathBuf {
        self.path().join("work")
    }

    /// Writes a file under the test folder and returns its path.
    pub fn file(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// The binary, with a clean environment pointing into this folder.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(LARDER);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path().join("user"))
            .env("LARDER_HOME", &self.home)
            .current_dir(self.work())
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(self.command().args(args))
    }

    pub fn run_with(&self, cmd: &mut Command) -> Run {
        let out = cmd.output().expect("run larder");
        let root = self.path().display().to_string();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).replace(&root, "$T"),
            stderr: String::from_utf8_lossy(&out.stderr).replace(&root, "$T"),
        }
    }

    /// Stores `contents` and returns the printed digest.
    pub fn put(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.file(name, contents);
        let path = path.to_str().expect("utf-8 path").to_string();
        self.run(&["put", &path]).ok().trim().to_string()
    }

    /// The stored file of a digest.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.home.join("store-v1/content/sha256").join(&hex[..2]).join(hex)
    }

    /// `larder verify --json`, parsed.
    pub fn verify(&self) -> serde_json::Value {
        let run = self.run(&["verify", "--json"]);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:#?}"))
    }

    /// Runs a bash script in the test's environment, with the binary as `$L`.
    pub fn script(&self, body: &str) -> Run {
        self.run_with(&mut self.bash(body))
    }

    /// A bash command for `body` in the test's environment, with the binary
    /// as `$L`, not yet started.
    pub fn bash(&self, body: &str) -> Command {
        let mut bash = Command::new("bash");
        bash.arg("-c").arg(body).env_clear();
        for (k, v) in self.command().get_envs() {
            if let Some(v) = v {
                bash.env(k, v);
            }
        }
        bash.env("L", LARDER).current_dir(self.work()).stdin(Stdio::null());
        bash
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args).ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

/// Deterministic bytes for tests.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The sha256 digest the library computes, for expectations.
pub fn digest_of(data: &[u8]) -> String {
    let mut h = larder::Hasher::new();
    h.update(data);
    h.finish().to_string()
}

/// Makes a stored blob writable and flips one byte of it.
pub fn flip_byte(path: &Path, at: usize) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut data = std::fs::read(path).expect("read blob");
    data[at] ^= 0x20;
    std::fs::write(path, data).expect("write blob");
}

/// Waits up to ten seconds for `done`.
#[track_caller]
pub fn wait_for(what: &str, done: impl FnMut() -> bool) {
    if !wait_until(std::time::Duration::from_secs(10), done) {
        panic!("timed out waiting for {what}");
    }
}

/// Polls `done` until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `pid-start` of a process that has ended, as larder names owners of
/// temporary files.
pub fn dead_owner() -> String {
    let mut child = Command::new("sleep").arg("60").spawn().expect("spawn sleep");
    let owner = larder::holder::ProcessId::of_pid(child.id()).expect("a running process");
    child.kill().expect("kill");
    child.wait().expect("wait");
    owner.to_string()
}

/// `pid-start` of this test process, which lives on.
pub fn live_owner() -> String {
    larder::holder::ProcessId::current().to_string()
}
