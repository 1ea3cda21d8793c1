//! Faults in the middle of transfers, through a proxy in front of the real
//! servers: a remote tier (a larder server, and S3 on Garage) that stalls,
//! resets or sends a wrong byte part way through a read or a write-back
//! upload. Nothing wrong is kept or served, nothing owed is lost, and the
//! next try after the fault succeeds.

use crate::fault_proxy::{Fault, FaultProxy};
use crate::garage::Garage;
use crate::serve::Served;
use crate::util::{TestDir, bytes, digest_of, wait_for};

/// One remote named `team` at `url` in `t`'s configuration.
fn remote(t: &TestDir, table: &str) {
    t.file("user/.config/larder/config.toml", format!("[[remote]]\nname = \"team\"\n{table}\n"));
}

/// A larder server with `data` under the key `data/blob`, and a proxy before it.
fn larder_remote(data: &[u8]) -> (TestDir, Served, FaultProxy) {
    let server = TestDir::new();
    server.put("blob", data);
    let f = server.file("again", data);
    server.run(&["put", f.to_str().expect("utf-8"), "--key", "data/blob"]).ok();
    let served = Served::start(&server, &[]);
    let proxy = FaultProxy::start(&served.addr);
    (server, served, proxy)
}

#[test]
fn a_read_through_that_stalls_resets_or_lies_mid_transfer_keeps_nothing_wrong() {
    let data = bytes(41, 3_000_000);
    let digest = digest_of(&data);
    let (_server, _served, proxy) = larder_remote(&data);
    let t = TestDir::new();
    remote(&t, &format!("url = \"http://{}\"\nmode = \"read-only\"", proxy.addr));
    let get = |home: &str| {
        let out = t.path().join(format!("{home}.out"));
        let run = t.run_with(
            t.command()
                .env("LARDER_HOME", t.path().join(home))
                .env("LARDER_HTTP_TIMEOUT", "1s")
                .env("LARDER_HTTP_RETRIES", "0")
                .args(["get", "data/blob", "-o", out.to_str().expect("utf-8")]),
        );
        (run, out)
    };
    let nothing_kept = |home: &str, out: &std::path::Path| {
        assert!(!out.exists(), "no output from a failed get");
        let has = t.run_with(
            t.command().env("LARDER_HOME", t.path().join(home)).args(["has", "--local", &digest]),
        );
        assert_eq!(has.code, 1, "nothing kept locally");
    };
    // A wrong byte in the middle of the body: refused as corrupt (exit 3).
    proxy.set(Fault::FlipReply(1_500_000), 1);
    let (run, out) = get("a");
    let err = run.fails(3);
    assert!(err.contains("team") || err.contains("sha256"), "{err}");
    nothing_kept("a", &out);
    // A transfer that goes silent half way: a timeout, one line, exit 6.
    proxy.set(Fault::StallReply(1_000_000), 1);
    let (run, out) = get("b");
    run.fails(6);
    nothing_kept("b", &out);
    // A reset half way.
    proxy.set(Fault::ResetReply(1_000_000), 1);
    let (run, out) = get("c");
    run.fails(6);
    nothing_kept("c", &out);
    // The next try, with the fault gone, gets the right bytes.
    let (run, out) = get("c");
    run.ok();
    assert!(std::fs::read(&out).expect("out") == data);
}

#[test]
fn a_reset_read_is_tried_again_and_resumed_when_retries_are_allowed() {
    let data = bytes(42, 3_000_000);
    let (_server, _served, proxy) = larder_remote(&data);
    let t = TestDir::new();
    remote(&t, &format!("url = \"http://{}\"\nmode = \"read-only\"", proxy.addr));
    proxy.set(Fault::ResetReply(1_000_000), 1);
    let out = t.path().join("out");
    t.run_with(t.command().env("LARDER_HTTP_RETRIES", "2").args([
        "get",
        "data/blob",
        "-o",
        out.to_str().expect("utf-8"),
    ]))
    .ok();
    assert!(std::fs::read(&out).expect("out") == data);
    assert!(proxy.connections() >= 2, "tried again");
}

