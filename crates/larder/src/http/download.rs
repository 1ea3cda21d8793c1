//! Downloads over http(s) as a plain `Read`: redirects are followed, failures
//! that may pass (timeouts, dropped connections, 5xx, 429) are retried with
//! backoff, and a transfer that breaks off resumes where it stopped with a
//! `Range` request, guarded by the first response's validator so that bytes of
//! two different versions of a file are never joined. Recipe downloads and
//! blobs read from a larder server both go this way. A download kept from
//! before is asked for again conditionally (`If-None-Match`,
//! `If-Modified-Since`), so an unchanged file costs a `304 Not Modified`.

use std::io::{self, Read};

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{
    ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, LAST_MODIFIED, RANGE,
};

use super::{HttpOptions, describe, is_transient, status_text};
use crate::size::format_size;

/// What a server said identifies the version of a file it sent: its ETag and
/// its Last-Modified, as they were written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
}

impl Validators {
    /// Whether the server gave neither, so nothing can be asked conditionally.
    pub(crate) fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    fn of(response: &Response) -> Validators {
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        Validators {
            etag: header(ETAG).map(String::from),
            last_modified: header(LAST_MODIFIED).map(String::from),
        }
    }
}

/// The answer to a conditional download.
pub(crate) enum Revalidated {
    /// `304 Not Modified`: the copy at hand is the server's.
    Unchanged,
    /// The file changed (or the server does not answer conditionally): its
    /// new bytes.
    Changed(Box<Download>),
}

/// A download in progress.
pub(crate) struct Download {
    client: Client,
    url: String,
    opts: HttpOptions,
    response: Option<Response>,
    /// Bytes handed out so far.
    pos: u64,
    /// The file's full length, once a response said.
    total: Option<u64>,
    /// The first response's ETag or Last-Modified, sent back in If-Range.
    validator: Option<String>,
    /// Failures in a row without a byte of progress.
    failures: u32,
    /// Bytes still to drop from a response that restarted from 0.
    skip: u64,
    /// Where the first response came from, after redirects: resumes go there,
    /// so a redirector that picks another mirror each time cannot mix files.
    resume_url: Option<String>,
    /// HTTP Basic credentials sent with every request: user, password.
    credentials: Option<(String, Option<String>)>,
    /// What the copy at hand was, for a conditional first request.
    known: Option<Validators>,
    /// Whether the server answered that the copy at hand is current.
    not_modified: bool,
    /// What the first response said of its version.
    seen: Validators,
}

impl Download {
    /// Starts downloading `url`: the first response is awaited here, so that a
    /// URL that does not exist fails at once.
    pub(crate) fn open(url: &str, opts: &HttpOptions) -> io::Result<Download> {
        let mut reader = Download::new(url, opts, None)?;
        reader.connect()?;
        Ok(reader)
    }

    /// Downloads `url` unless the server says it is still the version `known`
    /// describes (a conditional GET, retried as [`Download::open`]'s first
    /// request is).
    pub(crate) fn open_unless_unchanged(
        url: &str,
        opts: &HttpOptions,
        known: &Validators,
    ) -> io::Result<Revalidated> {
        let mut reader = Download::new(url, opts, None)?;
        reader.known = Some(known.clone()).filter(|k| !k.is_empty());
        reader.connect()?;
        if reader.not_modified {
            return Ok(Revalidated::Unchanged);
        }
        Ok(Revalidated::Changed(Box::new(reader)))
    }

    /// What the server said of the version it sent.
    pub(crate) fn validators(&self) -> &Validators {
        &self.seen
    }

    /// Goes on with `first`, a `200 OK` to a GET of `url` sent with
    /// `credentials`, which the caller received and checked itself: a
    /// transfer that breaks off resumes as [`Download::open`]'s do.
    pub(crate) fn continue_from(
        first: Response,
        url: &str,
        opts: &HttpOptions,
        credentials: Option<(String, Option<String>)>,
    ) -> io::Result<Download> {
        let mut reader = Download::new(url, opts, credentials)?;
        reader.validator = validator_of(&first);
        reader.total = content_length(&first);
        reader.resume_url = Some(first.url().to_string());
        reader.response = Some(first);
        Ok(reader)
    }

