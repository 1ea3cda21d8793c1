//! curdling's client flow with pip doing the work: resolve and build wheels
//! against a larder server's index, send back (with `upload`) the wheels the
//! server lacked, which are the ones built here, and install from the wheels
//! at hand. The next machine then downloads what this one built.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, ErrorKind, Result};
use crate::http::HttpOptions;
use crate::remote::Endpoint;

/// What to install, and from where.
#[derive(Debug, Clone)]
pub struct WheelsInstall {
    /// The larder server, `http(s)://[user@]host:port`.
    pub url: String,
    /// Send the wheels the server lacks back to it.
    pub upload: bool,
    /// Requirements, as pip takes them.
    pub packages: Vec<String>,
    /// Requirements files.
    pub requirements: Vec<PathBuf>,
    /// The Python whose pip does the work (and gets the packages).
    pub python: PathBuf,
    /// More options for `pip wheel`, which resolves and builds
    /// (`--no-build-isolation`, `--extra-index-url URL`, …).
    pub pip_args: Vec<String>,
}

/// What an install did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WheelsReport {
    /// Wheels the server had.
    pub from_server: Vec<String>,
    /// Wheels built here (the server lacked them).
    pub built: Vec<String>,
    /// Of those, the ones sent to the server.
    pub uploaded: Vec<String>,
}

/// Runs the flow; pip's own output goes to standard error.
pub fn install(opts: &WheelsInstall) -> Result<WheelsReport> {
    let endpoint = Endpoint::parse(&opts.url)
        .map_err(|why| Error::new(ErrorKind::InvalidInput, format!("-c {why}")))?;
    if opts.packages.is_empty() && opts.requirements.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "name packages to install, or give -r requirements.txt",
        ));
    }
    let house = tempfile::Builder::new()
        .prefix("larder-wheels.")
        .tempdir()
        .map_err(|e| Error::io("create a folder in", &std::env::temp_dir(), e))?;
    let index = format!("{}/simple/", endpoint.with_credentials());
    // The index URL carries the password, so it goes in the environment,
    // which other users cannot read, never in pip's arguments.
    let mut wheel = pip(&opts.python, &index);
    wheel.args(["wheel", "--wheel-dir"]).arg(house.path()).args(&opts.pip_args);
    add_requirements(&mut wheel, opts);
    run(wheel, "pip wheel")?;

    let client = crate::http::blocking_client(&HttpOptions::default())?;
    let mut report = WheelsReport::default();
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(house.path())
        .map_err(|e| Error::io("read", house.path(), e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    wheels.sort();
    for path in &wheels {
        let filename = file_name(path);
        if server_has(&client, &endpoint, &filename)? {
            report.from_server.push(filename);
            continue;
        }
        if opts.upload {
            send(&client, &endpoint, path)?;
            report.uploaded.push(filename.clone());
        }
        report.built.push(filename);
    }
    let mut installing = pip(&opts.python, &index);
    installing.args(["install", "--no-index", "--find-links"]).arg(house.path());
    add_requirements(&mut installing, opts);
    run(installing, "pip install")?;
    Ok(report)
}

/// Checks that the larder server at `url` answers its package index with
/// the credentials `url` names (or the environment and `~/.netrc` give).
pub fn check_server(url: &str) -> Result<()> {
    let endpoint = Endpoint::parse(url)
        .map_err(|why| Error::new(ErrorKind::InvalidInput, format!("-c {why}")))?;
    let client = crate::http::blocking_client(&HttpOptions::default())?;
    let shown = crate::remote::redact(url);
    let response = authed(client.get(format!("{}/simple/", endpoint.base)), &endpoint)
        .send()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot reach {shown}: {e}")))?;
    match response.status().as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{shown} refused the credentials ({}); give the user in the URL and the password in LARDER_PASSWORD or ~/.netrc",
                response.status()
            ),
        )),
        _ => Err(Error::new(
            ErrorKind::Io,
            format!(
                "{shown} answered {} for its package index; is it a larder server?",
                response.status()
            ),
        )),
    }
}