#[test]
fn a_write_back_upload_that_stalls_or_resets_mid_body_is_still_owed_and_sent_later() {
    let receiver = TestDir::new();
    let served = Served::start(&receiver, &[]);
    let proxy = FaultProxy::start(&served.addr);
    let t = TestDir::new();
    remote(&t, &format!("url = \"http://{}\"\nmode = \"write-back\"", proxy.addr));
    let data = bytes(43, 4_000_000);
    let f = t.file("model.bin", &data);
    // Every upload breaks part way through its body, one way or the other.
    for fault in [Fault::ResetRequest(1_000_000), Fault::StallRequest(1_000_000)] {
        proxy.set(fault, 0);
        let env = |cmd: &mut std::process::Command| {
            cmd.env("LARDER_HTTP_TIMEOUT", "1s").env("LARDER_HTTP_RETRIES", "0");
        };
        let mut put = t.command();
        env(&mut put);
        t.run_with(put.args(["put", f.to_str().expect("utf-8"), "--key", "models/m"])).ok();
        let mut push = t.command();
        env(&mut push);
        let run = t.run_with(push.args(["push", "--queued"]));
        assert_ne!(run.code, 0, "{fault:?}: the upload cannot finish: {run:#?}");
        let stats = t.json(&["stats", "--json"]);
        assert!(stats.to_string().contains("\"queued\":1"), "{fault:?}: still owed: {stats}");
        assert_eq!(receiver.run(&["has", &digest_of(&data)]).code, 1, "nothing half-kept");
    }
    // The remote behaves again: the queue drains, the remote has it whole.
    proxy.set(Fault::None, 0);
    t.run(&["push", "--queued"]).ok();
    wait_for("the upload", || receiver.run(&["has", "models/m"]).code == 0);
    let out = receiver.path().join("out");
    receiver.run(&["get", "models/m", "-o", out.to_str().expect("utf-8")]).ok();
    assert!(std::fs::read(&out).expect("out") == data);
    assert_eq!(receiver.verify()["corrupt"], serde_json::json!([]));
}

#[test]
fn an_s3_read_through_that_resets_or_lies_mid_object_is_refused_and_retried() {
    let t = TestDir::new();
    let garage = Garage::start(t.path());
    let host = garage.endpoint.trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(&host);
    remote(
        &t,
        &format!(
            "url = \"s3://{}/team\"\nendpoint = \"http://{}\"\nregion = \"garage\"",
            garage.bucket, proxy.addr
        ),
    );
    let run = |home: &str, extra: &[(&str, &str)], args: &[&str]| {
        let mut cmd = t.command();
        cmd.env("LARDER_HOME", t.path().join(home));
        for (k, v) in garage.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        t.run_with(cmd.args(args))
    };
    let data = bytes(44, 3_000_000);
    let f = t.file("data.bin", &data);
    run("a", &[], &["put", "--upload", f.to_str().expect("utf-8"), "--key", "d/x"]).ok();
    let digest = digest_of(&data);
    let out = t.path().join("out");
    let get = |home: &str| {
        run(
            home,
            &[("LARDER_HTTP_TIMEOUT", "2s")],
            &["get", &digest, "-o", out.to_str().expect("utf-8")],
        )
    };
    // A wrong byte in the object: refused, nothing kept or written.
    proxy.set(Fault::FlipReply(2_000_000), 1);
    get("b").fails(3);
    assert!(!out.exists());
    assert_eq!(run("b", &[], &["has", "--local", &digest]).code, 1);
    // A reset mid-object: tried again, and right.
    proxy.set(Fault::ResetReply(1_500_000), 1);
    get("c").ok();
    assert!(std::fs::read(&out).expect("out") == data);
}

