//! The part of WebDAV that sccache's backend (OpenDAL) and other clients
//! send: PROPFIND at depth 0 and 1, and MKCOL. Folders are not stored: a
//! folder is the set of keys under a path, so every folder path exists, and
//! MKCOL has nothing to do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use larder::{KeyEntry, Target};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use quick_xml::escape::escape;

use crate::paths::Resource;
use crate::respond::{self, http_date, text};
use crate::state::Core;

/// Children listed by one PROPFIND at most.
const LISTING_LIMIT: usize = 10_000;
/// The largest PROPFIND body read.
const BODY_LIMIT: usize = 64 << 10;

/// One entry of a multistatus answer.
struct Entry {
    href: String,
    collection: bool,
    size: u64,
    modified: i64,
    etag: Option<String>,
}

/// Lists a key or a folder of keys; folders are dated `now`.
pub async fn propfind(
    core: &Arc<Core>,
    parts: &Parts,
    body: Body,
    resource: Resource,
    now: i64,
) -> Response {
    let depth = match parts.headers.get("depth").and_then(|v| v.to_str().ok()) {
        None | Some("1") | Some("infinity") => 1,
        Some("0") => 0,
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Depth must be 0, 1 or infinity, not {other}"),
            );
        }
    };
    let body =
        match tokio::time::timeout(core.uploads.timeout, axum::body::to_bytes(body, BODY_LIMIT))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "the PROPFIND body is too large");
            }
            Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the PROPFIND body did not come"),
        };
    if let Err(why) = check_propfind_body(&body) {
        return text(StatusCode::BAD_REQUEST, format!("malformed PROPFIND body: {why}"));
    }
    let prefix = match &resource {
        Resource::Root => String::new(),
        Resource::Folder(p) => p.clone(),
        Resource::Key(k) => format!("{k}/"),
        Resource::Blob(_) => String::new(),
    };
    let lookup = resource.clone();
    let listing = core
        .pool
        .run(move |store| {
            let exact = match &lookup {
                Resource::Key(k) => store.lookup(&Target::Key(k.clone()))?,
                Resource::Blob(d) => store.lookup(&Target::Digest(*d))?,
                _ => None,
            }
            .map(|f| (f.size, f.modified, f.digest));
            let limit = if depth == 0 { 1 } else { LISTING_LIMIT };
            let under = if matches!(lookup, Resource::Blob(_)) {
                Vec::new()
            } else {
                store.keys_with_prefix(&prefix, limit)?
            };
            Ok((exact, under))
        })
        .await;
    let (exact, under) = match listing {
        Ok(found) => found,
        Err(e) => return respond::error(&e),
    };
    let path = request_path(&resource);
    let mut entries = Vec::new();
    match (&resource, exact) {
        (Resource::Key(_) | Resource::Blob(_), Some((size, modified, digest))) => {
            entries.push(Entry {
                href: encode_href(&path),
                collection: false,
                size,
                modified,
                etag: Some(format!("\"{digest}\"")),
            });
        }
        (Resource::Key(_), None) if under.is_empty() => {
            return text(StatusCode::NOT_FOUND, format!("{path} is not in the cache"));
        }
        (Resource::Blob(d), None) => {
            return text(StatusCode::NOT_FOUND, format!("{d} is not in the cache"));
        }
        _ => {
            let folder = if path.ends_with('/') { path.clone() } else { format!("{path}/") };
            entries.push(Entry {
                href: encode_href(&folder),
                collection: true,
                size: 0,
                modified: now,
                etag: None,
            });
            if depth == 1 {
                entries.extend(children(&folder, &under, now));
            }
        }
    }
    multistatus(&entries)
}

/// The immediate children of `folder` among the keys under it.
fn children(folder: &str, under: &[KeyEntry], now: i64) -> Vec<Entry> {
    let prefix_len = folder.len() - 1; // keys lack the leading `/`
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    for key in under {
        let rest = &key.key[prefix_len.min(key.key.len())..];
        match rest.split_once('/') {
            Some((child, _)) => {
                let href = format!("{folder}{child}/");
                out.entry(href.clone()).or_insert(Entry {
                    href: encode_href(&href),
                    collection: true,
                    size: 0,
                    modified: now,
                    etag: None,
                });
            }
            None => {
                let href = format!("{folder}{rest}");
                out.insert(
                    href.clone(),
                    Entry {
                        href: encode_href(&href),
                        collection: false,
                        size: key.size,
                        modified: key.modified,
                        etag: Some(format!("\"{}\"", key.digest)),
                    },
                );
            }
        }
    }
    out.into_values().collect()
}

