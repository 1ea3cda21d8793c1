//! Loaders: opening what a recipe's loader names as a stream of bytes.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use super::Opened;
use crate::error::{Error, ErrorKind, Result};
use crate::http::download::{Download, LoadError, Validators};
use crate::recipe::Loader;

/// The name of the file a loader makes, when it is not unpacked: the last
/// part of its URL or path. `number` is the source's place in the recipe.
pub(crate) fn file_name(loader: &Loader, number: usize) -> String {
    let last = |text: &str| -> String {
        let path = text.split(['?', '#']).next().unwrap_or("");
        crate::percent::decode_lossy(path.rsplit('/').next().unwrap_or(""))
    };
    let name = match loader {
        Loader::Http(url) => {
            let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
            match after_scheme.split_once('/') {
                Some((_, path)) => last(path),
                None => String::new(),
            }
        }
        Loader::File(path) => {
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        }
        Loader::S3 { key, .. } => last(key),
        Loader::Larder(digest) => digest.hex(),
        Loader::Dirac(lfn) => last(lfn),
        Loader::Exec(_) => format!("exec-{number}"),
    };
    let usable = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\0'])
        && name.len() <= 255;
    if usable { name } else { format!("source-{number}") }
}

/// Opens a remote loader (`http:`, `dirac:`). `scratch` is a folder it may
/// use for files the loader's tool writes; the caller removes it.
pub(crate) fn open_remote(b: &super::Build<'_>, loader: &Loader, scratch: &Path) -> Result<Opened> {
    let unversioned = |reader, total| Opened { reader, total, validators: Validators::default() };
    match loader {
        Loader::Http(url) => {
            Ok(Opened::http(Box::new(Download::open(url, b.http).map_err(read_error)?)))
        }
        Loader::Dirac(lfn) => {
            let file = dirac_get(lfn, scratch)?;
            let size = file.metadata().ok().map(|m| m.len());
            Ok(unversioned(Box::new(file), size))
        }
        Loader::S3 { bucket, key } => {
            let (reader, size) =
                crate::remote::open_s3_object(bucket, key, b.remotes, b.http, b.env)?;
            Ok(unversioned(reader, Some(size)))
        }
        other => Err(Error::new(ErrorKind::InvalidInput, format!("{other} is not a download"))),
    }
}

/// Fetches a DIRAC logical file name with `dirac-dms-get-file`, which writes
/// the file under its own name in the working folder.
fn dirac_get(lfn: &str, scratch: &Path) -> Result<File> {
    const TOOL: &str = "dirac-dms-get-file";
    fs::create_dir_all(scratch).map_err(|e| Error::io("create", scratch, e))?;
    // Its messages go into ours: the tool prints its errors on either stream.
    let output = Command::new(TOOL)
        .arg(lfn)
        .current_dir(scratch)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "dirac:{lfn}: {TOOL} is not on PATH; install the DIRAC client and set it up (dirac-proxy-init)"
                    ),
                )
            } else {
                Error::new(ErrorKind::Io, format!("dirac:{lfn}: cannot run {TOOL}: {e}"))
            }
        })?;
    if !output.status.success() {
        let said = [&output.stderr, &output.stdout]
            .into_iter()
            .flat_map(|text| {
                String::from_utf8_lossy(text)
                    .lines()
                    .map(str::trim)
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .rfind(|line| !line.is_empty())
            .map(|line| format!(": {line}"))
            .unwrap_or_default();
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "dirac:{lfn}: {TOOL} failed ({}){said}; check the LFN and your DIRAC proxy (dirac-proxy-init)",
                output.status
            ),
        ));
    }
    let name = lfn.rsplit('/').next().unwrap_or(lfn);
    let path = scratch.join(name);
    File::open(&path).map_err(|_| {
        Error::new(
            ErrorKind::Io,
            format!("dirac:{lfn}: {TOOL} succeeded but wrote no file named {name}"),
        )
    })
}

/// Runs `command` with `sh -c`; its standard output is the stream. Its
/// standard error goes to ours, so its messages reach the user.
pub(crate) fn run_command(command: &str) -> Result<CommandOutput> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::new(ErrorKind::Io, format!("exec:{command}: cannot run sh: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::new(ErrorKind::Io, format!("exec:{command}: no output pipe")))?;
    Ok(CommandOutput { child, stdout, command: command.to_string(), ended: false })
}

/// A command's standard output; reading its end checks its exit status.
pub(crate) struct CommandOutput {
    child: Child,
    stdout: ChildStdout,
    command: String,
    ended: bool,
}

impl Read for CommandOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.ended {
            self.ended = true;
            let status = self.child.wait()?;
            if !status.success() {
                return Err(io::Error::other(LoadError {
                    message: format!(
                        "exec:{} failed ({status}); its messages, if any, are above",
                        self.command
                    ),
                    not_found: false,
                }));
            }
        }
        Ok(n)
    }
}

impl Drop for CommandOutput {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loader's read error as a larder error: its own message if it has one.
pub(crate) fn read_error(e: io::Error) -> Error {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<LoadError>()) {
        let kind = if inner.not_found { ErrorKind::NotFound } else { ErrorKind::Io };
        return Error::new(kind, inner.message.clone());
    }
    Error::new(ErrorKind::Io, e.to_string()).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let check = |loader: Loader, expected: &str| {
            assert_eq!(file_name(&loader, 3), expected, "{loader:?}");
        };
        check(Loader::Http("https://h/a/b.tar.gz?x=1#y".into()), "b.tar.gz");
        check(Loader::Http("https://h/a/my%20file.txt".into()), "my file.txt");
        check(Loader::Http("https://h".into()), "source-3");
        check(Loader::Http("https://h/dir/".into()), "source-3");
        check(Loader::Http("https://h/%2e%2e".into()), "source-3");
        check(Loader::Http("https://h/a%2fb".into()), "source-3");
        check(Loader::File("/data/x.zip".into()), "x.zip");
        check(Loader::Dirac("/lhcb/data/f.root".into()), "f.root");
        check(Loader::Exec("echo hi".into()), "exec-3");
    }
}
