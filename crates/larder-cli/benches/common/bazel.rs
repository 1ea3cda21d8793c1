//! Bazel 2.1 (the npm registry's `@bazel/bazel`, named by `TEST_TOOL_BAZEL`)
//! building a small graph of genrules offline: one output past gRPC's 4 MiB
//! message size, its digest, and a program built with gcc and run. Used by
//! the REAPI benchmark and, through `#[path]`, by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The graph's actions: big, digest, hello (for the target and, as a tool,
/// for the host), greeting.
pub const ACTIONS: u32 = 5;

/// Bazel 2.1's binary.
pub fn binary() -> PathBuf {
    std::env::var_os("TEST_TOOL_BAZEL")
        .expect(
            "TEST_TOOL_BAZEL names Bazel 2.1; run with scripts/test, or source scripts/test-tools",
        )
        .into()
}

/// What the large genrule writes: `seq 1 1000000`, 6.9 MB.
pub fn big_output() -> Vec<u8> {
    (1..=1_000_000).map(|i| format!("{i}\n")).collect::<String>().into_bytes()
}

/// A workspace, and the folders Bazel keeps its state in.
pub struct Workspace {
    binary: PathBuf,
    dir: PathBuf,
    builds: u32,
}

/// What one build did.
#[derive(Debug)]
pub struct Build {
    /// Actions, and those that were remote cache hits.
    pub total: u32,
    pub remote_hits: u32,
    /// Where its outputs are.
    pub bin: PathBuf,
    /// Wall-clock time of the whole `bazel build`, JVM start included.
    pub seconds: f64,
}

impl Workspace {
    /// Writes the workspace in `dir`.
    pub fn new(dir: &Path) -> Workspace {
        let ws = dir.join("ws");
        std::fs::create_dir_all(&ws).expect("mkdir");
        std::fs::write(ws.join("WORKSPACE"), "").expect("WORKSPACE");
        std::fs::write(
            ws.join("BUILD"),
            r#"genrule(name = "big", outs = ["big.txt"], cmd = "seq 1 1000000 > $@")
genrule(name = "digest", srcs = [":big"], outs = ["digest.txt"], cmd = "sha256sum < $(location :big) > $@")
genrule(name = "hello", srcs = ["hello.c"], outs = ["hello"], cmd = "gcc -O1 -o $@ $(location hello.c)")
genrule(name = "greeting", tools = [":hello"], outs = ["greeting.txt"], cmd = "$(location :hello) > $@")
"#,
        )
        .expect("BUILD");
        std::fs::write(
            ws.join("hello.c"),
            "#include <stdio.h>\nint main(void) { puts(\"hello from larder\"); return 0; }\n",
        )
        .expect("hello.c");
        Workspace { binary: binary(), dir: dir.to_path_buf(), builds: 0 }
    }

    /// Builds everything from a new, empty output base with `flags`
    /// (`--batch`: no Bazel server is left running); `Err` is Bazel's log.
    pub fn build(&mut self, flags: &[&str]) -> Result<Build, String> {
        self.builds += 1;
        let output_base = self.dir.join(format!("out{}", self.builds));
        let start = Instant::now();
        let out = Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.join("home"))
            .current_dir(self.dir.join("ws"))
            .args(["--nosystem_rc", "--nohome_rc", "--noworkspace_rc", "--batch"])
            .arg(format!("--output_user_root={}", self.dir.join("root").display()))
            .arg(format!("--output_base={}", output_base.display()))
            .args(["build", "--noshow_progress", "--symlink_prefix=/"])
            .args(flags)
            .arg("//:all")
            .output()
            .map_err(|e| format!("cannot run bazel: {e}"))?;
        let seconds = start.elapsed().as_secs_f64();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(log);
        }
        // `INFO: 5 processes: 1 remote cache hit, 4 linux-sandbox.`
        let line = log
            .lines()
            .find(|l| l.starts_with("INFO: ") && l.contains(" processes"))
            .ok_or_else(|| format!("no summary of processes:\n{log}"))?;
        let number = |s: &str| s.split_whitespace().next().and_then(|n| n.parse::<u32>().ok());
        let total = number(&line["INFO: ".len()..]).ok_or_else(|| format!("no count: {line}"))?;
        let remote_hits = line
            .split([':', ','])
            .filter(|part| part.contains("remote cache hit"))
            .filter_map(|part| number(part.trim()))
            .sum();
        let bin = output_base.join("execroot/__main__/bazel-out/k8-fastbuild/bin");
        Ok(Build { total, remote_hits, bin, seconds })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // Bazel leaves read-only folders, which only root could remove.
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(&self.dir).status();
    }
}