fn request_path(resource: &Resource) -> String {
    match resource {
        Resource::Root => "/".to_string(),
        Resource::Folder(p) | Resource::Key(p) => format!("/{p}"),
        Resource::Blob(d) => format!("/cas/{}", d.hex()),
    }
}

/// Accepts an empty body or a well-formed XML document whose root is
/// `propfind`; what it asks for does not change the answer.
fn check_propfind_body(body: &[u8]) -> Result<(), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut buf = Vec::new();
    let mut depth = 0usize;
    let mut root = None;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(quick_xml::events::Event::Start(e)) => {
                if depth == 0 {
                    root = Some(e.local_name().into_inner().to_string());
                }
                depth += 1;
            }
            Ok(quick_xml::events::Event::Empty(e)) if depth == 0 => {
                root = Some(e.local_name().into_inner().to_string());
            }
            Ok(quick_xml::events::Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        buf.clear();
    }
    if depth != 0 {
        return Err("the document ends inside an element".into());
    }
    match root.as_deref() {
        Some("propfind") => Ok(()),
        Some(other) => Err(format!("the root element is `{other}`, not `propfind`")),
        None => Err("no element".into()),
    }
}

fn multistatus(entries: &[Entry]) -> Response {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">\n",
    );
    for e in entries {
        let _ = write!(xml, "<D:response><D:href>{}</D:href><D:propstat><D:prop>", escape(&e.href));
        if e.collection {
            xml.push_str("<D:resourcetype><D:collection/></D:resourcetype>");
        } else {
            xml.push_str("<D:resourcetype/>");
            let _ = write!(xml, "<D:getcontentlength>{}</D:getcontentlength>", e.size);
            xml.push_str("<D:getcontenttype>application/octet-stream</D:getcontenttype>");
        }
        let _ = write!(xml, "<D:getlastmodified>{}</D:getlastmodified>", http_date(e.modified));
        if let Some(tag) = &e.etag {
            let _ = write!(xml, "<D:getetag>{}</D:getetag>", escape(tag));
        }
        xml.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>\n");
    }
    xml.push_str("</D:multistatus>\n");
    let mut response = (StatusCode::MULTI_STATUS, Body::from(xml)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
    response
}

/// Makes a folder: nothing to do, unless a key has its name.
pub async fn mkcol(core: &Arc<Core>, resource: Resource) -> Response {
    let key = match resource {
        Resource::Root => return text(StatusCode::METHOD_NOT_ALLOWED, "/ exists"),
        Resource::Blob(d) => return text(StatusCode::METHOD_NOT_ALLOWED, format!("{d} is a blob")),
        Resource::Folder(p) => p.trim_end_matches('/').to_string(),
        Resource::Key(k) => k,
    };
    let probe = key.clone();
    match core.pool.run(move |store| store.lookup(&Target::Key(probe))).await {
        Ok(Some(_)) => {
            text(StatusCode::METHOD_NOT_ALLOWED, format!("{key} is a key, not a folder"))
        }
        // Folders are the keys under them: nothing to make.
        Ok(None) => StatusCode::CREATED.into_response(),
        Err(e) => respond::error(&e),
    }
}

/// What a path keeps unencoded in an href: RFC 3986's `pchar`s and `/`.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Percent-encodes a path for an href, keeping `/`.
fn encode_href(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propfind_bodies() {
        assert!(check_propfind_body(b"").is_ok());
        assert!(
            check_propfind_body(
                b"<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:allprop/></D:propfind>"
            )
            .is_ok()
        );
        assert!(
            check_propfind_body(
                b"<propfind xmlns=\"DAV:\"><prop><getlastmodified/></prop></propfind>"
            )
            .is_ok()
        );
        assert!(check_propfind_body(b"<D:propfind xmlns:D=\"DAV:\"><D:allprop>").is_err());
        assert!(check_propfind_body(b"<lock/>").is_err());
        assert!(check_propfind_body(b"not xml at all <").is_err());
    }

    #[test]
    fn hrefs() {
        assert_eq!(encode_href("/a b/c%d"), "/a%20b/c%25d");
    }
}
