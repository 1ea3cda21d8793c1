//! A `larder serve` as a remote tier: blobs at `/cas/<hex>`, keys at
//! `/<key>` (which the server answers with the blob's digest in
//! `X-Larder-Digest`), and a key bound to a blob the server has by a PUT of the
//! key with that header and no body.
//!
//! The password is never taken from a command line: it comes from
//! `LARDER_PASSWORD` or `~/.netrc`, for the user the URL names.

use std::fs::File;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};

use super::{Capabilities, Remote, RemoteBlob, RemoteConfig, RemoteEntry, RemoteStats};
use crate::digest::Digest;
use crate::env::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::http::HttpOptions;
use crate::http::download::Download;
use crate::percent::encode_path;
use crate::store::Target;

/// A larder server.
pub struct LarderHttp {
    /// Its configured name, for messages.
    name: String,
    /// `scheme://host[:port][/path]`, without credentials or a final `/`.
    base: String,
    user: Option<String>,
    password: Option<String>,
    client: Client,
    /// The client's timeout, which an upload stretches by its size.
    timeout: std::time::Duration,
    /// Timeouts and retries, for reads that resume.
    http: HttpOptions,
}

impl LarderHttp {
    /// The server a configuration entry names.
    pub fn new(config: &RemoteConfig, http: &HttpOptions, env: &Environment) -> Result<LarderHttp> {
        let endpoint = super::Endpoint::parse_in(&config.url, env).map_err(|why| {
            Error::new(ErrorKind::Config, format!("remote {}: {why}", config.name))
        })?;
        let client = crate::http::blocking_client(http)?;
        Ok(LarderHttp {
            name: config.name.clone(),
            base: endpoint.base,
            user: endpoint.user,
            password: endpoint.password,
            client,
            timeout: http.timeout,
            http: *http,
        })
    }

    fn url(&self, target: &Target) -> String {
        match target {
            Target::Digest(d) => format!("{}/cas/{}", self.base, d.hex()),
            Target::Key(k) => format!("{}/{}", self.base, encode_path(k)),
        }
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.user {
            Some(user) => request.basic_auth(user, self.password.as_deref()),
            None => request,
        }
    }

    fn send(&self, request: RequestBuilder, what: &str) -> Result<Response> {
        self.authed(request).send().map_err(|e| {
            let why = if e.is_timeout() {
                "it did not answer in time".to_string()
            } else if e.is_connect() {
                "cannot connect".to_string()
            } else {
                e.without_url().to_string()
            };
            Error::new(
                ErrorKind::Io,
                format!(
                    "remote {} ({}): {what}: {why}; check that the server runs, or use --local",
                    self.name, self.base
                ),
            )
        })
    }

    /// An error for an answer that is neither success nor "not there".
    fn refused(&self, response: Response, what: &str) -> Error {
        let status = response.status();
        let said = response.text().unwrap_or_default();
        let said = said.lines().next().unwrap_or("").trim();
        let user = self.user.as_deref().unwrap_or("");
        let (kind, fix) = match status {
            StatusCode::UNAUTHORIZED if self.user.is_none() => (
                ErrorKind::PermissionDenied,
                "it wants credentials: put a user in the remote's url (http://USER@host) and the password in LARDER_PASSWORD or ~/.netrc".to_string(),
            ),
            StatusCode::UNAUTHORIZED => (
                ErrorKind::PermissionDenied,
                format!("it refused {user}'s credentials: set LARDER_PASSWORD or put {user}'s password in ~/.netrc"),
            ),
            StatusCode::FORBIDDEN => (ErrorKind::PermissionDenied, format!("it refused: {said}")),
            StatusCode::PAYLOAD_TOO_LARGE => {
                (ErrorKind::StoreFull, format!("it takes nothing that large: {said}"))
            }
            StatusCode::INSUFFICIENT_STORAGE => (ErrorKind::StoreFull, format!("it is full: {said}")),
            s => (ErrorKind::Io, format!("it answered {s}: {said}")),
        };
        Error::new(kind, format!("remote {} ({}): {what}: {fix}", self.name, self.base))
    }
}

impl Remote for LarderHttp {
    fn location(&self) -> String {
        self.base.clone()
    }

    fn open(&self, target: &Target) -> Result<Option<RemoteBlob>> {
        let what = format!("reading {target}");
        let url = self.url(target);
        let response = self.send(self.client.get(&url), &what)?;
        match response.status() {
            StatusCode::OK => {
                let digest = header_digest(&response);
                let size = response.content_length();
                // A transfer that breaks off resumes where it stopped (the
                // digest as ETag guards against a key rebound meanwhile).
                let credentials = self.user.clone().map(|u| (u, self.password.clone()));
                let reader = Download::continue_from(response, &url, &self.http, credentials)
                    .map_err(|e| Error::new(ErrorKind::Io, format!("remote {}: {e}", self.name)))?;
                Ok(Some(RemoteBlob { reader: Box::new(reader), digest, size }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refused(response, &what)),
        }
    }

    fn head(&self, target: &Target) -> Result<Option<RemoteEntry>> {
        let what = format!("looking for {target}");
        let response = self.send(self.client.head(self.url(target)), &what)?;
        match response.status() {
            StatusCode::OK => Ok(Some(RemoteEntry {
                digest: header_digest(&response),
                size: response
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok()),
            })),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.refused(response, &what)),
        }
    }

