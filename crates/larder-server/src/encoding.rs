//! How blob bytes travel through the server, whichever door they use: read
//! in chunks on blocking threads a few ahead of the client, as they are or
//! compressed with zstd on the way out; and zstd uploads decoded on the way
//! in, never to more bytes than they may hold.
//!
//! Blobs are stored as they are and compressed when a client asks for zstd.
//! The store links, copies and re-hashes its files as the blobs they name;
//! most clients (Bazel over HTTP, ccache, curl, pip) take plain bytes; and a
//! compressed read from an offset (ByteStream's `read_offset` counts plain
//! bytes) is a seek. The cost, measured by `benches/reapi.rs` on two loaded
//! cores: a zstd read of incompressible bytes at 0.8x the speed of a plain
//! one (600-800 MiB/s), of text at about 1 GiB/s, 80 times smaller.

use std::io::{self, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use larder::Target;

use crate::body::{BodyReader, Upload};

/// How many chunks are read ahead of a client.
const READ_AHEAD: usize = 4;

/// The input read at once when compressing for HTTP.
const HTTP_CHUNK: usize = 1 << 20;

/// The zstd level of blobs compressed on the way out: the fastest, whose
/// ratio on build outputs is within a few percent of the default's.
pub const ZSTD_LEVEL: i32 = 1;

/// Blob bytes that can be read at any offset: an open file, or bytes in
/// memory.
pub trait Positioned: Send + Sync + 'static {
    /// Fills `buf` with the bytes from `offset` on.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Positioned for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl Positioned for Bytes {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let bytes = self
            .get(start..start + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// The bytes `start..start+len` of `source`, in chunks of `chunk` bytes,
/// each read on a blocking thread, a few ahead of the consumer: memory stays
/// at a few chunks whatever the size, and a consumer that stops reading
/// holds no thread.
pub fn chunks(
    source: Arc<dyn Positioned>,
    start: u64,
    len: u64,
    chunk: usize,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let end = start + len;
    futures_util::stream::iter((start..end).step_by(chunk))
        .map(move |offset| {
            let source = source.clone();
            async move {
                let n = (end - offset).min(chunk as u64) as usize;
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; n];
                    source.read_exact_at(&mut buf, offset).map(|()| Bytes::from(buf))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)))
            }
        })
        .buffered(READ_AHEAD)
}

/// One zstd frame of the bytes `start..start+len` of `source`, compressed on
/// blocking threads one input chunk at a time. The compressor's state moves
/// from step to step, so no thread is held while the consumer is slow.
pub fn zstd_chunks(
    source: Arc<dyn Positioned>,
    start: u64,
    len: u64,
    chunk: usize,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct State {
        source: Arc<dyn Positioned>,
        encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
        offset: u64,
        end: u64,
    }
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL);
    let first = match encoder {
        Ok(encoder) => {
            Ok(State { source, encoder: Some(encoder), offset: start, end: start + len })
        }
        Err(e) => Err(e),
    };
    futures_util::stream::unfold(Some(first), move |state| async move {
        let mut state = match state? {
            Ok(state) => state,
            Err(e) => return Some((Err(e), None)),
        };
        let step = tokio::task::spawn_blocking(move || -> io::Result<(Bytes, Option<State>)> {
            // Input until some output comes (zstd keeps up to a block back).
            loop {
                let Some(encoder) = state.encoder.as_mut() else { return Ok((Bytes::new(), None)) };
                if state.offset >= state.end {
                    let rest = state.encoder.take().map(|e| e.finish()).transpose()?;
                    return Ok((Bytes::from(rest.unwrap_or_default()), None));
                }
                let n = (state.end - state.offset).min(chunk as u64) as usize;
                let mut input = vec![0u8; n];
                state.source.read_exact_at(&mut input, state.offset)?;
                state.offset += n as u64;
                encoder.write_all(&input)?;
                let out = std::mem::take(encoder.get_mut());
                if !out.is_empty() {
                    return Ok((Bytes::from(out), Some(state)));
                }
            }
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match step {
            Ok((bytes, next)) => Some((Ok(bytes), next.map(Ok))),
            Err(e) => Some((Err(e), None)),
        }
    })
    .filter(|item| std::future::ready(!matches!(item, Ok(b) if b.is_empty())))
}

/// Whether a request's `Accept-Encoding` takes zstd (with a q-value above 0).
pub fn accepts_zstd(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0)
            });
            coding.eq_ignore_ascii_case("zstd") && !refused
        })
    })
}

