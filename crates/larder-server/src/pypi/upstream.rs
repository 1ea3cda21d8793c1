//! Upstream indexes: their project pages fetched (JSON if they speak it, else
//! HTML), kept, revalidated with their ETag once they are older than the TTL,
//! one refresh of a project at a time, and used stale when the upstream is
//! slow or down. Their files are fetched by `flight.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};

use super::index::{FileRow, UpstreamPage};
use super::{PypiState, json, names, now};

const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01";

/// When each (upstream, project) page was last checked by this index, and
/// why the check failed if it did.
#[derive(Default)]
pub struct Checked(HashMap<(String, String), (Instant, Option<String>)>);

/// The most projects remembered as checked; past it the oldest are asked again.
const CHECKED_LIMIT: usize = 100_000;

/// The largest upstream page read: PyPI's largest are a few MiB.
pub const PAGE_LIMIT: u64 = 32 << 20;

/// How long a failed check is remembered: meanwhile requests are answered
/// from what was listed (or told why there is nothing) without waiting on
/// the upstream again.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(30);

/// How long a request waits on a refresh when it has a page to fall back
/// on; past it, the page as it was is served and the refresh goes on.
pub const STALE_GRACE: Duration = Duration::from_secs(2);

/// What the last check of `upstream`'s page of `project` said, if it is
/// recent enough to trust: `Some(None)` fresh, `Some(Some(why))` failed lately.
fn recent(state: &PypiState, upstream: &str, project: &str) -> Option<Option<String>> {
    let checked = state.checked.lock().unwrap_or_else(|p| p.into_inner());
    let (at, failure) = checked.0.get(&(upstream.to_string(), project.to_string()))?;
    let trusted = if failure.is_some() { FAILURE_MEMORY } else { state.ttl };
    (at.elapsed() < trusted).then(|| failure.clone())
}

fn mark_checked(state: &PypiState, upstream: &str, project: &str, failure: Option<String>) {
    let mut checked = state.checked.lock().unwrap_or_else(|p| p.into_inner());
    let map = &mut checked.0;
    if map.len() >= CHECKED_LIMIT {
        map.retain(|_, (t, _)| t.elapsed() < state.ttl);
        if map.len() >= CHECKED_LIMIT {
            map.clear();
        }
    }
    map.insert((upstream.to_string(), project.to_string()), (Instant::now(), failure));
}

/// Why the upstreams could not be checked lately, if none could and every
/// check is recent; `None` if one is fresh or some must be asked.
fn all_recent(state: &PypiState, project: &str) -> Option<Result<(), String>> {
    let mut failures = Vec::new();
    for u in &state.upstreams {
        match recent(state, u, project)? {
            None => return Some(Ok(())),
            Some(why) => failures.push(why),
        }
    }
    Some(if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) })
}

/// Brings what the upstreams list for `project` up to date, unless this
/// server has files of its own for it (which shadow theirs). One refresh of
/// a project runs at a time, apart from the requests that wait on it: one
/// with a listing to fall back on waits [`STALE_GRACE`] at most, one without
/// the upstream timeout. `Err`: no upstream could be checked, and why.
pub async fn refresh(state: &Arc<PypiState>, project: &str) -> Result<(), String> {
    if let Some(outcome) = all_recent(state, project) {
        return outcome;
    }
    let mut done = {
        let mut running = state.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        match running.get(project) {
            Some(done) => done.clone(),
            None => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                running.insert(project.to_string(), rx.clone());
                let (state, project) = (state.clone(), project.to_string());
                tokio::spawn(async move {
                    refresh_all(&state, &project).await;
                    state.refreshing.lock().unwrap_or_else(|p| p.into_inner()).remove(&project);
                    tx.send_replace(true);
                });
                rx
            }
        }
    };
    let listed = {
        let pypi = state.clone();
        let p = project.to_string();
        tokio::task::spawn_blocking(move || pypi.index.has_files(&p))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false)
    };
    let wait = if listed { STALE_GRACE } else { state.upstream_timeout };
    if tokio::time::timeout(wait, done.wait_for(|d| *d)).await.is_err() {
        if listed {
            tracing::warn!(
                "upstream: {project}: no answer within {} s; serving what was listed before while the refresh goes on",
                wait.as_secs()
            );
            return Ok(());
        }
        return Err(format!("no upstream answered for {project} within {} s", wait.as_secs()));
    }
    all_recent(state, project).unwrap_or(Ok(()))
}