    fn new(
        url: &str,
        opts: &HttpOptions,
        credentials: Option<(String, Option<String>)>,
    ) -> io::Result<Download> {
        Ok(Download {
            // The process's one client: it keeps connections and TLS sessions.
            client: super::blocking_client(opts).map_err(io::Error::other)?,
            url: url.to_string(),
            opts: *opts,
            response: None,
            pos: 0,
            total: None,
            validator: None,
            failures: 0,
            skip: 0,
            resume_url: None,
            credentials,
            known: None,
            not_modified: false,
            seen: Validators::default(),
        })
    }

    /// The file's length, if the server said.
    pub(crate) fn total(&self) -> Option<u64> {
        self.total
    }

    /// Sends a request for what is still missing, retrying until a response
    /// with bytes arrives or the retries run out.
    fn connect(&mut self) -> io::Result<()> {
        loop {
            match self.try_connect() {
                Ok(response) => {
                    self.response = response;
                    return Ok(());
                }
                Err(Failure::Permanent(e)) => return Err(e),
                Err(Failure::Transient(why)) => self.wait_or_give_up(&why)?,
            }
        }
    }

    /// Counts a failure, and sleeps before the next try or gives up.
    fn wait_or_give_up(&mut self, why: &str) -> io::Result<()> {
        self.failures += 1;
        if self.failures > self.opts.retries {
            let so_far = match (self.pos, self.total) {
                (0, _) => String::new(),
                (n, Some(t)) => format!(" after {} of {}", format_size(n), format_size(t)),
                (n, None) => format!(" after {}", format_size(n)),
            };
            let tries = match self.failures {
                1 => "after 1 try".to_string(),
                n => format!("{n} tries in all"),
            };
            return Err(permanent(format!(
                "cannot download {}: {why}{so_far}, {tries}; check that the server is up, or try again later",
                self.url
            )));
        }
        let delay = self.opts.retry_delay(self.failures);
        tracing::info!(url = %self.url, "{why}; trying again in {delay:?}");
        std::thread::sleep(delay);
        Ok(())
    }

