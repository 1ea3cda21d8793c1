//! Uploads (`POST /legacy/`, multipart): refused or kept, never a crash or a 500.
#![no_main]

use std::sync::OnceLock;

static SERVER: OnceLock<(tempfile::TempDir, larder_server::fuzzing::Server)> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let (_, server) = SERVER.get_or_init(|| {
        let home = tempfile::tempdir().expect("a home");
        let server = larder_server::fuzzing::Server::new(home.path());
        (home, server)
    });
    server.upload(body);
});
