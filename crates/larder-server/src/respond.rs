//! Answers every door shares: one-line errors, the status of a library
//! error, HTTP dates, ETags and `If-None-Match`, and `Range`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use larder::{Digest, Error, ErrorKind};

/// An error answer: a status and one line of text, as curl and twine show it.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut line = message.into();
    line.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line).into_response()
}

/// An answer with `message` also as its reason phrase, which twine prints
/// instead of the body.
pub fn with_reason(status: StatusCode, message: &str) -> Response {
    let mut response = text(status, message);
    let phrase: String =
        message.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).take(300).collect();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(phrase) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// What a client is told of a library error, and its status. What the
/// request did wrong (a bad key, a body that does not match its digest) is
/// told as the library says it; what went wrong on the server is logged, and
/// the client is told only what happened and who can fix it: never the
/// server's paths, nor the pid and start time its temporary files are named
/// after. Both doors tell this (gRPC with the code of the status).
pub fn told(e: &Error) -> (StatusCode, String) {
    let about_the_request = std::error::Error::source(e).is_none()
        && matches!(
            e.kind(),
            ErrorKind::NotFound
                | ErrorKind::InvalidInput
                | ErrorKind::Corrupt
                | ErrorKind::Conflict
        );
    if about_the_request {
        let status = match e.kind() {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        return (status, e.to_string());
    }
    tracing::error!("{e}");
    let (status, reason) = match e.kind() {
        ErrorKind::StoreFull => (
            StatusCode::INSUFFICIENT_STORAGE,
            "the server's store has no room for this; nothing was stored: its operator can raise its capacity or unpin entries",
        ),
        ErrorKind::DiskFull => (
            StatusCode::INSUFFICIENT_STORAGE,
            "the server's disk is full; nothing was stored: its operator must free space",
        ),
        ErrorKind::Busy => {
            (StatusCode::SERVICE_UNAVAILABLE, "the server's store is busy; retry in a moment")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "the server failed to do this; its log says why"),
    };
    (status, reason.to_string())
}

/// The answer to a library error, as [`told`] says it.
pub fn error(e: &Error) -> Response {
    let (status, line) = told(e);
    let mut response = text(status, line);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// An HTTP date (RFC 9110 IMF-fixdate) for seconds since the epoch.
pub fn http_date(secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    httpdate::fmt_http_date(at)
}

/// The ETag of a blob: its digest, which never names other bytes.
pub fn etag(digest: &Digest) -> String {
    format!("\"{digest}\"")
}

/// Whether the request's `If-None-Match` names `tag` (or `*`): the client
/// has these bytes, and gets 304.
pub fn client_has(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// What a request's `Range` asks of a body of some size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// No range, or one not served as a part (several ranges, other units):
    /// the whole body.
    Whole,
    /// The bytes `start..=end`, both within the body.
    Part { start: u64, end: u64 },
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

impl Range {
    /// Reads the `Range` header for a body of `size` bytes.
    pub fn of(headers: &HeaderMap, size: u64) -> Range {
        let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
            return Range::Whole;
        };
        Range::parse(value, size)
    }

    fn parse(value: &str, size: u64) -> Range {
        let Some(spec) = value.trim().strip_prefix("bytes=") else { return Range::Whole };
        if spec.contains(',') {
            return Range::Whole; // several ranges: send it all
        }
        let Some((start, end)) = spec.split_once('-') else { return Range::Whole };
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        match (start.trim(), end.trim()) {
            ("", suffix) => match number(suffix) {
                None => Range::Whole,
                Some(0) => Range::Unsatisfiable,
                Some(_) if size == 0 => Range::Unsatisfiable,
                Some(n) => Range::Part { start: size.saturating_sub(n), end: size - 1 },
            },
            (start, "") => match number(start) {
                None => Range::Whole,
                Some(start) if start >= size => Range::Unsatisfiable,
                Some(start) => Range::Part { start, end: size - 1 },
            },
            (start, end) => match (number(start), number(end)) {
                (Some(start), Some(end)) if start > end || start >= size => Range::Unsatisfiable,
                (Some(start), Some(end)) => Range::Part { start, end: end.min(size - 1) },
                _ => Range::Whole,
            },
        }
    }
}

/// A permanent redirect to `to`.
pub fn redirect(to: &str) -> Response {
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    }

    #[test]
    fn ranges() {
        let check = |value: &str, size: u64, expected: Range| {
            assert_eq!(Range::parse(value, size), expected, "{value}");
        };
        let part = |start, end| Range::Part { start, end };
        check("bytes=0-9", 100, part(0, 9));
        check("bytes=90-", 100, part(90, 99));
        check("bytes=-10", 100, part(90, 99));
        check("bytes=-500", 100, part(0, 99));
        check("bytes=50-500", 100, part(50, 99));
        check("bytes=100-", 100, Range::Unsatisfiable);
        check("bytes=9-5", 100, Range::Unsatisfiable);
        check("bytes=-0", 100, Range::Unsatisfiable);
        check("bytes=-1", 0, Range::Unsatisfiable);
        check("bytes=0-1,5-6", 100, Range::Whole);
        check("items=0-1", 100, Range::Whole);
        check("bytes=+1-5", 100, Range::Whole);
        check("bytes=a-5", 100, Range::Whole);
    }

    #[test]
    fn if_none_match() {
        let mut headers = HeaderMap::new();
        assert!(!client_has(&headers, "\"a\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"b\", W/\"a\""));
        assert!(client_has(&headers, "\"a\""));
        assert!(!client_has(&headers, "\"c\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(client_has(&headers, "\"c\""));
    }
}
