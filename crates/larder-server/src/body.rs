//! Bodies into the store: the async side reads a body (a PUT, a multipart
//! field, an upstream's file; a ByteStream Write feeds the channel itself)
//! and pumps its chunks through a bounded channel to the store, which reads
//! them as a `Read` on a blocking thread. The end is said explicitly
//! (`BodyPart::End`): a channel that closes without it is a broken body, so
//! a sender that vanished midway is never taken for a whole one.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::metrics::Metrics;

/// Why a body stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// Past the limit, after this many bytes.
    TooLarge(u64),
    /// Silent for longer than the timeout.
    TimedOut,
    Broken(String),
    /// Neither the store nor anyone else reads it any more (the store
    /// failed: its error says why).
    NotRead,
}

impl fmt::Display for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upload::TooLarge(n) => write!(f, "the body is larger than allowed ({n} bytes or more)"),
            Upload::TimedOut => f.write_str("the body stopped coming"),
            Upload::Broken(why) => f.write_str(why),
            Upload::NotRead => f.write_str("nobody reads the body"),
        }
    }
}

/// What the store is handed: bytes, then the end or why there is none.
enum BodyPart {
    Data(Bytes),
    End,
    Failed(Upload),
}

/// The async end of a body on its way to the store.
pub struct BodySender {
    tx: tokio::sync::mpsc::Sender<BodyPart>,
}

/// The store's end: a `Read` for a blocking thread.
pub struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<BodyPart>,
    buf: Bytes,
    ended: bool,
}

/// A body's channel, a few chunks deep: memory stays flat whatever its size.
pub fn channel() -> (BodySender, BodyReader) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (BodySender { tx }, BodyReader { rx, buf: Bytes::new(), ended: false })
}

impl BodySender {
    /// Hands a chunk on; `false` if the store stopped reading.
    pub async fn data(&self, chunk: Bytes) -> bool {
        self.tx.send(BodyPart::Data(chunk)).await.is_ok()
    }

    /// Says the body ended whole, for a sender that checked it itself (a
    /// ByteStream Write, whose pieces come in several calls); dropping the
    /// sender instead says it broke off.
    pub async fn end(self) {
        let _ = self.tx.send(BodyPart::End).await;
    }

    /// Says how the body ended: whole, or not.
    async fn finish(self, verdict: &Result<u64, Upload>) {
        let last = match verdict {
            Ok(_) => BodyPart::End,
            Err(why) => BodyPart::Failed(why.clone()),
        };
        let _ = self.tx.send(last).await;
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(BodyPart::Data(chunk)) => self.buf = chunk,
                Some(BodyPart::End) => self.ended = true,
                Some(BodyPart::Failed(why)) => return Err(std::io::Error::other(why.to_string())),
                None => return Err(std::io::Error::other("the body stopped before its end")),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        let _ = self.buf.split_to(n);
        Ok(n)
    }
}

/// How a body is read.
pub struct Pump<'a> {
    /// The most bytes taken.
    pub limit: u64,
    /// How long the body may stay silent (`None`: the source times itself).
    pub silence: Option<Duration>,
    /// The length the sender promised, if it did.
    pub declared: Option<u64>,
    /// Counts the bytes read.
    pub counter: &'a AtomicU64,
}

/// Something besides the store that sees every chunk and has a say in
/// whether the body is whole (the client of a proxied file, say).
pub trait Tap {
    /// Sees a chunk; `false` once it needs no more of them.
    fn chunk(&mut self, chunk: &Bytes) -> impl Future<Output = bool> + Send;
    /// Whether the body, `total` bytes long and ended, is whole and right.
    fn check(&mut self, total: u64) -> Result<(), Upload>;
}

/// No tap: the store alone reads the body.
pub struct NoTap;

impl Tap for NoTap {
    async fn chunk(&mut self, _: &Bytes) -> bool {
        false
    }

    fn check(&mut self, _: u64) -> Result<(), Upload> {
        Ok(())
    }
}

