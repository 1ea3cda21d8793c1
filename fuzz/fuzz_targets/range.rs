//! `Range` headers: what is sent is within the body.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: (u64, &[u8])| {
    let (size, value) = input;
    larder_server::fuzzing::range(value, size % (1 << 40));
});
