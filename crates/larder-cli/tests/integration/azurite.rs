//! A real Azure Blob Storage server for the tests: Azurite (Microsoft's
//! emulator, from npm) on a free port of 127.0.0.1, with an account of the
//! test's own and one container.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Azurite {
    child: Child,
    /// `http://127.0.0.1:PORT/ACCOUNT`, the blob endpoint.
    pub endpoint: String,
    pub account: String,
    pub key: String,
    /// The container made for the test.
    pub container: String,
}

/// Creates a container with Shared Key authentication, as the Azure SDKs
/// do; larder itself never creates buckets or containers.
const CREATE_CONTAINER: &str = r#"
import base64, hashlib, hmac, http.client, sys, urllib.parse
from email.utils import formatdate
endpoint, account, key, container = sys.argv[1:5]
url = urllib.parse.urlsplit(endpoint)
date, version = formatdate(usegmt=True), "2021-08-06"
path = url.path.rstrip("/") + "/" + container
to_sign = "PUT" + "\n" * 12 + f"x-ms-date:{date}\nx-ms-version:{version}\n/{account}{path}\nrestype:container"
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
conn = http.client.HTTPConnection(url.hostname, url.port)
conn.request("PUT", path + "?restype=container", body=b"",
             headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}"})
status = conn.getresponse().status
if status not in (201, 409):
    sys.exit(f"creating container {container}: HTTP {status}")
"#;

fn binary() -> PathBuf {
    let path = std::env::var_os("TEST_TOOL_AZURITE").expect(
        "TEST_TOOL_AZURITE names azurite-blob; run the tests with scripts/test, which installs it",
    );
    PathBuf::from(path)
}

impl Azurite {
    /// Starts Azurite with its files under `root`, and the container `larder`.
    pub fn start(root: &Path) -> Azurite {
        let dir = root.join("azurite");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let port = crate::sshd::free_port();
        let account = "larderacct".to_string();
        let key = "bGFyZGVyLXRlc3Qta2V5LWZvci1henVyaXRlLTAxMjM=".to_string();
        let child = Command::new(binary())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
            .arg(&dir)
            .args(["--skipApiVersionCheck", "--silent"])
            .env("AZURITE_ACCOUNTS", format!("{account}:{key}"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("azurite.log")).expect("log")))
            .spawn()
            .expect("start azurite-blob");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "azurite did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let azurite = Azurite {
            child,
            endpoint: format!("http://127.0.0.1:{port}/{account}"),
            account,
            key,
            container: "larder".into(),
        };
        let status = Command::new("python3")
            .args(["-c", CREATE_CONTAINER, &azurite.endpoint, &azurite.account, &azurite.key])
            .arg(&azurite.container)
            .status()
            .expect("python3");
        assert!(status.success(), "creating the container failed");
        azurite
    }

    /// The environment a larder process needs to reach it.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [("AZURE_STORAGE_ACCOUNT", self.account.clone()), ("AZURE_STORAGE_KEY", self.key.clone())]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
