//! A real OpenSSH server on a loopback port, with generated host and user
//! keys, and an ssh client configuration naming it by an alias.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    /// An ssh configuration file defining `alias`.
    pub config: PathBuf,
    pub alias: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (apt install openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Sshd {
    /// Starts sshd with its files under `dir`.
    pub fn start(dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir).expect("mkdir");
        let host_key = dir.join("host_key");
        let user_key = dir.join("id");
        keygen(&host_key);
        keygen(&user_key);
        std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        let port = free_port();
        let sshd_config = dir.join("sshd_config");
        std::fs::write(
            &sshd_config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile none\nPermitRootLogin prohibit-password\nMaxStartups 100\n\
                 MaxSessions 100\nLogLevel ERROR\n",
                host_key.display(),
                dir.join("authorized_keys").display()
            ),
        )
        .expect("sshd_config");
        // As root, sshd wants its privilege separation folder.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&sshd_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("sshd.log")).expect("log")))
            .spawn()
            .expect("start /usr/sbin/sshd (apt install openssh-server)");
        let alias = "testhost".to_string();
        let config = dir.join("ssh_config");
        std::fs::write(
            &config,
            format!(
                "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {}\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking accept-new\n  \
                 LogLevel ERROR\n",
                whoami(),
                user_key.display(),
                dir.join("known_hosts").display()
            ),
        )
        .expect("ssh_config");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {port}: see {}",
                dir.join("sshd.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sshd { child, config, alias, port }
    }

    /// `ssh -F config alias ARGS…`, as a person would type it.
    pub fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(&self.config).args(["-o", "BatchMode=yes", "-T", &self.alias]);
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
