//! Benchmark of Bazel's remote API (gRPC) in `larder serve`, beside the HTTP
//! door of the same server, over the same store:
//!
//! - FindMissingBlobs of 10,000 digests, half of them present: digests per
//!   second;
//! - ByteStream Read of a 100 MiB blob beside HTTP GET of it with curl
//!   (target: at least 0.9x), and the same Read as `compressed-blobs/zstd`
//!   (compressed on the fly);
//! - ByteStream Write of 100 MiB beside HTTP PUT of it with curl;
//! - Bazel 2.1 building the test graph (five genrules, one output of
//!   6.9 MB), cold and fully cached, over grpc:// beside http://.
//!
//! ```text
//! cargo bench --bench reapi                      full sizes
//! cargo test -p larder-cli --bench reapi         tiny sizes: a smoke test
//! LARDER_BENCH_SCALE=full|tiny                   overrides either
//! ```
//!
//! Each case runs 3 times, alternating doors, and shows the median. Figures
//! are printed, never asserted; correctness is (statuses, bytes, hits).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream as bs;
use bs::byte_stream_client::ByteStreamClient;
use re::content_addressable_storage_client::ContentAddressableStorageClient;
use tonic::transport::Channel;

mod common;
use common::*;

const LARDER: &str = env!("CARGO_BIN_EXE_larder");
const REPS: usize = 3;

struct Scale {
    name: &'static str,
    digests: usize,
    large: u64,
    /// Bazel builds of each kind (each takes seconds, mostly the JVM's).
    builds: usize,
}

const FULL: Scale = Scale { name: "full", digests: 10_000, large: 100 * MIB, builds: REPS };
const TINY: Scale = Scale { name: "tiny", digests: 1_000, large: 8 * MIB, builds: 1 };

/// The pieces a ByteStream Write sends, as Bazel's do at most.
const PIECE: usize = 1 << 20;