    fn try_connect(&mut self) -> Result<Option<Response>, Failure> {
        if self.total == Some(self.pos) && self.pos > 0 {
            return Ok(None);
        }
        // Whatever was still to be skipped belonged to the response that broke.
        self.skip = 0;
        let url = self.resume_url.as_deref().unwrap_or(&self.url);
        let mut request = self.client.get(url).header(ACCEPT_ENCODING, "identity");
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, password.as_deref());
        }
        if self.pos > 0 {
            request = request.header(RANGE, format!("bytes={}-", self.pos));
            if let Some(v) = &self.validator {
                request = request.header(IF_RANGE, v);
            }
        } else if let Some(known) = &self.known {
            if let Some(etag) = &known.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            if let Some(date) = &known.last_modified {
                request = request.header(IF_MODIFIED_SINCE, date);
            }
        }
        let response = request.send().map_err(|e| Failure::Transient(describe(&e)))?;
        let status = response.status();
        match status {
            StatusCode::OK => {
                let validator = validator_of(&response);
                if self.pos > 0 {
                    // The server sent the whole file again: either it ignores
                    // ranges (drop what we have), or the file changed.
                    let changed = (self.validator.is_some() && validator != self.validator)
                        || content_length(&response) != self.total;
                    if changed {
                        return Err(Failure::Permanent(permanent(format!(
                            "{} changed on the server during the download; try again",
                            self.url
                        ))));
                    }
                    self.skip = self.pos;
                } else {
                    self.validator = validator;
                    self.seen = Validators::of(&response);
                    self.total = content_length(&response);
                    self.resume_url = Some(response.url().to_string());
                }
                Ok(Some(response))
            }
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range);
                match range {
                    // The rest of the same file: the same length as before.
                    Some((start, total))
                        if start == self.pos && (self.total.is_none() || total == self.total) =>
                    {
                        if self.total.is_none() {
                            self.total = total;
                        }
                        Ok(Some(response))
                    }
                    Some((start, total)) if start == self.pos => {
                        Err(Failure::Permanent(permanent(format!(
                            "{} changed on the server during the download (its length went from {} to {}); try again",
                            self.url,
                            self.total.map_or("unknown".to_string(), |t| t.to_string()),
                            total.map_or("unknown".to_string(), |t| t.to_string())
                        ))))
                    }
                    _ => Err(Failure::Transient(format!(
                        "the server answered a resume at byte {} with a wrong range",
                        self.pos
                    ))),
                }
            }
            StatusCode::NOT_MODIFIED if self.pos == 0 && self.known.is_some() => {
                self.not_modified = true;
                self.total = Some(0);
                Ok(None)
            }
            StatusCode::RANGE_NOT_SATISFIABLE if self.pos > 0 && self.total.is_none() => {
                // Resuming exactly at the end of a file of unknown length.
                self.total = Some(self.pos);
                Ok(None)
            }
            s if is_transient(s) => {
                Err(Failure::Transient(format!("the server answered {}", status_text(s))))
            }
            s => {
                let fix = match s {
                    StatusCode::NOT_FOUND | StatusCode::GONE => "check the URL",
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        "the server refuses access; check the URL and its permissions"
                    }
                    _ => "check the URL",
                };
                Err(Failure::Permanent(io::Error::other(LoadError {
                    message: format!("cannot download {}: {}; {fix}", self.url, status_text(s)),
                    not_found: matches!(s, StatusCode::NOT_FOUND | StatusCode::GONE),
                })))
            }
        }
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(response) = self.response.as_mut() else {
                return Ok(0);
            };
            match response.read(buf) {
                Ok(0) => {
                    self.response = None;
                    match self.total {
                        Some(total) if self.pos < total => {
                            let why =
                                format!("the connection closed at byte {} of {total}", self.pos);
                            self.wait_or_give_up(&why)?;
                            self.connect()?;
                        }
                        _ => return Ok(0),
                    }
                }
                Ok(n) if self.skip > 0 => {
                    // Bytes we already had, from a server that ignored Range.
                    let dropped = (n as u64).min(self.skip);
                    self.skip -= dropped;
                    let kept = n - dropped as usize;
                    if kept > 0 {
                        buf.copy_within(dropped as usize..n, 0);
                        self.pos += kept as u64;
                        self.failures = 0;
                        return Ok(kept);
                    }
                }
                Ok(n) => {
                    self.pos += n as u64;
                    self.failures = 0;
                    if let Some(total) = self.total
                        && self.pos > total
                    {
                        return Err(permanent(format!(
                            "{} sent more bytes than its length ({total}); try again",
                            self.url
                        )));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.response = None;
                    let why = if e.kind() == io::ErrorKind::TimedOut
                        || e.to_string().contains("timed out")
                    {
                        format!(
                            "no data for {}s at byte {}",
                            self.opts.timeout.as_secs_f64(),
                            self.pos
                        )
                    } else {
                        format!("the transfer broke off at byte {} ({e})", self.pos)
                    };
                    self.wait_or_give_up(&why)?;
                    self.connect()?;
                }
            }
        }
    }
}

/// Why a download failed for good, as one line that names what it loads.
#[derive(Debug)]
pub(crate) struct LoadError {
    pub(crate) message: String,
    /// Whether the thing is not there (an http 404 or 410).
    pub(crate) not_found: bool,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

enum Failure {
    /// Worth another try: a timeout, a refused connection, a 5xx.
    Transient(String),
    /// Another try would fail the same way.
    Permanent(io::Error),
}

fn permanent(message: String) -> io::Error {
    io::Error::other(LoadError { message, not_found: false })
}

fn validator_of(response: &Response) -> Option<String> {
    let headers = response.headers();
    let etag = headers.get(ETAG).and_then(|v| v.to_str().ok());
    // Weak ETags may not be used in If-Range.
    let strong = etag.filter(|e| !e.starts_with("W/"));
    strong.or_else(|| headers.get(LAST_MODIFIED).and_then(|v| v.to_str().ok())).map(String::from)
}

fn content_length(response: &Response) -> Option<u64> {
    response.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let total = if total == "*" { None } else { Some(total.parse().ok()?) };
    Some((start.parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
    }
}
