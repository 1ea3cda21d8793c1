//! The Python package index of `larder serve`, with the real clients: twine
//! and uv to upload, pip and uv to install, pypiserver and a second larder
//! server as upstreams, and `larder wheels install` for curdling's flow.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::archives::sha256_hex;
use crate::pyproject::{build, project, python_tool, run_ok};
use crate::serve::{Served, curl};
use crate::util::{TestDir, wait_for};

/// An htpasswd file with `alice` (may write) and `reader` (may read).
fn users(t: &TestDir) -> String {
    let path = t.path().join("users");
    for (flag, user) in [("-cbB", "alice"), ("-bB", "reader")] {
        let status = Command::new("htpasswd")
            .args([flag])
            .arg(&path)
            .args([user, "pw"])
            .stderr(Stdio::null())
            .status()
            .expect("htpasswd");
        assert!(status.success());
    }
    path.to_str().expect("utf-8").to_string()
}

fn twine(s: &Served, user: &str, files: &[&Path], path: &str) -> (bool, String) {
    let mut cmd = python_tool("twine");
    cmd.args(["upload", "--disable-progress-bar", "--non-interactive", "--repository-url"])
        .arg(format!("{}{path}", s.url))
        .args(["-u", user, "-p", "pw"])
        .args(files);
    let out = cmd.output().expect("twine");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `pip install --target` from an index; returns pip's output.
fn pip_install(index: &str, target: &Path, package: &str) -> String {
    let mut cmd = python_tool("pip");
    cmd.args(["install", "--index-url", index, "--target"]).arg(target).arg(package);
    run_ok(cmd)
}

#[test]
fn twine_uploads_and_pip_and_uv_install_from_html_and_json() {
    let t = TestDir::new();
    let s = Served::start(
        &t,
        &["-u", &users(&t), "--read-only-users", "reader", "--anonymous-read", "-d"],
    );
    let src = project(t.path(), "holy-grail", "1.0", &[]);
    let wheel = build(&src, "wheel", &t.path().join("dist"));
    let sdist = build(&src, "sdist", &t.path().join("dist"));
    let (ok, out) = twine(&s, "alice", &[&wheel, &sdist], "/legacy/");
    assert!(ok, "{out}");
    // The same bytes again are fine (to / as well); a reader may not upload.
    let (ok, out) = twine(&s, "alice", &[&wheel], "/");
    assert!(ok, "{out}");
    let (ok, out) = twine(&s, "reader", &[&wheel], "/");
    // twine prints the reason phrase: the reason is there.
    assert!(!ok && out.contains("403") && out.contains("reader may only read"), "{out}");

    // PEP 503 HTML and PEP 691 JSON, by Accept.
    let html = curl(&["-H", "Accept: text/html", &format!("{}/simple/holy-grail/", s.url)]);
    assert_eq!(html.header("content-type").as_deref(), Some("text/html; charset=utf-8"));
    let page = html.text();
    let sha = crate::archives::sha256_hex(&std::fs::read(&wheel).expect("wheel"));
    assert!(page.contains(&format!("holy_grail-1.0-py3-none-any.whl#sha256={sha}")), "{page}");
    assert!(page.contains("data-requires-python=\"&gt;=3.8\""), "{page}");
    assert!(page.contains("data-core-metadata=\"sha256="), "{page}");
    let json = curl(&[
        "-H",
        "Accept: application/vnd.pypi.simple.v1+json",
        &format!("{}/simple/holy-grail/", s.url),
    ]);
    assert_eq!(json.header("content-type").as_deref(), Some("application/vnd.pypi.simple.v1+json"));
    let doc: serde_json::Value = serde_json::from_slice(&json.body).expect("json");
    assert_eq!(doc["meta"]["api-version"], "1.1");
    assert_eq!(doc["versions"], serde_json::json!(["1.0"]));
    assert_eq!(doc["files"][0]["hashes"]["sha256"], sha.as_str());
    assert!(doc["files"][0]["upload-time"].as_str().is_some_and(|t| t.ends_with('Z')), "{doc}");
    assert!(doc["files"][0]["size"].as_u64().is_some());
    assert_eq!(
        curl(&["-H", "Accept: application/json", &format!("{}/simple/holy-grail/", s.url)]).status,
        406
    );
    // Names are normalized, with a redirect; files answer ranges.
    let redirected = curl(&[&format!("{}/simple/Holy_Grail/", s.url)]);
    assert_eq!(
        (redirected.status, redirected.header("location").as_deref()),
        (301, Some("/simple/holy-grail/"))
    );
    let part = curl(&[
        "-r",
        "0-3",
        &format!("{}/packages/holy-grail/holy_grail-1.0-py3-none-any.whl", s.url),
    ]);
    assert_eq!((part.status, part.body.as_slice()), (206, b"PK\x03\x04".as_slice()));

    // pip and uv install from it.
    let index = format!("{}/simple/", s.url);
    pip_install(&index, &t.path().join("pip-target"), "holy-grail");
    assert!(t.path().join("pip-target/holy_grail/__init__.py").exists());
    let mut uv = python_tool("uv");
    uv.args(["pip", "install", "--index-url", &index, "--target"])
        .arg(t.path().join("uv-target"))
        .arg("holy-grail==1.0");
    run_ok(uv);
    assert!(t.path().join("uv-target/holy_grail/__init__.py").exists());
    // pip resolves with the metadata file alone (PEP 658), then downloads.
    let mut download = python_tool("pip");
    download
        .args(["download", "--no-deps", "--only-binary", ":all:", "--index-url", &index, "-d"])
        .arg(t.path().join("downloaded"))
        .arg("holy-grail");
    run_ok(download);
    let log = std::fs::read_to_string(t.path().join("serve.log")).expect("log");
    assert!(
        log.contains("GET /packages/holy-grail/holy_grail-1.0-py3-none-any.whl.metadata 200"),
        "{log}"
    );
    assert!(t.path().join("downloaded/holy_grail-1.0-py3-none-any.whl").exists());

    // Other bytes under a released file name are refused.
    let other = project(&t.path().join("other"), "holy-grail", "1.0", &["requests"]);
    let changed = build(&other, "wheel", &t.path().join("dist2"));
    let (ok, out) = twine(&s, "alice", &[&changed], "/");
    assert!(!ok && out.contains("409") && out.contains("File already exists"), "{out}");
    // uv publishes too.
    let src2 = project(t.path(), "holy-grail", "2.0", &[]);
    let wheel2 = build(&src2, "wheel", &t.path().join("dist3"));
    let mut publish = python_tool("uv");
    publish
        .args(["publish", "--publish-url"])
        .arg(format!("{}/legacy/", s.url))
        .args(["--username", "alice", "--password", "pw"])
        .arg(&wheel2);
    run_ok(publish);
    let doc: serde_json::Value = serde_json::from_slice(
        &curl(&[
            "-H",
            "Accept: application/vnd.pypi.simple.v1+json",
            &format!("{}/simple/holy-grail/", s.url),
        ])
        .body,
    )
    .expect("json");
    assert_eq!(doc["versions"], serde_json::json!(["1.0", "2.0"]));
}

/// Posts a multipart upload with curl's `-F` arguments.
fn post(s: &Served, form: &[&str]) -> crate::serve::Got {
    let mut args = vec!["-u", "alice:pw"];
    for f in form {
        args.extend(["-F", f]);
    }
    let url = format!("{}/legacy/", s.url);
    args.push(&url);
    curl(&args)
}

#[test]
fn bad_uploads_get_a_clear_400_and_store_nothing() {
    let t = TestDir::new();
    let s = Served::start(&t, &["-u", &users(&t)]);
    let src = project(t.path(), "holy-grail", "1.0", &[]);
    let wheel = build(&src, "wheel", &t.path().join("dist"));
    let sha = crate::archives::sha256_hex(&std::fs::read(&wheel).expect("wheel"));
    let content = format!("content=@{}", wheel.display());
    let evil = t.file("evil", "not a wheel at all");
    let sha_message = format!("the file's sha256 is {sha}, not the 00ff");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["name=holy-grail".into(), content.clone()], "the upload has no :action field"),
        (vec![":action=file_upload".into(), "name=holy-grail".into()], "no `content` field"),
        (
            vec![
                ":action=file_upload".into(),
                "name=holy-grail".into(),
                "sha256_digest=00ff".into(),
                content.clone(),
            ],
            &sha_message,
        ),
        (
            vec![
                ":action=file_upload".into(),
                "name=holy-grail".into(),
                format!("content=@{};filename=evil.exe", evil.display()),
            ],
            "`evil.exe` is not the name of a wheel or an sdist",
        ),
        (
            vec![
                ":action=file_upload".into(),
                "name=holy-grail".into(),
                format!("content=@{};filename=../../evil-1.0.tar.gz", evil.display()),
            ],
            "is not the name of a wheel or an sdist",
        ),
        (
            vec![":action=file_upload".into(), "name=holy grail!".into(), content.clone()],
            "is not a valid project name",
        ),
        (
            vec![":action=file_upload".into(), "name=other".into(), content.clone()],
            "is not of the project other",
        ),
        (
            vec![
                ":action=file_upload".into(),
                "name=holy-grail".into(),
                "version=9.9".into(),
                content.clone(),
            ],
            "is not of the version 9.9",
        ),
        (
            vec![
                ":action=file_upload".into(),
                "name=holy-grail".into(),
                format!("content=@{};filename=holy_grail-1.0-py3-none-any.whl", evil.display()),
            ],
            "not a wheel (zip)",
        ),
        (
            vec![":action=submit".into(), "name=holy-grail".into(), content.clone()],
            "the action submit is not supported",
        ),
    ];
    for (form, expected) in cases {
        let form: Vec<&str> = form.iter().map(String::as_str).collect();
        let got = post(&s, &form);
        assert_eq!(got.status, 400, "{form:?}: {}", got.text());
        assert!(got.text().contains(expected), "{form:?}: expected {expected:?} in {}", got.text());
        // twine prints the reason phrase: the message is there too.
        assert!(
            got.headers
                .lines()
                .next()
                .is_some_and(|l| l.contains(&expected[..expected.len().min(20)])),
            "{}",
            got.headers
        );
    }
    let malformed = curl(&[
        "-u",
        "alice:pw",
        "-H",
        "Content-Type: multipart/form-data; boundary=xyz",
        "--data-binary",
        "--xyz\r\nbroken",
        &format!("{}/legacy/", s.url),
    ]);
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    assert_eq!(
        curl(&["-u", "alice:pw", "-X", "POST", "--data", "x=1", &format!("{}/simple/", s.url)])
            .status,
        405
    );
    assert_eq!(curl(&[&format!("{}/simple/holy-grail/", s.url), "-u", "alice:pw"]).status, 404);
    assert_eq!(t.json(&["ls", "--json"]), serde_json::json!([]), "nothing half-stored");
}