fn main() {
    let scale = if full_scale() { FULL } else { TINY };
    let tmp = bench_folder();
    let root = tmp.path().to_path_buf();
    let home = root.join("home");
    println!("larder serve REAPI benchmark, {} sizes", scale.name);
    println!("  binary: {LARDER}");
    println!("  each case {REPS} times, median shown");
    println!();
    let larder = Larder::start(&home);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let channel = runtime.block_on(async {
        Channel::from_shared(format!("http://{}", larder.addr))
            .expect("uri")
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .connect()
            .await
            .expect("connect")
    });
    let mut table = Table::default();

    // FindMissingBlobs: half the digests stored (put in batches), half not.
    let blobs: Vec<Vec<u8>> =
        (0..scale.digests).map(|i| format!("blob {i} of the benchmark").into_bytes()).collect();
    runtime.block_on(async {
        let mut cas = ContentAddressableStorageClient::new(channel.clone());
        for batch in blobs.iter().step_by(2).collect::<Vec<_>>().chunks(1000) {
            let requests = batch
                .iter()
                .map(|b| re::batch_update_blobs_request::Request {
                    digest: Some(digest(b)),
                    data: b.to_vec(),
                    compressor: 0,
                })
                .collect();
            let request = re::BatchUpdateBlobsRequest { requests, ..Default::default() };
            let answer = cas.batch_update_blobs(request).await.expect("BatchUpdateBlobs");
            assert!(
                answer
                    .into_inner()
                    .responses
                    .iter()
                    .all(|r| r.status.as_ref().is_some_and(|s| s.code == 0))
            );
        }
    });
    let all: Vec<re::Digest> = blobs.iter().map(|b| digest(b)).collect();
    let mut rates = Vec::new();
    for _ in 0..REPS {
        let request =
            re::FindMissingBlobsRequest { blob_digests: all.clone(), ..Default::default() };
        let mut cas = ContentAddressableStorageClient::new(channel.clone());
        let start = Instant::now();
        let missing = runtime
            .block_on(cas.find_missing_blobs(request))
            .expect("FindMissingBlobs")
            .into_inner()
            .missing_blob_digests;
        rates.push(scale.digests as f64 / start.elapsed().as_secs_f64());
        assert_eq!(missing.len(), scale.digests / 2);
    }
    show_reps_in("FindMissingBlobs", &rates, "digests/s");
    table.row(
        format!("FindMissingBlobs, {} digests, half present", scale.digests),
        format!("{:.0} digests/s", median(&rates)),
        "-".into(),
        "-".into(),
    );

    // A large blob, read by both doors.
    let large = root.join("large.bin");
    write_random(&large, scale.large, 1);
    let data = std::fs::read(&large).expect("read");
    let put = curl_put(&larder.url, &large, &hex(&data));
    assert_eq!(put, "201");
    let name = format!("blobs/{}/{}", hex(&data), data.len());
    let zname = format!("compressed-blobs/zstd/{}/{}", hex(&data), data.len());
    let (mut grpc, mut http, mut zstd) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REPS {
        let start = Instant::now();
        let n = runtime.block_on(read(&channel, &name));
        grpc.push(start.elapsed().as_secs_f64());
        assert_eq!(n, scale.large);
        let start = Instant::now();
        let got = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"])
            .arg(format!("{}/cas/{}", larder.url, hex(&data)))
            .output()
            .expect("curl");
        http.push(start.elapsed().as_secs_f64());
        assert_eq!(String::from_utf8_lossy(&got.stdout), format!("200 {}", scale.large));
        let start = Instant::now();
        runtime.block_on(read(&channel, &zname));
        zstd.push(start.elapsed().as_secs_f64());
    }
    show_reps("ByteStream Read", &grpc);
    show_reps("HTTP GET (curl)", &http);
    show_reps("ByteStream Read, zstd", &zstd);
    let (g, h, z) = (median(&grpc), median(&http), median(&zstd));
    table.row(
        format!("ByteStream Read, {}", size(scale.large)),
        common::rate(scale.large, g),
        format!("HTTP GET: {}", common::rate(scale.large, h)),
        format!("{:.2}x the speed of HTTP (target >= 0.9)", h / g),
    );
    table.row(
        format!("ByteStream Read, {}, zstd on the fly", size(scale.large)),
        common::rate(scale.large, z),
        format!("plain: {}", common::rate(scale.large, g)),
        format!("{:.2}x the speed of plain", g / z),
    );

    // zstd on the fly of a compressible blob (text, as build logs and
    // sources are): the cost of not storing blobs compressed.
    let text: Vec<u8> = (0u64..)
        .flat_map(|i| {
            format!("{i:>9} a line of a build log, with words that repeat\n").into_bytes()
        })
        .take(scale.large as usize)
        .collect();
    let text_file = root.join("text.txt");
    std::fs::write(&text_file, &text).expect("write");
    assert_eq!(curl_put(&larder.url, &text_file, &hex(&text)), "201");
    let zname = format!("compressed-blobs/zstd/{}/{}", hex(&text), text.len());
    let (mut times, mut sent) = (Vec::new(), 0);
    for _ in 0..REPS {
        let start = Instant::now();
        sent = runtime.block_on(read(&channel, &zname));
        times.push(start.elapsed().as_secs_f64());
    }
    show_reps("ByteStream Read, zstd, text", &times);
    table.row(
        format!("ByteStream Read, {} of text, zstd on the fly", size(scale.large)),
        common::rate(scale.large, median(&times)),
        format!("sent {}", size(sent)),
        format!("{:.1}x smaller", scale.large as f64 / sent as f64),
    );

    // Writes of new blobs (each rep its own, or it would be a hit).
    let (mut grpc, mut http) = (Vec::new(), Vec::new());
    for rep in 0..REPS {
        let mut fresh = data.clone();
        fresh[..8].copy_from_slice(&(rep as u64 + 1).to_le_bytes());
        let start = Instant::now();
        runtime.block_on(write(&channel, &fresh, rep));
        grpc.push(start.elapsed().as_secs_f64());
        fresh[8..16].copy_from_slice(&(rep as u64 + 1).to_le_bytes());
        let file = root.join("upload.bin");
        std::fs::write(&file, &fresh).expect("write");
        settle();
        let start = Instant::now();
        assert_eq!(curl_put(&larder.url, &file, &hex(&fresh)), "201");
        http.push(start.elapsed().as_secs_f64());
    }
    show_reps("ByteStream Write", &grpc);
    show_reps("HTTP PUT (curl -T)", &http);
    let (g, h) = (median(&grpc), median(&http));
    table.row(
        format!("ByteStream Write, {} in 1 MiB pieces", size(scale.large)),
        common::rate(scale.large, g),
        format!("HTTP PUT: {}", common::rate(scale.large, h)),
        format!("{:.2}x the speed of HTTP", h / g),
    );
    drop(larder);

    // Bazel: each door its own empty store, a cold build then a cached one.
    let mut bazel = bazel::Workspace::new(&root.join("bazel"));
    let mut times = |door: &str| {
        let (mut cold, mut cached) = (Vec::new(), Vec::new());
        for rep in 0..scale.builds {
            let larder = Larder::start(&root.join(format!("bazel-{door}-{rep}")));
            let flag = match door {
                "grpc" => format!("--remote_cache=grpc://{}", larder.addr),
                _ => format!("--remote_cache={}", larder.url),
            };
            let build = bazel.build(&[&flag]).unwrap_or_else(|log| panic!("{log}"));
            assert_eq!(build.remote_hits, 0);
            cold.push(build.seconds);
            let build = bazel.build(&[&flag]).unwrap_or_else(|log| panic!("{log}"));
            assert_eq!((build.total, build.remote_hits), (bazel::ACTIONS, bazel::ACTIONS));
            cached.push(build.seconds);
        }
        show_reps(&format!("bazel build over {door}, cold"), &cold);
        show_reps(&format!("bazel build over {door}, cached"), &cached);
        (median(&cold), median(&cached))
    };
    let (grpc_cold, grpc_cached) = times("grpc");
    let (http_cold, http_cached) = times("http");
    for (case, grpc, http) in [
        ("bazel build, cold", grpc_cold, http_cold),
        ("bazel build, every action cached", grpc_cached, http_cached),
    ] {
        table.row(
            case.into(),
            format!("grpc: {}", secs(grpc)),
            format!("http: {}", secs(http)),
            format!("{} the time", ratio(grpc, http)),
        );
    }
    println!();
    table.print();
    drop(runtime);
    drop(bazel);
    drop(tmp);
}

