//! A real S3 server for the tests: Garage, single node, on free ports of
//! 127.0.0.1, with one bucket and one key that may use it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Garage.
pub struct Garage {
    child: Child,
    config: PathBuf,
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    /// The bucket made for the test.
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

/// The garage binary the test command installed.
fn binary() -> PathBuf {
    let path = std::env::var_os("TEST_TOOL_GARAGE").expect(
        "TEST_TOOL_GARAGE names the garage binary; run the tests with scripts/test, which installs it",
    );
    PathBuf::from(path)
}

/// Three distinct free ports: the listeners are held together so the system
/// cannot hand out one port twice.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<_> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let port = |i: usize| listeners[i].local_addr().expect("addr").port();
    [port(0), port(1), port(2)]
}

impl Garage {
    /// Starts Garage in a folder under `root`, with the bucket `larder`.
    pub fn start(root: &Path) -> Garage {
        // A port found free can be taken by another test before Garage binds
        // it (Garage then panics with "Address already in use"): such a start
        // is tried again on other ports.
        let mut garage = None;
        for attempt in 1..=5 {
            match Garage::launch(&root.join(format!("garage-{attempt}"))) {
                Ok(started) => {
                    garage = Some(started);
                    break;
                }
                Err(log) if attempt < 5 && log.contains("Address already in use") => continue,
                Err(log) => panic!("garage did not start: {log}"),
            }
        }
        let mut garage = garage.expect("garage started");
        let id = garage.ok(&["node", "id", "-q"]);
        let node = id.trim().split('@').next().expect("node id").to_string();
        garage.ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.ok(&["layout", "apply", "--version", "1"]);
        garage.ok(&["bucket", "create", "larder"]);
        garage.ok(&["key", "create", "larder-key"]);
        let info = garage.ok(&["key", "info", "larder-key", "--show-secret"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in {info}"))
        };
        garage.key_id = field("Key ID:");
        garage.secret = field("Secret key:");
        garage.ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            "larder",
            "--key",
            "larder-key",
        ]);
        garage.wait_for_s3();
        garage
    }

    /// Starts one Garage server in `dir` and waits for it to answer, or
    /// returns its log when it exits first.
    fn launch(dir: &Path) -> Result<Garage, String> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let [s3, rpc, admin] = free_ports();
        let secret: String =
            (0..32).map(|i| format!("{:02x}", (i * 37 + s3 as usize) % 256)).collect();
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"test-token\"\n",
                d = dir.display()
            ),
        )
        .expect("config");
        let child = spawn(&config);
        let mut garage = Garage {
            child,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            bucket: "larder".into(),
            key_id: String::new(),
            secret: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !garage.cli(&["status"]).status.success() {
            if garage.child.try_wait().expect("garage's status").is_some() {
                return Err(garage.log());
            }
            assert!(Instant::now() < deadline, "garage did not start: {}", garage.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(garage)
    }

    /// Waits until the S3 API accepts connections.
    fn wait_for_s3(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.endpoint.trim_start_matches("http://")).is_err() {
            assert!(Instant::now() < deadline, "garage's S3 API did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the server again after [`Garage::stop`], with its data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.config);
        self.wait_for_s3();
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary()).arg("-c").arg(&self.config).args(args).output().expect("garage")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        let dir = self.config.parent().unwrap_or(Path::new("."));
        std::fs::read_to_string(dir.join("garage.log")).unwrap_or_default()
    }

    /// The AWS variables a client needs, to set on a command.
    pub fn env(&self) -> [(&'static str, String); 4] {
        [
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", "garage".to_string()),
            // The AWS command line (v1) reads only this one.
            ("AWS_DEFAULT_REGION", "garage".to_string()),
        ]
    }

    /// Stops the server (the S3 API goes down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `garage server` with `config`, logging beside it.
fn spawn(config: &Path) -> Child {
    let dir = config.parent().unwrap_or(Path::new("."));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("garage.log"))
        .expect("log");
    Command::new(binary())
        .arg("-c")
        .arg(config)
        .arg("server")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start garage")
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
