//! `larder serve` speaking Bazel's remote API (REAPI v2) over gRPC, on the
//! port and store of its HTTP doors: Bazel 2.1 itself building a small graph
//! (a genrule output past gRPC's 4 MiB message size, a program built with
//! gcc and run), and a client written here with tonic for what Bazel 2.1
//! does not send: GetTree pages, QueryWriteStatus, zstd, bad input.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::google::bytestream as bs;
use bs::byte_stream_client::ByteStreamClient;
use prost::Message as _;
use re::action_cache_client::ActionCacheClient;
use re::capabilities_client::CapabilitiesClient;
use re::content_addressable_storage_client::ContentAddressableStorageClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::serve::{Served, curl, self_signed};
use crate::util::{TestDir, bytes, digest_of};

#[path = "../../benches/common/bazel.rs"]
#[allow(dead_code)] // what the benchmark alone reads
mod bazel;

/// Bazel building the graph the REAPI benchmark builds, each build from an
/// empty output base.
struct Bazel(bazel::Workspace);

impl Bazel {
    fn new(t: &TestDir) -> Bazel {
        Bazel(bazel::Workspace::new(&t.path().join("bazel")))
    }

    fn build(&mut self, flags: &[&str]) -> bazel::Build {
        self.0.build(flags).unwrap_or_else(|log| panic!("bazel {flags:?} failed:\n{log}"))
    }

    /// Builds, expecting every action to run (nothing in the cache).
    #[track_caller]
    fn cold(&mut self, flags: &[&str]) {
        let build = self.build(flags);
        assert_eq!((build.total, build.remote_hits), (bazel::ACTIONS, 0), "{flags:?}");
        check_outputs(&build.bin);
    }

    /// Builds, expecting every action to be a remote cache hit.
    #[track_caller]
    fn cached(&mut self, flags: &[&str]) {
        let build = self.build(flags);
        assert_eq!((build.total, build.remote_hits), (bazel::ACTIONS, bazel::ACTIONS), "{flags:?}");
        if !flags.contains(&"--remote_download_minimal") {
            check_outputs(&build.bin);
        }
    }
}

#[track_caller]
fn check_outputs(bin: &Path) {
    let read = |name: &str| std::fs::read(bin.join(name)).unwrap_or_default();
    let big = bazel::big_output();
    assert_eq!(read("big.txt"), big);
    assert_eq!(String::from_utf8_lossy(&read("digest.txt")), format!("{}  -\n", hex(&big)));
    assert_eq!(String::from_utf8_lossy(&read("greeting.txt")), "hello from larder\n");
}

#[test]
fn bazel_builds_are_remote_cache_hits_over_grpc_and_over_http() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let (grpc, http) =
        (format!("--remote_cache=grpc://{}", s.addr), format!("--remote_cache={}", s.url));
    let mut bazel = Bazel::new(&t);
    bazel.cold(&[&grpc]);
    bazel.cached(&[&grpc]);
    bazel.cached(&[&grpc, "--remote_download_minimal"]);
    // One store behind both doors: what gRPC wrote is a hit over HTTP.
    bazel.cached(&[&http]);
    let metrics = curl(&[&format!("{}/metrics", s.url)]).text();
    assert!(metrics.contains("larder_grpc_hits_total{service=\"ActionCache\"} 10"), "{metrics}");
    assert!(
        metrics.contains("larder_grpc_misses_total{service=\"ActionCache\"} 5"),
        "the cold build's lookups: {metrics}"
    );
    drop(s);

    // And the other way round, from an empty store.
    let t2 = TestDir::new();
    let s = Served::start(&t2, &[]);
    let (grpc, http) =
        (format!("--remote_cache=grpc://{}", s.addr), format!("--remote_cache={}", s.url));
    bazel.cold(&[&http]);
    bazel.cached(&[&http]);
    bazel.cached(&[&grpc]);
    bazel.cached(&[&grpc, "--remote_download_minimal"]);
}

