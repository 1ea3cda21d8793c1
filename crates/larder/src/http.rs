//! larder as an HTTP client: the settings (`http_timeout`, `http_retries`),
//! the one reqwest client of the process, and the retry policy that recipe
//! downloads and object-store remotes follow. Everything that speaks HTTP to
//! another server (recipe downloads, larder servers and WebDAV as remotes,
//! OpenDAL's object stores) gets its client here, so connections and TLS
//! sessions are shared and every request carries the same timeouts and
//! user agent.

pub(crate) mod download;

use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;

use crate::error::{Error, ErrorKind, Result};

/// How larder talks to other servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// How long to wait for a connection, a response, or the next bytes.
    pub timeout: Duration,
    /// How many times to try again after a failure that may pass (a timeout, a
    /// dropped connection, a 5xx answer) before giving up.
    pub retries: u32,
    /// The wait before the first retry; each later wait doubles, up to
    /// [`MAX_BACKOFF`].
    pub backoff: Duration,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

/// The longest wait between two tries: a brief outage is ridden out, a long
/// one gives up in reasonable time.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl HttpOptions {
    /// The wait before try number `failures + 1`, after `failures` (from 1)
    /// failures in a row: exponential from [`HttpOptions::backoff`], capped.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.backoff.saturating_mul(1 << doublings).min(MAX_BACKOFF)
    }
}

/// How long a request that sends `size` bytes may take in all: the usual
/// wait, and as long as the body needs at 64 KiB/s, the slowest uplink worth
/// waiting for (a client's timeout covers a whole request, body and all).
pub fn upload_timeout(wait: Duration, size: u64) -> Duration {
    wait + Duration::from_secs(size / (64 << 10))
}

/// Whether an answer may be different if the same request is sent again:
/// a server error, too many requests, a request timeout.
pub fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// `404 Not Found`: the status with its reason, for messages.
pub fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// A reqwest error as a short phrase, without the URL (the caller names it).
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "the server did not answer in time".to_string();
    }
    if e.is_connect() {
        return "cannot connect to the server".to_string();
    }
    if e.is_redirect() {
        return "too many redirects".to_string();
    }
    let mut text = String::from("the request failed");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

const USER_AGENT: &str = concat!("larder/", env!("CARGO_PKG_VERSION"));

/// The blocking clients made so far, by timeout: one in a process that reads
/// one configuration.
static BLOCKING: Mutex<Vec<(Duration, reqwest::blocking::Client)>> = Mutex::new(Vec::new());

/// The async clients made so far, by timeout.
static ASYNC: Mutex<Vec<(Duration, reqwest::Client)>> = Mutex::new(Vec::new());

/// The process's blocking client for `opts`: made once, then shared (a clone
/// is a handle to the same connections). Its timeout covers each wait: for a
/// connection, a response, and each read of a body. A request that sends a
/// large body sets a longer one of its own.
pub fn blocking_client(opts: &HttpOptions) -> Result<reqwest::blocking::Client> {
    shared(&BLOCKING, opts, || {
        reqwest::blocking::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .user_agent(USER_AGENT)
            .build()
    })
}

/// The process's async client for `opts`, for OpenDAL. Only connecting is
/// timed here: a request's whole time depends on its size, and the caller
/// bounds each operation and each read itself.
pub fn async_client(opts: &HttpOptions) -> Result<reqwest::Client> {
    shared(&ASYNC, opts, || {
        reqwest::Client::builder().connect_timeout(opts.timeout).user_agent(USER_AGENT).build()
    })
}

/// The client in `made` for `opts`' timeout, made with `build` the first time.
fn shared<C: Clone>(
    made: &Mutex<Vec<(Duration, C)>>,
    opts: &HttpOptions,
    build: impl FnOnce() -> reqwest::Result<C>,
) -> Result<C> {
    let mut made = made.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, client)) = made.iter().find(|(t, _)| *t == opts.timeout) {
        return Ok(client.clone());
    }
    let client = build().map_err(cannot_start)?;
    made.push((opts.timeout, client.clone()));
    Ok(client)
}

fn cannot_start(e: reqwest::Error) -> Error {
    Error::new(ErrorKind::Io, format!("cannot start an http client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let opts = HttpOptions::default();
        let delays: Vec<u64> = (1..=8).map(|n| opts.retry_delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
        let none = HttpOptions { backoff: Duration::ZERO, ..opts };
        assert_eq!(none.retry_delay(3), Duration::ZERO);
    }

    #[test]
    fn one_client_per_timeout() {
        let opts = HttpOptions::default();
        blocking_client(&opts).expect("client");
        blocking_client(&opts).expect("client");
        let other = HttpOptions { timeout: Duration::from_secs(7), ..opts };
        blocking_client(&other).expect("client");
        let made = BLOCKING.lock().expect("lock");
        assert_eq!(made.iter().filter(|(t, _)| *t == opts.timeout).count(), 1);
        assert_eq!(made.iter().filter(|(t, _)| *t == other.timeout).count(), 1);
    }
}
