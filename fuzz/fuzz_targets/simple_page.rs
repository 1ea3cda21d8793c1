//! Project pages from an upstream index (PEP 503 HTML, PEP 691 JSON).
#![no_main]
libfuzzer_sys::fuzz_target!(|body: &str| larder_server::fuzzing::simple_page(body));