#[test]
fn bazel_instance_names_partition_the_action_cache_over_grpcs() {
    let t = TestDir::new();
    let (cert, key) = self_signed(&t);
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let s = Served::start(&t, &["--tls-cert", cert, "--tls-key", key]);
    let cache = format!("--remote_cache=grpcs://{}", s.addr);
    let tls = format!("--tls_certificate={cert}");
    let mut bazel = Bazel::new(&t);
    bazel.cold(&[&cache, &tls, "--remote_instance_name=one"]);
    // The CAS is shared, the action cache is not: no action hits.
    bazel.cold(&[&cache, &tls, "--remote_instance_name=two/b"]);
    bazel.cached(&[&cache, &tls, "--remote_instance_name=one"]);
    bazel.cached(&[&cache, &tls, "--remote_instance_name=two/b"]);
    bazel.cold(&[&cache, &tls]);
    // The keys are those the HTTP door gives `/<instance>/ac/<hex>`.
    let entries = t.json(&["ls", "--json"]);
    let keys: Vec<&str> = entries
        .as_array()
        .expect("ls")
        .iter()
        .flat_map(|e| e["keys"].as_array().into_iter().flatten())
        .filter_map(|k| k.as_str())
        .collect();
    for prefix in ["one/ac/", "two/b/ac/", "ac/"] {
        let n = keys.iter().filter(|k| k.starts_with(prefix)).count();
        assert_eq!(n, 5, "{prefix} in {keys:?}");
    }
}

/// A gRPC client of one server, with HTTP Basic credentials or none.
struct Grpc {
    channel: Channel,
    authorization: Option<String>,
}

impl Grpc {
    async fn connect(s: &Served) -> Grpc {
        let channel = Channel::from_shared(format!("http://{}", s.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Grpc { channel, authorization: None }
    }

    fn as_user(&self, user: &str, password: &str) -> Grpc {
        use base64::Engine as _;
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Grpc { channel: self.channel.clone(), authorization: Some(format!("Basic {credentials}")) }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.parse().expect("metadata"));
        }
        request
    }

    fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    fn bytestream(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel.clone())
    }

    fn ac(&self) -> ActionCacheClient<Channel> {
        ActionCacheClient::new(self.channel.clone())
    }

    async fn missing(&self, blobs: &[&[u8]]) -> Vec<re::Digest> {
        let request = re::FindMissingBlobsRequest {
            blob_digests: blobs.iter().map(|b| digest(b)).collect(),
            ..Default::default()
        };
        self.cas()
            .find_missing_blobs(self.request(request))
            .await
            .expect("FindMissingBlobs")
            .into_inner()
            .missing_blob_digests
    }

    async fn update(
        &self,
        blobs: Vec<(re::Digest, Vec<u8>, re::compressor::Value)>,
    ) -> Result<Vec<Code>, Status> {
        let requests = blobs
            .into_iter()
            .map(|(digest, data, compressor)| re::batch_update_blobs_request::Request {
                digest: Some(digest),
                data,
                compressor: compressor as i32,
            })
            .collect();
        let request = re::BatchUpdateBlobsRequest { requests, ..Default::default() };
        let answer = self.cas().batch_update_blobs(self.request(request)).await?.into_inner();
        Ok(answer
            .responses
            .iter()
            .map(|r| Code::from(r.status.as_ref().map_or(-1, |s| s.code)))
            .collect())
    }

    async fn put(&self, data: &[u8]) {
        let codes =
            self.update(vec![(digest(data), data.to_vec(), re::compressor::Value::Identity)]);
        assert_eq!(codes.await.expect("BatchUpdateBlobs"), [Code::Ok]);
    }

    /// A ByteStream Write of `data[from..]` in pieces of `piece` bytes.
    async fn write(
        &self,
        name: &str,
        data: &[u8],
        from: usize,
        piece: usize,
        finish: bool,
    ) -> Result<i64, Status> {
        let requests = write_requests(name, data, from, piece, finish);
        let stream = futures_util::stream::iter(requests);
        Ok(self.bytestream().write(self.request(stream)).await?.into_inner().committed_size)
    }

    async fn read(&self, name: &str, offset: i64, limit: i64) -> Result<Vec<u8>, Status> {
        let request =
            bs::ReadRequest { resource_name: name.into(), read_offset: offset, read_limit: limit };
        let mut stream = self.bytestream().read(self.request(request)).await?.into_inner();
        let mut out = Vec::new();
        while let Some(piece) = stream.message().await? {
            out.extend(piece.data);
        }
        Ok(out)
    }

    async fn status(&self, name: &str) -> Result<(i64, bool), Status> {
        let request = bs::QueryWriteStatusRequest { resource_name: name.into() };
        let answer =
            self.bytestream().query_write_status(self.request(request)).await?.into_inner();
        Ok((answer.committed_size, answer.complete))
    }
}

