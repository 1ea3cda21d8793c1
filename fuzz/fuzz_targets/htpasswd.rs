//! htpasswd files given to `larder serve -u`.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| larder_server::fuzzing::htpasswd(text));
