//! Counters of what the server did, for `/status` and `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Methods counted one by one; the rest go under `other`.
const METHODS: [&str; 8] = ["GET", "HEAD", "PUT", "DELETE", "PROPFIND", "MKCOL", "POST", "other"];

/// Counters, updated without locks.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; METHODS.len()],
    /// Responses by status class: 1xx..5xx.
    statuses: [AtomicU64; 5],
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub uploads: AtomicU64,
    pub auth_failures: AtomicU64,
    pub connections: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Calls, hits and misses of each gRPC service (Bazel's remote API).
    pub grpc: [ServiceCounters; Service::ALL.len()],
}

/// The gRPC services of Bazel's remote API, counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Capabilities,
    ActionCache,
    Cas,
    ByteStream,
}

impl Service {
    pub const ALL: [Service; 4] =
        [Service::Capabilities, Service::ActionCache, Service::Cas, Service::ByteStream];

    /// The service's name in REAPI.
    pub fn name(self) -> &'static str {
        match self {
            Service::Capabilities => "Capabilities",
            Service::ActionCache => "ActionCache",
            Service::Cas => "ContentAddressableStorage",
            Service::ByteStream => "ByteStream",
        }
    }
}

/// One gRPC service's counters. A hit is a blob or action result found (one
/// per digest in batch calls), a miss one that was not.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    pub calls: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

impl Metrics {
    pub fn request(&self, method: &str) {
        let i = METHODS.iter().position(|m| *m == method).unwrap_or(METHODS.len() - 1);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.statuses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The counters of a gRPC service.
    pub fn grpc(&self, service: Service) -> &ServiceCounters {
        &self.grpc[service as usize]
    }

    /// All requests so far.
    pub fn requests(&self) -> u64 {
        self.requests.iter().map(Metrics::get).sum()
    }

    /// The Prometheus text format, with the store's own figures.
    pub fn render(&self, store: &larder::Stats, uptime_secs: f64) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP larder_{name} {help}");
            let _ = writeln!(out, "# TYPE larder_{name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "larder_{name}{labels} {value}");
            }
        };
        let one = |v: u64| vec![(String::new(), v as f64)];
        let requests: Vec<(String, f64)> = METHODS
            .iter()
            .zip(&self.requests)
            .map(|(m, c)| (format!("{{method=\"{m}\"}}"), Metrics::get(c) as f64))
            .collect();
        metric("http_requests_total", "counter", "Requests received, by method.", &requests);
        let statuses: Vec<(String, f64)> = (1..=5)
            .zip(&self.statuses)
            .map(|(c, v)| (format!("{{class=\"{c}xx\"}}"), Metrics::get(v) as f64))
            .collect();
        metric("http_responses_total", "counter", "Responses sent, by status class.", &statuses);
        metric(
            "cache_hits_total",
            "counter",
            "Reads that found their blob.",
            &one(Metrics::get(&self.hits)),
        );
        metric(
            "cache_misses_total",
            "counter",
            "Reads that did not.",
            &one(Metrics::get(&self.misses)),
        );
        metric(
            "bytes_in_total",
            "counter",
            "Body bytes received.",
            &one(Metrics::get(&self.bytes_in)),
        );
        metric(
            "bytes_out_total",
            "counter",
            "Body bytes sent.",
            &one(Metrics::get(&self.bytes_out)),
        );
        metric("uploads_total", "counter", "Blobs stored.", &one(Metrics::get(&self.uploads)));
        metric(
            "auth_failures_total",
            "counter",
            "Requests refused for missing or wrong credentials.",
            &one(Metrics::get(&self.auth_failures)),
        );
        metric(
            "connections_total",
            "counter",
            "Connections accepted.",
            &one(Metrics::get(&self.connections)),
        );
        metric(
            "connections_open",
            "gauge",
            "Connections open now.",
            &one(Metrics::get(&self.connections_open)),
        );
        let by_service = |counter: fn(&ServiceCounters) -> &AtomicU64| -> Vec<(String, f64)> {
            Service::ALL
                .iter()
                .map(|s| {
                    let value = Metrics::get(counter(self.grpc(*s))) as f64;
                    (format!("{{service=\"{}\"}}", s.name()), value)
                })
                .collect()
        };
        metric(
            "grpc_calls_total",
            "counter",
            "gRPC calls received, by REAPI service.",
            &by_service(|c| &c.calls),
        );
        metric(
            "grpc_hits_total",
            "counter",
            "Blobs and action results found over gRPC, by REAPI service.",
            &by_service(|c| &c.hits),
        );
        metric(
            "grpc_misses_total",
            "counter",
            "Blobs and action results not found over gRPC, by REAPI service.",
            &by_service(|c| &c.misses),
        );
        metric("store_bytes", "gauge", "Bytes the store holds.", &one(store.bytes));
        metric("store_capacity_bytes", "gauge", "The store's capacity.", &one(store.capacity));
        metric("store_entries", "gauge", "Blobs the store holds.", &one(store.entries));
        metric(
            "store_pinned_bytes",
            "gauge",
            "Bytes held by pinned blobs.",
            &one(store.pinned_bytes),
        );
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            &[(String::new(), uptime_secs)],
        );
        out
    }
}