/// The files of a folder, by name, skipping none (dotfiles included).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_served_folder_stays_a_folder_of_packages_served_in_place() {
    let t = TestDir::new();
    let served = t.path().join("served");
    let src = project(t.path(), "alpha", "1.0", &[]);
    let wheel = build(&src, "wheel", &served.join("wheels"));
    build(&src, "sdist", &served);
    std::fs::write(served.join("notes.txt"), "not a package").expect("write");
    let dir = served.to_str().expect("utf-8").to_string();
    let s = Served::start(&t, &[&dir, "-u", &users(&t), "--anonymous-read", "--rescan", "1h"]);
    // The startup line says where each thing is.
    let said = format!("serving the packages in {dir} and the store of {}", t.home.display());
    wait_for("the startup line", || {
        std::fs::read_to_string(t.path().join("serve.log")).unwrap_or_default().contains(&said)
    });
    pip_install(&format!("{}/simple/", s.url), &t.path().join("target"), "alpha");
    let got = curl(&[&format!("{}/packages/alpha/alpha-1.0-py3-none-any.whl", s.url)]);
    assert_eq!(got.body, std::fs::read(&wheel).expect("read"), "the folder's own bytes");
    // An upload lands in the folder as a plain file.
    let beta = project(t.path(), "beta", "0.1", &[]);
    let beta_wheel = build(&beta, "wheel", &t.path().join("dist"));
    let (ok, out) = twine(&s, "alice", &[&beta_wheel], "/legacy/");
    assert!(ok, "{out}");
    let landed = served.join("beta-0.1-py3-none-any.whl");
    assert_eq!(
        std::fs::read(&landed).expect("the upload is in the folder"),
        std::fs::read(&beta_wheel).expect("read")
    );
    pip_install(&format!("{}/simple/", s.url), &t.path().join("target2"), "beta");
    // Nothing of larder's in the folder, and no second copy of a package in the home.
    assert_eq!(
        names_in(&served),
        ["alpha-1.0.tar.gz", "beta-0.1-py3-none-any.whl", "notes.txt", "wheels"],
    );
    for file in [&wheel, &landed] {
        let digest = format!("sha256:{}", sha256_hex(&std::fs::read(file).expect("read")));
        assert_eq!(t.run(&["has", &digest]).code, 1, "a second copy of {}", file.display());
    }
    // Removed over HTTP, it goes from the folder.
    let deleted = curl(&[
        "-u",
        "alice:pw",
        "-X",
        "DELETE",
        &format!("{}/packages/beta/beta-0.1-py3-none-any.whl", s.url),
    ]);
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert!(!landed.exists());
}

