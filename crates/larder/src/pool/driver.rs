//! What each kind of source does to its instances: make them, run commands
//! on them, probe them and throw them away; and the `provision.d` and
//! `discard.d` hooks, run as run-parts runs them. Every command here runs in
//! its own process group under the source's timeout, with its standard output
//! sent to larder's standard error, so the names `acquire` prints stay alone
//! on standard output.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};

use super::conf::{SourceConf, SourceKind};

/// The commands of one source, for one larder home.
pub struct Driver<'a> {
    conf: &'a SourceConf,
    home: &'a Path,
    /// The shell a `run` without a command starts.
    shell: &'a str,
}

impl<'a> Driver<'a> {
    /// The driver of `conf`; ssh connections are shared under `home`, and a
    /// `run` without a command starts `shell`.
    pub fn new(conf: &'a SourceConf, home: &'a Path, shell: &'a str) -> Driver<'a> {
        Driver { conf, home, shell }
    }

    /// Makes the instance `name`: runs a command source's `provision`, or
    /// checks that an ssh host answers.
    pub fn provision(&self, name: &str) -> Result<()> {
        match &self.conf.kind {
            SourceKind::Command { provision: Some(script), .. } => {
                self.run_script("provision", script, name)
            }
            SourceKind::Ssh { .. } => self.capture(name, &["true".to_string()]).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Throws the instance `name` away (a command source's `discard`).
    pub fn discard(&self, name: &str) -> Result<()> {
        match &self.conf.kind {
            SourceKind::Command { discard: Some(script), .. } => {
                self.run_script("discard", script, name)
            }
            _ => Ok(()),
        }
    }

    /// How many jobs `name` runs at once: `nproc` on it.
    pub fn probe_concurrency(&self, name: &str) -> Result<u32> {
        if matches!(self.conf.kind, SourceKind::Local) {
            return Ok(std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        }
        let out = self.capture(name, &["nproc".to_string()])?;
        out.trim().parse::<u32>().map_err(|_| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "probing `{name}` with nproc printed `{}`, not a number; set concurrency= in {}",
                    out.trim(),
                    self.conf.origin()
                ),
            )
        })
    }

    /// Runs the hooks of `folder` (`provision.d` or `discard.d`) for `name`.
    pub fn hooks(&self, folder: &str, name: &str) -> Result<()> {
        let Some(dir) = &self.conf.dir else { return Ok(()) };
        for script in run_parts(&dir.join(folder))? {
            let mut cmd = Command::new(&script);
            cmd.arg(name);
            self.env(&mut cmd, name);
            self.run_to_end(&mut cmd, &script.display().to_string(), name)?;
        }
        Ok(())
    }

    /// The command that runs `argv` on `name` (a shell when empty), with
    /// standard input, output and error passed through as they are.
    pub fn command(&self, name: &str, argv: &[String]) -> Command {
        match &self.conf.kind {
            SourceKind::Local | SourceKind::Pool { .. } => {
                let mut cmd = match argv.split_first() {
                    Some((program, args)) => {
                        let mut cmd = Command::new(program);
                        cmd.args(args);
                        cmd
                    }
                    None => Command::new(self.shell),
                };
                cmd.env("LARDER_INSTANCE", name);
                cmd
            }
            SourceKind::Ssh { host, config } => {
                let mut cmd = Command::new("ssh");
                if let Some(config) = config {
                    cmd.arg("-F").arg(config);
                }
                cmd.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]);
                cmd.args(["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]);
                if let Some(path) = self.control_path() {
                    cmd.args(["-o", "ControlMaster=auto", "-o", "ControlPersist=60"]);
                    cmd.arg("-o").arg(format!("ControlPath={}", path.display()));
                }
                if argv.is_empty() {
                    cmd.args(["-t", "--", host]);
                } else {
                    let line: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
                    cmd.args(["-T", "--", host]).arg(line.join(" "));
                }
                cmd
            }
            SourceKind::Command { run, .. } => {
                let mut cmd = self.shell(run, name);
                if argv.is_empty() {
                    cmd.arg(self.shell);
                } else {
                    cmd.args(argv);
                }
                cmd
            }
        }
    }

    /// Where ssh keeps its shared connection to the host (`%C` is a hash of
    /// the host, port and user); none if the path would be too long for a
    /// socket.
    fn control_path(&self) -> Option<PathBuf> {
        let dir = self.home.join("pool-v1").join("ssh");
        std::fs::create_dir_all(&dir).ok()?;
        let path = dir.join("%C");
        // A socket path holds 107 bytes; %C expands to 40, and ssh first
        // binds a name 17 bytes longer. ssh splits option values at spaces.
        let fits = path.as_os_str().len() + 55 <= 107;
        let plain = !path.to_string_lossy().contains(char::is_whitespace);
        (fits && plain).then_some(path)
    }

    /// Runs a command source's `step` command (`provision`, `discard`).
    fn run_script(&self, step: &str, script: &str, name: &str) -> Result<()> {
        let mut cmd = self.shell(script, name);
        let what = format!("{step} command of source `{}`", self.conf.name);
        self.run_to_end(&mut cmd, &what, name)
    }

    /// `sh -c SCRIPT larder-pool ARGS…` with the instance in the environment.
    fn shell(&self, script: &str, name: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg("larder-pool");
        self.env(&mut cmd, name);
        cmd
    }

    fn env(&self, cmd: &mut Command, name: &str) {
        cmd.env("INSTANCE", name).env("LARDER_INSTANCE", name).env("LARDER_HOME", self.home);
    }

    /// Runs `cmd` to its end under the timeout, its output on larder's
    /// standard error.
    fn run_to_end(&self, cmd: &mut Command, what: &str, name: &str) -> Result<()> {
        use std::os::fd::AsFd;
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_or_else(|_| Stdio::null(), Stdio::from);
        cmd.stdin(Stdio::null()).stdout(stdout);
        let status = wait_with_timeout(cmd, self.conf.timeout, what)?;
        check_status(status, what, name)
    }

    /// Runs `argv` on `name` and returns what it printed; its error output
    /// goes into the error if it fails.
    fn capture(&self, name: &str, argv: &[String]) -> Result<String> {
        let mut cmd = self.command(name, argv);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let what = format!("`{}` on `{name}`", argv.join(" "));
        let (status, out, err) = capture_with_timeout(&mut cmd, self.conf.timeout, &what)?;
        if status.success() {
            return Ok(out);
        }
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let hint = match &self.conf.kind {
            SourceKind::Ssh { host, .. } => format!(
                "; check that `ssh {host} true` works without a password (larder runs ssh in batch mode)"
            ),
            _ => String::new(),
        };
        Err(Error::new(
            ErrorKind::Io,
            format!(
                "{what} failed ({}){}{hint}",
                describe(status),
                if last.is_empty() { String::new() } else { format!(": {last}") }
            ),
        ))
    }
}

/// The executable files of `dir` that run-parts would run, in its order:
/// names of letters, digits, `_` and `-` only (so `x.dpkg-old` and `README.md`
/// are skipped), sorted bytewise. No folder, no hooks.
pub fn run_parts(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", dir, e)),
    };
    let mut scripts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        let name = entry.file_name();
        let Some(text) = name.to_str() else { continue };
        if text.is_empty()
            || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        use std::os::unix::fs::PermissionsExt;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            scripts.push(path);
        }
    }
    scripts.sort();
    Ok(scripts)
}

