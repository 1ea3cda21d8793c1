//! The seeds' command lines, run as their documents write them (hosts, paths,
//! ports and the example's hash aside), under the seeds' own command names:
//! shared-cache's `sc`, crcache's `crcache`, curdling's `curd-server` and
//! `curd`.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::archives::{Entry, gzip, md5_hex, tar};
use crate::http_server::Server;
use crate::pyproject::{build, project, run_ok};
use crate::util::TestDir;

/// The folder holding larder and the seeds' command names.
fn bin_dir() -> &'static Path {
    Path::new(crate::util::LARDER).parent().expect("the binaries' folder")
}

impl TestDir {
    /// A bash script with the seeds' commands on its PATH.
    fn seed_script(&self, body: &str) -> crate::util::Run {
        let mut bash = self.bash(body);
        let path = std::env::var("PATH").unwrap_or_default();
        bash.env("PATH", format!("{}:{path}", bin_dir().display()));
        self.run_with(&mut bash)
    }
}

/// Every command line of shared-cache's document: register use of the
/// example repository (downloaded, checked, untarred under `<base>/test-repo/`)
/// with the arguments kept in a variable, then unregister with the same.
#[test]
fn sc_use_and_unuse_as_shared_cache_documents_them() {
    let t = TestDir::new();
    let server = Server::start();
    let archive =
        gzip(&tar(&[Entry::Dir("vsg-vsg-0.2.0"), Entry::File("vsg-vsg-0.2.0/README", b"vsg\n")]));
    server.add("/pigay/vsg/archive/vsg-0.2.0.tar.gz", archive.clone());
    let base = t.path().join("base");
    std::fs::create_dir_all(&base).expect("mkdir");
    let out = t
        .seed_script(&format!(
            r#"set -e
            export LARDER_DIRS={base}
            url={url}
            md5={md5}

            repo=test-repo
            repo_args="--name=$repo --size=10GB http:$url md5:$md5 tar"

            sc --use $repo_args
            cat {base}/test-repo/vsg-vsg-0.2.0/README
            sc --location $repo_args
            sc --unuse $repo_args
            test ! -e {base}/test-repo && echo deleted"#,
            base = base.display(),
            url = server.url("/pigay/vsg/archive/vsg-0.2.0.tar.gz"),
            md5 = md5_hex(&archive),
        ))
        .ok();
    assert_eq!(out, "vsg\n$T/base/test-repo\ndeleted\n");
    assert_eq!(server.count("/pigay/vsg/archive/vsg-0.2.0.tar.gz"), 1);
    // Without larder's `dirs` set, the base is shared-cache's default list.
    let out =
        t.seed_script("sc --location --name=test-repo http:http://127.0.0.1:9/a.tar.gz tar").ok();
    assert_eq!(out, "/tmp/test-repo\n");
    // Bad input: one line, larder's exit codes.
    let err =
        t.seed_script("sc --use --size=10GiB --name=x http:http://127.0.0.1:9/a tar").fails(2);
    assert!(err.contains("--size 10GiB is not a size"), "{err}");
    let err = t.seed_script("sc --name=x").fails(2);
    assert!(err.contains("--use, --unuse or --location"), "{err}");
    // Neither loaders nor a name: nothing names a repository.
    let err = t.seed_script("sc --use").fails(2);
    assert!(err.starts_with("sc: error: name the repository: give its loader stack"), "{err}");
}