/// Checks every upstream's page of `project` that is not fresh.
async fn refresh_all(state: &Arc<PypiState>, project: &str) {
    let pypi = state;
    let local = {
        let pypi = pypi.clone();
        let p = project.to_string();
        tokio::task::spawn_blocking(move || pypi.index.files_of(&p))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|files| files.iter().any(FileRow::is_local))
    };
    if local {
        for u in &pypi.upstreams {
            mark_checked(pypi, u, project, None);
        }
        return;
    }
    for upstream in pypi.upstreams.clone() {
        if recent(pypi, &upstream, project).is_some() {
            continue;
        }
        let known = {
            let pypi = pypi.clone();
            let (u, p) = (upstream.to_string(), project.to_string());
            tokio::task::spawn_blocking(move || pypi.index.upstream_page(&u, &p))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        };
        match refresh_one(state, &upstream, project, known.as_ref()).await {
            Ok(changed) => {
                mark_checked(pypi, &upstream, project, None);
                if changed {
                    pypi.changed();
                }
            }
            Err(e) => {
                // Stale is better than nothing: what was listed stays.
                if known.as_ref().is_some_and(|k| !k.missing) {
                    tracing::warn!(
                        "upstream {upstream}: {project}: {e}; serving what was listed before"
                    );
                } else {
                    tracing::warn!(
                        "upstream {upstream}: {project}: {e}; nothing was listed before"
                    );
                }
                mark_checked(pypi, &upstream, project, Some(format!("upstream {upstream}: {e}")));
            }
        }
    }
}

