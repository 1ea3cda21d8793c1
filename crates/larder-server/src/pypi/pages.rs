//! The simple repository pages: PEP 503 HTML and PEP 691 JSON, chosen by
//! `Accept` (or `?format=`), rendered once per change and kept.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use quick_xml::escape::escape;

use super::flight::HangUp;
use super::index::FileRow;
use super::{PypiState, json};
use crate::respond::{self, text, with_reason};

const JSON: &str = "application/vnd.pypi.simple.v1+json";
const HTML: &str = "application/vnd.pypi.simple.v1+html";
const TEXT_HTML: &str = "text/html";

/// The serialization a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Html,
    /// HTML, labelled `text/html` for clients that asked for that.
    TextHtml,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Json => JSON,
            Format::Html => HTML,
            Format::TextHtml => "text/html; charset=utf-8",
        }
    }
}

/// A rendered page and the version of the index it shows.
#[derive(Clone)]
pub struct Page {
    version: u64,
    body: Bytes,
    etag: String,
}

/// Picks a format from `?format=` or `Accept`; `None`: nothing acceptable
/// (406).
pub fn negotiate(parts: &Parts) -> Option<Format> {
    let query_format = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("format=")))
        .map(|f| percent_decode_str(f).decode_utf8_lossy().into_owned());
    let accept = match &query_format {
        Some(f) => f.clone(),
        None => match parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
            Some(a) if !a.trim().is_empty() => a.to_string(),
            _ => return Some(Format::TextHtml),
        },
    };
    let mut best: Option<(f32, Format)> = None;
    for item in accept.split(',') {
        let mut params = item.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|v| v.trim().parse::<f32>().ok()))
            .unwrap_or(1.0);
        let format = match media.as_str() {
            JSON | "application/vnd.pypi.simple.latest+json" => Format::Json,
            HTML | "application/vnd.pypi.simple.latest+html" => Format::Html,
            TEXT_HTML | "text/*" | "*/*" => Format::TextHtml,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, format));
        }
    }
    best.map(|(_, f)| f)
}

fn not_acceptable() -> Response {
    text(StatusCode::NOT_ACCEPTABLE, format!("this index speaks {JSON}, {HTML} and {TEXT_HTML}"))
}

/// Sends a page, or 304 if the client has it.
fn send(parts: &Parts, format: Format, page: &Page) -> Response {
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    if let Ok(v) = HeaderValue::from_str(&page.etag) {
        headers.insert(header::ETAG, v);
    }
    if respond::client_has(&parts.headers, &page.etag) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(page.body.len()));
    if parts.method == axum::http::Method::HEAD {
        return (StatusCode::OK, headers).into_response();
    }
    (StatusCode::OK, headers, page.body.clone()).into_response()
}

/// Rendered pages, kept until the index changes, within a budget of bytes.
pub struct Pages {
    map: HashMap<(String, Format), Page>,
    bytes: usize,
    limit: usize,
    /// One rendering of a page at a time: a large project's rows and text
    /// are held once, however many clients ask at once.
    rendering: HashMap<(String, Format), Arc<tokio::sync::Mutex<()>>>,
}

/// The bytes of pages kept at most.
const PAGES_BYTES: usize = 64 << 20;

impl Default for Pages {
    fn default() -> Pages {
        Pages::with_limit(PAGES_BYTES)
    }
}

impl Pages {
    fn with_limit(limit: usize) -> Pages {
        Pages { map: HashMap::new(), bytes: 0, limit, rendering: HashMap::new() }
    }

    fn cost(name: &str, page: &Page) -> usize {
        name.len() + page.body.len() + page.etag.len() + 64
    }

    fn get(&self, name: &str, format: Format, version: u64) -> Option<Page> {
        self.map.get(&(name.to_string(), format)).filter(|p| p.version == version).cloned()
    }