/// `line` with its runs of spaces made one, for comparing tables.
fn squeeze(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// crcache's manual, command by command, with the pool it describes: a
/// source `pool` over `local`, keeping one instance.
#[test]
fn crcache_as_its_manual_writes_it() {
    let t = TestDir::new();
    let conf = t.work().join(".crcache/sources/pool");
    std::fs::create_dir_all(&conf).expect("mkdir");
    std::fs::write(
        conf.join("source.conf"),
        "[DEFAULT]\ntype=pool\nsources=local\nreserve=1\nmaximum=1\n",
    )
    .expect("source.conf");
    let cases: &[(&str, &str)] = &[
        ("crcache status", "source cached in-use max\nlocal 0 0 1\npool 0 0 1"),
        ("crcache status -t", "source cached in-use max\npool 0 0 1\n+ local\nlocal 0 0 1"),
        (
            "crcache status -v",
            "source: local\ncached:\nin-use:\nminimum: 0\nmaximum: 1\n\nsource: pool\ncached:\nin-use:\nminimum: 1\nmaximum: 1",
        ),
        (
            "crcache status -a",
            "source cached in-use max\nlocal 0 0 1\npool 0 0 1\n\ninstance source state holder concurrency since",
        ),
    ];
    for (line, expected) in cases {
        let out = t.seed_script(line).ok();
        assert_eq!(squeeze(&out), *expected, "{line}");
    }
    // One script, as a user's: acquire, use, copy, release.
    let out = t
        .seed_script(
            r#"set -e
            crcache -s pool acquire
            crcache status pool
            crcache run -s pool-0 echo foo
            echo hello > foo
            crcache cp pool-0:foo bar
            cat bar
            crcache release pool0
            crcache status pool"#,
        )
        .ok();
    assert_eq!(
        squeeze(&out),
        "pool-0\nsource cached in-use max\npool 0 1 1\nfoo\nhello\nsource cached in-use max\npool 1 0 1"
    );
    // What crcache's code also takes: `run INSTANCE CMD…`, and `acquire N`.
    let out = t.seed_script("crcache -s pool acquire 1 && crcache run local echo bar").ok();
    assert_eq!(out, "pool-0\nbar\n");
    let err = t.seed_script("crcache run -s nope echo x").fails(1);
    assert!(err.starts_with("crcache: error: ") && err.contains("nope"), "{err}");
    // A command that is not there exits 127, as a shell's does.
    let err = t.seed_script("crcache run -s pool-0 no-such-command-here").fails(127);
    assert!(
        err.contains(
            "crcache: error: cannot run `no-such-command-here` for local: no such command"
        ),
        "{err}"
    );
    // An instance named twice, by its name and as crcache numbers it, is
    // released once.
    t.seed_script("crcache release pool-0 local && crcache status pool").ok();
    let out = t.seed_script("crcache status pool").ok();
    assert_eq!(squeeze(&out), "source cached in-use max\npool 1 0 1");
}

/// `curd-server DIRECTORY`, with its defaults (0.0.0.0:8000) in a network of
/// its own, and with every option of its synopsis.
#[test]
fn curd_server_serves_a_folder_of_wheels_as_curdling_documents_it() {
    let t = TestDir::new();
    let wheels = t.path().join("wheels");
    build(&project(t.path(), "zeta", "1.0", &[]), "wheel", &wheels);
    // The defaults: all interfaces, port 8000; in a network namespace of
    // its own, where nothing else listens.
    let script = format!(
        "ip link set lo up; curd-server {dir} >/dev/null 2>&1 & server=$!; \
         for i in $(seq 100); do curl -sf http://127.0.0.1:8000/simple/zeta/ && break; sleep 0.1; done; \
         kill $server; wait $server; true",
        dir = wheels.display()
    );
    let out = t.seed_script(&format!("unshare -n bash -c '{script}'")).ok();
    assert!(out.contains("zeta-1.0-py3-none-any.whl"), "{out}");
    // The synopsis: `curd-server [-h] [-d] [-H HOST] [-p PORT] [-u USER_DB] DIRECTORY`.
    let help = t.seed_script("curd-server -h").ok();
    assert!(help.contains("-u, --user-db <USER_DB>"), "{help}");
    let users = t.path().join("users");
    let status = Command::new("htpasswd").args(["-bcB"]).arg(&users).args(["alice", "pw"]).status();
    assert!(status.expect("htpasswd").success());
    let mut server = Command::new(bin_dir().join("curd-server"))
        .args(["-d", "-H", "127.0.0.1", "-p", "0", "-u"])
        .arg(&users)
        .arg(&wheels)
        .env("LARDER_HOME", &t.home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn curd-server");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the address");
    let url = line.trim().to_string();
    let page = crate::serve::curl(&["-u", "alice:pw", &format!("{url}/simple/zeta/")]);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("zeta-1.0-py3-none-any.whl"));
    assert_eq!(crate::serve::curl(&[&format!("{url}/simple/zeta/")]).status, 401);
    let _ = server.kill();
    let _ = server.wait();
}