/// Fetches one upstream's page; true if what it lists changed.
async fn refresh_one(
    state: &Arc<PypiState>,
    upstream: &str,
    project: &str,
    known: Option<&UpstreamPage>,
) -> Result<bool, String> {
    let pypi = state;
    let url = format!("{upstream}{project}/");
    let mut request = pypi.client.get(&url).header(header::ACCEPT, ACCEPT);
    if let Some(etag) = known.and_then(|k| k.etag.as_ref()) {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let response = request.send().await.map_err(|e| format!("cannot reach it ({e})"))?;
    let status = response.status();
    let save = |rows: Vec<FileRow>, etag: Option<String>| {
        let pypi = pypi.clone();
        let (u, p) = (upstream.to_string(), project.to_string());
        async move {
            tokio::task::spawn_blocking(move || {
                pypi.index.replace_upstream(&u, &p, &rows, etag.as_deref(), now())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
        }
    };
    if status == StatusCode::NOT_MODIFIED {
        let pypi = pypi.clone();
        let (u, p) = (upstream.to_string(), project.to_string());
        let _ = tokio::task::spawn_blocking(move || pypi.index.touch_upstream(&u, &p, now())).await;
        return Ok(false);
    }
    if status == StatusCode::NOT_FOUND {
        // Nothing listed before and nothing now: no change to write.
        if known.is_none() {
            return Ok(false);
        }
        save(Vec::new(), None).await?;
        return Ok(true);
    }
    if !status.is_success() {
        return Err(format!("it answered {status}"));
    }
    let base = response.url().clone();
    let etag =
        response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = read_page(response, PAGE_LIMIT).await?;
    let rows = if content_type.starts_with("application/vnd.pypi.simple.v1+json") {
        parse_json(&body, &base, upstream, project)?
    } else {
        parse_html(&body, &base, upstream, project)
    };
    save(rows, etag).await?;
    Ok(true)
}

/// Reads a page whole, up to `limit` bytes: a larger one is an error, not
/// memory taken.
async fn read_page(mut response: reqwest::Response, limit: u64) -> Result<String, String> {
    let too_large = || format!("the page is larger than {} MiB", limit >> 20);
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) =
        response.chunk().await.map_err(|e| format!("the page broke off ({e})"))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    // Valid UTF-8 (as pages are) becomes a String without a copy.
    Ok(String::from_utf8(body)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// A sha256 as 64 lowercase hex digits, or nothing: what an upstream gives
/// is checked before it is trusted or written into a page.
fn sha256_hex(text: &str) -> Option<String> {
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_lowercase())
}

fn resolve(base: &reqwest::Url, href: &str) -> Option<(String, Option<String>)> {
    let url = base.join(href).ok()?;
    let sha = url.fragment().and_then(|f| f.strip_prefix("sha256=")).and_then(sha256_hex);
    let mut plain = url.clone();
    plain.set_fragment(None);
    Some((plain.to_string(), sha))
}

fn row(upstream: &str, project: &str, filename: &str, url: String) -> Option<FileRow> {
    let (listed_project, version) = match names::parse_filename(filename) {
        Some(dist) => (dist.project, dist.version),
        None => names::parse_legacy(filename)?,
    };
    (listed_project == project).then(|| FileRow {
        filename: filename.to_string(),
        project: project.to_string(),
        version,
        sha256: None,
        size: None,
        upload_time: None,
        requires_python: None,
        metadata_sha256: None,
        yanked: None,
        origin: upstream.to_string(),
        url: Some(url),
        path: None,
        stamp: None,
    })
}

fn parse_json(
    body: &str,
    base: &reqwest::Url,
    upstream: &str,
    project: &str,
) -> Result<Vec<FileRow>, String> {
    let page: json::ProjectPage =
        serde_json::from_str(body).map_err(|e| format!("a bad JSON page ({e})"))?;
    Ok(page
        .files
        .into_iter()
        .filter_map(|f| {
            let (url, fragment_sha) = resolve(base, &f.url)?;
            let mut r = row(upstream, project, &f.filename, url)?;
            r.sha256 = f.hashes.get("sha256").and_then(|h| sha256_hex(h)).or(fragment_sha);
            r.size = f.size;
            r.upload_time = f.upload_time;
            r.requires_python = f.requires_python;
            r.metadata_sha256 = f
                .core_metadata
                .or(f.dist_info_metadata)
                .as_ref()
                .and_then(json::CoreMetadata::sha256)
                .and_then(sha256_hex);
            r.yanked = f.yanked.reason();
            Some(r)
        })
        .collect())
}

/// Reads `body` as an upstream's project page, both as HTML and as JSON.
#[cfg(fuzzing)]
pub(crate) fn parse_page_for_fuzzing(body: &str) {
    let base = reqwest::Url::parse("https://upstream.example/simple/fuzz/").expect("a URL");
    let _ = parse_html(body, &base, "https://upstream.example/simple/", "fuzz");
    let _ = parse_json(body, &base, "https://upstream.example/simple/", "fuzz");
}

/// Reads the `<a>` elements of a PEP 503 page, as browsers would: tags and
/// attribute names in any case, values in double, single or no quotes.
fn parse_html(body: &str, base: &reqwest::Url, upstream: &str, project: &str) -> Vec<FileRow> {
    let mut rows = Vec::new();
    let mut at = 0;
    while let Some(found) = find_ascii_ci(body, at, "<a") {
        let start = found + 2;
        at = start;
        if !body[start..].starts_with(|c: char| c.is_ascii_whitespace()) {
            continue; // <abbr>, <area>...
        }
        let Some((attrs, length)) = attributes(&body[start..]) else { break };
        let text_start = start + length;
        let Some(close) = find_ascii_ci(body, text_start, "</a") else { break };
        let filename = unescape(body[text_start..close].trim());
        at = close;
        let attr = |name: &str| attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let Some(Some(href)) = attr("href") else { continue };
        let Some((url, sha)) = resolve(base, &href) else { continue };
        let Some(mut r) = row(upstream, project, &filename, url) else { continue };
        r.sha256 = sha;
        r.requires_python = attr("data-requires-python").flatten();
        r.metadata_sha256 = attr("data-core-metadata")
            .or_else(|| attr("data-dist-info-metadata"))
            .flatten()
            .and_then(|m| m.strip_prefix("sha256=").and_then(sha256_hex));
        r.yanked = attr("data-yanked").map(Option::unwrap_or_default);
        rows.push(r);
    }
    rows
}

/// Where `needle` (ASCII, lower case) first is in `text` from `from`, in any
/// case; without a lowered copy of a page that may be megabytes.
fn find_ascii_ci(text: &str, from: usize, needle: &str) -> Option<usize> {
    let (hay, needle) = (text.as_bytes(), needle.as_bytes());
    let first = needle[0];
    let mut at = from;
    while at + needle.len() <= hay.len() {
        let next = at + hay[at..].iter().position(|b| *b == first)?;
        if hay.get(next..next + needle.len()).is_some_and(|w| w.eq_ignore_ascii_case(needle)) {
            return Some(next);
        }
        at = next + 1;
    }
    None
}

/// The attributes of a tag whose name was read, up to its `>`: names in
/// lower case, values unescaped (`None` for a bare name), and how many bytes
/// the tag took; `None` if it never ends.
#[allow(clippy::type_complexity)]
fn attributes(tag: &str) -> Option<(Vec<(String, Option<String>)>, usize)> {
    let bytes = tag.as_bytes();
    let space = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_whitespace);
    let mut attrs = Vec::new();
    let mut i = 0;
    loop {
        while space(i) || bytes.get(i) == Some(&b'/') {
            i += 1;
        }
        match bytes.get(i)? {
            b'>' => return Some((attrs, i + 1)),
            b'=' => {
                i += 1; // a stray `=`
                continue;
            }
            _ => {}
        }
        let name_start = i;
        while bytes.get(i).is_some_and(|b| !b.is_ascii_whitespace() && !b"=>/".contains(b)) {
            i += 1;
        }
        let name = tag[name_start..i].to_ascii_lowercase();
        while space(i) {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            attrs.push((name, None));
            continue;
        }
        i += 1;
        while space(i) {
            i += 1;
        }
        let value = match bytes.get(i)? {
            quote @ (b'"' | b'\'') => {
                let end = i + 1 + tag[i + 1..].find(char::from(*quote))?;
                let value = &tag[i + 1..end];
                i = end + 1;
                value
            }
            _ => {
                let value_start = i;
                while bytes.get(i).is_some_and(|b| !b.is_ascii_whitespace() && *b != b'>') {
                    i += 1;
                }
                &tag[value_start..i]
            }
        };
        attrs.push((name, Some(unescape(value))));
    }
}

/// HTML text as it reads: entities replaced (text with an entity XML does
/// not know is kept as it is).
fn unescape(text: &str) -> String {
    match quick_xml::escape::unescape(text) {
        Ok(plain) => plain.into_owned(),
        Err(_) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_pages_of_other_indexes() {
        let base = reqwest::Url::parse("http://up.example/simple/pkg/").expect("url");
        let body = r#"<html><body>
            <a href="../../packages/pkg-1.0-py3-none-any.whl#sha256=ABC{A}" data-requires-python="&gt;=3.8" data-dist-info-metadata="sha256={D}">pkg-1.0-py3-none-any.whl</a><br/>
            <a href="https://files.example/pkg-1.0.tar.gz#sha256=abc&quot;&gt;&lt;script&gt;" data-yanked data-dist-info-metadata="sha256=def">pkg-1.0.tar.gz</a>
            <a href="other-1.0.tar.gz">other-1.0.tar.gz</a>
        </body></html>"#
            .replace("{A}", &"a".repeat(61))
            .replace("{D}", &"d".repeat(64));
        let rows = parse_html(&body, &base, "http://up.example/simple/", "pkg");
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            rows[0].url.as_deref(),
            Some("http://up.example/packages/pkg-1.0-py3-none-any.whl")
        );
        assert_eq!(rows[0].sha256, Some(format!("abc{}", "a".repeat(61))));
        assert_eq!(rows[0].requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(rows[0].metadata_sha256, Some("d".repeat(64)));
        assert_eq!(rows[1].yanked.as_deref(), Some(""));
        // Hashes that are not hashes are dropped, not copied into pages.
        assert_eq!((rows[1].sha256.as_deref(), rows[1].metadata_sha256.as_deref()), (None, None));
        assert_eq!(rows[1].url.as_deref(), Some("https://files.example/pkg-1.0.tar.gz"));
    }

    #[test]
    fn html_in_any_case_and_any_quotes() {
        let base = reqwest::Url::parse("http://up.example/simple/pkg/").expect("url");
        let body = format!(
            "<HTML><abbr title=x>pkg-0.1.tar.gz</abbr>\n\
             <A HREF='pkg-1.0.tar.gz#sha256={a}' DATA-REQUIRES-PYTHON='&gt;=3.8' data-yanked>pkg-1.0.tar.gz</A>\n\
             <a\thref=pkg-2.0.tar.gz data-yanked=\"a > b\" >pkg-2.0.tar.gz</a >\n\
             <a title=\"<a href='x'>\" href=\"pkg-3.0.tar.gz\">pkg-3.0.tar.gz</a>\n\
             <a href=\"pkg-4.0.tar.gz\">pkg-4.0&period;tar.gz</a>",
            a = "a".repeat(64)
        );
        let rows = parse_html(&body, &base, "http://up.example/simple/", "pkg");
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (r.filename.as_str(), r.url.as_deref(), r.sha256.is_some(), r.yanked.as_deref())
            })
            .collect();
        let url = |f: &str| format!("http://up.example/simple/pkg/{f}");
        assert_eq!(
            got,
            [
                ("pkg-1.0.tar.gz", Some(url("pkg-1.0.tar.gz").as_str()), true, Some("")),
                ("pkg-2.0.tar.gz", Some(url("pkg-2.0.tar.gz").as_str()), false, Some("a > b")),
                ("pkg-3.0.tar.gz", Some(url("pkg-3.0.tar.gz").as_str()), false, None),
            ]
        );
        assert_eq!(rows[0].requires_python.as_deref(), Some(">=3.8"));
    }
}
