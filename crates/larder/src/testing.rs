//! What the library's tests and the command's integration tests share: real
//! servers, started per test. Built for tests and with the `testing`
//! feature, never into the program.

pub mod hosts;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real `redis-server` on a unix socket in a folder of its own, stopped
/// (SIGKILL) when dropped.
#[derive(Debug)]
pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    /// What runs `redis-server` (like `ip netns exec NS`), if anything.
    launcher: Vec<String>,
}

impl RedisServer {
    /// A server that keeps nothing on disk: a restart starts it empty.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "no"])
    }

    /// A server that writes every change to its append-only file before it
    /// answers: a restart, even after SIGKILL, keeps everything.
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// A server with `extra` arguments after larder's (`--save ''`, the
    /// socket, `noeviction`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_by(&[], extra)
    }

    /// A server started by `launcher` (a command that runs the rest of its
    /// arguments, like `ip netns exec NS` to serve another network), with
    /// `extra` arguments (like `--port 6379 --bind ADDR` to listen on TCP
    /// besides its socket).
    pub fn start_by(launcher: &[&str], extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("a folder for redis-server");
        let mut server = RedisServer {
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            launcher: launcher.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Kills it with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same socket and folder (so with what it
    /// persisted, if it persists).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command on a connection of its own.
    pub fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        self.query(args)
    }

    /// Runs one command on a connection of its own, reading its answer as a `T`.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let mut cmd = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("redis-server");
                cmd
            }
            None => Command::new("redis-server"),
        };
        cmd.args(["--port", "0", "--save", "", "--daemonize", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}); install it (scripts/test-tools does)")
        });
        self.child = Some(child);
        // Ready once it answers on its socket (a refusal without a password
        // is an answer; loading its data is not yet).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.command(&["PING"]) {
                Ok(_) => return,
                Err(e) if e.code().is_some_and(|c| c != "LOADING") => return,
                Err(_) => {}
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "redis-server did not answer within 30s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
