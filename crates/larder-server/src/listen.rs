//! Accepting connections: plain (HTTP/1.1, or HTTP/2 with prior knowledge)
//! or TLS (ALPN picks h2 or http/1.1), at most so many at once, with timeouts
//! for clients that go quiet, until a signal; then a graceful end.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use larder::{Error, ErrorKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServeOptions;
use crate::metrics::Metrics;

/// A TLS acceptor from PEM files, offering h2 and http/1.1.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::Config,
            format!("{what} {}: {e}; give PEM files with --tls-cert and --tls-key", path.display()),
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("cannot read the certificate", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("cannot read the certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("no certificate in", cert, &"the file holds no CERTIFICATE block"));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad("cannot read the key", key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("cannot use", cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad("the key does not fit the certificate", key, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The answer past the most connections, written before hyper sees them.
const TOO_MANY: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\nConnection: close\r\nRetry-After: 1\r\n\r\ntoo many connections\n";

/// Connections waiting to be accepted: bursts of connects past it wait for
/// SYN retransmits (a second or more). Linux's default `somaxconn` since 5.4
/// (the kernel takes the smaller of the two), where nginx asks for 511: the
/// accept loop keeps up, so the queue only absorbs bursts, and 4096 holds a
/// burst of CI jobs connecting at once.
const BACKLOG: u32 = 4096;

/// Listens on `addr` with a backlog of [`BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Raises the soft limit on open descriptors to the hard one, and returns
/// how many connections it leaves room for: an eighth of it (64 at least)
/// is kept for the store's SQLite handles, files being sent or received and
/// the listener. Past the limit, accept() would fail and clients would hang
/// in the backlog instead of being answered 503.
pub fn connections_allowed() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return u64::MAX;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    let open = limit.rlim_cur;
    open.saturating_sub((open / 8).max(64))
}

/// HTTP/2 streams one connection may have open at once: more than any
/// client's parallelism (Bazel asks for 100), few enough that one client
/// cannot take every upload permit or much memory.
const MAX_STREAMS: u32 = 256;
/// Streams a client may reset before the server has accepted them; past it,
/// the connection is closed with ENHANCE_YOUR_CALM.
const MAX_PENDING_RESETS: usize = 64;

/// Serves connections from `listener` until SIGTERM or SIGINT, then stops
/// accepting and waits for in-flight requests, for up to `options.grace`.
pub async fn accept_until_signal(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: axum::Router,
    options: &ServeOptions,
    metrics: Arc<Metrics>,
) {
    let max_connections = options.max_connections as u64;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also closes kept-alive connections that stay idle this long.
        .header_read_timeout(options.timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(options.timeout)
        // Uploads over HTTP/2 (gRPC's ByteStream Write) in pieces of a MiB
        // or more: a window of a few pieces keeps them flowing.
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        // One connection may not hold more requests at once than this (a
        // client that opens streams and leaves them hanging waits for room),
        // nor reset streams faster than they are answered ("rapid reset").
        .max_concurrent_streams(MAX_STREAMS)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS);
    let builder = Arc::new(builder);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch for SIGTERM: {e}");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let (mut raw, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        Metrics::add(&metrics.connections, 1);
        if Metrics::get(&metrics.connections_open) >= max_connections {
            tokio::spawn(async move {
                let _ = raw.write_all(TOO_MANY.as_bytes()).await;
                let _ = raw.shutdown().await;
                // Closing with the request unread would reset the connection,
                // and the client could lose the answer: read it first, briefly.
                let mut sink = [0u8; 4096];
                let drain = async { while raw.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
            });
            continue;
        }
        let _ = raw.set_nodelay(true);
        Metrics::add(&metrics.connections_open, 1);
        // A client that stops reading its answer is let go after the timeout
        // (reads are timed by hyper and the handlers, which know when a
        // silence is one).
        let mut timed = tokio_io_timeout::TimeoutStream::new(raw);
        timed.set_write_timeout(Some(options.timeout));
        let tcp = Box::pin(timed);
        let activity = Activity::new();
        let service = {
            let router = TowerToHyperService::new(router.clone());
            let activity = activity.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<_>| {
                request.extensions_mut().insert(crate::state::Peer(peer));
                // Held until the answer's last byte is sent (or dropped).
                let in_flight = activity.begin();
                let answer = hyper::service::Service::call(&router, request);
                async move {
                    let response = answer.await?;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|inner| Tracked { inner, _in_flight: in_flight }),
                    )
                }
            })
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let metrics = metrics.clone();
        let handshake_timeout = options.timeout;
        tokio::spawn(async move {
            let served = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            let conn = watcher.watch(conn.into_owned());
                            until_idle(conn, &activity, handshake_timeout).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            Ok(())
                        }
                        Err(_) => Ok(()),
                    }
                }
                None => {
                    // A client that connects and says nothing is let go: the
                    // protocol detection below would wait for it for ever.
                    let mut first = [0u8; 1];
                    let peek = tcp.get_ref().peek(&mut first);
                    match tokio::time::timeout(handshake_timeout, peek).await {
                        Ok(Ok(n)) if n > 0 => {
                            let conn = builder.serve_connection(TokioIo::new(tcp), service);
                            let conn = watcher.watch(conn.into_owned());
                            until_idle(conn, &activity, handshake_timeout).await
                        }
                        _ => Ok(()),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tracing::info!("stopping: finishing requests in flight");
    drop(listener);
    if tokio::time::timeout(options.grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            "requests still running after {}s; stopping anyway",
            options.grace.as_secs()
        );
    }
}

/// What a connection is doing: requests in flight, and since when it has
/// had none. hyper times out a silent HTTP/1.1 client, but not an HTTP/2
/// one that answers pings and sends nothing, nor a connection that sent a
/// few bytes of the HTTP/2 preface; this does, for both.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last request ended.
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// How long the connection has had nothing in flight.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::SeqCst));
        Some(self.born.elapsed().saturating_sub(since))
    }
}

/// A request in flight on a connection.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.born.elapsed().as_millis() as u64;
        self.0.idle_since.store(now, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that keeps its request counted as in flight.
struct Tracked {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves a connection until it ends, or until it has had nothing in
/// flight for `timeout` (then it is dropped).
async fn until_idle<T>(
    conn: impl std::future::Future<Output = Result<(), T>>,
    activity: &Activity,
    timeout: Duration,
) -> Result<(), T> {
    let check = (timeout / 4).max(Duration::from_millis(100));
    tokio::pin!(conn);
    loop {
        tokio::select! {
            served = &mut conn => return served,
            _ = tokio::time::sleep(check) => {
                if activity.idle_for().is_some_and(|idle| idle >= timeout) {
                    return Ok(());
                }
            }
        }
    }
}
