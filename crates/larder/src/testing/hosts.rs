//! Test hosts on this one machine: each is a network namespace with its own
//! address on a shared bridge, and its own PID, UTS and mount namespaces (so
//! it has its own host name, cannot see another host's processes, and reads
//! its own `/proc`). Services every host reaches (Redis, an origin server)
//! run in the bridge's namespace. A host can be killed (every process in it
//! dies at once, as when a machine loses power) or cut off (its link goes
//! down). Needs root, as the test command runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Waits up to 60 s for `done`, naming `what` if it never comes.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bridge and the hosts on it; everything is torn down on drop.
pub struct Network {
    /// Prefix of every namespace and link name of this network.
    tag: String,
    /// The first three octets of its /24.
    subnet: String,
    /// The namespace holding the bridge and the services.
    core: String,
    /// Its hosts: `host1`, `host2`, ….
    pub hosts: Vec<Host>,
}

/// One test host.
pub struct Host {
    /// Its host name.
    pub name: String,
    /// Its address on the bridge.
    pub addr: String,
    netns: String,
    /// The host's init (pid 1 of its PID namespace), as seen from here.
    init: Child,
    init_pid: u32,
    /// The bridge's end of its link.
    link: String,
    core: String,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e}; the multi-host tests need iproute2 and util-linux")
    });
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Network {
    /// A bridge with `count` hosts named `host1`, `host2`, ….
    pub fn new(count: usize) -> Network {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the multi-host tests make network namespaces, so they run as root (as scripts/test does)"
        );
        let n = NETWORKS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("lt{}n{n}", pid % 100_000);
        let subnet = format!("10.{}.{}", 100 + pid % 100, (n % 250) + 1);
        let core = format!("{tag}c");
        run("ip", &["netns", "add", &core]);
        let in_core = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &core, "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        in_core(&["link", "add", "br0", "type", "bridge"]);
        in_core(&["addr", "add", &format!("{subnet}.1/24"), "dev", "br0"]);
        in_core(&["link", "set", "br0", "up"]);
        in_core(&["link", "set", "lo", "up"]);
        let mut network = Network { tag, subnet, core, hosts: Vec::new() };
        for i in 1..=count {
            let host = network.add_host(i);
            network.hosts.push(host);
        }
        network
    }

    /// The address services listen on, reachable from every host.
    pub fn service_addr(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// The command and arguments that run a program in the bridge's
    /// namespace, for what starts its own processes (`RedisServer::start_by`).
    pub fn service_launcher(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.core]
    }

    /// A command run in the bridge's namespace (where services run).
    pub fn service_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.core]).arg(program).stdin(Stdio::null());
        cmd
    }

    fn add_host(&self, i: usize) -> Host {
        let name = format!("host{i}");
        let netns = format!("{}h{i}", self.tag);
        let link = format!("{}v{i}", self.tag);
        let addr = format!("{}.{}", self.subnet, 10 + i);
        run("ip", &["netns", "add", &netns]);
        // One end on the bridge, the other the host's eth0.
        run("ip", &["link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &netns]);
        run("ip", &["link", "set", &link, "netns", &self.core]);
        let core = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.core, "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        core(&["link", "set", &link, "master", "br0"]);
        core(&["link", "set", &link, "up"]);
        let host_ip = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns, "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        host_ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        host_ip(&["link", "set", "eth0", "up"]);
        host_ip(&["link", "set", "lo", "up"]);
        // The host's init: pid 1 of a new PID namespace with its own host name
        // and /proc. bash reaps the orphans it adopts.
        let mut init = Command::new("ip")
            .args(["netns", "exec", &netns, "unshare", "--pid", "--uts", "--mount", "--fork"])
            .args(["--mount-proc", "--kill-child", "bash", "-c"])
            .arg(format!("hostname {name}; while :; do sleep 3600 & wait; done"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start the host's init");
        let unshare = init.id();
        let mut init_pid = 0;
        wait_for("the host's init", || {
            init_pid = children(unshare).first().copied().unwrap_or(0);
            init_pid != 0 && hostname_of(init_pid).as_deref() == Some(name.as_str())
        });
        if let Ok(Some(status)) = init.try_wait() {
            panic!("the init of {name} ended: {status}");
        }
        Host { name, addr, netns, init, init_pid, link, core: self.core.clone() }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            host.kill();
            let _ = Command::new("ip").args(["netns", "del", &host.netns]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.core]).status();
    }
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn hostname_of(pid: u32) -> Option<String> {
    let out =
        Command::new("nsenter").args(["-t", &pid.to_string(), "-u", "hostname"]).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Host {
    /// A command run on this host: in its network, PID, UTS and mount
    /// namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init_pid.to_string(), "-n", "-p", "-u", "-m", "--"])
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }

    /// A bash script run on this host, with `env` set.
    pub fn bash(&self, script: &str, env: &[(&str, &Path)]) -> Command {
        let mut cmd = self.command("bash");
        cmd.arg("-c").arg(script);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Kills every process of this host at once, as a power cut would.
    pub fn kill(&mut self) {
        // `unshare` is killed, and `--kill-child` kills the init with it: the
        // PID namespace dies with its init, taking every process in it.
        // (Killing the init first makes `unshare` print a spurious
        // "sigprocmask unblock failed" as it tries to pass SIGKILL on.)
        let _ = self.init.kill();
        let _ = self.init.wait();
        let init = format!("/proc/{}", self.init_pid);
        wait_for("the host's processes to end", || {
            match std::fs::read_to_string(format!("{init}/stat")) {
                // Gone, or a zombie waiting for whoever adopted it.
                Err(_) => true,
                Ok(stat) => stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            }
        });
    }

    /// Whether the host still runs.
    pub fn is_up(&mut self) -> bool {
        matches!(self.init.try_wait(), Ok(None))
    }

    /// Takes the host off the network (its processes keep running).
    pub fn cut_off(&self) {
        run("ip", &["netns", "exec", &self.core, "ip", "link", "set", &self.link, "down"]);
    }

    /// Puts it back on the network.
    pub fn reconnect(&self) {
        run("ip", &["netns", "exec", &self.core, "ip", "link", "set", &self.link, "up"]);
    }
}

/// Python's file server, sending at most 64 KiB per `argv[3]` seconds.
const FILE_SERVER: &str = r#"
import functools, http.server, sys, time
class Paced(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, out):
        pause = float(sys.argv[3])
        if pause == 0:
            return super().copyfile(source, out)
        while True:
            chunk = source.read(65536)
            if not chunk:
                return
            out.write(chunk)
            out.flush()
            time.sleep(pause)
handler = functools.partial(Paced, directory=sys.argv[2])
http.server.ThreadingHTTPServer((sys.argv[1], 8080), handler).serve_forever()
"#;

/// An origin every host reaches: Python's file server on the bridge,
/// logging each request it answers. Stopped when dropped.
pub struct FileServer {
    child: Child,
    log: PathBuf,
    /// `http://ADDR:8080`.
    pub url: String,
}

impl Network {
    /// Serves `dir` on the bridge at 64 KiB per `pause` seconds (0: at full
    /// speed), logging to `log`; returned once `host` reaches it.
    pub fn file_server(&self, dir: &Path, pause: f64, log: &Path) -> FileServer {
        let addr = self.service_addr();
        let child = self
            .service_command("python3")
            .args(["-c", FILE_SERVER, &addr])
            .arg(dir)
            .arg(pause.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("the file server's log"))
            .spawn()
            .expect("python3, for the file server");
        let probe = format!("exec 3<>/dev/tcp/{addr}/8080");
        let host = &self.hosts[0];
        wait_for("the file server to listen", || {
            host.bash(&probe, &[]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
        });
        FileServer { child, log: log.to_path_buf(), url: format!("http://{addr}:8080") }
    }
}

impl FileServer {
    /// The GET requests for `path` it answered.
    pub fn gets(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().filter(|l| l.contains(&format!("\"GET {path} "))).count()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