/// Reads `body` into the store's channel until it ends, fails, passes the
/// limit, stays silent too long, or nobody (neither the store nor the tap)
/// wants more. The store is told the end only if the body ended whole, its
/// length was the one promised and the tap agreed; the verdict is returned
/// (with the bytes read), and is what the client is answered.
pub async fn pump<E: fmt::Display>(
    body: impl Stream<Item = Result<Bytes, E>>,
    store: BodySender,
    how: Pump<'_>,
    tap: &mut impl Tap,
) -> Result<u64, Upload> {
    let mut body = std::pin::pin!(body);
    let mut store = Some(store);
    let mut tapped = true;
    let mut total = 0u64;
    let verdict = loop {
        let next = match how.silence {
            Some(t) => match tokio::time::timeout(t, body.next()).await {
                Ok(next) => next,
                Err(_) => break Err(Upload::TimedOut),
            },
            None => body.next().await,
        };
        let chunk = match next {
            None => break Ok(total),
            Some(Err(e)) => break Err(Upload::Broken(e.to_string())),
            Some(Ok(chunk)) => chunk,
        };
        total += chunk.len() as u64;
        Metrics::add(how.counter, chunk.len() as u64);
        if total > how.limit {
            break Err(Upload::TooLarge(total));
        }
        if tapped {
            tapped = tap.chunk(&chunk).await;
        }
        if let Some(to_store) = &store
            && !to_store.data(chunk).await
        {
            store = None;
        }
        if store.is_none() && !tapped {
            break Err(Upload::NotRead);
        }
    };
    let verdict = verdict.and_then(|total| match how.declared {
        Some(n) if n != total => {
            Err(Upload::Broken(format!("{total} of the {n} bytes Content-Length promised")))
        }
        _ => tap.check(total).map(|()| total),
    });
    if let Some(to_store) = store {
        to_store.finish(&verdict).await;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
        futures_util::stream::iter(
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>(),
        )
    }

    /// Pumps `body` into a reader on a blocking thread: what the pump says,
    /// and what the reader read (or its error).
    async fn run(
        body: impl Stream<Item = Result<Bytes, std::io::Error>>,
        limit: u64,
        declared: Option<u64>,
    ) -> (Result<u64, Upload>, Result<Vec<u8>, String>) {
        let (tx, mut rx) = channel();
        let reading = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            rx.read_to_end(&mut out).map(|_| out).map_err(|e| e.to_string())
        });
        let counter = AtomicU64::new(0);
        let how =
            Pump { limit, silence: Some(Duration::from_secs(5)), declared, counter: &counter };
        let verdict = pump(body, tx, how, &mut NoTap).await;
        (verdict, reading.await.expect("reader"))
    }

    #[tokio::test]
    async fn a_whole_body_ends_and_a_short_one_never_does() {
        let (verdict, read) = run(chunks(&[b"ab", b"cd"]), 10, Some(4)).await;
        assert_eq!((verdict, read), (Ok(4), Ok(b"abcd".to_vec())));
        let (verdict, read) = run(chunks(&[b"ab"]), 10, Some(4)).await;
        assert_eq!(verdict, Err(Upload::Broken("2 of the 4 bytes Content-Length promised".into())));
        assert!(read.is_err(), "{read:?}");
        let (verdict, read) = run(chunks(&[b"abc", b"def"]), 4, None).await;
        assert_eq!(verdict, Err(Upload::TooLarge(6)));
        assert!(read.is_err(), "{read:?}");
    }

    #[tokio::test]
    async fn a_sender_that_vanishes_is_a_broken_body() {
        let (tx, mut rx) = channel();
        let reading = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            rx.read_to_end(&mut out).map_err(|e| e.to_string())
        });
        assert!(tx.data(Bytes::from_static(b"abc")).await);
        drop(tx);
        let read = reading.await.expect("reader");
        assert_eq!(read, Err("the body stopped before its end".to_string()));
    }
}