#[test]
fn a_package_copied_into_the_folder_is_seen_by_the_next_request() {
    let t = TestDir::new();
    let served = t.path().join("served");
    let src = project(t.path(), "alpha", "1.0", &[]);
    build(&src, "sdist", &served);
    let dir = served.to_str().expect("utf-8").to_string();
    // No rescan would run during the test: the requests themselves see the changes.
    let s = Served::start(&t, &[&dir, "--rescan", "1h"]);
    let page = |project: &str| curl(&[&format!("{}/simple/{project}/", s.url)]);
    assert!(page("alpha").text().contains("alpha-1.0.tar.gz"));
    let beta = project(t.path(), "beta", "0.1", &[]);
    let beta_wheel = build(&beta, "wheel", &t.path().join("dist"));
    let bytes = std::fs::read(&beta_wheel).expect("read");
    // Copied slowly: the half-written file is passed by, the whole one listed.
    let copy = served.join("beta-0.1-py3-none-any.whl");
    std::fs::write(&copy, &bytes[..bytes.len() / 2]).expect("write");
    assert_eq!(page("beta").status, 404, "a half-written wheel is not listed");
    std::fs::write(&copy, &bytes).expect("write");
    let listing = page("beta").text();
    assert!(listing.contains(&sha256_hex(&bytes)), "{listing}");
    pip_install(&format!("{}/simple/", s.url), &t.path().join("target"), "beta");
    // Taken out, it goes at once.
    std::fs::remove_file(served.join("alpha-1.0.tar.gz")).expect("rm");
    assert!(!page("alpha").text().contains("alpha-1.0.tar.gz"));
    let root = curl(&[&format!("{}/simple/", s.url)]).text();
    assert!(root.contains("beta/") && !root.contains("alpha/"), "{root}");
    // Rewritten in place, it is hashed again before it is sent.
    let gamma = project(t.path(), "beta", "0.1", &["six"]);
    let other = std::fs::read(build(&gamma, "wheel", &t.path().join("dist2"))).expect("read");
    assert_ne!(other, bytes);
    std::fs::write(&copy, &other).expect("write");
    let got = curl(&[&format!("{}/packages/beta/beta-0.1-py3-none-any.whl", s.url)]);
    assert_eq!(got.body, other);
    assert!(page("beta").text().contains(&sha256_hex(&other)), "the page lists the new hash");
    // Moved into a subfolder, it stays listed, and is sent from where it went.
    std::fs::create_dir_all(served.join("sub")).expect("mkdir");
    std::fs::rename(&copy, served.join("sub/beta-0.1-py3-none-any.whl")).expect("mv");
    assert!(page("beta").text().contains(&sha256_hex(&other)), "a moved file stays listed");
    let got = curl(&[&format!("{}/packages/beta/beta-0.1-py3-none-any.whl", s.url)]);
    assert_eq!(got.body, other);
    // Under another project's path, it is not there.
    assert_eq!(curl(&[&format!("{}/packages/alpha/beta-0.1-py3-none-any.whl", s.url)]).status, 404);
}

#[test]
fn a_home_serves_one_folder_at_a_time_and_a_folder_that_was_a_home_stays_one() {
    let t = TestDir::new();
    let (one, two) = (t.path().join("one"), t.path().join("two"));
    std::fs::create_dir_all(&one).expect("mkdir");
    std::fs::create_dir_all(&two).expect("mkdir");
    let _one = Served::start(&t, &[one.to_str().expect("utf-8")]);
    // Another server of the same folder shares it.
    let again = Served::start(&t, &[one.to_str().expect("utf-8")]);
    assert_eq!(curl(&[&format!("{}/simple/", again.url)]).status, 200);
    // Their rows would mix in one index: the second is refused, with the fix.
    let err =
        t.run(&["serve", "-p", "0", "-H", "127.0.0.1", two.to_str().expect("utf-8")]).fails(6);
    assert!(
        err.contains("serves another folder of packages already") && err.contains("--home"),
        "{err}"
    );
    // A folder an earlier larder served was its home too: it goes on as both.
    let old = TestDir::new();
    old.put("x", "x");
    build(&project(t.path(), "alpha", "1.0", &[]), "sdist", &old.home);
    let dir = old.home.to_str().expect("utf-8");
    let s = Served::start(&t, &[dir]);
    assert!(curl(&[&format!("{}/simple/alpha/", s.url)]).text().contains("alpha-1.0.tar.gz"));
    let said = format!("serving the packages in {dir} and the store of {dir}");
    wait_for("the startup line", || {
        std::fs::read_to_string(t.path().join("serve.log")).unwrap_or_default().contains(&said)
    });
    let missing = t.path().join("nowhere");
    let err =
        t.run(&["serve", "-p", "0", "-H", "127.0.0.1", missing.to_str().expect("utf-8")]).fails(1);
    assert!(err.contains("mkdir -p"), "{err}");
}