fn spawn_grouped(cmd: &mut Command, what: &str) -> Result<std::process::Child> {
    // Its own process group, so a timeout kills whatever it started too;
    // and it dies with larder (an interrupted acquire leaves no script
    // making a machine nobody records).
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot run {what}: {e}; check that it exists and is executable"),
        )
    })
}

/// Waits for `child` until `timeout`; past it, kills its process group.
fn wait_child(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> Result<ExitStatus> {
    // A timeout too large to add is no deadline at all.
    let deadline = Instant::now().checked_add(timeout);
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot wait for {what}: {e}")))?
        {
            return Ok(status);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // SAFETY: killpg only sends a signal to the child's own group.
            unsafe {
                libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.wait();
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{what} did not finish within {}; it was killed (raise timeout= in the source.conf if it needs longer)",
                    crate::time::human_duration(timeout)
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn wait_with_timeout(cmd: &mut Command, timeout: Duration, what: &str) -> Result<ExitStatus> {
    let mut child = spawn_grouped(cmd, what)?;
    wait_child(&mut child, timeout, what)
}

fn capture_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
    what: &str,
) -> Result<(ExitStatus, String, String)> {
    let mut child = spawn_grouped(cmd, what)?;
    let pipes = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    let readers: Vec<_> = pipes
        .into_iter()
        .map(|pipe| {
            let (send, receive) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut text = Vec::new();
                if let Some(mut pipe) = pipe {
                    // Enough for any probe's answer or error; the rest is dropped.
                    let _ = pipe.by_ref().take(64 << 10).read_to_end(&mut text);
                    let _ = std::io::copy(&mut pipe, &mut std::io::sink());
                }
                let _ = send.send(String::from_utf8_lossy(&text).into_owned());
            });
            receive
        })
        .collect();
    let status = wait_child(&mut child, timeout, what);
    // Something the command started and left behind may hold its pipes
    // open: what has come by shortly after it ended is all there is.
    let mut texts =
        readers.into_iter().map(|r| r.recv_timeout(Duration::from_secs(2)).unwrap_or_default());
    let out = texts.next().unwrap_or_default();
    let err = texts.next().unwrap_or_default();
    Ok((status?, out, err))
}

fn check_status(status: ExitStatus, what: &str, name: &str) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    Err(Error::new(ErrorKind::Io, format!("{what} failed for `{name}` ({})", describe(status))))
}

/// An exit status in words: `exit status 3`, `killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "no exit status".into(),
    }
}

/// `text` quoted for a POSIX shell: as it is when that is safe, else in
/// single quotes.
pub fn shell_quote(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%^".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        for word in ["plain", "", "two words", "it's", "$HOME", "a\nb", "*", "-n", "\\"] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .expect("sh");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "for {word:?}");
        }
    }

    #[test]
    fn run_parts_runs_executable_well_named_files_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        use std::os::unix::fs::PermissionsExt;
        for (name, mode) in [
            ("20-b", 0o755),
            ("10-a", 0o755),
            ("05-off", 0o644),
            ("x.sh", 0o755),
            ("README.md", 0o755),
            ("30_c", 0o700),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        std::fs::create_dir(dir.path().join("40-dir")).expect("mkdir");
        let names: Vec<String> = run_parts(dir.path())
            .expect("list")
            .iter()
            .map(|p| p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string())
            .collect();
        assert_eq!(names, ["10-a", "20-b", "30_c"]);
        assert!(run_parts(&dir.path().join("missing")).expect("none").is_empty());
    }

    #[test]
    fn a_hanging_command_is_killed_with_everything_it_started() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        let started = Instant::now();
        let err = wait_with_timeout(&mut cmd, Duration::from_millis(200), "the test hook")
            .expect_err("times out");
        assert!(err.to_string().contains("the test hook did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