fn hex(data: &[u8]) -> String {
    let mut h = larder::Hasher::new();
    h.update(data);
    h.finish().hex()
}

fn digest(data: &[u8]) -> re::Digest {
    re::Digest { hash: hex(data), size_bytes: data.len() as i64 }
}

/// PUTs `file` to `/cas/<hex>`, returning the status curl printed.
fn curl_put(url: &str, file: &Path, hex: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(file)
        .arg(format!("{url}/cas/{hex}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a blob by ByteStream, returning the bytes received.
async fn read(channel: &Channel, name: &str) -> u64 {
    let mut client = ByteStreamClient::new(channel.clone());
    let request = bs::ReadRequest { resource_name: name.into(), read_offset: 0, read_limit: 0 };
    let mut stream = client.read(request).await.expect("Read").into_inner();
    let mut n = 0;
    while let Some(piece) = stream.message().await.expect("a piece") {
        n += piece.data.len() as u64;
    }
    n
}

/// Writes a blob by ByteStream in pieces of [`PIECE`].
async fn write(channel: &Channel, data: &[u8], rep: usize) {
    let name = format!("uploads/bench-{rep}/blobs/{}/{}", hex(data), data.len());
    let total = data.len();
    let pieces: Vec<bs::WriteRequest> = data
        .chunks(PIECE)
        .enumerate()
        .map(|(i, piece)| bs::WriteRequest {
            resource_name: if i == 0 { name.clone() } else { String::new() },
            write_offset: (i * PIECE) as i64,
            finish_write: i * PIECE + piece.len() == total,
            data: piece.to_vec(),
        })
        .collect();
    let mut client = ByteStreamClient::new(channel.clone());
    let committed = client
        .write(futures_util::stream::iter(pieces))
        .await
        .expect("Write")
        .into_inner()
        .committed_size;
    assert_eq!(committed, total as i64);
}