    fn upload(&self, digest: &Digest, file: File, size: u64) -> Result<bool> {
        if self.head(&Target::Digest(*digest))?.is_some() {
            return Ok(false);
        }
        let what = format!("uploading {digest}");
        let body = reqwest::blocking::Body::sized(file, size);
        let allowed = crate::http::upload_timeout(self.timeout, size);
        let request =
            self.client.put(self.url(&Target::Digest(*digest))).body(body).timeout(allowed);
        let response = self.send(request, &what)?;
        if response.status().is_success() { Ok(true) } else { Err(self.refused(response, &what)) }
    }

    fn bind(&self, key: &str, digest: &Digest) -> Result<()> {
        let what = format!("binding {key}");
        let request = self
            .client
            .put(self.url(&Target::Key(key.to_string())))
            .header("x-larder-digest", digest.to_string())
            .header(reqwest::header::CONTENT_LENGTH, "0");
        let response = self.send(request, &what)?;
        if response.status().is_success() { Ok(()) } else { Err(self.refused(response, &what)) }
    }

    fn delete(&self, target: &Target) -> Result<bool> {
        let what = format!("removing {target}");
        let response = self.send(self.client.delete(self.url(target)), &what)?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.refused(response, &what)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        // The server's WebDAV door: one PROPFIND (Depth 1) per folder.
        // The path part of the base: hrefs are absolute paths on the server.
        let base_path = url::Url::parse(&self.base)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let start = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let mut folders = vec![start.to_string()];
        let mut keys = Vec::new();
        while let Some(folder) = folders.pop() {
            let what = format!("listing {}", if folder.is_empty() { "/" } else { &folder });
            let method = reqwest::Method::from_bytes(b"PROPFIND")
                .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
            let url = format!("{}/{}", self.base, encode_path(&folder));
            let request = self.client.request(method, url).header("depth", "1");
            let response = self.send(request, &what)?;
            match response.status().as_u16() {
                207 => {}
                404 => continue,
                _ => return Err(self.refused(response, &what)),
            }
            let body = response.text().map_err(|e| {
                Error::new(ErrorKind::Io, format!("remote {}: {what}: {e}", self.name))
            })?;
            let paths = hrefs(&body).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("remote {}: {what}: the answer is not WebDAV XML: {e}", self.name),
                )
            })?;
            for href in paths {
                let Some(path) = href.strip_prefix(&base_path).and_then(|p| p.strip_prefix('/'))
                else {
                    continue;
                };
                if path == folder {
                    continue;
                }
                if path.ends_with('/') {
                    // Only folders that may hold keys with the prefix.
                    if path.starts_with(prefix) || prefix.starts_with(path) {
                        folders.push(path.to_string());
                    }
                } else if path.starts_with(prefix) {
                    keys.push(path.to_string());
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { write: true, delete: true, list: true }
    }

    fn stats(&self) -> Result<RemoteStats> {
        let what = "reading its status";
        let response = self.send(self.client.get(format!("{}/status", self.base)), what)?;
        if !response.status().is_success() {
            return Err(self.refused(response, what));
        }
        let status: serde_json::Value = serde_json::from_reader(response).map_err(|e| {
            Error::new(ErrorKind::Io, format!("remote {}: /status is not JSON: {e}", self.name))
        })?;
        Ok(RemoteStats {
            entries: status["entries"].as_u64(),
            bytes: status["bytes"].as_u64(),
            capacity: status["capacity"].as_u64(),
        })
    }
}

fn header_digest(response: &Response) -> Option<Digest> {
    response.headers().get("x-larder-digest")?.to_str().ok()?.parse().ok()
}

/// The paths (`href`s in the `DAV:` namespace, whatever its prefix) of a
/// multistatus answer, unescaped and decoded.
fn hrefs(xml: &str) -> Result<Vec<String>, String> {
    use quick_xml::events::Event;
    use quick_xml::name::{Namespace, ResolveResult};
    let mut reader = quick_xml::NsReader::from_str(xml);
    let mut out = Vec::new();
    // The raw text of the href being read, escapes and all.
    let mut href: Option<String> = None;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| e.to_string())?;
        match event {
            Event::Start(e)
                if ns == ResolveResult::Bound(Namespace("DAV:"))
                    && e.local_name().as_ref() == "href" =>
            {
                href = Some(String::new());
            }
            Event::Text(t) => {
                if let Some(h) = href.as_mut() {
                    h.push_str(t.as_ref());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(h) = href.as_mut() {
                    h.push('&');
                    h.push_str(r.as_ref());
                    h.push(';');
                }
            }
            Event::End(_) => {
                if let Some(raw) = href.take() {
                    let text =
                        quick_xml::escape::unescape(raw.trim()).map_err(|e| e.to_string())?;
                    out.push(crate::percent::decode_lossy(&text));
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hrefs;

    /// Regression: hrefs were found by searching for `<D:href>`, so a server
    /// that names the DAV namespace with another prefix listed nothing.
    #[test]
    fn hrefs_are_read_in_the_dav_namespace_whatever_its_prefix() {
        let larder = r#"<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response>
            <D:href>/base/a%20b</D:href></D:response><D:response><D:href>/base/x&amp;y/</D:href>
            </D:response></D:multistatus>"#;
        assert_eq!(hrefs(larder).expect("xml"), ["/base/a b", "/base/x&y/"]);
        let other = r#"<multistatus xmlns="DAV:" xmlns:o="urn:other"><response>
            <href>/k/%C3%A9</href><o:href>/not/this</o:href></response></multistatus>"#;
        assert_eq!(hrefs(other).expect("xml"), ["/k/é"]);
        let lower = r#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>/k</d:href>
            </d:response></d:multistatus>"#;
        assert_eq!(hrefs(lower).expect("xml"), ["/k"]);
        assert!(hrefs("<D:multistatus xmlns:D=\"DAV:\"><D:href>/k</D:multistatus>").is_err());
    }
}
