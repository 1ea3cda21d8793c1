//! Python packages for the index's tests, built without downloading
//! anything: a project whose build backend is a file of its own
//! (`python/backend.py`), and the Python tools the test command installs.

use std::path::{Path, PathBuf};
use std::process::Command;

const BACKEND: &str = include_str!("python/backend.py");

/// A project `name` at `version` (with `requires`) in `dir`, ready to build.
pub fn project(dir: &Path, name: &str, version: &str, requires: &[&str]) -> PathBuf {
    let root = dir.join(format!("{name}-{version}-src"));
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("backend.py"), BACKEND).expect("backend");
    let mut line = format!("{name} {version}");
    for r in requires {
        line.push(' ');
        line.push_str(r);
    }
    std::fs::write(root.join("NAME"), line + "\n").expect("NAME");
    std::fs::write(
        root.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n",
    )
    .expect("pyproject");
    root
}

/// Builds `what` (`wheel` or `sdist`) of the project into `out`; returns its path.
pub fn build(project: &Path, what: &str, out: &Path) -> PathBuf {
    std::fs::create_dir_all(out).expect("mkdir");
    let call = format!("import backend, sys; print(backend.build_{what}(sys.argv[1]))");
    let output = Command::new("python3")
        .args(["-c", &call])
        .arg(out)
        .current_dir(project)
        .output()
        .expect("python3");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    out.join(String::from_utf8_lossy(&output.stdout).trim())
}

/// A tool the test command installed in its venv (pip, uv, twine, pypi-server).
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("TEST_TOOLS_BIN")
        .expect("TEST_TOOLS_BIN names the venv of Python tools; run the tests with scripts/test");
    Path::new(&dir).join(name)
}

/// A command for a Python tool, isolated from the machine's pip and uv settings.
pub fn python_tool(name: &str) -> Command {
    let mut cmd = Command::new(tool(name));
    cmd.env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_NO_CACHE_DIR", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("UV_NO_CACHE", "1")
        .env("UV_NO_CONFIG", "1")
        .env_remove("PIP_INDEX_URL")
        .env_remove("PIP_FIND_LINKS");
    cmd
}

/// Runs a command, asserting success; returns stdout and stderr together.
pub fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().expect("run");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}