#[test]
fn a_caching_proxy_of_a_larder_server_and_of_pypiserver() {
    let t = TestDir::new();
    // Upstream 1: a larder server with a package.
    let up_home = TestDir::new();
    let up = Served::start(&up_home, &["-u", &users(&up_home), "--anonymous-read"]);
    let src = project(t.path(), "gamma", "1.0", &[]);
    let wheel = build(&src, "wheel", &t.path().join("dist"));
    let (ok, out) = twine(&up, "alice", &[&wheel], "/");
    assert!(ok, "{out}");
    // Upstream 2: pypiserver with another.
    let pkgs = t.path().join("pypiserver-packages");
    let delta = project(t.path(), "delta", "2.0", &[]);
    build(&delta, "sdist", &pkgs);
    build(&delta, "wheel", &pkgs);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut pypiserver = python_tool("pypi-server")
        .args([
            "run",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-a",
            ".",
            "-P",
            ".",
            "--disable-fallback",
        ])
        .arg(&pkgs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pypi-server");
    wait_for("pypiserver", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let proxy = Served::start(
        &t,
        &[
            "--upstream",
            &format!("{}/simple/", up.url),
            "--upstream",
            &format!("http://127.0.0.1:{port}/simple/"),
            "-d",
        ],
    );
    let index = format!("{}/simple/", proxy.url);
    pip_install(&index, &t.path().join("t1"), "gamma");
    pip_install(&index, &t.path().join("t2"), "delta");
    assert!(
        t.path().join("t1/gamma/__init__.py").exists()
            && t.path().join("t2/delta/__init__.py").exists()
    );
    // Every upstream version is listed, with its hash; the files were kept.
    let page = curl(&[&format!("{}/simple/delta/", proxy.url)]).text();
    assert!(
        page.contains("delta-2.0.tar.gz#sha256=")
            && page.contains("delta-2.0-py3-none-any.whl#sha256="),
        "{page}"
    );
    let ls = t.json(&["ls", "--json"]).to_string();
    assert!(
        ls.contains("pypi/gamma/gamma-1.0-py3-none-any.whl") && ls.contains("pypi/delta/"),
        "{ls}"
    );
    // The upstreams go down: what was listed and fetched is still served.
    drop(up);
    let _ = pypiserver.kill();
    let _ = pypiserver.wait();
    pip_install(&index, &t.path().join("t3"), "gamma");
    assert!(t.path().join("t3/gamma/__init__.py").exists());
    // A project uploaded here shadows the upstream's (no dependency confusion).
    drop(proxy);
    let proxy = Served::start(
        &t,
        &[
            "-u",
            &users(&t),
            "--anonymous-read",
            "--upstream",
            "http://127.0.0.1:1/simple/",
            "--upstream-ttl",
            "0s",
        ],
    );
    let mine = project(&t.path().join("mine"), "gamma", "9.0", &[]);
    let mine = build(&mine, "wheel", &t.path().join("dist-mine"));
    let (ok, out) = twine(&proxy, "alice", &[&mine], "/");
    assert!(ok, "{out}");
    let page = curl(&[&format!("{}/simple/gamma/", proxy.url)]).text();
    assert!(page.contains("gamma-9.0-py3-none-any.whl") && !page.contains("gamma-1.0"), "{page}");
}

#[test]
fn wheels_install_builds_uploads_and_a_second_home_installs_without_building() {
    let t = TestDir::new();
    let s = Served::start(&t, &["-u", &users(&t), "--anonymous-read"]);
    // An sdist only: the first install must build it.
    let src = project(t.path(), "epsilon", "0.3", &[]);
    let sdist = build(&src, "sdist", &t.path().join("dist"));
    let (ok, out) = twine(&s, "alice", &[&sdist], "/");
    assert!(ok, "{out}");
    let venv = |name: &str| {
        let dir = t.path().join(name);
        let status = Command::new("python3").args(["-m", "venv"]).arg(&dir).status().expect("venv");
        assert!(status.success());
        dir.join("bin/python")
    };
    let (first, second) = (venv("machine-1"), venv("machine-2"));
    let requirements = t.file("requirements.txt", "epsilon==0.3\n");
    let install = |python: &Path, upload: bool, home: &str| {
        let mut cmd = t.command();
        cmd.env("LARDER_HOME", t.path().join(home))
            .env("LARDER_PASSWORD", "pw")
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PIP_NO_CACHE_DIR", "1")
            .args([
                "wheels",
                "install",
                "-c",
                &format!("http://alice@{}", s.addr),
                "--json",
                "--python",
            ])
            .arg(python);
        if upload {
            cmd.args(["-u", "epsilon"]);
        } else {
            // The second machine names what it wants in a requirements file.
            cmd.arg("-r").arg(&requirements);
        }
        t.run_with(&mut cmd)
    };
    let run = install(&first, true, "home-1");
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("Building wheel for epsilon"), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(report["uploaded"], serde_json::json!(["epsilon-0.3-py3-none-any.whl"]));
    let page = curl(&[&format!("{}/simple/epsilon/", s.url)]).text();
    assert!(page.contains("epsilon-0.3-py3-none-any.whl"), "{page}");
    // The second machine downloads the wheel the first built.
    let run = install(&second, false, "home-2");
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(!run.stderr.contains("Building wheel"), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(report["from_server"], serde_json::json!(["epsilon-0.3-py3-none-any.whl"]));
    assert_eq!(report["built"], serde_json::json!([]));
    let imported = Command::new(&second)
        .args(["-c", "import epsilon; print(epsilon.VERSION)"])
        .output()
        .expect("python");
    assert_eq!(String::from_utf8_lossy(&imported.stdout).trim(), "0.3");
    // The password never appears in a command line: pip gets it in its environment.
    assert!(!run.stderr.contains("alice:pw"), "{}", run.stderr);
}

#[test]
fn what_an_upstream_yanks_stays_yanked_and_its_metadata_files_are_proxied() {
    let t = TestDir::new();
    let upstream = crate::http_server::Server::start();
    let src = project(t.path(), "zeta", "1.0", &[]);
    let wheel = build(&src, "wheel", &t.path().join("dist"));
    let metadata = {
        let mut zip =
            zip::ZipArchive::new(std::fs::File::open(&wheel).expect("wheel")).expect("zip");
        let mut entry = zip.by_name("zeta-1.0.dist-info/METADATA").expect("METADATA");
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
        bytes
    };
    let html_page = format!(
        "<html><body><a href=\"/files/zeta-1.0-py3-none-any.whl#sha256={}\" data-yanked=\"broken build\" data-core-metadata=\"sha256={}\">zeta-1.0-py3-none-any.whl</a></body></html>",
        crate::archives::sha256_hex(&std::fs::read(&wheel).expect("wheel")),
        crate::archives::sha256_hex(&metadata)
    );
    upstream.add("/html/zeta/", html_page.into_bytes());
    upstream.add("/files/zeta-1.0-py3-none-any.whl", std::fs::read(&wheel).expect("wheel"));
    upstream.add("/files/zeta-1.0-py3-none-any.whl.metadata", metadata.clone());
    let s = Served::start(&t, &["--upstream", &upstream.url("/html/")]);
    let page = curl(&["-H", "Accept: text/html", &format!("{}/simple/zeta/", s.url)]).text();
    assert!(page.contains("data-yanked=\"broken build\""), "{page}");
    let json: serde_json::Value = serde_json::from_slice(
        &curl(&[
            "-H",
            "Accept: application/vnd.pypi.simple.v1+json",
            &format!("{}/simple/zeta/", s.url),
        ])
        .body,
    )
    .expect("json");
    assert_eq!(json["files"][0]["yanked"], "broken build");
    // pip skips a yanked file unless it is pinned exactly.
    let mut cmd = python_tool("pip");
    cmd.args(["install", "--index-url", &format!("{}/simple/", s.url), "--target"])
        .arg(t.path().join("target"))
        .arg("zeta");
    assert!(
        !cmd.output().expect("pip").status.success(),
        "a yanked file is not picked unless pinned"
    );
    pip_install(&format!("{}/simple/", s.url), &t.path().join("target"), "zeta==1.0");
    let got = curl(&[&format!("{}/packages/zeta/zeta-1.0-py3-none-any.whl.metadata", s.url)]);
    assert_eq!((got.status, got.body), (200, metadata));
}

/// An sdist of `project` with `extra` random bytes in it, so it is larger
/// than any default body limit of a web framework.
fn big_sdist(t: &TestDir, src: &Path, extra: usize) -> std::path::PathBuf {
    let sdist = build(src, "sdist", &t.path().join("big-dist"));
    let script = "import os, sys, tarfile, io
path, extra = sys.argv[1], int(sys.argv[2])
with tarfile.open(path) as old:
    members = [(m, old.extractfile(m).read() if m.isfile() else None) for m in old.getmembers()]
with tarfile.open(path + '.new', 'w:gz', compresslevel=1) as new:
    for m, data in members:
        new.addfile(m, io.BytesIO(data) if data is not None else None)
    top = members[0][0].name.split('/')[0]
    info = tarfile.TarInfo(top + '/blob.bin')
    info.size = extra
    new.addfile(info, io.BytesIO(os.urandom(extra)))
os.replace(path + '.new', path)
";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&sdist)
        .arg(extra.to_string())
        .status()
        .expect("python3");
    assert!(status.success());
    sdist
}

#[test]
fn an_upload_larger_than_two_mebibytes_is_kept_whole() {
    let t = TestDir::new();
    let s = Served::start(&t, &["-u", &users(&t), "--anonymous-read"]);
    let src = project(t.path(), "big-thing", "1.0", &[]);
    let sdist = big_sdist(&t, &src, 5 << 20);
    let bytes = std::fs::read(&sdist).expect("sdist");
    assert!(bytes.len() > 5 << 20);
    let (ok, out) = twine(&s, "alice", &[&sdist], "/");
    assert!(ok, "{out}");
    let got = curl(&[&format!("{}/packages/big-thing/big_thing-1.0.tar.gz", s.url)]);
    assert_eq!(got.status, 200);
    assert!(got.body == bytes, "the file came back other than it went up");
    // The generic door does not replace or drop a released file.
    let generic = format!("{}/pypi/big-thing/big_thing-1.0.tar.gz", s.url);
    for args in [["-X", "PUT", "--data", "other"], ["-X", "DELETE", "-H", "X-Nothing: 1"]] {
        let mut all = vec!["-u", "alice:pw"];
        all.extend(args);
        all.push(&generic);
        let refused = curl(&all);
        assert_eq!(refused.status, 403, "{}", refused.text());
        assert!(refused.text().contains("belongs to the package index"), "{}", refused.text());
    }
    let again = curl(&[&format!("{}/packages/big-thing/big_thing-1.0.tar.gz", s.url)]);
    assert!(again.body == bytes);
}

#[test]
fn an_upstream_file_that_breaks_off_or_does_not_match_its_hash_is_not_kept() {
    let t = TestDir::new();
    let upstream = crate::http_server::Server::start();
    let src = project(t.path(), "eta", "1.0", &[]);
    let wheel = std::fs::read(build(&src, "wheel", &t.path().join("dist"))).expect("wheel");
    let sdist = std::fs::read(big_sdist(&t, &src, 1 << 20)).expect("sdist");
    // The sdist is listed with the wheel's hash: whatever comes is wrong.
    let page = format!(
        "<a href=\"/files/eta-1.0-py3-none-any.whl#sha256={}\">eta-1.0-py3-none-any.whl</a>\n\
         <a href=\"/files/eta-1.0.tar.gz#sha256={}\">eta-1.0.tar.gz</a>\n",
        crate::archives::sha256_hex(&wheel),
        crate::archives::sha256_hex(&wheel),
    );
    upstream.add("/simple/eta/", page.into_bytes());
    upstream.add("/files/eta-1.0-py3-none-any.whl", wheel.clone());
    upstream.add("/files/eta-1.0.tar.gz", sdist.clone());
    upstream.faults("/files/eta-1.0-py3-none-any.whl", &[crate::http_server::Fault::Drop(100)]);
    let s = Served::start(&t, &["--upstream", &upstream.url("/simple/")]);
    let listed = curl(&[&format!("{}/simple/eta/", s.url)]);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let wheel_url = format!("{}/packages/eta/eta-1.0-py3-none-any.whl", s.url);
    let sdist_url = format!("{}/packages/eta/eta-1.0.tar.gz", s.url);
    // Broken off: the client does not get a whole file, and nothing is kept.
    let first = curl(&[&wheel_url]);
    assert!(first.body.len() < wheel.len(), "{} of {} bytes", first.body.len(), wheel.len());
    // The next asks the upstream again and gets all of it, and keeps it.
    let second = curl(&[&wheel_url]);
    assert!(second.status == 200 && second.body == wheel, "{}", second.text());
    assert_eq!(upstream.count("/files/eta-1.0-py3-none-any.whl"), 2);
    wait_for("the wheel kept", || {
        t.json(&["ls", "--json"]).to_string().contains("eta-1.0-py3-none-any.whl")
    });
    assert!(curl(&[&wheel_url]).body == wheel);
    assert_eq!(upstream.count("/files/eta-1.0-py3-none-any.whl"), 2, "kept after the second");
    // Not the hash the page gave: never all of it, never kept, and
    // remembered, so the upstream is not asked again.
    for round in 1..=2 {
        let got = curl(&[&sdist_url]);
        assert!(got.body.len() < sdist.len(), "round {round}: the whole wrong file was sent");
        assert_eq!(upstream.count("/files/eta-1.0.tar.gz"), 1);
    }
    assert!(!t.json(&["ls", "--json"]).to_string().contains("eta-1.0.tar.gz"));
}

/// A fake upstream index serving `name`'s wheel and sdist (built in `t`) at
/// `/simple/<name>/` and `/files/…`, the page giving their sha256; returns
/// it, the wheel's and the sdist's bytes.
fn fake_upstream(t: &TestDir, name: &str) -> (crate::http_server::Server, Vec<u8>, Vec<u8>) {
    let upstream = crate::http_server::Server::start();
    let src = project(t.path(), name, "1.0", &[]);
    let dist = t.path().join(format!("{name}-dist"));
    let wheel = build(&src, "wheel", &dist);
    let sdist = build(&src, "sdist", &dist);
    let mut page = String::new();
    for file in [&wheel, &sdist] {
        let bytes = std::fs::read(file).expect("dist");
        let filename = file.file_name().expect("name").to_str().expect("utf-8");
        page.push_str(&format!(
            "<a href=\"/files/{filename}#sha256={}\">{filename}</a>\n",
            crate::archives::sha256_hex(&bytes)
        ));
        upstream.add(&format!("/files/{filename}"), bytes);
    }
    upstream.add(&format!("/simple/{name}/"), page.into_bytes());
    let (wheel, sdist) =
        (std::fs::read(&wheel).expect("wheel"), std::fs::read(&sdist).expect("sdist"));
    (upstream, wheel, sdist)
}

/// `pip download` of `requirement` from `index` into `dir`, started.
fn pip_download(index: &str, dir: &Path, requirement: &str) -> std::process::Child {
    let mut cmd = python_tool("pip");
    cmd.args(["download", "--no-deps", "--only-binary", ":all:", "--index-url", index, "-d"])
        .arg(dir)
        .arg(requirement)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("pip")
}

fn output_of(child: std::process::Child) -> (bool, String) {
    let out = child.wait_with_output().expect("pip");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn eight_pip_clients_on_a_cold_proxy_fetch_each_upstream_file_once() {
    let t = TestDir::new();
    let (upstream, wheel, _) = fake_upstream(&t, "once");
    let wheel_path = "/files/once-1.0-py3-none-any.whl";
    // Slow enough that all eight ask while the first download is under way.
    upstream.throttle(wheel_path, wheel.len().max(20) / 4);
    upstream.throttle("/simple/once/", 2000);
    let s = Served::start(&t, &["--upstream", &upstream.url("/simple/")]);
    let index = format!("{}/simple/", s.url);
    let clients: Vec<_> = (0..8)
        .map(|i| pip_download(&index, &t.path().join(format!("d{i}")), "once==1.0"))
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let (ok, out) = output_of(client);
        assert!(ok, "client {i}: {out}");
        let got = std::fs::read(t.path().join(format!("d{i}/once-1.0-py3-none-any.whl")));
        assert!(got.is_ok_and(|b| b == wheel), "client {i} got other bytes");
    }
    assert_eq!(upstream.count("/simple/once/"), 1, "the page was fetched more than once");
    assert_eq!(upstream.count(wheel_path), 1, "the wheel was fetched more than once");
}

#[test]
fn a_file_url_answers_before_its_project_page_was_fetched_here() {
    let t = TestDir::new();
    let (upstream, _, sdist) = fake_upstream(&t, "early");
    let s = Served::start(&t, &["--upstream", &upstream.url("/simple/")]);
    // A client with a lock file asks for the file first.
    let got = curl(&[&format!("{}/packages/early/early-1.0.tar.gz", s.url)]);
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.body == sdist, "other bytes");
    assert_eq!(upstream.count("/simple/early/"), 1);
    // A project no upstream has is still a 404.
    let missing = curl(&[&format!("{}/packages/nothing/nothing-1.0.tar.gz", s.url)]);
    assert_eq!(missing.status, 404, "{}", missing.text());
}

#[test]
fn a_hung_upstream_does_not_hold_up_pip_when_the_page_is_cached() {
    let t = TestDir::new();
    let (upstream, _, _) = fake_upstream(&t, "hung");
    // Every request asks the upstream again.
    let s = Served::start(&t, &["--upstream", &upstream.url("/simple/"), "--upstream-ttl", "0s"]);
    let index = format!("{}/simple/", s.url);
    let (ok, out) = output_of(pip_download(&index, &t.path().join("warm"), "hung==1.0"));
    assert!(ok, "{out}");
    // The upstream now takes requests and never answers: pip, at its default
    // 15 s timeout, still gets the page it had (and the file is kept here).
    upstream.hang("/simple/hung/", true);
    let clients: Vec<_> = (0..4)
        .map(|i| pip_download(&index, &t.path().join(format!("c{i}")), "hung==1.0"))
        .collect();
    for client in clients {
        let (ok, out) = output_of(client);
        assert!(ok, "{out}");
        assert!(!out.contains("timed out") && !out.contains("Retrying"), "{out}");
    }
    let log = std::fs::read_to_string(t.path().join("serve.log")).expect("log");
    assert!(log.contains("serving what was listed before while the refresh goes on"), "{log}");
    // The failed refresh is remembered: four clients, one request to the upstream.
    assert!(upstream.count("/simple/hung/") <= 3, "{}", upstream.count("/simple/hung/"));
}

#[test]
fn a_dead_upstream_with_nothing_cached_is_a_502_with_its_reason_not_a_404() {
    let t = TestDir::new();
    let s = Served::start(&t, &["--upstream", "http://127.0.0.1:1/simple/"]);
    let got = curl(&[&format!("{}/simple/requests/", s.url)]);
    assert_eq!(got.status, 502, "{}", got.text());
    assert!(
        got.text().contains("upstream http://127.0.0.1:1/simple/: cannot reach it"),
        "{}",
        got.text()
    );
    let mut cmd = python_tool("pip");
    cmd.args(["download", "--no-deps", "--index-url", &format!("{}/simple/", s.url), "-d"])
        .arg(t.path().join("d"))
        .arg("requests");
    let out = cmd.output().expect("pip");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    let log = std::fs::read_to_string(t.path().join("serve.log")).expect("log");
    assert!(!log.contains("serving what was listed before"), "nothing was listed: {log}");
    assert!(log.contains("nothing was listed before"), "{log}");
}

#[test]
fn an_upstream_that_stalls_mid_page_is_given_up_and_remembered() {
    let t = TestDir::new();
    let (upstream, _, _) = fake_upstream(&t, "stall");
    upstream.faults("/simple/stall/", &[crate::http_server::Fault::Stall(20)]);
    let s =
        Served::start(&t, &["--upstream", &upstream.url("/simple/"), "--upstream-timeout", "2s"]);
    let page = format!("{}/simple/stall/", s.url);
    let got = curl(&[&page]);
    assert_eq!(got.status, 502, "{}", got.text());
    // Remembered for a while: the next request does not wait on it again.
    let again = curl(&[&page]);
    assert_eq!(again.status, 502, "{}", again.text());
    assert_eq!(upstream.count("/simple/stall/"), 1);
}

#[test]
fn a_file_that_fails_its_hash_is_fetched_once_and_pip_says_hash_mismatch() {
    let t = TestDir::new();
    let upstream = crate::http_server::Server::start();
    let src = project(t.path(), "badhash", "1.0", &[]);
    let wheel = std::fs::read(build(&src, "wheel", &t.path().join("dist"))).expect("wheel");
    let filename = "badhash-1.0-py3-none-any.whl";
    upstream.add(
        "/simple/badhash/",
        format!("<a href=\"/files/{filename}#sha256={}\">{filename}</a>\n", "0".repeat(64))
            .into_bytes(),
    );
    upstream.add(&format!("/files/{filename}"), wheel);
    let s = Served::start(&t, &["--upstream", &upstream.url("/simple/")]);
    let index = format!("{}/simple/", s.url);
    // The first pip sees its download break off (the last piece of a file
    // that fails its hash is never sent); its retries, and every pip after
    // it, are told the reason without the upstream being asked again.
    for round in 0..3 {
        let (ok, out) = output_of(pip_download(&index, &t.path().join("d"), "badhash==1.0"));
        assert!(!ok, "round {round}: pip took a wrong file: {out}");
        if round > 0 {
            assert!(out.contains("hash mismatch"), "round {round}: {out}");
        }
    }
    assert_eq!(upstream.count(&format!("/files/{filename}")), 1);
    let got = curl(&[&format!("{}/packages/badhash/{filename}", s.url)]);
    assert_eq!(got.status, 409);
    assert!(got.text().starts_with("hash mismatch:"), "{}", got.text());
}

/// A kernel figure of a process from `/proc/<pid>/status`, in bytes.
fn proc_status_bytes(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("field");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("number");
    kib << 10
}

#[test]
fn a_seven_megabyte_upstream_page_and_eight_clients_stay_within_a_bounded_memory() {
    let t = TestDir::new();
    let upstream = crate::http_server::Server::start();
    // As large as PyPI's largest pages (pydantic-core: 6.9 MB).
    let mut page = String::from("<!DOCTYPE html><html><body>\n");
    let mut files = 0;
    while page.len() < 7 << 20 {
        let name =
            format!("huge-1.{files}-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl");
        page.push_str(&format!(
            "<a href=\"https://files.example/packages/ab/cd/{name}#sha256={:064x}\" data-requires-python=\"&gt;=3.8\">{name}</a><br/>\n",
            files
        ));
        files += 1;
    }
    page.push_str("</body></html>\n");
    let page_size = page.len() as u64;
    upstream.add("/simple/huge/", page.into_bytes());
    upstream.add("/simple/small/", b"<a href=\"small-1.0.tar.gz\">small-1.0.tar.gz</a>".to_vec());
    let s = Served::start(&t, &["--upstream", &upstream.url("/simple/")]);
    // The server as it is once it has served something.
    assert_eq!(curl(&[&format!("{}/simple/small/", s.url)]).status, 200);
    let before = proc_status_bytes(s.pid(), "VmRSS:");
    let url = format!("{}/simple/huge/", s.url);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            // pip asks for JSON, uv too; browsers and older tools for HTML.
            let accept = if i % 2 == 0 {
                "Accept: application/vnd.pypi.simple.v1+json"
            } else {
                "Accept: text/html"
            };
            std::thread::spawn(move || curl(&["-H", accept, &url]))
        })
        .collect();
    for client in clients {
        let got = client.join().expect("client");
        assert_eq!(got.status, 200);
        assert!(got.text().matches(".whl").count() >= files, "not every file is listed");
    }
    let peak = proc_status_bytes(s.pid(), "VmHWM:");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "page {} MiB: rss before {} MiB, peak {} MiB (+{:.1}x the page)",
        page_size >> 20,
        before >> 20,
        peak >> 20,
        grown as f64 / page_size as f64
    );
    assert!(
        grown < 16 * page_size,
        "the server grew by {} MiB for a {} MiB page",
        grown >> 20,
        page_size >> 20
    );
    // What the home keeps of the page: its listing, not a log of its writes.
    let kept: u64 = ["pypi-v1.sqlite", "pypi-v1.sqlite-wal"]
        .iter()
        .map(|f| std::fs::metadata(t.home.join(f)).map_or(0, |m| m.len()))
        .sum();
    eprintln!("the index keeps {} KiB for a {} KiB page", kept >> 10, page_size >> 10);
    assert!(
        kept < page_size * 3 / 2,
        "the index keeps {} MiB for a {} MiB page",
        kept >> 20,
        page_size >> 20
    );
}

