//! For operators: `/status` (JSON), `/metrics` (Prometheus), and `/`, a page
//! that shows the same at a glance.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metrics::{Metrics, Service};
use crate::respond;
use crate::state::AppState;

/// The store's figures, with the reads not yet recorded recorded first.
async fn store_stats(state: &AppState) -> Result<larder::Stats, Response> {
    let (pool, hot) = (state.core.pool.clone(), state.core.hot.clone());
    tokio::task::spawn_blocking(move || {
        hot.with_watch(|store| {
            if let Err(e) = pool.flush_reads_with(store) {
                tracing::warn!("recording reads: {e}");
            }
            store.stats()
        })
    })
    .await
    .unwrap_or_else(|e| Err(larder::Error::new(larder::ErrorKind::Io, e.to_string())))
    .map_err(|e| respond::error(&e))
}

fn snapshot(state: &AppState, stats: &larder::Stats) -> serde_json::Value {
    let m = &state.core.metrics;
    let grpc: serde_json::Map<String, serde_json::Value> = Service::ALL
        .iter()
        .map(|s| {
            let c = m.grpc(*s);
            let counts = json!({
                "calls": Metrics::get(&c.calls),
                "hits": Metrics::get(&c.hits),
                "misses": Metrics::get(&c.misses),
            });
            (s.name().to_string(), counts)
        })
        .collect();
    json!({
        "entries": stats.entries,
        "bytes": stats.bytes,
        "pinned_bytes": stats.pinned_bytes,
        "capacity": stats.capacity,
        "usage_ratio": stats.usage_ratio,
        "hits": stats.hits,
        "misses": stats.misses,
        "bytes_in": Metrics::get(&m.bytes_in),
        "bytes_out": Metrics::get(&m.bytes_out),
        "requests": m.requests(),
        "uploads": Metrics::get(&m.uploads),
        "uploads_in_flight": state.core.uploads.in_flight(),
        "connections_open": Metrics::get(&m.connections_open),
        "grpc": grpc,
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// `/status`: the store's figures and the server's counters, as JSON.
pub async fn status(State(state): State<Arc<AppState>>) -> Response {
    let stats = match store_stats(&state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = serde_json::to_string_pretty(&snapshot(&state, &stats)).unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], body + "\n").into_response()
}

/// `/metrics`: the same, in Prometheus' text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = match store_stats(&state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = state.core.metrics.render(&stats, state.started.elapsed().as_secs_f64());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `GET /`: a page for people; `HEAD /`: 200, which clients probe for.
pub async fn page(State(state): State<Arc<AppState>>, method: Method) -> Response {
    if method == Method::HEAD {
        let mut response = StatusCode::OK.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        return response;
    }
    let stats = match store_stats(&state).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let s = snapshot(&state, &stats);
    let looked = stats.hits + stats.misses;
    let ratio = if looked == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", stats.hits as f64 * 100.0 / looked as f64)
    };
    let (size, plural) = (larder::size::format_size, larder::size::plural);
    let grpc: String = Service::ALL
        .iter()
        .map(|s| {
            let c = state.core.metrics.grpc(*s);
            format!(
                "<tr><th>gRPC {}</th><td>{}, {}, {}</td></tr>\n",
                s.name(),
                plural(Metrics::get(&c.calls), "call"),
                plural(Metrics::get(&c.hits), "hit"),
                plural(Metrics::get(&c.misses), "miss"),
            )
        })
        .collect();
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>larder</title>
<style>body{{font:15px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{padding:.3em 1em .3em 0;text-align:left}}th{{color:#666;font-weight:normal}}
.bar{{width:20em;height:.8em;background:#eee}}.bar div{{height:100%;background:#4a7}}</style></head>
<body><h1>larder</h1>
<table>
<tr><th>used</th><td>{used} of {capacity} ({usage:.1}%)</td><td><div class="bar"><div style="width:{usage:.1}%"></div></div></td></tr>
<tr><th>entries</th><td>{entries}</td></tr>
<tr><th>hit ratio</th><td>{ratio} ({hits}, {misses})</td></tr>
<tr><th>traffic</th><td>{bytes_in} in, {bytes_out} out, {requests}</td></tr>
<tr><th>up for</th><td>{uptime}</td></tr>
{grpc}</table>
<p><a href="/status">/status</a> · <a href="/metrics">/metrics</a></p>
</body></html>
"#,
        used = size(stats.bytes),
        capacity = size(stats.capacity),
        usage = stats.usage_ratio * 100.0,
        entries = stats.entries,
        hits = plural(stats.hits, "hit"),
        misses = plural(stats.misses, "miss"),
        bytes_in = size(s["bytes_in"].as_u64().unwrap_or(0)),
        bytes_out = size(s["bytes_out"].as_u64().unwrap_or(0)),
        requests = plural(s["requests"].as_u64().unwrap_or(0), "request"),
        uptime = larder::time::human_duration(std::time::Duration::from_secs(
            state.started.elapsed().as_secs().max(1)
        )),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}