/// The 200 answer with the whole blob zstd-compressed: its length is not
/// known ahead, and its ETag is its own (it is another representation).
pub fn zstd_answer(mut headers: HeaderMap, source: Arc<dyn Positioned>, size: u64) -> Response {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let tag = headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim_end_matches('"').to_string());
    if let Some(v) = tag.and_then(|t| HeaderValue::from_str(&format!("{t}+zstd\"")).ok()) {
        headers.insert(header::ETAG, v);
    }
    let body = Body::from_stream(zstd_chunks(source, 0, size, HTTP_CHUNK));
    (StatusCode::OK, headers, body).into_response()
}

/// Whether a request's body is zstd (`Content-Encoding: zstd`).
pub fn is_zstd(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("zstd"))
}

/// Whether HTTP answers for `target` may be zstd-compressed: Bazel's
/// `cas/` and `ac/` paths (as bazel-remote does), not the files that pip or
/// curl fetch, which are mostly compressed already.
pub fn compressible(target: &Target) -> bool {
    match target {
        Target::Digest(_) => true,
        Target::Key(key) => {
            let Some((parent, name)) = key.rsplit_once('/') else { return false };
            let kind = parent.rsplit('/').next().unwrap_or(parent);
            kind == "ac" && name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
        }
    }
}

/// A zstd upload as the plain bytes it decodes to, at most `limit` of them.
/// What goes wrong in decoding is recorded in `failure`, for the answer (the
/// body's own failures are its sender's to tell): more bytes than `limit` is
/// [`Upload::TooLarge`], bytes that do not decode are [`Upload::Broken`].
pub struct ZstdUpload {
    decoder: zstd::stream::read::Decoder<'static, BufReader<BodyReader>>,
    decoded: u64,
    limit: u64,
    failure: Arc<Mutex<Option<Upload>>>,
}

impl ZstdUpload {
    /// Decodes `body`, recording why it could not into `failure`.
    pub fn new(
        body: BodyReader,
        limit: u64,
        failure: Arc<Mutex<Option<Upload>>>,
    ) -> io::Result<ZstdUpload> {
        let decoder = zstd::stream::read::Decoder::new(body)?;
        Ok(ZstdUpload { decoder, decoded: 0, limit, failure })
    }

    fn fail(&self, why: Upload) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        // The first failure is the cause.
        if slot.is_none() {
            *slot = Some(why);
        }
    }
}

impl Read for ZstdUpload {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match self.decoder.read(out) {
            Ok(n) => n,
            Err(e) => {
                self.fail(Upload::Broken(format!("the zstd body does not decode: {e}")));
                return Err(e);
            }
        };
        self.decoded += n as u64;
        if self.decoded > self.limit {
            self.fail(Upload::TooLarge(self.decoded));
            return Err(io::Error::other("the zstd body decodes to too many bytes"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding() {
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).expect("value"));
            accepts_zstd(&headers)
        };
        assert!(check("zstd"));
        assert!(check("gzip, deflate, br, zstd"));
        assert!(check("ZSTD;q=0.5"));
        assert!(!check("zstd;q=0"));
        assert!(!check("gzip"));
        assert!(!check("zstdx"));
    }

    #[test]
    fn bazel_targets_are_compressible() {
        let hex = "a".repeat(64);
        let digest = format!("sha256:{hex}").parse().expect("digest");
        assert!(compressible(&Target::Digest(digest)));
        assert!(compressible(&Target::Key(format!("ac/{hex}"))));
        assert!(compressible(&Target::Key(format!("main/x/ac/{hex}"))));
        assert!(!compressible(&Target::Key("pypi/demo/demo-1.0.tar.gz".into())));
        assert!(!compressible(&Target::Key(format!("cache/{hex}"))));
        assert!(!compressible(&Target::Key("ac/short".into())));
    }

    #[tokio::test]
    async fn compressed_chunks_decode_to_the_range() {
        let data: Bytes = (0..3_000_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let source: Arc<dyn Positioned> = Arc::new(data.clone());
        for (start, len) in [(0, data.len() as u64), (12_345, 5_000_000), (7, 0)] {
            let parts: Vec<Bytes> = zstd_chunks(source.clone(), start, len, 1 << 20)
                .map(|r| r.expect("chunk"))
                .collect()
                .await;
            let frame: Vec<u8> = parts.concat();
            let plain = zstd::stream::decode_all(&frame[..]).expect("decodes");
            assert_eq!(plain, data[start as usize..(start + len) as usize]);
        }
        let plain: Vec<Bytes> =
            chunks(source, 10, 1_000_001, 1 << 18).map(|r| r.expect("chunk")).collect().await;
        assert_eq!(plain.concat(), data[10..1_000_011]);
    }
}