fn pip(python: &Path, index: &str) -> Command {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip"])
        .env("PIP_INDEX_URL", index)
        .env("PIP_NO_INPUT", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    // pip's messages go to our standard error; our standard output is the report.
    cmd.stdout(std::io::stderr());
    cmd
}

fn add_requirements(cmd: &mut Command, opts: &WheelsInstall) {
    for r in &opts.requirements {
        cmd.arg("-r").arg(r);
    }
    cmd.args(&opts.packages);
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd.status().map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "{what}: cannot run {}: {e}; give a Python with pip with --python",
                cmd.get_program().to_string_lossy()
            ),
        )
    })?;
    if !status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{what} failed ({status}); its messages are above"),
        ));
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A wheel's project (normalized), from its file name.
fn project_of(filename: &str) -> String {
    match crate::pypi::names::parse_filename(filename) {
        Some(dist) => dist.project,
        None => crate::pypi::names::normalize(filename.split('-').next().unwrap_or("")),
    }
}

fn authed(
    request: reqwest::blocking::RequestBuilder,
    endpoint: &Endpoint,
) -> reqwest::blocking::RequestBuilder {
    match &endpoint.user {
        Some(user) => request.basic_auth(user, endpoint.password.as_deref()),
        None => request,
    }
}

fn server_has(
    client: &reqwest::blocking::Client,
    endpoint: &Endpoint,
    filename: &str,
) -> Result<bool> {
    let url = format!("{}/packages/{}/{filename}", endpoint.base, project_of(filename));
    let response = authed(client.head(&url), endpoint)
        .send()
        .map_err(|e| Error::new(ErrorKind::Io, format!("cannot reach {}: {e}", endpoint.base)))?;
    Ok(response.status().is_success())
}

/// Uploads a wheel with the legacy API, as twine would.
fn send(client: &reqwest::blocking::Client, endpoint: &Endpoint, path: &Path) -> Result<()> {
    let filename = file_name(path);
    let not_a_wheel =
        || Error::new(ErrorKind::InvalidInput, format!("{filename} is not a wheel's name"));
    let dist = crate::pypi::names::parse_filename(&filename)
        .filter(|d| d.kind == crate::pypi::names::Kind::Wheel)
        .ok_or_else(not_a_wheel)?;
    // `name-version[-build]-python-abi-platform.whl`: the python tag.
    let pyversion = filename.trim_end_matches(".whl").rsplit('-').nth(2).ok_or_else(not_a_wheel)?;
    let (name, version) = (dist.project, dist.version);
    // Hashed, then sent, from the file: never whole in memory.
    let open = || std::fs::File::open(path).map_err(|e| Error::io("read", path, e));
    let (digest, size) =
        crate::Digest::of_reader(open()?).map_err(|e| Error::io("read", path, e))?;
    let form = reqwest::blocking::multipart::Form::new()
        .text(":action", "file_upload")
        .text("protocol_version", "1")
        .text("name", name)
        .text("version", version)
        .text("filetype", "bdist_wheel")
        .text("pyversion", pyversion.to_string())
        .text("metadata_version", "2.1")
        .text("sha256_digest", digest.hex())
        .part(
            "content",
            reqwest::blocking::multipart::Part::reader_with_length(open()?, size)
                .file_name(filename.clone())
                .mime_str("application/octet-stream")
                .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?,
        );
    let url = format!("{}/legacy/", endpoint.base);
    let allowed = crate::http::upload_timeout(HttpOptions::default().timeout, size);
    let request = authed(client.post(&url), endpoint).multipart(form).timeout(allowed);
    let response = request.send().map_err(|e| {
        Error::new(ErrorKind::Io, format!("cannot upload {filename} to {}: {e}", endpoint.base))
    })?;
    if response.status().is_success() {
        return Ok(());
    }
    let status = response.status();
    let said = response.text().unwrap_or_default();
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::PermissionDenied,
        _ => ErrorKind::Io,
    };
    Err(Error::new(
        kind,
        format!(
            "{} refused the upload of {filename} ({status}): {}; uploading needs a user who may write (http://USER@host, password in LARDER_PASSWORD or ~/.netrc)",
            endpoint.base,
            said.lines().next().unwrap_or("").trim()
        ),
    ))
}
