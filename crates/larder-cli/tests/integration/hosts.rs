//! Test hosts on this one machine: each is a network namespace with its own
//! address on a shared bridge, and its own PID, UTS and mount namespaces (so
//! it has its own host name, cannot see another host's processes, and reads
//! its own `/proc`). Services every host reaches (Redis, an origin server)
//! run in the bridge's namespace. A host can be killed (every process in it
//! dies at once, as when a machine loses power) or cut off (its link goes
//! down). Needs root, as the test command runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::util::wait_for;

static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// A bridge and the hosts on it; everything is torn down on drop.
pub struct Network {
    /// Prefix of every namespace and link name of this network.
    tag: String,
    /// The first three octets of its /24.
    subnet: String,
    /// The namespace holding the bridge and the services.
    core: String,
    pub hosts: Vec<Host>,
}

/// One test host.
pub struct Host {
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
        // SAFETY: kill with a pid we started and a valid signal; the PID
        // namespace dies with its init, taking every process in it.
        unsafe {
            libc::kill(self.init_pid as i32, libc::SIGKILL);
        }
        let _ = self.init.wait();
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

#[test]
fn hosts_have_their_own_names_processes_and_addresses_and_can_be_cut_off_and_killed() {
    let mut net = Network::new(2);
    let say = |mut cmd: Command| {
        let out = cmd.output().expect("run on a host");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for host in &net.hosts {
        assert_eq!(say(host.command("hostname")), host.name);
        let mut addrs = host.command("hostname");
        addrs.arg("-I");
        let addrs = say(addrs);
        assert_eq!(addrs, host.addr, "{}", host.name);
    }
    // A process of one host is not visible from the other.
    let mut sleeper = net.hosts[0]
        .bash("sleep 60 & echo $!; wait", &[])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sleeper.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("read pid");
    let pid = line.trim();
    assert_eq!(say(net.hosts[0].bash(&format!("test -d /proc/{pid} && echo seen"), &[])), "seen");
    assert_eq!(
        say(net.hosts[1].bash(&format!("test -d /proc/{pid} || echo unseen"), &[])),
        "unseen"
    );
    // Both reach a service on the bridge, until cut off.
    let mut service = net
        .service_command("/usr/bin/python3")
        .args(["-m", "http.server", "--bind", &net.service_addr(), "8765"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a service");
    let reaches = |h: &Host| {
        let probe = format!("exec 3<>/dev/tcp/{}/8765", net.service_addr());
        let mut probe_cmd = h.command("timeout");
        probe_cmd.args(["2", "bash", "-c", &probe]).stderr(Stdio::null());
        probe_cmd.status().expect("probe").success()
    };
    wait_for("the service", || reaches(&net.hosts[0]));
    assert!(reaches(&net.hosts[1]));
    net.hosts[1].cut_off();
    assert!(!reaches(&net.hosts[1]));
    net.hosts[1].reconnect();
    wait_for("the link to come back", || reaches(&net.hosts[1]));
    let _ = service.kill();
    let _ = service.wait();
    // Killing a host ends every process in it.
    net.hosts[0].kill();
    assert!(!net.hosts[0].is_up());
    let status = sleeper.wait().expect("wait");
    assert!(!status.success());
}
