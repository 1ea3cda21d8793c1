//! `larder pool cp`: files and folders between this host and instances, or
//! between two instances, as `cp -r` places them. The source side packs with
//! `tar` and the destination side unpacks, each through the instance's own
//! `run` (so it works the same on every kind of source, with bytes passed
//! through untouched); the destination unpacks beside its target and renames
//! into place, so a copy cut short leaves no half-written target.

use std::process::{Command, Stdio};

use crate::error::{Error, ErrorKind, Result};

use super::Pools;
use super::driver::describe;

/// One side of a copy: a path on this host, or on an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The instance, or `None` for this host.
    pub instance: Option<String>,
    /// The path there.
    pub path: String,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.instance {
            Some(i) => write!(f, "{i}:{}", self.path),
            None => write!(f, "{}", self.path),
        }
    }
}

/// Packs `$1` (a file or folder) as one tar entry named after it.
const PACK: &str = r#"set -e
p=$1
[ -e "$p" ] || [ -L "$p" ] || { echo "no such file or folder" >&2; exit 2; }
d=$(dirname -- "$p"); b=$(basename -- "$p")
case $b in .|..|/) d=$(cd -- "$p" && pwd -P); b=$(basename -- "$d"); d=$(dirname -- "$d");; esac
cd -- "$d"
exec tar -cf - -- "$b""#;

/// Unpacks one tar entry into `$1`: inside it if it is a folder, else as it.
const UNPACK: &str = r#"set -e
dst=$1
if [ -d "$dst" ]; then parent=$dst; into=1; else parent=$(dirname -- "$dst"); into=; fi
[ -d "$parent" ] || { echo "$parent is no folder" >&2; exit 2; }
tmp=$(mktemp -d "$parent/.larder-cp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tar -xf - -C "$tmp"
for e in "$tmp"/* "$tmp"/.[!.]* "$tmp"/..?*; do if [ -e "$e" ] || [ -L "$e" ]; then break; fi; done
if [ -n "$into" ]; then target=$dst/$(basename -- "$e"); else target=$dst; fi
if [ -d "$target" ] && [ -d "$e" ] && [ ! -L "$target" ]; then
  (cd -- "$e" && tar -cf - .) | tar -xf - -C "$target"
else
  rm -rf -- "$target.larder-old"
  if [ -e "$target" ] && [ -d "$e" ]; then mv -f -- "$target" "$target.larder-old"; fi
  mv -f -- "$e" "$target"
  rm -rf -- "$target.larder-old"
fi"#;

fn side(pools: &Pools, end: &Endpoint, script: &str) -> Result<Command> {
    let argv = ["sh", "-c", script, "larder-pool-cp", end.path.as_str()].map(str::to_string);
    match &end.instance {
        Some(name) => pools.command(name, &argv),
        None => {
            let mut cmd = Command::new("sh");
            cmd.args(&argv[1..]);
            Ok(cmd)
        }
    }
}

/// Copies `from` to `to`.
pub fn copy(pools: &Pools, from: &Endpoint, to: &Endpoint) -> Result<()> {
    let mut pack = side(pools, from, PACK)?;
    let mut unpack = side(pools, to, UNPACK)?;
    let spawn_error = |what: &Endpoint, e: std::io::Error| {
        Error::new(ErrorKind::Io, format!("cannot start the copy at {what}: {e}"))
    };
    let mut packer = pack
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(from, e))?;
    let pack_errors = packer.stderr.take().map(last_line);
    let Some(stream) = packer.stdout.take() else {
        return Err(Error::new(ErrorKind::Io, "the copy's pipe was not made"));
    };
    let unpacker =
        unpack.stdin(Stdio::from(stream)).stdout(Stdio::null()).stderr(Stdio::piped()).spawn();
    let mut unpacker = match unpacker {
        Ok(child) => child,
        Err(e) => {
            let _ = packer.kill();
            let _ = packer.wait();
            return Err(spawn_error(to, e));
        }
    };
    let unpack_errors = unpacker.stderr.take().map(last_line);
    // The commands keep their copies of the pipe until dropped: a reader
    // kept alive here would let a packer block for ever on a full pipe
    // after the unpacker gave up.
    drop(pack);
    drop(unpack);
    let packed = packer.wait().map_err(|e| spawn_error(from, e))?;
    let unpacked = unpacker.wait().map_err(|e| spawn_error(to, e))?;
    let said = |errors: Option<std::thread::JoinHandle<String>>| {
        errors.and_then(|h| h.join().ok()).filter(|l| !l.is_empty()).map(|l| format!(": {l}"))
    };
    let (pack_said, unpack_said) = (said(pack_errors), said(unpack_errors));
    // A packer that died of a broken pipe only lost its reader: the
    // unpacker's failure is the one to report.
    use std::os::unix::process::ExitStatusExt;
    let reader_gone = packed.signal() == Some(libc::SIGPIPE) && !unpacked.success();
    if !packed.success() && !reader_gone {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "cannot read {from} ({}){}; the copy at {to} may be incomplete",
                describe(packed),
                pack_said.unwrap_or_default()
            ),
        ));
    }
    if !unpacked.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "cannot write {to} ({}){}; it was left as it was",
                describe(unpacked),
                unpack_said.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// Reads a child's error output on a thread; gives its last non-empty line.
fn last_line(pipe: std::process::ChildStderr) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut text = Vec::new();
        let _ = pipe.take(64 << 10).read_to_end(&mut text);
        let text = String::from_utf8_lossy(&text);
        text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
    })
}