/// An ssh host that accepts the connection and then says nothing (a hung
/// machine, a wedged sshd): acquiring from it ends at the source's timeout
/// with one line, leaves nothing in use, and works once the host answers.
#[test]
fn an_ssh_host_that_hangs_while_an_instance_is_made_is_given_up_and_nothing_leaks() {
    let t = TestDir::new();
    let sshd = crate::sshd::Sshd::start(&t.path().join("sshd"));
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", sshd.port));
    // The same host and keys as the test sshd, through the proxy.
    let config = std::fs::read_to_string(&sshd.config)
        .expect("ssh config")
        .replace(
            &format!("Port {}", sshd.port),
            &format!("Port {}", proxy.addr.rsplit(':').next().expect("port")),
        )
        .replace(&format!("Host {}", sshd.alias), "Host hung");
    let config = t.file("hung_config", config);
    t.file(
        "work/.larder/sources/hung/source.conf",
        format!(
            "[DEFAULT]\ntype=ssh\nssh_host=hung\nssh_config={}\ntimeout=2s\n",
            config.display()
        ),
    );
    proxy.set(Fault::StallReply(0), 0);
    let err = t.run(&["pool", "acquire", "-s", "hung"]).fails(6);
    assert!(err.contains("hung"), "{err}");
    let all = t.json(&["pool", "status", "-a", "--json"]);
    assert_eq!(all["instances"], serde_json::json!([]), "nothing left in use: {all}");
    proxy.set(Fault::None, 0);
    assert_eq!(t.run(&["pool", "acquire", "-s", "hung"]).ok(), "hung\n");
    let run = t.run(&["pool", "run", "-s", "hung", "--", "echo", "up"]);
    assert_eq!(run.stdout, "up\n", "{run:#?}");
}

/// The peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// HTTP/2 abuse on one connection (h2c): streams opened and reset at once
/// by the tens of thousands (the "rapid reset" attack), and streams opened
/// and left hanging by the thousand. The server sends the abuser away or
/// holds it to its stream limit, keeps answering everyone else, and stays
/// small.
#[test]
fn http2_rapid_resets_and_hanging_streams_do_not_take_the_server_down() {
    let t = TestDir::new();
    let data = bytes(45, 4096);
    let f = t.file("hot", &data);
    t.run(&["put", f.to_str().expect("utf-8"), "--key", "hot"]).ok();
    let served = Served::start(&t, &[]);
    let addr = served.addr.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (resets_sent, refused) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let ended = tokio::spawn(connection);
        let mut client = client;
        let mut sent = 0u32;
        let mut refused = false;
        for _ in 0..50_000 {
            let request =
                http::Request::get(format!("http://{addr}/hot")).body(()).expect("request");
            client = match client.ready().await {
                Ok(c) => c,
                Err(_) => {
                    refused = true;
                    break;
                }
            };
            match client.send_request(request, true) {
                Ok((_, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => {
                    refused = true;
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), ended).await;
        (sent, refused)
    });
    // Everyone else is still served, and right.
    let got = crate::serve::curl(&["--http2-prior-knowledge", &format!("{}/hot", served.url)]);
    assert_eq!(got.status, 200, "after {resets_sent} resets (refused: {refused})");
    assert!(got.body == data);
    // Streams opened and never finished: no more than the server's limit
    // are taken at once, and others are still served meanwhile.
    let open = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(connection);
        let mut client = client;
        let mut streams = Vec::new();
        for _ in 0..2000 {
            let ready =
                tokio::time::timeout(std::time::Duration::from_secs(2), client.clone().ready())
                    .await;
            let Ok(Ok(ready)) = ready else { break };
            client = ready;
            let request = http::Request::put(format!("http://{addr}/hang-{}", streams.len()))
                .header("content-length", "1000000")
                .body(())
                .expect("request");
            match client.send_request(request, false) {
                Ok((response, stream)) => streams.push((response, stream)),
                Err(_) => break,
            }
        }
        // Those past the server's limit are refused; the rest hang, open.
        let waits: Vec<_> = streams
            .into_iter()
            .map(|(response, stream)| {
                tokio::spawn(async move {
                    let answer =
                        tokio::time::timeout(std::time::Duration::from_secs(1), response).await;
                    drop(stream);
                    answer.is_err()
                })
            })
            .collect();
        let got = tokio::task::spawn_blocking({
            let url = format!("http://{addr}/hot");
            move || crate::serve::curl(&["--http2-prior-knowledge", &url])
        })
        .await
        .expect("curl");
        assert_eq!(got.status, 200, "served while streams hang");
        let mut open = 0;
        for wait in waits {
            if wait.await.unwrap_or(false) {
                open += 1;
            }
        }
        open
    });
    assert!(open <= 256, "{open} streams were let open on one connection");
    let rss = peak_rss(served.pid());
    assert!(rss < 256 << 20, "the server grew to {} MiB", rss >> 20);
}