/// The JSON page of `project`, or the status it got.
fn json_page(s: &Served, project: &str) -> Result<serde_json::Value, u16> {
    let got = curl(&[
        "-H",
        "Accept: application/vnd.pypi.simple.v1+json",
        &format!("{}/simple/{project}/", s.url),
    ]);
    if got.status != 200 {
        return Err(got.status);
    }
    Ok(serde_json::from_slice(&got.body).expect("json"))
}

/// Each file of a JSON page and how it is yanked (`false` or the reason).
fn yanks(page: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let files = page["files"].as_array().expect("files");
    files
        .iter()
        .map(|f| (f["filename"].as_str().expect("filename").to_string(), f["yanked"].clone()))
        .collect()
}

#[test]
fn releases_are_yanked_and_removed_over_http_and_with_larder_pypi() {
    let t = TestDir::new();
    let s =
        Served::start(&t, &["-u", &users(&t), "--read-only-users", "reader", "--anonymous-read"]);
    let dist = t.path().join("dist");
    let one = project(t.path(), "life", "1.0", &[]);
    let two = project(t.path(), "life", "2.0", &[]);
    let files =
        [build(&one, "wheel", &dist), build(&one, "sdist", &dist), build(&two, "wheel", &dist)];
    let (ok, out) = twine(&s, "alice", &files.iter().map(|p| p.as_path()).collect::<Vec<_>>(), "/");
    assert!(ok, "{out}");
    let installed = |tool: &str, dir: &str| {
        let target = t.path().join(dir);
        let index = format!("{}/simple/", s.url);
        let mut cmd = python_tool(tool);
        if tool == "uv" {
            cmd.arg("pip");
        }
        cmd.args(["install", "--index-url", &index, "--target"]).arg(&target).arg("life");
        run_ok(cmd);
        let mut found: Vec<String> = std::fs::read_dir(&target)
            .expect("target")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".dist-info"))
            .collect();
        found.sort();
        found
    };

    // A reader may not change the index; the reason reaches the client.
    let refused = curl(&[
        "-u",
        "reader:pw",
        "-F",
        ":action=yank",
        "-F",
        "name=life",
        "-F",
        "version=2.0",
        &format!("{}/legacy/", s.url),
    ]);
    assert_eq!(refused.status, 403);
    assert!(refused.headers.lines().next().is_some_and(|l| l.contains("may only read")));

    // Yanked over HTTP: pip and uv pass 2.0 by unless it is pinned.
    let yanked = post(&s, &[":action=yank", "name=life", "version=2.0", "reason=broken build"]);
    assert_eq!(yanked.status, 200, "{}", yanked.text());
    let page = json_page(&s, "life").expect("page");
    assert!(
        yanks(&page).contains(&("life-2.0-py3-none-any.whl".into(), "broken build".into())),
        "{page}"
    );
    let html = curl(&["-H", "Accept: text/html", &format!("{}/simple/life/", s.url)]).text();
    assert!(html.contains("data-yanked=\"broken build\">life-2.0-py3-none-any.whl"), "{html}");
    assert_eq!(installed("pip", "pip-yanked"), ["life-1.0.dist-info"]);
    assert_eq!(installed("uv", "uv-yanked"), ["life-1.0.dist-info"]);

    // Unyanked with `larder pypi`, on the home the server serves: it notices.
    let out = t.run(&["pypi", "unyank", "life", "2.0"]).ok();
    assert!(out.contains("unyanked life-2.0-py3-none-any.whl"), "{out}");
    wait_for("the unyank served", || {
        json_page(&s, "life").is_ok_and(|p| yanks(&p).iter().all(|(_, y)| *y == false))
    });
    assert_eq!(installed("pip", "pip-unyanked"), ["life-2.0.dist-info"]);

    // One file removed with DELETE, a release with pypiserver's remove_pkg:
    // the wheel's metadata goes with it.
    let deleted = curl(&[
        "-u",
        "alice:pw",
        "-X",
        "DELETE",
        &format!("{}/packages/life/life-1.0.tar.gz", s.url),
    ]);
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let removed = post(&s, &[":action=remove_pkg", "name=life", "version=1.0"]);
    assert_eq!(removed.status, 200, "{}", removed.text());
    let page = json_page(&s, "life").expect("page");
    assert_eq!(yanks(&page), [("life-2.0-py3-none-any.whl".to_string(), false.into())]);
    let ls = t.json(&["ls", "--json"]).to_string();
    assert!(!ls.contains("life-1.0"), "{ls}");
    assert!(ls.contains("life-2.0-py3-none-any.whl.metadata"), "{ls}");
    let gone = curl(&[&format!("{}/packages/life/life-1.0-py3-none-any.whl", s.url)]);
    assert_eq!(gone.status, 404);
    let again = post(&s, &[":action=remove_pkg", "name=life", "version=1.0"]);
    assert_eq!(again.status, 404, "{}", again.text());

    // The last release removed with `larder pypi rm`: no project any more.
    let out = t.run(&["pypi", "rm", "life", "2.0"]).ok();
    assert!(out.contains("removed life-2.0-py3-none-any.whl"), "{out}");
    wait_for("the removal served", || json_page(&s, "life") == Err(404));
    assert!(!t.json(&["ls", "--json"]).to_string().contains("life-"), "orphans left");
}

#[test]
fn a_wheel_whose_tags_are_not_valid_is_refused() {
    let t = TestDir::new();
    let s = Served::start(&t, &["-u", &users(&t)]);
    let src = project(t.path(), "tagged", "1.0", &[]);
    let wheel = build(&src, "wheel", &t.path().join("dist"));
    let renamed = wheel.with_file_name("tagged-1.0-py3-none-anything.whl");
    std::fs::rename(&wheel, &renamed).expect("rename");
    let (ok, out) = twine(&s, "alice", &[&renamed], "/");
    // twine wraps the reason phrase it prints.
    assert!(!ok && out.contains("`anything` is not a valid platform"), "{out}");
    assert_eq!(t.json(&["ls", "--json"]), serde_json::json!([]));
}
