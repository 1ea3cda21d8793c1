//! Core metadata, and the wheels and sdists that carry it.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| larder::fuzzing::metadata(bytes));