fn write_requests(
    name: &str,
    data: &[u8],
    from: usize,
    piece: usize,
    finish: bool,
) -> Vec<bs::WriteRequest> {
    let mut requests: Vec<bs::WriteRequest> = data[from..]
        .chunks(piece)
        .scan(from, |offset, chunk| {
            let request = bs::WriteRequest {
                resource_name: name.into(),
                write_offset: *offset as i64,
                finish_write: false,
                data: chunk.to_vec(),
            };
            *offset += chunk.len();
            Some(request)
        })
        .collect();
    match requests.last_mut() {
        Some(last) => last.finish_write = finish,
        None => requests.push(bs::WriteRequest {
            resource_name: name.into(),
            write_offset: from as i64,
            finish_write: finish,
            data: vec![],
        }),
    }
    requests
}

fn hex(data: &[u8]) -> String {
    digest_of(data).trim_start_matches("sha256:").to_string()
}

fn digest(data: &[u8]) -> re::Digest {
    re::Digest { hash: hex(data), size_bytes: data.len() as i64 }
}

fn blob_name(data: &[u8]) -> String {
    format!("blobs/{}/{}", hex(data), data.len())
}

fn upload_name(data: &[u8], uuid: &str) -> String {
    format!("uploads/{uuid}/blobs/{}/{}", hex(data), data.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_say_what_bazel_remote_says() {
    let t = TestDir::new();
    let s = Served::start(&t, &["--max-blob-size", "100MiB"]);
    let grpc = Grpc::connect(&s).await;
    let caps = CapabilitiesClient::new(grpc.channel.clone())
        .get_capabilities(re::GetCapabilitiesRequest { instance_name: "any".into() })
        .await
        .expect("GetCapabilities")
        .into_inner();
    let cache = caps.cache_capabilities.expect("cache capabilities");
    assert_eq!(cache.digest_functions, [re::digest_function::Value::Sha256 as i32]);
    assert_eq!(cache.supported_compressors, [re::compressor::Value::Zstd as i32]);
    assert_eq!(cache.supported_batch_update_compressors, [re::compressor::Value::Zstd as i32]);
    assert!(cache.action_cache_update_capabilities.expect("AC").update_enabled);
    let priorities = cache.cache_priority_capabilities.expect("priorities").priorities;
    assert_eq!((priorities[0].min_priority, priorities[0].max_priority), (0, 0));
    assert_eq!(
        cache.symlink_absolute_path_strategy,
        re::symlink_absolute_path_strategy::Value::Allowed as i32
    );
    assert!(cache.max_batch_total_size_bytes > 0 && cache.max_batch_total_size_bytes < 4 << 20);
    assert_eq!(cache.max_cas_blob_size_bytes, 100 << 20);
    assert_eq!(caps.high_api_version.expect("high").major, 2);
    // HTTP is still answered on the same port.
    assert_eq!(curl(&[&format!("{}/healthz", s.url)]).status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_blobs_are_checked_one_by_one_and_zstd_is_spoken() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let grpc = Grpc::connect(&s).await;
    let (a, b, c) = (bytes(1, 1000), bytes(2, 200_000), b"x".repeat(100_000));
    let lying = bytes(3, 500);
    use re::compressor::Value::{Identity, Zstd};
    let codes = grpc
        .update(vec![
            (digest(&a), a.clone(), Identity),
            // Bytes that are not the blob the digest names.
            (digest(&lying), bytes(4, 500), Identity),
            (digest(&b), zstd::bulk::compress(&b, 3).expect("zstd"), Zstd),
            // Compressed bytes that decode to more than the digest's size.
            (digest(&c[..10]), zstd::bulk::compress(&c, 3).expect("zstd"), Zstd),
            (re::Digest { hash: "nothex".into(), size_bytes: 1 }, vec![0], Identity),
        ])
        .await
        .expect("BatchUpdateBlobs");
    assert_eq!(
        codes,
        [Code::Ok, Code::InvalidArgument, Code::Ok, Code::InvalidArgument, Code::InvalidArgument]
    );
    // Nothing half-written is served, by either door.
    assert_eq!(
        grpc.missing(&[&a, &lying, &b, &c[..10], b""]).await,
        [digest(&lying), digest(&c[..10])]
    );
    assert_eq!(curl(&[&format!("{}/cas/{}", s.url, hex(&lying))]).status, 404);
    assert_eq!(curl(&[&format!("{}/cas/{}", s.url, hex(&b))]).body, b);
    // The empty blob is always there, over HTTP too.
    assert_eq!(curl(&[&format!("{}/cas/{}", s.url, hex(b""))]).status, 200);

    let read = |compressors: Vec<i32>| {
        let request = re::BatchReadBlobsRequest {
            digests: vec![digest(&a), digest(&b), digest(&lying), digest(b"")],
            acceptable_compressors: compressors,
            ..Default::default()
        };
        let mut cas = grpc.cas();
        let request = grpc.request(request);
        async move { cas.batch_read_blobs(request).await.expect("BatchReadBlobs").into_inner() }
    };
    let plain = read(vec![]).await;
    let codes: Vec<i32> =
        plain.responses.iter().map(|r| r.status.as_ref().map_or(-1, |s| s.code)).collect();
    assert_eq!(codes, [0, 0, Code::NotFound as i32, 0]);
    assert_eq!(plain.responses[0].data, a);
    assert_eq!(plain.responses[1].data, b);
    assert_eq!(plain.responses[3].data, b"");
    let compressed = read(vec![Identity as i32, Zstd as i32]).await;
    assert_eq!(compressed.responses[1].compressor, Zstd as i32);
    assert_eq!(zstd::stream::decode_all(&compressed.responses[1].data[..]).expect("zstd"), b);

    // A batch past the advertised limit is refused whole.
    let big = bytes(5, 3 << 20);
    grpc.put(&big).await;
    let request = re::BatchReadBlobsRequest {
        digests: vec![digest(&big), digest(&big)],
        ..Default::default()
    };
    let refused = grpc.cas().batch_read_blobs(request).await.expect_err("too much");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytestream_writes_resume_where_they_stopped_and_lies_are_refused() {
    let t = TestDir::new();
    let s = Served::start(&t, &["--timeout", "5s"]);
    let grpc = Grpc::connect(&s).await;
    let data = bytes(6, 6 << 20);
    let name = upload_name(&data, "11111111-1111-4111-8111-111111111111");

    // The client stops after half, then asks where to go on.
    let half = 3 << 20;
    let committed = grpc.write(&name, &data[..half], 0, 1 << 20, false).await.expect("first half");
    assert_eq!(committed, half as i64);
    assert_eq!(grpc.status(&name).await.expect("status"), (half as i64, false));
    assert_eq!(grpc.missing(&[&data]).await.len(), 1, "not served before it is whole");
    // A resume from elsewhere than what was taken is refused, and changes nothing.
    let wrong = grpc.write(&name, &data, half + 1, 1 << 20, true).await.expect_err("bad offset");
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");
    let committed = grpc.write(&name, &data, half, 1 << 20, true).await.expect("second half");
    assert_eq!(committed, data.len() as i64);
    assert_eq!(grpc.status(&name).await.expect("status"), (data.len() as i64, true));
    assert_eq!(grpc.read(&blob_name(&data), 0, 0).await.expect("read"), data);
    assert_eq!(
        curl(&[&format!("{}/cas/{}", s.url, hex(&data))]).body,
        data,
        "the HTTP door has it"
    );
    // Offset and limit.
    let part = grpc.read(&blob_name(&data), 1_000_000, 12_345).await.expect("read part");
    assert_eq!(part, data[1_000_000..1_012_345]);
    let tail = grpc.read(&blob_name(&data), data.len() as i64 - 5, 0).await.expect("tail");
    assert_eq!(tail, data[data.len() - 5..]);
    let past =
        grpc.read(&blob_name(&data), data.len() as i64 + 1, 0).await.expect_err("past the end");
    assert_eq!(past.code(), Code::OutOfRange);
    // Writing what is stored already ends at once, whatever is sent.
    let again = upload_name(&data, "22222222-2222-4222-8222-222222222222");
    assert_eq!(
        grpc.write(&again, &data[..10], 0, 10, false).await.expect("again"),
        data.len() as i64
    );

    // A connection that breaks mid-way: what arrived waits for the resume.
    let other = bytes(7, 5 << 20);
    let name = upload_name(&other, "33333333-3333-4333-8333-333333333333");
    let (tx, rx) = tokio::sync::mpsc::channel::<bs::WriteRequest>(1);
    let call =
        {
            let mut client = grpc.bytestream();
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            });
            tokio::spawn(async move { client.write(stream).await })
        };
    for request in write_requests(&name, &other[..2 << 20], 0, 1 << 20, false) {
        tx.send(request).await.expect("send");
    }
    for _ in 0..500 {
        if grpc.status(&name).await.ok() == Some((2 << 20, false)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(grpc.status(&name).await.expect("status"), (2 << 20, false));
    call.abort();
    let _ = call.await;
    drop(tx);
    let committed = grpc.write(&name, &other, 2 << 20, 1 << 20, true).await.expect("resumed");
    assert_eq!(committed, other.len() as i64);
    assert_eq!(grpc.read(&blob_name(&other), 0, 0).await.expect("read"), other);

    // Uploads that lie about their size store nothing.
    let liar = bytes(8, 100_000);
    let name = upload_name(&liar, "44444444-4444-4444-8444-444444444444");
    let mut longer = liar.clone();
    longer.extend_from_slice(b"more");
    let refused = grpc.write(&name, &longer, 0, 30_000, true).await.expect_err("longer");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = grpc.write(&name, &liar[..90_000], 0, 30_000, true).await.expect_err("shorter");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let mut flipped = liar.clone();
    flipped[500] ^= 1;
    let refused = grpc.write(&name, &flipped, 0, 30_000, true).await.expect_err("other bytes");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(grpc.missing(&[&liar]).await.len(), 1);
    assert_eq!(grpc.status(&name).await.expect_err("no upload").code(), Code::NotFound);

    // Malformed resource names.
    for bad in [
        "",
        "blobs/abc/3",
        &format!("uploads/u/blobs/{}/x", hex(&liar)),
        "uploads/u/compressed-blobs/lz4/aa/1",
    ] {
        let refused = grpc.write(bad, b"abc", 0, 3, true).await.expect_err(bad);
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad}: {refused:?}");
    }
    for bad in [
        "",
        "blobs/abc/3",
        &format!("uploads/u/blobs/{}/3", hex(b"abc")),
        &format!("blobs/{}/3/x", hex(b"abc")),
    ] {
        let refused = grpc.read(bad, 0, 0).await.expect_err(bad);
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad}: {refused:?}");
    }
    let missing = grpc.read(&blob_name(&liar), 0, 0).await.expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);

    // A paused upload is given up once a client may stay silent no longer.
    let late = bytes(9, 1 << 20);
    let name = upload_name(&late, "55555555-5555-4555-8555-555555555555");
    grpc.write(&name, &late[..1000], 0, 1000, false).await.expect("first part");
    assert_eq!(grpc.status(&name).await.expect("status"), (1000, false));
    let mut given_up = false;
    for _ in 0..300 {
        if grpc.status(&name).await.is_err_and(|e| e.code() == Code::NotFound) {
            given_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(given_up, "the paused upload was not given up");
    let tmp = t.home.join("store-v1/tmp");
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0, "nothing left in tmp/");
    // A paused upload does not hold the server up at SIGTERM, nor stay in tmp/.
    let name = upload_name(&late, "66666666-6666-4666-8666-666666666666");
    grpc.write(&name, &late[..1000], 0, 1000, false).await.expect("first part");
    assert!(s.stop().success());
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0, "nothing left in tmp/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_resource_names_and_http_encodings() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let grpc = Grpc::connect(&s).await;
    // Compressible, and past one message.
    let data: Vec<u8> =
        (0..600_000u32).flat_map(|i| format!("line {}\n", i % 5000).into_bytes()).collect();
    let compressed = zstd::bulk::compress(&data, 3).expect("zstd");
    assert!(compressed.len() < data.len() / 4);
    let name = format!("uploads/u1/compressed-blobs/zstd/{}/{}", hex(&data), data.len());
    let committed =
        grpc.write(&name, &compressed, 0, 64 << 10, true).await.expect("compressed write");
    assert_eq!(committed, -1, "REAPI: a compressed upload commits -1");
    assert_eq!(grpc.status(&name).await.expect("status"), (-1, true));
    assert_eq!(grpc.read(&blob_name(&data), 0, 0).await.expect("plain"), data);
    let zname = format!("compressed-blobs/zstd/{}/{}", hex(&data), data.len());
    let frame = grpc.read(&zname, 0, 0).await.expect("compressed read");
    assert!(frame.len() < data.len() / 4, "sent compressed: {} bytes", frame.len());
    assert_eq!(zstd::stream::decode_all(&frame[..]).expect("decode"), data);
    // The offset of a compressed read counts plain bytes.
    let frame = grpc.read(&zname, 1_000_000, 0).await.expect("compressed read from an offset");
    assert_eq!(zstd::stream::decode_all(&frame[..]).expect("decode"), data[1_000_000..]);
    let refused = grpc.read(&zname, 0, 10).await.expect_err("a limit");
    assert_eq!(refused.code(), Code::InvalidArgument);
    // A compressed upload that decodes to more than its name says.
    let small = format!("uploads/u2/compressed-blobs/zstd/{}/{}", hex(&data[..1000]), 1000);
    let refused = grpc.write(&small, &compressed, 0, 64 << 10, true).await.expect_err("bomb");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = grpc.write(&small, b"not zstd at all", 0, 64, true).await.expect_err("garbage");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(grpc.missing(&[&data[..1000]]).await.len(), 1);

    // HTTP: Bazel's paths answer zstd to those who take it.
    let url = format!("{}/cas/{}", s.url, hex(&data));
    let got = curl(&["-H", "Accept-Encoding: zstd", &url]);
    assert_eq!(got.header("content-encoding").as_deref(), Some("zstd"));
    assert_eq!(zstd::stream::decode_all(&got.body[..]).expect("decode"), data);
    assert_eq!(curl(&[&url]).body, data, "and plain bytes to the others");
    // PUTs in zstd, to cas/ and ac/, are stored as what they decode to.
    let other = bytes(10, 300_000);
    let body = t.file("other.zst", zstd::bulk::compress(&other, 3).expect("zstd"));
    let body = body.to_str().expect("utf-8");
    let zstd_put = |path: &str| {
        curl(&["-H", "Content-Encoding: zstd", "-T", body, &format!("{}{path}", s.url)]).status
    };
    assert_eq!(zstd_put(&format!("/cas/{}", hex(&other))), 201);
    assert_eq!(curl(&[&format!("{}/cas/{}", s.url, hex(&other))]).body, other);
    assert_eq!(zstd_put(&format!("/main/ac/{}", hex(b"action"))), 201);
    let ac = format!("{}/main/ac/{}", s.url, hex(b"action"));
    assert_eq!(curl(&[&ac]).body, other);
    // Small blobs come from memory once read; compressed all the same.
    let got = curl(&["-H", "Accept-Encoding: gzip, zstd", &ac]);
    assert_eq!(got.header("content-encoding").as_deref(), Some("zstd"));
    assert_eq!(zstd::stream::decode_all(&got.body[..]).expect("decode"), other);
    assert_eq!(zstd_put(&format!("/cas/{}", hex(b"else"))), 400, "checked after decoding");
    let garbage = t.file("garbage", b"not zstd");
    let got = curl(&[
        "-H",
        "Content-Encoding: zstd",
        "-T",
        garbage.to_str().expect("utf-8"),
        &format!("{}/cas/{}", s.url, hex(b"x")),
    ]);
    assert_eq!(got.status, 400, "{}", got.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tree_pages_through_every_directory_once() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let grpc = Grpc::connect(&s).await;
    let file = b"a file".to_vec();
    grpc.put(&file).await;
    // root → d0..d3 → each two leaves; leaf e1 of every dN is the same.
    let leaf = |name: &str| re::Directory {
        files: vec![re::FileNode {
            name: name.into(),
            digest: Some(digest(&file)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let shared = leaf("shared").encode_to_vec();
    grpc.put(&shared).await;
    let mut middles = Vec::new();
    for i in 0..4 {
        let own = leaf(&format!("own{i}")).encode_to_vec();
        grpc.put(&own).await;
        let middle = re::Directory {
            directories: vec![
                re::DirectoryNode { name: "e0".into(), digest: Some(digest(&own)) },
                re::DirectoryNode { name: "e1".into(), digest: Some(digest(&shared)) },
            ],
            ..Default::default()
        }
        .encode_to_vec();
        grpc.put(&middle).await;
        middles.push(middle);
    }
    let root = re::Directory {
        directories: middles
            .iter()
            .enumerate()
            .map(|(i, m)| re::DirectoryNode { name: format!("d{i}"), digest: Some(digest(m)) })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec();
    grpc.put(&root).await;

    let tree = |size: i32, token: String| {
        let request = re::GetTreeRequest {
            root_digest: Some(digest(&root)),
            page_size: size,
            page_token: token,
            ..Default::default()
        };
        let mut cas = grpc.cas();
        async move {
            let mut stream = cas.get_tree(request).await?.into_inner();
            let mut pages = Vec::new();
            while let Some(page) = stream.message().await? {
                pages.push(page);
            }
            Ok::<_, Status>(pages)
        }
    };
    // 1 root + 4 middles + 4 own leaves + 1 shared leaf.
    let all = tree(0, String::new()).await.expect("GetTree");
    let dirs: Vec<re::Directory> = all.iter().flat_map(|p| p.directories.clone()).collect();
    assert_eq!(dirs.len(), 10);
    assert_eq!(all.last().expect("a page").next_page_token, "");
    // In pages of three, each token taking up where its page ended.
    let pages = tree(3, String::new()).await.expect("pages");
    assert_eq!(pages.iter().map(|p| p.directories.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
    let paged: Vec<re::Directory> = pages.iter().flat_map(|p| p.directories.clone()).collect();
    assert_eq!(paged, dirs);
    let from_second = tree(3, pages[0].next_page_token.clone()).await.expect("from a token");
    let rest: Vec<re::Directory> = from_second.iter().flat_map(|p| p.directories.clone()).collect();
    assert_eq!(rest, dirs[3..]);
    assert_eq!(tree(3, "nonsense".into()).await.expect_err("token").code(), Code::InvalidArgument);
    let request =
        re::GetTreeRequest { root_digest: Some(digest(b"no such dir")), ..Default::default() };
    assert_eq!(grpc.cas().get_tree(request).await.expect_err("root").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_results_are_served_only_with_every_output_and_per_instance() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let grpc = Grpc::connect(&s).await;
    let (out, stdout, inner) = (bytes(11, 5000), b"compiled\n".to_vec(), bytes(12, 700));
    let tree = re::Tree {
        root: Some(re::Directory {
            files: vec![re::FileNode {
                name: "f".into(),
                digest: Some(digest(&inner)),
                ..Default::default()
            }],
            ..Default::default()
        }),
        children: vec![],
    }
    .encode_to_vec();
    let result = re::ActionResult {
        output_files: vec![re::OutputFile {
            path: "out".into(),
            digest: Some(digest(&out)),
            ..Default::default()
        }],
        output_directories: vec![re::OutputDirectory {
            path: "dir".into(),
            tree_digest: Some(digest(&tree)),
            ..Default::default()
        }],
        stdout_digest: Some(digest(&stdout)),
        exit_code: 0,
        ..Default::default()
    };
    let action = digest(b"an action");
    let update = |instance: &str| re::UpdateActionResultRequest {
        instance_name: instance.into(),
        action_digest: Some(action.clone()),
        action_result: Some(result.clone()),
        ..Default::default()
    };
    let get = |instance: &str| {
        let request = re::GetActionResultRequest {
            instance_name: instance.into(),
            action_digest: Some(action.clone()),
            ..Default::default()
        };
        let mut ac = grpc.ac();
        async move { ac.get_action_result(request).await.map(|r| r.into_inner()) }
    };
    grpc.ac().update_action_result(update("main")).await.expect("UpdateActionResult");
    // Its outputs are not in the CAS yet; then one by one they are.
    assert_eq!(get("main").await.expect_err("no outputs").code(), Code::NotFound);
    grpc.put(&out).await;
    grpc.put(&stdout).await;
    assert_eq!(get("main").await.expect_err("no tree").code(), Code::NotFound);
    grpc.put(&tree).await;
    assert_eq!(get("main").await.expect_err("a file of the tree").code(), Code::NotFound);
    grpc.put(&inner).await;
    assert_eq!(get("main").await.expect("every output is there"), result);
    // Instance names partition the action cache, as `/<instance>/ac/` does over HTTP.
    assert_eq!(get("").await.expect_err("no instance").code(), Code::NotFound);
    assert_eq!(get("other").await.expect_err("another instance").code(), Code::NotFound);
    let http = curl(&[&format!("{}/main/ac/{}", s.url, action.hash)]);
    assert_eq!(http.body, result.encode_to_vec());
    let body = t.file("result", result.encode_to_vec());
    let put =
        curl(&["-T", body.to_str().expect("utf-8"), &format!("{}/ac/{}", s.url, action.hash)]);
    assert_eq!(put.status, 201);
    assert_eq!(get("").await.expect("written over HTTP"), result);
    for bad in ["/x", "x/", "a//b", "a/../b"] {
        assert_eq!(get(bad).await.expect_err(bad).code(), Code::InvalidArgument, "{bad}");
    }
    let refused = grpc.ac().update_action_result(update("pypi")).await.expect_err("pypi");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_credentials_get_their_status() {
    let t = TestDir::new();
    let users = t.path().join("users");
    for (flag, user, password) in [("-cbB", "alice", "pw-a"), ("-bB", "carol", "pw-c")] {
        let status = Command::new("htpasswd")
            .args([flag, users.to_str().expect("utf-8"), user, password])
            .stderr(std::process::Stdio::null())
            .status()
            .expect("htpasswd");
        assert!(status.success());
    }
    let users = users.to_str().expect("utf-8");
    let s = Served::start(&t, &["-u", users, "--read-only-users", "carol"]);
    let anonymous = Grpc::connect(&s).await;
    let alice = anonymous.as_user("alice", "pw-a");
    let carol = anonymous.as_user("carol", "pw-c");
    let wrong = anonymous.as_user("alice", "wrong");
    let data = bytes(13, 1000);
    async fn put_one(grpc: &Grpc, data: &[u8]) -> Result<Code, Status> {
        let blobs = vec![(digest(data), data.to_vec(), re::compressor::Value::Identity)];
        grpc.update(blobs).await.map(|codes| codes[0])
    }
    assert_eq!(
        put_one(&anonymous, &data).await.expect_err("anonymous").code(),
        Code::Unauthenticated
    );
    assert_eq!(
        put_one(&wrong, &data).await.expect_err("wrong password").code(),
        Code::Unauthenticated
    );
    assert_eq!(put_one(&carol, &data).await.expect_err("read-only").code(), Code::PermissionDenied);
    let name = upload_name(&data, "u");
    let refused = carol.write(&name, &data, 0, 100, true).await.expect_err("read-only write");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(put_one(&alice, &data).await.expect("alice writes"), Code::Ok);
    assert_eq!(carol.read(&blob_name(&data), 0, 0).await.expect("carol reads"), data);
    let refused = wrong.read(&blob_name(&data), 0, 0).await.expect_err("wrong password");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let metrics = curl(&["-u", "alice:pw-a", &format!("{}/metrics", s.url)]).text();
    assert!(!metrics.contains("larder_auth_failures_total 0\n"), "{metrics}");
    // One message larger than the server takes.
    let huge = bytes(14, 9 << 20);
    let blobs = vec![(digest(&huge), huge.clone(), re::compressor::Value::Identity)];
    let refused = alice.update(blobs).await.expect_err("9 MiB in one message");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let name = upload_name(&huge, "v");
    let refused = alice.write(&name, &huge, 0, huge.len(), true).await.expect_err("one piece");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        alice.write(&name, &huge, 0, 1 << 20, true).await.expect("in pieces"),
        huge.len() as i64
    );
    drop(s);

    let s = Served::start(&t, &["-u", users, "--anonymous-read"]);
    let anonymous = Grpc::connect(&s).await;
    assert_eq!(anonymous.missing(&[&data]).await, [], "anonymous reads");
    assert_eq!(anonymous.read(&blob_name(&data), 0, 0).await.expect("anonymous read"), data);
    assert_eq!(
        put_one(&anonymous, &data).await.expect_err("anonymous write").code(),
        Code::Unauthenticated
    );
}

/// The peak resident memory of a process, from /proc.
fn peak_memory(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).expect("kB") * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_far_past_the_message_size_streams_in_bounded_memory() {
    let t = TestDir::new();
    let s = Served::start(&t, &[]);
    let grpc = Grpc::connect(&s).await;
    let data = bytes(15, 300 << 20);
    let before = peak_memory(s.pid());
    let name = upload_name(&data, "w");
    assert_eq!(grpc.write(&name, &data, 0, 1 << 20, true).await.expect("write"), data.len() as i64);
    let read = grpc.read(&blob_name(&data), 0, 0).await.expect("read");
    assert!(read == data, "the blob read back differs");
    let zname = format!("compressed-blobs/zstd/{}/{}", hex(&data), data.len());
    let frame = grpc.read(&zname, 0, 0).await.expect("compressed read");
    assert!(frame.len() > data.len() / 2, "random bytes barely compress");
    let grown = peak_memory(s.pid()).saturating_sub(before);
    assert!(grown < 64 << 20, "the server grew by {} MiB for a 300 MiB blob", grown >> 20);
}