/// curdling's client: `curd install -c URL` (the password in the URL, as its
/// document shows), and `curd install -c URL -u PKG`, which builds what the
/// server lacks from the usual index, installs it, and uploads the wheel; a
/// second machine then installs it from the server without building.
#[test]
fn curd_install_falls_back_builds_and_uploads_as_curdling_documents_it() {
    let t = TestDir::new();
    let users = t.path().join("users");
    let status =
        Command::new("htpasswd").args(["-bcB"]).arg(&users).args(["user", "passwd"]).status();
    assert!(status.expect("htpasswd").success());
    let cache = crate::serve::Served::start(
        &t,
        &["-u", users.to_str().expect("utf-8"), "--anonymous-read"],
    );
    // The usual index (PyPI for curdling's users): another server, holding
    // an sdist of `flask` only.
    let usual = TestDir::new();
    let dist = usual.path().join("dist");
    build(&project(usual.path(), "flask", "3.0", &[]), "sdist", &dist);
    build(&project(usual.path(), "curdling", "0.4", &[]), "sdist", &dist);
    let usual_server = crate::serve::Served::start(&usual, &[dist.to_str().expect("utf-8")]);
    let venv = |name: &str| {
        let dir = t.path().join(name);
        run_ok({
            let mut c = Command::new("python3");
            c.args(["-m", "venv"]).arg(&dir);
            c
        });
        dir.join("bin")
    };
    let curd = |bin: &Path, line: &str| {
        let mut bash = t.bash(line);
        let path = std::env::var("PATH").unwrap_or_default();
        bash.env("PATH", format!("{}:{}:{path}", bin.display(), bin_dir().display()))
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PIP_NO_CACHE_DIR", "1")
            .env("PIP_INDEX_URL", format!("{}/simple/", usual_server.url));
        t.run_with(&mut bash)
    };
    let first = venv("machine-1");
    let addr = &cache.addr;
    // Only the server named: it answers, with these credentials.
    let out = curd(&first, &format!("curd install -c http://user:passwd@{addr}"));
    assert_eq!(out.code, 0, "{out:#?}");
    let wrong = curd(&first, &format!("curd install -c http://user:nope@{addr}"));
    assert_eq!(wrong.code, 5, "{wrong:#?}");
    // The seed's flow, the password kept out of the command line.
    let out = curd(
        &first,
        &format!("LARDER_PASSWORD=passwd curd install -c http://user@{addr} -u flask"),
    );
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stderr.contains("Building wheel for flask"), "{}", out.stderr);
    let page = crate::serve::curl(&[&format!("{}/simple/flask/", cache.url)]).text();
    assert!(page.contains("flask-3.0-py3-none-any.whl"), "uploaded: {page}");
    // The second machine gets the wheel from the server, built by the first.
    let second = venv("machine-2");
    let out = curd(&second, &format!("curd install -c http://{addr} flask"));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(!out.stderr.contains("Building wheel"), "{}", out.stderr);
    let imported = Command::new(second.join("python"))
        .args(["-c", "import flask; print(flask.VERSION)"])
        .output();
    assert_eq!(String::from_utf8_lossy(&imported.expect("python").stdout).trim(), "3.0");
    // `curd install curdling[server]`: without a server, the usual index.
    let out = curd(&second, "curd install 'curdling[server]'");
    assert_eq!(out.code, 0, "{out:#?}");
}