    /// Keeps `page`, making room: stale pages go first, then all of them.
    fn insert(&mut self, name: &str, format: Format, page: Page) {
        let cost = Pages::cost(name, &page);
        if cost > self.limit {
            return;
        }
        if let Some(old) = self.map.remove(&(name.to_string(), format)) {
            self.bytes -= Pages::cost(name, &old);
        }
        if self.bytes + cost > self.limit {
            let version = page.version;
            self.map.retain(|_, p| p.version == version);
            self.bytes = self.map.iter().map(|((n, _), p)| Pages::cost(n, p)).sum();
        }
        if self.bytes + cost > self.limit {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += cost;
        self.map.insert((name.to_string(), format), page);
    }
}

/// The lock whose holder renders the page of `name` in `format`.
fn render_lock(state: &PypiState, name: &str, format: Format) -> Arc<tokio::sync::Mutex<()>> {
    let mut pages = state.pages.lock().unwrap_or_else(|p| p.into_inner());
    if pages.rendering.len() > 256 {
        // Only locks someone holds or waits on are worth keeping.
        pages.rendering.retain(|_, l| Arc::strong_count(l) > 1);
    }
    pages.rendering.entry((name.to_string(), format)).or_default().clone()
}

/// A kept page of `name` in `format`, if it shows the index as it is.
fn kept(state: &PypiState, name: &str, format: Format) -> Option<Page> {
    let version = state.version();
    let pages = state.pages.lock().unwrap_or_else(|p| p.into_inner());
    pages.get(name, format, version)
}

fn keep(state: &PypiState, name: &str, format: Format, version: u64, body: String) -> Page {
    let digest = larder::Digest::of(body.as_bytes());
    let page =
        Page { version, body: Bytes::from(body), etag: format!("\"{}\"", &digest.hex()[..32]) };
    let mut pages = state.pages.lock().unwrap_or_else(|p| p.into_inner());
    pages.insert(name, format, page.clone());
    page
}

/// `/simple/`: every project.
pub async fn project_list(state: &Arc<PypiState>, parts: &Parts) -> Response {
    let Some(format) = negotiate(parts) else { return not_acceptable() };
    if let Some(page) = kept(state, "", format) {
        return send(parts, format, &page);
    }
    let version = state.version();
    let pypi = state.clone();
    let projects = match tokio::task::spawn_blocking(move || pypi.index.projects()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return respond::error(&e),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let body = match format {
        Format::Json => to_json(&json::ProjectList {
            meta: json::Meta { api_version: "1.1".into() },
            projects: projects.into_iter().map(|name| json::ProjectName { name }).collect(),
        }),
        Format::Html | Format::TextHtml => {
            let mut html = String::from(
                "<!DOCTYPE html>\n<html>\n  <head><meta name=\"pypi:repository-version\" content=\"1.1\"><title>Simple index</title></head>\n  <body>\n",
            );
            for p in &projects {
                let p = escape(p);
                let _ = writeln!(html, "    <a href=\"{p}/\">{p}</a><br/>");
            }
            html.push_str("  </body>\n</html>\n");
            html
        }
    };
    let page = keep(state, "", format, version, body);
    send(parts, format, &page)
}

/// `/simple/<project>/`: its files, this server's own or, if it has none,
/// every upstream's.
pub async fn project_page(state: &Arc<PypiState>, parts: &Parts, project: &str) -> Response {
    let Some(format) = negotiate(parts) else { return not_acceptable() };
    let waiting = HangUp::new(format!("the page of {project}"));
    let upstreams = match state.upstreams.is_empty() {
        true => Ok(()),
        false => super::upstream::refresh(state, project).await,
    };
    waiting.disarm();
    if let Some(page) = kept(state, project, format) {
        return send(parts, format, &page);
    }
    let lock = render_lock(state, project, format);
    let _rendering = lock.lock().await;
    if let Some(page) = kept(state, project, format) {
        return send(parts, format, &page);
    }
    let version = state.version();
    let pypi = state.clone();
    let name = project.to_string();
    let files = match tokio::task::spawn_blocking(move || pypi.index.files_of(&name)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return respond::error(&e),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    // This server's own files shadow every upstream's (no dependency confusion).
    let files: Vec<FileRow> = if files.iter().any(FileRow::is_local) {
        files.into_iter().filter(FileRow::is_local).collect()
    } else {
        let order =
            |r: &FileRow| state.upstreams.iter().position(|u| *u == r.origin).unwrap_or(usize::MAX);
        let mut files = files;
        files.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.filename.cmp(&b.filename)));
        files
    };
    if files.is_empty() {
        // Not a missing project: the upstreams that would say so are down.
        if let Err(why) = upstreams {
            return with_reason(StatusCode::BAD_GATEWAY, &why);
        }
        return text(StatusCode::NOT_FOUND, format!("no project named {project}"));
    }
    let body = match format {
        Format::Json => json_page(project, &files),
        Format::Html | Format::TextHtml => html_page(project, &files),
    };
    let page = keep(state, project, format, version, body);
    send(parts, format, &page)
}

/// What a file name keeps unencoded in a link: RFC 3986's unreserved.
const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn href(project: &str, filename: &str) -> String {
    format!("../../packages/{project}/{}", utf8_percent_encode(filename, FILE_NAME))
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Only strings and numbers: serializing cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn html_page(project: &str, files: &[FileRow]) -> String {
    let mut html = format!(
        "<!DOCTYPE html>\n<html>\n  <head><meta name=\"pypi:repository-version\" content=\"1.1\"><title>Links for {project}</title></head>\n  <body>\n    <h1>Links for {project}</h1>\n"
    );
    for f in files {
        let mut link = href(project, &f.filename);
        if let Some(sha) = &f.sha256 {
            let _ = write!(link, "#sha256={sha}");
        }
        let _ = write!(html, "    <a href=\"{link}\"");
        if let Some(rp) = &f.requires_python {
            let _ = write!(html, " data-requires-python=\"{}\"", escape(rp));
        }
        if let Some(m) = &f.metadata_sha256 {
            let _ = write!(
                html,
                " data-core-metadata=\"sha256={m}\" data-dist-info-metadata=\"sha256={m}\""
            );
        }
        if let Some(reason) = &f.yanked {
            let _ = write!(html, " data-yanked=\"{}\"", escape(reason));
        }
        let _ = writeln!(html, ">{}</a><br/>", escape(&f.filename));
    }
    html.push_str("  </body>\n</html>\n");
    html
}

fn json_page(project: &str, files: &[FileRow]) -> String {
    let mut versions: Vec<String> = files.iter().map(|f| f.version.clone()).collect();
    versions.sort_unstable();
    versions.dedup();
    // 1.1 promises sizes (PEP 700); files an upstream listed without one make it 1.0.
    let all_sized = files.iter().all(|f| f.size.is_some());
    let files = files
        .iter()
        .map(|f| json::File {
            filename: f.filename.clone(),
            url: href(project, &f.filename),
            hashes: f.sha256.iter().map(|s| ("sha256".to_string(), s.clone())).collect(),
            requires_python: f.requires_python.clone(),
            core_metadata: f
                .metadata_sha256
                .as_ref()
                .map(|m| json::CoreMetadata::Hashes([("sha256".to_string(), m.clone())].into())),
            dist_info_metadata: None,
            size: f.size,
            upload_time: f.upload_time.clone(),
            yanked: json::Yanked::from_reason(f.yanked.as_deref()),
        })
        .collect();
    to_json(&json::ProjectPage {
        meta: json::Meta { api_version: if all_sized { "1.1" } else { "1.0" }.into() },
        name: project.to_string(),
        files,
        versions: all_sized.then_some(versions),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(accept: Option<&str>, query: Option<&str>, expected: Option<Format>) {
        let uri = match query {
            Some(q) => format!("/simple/x/?format={q}"),
            None => "/simple/x/".to_string(),
        };
        let mut request = axum::http::Request::get(uri);
        if let Some(a) = accept {
            request = request.header("accept", a);
        }
        let (parts, ()) = request.body(()).expect("request").into_parts();
        assert_eq!(negotiate(&parts), expected, "{accept:?} {query:?}");
    }

    #[test]
    fn negotiation() {
        // What pip and uv send.
        check(
            Some(
                "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
            ),
            None,
            Some(Format::Json),
        );
        check(Some("text/html"), None, Some(Format::TextHtml));
        check(Some("application/vnd.pypi.simple.latest+html"), None, Some(Format::Html));
        check(None, None, Some(Format::TextHtml));
        check(Some("*/*"), None, Some(Format::TextHtml));
        check(Some("application/json"), None, None);
        check(Some("text/html"), Some("application/vnd.pypi.simple.v1%2Bjson"), Some(Format::Json));
    }

    /// Pages are kept within a budget of bytes, however many or large.
    #[test]
    fn pages_kept_stay_within_their_bytes() {
        let mut pages = Pages::with_limit(10_000);
        let page = |version, size| Page {
            version,
            body: Bytes::from(vec![b'x'; size]),
            etag: "\"e\"".into(),
        };
        for i in 0..100 {
            pages.insert(&format!("p{i}"), Format::Json, page(1, 1000));
            assert!(pages.bytes <= 10_000, "{} bytes kept", pages.bytes);
            let held: usize = pages.map.values().map(|p| p.body.len()).sum();
            assert!(held <= pages.bytes);
        }
        assert!(pages.get("p99", Format::Json, 1).is_some());
        // Too large to keep at all.
        pages.insert("huge", Format::Json, page(1, 20_000));
        assert!(pages.get("huge", Format::Json, 1).is_none());
        // Stale pages make room first.
        pages.insert("p99", Format::Html, page(2, 5000));
        pages.insert("new", Format::Html, page(2, 4000));
        assert!(pages.get("p99", Format::Html, 2).is_some());
        assert!(pages.get("new", Format::Html, 2).is_some());
    }
}
