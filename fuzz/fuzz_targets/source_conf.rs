//! crcache's `source.conf`: read or refused with a line, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| larder::fuzzing::source_conf(text));
